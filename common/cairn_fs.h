/* cairn_fs.h: file-system helpers shared by both daemons. */
#ifndef CAIRN_FS_H
#define CAIRN_FS_H

#include <sys/types.h>

/* Creates dir and its missing parents with mode. Returns 0 or -1 (errno set). */
int cairn_mkdir_p(const char *dir, mode_t mode);

#endif
