# The SMP test guest on one node: every test at 1, 2 and 4 vCPUs.
# kvm: all
source "$(dirname "$0")/common.bash"
need_kvm
for n in 1 2 4; do
    for t in smp-counter spinlock ipi timer halt mem tsc ioapic; do
        run_guest "$t" 0 --vcpus $n --mem 256M --append "test=$t"
    done
done
run_guest pmtimer 0 --vcpus 4 --mem 256M --append "test=pmtimer reads=2000"
run_guest nonexistent 1 --vcpus 2 --append test=nonexistent
run_guest bench-vmexit 0 --vcpus 1 --mem 64M --append "test=bench-vmexit iters=1000"
finish
