# amalgam's virtio-mmio devices under a real Linux guest: the small kernel
# (scripts/build-small-kernel.sh) on one node with
#   --drive file=IMG   a 64 MiB ext4 image holding in.bin and in.sha256;
#   --netdev tap,...   a TAP device amtap0 in a network namespace of its
#                      own, at 10.0.2.1/24, with an HTTP server there
#                      serving net.bin and net.sha256;
#   --rng              the host's getrandom as /dev/hwrng.
# The initramfs (scripts/make-initramfs.sh) runs tests/guest-linux/virtio.sh
# (amalgam.test=virtio): it checks in.bin, writes out.bin and prints its
# sha256, reads the rng, pings the host and fetches net.bin. Required: the
# guest's "VIRTIO blk read ok", "VIRTIO rng ok", "VIRTIO net ok" and
# "VIRTIO done failures=0", a clean power-off, then on the host out.bin
# (read out of the image with debugfs) matching the guest's sha256 and
# `e2fsck -fn` finding the file system clean.
#
# Without root (or where namespaces or TAP devices cannot be made) the
# machine gets no --netdev; the net part is then reported as not run, with
# the reason, and the rest is still required.
#
# Where KVM cannot run Linux here (no /dev/kvm, AMALGAM_TEST_FORCE_L1=1,
# or a KVM that emulates guest kernel mode, where Linux user programs do
# not run) the test runs itself again in scripts/nested-kvm.sh's L1, as
# tests/long/50-linux-numa.sh does; the kernel is built out here first
# (the L1 has no network, and a build there would take hours). The L1 loads
# the tun module for amtap0. No "# kvm:" line on purpose: run-tests.sh's
# shared L1 would start this script without the kernel built.
#
# Time: the guest reaches /init in ~5-10 s natively and ~10-60 s in the
# L1 (50-linux-numa's one-node boots), and the checks move ~2.5 MiB; the
# run gets AMALGAM_VIRTIO_TIMEOUT seconds (default 300 in both), the L1
# that plus 300 s for its own boot. A kernel build when the cached one is
# stale takes ~5 minutes more (build/linux/small/build-seconds).
#
# Environment: AMALGAM_VIRTIO_KERNEL (a bzImage to boot instead of building
# the small kernel; for the L1 it must be outside /tmp, which the L1
# hides), AMALGAM_VIRTIO_APPEND (more kernel arguments),
# AMALGAM_VIRTIO_NESTED=0 (never use the L1: skip without /dev/kvm, run
# here even where guest kernel mode is emulated). The timestamped console
# and amalgam's stderr are kept in build/test-logs/virtio-linux.{console,err}.
source "$(dirname "$0")/common.bash"
PATH=$PATH:/usr/sbin:/sbin # mkfs.ext4, debugfs, e2fsck for a user without sbin
LIMIT=${AMALGAM_VIRTIO_TIMEOUT:-300}
KEEP="$ROOT/build/test-logs/virtio-linux"
NS=amalgam-virtio-$$
GUEST_IP=10.0.2.15 HOST_IP=10.0.2.1
http_pid=

for c in mkfs.ext4 debugfs e2fsck sha256sum cpio; do
    command -v $c >/dev/null || skip "SKIP: $c is not installed (e2fsprogs, coreutils, cpio)"
done
[ -x /bin/busybox ] && [ -x /usr/bin/numactl ] || skip "SKIP: busybox-static or numactl is not installed (the initramfs needs them)"
[ -x "$AMALGAM" ] || { fail "no amalgam binary at $AMALGAM (make, or AMALGAM_BIN)"; finish; exit; }
# An amalgam without the devices would only fail at the run, after an L1
# boot: say so at once. (`amalgam run --help` lists every flag.)
"$AMALGAM" run --help >"$TMP/help" 2>&1
for f in --drive --netdev --rng; do
    grep -q -- "$f" "$TMP/help" ||
        fail "$AMALGAM has no $f flag (amalgam run --help does not list it): its virtio devices are missing"
done
[ $failures -eq 0 ] || { finish; exit; }

# The small kernel: built once (or reused) here, never in the L1.
if [ -n "${AMALGAM_VIRTIO_KERNEL:-}" ]; then
    KERNEL=$AMALGAM_VIRTIO_KERNEL
    [ -r "$KERNEL" ] || { fail "AMALGAM_VIRTIO_KERNEL=$KERNEL cannot be read"; finish; exit; }
    ok "kernel $KERNEL (AMALGAM_VIRTIO_KERNEL)"
else
    KERNEL=$("$ROOT/scripts/build-small-kernel.sh" "$ROOT/build/linux/small" 2>"$TMP/build")
    case $? in
        0) ok "kernel $KERNEL ($(grep -o 'built in.*' "$TMP/build" || echo 'built by an earlier run'))" ;;
        3) tail -n 3 "$TMP/build"
           skip "SKIP: the small kernel cannot be built: Debian's linux-source package cannot be downloaded: $(tail -n 1 "$TMP/build")" ;;
        *) fail "scripts/build-small-kernel.sh: $(tail -n 20 "$TMP/build" | tr '\n' '|')"; finish; exit ;;
    esac
fi

# This script again, in the nested L1; its verdict is this test's.
boot_nested() { # WHY
    local rc
    echo "$1: the test runs in scripts/nested-kvm.sh's emulated L1 (run limit ${LIMIT}s, L1 $((LIMIT + 300))s)"
    # One emulation thread (NESTED_TCG=single), as for every Linux boot
    # in the L1 (docs/testing.md: multi-threaded TCG mangles nested SVM).
    # The kernel and amalgam are passed by path: the repository and / are
    # visible in the L1 (/tmp is not).
    NESTED_TCG=${NESTED_TCG:-single} NESTED_TIMEOUT=$((LIMIT + 300)) \
        "$ROOT/scripts/nested-kvm.sh" env AMALGAM_IN_NESTED=1 AMALGAM_BIN="$AMALGAM" \
        AMALGAM_VIRTIO_KERNEL="$KERNEL" AMALGAM_VIRTIO_TIMEOUT="$LIMIT" \
        AMALGAM_VIRTIO_APPEND="${AMALGAM_VIRTIO_APPEND:-}" \
        bash tests/integration/41-virtio-linux.sh >"$TMP/nested" 2>&1
    rc=$?
    # L1's console from the moment it has /dev/kvm: this script's output.
    tr -d '\r' <"$TMP/nested" | awk 'p; /nested-kvm: L1 has \/dev\/kvm/ { p = 1 }'
    [ $rc -eq 3 ] && skip "SKIP: KVM cannot run Linux here, and scripts/nested-kvm.sh could not provide an L1 that can: $(grep 'nested-kvm' "$TMP/nested" | tail -n 1)"
    # run-tests.sh takes a skip's reason from the last line.
    [ $rc -eq 77 ] && skip "$(tr -d '\r' <"$TMP/nested" | grep -a '^SKIP' | tail -n 1) [L1]"
    exit $rc
}
# Whether this host's KVM emulates guest kernel mode (kvm_pvm): asked of
# amalgam itself with the test guest, as 50-linux-numa.sh does.
cpl0_emulated() {
    [ -r "$GUEST" ] &&
        timeout 120 "$AMALGAM" run -v --vcpus 1 --mem 32M --kernel "$GUEST" --append test=tsc 2>&1 |
        grep -q 'guest CPL0 is emulated'
}
if [ -z "${AMALGAM_IN_NESTED:-}" ]; then
    kvm=false
    [ -r /dev/kvm ] && [ -w /dev/kvm ] && kvm=true
    if [ "${AMALGAM_VIRTIO_NESTED:-1}" = 0 ]; then
        $kvm || skip "SKIP: /dev/kvm is not usable here (and AMALGAM_VIRTIO_NESTED=0: no L1)"
        cpl0_emulated && echo "AMALGAM_VIRTIO_NESTED=0: running here although this host's KVM emulates guest kernel mode (Linux user programs may not run)"
    elif [ -n "${AMALGAM_TEST_FORCE_L1:-}" ]; then
        boot_nested "AMALGAM_TEST_FORCE_L1 is set"
    elif ! $kvm; then
        boot_nested "no usable /dev/kvm here"
    elif cpl0_emulated; then
        boot_nested "this host's KVM emulates guest kernel mode (Linux user programs do not run there)"
    fi
else
    echo "in scripts/nested-kvm.sh's L1"
    need_kvm
fi

# From here on the guest runs on this machine (the host, or the L1).
INITRD="$TMP/initrd.cpio.gz"
"$ROOT/scripts/make-initramfs.sh" "$INITRD" >"$TMP/mk" 2>&1 ||
    { fail "make-initramfs.sh: $(tr '\n' '|' <"$TMP/mk")"; finish; exit; }
ok "$(cat "$TMP/mk")"
gzip -dc "$INITRD" | cpio -it --quiet | grep -qx tests/virtio.sh ||
    { fail "the initramfs has no tests/virtio.sh"; finish; exit; }

# The disk: ext4 holding 256 KiB of random bytes and their sha256. Written
# in $TMP, which in the L1 is a tmpfs (no O_DIRECT there, so no
# cache=none).
IMG="$TMP/disk.img"
mkdir -p "$TMP/disk"
head -c 262144 /dev/urandom >"$TMP/disk/in.bin"
(cd "$TMP/disk" && sha256sum in.bin >in.sha256)
mkfs.ext4 -F -q -d "$TMP/disk" "$IMG" 64M >"$TMP/mkfs" 2>&1 ||
    { fail "mkfs.ext4 -d: $(tr '\n' '|' <"$TMP/mkfs")"; finish; exit; }

# The network: amtap0 in a namespace of this test's own (so the name and
# 10.0.2.0/24 clash with nothing), an HTTP server there, amalgam run
# inside it. NET_SKIP says why not, where it cannot be had.
NET_SKIP=
cleanup() {
    [ -n "$http_pid" ] && kill "$http_pid" 2>/dev/null && wait "$http_pid" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    rm -rf "$TMP"
}
setup_net() {
    [ "$(id -u)" -eq 0 ] || { NET_SKIP="network namespaces and TAP devices need root"; return; }
    command -v ip >/dev/null || { NET_SKIP="no ip command (iproute2)"; return; }
    command -v python3 >/dev/null || { NET_SKIP="no python3 for the HTTP server"; return; }
    trap cleanup EXIT
    ip netns add "$NS" 2>"$TMP/ip" || { NET_SKIP="cannot create a network namespace: $(tail -n 1 "$TMP/ip")"; return; }
    ip -n "$NS" link set lo up
    # A TAP amalgam attaches to by name (TUNSETIFF on /dev/net/tun).
    ip -n "$NS" tuntap add dev amtap0 mode tap 2>"$TMP/ip" ||
        { NET_SKIP="cannot create a TAP device (tun module, /dev/net/tun): $(tail -n 1 "$TMP/ip")"; return; }
    { ip -n "$NS" addr add "$HOST_IP/24" dev amtap0 && ip -n "$NS" link set amtap0 up; } ||
        { NET_SKIP="cannot configure amtap0"; return; }
    mkdir -p "$TMP/www"
    head -c 1048576 /dev/urandom >"$TMP/www/net.bin"
    (cd "$TMP/www" && sha256sum net.bin >net.sha256)
    ip netns exec "$NS" python3 -m http.server 8000 --bind "$HOST_IP" --directory "$TMP/www" \
        >"$TMP/http.log" 2>&1 &
    http_pid=$!
    # Listening before the guest asks (python starts slowly in the L1).
    for _ in $(seq 120); do
        ip netns exec "$NS" bash -c "exec 3<>/dev/tcp/$HOST_IP/8000" 2>/dev/null && return
        alive "$http_pid" || break
        sleep 0.5
    done
    NET_SKIP="the HTTP server did not start: $(tail -n 2 "$TMP/http.log" | tr '\n' ' ')"
    kill "$http_pid" 2>/dev/null
    http_pid=
}
setup_net
if [ -n "$NET_SKIP" ]; then
    echo "SKIP (virtio-net only): the net part is not run: $NET_SKIP"
    NETDEV=() IN_NS=() NET_APPEND=
else
    ok "amtap0 at $HOST_IP/24 in namespace $NS, HTTP server on port 8000"
    # shellcheck disable=SC2054 # one flag's value, commas and all
    NETDEV=(--netdev tap,ifname=amtap0) IN_NS=(ip netns exec "$NS")
    NET_APPEND="amalgam.net=$GUEST_IP/24,$HOST_IP"
fi

# panic=-1: a panic (init killed, say) reboots at once, which ends the run.
APPEND="console=ttyS0 loglevel=7 panic=-1 amalgam.test=virtio${NET_APPEND:+ $NET_APPEND}${AMALGAM_VIRTIO_APPEND:+ $AMALGAM_VIRTIO_APPEND}"
CON="$TMP/console" # "SECONDS-SINCE-START<TAB>line"
echo "booting (up to ${LIMIT}s): amalgam run -v --nodes 1 --vcpus 1 --mem 256M --drive file=IMG ${NETDEV[*]:+${NETDEV[*]} }--rng --append '$APPEND'"
t0=$SECONDS
timeout -k 10 "$LIMIT" "${IN_NS[@]}" "$AMALGAM" run -v --nodes 1 --vcpus 1 --mem 256M \
    --kernel "$KERNEL" --initrd "$INITRD" --drive "file=$IMG" "${NETDEV[@]}" --rng \
    --append "$APPEND" </dev/null 2>"$TMP/err" |
    stamp_lines "$t0" >"$CON"
rc=${PIPESTATUS[0]}
total=$((SECONDS - t0))
mkdir -p "$(dirname "$KEEP")"
cp "$CON" "$KEEP.console"
cp "$TMP/err" "$KEEP.err"
cut -f2- "$CON" >"$TMP/plain"
case $rc in
    124|137) echo "amalgam run stopped by the ${LIMIT}s time-out after ${total}s" ;;
    *) echo "amalgam run exited with status $rc after ${total}s" ;;
esac
echo "--- the guest's test lines"
grep -a -E '^(VIRTIO|INITRAMFS test)' "$TMP/plain"
at() { awk -F'\t' -v re="$1" '$2 ~ re { print $1 "s"; f = 1; exit } END { if (!f) print "never" }' "$CON"; }
echo "Run /init at $(at 'Run /init as init process'); test done at $(at '^VIRTIO done')"

if grep -q "unknown flag" "$TMP/err"; then
    # Nothing else to judge: the guest never ran.
    fail "amalgam run rejected a flag (exit $rc): $(grep 'unknown flag' "$TMP/err")"
    finish; exit
elif [ "$rc" -ne 0 ]; then
    fail "amalgam run exited with status $rc, not 0 (the guest's power-off), after ${total}s"
else
    ok "the guest powered off (exit 0) after ${total}s"
fi
need_line() { # ERE NAME
    if grep -a -q -E "$1" "$TMP/plain"; then ok "$2: $(grep -a -m1 -E "$1" "$TMP/plain")"
    else fail "$2: no console line matches /$1/"; fi
}
need_line '^VIRTIO blk read ok' "virtio-blk read"
need_line '^VIRTIO blk write done' "virtio-blk write"
need_line '^VIRTIO rng ok' "virtio-rng"
if [ -z "$NET_SKIP" ]; then
    need_line '^VIRTIO net ok' "virtio-net"
else
    need_line '^VIRTIO net absent' "no virtio-net given, none seen"
fi
need_line '^VIRTIO done failures=0$' "the guest's checks"
need_line '^INITRAMFS test virtio status 0$' "/init ran the virtio test"

# out.bin as the disk holds it now, against what the guest wrote.
want=$(sed -n 's/^VIRTIO out.sha256 \([0-9a-f]\{64\}\).*/\1/p' "$TMP/plain" | tail -n 1)
debugfs -R "dump /out.bin $TMP/out.bin" "$IMG" >"$TMP/debugfs" 2>&1
if [ -z "$want" ]; then
    fail "the guest printed no 'VIRTIO out.sha256' line"
elif [ ! -s "$TMP/out.bin" ]; then
    fail "out.bin is not in the image: $(tr '\n' '|' <"$TMP/debugfs")"
else
    got=$(sha256sum <"$TMP/out.bin" | cut -d' ' -f1)
    if [ "$got" = "$want" ]; then
        ok "out.bin read from the image on the host ($(wc -c <"$TMP/out.bin") bytes) has the guest's sha256 $got"
    else
        fail "out.bin in the image has sha256 $got, the guest wrote $want"
    fi
fi
if e2fsck -fn "$IMG" >"$TMP/fsck" 2>&1; then
    ok "e2fsck -fn: clean ($(tail -n 1 "$TMP/fsck"))"
else
    fail "e2fsck -fn: $(tail -n 8 "$TMP/fsck" | tr '\n' '|')"
fi

[ -n "$NET_SKIP" ] && echo "SKIP (virtio-net only): the net part was not run: $NET_SKIP"
if [ $failures -gt 0 ]; then
    echo "--- amalgam stderr (last 15 lines)"
    tail -n 15 "$TMP/err"
    echo "--- console (last 25 lines)"
    tail -n 25 "$TMP/plain"
    [ -s "$TMP/http.log" ] && { echo "--- HTTP server"; tail -n 5 "$TMP/http.log"; }
fi
finish
