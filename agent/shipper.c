/* shipper.c: spool -> aggregator (see shipper.h).
 *
 * DESIGN: the shipper lives in the agent's main zloop: a timer every
 * linger_ms drives the connection state (hello, heartbeat, silence, ack
 * timeouts) and packs what the spool holds beyond the last sent seq into
 * batches while the window has room; a reader takes the aggregator's
 * messages. In-flight batches are a ring of seq ranges, oldest first;
 * nothing else is kept, because the spool holds the events themselves until
 * their Ack.
 *
 * The window (window_bytes) bounds what is unacknowledged, not what the
 * agent holds: libzmq may keep only SHIPPER_QUEUED batches queued for its
 * I/O thread (SNDHWM). While that queue is full, a POLLOUT poller waits
 * for room, and the next batch is read from the spool only then, so the
 * rest of the window is in the kernel's socket buffers and the aggregator,
 * not in the agent's heap.
 *
 * States: not welcomed (a Hello is out, or a reconnect is scheduled after a
 * backoff) and welcomed (batches flow). Any trouble — silence, an ack
 * timeout, a RETRY or a Refusal — closes the DEALER, dropping whatever libzmq
 * still queued for a dead connection, and starts over from the oldest
 * unacknowledged seq (go-back-N). Acks for ranges already acknowledged are
 * ignored; the aggregator's dedup makes resends harmless.
 *
 * A Batch is built without unpacking the spooled events: the header fields
 * are packed by protobuf-c, then each spooled Event (already a packed Event
 * message) is appended as field 5 (tag + length + bytes), which is exactly
 * how protobuf encodes a repeated message field. The AgentMessage envelope
 * (field 2, length-delimited) is then written just before the batch in the
 * space reserved for it, so one buffer, sized at start, serves every batch. */
#include "shipper.h"

#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_wire.h"
#include "cairn_time.h"
#include "cairn.pb-c.h"
#include "event.h"

#include <pthread.h>
#include <string.h>

#define SHIPPER_HEAD_ROOM   16    /* envelope tag + length, written before a batch */
#define SHIPPER_BACKOFF_MIN 200   /* ms before the first reconnect */
#define SHIPPER_BACKOFF_MAX 10000 /* ms between reconnects, at most */
#define SHIPPER_REFUSED_MS  30000 /* ms before trying again after a Refusal */
#define SHIPPER_PROGRESS_MS 10000 /* ms between backlog reports */
#define SHIPPER_PROGRESS_MIN_EVENTS 50000 /* a backlog worth reporting */
#define SHIPPER_QUEUED      2     /* messages libzmq may queue for its I/O thread */

typedef struct {
    uint64_t first_seq;
    uint64_t last_seq;
    int64_t sent_ms; /* monotonic */
    size_t bytes;    /* of its message */
} s_flight_t;

struct shipper {
    spool_t *spool;
    zloop_t *loop;
    zsock_t *dealer;
    zcert_t *cert;          /* this agent's keypair, when CURVE is on */
    char *server_key;       /* the aggregator's public key (Z85), when CURVE is on */
    int timer_id;
    shipper_options_t options;
    char *endpoint;
    char *agent_id;
    char *region;
    uint8_t *buffer;        /* the batch being built, after SHIPPER_HEAD_ROOM */
    size_t buffer_cap;
    size_t buffer_len;      /* bytes used after the head room */
    size_t batch_count;     /* events in the batch being built */
    uint64_t batch_last_seq;
    s_flight_t *flights;    /* ring of window_batches */
    size_t flight_head;     /* oldest */
    size_t flight_count;
    size_t flight_bytes;    /* of the batches in flight (window_bytes) */
    uint64_t next_seq;      /* next spool seq to send */
    bool is_welcomed;       /* a Welcome arrived on this connection */
    int64_t hello_sent_ms;  /* monotonic; 0 when no Hello is out */
    bool is_awaiting_room;  /* a POLLOUT poller waits for libzmq's queue */
    int64_t connect_at_ms;  /* monotonic time of the next (re)connect */
    int64_t backoff_ms;     /* next reconnect delay */
    int64_t last_heartbeat_ms; /* monotonic */
    int64_t progress_at_ms; /* monotonic time of the last backlog report */
    uint64_t progress_acked; /* events acked at that time */
    bool is_draining;       /* a large backlog was reported */
    shipper_stats_t stats;        /* loop thread's counters */
    pthread_mutex_t snapshot_lock; /* guards snapshot */
    bool is_lock_ready;
    shipper_stats_t snapshot;     /* copy for other threads, refreshed each tick */
};

static int s_on_message(zloop_t *loop, zsock_t *reader, void *arg);

static void s_end_await_room(shipper_t *self)
{
    if (!self->is_awaiting_room)
        return;
    zmq_pollitem_t item = {zsock_resolve(self->dealer), 0, ZMQ_POLLOUT, 0};
    zloop_poller_end(self->loop, &item);
    self->is_awaiting_room = false;
}

static void s_close(shipper_t *self)
{
    if (self->dealer) {
        s_end_await_room(self);
        zloop_reader_end(self->loop, self->dealer);
        zsock_destroy(&self->dealer);
    }
    self->is_welcomed = false;
    self->stats.is_connected = 0;
    self->hello_sent_ms = 0;
}

/* Sends a small message (Hello, Heartbeat). Returns 0, or -1 if it would block. */
static int s_send_message(shipper_t *self, const Cairn__AgentMessage *message)
{
    uint8_t buf[1024];
    size_t len = cairn__agent_message__get_packed_size(message);
    if (len > sizeof buf)
        return -1;
    cairn__agent_message__pack(message, buf);
    zframe_t *frame = zframe_new(buf, len);
    if (zframe_send(&frame, self->dealer, ZFRAME_DONTWAIT) != 0) {
        zframe_destroy(&frame);
        return -1;
    }
    return 0;
}

static int s_connect(shipper_t *self)
{
    s_close(self);
    self->dealer = zsock_new(ZMQ_DEALER);
    if (!self->dealer)
        return -1;
    zsock_set_linger(self->dealer, 0);
    zsock_set_sndhwm(self->dealer, SHIPPER_QUEUED);
    zsock_set_reconnect_ivl(self->dealer, SHIPPER_BACKOFF_MIN);
    zsock_set_reconnect_ivl_max(self->dealer, SHIPPER_BACKOFF_MAX);
    if (self->cert) {
        zcert_apply(self->cert, self->dealer);
        zsock_set_curve_serverkey(self->dealer, self->server_key);
    }
    if (zsock_connect(self->dealer, "%s", self->endpoint) != 0) {
        cairn_log_error("shipper[%s]: cannot connect to %s: %s", self->region, self->endpoint,
                        zmq_strerror(zmq_errno()));
        s_close(self);
        return -1;
    }
    self->stats.reconnects++;
    zloop_reader(self->loop, self->dealer, s_on_message, self);

    Cairn__Hello hello = CAIRN__HELLO__INIT;
    hello.version = CAIRN__VERSION__VERSION_1;
    hello.agent_id = self->agent_id;
    hello.region = self->region;
    hello.spool_id = (char *)spool_id(self->spool);
    hello.software = "cairn-agent " CAIRN_VERSION;
    Cairn__AgentMessage message = CAIRN__AGENT_MESSAGE__INIT;
    message.body_case = CAIRN__AGENT_MESSAGE__BODY_HELLO;
    message.hello = &hello;
    s_send_message(self, &message);
    self->hello_sent_ms = cairn_time_mono_ms();
    return 0;
}

/* Drops the connection, forgets what is in flight (go-back-N) and schedules
 * a reconnect after the current backoff. why is logged once, here. */
static void s_restart(shipper_t *self, const char *why, int64_t delay_ms)
{
    uint64_t from = self->flight_count ? self->flights[self->flight_head].first_seq : self->next_seq;
    cairn_log_warning("shipper[%s]: %s; reconnecting to %s in %lld ms, resending from seq %llu",
                      self->region, why, self->endpoint, (long long)delay_ms,
                      (unsigned long long)from);
    self->next_seq = from;
    if (self->flight_count)
        self->stats.resends++;
    self->flight_count = 0;
    self->flight_bytes = 0;
    s_close(self);
    self->connect_at_ms = cairn_time_mono_ms() + delay_ms;
}

static int64_t s_next_backoff(shipper_t *self)
{
    int64_t delay = self->backoff_ms;
    self->backoff_ms = self->backoff_ms * 2 > SHIPPER_BACKOFF_MAX ? SHIPPER_BACKOFF_MAX
                                                                  : self->backoff_ms * 2;
    return delay;
}

static int s_pack_event(void *ctx, uint64_t seq, const uint8_t *data, size_t len)
{
    shipper_t *self = ctx;
    uint8_t head[11];
    size_t head_len = 0;
    head[head_len++] = (5 << 3) | 2; /* Batch field 5 (events), length-delimited */
    head_len += cairn_wire_put_varint(len, head + head_len);
    uint8_t *out = self->buffer + SHIPPER_HEAD_ROOM + self->buffer_len;
    if (SHIPPER_HEAD_ROOM + self->buffer_len + head_len + len > self->buffer_cap)
        return 1; /* cannot happen with the sizing in shipper_new; stop safely */
    memcpy(out, head, head_len);
    memcpy(out + head_len, data, len);
    self->buffer_len += head_len + len;
    self->batch_count++;
    self->batch_last_seq = seq;
    return 0;
}

static void s_fill_window(shipper_t *self);

static int s_on_room(zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void)loop;
    (void)item;
    shipper_t *self = arg;
    s_end_await_room(self);
    s_fill_window(self);
    return 0;
}

/* Has libzmq room for a batch? If not, polls for it (once). */
static bool s_has_room(shipper_t *self)
{
    if (zsock_events(self->dealer) & ZMQ_POLLOUT)
        return true;
    if (!self->is_awaiting_room) {
        zmq_pollitem_t item = {zsock_resolve(self->dealer), 0, ZMQ_POLLOUT, 0};
        self->is_awaiting_room = zloop_poller(self->loop, &item, s_on_room, self) == 0;
    }
    return false;
}

/* Packs and sends one batch from next_seq. Returns 1 if a batch was sent, 0
 * if nothing is pending or libzmq's queue is full, -1 on error. */
static int s_send_batch(shipper_t *self)
{
    if (!s_has_room(self))
        return 0;
    Cairn__Batch header = CAIRN__BATCH__INIT;
    header.version = CAIRN__VERSION__VERSION_1;
    header.agent_id = self->agent_id;
    header.region = self->region;
    header.first_seq = self->next_seq;
    header.spool_id = (char *)spool_id(self->spool);
    self->buffer_len = cairn__batch__pack(&header, self->buffer + SHIPPER_HEAD_ROOM);
    self->batch_count = 0;
    long n = spool_read(self->spool, self->next_seq, self->options.batch_max_events,
                        self->options.batch_max_bytes, s_pack_event, self);
    if (n <= 0 || self->batch_count == 0)
        return n < 0 ? -1 : 0;
    /* The envelope: AgentMessage field 2 (batch), length-delimited. */
    uint8_t head[11];
    size_t head_len = 0;
    head[head_len++] = (2 << 3) | 2;
    head_len += cairn_wire_put_varint(self->buffer_len, head + head_len);
    uint8_t *start = self->buffer + SHIPPER_HEAD_ROOM - head_len;
    memcpy(start, head, head_len);
    zframe_t *frame = zframe_new(start, head_len + self->buffer_len);
    if (zframe_send(&frame, self->dealer, ZFRAME_DONTWAIT) != 0) {
        zframe_destroy(&frame);
        return 0; /* HWM reached: the timer will try again */
    }
    s_flight_t *f =
        &self->flights[(self->flight_head + self->flight_count) % self->options.window_batches];
    f->first_seq = self->next_seq;
    f->last_seq = self->batch_last_seq;
    f->sent_ms = cairn_time_mono_ms();
    f->bytes = head_len + self->buffer_len;
    self->flight_count++;
    self->flight_bytes += f->bytes;
    if (self->flight_bytes > self->stats.inflight_bytes_max)
        self->stats.inflight_bytes_max = self->flight_bytes;
    self->next_seq = self->batch_last_seq + 1;
    self->stats.batches_sent++;
    self->stats.events_sent += self->batch_count;
    cairn_log_debug("shipper[%s]: sent batch %llu-%llu (%zu events, %zu bytes)", self->region,
                    (unsigned long long)f->first_seq, (unsigned long long)f->last_seq,
                    self->batch_count, self->buffer_len);
    return 1;
}

static int s_tick(shipper_t *self);

/* While a large backlog drains (after an outage), says every 10 s how much
 * is left and how fast it goes, and once when it is done. */
static void s_report_backlog(shipper_t *self, int64_t now)
{
    if (now - self->progress_at_ms < SHIPPER_PROGRESS_MS)
        return;
    uint64_t pending = spool_pending_count(self->spool);
    uint64_t acked = self->stats.events_acked;
    bool is_large = pending > SHIPPER_PROGRESS_MIN_EVENTS;
    if (is_large && self->progress_at_ms) {
        double rate = (double)(acked - self->progress_acked) * 1000.0 /
                      (double)(now - self->progress_at_ms);
        cairn_log_notice("shipper[%s]: backlog %llu events, draining at %.0f events/s",
                         self->region, (unsigned long long)pending, rate);
    } else if (!is_large && self->is_draining)
        cairn_log_notice("shipper[%s]: backlog drained (%llu events pending)", self->region,
                         (unsigned long long)pending);
    self->is_draining = is_large;
    self->progress_at_ms = now;
    self->progress_acked = acked;
}

static int s_on_tick(zloop_t *loop, int timer_id, void *arg)
{
    shipper_t *self = arg;
    int rc = s_tick(self);
    self->stats.inflight_batches = self->flight_count;
    self->stats.inflight_bytes = self->flight_bytes;
    pthread_mutex_lock(&self->snapshot_lock);
    self->snapshot = self->stats;
    pthread_mutex_unlock(&self->snapshot_lock);
    return rc;
}

/* Sends batches while the window and libzmq's queue have room. */
static void s_fill_window(shipper_t *self)
{
    if (!self->dealer || !self->is_welcomed)
        return;
    /* Acked events may have been deleted under next_seq. */
    if (self->next_seq <= spool_acked_seq(self->spool))
        self->next_seq = spool_acked_seq(self->spool) + 1;
    /* The window: batches and bytes in flight. A batch goes out while the
     * bytes are under the bound, so it may pass it by one batch. */
    while (self->flight_count < self->options.window_batches &&
           self->flight_bytes < self->options.window_bytes && s_send_batch(self) == 1)
        ;
}

static int s_tick(shipper_t *self)
{
    int64_t now = cairn_time_mono_ms();
    if (!self->dealer) {
        if (now >= self->connect_at_ms && s_connect(self) != 0)
            self->connect_at_ms = now + s_next_backoff(self);
        return 0;
    }
    char why[160];
    if (!self->is_welcomed) {
        if (now - self->hello_sent_ms > self->options.silence_ms) {
            snprintf(why, sizeof why, "no answer to hello after %lld ms",
                     (long long)(now - self->hello_sent_ms));
            s_restart(self, why, s_next_backoff(self));
        }
        return 0;
    }
    if (now - self->stats.last_heard_ms > self->options.silence_ms) {
        snprintf(why, sizeof why, "aggregator silent for %lld ms",
                 (long long)(now - self->stats.last_heard_ms));
        s_restart(self, why, s_next_backoff(self));
        return 0;
    }
    if (self->flight_count &&
        now - self->flights[self->flight_head].sent_ms > self->options.ack_timeout_ms) {
        snprintf(why, sizeof why, "batch %llu-%llu not acknowledged after %lld ms",
                 (unsigned long long)self->flights[self->flight_head].first_seq,
                 (unsigned long long)self->flights[self->flight_head].last_seq,
                 (long long)self->options.ack_timeout_ms);
        s_restart(self, why, 0);
        return 0;
    }
    s_fill_window(self);
    s_report_backlog(self, now);
    if (now - self->last_heartbeat_ms >= self->options.heartbeat_ms) {
        Cairn__Heartbeat heartbeat = CAIRN__HEARTBEAT__INIT;
        heartbeat.sent_ms = cairn_time_now_ms();
        heartbeat.spool_pending = spool_pending_count(self->spool);
        self->last_heartbeat_ms = now;
        Cairn__AgentMessage message = CAIRN__AGENT_MESSAGE__INIT;
        message.body_case = CAIRN__AGENT_MESSAGE__BODY_HEARTBEAT;
        message.heartbeat = &heartbeat;
        s_send_message(self, &message);
    }
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
        self->flight_bytes -= self->flights[self->flight_head].bytes;
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

static void s_on_welcome(shipper_t *self, const Cairn__Welcome *welcome)
{
    self->is_welcomed = true;
    self->stats.is_connected = 1;
    self->hello_sent_ms = 0;
    self->backoff_ms = SHIPPER_BACKOFF_MIN;
    /* The aggregator already stored this spool through last_seq (an ack
     * lost to a crash): those need not travel again. */
    if (welcome->last_seq > spool_acked_seq(self->spool) &&
        welcome->last_seq < spool_next_seq(self->spool))
        spool_ack_through(self->spool, welcome->last_seq);
    self->next_seq = spool_acked_seq(self->spool) + 1;
    self->flight_count = 0;
    self->flight_bytes = 0;
    cairn_log_notice("shipper[%s]: connected to aggregator %s at %s; it has this spool through "
                     "seq %llu; %llu events to send",
                     self->region, welcome->aggregator_id, self->endpoint,
                     (unsigned long long)welcome->last_seq,
                     (unsigned long long)spool_pending_count(self->spool));
}

static int s_on_message(zloop_t *loop, zsock_t *reader, void *arg)
{
    shipper_t *self = arg;
    zframe_t *frame = zframe_recv(reader);
    if (!frame)
        return 0;
    Cairn__AggregatorMessage *message =
        cairn__aggregator_message__unpack(NULL, zframe_size(frame), zframe_data(frame));
    zframe_destroy(&frame);
    if (!message) {
        cairn_log_warning("shipper[%s]: undecodable message from %s ignored", self->region,
                          self->endpoint);
        return 0;
    }
    self->stats.last_heard_ms = cairn_time_mono_ms();
    char why[400];
    switch (message->body_case) {
    case CAIRN__AGGREGATOR_MESSAGE__BODY_WELCOME:
        s_on_welcome(self, message->welcome);
        break;
    case CAIRN__AGGREGATOR_MESSAGE__BODY_REFUSAL:
        self->stats.refusals++;
        snprintf(why, sizeof why, "aggregator refused this agent: %s", message->refusal->reason);
        cairn_log_error("shipper[%s]: %s", self->region, why);
        s_restart(self, "refused", SHIPPER_REFUSED_MS);
        break;
    case CAIRN__AGGREGATOR_MESSAGE__BODY_ACK:
        if (message->ack->status == CAIRN__ACK__STATUS__OK)
            s_acknowledge(self, message->ack);
        else {
            bool is_rejected = message->ack->status == CAIRN__ACK__STATUS__REJECTED;
            snprintf(why, sizeof why, "aggregator %s batch %llu-%llu: %s",
                     is_rejected ? "rejected" : "deferred",
                     (unsigned long long)message->ack->first_seq,
                     (unsigned long long)message->ack->last_seq, message->ack->reason);
            /* A rejection will not heal by itself: wait longer before trying again. */
            s_restart(self, why, is_rejected ? SHIPPER_REFUSED_MS : 1000);
        }
        break;
    default: /* heartbeats only tell that the aggregator is alive */
        break;
    }
    cairn__aggregator_message__free_unpacked(message, NULL);
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
    self->options.secret_key_file = NULL;
    self->options.aggregator_public_key_file = NULL;
    if (self->options.window_batches == 0)
        self->options.window_batches = 1;
    if (self->options.window_bytes == 0)
        self->options.window_bytes = 8 << 20;
    if (self->options.heartbeat_ms <= 0)
        self->options.heartbeat_ms = 1000;
    if (self->options.silence_ms <= 0)
        self->options.silence_ms = 5000;
    self->backoff_ms = SHIPPER_BACKOFF_MIN;
    self->timer_id = -1;
    self->is_lock_ready = pthread_mutex_init(&self->snapshot_lock, NULL) == 0;
    /* Head room + header + every event's framing; one event may exceed
     * batch_max_bytes. */
    self->buffer_cap = SHIPPER_HEAD_ROOM + options->batch_max_bytes + 2 * EVENT_MAX_RECORD_BYTES +
                       4096 + options->batch_max_events * 16;
    self->buffer = cairn_malloc(self->buffer_cap);
    self->flights = cairn_calloc(self->options.window_batches, sizeof *self->flights);
    self->next_seq = spool_acked_seq(spool) + 1;
    int rc = self->is_lock_ready ? 0 : -1;
    if (rc == 0 && options->secret_key_file) {
        self->cert = zcert_load(options->secret_key_file);
        zcert_t *server = self->cert ? zcert_load(options->aggregator_public_key_file) : NULL;
        if (!self->cert)
            cairn_log_error("shipper[%s]: cannot load this agent's key %s", self->region,
                            options->secret_key_file);
        else if (!server)
            cairn_log_error("shipper[%s]: cannot load the aggregator's public key %s",
                            self->region, options->aggregator_public_key_file);
        else
            self->server_key = cairn_strdup(zcert_public_txt(server));
        zcert_destroy(&server);
        rc = self->server_key ? 0 : -1;
    }
    if (rc == 0)
        rc = s_connect(self);
    if (rc != 0) {
        shipper_destroy(&self);
        return NULL;
    }
    self->timer_id = zloop_timer(loop, (size_t)(options->linger_ms > 0 ? options->linger_ms : 1), 0,
                                 s_on_tick, self);
    cairn_log_info("shipper[%s]: shipping to %s (%s) from seq %llu (%llu pending)", self->region,
                   self->endpoint, self->cert ? "CURVE" : "plain text",
                   (unsigned long long)self->next_seq,
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
    s_close(self);
    zcert_destroy(&self->cert);
    if (self->is_lock_ready)
        pthread_mutex_destroy(&self->snapshot_lock);
    free(self->server_key);
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
    pthread_mutex_lock(&self->snapshot_lock);
    *stats = self->snapshot;
    pthread_mutex_unlock(&self->snapshot_lock);
}
