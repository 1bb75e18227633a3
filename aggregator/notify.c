/* notify.c: the delivery webhook (see notify.h for what it promises).
 *
 * DESIGN: the queue is a directory, one file per notification, named by the
 * window's end ("<window_end_ms, 20 digits>.json"), so names sort in window
 * order and a window queued again replaces its own file. notify_enqueue (on
 * the delivery actor's thread) writes a temporary file, fsyncs it, renames
 * it into place, fsyncs the directory, then wakes the notifier through an
 * eventfd. The notifier (a czmq actor) sends the oldest file's body, deletes
 * the file after a 2xx, and goes on with the next; after a failure it waits
 * (exponential backoff with +-20 % jitter) and tries the same file again. It
 * reads the directory each time it picks a file: the queue is small (one
 * file per five-minute window the receiver missed), and the directory is the
 * only state the two threads share, so there is nothing to keep in step.
 *
 * THREADS: notify_enqueue runs on the caller's thread and touches only the
 * directory and the eventfd; the actor owns the curl handle. The stats sit
 * behind the mutex; is_stopping is atomic and is raised by notify_destroy so
 * that curl's progress callback aborts a POST in progress (a receiver that
 * accepts the connection and never answers must not hold up shutdown). */
#include "notify.h"

#include "cairn_fs.h"
#include "cairn_log.h"
#include "cairn_mem.h"
#include "cairn_time.h"

#include <czmq.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#define NOTIFY_DEFAULT_TIMEOUT_MS     10000
#define NOTIFY_DEFAULT_RETRY_FIRST_MS 1000
#define NOTIFY_RETRY_MAX_MS           60000
#define NOTIFY_CONNECT_TIMEOUT_MS     10000
#define NOTIFY_BODY_MAX               (16 * 1024 * 1024) /* a queued file bigger is damaged */
#define NOTIFY_NAME_DIGITS            20
#define NOTIFY_NAME_SUFFIX            ".json"

struct notify {
    zactor_t *actor;
    int wake_fd; /* eventfd: enqueue -> actor */
    char *queue_dir;
    atomic_bool is_stopping; /* notify_destroy began: abort the POST in progress */
    pthread_mutex_t mutex;   /* guards stats */
    notify_stats_t stats;
};

typedef struct {
    notify_t *owner;
    zsock_t *pipe;
    char *url;
    char *header;
    int64_t timeout_ms;
    int64_t retry_first_ms;
    CURL *curl;
    bool has_curl_global;
    struct curl_slist *headers;
    char curl_error[CURL_ERROR_SIZE];
    bool has_pending;        /* the directory may hold a notification */
    int64_t next_attempt_ms; /* monotonic; no POST before this */
    int64_t backoff_ms;
    uint32_t failure_run;  /* failed POSTs since the last success */
    uint64_t random_state; /* xorshift64, for the jitter */
} s_self_t;

/* ---- the queue directory ---- */

static bool s_is_queue_name(const char *name)
{
    size_t len = strlen(name);
    if (len != NOTIFY_NAME_DIGITS + strlen(NOTIFY_NAME_SUFFIX) ||
        strcmp(name + NOTIFY_NAME_DIGITS, NOTIFY_NAME_SUFFIX) != 0)
        return false;
    for (size_t i = 0; i < NOTIFY_NAME_DIGITS; i++)
        if (name[i] < '0' || name[i] > '9')
            return false;
    return true;
}

/* Finds the oldest queued notification: its name into oldest (empty when
 * none). Returns how many are queued, or -1 (errno set). */
static long s_scan(const char *dir, char oldest[64])
{
    oldest[0] = '\0';
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    long count = 0;
    struct dirent *entry;
    while ((entry = readdir(d))) {
        if (!s_is_queue_name(entry->d_name))
            continue;
        count++;
        if (!oldest[0] || strcmp(entry->d_name, oldest) < 0)
            snprintf(oldest, 64, "%.63s", entry->d_name);
    }
    closedir(d);
    return count;
}

static int s_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* Reads a whole queued file; caller frees *body. Returns 0 or -1. */
static int s_read_file(const char *path, char **body, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    int rc = -1;
    *body = NULL;
    if (!f)
        return -1;
    if (fstat(fileno(f), &st) == 0 && st.st_size > 0 && st.st_size <= NOTIFY_BODY_MAX) {
        *body = cairn_malloc((size_t)st.st_size + 1);
        *len = fread(*body, 1, (size_t)st.st_size, f);
        if (*len == (size_t)st.st_size) {
            (*body)[*len] = '\0';
            rc = 0;
        } else {
            free(*body);
            *body = NULL;
        }
    } else if (st.st_size == 0 || st.st_size > NOTIFY_BODY_MAX)
        errno = EINVAL;
    fclose(f);
    return rc;
}

/* ---- the body ---- */

static void s_append(char **out, size_t *len, size_t *cap, const char *data, size_t n)
{
    if (*cap - *len < n + 1) {
        while (*cap - *len < n + 1)
            *cap = *cap ? *cap * 2 : 1024;
        *out = cairn_realloc(*out, *cap);
    }
    memcpy(*out + *len, data, n);
    *len += n;
    (*out)[*len] = '\0';
}

/* Appends s as a JSON string. */
static void s_append_json_string(char **out, size_t *len, size_t *cap, const char *s)
{
    s_append(out, len, cap, "\"", 1);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            s_append(out, len, cap, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            s_append(out, len, cap, esc, 6);
        } else
            s_append(out, len, cap, p, 1);
    }
    s_append(out, len, cap, "\"", 1);
}

/* ---- the actor ---- */

static uint64_t s_random(s_self_t *self)
{
    uint64_t x = self->random_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return self->random_state = x;
}

static size_t s_discard(char *data, size_t size, size_t count, void *ctx)
{
    (void)data;
    (void)ctx;
    return size * count;
}

static int s_on_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                         curl_off_t ulnow)
{
    notify_t *owner = ctx;
    return atomic_load(&owner->is_stopping) ? 1 : 0;
}

static void s_self_destroy(s_self_t **self_p)
{
    s_self_t *self = *self_p;
    if (!self)
        return;
    if (self->curl)
        curl_easy_cleanup(self->curl);
    curl_slist_free_all(self->headers);
    if (self->has_curl_global)
        curl_global_cleanup();
    free(self->url);
    free(self->header);
    free(self);
    *self_p = NULL;
}

static int s_setup_curl(s_self_t *self)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    self->has_curl_global = true;
    self->curl = curl_easy_init();
    if (!self->curl)
        return -1;
    self->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (self->header)
        self->headers = curl_slist_append(self->headers, self->header);
    if (!self->headers)
        return -1;
    int64_t connect_ms =
        self->timeout_ms < NOTIFY_CONNECT_TIMEOUT_MS ? self->timeout_ms : NOTIFY_CONNECT_TIMEOUT_MS;
    CURL *h = self->curl;
    CURLcode rc = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* we run in a thread */
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_ERRORBUFFER, self->curl_error);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_URL, self->url);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_HTTPHEADER, self->headers);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)self->timeout_ms);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_USERAGENT, "cairn-aggregator/" CAIRN_VERSION);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_discard);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, s_on_progress);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_XFERINFODATA, self->owner);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    return rc == CURLE_OK ? 0 : -1;
}

static void s_set_pending(s_self_t *self, long count)
{
    pthread_mutex_lock(&self->owner->mutex);
    self->owner->stats.pending_count = count > 0 ? (uint64_t)count : 0;
    pthread_mutex_unlock(&self->owner->mutex);
}

/* POSTs body. Returns 0 on a 2xx, else -1 with the reason in why. */
static int s_post(s_self_t *self, const char *body, size_t len, char *why, size_t why_len)
{
    self->curl_error[0] = '\0';
    CURLcode code = curl_easy_setopt(self->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    if (code == CURLE_OK)
        code = curl_easy_setopt(self->curl, CURLOPT_POSTFIELDS, body);
    if (code == CURLE_OK)
        code = curl_easy_perform(self->curl);
    curl_easy_setopt(self->curl, CURLOPT_POSTFIELDS, NULL); /* body is freed next */
    if (code != CURLE_OK) {
        snprintf(why, why_len, "%s",
                 self->curl_error[0] ? self->curl_error : curl_easy_strerror(code));
        return -1;
    }
    long status = 0;
    curl_easy_getinfo(self->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        snprintf(why, why_len, "HTTP %ld", status);
        return -1;
    }
    return 0;
}

/* Sends the oldest queued notification, if any. */
static void s_send_next(s_self_t *self)
{
    const char *dir = self->owner->queue_dir;
    char name[64], path[4096], why[CURL_ERROR_SIZE + 64];
    long count = s_scan(dir, name);
    s_set_pending(self, count);
    if (count < 0) {
        snprintf(why, sizeof why, "cannot read the queue %s: %s", dir, strerror(errno));
    } else if (count == 0) {
        self->has_pending = false;
        return;
    } else {
        snprintf(path, sizeof path, "%s/%s", dir, name);
        char *body = NULL;
        size_t len = 0;
        if (s_read_file(path, &body, &len) != 0) {
            /* Left aside, not retried: the same bytes would fail forever. */
            char aside[4200];
            snprintf(aside, sizeof aside, "%s.bad", path);
            cairn_log_error("notify: %s cannot be read (%s); moved to %s, not sent", path,
                            strerror(errno), aside);
            if (rename(path, aside) != 0)
                unlink(path);
            return;
        }
        int rc = s_post(self, body, len, why, sizeof why);
        free(body);
        if (rc == 0) {
            /* A crash before the unlink reaches the disk sends it again:
             * at least once, as promised. */
            if (unlink(path) != 0 && errno != ENOENT)
                cairn_log_warning("notify: cannot delete %s: %s; it will be sent again", path,
                                  strerror(errno));
            if (self->failure_run)
                cairn_log_notice("notify: %s accepts notifications again (after %u failed "
                                 "attempts; %ld queued before this one)",
                                 self->url, self->failure_run, count);
            cairn_log_debug("notify: %s sent to %s", name, self->url);
            pthread_mutex_lock(&self->owner->mutex);
            self->owner->stats.sent_count++;
            self->owner->stats.last_sent_ms = cairn_time_now_ms();
            self->owner->stats.pending_count = (uint64_t)count - 1;
            pthread_mutex_unlock(&self->owner->mutex);
            self->failure_run = 0;
            self->backoff_ms = self->retry_first_ms;
            self->next_attempt_ms = 0;
            return;
        }
    }
    if (atomic_load(&self->owner->is_stopping))
        return; /* aborted by notify_destroy: not a failure of the receiver */
    int64_t jitter = (int64_t)(s_random(self) % 401) - 200; /* per mille */
    int64_t delay_ms = self->backoff_ms + self->backoff_ms * jitter / 1000;
    if (self->failure_run == 0)
        cairn_log_warning("notify: POST to %s failed: %s; retrying in %.1f s (%ld queued; "
                          "further failures are logged at debug level)",
                          self->url, why, (double)delay_ms / 1000, count);
    else
        cairn_log_debug("notify: POST to %s failed: %s; retrying in %.1f s (attempt %u)", self->url,
                        why, (double)delay_ms / 1000, self->failure_run + 1);
    self->failure_run++;
    pthread_mutex_lock(&self->owner->mutex);
    self->owner->stats.failure_count++;
    pthread_mutex_unlock(&self->owner->mutex);
    self->next_attempt_ms = cairn_time_mono_ms() + delay_ms;
    self->backoff_ms *= 2;
    if (self->backoff_ms > NOTIFY_RETRY_MAX_MS)
        self->backoff_ms = NOTIFY_RETRY_MAX_MS;
}

/* Removes temporary files a crash left in the queue. */
static void s_remove_temporaries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *entry;
    char path[4096];
    while (d && (entry = readdir(d))) {
        if (!strstr(entry->d_name, NOTIFY_NAME_SUFFIX ".tmp"))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
}

static void s_actor(zsock_t *pipe, void *args)
{
    s_self_t *self = args;
    self->pipe = pipe;
    bool is_ready = s_setup_curl(self) == 0;
    if (!is_ready)
        cairn_log_error("notify: libcurl %s cannot be set up; no notification will be sent",
                        curl_version());
    s_remove_temporaries(self->owner->queue_dir);
    self->has_pending = is_ready; /* what a previous run left */
    zsock_signal(pipe, 0);
    while (true) {
        int64_t now_ms = cairn_time_mono_ms();
        long timeout_ms = -1;
        if (self->has_pending)
            timeout_ms =
                self->next_attempt_ms > now_ms ? (long)(self->next_attempt_ms - now_ms) : 0;
        zmq_pollitem_t items[2] = {{zsock_resolve(pipe), 0, ZMQ_POLLIN, 0},
                                   {NULL, self->owner->wake_fd, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, 2, timeout_ms);
        if (rc < 0 && errno != EINTR)
            break; /* the context is being terminated */
        if (rc > 0 && (items[0].revents & ZMQ_POLLIN)) {
            char *command = zstr_recv(pipe);
            bool is_term = !command || streq(command, "$TERM");
            if (!is_term)
                cairn_log_warning("notify: unknown command \"%s\" ignored", command);
            zstr_free(&command);
            if (is_term)
                break;
        }
        if (rc > 0 && (items[1].revents & ZMQ_POLLIN)) {
            uint64_t wakes;
            if (read(self->owner->wake_fd, &wakes, sizeof wakes) < 0 && errno != EAGAIN)
                cairn_log_warning("notify: cannot read the wake-up fd: %s", strerror(errno));
            self->has_pending = is_ready;
        }
        if (self->has_pending && cairn_time_mono_ms() >= self->next_attempt_ms)
            s_send_next(self);
    }
    s_self_destroy(&self);
    /* libcurl's TLS backend keeps OpenSSL state per thread: free it now,
     * before the process tears OpenSSL down (as the delivery actor does). */
    OPENSSL_thread_stop();
}

notify_t *notify_new(const notify_options_t *options)
{
    const char *url = options->url;
    if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
        cairn_log_error("notify: webhook URL \"%s\" is not http:// or https://", url ? url : "");
        return NULL;
    }
    if (options->header && (!strchr(options->header, ':') || strpbrk(options->header, "\r\n"))) {
        cairn_log_error("notify: the webhook header must be one \"Name: value\" line");
        return NULL;
    }
    if (!options->queue_dir || !options->queue_dir[0]) {
        cairn_log_error("notify: no queue directory");
        return NULL;
    }
    if (cairn_mkdir_p(options->queue_dir, 0700) != 0) {
        cairn_log_error("notify: cannot create the queue directory %s: %s", options->queue_dir,
                        strerror(errno));
        return NULL;
    }
    notify_t *self = cairn_calloc(1, sizeof *self);
    pthread_mutex_init(&self->mutex, NULL);
    self->queue_dir = cairn_strdup(options->queue_dir);
    self->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (self->wake_fd < 0) {
        cairn_log_error("notify: eventfd: %s", strerror(errno));
        notify_destroy(&self);
        return NULL;
    }
    s_self_t *state = cairn_calloc(1, sizeof *state);
    state->owner = self;
    state->url = cairn_strdup(url);
    state->header = options->header ? cairn_strdup(options->header) : NULL;
    state->timeout_ms = options->timeout_ms > 0 ? options->timeout_ms : NOTIFY_DEFAULT_TIMEOUT_MS;
    state->retry_first_ms =
        options->retry_first_ms > 0 ? options->retry_first_ms : NOTIFY_DEFAULT_RETRY_FIRST_MS;
    state->backoff_ms = state->retry_first_ms;
    state->random_state = (uint64_t)cairn_time_now_ms() ^ (uint64_t)(uintptr_t)state ^ 1;
    self->actor = zactor_new(s_actor, state); /* returns once the actor signalled */
    return self;
}

void notify_destroy(notify_t **self_p)
{
    notify_t *self = *self_p;
    if (!self)
        return;
    atomic_store(&self->is_stopping, true);
    zactor_destroy(&self->actor); /* sends $TERM, waits for the thread */
    if (self->wake_fd >= 0)
        close(self->wake_fd);
    pthread_mutex_destroy(&self->mutex);
    free(self->queue_dir);
    free(self);
    *self_p = NULL;
}

int notify_enqueue(notify_t *self, int64_t window_end_ms, const char *s3_bucket,
                   const char *const *keys, size_t key_count)
{
    char *body = NULL;
    size_t len = 0, cap = 0;
    s_append(&body, &len, &cap, "{\"s3Bucket\":", 12);
    s_append_json_string(&body, &len, &cap, s3_bucket);
    s_append(&body, &len, &cap, ",\"s3ObjectKey\":[", 16);
    for (size_t i = 0; i < key_count; i++) {
        if (i)
            s_append(&body, &len, &cap, ",", 1);
        s_append_json_string(&body, &len, &cap, keys[i]);
    }
    s_append(&body, &len, &cap, "]}", 2);

    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%0*lld%s", self->queue_dir, NOTIFY_NAME_DIGITS,
             (long long)window_end_ms, NOTIFY_NAME_SUFFIX);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    const char *failed = tmp;
    int rc = -1;
    int fd = open(tmp, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    if (fd >= 0) {
        const char *p = body;
        size_t left = len;
        while (left > 0) {
            ssize_t n = write(fd, p, left);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                break;
            p += n;
            left -= (size_t)n;
        }
        if (left == 0 && fsync(fd) == 0)
            rc = 0;
        if (close(fd) != 0)
            rc = -1;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        failed = path;
        rc = -1;
    }
    if (rc == 0 && s_fsync_dir(self->queue_dir) != 0) {
        failed = self->queue_dir;
        rc = -1;
    }
    if (rc != 0) {
        cairn_log_error("notify: cannot queue the notification of window %lld: %s: %s",
                        (long long)window_end_ms, failed, strerror(errno));
        unlink(tmp);
    } else {
        uint64_t one = 1;
        if (write(self->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
            cairn_log_warning("notify: cannot wake the notifier: %s", strerror(errno));
    }
    free(body);
    return rc;
}

void notify_get_stats(notify_t *self, notify_stats_t *stats)
{
    pthread_mutex_lock(&self->mutex);
    *stats = self->stats;
    pthread_mutex_unlock(&self->mutex);
}
