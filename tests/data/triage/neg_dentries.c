/* Creates negative dentries: stat() of paths that do not exist, each name new.
 * The kernel caches every failed lookup in the dentry cache (reclaimable). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    long per_tick = atol(argc > 2 ? argv[2] : "5000"); /* lookups per 10 ms */
    char path[4096];
    struct stat st;
    for (unsigned long n = 0;; n++) {
        snprintf(path, sizeof path, "%s/leaktrace-missing-%d-%lu", dir, getpid(), n);
        stat(path, &st);
        if (n % per_tick == 0)
            usleep(10000);
    }
}
