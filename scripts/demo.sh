#!/usr/bin/env bash
# The demo: one guest spread over two node processes on this host. vCPU 1
# lives on node 1, its memory is kept coherent by the DSM over the shm
# fabric, and both vCPUs hammer one shared counter with lock xadd.
set -euo pipefail
cd "$(dirname "$0")/.."
set -x
build/amalgam run --nodes 2 --vcpus 2 --mem 256M --kernel build/guest/testguest.elf --append test=smp-counter
