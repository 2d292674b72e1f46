/* `amalgam bench migrate`: downtime of live vCPU moves, against a floor
 * measured in the same run.
 *
 * The test guest's `heartbeat` runs on 2 nodes with 2 vCPUs while the BSP
 * moves between them every --every ms (`run --migrate every=MS,vcpus=0
 * --trace`), until --moves moves are in the trace; downtime p50 and p99
 * come from the trace. The floor is what one move cannot avoid: the
 * state's bytes (their size from the trace) one way over the fabric
 * (half a ping-pong of a part, per part: `bench fabric`'s p50) plus one KVM save and one restore of a
 * vCPU's state on this host (p50 of 200 each, on a vCPU of a VM made
 * here). One JSON line; ratio = downtime p50 / floor, goal <= 1.5. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock/clock.h"
#include "tools/tools.h"
#include "vmm/kvm.h"
#include "vmm/migrate.h"

#define SAVE_SAMPLES 200

static int usage(void)
{
    fprintf(stderr, "usage: amalgam bench migrate [--fabric shm|tcp] [--moves N] [--every MS]\n");
    return 2;
}

/* p50 of one KVM save and of one restore of a vCPU's whole state. */
static int kvm_save_restore_ns(double *save_ns, double *restore_ns, char *err, size_t n)
{
    int kvm, vmfd = -1, vfd = -1;
    size_t run_size;
    struct kvm_run *run;
    int r = kvm_open_system(&kvm, &run_size, err, n);
    if (r < 0)
        return r;
    r = kvm_create_vm(kvm, &vmfd);
    r = r ?: kvm_create_vcpu(vmfd, 0, run_size, &vfd, &run);
    r = r ?: kvm_set_cpuid(kvm, vfd, 0);
    static uint32_t idx[KVM_VCPU_STATE_MAX_MSRS];
    int dropped = 0, nmsrs = r ? 0 : kvm_saveable_msrs(kvm, idx, KVM_VCPU_STATE_MAX_MSRS, &dropped);
    struct kvm_vcpu_state *s = calloc(1, sizeof *s);
    uint64_t *ts = calloc(2 * SAVE_SAMPLES, sizeof *ts);
    if (!r && (!s || !ts))
        r = -ENOMEM;
    for (int i = 0; !r && i < SAVE_SAMPLES; i++) {
        uint64_t t0 = clock_now_ns();
        r = kvm_vcpu_save(kvm, vfd, idx, nmsrs < 0 ? 0 : nmsrs, s);
        uint64_t t1 = clock_now_ns();
        r = r ?: kvm_vcpu_restore(vfd, s);
        ts[i] = t1 - t0;
        ts[SAVE_SAMPLES + i] = clock_now_ns() - t1;
    }
    if (!r) {
        qsort(ts, SAVE_SAMPLES, sizeof *ts, dsm_cmp_u64);
        qsort(ts + SAVE_SAMPLES, SAVE_SAMPLES, sizeof *ts, dsm_cmp_u64);
        *save_ns = (double)ts[SAVE_SAMPLES / 2];
        *restore_ns = (double)ts[SAVE_SAMPLES + SAVE_SAMPLES / 2];
    } else if (!err[0]) {
        snprintf(err, n, "cannot save and restore a vCPU here: %s", strerror(-r));
    }
    free(s);
    free(ts);
    if (vfd >= 0)
        close(vfd);
    if (vmfd >= 0)
        close(vmfd);
    close(kvm);
    return r;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The trace's downtimes (us), sorted, and the most state bytes a move
 * carried; returns how many moves. */
static size_t read_trace(const char *path, double **out, double *bytes)
{
    FILE *f = fopen(path, "r");
    size_t n = 0, cap = 0;
    double *d = NULL;
    char line[512];
    *bytes = 0;
    while (f && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "\"downtime_us\":"), *b = strstr(line, "\"bytes\":");
        if (!p || !b)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            double *q = realloc(d, cap * sizeof *q);
            if (!q)
                break;
            d = q;
        }
        d[n++] = strtod(p + 14, NULL);
        if (strtod(b + 8, NULL) > *bytes)
            *bytes = strtod(b + 8, NULL);
    }
    if (f)
        fclose(f);
    if (n)
        qsort(d, n, sizeof *d, cmp_double);
    *out = d;
    return n;
}

int bench_migrate_main(int argc, char **argv)
{
    const char *fabric = "shm";
    int moves = 1000, every = 2;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            return usage();
        if (!strcmp(argv[i], "--fabric"))
            fabric = argv[++i];
        else if (!strcmp(argv[i], "--moves"))
            moves = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--every"))
            every = atoi(argv[++i]);
        else
            return usage();
    }
    if ((strcmp(fabric, "shm") && strcmp(fabric, "tcp")) || moves < 10 || moves > 1000000 ||
        every < 1 || every > 10000)
        return usage();
    if (access("/dev/kvm", R_OK | W_OK) != 0) {
        fprintf(stderr, "amalgam bench migrate: needs /dev/kvm (run it inside "
                "scripts/nested-kvm.sh where there is none)\n");
        return 1;
    }
    char err[256] = "";
    double save_ns = 0, restore_ns = 0, part_rtt_ns = 0;
    if (kvm_save_restore_ns(&save_ns, &restore_ns, err, sizeof err) < 0 ||
        ic_bench_p50_ns(fabric, MIGRATE_PART_BYTES, &part_rtt_ns, err, sizeof err) < 0) {
        fprintf(stderr, "amalgam bench migrate: %s\n", err);
        return 1;
    }
    char self[4096], dir[4096], args[9000], trace[] = "/tmp/amalgam-migrate-XXXXXX";
    int fd = mkstemp(trace);
    if (fd < 0 || dsm_bench_self(self, sizeof self) < 0)
        return 1;
    close(fd);
    memcpy(dir, self, sizeof dir);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    /* Long enough for the moves at well under the asked rate; the guest
     * is stopped once they are in (SIGTERM through `timeout`). */
    int seconds = moves * every / 1000 * 4 + 10;
    snprintf(args, sizeof args, "run --nodes 2 --vcpus 2 --mem 64M --fabric %s --migrate "
             "every=%d,vcpus=0 --trace %s --kernel %s/guest/testguest.elf --append "
             "'test=heartbeat seconds=%d'", fabric, every, trace, dir, seconds);
    uint64_t t0 = clock_now_ns();
    static char cmd[13200];
    snprintf(cmd, sizeof cmd, "exec '%s' %s >/dev/null 2>&1", self, args);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    double *d = NULL, state = 0;
    size_t n = 0;
    while (clock_now_ns() - t0 < (uint64_t)seconds * 1000000000ULL) {
        usleep(200000);
        free(d);
        n = read_trace(trace, &d, &state);
        if (n >= (size_t)moves)
            break;
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    free(d);
    n = read_trace(trace, &d, &state);
    unlink(trace);
    if (n < 10) {
        free(d);
        fprintf(stderr, "amalgam bench migrate: only %zu moves were made (amalgam %s)\n", n, args);
        return 1;
    }
    double parts = (double)(((size_t)state + MIGRATE_PART_BYTES - 1) / MIGRATE_PART_BYTES);
    double floor_us = (parts * part_rtt_ns / 2 + save_ns + restore_ns) / 1e3;
    double p50 = d[n / 2], p99 = d[n * 99 / 100 < n ? n * 99 / 100 : n - 1];
    printf("{\"bench\":\"migrate\",\"fabric\":\"%s\",\"moves\":%zu,\"every_ms\":%d,"
           "\"downtime_us\":{\"p50\":%.1f,\"p99\":%.1f},\"floor_us\":%.1f,\"floor_parts\":{"
           "\"fabric_one_way_us\":%.1f,\"kvm_save_us\":%.1f,\"kvm_restore_us\":%.1f},"
           "\"ratio\":%.2f,\"goal\":1.5}\n", fabric, n, every, p50, p99, floor_us,
           parts * part_rtt_ns / 2e3, save_ns / 1e3, restore_ns / 1e3, p50 / floor_us);
    free(d);
    return 0;
}
