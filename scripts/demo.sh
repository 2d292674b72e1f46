#!/usr/bin/env bash
# The demo: a guest spread over node processes on this host.
set -euo pipefail
cd "$(dirname "$0")/.."
build/amalgam run --vcpus 2 --mem 256M --kernel build/guest/testguest.elf --append test=smp-counter
