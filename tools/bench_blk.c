/* `amalgam bench blk`: what a guest gets from a virtio-blk disk, against
 * what fio gets from the same file on this host, in the same run.
 *
 * The guest is the test guest's `blkbench` (tests/guest/virtio.c): a
 * polling virtio-mmio driver with 8 requests in flight doing sequential
 * 64 KiB reads, random 4 KiB reads, and sequential 64 KiB writes then a
 * flush. fio does the same three with io_uring at the same depth and block
 * size on the same image. Both go through this host's page cache (the
 * image is written in full first, cache=writeback, fio --direct=0 and
 * --invalidate=0: by default fio drops the file from the cache first), so the
 * ratios show what the virtual device path costs, not the disk. The guest
 * moves 256 MiB each way and makes 32768 random reads (TSC-timed); fio runs
 * each job for a second over the 64 MiB image. The guest's write time
 * includes its one flush at the end. Best of
 * --repeat runs each (noise only adds). One JSON line; each ratio is guest
 * / fio (1.0: the guest gets all the host's speed). */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/tools.h"

#define IMAGE_MB 64

struct rates {
    double seq_read_mbps, rand_read_iops, seq_write_mbps;
};

static int usage(void)
{
    fprintf(stderr, "usage: amalgam bench blk [--dir DIR] [--repeat R]\n"
            "  DIR holds the 64 MiB image (default $TMPDIR or /var/tmp)\n");
    return 2;
}

static int make_image(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    static uint8_t chunk[1 << 20];
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (uint8_t)(i * 2654435761u >> 13); /* data, not a hole */
    int r = 0;
    for (int i = 0; i < IMAGE_MB && r == 0; i++)
        r = fwrite(chunk, sizeof chunk, 1, f) == 1 ? 0 : -1;
    return fclose(f) == 0 ? r : -1;
}

/* One fio job as JSON; the job's read or write side. */
static int fio(const char *image, const char *rw, const char *bs, const char *size,
               const char *side, double *bw_mbps, double *iops)
{
    char cmd[8600];
    /* A second of each: fio times in milliseconds, too coarse for one
     * pass over a cached file. */
    snprintf(cmd, sizeof cmd, "fio --name=amalgam --filename=%s --rw=%s --bs=%s --size=%s "
             "--iodepth=8 --ioengine=io_uring --direct=0 --invalidate=0 --randrepeat=0 --time_based "
             "--runtime=1 --output-format=json 2>/dev/null", image, rw, bs, size);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    json_error_t e;
    json_t *root = json_loadf(p, 0, &e);
    int st = pclose(p);
    json_t *job = root ? json_array_get(json_object_get(root, "jobs"), 0) : NULL;
    json_t *s = job ? json_object_get(job, side) : NULL;
    int r = -1;
    if (st == 0 && s) {
        *bw_mbps = json_number_value(json_object_get(s, "bw_bytes")) / 1e6;
        *iops = json_number_value(json_object_get(s, "iops"));
        r = *bw_mbps > 0 ? 0 : -1;
    }
    json_decref(root);
    return r;
}

static int host_rates(const char *image, struct rates *h)
{
    double bw, iops;
    if (fio(image, "read", "64k", "64m", "read", &bw, &iops) < 0)
        return -1;
    h->seq_read_mbps = bw;
    if (fio(image, "randread", "4k", "64m", "read", &bw, &iops) < 0)
        return -1;
    h->rand_read_iops = iops;
    if (fio(image, "write", "64k", "64m", "write", &bw, &iops) < 0)
        return -1;
    h->seq_write_mbps = bw;
    return 0;
}

static uint64_t field(const char *line, const char *key)
{
    const char *p = strstr(line, key);
    return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

static int guest_rates(const char *self, const char *dir, const char *image, struct rates *g)
{
    char args[8600], line[512];
    snprintf(args, sizeof args, "run --vcpus 1 --mem 64M --kernel %s/guest/testguest.elf "
             "--drive file=%s --append 'test=blkbench disk_mb=%d seq=4096 rand=32768'", dir, image,
             IMAGE_MB);
    if (dsm_bench_run(self, args, "blkbench:", line, sizeof line) < 0)
        return -1;
    double hz = (double)field(line, "tsc_hz "), bytes = (double)field(line, "seq_bytes ");
    double rd = (double)field(line, "seq_read_cycles "), rr = (double)field(line, "rand_read_cycles ");
    double wr = (double)field(line, "seq_write_cycles "), reqs = (double)field(line, "rand_reqs ");
    if (hz <= 0 || rd <= 0 || rr <= 0 || wr <= 0)
        return -1;
    g->seq_read_mbps = bytes / (rd / hz) / 1e6;
    g->rand_read_iops = reqs / (rr / hz);
    g->seq_write_mbps = bytes / (wr / hz) / 1e6;
    return 0;
}

static void keep_best(struct rates *best, const struct rates *r)
{
    if (r->seq_read_mbps > best->seq_read_mbps)
        best->seq_read_mbps = r->seq_read_mbps;
    if (r->rand_read_iops > best->rand_read_iops)
        best->rand_read_iops = r->rand_read_iops;
    if (r->seq_write_mbps > best->seq_write_mbps)
        best->seq_write_mbps = r->seq_write_mbps;
}

int bench_blk_main(int argc, char **argv)
{
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
    int repeat = 3;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            return usage();
        if (!strcmp(argv[i], "--dir"))
            dir = argv[++i];
        else if (!strcmp(argv[i], "--repeat"))
            repeat = atoi(argv[++i]);
        else
            return usage();
    }
    if (repeat < 1)
        return usage();
    if (access("/dev/kvm", R_OK | W_OK) != 0) {
        fprintf(stderr, "amalgam bench blk: needs /dev/kvm (run it inside scripts/nested-kvm.sh "
                "where there is none)\n");
        return 1;
    }
    if (system("fio --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "amalgam bench blk: needs fio (apt-get install fio) to compare with\n");
        return 1;
    }
    char self[4096], bindir[4096], image[4200];
    if (dsm_bench_self(self, sizeof self) < 0)
        return 1;
    memcpy(bindir, self, sizeof bindir);
    char *slash = strrchr(bindir, '/');
    if (slash)
        *slash = 0;
    snprintf(image, sizeof image, "%s/amalgam-bench-blk-%d.img", dir, (int)getpid());
    if (make_image(image) < 0) {
        fprintf(stderr, "amalgam bench blk: cannot write a %d MiB image in %s\n", IMAGE_MB, dir);
        unlink(image);
        return 1;
    }
    struct rates g = {0}, h = {0}, r;
    int bad = 0;
    for (int i = 0; i < repeat && !bad; i++) {
        if (guest_rates(self, bindir, image, &r) < 0)
            bad = 1;
        else
            keep_best(&g, &r);
        if (!bad && host_rates(image, &r) < 0)
            bad = 2;
        else if (!bad)
            keep_best(&h, &r);
    }
    unlink(image);
    if (bad) {
        fprintf(stderr, "amalgam bench blk: %s\n", bad == 1 ? "the guest's blkbench did not run"
                                                             : "fio did not run or gave no JSON");
        return 1;
    }
    printf("{\"bench\":\"blk\",\"depth\":8,\"repeat\":%d,"
           "\"guest\":{\"seq_read_mbps\":%.1f,\"rand_read_iops\":%.0f,\"seq_write_mbps\":%.1f},"
           "\"fio\":{\"seq_read_mbps\":%.1f,\"rand_read_iops\":%.0f,\"seq_write_mbps\":%.1f},"
           "\"ratio\":{\"seq_read\":%.3f,\"rand_read\":%.3f,\"seq_write\":%.3f}}\n",
           repeat, g.seq_read_mbps, g.rand_read_iops, g.seq_write_mbps, h.seq_read_mbps,
           h.rand_read_iops, h.seq_write_mbps, g.seq_read_mbps / h.seq_read_mbps,
           g.rand_read_iops / h.rand_read_iops, g.seq_write_mbps / h.seq_write_mbps);
    return 0;
}
