/* config.c: INI-style configuration with errors that name file and line.
 *
 * DESIGN: the file is read once into a flat array of (section, key, value,
 * line) entries. Getters look entries up linearly (configs have tens of keys)
 * and mark them used; errors accumulate instead of stopping at the first, so
 * --check-config can list every problem of a file in one run. A key given
 * twice in one section is an error: the second would silently win. */
#include "config.h"

#include "cairn_log.h"
#include "cairn_mem.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *section; /* "" before the first [section] */
    char *key;
    char *value;
    int line;
    bool is_used; /* a getter asked for it */
} s_entry_t;

struct config {
    char *name;           /* file name used in messages */
    s_entry_t *entries;
    size_t entry_count;
    size_t entry_cap;
    char **errors;
    size_t error_count;
};

static void s_add_error(config_t *self, int line, const char *fmt, va_list ap)
{
    char msg[512];
    int n = line > 0 ? snprintf(msg, sizeof msg, "%s:%d: ", self->name, line)
                     : snprintf(msg, sizeof msg, "%s: ", self->name);
    vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    self->errors = cairn_realloc(self->errors, (self->error_count + 1) * sizeof *self->errors);
    self->errors[self->error_count++] = cairn_strdup(msg);
}

static void s_error_at_line(config_t *self, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_error_at_line(config_t *self, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_add_error(self, line, fmt, ap);
    va_end(ap);
}

static char *s_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

static s_entry_t *s_find(config_t *self, const char *section, const char *key)
{
    for (size_t i = 0; i < self->entry_count; i++)
        if (strcmp(self->entries[i].section, section) == 0 &&
            strcmp(self->entries[i].key, key) == 0)
            return &self->entries[i];
    return NULL;
}

/* Parses the value part of "key = value": strips a trailing comment, or the
 * quotes of a quoted value. Returns NULL for an unterminated quote. */
static char *s_parse_value(char *v)
{
    v = s_trim(v);
    if (*v == '"') {
        char *end = strchr(v + 1, '"');
        if (!end)
            return NULL;
        *end = '\0';
        char *rest = s_trim(end + 1);
        if (*rest && *rest != '#' && *rest != ';')
            return NULL;
        return v + 1;
    }
    for (char *p = v; *p; p++)
        if ((*p == '#' || *p == ';') && (p == v || isspace((unsigned char)p[-1]))) {
            *p = '\0';
            break;
        }
    return s_trim(v);
}

config_t *config_parse(const char *name, const char *text)
{
    config_t *self = cairn_calloc(1, sizeof *self);
    self->name = cairn_strdup(name);
    char *copy = cairn_strdup(text);
    char *section = cairn_strdup("");
    int line_no = 0;
    char *save = NULL;
    /* strtok_r would skip empty lines and so miscount; walk by hand. */
    for (char *line = copy; line; line = save) {
        line_no++;
        save = strchr(line, '\n');
        if (save)
            *save++ = '\0';
        char *s = s_trim(line);
        if (*s == '\0' || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *end = strchr(s, ']');
            if (!end || *s_trim(end + 1)) {
                s_error_at_line(self, line_no, "malformed section header: %s", s);
                continue;
            }
            *end = '\0';
            free(section);
            section = cairn_strdup(s_trim(s + 1));
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            s_error_at_line(self, line_no, "expected key = value, got: %s", s);
            continue;
        }
        *eq = '\0';
        char *key = s_trim(s);
        char *value = s_parse_value(eq + 1);
        if (*key == '\0') {
            s_error_at_line(self, line_no, "missing key before '='");
            continue;
        }
        if (!value) {
            s_error_at_line(self, line_no, "%s: unterminated or malformed quoted value", key);
            continue;
        }
        s_entry_t *prev = s_find(self, section, key);
        if (prev) {
            s_error_at_line(self, line_no, "%s%s%s: given twice (first at line %d)", section,
                            *section ? "." : "", key, prev->line);
            continue;
        }
        if (self->entry_count == self->entry_cap) {
            self->entry_cap = self->entry_cap ? self->entry_cap * 2 : 16;
            self->entries = cairn_realloc(self->entries, self->entry_cap * sizeof *self->entries);
        }
        self->entries[self->entry_count++] = (s_entry_t){cairn_strdup(section), cairn_strdup(key),
                                                         cairn_strdup(value), line_no, false};
    }
    free(section);
    free(copy);
    return self;
}

config_t *config_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read config %s: %s", path, strerror(errno));
        return NULL;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            text = cairn_realloc(text, cap);
        }
        memcpy(text + len, chunk, n);
        len += n;
    }
    int failed = ferror(f);
    fclose(f);
    config_t *self = NULL;
    if (failed)
        snprintf(err, errlen, "cannot read config %s: read error", path);
    else {
        if (!text)
            text = cairn_strdup("");
        else
            text[len] = '\0';
        self = config_parse(path, text);
    }
    free(text);
    return self;
}

void config_destroy(config_t **self_p)
{
    config_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->entry_count; i++) {
        free(self->entries[i].section);
        free(self->entries[i].key);
        free(self->entries[i].value);
    }
    for (size_t i = 0; i < self->error_count; i++)
        free(self->errors[i]);
    free(self->entries);
    free(self->errors);
    free(self->name);
    free(self);
    *self_p = NULL;
}

static s_entry_t *s_use(config_t *self, const char *section, const char *key)
{
    s_entry_t *e = s_find(self, section, key);
    if (e)
        e->is_used = true;
    return e;
}

void config_error(config_t *self, const char *section, const char *key, const char *fmt, ...)
{
    s_entry_t *e = s_find(self, section, key);
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s_error_at_line(self, e ? e->line : 0, "%s.%s: %s", section, key, msg);
}

const char *config_str(config_t *self, const char *section, const char *key, const char *def)
{
    s_entry_t *e = s_use(self, section, key);
    return e ? e->value : def;
}

const char *config_str_required(config_t *self, const char *section, const char *key)
{
    s_entry_t *e = s_use(self, section, key);
    if (!e || !*e->value) {
        config_error(self, section, key, "missing required key (set it in [%s])", section);
        return NULL;
    }
    return e->value;
}

/* Parses a number with an optional unit suffix from units[] (suffix, factor). */
static int s_parse_scaled(const char *text, const char *const *suffixes, const int64_t *factors,
                          int64_t *out)
{
    errno = 0;
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text)
        return -1;
    end = s_trim(end);
    int64_t factor = 1;
    if (*end) {
        int found = 0;
        for (int i = 0; suffixes[i]; i++)
            if (strcasecmp(end, suffixes[i]) == 0) {
                factor = factors[i];
                found = 1;
                break;
            }
        if (!found)
            return -1;
    }
    if (v != 0 && (v > INT64_MAX / factor || v < INT64_MIN / factor))
        return -1;
    *out = (int64_t)v * factor;
    return 0;
}

static int64_t s_ranged(config_t *self, const char *section, const char *key, int64_t def,
                        int64_t min, int64_t max, const char *const *suffixes,
                        const int64_t *factors, const char *what)
{
    s_entry_t *e = s_use(self, section, key);
    if (!e)
        return def;
    int64_t v;
    if (s_parse_scaled(e->value, suffixes, factors, &v) != 0) {
        config_error(self, section, key, "expected %s, got \"%s\"", what, e->value);
        return def;
    }
    if (v < min || v > max) {
        config_error(self, section, key, "%s is out of range [%lld, %lld]", e->value,
                     (long long)min, (long long)max);
        return def;
    }
    return v;
}

int64_t config_int(config_t *self, const char *section, const char *key, int64_t def, int64_t min,
                   int64_t max)
{
    static const char *const none[] = {NULL};
    return s_ranged(self, section, key, def, min, max, none, NULL, "an integer");
}

int64_t config_size(config_t *self, const char *section, const char *key, int64_t def,
                    int64_t min, int64_t max)
{
    static const char *const suffixes[] = {"B", "K", "KB", "KiB", "M", "MB", "MiB",
                                           "G", "GB", "GiB", "T", "TB", "TiB", NULL};
    static const int64_t k = 1024;
    static const int64_t factors[] = {1, k, k, k, k * k, k * k, k * k, k * k * k,
                                      k * k * k, k * k * k, k * k * k * k, k * k * k * k,
                                      k * k * k * k};
    return s_ranged(self, section, key, def, min, max, suffixes, factors,
                    "a size such as 512M or 2G");
}

int64_t config_duration_ms(config_t *self, const char *section, const char *key, int64_t def_ms,
                           int64_t min_ms, int64_t max_ms)
{
    static const char *const suffixes[] = {"ms", "s", "m", "min", "h", "d", NULL};
    static const int64_t factors[] = {1, 1000, 60000, 60000, 3600000, 86400000};
    s_entry_t *e = s_find(self, section, key);
    if (e) {
        /* A bare number means seconds. */
        char *end = NULL;
        errno = 0;
        long long v = strtoll(e->value, &end, 10);
        if (!errno && end != e->value && *s_trim(end) == '\0') {
            e->is_used = true;
            if (v > INT64_MAX / 1000 || v * 1000 < min_ms || v * 1000 > max_ms) {
                config_error(self, section, key, "%s s is out of range [%lld ms, %lld ms]",
                             e->value, (long long)min_ms, (long long)max_ms);
                return def_ms;
            }
            return (int64_t)v * 1000;
        }
    }
    return s_ranged(self, section, key, def_ms, min_ms, max_ms, suffixes, factors,
                    "a duration such as 500ms, 5s, 5m, 1h or 90d");
}

bool config_bool(config_t *self, const char *section, const char *key, bool def)
{
    s_entry_t *e = s_use(self, section, key);
    if (!e)
        return def;
    const char *v = e->value;
    if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on") ||
        !strcmp(v, "1"))
        return true;
    if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off") ||
        !strcmp(v, "0"))
        return false;
    config_error(self, section, key, "expected true or false, got \"%s\"", v);
    return def;
}

void config_check_unknown(config_t *self)
{
    for (size_t i = 0; i < self->entry_count; i++) {
        s_entry_t *e = &self->entries[i];
        if (!e->is_used)
            s_error_at_line(self, e->line, "%s%s%s: unknown key", e->section,
                            *e->section ? "." : "", e->key);
    }
}

size_t config_error_count(const config_t *self)
{
    return self->error_count;
}

const char *config_error_at(const config_t *self, size_t i)
{
    return i < self->error_count ? self->errors[i] : NULL;
}

size_t config_log_errors(const config_t *self)
{
    for (size_t i = 0; i < self->error_count; i++)
        cairn_log_error("config: %s", self->errors[i]);
    return self->error_count;
}
