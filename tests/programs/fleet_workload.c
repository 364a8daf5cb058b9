/* The agent's test workloads, one per mode, each running until killed.
 * Every block is written to, so it counts in the process's anonymous memory.
 *   leak     leak_block() keeps 64 KiB every 100 ms and never frees it (640 KiB/s)
 *   churn    churn() allocates and frees 32 blocks of up to 64 KiB every 10 ms: flat
 *   plateau  cache_fill() fills 32 MiB at once, then cache_replace() swaps one
 *            entry every 10 ms: it grew at start-up, then holds
 *   hot      malloc(64)/free as fast as it can, plus leak_block() every 100 ms */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LEAK_BYTES (64 * 1024)
#define CACHE_SLOTS 512
#define CACHE_ENTRY (64 * 1024)

static void *cache[CACHE_SLOTS];

static long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

__attribute__((noinline)) static void leak_block(void)
{
    memset(malloc(LEAK_BYTES), 1, LEAK_BYTES);
}

__attribute__((noinline)) static void churn(unsigned *seed)
{
    void *blocks[32];
    for (int i = 0; i < 32; i++) {
        size_t size = 64 + rand_r(seed) % (64 * 1024);
        blocks[i] = malloc(size);
        memset(blocks[i], 2, size);
    }
    for (int i = 0; i < 32; i++)
        free(blocks[i]);
}

__attribute__((noinline)) static void cache_fill(void)
{
    for (int i = 0; i < CACHE_SLOTS; i++)
        memset(cache[i] = malloc(CACHE_ENTRY), 3, CACHE_ENTRY);
}

__attribute__((noinline)) static void cache_replace(unsigned *seed)
{
    int slot = rand_r(seed) % CACHE_SLOTS;
    free(cache[slot]);
    memset(cache[slot] = malloc(CACHE_ENTRY), 4, CACHE_ENTRY);
}

__attribute__((noinline)) static void hot_loop_until(long deadline)
{
    while (now_ms() < deadline)
        for (int i = 0; i < 1000; i++)
            free(malloc(64));
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "leak";
    unsigned seed = 7;
    if (strcmp(mode, "plateau") == 0)
        cache_fill();
    for (;;) {
        if (strcmp(mode, "leak") == 0) {
            leak_block();
            usleep(100000);
        } else if (strcmp(mode, "churn") == 0) {
            churn(&seed);
            usleep(10000);
        } else if (strcmp(mode, "plateau") == 0) {
            cache_replace(&seed);
            usleep(10000);
        } else {
            leak_block();
            hot_loop_until(now_ms() + 100);
        }
    }
}
