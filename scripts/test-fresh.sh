#!/usr/bin/env bash
# make test-fresh: the install path as a newcomer meets it. A new Debian 12
# tree (debootstrap --variant=buildd: a compiler, make and apt, nothing
# else), a clone of this repository's HEAD inside it, and `.ci/run` there,
# which runs the README's two commands (make demo, make test) as they are
# written. A package the project forgets to install fails here, however
# much this machine already has.
#
# The tree is made once and kept as a tarball in AMALGAM_FRESH_CACHE
# (default /var/cache/amalgam, outside any clone, so that CI's fresh clone
# finds it); each run unpacks a new copy in AMALGAM_FRESH_DIR (default
# /var/lib/amalgam-fresh, not /tmp: the tree's own tests mount over /tmp)
# and removes it afterwards (AMALGAM_FRESH_KEEP=1 keeps it). The chroot runs
# in a mount namespace of its own, so nothing stays mounted.
#
# Exit: .ci/run's status inside the tree; 3 where no tree can be made (no
# debootstrap, no Debian mirror), saying why.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${AMALGAM_FRESH_CACHE:-/var/cache/amalgam}
BASE=${AMALGAM_FRESH_DIR:-/var/lib/amalgam-fresh}
MIRROR=${AMALGAM_FRESH_MIRROR:-http://deb.debian.org/debian}
TARBALL=$CACHE/bookworm-buildd.tar.zst
say() { echo "test-fresh: $*" >&2; }

if [ -n "${AMALGAM_IN_FRESH:-}" ]; then
    say "already inside a fresh tree: not starting another"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || { say "needs root (debootstrap, chroot, mounts)"; exit 3; }
for t in debootstrap zstd unshare git; do
    command -v $t >/dev/null || { say "$t is missing (scripts/install-deps.sh installs it)"; exit 3; }
done

mkdir -p "$CACHE" "$BASE"
if [ ! -s "$TARBALL" ]; then
    say "making a Debian 12 tree with debootstrap --variant=buildd (once; cached in $TARBALL)"
    t0=$SECONDS
    tmp=$(mktemp -d "$BASE/debootstrap.XXXXXX")
    if ! debootstrap --variant=buildd bookworm "$tmp" "$MIRROR" >"$tmp.log" 2>&1; then
        tail -n 5 "$tmp.log" >&2
        rm -rf "$tmp" "$tmp.log"
        say "debootstrap failed (no Debian mirror at $MIRROR?)"
        exit 3
    fi
    tar -C "$tmp" -I zstd -cf "$TARBALL.part" . && mv "$TARBALL.part" "$TARBALL"
    rm -rf "$tmp" "$tmp.log"
    say "tree made in $((SECONDS - t0)) s"
fi

TREE=$(mktemp -d "$BASE/tree.XXXXXX")
cleanup() { [ "${AMALGAM_FRESH_KEEP:-0}" = 1 ] && say "tree kept in $TREE" || rm -rf "$TREE"; }
trap cleanup EXIT
trap 'exit 143' TERM # so that the EXIT trap removes the tree
trap 'exit 130' INT
tar -C "$TREE" -I zstd -xf "$TARBALL"
# What a Debian 12 installation has and debootstrap leaves out: the
# security and updates suites, and a resolver.
cat >"$TREE/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
EOF
cp /etc/resolv.conf "$TREE/etc/resolv.conf"
mkdir -p "$TREE/home/newcomer"
git clone -q "$ROOT" "$TREE/home/newcomer/amalgam"
say "a new Debian 12 tree in $TREE, with a clone of $(git -C "$ROOT" rev-parse --short HEAD); running .ci/run there"

mkdir -p "$ROOT/build/test-logs"
LOG=$ROOT/build/test-logs/fresh.log
t0=$SECONDS
set +e
unshare -m --propagation private bash -c '
    set -e
    t=$1
    # The tree its own mount, as / is on a real machine: ip netns exec
    # remounts / and fails where / is no mount point.
    mount --bind "$t" "$t"
    mount -t proc proc "$t/proc"
    mount --rbind /sys "$t/sys"
    mount --rbind /dev "$t/dev"
    mount -t tmpfs -o size=4G tmp "$t/dev/shm"
    mount -t tmpfs tmp "$t/run"
    mount -t tmpfs -o size=4G tmp "$t/tmp"
    exec chroot "$t" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 CI=true AMALGAM_IN_FRESH=1 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        bash -c "cd /home/newcomer/amalgam && bash .ci/run" </dev/null
' bash "$TREE" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
say ".ci/run in a new Debian 12 tree exited $rc after $((SECONDS - t0)) s (log: $LOG)"
last=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$LOG" | tail -n 1 || true)
[ -n "$last" ] && echo "$last"
exit "$rc"
