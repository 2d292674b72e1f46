/* Internal to dsm/ and cli/: the DSM's commands. */
#ifndef AMALGAM_DSM_TOOLS_H
#define AMALGAM_DSM_TOOLS_H

int dsm_check_main(int argc, char **argv);
int bench_dsm_main(int argc, char **argv);

#endif
