# virtio devices driven from any node (docs/devices.md): the test guest's
# `virtio` test is a small polling virtio-mmio driver on one vCPU (the last,
# which round-robin placement puts on node 1 of 2). The devices run on node
# 0; the driver's rings and buffers are pages that vCPU wrote, so the
# device thread reads and writes them through the DSM. It reads an image
# the host filled with a known pattern, writes 64 sectors, flushes and reads
# them back, and takes 16 KiB from virtio-rng; the host then checks the
# image file. With irq=1 the driver routes the devices' IOAPIC pins to its
# vCPU on node 1 and waits for their interrupts. With broken=1 a chain linking past the ring must put the
# device in NEEDS_RESET (logged and counted) and a reset must bring it back.
# kvm: all
source "$(dirname "$0")/common.bash"
need_kvm
IMG=$TMP/disk.img
# A new image for every run, sector s holding s ^ "amalgam" in each 64-bit
# word (tests/guest/virtio.c), so each run's writes are its own.
make_image() {
    python3 - "$IMG" <<'PY'
import struct, sys
M = 0x616d616c67616d00
with open(sys.argv[1], 'wb') as f:
    for s in range(2048):
        f.write(struct.pack('<Q', s ^ M) * 64)
PY
}
# check_image: sectors 1024-1087 hold ~(s ^ M), their neighbours are untouched.
check_image() {
    python3 - "$IMG" <<'PY'
import struct, sys
M, ALL = 0x616d616c67616d00, (1 << 64) - 1
data = open(sys.argv[1], 'rb').read()
bad = []
for s in range(1016, 1096):
    want = (s ^ M) ^ (ALL if 1024 <= s < 1088 else 0)
    if data[s * 512:(s + 1) * 512] != struct.pack('<Q', want) * 64:
        bad.append(s)
print("bad sectors:", bad[:8]) if bad else print("image ok")
sys.exit(1 if bad else 0)
PY
}
for args in "--nodes 1 --vcpus 2" "--nodes 2 --vcpus 2" "--nodes 2 --vcpus 4"; do
    make_image
    run_guest virtio 0 $args --drive "file=$IMG" --rng --stats --append "test=virtio"
    if check_image >"$TMP/check" && grep -q "virtio blk0: .* 8 writes .* 1 flushes, 0 I/O errors" "$TMP/err"; then
        ok "$args: the image holds what the guest wrote; $(grep -m1 'virtio blk0' "$TMP/err")"
    else
        fail "$args: $(cat "$TMP/check"); $(grep 'virtio' "$TMP/err" | tr '\n' '|')"
    fi
done
make_image
run_guest virtio 0 --nodes 2 --vcpus 2 --drive "file=$IMG" --rng --append "test=virtio irq=1"
if check_image >"$TMP/check" && grep -q "^virtio: [1-9][0-9]* batches each woken by an interrupt" "$TMP/out"; then
    ok "interrupts to a vCPU on node 1: $(grep -m1 '^virtio: ' "$TMP/out")"
else
    fail "interrupts to a vCPU on node 1: $(cat "$TMP/check"); $(grep 'virtio' "$TMP/out" | tr '\n' '|')"
fi
run_guest virtio 0 --nodes 2 --vcpus 2 --drive "file=$IMG" --rng --append "test=virtio broken=1"
if grep -q "broke virtio blk0's rules (queue 0: descriptor index out of range)" "$TMP/err" &&
   grep -q "guest accesses ignored: virtio 1" "$TMP/err"; then
    ok "a broken chain: NEEDS_RESET, one line logged and counted, and the device worked after a reset"
else
    fail "a broken chain was not reported as expected: $(tr '\n' '|' <"$TMP/err")"
fi
run_guest virtio 1 --nodes 2 --vcpus 2 --drive "file=$IMG" --rng --append "test=virtio inject=1"
finish
