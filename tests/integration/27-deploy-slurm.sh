# deploy/amalgam.slurm without Slurm: stand-ins for scontrol, sbcast and
# srun (which starts its tasks with SLURM_PROCID and SLURM_NTASKS, as Slurm
# does) run the batch script on this host; the ranks come from Slurm's
# environment, the bootstrap from the first node of the list, the secret is
# made for the job and removed at the end.
# kvm: part
source "$(dirname "$0")/common.bash"
[ -e /dev/userfaultfd ] || [ "$(id -u)" -eq 0 ] || skip "SKIP: userfaultfd needs root or /dev/userfaultfd"
mkdir -p "$TMP/bin"
cat >"$TMP/bin/scontrol" <<'STUB'
#!/bin/bash
[ "$*" = "show hostnames $SLURM_JOB_NODELIST" ] || exit 1
tr ',' '\n' <<<"$SLURM_JOB_NODELIST"
STUB
cat >"$TMP/bin/sbcast" <<'STUB'
#!/bin/bash
echo "sbcast $*" >>"$STUB_LOG"
STUB
cat >"$TMP/bin/srun" <<'STUB'
#!/bin/bash
# srun [--options...] CMD ARGS...: one task per node of the list.
echo "srun $*" >>"$STUB_LOG"
while [[ ${1:-} == --* ]]; do shift; done
n=$(tr ',' '\n' <<<"$SLURM_JOB_NODELIST" | wc -l)
pids=()
for ((i = 0; i < n; i++)); do SLURM_PROCID=$i SLURM_NTASKS=$n "$@" & pids+=($!); done
st=0
for p in "${pids[@]}"; do wait "$p"; s=$?; [ $s -le $st ] || st=$s; done
exit $st
STUB
chmod +x "$TMP/bin/"*
export PATH="$TMP/bin:$PATH" STUB_LOG="$TMP/log" SLURM_JOB_NODELIST=127.0.0.1,127.0.0.1
export SLURM_JOB_ID=$((RANDOM + 100000)) AMALGAM="$AMALGAM" AMALGAM_PORT=$((20000 + RANDOM % 20000))
out=$(AMALGAM_COMMAND=dsm-check AMALGAM_FABRIC=tcp timeout 120 bash "$ROOT/deploy/amalgam.slurm" --iters 2000 2>&1)
rc=$?
if [ $rc -eq 0 ] && grep -q '^dsm-check: rank 0 of 2: ok in' <<<"$out" &&
    grep -q '^dsm-check: rank 1 of 2: ok in' <<<"$out" &&
    grep -q "^srun .* $AMALGAM dsm-check --bootstrap 127.0.0.1:$AMALGAM_PORT --secret-file /tmp/amalgam-$SLURM_JOB_ID.secret --fabric tcp --join-timeout 60 --iters 2000\$" "$TMP/log" &&
    grep -q "^sbcast .*/tmp/amalgam-$SLURM_JOB_ID.secret" "$TMP/log" &&
    ! [ -e "/tmp/amalgam-$SLURM_JOB_ID.secret" ]; then
    ok "amalgam.slurm: dsm-check on 2 tasks, ranks from SLURM_PROCID/SLURM_NTASKS, secret removed"
else
    fail "amalgam.slurm: exit $rc: $out / $(cat "$TMP/log")"
fi
# The default command, node: the test guest over the two tasks; without
# KVM, every node fails with status 2.
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    out=$(timeout 300 bash "$ROOT/deploy/amalgam.slurm" --kernel "$GUEST" --append test=smp-counter \
        --vcpus 2 --mem 256M 2>&1)
    rc=$?
    if [ $rc -eq 0 ] && grep -q '^TESTGUEST PASS smp-counter' <<<"$out"; then
        ok "amalgam.slurm: test guest smp-counter over 2 nodes"
    else
        fail "amalgam.slurm, test guest: exit $rc: $out"
    fi
else
    out=$(timeout 60 bash "$ROOT/deploy/amalgam.slurm" --kernel "$GUEST" --vcpus 2 2>&1)
    rc=$?
    if [ $rc -eq 2 ] && [ "$(grep -c '/dev/kvm does not exist' <<<"$out")" -eq 2 ]; then
        ok "amalgam.slurm without KVM: both nodes exit 2"
    else
        fail "amalgam.slurm without KVM: exit $rc: $out"
    fi
fi
finish
