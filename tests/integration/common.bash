# Shared by the integration tests: paths and small assertions.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
AMALGAM="$ROOT/build/amalgam"
GUEST="$ROOT/build/guest/testguest.elf"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }
skip() { echo "$*"; exit 77; }
need_kvm() { [ -r /dev/kvm ] && [ -w /dev/kvm ] || skip "SKIP: /dev/kvm is not usable here"; }

# run_guest NAME EXPECTED_STATUS AMALGAM-RUN-ARGS...: runs the test guest,
# checks its status and its PASS/FAIL line.
run_guest() {
    local name=$1 want=$2; shift 2
    local out="$TMP/out" rc
    timeout 300 "$AMALGAM" run --kernel "$GUEST" "$@" >"$out" 2>"$TMP/err"
    rc=$?
    local line
    if [ "$want" -eq 0 ]; then line="TESTGUEST PASS $name"; else line="TESTGUEST FAIL $name"; fi
    if [ $rc -eq "$want" ] && grep -q "^$line" "$out"; then
        ok "$name ($*) -> $rc"
    else
        fail "$name ($*): exit $rc, output: $(tr '\n' '|' <"$out") $(tr '\n' '|' <"$TMP/err")"
    fi
}
finish() { [ $failures -eq 0 ]; }
