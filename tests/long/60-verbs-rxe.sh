# --fabric verbs on a real kernel verbs stack: Soft-RoCE (rdma_rxe) over a
# veth, in scripts/nested-kvm.sh's L1 (NESTED_RDMA=1) where this host has
# no RDMA device. Two ranks on the rxe device (its address is their
# bootstrap, so libfabric's verbs;ofi_rxm binds them there): fabric-check,
# scripts/bench-fabric.sh verbs (amalgam against fi_pingpong, one JSON
# line), dsm-check, and the test guest on two nodes over verbs: smp-counter,
# spinlock, mp and sb. In the L1's initial network namespace: its 6.12
# rdma_rxe takes RoCE packets only there (docs/interconnect.md), so two
# namespace "hosts" cannot talk over it.
source "$(dirname "$0")/../integration/common.bash"
have_rxe() { command -v rdma >/dev/null && [ -d /sys/module/rdma_rxe ] && [ -d /dev/infiniband ]; }
if ! have_rxe; then
    [ -n "${AMALGAM_IN_NESTED:-}" ] && skip "SKIP: no Soft-RoCE in the L1 either (rdma tool, rdma_rxe, /dev/infiniband)"
    [ -r /dev/kvm ] || [ "$(id -u)" -eq 0 ] || skip "SKIP: needs root for the L1's RDMA set-up"
    echo "no Soft-RoCE here: the test runs in scripts/nested-kvm.sh's L1 with NESTED_RDMA=1"
    NESTED_RDMA=1 NESTED_TCG=${NESTED_TCG:-single} NESTED_TIMEOUT=1500 \
        "$ROOT/scripts/nested-kvm.sh" env AMALGAM_IN_NESTED=1 AMALGAM_TEST_SLOW="${AMALGAM_TEST_SLOW:-5}" AMALGAM_TEST_ITERS_DIV="${AMALGAM_TEST_ITERS_DIV:-10}" \
        bash tests/long/60-verbs-rxe.sh >"$TMP/nested" 2>&1
    rc=$?
    tr -d '\r' <"$TMP/nested" | awk 'p; /nested-kvm: L1 has \/dev\/kvm/ { p = 1 }'
    [ $rc -eq 3 ] && skip "SKIP: scripts/nested-kvm.sh could not start an L1 with Soft-RoCE: $(grep 'nested-kvm' "$TMP/nested" | tail -n 1)"
    exit $rc
fi
[ "$(id -u)" -eq 0 ] || skip "SKIP: making an rxe device needs root"
need_kvm
DEV=vr$$ PEER=vp$$ RXE=rxe$$
NET=10.252.$((RANDOM % 250))
trap 'rdma link del $RXE 2>/dev/null; ip link del $DEV 2>/dev/null; rm -rf "$TMP"' EXIT
ip link add "$DEV" type veth peer name "$PEER" && ip addr add "$NET.1/24" dev "$DEV" &&
    ip link set "$DEV" up && ip link set "$PEER" up || skip "SKIP: cannot make a veth pair"
rdma link add "$RXE" type rxe netdev "$DEV" 2>"$TMP/rxe" || { fail "rdma link add: $(cat "$TMP/rxe")"; finish; exit; }
if fi_info -p verbs 2>/dev/null | grep -q "domain: $RXE"; then
    ok "fi_info -p verbs lists $RXE over $DEV ($NET.1)"
else
    fail "fi_info -p verbs does not list $RXE: $(fi_info -p verbs 2>&1 | head -n 3 | tr '\n' '|')"
fi
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/secret"
PORT=$((7600 + RANDOM % 300))
two() { # ARGS...: ranks 0 and 1 of `amalgam ARGS` over verbs; sets ra, rb
    PORT=$((PORT + 1))
    local f=(--ranks 2 --bootstrap "$NET.1:$PORT" --secret-file "$TMP/secret" --fabric verbs)
    timeout $((300 * SLOW)) "$AMALGAM" "$@" "${f[@]}" --rank 0 >"$TMP/a" 2>"$TMP/ea" &
    local a=$!
    timeout $((300 * SLOW)) "$AMALGAM" "$@" "${f[@]}" --rank 1 >"$TMP/b" 2>"$TMP/eb"
    rb=$?
    wait $a
    ra=$?
}
two fabric-check --same-clock
if [ $ra -eq 0 ] && [ $rb -eq 0 ] && grep -q 'over verbs;ofi_rxm' "$TMP/a"; then
    ok "fabric-check over verbs: $(head -n 1 "$TMP/a")"
else
    fail "fabric-check over verbs: exits $ra/$rb: $(cat "$TMP/a" "$TMP/ea" "$TMP/b" "$TMP/eb" | tr '\n' '|')"
fi
if AMALGAM_BIN=$AMALGAM "$ROOT/scripts/bench-fabric.sh" verbs 1000 "$NET.1" >"$TMP/bench" 2>&1 &&
   grep -q '"ratio"' "$TMP/bench"; then
    ok "scripts/bench-fabric.sh verbs: $(cat "$TMP/bench")"
else
    fail "scripts/bench-fabric.sh verbs: $(tr '\n' '|' <"$TMP/bench")"
fi
two dsm-check --threads 2 --iters 20000
if [ $ra -eq 0 ] && [ $rb -eq 0 ]; then
    ok "dsm-check over verbs: $(grep -h 'ok in' "$TMP/a" "$TMP/b" | cut -c1-120 | tr '\n' '|')"
else
    fail "dsm-check over verbs: exits $ra/$rb: $(cat "$TMP/a" "$TMP/ea" "$TMP/b" "$TMP/eb" | grep -v '^/lib' | cut -c1-160 | tr '\n' '|')"
fi
for t in "smp-counter iters=200000" "spinlock iters=20000" "mp iters=20000" "sb iters=20000"; do
    guest_args "$SLOW" --vcpus 2 --mem 64M --append "test=$t"
    two node --kernel "$GUEST" "${GUEST_ARGS[@]}"
    name=${t%% *}
    if [ $ra -eq 0 ] && [ $rb -eq 0 ] && grep -q "^TESTGUEST PASS $name" "$TMP/a"; then
        ok "$name on --nodes 2 over verbs (${GUEST_ARGS[*]}): $(grep -h '^litmus\|^TESTGUEST' "$TMP/a" | tr '\n' ' ')"
    else
        fail "$name over verbs: exits $ra/$rb: $(tr '\n' '|' <"$TMP/a" | tail -c 300) $(tr '\n' '|' <"$TMP/ea" | tail -c 300)"
    fi
done
finish
