/* cairn_metrics.h: writes a Prometheus text exposition (version 0.0.4) into
 * a cairn_buf_t, for the /metrics endpoints of both daemons.
 *
 *     cairn_metrics_family(&buf, "cairn_events_stored_total", "counter", "Events stored.");
 *     cairn_metrics_sample(&buf, "cairn_events_stored_total", NULL, 42);
 */
#ifndef CAIRN_METRICS_H
#define CAIRN_METRICS_H

#include "cairn_buf.h"

/* Writes the HELP and TYPE lines of a metric family. type is "counter" or
 * "gauge". */
void cairn_metrics_family(cairn_buf_t *out, const char *name, const char *type, const char *help);

/* Writes one sample. labels is NULL or a list of name/value pairs ending in
 * NULL: {"region", "us-east-1", NULL}; values are escaped as the format says. */
void cairn_metrics_sample(cairn_buf_t *out, const char *name, const char *const *labels,
                          double value);

/* A family with one unlabelled sample, the common case. */
void cairn_metrics_one(cairn_buf_t *out, const char *name, const char *type, const char *help,
                       double value);

#endif
