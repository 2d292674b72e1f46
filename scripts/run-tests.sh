#!/usr/bin/env bash
# Runs amalgam's tests and prints one closing line "N passed, N failed, N skipped".
#   run-tests.sh unit BIN...   the Check unit-test binaries given
#   run-tests.sh all           unit tests, then tests/integration/*.sh
#   run-tests.sh long          tests/long/*.sh
#   run-tests.sh scripts S...  the integration scripts given (used inside
#                              the nested L1; results also go to
#                              $AMALGAM_RESULTS when that is set)
# An integration script passes with exit 0, skips with exit 77 (its last
# line says why), fails otherwise. Logs go to build/test-logs/. Each script
# gets AMALGAM_TEST_TIMEOUT seconds (default 900; 2400 for the long tests,
# whose Linux boot alone may take 1500 s where guest kernel mode is emulated).
#
# Guest tests where /dev/kvm is missing: a script whose header has the line
# "# kvm: all" needs KVM for everything it checks, "# kvm: part" for some
# of it. Without a usable /dev/kvm, `all` runs the "kvm: all" scripts only
# in scripts/nested-kvm.sh's emulated L1, and the "kvm: part" ones on this
# host (their KVM-less checks) and again in the L1 (everything), all in one
# boot of the L1 after the host's tests. There the test guest's time-outs
# are stretched by AMALGAM_TEST_SLOW (default 5), the iteration counts
# given to it divided by AMALGAM_TEST_ITERS_DIV (default 10), and the L1
# runs one TCG thread (NESTED_TCG, default single; docs/testing.md says why).
set -u
cd "$(dirname "$0")/.."
LOGS=build/test-logs
mkdir -p "$LOGS"
pass=0 fail=0 skip=0 failed=()
TIMEOUT=${AMALGAM_TEST_TIMEOUT:-900}
RESULTS=${AMALGAM_RESULTS:-}

record() { # verdict name detail
    [ -n "$RESULTS" ] && printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"
    case $1 in
        PASS) pass=$((pass + 1)); printf 'PASS  %-40s %s\n' "$2" "$3" ;;
        SKIP) skip=$((skip + 1)); printf 'SKIP  %-40s %s\n' "$2" "$3" ;;
        *) fail=$((fail + 1)); failed+=("$2"); printf 'FAIL  %-40s %s\n' "$2" "$3" ;;
    esac
}

log_of() { local n=$1; echo "$LOGS/${n//\//-}.log"; } # a test's log, by name
# The lines of a passing log that report a run known not to finish in the L1.
show_known() { grep -a '^known in the L1, not counted' "$1" | cut -c1-300 | sed 's/^/    | /'; }

run_one() { # name, command...
    local name=$1; shift
    local log t0=$SECONDS rc
    log=$(log_of "$name")
    timeout --foreground -k 10 "$TIMEOUT" "$@" >"$log" 2>&1
    rc=$?
    local dt=$((SECONDS - t0))
    if [ $rc -eq 0 ]; then
        record PASS "$name" "$(printf '%4ds' "$dt")"
        show_known "$log"
    elif [ $rc -eq 77 ]; then
        record SKIP "$name" "$(tail -n 1 "$log")"
    else
        record FAIL "$name" "$(printf '%4ds (exit %d)' "$dt" "$rc")"
        sed 's/^/    | /' "$log" | tail -n 40
    fi
}

run_units() {
    for b in "$@"; do
        case "$b" in *.d) continue ;; esac
        [ -x "$b" ] && run_one "unit/$(basename "$b")" "$b"
    done
}
script_name() { echo "$(basename "$(dirname "$1")")/$(basename "$1" .sh)"; }
kvm_need() { sed -n 's/^# kvm: \(all\|part\)$/\1/p' "$1" | head -n 1; }
# AMALGAM_TEST_FORCE_L1=1: run the KVM tests in the L1 even where /dev/kvm works
# (to check here what CI does on a machine without it).
have_kvm() { [ -z "${AMALGAM_TEST_FORCE_L1:-}" ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; }

# The scripts that need KVM, in one boot of the nested L1; each one's
# verdict is read back from the results file the L1 side writes.
run_in_l1() {
    local scripts=("$@") res="$LOGS/l1-results" log="$LOGS/l1-console.log" t0=$SECONDS rc
    local slow=${AMALGAM_TEST_SLOW:-5} div=${AMALGAM_TEST_ITERS_DIV:-10} tcg=${NESTED_TCG:-single}
    # A script gets twice its time there: 31-testguest-nodes alone took
    # 660-709 s in the L1.
    local l1_timeout=$((2 * TIMEOUT))
    local budget=$((${#scripts[@]} * l1_timeout + 300))
    echo "no /dev/kvm here: ${#scripts[@]} guest tests run in scripts/nested-kvm.sh's emulated L1" \
         "(one boot; TCG=$tcg, AMALGAM_TEST_SLOW=$slow, AMALGAM_TEST_ITERS_DIV=$div; console in $log)"
    : >"$res"
    NESTED_TCG=$tcg NESTED_TIMEOUT=$budget scripts/nested-kvm.sh env AMALGAM_IN_NESTED=1 \
        AMALGAM_TEST_SLOW="$slow" AMALGAM_TEST_ITERS_DIV="$div" AMALGAM_RESULTS="$res" AMALGAM_TEST_TIMEOUT="$l1_timeout" \
        scripts/run-tests.sh scripts "${scripts[@]}" >"$log" 2>&1
    rc=$?
    local s name verdict detail l1log
    for s in "${scripts[@]}"; do
        name="$(script_name "$s") [L1]"
        IFS=$'\t' read -r verdict _ detail < <(grep -a -P "^[A-Z]+\t\Q$(script_name "$s")\E\t" "$res" | tail -n 1)
        if [ -n "${verdict:-}" ]; then
            record "$verdict" "$name" "$detail"
            l1log=$(log_of "$(script_name "$s")")
            [ "$verdict" = FAIL ] && sed 's/^/    | /' "$l1log" | tail -n 40
            [ "$verdict" = PASS ] && show_known "$l1log"
        elif [ $rc -eq 3 ]; then
            record SKIP "$name" "SKIP: /dev/kvm is missing and the nested L1 could not provide it: $(grep -a 'nested-kvm' "$log" | tail -n 1)"
        else
            record FAIL "$name" "did not run: the L1 ended first (scripts/nested-kvm.sh exit $rc after $((SECONDS - t0)) s; see $log)"
            tail -n 20 "$log" | sed 's/^/    | /'
        fi
        verdict=
    done
    echo "the nested L1 ran for $((SECONDS - t0)) s"
}

run_scripts() { # scripts...; those that need KVM go to the L1 where it is missing
    local s l1=()
    for s in "$@"; do
        [ -e "$s" ] || continue
        if ! have_kvm && [ -z "${AMALGAM_IN_NESTED:-}" ] && [ -n "$(kvm_need "$s")" ]; then
            l1+=("$s")
            [ "$(kvm_need "$s")" = all ] && continue
        fi
        run_one "$(script_name "$s")" bash "$s"
    done
    [ ${#l1[@]} -eq 0 ] || run_in_l1 "${l1[@]}"
}

case "${1:-all}" in
    unit) shift; run_units "$@" ;;
    all)  run_units build/tests/test_*; run_scripts tests/integration/*.sh ;;
    long) TIMEOUT=${AMALGAM_TEST_TIMEOUT:-2400}; run_scripts tests/long/*.sh ;;
    scripts) shift; run_scripts "$@" ;;
    *) echo "usage: $0 unit BIN...|all|long|scripts SCRIPT..." >&2; exit 2 ;;
esac
[ ${#failed[@]} -eq 0 ] || echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
