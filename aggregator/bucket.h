/* bucket.h: where delivered log files go. A local directory today
 * ("dir:///path", "file:///path" or a plain path); S3 later behind the
 * same three calls.
 *
 * A put is atomic for readers: the object appears whole or not at all
 * (write to a temporary name, fsync, rename, fsync the directory). Putting
 * the same key again replaces the object. Thread: any one thread at a time. */
#ifndef CAIRN_BUCKET_H
#define CAIRN_BUCKET_H

#include <stddef.h>

typedef struct bucket bucket_t;

/* Opens the bucket named by url, creating the directory if needed. Returns
 * NULL with the reason in err. */
bucket_t *bucket_new(const char *url, char *err, size_t errlen);

void bucket_destroy(bucket_t **self_p);

/* Stores len bytes of data under key ("AWSLogs/..."). Returns 0, or -1 with
 * the reason (path and errno text) in err; nothing half-written remains. */
int bucket_put(bucket_t *self, const char *key, const void *data, size_t len,
               const char *content_type, char *err, size_t errlen);

/* Human-readable location ("/var/lib/cairn/bucket"), borrowed. */
const char *bucket_describe(const bucket_t *self);

#endif
