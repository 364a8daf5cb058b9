/* Grows its heap at a known rate and keeps it: argv[1] KiB every argv[2] ms.
 * The memory is written so it counts as resident anonymous memory. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    size_t step = (size_t)atol(argc > 1 ? argv[1] : "256") * 1024;
    long period_ms = atol(argc > 2 ? argv[2] : "100");
    for (;;) {
        char *block = malloc(step);
        if (block)
            memset(block, 0x5a, step);
        usleep(period_ms * 1000);
    }
}
