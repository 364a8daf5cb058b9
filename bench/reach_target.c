/* A target for bench/reach_bench.py: on "go", allocates MIB mebibytes in
 * blocks of BLOCK bytes, keeps nine in ten of them in a global array and
 * drops the pointer to the tenth (unreferenced), prints "done", lingers
 * until stdin closes. Every 8th word of a block points into a random kept
 * block; the others hold small numbers, as counters and lengths do. */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

static void **kept;

static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    size_t block = argc > 2 ? strtoul(argv[2], NULL, 10) : 65536;
    size_t count = (mib << 20) / block, words = block / sizeof(uint64_t), lost = 0;
    uint64_t state = 88172645463325252ull;
    char line[16];

    kept = calloc(count, sizeof *kept);
    if (!fgets(line, sizeof line, stdin))
        return 1;
    for (size_t i = 0; i < count; i++) {
        uint64_t *b = malloc(block);
        for (size_t w = 0; w < words; w++)
            b[w] = next_random(&state) & 0xffff;
        if (i % 10 == 9)
            lost++;  /* dropped: nothing will point at it */
        else
            kept[i] = b;
    }
    for (size_t i = 0; i < count; i++) {
        uint64_t *b = kept[i];
        for (size_t w = 0; b && w < words; w += 8) {
            size_t j = next_random(&state) % count;
            b[w] = (uint64_t)(kept[j] ? kept[j] : kept[j - 1]);
        }
    }
    printf("done blocks=%zu lost=%zu\n", count, lost);
    fflush(stdout);
    while (read(0, line, sizeof line) > 0)
        ;
    return 0;
}
