/* cairn_fs.c: file-system helpers. */
#include "cairn_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int cairn_mkdir_p(const char *dir, mode_t mode)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(path, mode) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(path, mode) != 0 && errno != EEXIST ? -1 : 0;
}

void cairn_fs_drop_cache(int fd, uint64_t end, uint64_t *kept_from, uint64_t keep, uint64_t step)
{
    if (end < *kept_from + keep + step)
        return;
    uint64_t to = end - keep;
    /* The kernel drops only folios wholly inside the range, and writes of
     * many pages make large folios: start a folio lower, so that a folio
     * the last call's end cut through goes now (a step lower, as before,
     * made the kernel look up every page of the range twice). Advice only:
     * if it fails, the pages stay cached, as before. */
    uint64_t below = step < CAIRN_FS_FOLIO_MAX ? step : CAIRN_FS_FOLIO_MAX;
    uint64_t from = *kept_from > below ? *kept_from - below : 0;
    posix_fadvise(fd, (off_t)from, (off_t)(to - from), POSIX_FADV_DONTNEED);
    *kept_from = to;
}
