/* malloc/free microbenchmark: PAIRS malloc(SIZE)+free pairs on THREADS threads.
 * Waits for a line on stdin first, so a tracer can attach before the loop.
 * Prints `ns_per_pair=X` (wall time of the loop / pairs per thread). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long pairs = 1000000;
static size_t size = 64;

static void *loop(void *arg)
{
	for (long i = 0; i < pairs; i++) {
		void *volatile p = malloc(size);
		free(p);
	}
	return arg;
}

int main(int argc, char **argv)
{
	int threads = argc > 2 ? atoi(argv[2]) : 1;
	char line[16];
	struct timespec start, end;
	pthread_t tids[64];

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
		pthread_create(&tids[t], NULL, loop, NULL);
	for (int t = 0; t < threads; t++)
		pthread_join(tids[t], NULL);
	clock_gettime(CLOCK_MONOTONIC, &end);
	double ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
	printf("ns_per_pair=%.1f\n", ns / pairs);
	fflush(stdout);
	return 0;
}
