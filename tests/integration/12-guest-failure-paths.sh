# Tests of the tests: every test-guest test, run with inject=1 (its final
# check then expects one more than the right answer; a litmus test forbids
# the outcome seen most), must end in its own "TESTGUEST FAIL" line and
# exit 1, and run_guest, the harness every guest test uses, must count
# such a run as a failure when it was told to expect a pass. A check that
# cannot fail, or a harness that misses a failing guest, fails here.
# kvm: all
source "$(dirname "$0")/common.bash"
need_kvm
small=(--vcpus 2 --mem 128M)
# inject_run NAME WHY ARGS...: must fail, and through the check that was
# told the wrong answer (its message matches WHY), not by a time-out.
inject_run() {
    local name=$1 why=$2; shift 2
    run_guest "$name" 1 "$@"
    grep -F "TESTGUEST FAIL $name: " "$TMP/out" | grep -q -E "$why" ||
        fail "$name inject=1 failed, but not in its final check ('$why'): $(grep '^TESTGUEST' "$TMP/out")"
}
inject_run smp-counter "counter is [0-9]+, expected" "${small[@]}" --append "test=smp-counter inject=1"
inject_run spinlock "value is [0-9]+, expected" "${small[@]}" --append "test=spinlock inject=1"
inject_run ipi "received [0-9]+ IPIs from cpu" "${small[@]}" --append "test=ipi inject=1"
inject_run timer "one-shot timer fired 1 times" "${small[@]}" --append "test=timer inject=1"
inject_run tsc "hand-offs checked, expected" "${small[@]}" --append "test=tsc inject=1"
inject_run ioapic "took [0-9]+ UART interrupts, expected" "${small[@]}" --append "test=ioapic inject=1"
inject_run mem "memory at [0-9a-f]+ reads" --vcpus 2 --mem 64M --append "test=mem inject=1"
for t in mp sb lb 2+2w; do
    inject_run "$t" "the forbidden outcome appeared" "${small[@]}" --append "test=$t iters=20000 inject=1"
done
inject_run iriw "the forbidden outcome appeared" --vcpus 4 --mem 128M --append "test=iriw iters=20000 inject=1"
inject_run false-sharing "word of cpu [0-9]+ is [0-9]+, expected" "${small[@]}" --append "test=false-sharing iters=20000 inject=1"
# Across node processes: the failure reaches the exit status the same way.
# (iters=1000: the least run_guest passes on, whatever AMALGAM_TEST_ITERS_DIV says.)
run_guest smp-counter 1 --nodes 2 --vcpus 2 --mem 128M --append "test=smp-counter iters=1000 inject=1"
grep -q '^TESTGUEST FAIL smp-counter: cpu 0: counter is 2000, expected 2001' "$TMP/out" &&
    ok "the failing check printed the real count and the injected expectation" ||
    fail "smp-counter inject=1 over 2 nodes did not print 'counter is 2000, expected 2001': $(tr '\n' '|' <"$TMP/out")"

# The harness: told to expect a pass, run_guest must report this run as a
# failure (in a subshell, so that this script's own count is untouched).
if (failures=0; run_guest smp-counter 0 "${small[@]}" --append "test=smp-counter iters=20000 inject=1" \
        >/dev/null; [ "$failures" -eq 1 ]); then
    ok "run_guest counts a failing guest as a failure"
else
    fail "run_guest passed a guest that failed its check"
fi
finish
