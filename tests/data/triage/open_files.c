/* Opens the same file again and again and never closes it: each open() costs
 * one struct file from the unreclaimable `filp` slab cache. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/dev/null";
    long per_tick = atol(argc > 2 ? argv[2] : "500"); /* opens per 10 ms */
    struct rlimit limit = {1 << 20, 1 << 20};
    setrlimit(RLIMIT_NOFILE, &limit);
    for (long n = 1;; n++) {
        if (open(path, O_RDONLY) < 0)
            pause(); /* out of descriptors: hold what we have */
        if (n % per_tick == 0)
            usleep(10000);
    }
}
