/* cairn_signal.h: SIGHUP as a "reload your configuration" request.
 *
 * czmq handles SIGINT and SIGTERM (zsys_interrupted ends zloop_start); this
 * adds SIGHUP, which only sets a flag: the daemon's loop polls it with
 * cairn_signal_take_reload() and reloads between two events, never inside a
 * signal handler. */
#ifndef CAIRN_SIGNAL_H
#define CAIRN_SIGNAL_H

#include <stdbool.h>

/* Installs the SIGHUP handler. Call once, after zsys_init. */
void cairn_signal_catch_reload(void);

/* True once per SIGHUP received since the last call. */
bool cairn_signal_take_reload(void);

#endif
