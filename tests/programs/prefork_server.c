/* prefork_server: a server that forks its workers after it starts (leaky.h protocol).
 *
 * After "go":
 *   the parent leaks 10 blocks of 1000 bytes from leak_in_parent(), then
 *   forks 3 workers. Worker i (0..2) frees 4 of the parent's blocks (its
 *   copies: they are not its allocations), leaks 10 * (i + 1) blocks of 512
 *   bytes from leak_in_worker() and prints
 *       WORKER pid=<pid> bytes=<N> count=<M>
 *   Worker 0 also forks a child of its own, which leaks 7 blocks of 256
 *   bytes from leak_in_grandchild() and prints
 *       GRANDCHILD pid=<pid> bytes=<N> count=<M>
 *   Once every line is out the parent prints LEAKED (its own blocks only).
 * Everyone lingers until stdin closes; the parent then reaps its workers.
 */
#include <string.h>
#include <sys/wait.h>
#include "leaky.h"

#define WORKERS 3

static void *volatile sink;
static volatile int grandchild_blocks = 7; /* volatile: one call site, not an unrolled loop */
static void *parent_blocks[10];

static void __attribute__((noinline)) leak_in_parent(int i)
{
	parent_blocks[i] = malloc(1000);
	asm volatile("" ::: "memory");
}

static void __attribute__((noinline)) leak_in_worker(void)
{
	sink = malloc(512);
	asm volatile("" ::: "memory");
}

static void __attribute__((noinline)) leak_in_grandchild(void)
{
	sink = malloc(256);
	asm volatile("" ::: "memory");
}

static void tell(int ready, const char *what, size_t bytes, size_t count)
{
	printf("%s pid=%d bytes=%zu count=%zu\n", what, (int)getpid(), bytes, count);
	fflush(stdout);
	if (write(ready, "x", 1) != 1)
		exit(3);
}

static void grandchild(int ready)
{
	for (int i = 0; i < grandchild_blocks; i++)
		leak_in_grandchild();
	tell(ready, "GRANDCHILD", 7 * 256, 7);
	linger();
	exit(0);
}

static void worker(int index, int ready)
{
	for (int i = 0; i < 4; i++)
		free(parent_blocks[i]);
	if (index == 0 && fork() == 0)
		grandchild(ready);
	int count = 10 * (index + 1);
	for (int i = 0; i < count; i++)
		leak_in_worker();
	tell(ready, "WORKER", (size_t)count * 512, count);
	linger();
	while (wait(NULL) > 0)
		;
	exit(0);
}

int main(void)
{
	static char in[4096], out[4096];
	int ready[2];
	char c;

	/* stdio allocates nothing of its own */
	setvbuf(stdin, in, _IOLBF, sizeof in);
	setvbuf(stdout, out, _IOLBF, sizeof out);
	if (pipe(ready) != 0)
		return 2;
	wait_for_go();
	for (int i = 0; i < 10; i++)
		leak_in_parent(i);
	for (int w = 0; w < WORKERS; w++) {
		pid_t pid = fork();
		if (pid < 0)
			return 2;
		if (pid == 0)
			worker(w, ready[1]);
	}
	for (int n = 0; n < WORKERS + 1; n++)
		if (read(ready[0], &c, 1) != 1)
			return 2;
	report_leaked(10 * 1000, 10);
	linger();
	while (wait(NULL) > 0)
		;
	return 0;
}
