/* shipper.c: spool -> aggregator (see shipper.h).
 *
 * DESIGN: the shipper lives in the agent's main zloop: a timer every
 * linger_ms packs what the spool holds beyond the last sent seq into batches
 * while the window has room, and a reader takes Acks. In-flight batches are
 * a ring of seq ranges, oldest first; nothing else is kept, because the
 * spool holds the events themselves until their Ack.
 *
 * A Batch is built without unpacking the spooled events: the header fields
 * are packed by protobuf-c, then each spooled Event (already a packed Event
 * message) is appended as field 5 (tag + length + bytes), which is exactly
 * how protobuf encodes a repeated message field. One buffer, sized at start
 * from the options, is reused for every batch.
 *
 * Resend: when the oldest batch waited longer than ack_timeout_ms (or an Ack
 * says RETRY), the DEALER is closed and made anew, dropping whatever libzmq
 * still queued for a dead connection, and sending restarts from the oldest
 * unacknowledged seq. Acks for ranges already acknowledged are ignored. */
#include "shipper.h"

#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_time.h"
#include "cairn.pb-c.h"
#include "event.h"

#include <string.h>

typedef struct {
    uint64_t first_seq;
    uint64_t last_seq;
    int64_t sent_ms; /* monotonic */
} s_flight_t;

struct shipper {
    spool_t *spool;
    zloop_t *loop;
    zsock_t *dealer;
    int timer_id;
    shipper_options_t options;
    char *endpoint;
    char *agent_id;
    char *region;
    uint8_t *buffer;        /* the batch being built */
    size_t buffer_cap;
    size_t buffer_len;
    size_t batch_count;     /* events in the batch being built */
    uint64_t batch_last_seq;
    s_flight_t *flights;    /* ring of window_batches */
    size_t flight_head;     /* oldest */
    size_t flight_count;
    uint64_t next_seq;      /* next spool seq to send */
    int64_t retry_at_ms;    /* no sending before this (after RETRY) */
    shipper_stats_t stats;
};

static int s_on_ack(zloop_t *loop, zsock_t *reader, void *arg);

static size_t s_varint(uint64_t v, uint8_t *out)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

static int s_connect(shipper_t *self)
{
    if (self->dealer) {
        zloop_reader_end(self->loop, self->dealer);
        zsock_destroy(&self->dealer);
    }
    self->dealer = zsock_new(ZMQ_DEALER);
    if (!self->dealer)
        return -1;
    zsock_set_linger(self->dealer, 0);
    zsock_set_sndhwm(self->dealer, (int)self->options.window_batches * 2 + 16);
    zsock_set_reconnect_ivl(self->dealer, 200);
    zsock_set_reconnect_ivl_max(self->dealer, 5000);
    if (zsock_connect(self->dealer, "%s", self->endpoint) != 0) {
        cairn_log_error("shipper[%s]: cannot connect to %s: %s", self->region, self->endpoint,
                        zmq_strerror(zmq_errno()));
        return -1;
    }
    self->stats.is_connected = 0;
    return zloop_reader(self->loop, self->dealer, s_on_ack, self);
}

static int s_pack_event(void *ctx, uint64_t seq, const uint8_t *data, size_t len)
{
    shipper_t *self = ctx;
    uint8_t head[11];
    size_t head_len = 0;
    head[head_len++] = (5 << 3) | 2; /* field 5 (events), length-delimited */
    head_len += s_varint(len, head + head_len);
    if (self->buffer_len + head_len + len > self->buffer_cap)
        return 1; /* cannot happen with the sizing in shipper_new; stop safely */
    memcpy(self->buffer + self->buffer_len, head, head_len);
    memcpy(self->buffer + self->buffer_len + head_len, data, len);
    self->buffer_len += head_len + len;
    self->batch_count++;
    self->batch_last_seq = seq;
    return 0;
}

/* Packs and sends one batch from next_seq. Returns 1 if a batch was sent, 0
 * if nothing is pending, -1 on error. */
static int s_send_batch(shipper_t *self)
{
    Cairn__Batch header = CAIRN__BATCH__INIT;
    header.version = CAIRN__VERSION__VERSION_1;
    header.agent_id = self->agent_id;
    header.region = self->region;
    header.first_seq = self->next_seq;
    self->buffer_len = cairn__batch__pack(&header, self->buffer);
    self->batch_count = 0;
    long n = spool_read(self->spool, self->next_seq, self->options.batch_max_events,
                        self->options.batch_max_bytes, s_pack_event, self);
    if (n <= 0 || self->batch_count == 0)
        return n < 0 ? -1 : 0;
    zmsg_t *msg = zmsg_new();
    zmsg_addmem(msg, self->buffer, self->buffer_len);
    if (zmsg_send(&msg, self->dealer) != 0) {
        zmsg_destroy(&msg);
        return 0; /* HWM reached: the timer will try again */
    }
    s_flight_t *f =
        &self->flights[(self->flight_head + self->flight_count) % self->options.window_batches];
    f->first_seq = self->next_seq;
    f->last_seq = self->batch_last_seq;
    f->sent_ms = cairn_time_mono_ms();
    self->flight_count++;
    self->next_seq = self->batch_last_seq + 1;
    self->stats.batches_sent++;
    self->stats.events_sent += self->batch_count;
    cairn_log_debug("shipper[%s]: sent batch %llu-%llu (%zu events, %zu bytes)", self->region,
                    (unsigned long long)f->first_seq, (unsigned long long)f->last_seq,
                    self->batch_count, self->buffer_len);
    return 1;
}

/* Go-back-N: forget what is in flight, reconnect, resend from the oldest. */
static void s_resend(shipper_t *self, const char *why)
{
    uint64_t from = self->flight_count ? self->flights[self->flight_head].first_seq : self->next_seq;
    cairn_log_warning("shipper[%s]: %s; reconnecting to %s and resending from seq %llu",
                      self->region, why, self->endpoint, (unsigned long long)from);
    self->next_seq = from;
    self->flight_count = 0;
    self->stats.resends++;
    s_connect(self);
}

static int s_on_tick(zloop_t *loop, int timer_id, void *arg)
{
    shipper_t *self = arg;
    int64_t now = cairn_time_mono_ms();
    if (self->flight_count &&
        now - self->flights[self->flight_head].sent_ms > self->options.ack_timeout_ms) {
        char why[96];
        snprintf(why, sizeof why, "batch from seq %llu not acknowledged after %lld ms",
                 (unsigned long long)self->flights[self->flight_head].first_seq,
                 (long long)self->options.ack_timeout_ms);
        s_resend(self, why);
    }
    if (now < self->retry_at_ms)
        return 0;
    /* Acked events may have been deleted under next_seq after a restart. */
    if (self->next_seq <= spool_acked_seq(self->spool))
        self->next_seq = spool_acked_seq(self->spool) + 1;
    while (self->flight_count < self->options.window_batches && s_send_batch(self) == 1)
        ;
    return 0;
}

static void s_acknowledge(shipper_t *self, const Cairn__Ack *ack)
{
    /* The aggregator numbers a batch's events first_seq + i; after a spool
     * gap (a failed commit) the batch's real last seq is higher, so the
     * flight that began at first_seq decides what the ack covers. */
    uint64_t through = ack->last_seq;
    for (size_t i = 0; i < self->flight_count; i++) {
        const s_flight_t *f = &self->flights[(self->flight_head + i) % self->options.window_batches];
        if (f->first_seq == ack->first_seq && f->last_seq > through)
            through = f->last_seq;
    }
    if (through <= spool_acked_seq(self->spool))
        return; /* an ack for a resent batch already covered */
    /* Acks come in order on one connection; pop every batch it covers. */
    size_t popped = 0;
    while (self->flight_count && self->flights[self->flight_head].last_seq <= through) {
        self->flight_head = (self->flight_head + 1) % self->options.window_batches;
        self->flight_count--;
        popped++;
    }
    if (spool_ack_through(self->spool, through) != 0)
        return; /* logged; the events are resent later and deduplicated */
    self->stats.batches_acked += popped ? popped : 1;
    self->stats.events_acked += ack->stored_count + ack->duplicate_count;
    self->stats.acked_seq = through;
}

static int s_on_ack(zloop_t *loop, zsock_t *reader, void *arg)
{
    shipper_t *self = arg;
    zframe_t *frame = zframe_recv(reader);
    if (!frame)
        return 0;
    Cairn__Ack *ack = cairn__ack__unpack(NULL, zframe_size(frame), zframe_data(frame));
    zframe_destroy(&frame);
    if (!ack) {
        cairn_log_warning("shipper[%s]: undecodable ack from %s ignored", self->region,
                          self->endpoint);
        return 0;
    }
    if (!self->stats.is_connected) {
        self->stats.is_connected = 1;
        cairn_log_notice("shipper[%s]: aggregator %s is acknowledging", self->region,
                         self->endpoint);
    }
    if (ack->status == CAIRN__ACK__STATUS__OK)
        s_acknowledge(self, ack);
    else {
        char why[300];
        snprintf(why, sizeof why, "aggregator %s batch %llu-%llu: %s",
                 ack->status == CAIRN__ACK__STATUS__REJECTED ? "rejected" : "deferred",
                 (unsigned long long)ack->first_seq, (unsigned long long)ack->last_seq,
                 ack->reason);
        s_resend(self, why);
        /* A rejection will not heal by itself: wait longer before trying again. */
        self->retry_at_ms = cairn_time_mono_ms() +
                            (ack->status == CAIRN__ACK__STATUS__REJECTED ? 30000 : 1000);
    }
    cairn__ack__free_unpacked(ack, NULL);
    return 0;
}

shipper_t *shipper_new(spool_t *spool, zloop_t *loop, const shipper_options_t *options)
{
    shipper_t *self = cairn_calloc(1, sizeof *self);
    self->spool = spool;
    self->loop = loop;
    self->options = *options;
    self->endpoint = cairn_strdup(options->endpoint);
    self->agent_id = cairn_strdup(options->agent_id);
    self->region = cairn_strdup(options->region);
    self->options.endpoint = self->endpoint;
    self->options.agent_id = self->agent_id;
    self->options.region = self->region;
    if (self->options.window_batches == 0)
        self->options.window_batches = 1;
    /* Header + every event's framing; one event may exceed batch_max_bytes. */
    self->buffer_cap = options->batch_max_bytes + 2 * EVENT_MAX_RECORD_BYTES + 4096 +
                       options->batch_max_events * 16;
    self->buffer = cairn_malloc(self->buffer_cap);
    self->flights = cairn_calloc(self->options.window_batches, sizeof *self->flights);
    self->next_seq = spool_acked_seq(spool) + 1;
    self->timer_id = -1;
    if (s_connect(self) != 0) {
        shipper_destroy(&self);
        return NULL;
    }
    self->timer_id = zloop_timer(loop, (size_t)(options->linger_ms > 0 ? options->linger_ms : 1), 0,
                                 s_on_tick, self);
    cairn_log_info("shipper[%s]: shipping to %s from seq %llu (%llu pending)", self->region,
                   self->endpoint, (unsigned long long)self->next_seq,
                   (unsigned long long)spool_pending_count(spool));
    return self;
}

void shipper_destroy(shipper_t **self_p)
{
    shipper_t *self = *self_p;
    if (!self)
        return;
    if (self->timer_id >= 0)
        zloop_timer_end(self->loop, self->timer_id);
    if (self->dealer) {
        zloop_reader_end(self->loop, self->dealer);
        zsock_destroy(&self->dealer);
    }
    free(self->buffer);
    free(self->flights);
    free(self->endpoint);
    free(self->agent_id);
    free(self->region);
    free(self);
    *self_p = NULL;
}

void shipper_get_stats(shipper_t *self, shipper_stats_t *stats)
{
    *stats = self->stats;
}
