/* selector.h: event selectors, as CloudTrail's: which captured events the
 * agent keeps. A filtered event is counted by its capture path and never
 * spooled.
 *
 * Configured in the agent's [selectors] section (see deploy/cairn-agent.conf):
 *
 *   read_write = all | read_only | write_only      (CloudTrail's ReadWriteType)
 *   include_event_sources = s3.amazonaws.com, ec2.amazonaws.com
 *   exclude_event_sources = kms.amazonaws.com, rdsdata.amazonaws.com
 *   include_event_names / exclude_event_names
 *   include_event_categories / exclude_event_categories
 *
 * An event is kept when it passes every rule given: read_only keeps events
 * whose readOnly is true; write_only keeps the others (readOnly false or
 * absent: what is not known to be a read is kept as a possible write); an
 * include list keeps only events whose field is one of its values, an
 * exclude list drops the events whose field is one of its values. Values
 * match exactly (case-sensitive, no wildcards, as CloudTrail's Equals). A
 * record without eventCategory is matched as "Management", the category of
 * API calls (CloudTrail has always written it since eventVersion 1.07).
 * Lists are comma-separated; at most SELECTOR_MAX_VALUES values in all, each
 * 1..SELECTOR_MAX_VALUE_BYTES bytes; one field may have an include or an
 * exclude list, not both.
 *
 * THREADS: a selector_t is shared by the HTTP pool threads, the tail's
 * thread and the main thread, which replaces its rules on SIGHUP. Rules are
 * immutable and reference-counted: a reader borrows the current rules with
 * selector_acquire (a mutex held for a few instructions, once per request
 * or batch), matches any number of events against them, and gives them back
 * with selector_release. selector_replace swaps in new rules; readers that
 * hold the old ones finish with them, and the last release frees them. So a
 * request or a batch is matched against one set of rules, never half of
 * each. */
#ifndef CAIRN_SELECTOR_H
#define CAIRN_SELECTOR_H

#include <stdbool.h>
#include <stddef.h>

#include "cairn.pb-c.h"
#include "config.h"

#define SELECTOR_MAX_VALUES      500  /* values in all lists together (CloudTrail's limit) */
#define SELECTOR_MAX_VALUE_BYTES 2048 /* longest value (CloudTrail's limit) */

/* Why an event was filtered, or SELECTOR_KEEP. Rules are tried in this
 * order; the first that drops the event is the reason. */
typedef enum {
    SELECTOR_KEEP = 0,
    SELECTOR_BY_READ_WRITE,     /* read_write */
    SELECTOR_BY_EVENT_SOURCE,   /* include/exclude_event_sources */
    SELECTOR_BY_EVENT_NAME,     /* include/exclude_event_names */
    SELECTOR_BY_EVENT_CATEGORY, /* include/exclude_event_categories */
    SELECTOR_REASON_COUNT,
} selector_reason_t;

typedef struct selector selector_t;
typedef struct selector_rules selector_rules_t;

/* Reads the [selectors] section of cfg. Every mistake is recorded in cfg
 * (file, line, reason), as the config getters do. Returns the rules (caller
 * owns: give them to selector_new or selector_replace, or destroy them), or
 * NULL when a mistake was recorded. An absent section keeps everything. */
selector_rules_t *selector_rules_read(config_t *cfg);

/* Frees rules that were never given to a selector; sets *self_p to NULL.
 * Accepts NULL. */
void selector_rules_destroy(selector_rules_t **self_p);

/* SELECTOR_KEEP, or why the rules drop event. Pure; any thread. */
selector_reason_t selector_rules_match(const selector_rules_t *self, const Cairn__Event *event);

/* true when the rules keep every event. */
bool selector_rules_is_keep_all(const selector_rules_t *self);

/* Writes the rules as one line of "key = values" pairs (only those that
 * narrow anything; "keep all events" when none) into out (truncated to
 * size). For logs. */
void selector_rules_describe(const selector_rules_t *self, char *out, size_t size);

/* A selector holding rules (taken: *rules_p is set to NULL). */
selector_t *selector_new(selector_rules_t **rules_p);

/* Frees the selector (and its rules). Every borrowed rule set must have
 * been released. Sets *self_p to NULL; accepts NULL. */
void selector_destroy(selector_t **self_p);

/* Replaces the rules with *rules_p (taken; set to NULL) and logs each key
 * that changed, old and new value (notice), or nothing when none did.
 * Readers holding the old rules keep them until they release. Any thread. */
void selector_replace(selector_t *self, selector_rules_t **rules_p);

/* Borrows the current rules until selector_release. self may be NULL: then
 * NULL, which selector_match treats as "keep all". Any thread. */
const selector_rules_t *selector_acquire(selector_t *self);

/* Gives back rules from selector_acquire; sets *rules_p to NULL. Accepts
 * NULL self and NULL rules. */
void selector_release(selector_t *self, const selector_rules_t **rules_p);

/* selector_rules_match, where NULL rules keep everything. */
selector_reason_t selector_match(const selector_rules_t *rules, const Cairn__Event *event);

/* "read_write", "event_source", "event_name", "event_category" ("kept" for
 * SELECTOR_KEEP): the label of the reason in metrics. */
const char *selector_reason_name(selector_reason_t reason);

#endif
