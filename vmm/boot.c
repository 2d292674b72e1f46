/* Boot path (see boot.h): ELF and bzImage kernels, initrd, boot_params. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <lzma.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "vmm/boot.h"
#include "vmm/boot_image.h"

/* Offsets in struct boot_params (Documentation/arch/x86/zero-page.rst) and
 * its setup header (boot.rst). */
#define BP_ACPI_RSDP 0x070
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8
#define BP_HDR 0x1f1
#define BP_SETUP_SECTS 0x1f1
#define BP_BOOT_FLAG 0x1fe
#define BP_JUMP 0x200
#define BP_HEADER 0x202
#define BP_VERSION 0x206
#define BP_TYPE_OF_LOADER 0x210
#define BP_LOADFLAGS 0x211
#define BP_RAMDISK_IMAGE 0x218
#define BP_RAMDISK_SIZE 0x21c
#define BP_HEAP_END_PTR 0x224
#define BP_CMD_LINE_PTR 0x228
#define BP_INITRD_ADDR_MAX 0x22c
#define BP_KERNEL_ALIGNMENT 0x230
#define BP_XLOADFLAGS 0x236
#define BP_CMDLINE_SIZE 0x238
#define BP_PAYLOAD_OFFSET 0x248
#define BP_PAYLOAD_LENGTH 0x24c
#define BP_INIT_SIZE 0x260
#define BP_E820_TABLE 0x2d0
#define BP_E820_MAX 128
#define BP_SIZE 4096

#define HDRS_MAGIC 0x53726448u /* "HdrS" */
#define LOADED_HIGH 0x01
#define CAN_USE_HEAP 0x80
#define XLF_KERNEL_64 0x01
#define DECOMPRESS_CAP (512ULL << 20) /* a larger "kernel" is a bomb */

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void wr64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

/* ---- ELF ------------------------------------------------------------- */

int boot_load_elf(const uint8_t *buf, size_t len, struct guest_mem *mem,
                  struct boot_info *out, char *err, size_t errlen)
{
    Elf64_Ehdr eh;
    if (len < sizeof eh)
        return fail(err, errlen, -ENOEXEC, "truncated ELF header");
    memcpy(&eh, buf, sizeof eh);
    if (memcmp(eh.e_ident, ELFMAG, SELFMAG))
        return fail(err, errlen, -ENOEXEC, "not an ELF file (bad magic)");
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
        eh.e_machine != EM_X86_64)
        return fail(err, errlen, -ENOEXEC, "not a 64-bit little-endian x86-64 ELF");
    if (eh.e_type != ET_EXEC)
        return fail(err, errlen, -ENOEXEC, "not an executable ELF (type %u)", eh.e_type);
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > 64)
        return fail(err, errlen, -ENOEXEC, "bad program header table (%u entries of %u bytes)",
                    eh.e_phnum, eh.e_phentsize);
    if (eh.e_phoff > len || (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > len - eh.e_phoff)
        return fail(err, errlen, -ENOEXEC, "truncated: program headers extend past the end");

    uint64_t lo = UINT64_MAX, hi = 0, entry = 0;
    bool have_entry = false;
    for (int i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, buf + eh.e_phoff + (size_t)i * sizeof ph, sizeof ph);
        if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
            continue;
        if (ph.p_filesz > ph.p_memsz)
            return fail(err, errlen, -ENOEXEC, "segment %d: file size exceeds memory size", i);
        if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset)
            return fail(err, errlen, -ENOEXEC, "truncated: segment %d extends past the end", i);
        if (ph.p_paddr < BOOT_KERNEL_MIN_GPA)
            return fail(err, errlen, -ENOEXEC, "segment %d loads at %#llx, below 1 MiB", i,
                        (unsigned long long)ph.p_paddr);
        uint8_t *dst = gmem_agent_ptr(mem, ph.p_paddr, ph.p_memsz);
        if (!dst)
            return fail(err, errlen, -ENOMEM, "segment %d (%#llx-%#llx) does not fit in guest RAM",
                        i, (unsigned long long)ph.p_paddr,
                        (unsigned long long)(ph.p_paddr + ph.p_memsz));
        memcpy(dst, buf + ph.p_offset, ph.p_filesz);
        memset(dst + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
        if (ph.p_paddr < lo)
            lo = ph.p_paddr;
        if (ph.p_paddr + ph.p_memsz > hi)
            hi = ph.p_paddr + ph.p_memsz;
        /* vmlinux gives its entry as a physical address (phys_startup_64);
         * other images give a virtual one. */
        if (eh.e_entry >= ph.p_paddr && eh.e_entry - ph.p_paddr < ph.p_memsz) {
            entry = eh.e_entry;
            have_entry = true;
        } else if (!have_entry && eh.e_entry >= ph.p_vaddr && eh.e_entry - ph.p_vaddr < ph.p_memsz) {
            entry = ph.p_paddr + (eh.e_entry - ph.p_vaddr);
            have_entry = true;
        }
    }
    if (hi == 0)
        return fail(err, errlen, -ENOEXEC, "no loadable segments");
    if (!have_entry)
        return fail(err, errlen, -ENOEXEC, "entry point %#llx is outside every segment",
                    (unsigned long long)eh.e_entry);
    out->entry_gpa = entry;
    out->kernel_start = lo;
    out->kernel_end = hi;
    return 0;
}

/* ---- decompression --------------------------------------------------- */

struct growbuf {
    uint8_t *p;
    size_t len, cap;
};

static int grow(struct growbuf *b, size_t need)
{
    if (b->len + need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 16 << 20;
    while (cap < b->len + need)
        cap *= 2;
    if (cap > DECOMPRESS_CAP)
        return -EFBIG;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int gunzip(const uint8_t *in, size_t n, struct growbuf *o)
{
    z_stream z = {0};
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
        return -ENOMEM;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    int zr = Z_OK, r = 0;
    while (zr != Z_STREAM_END) {
        if ((r = grow(o, 1 << 20)) < 0)
            break;
        z.next_out = o->p + o->len;
        z.avail_out = (uInt)(o->cap - o->len);
        zr = inflate(&z, Z_NO_FLUSH);
        o->len = o->cap - z.avail_out;
        if (zr != Z_OK && zr != Z_STREAM_END) {
            r = -EBADMSG;
            break;
        }
        if (zr == Z_OK && z.avail_in == 0 && z.avail_out != 0) {
            r = -EBADMSG; /* input ended before the stream did */
            break;
        }
    }
    inflateEnd(&z);
    return r;
}

static int unxz(const uint8_t *in, size_t n, struct growbuf *o, bool alone)
{
    lzma_stream s = LZMA_STREAM_INIT;
    lzma_ret lr = alone ? lzma_alone_decoder(&s, DECOMPRESS_CAP)
                        : lzma_stream_decoder(&s, DECOMPRESS_CAP, 0);
    if (lr != LZMA_OK)
        return -ENOMEM;
    s.next_in = in;
    s.avail_in = n;
    int r = 0;
    while (lr != LZMA_STREAM_END) {
        if ((r = grow(o, 1 << 20)) < 0)
            break;
        s.next_out = o->p + o->len;
        s.avail_out = o->cap - o->len;
        lr = lzma_code(&s, s.avail_in ? LZMA_RUN : LZMA_FINISH);
        o->len = o->cap - s.avail_out;
        if (lr != LZMA_OK && lr != LZMA_STREAM_END) {
            r = -EBADMSG;
            break;
        }
    }
    lzma_end(&s);
    return r;
}

static int unzstd(const uint8_t *in, size_t n, struct growbuf *o)
{
    ZSTD_DStream *d = ZSTD_createDStream();
    if (!d)
        return -ENOMEM;
    ZSTD_inBuffer ib = {in, n, 0};
    size_t zr = 1;
    int r = 0;
    while (zr != 0) {
        if ((r = grow(o, 1 << 20)) < 0)
            break;
        ZSTD_outBuffer ob = {o->p, o->cap, o->len};
        zr = ZSTD_decompressStream(d, &ob, &ib);
        o->len = ob.pos;
        if (ZSTD_isError(zr) || (zr != 0 && ib.pos == ib.size && ob.pos < ob.size)) {
            r = -EBADMSG;
            break;
        }
    }
    ZSTD_freeDStream(d);
    return r;
}

/* The kernel's lz4 is the legacy frame: magic, then blocks of at most
 * 8 MiB, each preceded by its compressed size. The 4-byte uncompressed
 * size mkpiggy appends reads as an impossible block size: the end. */
static int unlz4(const uint8_t *in, size_t n, struct growbuf *o)
{
    const size_t block_max = 8 << 20;
    size_t i = 4;
    while (i + 4 <= n) {
        uint32_t c = rd32(in + i);
        if (c == 0x184C2102u) {
            i += 4;
            continue;
        }
        if (c > n - i - 4 || c > (uint32_t)LZ4_compressBound((int)block_max))
            break;
        int r = grow(o, block_max);
        if (r < 0)
            return r;
        int d = LZ4_decompress_safe((const char *)in + i + 4, (char *)o->p + o->len, (int)c,
                                    (int)block_max);
        if (d < 0)
            return -EBADMSG;
        o->len += (size_t)d;
        i += 4 + c;
    }
    return o->len ? 0 : -EBADMSG;
}

static const char *detect(const uint8_t *p, size_t n)
{
    if (n >= 2 && p[0] == 0x1f && p[1] == 0x8b)
        return "gzip";
    if (n >= 6 && !memcmp(p, "\xfd" "7zXZ\0", 6))
        return "xz";
    if (n >= 4 && rd32(p) == 0xFD2FB528u)
        return "zstd";
    if (n >= 4 && rd32(p) == 0x184C2102u)
        return "lz4";
    if (n >= 3 && p[0] == 0x5d && p[1] == 0 && p[2] == 0)
        return "lzma";
    if (n >= 3 && !memcmp(p, "BZh", 3))
        return "bzip2";
    return NULL;
}

int boot_decompress(const uint8_t *in, size_t n, const char **kind, uint8_t **out,
                    size_t *out_len)
{
    struct growbuf o = {0};
    *kind = detect(in, n);
    int r;
    if (!*kind)
        return -ENOEXEC;
    if (!strcmp(*kind, "gzip"))
        r = gunzip(in, n, &o);
    else if (!strcmp(*kind, "xz"))
        r = unxz(in, n, &o, false);
    else if (!strcmp(*kind, "lzma"))
        r = unxz(in, n, &o, true);
    else if (!strcmp(*kind, "zstd"))
        r = unzstd(in, n, &o);
    else if (!strcmp(*kind, "lz4"))
        r = unlz4(in, n, &o);
    else
        r = -ENOTSUP;
    if (r < 0) {
        free(o.p);
        return r;
    }
    *out = o.p;
    *out_len = o.len;
    return 0;
}

/* ---- bzImage ---------------------------------------------------------- */

bool boot_is_bzimage(const uint8_t *buf, size_t len)
{
    return len >= 0x270 && rd16(buf + BP_BOOT_FLAG) == 0xAA55 && rd32(buf + BP_HEADER) == HDRS_MAGIC;
}

int boot_load_bzimage(const uint8_t *buf, size_t len, struct guest_mem *mem,
                      struct boot_info *out, uint8_t *bp, char *err, size_t errlen)
{
    uint16_t version = rd16(buf + BP_VERSION);
    if (version < 0x0208)
        return fail(err, errlen, -ENOEXEC, "boot protocol %x.%02x is too old (need 2.08)",
                    version >> 8, version & 0xff);
    if (!(rd16(buf + BP_XLOADFLAGS) & XLF_KERNEL_64))
        return fail(err, errlen, -ENOEXEC, "not a 64-bit kernel (no 64-bit entry point)");
    size_t setup_sects = buf[BP_SETUP_SECTS] ? buf[BP_SETUP_SECTS] : 4;
    size_t pm = (setup_sects + 1) * 512;
    uint32_t poff = rd32(buf + BP_PAYLOAD_OFFSET), plen = rd32(buf + BP_PAYLOAD_LENGTH);
    if (pm > len || poff > len - pm || plen > len - pm - poff || plen < 8)
        return fail(err, errlen, -ENOEXEC, "truncated: the compressed kernel extends past the end");

    const char *kind;
    uint8_t *elf;
    size_t elf_len;
    int r = boot_decompress(buf + pm + poff, plen, &kind, &elf, &elf_len);
    if (r == -ENOTSUP)
        return fail(err, errlen, -ENOEXEC, "payload compressed with %s, which amalgam cannot "
                    "decompress (use gzip, xz, lzma, zstd or lz4)", kind);
    if (r == -EFBIG)
        return fail(err, errlen, -ENOEXEC, "payload decompresses to more than %llu MiB",
                    (unsigned long long)(DECOMPRESS_CAP >> 20));
    if (r < 0)
        return fail(err, errlen, -ENOEXEC, "%s payload is corrupt or truncated",
                    kind ? kind : "unrecognised");
    snprintf(out->compression, sizeof out->compression, "%s", kind);
    r = boot_load_elf(elf, elf_len, mem, out, err, errlen);
    free(elf);
    if (r < 0)
        return r;
    uint64_t init_end = out->kernel_start + rd32(buf + BP_INIT_SIZE);
    if (init_end > out->kernel_end)
        out->kernel_end = init_end;
    if (!gmem_agent_ptr(mem, out->kernel_start, out->kernel_end - out->kernel_start))
        return fail(err, errlen, -ENOMEM, "the kernel needs %llu MiB from %#llx: too little memory",
                    (unsigned long long)((out->kernel_end - out->kernel_start) >> 20),
                    (unsigned long long)out->kernel_start);
    /* The setup header runs from 0x1f1 to 0x202 + the jump's offset byte. */
    size_t hdr_end = 0x202 + buf[BP_JUMP + 1];
    if (hdr_end > len || hdr_end > BP_E820_TABLE)
        hdr_end = 0x268;
    memcpy(bp + BP_HDR, buf + BP_HDR, hdr_end - BP_HDR);
    return 0;
}

/* ---- e820, initrd, boot_params --------------------------------------- */

int boot_build_e820(const struct guest_mem *mem, struct e820_entry *out, int max)
{
    struct e820_entry e[] = {
        {0, BOOT_EBDA_GPA, 1},
        {BOOT_EBDA_GPA, BOOT_ACPI_GPA - BOOT_EBDA_GPA, 2},
        {BOOT_ACPI_GPA, BOOT_ACPI_SIZE, 3},
        {BOOT_KERNEL_MIN_GPA, mem->low_size - BOOT_KERNEL_MIN_GPA, 1},
        {GMEM_HIGH_BASE, mem->high_size, 1},
    };
    int n = mem->high_size ? 5 : 4;
    if (n > max)
        return -ENOSPC;
    memcpy(out, e, (size_t)n * sizeof e[0]);
    return n;
}

static int read_file(const char *path, const char *what, uint8_t **buf, size_t *len,
                     char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return fail(err, errlen, -e, "%s '%s': %s", what, path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, errlen, -EISDIR, "%s '%s': not a regular file", what, path);
    }
    *len = (size_t)st.st_size;
    *buf = malloc(*len ? *len : 1);
    if (!*buf) {
        close(fd);
        return fail(err, errlen, -ENOMEM, "%s '%s': out of memory", what, path);
    }
    size_t got = 0;
    while (got < *len) {
        ssize_t n = read(fd, *buf + got, *len - got);
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            close(fd);
            free(*buf);
            return fail(err, errlen, -e, "%s '%s': read failed: %s", what, path, strerror(e));
        }
        got += (size_t)n;
    }
    close(fd);
    return 0;
}

static int load_initrd(const char *path, uint64_t addr_max, struct guest_mem *mem,
                       struct boot_info *out, char *err, size_t errlen)
{
    uint8_t *buf;
    size_t len;
    int r = read_file(path, "initrd", &buf, &len, err, errlen);
    if (r < 0)
        return r;
    uint64_t top = mem->low_size < addr_max + 1 ? mem->low_size : addr_max + 1;
    uint64_t start = len <= top ? ((top - len) & ~(GMEM_PAGE_SIZE - 1)) : 0;
    if (len > top || start < out->kernel_end) {
        free(buf);
        return fail(err, errlen, -ENOMEM, "initrd '%s' (%zu MiB) does not fit in guest memory "
                    "above the kernel: give the guest more --mem", path, len >> 20);
    }
    memcpy(gmem_agent_ptr(mem, start, len), buf, len);
    free(buf);
    out->initrd_gpa = start;
    out->initrd_size = len;
    return 0;
}

static void fill_boot_params(uint8_t *bp, const struct guest_mem *mem,
                             const struct boot_spec *spec, const struct boot_info *info,
                             bool from_bzimage)
{
    if (!from_bzimage) {
        wr16(bp + BP_BOOT_FLAG, 0xAA55);
        wr32(bp + BP_HEADER, HDRS_MAGIC);
        wr16(bp + BP_VERSION, 0x020f);
        wr32(bp + BP_KERNEL_ALIGNMENT, 0x200000);
        wr32(bp + BP_INITRD_ADDR_MAX, 0x7fffffff);
        wr32(bp + BP_CMDLINE_SIZE, BOOT_CMDLINE_MAX);
    }
    bp[BP_TYPE_OF_LOADER] = 0xff;
    bp[BP_LOADFLAGS] |= LOADED_HIGH | CAN_USE_HEAP;
    wr16(bp + BP_HEAP_END_PTR, 0xfe00);
    wr32(bp + BP_CMD_LINE_PTR, (uint32_t)BOOT_CMDLINE_GPA);
    wr32(bp + BP_EXT_CMD_LINE_PTR, 0);
    wr32(bp + BP_RAMDISK_IMAGE, (uint32_t)info->initrd_gpa);
    wr32(bp + BP_RAMDISK_SIZE, (uint32_t)info->initrd_size);
    wr32(bp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(info->initrd_gpa >> 32));
    wr32(bp + BP_EXT_RAMDISK_SIZE, (uint32_t)(info->initrd_size >> 32));
    wr64(bp + BP_ACPI_RSDP, spec->acpi_rsdp_gpa);
    struct e820_entry e[BP_E820_MAX];
    int n = boot_build_e820(mem, e, BP_E820_MAX);
    bp[BP_E820_ENTRIES] = (uint8_t)n;
    memcpy(bp + BP_E820_TABLE, e, (size_t)n * sizeof e[0]);
}

int boot_load(const struct boot_spec *spec, struct guest_mem *mem, struct boot_info *out,
              char *err, size_t errlen)
{
    char msg[384] = "";
    uint8_t *buf, bp[BP_SIZE] = {0};
    size_t len;
    memset(out, 0, sizeof *out);
    const char *cmdline = spec->cmdline ? spec->cmdline : "";
    if (strlen(cmdline) > BOOT_CMDLINE_MAX)
        return fail(err, errlen, -EINVAL, "the kernel command line is longer than %d bytes",
                    BOOT_CMDLINE_MAX);
    int r = read_file(spec->kernel_path, "kernel", &buf, &len, err, errlen);
    if (r < 0)
        return r;
    bool bz = boot_is_bzimage(buf, len);
    uint64_t initrd_max = 0x7fffffff;
    if (bz) {
        out->format = KERNEL_BZIMAGE;
        initrd_max = rd32(buf + BP_INITRD_ADDR_MAX);
        r = boot_load_bzimage(buf, len, mem, out, bp, msg, sizeof msg);
    } else if (len >= 4 && !memcmp(buf, ELFMAG, SELFMAG)) {
        out->format = KERNEL_ELF64;
        r = boot_load_elf(buf, len, mem, out, msg, sizeof msg);
    } else {
        r = fail(msg, sizeof msg, -ENOEXEC, "not an x86-64 ELF or bzImage (bad magic)");
    }
    free(buf);
    if (r < 0)
        return fail(err, errlen, r, "kernel '%s': %s", spec->kernel_path, msg);
    if (spec->initrd_path) {
        r = load_initrd(spec->initrd_path, initrd_max, mem, out, err, errlen);
        if (r < 0)
            return r;
    }
    fill_boot_params(bp, mem, spec, out, bz);
    out->boot_params_gpa = BOOT_PARAMS_GPA;
    r = gmem_write(mem, BOOT_PARAMS_GPA, bp, sizeof bp);
    r = r ?: boot_set_cmdline(mem, cmdline);
    if (r < 0)
        return fail(err, errlen, r, "guest memory too small for boot data");
    return 0;
}

int boot_set_cmdline(struct guest_mem *mem, const char *cmdline)
{
    size_t n = strlen(cmdline);
    if (n > BOOT_CMDLINE_MAX)
        return -EINVAL;
    return gmem_write(mem, BOOT_CMDLINE_GPA, cmdline, n + 1);
}

bool boot_is_linux(const char *path)
{
    uint8_t head[0x270];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, head, sizeof head);
    close(fd);
    if (n < (ssize_t)sizeof(Elf64_Ehdr))
        return false;
    if (boot_is_bzimage(head, (size_t)n))
        return true;
    Elf64_Ehdr eh;
    memcpy(&eh, head, sizeof eh);
    return !memcmp(eh.e_ident, ELFMAG, SELFMAG) && eh.e_entry >= 0xffffffff80000000ULL;
}
