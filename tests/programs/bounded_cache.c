/* A bounded cache: cache_put() fills SLOTS entries of ENTRY bytes over
 * FILL_MS, then keeps replacing a random entry (free + malloc) every
 * REPLACE_US until stdin closes. Its total is flat once full, and old
 * entries keep being freed: a cache, not a leak. Prints LEAKED (zero) once
 * full. All entries come from one call site, so they form one stack. */
#include <fcntl.h>
#include "leaky.h"

#define SLOTS 256
#define ENTRY 4096
#define FILL_MS 3000
#define REPLACE_US 5000

static void *slots[SLOTS];

static void cache_put(unsigned slot)
{
    free(slots[slot]);
    slots[slot] = malloc(ENTRY);
    ((char *)slots[slot])[0] = (char)slot;
}

int main(void)
{
    char buf[64];
    unsigned seed = 12345;

    wait_for_go();
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    for (unsigned i = 0;; i++) {
        int full = i >= SLOTS;
        seed = seed * 1103515245u + 12345u;
        cache_put(full ? (seed >> 8) % SLOTS : i);
        if (i == SLOTS)
            report_leaked(0, 0);
        usleep(full ? REPLACE_US : FILL_MS * 1000 / SLOTS);
        if (read(0, buf, sizeof buf) == 0)
            break; /* stdin closed */
    }
    return 0;
}
