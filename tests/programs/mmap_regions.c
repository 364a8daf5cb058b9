/* Anonymous mmap: map_and_keep() maps regions it never unmaps; beside it,
 * map_and_release() maps regions of another size and unmaps them all. */
#include <sys/mman.h>
#include "leaky.h"

#define KEPT 6
#define KEPT_SIZE (64 * 1024)
#define RELEASED 6
#define RELEASED_SIZE (96 * 1024)

static void *map_anonymous(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        abort();
    ((char *)p)[0] = 1;
    return p;
}

static void map_and_keep(void)
{
    for (int i = 0; i < KEPT; i++)
        map_anonymous(KEPT_SIZE);
}

static void map_and_release(void)
{
    void *regions[RELEASED];
    for (int i = 0; i < RELEASED; i++)
        regions[i] = map_anonymous(RELEASED_SIZE);
    for (int i = 0; i < RELEASED; i++)
        munmap(regions[i], RELEASED_SIZE);
}

int main(void)
{
    wait_for_go();
    map_and_keep();
    map_and_release();
    report_site("map_and_keep", (size_t)KEPT * KEPT_SIZE, KEPT);
    report_site("map_and_release", 0, 0);
    report_leaked((size_t)KEPT * KEPT_SIZE, KEPT);
    linger();
    return 0;
}
