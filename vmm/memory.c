/* Guest physical memory: one memfd, two views (see memory.h). */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmm/memory.h"

#define TWO_MIB (2ULL << 20)

static void *map_view(int fd, uint64_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

int gmem_create(struct guest_mem *m, uint64_t size)
{
    memset(m, 0, sizeof *m);
    m->fd = -1;
    if (size == 0 || size % TWO_MIB)
        return -EINVAL;
    m->size = size;
    m->low_size = size < GMEM_LOW_LIMIT ? size : GMEM_LOW_LIMIT;
    m->high_size = size - m->low_size;

    m->fd = memfd_create("amalgam-guest-ram", MFD_CLOEXEC);
    if (m->fd < 0)
        return -errno;
    if (ftruncate(m->fd, (off_t)size) < 0)
        goto fail;
    m->guest_view = map_view(m->fd, size);
    if (!m->guest_view)
        goto fail;
    m->agent_view = map_view(m->fd, size);
    if (!m->agent_view)
        goto fail;
    return 0;
fail: {
    int err = -errno;
    gmem_destroy(m);
    return err;
}
}

void gmem_destroy(struct guest_mem *m)
{
    if (m->guest_view)
        munmap(m->guest_view, m->size);
    if (m->agent_view)
        munmap(m->agent_view, m->size);
    if (m->fd >= 0)
        close(m->fd);
    m->guest_view = m->agent_view = NULL;
    m->fd = -1;
}

uint64_t gmem_gpa(const struct guest_mem *m, uint64_t offset)
{
    return offset < m->low_size ? offset : GMEM_HIGH_BASE + (offset - m->low_size);
}

int64_t gmem_offset(const struct guest_mem *m, uint64_t gpa)
{
    if (gpa < m->low_size)
        return (int64_t)gpa;
    if (gpa >= GMEM_HIGH_BASE && gpa - GMEM_HIGH_BASE < m->high_size)
        return (int64_t)(m->low_size + (gpa - GMEM_HIGH_BASE));
    return -1;
}

/* The range must lie inside one region; checking both ends against the
 * same region avoids straddling the hole. */
static int64_t range_offset(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
    if (len == 0)
        return gmem_offset(m, gpa);
    if (gpa + len < gpa)
        return -1;
    if (gpa < m->low_size)
        return gpa + len <= m->low_size ? (int64_t)gpa : -1;
    if (gpa >= GMEM_HIGH_BASE && gpa - GMEM_HIGH_BASE < m->high_size &&
        gpa + len - GMEM_HIGH_BASE <= m->high_size)
        return (int64_t)(m->low_size + (gpa - GMEM_HIGH_BASE));
    return -1;
}

void *gmem_agent_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
    int64_t off = range_offset(m, gpa, len);
    return off < 0 ? NULL : m->agent_view + off;
}

void *gmem_guest_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
    int64_t off = range_offset(m, gpa, len);
    return off < 0 ? NULL : m->guest_view + off;
}

/* Copies between buf and [gpa, +len) as seen through one of the views. */
static int copy_out(const struct guest_mem *m, const uint8_t *view, uint64_t gpa, void *buf,
                    size_t len)
{
    int64_t off = range_offset(m, gpa, len);
    if (off < 0)
        return -EFAULT;
    memcpy(buf, view + off, len);
    return 0;
}

static int copy_in(const struct guest_mem *m, uint8_t *view, uint64_t gpa, const void *buf,
                   size_t len)
{
    int64_t off = range_offset(m, gpa, len);
    if (off < 0)
        return -EFAULT;
    memcpy(view + off, buf, len);
    return 0;
}

int gmem_read(const struct guest_mem *m, uint64_t gpa, void *buf, size_t len)
{
    return copy_out(m, m->agent_view, gpa, buf, len);
}

int gmem_write(const struct guest_mem *m, uint64_t gpa, const void *buf, size_t len)
{
    return copy_in(m, m->agent_view, gpa, buf, len);
}

int gmem_guest_read(const struct guest_mem *m, uint64_t gpa, void *buf, size_t len)
{
    return copy_out(m, m->guest_view, gpa, buf, len);
}

int gmem_guest_write(const struct guest_mem *m, uint64_t gpa, const void *buf, size_t len)
{
    return copy_in(m, m->guest_view, gpa, buf, len);
}
