/* Internal to vmm/ and cli/: the VMM's benchmark entry points (each prints
 * one JSON line and returns an exit status). */
#ifndef AMALGAM_VMM_BENCH_H
#define AMALGAM_VMM_BENCH_H

int bench_vmexit_main(int argc, char **argv);

#endif
