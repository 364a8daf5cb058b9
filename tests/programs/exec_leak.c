/* exec_leak: leaks, then execs another program that leaks (leaky.h protocol).
 *
 *   exec_leak first NEXT    after "go": 50 blocks of 2000 bytes from
 *                           leak_before_exec(), LEAKED; after "exec": exec
 *                           NEXT with the argument "second"
 *   exec_leak second        after "go": 30 blocks of 3000 bytes from
 *                           leak_after_exec(), LEAKED, then lingers
 *
 * Build it twice under two names to tell the images apart by name.
 */
#include <string.h>
#include "leaky.h"

static void *volatile sink;

static void __attribute__((noinline)) leak_before_exec(void)
{
	sink = malloc(2000);
	asm volatile("" ::: "memory");
}

static void __attribute__((noinline)) leak_after_exec(void)
{
	sink = malloc(3000);
	asm volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
	static char in[4096], out[4096];
	char line[64];

	/* stdio allocates nothing of its own, in either image */
	setvbuf(stdin, in, _IOLBF, sizeof in);
	setvbuf(stdout, out, _IOLBF, sizeof out);
	if (argc > 1 && strcmp(argv[1], "second") == 0) {
		wait_for_go();
		for (int i = 0; i < 30; i++)
			leak_after_exec();
		report_leaked(30 * 3000, 30);
		linger();
		return 0;
	}
	if (argc < 3)
		return 2;
	wait_for_go();
	for (int i = 0; i < 50; i++)
		leak_before_exec();
	report_leaked(50 * 2000, 50);
	if (!fgets(line, sizeof line, stdin) || strncmp(line, "exec", 4) != 0)
		return 1;
	execl(argv[2], argv[2], "second", (char *)NULL);
	return 127;
}
