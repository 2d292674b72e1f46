/* `amalgam bench dsm`: what a remote page fault costs a guest, against the
 * floor measured in the same run.
 *
 * Guest side: a 2-node machine runs the test guest's bench-dsm, where a
 * vCPU on node 1 times (rdtsc) first reads and first writes of pages homed
 * on node 0, and first reads of pages homed on its own node. A remote
 * fault can cost no less than: the guest's first touch of a page that is
 * there (its own home pages are mapped from the start, so this is KVM's
 * share alone), a bare userfaultfd round trip between two host threads,
 * and the fabric's request and 4 KiB response (two one-way latencies from
 * `bench fabric`). Their sum is the floor. One JSON line; ratio = guest
 * remote read p50 / floor. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "clock/clock.h"
#include "tools/tools.h"
#include "vmm/vmm.h"

#define FLOOR_PAGES 2000

int dsm_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Guest TSC runs at the host's rate under KVM: measure it here. */
static double tsc_ghz(void)
{
    uint64_t t0 = clock_now_ns(), c0 = __rdtsc();
    usleep(200000);
    return (double)(__rdtsc() - c0) / (double)(clock_now_ns() - t0);
}

struct floor_ctx {
    int uffd;
    volatile int stop;
};

static void *resolver(void *arg)
{
    struct floor_ctx *f = arg;
    struct uffd_msg m;
    while (!f->stop) {
        struct pollfd p = {.fd = f->uffd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        if (read(f->uffd, &m, sizeof m) != sizeof m || m.event != UFFD_EVENT_PAGEFAULT)
            continue;
        struct uffdio_continue c = {.range = {m.arg.pagefault.address & ~4095ULL, 4096}};
        ioctl(f->uffd, UFFDIO_CONTINUE, &c);
    }
    return NULL;
}

/* p50 of a host thread's MINOR fault resolved by another thread. */
static int uffd_floor_ns(uint64_t *p50)
{
    size_t len = FLOOR_PAGES * 4096ULL;
    int fd = memfd_create("amalgam-bench-floor", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)len) < 0)
        return -errno;
    uint8_t *agent = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    uint8_t *guest = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (agent == MAP_FAILED || guest == MAP_FAILED)
        return -errno;
    memset(agent, 1, len); /* in the page cache: faults on guest are MINOR */
    struct floor_ctx f = {.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)};
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_MINOR_SHMEM};
    struct uffdio_register reg = {.range = {(uint64_t)(uintptr_t)guest, len},
                                  .mode = UFFDIO_REGISTER_MODE_MINOR};
    if (f.uffd < 0 || ioctl(f.uffd, UFFDIO_API, &api) < 0 || ioctl(f.uffd, UFFDIO_REGISTER, &reg) < 0)
        return -errno;
    pthread_t t;
    pthread_create(&t, NULL, resolver, &f);
    static uint64_t lat[FLOOR_PAGES];
    for (int i = 0; i < FLOOR_PAGES; i++) {
        uint64_t t0 = clock_now_ns();
        (void)*(volatile uint8_t *)(guest + (size_t)i * 4096);
        lat[i] = clock_now_ns() - t0;
    }
    f.stop = 1;
    pthread_join(t, NULL);
    qsort(lat, FLOOR_PAGES, sizeof lat[0], dsm_cmp_u64);
    *p50 = lat[FLOOR_PAGES / 2];
    close(f.uffd);
    munmap(agent, len);
    munmap(guest, len);
    close(fd);
    return 0;
}

int dsm_bench_self(char *path, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", path, len - 1);
    if (n <= 0)
        return -EIO;
    path[n] = 0;
    return 0;
}

static char self_path[4096];

int dsm_bench_run(const char *self, const char *args, const char *key, char *line, size_t len)
{
    char cmd[8800];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>/dev/null", self, args);
    FILE *p = popen(cmd, "r");
    int found = 0;
    if (!p)
        return -errno;
    while (fgets(line, (int)len, p))
        if (strstr(line, key)) {
            found = 1;
            break;
        }
    while (fgetc(p) != EOF)
        ;
    int st = pclose(p);
    return found && st == 0 ? 0 : -EIO;
}

static int run_scan(const char *args, const char *key, char *line, size_t len)
{
    return dsm_bench_run(self_path, args, key, line, len);
}

static uint64_t field(const char *line, const char *key)
{
    const char *p = strstr(line, key);
    return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

/* The fabric's p50 one-way times for a 32-byte request and a 4 KiB
 * response, in ns. */
static int fabric_floor(const char *fabric, double *req, double *resp)
{
    char err[256];
    int r = ic_bench_p50_ns(fabric, 32, req, err, sizeof err);
    r = r ?: ic_bench_p50_ns(fabric, 4096, resp, err, sizeof err);
    if (r < 0)
        fprintf(stderr, "amalgam bench dsm: %s\n", err);
    return r;
}

/* --host: the same measurement with a host thread of node 1 in place of a
 * vCPU (dsm-check --bench). Floor: that thread's first touch of a page of
 * its own node (mapped from the start: on a host that is itself a VM this
 * is the hypervisor's page-table fill, ~5 us here) plus a bare userfaultfd
 * round trip between two threads plus the fabric. Needs no KVM; isolates
 * the DSM's own share. Pages move two ways, both timed in the same run
 * against the same floor: two-sided (the home sends the page) and
 * one-sided (the home answers with where it is, and the requester reads
 * it from the home's memory with an RMA read). */
struct host_run {
    double r50, r99, w50, w99, local;
};

static int host_run(const char *fabric, int pages, bool pull, struct host_run *o)
{
    char line[512], args[256];
    snprintf(args, sizeof args, "dsm-check --local 2 --pin --threads 1 --fabric %s --bench %d "
             "--dsm-pull %s", fabric, pages, pull ? "on" : "off");
    if (run_scan(args, "dsm-bench:", line, sizeof line) < 0) {
        fprintf(stderr, "amalgam bench dsm: the host-thread benchmark (%s) did not run\n",
                pull ? "one-sided" : "two-sided");
        return -EIO;
    }
    *o = (struct host_run){(double)field(line, "read_p50 "), (double)field(line, "read_p99 "),
                           (double)field(line, "write_p50 "), (double)field(line, "write_p99 "),
                           (double)field(line, "local_p50 ")};
    return 0;
}

static int bench_host(const char *fabric, int pages)
{
    double req, resp;
    uint64_t uffd50 = 0;
    struct host_run two, one;
    if (host_run(fabric, pages, false, &two) < 0)
        return 1;
    int pull = host_run(fabric, pages, true, &one);
    if (fabric_floor(fabric, &req, &resp) < 0 || uffd_floor_ns(&uffd50) < 0) {
        fprintf(stderr, "amalgam bench dsm: the floor measurements failed\n");
        return 1;
    }
    double floor = two.local + (double)uffd50 + req + resp;
    char onesided[256] = "null";
    if (pull == 0)
        snprintf(onesided, sizeof onesided,
                 "{\"read_p50\":%.1f,\"read_p99\":%.1f,\"write_p50\":%.1f,\"write_p99\":%.1f,"
                 "\"read_ratio\":%.2f}", one.r50 / 1e3, one.r99 / 1e3, one.w50 / 1e3,
                 one.w99 / 1e3, one.r50 / floor);
    /* The top-level figures are the two-sided path's: the default. */
    printf("{\"bench\":\"dsm\",\"mode\":\"host-thread\",\"nodes\":2,\"fabric\":\"%s\","
           "\"pages\":%d,\"remote_read_fault_us\":{\"p50\":%.1f,\"p99\":%.1f},"
           "\"remote_write_fault_us\":{\"p50\":%.1f,\"p99\":%.1f},"
           "\"floor_us\":{\"home_first_touch\":%.1f,\"uffd_round_trip\":%.1f,"
           "\"request\":%.1f,\"response_4k\":%.1f,\"total\":%.1f},"
           "\"read_ratio\":%.2f,\"read_p99_over_p50\":%.1f,\"one_sided_us\":%s,"
           "\"one_sided_over_two_sided\":%.2f,\"goal\":{\"ratio\":1.3,\"p99_over_p50\":5}}\n",
           fabric, pages, two.r50 / 1e3, two.r99 / 1e3, two.w50 / 1e3, two.w99 / 1e3,
           two.local / 1e3, (double)uffd50 / 1e3, req / 1e3, resp / 1e3, floor / 1e3,
           two.r50 / floor, two.r50 > 0 ? two.r99 / two.r50 : 0, onesided,
           pull == 0 && two.r50 > 0 ? one.r50 / two.r50 : 0);
    return 0;
}

int bench_dsm_main(int argc, char **argv)
{
    const char *fabric = "shm";
    int pages = 1000;
    bool host = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--host"))
            host = true;
        else if (!strcmp(argv[i], "--fabric") && i + 1 < argc)
            fabric = argv[++i];
        else if (!strcmp(argv[i], "--pages") && i + 1 < argc)
            pages = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--nodes") && i + 1 < argc && !strcmp(argv[i + 1], "2"))
            i++;
        else {
            fprintf(stderr, "usage: amalgam bench dsm [--nodes 2] [--fabric shm|tcp] [--pages N] "
                    "[--host [--fabric verbs]]\n");
            return 2;
        }
    }
    bool verbs = !strcmp(fabric, "verbs");
    if ((strcmp(fabric, "shm") && strcmp(fabric, "tcp") && !(verbs && host)) || pages < 10 ||
        pages > 4096) {
        fprintf(stderr, "amalgam bench dsm: --fabric shm|tcp (verbs with --host: set "
                "AMALGAM_LOCAL_HOST to the RDMA interface's address), --pages 10..4096\n");
        return 2;
    }
    char line[512], args[4400];
    /* The guest sits beside the binary: build/amalgam -> build/guest/. */
    char exe[4096];
    if (dsm_bench_self(exe, sizeof exe) < 0)
        return 1;
    memcpy(self_path, exe, sizeof exe);
    if (host)
        return bench_host(fabric, pages);
    double ghz = tsc_ghz();
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = 0;
    /* slow=20: CPU 0 waits at a barrier while CPU 1 takes 2 x pages
     * remote faults, which in the nested L1 take ~20 ms each: the guest's
     * 60 s barrier time-out ran out there. */
    snprintf(args, sizeof args, "run --nodes 2 --pin --vcpus 2 --mem 256M --fabric %s --kernel "
             "%s/guest/testguest.elf --append 'test=bench-dsm pages=%d slow=20'", fabric, exe, pages);
    if (run_scan(args, "bench-dsm:", line, sizeof line) < 0) {
        fprintf(stderr, "amalgam bench dsm: the guest benchmark did not run\n");
        return 1;
    }
    uint64_t rd50 = field(line, "read_p50 "), rd99 = field(line, "read_p99 ");
    uint64_t wr50 = field(line, "write_p50 "), wr99 = field(line, "write_p99 ");
    double req, resp;
    uint64_t uffd50 = 0;
    if (fabric_floor(fabric, &req, &resp) < 0 || uffd_floor_ns(&uffd50) < 0) {
        fprintf(stderr, "amalgam bench dsm: the floor measurements failed\n");
        return 1;
    }
    double local = (double)field(line, "local_p50 ") / ghz;
    double floor = local + (double)uffd50 + req + resp;
    double r50 = (double)rd50 / ghz, w50 = (double)wr50 / ghz;
    printf("{\"bench\":\"dsm\",\"nodes\":2,\"fabric\":\"%s\",\"pages\":%d,"
           "\"remote_read_fault_us\":{\"p50\":%.1f,\"p99\":%.1f},"
           "\"remote_write_fault_us\":{\"p50\":%.1f,\"p99\":%.1f},"
           "\"floor_us\":{\"guest_home_first_touch\":%.1f,\"uffd_round_trip\":%.1f,"
           "\"request\":%.1f,\"response_4k\":%.1f,\"total\":%.1f},"
           "\"read_ratio\":%.2f,\"read_p99_over_p50\":%.1f,\"goal\":{\"ratio\":1.3,"
           "\"p99_over_p50\":5}}\n",
           fabric, pages, r50 / 1e3, (double)rd99 / ghz / 1e3, w50 / 1e3,
           (double)wr99 / ghz / 1e3, local / 1e3, (double)uffd50 / 1e3, req / 1e3, resp / 1e3,
           floor / 1e3, r50 / floor, rd50 ? (double)rd99 / (double)rd50 : 0);
    return 0;
}
