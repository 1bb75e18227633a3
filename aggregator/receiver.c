/* receiver.c: agents' messages in, answers out (see receiver.h).
 *
 * DESIGN: when the ROUTER is readable, the receiver drains up to group_max
 * messages without blocking. Hellos and Heartbeats are answered at once.
 * Batches are decoded and checked; every valid batch of the turn is stored
 * in ONE LMDB transaction (group commit: many agents, one fsync), and only
 * then are their Acks sent. A message that is not valid is answered (a
 * REJECTED Ack or a Refusal, with the reason) or, when it is not even an
 * AgentMessage, counted and dropped; it never reaches the store and never
 * affects the other messages of the turn. If the commit fails, every batch
 * of the group is answered RETRY: the agents keep them spooled.
 *
 * Identity: with CURVE, zauth admits only keys found in the allow-list
 * directory, and passes each key file's metadata (agent_id, region) to the
 * messages of that connection; a Hello or Batch must claim the agent id (and
 * region, if bound) its key is bound to.
 *
 * A housekeeping timer advances the store's watermark, which is how the
 * delivery actor learns that a window has closed: this thread is the only
 * writer of events, so between two of its transactions nothing older than
 * "now" can still arrive. After a second without a commit, the same timer
 * merges the index's runs a step per tick (store_merge), so that they do
 * not wait for the next burst. */
#include "receiver.h"

#include "cairn_arena.h"
#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_time.h"
#include "event.h"

#include <pthread.h>
#include <string.h>

#define RECEIVER_TICK_MS    100 /* housekeeping: watermark, snapshot, idle merge */
#define RECEIVER_IDLE_TICKS 10  /* ticks without a commit before merging runs */

typedef struct {
    uint8_t bytes[16];             /* a ROUTER routing id (libzmq makes 5 bytes) */
    size_t len;
} s_routing_id_t;

typedef struct {
    zframe_t *identity;            /* the agent's ROUTER identity */
    Cairn__AgentMessage *message;  /* owns the batch */
    Cairn__Batch *batch;           /* NULL when rejected */
    char reason[200];              /* why it was rejected */
    uint64_t first_seq;
    uint64_t last_seq;
} s_item_t;

struct receiver {
    store_t *store;
    zloop_t *loop;
    zsock_t *router;
    zactor_t *auth;                /* zauth, when CURVE is on */
    int timer_id;
    char *listen;
    char *aggregator_id;
    char *allow_dir;
    bool is_curve;
    size_t group_max;
    size_t group_max_bytes;
    cairn_arena_t arena;           /* the messages of one turn (s_on_readable) */
    s_item_t *items;               /* one group, reused */
    const Cairn__Batch **batches;  /* the valid ones of the group */
    store_batch_result_t *results;
    receiver_stats_t stats;
    uint64_t idle_commits;         /* stats.commits when the idle streak began */
    int idle_ticks;                /* housekeeping ticks without a commit */
    receiver_agent_t *agents;      /* known agents, loop thread's copy */
    size_t agent_count;
    s_routing_id_t *routing_ids;   /* agents[i]'s connection, from its Hello */
    pthread_mutex_t snapshot_lock; /* guards the snapshot_* copies */
    bool is_lock_ready;
    receiver_stats_t snapshot_stats;
    receiver_agent_t *snapshot_agents;
    size_t snapshot_agent_count;
};

/* The agent whose Hello came over the connection identity, or NULL. */
static const char *s_identity_agent(receiver_t *self, zframe_t *identity)
{
    for (size_t i = 0; i < self->agent_count; i++)
        if (self->routing_ids[i].len == zframe_size(identity) &&
            memcmp(self->routing_ids[i].bytes, zframe_data(identity), zframe_size(identity)) == 0)
            return self->agents[i].agent_id;
    return NULL;
}

/* The agent's entry, made on first contact; NULL when the table is full. */
static receiver_agent_t *s_agent(receiver_t *self, const char *agent_id, const char *region)
{
    for (size_t i = 0; i < self->agent_count; i++)
        if (strcmp(self->agents[i].agent_id, agent_id) == 0)
            return &self->agents[i];
    if (self->agent_count == RECEIVER_MAX_AGENTS)
        return NULL;
    receiver_agent_t *agent = &self->agents[self->agent_count++];
    memset(agent, 0, sizeof *agent);
    snprintf(agent->agent_id, sizeof agent->agent_id, "%s", agent_id);
    snprintf(agent->region, sizeof agent->region, "%s", region);
    return agent;
}

/* Logs the first of a kind of bad input and then one in 1000, so a flood
 * cannot fill the disk with logs; the counters keep the exact numbers. */
static bool s_should_log(uint64_t count)
{
    return count <= 1 || count % 1000 == 0;
}

int receiver_check_batch(const Cairn__Batch *b, char *reason, size_t size)
{
    if (b->version != CAIRN__VERSION__VERSION_1) {
        snprintf(reason, size, "unsupported protocol version %d (this aggregator speaks 1)",
                 (int)b->version);
        return -1;
    }
    if (!*b->agent_id || !*b->region) {
        snprintf(reason, size, "batch without agent id or region");
        return -1;
    }
    if (b->n_events == 0 || b->n_events > RECEIVER_MAX_BATCH_EVENTS) {
        snprintf(reason, size, "batch of %zu events (1..%d allowed)", b->n_events,
                 RECEIVER_MAX_BATCH_EVENTS);
        return -1;
    }
    if (b->first_seq == 0 || b->first_seq > UINT64_MAX - b->n_events) {
        snprintf(reason, size, "batch with first_seq %llu", (unsigned long long)b->first_seq);
        return -1;
    }
    for (size_t i = 0; i < b->n_events; i++) {
        const Cairn__Event *e = b->events[i];
        if (!*e->event_id || e->json.len == 0 || !e->json.data) {
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

/* With CURVE, the key's binding must match what the message claims. */
static int s_check_identity(receiver_t *self, zframe_t *payload, const char *agent_id,
                            const char *region, char *reason, size_t size)
{
    if (!self->is_curve)
        return 0;
    const char *bound_id = zframe_meta(payload, "agent_id");
    const char *bound_region = zframe_meta(payload, "region");
    const char *key = zframe_meta(payload, "User-Id");
    if (!bound_id || !*bound_id) {
        snprintf(reason, size, "key %s is not bound to an agent id (make it with cairn keygen "
                               "--agent-id)", key ? key : "?");
        return -1;
    }
    if (strcmp(bound_id, agent_id) != 0) {
        snprintf(reason, size, "key %s is bound to agent %s, not %s", key ? key : "?", bound_id,
                 agent_id);
        return -1;
    }
    if (bound_region && *bound_region && strcmp(bound_region, region) != 0) {
        snprintf(reason, size, "key %s is bound to region %s, not %s", key ? key : "?",
                 bound_region, region);
        return -1;
    }
    return 0;
}

static void s_send(receiver_t *self, zframe_t *identity, const Cairn__AggregatorMessage *message)
{
    uint8_t buf[1024];
    size_t len = cairn__aggregator_message__get_packed_size(message);
    if (len > sizeof buf)
        return;
    cairn__aggregator_message__pack(message, buf);
    zmsg_t *msg = zmsg_new();
    zmsg_addmem(msg, zframe_data(identity), zframe_size(identity));
    zmsg_addmem(msg, buf, len);
    if (zmsg_send(&msg, self->router) != 0)
        zmsg_destroy(&msg); /* agent gone: it resends after its timeout */
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
    Cairn__AggregatorMessage message = CAIRN__AGGREGATOR_MESSAGE__INIT;
    message.body_case = CAIRN__AGGREGATOR_MESSAGE__BODY_ACK;
    message.ack = &ack;
    s_send(self, item->identity, &message);
}

static void s_refuse(receiver_t *self, zframe_t *identity, const char *reason)
{
    self->stats.refusals++;
    if (s_should_log(self->stats.refusals))
        cairn_log_warning("receiver: refused an agent: %s (%llu refusals so far)", reason,
                          (unsigned long long)self->stats.refusals);
    Cairn__Refusal refusal = CAIRN__REFUSAL__INIT;
    refusal.version = CAIRN__VERSION__VERSION_1;
    refusal.reason = (char *)reason;
    Cairn__AggregatorMessage message = CAIRN__AGGREGATOR_MESSAGE__INIT;
    message.body_case = CAIRN__AGGREGATOR_MESSAGE__BODY_REFUSAL;
    message.refusal = &refusal;
    s_send(self, identity, &message);
}

static void s_on_hello(receiver_t *self, zframe_t *identity, zframe_t *payload,
                       const Cairn__Hello *hello)
{
    char reason[300];
    self->stats.hellos++;
    if (hello->version != CAIRN__VERSION__VERSION_1) {
        snprintf(reason, sizeof reason,
                 "agent %s speaks protocol version %d; this aggregator speaks 1", hello->agent_id,
                 (int)hello->version);
        s_refuse(self, identity, reason);
        return;
    }
    if (!*hello->agent_id || !*hello->region) {
        s_refuse(self, identity, "hello without agent id or region");
        return;
    }
    if (s_check_identity(self, payload, hello->agent_id, hello->region, reason, sizeof reason)) {
        s_refuse(self, identity, reason);
        return;
    }
    Cairn__Welcome welcome = CAIRN__WELCOME__INIT;
    welcome.version = CAIRN__VERSION__VERSION_1;
    welcome.aggregator_id = self->aggregator_id;
    welcome.last_seq = store_agent_last_seq(self->store, hello->agent_id, hello->spool_id);
    Cairn__AggregatorMessage message = CAIRN__AGGREGATOR_MESSAGE__INIT;
    message.body_case = CAIRN__AGGREGATOR_MESSAGE__BODY_WELCOME;
    message.welcome = &welcome;
    s_send(self, identity, &message);
    receiver_agent_t *agent = s_agent(self, hello->agent_id, hello->region);
    if (agent) {
        agent->last_seen_ms = cairn_time_now_ms();
        if (welcome.last_seq > agent->last_seq)
            agent->last_seq = welcome.last_seq;
        s_routing_id_t *rid = &self->routing_ids[agent - self->agents];
        rid->len = zframe_size(identity) <= sizeof rid->bytes ? zframe_size(identity) : 0;
        memcpy(rid->bytes, zframe_data(identity), rid->len);
    }
    cairn_log_info("receiver: agent %s (%s, %s) connected; its spool %s is stored through seq %llu",
                   hello->agent_id, hello->region, hello->software, hello->spool_id,
                   (unsigned long long)welcome.last_seq);
}

static void s_on_heartbeat(receiver_t *self, zframe_t *identity, zframe_t *payload,
                           const Cairn__Heartbeat *beat)
{
    self->stats.heartbeats++;
    /* Heartbeats carry no agent id: with CURVE the key's binding names the
     * agent; without, the connection's routing id was tagged at its Hello. */
    const char *agent_id = self->is_curve ? zframe_meta(payload, "agent_id") : NULL;
    if (!agent_id)
        agent_id = s_identity_agent(self, identity);
    for (size_t i = 0; agent_id && i < self->agent_count; i++)
        if (strcmp(self->agents[i].agent_id, agent_id) == 0) {
            self->agents[i].last_seen_ms = cairn_time_now_ms();
            self->agents[i].spool_pending = beat->spool_pending;
        }
    Cairn__Heartbeat heartbeat = CAIRN__HEARTBEAT__INIT;
    heartbeat.sent_ms = cairn_time_now_ms();
    Cairn__AggregatorMessage message = CAIRN__AGGREGATOR_MESSAGE__INIT;
    message.body_case = CAIRN__AGGREGATOR_MESSAGE__BODY_HEARTBEAT;
    message.heartbeat = &heartbeat;
    s_send(self, identity, &message);
}

/* Takes one message off the ROUTER. Returns 1 if it left a batch item in
 * *item (valid or rejected), 0 if it was fully handled here. */
static int s_take(receiver_t *self, zmsg_t *msg, s_item_t *item)
{
    memset(item, 0, sizeof *item);
    zframe_t *identity = zmsg_pop(msg);
    zframe_t *payload = zmsg_pop(msg);
    Cairn__AgentMessage *message =
        payload && zmsg_size(msg) == 0
            ? cairn__agent_message__unpack(&self->arena.allocator, zframe_size(payload),
                                           zframe_data(payload))
            : NULL;
    int has_item = 0;
    if (!message) {
        self->stats.messages_garbage++;
        if (s_should_log(self->stats.messages_garbage))
            cairn_log_warning("receiver: dropped a message that is not a cairn AgentMessage "
                              "(%zu bytes; %llu such so far)",
                              payload ? zframe_size(payload) : 0,
                              (unsigned long long)self->stats.messages_garbage);
    } else if (message->body_case == CAIRN__AGENT_MESSAGE__BODY_HELLO)
        s_on_hello(self, identity, payload, message->hello);
    else if (message->body_case == CAIRN__AGENT_MESSAGE__BODY_HEARTBEAT)
        s_on_heartbeat(self, identity, payload, message->heartbeat);
    else if (message->body_case == CAIRN__AGENT_MESSAGE__BODY_BATCH) {
        Cairn__Batch *batch = message->batch;
        self->stats.batches_received++;
        item->identity = identity;
        identity = NULL;
        item->message = message;
        message = NULL;
        item->first_seq = batch->first_seq;
        item->last_seq = batch->first_seq + (batch->n_events ? batch->n_events - 1 : 0);
        if (receiver_check_batch(batch, item->reason, sizeof item->reason) == 0 &&
            s_check_identity(self, payload, batch->agent_id, batch->region, item->reason,
                             sizeof item->reason) == 0)
            item->batch = batch;
        else {
            self->stats.batches_rejected++;
            if (s_should_log(self->stats.batches_rejected))
                cairn_log_warning("receiver: rejected batch %llu-%llu from %s: %s",
                                  (unsigned long long)item->first_seq,
                                  (unsigned long long)item->last_seq, batch->agent_id,
                                  item->reason);
        }
        has_item = 1;
    } else
        self->stats.messages_garbage++; /* a body this version does not know */
    zframe_destroy(&identity); /* message stays in the arena until the turn ends */
    zframe_destroy(&payload);
    return has_item;
}

static int s_on_readable(zloop_t *loop, zsock_t *reader, void *arg)
{
    receiver_t *self = arg;
    size_t n = 0, valid = 0, bytes = 0;
    for (size_t tries = 0; n < self->group_max && bytes < self->group_max_bytes &&
                           tries < self->group_max * 4;
         tries++) {
        /* The loop said readable; after the first, take only what is queued. */
        if (tries > 0 && !(zsock_events(self->router) & ZMQ_POLLIN))
            break;
        zmsg_t *msg = zmsg_recv(self->router);
        if (!msg)
            break;
        self->stats.messages_received++;
        bytes += zmsg_content_size(msg);
        if (zmsg_size(msg) >= 2 && s_take(self, msg, &self->items[n])) {
            if (self->items[n].batch)
                self->batches[valid++] = self->items[n].batch;
            n++;
        }
        zmsg_destroy(&msg);
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
            receiver_agent_t *agent = s_agent(self, item->batch->agent_id, item->batch->region);
            if (agent) {
                agent->last_seen_ms = cairn_time_now_ms();
                agent->batches++;
                agent->events_stored += r->stored_count;
                agent->events_duplicate += r->duplicate_count;
                if (item->last_seq > agent->last_seq)
                    agent->last_seq = item->last_seq;
            }
            s_send_ack(self, item, CAIRN__ACK__STATUS__OK, r, NULL);
        } else {
            self->stats.batches_deferred++;
            s_send_ack(self, item, CAIRN__ACK__STATUS__RETRY, NULL,
                       rc == STORE_FULL ? "store full" : "store write failed");
        }
        zframe_destroy(&item->identity);
    }
    if (rc == STORE_FULL)
        cairn_log_error("receiver: store full; %zu batches deferred (agents keep them spooled)",
                        valid);
    cairn_arena_reset(&self->arena); /* every message of the turn */
    return 0;
}

static int s_on_tick(zloop_t *loop, int timer_id, void *arg)
{
    receiver_t *self = arg;
    store_advance_watermark(self->store, cairn_time_now_ms());
    /* Idle for a second: merge the index's runs a step per tick, so that
     * queries after a burst do not keep reading them. */
    if (self->stats.commits != self->idle_commits) {
        self->idle_commits = self->stats.commits;
        self->idle_ticks = 0;
    } else if (++self->idle_ticks >= RECEIVER_IDLE_TICKS)
        store_merge(self->store);
    pthread_mutex_lock(&self->snapshot_lock);
    self->snapshot_stats = self->stats;
    memcpy(self->snapshot_agents, self->agents, self->agent_count * sizeof *self->agents);
    self->snapshot_agent_count = self->agent_count;
    pthread_mutex_unlock(&self->snapshot_lock);
    return 0;
}

size_t receiver_snapshot(receiver_t *self, receiver_stats_t *stats, receiver_agent_t *agents,
                         size_t max)
{
    pthread_mutex_lock(&self->snapshot_lock);
    *stats = self->snapshot_stats;
    size_t count = self->snapshot_agent_count < max ? self->snapshot_agent_count : max;
    memcpy(agents, self->snapshot_agents, count * sizeof *agents);
    pthread_mutex_unlock(&self->snapshot_lock);
    return count;
}

/* Starts zauth on allow_dir and makes the ROUTER a CURVE server. */
static int s_setup_curve(receiver_t *self, const receiver_options_t *options)
{
    zcert_t *cert = zcert_load(options->secret_key_file);
    if (!cert) {
        cairn_log_error("receiver: cannot load the aggregator's key %s (make it with cairn "
                        "keygen)",
                        options->secret_key_file);
        return -1;
    }
    if (!zsys_file_exists(options->allow_dir)) {
        cairn_log_error("receiver: allow-list directory %s does not exist", options->allow_dir);
        zcert_destroy(&cert);
        return -1;
    }
    self->auth = zactor_new(zauth, NULL);
    /* zauth logs each handshake, naming the key it admitted or refused. */
    zstr_sendx(self->auth, "VERBOSE", NULL);
    zsock_wait(self->auth);
    zstr_sendx(self->auth, "CURVE", options->allow_dir, NULL);
    zsock_wait(self->auth);
    zcert_apply(cert, self->router);
    zsock_set_curve_server(self->router, 1);
    zsock_set_zap_domain(self->router, "cairn");
    zcert_destroy(&cert);
    self->is_curve = true;
    self->allow_dir = cairn_strdup(options->allow_dir);
    return 0;
}

int receiver_reload_allow_list(receiver_t *self)
{
    if (!self->is_curve)
        return -1;
    zstr_sendx(self->auth, "CURVE", self->allow_dir, NULL);
    zsock_wait(self->auth);
    zdir_t *dir = zdir_new(self->allow_dir, NULL);
    int count = dir ? zdir_count(dir) : 0;
    zdir_destroy(&dir);
    return count;
}

receiver_t *receiver_new(store_t *store, zloop_t *loop, const receiver_options_t *options)
{
    receiver_t *self = cairn_calloc(1, sizeof *self);
    self->store = store;
    self->loop = loop;
    self->timer_id = -1;
    self->listen = cairn_strdup(options->listen);
    self->aggregator_id =
        cairn_strdup(options->aggregator_id ? options->aggregator_id : "aggregator");
    self->group_max = options->group_max ? options->group_max : 64;
    self->group_max_bytes = options->group_max_bytes ? options->group_max_bytes : 8 << 20;
    cairn_arena_init(&self->arena);
    self->items = cairn_calloc(self->group_max, sizeof *self->items);
    self->batches = cairn_calloc(self->group_max, sizeof *self->batches);
    self->results = cairn_calloc(self->group_max, sizeof *self->results);
    self->agents = cairn_calloc(RECEIVER_MAX_AGENTS, sizeof *self->agents);
    self->snapshot_agents = cairn_calloc(RECEIVER_MAX_AGENTS, sizeof *self->snapshot_agents);
    self->routing_ids = cairn_calloc(RECEIVER_MAX_AGENTS, sizeof *self->routing_ids);
    self->is_lock_ready = pthread_mutex_init(&self->snapshot_lock, NULL) == 0;
    self->router = zsock_new(ZMQ_ROUTER);
    int rc = self->router && self->is_lock_ready ? 0 : -1;
    if (rc == 0) {
        zsock_set_maxmsgsize(self->router, RECEIVER_MAX_MESSAGE_BYTES);
        zsock_set_linger(self->router, 1000);
        zsock_set_router_mandatory(self->router, 0);
        if (options->secret_key_file)
            rc = s_setup_curve(self, options);
    }
    if (rc == 0 && zsock_bind(self->router, "%s", self->listen) < 0) {
        cairn_log_error("receiver: cannot bind %s: %s", self->listen, zmq_strerror(zmq_errno()));
        rc = -1;
    }
    if (rc != 0) {
        receiver_destroy(&self);
        return NULL;
    }
    zloop_reader(loop, self->router, s_on_readable, self);
    self->timer_id = zloop_timer(loop, RECEIVER_TICK_MS, 0, s_on_tick, self);
    store_advance_watermark(store, cairn_time_now_ms());
    if (self->is_curve)
        cairn_log_info("receiver: listening on %s (CURVE; agents allowed by %s)", self->listen,
                       options->allow_dir);
    else
        cairn_log_warning("receiver: listening on %s in PLAIN TEXT: anyone who can reach it can "
                          "send events, and the network can read them",
                          self->listen);
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
    zactor_destroy(&self->auth); /* after the sockets it authenticates */
    if (self->is_lock_ready)
        pthread_mutex_destroy(&self->snapshot_lock);
    free(self->agents);
    free(self->snapshot_agents);
    free(self->routing_ids);
    free(self->items);
    free(self->batches);
    cairn_arena_fini(&self->arena);
    free(self->results);
    free(self->listen);
    free(self->aggregator_id);
    free(self->allow_dir);
    free(self);
    *self_p = NULL;
}

void receiver_get_stats(receiver_t *self, receiver_stats_t *stats)
{
    *stats = self->stats;
}
