/* A slow leak hidden under heavy churn: churn() mallocs and frees batches
 * of 64 blocks of many sizes, thousands of times a second, while
 * leak_slowly() keeps one LEAK_BYTES block every LEAK_EVERY_MS and never
 * frees it. Prints LEAKED (zero: the leak is still going) after the first
 * round and runs until stdin closes. */
#include <fcntl.h>
#include "leaky.h"

#define BATCH 64
#define LEAK_BYTES 1024
#define LEAK_EVERY_MS 100

static void churn(void)
{
    void *blocks[BATCH];
    for (int i = 0; i < BATCH; i++)
        blocks[i] = malloc(16 + (size_t)i * 64);
    for (int i = 0; i < BATCH; i++)
        free(blocks[i]);
}

static void *leak_slowly(void)
{
    char *block = malloc(LEAK_BYTES);
    block[0] = 1;
    return block; /* dropped by the caller: never freed */
}

int main(void)
{
    char buf[64];
    int rounds_per_leak = LEAK_EVERY_MS * 1000 / 100;

    wait_for_go();
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    for (int round = 0;; round++) {
        if (round % rounds_per_leak == 0)
            leak_slowly();
        churn();
        if (round == 0)
            report_leaked(0, 0);
        usleep(100);
        if (read(0, buf, sizeof buf) == 0)
            break; /* stdin closed */
    }
    return 0;
}
