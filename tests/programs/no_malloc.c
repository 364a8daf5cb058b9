/* A process with no allocator at all: built -static -nostdlib, it only
 * pauses until killed. leaktrace must say it found no malloc to hook. */
#include <sys/syscall.h>

static long raw_syscall0(long number)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(number) : "rcx", "r11", "memory");
    return ret;
}

void _start(void)
{
    for (;;)
        raw_syscall0(SYS_pause);
}
