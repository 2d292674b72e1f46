# Four ranks started by Open MPI's mpirun find each other through the
# launcher's environment (OMPI_COMM_WORLD_RANK/SIZE) and the bootstrap.
source "$(dirname "$0")/common.bash"
command -v mpirun >/dev/null || skip "SKIP: mpirun (openmpi-bin) is not installed"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/secret"
port=$((20000 + RANDOM % 20000))
out=$(timeout 120 mpirun --allow-run-as-root --oversubscribe -np 4 \
    "$AMALGAM" fabric-check --fabric tcp --bootstrap 127.0.0.1:$port --secret-file "$TMP/secret" 2>&1)
rc=$?
n=$(grep -c 'exchanged 4 KiB with 3 peers' <<<"$out")
if [ $rc -eq 0 ] && [ "$n" -eq 4 ]; then
    ok "4 ranks under mpirun"
else
    fail "mpirun: exit $rc, $n of 4 ranks ok: $out"
fi
finish
