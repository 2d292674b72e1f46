/* virtio: the machine's virtio 1.x devices (block, network, entropy) over
 * the MMIO transport, as pure logic.
 *
 * Three layers, none of which does I/O, takes a lock or reads a clock:
 * - the transport (struct virtio_mmio): the register file a driver sees,
 *   feature negotiation, the status state machine, queue set-up and the
 *   interrupt status. A register access returns effects (struct virtio_fx:
 *   a queue was notified, the device was reset or started, the interrupt
 *   line changed) that the caller carries out, as the LAPIC and IOAPIC
 *   models do;
 * - split virtqueues: virtio_pop() takes the next available descriptor
 *   chain and turns it into host pointers through struct virtio_mem (the
 *   guest's RAM as the device reaches it: on a multi-node machine the
 *   guest view, so a device's DMA waits for the DSM like a vCPU's access);
 *   virtio_push() returns it as used;
 * - device models: what a block request, a network frame or an entropy
 *   request means, given a chain; the host side (a file, a TAP, getrandom)
 *   is the caller's.
 *
 * Everything the guest wrote is untrusted: ring indices, descriptor
 * addresses, lengths, flags and chain links are checked before use, and a
 * chain that breaks the rules puts the device into DEVICE_NEEDS_RESET (with
 * a reason and a counter, and a configuration-change interrupt as the spec
 * asks) instead of being used. Nothing is read or written outside guest
 * RAM: every guest address goes through virtio_mem.map, which refuses a
 * range that is not RAM.
 *
 * Invariants: the caller serialises every call on one device (one lock per
 * device); a chain's host pointers stay valid until the device is reset
 * (guest RAM never moves); a device never pushes a chain it did not pop in
 * the current generation (t->generation changes with every reset, and a
 * request that completes after one is dropped).
 */
#ifndef AMALGAM_VIRTIO_VIRTIO_H
#define AMALGAM_VIRTIO_VIRTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* ---- the MMIO register layout (virtio 1.x, section 4.2.2) ---- */
enum virtio_mmio_reg {
    VIRTIO_MMIO_MAGIC = 0x000,
    VIRTIO_MMIO_VERSION = 0x004,
    VIRTIO_MMIO_DEVICE_ID = 0x008,
    VIRTIO_MMIO_VENDOR_ID = 0x00c,
    VIRTIO_MMIO_DEVICE_FEATURES = 0x010,
    VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014,
    VIRTIO_MMIO_DRIVER_FEATURES = 0x020,
    VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024,
    VIRTIO_MMIO_QUEUE_SEL = 0x030,
    VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034,
    VIRTIO_MMIO_QUEUE_NUM = 0x038,
    VIRTIO_MMIO_QUEUE_READY = 0x044,
    VIRTIO_MMIO_QUEUE_NOTIFY = 0x050,
    VIRTIO_MMIO_INTERRUPT_STATUS = 0x060,
    VIRTIO_MMIO_INTERRUPT_ACK = 0x064,
    VIRTIO_MMIO_STATUS = 0x070,
    VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080,
    VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084,
    VIRTIO_MMIO_QUEUE_DRIVER_LOW = 0x090,
    VIRTIO_MMIO_QUEUE_DRIVER_HIGH = 0x094,
    VIRTIO_MMIO_QUEUE_DEVICE_LOW = 0x0a0,
    VIRTIO_MMIO_QUEUE_DEVICE_HIGH = 0x0a4,
    VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc,
    VIRTIO_MMIO_CONFIG = 0x100,
};
#define VIRTIO_MMIO_MAGIC_VALUE 0x74726976u /* "virt" */
#define VIRTIO_MMIO_VENDOR 0x4c474d41u      /* "AMGL" */

#define VIRTIO_STATUS_ACKNOWLEDGE 1u
#define VIRTIO_STATUS_DRIVER 2u
#define VIRTIO_STATUS_DRIVER_OK 4u
#define VIRTIO_STATUS_FEATURES_OK 8u
#define VIRTIO_STATUS_NEEDS_RESET 64u
#define VIRTIO_STATUS_FAILED 128u

#define VIRTIO_INT_USED 1u
#define VIRTIO_INT_CONFIG 2u

#define VIRTIO_F_VERSION_1 (1ULL << 32)

enum virtio_id { VIRTIO_ID_NET = 1, VIRTIO_ID_BLOCK = 2, VIRTIO_ID_RNG = 4 };

#define VIRTIO_MAX_QUEUES 2
/* Queue size offered. Linux's virtio-blk puts a request's segments in the
 * ring itself (no indirect descriptors offered), so a request takes up to
 * seg_max + 2 descriptors of it. */
#define VIRTQ_MAX_SIZE 256
/* Longest chain a device accepts: a longer one is a loop or a broken ring
 * (a chain can never be longer than its queue). */
#define VIRTQ_MAX_SEGS VIRTQ_MAX_SIZE
#define VIRTIO_CONFIG_MAX 64

/* Guest RAM as a device reaches it. map returns a host pointer to
 * [gpa, gpa + len) when the whole range is guest RAM in one piece, else
 * NULL; len is never 0. */
struct virtio_mem {
    void *ctx;
    void *(*map)(void *ctx, uint64_t gpa, uint64_t len);
};

/* Split ring layout (2.7): the rings' host pointers are resolved, and
 * checked, when the driver sets QueueReady. */
struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

struct virtq {
    uint16_t num;  /* the driver's size; 0 until it writes one */
    bool ready;
    uint64_t desc_gpa, avail_gpa, used_gpa;
    uint16_t last_avail; /* next avail entry to take */
    uint16_t used_idx;   /* our copy of used->idx */
    struct virtq_desc *desc; /* host pointers, set when ready */
    uint16_t *avail;         /* flags, idx, ring[num] */
    uint8_t *used;           /* flags, idx, ring[num] of {id, len} */
};

/* One segment of a chain: a host pointer to guest RAM, and whether the
 * device may write it (device-writable segments follow readable ones). */
struct virtq_seg {
    uint8_t *p;
    uint32_t len;
    bool write;
};

struct virtq_chain {
    uint16_t head;
    uint16_t nseg;
    uint16_t nout;       /* the first nout segments are device-readable */
    uint64_t out_len, in_len;
    uint32_t generation; /* the device's at pop time */
    struct virtq_seg seg[VIRTQ_MAX_SEGS];
};

/* What a device model offers the transport. */
struct virtio_device {
    uint32_t id;         /* enum virtio_id */
    uint64_t features;   /* offered, VIRTIO_F_VERSION_1 added by the transport */
    int nqueues;
    uint8_t config[VIRTIO_CONFIG_MAX]; /* config space, read-only for the driver */
    uint32_t config_len;
};

/* Effects of one transport call, for the caller to carry out after it
 * drops the device's lock (the interrupt line: while holding it, so that
 * two threads cannot apply line changes out of order). */
struct virtio_fx {
    uint32_t notify; /* bit q: the driver notified queue q */
    bool reset;      /* the driver reset the device: drop in-flight work */
    bool start;      /* DRIVER_OK was set: the device may use its queues */
    int irq;         /* -1 unchanged, else the interrupt line's new level */
};

/* Why a device went to NEEDS_RESET or ignored an access: counted per kind. */
enum virtio_err {
    VIRTIO_ERR_REGISTER,   /* an access to a register that does not exist or the wrong width */
    VIRTIO_ERR_STATE,      /* a register write the status does not allow (ignored) */
    VIRTIO_ERR_RING,       /* ring addresses outside RAM or misaligned, or a bad size */
    VIRTIO_ERR_INDEX,      /* avail->idx more than num ahead of the device */
    VIRTIO_ERR_DESC,       /* a descriptor index out of range, a loop, or a chain too long */
    VIRTIO_ERR_ADDR,       /* a buffer outside guest RAM, or of length 0 */
    VIRTIO_ERR_LAYOUT,     /* readable after writable, or indirect (not offered) */
    VIRTIO_ERR_REQUEST,    /* a request the device model cannot take (no status byte, ...) */
    VIRTIO_ERR_COUNT
};
extern const char *const virtio_err_names[VIRTIO_ERR_COUNT];

struct virtio_mmio {
    struct virtio_device dev;
    uint32_t status;
    uint32_t dev_features_sel, drv_features_sel, queue_sel;
    uint64_t driver_features;
    uint32_t isr;
    bool line;           /* interrupt line as last reported */
    uint32_t generation; /* bumped by every reset */
    struct virtq q[VIRTIO_MAX_QUEUES];
    uint64_t errors[VIRTIO_ERR_COUNT];
    char reason[160];    /* the last NEEDS_RESET cause, for the log */
};

/* ---- transport ---- */
void virtio_mmio_init(struct virtio_mmio *t, const struct virtio_device *dev);
/* A driver's access at offset off (from the window's base), size 1, 2 or 4
 * bytes. Config space takes any of them; the other registers only 4. */
uint32_t virtio_mmio_read(struct virtio_mmio *t, uint64_t off, int size);
void virtio_mmio_write(struct virtio_mmio *t, const struct virtio_mem *m, uint64_t off, int size,
                       uint32_t val, struct virtio_fx *fx);
/* Whether the driver has set DRIVER_OK and the device has not failed. */
bool virtio_mmio_running(const struct virtio_mmio *t);
/* The device found the driver broke the rules: NEEDS_RESET, counted, the
 * reason kept, a configuration interrupt raised (fx->irq). */
void virtio_mmio_fail(struct virtio_mmio *t, enum virtio_err kind, const char *reason,
                      struct virtio_fx *fx);
/* Whether the device is in DEVICE_NEEDS_RESET (it then ignores its queues
 * until the driver resets it). */
bool virtio_mmio_needs_reset(const struct virtio_mmio *t);

/* Fixed-layout snapshot of the transport (not the device's backend):
 * bytes written or -ENOSPC; restore checks version, sizes and ranges and
 * re-resolves the rings through m (-EINVAL for a bad snapshot). */
#define VIRTIO_MMIO_STATE_MAX 256
int virtio_mmio_save(const struct virtio_mmio *t, void *buf, size_t len);
int virtio_mmio_restore(struct virtio_mmio *t, const struct virtio_mem *m, const void *buf,
                        size_t len);

/* ---- virtqueues ---- */
/* Takes queue q's next available chain: 1 (c filled), 0 (none), or -EIO
 * (the driver broke the ring: the device is now NEEDS_RESET, fx->irq set). */
int virtio_pop(struct virtio_mmio *t, int q, const struct virtio_mem *m, struct virtq_chain *c,
               struct virtio_fx *fx);
/* Returns a chain as used with `written` bytes written into it, and raises
 * the used-buffer interrupt unless the driver suppressed it. A chain of an
 * earlier generation is dropped (0, nothing pushed); 1 when pushed. */
int virtio_push(struct virtio_mmio *t, int q, const struct virtq_chain *c, uint32_t written,
                struct virtio_fx *fx);

/* Copies between a chain's segments and a flat buffer, starting `skip`
 * bytes into the readable (gather) or writable (scatter) part. Return the
 * bytes copied. */
size_t virtq_gather(const struct virtq_chain *c, size_t skip, void *dst, size_t len);
size_t virtq_scatter(const struct virtq_chain *c, size_t skip, const void *src, size_t len);
/* The chain's readable (out) or writable (in) part from `skip` bytes on, as
 * at most max iovecs; returns how many, or -E2BIG if more are needed. */
int virtq_iov(const struct virtq_chain *c, bool writable, size_t skip, size_t len,
              struct iovec *iov, int max);

/* ---- block (5.2) ---- */
#define VIRTIO_BLK_F_SEG_MAX (1ULL << 2)
#define VIRTIO_BLK_F_RO (1ULL << 5)
#define VIRTIO_BLK_F_BLK_SIZE (1ULL << 6)
#define VIRTIO_BLK_F_FLUSH (1ULL << 9)
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_SECTOR 512
#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_MAX_IOV (VIRTQ_MAX_SEGS)

void virtio_blk_device(struct virtio_device *d, uint64_t capacity_bytes, bool readonly);

/* One block request, parsed and checked against the disk. */
struct virtio_blk_req {
    uint32_t type;
    uint64_t offset; /* bytes, for IN and OUT */
    uint64_t len;    /* data bytes */
    int niov;
    struct iovec iov[VIRTIO_BLK_MAX_IOV];
    uint8_t *status; /* the status byte the device writes last */
};

/* Parses chain c. Returns 0 (r is a request for the backend: IN, OUT or
 * FLUSH), 1 (answered here: r->status written, GET_ID or a request the
 * disk refuses, such as a write to a read-only disk, a range beyond its
 * end or an unknown type), or -EINVAL (no room for a status byte or a
 * header: the device must go to NEEDS_RESET, why in *why). */
int virtio_blk_parse(const struct virtq_chain *c, uint64_t capacity_bytes, bool readonly,
                     const char *serial, struct virtio_blk_req *r, const char **why);
/* Bytes the device wrote into chain c for a request that ended with status. */
uint32_t virtio_blk_written(const struct virtio_blk_req *r, uint8_t status);

/* ---- network (5.1) ---- */
#define VIRTIO_NET_F_MTU (1ULL << 3)
#define VIRTIO_NET_F_MAC (1ULL << 5)
#define VIRTIO_NET_F_STATUS (1ULL << 16)
#define VIRTIO_NET_HDR_LEN 12 /* virtio_net_hdr with num_buffers (VERSION_1) */
#define VIRTIO_NET_RXQ 0
#define VIRTIO_NET_TXQ 1
#define VIRTIO_NET_MTU 1500
#define VIRTIO_NET_FRAME_MAX (VIRTIO_NET_MTU + 18) /* Ethernet header + VLAN tag */

void virtio_net_device(struct virtio_device *d, const uint8_t mac[6]);
/* A transmit chain's frame (after the virtio-net header) as iovecs:
 * returns how many, or -EINVAL (header short, frame empty or longer than
 * VIRTIO_NET_FRAME_MAX, or writable segments: the frame is dropped). */
int virtio_net_tx_frame(const struct virtq_chain *c, struct iovec *iov, int max, size_t *len);
/* Writes a received frame into a receive chain behind a zeroed header
 * (num_buffers = 1). Returns the bytes written into the chain, or -EMSGSIZE
 * if the chain is too small (the frame is dropped and counted). */
int virtio_net_rx_frame(const struct virtq_chain *c, const void *frame, size_t len);

/* ---- entropy (5.4) ---- */
void virtio_rng_device(struct virtio_device *d);

#endif
