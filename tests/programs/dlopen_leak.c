/* dlopen_leak: loads a leaking library after the tracer attached (leaky.h protocol).
 *
 *   dlopen_leak LIB [EXTRA]
 *                       after "go": dlopen(LIB) (and EXTRA), at once 10 blocks from
 *                       lib_leak() called by leak_right_after_dlopen(); prints
 *                       SITE and "LOADED"; after "again": 20 more blocks from
 *                       lib_leak() called by leak_later(); SITE, LEAKED, lingers.
 * LIB is libleak.c built without frame pointers: only its unwind tables lead
 * out of it. Link with -ldl.
 */
#include <dlfcn.h>
#include <string.h>
#include "leaky.h"

typedef size_t (*leak_fn)(int blocks);

static leak_fn lib_leak;
static volatile size_t sink;

static __attribute__((noipa)) size_t leak_right_after_dlopen(void)
{
	size_t bytes = lib_leak(10);
	sink += bytes;
	return bytes;
}

static __attribute__((noipa)) size_t leak_later(void)
{
	size_t bytes = lib_leak(20);
	sink += bytes;
	return bytes;
}

int main(int argc, char **argv)
{
	static char in[4096], out[4096];
	char line[64];

	if (argc < 2)
		return 2;
	setvbuf(stdin, in, _IOLBF, sizeof in);
	setvbuf(stdout, out, _IOLBF, sizeof out);
	wait_for_go();
	void *lib = dlopen(argv[1], RTLD_NOW);
	if (!lib || !(lib_leak = (leak_fn)dlsym(lib, "lib_leak"))) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 2;
	}
	if (argc > 2 && !dlopen(argv[2], RTLD_NOW | RTLD_LOCAL)) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 2;
	}
	size_t first = leak_right_after_dlopen();
	report_site("leak_right_after_dlopen", first, 10);
	printf("LOADED\n");
	fflush(stdout);
	if (!fgets(line, sizeof line, stdin) || strncmp(line, "again", 5) != 0)
		return 1;
	size_t second = leak_later();
	report_site("leak_later", second, 20);
	report_leaked(first + second, 30);
	linger();
	return 0;
}
