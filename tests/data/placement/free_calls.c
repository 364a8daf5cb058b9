/* Frees known pointers while tests/integration/test_placement_live.py counts
 * free() calls with a uprobe placed by leaktrace.placement.
 *
 * usage: free_calls N NULLS
 * Prints "ptr 0x..." for N fresh blocks and "ready", waits for a line on
 * stdin, frees the N blocks and calls free(NULL) NULLS times (no other free
 * happens in between), prints "freed", waits for a line, and exits. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    char line[16];
    int n, nulls, i;
    void **blocks;
    void *volatile nothing = NULL; /* keeps the compiler from dropping free(NULL) */

    if (argc != 3)
        return 2;
    n = atoi(argv[1]);
    nulls = atoi(argv[2]);
    blocks = calloc(n, sizeof *blocks);
    for (i = 0; i < n; i++) {
        blocks[i] = malloc(16 + i);
        printf("ptr %p\n", blocks[i]);
    }
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 1;
    for (i = 0; i < n; i++)
        free(blocks[i]);
    for (i = 0; i < nulls; i++)
        free(nothing);
    printf("freed\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 1;
    return 0;
}
