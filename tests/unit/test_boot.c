/* Unit tests for the boot path: ELF and bzImage parsing (with payloads
 * compressed here by gzip, xz, zstd and lz4), boot_params, e820, initrd. */
#include <check.h>
#include <elf.h>
#include <errno.h>
#include <lz4.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "vmm/boot.h"
#include "vmm/boot_image.h"

#define PADDR 0x200000ULL
#define VBASE 0xffffffff81000000ULL

/* A one-segment ELF: 4 KiB of pattern at PADDR (virtual VBASE), 8 KiB of
 * memory (bss after it), entry 0x40 into the segment. */
static size_t make_elf(uint8_t *buf, uint64_t paddr)
{
    Elf64_Ehdr eh = {0};
    Elf64_Phdr ph = {0};
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_entry = VBASE + 0x40;
    eh.e_phoff = sizeof eh;
    eh.e_phentsize = sizeof ph;
    eh.e_phnum = 1;
    ph.p_type = PT_LOAD;
    ph.p_offset = 4096;
    ph.p_vaddr = VBASE;
    ph.p_paddr = paddr;
    ph.p_filesz = 4096;
    ph.p_memsz = 8192;
    memset(buf, 0, 8192);
    memcpy(buf, &eh, sizeof eh);
    memcpy(buf + sizeof eh, &ph, sizeof ph);
    for (int i = 0; i < 4096; i++)
        buf[4096 + i] = (uint8_t)(i * 7 + 1);
    return 8192;
}

static struct guest_mem mem;
static void setup(void) { ck_assert_int_eq(gmem_create(&mem, 64ULL << 20), 0); }
static void teardown(void) { gmem_destroy(&mem); }

START_TEST(elf_loads_and_translates_entry)
{
    uint8_t buf[8192];
    struct boot_info bi = {0};
    char err[256];
    size_t n = make_elf(buf, PADDR);
    memset(mem.agent_view + PADDR + 4096, 0xee, 4096); /* bss must be zeroed */
    ck_assert_int_eq(boot_load_elf(buf, n, &mem, &bi, err, sizeof err), 0);
    ck_assert_uint_eq(bi.entry_gpa, PADDR + 0x40);
    ck_assert_uint_eq(bi.kernel_start, PADDR);
    ck_assert_uint_eq(bi.kernel_end, PADDR + 8192);
    ck_assert(!memcmp(mem.agent_view + PADDR, buf + 4096, 4096));
    ck_assert_uint_eq(mem.agent_view[PADDR + 4096], 0);
}
END_TEST

START_TEST(elf_rejects_bad_input)
{
    uint8_t buf[8192];
    struct boot_info bi;
    char err[256];
    size_t n = make_elf(buf, PADDR);
    size_t cuts[] = {0, 10, 63, 64, 100, 4096, 6000};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
        ck_assert_int_eq(boot_load_elf(buf, cuts[i], &mem, &bi, err, sizeof err), -ENOEXEC);
    ck_assert_ptr_nonnull(strstr(err, "truncated"));
    uint8_t bad[8192];
    memcpy(bad, buf, n);
    bad[EI_CLASS] = ELFCLASS32;
    ck_assert_int_eq(boot_load_elf(bad, n, &mem, &bi, err, sizeof err), -ENOEXEC);
    memcpy(bad, buf, n);
    ((Elf64_Ehdr *)bad)->e_machine = EM_AARCH64;
    ck_assert_int_eq(boot_load_elf(bad, n, &mem, &bi, err, sizeof err), -ENOEXEC);
    memcpy(bad, buf, n);
    ((Elf64_Ehdr *)bad)->e_entry = 0x1234;
    ck_assert_int_eq(boot_load_elf(bad, n, &mem, &bi, err, sizeof err), -ENOEXEC);
    ck_assert_ptr_nonnull(strstr(err, "entry point"));
    memcpy(bad, buf, n);
    ((Elf64_Phdr *)(bad + 64))->p_filesz = 1ULL << 62; /* huge */
    ck_assert_int_eq(boot_load_elf(bad, n, &mem, &bi, err, sizeof err), -ENOEXEC);
    memcpy(bad, buf, n);
    ((Elf64_Phdr *)(bad + 64))->p_offset = ~0ULL - 10; /* wraps */
    ck_assert_int_eq(boot_load_elf(bad, n, &mem, &bi, err, sizeof err), -ENOEXEC);
    memcpy(bad, buf, n);
    ((Elf64_Ehdr *)bad)->e_phnum = 60000;
    ck_assert_int_eq(boot_load_elf(bad, n, &mem, &bi, err, sizeof err), -ENOEXEC);
    /* below 1 MiB, and beyond RAM */
    make_elf(bad, 0x8000);
    ck_assert_int_eq(boot_load_elf(bad, n, &mem, &bi, err, sizeof err), -ENOEXEC);
    make_elf(bad, (64ULL << 20) - 4096); /* 8 KiB of memory past the end */
    ck_assert_int_eq(boot_load_elf(bad, n, &mem, &bi, err, sizeof err), -ENOMEM);
    make_elf(bad, 0xFFFFFFFFFFFFF000ULL);
    ck_assert_int_eq(boot_load_elf(bad, n, &mem, &bi, err, sizeof err), -ENOMEM);
}
END_TEST

/* ---- bzImage ------------------------------------------------------------ */

static size_t compress_with(const char *kind, const uint8_t *in, size_t n, uint8_t *out,
                            size_t cap)
{
    if (!strcmp(kind, "gzip")) {
        z_stream z = {0};
        deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
        z.next_in = (Bytef *)in;
        z.avail_in = (uInt)n;
        z.next_out = out;
        z.avail_out = (uInt)cap;
        ck_assert_int_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
        size_t len = z.total_out;
        deflateEnd(&z);
        return len;
    }
    if (!strcmp(kind, "xz")) {
        size_t pos = 0;
        ck_assert_int_eq(lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, NULL, in, n, out, &pos, cap),
                         LZMA_OK);
        return pos;
    }
    if (!strcmp(kind, "zstd")) {
        size_t len = ZSTD_compress(out, cap, in, n, 3);
        ck_assert(!ZSTD_isError(len));
        return len;
    }
    /* lz4 legacy frame: magic, then size-prefixed blocks */
    uint32_t magic = 0x184C2102u;
    memcpy(out, &magic, 4);
    int c = LZ4_compress_default((const char *)in, (char *)out + 8, (int)n, (int)cap - 8);
    uint32_t cl = (uint32_t)c;
    memcpy(out + 4, &cl, 4);
    return 8 + (size_t)c;
}

static size_t make_bzimage(uint8_t *img, size_t cap, const char *kind, uint32_t init_size)
{
    uint8_t elf[8192], comp[16384];
    size_t en = make_elf(elf, PADDR);
    size_t cn = compress_with(kind, elf, en, comp, sizeof comp);
    uint32_t size_tail = (uint32_t)en; /* mkpiggy appends the size */
    memcpy(comp + cn, &size_tail, 4);
    cn += 4;
    const int setup_sects = 4;
    size_t pm = (setup_sects + 1) * 512, poff = 0x100;
    ck_assert(pm + poff + cn <= cap);
    memset(img, 0, pm + poff + cn);
    img[0x1f1] = setup_sects;
    img[0x1fe] = 0x55;
    img[0x1ff] = 0xAA;
    img[0x201] = 0x66; /* header ends at 0x268 */
    memcpy(img + 0x202, "HdrS", 4);
    uint16_t ver = 0x020f, xlf = 1;
    memcpy(img + 0x206, &ver, 2);
    memcpy(img + 0x236, &xlf, 2);
    uint32_t amax = 0x7fffffff, po = (uint32_t)poff, pl = (uint32_t)cn;
    memcpy(img + 0x22c, &amax, 4);
    memcpy(img + 0x248, &po, 4);
    memcpy(img + 0x24c, &pl, 4);
    memcpy(img + 0x260, &init_size, 4);
    memcpy(img + pm + poff, comp, cn);
    return pm + poff + cn;
}

START_TEST(bzimage_every_compression)
{
    const char *kinds[] = {"gzip", "xz", "zstd", "lz4"};
    static uint8_t img[32768];
    uint8_t elf[8192], bp[4096];
    make_elf(elf, PADDR);
    for (int k = 0; k < 4; k++) {
        struct boot_info bi = {0};
        char err[256] = "";
        memset(bp, 0, sizeof bp);
        memset(mem.agent_view + PADDR, 0, 8192);
        size_t n = make_bzimage(img, sizeof img, kinds[k], 1 << 20);
        ck_assert(boot_is_bzimage(img, n));
        ck_assert_msg(boot_load_bzimage(img, n, &mem, &bi, bp, err, sizeof err) == 0, "%s: %s",
                      kinds[k], err);
        ck_assert_str_eq(bi.compression, kinds[k]);
        ck_assert_uint_eq(bi.entry_gpa, PADDR + 0x40);
        ck_assert_uint_eq(bi.kernel_end, PADDR + (1 << 20)); /* init_size counts */
        ck_assert(!memcmp(mem.agent_view + PADDR, elf + 4096, 4096));
        ck_assert(!memcmp(bp + 0x202, "HdrS", 4)); /* setup header copied */
        /* corrupt the payload: refused, not loaded */
        img[(4 + 1) * 512 + 0x100 + 40] ^= 0xff;
        img[(4 + 1) * 512 + 0x100 + 41] ^= 0xff;
        ck_assert_int_eq(boot_load_bzimage(img, n, &mem, &bi, bp, err, sizeof err), -ENOEXEC);
        /* truncated */
        make_bzimage(img, sizeof img, kinds[k], 1 << 20);
        ck_assert_int_eq(boot_load_bzimage(img, n - 20, &mem, &bi, bp, err, sizeof err), -ENOEXEC);
    }
}
END_TEST

START_TEST(bzimage_rejects_old_or_32bit)
{
    static uint8_t img[32768];
    uint8_t bp[4096];
    struct boot_info bi;
    char err[256];
    size_t n = make_bzimage(img, sizeof img, "gzip", 0);
    img[0x236] = 0; /* no 64-bit entry */
    ck_assert_int_eq(boot_load_bzimage(img, n, &mem, &bi, bp, err, sizeof err), -ENOEXEC);
    ck_assert_ptr_nonnull(strstr(err, "64-bit"));
    n = make_bzimage(img, sizeof img, "gzip", 0);
    img[0x206] = 0x04; /* version 2.04 */
    ck_assert_int_eq(boot_load_bzimage(img, n, &mem, &bi, bp, err, sizeof err), -ENOEXEC);
    memcpy(img + (4 + 1) * 512 + 0x100, "BZh9", 4);
    img[0x206] = 0x0f;
    ck_assert_int_eq(boot_load_bzimage(img, n, &mem, &bi, bp, err, sizeof err), -ENOEXEC);
    ck_assert_ptr_nonnull(strstr(err, "bzip2"));
}
END_TEST

/* ---- boot_load: files, boot_params, e820, initrd -------------------------- */

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(p, 1, n, f), n);
    fclose(f);
}

START_TEST(boot_params_and_initrd)
{
    char kpath[] = "/tmp/amalgam-test-kXXXXXX", ipath[] = "/tmp/amalgam-test-iXXXXXX";
    close(mkstemp(kpath));
    close(mkstemp(ipath));
    uint8_t elf[8192];
    write_file(kpath, elf, make_elf(elf, PADDR));
    static uint8_t initrd[300000];
    for (size_t i = 0; i < sizeof initrd; i++)
        initrd[i] = (uint8_t)(i ^ (i >> 8));
    write_file(ipath, initrd, sizeof initrd);
    struct boot_spec spec = {kpath, ipath, "console=ttyS0 test=x", 0xE0000};
    struct boot_info bi;
    char err[256];
    ck_assert_int_eq(boot_load(&spec, &mem, &bi, err, sizeof err), 0);
    const uint8_t *bp = mem.agent_view + BOOT_PARAMS_GPA;
    uint32_t u32;
    uint64_t u64;
    memcpy(&u32, bp + 0x228, 4);
    ck_assert_uint_eq(u32, BOOT_CMDLINE_GPA);
    ck_assert_str_eq((char *)mem.agent_view + BOOT_CMDLINE_GPA, "console=ttyS0 test=x");
    memcpy(&u32, bp + 0x218, 4);
    ck_assert_uint_eq(u32, bi.initrd_gpa);
    ck_assert_uint_eq(bi.initrd_gpa % 4096, 0);
    ck_assert_uint_ge(bi.initrd_gpa, bi.kernel_end);
    ck_assert_uint_le(bi.initrd_gpa + sizeof initrd, mem.low_size);
    memcpy(&u32, bp + 0x21c, 4);
    ck_assert_uint_eq(u32, sizeof initrd);
    ck_assert(!memcmp(mem.agent_view + bi.initrd_gpa, initrd, sizeof initrd));
    memcpy(&u64, bp + 0x070, 8);
    ck_assert_uint_eq(u64, 0xE0000);
    ck_assert_uint_eq(bp[0x210], 0xff); /* type_of_loader */
    ck_assert(!memcmp(bp + 0x202, "HdrS", 4));
    ck_assert_uint_eq(bp[0x1e8], 4);    /* e820 entries */
    struct e820_entry e;
    memcpy(&e, bp + 0x2d0 + 3 * 20, 20);
    ck_assert_uint_eq(e.addr, 1 << 20);
    ck_assert_uint_eq(e.addr + e.size, 64ULL << 20);
    ck_assert_uint_eq(e.type, 1);
    /* a too-long command line */
    char longcl[5000];
    memset(longcl, 'a', sizeof longcl - 1);
    longcl[sizeof longcl - 1] = 0;
    spec.cmdline = longcl;
    ck_assert_int_eq(boot_load(&spec, &mem, &bi, err, sizeof err), -EINVAL);
    unlink(kpath);
    unlink(ipath);
}
END_TEST

START_TEST(e820_layouts)
{
    struct guest_mem big;
    struct e820_entry e[8];
    ck_assert_int_eq(gmem_create(&big, 5ULL << 30), 0);
    int n = boot_build_e820(&big, e, 8);
    ck_assert_int_eq(n, 5);
    ck_assert_uint_eq(e[0].addr, 0);
    ck_assert_uint_eq(e[0].size, BOOT_EBDA_GPA);
    ck_assert_uint_eq(e[1].type, 2);
    ck_assert_uint_eq(e[2].addr, BOOT_ACPI_GPA);
    ck_assert_uint_eq(e[2].type, 3);
    ck_assert_uint_eq(e[3].addr + e[3].size, GMEM_LOW_LIMIT);
    ck_assert_uint_eq(e[4].addr, GMEM_HIGH_BASE);
    ck_assert_uint_eq(e[4].size, (5ULL << 30) - GMEM_LOW_LIMIT);
    uint64_t ram = 0;
    for (int i = 0; i < n; i++)
        if (e[i].type == 1)
            ram += e[i].size;
    ck_assert_uint_eq(ram, (5ULL << 30) - (1 << 20) + BOOT_EBDA_GPA);
    ck_assert_int_eq(boot_build_e820(&big, e, 3), -ENOSPC);
    gmem_destroy(&big);
    ck_assert_int_eq(boot_build_e820(&mem, e, 8), 4);
}
END_TEST

#include "tests/unit/unit.h"

int main(void)
{
    Suite *s = suite_create("boot");
    TCase *t = tcase_create("boot");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, elf_loads_and_translates_entry);
    tcase_add_test(t, elf_rejects_bad_input);
    tcase_add_test(t, bzimage_every_compression);
    tcase_add_test(t, bzimage_rejects_old_or_32bit);
    tcase_add_test(t, boot_params_and_initrd);
    tcase_add_test(t, e820_layouts);
    suite_add_tcase(s, t);
    return run_suite(s);
}
