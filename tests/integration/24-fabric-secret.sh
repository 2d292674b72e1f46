# Joining needs the cluster's shared secret: a wrong one and a missing one
# are refused, with a clear message on both sides.
source "$(dirname "$0")/common.bash"
echo "the right secret for this cluster" >"$TMP/right"
echo "a wrong secret, same length......" >"$TMP/wrong"
attempt() { # label, rank-1 flags...
    local label=$1; shift
    local port=$((20000 + RANDOM % 20000))
    local common=(fabric-check --fabric tcp --ranks 2 --bootstrap 127.0.0.1:$port --join-timeout 3)
    timeout 30 "$AMALGAM" "${common[@]}" --rank 0 --secret-file "$TMP/right" >"$TMP/a" 2>&1 &
    local p0=$!
    timeout 30 "$AMALGAM" "${common[@]}" --rank 1 "$@" >"$TMP/b" 2>&1
    local r1=$?
    wait $p0
    local r0=$?
    echo "$r0 $r1"
}
read -r r0 r1 < <(attempt wrong --secret-file "$TMP/wrong")
if [ "$r0" -ne 0 ] && [ "$r1" -ne 0 ] && grep -q 'refused.*wrong shared secret' "$TMP/b" &&
    grep -q 'refused a node.*wrong shared secret' "$TMP/a" && grep -q 'rank 1 never joined' "$TMP/a"; then
    ok "wrong secret refused: $(cat "$TMP/b")"
else
    fail "wrong secret: exits $r0/$r1: $(cat "$TMP/a") / $(cat "$TMP/b")"
fi
read -r r0 r1 < <(attempt missing)
if [ "$r0" -ne 0 ] && [ "$r1" -ne 0 ] && grep -q 'no shared secret' "$TMP/b"; then
    ok "missing secret refused: $(cat "$TMP/b")"
else
    fail "missing secret: exits $r0/$r1: $(cat "$TMP/a") / $(cat "$TMP/b")"
fi
finish
