/* Unit tests for the VMM's pure pieces: `run` flags, sizes, guest memory
 * views, and the emulated-CPL0 instruction decoder. */
#include <check.h>
#include <stdarg.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli/run_args.h"
#include "vmm/emulate.h"
#include "vmm/kvm.h"
#include "vmm/memory.h"
#include "vmm/vmm.h"

static int parse(struct run_args *a, char *err, const char *first, ...)
{
    char *argv[32] = {"run"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *))
        argv[argc++] = (char *)s;
    va_end(ap);
    return run_parse_args(argc, argv, a, err, 256);
}

START_TEST(flags_all)
{
    struct run_args a;
    char err[256];
    ck_assert_int_eq(parse(&a, err, "--vcpus", "4", "--mem=512M", "--kernel", "k.elf",
                           "--initrd", "i.cpio", "--append", "test=x y", "--cpl0", "emulated",
                           "-v", NULL), 0);
    ck_assert_int_eq(a.vm.nr_vcpus, 4);
    ck_assert_uint_eq(a.vm.mem_size, 512ULL << 20);
    ck_assert_str_eq(a.vm.kernel, "k.elf");
    ck_assert_str_eq(a.vm.initrd, "i.cpio");
    ck_assert_str_eq(a.vm.cmdline, "test=x y");
    ck_assert_int_eq(a.vm.cpl0, CPL0_EMULATED);
    ck_assert(a.vm.verbose);
}
END_TEST

START_TEST(flags_defaults)
{
    struct run_args a;
    char err[256];
    ck_assert_int_eq(parse(&a, err, "--kernel", "k", NULL), 0);
    ck_assert_int_eq(a.vm.nr_vcpus, 1);
    ck_assert_uint_eq(a.vm.mem_size, 256ULL << 20);
    ck_assert_int_eq(a.vm.cpl0, CPL0_AUTO);
    ck_assert_int_eq(a.vm.vcpu_sched, VCPU_SCHED_IDLE);
    ck_assert_ptr_null(a.vm.initrd);
    ck_assert_int_eq(parse(&a, err, "--kernel", "k", "--vcpu-sched", "normal", NULL), 0);
    ck_assert_int_eq(a.vm.vcpu_sched, VCPU_SCHED_NORMAL);
}
END_TEST

START_TEST(flags_errors)
{
    struct run_args a;
    char err[256];
    ck_assert_int_eq(parse(&a, err, "--kernel", "k", "--bogus", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "unknown flag '--bogus'"));
    ck_assert_int_eq(parse(&a, err, "--kernel", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "needs a value"));
    ck_assert_int_eq(parse(&a, err, "--vcpus", "0", "--kernel", "k", NULL), -EINVAL);
    ck_assert_int_eq(parse(&a, err, "--vcpus", "256", "--kernel", "k", NULL), -EINVAL);
    ck_assert_int_eq(parse(&a, err, "--vcpus", "3x", "--kernel", "k", NULL), -EINVAL);
    ck_assert_int_eq(parse(&a, err, "--mem", "lots", "--kernel", "k", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--mem 'lots'"));
    ck_assert_int_eq(parse(&a, err, "--cpl0", "maybe", "--kernel", "k", NULL), -EINVAL);
    ck_assert_int_eq(parse(&a, err, "--vcpu-sched", "fifo", "--kernel", "k", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "expected idle or normal"));
    ck_assert_int_eq(parse(&a, err, "--vcpus", "2", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--kernel FILE is required"));
    ck_assert_int_eq(parse(&a, err, "--verbose=1", "--kernel", "k", NULL), -EINVAL);
    ck_assert_int_eq(parse(&a, err, "--help", NULL), 0);
    ck_assert(a.help);
}
END_TEST

START_TEST(flags_devices)
{
    struct run_args a;
    char err[256];
    ck_assert_int_eq(parse(&a, err, "--kernel", "k", "--drive", "file=a.img,readonly=on",
                           "--drive=file=b.img,cache=none", "--netdev",
                           "tap,ifname=tap7,mac=52:54:00:aa:bb:cc", "--netdev", "tap,ifname=t2",
                           "--rng", NULL), 0);
    ck_assert_int_eq(a.vm.ndrives, 2);
    ck_assert_str_eq(a.vm.drives[0].file, "a.img");
    ck_assert(a.vm.drives[0].readonly && !a.vm.drives[0].direct);
    ck_assert_str_eq(a.vm.drives[1].file, "b.img");
    ck_assert(!a.vm.drives[1].readonly && a.vm.drives[1].direct);
    ck_assert_int_eq(a.vm.nnetdevs, 2);
    ck_assert_str_eq(a.vm.netdevs[0].ifname, "tap7");
    ck_assert_uint_eq(a.vm.netdevs[0].mac[5], 0xcc);
    /* A derived MAC: locally administered, unicast, the same each time. */
    ck_assert_uint_eq(a.vm.netdevs[1].mac[0], 0x52);
    uint8_t mac[6];
    memcpy(mac, a.vm.netdevs[1].mac, 6);
    ck_assert_int_eq(parse(&a, err, "--kernel", "k", "--netdev", "tap,ifname=t2", NULL), 0);
    ck_assert_mem_eq(a.vm.netdevs[0].mac, mac, 6);
    ck_assert(a.vm.rng == false);
    ck_assert_int_eq(vm_virtio_slots(&a.vm), 1);
    /* Refused, with the reason. */
    static const char *const bad[][2] = {
        {"--drive", "readonly=on"}, {"--drive", "file=x,cache=sometimes"},
        {"--drive", "file=x,bogus=1"}, {"--drive", "file=x,readonly=maybe"},
        {"--netdev", "user"}, {"--netdev", "tap"}, {"--netdev", "tap,ifname=t,mac=01:00:00:00:00:01"},
        {"--netdev", "tap,ifname=t,mac=52:54:00:00:00"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        ck_assert_int_eq(parse(&a, err, "--kernel", "k", bad[i][0], bad[i][1], NULL), -EINVAL);
        ck_assert_msg(strstr(err, bad[i][0]) != NULL, "%s %s: %s", bad[i][0], bad[i][1], err);
    }
    /* At most 8 devices. */
    ck_assert_int_eq(parse(&a, err, "--kernel", "k", "--rng", "--drive", "file=1", "--drive",
                           "file=2", "--drive", "file=3", "--drive", "file=4", "--drive", "file=5",
                           "--drive", "file=6", "--drive", "file=7", "--drive", "file=8", NULL),
                     -EINVAL);
    ck_assert_ptr_ne(strstr(err, "at most 8"), NULL);
}
END_TEST

START_TEST(sizes)
{
    uint64_t v;
    ck_assert_int_eq(vmm_parse_size("256M", &v), 0);
    ck_assert_uint_eq(v, 256ULL << 20);
    ck_assert_int_eq(vmm_parse_size("2G", &v), 0);
    ck_assert_uint_eq(v, 2ULL << 30);
    ck_assert_int_eq(vmm_parse_size("2GiB", &v), 0);
    ck_assert_uint_eq(v, 2ULL << 30);
    ck_assert_int_eq(vmm_parse_size("4096k", &v), 0);
    ck_assert_uint_eq(v, 4ULL << 20);
    ck_assert_int_eq(vmm_parse_size("1048576", &v), 0);
    ck_assert_uint_eq(v, 1ULL << 20);
    ck_assert_int_eq(vmm_parse_size("", &v), -EINVAL);
    ck_assert_int_eq(vmm_parse_size("-1M", &v), -EINVAL);
    ck_assert_int_eq(vmm_parse_size("12Q", &v), -EINVAL);
    ck_assert_int_eq(vmm_parse_size("99999999999999T", &v), -EINVAL);
    ck_assert_int_eq(vmm_parse_size("1MB", &v), 0);
}
END_TEST

START_TEST(memory_views_alias)
{
    struct guest_mem m;
    ck_assert_int_eq(gmem_create(&m, 64ULL << 20), 0);
    ck_assert_uint_eq(m.low_size, 64ULL << 20);
    ck_assert_uint_eq(m.high_size, 0);
    uint32_t x = 0xdeadbeef, y = 0;
    ck_assert_int_eq(gmem_write(&m, 0x123000, &x, 4), 0);
    memcpy(&y, m.guest_view + 0x123000, 4);
    ck_assert_uint_eq(y, 0xdeadbeef); /* both views show the same page */
    ck_assert_ptr_null(gmem_agent_ptr(&m, (64ULL << 20) - 2, 4));
    ck_assert_int_eq(gmem_read(&m, 64ULL << 20, &y, 4), -EFAULT);
    ck_assert_int_eq(gmem_offset(&m, GMEM_HIGH_BASE), -1);
    gmem_destroy(&m);
    ck_assert_int_eq(gmem_create(&m, 3ULL << 20), -EINVAL);
}
END_TEST

START_TEST(memory_high_region)
{
    struct guest_mem m;
    ck_assert_int_eq(gmem_create(&m, 4ULL << 30), 0); /* sparse: nothing touched */
    ck_assert_uint_eq(m.low_size, GMEM_LOW_LIMIT);
    ck_assert_uint_eq(m.high_size, (4ULL << 30) - GMEM_LOW_LIMIT);
    ck_assert_int_eq(gmem_offset(&m, GMEM_HIGH_BASE + 5), (int64_t)GMEM_LOW_LIMIT + 5);
    ck_assert_int_eq(gmem_offset(&m, GMEM_LOW_LIMIT), -1); /* the hole */
    ck_assert_ptr_null(gmem_agent_ptr(&m, GMEM_LOW_LIMIT - 4, 8)); /* straddles */
    uint64_t v = 42, w = 0;
    ck_assert_int_eq(gmem_write(&m, GMEM_HIGH_BASE + 4096, &v, 8), 0);
    memcpy(&w, m.agent_view + GMEM_LOW_LIMIT + 4096, 8);
    ck_assert_uint_eq(w, 42);
    gmem_destroy(&m);
}
END_TEST

static int decode(const char *hex, enum fixup_op *op, struct fixup_mem *m)
{
    uint8_t b[15];
    size_t n = 0;
    for (const char *p = hex; *p && n < 15; p += 2)
        b[n++] = (uint8_t)strtoul((char[]){p[0], p[1], 0}, NULL, 16);
    return emulate_decode(b, n, op, m);
}

START_TEST(decoder)
{
    enum fixup_op op;
    struct fixup_mem m;
    ck_assert_int_eq(decode("cc", &op, &m), 1);
    ck_assert_int_eq(op, FIX_INT3);
    ck_assert_int_eq(decode("9b", &op, &m), 1);
    ck_assert_int_eq(op, FIX_FWAIT);
    ck_assert_int_eq(decode("0f01ca", &op, &m), 3);
    ck_assert_int_eq(op, FIX_CLAC);
    ck_assert_int_eq(decode("0f01cb", &op, &m), 3);
    ck_assert_int_eq(op, FIX_STAC);
    /* ldmxcsr (%rax) */
    ck_assert_int_eq(decode("0fae10", &op, &m), 3);
    ck_assert_int_eq(op, FIX_LDMXCSR);
    ck_assert_int_eq(m.base, 0);
    ck_assert_int_eq(m.index, -1);
    /* ldmxcsr 0x10(%rsp): SIB, disp8 */
    ck_assert_int_eq(decode("0fae542410", &op, &m), 5);
    ck_assert_int_eq(m.base, 4);
    ck_assert_int_eq(m.disp, 0x10);
    /* stmxcsr -0x4(%r13) with REX.B */
    ck_assert_int_eq(decode("410fae5dfc", &op, &m), 5);
    ck_assert_int_eq(op, FIX_STMXCSR);
    ck_assert_int_eq(m.base, 13);
    ck_assert_int_eq(m.disp, -4);
    /* ldmxcsr 0x1000(%rip) */
    ck_assert_int_eq(decode("0fae1500100000", &op, &m), 7);
    ck_assert_int_eq(m.base, 16);
    ck_assert_int_eq(m.disp, 0x1000);
    /* gs: ldmxcsr (%rbx,%rcx,8) */
    ck_assert_int_eq(decode("650fae14cb", &op, &m), 5);
    ck_assert_int_eq(m.seg, 5);
    ck_assert_int_eq(m.base, 3);
    ck_assert_int_eq(m.index, 1);
    ck_assert_int_eq(m.scale, 8);
    /* not ours, or truncated */
    ck_assert_int_eq(decode("0fae38", &op, &m), -1);  /* clflush */
    ck_assert_int_eq(decode("0faed0", &op, &m), -1);  /* register form */
    ck_assert_int_eq(decode("0fae14", &op, &m), -1);  /* SIB missing */
    ck_assert_int_eq(decode("0fae15", &op, &m), -1);  /* disp32 missing */
    ck_assert_int_eq(decode("90", &op, &m), -1);
    ck_assert_int_eq(decode("0f", &op, &m), -1);
}
END_TEST

/* Each vCPU must be a package of its own whatever the host's CPUID says:
 * a host with 16 threads in 8 cores per package, and vCPU APIC id 5. */
static struct kvm_cpuid_entry2 leaf(uint32_t fn, uint32_t idx, uint32_t a, uint32_t b,
                                    uint32_t c, uint32_t d)
{
    struct kvm_cpuid_entry2 e = {.function = fn, .index = idx, .eax = a, .ebx = b, .ecx = c, .edx = d};
    kvm_cpuid_fix(&e, 5);
    return e;
}

START_TEST(cpuid_one_package_per_vcpu)
{
    struct kvm_cpuid_entry2 e = leaf(1, 0, 0x000a0f10, 0x00100800, 0x7ffafbff, 0x178bfbff);
    ck_assert_uint_eq(e.ebx >> 24, 5);             /* initial APIC id */
    ck_assert_uint_eq((e.ebx >> 16) & 0xff, 1);    /* logical processors per package */
    ck_assert_uint_eq(e.ebx & 0xffff, 0x0800);     /* CLFLUSH size, brand: untouched */
    ck_assert_uint_eq(e.edx & (1u << 28), 0);      /* no HTT */
    ck_assert_uint_ne(e.ecx & (1u << 31), 0);      /* hypervisor */
    ck_assert_uint_ne(e.ecx & (1u << 21), 0);      /* x2APIC */

    e = leaf(0xb, 0, 1, 2, 0x100, 0);              /* SMT: shift 1, 2 threads */
    ck_assert_uint_eq(e.eax, 0);
    ck_assert_uint_eq(e.ebx, 1);
    ck_assert_uint_eq(e.ecx, 0x100);
    ck_assert_uint_eq(e.edx, 5);
    e = leaf(0xb, 1, 4, 16, 0x201, 0);             /* core: shift 4, 16 threads */
    ck_assert_uint_eq(e.eax, 0);
    ck_assert_uint_eq(e.ebx, 1);
    ck_assert_uint_eq(e.ecx, 0x201);
    ck_assert_uint_eq(e.edx, 5);
    e = leaf(0x1f, 2, 6, 32, 0x502, 0);            /* a die level: gone */
    ck_assert_uint_eq(e.ebx, 0);
    ck_assert_uint_eq((e.ecx >> 8) & 0xff, 0);

    e = leaf(4, 1, 0x1c004121, 0x01c0003f, 0x3f, 0); /* 8 cores, 2 sharing L1d */
    ck_assert_uint_eq(e.eax, 0x121);
    ck_assert_uint_eq(e.ebx, 0x01c0003f);          /* cache geometry untouched */

    e = leaf(0x80000008, 0, 0x3030, 0, 0x400f, 0); /* AMD: 16 cores, 4 APIC-id bits */
    ck_assert_uint_eq(e.ecx & 0xf0ff, 0);
    e = leaf(0x80000001, 0, 0, 0, 0x3, 0);         /* CmpLegacy */
    ck_assert_uint_eq(e.ecx, 0x1);
    e = leaf(0x8000001e, 0, 9, 0x0103, 0x0101, 0);
    ck_assert_uint_eq(e.eax, 5);
    ck_assert_uint_eq(e.ebx, 0);
    ck_assert_uint_eq(e.ecx, 0);
    e = leaf(0x40000001, 0, 0xffffffff, 0, 0, 1);  /* KVM features: kvm-clock only */
    ck_assert_uint_eq(e.eax, (1u << 0) | (1u << 3) | (1u << 24));
    ck_assert_uint_eq(e.edx, 0);
}
END_TEST

#include "tests/unit/unit.h"

int main(void)
{
    Suite *s = suite_create("vmm_core");
    TCase *t = tcase_create("core");
    tcase_add_test(t, flags_all);
    tcase_add_test(t, flags_defaults);
    tcase_add_test(t, flags_errors);
    tcase_add_test(t, flags_devices);
    tcase_add_test(t, sizes);
    tcase_add_test(t, memory_views_alias);
    tcase_add_test(t, memory_high_region);
    tcase_add_test(t, decoder);
    tcase_add_test(t, cpuid_one_package_per_vcpu);
    suite_add_tcase(s, t);
    return run_suite(s);
}
