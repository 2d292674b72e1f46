#!/usr/bin/env bash
# Builds a small initramfs for a Linux guest that reports the NUMA machine
# it sees, then powers off:
#   scripts/make-initramfs.sh OUT [TREE]
# OUT ending in .gz is a gzip-compressed cpio (newc); anything else is an
# uncompressed cpio (unpacks far faster where guest kernel mode is emulated,
# see HOSTFACTS.md). TREE, if given, is where the file tree is assembled
# (kept afterwards, for inspection); otherwise a temporary directory.
#
# Contents: busybox-static (/bin/busybox and one symlink per applet),
# /usr/bin/numactl with the shared libraries ldd lists and the dynamic
# loader, /dev/console, and /init, which mounts proc, sysfs and devtmpfs,
# prints lines starting "INITRAMFS" (nodes, CPU count) and `numactl
# --hardware`, runs a test script if the kernel command line names one,
# and then powers off (`poweroff -f`) -- only when it is really PID 1 and
# INITRAMFS_DRYRUN is unset, so that running /init in a chroot on a host
# (tests/long/40-initramfs.sh) cannot power the host off.
#
# Test scripts: every tests/guest-linux/*.sh is copied to /tests/. With
# amalgam.test=NAME on the command line /init runs /tests/NAME.sh after the
# NUMA report and prints "INITRAMFS test NAME status N" (N: its exit
# status). INITRAMFS_CMDLINE, if set, stands for /proc/cmdline (for a dry
# run in a chroot, where /proc/cmdline is the host's).
set -euo pipefail

die() { echo "make-initramfs: $*" >&2; exit 1; }
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 OUT [TREE]"
OUT=$1
BUSYBOX=${BUSYBOX:-/bin/busybox}
NUMACTL=${NUMACTL:-/usr/bin/numactl}
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (apt-get install busybox-static)"
[ -x "$NUMACTL" ] || die "$NUMACTL missing (apt-get install numactl)"
command -v cpio >/dev/null || die "cpio missing (apt-get install cpio)"
# A static busybox: ldd says "not a dynamic executable" (and exits 1).
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked; the initramfs needs busybox-static"
fi

if [ $# -eq 2 ]; then
    TREE=$2
    rm -rf "$TREE"
    mkdir -p "$TREE"
else
    TREE=$(mktemp -d)
    trap 'rm -rf "$TREE"' EXIT
fi
TREE=$(cd "$TREE" && pwd)

mkdir -p "$TREE"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,mnt,tests}
cp "$BUSYBOX" "$TREE/bin/busybox"
for a in $("$TREE/bin/busybox" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$TREE/bin/$a"
done

# numactl and what the dynamic loader needs for it, at the same paths.
copy_file() { # host path -> same path in the tree, symlinks resolved
    mkdir -p "$TREE/$(dirname "$1")"
    cp -L "$1" "$TREE/$1"
}
copy_file "$NUMACTL"
libs=$(ldd "$NUMACTL" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
[ -n "$libs" ] || die "ldd lists no libraries for $NUMACTL"
for l in $libs; do
    copy_file "$l"
done

# The guest-side test scripts (amalgam.test=NAME runs /tests/NAME.sh).
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for t in "$ROOT"/tests/guest-linux/*.sh; do
    [ -e "$t" ] || continue
    cp "$t" "$TREE/tests/"
    chmod 755 "$TREE/tests/$(basename "$t")"
done

# The kernel opens /dev/console for init before devtmpfs is mounted.
if [ "$(id -u)" -eq 0 ]; then
    mknod -m 600 "$TREE/dev/console" c 5 1
    mknod -m 666 "$TREE/dev/null" c 1 3
fi

cat >"$TREE/init" <<'EOF'
#!/bin/busybox sh
# amalgam's NUMA report (scripts/make-initramfs.sh).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# As PID 1 without /dev/console in the archive, stdio is closed until now.
[ $$ -eq 1 ] && [ -c /dev/console ] && exec </dev/console >/dev/console 2>&1
echo "INITRAMFS init started"
echo "INITRAMFS ls /sys/devices/system/node: $(ls /sys/devices/system/node | tr '\n' ' ')"
echo "INITRAMFS nodes: $(cd /sys/devices/system/node 2>/dev/null && echo node[0-9]*)"
echo "INITRAMFS cpus: $(grep -c ^processor /proc/cpuinfo) nproc: $(nproc)"
numactl --hardware
echo "INITRAMFS numactl status $?"
# amalgam.test=NAME: one of the test scripts in /tests (after the report,
# so that it is printed even if the test hangs).
name=
for w in ${INITRAMFS_CMDLINE:-$(cat /proc/cmdline)}; do
    case $w in amalgam.test=*) name=${w#amalgam.test=} ;; esac
done
if [ -n "$name" ]; then
    if [ -f "/tests/$name.sh" ]; then
        echo "INITRAMFS test $name started"
        sh "/tests/$name.sh"
        echo "INITRAMFS test $name status $?"
    else
        echo "INITRAMFS test $name not found (have: $(cd /tests && echo *.sh))"
    fi
fi
echo "INITRAMFS done"
if [ $$ -eq 1 ] && [ -z "${INITRAMFS_DRYRUN:-}" ]; then
    poweroff -f
    sleep 5
    echo "INITRAMFS poweroff failed"
fi
EOF
chmod 755 "$TREE/init"

case "$OUT" in
    /*) ;;
    *) OUT="$PWD/$OUT" ;;
esac
tmp="$OUT.tmp.$$"
if [[ "$OUT" == *.gz ]]; then
    (cd "$TREE" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -9n) >"$tmp"
else
    (cd "$TREE" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$tmp"
fi
mv "$tmp" "$OUT"
echo "make-initramfs: $OUT ($(du -k "$OUT" | cut -f1) KiB)"
