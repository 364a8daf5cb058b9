/* age_blocks.h: where an allocation's bytes sit on the totals maps' time axis.
 *
 * bcc dialect, included by user_alloc.c and kernel_alloc.c; mirrored by
 * leaktrace/probes/age_blocks.py (keep both in step).
 *
 * Time is counted in epochs of 2^AGE_BUCKET_SHIFT ns (~268 ms). A new
 * allocation goes to a level-0 block of AGE_SLOTS epochs with one slot per
 * epoch: young memory keeps its 268 ms ages in one map entry per context and
 * ~2 s. Older memory is folded into coarser blocks, without slots: an epoch
 * is at level L >= 1 (blocks of AGE_SLOTS << (L - 1) epochs) once its level-L
 * block ended at least one such block ago, so a block is never wider than the
 * age of its youngest allocation, and a context holds 2-3 blocks per level
 * (about 50 over a week). A free computes the block of its allocation with
 * the clock at the free, so it lands where that age range is kept now; user
 * space takes a block's totals out of the map once no free can reach it.
 */
#ifndef LEAKTRACE_AGE_BLOCKS_H
#define LEAKTRACE_AGE_BLOCKS_H

#define AGE_SLOT_BITS 3
#define AGE_SLOTS (1 << AGE_SLOT_BITS)
#define AGE_MAX_LEVEL (32 - AGE_SLOT_BITS)

static __always_inline u32 age_block_shift(u32 level)
{
	return level ? AGE_SLOT_BITS + level - 1 : AGE_SLOT_BITS;
}

/* Is the block of `epoch` at `shift` at least two blocks behind `now`'s? */
static __always_inline int age_behind(u32 epoch, u32 now, u32 shift)
{
	return (now >> shift) >= (epoch >> shift) + 2;
}

/* Level and first epoch of the block holding `epoch` at epoch `now`; returns
 * the slot within it (always 0 above level 0). At an allocation now == epoch:
 * level 0. Level L >= 1 holds epochs behind at shift AGE_SLOT_BITS + L - 1;
 * being behind at a shift implies it at every smaller one, so a binary
 * search finds the coarsest. */
static __always_inline u32 age_place(u32 epoch, u32 now, u32 *block, u8 *level)
{
	u32 found = 0;
	if (age_behind(epoch, now, AGE_SLOT_BITS)) {
		u32 lo = AGE_SLOT_BITS, hi = 32; /* behind at lo, not at hi */
#pragma clang loop unroll(disable)
		for (int i = 0; i < 5; i++) {
			u32 mid = (lo + hi) / 2;
			if (mid < hi && age_behind(epoch, now, mid))
				lo = mid;
			else
				hi = mid;
		}
		found = lo - AGE_SLOT_BITS + 1;
	}
	u32 shift = age_block_shift(found);
	*block = (epoch >> shift) << shift;
	*level = found;
	return found ? 0 : epoch & (AGE_SLOTS - 1);
}

#endif
