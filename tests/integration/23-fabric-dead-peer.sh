# A peer killed with SIGKILL is detected by heartbeats within 2 seconds,
# reported by rank, and the surviving node stops with a non-zero status.
source "$(dirname "$0")/common.bash"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/secret"
port=$((20000 + RANDOM % 20000))
flags=(fabric-check --fabric tcp --ranks 2 --bootstrap 127.0.0.1:$port --secret-file "$TMP/secret" --hold 30)
"$AMALGAM" "${flags[@]}" --rank 0 >"$TMP/a" 2>&1 &
p0=$!
"$AMALGAM" "${flags[@]}" --rank 1 >"$TMP/b" 2>&1 &
p1=$!
for _ in $(seq 100); do grep -q 'exchanged' "$TMP/b" 2>/dev/null && break; sleep 0.1; done
kill -9 $p1
t0=$(date +%s%N)
wait $p0
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
if [ $rc -ne 0 ] && grep -q 'peer rank 1 stopped answering' "$TMP/a" && [ $ms -le 2500 ]; then
    ok "dead peer detected after $ms ms, exit $rc: $(tail -1 "$TMP/a")"
else
    fail "dead peer: exit $rc after $ms ms: $(cat "$TMP/a")"
fi
finish
