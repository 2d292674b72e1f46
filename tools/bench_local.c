/* `amalgam bench local`: does a guest that works on its own nodes' memory
 * run as fast spread over K nodes as on one?
 *
 * The test guest's `local` test has each vCPU write and read back memory
 * homed at its own node (first touch included). The same guest, told the
 * same node count so that every vCPU works on the same addresses, runs on
 * `--nodes 1` and on `--nodes K`, alternately, `--repeat` times each; the
 * best of each is kept (the host is small and noisy, and noise only adds).
 * One JSON line; ratio = K-node cycles / 1-node cycles, goal <= 1.05. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/tools.h"

static uint64_t cycles_of(const char *line)
{
    const char *p = strstr(line, "cycles ");
    return p ? strtoull(p + 7, NULL, 10) : 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: amalgam bench local [--nodes K] [--vcpus N] [--mb MIB] [--passes P] "
            "[--repeat R] [--fabric shm|tcp]\n");
    return 2;
}

int bench_local_main(int argc, char **argv)
{
    int nodes = 2, vcpus = 2, mb = 16, passes = 4, repeat = 3;
    const char *fabric = "shm";
    for (int i = 1; i < argc; i++) {
        int *v = !strcmp(argv[i], "--nodes") ? &nodes : !strcmp(argv[i], "--vcpus") ? &vcpus
                 : !strcmp(argv[i], "--mb") ? &mb : !strcmp(argv[i], "--passes") ? &passes
                 : !strcmp(argv[i], "--repeat") ? &repeat : NULL;
        if (i + 1 >= argc)
            return usage();
        if (!strcmp(argv[i], "--fabric"))
            fabric = argv[++i];
        else if (v)
            *v = atoi(argv[++i]);
        else
            return usage();
    }
    if (nodes < 2 || nodes > 8 || vcpus < nodes || vcpus > 16 || mb < 1 || mb > 256 ||
        passes < 1 || repeat < 1 || (strcmp(fabric, "shm") && strcmp(fabric, "tcp"))) {
        fprintf(stderr, "amalgam bench local: --nodes 2..8, --vcpus nodes..16, --mb 1..256, "
                "--passes >= 1, --repeat >= 1, --fabric shm|tcp\n");
        return 2;
    }
    if (access("/dev/kvm", R_OK | W_OK) != 0) {
        fprintf(stderr, "amalgam bench local: needs /dev/kvm (run it inside "
                "scripts/nested-kvm.sh where there is none)\n");
        return 1;
    }
    char self[4096], dir[4096], args[8600], line[512];
    if (dsm_bench_self(self, sizeof self) < 0)
        return 1;
    memcpy(dir, self, sizeof dir);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    /* Enough memory that each vCPU's share fits in its node's slice. */
    int per_node = (vcpus + nodes - 1) / nodes;
    int mem = nodes * (per_node * ((mb + 1) / 2 * 2) + 8);
    mem = mem < 64 ? 64 : (mem + 1) / 2 * 2;
    uint64_t best[2] = {0, 0};
    for (int r = 0; r < repeat; r++)
        for (int k = 0; k < 2; k++) {
            int n = k ? nodes : 1;
            snprintf(args, sizeof args, "run --nodes %d --pin --vcpus %d --mem %dM --fabric %s "
                     "--kernel %s/guest/testguest.elf --append 'test=local nodes=%d mb=%d "
                     "passes=%d'", n, vcpus, mem, fabric, dir, nodes, mb, passes);
            if (dsm_bench_run(self, args, "local:", line, sizeof line) < 0 || !cycles_of(line)) {
                fprintf(stderr, "amalgam bench local: the guest did not run on %d node(s): "
                        "amalgam %s\n", n, args);
                return 1;
            }
            uint64_t c = cycles_of(line);
            if (!best[k] || c < best[k])
                best[k] = c;
        }
    printf("{\"bench\":\"local\",\"nodes\":%d,\"vcpus\":%d,\"fabric\":\"%s\",\"mib_per_vcpu\":%d,"
           "\"passes\":%d,\"repeat\":%d,\"cycles\":{\"nodes_1\":%llu,\"nodes_%d\":%llu},"
           "\"ratio\":%.3f,\"goal\":1.05}\n", nodes, vcpus, fabric, mb, passes, repeat,
           (unsigned long long)best[0], nodes, (unsigned long long)best[1],
           (double)best[1] / (double)best[0]);
    return 0;
}
