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
# One-sided pulls: the homes answer with where the page is and the
# requesters read it from the home's memory (RMA: CMA under shm, the tcp
# provider's emulated reads under tcp). The same exact totals, and every
# rank must really have pulled.
pulled() { grep -o '[0-9]* pulled one-sided' <<<"$out" | awk '{s += $1} END {print s + 0}'; }
for f in shm tcp; do
    check 2 --fabric $f --dsm-pull on
    [ "$(pulled)" -gt 0 ] || fail "--fabric $f --dsm-pull on moved no page one-sided: $out"
done
check 3 --dsm-pull on --sweep --mem 24M --dsm-cache 2M
[ "$(pulled)" -gt 1000 ] || fail "the sweep with pulls pulled $(pulled) pages: $out"
# A home that describes its pages wrongly, as a faulty peer would: the
# requester refuses the descriptor (cover) or its read fails (addr; and
# key under tcp, whose provider checks keys; shm's CMA reads do not). Each
# must end the run with a named error, quickly, never a hang or a crash.
for fault in cover:shm addr:shm key:tcp addr:tcp; do
    kind=${fault%%:*} fabric=${fault#*:}
    t0=$(date +%s)
    out=$(AMALGAM_TEST_PULL_FAULT=$kind timeout 60 "$AMALGAM" dsm-check --local 2 --fabric "$fabric" \
        --dsm-pull on --iters 2000 2>&1)
    rc=$? dt=$(($(date +%s) - t0))
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -lt 128 ] &&
        grep -q 'cannot read page .* one-sided: ' <<<"$out" && grep -q 'could not copy, protect or pull pages' <<<"$out"; then
        ok "a faulty pull descriptor ($kind, $fabric): exit $rc after ${dt} s: $(grep -m1 'one-sided: ' <<<"$out")"
    else
        fail "a faulty pull descriptor ($kind, $fabric): exit $rc after ${dt} s: $out"
    fi
done
# The host-thread DSM benchmark runs and prints its one JSON line.
line=$(timeout 120 "$AMALGAM" bench dsm --host --pages 100 2>&1)
if grep -Eq '^\{"bench":"dsm","mode":"host-thread".*"remote_read_fault_us":\{"p50":[0-9.]+.*"read_ratio":[0-9.]+.*"one_sided_us":\{"read_p50":[0-9.]+' <<<"$line"; then
    ok "bench dsm --host: $line"
else
    fail "bench dsm --host: $line"
fi
finish
