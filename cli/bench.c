/* `amalgam bench WHAT`: each benchmark prints exactly one JSON line. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "tools/tools.h"

static const struct bench {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} benches[] = {
    {"vmexit", bench_vmexit_main, "guest port write -> VMM -> guest round trip"},
    {"fabric", bench_fabric_main, "ping-pong latency and bandwidth between two ranks"},
    {"dsm", bench_dsm_main, "remote page-fault time seen by a guest, against the floor"},
    {"local", bench_local_main, "work on a node's own memory: K nodes against one"},
    {"migrate", bench_migrate_main, "live vCPU move downtime, against the floor"},
    {"blk", bench_blk_main, "virtio-blk throughput in a guest, against fio on the same file"},
    {NULL, NULL, NULL},
};

int cmd_bench(int argc, char **argv)
{
    if (argc >= 2) {
        for (size_t i = 0; benches[i].name; i++)
            if (!strcmp(argv[1], benches[i].name))
                return benches[i].fn(argc - 1, argv + 1);
    }
    FILE *f = argc >= 2 && !strcmp(argv[1], "--help") ? stdout : stderr;
    fprintf(f, "usage: amalgam bench WHAT [FLAGS]\n\nbenchmarks:\n");
    for (size_t i = 0; benches[i].name; i++)
        fprintf(f, "  %-8s %s\n", benches[i].name, benches[i].help);
    return f == stdout ? 0 : 2;
}
