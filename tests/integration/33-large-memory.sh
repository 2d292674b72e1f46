# Large memory: a machine whose memory is larger than any one node process
# may hold. Each node process runs in its own memory cgroup, limited to well
# below the whole memory, and every node touches all of it:
#  - the DSM alone (host threads; runs on any host): with --dsm-cache each
#    node stays near its home slice plus its cache and the sweep's stamps all
#    read back; without it the same run must exceed the limit (which shows
#    the limit is real);
#  - the test guest's `mem` test over two nodes (needs /dev/kvm).
source "$(dirname "$0")/common.bash"
[ "$(id -u)" -eq 0 ] || skip "SKIP: creating memory cgroups needs root"

MEM_MB=96       # the machine's memory
LIMIT_MB=80     # what each node process may hold (home slice: 48, process ~12)
CACHE=8M

# cgroup v2 (memory.max) or v1 (memory.limit_in_bytes), whichever has the
# memory controller here.
CG_ROOT=""
if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    CG_ROOT=/sys/fs/cgroup; CG_V=2
    echo +memory >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
elif [ -d /sys/fs/cgroup/memory ] && [ -w /sys/fs/cgroup/memory ]; then
    CG_ROOT=/sys/fs/cgroup/memory; CG_V=1
fi
[ -n "$CG_ROOT" ] || skip "SKIP: no writable memory cgroup controller on this host"

head -c 32 /dev/urandom >"$TMP/secret"
groups=()
cleanup_groups() {
    for g in "${groups[@]}"; do rmdir "$g" 2>/dev/null; done
}
trap 'cleanup_groups; rm -rf "$TMP"' EXIT

make_group() { # name -> path, limited to LIMIT_MB, no swap
    local g="$CG_ROOT/amalgam-test-$$-$1"
    mkdir -p "$g" || return 1
    groups+=("$g")
    if [ $CG_V -eq 2 ]; then
        echo $((LIMIT_MB << 20)) >"$g/memory.max" && echo 0 >"$g/memory.swap.max" 2>/dev/null
    else
        echo $((LIMIT_MB << 20)) >"$g/memory.limit_in_bytes"
    fi
    echo "$g"
}
peak_mb() { # group -> peak usage in MiB
    local f="$1/memory.peak"
    [ $CG_V -eq 1 ] && f="$1/memory.max_usage_in_bytes"
    [ -r "$f" ] && echo $(($(cat "$f") >> 20)) || echo "?"
}

# Runs `amalgam ARGS...` for each of 2 ranks, each in its own fresh cgroup.
# Sets rcs[], peaks[], and leaves the output in $TMP/rank{0,1}.
run_ranks() {
    local tag=$1; shift
    local port=$((20000 + RANDOM % 20000)) pids=() g
    rcs=(); peaks=(); gs=()
    for r in 0 1; do
        g=$(make_group "$tag-$r") || { fail "cannot create a cgroup under $CG_ROOT"; return 1; }
        gs+=("$g")
        sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$g" \
            timeout 240 "$AMALGAM" "$@" --rank $r --size 2 --bootstrap 127.0.0.1:$port \
            --secret-file "$TMP/secret" \
            >"$TMP/rank$r" 2>&1 &
        pids+=($!)
    done
    for r in 0 1; do
        wait "${pids[$r]}"; rcs+=($?)
        peaks+=("$(peak_mb "${gs[$r]}")")
    done
}

# 1. The DSM alone, bounded cache: must succeed within the limit.
run_ranks cached dsm-check --fabric shm --sweep --mem ${MEM_MB}M --dsm-cache $CACHE
for r in 0 1; do
    if [ "${rcs[$r]}" -eq 0 ] && grep -q "rank $r of 2: ok" "$TMP/rank$r"; then
        ok "dsm sweep of ${MEM_MB} MiB, node $r limited to ${LIMIT_MB} MiB, cache $CACHE: cgroup peak ${peaks[$r]} MiB; $(grep -o 'peak resident.*' "$TMP/rank$r")"
    else
        fail "dsm sweep, node $r (limit ${LIMIT_MB} MiB, cache $CACHE): exit ${rcs[$r]}: $(tr '\n' '|' <"$TMP/rank$r")"
    fi
    grep -q "evictions" "$TMP/rank$r" && ! grep -q " 0 evictions" "$TMP/rank$r" ||
        fail "node $r evicted nothing: the cache bound was not exercised"
done

# 2. Control: the same without a cache bound holds every page on every node,
#    more than the limit allows, so at least one node must be killed.
run_ranks uncached dsm-check --fabric shm --sweep --mem ${MEM_MB}M
if [ "${rcs[0]}" -eq 124 ] || [ "${rcs[1]}" -eq 124 ]; then
    fail "control: a node outlived its killed peer until the time-out (exits ${rcs[*]}) instead of reporting it"
elif [ "${rcs[0]}" -ne 0 ] || [ "${rcs[1]}" -ne 0 ]; then
    ok "control: without --dsm-cache a node exceeds ${LIMIT_MB} MiB and is stopped (exits ${rcs[*]})"
else
    fail "control: without --dsm-cache both nodes fit in ${LIMIT_MB} MiB (peaks ${peaks[*]} MiB): the limit is not enforced, so this test proves nothing"
fi

# 3. A guest whose memory exceeds one node's limit writes and checks all of it.
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    MEM_MB=256; LIMIT_MB=200
    run_ranks guest node --fabric shm --vcpus 2 --mem ${MEM_MB}M --dsm-cache 32M \
        --kernel "$GUEST" --append test=mem
    if [ "${rcs[0]}" -eq 0 ] && grep -q "TESTGUEST PASS mem" "$TMP/rank0"; then
        ok "guest mem test over 2 nodes, ${MEM_MB} MiB, each node limited to ${LIMIT_MB} MiB: peaks ${peaks[*]} MiB"
    else
        fail "guest mem test, ${MEM_MB} MiB over 2 nodes limited to ${LIMIT_MB} MiB: exits ${rcs[*]}: $(tr '\n' '|' <"$TMP/rank0") $(tr '\n' '|' <"$TMP/rank1")"
    fi
else
    # Not in the nested L1 either: there the DSM moves a page in tens of
    # milliseconds (31's 2-node mem test: 48 MiB took 340 s), so a 256 MiB
    # guest outlasts any budget; issue 16's DSM work is what changes that.
    echo "part 3 needs /dev/kvm: not run here (nor in the emulated L1, where a 256 MiB guest memory sweep over 2 nodes is too slow)"
fi
finish
