/* malloc/free microbenchmark: PAIRS malloc(SIZE)+free pairs on THREADS threads.
 * Waits for a line on stdin first, so a tracer can attach before the loop.
 * Prints `ns_per_pair=X` (wall time of the loop / pairs per thread) and
 * `cpu_ns_per_pair=Y` (CPU time of all loop threads, traps and BPF included,
 * / all pairs): the second does not count time spent waiting for a CPU, so it
 * stays comparable on a busy machine. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long pairs = 1000000;
static size_t size = 64;

static double thread_cpu_ns(void)
{
	struct timespec now;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
	return now.tv_sec * 1e9 + now.tv_nsec;
}

static void *loop(void *arg)
{
	double start = thread_cpu_ns();
	for (long i = 0; i < pairs; i++) {
		void *volatile p = malloc(size);
		free(p);
	}
	*(double *)arg = thread_cpu_ns() - start;
	return arg;
}

int main(int argc, char **argv)
{
	int threads = argc > 2 ? atoi(argv[2]) : 1;
	char line[16];
	struct timespec start, end;
	pthread_t tids[64];
	double cpu_ns[64], cpu_total = 0;

	if (argc > 1)
		pairs = atol(argv[1]);
	if (threads < 1 || threads > 64)
		threads = 1;
	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (int t = 0; t < threads; t++)
		pthread_create(&tids[t], NULL, loop, &cpu_ns[t]);
	for (int t = 0; t < threads; t++) {
		pthread_join(tids[t], NULL);
		cpu_total += cpu_ns[t];
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	double ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
	printf("ns_per_pair=%.1f\n", ns / pairs);
	printf("cpu_ns_per_pair=%.1f\n", cpu_total / (pairs * threads));
	fflush(stdout);
	return 0;
}
