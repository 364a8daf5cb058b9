/* Deletes its own binary once started, then leaks in deleted_leak(): the
 * tracer must still symbolize it (through /proc/PID/map_files).
 * Usage: deletes_itself [CALLS]   (default 20). Protocol: tests/programs/leaky.h */
#include "leaky.h"

#define BLOCK 4096

static void *deleted_leak(void)
{
    return malloc(BLOCK);
}

int main(int argc, char **argv)
{
    int calls = argc > 1 ? atoi(argv[1]) : 20;
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);

    if (len <= 0)
        return 2;
    self[len] = '\0';
    if (unlink(self) != 0)
        return 3;
    wait_for_go();
    for (int i = 0; i < calls; i++)
        deleted_leak();
    report_site("deleted_leak", (size_t)calls * BLOCK, calls);
    report_leaked((size_t)calls * BLOCK, calls);
    linger();
    return 0;
}
