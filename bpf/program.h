/* program.h: what both BPF programs (user_alloc.c, kernel_alloc.c) share - the
 * settings every trace has, the size filter, the per-CPU event counters and
 * adding to the age-block totals (`buckets`) a report reads.
 *
 * bcc dialect, compiled at run time as part of either program. bcc rewrites
 * map calls (map.lookup()) only in the main file, so each program declares
 * its own `counters` and `buckets` (sized, typed and preallocated as it
 * needs) and, after them, defines the one-line accessors declared below.
 * Before including this it names its totals types and the two counter slots
 * bucket_add() uses: BUCKET_KEY, BUCKET_TOTALS, BUCKET_INSERTS_SLOT,
 * BUCKET_MAP_FULL_SLOT.
 */
#ifndef LEAKTRACE_PROGRAM_H
#define LEAKTRACE_PROGRAM_H

#include "age_blocks.h"

/* ---- settings (fixed before load) ---------------------------------------- */
#ifndef MIN_SIZE
#define MIN_SIZE 0
#endif
#ifndef MAX_SIZE
#define MAX_SIZE 0 /* 0 = no upper bound */
#endif
#ifndef MAX_ALLOCS
#define MAX_ALLOCS 1048576
#endif
#ifndef MAX_STACKS
#define MAX_STACKS 16384
#endif
#ifndef MAX_BUCKETS
#define MAX_BUCKETS 131072
#endif
#ifndef AGE_BUCKET_SHIFT
#define AGE_BUCKET_SHIFT 28 /* ~268 ms */
#endif

/* Defined by the program, after its maps. */
static __always_inline u64 *counter(int slot);
static __always_inline BUCKET_TOTALS *totals_of(BUCKET_KEY *key);
static __always_inline int totals_insert(BUCKET_KEY *key, BUCKET_TOTALS *fresh);
/* Fill what a new totals entry holds besides its sums. */
static __always_inline void totals_start(BUCKET_TOTALS *fresh);

static __always_inline void count(int slot)
{
	u64 *value = counter(slot);
	if (value)
		*value += 1;
}

static __always_inline int size_wanted(u64 size)
{
	if (size < MIN_SIZE)
		return 0;
	if (MAX_SIZE && size > MAX_SIZE)
		return 0;
	return 1;
}

/* Add to one slot of an age block's totals (user space reads the map
 * whole, so entries are made once and then only added to). `objects` is
 * what the program counts allocations in (user space: << WEIGHT_SHIFT). */
static __always_inline void bucket_add(BUCKET_KEY *key, u32 slot, s64 bytes, s64 objects)
{
	BUCKET_TOTALS *totals = totals_of(key);
	if (!totals) {
		BUCKET_TOTALS fresh = {};
		totals_start(&fresh);
		if (!totals_insert(key, &fresh)) /* may race with another CPU: one insert wins */
			count(BUCKET_INSERTS_SLOT);
		totals = totals_of(key);
		if (!totals) {
			count(BUCKET_MAP_FULL_SLOT);
			return;
		}
	}
	slot &= AGE_SLOTS - 1;
	__sync_fetch_and_add(&totals->bytes[slot], bytes);
	__sync_fetch_and_add(&totals->count[slot], objects);
}

#endif
