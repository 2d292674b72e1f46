# The Linux guest's initramfs (scripts/make-initramfs.sh), checked on the
# host without KVM: the archive holds /init, busybox, numactl, numactl's
# libraries and the dynamic loader; unpacked, busybox and numactl run in a
# chroot, and /init itself runs there (dry run: no power-off) and prints
# the host's NUMA report.
source "$(dirname "$0")/../integration/common.bash"
for c in cpio gzip; do
    command -v $c >/dev/null || skip "SKIP: $c is not installed"
done
[ -x /bin/busybox ] && [ -x /usr/bin/numactl ] || skip "SKIP: busybox-static or numactl is not installed"

IMG="$TMP/initrd.cpio.gz"
if "$ROOT/scripts/make-initramfs.sh" "$IMG" >"$TMP/mk" 2>&1; then
    ok "built $(cat "$TMP/mk")"
else
    fail "make-initramfs.sh: $(tr '\n' '|' <"$TMP/mk")"
    finish; exit
fi
gzip -dc "$IMG" | cpio -it --quiet >"$TMP/list" || fail "the archive is not a gzip'd cpio"
want=(init bin/busybox bin/sh bin/mount bin/poweroff usr/bin/numactl dev/console)
for l in $(ldd /usr/bin/numactl | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    want+=("${l#/}")
done
for f in "${want[@]}"; do
    if [ "$f" = dev/console ] && [ "$(id -u)" -ne 0 ]; then continue; fi
    grep -qx "$f" "$TMP/list" && ok "archive has $f" || fail "archive lacks $f"
done
grep -q 'lib64/ld-linux-x86-64.so.2' "$TMP/list" || fail "archive lacks the dynamic loader"
# newc format: every header starts with the magic 070701.
[ "$(gzip -dc "$IMG" | head -c 6)" = 070701 ] && ok "cpio newc" || fail "not a newc cpio"

# A plain (uncompressed) archive too.
"$ROOT/scripts/make-initramfs.sh" "$TMP/plain.cpio" >/dev/null 2>&1 &&
    [ "$(head -c 6 "$TMP/plain.cpio")" = 070701 ] && ok "uncompressed archive" ||
    fail "uncompressed archive"

if [ "$(id -u)" -ne 0 ]; then
    echo "not root: the chroot checks are left out"
    finish; exit
fi
U="$TMP/root"
mkdir -p "$U"
(cd "$U" && gzip -dc "$IMG" | cpio -idm --quiet) || fail "cannot unpack the archive"
out=$(chroot "$U" /bin/busybox sh -c 'echo ok' 2>&1)
[ "$out" = ok ] && ok "busybox sh runs in the chroot" || fail "busybox in chroot: $out"
out=$(chroot "$U" /usr/bin/numactl --show 2>&1)
grep -q '^policy:' <<<"$out" && ok "numactl --show runs in the chroot" || fail "numactl --show: $out"
# /init in its own mount namespace (its mounts vanish with it); not PID 1
# and INITRAMFS_DRYRUN set, so it does not power anything off.
if command -v unshare >/dev/null; then
    out=$(timeout 60 unshare --mount chroot "$U" /bin/busybox env INITRAMFS_DRYRUN=1 /init 2>&1)
    echo "$out" | sed 's/^/    init| /'
    ncpu=$(grep -c ^processor /proc/cpuinfo)
    grep -q '^INITRAMFS nodes: node0' <<<"$out" && ok "/init lists the nodes" || fail "/init: no node list"
    grep -q "^INITRAMFS cpus: $ncpu nproc: $ncpu" <<<"$out" && ok "/init counts $ncpu CPUs" ||
        fail "/init: CPU count"
    grep -q '^available: [0-9]* nodes' <<<"$out" && ok "/init runs numactl --hardware" ||
        fail "/init: no numactl --hardware output"
    grep -q '^INITRAMFS done' <<<"$out" || fail "/init did not finish"
else
    echo "no unshare: /init is not run"
fi
finish
