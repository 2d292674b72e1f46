# Signals to a multi-node run: SIGTERM and SIGINT to `amalgam run --nodes 2`
# end it with 128+N, every node process gone within 2 s; the launcher's
# own death (SIGKILL) takes its nodes down too (parent-death signal); a
# node process given SIGTERM directly ends the whole machine.
# kvm: all
source "$(dirname "$0")/common.bash"
need_kvm
start() { start_heartbeat 2 2 $((120 * SLOW)); }
gone_within() { # SECONDS PIDS...: 0 if every pid has ended in time; prints the time
    local limit=$1 t0=$SECONDS running
    shift
    while :; do
        running=0
        for p in "$@"; do
            alive "$p" && running=1
        done
        [ $running -eq 0 ] && return 0
        [ $((SECONDS - t0)) -ge "$limit" ] && return 1
        sleep 0.05
    done
}
for sig in TERM INT; do
    start
    t0=$(date +%s%N)
    kill -$sig $run
    wait $run
    rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    want=$((128 + $(kill -l $sig)))
    if [ $rc -eq $want ] && gone_within 2 $kids; then
        ok "SIG$sig to the launcher: exit $rc after $ms ms, node processes ($kids) gone"
    else
        fail "SIG$sig to the launcher: exit $rc (want $want) after $ms ms; alive: $(for p in $kids; do kill -0 $p 2>/dev/null && echo $p; done | tr '\n' ' ') $(tr '\n' '|' <"$TMP/err")"
    fi
done
start
kill -KILL $run
wait $run 2>/dev/null
if gone_within $((2 * SLOW)) $kids; then
    ok "SIGKILL to the launcher: its node processes ($kids) follow it"
else
    fail "SIGKILL to the launcher: node processes still alive: $kids"
    kill -9 $kids 2>/dev/null
fi
start
node1=$(echo $kids | cut -d' ' -f2)
kill -TERM "$node1"
wait $run
rc=$?
if [ $rc -ne 0 ] && gone_within 2 $kids; then
    ok "SIGTERM to node 1 alone: the machine ends (exit $rc), every node gone"
else
    fail "SIGTERM to node 1 alone: exit $rc; alive: $(for p in $kids; do kill -0 $p 2>/dev/null && echo $p; done | tr '\n' ' ')"
    kill -9 $kids 2>/dev/null
fi
finish
