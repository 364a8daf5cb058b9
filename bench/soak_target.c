/* soak_target: a long run at a high allocation rate over many stacks.
 *
 *   soak_target SECONDS RATE
 *
 * After a line on stdin, for SECONDS, about RATE allocations a second (paced
 * in 10 ms steps) go round three patterns, each reached through 1,000
 * distinct stacks (10 x 10 x 10 caller paths, tests/programs/call_paths.h):
 *   churn  malloc + free at once (98.9% of the traffic)
 *   cache  every 100th: a random block of a ring of 20,000 is replaced, so
 *          frees hit blocks of every age up to minutes (40 s on average at
 *          50,000 a second)
 *   leak   every 1,000th allocation is kept for ever
 * Then it prints, exactly, `LEAKED bytes=N count=M` (never freed) and
 * `HELD bytes=N count=M` (the ring, still held), and lingers until stdin
 * closes. stdio runs on static buffers: nothing else stays allocated.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "call_paths.h" /* tests/programs: three levels of callers, 1,000 stacks */

#define RING 20000
#define CACHE_EVERY 100
#define LEAK_EVERY 1000

static void *ring[RING];
static size_t ring_size[RING];
static size_t leaked_bytes, leaked_count;
static void *volatile sink;
static unsigned long long rng = 88172645463325252ULL;

static unsigned next_random(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)rng;
}

static void __attribute__((noinline)) do_churn(size_t size)
{
	void *p = malloc(size);
	sink = p;
	free(p);
}

static void __attribute__((noinline)) do_cache(size_t size)
{
	unsigned slot = next_random() % RING;
	free(ring[slot]);
	ring[slot] = malloc(size);
	ring_size[slot] = ring[slot] ? size : 0;
}

static void __attribute__((noinline)) do_leak(size_t size)
{
	sink = malloc(size); /* never freed */
	leaked_bytes += size;
	leaked_count++;
}

static void act(int what, size_t size)
{
	if (what == 0)
		do_churn(size);
	else if (what == 1)
		do_cache(size);
	else
		do_leak(size);
}
TEN(third, act(what, size))
TABLE(third);
TEN(second, third[path % 10](what, path, size))
TABLE(second);
TEN(first, second[path / 10 % 10](what, path, size))
TABLE(first);

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	static char in[4096], out[4096];
	double seconds = argc > 1 ? atof(argv[1]) : 60;
	long rate = argc > 2 ? atol(argv[2]) : 50000;
	char line[64];
	unsigned long long n = 0;

	setvbuf(stdin, in, _IOLBF, sizeof in);
	setvbuf(stdout, out, _IOLBF, sizeof out);
	printf("ready\n");
	if (!fgets(line, sizeof line, stdin))
		return 1;
	double start = now_s(), step = 0.01, next = start;
	long per_step = rate * step > 1 ? (long)(rate * step) : 1;
	while (now_s() - start < seconds) {
		for (long i = 0; i < per_step; i++, n++) {
			int path = next_random() % 1000;
			int what = n % LEAK_EVERY == 0 ? 2 : (n % CACHE_EVERY == 1 ? 1 : 0);
			first[path / 100](what, path, 16 + (next_random() % 64) * 8);
		}
		next += step;
		double wait = next - now_s();
		if (wait > 0)
			usleep((useconds_t)(wait * 1e6));
	}
	size_t held_bytes = 0, held_count = 0;
	for (int i = 0; i < RING; i++) {
		held_bytes += ring_size[i];
		held_count += ring[i] != NULL;
	}
	printf("ALLOCATIONS count=%llu\n", n);
	printf("LEAKED bytes=%zu count=%zu\n", leaked_bytes, leaked_count);
	printf("HELD bytes=%zu count=%zu\n", held_bytes, held_count);
	fflush(stdout);
	while (fgets(line, sizeof line, stdin))
		;
	return sink == (void *)1;
}
