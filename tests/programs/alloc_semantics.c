/* Allocator semantics a tracer must get right, one distinctly named function
 * each, so a test finds each case by its stack:
 *   realloc_to_zero            malloc then realloc(p, 0): freed, nothing left
 *   failed_realloc_keeps_block malloc then a realloc that fails: the old block
 *                              is still allocated (leaked, with its old size)
 *   fail_malloc_and_calloc     malloc/calloc of more than any object may be: NULL
 *   overflow_calloc            calloc whose n * size overflows: NULL
 *   leak_reallocarray          reallocarray(NULL, n, size), leaked: n * size bytes
 *   leak_large_malloc          4 MiB mallocs (glibc maps them with mmap inside
 *                              malloc), leaked: heap blocks, not mmaps
 *   map_region / move_region   an anonymous mapping grown by mremap, which must
 *                              move it (a guard page stops growth in place);
 *                              leaked under move_region with the new size
 * It prints `MREMAP old=0x.. new=0x..` and `FAILED count=N` (the NULL returns
 * it saw) beside the SITE/LEAKED lines of leaky.h.
 *
 * `alloc_semantics count N` instead makes N calls of each of malloc, calloc,
 * posix_memalign, aligned_alloc, memalign, valloc, pvalloc, realloc(NULL, n)
 * and reallocarray(NULL, n, size) (which glibc runs through realloc and
 * malloc) and frees them all: exactly 9 * N allocations and 9 * N frees.
 *
 * stdio gets static buffers before anything else, so that between "go" and
 * LEAKED the only allocator calls are the ones written here. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include "leaky.h"

#define TIMES 5
#define ZERO_TIMES 7 /* not TIMES: a failure count off by it cannot be offset by another */
#define OLD_SIZE 1111
#define MAX_COUNT 1000
#define ARRAY_N 12
#define ARRAY_SIZE 100
#define LARGE_TIMES 2
#define LARGE_SIZE (4u << 20)
#define PAGE 4096
#define MAP_SIZE (16 * PAGE)
#define REMAP_SIZE (64 * PAGE)

static char in_buffer[256], out_buffer[4096];
#define PER_ROUND 9
static void *blocks[PER_ROUND * MAX_COUNT];
static size_t failures; /* NULL returns seen */
/* More than any object may be, so allocators fail at once; volatile so the
 * compiler cannot decide the calls' results itself. */
static volatile size_t huge = (size_t)PTRDIFF_MAX + 1;
static volatile size_t overflowing = SIZE_MAX / 8 + 1; /* times 16 overflows */

static void realloc_to_zero(void)
{
    for (int i = 0; i < ZERO_TIMES; i++) {
        char *p = malloc(300);
        p[0] = 1;
        if (realloc(p, 0) != NULL) /* glibc frees and returns NULL */
            abort();
    }
}

static size_t failed_realloc_keeps_block(void)
{
    for (int i = 0; i < TIMES; i++) {
        char *p = malloc(OLD_SIZE);
        p[0] = 1;
        if (realloc(p, huge) != NULL)
            abort();
        failures++; /* p is still allocated, and never freed */
    }
    return (size_t)TIMES * OLD_SIZE;
}

static void fail_malloc_and_calloc(void)
{
    for (int i = 0; i < TIMES; i++) {
        if (malloc(huge) != NULL || calloc(1, huge) != NULL)
            abort();
        failures += 2;
    }
}

static void overflow_calloc(void)
{
    for (int i = 0; i < TIMES; i++) {
        if (calloc(overflowing, 16) != NULL)
            abort();
        failures++;
    }
}

static size_t leak_reallocarray(void)
{
    for (int i = 0; i < TIMES; i++)
        if (reallocarray(NULL, ARRAY_N, ARRAY_SIZE) == NULL)
            abort();
    return (size_t)TIMES * ARRAY_N * ARRAY_SIZE;
}

static size_t leak_large_malloc(void)
{
    for (int i = 0; i < LARGE_TIMES; i++) {
        char *p = malloc(LARGE_SIZE);
        if (p == NULL)
            abort();
        memset(p, 1, 64);
    }
    return (size_t)LARGE_TIMES * LARGE_SIZE;
}

/* MAP_SIZE bytes followed by an inaccessible page of the same mapping: a
 * separate VMA, so mremap cannot grow the region in place. */
static void *map_region(void)
{
    char *p = mmap(NULL, MAP_SIZE + PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || mprotect(p + MAP_SIZE, PAGE, PROT_NONE) != 0)
        abort();
    p[0] = 1;
    return p;
}

static void *move_region(void *old)
{
    void *p = mremap(old, MAP_SIZE, REMAP_SIZE, MREMAP_MAYMOVE);
    if (p == MAP_FAILED || p == old)
        abort();
    return p;
}

static int count_mode(int n)
{
    if (n < 1 || n > MAX_COUNT)
        abort();
    wait_for_go();
    for (int i = 0; i < n; i++) {
        void **b = blocks + PER_ROUND * i;
        b[0] = malloc(100);
        b[1] = calloc(10, 10);
        if (posix_memalign(&b[2], 64, 100) != 0)
            abort();
        b[3] = aligned_alloc(64, 128); /* alignments above 16: no relay to malloc */
        b[4] = memalign(64, 100);
        b[5] = valloc(100);
        b[6] = pvalloc(PAGE);
        b[7] = realloc(NULL, 100);
        b[8] = reallocarray(NULL, 10, 10);
        for (int j = 0; j < PER_ROUND; j++)
            if (b[j] == NULL)
                abort();
    }
    for (int i = 0; i < PER_ROUND * n; i++)
        free(blocks[i]);
    printf("CALLS allocs=%d frees=%d\n", PER_ROUND * n, PER_ROUND * n);
    report_leaked(0, 0);
    linger();
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdin, in_buffer, _IOFBF, sizeof in_buffer);
    setvbuf(stdout, out_buffer, _IOFBF, sizeof out_buffer);
    if (argc == 3 && strcmp(argv[1], "count") == 0)
        return count_mode(atoi(argv[2]));

    wait_for_go();
    realloc_to_zero();
    size_t kept = failed_realloc_keeps_block();
    fail_malloc_and_calloc();
    overflow_calloc();
    size_t arrays = leak_reallocarray();
    size_t large = leak_large_malloc();
    void *old = map_region();
    void *moved = move_region(old);

    printf("MREMAP old=%p new=%p\n", old, moved);
    printf("FAILED count=%zu\n", failures);
    report_site("realloc_to_zero", 0, 0);
    report_site("failed_realloc_keeps_block", kept, TIMES);
    report_site("fail_malloc_and_calloc", 0, 0);
    report_site("overflow_calloc", 0, 0);
    report_site("leak_reallocarray", arrays, TIMES);
    report_site("leak_large_malloc", large, LARGE_TIMES);
    report_site("move_region", REMAP_SIZE, 1);
    report_leaked(kept + arrays + large + REMAP_SIZE, TIMES * 2 + LARGE_TIMES + 1);
    linger();
    return 0;
}
