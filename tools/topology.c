/* `amalgam topology`: builds the machine description exactly as `amalgam
 * run` does (same flag parsers, same numa_desc_build) and shows what the
 * guest will see: a `numactl --hardware`-style view or one JSON line, and
 * optionally every ACPI table as a file for `iasl -d`. Needs no KVM. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/flags.h"
#include "tools/tools.h"
#include "numa/numa.h"
#include "platform/platform.h"
#include "vmm/boot.h"

static const char usage[] =
    "usage: amalgam topology [--nodes K] [--vcpus N] [--mem SIZE] [--placement P]\n"
    "                        [--distance D] [--virtio N] [--acpi-dir DIR] [--json]\n"
    "\n"
    "Shows the NUMA machine `amalgam run` would give a guest with the same flags,\n"
    "as `numactl --hardware` inside the guest would show it. Needs no KVM.\n"
    "\n"
    "  --nodes K         NUMA nodes (node processes), 1-64 (default 1)\n"
    "  --vcpus N         vCPUs, 1-255 (default 1)\n"
    "  --mem SIZE        guest memory, e.g. 256M or 4G (default 256M, min 32M,\n"
    "                    multiple of 2M, at least 2M per node)\n"
    "  --placement P     vCPUs to nodes: round-robin (default), block, or a list\n"
    "                    such as 0,0,1,1\n"
    "  --distance D      SLIT distance: one number for every pair of nodes, a\n"
    "                    matrix such as 10,20;20,10 (default 20), or 'measured':\n"
    "                    10 x (fabric round trip between two local ranks) /\n"
    "                    (local memory load latency), clamped to 11-254\n"
    "  --local-latency-ns X   with --distance measured: use X as the local memory\n"
    "                    latency instead of measuring it\n"
    "  --remote-latency-ns Y  with --distance measured: use Y as the remote access\n"
    "                    latency instead of measuring the fabric round trip\n"
    "  --virtio N        announce N virtio-mmio slots (0-8, default 0) in the\n"
    "                    DSDT, as `amalgam run` does for its virtio devices\n"
    "  --acpi-dir DIR    also write each ACPI table the guest gets to DIR/SIG.dat\n"
    "                    (RSDP.dat, XSDT.dat, FACP.dat, DSDT.dat, FACS.dat,\n"
    "                    APIC.dat, SRAT.dat, SLIT.dat); `iasl -d DIR/SRAT.dat`\n"
    "                    disassembles one. DIR must exist.\n"
    "  --json            one JSON line instead of the text view\n"
    "  --help, -h        this text\n"
    "\n"
    "Exit status: 0, 2 on bad flags, 1 if measuring or writing the tables fails.\n";

struct topo_args {
    int nodes, vcpus, virtio;
    uint64_t mem;
    const char *placement, *distance, *acpi_dir;
    double local_ns, remote_ns; /* 0: measure */
    bool json, help;
};

static int f_nodes(void *a, const char *v, char *err, size_t n)
{
    return flag_parse_nodes(v, &((struct topo_args *)a)->nodes, err, n);
}

static int f_vcpus(void *a, const char *v, char *err, size_t n)
{
    return flag_parse_vcpus(v, &((struct topo_args *)a)->vcpus, err, n);
}

static int f_mem(void *a, const char *v, char *err, size_t n)
{
    return flag_parse_mem(v, &((struct topo_args *)a)->mem, err, n);
}

static int f_placement(void *a, const char *v, char *err, size_t n)
{
    (void)err, (void)n;
    ((struct topo_args *)a)->placement = v;
    return 0;
}

static int f_distance(void *a, const char *v, char *err, size_t n)
{
    (void)err, (void)n;
    ((struct topo_args *)a)->distance = v;
    return 0;
}

static int f_virtio(void *a, const char *v, char *err, size_t n)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < 0 || x > PLATFORM_VIRTIO_MAX) {
        snprintf(err, n, "--virtio must be between 0 and %d", PLATFORM_VIRTIO_MAX);
        return -EINVAL;
    }
    ((struct topo_args *)a)->virtio = (int)x;
    return 0;
}

static int f_acpi_dir(void *a, const char *v, char *err, size_t n)
{
    if (!*v) {
        snprintf(err, n, "--acpi-dir needs a directory");
        return -EINVAL;
    }
    ((struct topo_args *)a)->acpi_dir = v;
    return 0;
}

static int parse_ns(const char *flag, const char *v, double *out, char *err, size_t n)
{
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !isfinite(x) || x <= 0 || x > 1e12) {
        snprintf(err, n, "%s '%s': expected a positive number of nanoseconds", flag, v);
        return -EINVAL;
    }
    *out = x;
    return 0;
}

static int f_local(void *a, const char *v, char *err, size_t n)
{
    return parse_ns("--local-latency-ns", v, &((struct topo_args *)a)->local_ns, err, n);
}

static int f_remote(void *a, const char *v, char *err, size_t n)
{
    return parse_ns("--remote-latency-ns", v, &((struct topo_args *)a)->remote_ns, err, n);
}

static int f_json(void *a, const char *v, char *err, size_t n)
{
    (void)v, (void)err, (void)n;
    ((struct topo_args *)a)->json = true;
    return 0;
}

static int f_help(void *a, const char *v, char *err, size_t n)
{
    (void)v, (void)err, (void)n;
    ((struct topo_args *)a)->help = true;
    return 0;
}

static const struct flag flags[] = {
    {"--nodes", true, f_nodes},         {"--vcpus", true, f_vcpus},
    {"--mem", true, f_mem},             {"--placement", true, f_placement},
    {"--distance", true, f_distance},   {"--acpi-dir", true, f_acpi_dir},
    {"--virtio", true, f_virtio},
    {"--local-latency-ns", true, f_local}, {"--remote-latency-ns", true, f_remote},
    {"--json", false, f_json},          {"--help", false, f_help},
    {"-h", false, f_help},
};

static int parse_args(int argc, char **argv, struct topo_args *a, char *err, size_t errlen)
{
    *a = (struct topo_args){.nodes = 1, .vcpus = 1, .mem = 256ULL << 20};
    int r = flags_parse(flags, sizeof flags / sizeof flags[0], argc, argv, a, "topology", err,
                        errlen);
    bool measured = a->distance && !strcmp(a->distance, "measured");
    if (!r && (a->local_ns || a->remote_ns) && !measured) {
        snprintf(err, errlen, "--local-latency-ns and --remote-latency-ns need "
                 "--distance measured");
        return -EINVAL;
    }
    return r;
}

/* ---- --distance measured --------------------------------------------------- */

int numa_measured_distance(double *local_ns, double *remote_ns, char *err, size_t errlen)
{
    int r = 0;
    if (!*local_ns && (r = numa_measure_local_ns(local_ns)) < 0)
        snprintf(err, errlen, "cannot measure the local memory latency: %s", strerror(-r));
    if (!r && !*remote_ns)
        r = ic_measure_local_rtt_ns(remote_ns, err, errlen);
    return r < 0 ? r : numa_distance_from_latency(*local_ns, *remote_ns);
}

/* Replaces "measured" by the distance the latencies give, as a number in
 * buf. */
static int resolve_measured(struct topo_args *a, char *buf, size_t len, char *err,
                            size_t errlen)
{
    int d = numa_measured_distance(&a->local_ns, &a->remote_ns, err, errlen);
    if (d < 0)
        return d;
    snprintf(buf, len, "%d", d);
    a->distance = buf;
    return 0;
}

/* ---- the view --------------------------------------------------------------- */

static uint64_t node_bytes(const struct machine_desc *d, int k)
{
    uint64_t s = 0;
    for (int r = 0; r < d->node_nr_ranges[k]; r++)
        s += d->node_ranges[k][r].size;
    return s;
}

static void print_text(const struct machine_desc *d)
{
    int n = d->nr_nodes;
    if (n == 1)
        printf("available: 1 nodes (0)\n");
    else
        printf("available: %d nodes (0-%d)\n", n, n - 1);
    for (int k = 0; k < n; k++) {
        printf("node %d cpus:", k);
        for (int i = 0; i < d->nr_vcpus; i++)
            if (d->vcpu_node[i] == k)
                printf(" %d", i);
        printf("\nnode %d size: %llu MB\n", k, (unsigned long long)(node_bytes(d, k) >> 20));
        printf("node %d memory:", k);
        for (int r = 0; r < d->node_nr_ranges[k]; r++)
            printf(" 0x%llx-0x%llx", (unsigned long long)d->node_ranges[k][r].start,
                   (unsigned long long)(d->node_ranges[k][r].start +
                                        d->node_ranges[k][r].size - 1));
        printf("\n");
    }
    printf("node distances:\nnode ");
    for (int j = 0; j < n; j++)
        printf("%4d", j);
    printf("\n");
    for (int i = 0; i < n; i++) {
        printf("%4d:", i);
        for (int j = 0; j < n; j++)
            printf("%4d", d->distance[i][j]);
        printf("\n");
    }
}

static void print_json_node(const struct machine_desc *d, int k)
{
    printf("{\"node\":%d,\"cpus\":[", k);
    for (int i = 0, first = 1; i < d->nr_vcpus; i++)
        if (d->vcpu_node[i] == k) {
            printf("%s%d", first ? "" : ",", i);
            first = 0;
        }
    printf("],\"size_mb\":%llu,\"ranges\":[", (unsigned long long)(node_bytes(d, k) >> 20));
    for (int r = 0; r < d->node_nr_ranges[k]; r++)
        printf("%s{\"start\":%llu,\"size\":%llu}", r ? "," : "",
               (unsigned long long)d->node_ranges[k][r].start,
               (unsigned long long)d->node_ranges[k][r].size);
    printf("],\"distances\":[");
    for (int j = 0; j < d->nr_nodes; j++)
        printf("%s%d", j ? "," : "", d->distance[k][j]);
    printf("]}");
}

static void print_json(const struct machine_desc *d, const struct topo_args *a)
{
    printf("{\"nodes\":%d,\"vcpus\":%d,\"mem_bytes\":%llu,", d->nr_nodes, d->nr_vcpus,
           (unsigned long long)d->mem_size);
    if (a->local_ns)
        printf("\"local_latency_ns\":%.1f,\"remote_latency_ns\":%.1f,", a->local_ns,
               a->remote_ns);
    printf("\"node\":[");
    for (int k = 0; k < d->nr_nodes; k++) {
        printf(k ? "," : "");
        print_json_node(d, k);
    }
    printf("]}\n");
}

/* ---- the tables as files ------------------------------------------------------ */

struct dump {
    const char *dir;
    char *err;
    size_t errlen;
    char bad_checksum[64]; /* signatures of the tables whose checksum is wrong */
};

static int write_file(const char *path, const uint8_t *p, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    ssize_t w = write(fd, p, len);
    int r = w == (ssize_t)len ? 0 : w < 0 ? -errno : -EIO;
    if (close(fd) < 0 && !r)
        r = -errno;
    return r;
}

static int dump_table(void *ctx, const char sig[4], const uint8_t *t, size_t len)
{
    struct dump *dp = ctx;
    char path[4096];
    snprintf(path, sizeof path, "%s/%.4s.dat", dp->dir, sig);
    int r = write_file(path, t, len);
    if (r < 0) {
        snprintf(dp->err, dp->errlen, "cannot write %s: %s", path, strerror(-r));
        return r;
    }
    if (!acpi_checksum_ok(sig, t, len)) {
        size_t at = strlen(dp->bad_checksum);
        snprintf(dp->bad_checksum + at, sizeof dp->bad_checksum - at, " %.4s", sig);
    }
    return 0;
}

static int dump_tables(const struct machine_desc *d, const char *dir, char *err, size_t errlen)
{
    uint8_t *buf = calloc(1, BOOT_ACPI_SIZE);
    uint64_t rsdp;
    struct dump dp = {.dir = dir, .err = err, .errlen = errlen};
    if (!buf)
        return -ENOMEM;
    int r = acpi_build(d, buf, BOOT_ACPI_SIZE, BOOT_ACPI_GPA, &rsdp);
    if (r < 0)
        snprintf(err, errlen, "the ACPI tables for %d vCPUs do not fit in %llu KiB",
                 d->nr_vcpus, (unsigned long long)(BOOT_ACPI_SIZE >> 10));
    else if ((r = acpi_walk(buf, BOOT_ACPI_SIZE, BOOT_ACPI_GPA, rsdp, dump_table, &dp)) ==
             -EINVAL)
        snprintf(err, errlen, "the ACPI tables built are malformed (a pointer or length "
                 "leaves the table area)");
    if (!r && dp.bad_checksum[0]) {
        snprintf(err, errlen, "tables written, but these have a wrong checksum:%s",
                 dp.bad_checksum);
        r = -EBADMSG;
    }
    free(buf);
    return r;
}

int topology_main(int argc, char **argv)
{
    struct topo_args a;
    struct machine_desc d;
    char err[512] = "", dist[16];
    if (parse_args(argc, argv, &a, err, sizeof err) < 0) {
        fprintf(stderr, "amalgam topology: %s\n", err);
        return 2;
    }
    if (a.help) {
        fputs(usage, stdout);
        return 0;
    }
    if (a.distance && !strcmp(a.distance, "measured") &&
        resolve_measured(&a, dist, sizeof dist, err, sizeof err) < 0) {
        fprintf(stderr, "amalgam topology: --distance measured: %s\n", err);
        return 1;
    }
    if (numa_desc_build(&d, a.nodes, a.vcpus, a.mem, a.placement, a.distance, err,
                        sizeof err) < 0) {
        fprintf(stderr, "amalgam topology: %s\n", err);
        return 2;
    }
    d.nr_virtio = a.virtio;
    if (a.json)
        print_json(&d, &a);
    else
        print_text(&d);
    fflush(stdout);
    if (a.acpi_dir && dump_tables(&d, a.acpi_dir, err, sizeof err) < 0) {
        fprintf(stderr, "amalgam topology: %s\n", err);
        return 1;
    }
    return 0;
}
