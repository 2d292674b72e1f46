/* libFuzzer target: the interconnect's message validation and the
 * bootstrap's protobuf decoding, on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "interconnect/interconnect.h"
#include "proto/bootstrap.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ic_types types;
    static int init;
    if (!init) {
        ic_types_init(&types);
        ic_types_add(&types, 0x20, 0, IC_MAX_PAYLOAD);
        init = 1;
    }
    struct ic_hdr h;
    enum ic_drop why;
    int from = size ? (int)(data[0] % 6) - 1 : -1;
    if (ic_validate(&types, data, size, from, 1, 4, &h, &why) == 0) {
        /* Whatever passes must be exactly as promised. */
        if (h.payload_len != size - sizeof h || h.src_rank >= 4 || h.dst_rank != 1)
            __builtin_trap();
    }
    Amalgam__Ctl *m = amalgam__ctl__unpack(NULL, size, data);
    if (m)
        amalgam__ctl__free_unpacked(m, NULL);
    return 0;
}
