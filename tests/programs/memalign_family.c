/* One leaking function per memalign-family allocator. Alignments are above
 * malloc's own (16), so glibc does not relay to malloc, and pvalloc sizes are
 * whole pages, so the size asked for is the size given. */
#define _GNU_SOURCE
#include <malloc.h>
#include "leaky.h"

#define BLOCKS 8
#define PAGE 4096

static size_t leak_posix_memalign(void)
{
    for (int i = 0; i < BLOCKS; i++) {
        void *p;
        if (posix_memalign(&p, 64, 1000) != 0)
            abort();
    }
    return BLOCKS * 1000;
}

static size_t leak_aligned_alloc(void)
{
    for (int i = 0; i < BLOCKS; i++)
        if (aligned_alloc(128, 2048) == NULL)
            abort();
    return BLOCKS * 2048;
}

static size_t leak_memalign(void)
{
    for (int i = 0; i < BLOCKS; i++)
        if (memalign(256, 3000) == NULL)
            abort();
    return BLOCKS * 3000;
}

static size_t leak_valloc(void)
{
    for (int i = 0; i < BLOCKS; i++)
        if (valloc(5000) == NULL)
            abort();
    return BLOCKS * 5000;
}

static size_t leak_pvalloc(void)
{
    for (int i = 0; i < BLOCKS; i++)
        if (pvalloc(2 * PAGE) == NULL)
            abort();
    return BLOCKS * 2 * PAGE;
}

int main(void)
{
    struct { const char *name; size_t (*leak)(void); } leakers[] = {
        {"leak_posix_memalign", leak_posix_memalign},
        {"leak_aligned_alloc", leak_aligned_alloc},
        {"leak_memalign", leak_memalign},
        {"leak_valloc", leak_valloc},
        {"leak_pvalloc", leak_pvalloc},
    };
    size_t total = 0;
    int n = sizeof leakers / sizeof leakers[0];

    wait_for_go();
    for (int i = 0; i < n; i++) {
        size_t bytes = leakers[i].leak();
        report_site(leakers[i].name, bytes, BLOCKS);
        total += bytes;
    }
    report_leaked(total, (size_t)n * BLOCKS);
    linger();
    return 0;
}
