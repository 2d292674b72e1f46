/* The entropy device model (virtio.h; virtio 1.x, 5.4): one queue of
 * writable buffers that the device fills with random bytes. No features,
 * no configuration. */
#include <string.h>

#include "virtio/virtio.h"

void virtio_rng_device(struct virtio_device *d)
{
    memset(d, 0, sizeof *d);
    d->id = VIRTIO_ID_RNG;
    d->nqueues = 1;
}
