/* many_sites: a steady leak from thousands of distinct call stacks.
 *
 *   many_sites STACKS SECONDS ROUND_MS
 *
 * Ten leaking functions (leak_site_0 .. leak_site_9, block size 16 * (n + 1))
 * are each reached through every path of three levels of callers (20 x 10 x
 * 10 functions), so STACKS (up to 20000, a multiple of 10) are distinct
 * stacks a few frames deep. After "go" (leaky.h) every ROUND_MS one block
 * is leaked from every stack, for SECONDS; then SITE/LEAKED lines, exactly.
 */
#include <stdint.h>
#include <time.h>
#include "call_paths.h"
#include "leaky.h"

#define LEAKERS 10
#define MAX_STACKS 20000

static size_t leaked_bytes[LEAKERS], leaked_count[LEAKERS];
static volatile uintptr_t sink;

#define LEAKER(n) \
	static void __attribute__((noinline)) leak_site_##n(void) \
	{ \
		sink ^= (uintptr_t)malloc(16 * (n + 1)); /* never freed */ \
		leaked_bytes[n] += 16 * (n + 1); \
		leaked_count[n]++; \
		asm volatile("" ::: "memory"); \
	}
LEAKER(0) LEAKER(1) LEAKER(2) LEAKER(3) LEAKER(4) LEAKER(5) LEAKER(6) LEAKER(7) LEAKER(8) LEAKER(9)
static void (*const leakers[LEAKERS])(void) = {
	leak_site_0, leak_site_1, leak_site_2, leak_site_3, leak_site_4,
	leak_site_5, leak_site_6, leak_site_7, leak_site_8, leak_site_9,
};

/* Each caller is its own function, so each path is its own stack. */
TEN(third, leakers[path % LEAKERS]())
TABLE(third);
TEN(second, third[path / LEAKERS % 10](what, path, size))
TABLE(second);
TEN(first_a, second[path / 100 % 10](what, path, size))
TEN(first_b, second[path / 100 % 10](what, path, size))
static void (*const first[20])(int, int, size_t) = {
	first_a_0, first_a_1, first_a_2, first_a_3, first_a_4, first_a_5, first_a_6, first_a_7,
	first_a_8, first_a_9, first_b_0, first_b_1, first_b_2, first_b_3, first_b_4, first_b_5,
	first_b_6, first_b_7, first_b_8, first_b_9,
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	int stacks = argc > 1 ? atoi(argv[1]) : 1000;
	double seconds = argc > 2 ? atof(argv[2]) : 10;
	int round_ms = argc > 3 ? atoi(argv[3]) : 250;
	static char out[4096];
	if (stacks < LEAKERS || stacks > MAX_STACKS || stacks % LEAKERS)
		return 2;
	setvbuf(stdout, out, _IOLBF, sizeof out); /* stdio allocates nothing of its own */
	wait_for_go();
	double start = now_s(), next = start;
	while (now_s() - start < seconds) {
		for (int path = 0; path < stacks; path++)
			first[path / 1000](0, path, 0);
		next += round_ms / 1000.0;
		double wait = next - now_s();
		if (wait > 0) {
			struct timespec ts = { (time_t)wait, (long)((wait - (time_t)wait) * 1e9) };
			nanosleep(&ts, NULL);
		}
	}
	size_t bytes = 0, count = 0;
	for (int n = 0; n < LEAKERS; n++) {
		char name[16];
		snprintf(name, sizeof name, "leak_site_%d", n);
		report_site(name, leaked_bytes[n], leaked_count[n]);
		bytes += leaked_bytes[n];
		count += leaked_count[n];
	}
	report_leaked(bytes, count);
	linger();
	return sink == 1;
}
