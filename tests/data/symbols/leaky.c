/* Test program for leaktrace's symbolizer: known functions, then it waits.
 * Prints "ready" once everything is mapped; exits when stdin closes. */
#include <stdio.h>
#include <stdlib.h>

static void *keep[16];

__attribute__((noinline)) static void *leak_static(size_t size)
{
    return malloc(size);
}

__attribute__((noinline)) void *leak_global(size_t size)
{
    void *block = leak_static(size);
    keep[size % 16] = block;
    return block;
}

int main(void)
{
    leak_global(32);
    printf("ready\n");
    fflush(stdout);
    while (getchar() != EOF)
        ;
    return 0;
}
