/* Calls lib_cache_put() in libcache.so, which leaks via strdup().
 * Link: -L<dir> -lcache -Wl,-rpath,<dir>. */
#include "leaky.h"

#define NAMES 48

size_t lib_cache_put(const char *value);

__attribute__((noinline)) static size_t store_names(void)
{
    char name[64];
    size_t bytes = 0;
    for (int i = 0; i < NAMES; i++) {
        snprintf(name, sizeof name, "name-%04d-padded-to-a-longer-string", i);
        bytes += lib_cache_put(name);
    }
    return bytes;
}

int main(void)
{
    wait_for_go();
    size_t bytes = store_names();
    report_site("lib_cache_put", bytes, NAMES);
    report_leaked(bytes, NAMES);
    linger();
    return 0;
}
