/* libFuzzer target: the kernel-image parsers (ELF, bzImage with every
 * decompressor) on arbitrary bytes, loading into a real guest memory. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "vmm/boot_image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct guest_mem mem;
    static int init;
    if (!init) {
        if (gmem_create(&mem, 64ULL << 20) < 0)
            __builtin_trap();
        init = 1;
    }
    struct boot_info bi;
    char err[256];
    uint8_t bp[4096] = {0};
    memset(&bi, 0, sizeof bi);
    if (boot_is_bzimage(data, size))
        boot_load_bzimage(data, size, &mem, &bi, bp, err, sizeof err);
    else if (boot_load_elf(data, size, &mem, &bi, err, sizeof err) == 0 &&
             (bi.kernel_start < 0x100000 || bi.kernel_end > mem.size ||
              bi.entry_gpa < bi.kernel_start || bi.entry_gpa >= bi.kernel_end))
        __builtin_trap(); /* accepted but not inside RAM */
    return 0;
}
