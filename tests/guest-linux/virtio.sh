#!/bin/busybox sh
# amalgam's virtio-mmio devices, checked from inside a Linux guest. Copied
# into the initramfs as /tests/virtio.sh by scripts/make-initramfs.sh; its
# /init runs it when the kernel command line has amalgam.test=virtio
# (tests/integration/41-virtio-linux.sh). Only busybox applets are used.
#
# Every line it prints starts with "VIRTIO ". Each part runs only where its
# device is there, so any subset of devices works:
#   blk  /dev/vda (ext4, made by the host): /in.bin must match /in.sha256;
#        then writes /out.bin (1 MiB) and prints "VIRTIO out.sha256 HEX"
#        for the host to compare after the guest is gone.
#   rng  /dev/hwrng served by virtio_rng: 4096 bytes that are not constant.
#   net  eth0, configured from amalgam.net=GUESTIP/PREFIX,HOSTIP: ping the
#        host, fetch http://HOSTIP:8000/net.bin and check its sha256
#        against http://HOSTIP:8000/net.sha256.
# Last line "VIRTIO done failures=N"; the exit status is N (at most 100).
#
# For checking this script on a host (in a chroot, INITRAMFS_DRYRUN):
# INITRAMFS_CMDLINE replaces /proc/cmdline and VIRTIO_BLK_DEV /dev/vda
# (e.g. a loop device), so the host's own disk is never used.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
CMDLINE=${INITRAMFS_CMDLINE:-$(cat /proc/cmdline)}
BLK=${VIRTIO_BLK_DEV:-/dev/vda}
failures=0
say() { echo "VIRTIO $*"; }
bad() { say "$*"; failures=$((failures + 1)); }
sha() { sha256sum "$1" | cut -d' ' -f1; } # FILE -> its sha256, hex
# The first word of a .sha256 file: either a bare hex digest or
# sha256sum's "HEX  NAME" line.
sha_in() { h=; read -r h _ <"$1"; echo "$h"; }
# same_sha FILE SHAFILE: FILE has the sha256 SHAFILE gives (sets got, want).
same_sha() { want=$(sha_in "$2"); got=$(sha "$1"); [ -n "$want" ] && [ "$got" = "$want" ]; }

# The virtio devices the kernel found, by virtio device ID (1 net, 2 block,
# 4 entropy): tells "no such device given" apart from "given, but its
# driver did not bind".
has_virtio() { # ID (e.g. 0x0002)
    grep -qx "$1" /sys/bus/virtio/devices/*/device 2>/dev/null
}
say "devices: $(for d in /sys/bus/virtio/devices/*; do [ -e "$d/device" ] && echo "${d##*/}=$(cat "$d/device")"; done | tr '\n' ' ')"

# wait_for PATH ID: PATH exists, or appears within 10 s while a virtio
# device with ID is there (its driver may still be probing).
wait_for() {
    i=0
    while [ ! -e "$1" ]; do
        has_virtio "$2" && [ $i -lt 10 ] || return 1
        sleep 1
        i=$((i + 1))
    done
}

# --- blk
blk() {
    if ! wait_for "$BLK" 0x0002; then
        if has_virtio 0x0002; then bad "blk FAIL: a virtio block device is there but no $BLK"
        else say "blk absent"; fi
        return
    fi
    mkdir -p /mnt
    if ! mount -t ext4 "$BLK" /mnt; then
        bad "blk FAIL: cannot mount $BLK as ext4"
        return
    fi
    # Only a disk the test made for this (it has in.bin and in.sha256) is
    # written to: never a disk that merely happens to be $BLK.
    if [ ! -f /mnt/in.bin ] || [ ! -f /mnt/in.sha256 ]; then
        bad "blk FAIL: $BLK has no in.bin and in.sha256: not a test disk, nothing written"
        umount /mnt
        return
    fi
    if same_sha /mnt/in.bin /mnt/in.sha256; then
        say "blk read ok ($(wc -c </mnt/in.bin) bytes, sha256 $got)"
    else
        bad "blk FAIL: in.bin has sha256 $got, in.sha256 says $want"
    fi
    # out.bin: 4 KiB of entropy (the rng device's where there is one), so
    # that every run writes different data, then a fixed pattern to 1 MiB.
    src=/dev/urandom
    [ -c /dev/hwrng ] && src=/dev/hwrng
    {
        dd if=$src bs=4096 count=1 iflag=fullblock 2>/dev/null
        yes 'amalgam virtio-blk test pattern 0123456789abcdef' | head -c $((1048576 - 4096))
    } >/mnt/out.bin
    n=$(wc -c </mnt/out.bin)
    [ "$n" -eq 1048576 ] || bad "blk FAIL: out.bin has $n bytes, not 1048576"
    say "out.sha256 $(sha /mnt/out.bin)"
    # The host reads out.bin from the image once the guest is gone: it must
    # be on the device, not only in this kernel's page cache.
    sync
    if umount /mnt; then
        say "blk write done (4096 bytes from $src)"
    else
        bad "blk FAIL: umount /mnt"
    fi
}

# --- rng
rng() {
    if ! wait_for /dev/hwrng 0x0004; then
        if has_virtio 0x0004; then bad "rng FAIL: a virtio entropy device is there but no /dev/hwrng"
        else say "rng absent"; fi
        return
    fi
    cur=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null ||
          cat /sys/devices/virtual/misc/hw_random/rng_current 2>/dev/null)
    case $cur in
        virtio_rng*) ;;
        *) bad "rng FAIL: the hw_random source is '$cur', not virtio_rng"; return ;;
    esac
    # fullblock: /dev/hwrng may return less than asked in one read.
    if ! dd if=/dev/hwrng of=/tmp/rng.bin bs=4096 count=1 iflag=fullblock 2>/tmp/rng.err; then
        bad "rng FAIL: dd from /dev/hwrng: $(tr '\n' ' ' </tmp/rng.err)"
        return
    fi
    n=$(wc -c </tmp/rng.bin)
    # Distinct byte values: 4096 random bytes show ~256; a stuck or zeroed
    # source 1. 64 leaves room for any honest source.
    distinct=$(od -An -v -tx1 /tmp/rng.bin | tr -s ' ' '\n' | grep -v '^$' | sort -u | wc -l)
    if [ "$n" -eq 4096 ] && [ "$distinct" -ge 64 ]; then
        say "rng ok $n bytes from $cur, $distinct distinct byte values"
    else
        bad "rng FAIL: $n bytes from $cur, $distinct distinct byte values"
    fi
}

# --- net
net() {
    if ! wait_for /sys/class/net/eth0 0x0001; then
        if has_virtio 0x0001; then bad "net FAIL: a virtio network device is there but no eth0"
        else say "net absent"; fi
        return
    fi
    cfg=
    for w in $CMDLINE; do
        case $w in amalgam.net=*) cfg=${w#amalgam.net=} ;; esac
    done
    if [ -z "$cfg" ]; then
        say "net not configured (eth0 is there; no amalgam.net=GUESTIP/PREFIX,HOSTIP on the command line)"
        return
    fi
    addr=${cfg%%,*} host=${cfg#*,}
    say "net eth0 $(cat /sys/class/net/eth0/address) as $addr, host $host"
    ip link set lo up
    if ! ip addr add "$addr" dev eth0 || ! ip link set eth0 up; then
        bad "net FAIL: cannot configure eth0 as $addr"
        return
    fi
    # -W: the first reply may wait for ARP and a slow (emulated) host.
    if ping -c 3 -W 10 "$host" >/tmp/ping.out 2>&1; then
        say "net ping ok: $(grep -E 'packets transmitted|round-trip' /tmp/ping.out | tr '\n' ' ')"
    else
        bad "net FAIL: ping $host: $(tr '\n' ' ' </tmp/ping.out)"
        return
    fi
    # This busybox's wget has no -T: timeout bounds it.
    url=http://$host:8000
    if ! timeout 120 wget -q -O /tmp/net.bin "$url/net.bin" 2>/tmp/wget.err ||
       ! timeout 60 wget -q -O /tmp/net.sha256 "$url/net.sha256" 2>>/tmp/wget.err; then
        bad "net FAIL: wget from $url: $(tr '\n' ' ' </tmp/wget.err)"
        return
    fi
    if same_sha /tmp/net.bin /tmp/net.sha256; then
        say "net ok ($(wc -c </tmp/net.bin) bytes over http, sha256 $got)"
    else
        bad "net FAIL: net.bin ($(wc -c </tmp/net.bin) bytes) has sha256 $got, net.sha256 says $want"
    fi
}

blk
rng
net
say "done failures=$failures"
[ $failures -le 100 ] || failures=100
exit $failures
