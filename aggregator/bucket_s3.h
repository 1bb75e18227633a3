/* bucket_s3.h: the S3 side of bucket.h. Only bucket.c calls these; everyone
 * else goes through bucket.h, which says what each call promises.
 *
 * Thread: any one thread at a time (the delivery actor), except
 * bucket_s3_cancel. */
#ifndef CAIRN_BUCKET_S3_H
#define CAIRN_BUCKET_S3_H

#include "bucket.h"

typedef struct bucket_s3 bucket_s3_t;

/* url starts with "s3://". Contacts nothing. Returns NULL with the reason
 * (never a secret) in err. */
bucket_s3_t *bucket_s3_new(const char *url, const bucket_options_t *options, char *err,
                           size_t errlen);

/* Frees the bucket and its connection; sets *self_p to NULL. Accepts NULL. */
void bucket_s3_destroy(bucket_s3_t **self_p);

int bucket_s3_put(bucket_s3_t *self, const char *key, const void *data, size_t len,
                  const char *content_type, char *err, size_t errlen);

const char *bucket_s3_describe(const bucket_s3_t *self);

/* Thread-safe (see bucket_cancel). */
void bucket_s3_cancel(bucket_s3_t *self);

const char *bucket_s3_name(const bucket_s3_t *self);

int bucket_s3_object_key(const bucket_s3_t *self, const char *key, char *out, size_t size);

int bucket_s3_locate(const bucket_s3_t *self, const char *key, char *out, size_t size);

#endif
