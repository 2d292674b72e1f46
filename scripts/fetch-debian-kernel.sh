#!/usr/bin/env bash
# Fetches Debian's stock kernel without installing it and prints the path
# of its bzImage:
#   scripts/fetch-debian-kernel.sh [CACHE_DIR]     (default build/linux)
# The package is AMALGAM_LINUX_PACKAGE if set ("newest": the newest
# linux-image-*-amd64 apt knows, e.g. 6.12 from bookworm's updates), else
# the one linux-image-amd64 depends on (or, without that meta-package, the
# newest), fetched with `apt-get download` and unpacked with `dpkg-deb -x`
# into CACHE_DIR/PACKAGE/ (only boot/ is kept); a later run reuses it. With
# AMALGAM_LINUX_MODULES=1 the modules (lib/modules) are kept too
# (scripts/nested-kvm.sh loads kvm and 9p). Exit status 3 when the package
# cannot be resolved or downloaded (no mirror), 1 on other errors; messages
# go to stderr.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${1:-$ROOT/build/linux}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
say() { echo "fetch-debian-kernel: $*" >&2; }

# Versioned names: 6.1.0-56-amd64, and 6.12.117+deb12-amd64 from the updates.
newest() {
    apt-cache pkgnames linux-image- 2>/dev/null |
        grep -E '^linux-image-[0-9][0-9.]*(-[0-9]+|\+deb[0-9]+)-amd64$' | sort -V | tail -n 1 || true
}
pkg=${AMALGAM_LINUX_PACKAGE:-}
[ "$pkg" = newest ] && pkg=$(newest)
if [ -z "$pkg" ] && [ -z "${AMALGAM_LINUX_PACKAGE:-}" ]; then
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
          awk '$1 == "Depends:" && $2 ~ /^linux-image-.*-amd64$/ { print $2; exit }')
    [ -n "$pkg" ] || pkg=$(newest) # no meta-package in the lists
fi
[ -n "$pkg" ] || { say "apt knows no linux-image-*-amd64 package (run apt-get update?)"; exit 3; }

dir="$CACHE/$pkg"
keep=${AMALGAM_LINUX_MODULES:-}
if ! ls "$dir"/boot/vmlinuz-* >/dev/null 2>&1 || { [ -n "$keep" ] && [ ! -d "$dir/lib/modules" ]; }; then
    (
        cd "$CACHE"
        rm -f "$pkg"_*.deb
        if ! apt-get download -q "$pkg" >&2; then
            say "cannot download $pkg (no network to the mirror?)"
            exit 3
        fi
        deb=$(ls "$pkg"_*.deb | head -n 1)
        rm -rf "$dir.tmp"
        dpkg-deb -x "$deb" "$dir.tmp"
        rm -rf "$dir.tmp/usr" # docs
        [ -n "$keep" ] || rm -rf "$dir.tmp/lib" # modules: only boot/ is used
        rm -rf "$dir"
        mv "$dir.tmp" "$dir"
        rm -f "$deb"
    )
fi
k=$(ls "$dir"/boot/vmlinuz-* 2>/dev/null | head -n 1)
[ -n "$k" ] || { say "$pkg holds no boot/vmlinuz-*"; exit 1; }
echo "$k"
