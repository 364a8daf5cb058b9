/* Shared protocol of the leaking test programs (tests/harness.py drives it).
 *
 * A program waits for one line on stdin before it allocates, so the tracer
 * is attached first; it then prints what it left unfreed, exactly:
 *     SITE fn=<function> bytes=<N> count=<M>     (optional, one per function)
 *     LEAKED bytes=<N> count=<M>                  (always, last)
 * and lingers until stdin closes, so its allocations stay outstanding while
 * the tracer reports. Sizes are the sizes the program asked for.
 */
#ifndef LEAKY_H
#define LEAKY_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void wait_for_go(void)
{
    char line[64];
    if (fgets(line, sizeof line, stdin) == NULL)
        exit(1); /* stdin closed before "go": nothing to do */
}

static void report_site(const char *function, size_t bytes, size_t count)
{
    printf("SITE fn=%s bytes=%zu count=%zu\n", function, bytes, count);
}

static void report_leaked(size_t bytes, size_t count)
{
    printf("LEAKED bytes=%zu count=%zu\n", bytes, count);
    fflush(stdout);
}

/* Blocks until the harness closes stdin (or kills us). */
static void linger(void)
{
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
}

#endif
