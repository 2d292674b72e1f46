# Two "hosts": network namespaces joined by a veth pair, one rank in each,
# talking over the tcp provider. The namespaces are removed on every exit.
source "$(dirname "$0")/common.bash"
netns_pair
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/secret"
flags=(fabric-check --fabric tcp --ranks 2 --bootstrap "$NET.1:7420" --secret-file "$TMP/secret"
       --same-clock) # two namespaces, one kernel, one TSC
ip netns exec "$NS_A" timeout 60 "$AMALGAM" "${flags[@]}" --rank 0 >"$TMP/a" 2>&1 &
pa=$!
ip netns exec "$NS_B" timeout 60 "$AMALGAM" "${flags[@]}" --rank 1 >"$TMP/b" 2>&1
rb=$?
wait $pa
ra=$?
if [ $ra -eq 0 ] && [ $rb -eq 0 ] && grep -q 'rank 0 of 2' "$TMP/a" && grep -q 'rank 1 of 2' "$TMP/b" &&
    grep -q 'TSC offset to rank 0' "$TMP/b"; then
    ok "two namespaces over tcp: $(cat "$TMP/a")"
else
    fail "namespaces: rank 0 exit $ra: $(cat "$TMP/a") / rank 1 exit $rb: $(cat "$TMP/b")"
fi
finish
