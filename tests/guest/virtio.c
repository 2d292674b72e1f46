/* virtio: a small virtio-mmio driver in user mode, polling, on one CPU
 * (cpu=N, default the last: with --nodes 2 and round-robin placement a
 * vCPU of node 1, while the devices run on node 0). Its rings and buffers
 * are this guest's memory, written first by that CPU, so the device
 * thread on node 0 reads and writes them through the DSM, as it would a
 * Linux guest's (docs/devices.md).
 *
 * rng: 4 requests of 4 KiB, each filled, and not all one byte value.
 * blk: the host made the image with sector s holding the 64-bit value
 *      s ^ BLK_MAGIC in each of its 8-byte words; the driver reads
 *      sectors [0, nsect) in requests of 1-16 sectors, up to 8 in flight,
 *      checks them, writes ~(s ^ BLK_MAGIC) to sectors [wsect, wsect + 64),
 *      flushes, reads them back and checks; the host then checks the image
 *      file. GET_ID must give the serial.
 * broken=1: first a chain whose link points past the ring; the device
 *      must go to NEEDS_RESET (and say so), and work again after a reset.
 * Interrupts are suppressed (VRING_AVAIL_F_NO_INTERRUPT) and the IOAPIC pins
 * stay masked, unless irq=1: then the driver routes the device's pin
 * (16 + slot, level) to its own CPU and waits for the interrupt, whose
 * handler (kernel.c) acknowledges it, before it looks at the used ring:
 * each batch of requests must bring at least one. */
#include "guest.h"

#define VIO_BASE 0xFEB00000UL
#define VIO_STRIDE 0x1000UL
#define VIO_SLOTS 8
#define QN 32 /* 8 requests of 3 descriptors in flight */
#define BLK_MAGIC 0x616d616c67616d00ULL /* "amalgam" */
#define R(base, off) (*(volatile uint32_t *)((base) + (off)))

struct vdesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};

/* One queue's rings and the buffers of its requests: page-aligned, in the
 * guest image's memory. */
struct vq {
    struct vdesc desc[QN];
    uint16_t avail[2 + QN + 1] __attribute__((aligned(4096)));
    uint8_t used[4 + 8 * QN + 2] __attribute__((aligned(4096)));
    uint16_t avail_idx, used_seen;
};
static struct vq vq __attribute__((aligned(4096)));
static uint8_t bufs[8][16 * 512] __attribute__((aligned(4096)));
struct blk_hdr {
    uint32_t type, reserved;
    uint64_t sector;
};
static struct blk_hdr hdrs[8];
static uint8_t status[8];

static uint64_t vio_cpu, nsect, wsect, broken, use_irq;
volatile uint64_t virtio_irq_base;
static uint64_t irqs_waited;
#define IOAPIC_REG ((volatile uint32_t *)0xFEC00000UL)

void virtio_setup(void)
{
    vio_cpu = arg_or("cpu", (uint64_t)ncpus - 1);
    nsect = arg_or("nsect", 256);
    wsect = arg_or("wsect", 1024);
    broken = arg_or("broken", 0);
    use_irq = arg_or("irq", 0);
}

static bool vfail(const char *what, uint64_t a, uint64_t b)
{
    ufail((int)vio_cpu, "virtio: %s (%lx, %lx)", what, a, b);
    return false;
}

/* Status handshake and queue 0, as a driver must (virtio 1.x, 3.1). */
static bool bring_up(uintptr_t base, uint32_t extra_features)
{
    R(base, 0x70) = 0;
    R(base, 0x70) = 1;
    R(base, 0x70) = 3;
    R(base, 0x14) = 1;
    if (!(R(base, 0x10) & 1))
        return vfail("device does not offer VERSION_1", base, 0);
    R(base, 0x24) = 1;
    R(base, 0x20) = 1;
    R(base, 0x24) = 0;
    R(base, 0x20) = extra_features;
    R(base, 0x70) = 3 | 8;
    if (!(R(base, 0x70) & 8))
        return vfail("FEATURES_OK refused", base, R(base, 0x70));
    R(base, 0x30) = 0;
    if (R(base, 0x34) < QN)
        return vfail("queue 0 too small", base, R(base, 0x34));
    memset(&vq, 0, sizeof vq);
    vq.avail[0] = use_irq ? 0 : 1; /* without irq=1, no interrupts: this driver polls */
    if (use_irq) { /* the slot's pin to this CPU: fixed, physical, level, active high */
        uint32_t pin = 16 + (uint32_t)((base - VIO_BASE) / VIO_STRIDE);
        virtio_irq_base = base;
        IOAPIC_REG[0] = 0x11 + 2 * pin;
        IOAPIC_REG[4] = cpus[vio_cpu].apic_id << 24;
        IOAPIC_REG[0] = 0x10 + 2 * pin;
        IOAPIC_REG[4] = VEC_VIRTIO | 1u << 15;
    }
    R(base, 0x38) = QN;
    uint64_t d = (uint64_t)vq.desc, a = (uint64_t)vq.avail, u = (uint64_t)vq.used;
    R(base, 0x80) = (uint32_t)d, R(base, 0x84) = (uint32_t)(d >> 32);
    R(base, 0x90) = (uint32_t)a, R(base, 0x94) = (uint32_t)(a >> 32);
    R(base, 0xa0) = (uint32_t)u, R(base, 0xa4) = (uint32_t)(u >> 32);
    R(base, 0x44) = 1;
    R(base, 0x70) = 3 | 8 | 4;
    if (R(base, 0x70) != (3 | 8 | 4))
        return vfail("status after DRIVER_OK", base, R(base, 0x70));
    return true;
}

/* Makes the chain at desc[head] available (the descriptors are written). */
static void offer(uint16_t head)
{
    vq.avail[2 + vq.avail_idx % QN] = head;
    __asm__ volatile("" ::: "memory"); /* x86 keeps stores in order */
    vq.avail[1] = ++vq.avail_idx;
}

/* Notifies and waits until n more chains are used (with irq=1, for an
 * interrupt first). */
static bool kick_and_wait(uintptr_t base, uint16_t n)
{
    uint64_t irqs = cpus[vio_cpu].virtio_irqs;
    R(base, 0x50) = 0;
    uint64_t t0 = rdtsc();
    uint16_t want = (uint16_t)(vq.used_seen + n);
    while (use_irq && cpus[vio_cpu].virtio_irqs == irqs) {
        if (timed_out(t0, 30))
            return vfail("no interrupt came for the requests", irqs, want);
        cpu_relax();
    }
    irqs_waited += use_irq;
    while (*(volatile uint16_t *)(vq.used + 2) != want) {
        if (R(base, 0x70) & 64)
            return vfail("device went to NEEDS_RESET", base, R(base, 0x70));
        if (timed_out(t0, 30))
            return vfail("requests never completed", *(volatile uint16_t *)(vq.used + 2), want);
        cpu_relax();
    }
    vq.used_seen = want;
    return true;
}

static uint32_t used_len(uint16_t i)
{
    uint32_t l;
    memcpy(&l, vq.used + 4 + 8 * (i % QN) + 4, 4);
    return l;
}

static bool rng(uintptr_t base)
{
    if (!bring_up(base, 0))
        return false;
    for (int r = 0; r < 4; r++) {
        memset(bufs[0], 0, 4096);
        vq.desc[0] = (struct vdesc){(uint64_t)bufs[0], 4096, 2, 0};
        offer(0);
        if (!kick_and_wait(base, 1))
            return false;
        uint32_t len = used_len((uint16_t)(vq.used_seen - 1));
        bool varied = false;
        for (int i = 1; i < 4096; i++)
            varied |= bufs[0][i] != bufs[0][0];
        if (len != 4096 || !varied)
            return vfail("rng: a request came back short or constant", len, varied);
    }
    uprint("virtio rng: 4 x 4096 bytes from cpu %lu\n", vio_cpu);
    return true;
}

/* Request k (0-7): header, data (n sectors at buf, or none), status. */
static void blk_req_at(int k, uint32_t type, uint64_t sector, uint32_t n, uint8_t *buf)
{
    hdrs[k] = (struct blk_hdr){type, 0, sector};
    status[k] = 0xff;
    uint16_t d = (uint16_t)(3 * k);
    vq.desc[d] = (struct vdesc){(uint64_t)&hdrs[k], 16, 1, (uint16_t)(d + 1)};
    uint16_t s = (uint16_t)(d + 1);
    if (n) {
        vq.desc[d + 1] = (struct vdesc){(uint64_t)buf, n * 512,
                                        (uint16_t)(1 | (type == 0 || type == 8 ? 2 : 0)),
                                        (uint16_t)(d + 2)};
        s = (uint16_t)(d + 2);
    } else {
        vq.desc[d].next = s;
    }
    vq.desc[s] = (struct vdesc){(uint64_t)&status[k], 1, 2, 0};
    offer(d);
}

static void blk_req(int k, uint32_t type, uint64_t sector, uint32_t n)
{
    blk_req_at(k, type, sector, n, bufs[k]);
}

static uint64_t word(uint64_t sector, bool written)
{
    uint64_t v = sector ^ BLK_MAGIC;
    return written ? ~v : v;
}

/* Reads [first, first + count) in batches, checking every word. */
static bool blk_read_check(uintptr_t base, uint64_t first, uint64_t count, bool written,
                           uint64_t *checked)
{
    uint64_t s = first, end = first + count;
    for (uint32_t round = 0; s < end; round++) {
        int k = 0;
        uint64_t at[8];
        uint32_t len[8];
        for (; k < 8 && s < end; k++) {
            uint32_t n = 1 + (round * 8 + (uint32_t)k) % 16;
            if (n > end - s)
                n = (uint32_t)(end - s);
            at[k] = s, len[k] = n;
            blk_req(k, 0, s, n);
            s += n;
        }
        if (!kick_and_wait(base, (uint16_t)k))
            return false;
        for (int j = 0; j < k; j++) {
            if (status[j] != 0)
                return vfail("blk: read failed, sector and status", at[j], status[j]);
            const uint64_t *w = (const uint64_t *)bufs[j];
            for (uint32_t i = 0; i < len[j] * 64; i++)
                if (w[i] != word(at[j] + i / 64, written))
                    return vfail("blk: wrong data at sector, word", at[j] + i / 64, w[i]);
            *checked += len[j];
        }
    }
    return true;
}

/* A chain linking past the ring: the device must refuse it. */
static bool blk_broken(uintptr_t base)
{
    blk_req(0, 0, 0, 1);
    vq.desc[1].next = 1000;
    R(base, 0x50) = 0;
    uint64_t t0 = rdtsc();
    while (!(R(base, 0x70) & 64)) {
        if (timed_out(t0, 30))
            return vfail("blk: a broken chain did not put the device in NEEDS_RESET", R(base, 0x70), 0);
        cpu_relax();
    }
    if (!(R(base, 0x60) & 2))
        return vfail("blk: NEEDS_RESET without a configuration interrupt", R(base, 0x60), 0);
    uprint("virtio blk: a broken chain put the device in NEEDS_RESET; resetting it\n");
    return bring_up(base, 1u << 9);
}

static bool blk(uintptr_t base)
{
    if (!bring_up(base, 1u << 9)) /* FLUSH */
        return false;
    if (broken && !blk_broken(base))
        return false;
    uint64_t checked = 0;
    if (!blk_read_check(base, 0, nsect, false, &checked))
        return false;
    for (uint64_t s = wsect; s < wsect + 64; s += 8) { /* 8 writes of 8 sectors in flight */
        int k = (int)((s - wsect) / 8);
        uint64_t *w = (uint64_t *)bufs[k];
        for (uint32_t i = 0; i < 8 * 64; i++)
            w[i] = word(s + i / 64, true);
        blk_req(k, 1, s, 8);
    }
    if (!kick_and_wait(base, 8))
        return false;
    for (int k = 0; k < 8; k++)
        if (status[k] != 0)
            return vfail("blk: write failed, request and status", (uint64_t)k, status[k]);
    blk_req(0, 4, 0, 0); /* flush */
    if (!kick_and_wait(base, 1) || status[0] != 0)
        return vfail("blk: flush failed", status[0], 0);
    if (!blk_read_check(base, wsect, 64, true, &checked))
        return false;
    memset(bufs[0], 0, 512);
    blk_req(0, 8, 0, 1); /* GET_ID: 512 bytes offered, 20 used */
    vq.desc[1].len = 20;
    if (!kick_and_wait(base, 1) || status[0] != 0 || strncmp((char *)bufs[0], "amalgam-blk0", 12))
        return vfail("blk: GET_ID", status[0], bufs[0][0]);
    if (checked != nsect + 64 + inject)
        return vfail("blk: sectors checked, expected", checked, nsect + 64 + inject);
    uprint("virtio blk: %lu sectors read and checked, 64 written, flushed and read back, from "
           "cpu %lu\n", checked, vio_cpu);
    return true;
}

void virtio_run(int cpu)
{
    if ((uint64_t)cpu == vio_cpu) {
        int found = 0;
        for (uintptr_t slot = 0; slot < VIO_SLOTS && !test_failed; slot++) {
            uintptr_t base = VIO_BASE + slot * VIO_STRIDE;
            if (R(base, 0) != 0x74726976)
                continue;
            uint32_t id = R(base, 8);
            found++;
            if ((id == 4 && !rng(base)) || (id == 2 && !blk(base)))
                break;
        }
        if (!found)
            ufail(cpu, "virtio: no device (run with --drive and --rng)");
        else if (use_irq && !test_failed)
            uprint("virtio: %lu batches each woken by an interrupt (%lu in all) on cpu %lu, APIC "
                   "id %u\n", irqs_waited, cpus[vio_cpu].virtio_irqs, vio_cpu,
                   cpus[vio_cpu].apic_id);
        virtio_irq_base = 0;
    }
    ubarrier();
}

/* ---- blkbench: the device's throughput as a polling driver sees it -------- */
/* `amalgam bench blk` (tools/bench_blk.c) runs this and compares it with
 * fio on the same host file. On the last CPU, depth requests in flight
 * (refilled as each completes): sequential reads of 64 KiB, random 4 KiB
 * reads, sequential 64 KiB writes then a flush. Prints the TSC rate
 * (measured against the PM timer) and each phase's cycles. */
#define BB_BUF (64 * 1024)
#define BB_DEPTH 8
static uint8_t bbuf[BB_DEPTH][BB_BUF] __attribute__((aligned(4096)));
static uint64_t bb_depth, bb_seq, bb_rand, bb_disk_sect;

void blkbench_setup(void)
{
    vio_cpu = arg_or("cpu", (uint64_t)ncpus - 1);
    bb_depth = arg_or("depth", BB_DEPTH);
    if (!bb_depth || bb_depth > BB_DEPTH)
        bb_depth = BB_DEPTH;
    bb_seq = arg_or("seq", 512);     /* 64 KiB requests: 32 MiB */
    bb_rand = arg_or("rand", 4096);  /* 4 KiB requests */
    bb_disk_sect = arg_or("disk_mb", 64) * 2048;
}

static uint32_t pm_now(void)
{
    return (uint32_t)upio_in(0x608, 4) & 0xffffff;
}

static uint64_t tsc_hz(void)
{
    uint32_t p0 = pm_now(), p;
    uint64_t t0 = rdtsc();
    do
        p = pm_now();
    while (((p - p0) & 0xffffff) < 35795); /* 10 ms of the 3.579545 MHz PM timer */
    return (rdtsc() - t0) * 3579545ULL / ((p - p0) & 0xffffff);
}

static uint64_t bb_state = 88172645463325252ULL;
static uint64_t bb_next(void)
{
    bb_state ^= bb_state << 13;
    bb_state ^= bb_state >> 7;
    bb_state ^= bb_state << 17;
    return bb_state;
}

/* total requests of bs sectors, keeping bb_depth in flight; cycles taken. */
static bool bb_phase(uintptr_t base, uint32_t type, uint32_t bs, uint64_t total, bool random,
                     uint64_t *cycles)
{
    uint64_t issued = 0, done = 0, span = bb_disk_sect / bs;
    uint64_t t0 = rdtsc(), last = t0;
    for (; issued < bb_depth && issued < total; issued++)
        blk_req_at((int)issued, type, (random ? bb_next() % span : issued % span) * bs, bs,
                   bbuf[issued]);
    R(base, 0x50) = 0;
    while (done < total) {
        uint16_t u = *(volatile uint16_t *)(vq.used + 2);
        if (u == vq.used_seen) {
            if (timed_out(last, 30))
                return vfail("blkbench: requests stopped completing", done, total);
            cpu_relax();
            continue;
        }
        last = rdtsc();
        bool refill = false;
        while (vq.used_seen != u) {
            uint32_t id;
            memcpy(&id, vq.used + 4 + 8 * (vq.used_seen % QN), 4);
            vq.used_seen++;
            int k = (int)(id / 3);
            if (status[k] != 0)
                return vfail("blkbench: a request failed", (uint64_t)k, status[k]);
            done++;
            if (issued < total) {
                blk_req_at(k, type, (random ? bb_next() % span : issued % span) * bs, bs, bbuf[k]);
                issued++;
                refill = true;
            }
        }
        if (refill)
            R(base, 0x50) = 0;
    }
    *cycles = rdtsc() - t0;
    return true;
}

void blkbench_run(int cpu)
{
    if ((uint64_t)cpu == vio_cpu) {
        uintptr_t base = VIO_BASE;
        uint64_t c_seq = 0, c_rand = 0, c_write = 0;
        if (R(base, 0) != 0x74726976 || R(base, 8) != 2)
            ufail(cpu, "blkbench: no virtio-blk device in slot 0 (run with --drive)");
        else if (bring_up(base, 1u << 9) && bb_phase(base, 0, BB_BUF / 512, bb_seq, false, &c_seq) &&
                 bb_phase(base, 0, 8, bb_rand, true, &c_rand) &&
                 bb_phase(base, 1, BB_BUF / 512, bb_seq, false, &c_write)) {
            uint64_t t0 = rdtsc();
            blk_req(0, 4, 0, 0);
            if (kick_and_wait(base, 1)) {
                c_write += rdtsc() - t0;
                uprint("blkbench: tsc_hz %lu depth %lu seq_bytes %lu seq_read_cycles %lu "
                       "rand_reqs %lu rand_read_cycles %lu seq_write_cycles %lu\n", tsc_hz(),
                       bb_depth, bb_seq * BB_BUF, c_seq, bb_rand, c_rand, c_write);
            }
        }
    }
    ubarrier();
}
