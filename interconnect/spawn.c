/* Starting a cluster's ranks on this host: `amalgam run --nodes K`, and the
 * checks and benchmarks that start their own ranks, run K copies of this
 * program as ranks of one interconnect, bootstrapped over loopback with a
 * fresh shared secret (see interconnect.h: ic_spawn_local). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "interconnect/interconnect.h"

/* ---- starting local ranks ---------------------------------------------------- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) < 0) {
        if (fd >= 0)
            close(fd);
        return 17420;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int make_secret(char *path, size_t len)
{
    snprintf(path, len, "/tmp/amalgam-secret-XXXXXX");
    int fd = mkstemp(path);
    uint8_t b[32];
    int rnd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || rnd < 0 || read(rnd, b, sizeof b) != sizeof b) {
        if (rnd >= 0)
            close(rnd);
        return -EIO;
    }
    close(rnd);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", b[i]);
    int r = write(fd, hex, 64) == 64 ? 0 : -EIO;
    close(fd);
    return r;
}

/* Rank i of n gets the CPUs whose position in our mask is i modulo n (or,
 * with fewer CPUs than ranks, one CPU shared round-robin). Node processes
 * left to roam were seen to land on one CPU now and then, which made a
 * remote fault take ~250 us instead of ~70 (bench dsm --host). */
static void pin_rank(int i, int n)
{
    cpu_set_t all, mine;
    if (sched_getaffinity(0, sizeof all, &all) < 0)
        return;
    int ncpu = CPU_COUNT(&all), k = 0;
    CPU_ZERO(&mine);
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &all))
            continue;
        if (ncpu >= n ? k % n == i : k == i % ncpu)
            CPU_SET(c, &mine);
        k++;
    }
    if (CPU_COUNT(&mine))
        sched_setaffinity(0, sizeof mine, &mine);
}

/* How long nodes get to stop after a signal was passed on, before they
 * are killed: each stops its vCPUs and tells the others within ~0.2 s. */
#define STOP_GRACE_NS 2000000000ULL

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

/* The libfabric shm provider keeps each endpoint's region in a file
 * /dev/shm/PID:N:M that its process unlinks on closing: a node that was
 * killed (SIGKILL, a crash) leaves its 16 MiB behind (28 of them, 448 MiB,
 * had piled up on this host). The launcher, which saw the node end, removes
 * them; mappings other nodes still hold stay valid. */
static void sweep_shm(pid_t pid)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    char prefix[24];
    int n = snprintf(prefix, sizeof prefix, "%d:", (int)pid);
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, prefix, (size_t)n) && strspn(e->d_name + n, "0123456789:") ==
                                                          strlen(e->d_name + n))
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
}

/* Waits for every rank; SIGINT, SIGTERM or SIGHUP (blocked in stop) is
 * passed on to the ranks still running, which then get STOP_GRACE_NS to
 * end before SIGKILL. Once one rank has ended, the machine has: the others
 * get twice the dead-peer time and 3 s to notice and end (they end within
 * milliseconds of each other when the guest powers off; a lost node they
 * notice after the dead-peer time, and a grace of just that killed them,
 * silent, in the nested L1), and then SIGKILL (a node stopped with SIGSTOP
 * would otherwise keep the launcher waiting for ever, its peers long gone).
 * Returns 128+N after signal N, else rank 0's status if it failed, else 1
 * if another rank did, else 0. */
static uint64_t after_first_exit_ns(void)
{
    return 2 * ic_dead_after_env_ns() + 3000000000ULL; /* past when the others notice a loss */
}

static int wait_ranks(pid_t *pids, int nranks, const sigset_t *stop)
{
    int status = 0, left = 0, sig = 0;
    uint64_t kill_at = 0;
    for (int i = 0; i < nranks; i++)
        left += pids[i] > 0;
    if (left < nranks)
        status = 1; /* a fork failed */
    while (left > 0) {
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0)
            for (int i = 0; i < nranks; i++)
                if (pids[i] == p) {
                    sweep_shm(p);
                    if (!kill_at)
                        kill_at = now_ns() + after_first_exit_ns();
                    int s = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                    if (s && (i == 0 || !status))
                        status = s;
                    pids[i] = 0;
                    left--;
                }
        if (!left)
            break;
        if (kill_at && now_ns() > kill_at)
            for (int i = 0; i < nranks; i++)
                if (pids[i] > 0)
                    kill(pids[i], SIGKILL);
        struct timespec t = {0, 100000000}; /* also a poll: SIGCHLD may have come before */
        int got = sigtimedwait(stop, NULL, &t);
        if (got == SIGINT || got == SIGTERM || got == SIGHUP) {
            sig = got;
            for (int i = 0; i < nranks; i++)
                if (pids[i] > 0)
                    kill(pids[i], got);
            if (!kill_at)
                kill_at = now_ns() + STOP_GRACE_NS;
        }
    }
    return sig ? 128 + sig : status;
}

int ic_spawn_local(const char *cmd, int argc, char **argv, int nranks,
                   const struct ic_config *parent)
{
    static const char *const prov[] = {"auto", "tcp", "shm", "verbs"};
    char secret[64], rank[8], size[8];
    if (make_secret(secret, sizeof secret) < 0) {
        fprintf(stderr, "amalgam: cannot create a temporary secret\n");
        return 1;
    }
    /* AMALGAM_LOCAL_HOST: where local ranks meet, for a fabric that binds to
     * an interface's address (verbs: the RDMA device's, not the loopback). */
    const char *host = getenv("AMALGAM_LOCAL_HOST");
    char hostport[300];
    snprintf(hostport, sizeof hostport, "%s:%d", host && *host ? host : "127.0.0.1", free_port());
    snprintf(size, sizeof size, "%d", nranks);
    pid_t pids[IC_MAX_RANKS], self = getpid();
    /* Signals meant for the machine are taken here (and passed on) from
     * before the first fork, so none lands between forks unseen. */
    sigset_t stop, old;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGHUP);
    sigaddset(&stop, SIGCHLD);
    sigprocmask(SIG_BLOCK, &stop, &old);
    for (int i = 0; i < nranks; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            /* The launcher's death (even SIGKILL) takes its nodes down. */
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != self)
                _exit(128 + SIGTERM);
            sigprocmask(SIG_SETMASK, &old, NULL);
            if (parent->pin_local)
                pin_rank(i, nranks);
            char *av[64];
            int n = 0;
            av[n++] = "/proc/self/exe";
            if (cmd)
                av[n++] = (char *)cmd;
            for (int k = 0; k < argc && n < 50; k++)
                av[n++] = argv[k];
            snprintf(rank, sizeof rank, "%d", i);
            char *extra[] = {"--rank", rank, "--ranks", size, "--bootstrap", hostport,
                             "--secret-file", secret, "--fabric",
                             (char *)prov[parent->provider], NULL};
            for (int k = 0; extra[k]; k++)
                av[n++] = extra[k];
            av[n] = NULL;
            execv("/proc/self/exe", av);
            _exit(127);
        }
    }
    int status = wait_ranks(pids, nranks, &stop);
    sigprocmask(SIG_SETMASK, &old, NULL);
    unlink(secret);
    return status;
}
