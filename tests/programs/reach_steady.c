/* Behaves the same whether or not leaktrace stops it to scan its memory
 * (--reachability=each). Reads lines from stdin until "end", keeping a copy
 * of each on a list; counts SIGRTMIN signals (SA_RESTART handler), read()
 * calls that fail with EINTR, and a worker thread's nanosleep()s that do not
 * sleep their full time without a signal. Then prints what it saw: a scan
 * that lost a signal, broke a system call or skipped a sleep changes the
 * output. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct line {
    struct line *next;
    char text[112];
};

static volatile sig_atomic_t signals;
static int short_sleeps;
static volatile int done;

static void on_signal(int sig) { (void)sig; signals++; }

static void *sleeper(void *arg)
{
    (void)arg;
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGRTMIN);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    while (!done) {
        struct timespec want = {0, 2000000}, left = {0, 0};
        if (nanosleep(&want, &left) != 0)
            short_sleeps++;
    }
    return NULL;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGRTMIN, &sa, NULL);
    pthread_t worker;
    pthread_create(&worker, NULL, sleeper, NULL);
    printf("ready\n");
    fflush(stdout);

    struct line *lines = NULL;
    unsigned long count = 0, checksum = 0;
    int eintr = 0;
    char buf[112];
    size_t used = 0;
    for (;;) {
        ssize_t got = read(0, buf + used, 1);
        if (got < 0 && errno == EINTR) {
            eintr++;
            continue;
        }
        if (got <= 0)
            break;
        if (buf[used] != '\n' && ++used < sizeof buf - 1)
            continue;
        buf[used] = '\0';
        used = 0;
        if (strcmp(buf, "end") == 0)
            break;
        struct line *l = malloc(sizeof *l);
        snprintf(l->text, sizeof l->text, "%s", buf);
        l->next = lines;
        lines = l;
        count++;
        for (char *c = buf; *c; c++)
            checksum = checksum * 31 + (unsigned char)*c;
    }
    done = 1;
    pthread_join(worker, NULL);
    printf("lines=%lu checksum=%lx signals=%d eintr=%d short_sleeps=%d\n",
           count, checksum, (int)signals, eintr, short_sleeps);
    return 0;
}
