# The interconnect between local ranks: every rank exchanges a checked
# 4 KiB message with every other (shm and tcp), and the benchmark runs.
source "$(dirname "$0")/common.bash"
for p in shm tcp; do
    # One host, one TSC: each clock estimate must be within its error bound.
    if out=$(timeout 60 "$AMALGAM" fabric-check --local 3 --fabric $p --same-clock 2>&1) &&
        [ "$(grep -c 'exchanged 4 KiB with 2 peers' <<<"$out")" -eq 3 ] &&
        [ "$(grep -c 'TSC offset to rank 0' <<<"$out")" -eq 2 ]; then
        ok "fabric-check, 3 ranks over $p; $(grep -m1 'TSC offset' <<<"$out")"
    else
        fail "fabric-check over $p: $out"
    fi
    line=$(timeout 60 "$AMALGAM" bench fabric --fabric $p --size 4096 --iters 200 2>&1)
    if grep -Eq '^\{"bench":"fabric".*"one_way_us":\{"p50":[0-9.]+,"p99":[0-9.]+\},"bandwidth_MBps":[0-9.]+\}$' <<<"$line"; then
        ok "bench fabric over $p: $line"
    else
        fail "bench fabric over $p: $line"
    fi
done
finish
