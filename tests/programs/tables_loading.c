/* Allocates from the moment it is told to go, while leaktrace may still be
 * loading its unwind tables: early_leak() leaks one EARLY_SIZE block every
 * millisecond or so until a second line on stdin; late_leak() then leaks
 * LATE_CALLS blocks of LATE_SIZE. Built without frame pointers, so only the
 * unwind tables recover early_leak's and late_leak's callers.
 * Usage: tables_loading */
#include <poll.h>
#include <time.h>
#include "leaky.h"

#define EARLY_SIZE 3001
#define LATE_SIZE 5003
#define LATE_CALLS 100
#define MAX_EARLY 200000

static void *kept[MAX_EARLY + LATE_CALLS];

__attribute__((noinline)) static void *early_leak(void)
{
    void *block = malloc(EARLY_SIZE);
    __asm__ volatile("" : : "r"(block) : "memory"); /* no tail call: the frame stays */
    return block;
}

__attribute__((noinline)) static void *late_leak(void)
{
    void *block = malloc(LATE_SIZE);
    __asm__ volatile("" : : "r"(block) : "memory"); /* no tail call: the frame stays */
    return block;
}

static int told_again(void)
{
    struct pollfd in = { .fd = 0, .events = POLLIN };
    return poll(&in, 1, 0) > 0;
}

int main(void)
{
    struct timespec pause = { 0, 1000000 };
    size_t early = 0;

    wait_for_go();
    while (early < MAX_EARLY && !told_again()) {
        kept[early++] = early_leak();
        nanosleep(&pause, NULL);
    }
    for (int i = 0; i < LATE_CALLS; i++)
        kept[early + i] = late_leak();
    report_site("early_leak", early * EARLY_SIZE, early);
    report_site("late_leak", (size_t)LATE_CALLS * LATE_SIZE, LATE_CALLS);
    report_leaked(early * EARLY_SIZE + (size_t)LATE_CALLS * LATE_SIZE, early + LATE_CALLS);
    linger();
    return 0;
}
