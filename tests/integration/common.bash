# Shared by the integration tests: paths and small assertions.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
AMALGAM=${AMALGAM_BIN:-$ROOT/build/amalgam} # AMALGAM_BIN: test another build
GUEST="$ROOT/build/guest/testguest.elf"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }
skip() { echo "$*"; exit 77; }
need_kvm() { [ -r /dev/kvm ] && [ -w /dev/kvm ] || skip "SKIP: /dev/kvm is not usable here"; }

# run_guest NAME EXPECTED_STATUS AMALGAM-RUN-ARGS...: runs the test guest,
# checks its status and its PASS/FAIL line. AMALGAM_TEST_SLOW=K (for an
# emulated host, scripts/nested-kvm.sh) gives the run and the guest's own
# time-outs K times longer, and a silent node 60 s per K.
SLOW=${AMALGAM_TEST_SLOW:-1}
if [ "$SLOW" -gt 1 ]; then
    export AMALGAM_DEAD_AFTER_MS=${AMALGAM_DEAD_AFTER_MS:-$((SLOW * 60000))}
fi
run_guest() {
    local name=$1 want=$2; shift 2
    local out="$TMP/out" rc args=() a prev=
    for a in "$@"; do # --append "test=..." gets slow=K
        [ "$SLOW" -gt 1 ] && [ "$prev" = --append ] && a="$a slow=$SLOW"
        args+=("$a")
        prev=$a
    done
    timeout $((300 * SLOW)) "$AMALGAM" run --kernel "$GUEST" "${args[@]}" >"$out" 2>"$TMP/err"
    rc=$?
    local line
    if [ "$want" -eq 0 ]; then line="TESTGUEST PASS $name"; else line="TESTGUEST FAIL $name"; fi
    if [ $rc -eq "$want" ] && grep -q "^$line" "$out"; then
        ok "$name ($*) -> $rc"
    else
        fail "$name ($*): exit $rc, output: $(tr '\n' '|' <"$out") $(tr '\n' '|' <"$TMP/err")"
    fi
}
# netns_pair: two "hosts", network namespaces $NS_A and $NS_B joined by a
# veth pair, at $NET.1 and $NET.2; removed on every exit. Skips (77) where
# namespaces cannot be made.
netns_pair() {
    [ "$(id -u)" -eq 0 ] || skip "SKIP: network namespaces need root"
    NS_A=amalgam-a-$$ NS_B=amalgam-b-$$
    trap 'ip netns del $NS_A 2>/dev/null; ip netns del $NS_B 2>/dev/null; rm -rf "$TMP"' EXIT
    ip netns add "$NS_A" && ip netns add "$NS_B" || skip "SKIP: cannot create network namespaces here"
    ip link add "va-$$" type veth peer name "vb-$$" || skip "SKIP: cannot create a veth pair here"
    ip link set "va-$$" netns "$NS_A"
    ip link set "vb-$$" netns "$NS_B"
    ip -n "$NS_A" addr add "10.250.$((RANDOM % 250)).1/24" dev "va-$$" 2>/dev/null
    NET=$(ip -n "$NS_A" -4 -o addr show dev "va-$$" | awk '{print $4}' | cut -d. -f1-3)
    ip -n "$NS_B" addr add "$NET.2/24" dev "vb-$$"
    local ns
    for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
    ip -n "$NS_A" link set "va-$$" up
    ip -n "$NS_B" link set "vb-$$" up
}
finish() { [ $failures -eq 0 ]; }
