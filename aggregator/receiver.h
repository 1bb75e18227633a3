/* receiver.h: the aggregator's ZeroMQ ROUTER that takes agents' Hellos,
 * Heartbeats and Batches, stores batches (group commit) and acknowledges
 * each after its commit.
 *
 * Runs in the caller's zloop (the aggregator's main thread), which is the
 * store's only writer of events. */
#ifndef CAIRN_RECEIVER_H
#define CAIRN_RECEIVER_H

#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define RECEIVER_MAX_BATCH_EVENTS 10000    /* a batch with more is rejected */
#define RECEIVER_MAX_MESSAGE_BYTES (64 << 20) /* larger frames are dropped by libzmq */

typedef struct receiver receiver_t;

typedef struct {
    const char *listen;        /* "tcp://host:port" */
    const char *aggregator_id; /* told to agents in the Welcome */
    size_t group_max;          /* batches stored in one transaction, at most */
    size_t group_max_bytes;    /* and their messages' bytes, at most (0: 8 MiB): what
                                  one turn holds decoded and dirty in memory */
    /* CURVE: both set, or both NULL for plain text (only when the config says
     * so explicitly). allow_dir holds the public key files of the agents
     * allowed to send (`cairn keygen --agent-id ID`); each binds its key to
     * an agent id, and a message claiming another id is refused. */
    const char *secret_key_file;
    const char *allow_dir;
} receiver_options_t;

typedef struct {
    uint64_t messages_received;
    uint64_t messages_garbage;  /* not a protobuf AgentMessage */
    uint64_t hellos;
    uint64_t refusals;          /* Hellos or Batches refused (version, identity) */
    uint64_t heartbeats;
    uint64_t batches_received;
    uint64_t batches_rejected;  /* undecodable or invalid: answered REJECTED */
    uint64_t batches_deferred;  /* store full or failing: answered RETRY */
    uint64_t batches_resent;    /* recognised as already stored */
    uint64_t events_stored;
    uint64_t events_duplicate;
    uint64_t commits;           /* group-commit transactions */
} receiver_stats_t;

#define RECEIVER_MAX_AGENTS 1024 /* agents tracked for status and metrics */

/* What the receiver knows of one agent, for status and metrics. */
typedef struct {
    char agent_id[128];
    char region[64];
    int64_t last_seen_ms;      /* wall clock of its last message */
    uint64_t last_seq;         /* last sequence acknowledged to it */
    uint64_t spool_pending;    /* its backlog, from its last heartbeat */
    uint64_t batches;          /* batches acknowledged */
    uint64_t events_stored;
    uint64_t events_duplicate;
} receiver_agent_t;

/* Binds and registers with loop. store and loop are borrowed. Returns NULL
 * after logging why. */
receiver_t *receiver_new(store_t *store, zloop_t *loop, const receiver_options_t *options);

void receiver_destroy(receiver_t **self_p);

/* Makes zauth read the allow-list directory again (SIGHUP). Returns the
 * number of key files it holds, or -1 without CURVE. Loop thread only. */
int receiver_reload_allow_list(receiver_t *self);

/* Counters as of now. Loop thread only. */
void receiver_get_stats(receiver_t *self, receiver_stats_t *stats);

/* Copies the counters and up to max agents (in order of first contact) as of
 * the last housekeeping tick, at most 100 ms old. Any thread. Returns the
 * number of agents copied. */
size_t receiver_snapshot(receiver_t *self, receiver_stats_t *stats, receiver_agent_t *agents,
                         size_t max);

/* Checks a decoded batch for what the store relies on: version, agent id and
 * region, 1..RECEIVER_MAX_BATCH_EVENTS events, each with an eventID and a
 * record within their size limits. Returns 0, or -1 with the reason. */
int receiver_check_batch(const Cairn__Batch *batch, char *reason, size_t size);

#endif
