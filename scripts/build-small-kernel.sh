#!/usr/bin/env bash
# Builds a small guest kernel from Debian's kernel source package and
# prints the path of its bzImage:
#   scripts/build-small-kernel.sh [CACHE_DIR]        (default build/linux/small)
# The source is AMALGAM_LINUX_SOURCE if set, else the package the
# linux-source meta-package depends on (Debian 12: linux-source-6.1, the
# same 6.1 as its stock kernel), fetched with `apt-get download` and
# unpacked with dpkg-deb and tar, never installed. The configuration is
# `make tinyconfig` plus scripts/small-kernel.config. A later run reuses
# the kernel while the package and that file are unchanged. The build's
# wall-clock seconds go to CACHE_DIR/build-seconds (and stderr). Exit
# status 3 when the package cannot be downloaded (no mirror), 1 on other
# errors. The unpacked source (~1.5 GB) is removed after the build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${1:-$ROOT/build/linux/small}
CONF=$ROOT/scripts/small-kernel.config
say() { echo "build-small-kernel: $*" >&2; }
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

pkg=${AMALGAM_LINUX_SOURCE:-}
[ -n "$pkg" ] || pkg=$(apt-cache depends linux-source 2>/dev/null |
                       awk '$1 == "Depends:" && $2 ~ /^linux-source-/ { print $2; exit }')
[ -n "$pkg" ] || pkg=$(apt-cache pkgnames linux-source- 2>/dev/null | sort -V | tail -n 1)
[ -n "$pkg" ] || { say "apt knows no linux-source-* package (run apt-get update?)"; exit 3; }
stamp="$pkg $(sha256sum <"$CONF" | cut -c1-16)"
if [ -s "$CACHE/bzImage" ] && [ "$(cat "$CACHE/stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "$CACHE/bzImage"
    exit 0
fi

need=()
for t in make gcc flex bison bc xz; do command -v $t >/dev/null || need+=("$t"); done
[ -e /usr/include/libelf.h ] || need+=(libelf-dev) # objtool
[ -e /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
need=("${need[@]/#xz/xz-utils}")
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" \
        >/dev/null || { say "cannot install ${need[*]}"; exit 1; }
fi

t0=$SECONDS
W=$CACHE/work
rm -rf "$W"
mkdir -p "$W"
cd "$W"
apt-get download -q "$pkg" >&2 || { say "cannot download $pkg (no network to the mirror?)"; exit 3; }
dpkg-deb --fsys-tarfile "$pkg"_*.deb | tar -x --wildcards '*.tar.xz'
tar -xJf usr/src/*.tar.xz
src=$(find "$W" -maxdepth 1 -type d -name 'linux-source-*' | head -n 1)
[ -n "$src" ] || { say "$pkg holds no linux-source-* tree"; exit 1; }
cd "$src"
make -s tinyconfig >/dev/null
./scripts/kconfig/merge_config.sh -m .config "$CONF" >/dev/null
make -s olddefconfig >/dev/null
# A renamed option would silently leave the kernel without it.
for o in SMP ACPI NUMA ACPI_NUMA KVM_GUEST SERIAL_8250_CONSOLE BLK_DEV_INITRD BINFMT_SCRIPT NO_HZ_IDLE \
         VIRTIO_MMIO VIRTIO_BLK EXT4_FS VIRTIO_NET INET HW_RANDOM_VIRTIO; do
    grep -q "^CONFIG_$o=y" .config || { say "CONFIG_$o did not survive olddefconfig in $pkg"; exit 1; }
done
say "building $pkg (tinyconfig + $(basename "$CONF")) with $(nproc) jobs"
make -j"$(nproc)" bzImage >"$CACHE/build.log" 2>&1 || { tail -n 20 "$CACHE/build.log" >&2; exit 1; }
cp arch/x86/boot/bzImage "$CACHE/bzImage"
cp .config "$CACHE/config"
# For reading --stats' hottest pages: guest-physical = symbol - 0xffffffff80000000.
cp System.map "$CACHE/System.map"
cd "$CACHE"
rm -rf "$W"
echo $((SECONDS - t0)) >"$CACHE/build-seconds"
echo "$stamp" >"$CACHE/stamp"
say "built in $((SECONDS - t0)) s: $CACHE/bzImage"
echo "$CACHE/bzImage"
