/* A cache that only grows, next to a leak that grows as fast (leaktrace
 * --reachability; protocol in leaky.h). Every STEP_MS, cache_put() adds an
 * entry to a list a global points at (reachable: a growing cache, not lost
 * memory) and lose_entry() makes an entry and drops its pointer
 * (unreferenced). Both grow and never free, so growth alone calls both a
 * leak. Prints LEAKED once the first entries are made, then goes on until
 * stdin closes. Sizes are multiples of 16 (see reach_classes.c). */
#include <fcntl.h>
#include <string.h>
#include "leaky.h"

#define ENTRY 256
#define STEP_MS 20

struct entry {
    struct entry *next;
    char key[ENTRY - sizeof(struct entry *)];
};

static struct entry *cache; /* global: every entry stays reachable */

__attribute__((noinline)) static void cache_put(unsigned i)
{
    struct entry *e = malloc(ENTRY);
    memset(e, 0, ENTRY);
    snprintf(e->key, sizeof e->key, "cached key %u", i);
    e->next = cache;
    cache = e;
}

__attribute__((noinline)) static void lose_entry(unsigned i)
{
    struct entry *e = malloc(ENTRY);
    memset(e, 0, ENTRY);
    snprintf(e->key, sizeof e->key, "lost key %u", i);
}

__attribute__((noinline)) static void scrub_stack(void)
{
    volatile char dead[4096];
    memset((char *)dead, 0, sizeof dead);
}

int main(void)
{
    char buf[64];

    wait_for_go();
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    for (unsigned i = 0;; i++) {
        cache_put(i);
        lose_entry(i);
        scrub_stack();
        if (i == 0)
            report_leaked(ENTRY, 1);
        usleep(STEP_MS * 1000);
        if (read(0, buf, sizeof buf) == 0)
            break; /* stdin closed */
    }
    return 0;
}
