#!/usr/bin/env bash
# Plots a --trace file of vCPU moves (docs/migration.md) with gnuplot:
#   TRACE-downtime.png   histogram of downtimes (us, log-2 bins)
#   TRACE-nodes.png      each vCPU's node over time
#   TRACE-faults.png     DSM faults per second on the new node in the 100 ms
#                        after each move, over time
# usage: scripts/plot-migration.sh TRACE [OUTPUT-PREFIX]
set -euo pipefail
trace=${1:?usage: scripts/plot-migration.sh TRACE [OUTPUT-PREFIX]}
out=${2:-${trace%.*}}
command -v gnuplot >/dev/null || { echo "plot-migration: gnuplot is missing (apt-get install gnuplot-nox; scripts/install-deps.sh installs it)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "plot-migration: python3 is missing" >&2; exit 1; }
[ -s "$trace" ] || { echo "plot-migration: $trace is empty or missing" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The trace as columns, in epoch order; the nodes as step lines per vCPU.
python3 - "$trace" "$tmp" <<'PY'
import json, math, sys, collections
trace, tmp = sys.argv[1], sys.argv[2]
ls = sorted((json.loads(l) for l in open(trace) if l.strip()), key=lambda l: l["epoch"])
if not ls:
    sys.exit("plot-migration: no moves in the trace")
with open(tmp + "/moves.dat", "w") as f:
    for l in ls:
        f100 = l.get("faults_100ms")
        f.write("%f %d %d %d %f %s\n" % (l["t_ms"] / 1e3, l["vcpu"], l["from"], l["to"],
                                          l["downtime_us"], "NaN" if f100 is None else f100 * 10))
bins = collections.Counter(int(math.log2(max(l["downtime_us"], 1))) for l in ls)
counted = [l for l in ls if l.get("faults_100ms") is not None]
with open(tmp + "/faults.dat", "w") as f:
    for l in counted:
        f.write("%f %d\n" % (l["t_ms"] / 1e3, l["faults_100ms"] * 10))
    if not counted:  # gnuplot refuses a plot with no points
        f.write("0 0\n")
with open(tmp + "/counted", "w") as f:
    f.write("%d\n" % len(counted))
with open(tmp + "/hist.dat", "w") as f:
    for b in range(min(bins), max(bins) + 1):
        f.write("%d %d\n" % (2 ** b, bins.get(b, 0)))
vcpus = sorted({l["vcpu"] for l in ls})
end = ls[-1]["t_ms"] / 1e3
with open(tmp + "/nodes.dat", "w") as f:
    for v in vcpus:
        mine = [l for l in ls if l["vcpu"] == v]
        node = mine[0]["from"]
        f.write("0 %d\n" % node)
        for l in mine:
            f.write("%f %d\n%f %d\n" % (l["t_ms"] / 1e3, node, l["t_ms"] / 1e3, l["to"]))
            node = l["to"]
        f.write("%f %d\n\n\n" % (end, node))
with open(tmp + "/vcpus", "w") as f:
    f.write(" ".join(map(str, vcpus)) + "\n")
PY
n=$(wc -l <"$tmp/moves.dat")
read -r -a vcpus <"$tmp/vcpus"
read -r counted <"$tmp/counted"
ftitle="DSM faults on the new node in the 100 ms after a move"
[ "$counted" -gt 0 ] || ftitle="no fault counts in this trace (every move's were null)"
plots=""
for i in "${!vcpus[@]}"; do
    plots="$plots${plots:+, }'$tmp/nodes.dat' index $i using 1:(\$2 + $i * 0.04) with steps title 'vCPU ${vcpus[$i]}'"
done
gnuplot <<GP
set terminal png size 900,500
set output '$out-downtime.png'
set title "Downtime of $n vCPU moves"
set logscale x 2
set xlabel 'downtime (us, log-2 bins)'
set ylabel 'moves'
set style fill solid 0.6
set boxwidth 0.7 relative
plot '$tmp/hist.dat' using 1:2 with boxes notitle
unset logscale x
set output '$out-nodes.png'
set title "Node of each vCPU over time"
set xlabel 'time (s)'
set ylabel 'node'
set ytics 1
plot $plots
set output '$out-faults.png'
set title "$ftitle"
set ylabel 'faults per second'
set ytics auto
plot '$tmp/faults.dat' using 1:2 with points pt 7 ps 0.5 notitle
GP
echo "plot-migration: $out-downtime.png $out-nodes.png $out-faults.png ($n moves)"
