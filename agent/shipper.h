/* shipper.h: sends spooled events to the aggregator as protobuf Batches over
 * a ZeroMQ DEALER and deletes them from the spool when acknowledged.
 *
 * Protocol (proto/cairn.proto, AgentMessage/AggregatorMessage): on every
 * (re)connection the shipper sends a Hello and waits for a Welcome (which
 * says what of this spool is already stored) or a Refusal; then Batches go
 * out and Acks come back; a Heartbeat (with the spool's backlog) goes every
 * heartbeat interval and is echoed, so a silent aggregator is noticed and
 * the shipper reconnects with backoff while the intake keeps spooling.
 *
 * At-least-once: a batch stays in the spool until its Ack arrives; after
 * ack_timeout without one, or an Ack asking to retry, the shipper reconnects
 * and resends from the oldest unacknowledged batch (go-back-N). The
 * aggregator's dedup on eventID makes the result exactly-once.
 *
 * Runs in the caller's zloop (the agent's main thread). */
#ifndef CAIRN_SHIPPER_H
#define CAIRN_SHIPPER_H

#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

#include "spool.h"

typedef struct shipper shipper_t;

typedef struct {
    const char *endpoint;     /* "tcp://host:port" of the aggregator */
    const char *agent_id;
    const char *region;
    size_t batch_max_events;  /* a batch closes at this many events */
    size_t batch_max_bytes;   /* ... or this many bytes of packed events */
    int64_t linger_ms;        /* how often pending events are packed and sent */
    size_t window_batches;    /* unacknowledged batches in flight, at most */
    size_t window_bytes;      /* and their bytes (0: 6 MiB); the last batch sent may pass it */
    int64_t ack_timeout_ms;   /* resend after this long without an ack */
    int64_t heartbeat_ms;     /* send a heartbeat this often */
    int64_t silence_ms;       /* reconnect after this long without hearing the aggregator */
    /* CURVE: both set, or both NULL for plain text (allowed only when the
     * config says so explicitly). */
    const char *secret_key_file;            /* this agent's keypair (keygen's PATH_secret) */
    const char *aggregator_public_key_file; /* the aggregator's public key (keygen's PATH) */
} shipper_options_t;

typedef struct {
    uint64_t batches_sent;    /* includes resends */
    uint64_t events_sent;     /* includes resends */
    uint64_t batches_acked;
    uint64_t events_acked;
    uint64_t resends;         /* go-back-N restarts */
    uint64_t acked_seq;       /* highest spool seq acknowledged */
    uint64_t reconnects;      /* connections made anew */
    uint64_t refusals;        /* Refusals received */
    int is_connected;         /* welcomed on the current connection */
    int64_t last_heard_ms;    /* monotonic time of the last message from the aggregator */
    uint64_t inflight_batches;   /* batches sent and not yet acknowledged (the window) */
    uint64_t inflight_bytes;     /* their bytes; under window_bytes before each send */
    uint64_t inflight_bytes_max; /* most bytes in flight at once since start: at most
                                  * window_bytes plus the last batch sent */
} shipper_stats_t;

/* Connects and registers the shipper's socket and timer with loop. The spool
 * and loop are borrowed. Returns NULL after logging why. */
shipper_t *shipper_new(spool_t *spool, zloop_t *loop, const shipper_options_t *options);

/* Unregisters from the loop and frees. Unacknowledged events stay spooled. */
void shipper_destroy(shipper_t **self_p);

/* Copies the counters as of the shipper's last tick (at most linger_ms
 * old). Any thread. */
void shipper_get_stats(shipper_t *self, shipper_stats_t *stats);

#endif
