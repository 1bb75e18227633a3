/* cairn_fs.c: file-system helpers. */
#include "cairn_fs.h"

#include <errno.h>
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
