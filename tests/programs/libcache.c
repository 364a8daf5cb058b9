/* A shared library that leaks through libc's strdup(): built by the tests as
 * libcache.so. Debian's libc has no frame pointers, so a frame-pointer walk
 * from inside strdup skips lib_cache_put, the function the user needs. */
#include <stdlib.h>
#include <string.h>

#define CACHE_SLOTS 1024

static char *slots[CACHE_SLOTS];
static int used;

/* Not a tail call: the result is stored, so lib_cache_put keeps its frame. */
size_t lib_cache_put(const char *value)
{
    char *copy = strdup(value);
    slots[used++ % CACHE_SLOTS] = copy;
    return strlen(copy) + 1;
}
