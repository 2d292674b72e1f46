/* Internal to vmm/: the kernel-image parsers behind boot_load(), on memory
 * buffers, so that unit tests and the fuzz target drive them directly. */
#ifndef AMALGAM_VMM_BOOT_IMAGE_H
#define AMALGAM_VMM_BOOT_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/boot.h"

int boot_load_elf(const uint8_t *buf, size_t len, struct guest_mem *mem,
                  struct boot_info *out, char *err, size_t errlen);
bool boot_is_bzimage(const uint8_t *buf, size_t len);
/* bp: the 4 KiB boot_params being built; receives the setup header. */
int boot_load_bzimage(const uint8_t *buf, size_t len, struct guest_mem *mem,
                      struct boot_info *out, uint8_t *bp, char *err, size_t errlen);
/* Detects gzip/xz/lzma/zstd/lz4 by magic and decompresses (malloc'd).
 * -ENOEXEC unknown format, -ENOTSUP known but unsupported (*kind set),
 * -EFBIG over the cap, -EBADMSG corrupt. */
int boot_decompress(const uint8_t *in, size_t n, const char **kind, uint8_t **out,
                    size_t *out_len);

#endif
