# Node loss: a node process of a running 3-node machine killed (SIGKILL),
# node 0 or another: the others name the node and the reason and the run
# ends non-zero within the dead-peer time + 1 s, with no node process and
# no shared-memory file of the run left. A node stopped (SIGSTOP) for less
# than the dead-peer time: the guest goes on and its test passes. Stopped
# for longer: declared dead, the run ends, the stopped node is killed.
# The detection times are printed (docs/reliability.md).
# kvm: all
source "$(dirname "$0")/common.bash"
need_kvm
DEAD_MS=$((1500 * SLOW))
export AMALGAM_DEAD_AFTER_MS=$DEAD_MS
start() { # SECONDS: a 3-node machine beating for that long; sets run, kids, shm
    start_heartbeat 3 3 "$1"
    shm=$(for p in $kids; do ls /dev/shm 2>/dev/null | grep "^$p:"; done | tr '\n' ' ')
}
node_pid() { echo $kids | cut -d' ' -f$(($1 + 1)); }
left_behind() { # node processes still alive, and their /dev/shm files
    for p in $kids; do
        alive "$p" && echo "pid $p"
        ls /dev/shm 2>/dev/null | grep "^$p:" | sed 's|^|/dev/shm/|'
    done | tr '\n' ' '
}
ended() { # wait for the launcher; sets rc, ms (since t0)
    wait $run
    rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
}

for victim in 1 0; do
    start $((120 * SLOW))
    [ -n "$shm" ] || echo "   (the run's shared-memory files: none seen)"
    t0=$(date +%s%N)
    kill -KILL "$(node_pid $victim)"
    ended
    sleep 0.2
    left=$(left_behind)
    if [ $rc -ne 0 ] && grep -q "node $victim stopped answering" "$TMP/err" &&
       [ $ms -le $((DEAD_MS + 1000 * SLOW)) ] && [ -z "$left" ]; then
        ok "SIGKILL to node $victim: exit $rc after $ms ms (dead-peer time $DEAD_MS ms): $(grep -m1 'stopped answering' "$TMP/err"); nothing left"
    else
        fail "SIGKILL to node $victim: exit $rc after $ms ms (limit $((DEAD_MS + 1000 * SLOW))), left: '$left', $(tr '\n' '|' <"$TMP/err" | cut -c1-400)"
    fi
    kill -9 $kids 2>/dev/null
done

# Stopped for a third of the dead-peer time: the machine waits for it.
start 4
beats0=$(grep -c '^heartbeat ' "$TMP/out")
kill -STOP "$(node_pid 1)"
sleep "$(awk -v d=$DEAD_MS 'BEGIN { print d / 3000 }')"
kill -CONT "$(node_pid 1)"
t0=$(date +%s%N)
ended
if [ $rc -eq 0 ] && grep -q 'TESTGUEST PASS heartbeat' "$TMP/out"; then
    ok "node 1 stopped for $((DEAD_MS / 3)) ms: the guest went on ($beats0 beats before, $(grep -c '^heartbeat ' "$TMP/out") in all) and passed"
else
    fail "node 1 stopped for $((DEAD_MS / 3)) ms: exit $rc, $(tail -2 "$TMP/out" | tr '\n' '|') $(tr '\n' '|' <"$TMP/err" | cut -c1-300)"
fi

# Stopped for good: declared dead by the others, then killed by the launcher.
start $((120 * SLOW))
t0=$(date +%s%N)
kill -STOP "$(node_pid 1)"
for _ in $(seq $((200 * SLOW))); do
    grep -q 'node 1 stopped answering' "$TMP/err" && break
    sleep 0.05
done
detect=$((($(date +%s%N) - t0) / 1000000))
ended
sleep 0.2
left=$(left_behind)
if [ $rc -ne 0 ] && grep -q 'node 1 stopped answering' "$TMP/err" && [ -z "$left" ]; then
    ok "node 1 stopped for good: declared dead after ~$detect ms ($(grep -m1 'stopped answering' "$TMP/err")), the run ended (exit $rc) after $ms ms, nothing left"
else
    fail "node 1 stopped for good: exit $rc after $ms ms, left: '$left', $(tr '\n' '|' <"$TMP/err" | cut -c1-300)"
fi
kill -9 $kids 2>/dev/null
finish
