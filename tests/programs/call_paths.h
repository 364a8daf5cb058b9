/* call_paths.h: three levels of ten callers each, so one function at the
 * bottom is reached through up to 1,000 distinct stacks a few frames deep.
 *
 *   TEN(level, next)  defines level_0 .. level_9, each running `next`
 *   TABLE(level)      the array level[10] of them
 *
 * Every caller takes (what, path, size) and passes them on; `next` picks
 * the next level from `path`. Used by many_sites.c and bench/soak_target.c.
 */
#ifndef CALL_PATHS_H
#define CALL_PATHS_H

#include <stddef.h>

#define CALLER(level, n, next) \
	static void __attribute__((noinline)) level##_##n(int what, int path, size_t size) \
	{ \
		(void)what; (void)size; \
		next; \
		asm volatile("" ::: "memory"); /* no tail call: the frame stays */ \
	}
#define TEN(level, next) \
	CALLER(level, 0, next) CALLER(level, 1, next) CALLER(level, 2, next) CALLER(level, 3, next) \
	CALLER(level, 4, next) CALLER(level, 5, next) CALLER(level, 6, next) CALLER(level, 7, next) \
	CALLER(level, 8, next) CALLER(level, 9, next)
#define TABLE(level) \
	static void (*const level[])(int, int, size_t) = { level##_0, level##_1, level##_2, level##_3, \
		level##_4, level##_5, level##_6, level##_7, level##_8, level##_9 }

#endif
