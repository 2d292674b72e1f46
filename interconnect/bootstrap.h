/* Internal to interconnect/: the TCP bootstrap. Rank 0 listens, challenges
 * every joining node, checks its HMAC, and once all have joined sends each
 * the table of fabric addresses. Every message is a protobuf-c Ctl, framed
 * by a 4-byte length; anything malformed ends that connection. */
#ifndef AMALGAM_INTERCONNECT_BOOTSTRAP_H
#define AMALGAM_INTERCONNECT_BOOTSTRAP_H

#include <stddef.h>
#include <stdint.h>

#include "interconnect/interconnect.h"

#define IC_ADDR_MAX 256

struct ic_addr {
    uint8_t bytes[IC_ADDR_MAX];
    size_t len;
};

/* Joins (or, at rank 0, gathers) the cluster; fills table[0..size). */
int bootstrap_exchange(const struct ic_config *c, const char *provider, const struct ic_addr *mine,
                       struct ic_addr *table, char *err, size_t errlen);
/* The local address this host uses to reach the bootstrap host. */
int bootstrap_local_ip(const struct ic_config *c, char *ip, size_t len);

#endif
