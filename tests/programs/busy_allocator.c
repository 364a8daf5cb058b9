/* busy_allocator: threads that are inside malloc, calloc and realloc all the
 * time, so a tracer attaches while calls are in progress.
 *
 *   busy_allocator THREADS BLOCKS
 *
 * Driven by lines on stdin, any number of rounds:
 *   churn   every thread loops in churn(): calloc, realloc, malloc, free,
 *           each block freed at once
 *   go      every thread stops churning and leaks BLOCKS blocks of 1000
 *           bytes from leak_block() (malloc only: an allocator function it
 *           was not in while the tracer attached), then waits; then
 *           `LEAKED bytes=N count=M` for this round (leaky.h protocol)
 * READY is printed once the threads run (libc is mapped by then).
 * EOF ends the program.
 */
#include <pthread.h>
#include <string.h>
#include "leaky.h"

#define LEAK_SIZE 1000
#define MAX_THREADS 16

static volatile int phase; /* 0 idle, 1 churn, 2 leak */
static int round_no, done, blocks;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static void *volatile sink;

static void __attribute__((noinline)) churn(void)
{
	void *p = calloc(1, 48);
	p = realloc(p, 96);
	void *q = malloc(32);
	sink = q;
	free(q);
	free(p);
}

static void __attribute__((noinline)) leak_block(void)
{
	sink = malloc(LEAK_SIZE); /* never freed */
	asm volatile("" ::: "memory");
}

static void *worker(void *arg)
{
	int seen = 0;
	(void)arg;
	for (;;) {
		while (phase == 1)
			churn();
		pthread_mutex_lock(&lock);
		while (phase == 0 || (phase == 2 && seen == round_no))
			pthread_cond_wait(&changed, &lock);
		int leak = phase == 2 && seen != round_no;
		seen = round_no;
		pthread_mutex_unlock(&lock);
		if (!leak)
			continue;
		for (int i = 0; i < blocks; i++)
			leak_block();
		pthread_mutex_lock(&lock);
		done++;
		pthread_cond_broadcast(&changed);
		pthread_mutex_unlock(&lock);
	}
	return NULL;
}

static void set_phase(int next)
{
	pthread_mutex_lock(&lock);
	phase = next;
	if (next == 2) {
		round_no++;
		done = 0;
	}
	pthread_cond_broadcast(&changed);
	pthread_mutex_unlock(&lock);
}

int main(int argc, char **argv)
{
	static char out[4096];
	int threads = argc > 1 ? atoi(argv[1]) : 3;
	char line[64];
	pthread_t ids[MAX_THREADS];

	blocks = argc > 2 ? atoi(argv[2]) : 100;
	if (threads < 1 || threads > MAX_THREADS)
		return 2;
	setvbuf(stdout, out, _IOLBF, sizeof out); /* stdio allocates nothing of its own */
	for (int i = 0; i < threads; i++)
		pthread_create(&ids[i], NULL, worker, NULL);
	puts("READY"); /* libc is mapped: the test may look for the allocator */
	while (fgets(line, sizeof line, stdin)) {
		if (strncmp(line, "churn", 5) == 0) {
			set_phase(1);
			continue;
		}
		set_phase(2);
		pthread_mutex_lock(&lock);
		while (done < threads)
			pthread_cond_wait(&changed, &lock);
		pthread_mutex_unlock(&lock);
		set_phase(0);
		report_leaked((size_t)threads * blocks * LEAK_SIZE, (size_t)threads * blocks);
	}
	return 0;
}
