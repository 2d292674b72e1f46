#!/usr/bin/env bash
# Compares amalgam's interconnect with libfabric's own fi_pingpong (fabtests)
# on one provider, in the same run: both p50/mean one-way 4 KiB latencies
# and their ratio, as one JSON line. Usage: scripts/bench-fabric.sh tcp|shm [ITERS]
set -euo pipefail
cd "$(dirname "$0")/.."
P=${1:?usage: $0 tcp|shm [iters]}
N=${2:-5000}
PORT=$((20000 + RANDOM % 20000))

ours=$(build/amalgam bench fabric --fabric "$P" --size 4096 --iters "$N")
ours_p50=$(sed -n 's/.*"p50":\([0-9.]*\).*/\1/p' <<<"$ours")

# fi_pingpong: a server in the background, then the client; its usec/xfer
# column is the one-way time per 4 KiB transfer.
timeout 60 fi_pingpong -p "$P" -e rdm -S 4096 -I "$N" -B "$PORT" >/dev/null 2>&1 &
server=$!
sleep 0.5
peer=$(timeout 60 fi_pingpong -p "$P" -e rdm -S 4096 -I "$N" -P "$PORT" 127.0.0.1 | awk '$1 == "4k" {print $7}')
wait "$server" || true
if [ -z "$peer" ]; then
    echo "{\"bench\":\"fabric-vs-fi_pingpong\",\"provider\":\"$P\",\"error\":\"fi_pingpong did not run\"}"
    exit 1
fi
ratio=$(awk -v a="$ours_p50" -v b="$peer" 'BEGIN { printf "%.2f", a / b }')
echo "{\"bench\":\"fabric-vs-fi_pingpong\",\"provider\":\"$P\",\"size\":4096,\"iters\":$N,\"amalgam_p50_us\":$ours_p50,\"fi_pingpong_us\":$peer,\"ratio\":$ratio,\"goal\":1.2}"
