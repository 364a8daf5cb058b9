/* A target for `leaktrace run`: leaks in the first microseconds of main,
 * before any I/O, then lingers LINGER_MS (argv[1], default 1500) and exits.
 * Prints LEAKED on stdout like the other programs. */
#include "leaky.h"

#define EARLY_BLOCKS 3
#define EARLY_SIZE 4000

void *early_blocks[EARLY_BLOCKS]; /* not static: -O2 would drop the stores and the mallocs */

__attribute__((noinline)) static void early_leak(void)
{
    for (int i = 0; i < EARLY_BLOCKS; i++)
        early_blocks[i] = malloc(EARLY_SIZE);
}

int main(int argc, char **argv)
{
    early_leak();
    int linger_ms = argc > 1 ? atoi(argv[1]) : 1500;
    report_site("early_leak", EARLY_BLOCKS * EARLY_SIZE, EARLY_BLOCKS);
    report_leaked(EARLY_BLOCKS * EARLY_SIZE, EARLY_BLOCKS);
    usleep(linger_ms * 1000);
    return 0;
}
