# scripts/nested-kvm.sh with the repository under /tmp, which the L1
# covers with a fresh tmpfs: the command must still find the repository
# and exit with its own status. Needs QEMU, not /dev/kvm (the L1 is
# emulated); the kernel package is shared with this repository's cache.
source "$(dirname "$0")/common.bash"
command -v qemu-system-x86_64 >/dev/null || skip "SKIP: QEMU (qemu-system-x86) is not installed"
clone="$TMP/clone"
git clone -q "$ROOT" "$clone" || { fail "git clone of $ROOT"; finish; exit; }
echo "clone in $clone"
# Status 7 comes back only if the command ran in the clone: a repository
# the L1 cannot see ends in cd's failure, status 1.
NESTED_CACHE="$ROOT/build/nested" NESTED_TIMEOUT=600 "$clone/scripts/nested-kvm.sh" \
    sh -c "test -f README.md && test \"\$(pwd)\" = '$clone' && exit 7" >"$TMP/log" 2>&1
rc=$?
[ $rc -eq 3 ] && skip "SKIP: the nested L1 could not be had: $(grep nested-kvm "$TMP/log" | tail -n 1)"
if [ $rc -eq 7 ]; then
    ok "nested-kvm.sh from a clone under /tmp: the command ran in the clone and its status came back"
else
    fail "nested-kvm.sh from a clone under /tmp: exit $rc, wanted 7: $(tail -n 5 "$TMP/log" | tr '\n' '|')"
fi
finish
