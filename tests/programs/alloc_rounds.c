/* Runs one round of allocator calls per line read on stdin and prints a line
 * that depends on every byte it wrote and on the heap bytes in use, so a
 * traced run can be compared with an untraced one: a probe left inside an
 * instruction (a free that no longer frees), or a breakpoint byte left in the
 * code, changes the output or kills the program.
 *
 * Each round calls every hooked function of glibc's family, free(NULL)
 * included (glibc's free starts with `test rdi, rdi`: a probe at +1 or +2
 * lands inside it). The first round also leaks LEAK_COUNT blocks from
 * leak_some() and prints the leaky.h LEAKED line; every round prints
 *     ROUND <n> sum=<checksum> frees=<real frees so far> in_use=<heap bytes in use>
 * The program exits 0 when stdin closes. */
#define _GNU_SOURCE
#include <malloc.h>
#include <string.h>
#include <sys/mman.h>
#include "leaky.h"

#define CALLS 200
#define LEAK_COUNT 16
#define LEAK_SIZE 3000

static void *kept[LEAK_COUNT];
static unsigned long frees;

__attribute__((noinline)) static void leak_some(void)
{
    for (int i = 0; i < LEAK_COUNT; i++)
        kept[i] = memset(malloc(LEAK_SIZE), i, LEAK_SIZE);
}

static unsigned long touch(unsigned char *p, size_t n, unsigned long sum)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (unsigned char)(i * 31 + sum);
        sum = sum * 131 + p[i];
    }
    return sum;
}

static void release(void *p)
{
    free(p);
    frees++;
}

static unsigned long round_of_calls(unsigned long sum)
{
    for (int i = 0; i < CALLS; i++) {
        void *aligned = NULL;
        unsigned char *a = malloc(64 + i);
        unsigned char *b = calloc(4, 16 + i);
        sum = touch(b, 64 + 4 * i, touch(a, 64 + i, sum));
        a = realloc(a, 512 + i);
        sum = touch(a, 512 + i, sum);
        if (posix_memalign(&aligned, 64, 128) == 0)
            sum = touch(aligned, 128, sum);
        unsigned char *c = aligned_alloc(32, 96);
        unsigned char *d = memalign(16, 48);
        unsigned char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        sum = touch(m, 8192, touch(d, 48, touch(c, 96, sum)));
        munmap(m, 8192);
        free(NULL);
        release(a);
        release(b);
        release(aligned);
        release(c);
        release(d);
    }
    return sum;
}

int main(void)
{
    char line[64];
    unsigned long sum = 1;

    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int n = 1; fgets(line, sizeof line, stdin) != NULL; n++) {
        if (n == 1)
            leak_some();
        sum = round_of_calls(sum);
        printf("ROUND %d sum=%lu frees=%lu in_use=%zu\n", n, sum, frees, mallinfo2().uordblks);
        if (n == 1)
            report_leaked((size_t)LEAK_COUNT * LEAK_SIZE, LEAK_COUNT);
    }
    return 0;
}
