/* `amalgam run` flag parsing. Accepts "--flag value" and "--flag=value". */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsm/dsm.h"
#include "dsm/host.h"

#include "cli/flags.h"
#include "cli/run_args.h"

#define STR_(x) #x
#define STR(x) STR_(x)

const char run_usage[] =
    "usage: amalgam run --kernel FILE [flags]\n"
    "\n"
    "Boots a guest and attaches its console (COM1) to stdout/stdin.\n"
    "Exits with the guest's status (debug-exit port 0x501), 0 on guest\n"
    "power-off or reset, 128+N on signal N, 2 on bad flags or kernel, 1 on\n"
    "a VMM failure.\n"
    "\n"
    "  --kernel FILE     64-bit ELF kernel or bzImage (required)\n"
    "  --initrd FILE     initial ramdisk\n"
    "  --append STR      kernel command line\n"
    "  --vcpus N         number of vCPUs (1-255, default 1)\n"
    "  --mem SIZE        guest memory, e.g. 256M or 2G (default 256M, min 32M,\n"
    "                    multiple of 2M)\n"
    "  --nodes K         spread the machine over K node processes on this host\n"
    "                    (default 1); each is a NUMA node with an equal slice of\n"
    "                    memory, kept coherent by the DSM\n"
    "  --fabric P        interconnect between the nodes: shm (default here), tcp,\n"
    "                    verbs or auto\n"
    "  --placement P     vCPUs to nodes: round-robin (default), block, or a list\n"
    "                    such as 0,0,1,1\n"
    "  --distance D      NUMA distance between nodes for SLIT: one number, or a\n"
    "                    matrix such as 10,20;20,10 (default 20), or 'measured':\n"
    "                    10 x fabric round trip / local memory latency, measured\n"
    "                    here before the nodes start (see 'amalgam topology')\n"
    "  --pin             with --nodes K: give each node process its own share of\n"
    "                    this host's CPUs (steadier timings when the nodes share\n"
    "                    a small host)\n"
    "  --dsm-cache SIZE  at most this much of other nodes' memory is cached on\n"
    "                    each node (e.g. 64M; default: no limit); the oldest\n"
    "                    copies are dropped or written back home, so the guest's\n"
    "                    memory may exceed what one host holds\n"
    "  --dsm-push N      batching: with each read copy a node is sent, its home\n"
    "                    also sends up to N following pages it owns (0-64,\n"
    "                    default " STR(DSM_PUSH_DEFAULT) "; see docs/dsm.md)\n"
    "  --dsm-pull on|off pages move by one-sided RMA reads from their home's\n"
    "                    memory instead of in the home's reply (default off:\n"
    "                    slower on shm, tcp and Soft-RoCE; docs/interconnect.md)\n"
    "  --monitor PATH    listen for QMP clients on the unix socket PATH (mode\n"
    "                    0600; node 0's): see 'amalgam ctl' and docs/monitor.md\n"
    "  --migrate every=MS[,vcpus=LIST]\n"
    "                    with --nodes K: every MS ms, move a random vCPU (of\n"
    "                    LIST, e.g. 0,2-3) to a random other node, live; a\n"
    "                    progress line every 5 s, downtimes at exit\n"
    "  --migrate-plan FILE  with --nodes K: moves at set times, one a line:\n"
    "                    TIME_MS VCPU NODE (docs/migration.md)\n"
    "  --migrate-policy affinity[,window=MS,min=N,ratio=PCT,dwell=W]\n"
    "                    with --nodes K: every window (100 ms), move the vCPU\n"
    "                    with the most DSM faults on another node's pages to\n"
    "                    that node, if they are at least min (16) and ratio%\n"
    "                    (200) of what it would take there, as learned from\n"
    "                    earlier moves; a moved vCPU stays dwell (2) windows\n"
    "                    (docs/migration.md)\n"
    "  --migrate-prefetch N  a moved vCPU's last N (0-64) faulted pages are\n"
    "                    asked for by its new node as its state arrives\n"
    "  --trace FILE      one JSON line per vCPU move (docs/migration.md)\n"
    "  --drive file=PATH[,readonly=on][,cache=none|writeback]\n"
    "                    a raw disk image as a virtio-blk disk (the first is\n"
    "                    /dev/vda in Linux); cache=none bypasses this host's page\n"
    "                    cache (O_DIRECT); writeback (default) uses it; a guest's\n"
    "                    flush reaches the disk either way (docs/devices.md)\n"
    "  --netdev tap,ifname=NAME[,mac=52:54:00:12:34:56]\n"
    "                    the TAP interface NAME as a virtio-net card (eth0 in\n"
    "                    Linux); the MAC defaults to one derived from NAME\n"
    "  --rng             a virtio-rng entropy device fed by getrandom()\n"
    "  --vcpu-sched S    idle (default) or normal: idle runs the vCPU threads\n"
    "                    under SCHED_IDLE, so the node's DSM and device threads\n"
    "                    always run first; normal suits a host shared with other\n"
    "                    heavy work, which would otherwise starve the guest\n"
    "  --cpl0 MODE       auto|native|emulated: whether guest kernel code runs\n"
    "                    natively on this host; auto (default) measures it, and\n"
    "                    the emulated-CPL0 work-arounds are only used when emulated\n"
    "  --stats           at exit, each node prints its DSM statistics on stderr:\n"
    "                    faults, upgrades, invalidations, bytes moved and a\n"
    "                    histogram of fault service times\n"
    "  --verbose, -v     report host detection and unassigned guest I/O on stderr\n"
    "  --help, -h        this text\n";

/* The flags apply to a struct run_args (flags.h passes it as ctx). */
static int f_vcpus(void *a, const char *v, char *err, size_t n)
{
    return flag_parse_vcpus(v, &((struct run_args *)a)->vm.nr_vcpus, err, n);
}

static int f_mem(void *a, const char *v, char *err, size_t n)
{
    return flag_parse_mem(v, &((struct run_args *)a)->vm.mem_size, err, n);
}

static int f_dsm_cache(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    if (vmm_parse_size(v, &a->vm.dsm_cache) < 0 || a->vm.dsm_cache < 4096) {
        snprintf(err, n, "--dsm-cache '%s': expected a size of at least 4K, such as 64M", v);
        return -EINVAL;
    }
    return 0;
}

static int f_dsm_push(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    char *end;
    unsigned long p = strtoul(v, &end, 10);
    if (!*v || *end || p > DSM_PUSH_MAX) {
        snprintf(err, n, "--dsm-push '%s': expected a number of pages from 0 to %d", v,
                 DSM_PUSH_MAX);
        return -EINVAL;
    }
    a->vm.dsm_push = (unsigned)p;
    return 0;
}

static int f_dsm_pull(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    if (strcmp(v, "on") && strcmp(v, "off")) {
        snprintf(err, n, "--dsm-pull '%s': expected on or off", v);
        return -EINVAL;
    }
    a->vm.dsm_pull = !strcmp(v, "on");
    return 0;
}

static int f_vcpu_sched(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    if (!strcmp(v, "idle")) {
        a->vm.vcpu_sched = VCPU_SCHED_IDLE;
    } else if (!strcmp(v, "normal")) {
        a->vm.vcpu_sched = VCPU_SCHED_NORMAL;
    } else {
        snprintf(err, n, "--vcpu-sched '%s': expected idle or normal", v);
        return -EINVAL;
    }
    return 0;
}

static int f_monitor(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    if (!*v) {
        snprintf(err, n, "--monitor needs a socket path");
        return -EINVAL;
    }
    a->monitor = v;
    return 0;
}

/* LIST: numbers and ranges, "0,2-3". */
static int parse_vcpu_list(const char *s, uint64_t mask[4])
{
    memset(mask, 0, 4 * sizeof mask[0]);
    while (*s) {
        char *end;
        unsigned long a = strtoul(s, &end, 10), b = a;
        if (end == s)
            return -EINVAL;
        if (*end == '-') {
            s = end + 1;
            b = strtoul(s, &end, 10);
            if (end == s)
                return -EINVAL;
        }
        if (a > b || b >= VMM_MAX_VCPUS)
            return -EINVAL;
        for (unsigned long i = a; i <= b; i++)
            mask[i / 64] |= 1ULL << (i % 64);
        s = end;
        if (*s == ',')
            s++;
        else if (*s)
            return -EINVAL;
    }
    return 0;
}

static int f_migrate(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    char *end;
    if (strncmp(v, "every=", 6))
        goto bad;
    unsigned long ms = strtoul(v + 6, &end, 10);
    if (end == v + 6 || ms < 1 || ms > 3600000)
        goto bad;
    a->vm.migrate_every_ms = (unsigned)ms;
    if (!*end)
        return 0;
    if (strncmp(end, ",vcpus=", 7) || parse_vcpu_list(end + 7, a->vm.migrate_mask) < 0)
        goto bad;
    return 0;
bad:
    snprintf(err, n, "--migrate '%s': expected every=MS (1-3600000), optionally ,vcpus=LIST "
             "such as ,vcpus=0,2-3", v);
    return -EINVAL;
}

static int f_migrate_plan(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    FILE *f = fopen(v, "r");
    if (!f) {
        snprintf(err, n, "--migrate-plan %s: %s", v, strerror(errno));
        return -ENOENT;
    }
    static char text[4 << 20];
    size_t len = fread(text, 1, sizeof text - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    text[len] = 0;
    if (more) {
        snprintf(err, n, "--migrate-plan %s: larger than 4 MiB", v);
        return -EINVAL;
    }
    struct migration_step *steps;
    size_t count;
    char why[160];
    int r = migration_plan_parse(text, &steps, &count, why, sizeof why);
    if (r < 0) {
        snprintf(err, n, "--migrate-plan %s: %s", v, r == -ENOMEM ? "out of memory" : why);
        return r;
    }
    a->vm.migrate_plan = steps;
    a->vm.migrate_plan_n = count;
    return 0;
}

static int f_migrate_policy(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    char why[200];
    if (strncmp(v, "affinity", 8) || (v[8] && v[8] != ',')) {
        snprintf(err, n, "--migrate-policy '%s': the one policy is 'affinity', with "
                 "optional ,window=MS,min=FAULTS,ratio=PERCENT,dwell=WINDOWS", v);
        return -EINVAL;
    }
    if (affinity_parse(v[8] ? v + 9 : "", &a->vm.affinity, why, sizeof why) < 0) {
        snprintf(err, n, "--migrate-policy %s: %s", v, why);
        return -EINVAL;
    }
    a->vm.migrate_affinity = true;
    return 0;
}

static int f_migrate_prefetch(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    char *end;
    unsigned long p = strtoul(v, &end, 10);
    if (end == v || *end || p > DSM_HOST_RECENT) {
        snprintf(err, n, "--migrate-prefetch '%s': expected a page count, 0-%d", v,
                 DSM_HOST_RECENT);
        return -EINVAL;
    }
    a->vm.migrate_prefetch = (unsigned)p;
    return 0;
}

static int f_trace(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    (void)err, (void)n;
    a->vm.trace = v;
    return 0;
}

static int f_kernel(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    (void)err, (void)n;
    a->vm.kernel = v;
    return 0;
}

static int f_initrd(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    (void)err, (void)n;
    a->vm.initrd = v;
    return 0;
}

static int f_append(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    (void)err, (void)n;
    a->vm.cmdline = v;
    return 0;
}

static int f_cpl0(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    if (!strcmp(v, "auto"))
        a->vm.cpl0 = CPL0_AUTO;
    else if (!strcmp(v, "native"))
        a->vm.cpl0 = CPL0_NATIVE;
    else if (!strcmp(v, "emulated"))
        a->vm.cpl0 = CPL0_EMULATED;
    else {
        snprintf(err, n, "--cpl0 '%s': expected auto, native or emulated", v);
        return -EINVAL;
    }
    return 0;
}

static int f_nodes(void *a, const char *v, char *err, size_t n)
{
    return flag_parse_nodes(v, &((struct run_args *)a)->nodes, err, n);
}

static int f_fabric(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    if (strcmp(v, "shm") && strcmp(v, "tcp") && strcmp(v, "verbs") && strcmp(v, "auto")) {
        snprintf(err, n, "--fabric '%s': expected shm, tcp, verbs or auto", v);
        return -EINVAL;
    }
    a->fabric = v;
    return 0;
}

static int f_placement(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    (void)err, (void)n;
    a->vm.placement = v;
    return 0;
}

static int f_distance(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    (void)err, (void)n;
    a->vm.distance = v;
    return 0;
}

static int f_verbose(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    (void)v, (void)err, (void)n;
    a->vm.verbose = true;
    return 0;
}

static int f_pin(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    (void)v, (void)err, (void)n;
    a->pin = true;
    return 0;
}

static int f_stats(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    (void)v, (void)err, (void)n;
    a->vm.stats = true;
    return 0;
}

static int f_help(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    (void)v, (void)err, (void)n;
    a->help = true;
    return 0;
}

/* Splits "a=b,c=d" options one at a time: returns the next key (and its
 * value, NULL without '='), NUL-terminating both in place. */
static char *next_option(char **cursor, char **value)
{
    char *o = *cursor;
    if (!o || !*o)
        return NULL;
    char *comma = strchr(o, ',');
    *cursor = comma ? comma + 1 : NULL;
    if (comma)
        *comma = 0;
    char *eq = strchr(o, '=');
    *value = eq ? eq + 1 : NULL;
    if (eq)
        *eq = 0;
    return o;
}

static int on_off(const char *flag, const char *key, const char *v, bool *out, char *err,
                  size_t n)
{
    if (v && (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")))
        *out = true;
    else if (v && (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false")))
        *out = false;
    else {
        snprintf(err, n, "%s %s='%s': expected on or off", flag, key, v ? v : "");
        return -EINVAL;
    }
    return 0;
}

/* Whether flag may add one more virtio device: -EINVAL with the reason. */
static int room_for_device(const struct run_args *a, const char *flag, char *err, size_t n)
{
    if (vm_virtio_slots(&a->vm) < VMM_MAX_VIRTIO)
        return 0;
    snprintf(err, n, "%s: at most %d virtio devices (--drive, --netdev, --rng)", flag,
             VMM_MAX_VIRTIO);
    return -EINVAL;
}

static int f_drive(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    if (room_for_device(a, "--drive", err, n) < 0)
        return -EINVAL;
    struct vm_drive d = {0};
    char *copy = strdup(v), *cur = copy, *val, *key; /* kept: the config points into it */
    if (!copy)
        return -ENOMEM;
    while ((key = next_option(&cur, &val))) {
        int r = 0;
        if (!strcmp(key, "file") && val && *val)
            d.file = val;
        else if (!strcmp(key, "readonly"))
            r = on_off("--drive", key, val, &d.readonly, err, n);
        else if (!strcmp(key, "cache") && val && (!strcmp(val, "none") || !strcmp(val, "writeback")))
            d.direct = !strcmp(val, "none");
        else {
            snprintf(err, n, "--drive '%s': unknown or incomplete option '%s' (expected "
                     "file=PATH[,readonly=on][,cache=none|writeback])", v, key);
            r = -EINVAL;
        }
        if (r < 0)
            return r;
    }
    if (!d.file) {
        snprintf(err, n, "--drive '%s': file=PATH is required", v);
        return -EINVAL;
    }
    a->vm.drives[a->vm.ndrives++] = d;
    return 0;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
    unsigned b[6];
    char tail;
    if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5],
               &tail) != 6 || strlen(s) != 17)
        return -EINVAL;
    for (int i = 0; i < 6; i++)
        mac[i] = (uint8_t)b[i];
    if (mac[0] & 1) /* a multicast address cannot be a card's */
        return -EINVAL;
    return 0;
}

/* A locally administered address from the interface name (FNV-1a), so a
 * guest keeps its MAC from run to run on the same TAP. */
static void derive_mac(const char *ifname, uint8_t mac[6])
{
    uint32_t h = 2166136261u;
    for (const char *p = ifname; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    const uint8_t m[6] = {0x52, 0x54, 0x00, (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h};
    memcpy(mac, m, 6);
}

static int f_netdev(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    if (room_for_device(a, "--netdev", err, n) < 0)
        return -EINVAL;
    struct vm_netdev d = {0};
    char *copy = strdup(v), *cur = copy, *val, *key;
    if (!copy)
        return -ENOMEM;
    key = next_option(&cur, &val);
    if (!key || strcmp(key, "tap") || val) {
        snprintf(err, n, "--netdev '%s': only tap is supported: tap,ifname=NAME[,mac=...]", v);
        return -EINVAL;
    }
    while ((key = next_option(&cur, &val))) {
        if (!strcmp(key, "ifname") && val && *val) {
            d.ifname = val;
        } else if (!strcmp(key, "mac") && val && parse_mac(val, d.mac) == 0) {
            d.mac_set = true;
        } else {
            snprintf(err, n, "--netdev '%s': bad option '%s' (expected ifname=NAME and "
                     "optionally mac=52:54:00:12:34:56, a unicast address)", v, key);
            return -EINVAL;
        }
    }
    if (!d.ifname) {
        snprintf(err, n, "--netdev '%s': ifname=NAME is required", v);
        return -EINVAL;
    }
    if (!d.mac_set)
        derive_mac(d.ifname, d.mac);
    a->vm.netdevs[a->vm.nnetdevs++] = d;
    return 0;
}

static int f_rng(void *ctx, const char *v, char *err, size_t n)
{
    struct run_args *a = ctx;
    (void)v;
    if (!a->vm.rng && room_for_device(a, "--rng", err, n) < 0)
        return -EINVAL;
    a->vm.rng = true;
    return 0;
}

static const struct flag flags[] = {
    {"--vcpus", true, f_vcpus},     {"--mem", true, f_mem},
    {"--kernel", true, f_kernel},   {"--initrd", true, f_initrd},
    {"--append", true, f_append},   {"--cpl0", true, f_cpl0},
    {"--nodes", true, f_nodes},     {"--fabric", true, f_fabric},
    {"--placement", true, f_placement}, {"--distance", true, f_distance},
    {"--verbose", false, f_verbose}, {"-v", false, f_verbose},
    {"--stats", false, f_stats},    {"--dsm-cache", true, f_dsm_cache},
    {"--dsm-push", true, f_dsm_push}, {"--dsm-pull", true, f_dsm_pull},
    {"--vcpu-sched", true, f_vcpu_sched},
    {"--monitor", true, f_monitor},
    {"--migrate", true, f_migrate}, {"--trace", true, f_trace},
    {"--migrate-plan", true, f_migrate_plan}, {"--migrate-policy", true, f_migrate_policy},
    {"--migrate-prefetch", true, f_migrate_prefetch},
    {"--pin", false, f_pin},
    {"--drive", true, f_drive}, {"--netdev", true, f_netdev}, {"--rng", false, f_rng},
    {"--help", false, f_help},      {"-h", false, f_help},
};

static void set_defaults(struct run_args *a)
{
    memset(a, 0, sizeof *a);
    a->vm.nr_vcpus = 1;
    a->vm.mem_size = 256ULL << 20;
    a->vm.cpl0 = CPL0_AUTO;
    a->vm.console_out = 1;
    a->vm.console_in = 0;
    a->nodes = 1;
    a->vm.dsm_push = DSM_PUSH_DEFAULT;
}

int run_parse_args(int argc, char **argv, struct run_args *a, char *err, size_t errlen)
{
    set_defaults(a);
    int r = flags_parse(flags, sizeof flags / sizeof flags[0], argc, argv, a, "run", err, errlen);
    if (r < 0)
        return r;
    if (!a->help && !a->vm.kernel) {
        snprintf(err, errlen, "--kernel FILE is required (see 'amalgam run --help')");
        return -EINVAL;
    }
    return 0;
}
