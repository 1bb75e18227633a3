/* cairn_metrics.c: Prometheus text exposition (see cairn_metrics.h). */
#include "cairn_metrics.h"

#include <math.h>

void cairn_metrics_family(cairn_buf_t *out, const char *name, const char *type, const char *help)
{
    cairn_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void cairn_metrics_sample(cairn_buf_t *out, const char *name, const char *const *labels,
                          double value)
{
    cairn_buf_printf(out, "%s", name);
    if (labels && labels[0]) {
        cairn_buf_printf(out, "{");
        for (size_t i = 0; labels[i] && labels[i + 1]; i += 2) {
            cairn_buf_printf(out, "%s%s=\"", i ? "," : "", labels[i]);
            for (const char *p = labels[i + 1]; *p; p++) {
                if (*p == '\\' || *p == '"')
                    cairn_buf_printf(out, "\\%c", *p);
                else if (*p == '\n')
                    cairn_buf_printf(out, "\\n");
                else
                    cairn_buf_printf(out, "%c", *p);
            }
            cairn_buf_printf(out, "\"");
        }
        cairn_buf_printf(out, "}");
    }
    if (isnan(value))
        cairn_buf_printf(out, " NaN\n");
    else if (value == floor(value) && fabs(value) < 1e15)
        cairn_buf_printf(out, " %.0f\n", value);
    else /* seconds and ratios: millisecond precision, never exponent form */
        cairn_buf_printf(out, " %.3f\n", value);
}

void cairn_metrics_one(cairn_buf_t *out, const char *name, const char *type, const char *help,
                       double value)
{
    cairn_metrics_family(out, name, type, help);
    cairn_metrics_sample(out, name, NULL, value);
}
