# deploy/amalgam-ssh across two "hosts" (network namespaces joined by a
# veth pair) without sshd: once with an exec prefix (`ip netns exec NS
# PROGRAM ARGS...`) and once with a stand-in for ssh (`FAKE-SSH NS
# COMMAND-LINE`, the line parsed by a shell there, as sshd does). Checks
# that both ranks succeed over tcp, --dry-run, a missing and a wrong
# secret, and that a killed node or a killed launcher never leaves the
# other nodes (or the launcher) hanging.
source "$(dirname "$0")/common.bash"
netns_pair
LAUNCH="$ROOT/deploy/amalgam-ssh"
head -c 32 /dev/urandom >"$TMP/secret"
head -c 32 /dev/urandom >"$TMP/wrong"
chmod 600 "$TMP/secret" "$TMP/wrong"
cat >"$TMP/hosts" <<HOSTS
# two namespaces; the second field is the address the other nodes use
$NS_A $NET.1   # rank 0, the bootstrap
$NS_B $NET.2
HOSTS
# The stand-in for ssh. WRONG_SECRET_ON=NS makes that host's copy of the
# secret a different one (a bind mount inside ip netns exec's own mount
# namespace; the real file is untouched).
cat >"$TMP/fake-ssh" <<'SSH'
#!/bin/bash
ns=$1 line=$2
if [ "$ns" = "${WRONG_SECRET_ON:-}" ]; then
    exec ip netns exec "$ns" sh -c 'mount --bind "$1" "$2" && exec sh -c "$3"' sh \
        "$WRONG_FILE" "$SECRET_FILE" "$line"
fi
exec ip netns exec "$ns" sh -c "$line"
SSH
chmod +x "$TMP/fake-ssh"
export SECRET_FILE="$TMP/secret" WRONG_FILE="$TMP/wrong"
newport() { port=$((20000 + RANDOM % 20000)); }
via_exec=(--hostfile "$TMP/hosts" --exec "ip netns exec" --amalgam "$AMALGAM" --fabric tcp)
via_ssh=(--hostfile "$TMP/hosts" --ssh "$TMP/fake-ssh" --amalgam "$AMALGAM" --fabric tcp)

# --dry-run: the exact commands, nothing started.
newport
out=$("$LAUNCH" "${via_exec[@]}" --port $port --secret-file "$TMP/secret" --command dsm-check \
    --env FI_LOG_LEVEL=warn --dry-run --iters 500 2>&1)
rc=$?
want0="ip netns exec $NS_A bash -c "
node0="env FI_LOG_LEVEL=warn $AMALGAM dsm-check --rank 0 --ranks 2 --bootstrap $NET.1:$port --secret-file $TMP/secret --fabric tcp --iters 500"
node1="env FI_LOG_LEVEL=warn $AMALGAM dsm-check --rank 1 --ranks 2 --bootstrap $NET.1:$port --secret-file $TMP/secret --fabric tcp --iters 500"
if [ $rc -eq 0 ] && [ "$(grep -c '^ip netns exec ' <<<"$out")" -eq 2 ] &&
    grep -qF "$want0" <<<"$out" && grep -qF "ip netns exec $NS_B bash -c " <<<"$out" &&
    grep -qF "# rank 0 on $NS_A: $node0" <<<"$out" && grep -qF "# rank 1 on $NS_B: $node1" <<<"$out" &&
    grep -qF "amalgam-node $node1" <<<"$out" && ! pgrep -f "bootstrap $NET.1:$port" >/dev/null; then
    ok "--dry-run prints both commands: $(grep '^# rank 1' <<<"$out")"
else
    fail "--dry-run: exit $rc: $out"
fi

# dsm-check and fabric-check across the two hosts over tcp.
newport
out=$(timeout 120 "$LAUNCH" "${via_exec[@]}" --port $port --secret-file "$TMP/secret" \
    --command dsm-check 2>&1)
rc=$?
if [ $rc -eq 0 ] && grep -q '^dsm-check: rank 0 of 2: ok in' <<<"$out" &&
    grep -q '^dsm-check: rank 1 of 2: ok in' <<<"$out"; then
    ok "dsm-check on two hosts (exec prefix): $(grep 'rank 1 of 2' <<<"$out")"
else
    fail "dsm-check on two hosts (exec prefix): exit $rc: $out"
fi
newport
out=$(timeout 120 "$LAUNCH" "${via_ssh[@]}" --port $port --secret-file "$TMP/secret" \
    --command fabric-check 2>&1)
rc=$?
if [ $rc -eq 0 ] && [ "$(grep -c 'exchanged 4 KiB with 1 peers over tcp' <<<"$out")" -eq 2 ]; then
    ok "fabric-check on two hosts (ssh stand-in)"
else
    fail "fabric-check on two hosts (ssh stand-in): exit $rc: $out"
fi

# No secret given, a missing file, a wrong one on one host.
out=$("$LAUNCH" "${via_exec[@]}" --command fabric-check 2>&1)
rc=$?
if [ $rc -eq 2 ] && grep -q 'amalgam-ssh: --secret-file is required' <<<"$out"; then
    ok "no --secret-file: exit 2, $out"
else
    fail "no --secret-file: exit $rc: $out"
fi
newport
t0=$SECONDS
out=$(timeout 60 "$LAUNCH" "${via_ssh[@]}" --port $port --secret-file "$TMP/nonexistent" \
    --command fabric-check 2>&1)
rc=$?
if [ $rc -ne 0 ] && [ $((SECONDS - t0)) -le 10 ] &&
    grep -q "amalgam fabric-check: --secret-file '$TMP/nonexistent': No such file or directory" <<<"$out" &&
    grep -q '^amalgam-ssh: rank [01] on .* exited with status 2; stopping the other nodes' <<<"$out"; then
    ok "missing secret file: exit $rc after $((SECONDS - t0)) s: $(grep -m1 amalgam-ssh <<<"$out")"
else
    fail "missing secret file: exit $rc after $((SECONDS - t0)) s: $out"
fi
newport
t0=$SECONDS
out=$(WRONG_SECRET_ON=$NS_B timeout 60 "$LAUNCH" "${via_ssh[@]}" --port $port \
    --secret-file "$TMP/secret" --join-timeout 20 --command fabric-check 2>&1)
rc=$?
if [ $rc -ne 0 ] && [ $((SECONDS - t0)) -le 10 ] && grep -q 'refused.*wrong shared secret' <<<"$out" &&
    grep -q '^amalgam-ssh: rank 1 on .* exited with status [1-9][0-9]*; stopping the other nodes' <<<"$out" &&
    cmp -s "$TMP/secret" "$SECRET_FILE" && ! cmp -s "$TMP/secret" "$TMP/wrong"; then
    ok "wrong secret on one host: exit $rc after $((SECONDS - t0)) s: $(grep -m1 'wrong shared secret' <<<"$out")"
else
    fail "wrong secret on one host: exit $rc after $((SECONDS - t0)) s: $out"
fi

# start_holding LABEL VIA...: the launcher in the background running
# fabric-check --hold, once both nodes are up; sets L (its pid) and port.
start_holding() {
    local label=$1; shift
    newport
    "$LAUNCH" "$@" --port $port --secret-file "$TMP/secret" --command fabric-check --hold 60 \
        >"$TMP/$label" 2>&1 &
    L=$!
    for _ in $(seq 200); do
        [ "$(grep -c 'holding 60 s' "$TMP/$label")" -eq 2 ] && return 0
        sleep 0.1
    done
    return 1
}
node_pid() { pgrep -f "^$AMALGAM fabric-check --rank $1 --ranks 2 --bootstrap $NET.1:$port "; }
# waits up to $2 seconds for pid $1 to end; prints how long it took (ms).
wait_gone() {
    local t0 i
    t0=$(date +%s%N)
    for ((i = 0; i < $2 * 20; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
    echo $((($(date +%s%N) - t0) / 1000000))
}

# A node killed: the launcher stops the other one and exits non-zero, promptly.
if start_holding kill "${via_ssh[@]}"; then
    kill -9 "$(node_pid 1)"
    ms=$(wait_gone $L 5)
    if kill -0 $L 2>/dev/null; then
        fail "launcher still running 5 s after a node was killed: $(cat "$TMP/kill")"
        kill $L
    else
        wait $L
        rc=$?
        sleep 0.5
        if [ $rc -ne 0 ] && grep -q '^amalgam-ssh: rank 1 on .* exited with status 137' "$TMP/kill" &&
            [ -z "$(node_pid 0)" ]; then
            ok "node killed: launcher exit $rc after $ms ms, rank 0 stopped"
        else
            fail "node killed: launcher exit $rc after $ms ms, rank 0 pid '$(node_pid 0)': $(cat "$TMP/kill")"
        fi
    fi
else
    fail "nodes did not come up: $(cat "$TMP/kill")"
    kill $L 2>/dev/null
fi

# SIGTERM to the launcher is passed on; SIGKILL to it stops the nodes too.
if start_holding term "${via_exec[@]}"; then
    kill -TERM $L
    ms=$(wait_gone $L 5)
    wait $L
    rc=$?
    if [ "$ms" -lt 5000 ] && grep -q 'got SIGTERM; passing it on' "$TMP/term" && [ -z "$(node_pid 0)$(node_pid 1)" ]; then
        ok "SIGTERM passed on: launcher exit $rc after $ms ms, both nodes gone"
    else
        fail "SIGTERM: exit $rc after $ms ms, nodes '$(node_pid 0) $(node_pid 1)': $(cat "$TMP/term")"
    fi
else
    fail "nodes did not come up: $(cat "$TMP/term")"
fi
kill $L 2>/dev/null
if start_holding sigkill "${via_ssh[@]}"; then
    p0=$(node_pid 0) p1=$(node_pid 1)
    kill -9 $L
    wait $L 2>/dev/null
    ms0=$(wait_gone "$p0" 5) ms1=$(wait_gone "$p1" 5)
    if [ -z "$(node_pid 0)$(node_pid 1)" ]; then
        ok "launcher killed: the nodes stopped (after $ms0 and $ms1 ms)"
    else
        fail "launcher killed: nodes still running after 5 s: $(node_pid 0) $(node_pid 1)"
    fi
else
    fail "nodes did not come up: $(cat "$TMP/sigkill")"
fi
kill $L 2>/dev/null
left=$(pgrep -f "bootstrap $NET.1:" || true)
[ -z "$left" ] || { fail "nodes left over: $left"; kill $left 2>/dev/null; }
finish
