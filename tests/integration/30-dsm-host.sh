# The DSM end to end on real userfaultfd and a real fabric: node processes
# whose host threads do lock xadd on one shared counter and plain increments
# on their own words of one shared page; the totals must be exact.
source "$(dirname "$0")/common.bash"
[ -e /dev/userfaultfd ] || [ "$(id -u)" -eq 0 ] || skip "SKIP: userfaultfd needs root or /dev/userfaultfd"
check() { # ranks, extra flags...
    local n=$1; shift
    out=$(timeout 120 "$AMALGAM" dsm-check --local "$n" "$@" 2>&1)
    local rc=$? oks
    oks=$(grep -c ': ok in' <<<"$out")
    if [ $rc -eq 0 ] && [ "$oks" -eq "$n" ]; then
        ok "$n ranks $*: $(grep 'rank 0 ' <<<"$out")"
    else
        fail "$n ranks $*: exit $rc: $out"
    fi
}
check 2
check 4
check 2 --fabric tcp
check 2 --pin
check 3 --iters 2000 --threads 3
# Kernels before 6.4 cannot map a page read-only on a fault: the host then
# takes every page exclusive. Forced here, so the fallback runs on any kernel.
AMALGAM_DSM_NO_CONTINUE_WP=1 check 3 --iters 200000
[ "$(grep -c "; 0 read faults" <<<"$out")" -eq 3 ] || fail "the fallback still took read faults: $out"
# The host-thread DSM benchmark runs and prints its one JSON line.
line=$(timeout 120 "$AMALGAM" bench dsm --host --pages 100 2>&1)
if grep -Eq '^\{"bench":"dsm","mode":"host-thread".*"remote_read_fault_us":\{"p50":[0-9.]+.*"read_ratio":[0-9.]+' <<<"$line"; then
    ok "bench dsm --host: $line"
else
    fail "bench dsm --host: $line"
fi
finish
