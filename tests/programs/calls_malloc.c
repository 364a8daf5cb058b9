/* Calls malloc from main, prints "ready <pointer>" and waits for stdin to
 * close, so allocator discovery can read its maps and environment while the
 * dynamic linker's own choice (LD_DEBUG=bindings) is the ground truth. */
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    char *block = malloc(64);

    printf("ready %p\n", (void *)block);
    fflush(stdout);
    while (getchar() != EOF)
        ;
    free(block);
    return 0;
}
