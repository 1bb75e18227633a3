/* cairn_test_pages.h: page-cache checks shared by the unit tests (spool,
 * store). Include after cmocka.h. */
#ifndef CAIRN_TEST_PAGES_H
#define CAIRN_TEST_PAGES_H

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Pages of the first bytes of path in the page cache. */
static inline size_t cairn_test_resident_pages(const char *path, size_t bytes)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    void *map = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(map != MAP_FAILED);
    size_t page = (size_t)sysconf(_SC_PAGESIZE), resident = 0;
    unsigned char *vec = malloc(bytes / page);
    assert_non_null(vec);
    assert_int_equal(mincore(map, bytes, vec), 0);
    for (size_t i = 0; i < bytes / page; i++)
        resident += vec[i] & 1;
    free(vec);
    munmap(map, bytes);
    close(fd);
    return resident;
}

#endif
