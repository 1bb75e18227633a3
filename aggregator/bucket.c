/* bucket.c: a bucket that is a local directory, or an S3 bucket.
 *
 * DESIGN: bucket_new picks the kind by the URL's scheme; "s3://" goes to
 * bucket_s3.c and every call is handed on to it. The rest of this file is
 * the directory. A key is a relative path under the directory. A put writes a
 * temporary file in the directory's ".cairn-tmp" folder
 * ("<name>.tmp-<pid>-<counter>"), fsyncs it, renames it over the final name
 * and fsyncs the final name's directory, so a reader sees the old object or
 * the whole new one, never a part. A crash (SIGKILL in the middle of a put)
 * leaves at worst a temporary file, and never among the objects: readers of
 * AWSLogs/ see only whole log files. bucket_new removes what processes that
 * no longer run left in .cairn-tmp (the pid is in the name; aggregators that
 * share a bucket directory keep each other's). Directories created on the
 * way are fsynced into their parents too.
 *
 * THREADS: one thread at a time (the delivery actor), except bucket_cancel:
 * its flag is atomic. A directory's put is not interrupted once begun (it
 * is bounded by the disk); a cancelled bucket refuses the next one. */
#include "bucket.h"
#include "bucket_s3.h"

#include "cairn_mem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUCKET_TMP_DIR ".cairn-tmp" /* under the root: puts in progress */

struct bucket {
    bucket_s3_t *s3;          /* set for an S3 bucket; then nothing below is used */
    char *root;               /* absolute directory, without a trailing '/' */
    unsigned long counter;    /* makes temporary names unique within the process */
    atomic_bool is_cancelled; /* bucket_cancel was called */
};

static int s_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* Creates dir and its missing parents. A directory it creates is fsynced
 * into its parent, so the new path survives a crash. On failure returns -1
 * with errno set and the failing prefix left in dir (so messages can name
 * it); on success dir is unchanged. */
static int s_mkdir_p(char *dir)
{
    struct stat st;
    if (stat(dir, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : (errno = ENOTDIR, -1);
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(dir, 0755) == 0) {
            char *slash = strrchr(dir, '/');
            *slash = '\0';
            int rc = s_fsync_dir(slash == dir ? "/" : dir);
            *slash = '/';
            if (rc != 0)
                return -1;
        } else if (errno != EEXIST)
            return -1;
        if (saved == '\0')
            return 0;
        *p = saved;
    }
}

/* Removes the temporary files in tmp_dir of processes that no longer run. */
static void s_remove_stale_tmp(const char *tmp_dir)
{
    DIR *d = opendir(tmp_dir);
    struct dirent *entry;
    while (d && (entry = readdir(d)) != NULL) {
        const char *mark = strstr(entry->d_name, ".tmp-");
        char *end;
        long pid = mark ? strtol(mark + 5, &end, 10) : 0;
        if (pid <= 0 || *end != '-')
            continue; /* not a temporary file of ours */
        if (pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
            continue; /* its process runs: a put in progress */
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", tmp_dir, entry->d_name) < (int)sizeof path)
            unlink(path);
    }
    if (d)
        closedir(d);
}

bucket_t *bucket_new(const char *url, const bucket_options_t *options, char *err, size_t errlen)
{
    if (strncmp(url, "s3://", 5) == 0) {
        bucket_s3_t *s3 = bucket_s3_new(url, options, err, errlen);
        if (!s3)
            return NULL;
        bucket_t *self = cairn_calloc(1, sizeof *self);
        self->s3 = s3;
        return self;
    }
    const char *path = NULL;
    if (strncmp(url, "dir://", 6) == 0)
        path = url + 6;
    else if (strncmp(url, "file://", 7) == 0)
        path = url + 7;
    else if (!strstr(url, "://"))
        path = url;
    if (!path || path[0] != '/') {
        snprintf(err, errlen,
                 "unsupported bucket URL \"%s\": expected s3://bucket[/prefix] or a local "
                 "directory: /abs/path, dir:///abs/path or file:///abs/path",
                 url);
        return NULL;
    }
    bucket_t *self = cairn_calloc(1, sizeof *self);
    self->root = cairn_strdup(path);
    size_t len = strlen(self->root);
    while (len > 1 && self->root[len - 1] == '/')
        self->root[--len] = '\0';
    size_t dir_len = len + sizeof "/" BUCKET_TMP_DIR;
    char *dir = cairn_malloc(dir_len);
    snprintf(dir, dir_len, "%s/%s", self->root, BUCKET_TMP_DIR);
    if (s_mkdir_p(dir) != 0) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        bucket_destroy(&self);
    } else
        s_remove_stale_tmp(dir);
    free(dir);
    return self;
}

void bucket_destroy(bucket_t **self_p)
{
    bucket_t *self = *self_p;
    if (!self)
        return;
    bucket_s3_destroy(&self->s3);
    free(self->root);
    free(self);
    *self_p = NULL;
}

/* Keys are relative paths that stay under the root. */
static bool s_key_is_valid(const char *key)
{
    if (!key[0] || key[0] == '/' || key[strlen(key) - 1] == '/')
        return false;
    for (const char *p = key; p;) {
        if (p[0] == '.' && p[1] == '.' && (p[2] == '/' || p[2] == '\0'))
            return false;
        p = strchr(p, '/');
        if (p)
            p++;
    }
    return true;
}

static int s_write_all(int fd, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int bucket_put(bucket_t *self, const char *key, const void *data, size_t len,
               const char *content_type, char *err, size_t errlen)
{
    if (self->s3)
        return bucket_s3_put(self->s3, key, data, len, content_type, err, errlen);
    (void)content_type; /* files have no content type */
    if (atomic_load(&self->is_cancelled)) {
        snprintf(err, errlen, "%s/%s: cancelled", self->root, key);
        return -1;
    }
    if (!s_key_is_valid(key)) {
        snprintf(err, errlen, "invalid key \"%s\"", key);
        return -1;
    }
    size_t path_len = strlen(self->root) + 1 + strlen(key) + 1;
    size_t tmp_len = path_len + sizeof BUCKET_TMP_DIR + 64;
    char *path = cairn_malloc(path_len);
    char *tmp = cairn_malloc(tmp_len);
    snprintf(path, path_len, "%s/%s", self->root, key);
    const char *name = strrchr(key, '/') ? strrchr(key, '/') + 1 : key;
    snprintf(tmp, tmp_len, "%s/%s/%s.tmp-%d-%lu", self->root, BUCKET_TMP_DIR, name,
             (int)getpid(), ++self->counter);
    char *dir = cairn_strdup(path);
    *strrchr(dir, '/') = '\0';
    const char *failed = tmp; /* the path an error message names */
    bool has_tmp = false;
    int rc = -1;

    int fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ENOENT) { /* someone removed the temporary folder */
        char *tmp_dir = cairn_strdup(tmp);
        *strrchr(tmp_dir, '/') = '\0';
        if (s_mkdir_p(tmp_dir) == 0)
            fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        free(tmp_dir);
    }
    if (fd < 0)
        goto out;
    has_tmp = true;
    if (s_write_all(fd, data, len) != 0 || fsync(fd) != 0)
        goto out;
    int close_rc = close(fd);
    fd = -1;
    if (close_rc != 0)
        goto out;
    int rename_rc = rename(tmp, path);
    if (rename_rc != 0 && errno == ENOENT) { /* the object's folder is new */
        if (s_mkdir_p(dir) != 0) {
            failed = dir;
            goto out;
        }
        rename_rc = rename(tmp, path);
    }
    if (rename_rc != 0) {
        failed = path;
        goto out;
    }
    has_tmp = false;
    if (s_fsync_dir(dir) != 0) {
        failed = dir;
        goto out;
    }
    rc = 0;
out:
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", failed, strerror(errno));
        if (fd >= 0)
            close(fd);
        if (has_tmp)
            unlink(tmp);
    }
    free(dir);
    free(tmp);
    free(path);
    return rc;
}

void bucket_cancel(bucket_t *self)
{
    if (!self)
        return;
    atomic_store(&self->is_cancelled, true);
    if (self->s3)
        bucket_s3_cancel(self->s3);
}

const char *bucket_name(const bucket_t *self)
{
    return self->s3 ? bucket_s3_name(self->s3) : self->root;
}

int bucket_object_key(const bucket_t *self, const char *key, char *out, size_t size)
{
    if (self->s3)
        return bucket_s3_object_key(self->s3, key, out, size);
    int n = snprintf(out, size, "%s", key);
    return n >= 0 && (size_t)n < size ? 0 : -1;
}

const char *bucket_describe(const bucket_t *self)
{
    return self->s3 ? bucket_s3_describe(self->s3) : self->root;
}

int bucket_locate(const bucket_t *self, const char *key, char *out, size_t size)
{
    if (self->s3)
        return bucket_s3_locate(self->s3, key, out, size);
    if (!key[0])
        return -1;
    int n = snprintf(out, size, "%s/%s", self->root, key);
    return n >= 0 && (size_t)n < size ? 0 : -1;
}
