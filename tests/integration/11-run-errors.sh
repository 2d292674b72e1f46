# `amalgam run` refuses bad input with one line and exit status 2.
source "$(dirname "$0")/common.bash"

expect_error() { # description, expected-substring, args...
    local what=$1 want=$2; shift 2
    timeout 30 "$AMALGAM" run "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$? lines
    lines=$(wc -l <"$TMP/err")
    if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -q -- "$want" "$TMP/err"; then
        ok "$what: $(cat "$TMP/err")"
    else
        fail "$what: exit $rc, $lines lines: $(cat "$TMP/err")"
    fi
}

head -c 100 "$GUEST" >"$TMP/truncated.elf"
head -c 3000 /dev/urandom >"$TMP/garbage"
printf '\x7fELF' >"$TMP/tiny"
: >"$TMP/empty"
expect_error "truncated ELF" "truncated" --kernel "$TMP/truncated.elf"
expect_error "garbage kernel" "not an x86-64 ELF or bzImage" --kernel "$TMP/garbage"
expect_error "4-byte ELF" "truncated ELF header" --kernel "$TMP/tiny"
expect_error "empty kernel" "bad magic" --kernel "$TMP/empty"
expect_error "missing kernel" "No such file" --kernel "$TMP/nope.elf"
expect_error "directory as kernel" "not a regular file" --kernel "$TMP"
expect_error "unknown flag" "unknown flag '--frobnicate'" --kernel "$GUEST" --frobnicate
expect_error "bad vcpus" "--vcpus" --kernel "$GUEST" --vcpus 0
expect_error "bad mem" "--mem 'lots'" --kernel "$GUEST" --mem lots
expect_error "too little mem" "too little" --kernel "$GUEST" --mem 4M
expect_error "no kernel" "--kernel FILE is required" --vcpus 2
truncate -s 40M "$TMP/big.cpio"
expect_error "initrd larger than RAM" "does not fit" --kernel "$GUEST" --mem 32M --initrd "$TMP/big.cpio"
if [ ! -e /dev/kvm ]; then
    # Only where this host has no KVM: the error must say so, on one line.
    expect_error "no /dev/kvm" "/dev/kvm does not exist" --kernel "$GUEST" --mem 64M
    expect_error "no /dev/kvm, 2 nodes" "/dev/kvm does not exist" --kernel "$GUEST" --mem 64M --nodes 2
fi
finish
