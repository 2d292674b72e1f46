# Debian's stock kernel (unmodified) on a machine spread over two node
# processes: it must find both NUMA nodes in the ACPI SRAT, set up memory
# on both, and bring up both CPUs; then, as far as it gets, the initramfs
# (scripts/make-initramfs.sh) reports node0 node1, 2 CPUs and numactl's
# "available: 2 nodes (0-1)".
#
# Where guest kernel mode is emulated (kvm_pvm, HOSTFACTS.md) the stock
# kernel needs ~500 s to reach the initramfs and cannot run user programs
# (`syscall` is broken there), so the initramfs lines are reported but only
# required when `amalgam run -v` says guest CPL0 runs natively.
#
# Environment: AMALGAM_LINUX_TIMEOUT (seconds for the boot, default 1500),
# AMALGAM_LINUX_INITRD=gz|cpio (compressed or plain initramfs, default gz),
# AMALGAM_LINUX_APPEND (extra kernel arguments). The timestamped console
# and amalgam's stderr are kept in build/test-logs/linux-numa.{console,err};
# AMALGAM_LINUX_REPLAY=PREFIX judges a saved PREFIX.console/PREFIX.err
# instead of booting (no KVM needed: for checking this script).
source "$(dirname "$0")/../integration/common.bash"
LIMIT=${AMALGAM_LINUX_TIMEOUT:-1500}
CON="$TMP/console"    # "SECONDS-SINCE-START<TAB>line"
KEEP="$ROOT/build/test-logs/linux-numa"

boot() {
    need_kvm

    KERNEL=$("$ROOT/scripts/fetch-debian-kernel.sh" "$ROOT/build/linux" 2>"$TMP/fetch")
    case $? in
        0) ok "kernel $KERNEL" ;;
        3) tail -n 3 "$TMP/fetch"
           skip "SKIP: Debian's kernel package cannot be downloaded (no mirror): $(tail -n 1 "$TMP/fetch")" ;;
        *) fail "fetch-debian-kernel.sh: $(tr '\n' '|' <"$TMP/fetch")"; finish; exit ;;
    esac
    INITRD="$ROOT/build/linux/initrd.cpio"
    [ "${AMALGAM_LINUX_INITRD:-gz}" = gz ] && INITRD="$INITRD.gz"
    "$ROOT/scripts/make-initramfs.sh" "$INITRD" >"$TMP/mk" 2>&1 ||
        { fail "make-initramfs.sh: $(tr '\n' '|' <"$TMP/mk")"; finish; exit; }
    ok "$(cat "$TMP/mk")"

    # panic=-1: a panic (e.g. init killed) reboots at once, which ends the run.
    APPEND="console=ttyS0 loglevel=7 panic=-1 ${AMALGAM_LINUX_APPEND:-}"
    echo "booting (up to ${LIMIT}s): amalgam run -v --nodes 2 --vcpus 2 --mem 1G --append '$APPEND'"
    t0=$SECONDS
    timeout -k 10 "$LIMIT" "$AMALGAM" run -v --nodes 2 --vcpus 2 --mem 1G --kernel "$KERNEL" \
        --initrd "$INITRD" --append "$APPEND" </dev/null 2>"$TMP/err" |
        while IFS= read -r line || [ -n "$line" ]; do
            printf '%d\t%s\n' $((SECONDS - t0)) "${line%$'\r'}"
        done >"$CON"
    rc=${PIPESTATUS[0]}
    total=$((SECONDS - t0))
    mkdir -p "$(dirname "$KEEP")"
    cp "$CON" "$KEEP.console"
    cp "$TMP/err" "$KEEP.err"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "amalgam run stopped by the ${LIMIT}s time-out after ${total}s"
    else
        echo "amalgam run exited with status $rc after ${total}s"
    fi
    echo "--- amalgam stderr (last 15 lines)"
    tail -n 15 "$TMP/err"
    echo "--- console (last 25 lines)"
    tail -n 25 "$CON" | cut -f2-
}

if [ -n "${AMALGAM_LINUX_REPLAY:-}" ]; then
    cp "$AMALGAM_LINUX_REPLAY.console" "$CON" && cp "$AMALGAM_LINUX_REPLAY.err" "$TMP/err" || exit 1
    rc=0
    total=$(tail -n 1 "$CON" | cut -f1)
    echo "replaying $AMALGAM_LINUX_REPLAY.console"
else
    boot
fi

native=false
if grep -q 'guest CPL0 runs natively' "$TMP/err"; then
    native=true
    echo "guest CPL0 runs natively: the initramfs lines are required"
elif grep -q 'guest CPL0 is emulated' "$TMP/err"; then
    echo "guest CPL0 is emulated on this host: the initramfs lines are reported, not required"
else
    echo "amalgam did not say how guest CPL0 runs: the initramfs lines are reported, not required"
fi

# milestone REQUIRED NAME ERE: first console line matching ERE, with its time.
seen_all=true
milestone() {
    local req=$1 name=$2 re=$3 hit
    hit=$(RE="$re" awk '{ t = $0; sub(/\t.*/, "", t); s = substr($0, length(t) + 2)
                          if (s ~ ENVIRON["RE"]) { print t "\t" s; exit } }' "$CON")
    if [ -n "$hit" ]; then
        printf 'milestone %-28s at %5ss: %s\n' "$name" "${hit%%$'\t'*}" "${hit#*$'\t'}"
        echo "$name" >>"$TMP/reached"
    elif [ "$req" = required ]; then
        fail "milestone $name: no console line matches /$re/"
    else
        printf 'milestone %-28s not reached\n' "$name"
        seen_all=false
        if $native; then fail "milestone $name not reached although guest CPL0 runs natively"; fi
    fi
}
: >"$TMP/reached"
milestone required "first console line" '.'
milestone required "SRAT node 0" 'SRAT: PXM [0-9]+ -> APIC 0x[0-9a-f]+ -> Node 0|SRAT: Node 0 PXM [0-9]+ \[mem'
milestone required "SRAT node 1" 'SRAT: PXM [0-9]+ -> APIC 0x[0-9a-f]+ -> Node 1|SRAT: Node 1 PXM [0-9]+ \[mem'
milestone required "NUMA node 0 memory" 'Initmem setup node 0 |NODE_DATA\(0\) allocated'
milestone required "NUMA node 1 memory" 'Initmem setup node 1 |NODE_DATA\(1\) allocated'
milestone required "smp: 2 nodes, 2 CPUs" 'smp: Brought up 2 nodes, 2 CPUs'
milestone optional "unpacking initramfs" 'Trying to unpack rootfs image as initramfs|Unpacking initramfs'
milestone optional "run /init" 'Run /init as init process'
milestone optional "init started" '^INITRAMFS init started'
milestone optional "init: node0 node1" '^INITRAMFS nodes: node0 node1$'
milestone optional "init: 2 CPUs" '^INITRAMFS cpus: 2 nproc: 2'
milestone optional "numactl: 2 nodes" '^available: 2 nodes \(0-1\)'
echo "the boot got as far as: $(tail -n 1 "$TMP/reached") (of the milestones above), in ${total}s"
if $seen_all && [ "$rc" -ne 0 ]; then
    fail "the guest reported everything but amalgam run exited with status $rc"
fi
finish
