/* Guest physical memory: one memfd, mapped twice.
 *
 * The guest view is what KVM's memslots point at (and what the DSM registers
 * with userfaultfd); the agent view is the VMM's own window onto the same
 * file pages and is never registered, so the VMM reads and writes page
 * contents through it without faulting. Both views always show the same
 * bytes because they map the same shmem pages.
 *
 * Physical layout: low RAM at [0, low_size) below the 32-bit MMIO hole, the
 * rest as high RAM at [4 GiB, 4 GiB + high_size). memfd offsets run
 * contiguously: low RAM first, then high RAM.
 */
#ifndef AMALGAM_VMM_MEMORY_H
#define AMALGAM_VMM_MEMORY_H

#include "platform/platform.h"
#include <stddef.h>
#include <stdint.h>

#define GMEM_LOW_LIMIT PLATFORM_LOW_RAM_LIMIT /* the MMIO hole starts here */
#define GMEM_HIGH_BASE PLATFORM_HIGH_RAM_BASE
#define GMEM_PAGE_SIZE PLATFORM_PAGE_SIZE

struct guest_mem {
    int fd;
    uint64_t size;      /* total RAM bytes = low_size + high_size */
    uint64_t low_size;  /* RAM at [0, low_size) */
    uint64_t high_size; /* RAM at [GMEM_HIGH_BASE, +high_size) */
    uint8_t *guest_view;
    uint8_t *agent_view;
};

/* Creates the memfd and both views; size must be a multiple of 2 MiB. */
int gmem_create(struct guest_mem *m, uint64_t size);
void gmem_destroy(struct guest_mem *m);

/* memfd offset of a guest-physical address, or -1 if gpa is not RAM. */
int64_t gmem_offset(const struct guest_mem *m, uint64_t gpa);
/* The reverse: the guest-physical address of a memfd offset below m->size. */
uint64_t gmem_gpa(const struct guest_mem *m, uint64_t offset);

/* Agent-view pointer to [gpa, gpa+len), or NULL unless the whole range is
 * RAM in one contiguous region (it may not straddle the hole). */
void *gmem_agent_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/* Guest-view pointer; same rule. Accesses may fault into the DSM. */
void *gmem_guest_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/* Copies through the agent view; -EFAULT unless the range is RAM. Only
 * before the guest runs (loading): on a multi-node machine the agent view
 * holds this node's bytes, which for another node's page may be stale. */
int gmem_read(const struct guest_mem *m, uint64_t gpa, void *buf, size_t len);
int gmem_write(const struct guest_mem *m, uint64_t gpa, const void *buf, size_t len);

/* Copies through the guest view: what a vCPU would read or write, coherent
 * on a multi-node machine (an access may wait for the DSM like a vCPU's).
 * For vCPU and device threads, never the node's message loop, which serves
 * those faults. -EFAULT unless the range is RAM. */
int gmem_guest_read(const struct guest_mem *m, uint64_t gpa, void *buf, size_t len);
int gmem_guest_write(const struct guest_mem *m, uint64_t gpa, const void *buf, size_t len);

#endif
