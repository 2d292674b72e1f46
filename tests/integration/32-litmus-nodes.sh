# Memory-model tests across nodes: litmus tests (millions of iterations;
# an outcome x86-TSO forbids must never appear; the histogram is printed)
# and false sharing, on one node and spread over nodes.
# kvm: all
source "$(dirname "$0")/common.bash"
need_kvm
# On a slow host every litmus iteration across nodes costs page transfers
# (in the emulated L1, 200,000 iterations of mp over 2 nodes took 240 s):
# there these runs are cut ten times more than the others.
[ "$ITERS_DIV" -gt 1 ] && ITERS_DIV=$((ITERS_DIV * 10)) &&
    echo "litmus runs: iters=N divided by $ITERS_DIV"
for t in mp sb lb 2+2w; do
    run_guest "$t" 0 --vcpus 2 --append "test=$t"
    run_guest "$t" 0 --nodes 2 --vcpus 2 --mem 256M --append "test=$t iters=2000000"
    grep '^litmus' "$TMP/out" || true
done
run_guest iriw 0 --nodes 4 --vcpus 4 --mem 256M --append "test=iriw iters=1000000"
grep '^litmus' "$TMP/out" || true
run_guest false-sharing 0 --nodes 2 --vcpus 4 --append "test=false-sharing iters=200000"
run_guest false-sharing 0 --nodes 4 --vcpus 4 --append "test=false-sharing iters=200000"
finish
