# Two "hosts": network namespaces joined by a veth pair, one rank in each,
# talking over the tcp provider. The namespaces are removed on every exit.
source "$(dirname "$0")/common.bash"
[ "$(id -u)" -eq 0 ] || skip "SKIP: network namespaces need root"
A=amalgam-a-$$ B=amalgam-b-$$
cleanup() { ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
ip netns add $A && ip netns add $B || skip "SKIP: cannot create network namespaces here"
ip link add va-$$ type veth peer name vb-$$ || skip "SKIP: cannot create a veth pair here"
ip link set va-$$ netns $A
ip link set vb-$$ netns $B
ip -n $A addr add 10.250.$((RANDOM % 250)).1/24 dev va-$$ 2>/dev/null
NET=$(ip -n $A -4 -o addr show dev va-$$ | awk '{print $4}' | cut -d. -f1-3)
ip -n $B addr add $NET.2/24 dev vb-$$
for ns in $A $B; do ip -n $ns link set lo up; done
ip -n $A link set va-$$ up
ip -n $B link set vb-$$ up
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/secret"
flags=(fabric-check --fabric tcp --ranks 2 --bootstrap $NET.1:7420 --secret-file "$TMP/secret")
ip netns exec $A timeout 60 "$AMALGAM" "${flags[@]}" --rank 0 >"$TMP/a" 2>&1 &
pa=$!
ip netns exec $B timeout 60 "$AMALGAM" "${flags[@]}" --rank 1 >"$TMP/b" 2>&1
rb=$?
wait $pa
ra=$?
if [ $ra -eq 0 ] && [ $rb -eq 0 ] && grep -q 'rank 0 of 2' "$TMP/a" && grep -q 'rank 1 of 2' "$TMP/b"; then
    ok "two namespaces over tcp: $(cat "$TMP/a")"
else
    fail "namespaces: rank 0 exit $ra: $(cat "$TMP/a") / rank 1 exit $rb: $(cat "$TMP/b")"
fi
finish
