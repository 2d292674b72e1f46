/* `amalgam bench vmexit`: round trip of a guest port write to the VMM and
 * back. The test guest writes port VMM_PORT_BENCH in a tight loop; the VMM
 * timestamps each arrival, so one round trip = exit to user space + our
 * dispatch + re-entry + one guest loop iteration. The VMM's own dispatch
 * time is measured in the same run as the peer: their ratio says how much
 * of the round trip is amalgam rather than KVM. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/tools.h"
#include "vmm/vmm.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

/* build/amalgam -> build/guest/testguest.elf */
static void default_guest(char *buf, size_t len)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(buf, len, "build/guest/testguest.elf");
        return;
    }
    exe[n] = 0;
    snprintf(buf, len, "%s/guest/testguest.elf", dirname(exe));
}

static const char usage[] =
    "usage: amalgam bench vmexit [--iters N] [--kernel FILE]\n"
    "Times guest port-write round trips through the VMM; prints one JSON line.\n";

static int parse(int argc, char **argv, long *iters, char *kernel, size_t klen)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
            char *end;
            *iters = strtol(argv[++i], &end, 10);
            if (*end || *iters < 100 || *iters > 10000000)
                return -EINVAL;
        } else if (!strcmp(argv[i], "--kernel") && i + 1 < argc) {
            snprintf(kernel, klen, "%s", argv[++i]);
        } else {
            return -EINVAL;
        }
    }
    return 0;
}

int bench_vmexit_main(int argc, char **argv)
{
    long iters = 100000;
    char kernel[PATH_MAX], cmdline[64], err[512] = "";
    default_guest(kernel, sizeof kernel);
    if (argc >= 2 && !strcmp(argv[1], "--help")) {
        fputs(usage, stdout);
        return 0;
    }
    if (parse(argc, argv, &iters, kernel, sizeof kernel) < 0) {
        fprintf(stderr, "amalgam bench vmexit: bad flags (--iters 100..10000000)\n%s", usage);
        return 2;
    }
    snprintf(cmdline, sizeof cmdline, "test=bench-vmexit iters=%ld", iters);
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    struct vm_config cfg = {
        .nr_vcpus = 1, .mem_size = 64ULL << 20, .kernel = kernel, .cmdline = cmdline,
        .console_out = devnull, .console_in = -1,
    };
    struct vm_bench_samples s = {
        .round_trip_ns = calloc((size_t)iters, sizeof(uint64_t)),
        .dispatch_ns = calloc((size_t)iters, sizeof(uint64_t)),
        .cap = (size_t)iters,
    };
    struct vm *vm;
    int status = 1;
    if (!s.round_trip_ns || !s.dispatch_ns) {
        fprintf(stderr, "amalgam bench vmexit: out of memory\n");
        goto out;
    }
    int r = vm_create(&cfg, &vm, err, sizeof err);
    if (r < 0) {
        fprintf(stderr, "amalgam bench vmexit: %s\n", err);
        goto out;
    }
    vm_set_bench(vm, &s);
    status = vm_run(vm);
    bool emulated = vm_cpl0_emulated(vm);
    if (status != 0 || s.n < 10) {
        fprintf(stderr, "amalgam bench vmexit: the guest failed (status %d, %zu samples)%s%s\n",
                status, s.n, vm_exit_reason(vm) == VM_EXIT_ERROR ? ": " : "", vm_error(vm));
        vm_destroy(vm);
        status = 1;
        goto out;
    }
    vm_destroy(vm);
    qsort(s.round_trip_ns, s.n, sizeof(uint64_t), cmp_u64);
    qsort(s.dispatch_ns, s.n, sizeof(uint64_t), cmp_u64);
    uint64_t rt50 = pct(s.round_trip_ns, s.n, 0.5), d50 = pct(s.dispatch_ns, s.n, 0.5);
    printf("{\"bench\":\"vmexit\",\"samples\":%zu,\"round_trip_ns\":{\"p50\":%llu,\"p99\":%llu},"
           "\"vmm_dispatch_ns\":{\"p50\":%llu,\"p99\":%llu},\"vmm_share_p50\":%.3f,"
           "\"cpl0\":\"%s\"}\n",
           s.n, (unsigned long long)rt50, (unsigned long long)pct(s.round_trip_ns, s.n, 0.99),
           (unsigned long long)d50, (unsigned long long)pct(s.dispatch_ns, s.n, 0.99),
           rt50 ? (double)d50 / (double)rt50 : 0.0, emulated ? "emulated" : "native");
    status = 0;
out:
    free(s.round_trip_ns);
    free(s.dispatch_ns);
    if (devnull >= 0)
        close(devnull);
    return status;
}
