# Live vCPU migration: the test guest's tests with a vCPU moved between
# the two nodes every 5 ms (x the slow factor), exact counts required (halt:
# vCPUs moved while halted, their one-shot timer mid-count, the tick arriving
# once per round); the
# BSP moved back and forth 1,000 times; a move asked through the monitor
# (VCPU_MIGRATED), to a node that does not exist (refused, the vCPU runs on
# where it was); IPIs to a vCPU moving every ms, each arriving once; the
# --trace lines; --migrate-policy affinity moving vCPUs
# to their data, once.
# kvm: all
source "$(dirname "$0")/common.bash"
need_kvm
EVERY=$((5 * SLOW))
moves() { grep -o '[0-9]* vCPU moves,' "$TMP/err" | tail -1 | cut -d' ' -f1; }
total=0
for t in "smp-counter iters=1000000" "spinlock iters=20000" "ipi rounds=50" timer "ioapic rounds=20" \
         "tsc rounds=200" mem "mp iters=200000" "sb iters=200000" "lb iters=200000" \
         "2+2w iters=200000" "iriw iters=100000" "false-sharing iters=200000" "halt rounds=400" \
         "pmtimer reads=2000 rounds=200"; do
    run_guest "${t%% *}" 0 --nodes 2 --vcpus 4 --mem 256M --migrate every=$EVERY --append "test=$t"
    n=$(moves)
    echo "   ${n:-0} vCPU moves during ${t%% *}: $(grep -o 'downtime p50.*' "$TMP/err" | tail -1)"
    total=$((total + ${n:-0}))
done
[ $total -ge 100 ] && ok "$total vCPU moves in all while the tests ran" ||
    fail "only $total vCPU moves while the tests ran (every $EVERY ms)"

# IPIs in flight to a vCPU that moves every millisecond: vCPU 1 alone moves,
# and every IPI between the two must arrive exactly once.
run_guest ipi 0 --nodes 2 --vcpus 2 --mem 256M --migrate every=$SLOW,vcpus=1 --append "test=ipi rounds=50"
echo "   $(moves) moves of vCPU 1 while IPIs flew: $(grep -o 'downtime p50.*' "$TMP/err" | tail -1)"

# The BSP, back and forth 1,000 times while it keeps the heartbeat; the run
# is ended (SIGTERM) once the trace has them.
"$AMALGAM" run --kernel "$GUEST" --nodes 2 --vcpus 2 --migrate every=1,vcpus=0 \
    --trace "$TMP/trace" --append "test=heartbeat seconds=$((300 * SLOW))" >"$TMP/out" 2>"$TMP/err" &
run=$!
for _ in $(seq $((1200 * SLOW))); do
    [ "$(cat "$TMP/trace" 2>/dev/null | wc -l)" -ge 1000 ] && break
    kill -0 $run 2>/dev/null || break
    sleep 0.1
done
kill -TERM $run 2>/dev/null
wait $run
rc=$?
n=$(wc -l <"$TMP/trace")
beats=$(grep -c '^heartbeat ' "$TMP/out")
if [ $rc -eq 143 ] && ! grep -q 'TESTGUEST FAIL' "$TMP/out" && [ "$n" -ge 1000 ] && [ "$beats" -ge 2 ] &&
   python3 -c '
import json, sys
ls = [json.loads(l) for l in open(sys.argv[1])]
assert all(l["vcpu"] == 0 and l["from"] != l["to"] and l["downtime_us"] > 0 and l["bytes"] > 1000 for l in ls)
assert sorted(l["epoch"] for l in ls) == list(range(1, len(ls) + 1))
assert all("faults_10ms" in l and "faults_100ms" in l for l in ls)
assert sum(1 for l in ls if l["faults_100ms"] is not None) >= len(ls) // 2
' "$TMP/trace"; then
    ok "the BSP moved $n times, $beats heartbeats meanwhile: $(grep -o 'downtime p50.*' "$TMP/err" | tail -1); trace: $(head -1 "$TMP/trace")"
else
    fail "the BSP moved $n times: exit $rc, $beats beats, $(tail -2 "$TMP/out" | tr '\n' '|') $(tr '\n' '|' <"$TMP/err" | cut -c1-300)"
fi

# The experiment's plots, from that real trace.
if "$(dirname "$0")/../../scripts/plot-migration.sh" "$TMP/trace" "$TMP/plot" >"$TMP/plot.log" 2>&1 &&
   [ -s "$TMP/plot-downtime.png" ] && [ -s "$TMP/plot-nodes.png" ] && [ -s "$TMP/plot-faults.png" ] &&
   [ "$(head -c 4 "$TMP/plot-nodes.png" | tail -c 3)" = PNG ]; then
    ok "scripts/plot-migration.sh: $(cat "$TMP/plot.log")"
else
    fail "scripts/plot-migration.sh: $(cat "$TMP/plot.log")"
fi

# --migrate-policy affinity. Each vCPU placed on the node away from its
# data (local: CPU c works on node c's pages; --dsm-cache smaller than what
# it touches, so it keeps faulting): each must move to its data, once.
# Then two vCPUs contending for one page on two nodes: one moves to the
# other. Timed against the same runs without the policy (reported).
WIN=$((100 * SLOW))
aff_run() { # run flags; sets rc, secs
    local t0=$(date +%s%N)
    "$AMALGAM" run --kernel "$GUEST" --nodes 2 --vcpus 2 --mem 256M "$@" >"$TMP/out" 2>"$TMP/err"
    rc=$?
    secs=$(( ($(date +%s%N) - t0) / 1000000 ))
}
LOCAL="test=local nodes=2 mb=8 passes=4"
base=unmeasured # the runs without the policy only give the comparison: not in the slow L1
[ "$SLOW" -eq 1 ] && aff_run --placement 1,0 --dsm-cache 2M --append "$LOCAL" && base=${secs}ms
aff_run --placement 1,0 --dsm-cache 2M --migrate-policy affinity,window=$WIN \
    --trace "$TMP/aff" --append "$LOCAL"
if [ $rc -eq 0 ] && python3 -c '
import json, sys
ls = [json.loads(l) for l in open(sys.argv[1])]
assert sorted((l["vcpu"], l["from"], l["to"]) for l in ls) == [(0, 1, 0), (1, 0, 1)], ls
' "$TMP/aff"; then
    ok "affinity: each vCPU moved once, to its data: $base without the policy, ${secs}ms with it"
else
    fail "affinity, local data: exit $rc, moves $(tr '\n' ' ' <"$TMP/aff" 2>/dev/null) $(tail -2 "$TMP/err" | tr '\n' '|')"
fi
base=unmeasured
[ "$SLOW" -eq 1 ] && aff_run --append "test=contend iters=200000" && base=${secs}ms
aff_run --migrate-policy affinity,window=$WIN --trace "$TMP/aff" --append "test=contend iters=$((200000 / SLOW / SLOW))"
if [ $rc -eq 0 ] && python3 -c '
import json, sys
ls = [json.loads(l) for l in open(sys.argv[1])]
node = {0: 0, 1: 1}
for l in ls:
    node[l["vcpu"]] = l["to"]
assert 1 <= len(ls) <= 2 and node[0] == node[1], ls
' "$TMP/aff"; then
    ok "affinity: the two contending vCPUs ended on one node ($(wc -l <"$TMP/aff") move): $base without the policy, ${secs}ms with it"
else
    fail "affinity, contend: exit $rc, moves $(tr '\n' ' ' <"$TMP/aff" 2>/dev/null) $(tail -2 "$TMP/err" | tr '\n' '|')"
fi

# Through the monitor.
SOCK="$TMP/qmp.sock"
"$AMALGAM" run --kernel "$GUEST" --nodes 2 --vcpus 2 --monitor "$SOCK" \
    --append "test=heartbeat seconds=$((60 * SLOW))" >"$TMP/out" 2>"$TMP/err" &
run=$!
for _ in $(seq $((200 * SLOW))); do [ -S "$SOCK" ] && break; sleep 0.1; done
(printf '%s\n' '{"execute":"qmp_capabilities"}'; sleep $((30 * SLOW))) |
    socat - UNIX-CONNECT:"$SOCK" >"$TMP/events" 2>/dev/null &
watcher=$!
sleep 0.5
out=$("$AMALGAM" ctl --monitor "$SOCK" migrate-vcpu cpu-index=1 node=0)
where=$("$AMALGAM" ctl --monitor "$SOCK" query-cpus-fast | python3 -c 'import json,sys; print([c["node"] for c in json.load(sys.stdin)])')
case "$out" in
*'"from":1,"to":0'*) [ "$where" = "[0, 0]" ] && ok "migrate-vcpu cpu-index=1 node=0: $out; vCPUs now on nodes $where" ||
                     fail "migrate-vcpu: $out, but query-cpus-fast says $where" ;;
*) fail "migrate-vcpu cpu-index=1 node=0: '$out'" ;;
esac
"$AMALGAM" ctl --monitor "$SOCK" migrate-vcpu cpu-index=1 node=5 2>"$TMP/cerr" >/dev/null
rc=$?
b0=$(grep -c '^heartbeat ' "$TMP/out")
sleep 1
b1=$(grep -c '^heartbeat ' "$TMP/out")
where=$("$AMALGAM" ctl --monitor "$SOCK" query-cpus-fast | python3 -c 'import json,sys; print([c["node"] for c in json.load(sys.stdin)])')
if [ $rc -eq 1 ] && grep -q "there is no node 5" "$TMP/cerr" && [ "$where" = "[0, 0]" ] && [ "$b1" -gt "$b0" ]; then
    ok "a move to node 5 of 2: refused ($(cat "$TMP/cerr")), the vCPU runs on ($b0 -> $b1 beats)"
else
    fail "a move to node 5: exit $rc, '$(cat "$TMP/cerr")', vCPUs on $where, beats $b0 -> $b1"
fi
"$AMALGAM" ctl --monitor "$SOCK" quit >/dev/null
wait $run
kill $watcher 2>/dev/null
grep -q '"event":"VCPU_MIGRATED".*"cpu-index":1,"from":1,"to":0' "$TMP/events" &&
    ok "VCPU_MIGRATED: $(grep -o '"data":{[^}]*}' "$TMP/events" | head -1)" ||
    fail "no VCPU_MIGRATED event: '$(cat "$TMP/events")'"
finish
