/* receiver.c: agents' Batches in, Acks out (see receiver.h).
 *
 * DESIGN: when the ROUTER is readable, the receiver drains up to group_max
 * messages without blocking, decodes and checks each, stores every valid
 * batch in ONE LMDB transaction (group commit: many agents, one fsync), and
 * only then sends the Acks. A message that is not a valid Batch is answered
 * REJECTED with the reason and counted; it never reaches the store and
 * never affects the other batches of the group. If the commit fails, every
 * batch of the group is answered RETRY: the agents keep them spooled.
 *
 * A housekeeping timer advances the store's watermark, which is how the
 * delivery actor learns that a window has closed: this thread is the only
 * writer of events, so between two of its transactions nothing older than
 * "now" can still arrive. */
#include "receiver.h"

#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_time.h"
#include "event.h"

#include <string.h>

typedef struct {
    zframe_t *identity;      /* the agent's ROUTER identity */
    Cairn__Batch *batch;     /* NULL when rejected */
    char reason[200];        /* why it was rejected */
    uint64_t first_seq;
    uint64_t last_seq;
} s_item_t;

struct receiver {
    store_t *store;
    zloop_t *loop;
    zsock_t *router;
    int timer_id;
    char *listen;
    size_t group_max;
    s_item_t *items;               /* one group, reused */
    const Cairn__Batch **batches;  /* the valid ones of the group */
    store_batch_result_t *results;
    receiver_stats_t stats;
};

/* Checks what the store relies on. Returns 0 or -1 with reason. */
static int s_check(const Cairn__Batch *b, char *reason, size_t size)
{
    if (b->version != CAIRN__VERSION__VERSION_1) {
        snprintf(reason, size, "unsupported protocol version %d (this aggregator speaks 1)",
                 (int)b->version);
        return -1;
    }
    if (!b->agent_id || !*b->agent_id || !b->region || !*b->region) {
        snprintf(reason, size, "batch without agent id or region");
        return -1;
    }
    if (b->n_events == 0 || b->n_events > RECEIVER_MAX_BATCH_EVENTS) {
        snprintf(reason, size, "batch of %zu events (1..%d allowed)", b->n_events,
                 RECEIVER_MAX_BATCH_EVENTS);
        return -1;
    }
    if (b->first_seq == 0) {
        snprintf(reason, size, "batch with first_seq 0");
        return -1;
    }
    for (size_t i = 0; i < b->n_events; i++) {
        const Cairn__Event *e = b->events[i];
        if (!e->event_id || !*e->event_id || e->json.len == 0 || !e->json.data) {
            snprintf(reason, size, "event %zu has no eventID or no record", i);
            return -1;
        }
        if (strlen(e->event_id) > EVENT_ID_MAX_BYTES || e->json.len > EVENT_MAX_RECORD_BYTES * 2) {
            snprintf(reason, size, "event %zu: eventID or record over its size limit", i);
            return -1;
        }
    }
    return 0;
}

static void s_send_ack(receiver_t *self, s_item_t *item, Cairn__Ack__Status status,
                       const store_batch_result_t *result, const char *reason)
{
    Cairn__Ack ack = CAIRN__ACK__INIT;
    ack.version = CAIRN__VERSION__VERSION_1;
    ack.status = status;
    ack.first_seq = item->first_seq;
    ack.last_seq = item->last_seq;
    if (result) {
        ack.stored_count = result->stored_count;
        ack.duplicate_count = result->duplicate_count;
    }
    ack.reason = (char *)(reason ? reason : "");
    uint8_t buf[512];
    size_t len = cairn__ack__pack(&ack, buf);
    zmsg_t *msg = zmsg_new();
    zmsg_append(msg, &item->identity);
    zmsg_addmem(msg, buf, len);
    if (zmsg_send(&msg, self->router) != 0)
        zmsg_destroy(&msg); /* agent gone: it resends after its timeout */
}

static int s_on_readable(zloop_t *loop, zsock_t *reader, void *arg)
{
    receiver_t *self = arg;
    size_t n = 0, valid = 0;
    for (size_t tries = 0; n < self->group_max; tries++) {
        /* The loop said readable; after the first, take only what is queued. */
        if (tries > 0 && !(zsock_events(self->router) & ZMQ_POLLIN))
            break;
        zmsg_t *msg = zmsg_recv(self->router);
        if (!msg)
            break;
        self->stats.batches_received++;
        if (zmsg_size(msg) < 2) { /* no identity to answer: only count it */
            self->stats.batches_rejected++;
            zmsg_destroy(&msg);
            continue;
        }
        s_item_t *item = &self->items[n++];
        memset(item, 0, sizeof *item);
        item->identity = zmsg_pop(msg);
        zframe_t *payload = zmsg_pop(msg);
        if (!payload || zmsg_size(msg) != 0)
            snprintf(item->reason, sizeof item->reason, "expected one frame per batch");
        else {
            item->batch = cairn__batch__unpack(NULL, zframe_size(payload), zframe_data(payload));
            if (!item->batch)
                snprintf(item->reason, sizeof item->reason,
                         "undecodable batch (%zu bytes, not a protobuf Batch)",
                         zframe_size(payload));
            else {
                item->first_seq = item->batch->first_seq;
                item->last_seq = item->batch->first_seq + item->batch->n_events - 1;
                if (s_check(item->batch, item->reason, sizeof item->reason) != 0) {
                    cairn__batch__free_unpacked(item->batch, NULL);
                    item->batch = NULL;
                }
            }
        }
        zframe_destroy(&payload);
        zmsg_destroy(&msg);
        if (item->batch)
            self->batches[valid++] = item->batch;
        else {
            self->stats.batches_rejected++;
            cairn_log_warning("receiver: rejected a message: %s", item->reason);
        }
    }
    int rc = valid ? store_put_batches(self->store, self->batches, valid, cairn_time_now_ms(),
                                       self->results)
                   : 0;
    if (valid && rc == 0)
        self->stats.commits++;
    size_t v = 0;
    for (size_t i = 0; i < n; i++) {
        s_item_t *item = &self->items[i];
        if (!item->batch)
            s_send_ack(self, item, CAIRN__ACK__STATUS__REJECTED, NULL, item->reason);
        else if (rc == 0) {
            const store_batch_result_t *r = &self->results[v++];
            self->stats.events_stored += r->stored_count;
            self->stats.events_duplicate += r->duplicate_count;
            self->stats.batches_resent += r->is_resend;
            s_send_ack(self, item, CAIRN__ACK__STATUS__OK, r, NULL);
        } else {
            self->stats.batches_deferred++;
            s_send_ack(self, item, CAIRN__ACK__STATUS__RETRY, NULL,
                       rc == STORE_FULL ? "store full" : "store write failed");
        }
        if (item->batch)
            cairn__batch__free_unpacked(item->batch, NULL);
        zframe_destroy(&item->identity);
    }
    if (rc == STORE_FULL)
        cairn_log_error("receiver: store full; %zu batches deferred (agents keep them spooled)",
                        valid);
    return 0;
}

static int s_on_tick(zloop_t *loop, int timer_id, void *arg)
{
    receiver_t *self = arg;
    store_advance_watermark(self->store, cairn_time_now_ms());
    return 0;
}

receiver_t *receiver_new(store_t *store, zloop_t *loop, const receiver_options_t *options)
{
    receiver_t *self = cairn_calloc(1, sizeof *self);
    self->store = store;
    self->loop = loop;
    self->timer_id = -1;
    self->listen = cairn_strdup(options->listen);
    self->group_max = options->group_max ? options->group_max : 64;
    self->items = cairn_calloc(self->group_max, sizeof *self->items);
    self->batches = cairn_calloc(self->group_max, sizeof *self->batches);
    self->results = cairn_calloc(self->group_max, sizeof *self->results);
    self->router = zsock_new(ZMQ_ROUTER);
    if (self->router) {
        zsock_set_maxmsgsize(self->router, RECEIVER_MAX_MESSAGE_BYTES);
        zsock_set_linger(self->router, 1000);
        zsock_set_router_mandatory(self->router, 0);
    }
    if (!self->router || zsock_bind(self->router, "%s", self->listen) < 0) {
        cairn_log_error("receiver: cannot bind %s: %s", self->listen, zmq_strerror(zmq_errno()));
        receiver_destroy(&self);
        return NULL;
    }
    zloop_reader(loop, self->router, s_on_readable, self);
    self->timer_id = zloop_timer(loop, 100, 0, s_on_tick, self);
    store_advance_watermark(store, cairn_time_now_ms());
    cairn_log_info("receiver: listening on %s", self->listen);
    return self;
}

void receiver_destroy(receiver_t **self_p)
{
    receiver_t *self = *self_p;
    if (!self)
        return;
    if (self->timer_id >= 0)
        zloop_timer_end(self->loop, self->timer_id);
    if (self->router) {
        zloop_reader_end(self->loop, self->router);
        zsock_destroy(&self->router);
    }
    free(self->items);
    free(self->batches);
    free(self->results);
    free(self->listen);
    free(self);
    *self_p = NULL;
}

void receiver_get_stats(receiver_t *self, receiver_stats_t *stats)
{
    *stats = self->stats;
}
