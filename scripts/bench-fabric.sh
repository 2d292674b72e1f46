#!/usr/bin/env bash
# Compares amalgam's interconnect with libfabric's own fi_pingpong (fabtests)
# on one provider, in the same run: both p50/mean one-way 4 KiB latencies
# and their ratio, as one JSON line.
#   scripts/bench-fabric.sh tcp|shm [ITERS]
#   scripts/bench-fabric.sh verbs [ITERS] [HOST]
# verbs: both sides run here on the RDMA device that holds the address HOST
# (default: the first IPv4 address of a device `rdma link` lists, such as
# Soft-RoCE's in the nested L1, NESTED_RDMA=1); amalgam's two ranks
# bootstrap there (a loopback bootstrap cannot reach an RDMA device), and
# fi_pingpong gets the same device (-d) and the same FI_UNIVERSE_SIZE.
set -euo pipefail
cd "$(dirname "$0")/.."
P=${1:?usage: $0 tcp|shm|verbs [iters] [host]}
N=${2:-5000}
PORT=$((20000 + RANDOM % 20000))
AMALGAM=${AMALGAM_BIN:-build/amalgam}

if [ "$P" = verbs ]; then
    HOST=${3:-}
    if [ -z "$HOST" ]; then
        dev=$(rdma link show 2>/dev/null | sed -n 's/.* netdev \([^ ]*\).*/\1/p' | head -n 1)
        [ -n "$dev" ] && HOST=$(ip -4 -o addr show dev "$dev" | awk '{ sub(/\/.*/, "", $4); print $4; exit }')
    fi
    [ -n "$HOST" ] || { echo "{\"bench\":\"fabric-vs-fi_pingpong\",\"provider\":\"verbs\",\"error\":\"no RDMA device with an IPv4 address (rdma link show)\"}"; exit 1; }
    DOMAIN=$(rdma link show | awk -v d="$(ip -4 -o addr show | awk -v h="$HOST" '$4 ~ "^"h"/" { print $2; exit }')" \
        '$0 ~ " netdev "d"( |$)" { sub(/\/.*/, "", $2); print $2; exit }')
    export FI_UNIVERSE_SIZE=2 # as amalgam sets it (interconnect/fabric.c)
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"/tmp/bench-fabric-secret.$$"
    trap 'rm -f /tmp/bench-fabric-secret.$$' EXIT
    flags=(bench fabric --fabric verbs --size 4096 --iters "$N" --ranks 2 --bootstrap "$HOST:$PORT"
           --secret-file "/tmp/bench-fabric-secret.$$")
    timeout 300 "$AMALGAM" "${flags[@]}" --rank 1 >/dev/null 2>&1 &
    ours=$(timeout 300 "$AMALGAM" "${flags[@]}" --rank 0)
    wait $! || true
    PP=(-p "verbs;ofi_rxm" -d "$DOMAIN")
    TARGET=$HOST
    PORT=$((PORT + 1))
else
    ours=$("$AMALGAM" bench fabric --fabric "$P" --size 4096 --iters "$N")
    PP=(-p "$P")
    TARGET=127.0.0.1
fi
ours_p50=$(sed -n 's/.*"p50":\([0-9.]*\).*/\1/p' <<<"$ours")

# fi_pingpong: a server in the background, then the client; its usec/xfer
# column is the one-way time per 4 KiB transfer.
timeout 300 fi_pingpong "${PP[@]}" -e rdm -S 4096 -I "$N" -B "$PORT" >/dev/null 2>&1 &
server=$!
sleep 0.5
peer=$(timeout 300 fi_pingpong "${PP[@]}" -e rdm -S 4096 -I "$N" -P "$PORT" "$TARGET" | awk '$1 == "4k" {print $7}')
wait "$server" || true
if [ -z "$peer" ] || [ -z "$ours_p50" ]; then
    echo "{\"bench\":\"fabric-vs-fi_pingpong\",\"provider\":\"$P\",\"error\":\"$([ -z "$ours_p50" ] && echo "amalgam bench fabric" || echo fi_pingpong) did not run\"}"
    exit 1
fi
ratio=$(awk -v a="$ours_p50" -v b="$peer" 'BEGIN { printf "%.2f", a / b }')
echo "{\"bench\":\"fabric-vs-fi_pingpong\",\"provider\":\"$P\",\"size\":4096,\"iters\":$N,\"amalgam_p50_us\":$ours_p50,\"fi_pingpong_us\":$peer,\"ratio\":$ratio,\"goal\":1.2}"
