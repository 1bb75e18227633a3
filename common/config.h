/* config.h: the INI-style configuration file of both daemons.
 *
 *     # comment (also ; comment)
 *     [section]
 *     key = value          # values may be "quoted"; a quoted value keeps #
 *
 * Typed getters check each value and record an error that names the file,
 * line and reason ("agent.conf:7: http.listen: expected HOST:PORT"), so one
 * pass over the getters reports every mistake at once; config_check_unknown
 * then reports keys nothing asked for (a typo is an error, not a silence). */
#ifndef CAIRN_CONFIG_H
#define CAIRN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct config config_t;

/* Reads and parses path. Returns a config (possibly with syntax errors
 * recorded: check config_error_count) or NULL if the file cannot be read,
 * with the reason in err. */
config_t *config_load(const char *path, char *err, size_t errlen);

/* Parses text as if read from a file named name (for tests). */
config_t *config_parse(const char *name, const char *text);

void config_destroy(config_t **self_p);

/* Each getter returns the value of section.key, or def if absent. A value
 * that does not fit records an error and yields def. Strings are borrowed:
 * valid until config_destroy. */
const char *config_str(config_t *self, const char *section, const char *key, const char *def);
/* Like config_str, but records "missing required key" when absent. */
const char *config_str_required(config_t *self, const char *section, const char *key);
int64_t config_int(config_t *self, const char *section, const char *key, int64_t def, int64_t min,
                   int64_t max);
bool config_bool(config_t *self, const char *section, const char *key, bool def);
/* A size with an optional K, M, G or T suffix (powers of 1024). */
int64_t config_size(config_t *self, const char *section, const char *key, int64_t def,
                    int64_t min, int64_t max);
/* A duration with a unit: ms, s, m, h, d (a bare number is seconds). Returns ms. */
int64_t config_duration_ms(config_t *self, const char *section, const char *key, int64_t def_ms,
                           int64_t min_ms, int64_t max_ms);

/* Records an error about section.key (for checks the getters cannot make),
 * with the key's line when it is present. */
void config_error(config_t *self, const char *section, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Records an error for every key in the file that no getter asked for. */
void config_check_unknown(config_t *self);

/* Number of errors recorded so far. */
size_t config_error_count(const config_t *self);

/* The i-th error message ("file:line: section.key: reason"). */
const char *config_error_at(const config_t *self, size_t i);

/* Logs every error at level error. Returns the count. */
size_t config_log_errors(const config_t *self);

#endif
