/* The fibonacci leak: the demo app leaktrace ships with.
 *
 * main() starts a thread running child(), which calls fibonacci() RATE times
 * a second (default 10) on a steady clock. Each call callocs a table of 1024
 * long longs (8 KiB) and, in the leaky build, never frees it: the process
 * grows by 8 KiB x RATE per second. Built with -DFIXED (mem-leak-fix), the
 * table is freed and the process stays flat.
 *
 * Usage: mem-leak [RATE]
 *
 * One line per call on stdout, unbuffered so `docker logs` shows it without a
 * TTY. The `mono=` field is CLOCK_MONOTONIC in seconds, the clock leaktrace's
 * JSON reports use for `taken_ns`, so a checker can count the calls made in
 * any window of a trace.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define TABLE_LEN 1024
/* fib(93) is the largest Fibonacci number an unsigned 64-bit integer holds. */
#define FIB_MAX_N 93

#ifdef FIXED
#define APP_NAME "mem-leak-fix"
#else
#define APP_NAME "mem-leak"
#endif

/* noinline: at -O2 both would fold into their callers; the functions of a
 * real service are big enough to stay frames of their own. */
__attribute__((noinline)) static unsigned long long fibonacci(int n)
{
    unsigned long long *table = calloc(TABLE_LEN, sizeof(*table));
    if (table == NULL) {
        perror(APP_NAME ": calloc");
        exit(1);
    }
    table[1] = 1;
    for (int i = 2; i <= n; i++)
        table[i] = table[i - 1] + table[i - 2];
    unsigned long long result = table[n];
#ifdef FIXED
    free(table);
#endif
    return result;
}

static double mono_seconds(const struct timespec *t)
{
    return (double)t->tv_sec + (double)t->tv_nsec / 1e9;
}

static void advance(struct timespec *t, long step_ns)
{
    t->tv_nsec += step_ns;
    while (t->tv_nsec >= 1000000000L) {
        t->tv_nsec -= 1000000000L;
        t->tv_sec++;
    }
}

__attribute__((noinline)) static void *child(void *arg)
{
    long step_ns = 1000000000L / *(int *)arg;
    unsigned long long leaked = 0;
    struct timespec next, now;

    clock_gettime(CLOCK_MONOTONIC, &next);
    for (unsigned long long call = 1;; call++) {
        int n = (int)(call % (FIB_MAX_N + 1));
        unsigned long long value = fibonacci(n);
#ifndef FIXED
        leaked += TABLE_LEN * sizeof(unsigned long long);
#endif
        clock_gettime(CLOCK_MONOTONIC, &now);
        printf(APP_NAME ": call %llu fibonacci(%d) = %llu, leaked %llu KiB mono=%.6f\n",
               call, n, value, leaked / 1024, mono_seconds(&now));
        advance(&next, step_ns);
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    static int rate;
    pthread_t thread;

    setvbuf(stdout, NULL, _IONBF, 0);
    rate = argc > 1 ? atoi(argv[1]) : 10;
    if (rate < 1 || rate > 10000) {
        fprintf(stderr, "usage: %s [RATE]   (calls per second, 1..10000)\n", argv[0]);
        return 2;
    }
    printf(APP_NAME ": pid %d, calling fibonacci() %d times a second, %s\n", (int)getpid(), rate,
#ifdef FIXED
           "freeing each table"
#else
           "leaking 8 KiB per call"
#endif
    );
    if (pthread_create(&thread, NULL, child, &rate) != 0) {
        perror(APP_NAME ": pthread_create");
        return 1;
    }
    pthread_join(thread, NULL);
    return 0;
}
