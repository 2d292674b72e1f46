# The test guest on a machine spread over node processes: vCPUs on
# different nodes, memory coherent through the DSM, IPIs and device I/O
# crossing nodes, TSC and the ACPI PM timer consistent across nodes.
# kvm: all
source "$(dirname "$0")/common.bash"
need_kvm
# The guest's default counts, written out so that a slow host's
# AMALGAM_TEST_ITERS_DIV applies to them.
for t in "smp-counter iters=1000000" "spinlock iters=20000" "ipi rounds=50" timer "ioapic rounds=20"; do
    run_guest "${t%% *}" 0 --nodes 2 --vcpus 4 --mem 256M --append "test=$t"
    run_guest "${t%% *}" 0 --nodes 4 --vcpus 4 --mem 256M --append "test=$t"
done
# Every vCPU spins with locked operations on one page: only hold windows
# let a node that is granted the page use it before it is taken back.
# --stats must name the page they fight over among each node's hottest.
for n in 2 4; do
    run_guest contend 0 --nodes $n --vcpus $n --mem 64M --stats --append "test=contend iters=20000"
    grep '^contend:' "$TMP/out" || true
    hot=$(grep -c 'hottest pages (gpa fetched/lost): 0x[0-9a-f]* [0-9]*/[0-9]*' "$TMP/err")
    if [ "$hot" -eq "$n" ]; then
        ok "--stats: $n nodes list their hottest pages; node 1's: $(grep -o 'amalgam node 1:.*' "$TMP/err" | grep -o 'hottest pages.*' | cut -c1-120)"
    else
        fail "--stats: $hot of $n nodes listed their hottest pages: $(tr '\n' '|' <"$TMP/err" | cut -c1-600)"
    fi
done
# 32 MiB: both nodes' halves (24 MiB above the guest image), small enough
# to check in the emulated L1 (48 MiB took 340 s of its 1500 s there).
run_guest mem 0 --nodes 2 --vcpus 2 --mem 32M --append test=mem
# TSC handed between vCPUs on different node processes must never step back.
for n in 2 4; do
    run_guest tsc 0 --nodes $n --vcpus 4 --mem 256M --append "test=tsc rounds=500"
    grep '^tsc:' "$TMP/out" || true
done
run_guest tsc 0 --nodes 2 --vcpus 4 --placement 0,1,1,0 --append "test=tsc rounds=200"
# The ACPI PM timer, which every node answers itself from the guest TSC:
# never behind the read before, nor behind another CPU's earlier reading.
for n in 2 4; do
    run_guest pmtimer 0 --nodes $n --vcpus 4 --mem 256M --append "test=pmtimer reads=2000 rounds=200"
    grep '^pmtimer:' "$TMP/out" || true
done
run_guest pmtimer 1 --nodes 2 --vcpus 2 --append "test=pmtimer reads=100 rounds=20 inject=1"
run_guest smp-counter 0 --nodes 2 --vcpus 4 --fabric tcp --append "test=smp-counter iters=1000000"
run_guest ipi 0 --nodes 2 --vcpus 4 --placement 0,1,1,0 --append "test=ipi rounds=50"
run_guest nonexistent 1 --nodes 2 --vcpus 2 --append test=nonexistent
# The scheduling policy: vCPU threads SCHED_IDLE (IDL), the DSM and device
# threads normal (TS), read off the threads of a running 2-node machine.
"$AMALGAM" run --kernel "$GUEST" --nodes 2 --vcpus 2 --append "test=heartbeat seconds=$((60 * SLOW))" >/dev/null 2>&1 &
run=$!
for _ in $(seq 100); do
    pols=$(ps -L -o cls=,comm= --ppid "$run" 2>/dev/null | tr -s ' ' | sed 's/^ //' | sort | tr '\n' ';')
    case "$pols" in *"IDL amalgam-vcpu1"*) break ;; esac
    sleep 0.1
done
kill -TERM "$run" 2>/dev/null; wait "$run" 2>/dev/null
bad=
for w in "IDL amalgam-vcpu0" "IDL amalgam-vcpu1" "TS amalgam-dsm" "TS amalgam-devices"; do
    [ "$(tr ';' '\n' <<<"$pols" | grep -cx "$w")" -ge 1 ] || bad="$bad, no '$w'"
done
[ "$(tr ';' '\n' <<<"$pols" | grep -c ' amalgam-dsm$')" -eq 2 ] || bad="$bad, not two DSM threads"
if [ -z "$bad" ]; then
    ok "thread policies of a 2-node run: $pols"
else
    fail "thread policies of a 2-node run: '$pols'${bad}"
fi
finish
