/* many_stacks: leaves COUNT malloc(32) blocks outstanding, spread evenly over
 * 16 x 16 = 256 distinct call stacks (16 entry functions, each recursing 0-15
 * levels). Waits for a line on stdin, allocates, prints `done`, then lingers
 * until stdin closes. Used by bench/report_time.py; build with frame pointers. */
#include <stdio.h>
#include <stdlib.h>

#define ENTRIES 16
#define DEPTHS 16

static void *__attribute__((noinline)) descend(int depth)
{
	void *p = depth ? descend(depth - 1) : malloc(32);
	asm volatile("" ::: "memory"); /* no tail call: every level keeps a frame */
	return p;
}

#define ENTRY(n) static void *__attribute__((noinline)) entry##n(int d) { void *p = descend(d); asm volatile("" ::: "memory"); return p; }
ENTRY(0) ENTRY(1) ENTRY(2) ENTRY(3) ENTRY(4) ENTRY(5) ENTRY(6) ENTRY(7)
ENTRY(8) ENTRY(9) ENTRY(10) ENTRY(11) ENTRY(12) ENTRY(13) ENTRY(14) ENTRY(15)

static void *(*const entries[ENTRIES])(int) = {
	entry0, entry1, entry2, entry3, entry4, entry5, entry6, entry7,
	entry8, entry9, entry10, entry11, entry12, entry13, entry14, entry15,
};

int main(int argc, char **argv)
{
	long count = argc > 1 ? atol(argv[1]) : 1000000;
	char line[16];
	void **kept = malloc(sizeof(void *) * count);

	printf("ready\n");
	fflush(stdout);
	if (!kept || !fgets(line, sizeof(line), stdin))
		return 1;
	for (long i = 0; i < count; i++)
		kept[i] = entries[i % ENTRIES]((i / ENTRIES) % DEPTHS);
	printf("done\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin))
		;
	return kept[0] == NULL;
}
