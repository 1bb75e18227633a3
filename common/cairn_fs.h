/* cairn_fs.h: file-system helpers shared by both daemons. */
#ifndef CAIRN_FS_H
#define CAIRN_FS_H

#include <stdint.h>
#include <sys/types.h>

/* Creates dir and its missing parents with mode. Returns 0 or -1 (errno set). */
int cairn_mkdir_p(const char *dir, mode_t mode);

/* The largest folio of the page cache on x86-64 (a PMD, 2 MiB). */
#define CAIRN_FS_FOLIO_MAX ((uint64_t)2 << 20)

/* Drops from the page cache what file fd holds more than keep bytes below
 * end and was not dropped yet: from *kept_from, once step more bytes are
 * due, and then advances *kept_from. Advice only (POSIX_FADV_DONTNEED): the
 * kernel keeps dirty and mapped pages, and a later read finds the rest on
 * disk. For append-mostly files written once and read back late: on a VM
 * whose freed memory goes back to the host, every new page of page cache is
 * a fault in the host on its first write, and dropped pages are reused by
 * the next writes instead (see the page cache note in agent/spool.c). */
void cairn_fs_drop_cache(int fd, uint64_t end, uint64_t *kept_from, uint64_t keep, uint64_t step);

#endif
