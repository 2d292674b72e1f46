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
# One-sided page pulls over verbs: RDMA READs from the home's registered
# memory, on the counter and on a sweep through a bounded cache.
pulls() { grep -ho '[0-9]* pulled one-sided' "$TMP/a" "$TMP/b" | awk '{s += $1} END {print s + 0}'; }
for args in "--threads 2 --iters 20000" "--sweep --mem 24M --dsm-cache 2M"; do
    # shellcheck disable=SC2086 # the flags are words
    two dsm-check $args --dsm-pull on
    if [ $ra -eq 0 ] && [ $rb -eq 0 ] && [ "$(pulls)" -gt 0 ]; then
        ok "dsm-check $args --dsm-pull on over verbs: $(pulls) pages pulled: $(grep -h 'ok in' "$TMP/a" | cut -c1-100)"
    else
        fail "dsm-check $args --dsm-pull on over verbs: exits $ra/$rb: $(cat "$TMP/a" "$TMP/ea" "$TMP/b" "$TMP/eb" | grep -v '^/lib' | cut -c1-160 | tr '\n' '|')"
    fi
done
# Both ways in one run, against the floor measured in the same run.
line=$(AMALGAM_LOCAL_HOST=$NET.1 timeout $((300 * SLOW)) "$AMALGAM" bench dsm --host --fabric verbs --pages 300 2>&1)
if grep -q '"one_sided_us":{"read_p50"' <<<"$line"; then
    ok "bench dsm --host --fabric verbs: $line"
else
    fail "bench dsm --host --fabric verbs: $line"
fi
# Failure paths. A home describing its pages wrongly (a key the NIC does
# not know; an address outside what it registered): the requester's READ
# completes in error, and the run ends with a named error.
for kind in key addr; do
    t0=$(date +%s)
    AMALGAM_TEST_PULL_FAULT=$kind two dsm-check --iters 2000 --dsm-pull on
    dt=$(($(date +%s) - t0))
    if [ $ra -ne 0 ] && [ $ra -lt 124 ] && grep -q 'one-sided: ' "$TMP/ea" "$TMP/eb"; then
        ok "a faulty pull descriptor ($kind) over verbs: exits $ra/$rb after $dt s: $(grep -h -m1 'one-sided: ' "$TMP/ea" "$TMP/eb" | head -n 1)"
    else
        fail "a faulty pull descriptor ($kind) over verbs: exits $ra/$rb after $dt s: $(cat "$TMP/ea" "$TMP/eb" | grep -v '^/lib' | tr '\n' '|')"
    fi
done
# Registration refused: no CAP_IPC_LOCK and a 16 MiB memlock limit, so the
# message buffers register but 128 MiB of home pages cannot.
if command -v setpriv >/dev/null; then
    nolock=(setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock -- bash -c 'ulimit -l 16384 && exec "$@"' lim)
    nolock_two() {
        PORT=$((PORT + 1))
        local f=(--ranks 2 --bootstrap "$NET.1:$PORT" --secret-file "$TMP/secret" --fabric verbs)
        timeout $((120 * SLOW)) "${nolock[@]}" "$AMALGAM" "$@" "${f[@]}" --rank 0 >"$TMP/a" 2>"$TMP/ea" &
        local a=$!
        timeout $((120 * SLOW)) "${nolock[@]}" "$AMALGAM" "$@" "${f[@]}" --rank 1 >"$TMP/b" 2>"$TMP/eb"
        rb=$?
        wait $a
        ra=$?
    }
    nolock_two dsm-check --iters 2000 --mem 256M --dsm-pull on
    if [ $ra -ne 0 ] && [ $ra -lt 124 ] && grep -q 'lockable memory' "$TMP/ea"; then
        ok "--dsm-pull on over verbs under a 16 MiB memlock limit: exits $ra/$rb: $(head -n 1 "$TMP/ea")"
    else
        fail "--dsm-pull on under a memlock limit: exits $ra/$rb: $(cat "$TMP/ea" "$TMP/eb" | grep -v '^/lib' | tr '\n' '|')"
    fi
else
    fail "setpriv (util-linux) is missing: cannot drop CAP_IPC_LOCK for the memlock check"
fi
# A peer that dies mid-transfer: rank 1 is killed while pages move both
# ways; rank 0 must name it and stop within the liveness time-out, not hang.
# The time-out is shortened from the L1's default (SLOW minutes) so that
# "within" means something here.
dead_ms=$((SLOW * 4000)) old_dead=${AMALGAM_DEAD_AFTER_MS:-}
export AMALGAM_DEAD_AFTER_MS=$dead_ms
PORT=$((PORT + 1))
f=(--ranks 2 --bootstrap "$NET.1:$PORT" --secret-file "$TMP/secret" --fabric verbs)
timeout $((120 * SLOW)) "$AMALGAM" dsm-check --threads 2 --iters 100000000 --dsm-pull on "${f[@]}" --rank 0 >"$TMP/a" 2>"$TMP/ea" &
a=$!
"$AMALGAM" dsm-check --threads 2 --iters 100000000 --dsm-pull on "${f[@]}" --rank 1 >"$TMP/b" 2>"$TMP/eb" &
b=$!
sleep $((3 * SLOW))
kill -9 $b
t0=$(date +%s)
wait $a
ra=$? dt=$(($(date +%s) - t0))
export AMALGAM_DEAD_AFTER_MS=$old_dead # the guest tests below need the L1's own
if [ $ra -ne 0 ] && [ $ra -lt 124 ] && [ $dt -le $((dead_ms / 1000 + 10 * SLOW)) ] &&
    grep -q 'peer rank 1 stopped answering' "$TMP/ea"; then
    ok "rank 1 killed mid-transfer over verbs: rank 0 exits $ra after $dt s (liveness time-out $((dead_ms / 1000)) s): $(grep -m1 'stopped answering' "$TMP/ea")"
else
    fail "rank 1 killed mid-transfer over verbs: rank 0 exits $ra after $dt s: $(grep -v '^/lib' "$TMP/ea" | tr '\n' '|')"
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
