/* Internal to vmm/: the machine-wide operations behind the monitor (the
 * public side is in vmm.h: vm_query, vm_pause_all, vm_resume_all, ...).
 * Node 0 asks and every node answers over the interconnect; see control.c
 * for which thread does what. */
#ifndef AMALGAM_VMM_CONTROL_H
#define AMALGAM_VMM_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "interconnect/interconnect.h"

struct vm;
struct event_loop;

/* Message types (vmm's range, beside cluster.h's). */
enum control_msg_type {
    VM_T_CTL = 0x66,     /* node 0 -> a node: arg0: 1 pause, 2 resume; arg1: sequence */
    VM_T_CTL_ACK = 0x67, /* -> node 0: arg0: sequence; arg1: 0 or the errno */
    VM_T_QUERY = 0x68,   /* node 0 -> a node: arg0: sequence; arg1: hot pages wanted */
    VM_T_STATUS = 0x69,  /* -> node 0: arg0: sequence; payload: proto NodeStatus, one part */
};

int control_register_types(struct ic_types *t);
/* In vm_create: the state; every node. */
int control_init(struct vm *vm);
void control_free(struct vm *vm);
/* In cluster_attach: the message handlers. */
int control_attach(struct vm *vm);
/* In vm_run: the main loop takes the pause and resume requests. */
int control_watch(struct vm *vm, struct event_loop *loop);
/* Once the message loop runs: a first round trip to every peer, so the
 * first query has distances (the answers are taken by the loop). */
void control_probe_peers(struct vm *vm);
/* On the message loop, every turn: node 0's own status, when asked. */
void control_poll(struct vm *vm);
/* A part of a node's status, arrived or (node 0's own) built. */
void control_take_status(struct vm *vm, int rank, uint64_t seq, const void *buf, size_t len);

#endif
