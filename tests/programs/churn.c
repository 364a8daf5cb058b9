/* High churn that frees everything: churn() allocates batches of blocks of
 * many sizes and frees each batch, over and over until stdin closes. At any
 * instant the outstanding blocks are a few microseconds old, so nothing
 * passes an age filter. Prints LEAKED (zero) after the first batch and
 * keeps churning. */
#include <fcntl.h>
#include "leaky.h"

#define BATCH 64

static void churn(void)
{
    void *blocks[BATCH];
    for (int i = 0; i < BATCH; i++)
        blocks[i] = malloc(16 + (size_t)i * 24);
    for (int i = 0; i < BATCH; i++)
        free(blocks[i]);
}

int main(void)
{
    char buf[64];

    wait_for_go();
    churn();
    report_leaked(0, 0);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    for (;;) {
        churn();
        if (read(0, buf, sizeof buf) == 0)
            break; /* stdin closed */
        usleep(50);
    }
    return 0;
}
