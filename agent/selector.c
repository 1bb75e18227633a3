/* selector.c: event selectors (see selector.h).
 *
 * DESIGN
 *
 * A rule set is built once from the config and never changes: each list is
 * a sorted array of strings, so a match is a binary search per list and
 * allocates nothing. The selector holds the current rule set; readers take
 * a reference under the selector's mutex and drop it when done, and the
 * rule set is freed by whoever drops the last reference. A plain atomic
 * pointer would not do: a reader could load the pointer, be preempted while
 * a reload frees that rule set, and then use it. With the mutex the load and
 * the reference are one step, and the critical sections are a few
 * instructions, taken once per request or per tail batch, not per event.
 *
 * THREADS: any thread may acquire, match and release; replace takes the
 * same mutex. Rule sets are immutable after selector_rules_read returns. */
#include "selector.h"

#include "cairn_log.h"
#include "cairn_mem.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SELECTOR_SECTION "selectors"
#define DEFAULT_CATEGORY "Management" /* a record without eventCategory is matched as this */

typedef enum {
    READ_WRITE_ALL,
    READ_WRITE_READ_ONLY,
    READ_WRITE_WRITE_ONLY,
} s_read_write_t;

typedef enum {
    FIELD_SOURCE,
    FIELD_NAME,
    FIELD_CATEGORY,
    FIELD_COUNT,
} s_field_t;

enum { LIST_INCLUDE, LIST_EXCLUDE, LIST_KINDS };

/* One include or exclude list: sorted, without duplicates. */
typedef struct {
    char **values; /* owned */
    size_t count;
} s_list_t;

struct selector_rules {
    unsigned refs;             /* holders; guarded by the owning selector's mutex */
    s_read_write_t read_write; /* read_write */
    s_list_t lists[FIELD_COUNT][LIST_KINDS];
};

struct selector {
    pthread_mutex_t lock;    /* guards rules and every rule set's refs */
    selector_rules_t *rules; /* current; the selector holds one reference */
};

static const char *const s_list_keys[FIELD_COUNT][LIST_KINDS] = {
    [FIELD_SOURCE] = {"include_event_sources", "exclude_event_sources"},
    [FIELD_NAME] = {"include_event_names", "exclude_event_names"},
    [FIELD_CATEGORY] = {"include_event_categories", "exclude_event_categories"},
};

static const selector_reason_t s_field_reasons[FIELD_COUNT] = {
    [FIELD_SOURCE] = SELECTOR_BY_EVENT_SOURCE,
    [FIELD_NAME] = SELECTOR_BY_EVENT_NAME,
    [FIELD_CATEGORY] = SELECTOR_BY_EVENT_CATEGORY,
};

static const char *const s_read_write_names[] = {
    [READ_WRITE_ALL] = "all",
    [READ_WRITE_READ_ONLY] = "read_only",
    [READ_WRITE_WRITE_ONLY] = "write_only",
};

/* ---- reading the config ---- */

static int s_compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int s_compare_key(const void *key, const void *element)
{
    return strcmp(key, *(char *const *)element);
}

/* Splits value ("a, b ,c") into list. Records mistakes in cfg. *total counts
 * values across lists, for the overall limit. */
static void s_read_list(config_t *cfg, const char *key, const char *value, s_list_t *list,
                        size_t *total)
{
    size_t cap = 0;
    const char *p = value;
    while (*p) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *start = p;
        while (start < end && (*start == ' ' || *start == '\t'))
            start++;
        const char *stop = end;
        while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
            stop--;
        size_t len = (size_t)(stop - start);
        if (len == 0)
            config_error(cfg, SELECTOR_SECTION, key, "empty value in the list \"%s\"", value);
        else if (len > SELECTOR_MAX_VALUE_BYTES)
            config_error(cfg, SELECTOR_SECTION, key, "a value is %zu bytes, over the %d-byte limit",
                         len, SELECTOR_MAX_VALUE_BYTES);
        else if (++*total > SELECTOR_MAX_VALUES) {
            if (*total == SELECTOR_MAX_VALUES + 1)
                config_error(cfg, SELECTOR_SECTION, key,
                             "more than %d values in the selector lists together",
                             SELECTOR_MAX_VALUES);
        } else {
            if (list->count == cap) {
                cap = cap ? cap * 2 : 8;
                list->values = cairn_realloc(list->values, cap * sizeof *list->values);
            }
            char *copy = cairn_malloc(len + 1);
            memcpy(copy, start, len);
            copy[len] = '\0';
            list->values[list->count++] = copy;
        }
        p = comma ? comma + 1 : end;
        if (comma && !*p)
            config_error(cfg, SELECTOR_SECTION, key, "empty value in the list \"%s\"", value);
    }
    if (list->count > 1) {
        qsort(list->values, list->count, sizeof *list->values, s_compare_strings);
        size_t kept = 1;
        for (size_t i = 1; i < list->count; i++) {
            if (strcmp(list->values[i], list->values[kept - 1]) == 0)
                free(list->values[i]);
            else
                list->values[kept++] = list->values[i];
        }
        list->count = kept;
    }
}

selector_rules_t *selector_rules_read(config_t *cfg)
{
    size_t errors_before = config_error_count(cfg);
    selector_rules_t *self = cairn_calloc(1, sizeof *self);
    self->refs = 1;
    const char *rw = config_str(cfg, SELECTOR_SECTION, "read_write", "all");
    if (strcmp(rw, "all") == 0)
        self->read_write = READ_WRITE_ALL;
    else if (strcmp(rw, "read_only") == 0)
        self->read_write = READ_WRITE_READ_ONLY;
    else if (strcmp(rw, "write_only") == 0)
        self->read_write = READ_WRITE_WRITE_ONLY;
    else
        config_error(cfg, SELECTOR_SECTION, "read_write",
                     "\"%s\" is not one of all, read_only, write_only", rw);
    size_t total = 0;
    for (int f = 0; f < FIELD_COUNT; f++) {
        for (int k = 0; k < LIST_KINDS; k++) {
            const char *value = config_str(cfg, SELECTOR_SECTION, s_list_keys[f][k], "");
            s_read_list(cfg, s_list_keys[f][k], value, &self->lists[f][k], &total);
        }
        if (self->lists[f][LIST_INCLUDE].count && self->lists[f][LIST_EXCLUDE].count)
            config_error(cfg, SELECTOR_SECTION, s_list_keys[f][LIST_EXCLUDE],
                         "give %s or %s, not both: the include list already drops "
                         "everything it does not name",
                         s_list_keys[f][LIST_INCLUDE], s_list_keys[f][LIST_EXCLUDE]);
    }
    if (config_error_count(cfg) != errors_before)
        selector_rules_destroy(&self);
    return self;
}

void selector_rules_destroy(selector_rules_t **self_p)
{
    selector_rules_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    for (int f = 0; f < FIELD_COUNT; f++)
        for (int k = 0; k < LIST_KINDS; k++) {
            s_list_t *list = &self->lists[f][k];
            for (size_t i = 0; i < list->count; i++)
                free(list->values[i]);
            free(list->values);
        }
    free(self);
    *self_p = NULL;
}

/* ---- matching ---- */

static bool s_contains(const s_list_t *list, const char *value)
{
    return list->count &&
           bsearch(value, list->values, list->count, sizeof *list->values, s_compare_key) != NULL;
}

selector_reason_t selector_rules_match(const selector_rules_t *self, const Cairn__Event *event)
{
    if (self->read_write == READ_WRITE_READ_ONLY &&
        event->read_only != CAIRN__READ_ONLY__READ_ONLY_TRUE)
        return SELECTOR_BY_READ_WRITE;
    if (self->read_write == READ_WRITE_WRITE_ONLY &&
        event->read_only == CAIRN__READ_ONLY__READ_ONLY_TRUE)
        return SELECTOR_BY_READ_WRITE;
    const char *category = event->event_category && event->event_category[0] ? event->event_category
                                                                             : DEFAULT_CATEGORY;
    const char *values[FIELD_COUNT] = {
        [FIELD_SOURCE] = event->event_source ? event->event_source : "",
        [FIELD_NAME] = event->event_name ? event->event_name : "",
        [FIELD_CATEGORY] = category,
    };
    for (int f = 0; f < FIELD_COUNT; f++) {
        const s_list_t *include = &self->lists[f][LIST_INCLUDE];
        if (include->count && !s_contains(include, values[f]))
            return s_field_reasons[f];
        if (s_contains(&self->lists[f][LIST_EXCLUDE], values[f]))
            return s_field_reasons[f];
    }
    return SELECTOR_KEEP;
}

selector_reason_t selector_match(const selector_rules_t *rules, const Cairn__Event *event)
{
    return rules ? selector_rules_match(rules, event) : SELECTOR_KEEP;
}

bool selector_rules_is_keep_all(const selector_rules_t *self)
{
    bool is_all = self->read_write == READ_WRITE_ALL;
    for (int f = 0; is_all && f < FIELD_COUNT; f++)
        is_all = !self->lists[f][LIST_INCLUDE].count && !self->lists[f][LIST_EXCLUDE].count;
    return is_all;
}

const char *selector_reason_name(selector_reason_t reason)
{
    static const char *const names[SELECTOR_REASON_COUNT] = {
        [SELECTOR_KEEP] = "kept",
        [SELECTOR_BY_READ_WRITE] = "read_write",
        [SELECTOR_BY_EVENT_SOURCE] = "event_source",
        [SELECTOR_BY_EVENT_NAME] = "event_name",
        [SELECTOR_BY_EVENT_CATEGORY] = "event_category",
    };
    return (unsigned)reason < SELECTOR_REASON_COUNT ? names[reason] : "unknown";
}

/* ---- describing ---- */

/* Appends the values of list, comma-separated, to out[*pos..size). */
static void s_append(char *out, size_t size, size_t *pos, const char *text)
{
    if (*pos >= size)
        return;
    int n = snprintf(out + *pos, size - *pos, "%s", text);
    *pos += n > 0 ? (size_t)n : 0;
    if (*pos >= size)
        *pos = size - 1;
}

static void s_list_text(const s_list_t *list, char *out, size_t size)
{
    size_t pos = 0;
    out[0] = '\0';
    if (!list->count)
        s_append(out, size, &pos, "(none)");
    for (size_t i = 0; i < list->count; i++) {
        if (i)
            s_append(out, size, &pos, ", ");
        s_append(out, size, &pos, list->values[i]);
    }
}

void selector_rules_describe(const selector_rules_t *self, char *out, size_t size)
{
    size_t pos = 0;
    char list[1024];
    if (!size)
        return;
    out[0] = '\0';
    if (selector_rules_is_keep_all(self)) {
        s_append(out, size, &pos, "keep all events");
        return;
    }
    if (self->read_write != READ_WRITE_ALL) {
        s_append(out, size, &pos, "read_write = ");
        s_append(out, size, &pos, s_read_write_names[self->read_write]);
    }
    for (int f = 0; f < FIELD_COUNT; f++)
        for (int k = 0; k < LIST_KINDS; k++) {
            if (!self->lists[f][k].count)
                continue;
            s_list_text(&self->lists[f][k], list, sizeof list);
            if (pos)
                s_append(out, size, &pos, "; ");
            s_append(out, size, &pos, s_list_keys[f][k]);
            s_append(out, size, &pos, " = ");
            s_append(out, size, &pos, list);
        }
}

/* ---- the shared selector ---- */

selector_t *selector_new(selector_rules_t **rules_p)
{
    selector_t *self = cairn_calloc(1, sizeof *self);
    pthread_mutex_init(&self->lock, NULL);
    self->rules = *rules_p;
    *rules_p = NULL;
    char text[2048];
    selector_rules_describe(self->rules, text, sizeof text);
    cairn_log_info("selectors: %s", text);
    return self;
}

/* Drops one reference; returns the rule set to free (outside the lock) or NULL. */
static selector_rules_t *s_unref_locked(selector_rules_t *rules)
{
    return rules && --rules->refs == 0 ? rules : NULL;
}

void selector_destroy(selector_t **self_p)
{
    selector_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    selector_rules_t *last = s_unref_locked(self->rules);
    selector_rules_destroy(&last);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}

/* Logs each key whose value differs between old and new. */
static void s_log_changes(const selector_rules_t *old, const selector_rules_t *new)
{
    if (old->read_write != new->read_write)
        cairn_log_notice("selectors: read_write %s -> %s", s_read_write_names[old->read_write],
                         s_read_write_names[new->read_write]);
    char before[1024], after[1024];
    for (int f = 0; f < FIELD_COUNT; f++)
        for (int k = 0; k < LIST_KINDS; k++) {
            s_list_text(&old->lists[f][k], before, sizeof before);
            s_list_text(&new->lists[f][k], after, sizeof after);
            if (strcmp(before, after) != 0)
                cairn_log_notice("selectors: %s %s -> %s", s_list_keys[f][k], before, after);
        }
}

void selector_replace(selector_t *self, selector_rules_t **rules_p)
{
    selector_rules_t *rules = *rules_p;
    *rules_p = NULL;
    pthread_mutex_lock(&self->lock);
    selector_rules_t *old = self->rules;
    self->rules = rules;
    /* Logged under the lock so that two reloads cannot interleave their
     * lines; old cannot be freed meanwhile since we still hold its reference. */
    s_log_changes(old, rules);
    selector_rules_t *last = s_unref_locked(old);
    pthread_mutex_unlock(&self->lock);
    selector_rules_destroy(&last);
}

const selector_rules_t *selector_acquire(selector_t *self)
{
    if (!self)
        return NULL;
    pthread_mutex_lock(&self->lock);
    selector_rules_t *rules = self->rules;
    rules->refs++;
    pthread_mutex_unlock(&self->lock);
    return rules;
}

void selector_release(selector_t *self, const selector_rules_t **rules_p)
{
    if (!self || !rules_p || !*rules_p)
        return;
    pthread_mutex_lock(&self->lock);
    /* The cast drops the const readers see: only the count changes. */
    selector_rules_t *last = s_unref_locked((selector_rules_t *)*rules_p);
    pthread_mutex_unlock(&self->lock);
    selector_rules_destroy(&last);
    *rules_p = NULL;
}
