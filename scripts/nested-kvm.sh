#!/usr/bin/env bash
# Runs a command where /dev/kvm works, on a host where it does not:
#   scripts/nested-kvm.sh [--check] COMMAND...
# Boots a small VM ("L1") in QEMU with software emulation (TCG) of an AMD
# CPU with SVM, so that L1's own kernel (Debian's, with its kvm-amd module)
# provides /dev/kvm. L1 sees this host's root file system read-only over
# 9p and this repository read-write, gets fresh /tmp, /run and /dev/shm,
# and runs COMMAND with bash in the repository as root. Everything amalgam
# does under test is then real: KVM ioctls, userfaultfd, libfabric, several
# processes; only the CPU under L1 is emulated, so it runs ~10-50x slower.
#
# Prints L1's console; exits with COMMAND's status (3 when L1 could not be
# set up: no QEMU, no kernel package, no /dev/kvm in L1). --check only
# reports whether L1 gets /dev/kvm.
#
# Environment: NESTED_CPU (below), NESTED_MEM (default 4G), NESTED_SMP (2), NESTED_TIMEOUT
# seconds (7200), NESTED_CACHE (build/nested: the kernel package, shared by
# every run under a lock; each run's initramfs and console log sit in a
# directory of its own below it, so runs may overlap), NESTED_TCG (multi:
# one host thread per L1 CPU; single: one for all, slower but immune to
# the crash below). The repository may be anywhere, /tmp and /root
# included: L1's fresh /tmp, /run, /var/tmp and /root are mounted first
# and the repository on top.
#
# NESTED_RDMA=1: Soft-RoCE in L1 (issue 19): loads rdma_rxe, ib_uverbs and
# rdma_ucm (the verbs device files and the RDMA connection manager's), and
# first the crc32 hashes rxe asks the crypto API for (without
# crc32_generic `rdma link add ... type rxe` fails "No such file or
# directory"). A test then makes rxe devices on its veths
# (tests/integration/common.bash: rxe_pair). A kernel package without
# them: exit 3, naming the module.
#
# NESTED_CPU (default max,-npt): L1's CPU. Without nested paging L1's KVM
# shadows the guest's page tables. With it, QEMU 7.2 (Debian 12's)
# translates every read of a guest page-table entry as a store
# (mmu_translate: GET_HPHYS(..., MMU_DATA_STORE)), so L1's KVM asks the
# host for write access to every page-table page a TLB miss walks: to the
# DSM that is a write fault, and on two nodes the kernel's page tables
# (init_top_pgt, level3_kernel_pgt, level2_kernel_pgt) changed hands ~30,000
# times each while Linux booted, which never reached /init in 1200 s.
# Real hardware reads page tables without needing write access. Measured
# in one sitting (issue 16): without nested paging the two-node Linux boot
# reached /init at 409 s, 31-testguest-nodes took 214 s against 386 s, and
# bench dsm's guest p99/p50 was 2.2 against 16.5; the one-node Linux boot
# slowed from 5 s to 11 s.
#
# Why the newest kernel package and not linux-image-amd64 (6.1): the DSM
# maps read-only pages with UFFDIO_CONTINUE_MODE_WP, which needs Linux 6.4.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${NESTED_CACHE:-$ROOT/build/nested}
MEM=${NESTED_MEM:-4G}
SMP=${NESTED_SMP:-2}
TIMEOUT=${NESTED_TIMEOUT:-7200}
TCG=${NESTED_TCG:-multi}
CPU=${NESTED_CPU:-max,-npt} # QEMU -cpu for L1 (see NESTED_CPU above)
say() { echo "nested-kvm: $*" >&2; }
check=0
[ "${1:-}" = --check ] && { check=1; shift; }
[ $check -eq 1 ] || [ $# -gt 0 ] || { say "usage: $0 [--check] COMMAND..."; exit 2; }

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
file -L /bin/busybox 2>/dev/null | grep -q "statically linked" || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v file >/dev/null || need+=(file)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${need[@]}"; } >/dev/null || { say "cannot install ${need[*]}"; exit 3; }
fi

# The newest kernel package, with its modules; one run at a time fetches.
mkdir -p "$CACHE"
KERNEL=$(exec 9>"$CACHE/lock" && flock 9 &&
    AMALGAM_LINUX_PACKAGE=${AMALGAM_LINUX_PACKAGE:-newest} AMALGAM_LINUX_MODULES=1 \
    "$ROOT/scripts/fetch-debian-kernel.sh" "$CACHE/linux") || exit 3
KVER=${KERNEL##*/vmlinuz-}
MODS=$(dirname "$(dirname "$KERNEL")")/lib/modules/$KVER/kernel

# This run's own files.
RUN=$(mktemp -d "$CACHE/run.XXXXXX")
trap 'rm -rf "$RUN"' EXIT

# The initramfs: busybox, the modules in load order, and /init.
R=$RUN/initramfs
mkdir -p "$R"/{bin,proc,sys,dev,mod,host,cfg}
cp /bin/busybox "$R/bin/"
for a in sh mount mkdir insmod ip chroot poweroff cat grep sleep hostname; do ln -s busybox "$R/bin/$a"; done
modfile() { find "$MODS" \( -name "$1.ko*" -o -name "$(echo "$1" | tr _ -).ko*" \) | head -n 1; }
unpack_mod() { # FILE -> path of the uncompressed module in $R/mod
    local f=$1 b
    b=$(basename "$f"); b=${b%.xz}; b=${b%.zst}; b=${b%.gz}
    case $f in
        *.xz) xz -dc "$f" >"$R/mod/$b" ;;
        *.zst) zstd -dqc "$f" >"$R/mod/$b" ;;
        *.gz) gzip -dc "$f" >"$R/mod/$b" ;;
        *) cp "$f" "$R/mod/$b" ;;
    esac
    echo "$R/mod/$b"
}
seen=" "
add_mod() { # NAME: the module after its dependencies (modinfo's depends=)
    local name f u d
    name=$(echo "$1" | tr - _)
    case $seen in *" $name "*) return 0 ;; esac
    seen="$seen$name "
    f=$(modfile "$name")
    [ -n "$f" ] || { say "module $name is not in $MODS"; exit 3; }
    u=$(unpack_mod "$f")
    for d in $(strings "$u" | sed -n 's/^depends=//p' | tr , ' '); do add_mod "$d"; done
    basename "$u" >>"$R/mod/order"
}
: >"$R/mod/order"
for m in kvm-amd 9pnet_virtio 9p; do add_mod "$m"; done
# For tests of "hosts" in network namespaces with delay and loss between
# them (39-netem), and for the TAP device behind a guest's virtio-net
# (tun: 41-virtio-linux): loaded where the kernel package has them, else
# skipped.
for m in veth sch_netem tun; do [ -n "$(modfile "$m")" ] && add_mod "$m"; done
if [ "${NESTED_RDMA:-0}" = 1 ]; then
    for m in crc32_generic crc32_pclmul rdma_rxe ib_uverbs rdma_ucm; do
        [ -n "$(modfile "$m")" ] || { say "NESTED_RDMA=1: kernel $KVER has no $m module, so no Soft-RoCE"; exit 3; }
        add_mod "$m"
    done
fi

# (Not in /: busybox mount would take a file named like a 9p tag for a
# loop device.)
printf '%q ' "$@" >"$R/cfg/command"
echo "$ROOT" >"$R/cfg/repo"
echo $check >"$R/cfg/check-only"
cat >"$R/init" <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /mod/order); do insmod /mod/$m || echo "nested-kvm: L1: insmod $m failed"; done
bye() { echo "NESTED-EXIT $1"; poweroff -f; sleep 10; }
if [ ! -c /dev/kvm ]; then
    echo "nested-kvm: L1: no /dev/kvm; the CPU flags L1 sees:"
    grep -m1 -o -w -E 'svm|npt|vmx' /proc/cpuinfo
    bye 3
fi
echo "nested-kvm: L1 has /dev/kvm"
[ "$(cat /cfg/check-only)" = 1 ] && bye 0
repo=$(cat /cfg/repo)
o=trans=virtio,version=9p2000.L,msize=262144,cache=loose
mount -t 9p -o $o,ro hostroot /host || bye 3
# Fresh scratch directories first, the repository on top: a repository
# under one of them (/tmp/x, /root/x) stays visible.
for d in /tmp /run /var/tmp /root; do mount -t tmpfs -o size=2G tmp /host$d; done
mkdir -p /host$repo 2>/dev/null
mount -t 9p -o $o repo /host$repo || bye 3
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t cgroup2 none /host/sys/fs/cgroup 2>/dev/null
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs -o size=2G tmp /host/dev/shm
ip link set lo up
# A name, as every host has: Open MPI's mpirun refuses "(none)".
hostname nested-l1
chroot /host /bin/bash -c "cd $repo && export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin && $(cat /cfg/command)"
bye $?
EOF
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet) >"$RUN/initramfs.cpio"

say "booting L1 (QEMU TCG, $SMP CPUs, $MEM; kernel $KVER)"
log=$RUN/console.log
# Multi-threaded TCG now and then trips over the L1 kernel patching its own
# code (an int3 Oops in sched_clock_cpu, seen early in boot): such a boot
# is retried, up to 3 times.
for attempt in 1 2 3; do
    set +e
    timeout "$TIMEOUT" qemu-system-x86_64 -accel tcg,thread="$TCG" -cpu "$CPU" -m "$MEM" -smp "$SMP" \
        -kernel "$KERNEL" -initrd "$RUN/initramfs.cpio" \
        -append "console=ttyS0 panic=-1 quiet loglevel=3 tsc=reliable rdinit=/init" \
        -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap,id=hostroot \
        -virtfs local,path="$ROOT",mount_tag=repo,security_model=passthrough,id=repo \
        -nographic -no-reboot -nic none </dev/null 2>&1 | tee "$log"
    set -e
    st=$(sed -n 's/^NESTED-EXIT \([0-9]*\).*/\1/p' "$log" | tail -n 1)
    [ -z "$st" ] && grep -q "Kernel panic" "$log" || break
    say "L1's kernel crashed (attempt $attempt); booting again"
done
[ -n "$st" ] || { say "L1 ended without reporting (time-out after $TIMEOUT s, or a crash)"; exit 3; }
exit "$st"
