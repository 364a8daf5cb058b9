/* Runs inside a hostile image: maps the garbage "library" named in argv[1]
 * executable (so the tracer meets a truncated ELF among its modules), then
 * leaks in hostile_leak(). Built stripped; the image's build-id debug path
 * is a symlink aimed at a host-only file. Protocol: tests/programs/leaky.h */
#include <fcntl.h>
#include <sys/mman.h>
#include "leaky.h"

#define BLOCK 8192

void *hostile_leak(void)
{
    return malloc(BLOCK);
}

int main(int argc, char **argv)
{
    int calls = argc > 2 ? atoi(argv[2]) : 20;
    int fd = open(argc > 1 ? argv[1] : "/app/garbage.so", O_RDONLY);

    if (fd < 0 || mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0) == MAP_FAILED)
        return 2;
    wait_for_go();
    for (int i = 0; i < calls; i++)
        hostile_leak();
    report_site("hostile_leak", (size_t)calls * BLOCK, calls);
    report_leaked((size_t)calls * BLOCK, calls);
    linger();
    return 0;
}
