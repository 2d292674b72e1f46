#!/usr/bin/env bash
# Runs amalgam's tests and prints one closing line "N passed, N failed, N skipped".
#   run-tests.sh unit BIN...   the Check unit-test binaries given
#   run-tests.sh all           unit tests, then tests/integration/*.sh
#   run-tests.sh long          tests/long/*.sh
# An integration script passes with exit 0, skips with exit 77 (its last
# line says why), fails otherwise. Logs go to build/test-logs/. Each script
# gets AMALGAM_TEST_TIMEOUT seconds (default 900; 2400 for the long tests,
# whose Linux boot alone may take 1500 s where guest kernel mode is emulated).
set -u
cd "$(dirname "$0")/.."
LOGS=build/test-logs
mkdir -p "$LOGS"
pass=0 fail=0 skip=0 failed=()
TIMEOUT=${AMALGAM_TEST_TIMEOUT:-900}

run_one() { # name, command...
    local name=$1; shift
    local log="$LOGS/${name//\//-}.log" t0=$SECONDS rc
    timeout --foreground -k 10 "$TIMEOUT" "$@" >"$log" 2>&1
    rc=$?
    local dt=$((SECONDS - t0))
    if [ $rc -eq 0 ]; then
        pass=$((pass + 1)); printf 'PASS  %-40s %4ds\n' "$name" "$dt"
    elif [ $rc -eq 77 ]; then
        skip=$((skip + 1)); printf 'SKIP  %-40s %s\n' "$name" "$(tail -n 1 "$log")"
    else
        fail=$((fail + 1)); failed+=("$name")
        printf 'FAIL  %-40s %4ds (exit %d)\n' "$name" "$dt" "$rc"
        sed 's/^/    | /' "$log" | tail -n 40
    fi
}

run_units() {
    for b in "$@"; do
        case "$b" in *.d) continue ;; esac
        [ -x "$b" ] && run_one "unit/$(basename "$b")" "$b"
    done
}
run_scripts() {
    for s in "$1"/*.sh; do
        [ -e "$s" ] || continue
        run_one "$(basename "$1")/$(basename "$s" .sh)" bash "$s"
    done
}

case "${1:-all}" in
    unit) shift; run_units "$@" ;;
    all)  run_units build/tests/test_*; run_scripts tests/integration ;;
    long) TIMEOUT=${AMALGAM_TEST_TIMEOUT:-2400}; run_scripts tests/long ;;
    *) echo "usage: $0 unit BIN...|all|long" >&2; exit 2 ;;
esac
[ ${#failed[@]} -eq 0 ] || echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
