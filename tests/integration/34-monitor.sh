# The monitor (QMP) on a running 2-node machine, driven from other
# processes: a Python client (qmp_check.py: negotiation, pause and resume
# seen in the guest's heartbeat, vCPUs and nodes, DSM counters, bad input,
# 100 clients, quit), socat, `amalgam ctl`, and the power button.
# kvm: all
source "$(dirname "$0")/common.bash"
need_kvm
command -v python3 >/dev/null || skip "SKIP: python3 is missing (scripts/install-deps.sh installs it)"
command -v socat >/dev/null || skip "SKIP: socat is missing (scripts/install-deps.sh installs it)"
SOCK="$TMP/qmp.sock"
CON="$TMP/console"
wait_sock() { # PID: until the monitor answers, or the run is gone
    for _ in $(seq $((200 * SLOW))); do
        [ -S "$SOCK" ] && socat -u OPEN:/dev/null UNIX-CONNECT:"$SOCK" 2>/dev/null && return 0
        kill -0 "$1" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
beats() { grep -c '^heartbeat ' "$CON"; }

"$AMALGAM" run --kernel "$GUEST" --nodes 2 --vcpus 2 --placement 0,1 --monitor "$SOCK" \
    --append "test=heartbeat seconds=$((300 * SLOW)) slow=$SLOW" >"$CON" 2>"$TMP/err" &
run=$!
if ! wait_sock $run; then
    fail "the monitor never answered: $(tr '\n' '|' <"$TMP/err") $(tail -3 "$CON" | tr '\n' '|')"
    kill -9 $run 2>/dev/null
    finish
    exit
fi
ok "the monitor answers at $SOCK"

# A second machine on a live socket is a user error, found at once.
"$AMALGAM" run --kernel "$GUEST" --monitor "$SOCK" --append test=heartbeat >/dev/null 2>"$TMP/err2"
rc=$?
if [ $rc -eq 2 ] && grep -q "another monitor is live" "$TMP/err2"; then
    ok "a second --monitor on a live socket: exit 2, '$(cat "$TMP/err2")'"
else
    fail "a second --monitor on a live socket: exit $rc, '$(cat "$TMP/err2")'"
fi

# socat, as any QMP tool would: one exchange per line.
out=$(printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"query-status","id":9}' |
      socat -t 5 - UNIX-CONNECT:"$SOCK" | grep '"id":9')
case "$out" in
*'"status":"running"'*) ok "socat: query-status -> $out" ;;
*) fail "socat: query-status -> '$out'" ;;
esac

# amalgam ctl: JSON, --human, top
out=$("$AMALGAM" ctl --monitor "$SOCK" query-cpus-fast)
case "$out" in
*'"cpu-index":1'*'"node-id":1'*) ok "amalgam ctl query-cpus-fast" ;;
*) fail "amalgam ctl query-cpus-fast: '$out'" ;;
esac
out=$("$AMALGAM" ctl --monitor "$SOCK" --human query-nodes)
if [ "$(grep -c '^[01] ' <<<"$out")" -eq 2 ]; then
    ok "amalgam ctl --human query-nodes: $(sed -n 2p <<<"$out" | tr -s ' ')"
else
    fail "amalgam ctl --human query-nodes: '$out'"
fi
out=$("$AMALGAM" ctl --monitor "$SOCK" top --iterations 1 --interval 500)
if grep -q '^amalgam top: 2 vCPUs on 2 nodes' <<<"$out" && [ "$(grep -c '^[01] .*running' <<<"$out")" -eq 2 ]; then
    ok "amalgam ctl top: $(grep -m1 '^1 ' <<<"$out" | tr -s ' ')"
else
    fail "amalgam ctl top: '$out'"
fi
"$AMALGAM" ctl --monitor "$SOCK" query-dsm top=100 2>"$TMP/cerr" >/dev/null
rc=$?
[ $rc -eq 1 ] && grep -q "from 0 to 64" "$TMP/cerr" && ok "amalgam ctl: a refused argument exits 1: $(cat "$TMP/cerr")" ||
    fail "amalgam ctl query-dsm top=100: exit $rc, '$(cat "$TMP/cerr")'"

# The Python client's checks end with quit.
python3 "$(dirname "$0")/qmp_check.py" "$SOCK" "$CON" "$SLOW" >"$TMP/py" 2>&1
pyrc=$?
cat "$TMP/py"
[ $pyrc -eq 0 ] || fail "qmp_check.py exited $pyrc"
for _ in $(seq $((100 * SLOW))); do kill -0 $run 2>/dev/null || break; sleep 0.1; done
if kill -0 $run 2>/dev/null; then
    fail "the machine still runs after quit"
    kill -9 $run
fi
wait $run
rc=$?
[ $rc -eq 0 ] && ok "after quit the run exits 0" || fail "after quit the run exited $rc: $(tr '\n' '|' <"$TMP/err")"
[ -e "$SOCK" ] && fail "the socket is left behind after quit" || ok "the socket is removed at exit"

# A node killed mid-run: the monitor's clients see NODE_LOST, then SHUTDOWN.
AMALGAM_DEAD_AFTER_MS=$((3000 * SLOW)) "$AMALGAM" run --kernel "$GUEST" --nodes 2 --vcpus 2 \
    --monitor "$SOCK" --append "test=heartbeat seconds=$((300 * SLOW)) slow=$SLOW" >"$CON" 2>"$TMP/err" &
run=$!
if wait_sock $run; then
    (printf '%s\n' '{"execute":"qmp_capabilities"}'; sleep $((60 * SLOW))) |
        socat - UNIX-CONNECT:"$SOCK" >"$TMP/events" 2>/dev/null &
    watcher=$!
    pid1=$("$AMALGAM" ctl --monitor "$SOCK" query-nodes | python3 -c 'import json,sys; print([n["pid"] for n in json.load(sys.stdin) if n["rank"] == 1][0])')
    sleep 0.5
    kill -9 "$pid1"
    for _ in $(seq $((300 * SLOW))); do kill -0 $run 2>/dev/null || break; sleep 0.1; done
    kill -0 $run 2>/dev/null && { fail "node 1 killed: the machine still runs"; kill -9 $run; }
    wait $run
    rc=$?
    kill $watcher 2>/dev/null
    ev=$(grep -o '"event":"[A-Z_]*"' "$TMP/events" | tr '\n' ' ')
    if grep -q '"event":"NODE_LOST".*"rank":1' "$TMP/events" && [ "$ev" = '"event":"NODE_LOST" "event":"SHUTDOWN" ' ] && [ $rc -ne 0 ]; then
        ok "node 1 killed: NODE_LOST then SHUTDOWN, exit $rc: $(grep -o '"reason":"[^"]*"' "$TMP/events" | head -1)"
    else
        fail "node 1 killed: exit $rc, events: '$(cat "$TMP/events")'"
    fi
else
    fail "2 nodes with --monitor: the monitor never answered: $(tr '\n' '|' <"$TMP/err")"
    kill -9 $run 2>/dev/null
fi

# system_powerdown: the guest sees the ACPI power button and powers off.
"$AMALGAM" run --kernel "$GUEST" --vcpus 2 --monitor "$SOCK" \
    --append "test=heartbeat seconds=$((300 * SLOW))" >"$CON" 2>"$TMP/err" &
run=$!
if wait_sock $run; then
    "$AMALGAM" ctl --monitor "$SOCK" system_powerdown >/dev/null
    for _ in $(seq $((100 * SLOW))); do kill -0 $run 2>/dev/null || break; sleep 0.1; done
    kill -0 $run 2>/dev/null && { fail "system_powerdown: the guest still runs"; kill -9 $run; }
    wait $run
    rc=$?
    if [ $rc -eq 0 ] && grep -q 'power button pressed' "$CON"; then
        ok "system_powerdown: $(grep -m1 'power button' "$CON"), exit 0"
    else
        fail "system_powerdown: exit $rc, $(tail -3 "$CON" | tr '\n' '|') $(tr '\n' '|' <"$TMP/err")"
    fi
else
    fail "one node with --monitor: the monitor never answered: $(tr '\n' '|' <"$TMP/err")"
    kill -9 $run 2>/dev/null
fi
finish
