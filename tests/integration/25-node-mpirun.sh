# `amalgam node` started by a launcher (Open MPI's mpirun) instead of
# `amalgam run --nodes`: ranks come from OMPI_COMM_WORLD_RANK/SIZE, the
# nodes meet at the bootstrap, and the machine gives the same result. The
# DSM check runs under mpirun for real on any host; the guest needs KVM.
# kvm: part
source "$(dirname "$0")/common.bash"
command -v mpirun >/dev/null || skip "SKIP: mpirun (openmpi-bin) is not installed"
head -c 32 /dev/urandom >"$TMP/secret"
chmod 600 "$TMP/secret"
mpi=(timeout 120 mpirun --allow-run-as-root --oversubscribe -np 2)

# The DSM (userfaultfd + fabric, host threads) over two ranks of mpirun.
if [ -e /dev/userfaultfd ] || [ "$(id -u)" -eq 0 ]; then
    for fabric in shm tcp; do
        port=$((20000 + RANDOM % 20000))
        out=$("${mpi[@]}" "$AMALGAM" dsm-check --fabric $fabric --bootstrap 127.0.0.1:$port \
            --secret-file "$TMP/secret" 2>&1)
        rc=$?
        if [ $rc -eq 0 ] && grep -q '^dsm-check: rank 0 of 2: ok in' <<<"$out" &&
            grep -q '^dsm-check: rank 1 of 2: ok in' <<<"$out"; then
            ok "dsm-check, 2 ranks under mpirun over $fabric"
        else
            fail "dsm-check under mpirun over $fabric: exit $rc: $out"
        fi
    done
else
    echo "dsm-check under mpirun not run: userfaultfd needs root or /dev/userfaultfd"
fi

node=(node --fabric shm --secret-file "$TMP/secret" --kernel "$GUEST" --append test=smp-counter
      --vcpus 2 --mem 256M)
if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
    # Without KVM each node must say so and exit 2, not wait for its peer.
    port=$((20000 + RANDOM % 20000))
    out=$("${mpi[@]}" "$AMALGAM" "${node[@]}" --bootstrap 127.0.0.1:$port 2>&1)
    rc=$?
    if [ $rc -eq 2 ] && grep -q '^amalgam node [01]: /dev/kvm does not exist' <<<"$out"; then
        ok "amalgam node under mpirun without KVM: exit 2, $(grep -m1 '^amalgam node' <<<"$out")"
    else
        fail "amalgam node under mpirun without KVM: exit $rc: $out"
    fi
    echo "the test guest under mpirun needs /dev/kvm: not run here (make test runs this script again in the nested L1)"
    finish
    exit
fi
port=$((20000 + RANDOM % 20000))
out=$("${mpi[@]}" "$AMALGAM" "${node[@]}" --bootstrap 127.0.0.1:$port 2>&1)
rc=$?
if [ $rc -eq 0 ] && grep -q '^TESTGUEST PASS smp-counter' <<<"$out"; then
    ok "test guest smp-counter over 2 nodes started by mpirun"
else
    fail "test guest under mpirun: exit $rc: $out"
fi
finish
