/* cairn_log.h: the one logging module of both programs.
 *
 * Lines go to stderr as "<N>level: text" when stderr is journald
 * (JOURNAL_STREAM set) and "YYYY-MM-DDTHH:MM:SS.mmmZ level: text" otherwise.
 * The macros test the level before formatting, so disabled lines cost one
 * comparison. Thread-safe: each line is written with a single write(2). */
#ifndef CAIRN_LOG_H
#define CAIRN_LOG_H

typedef enum {
    CAIRN_LOG_ERROR = 0,
    CAIRN_LOG_WARNING,
    CAIRN_LOG_NOTICE,
    CAIRN_LOG_INFO,
    CAIRN_LOG_DEBUG,
} cairn_log_level_t;

extern int cairn_log_level; /* lines above this level are dropped */

/* Parses "error", "warning", "notice", "info" or "debug". Returns the level,
 * or -1 if name is none of them. */
int cairn_log_level_parse(const char *name);

/* Sets the process's program name shown in each line (borrowed pointer). */
void cairn_log_set_ident(const char *ident);

void cairn_log_write(cairn_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define CAIRN_LOG_AT(lvl, ...)                                                                     \
    do {                                                                                           \
        if ((int)(lvl) <= cairn_log_level)                                                         \
            cairn_log_write((lvl), __VA_ARGS__);                                                   \
    } while (0)

#define cairn_log_error(...)   CAIRN_LOG_AT(CAIRN_LOG_ERROR, __VA_ARGS__)
#define cairn_log_warning(...) CAIRN_LOG_AT(CAIRN_LOG_WARNING, __VA_ARGS__)
#define cairn_log_notice(...)  CAIRN_LOG_AT(CAIRN_LOG_NOTICE, __VA_ARGS__)
#define cairn_log_info(...)    CAIRN_LOG_AT(CAIRN_LOG_INFO, __VA_ARGS__)
#define cairn_log_debug(...)   CAIRN_LOG_AT(CAIRN_LOG_DEBUG, __VA_ARGS__)

#endif
