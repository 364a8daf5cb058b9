/* Structs and constants shared by kernel_alloc.c and leaktrace/probes/kernel.py
 * (which reads them through bcc's map types: keep the counter order in step).
 * bcc dialect: compiled at run time by bcc, not by a build step. */
#ifndef LEAKTRACE_KERNEL_COMMON_H
#define LEAKTRACE_KERNEL_COMMON_H

#include "age_blocks.h"

/* Same order as model.KERNEL_KINDS. */
enum kernel_kind {
	KIND_KMALLOC = 0,
	KIND_CACHE,
	KIND_PAGE,
	KIND_PERCPU,
	KIND_VMALLOC,
};

/* Address spaces: a free is matched by (space, address) only. kmalloc and
 * kmem_cache objects share one space, since kfree() frees either. */
enum addr_space {
	SPACE_SLAB = 0,
	SPACE_PAGE, /* keyed by pfn */
	SPACE_PERCPU,
	SPACE_VMALLOC,
};

/* kmalloc cache families, as the kernel picks them from the gfp flags. */
enum kmalloc_type {
	KMALLOC_NORMAL = 0,
	KMALLOC_RECLAIM,
	KMALLOC_CGROUP,
	KMALLOC_DMA,
};

enum kcounter {
	K_ALLOCS = 0,       /* allocations recorded */
	K_FREES,            /* frees that matched a recorded allocation */
	K_UNKNOWN_FREES,    /* frees of objects allocated before tracing or filtered out */
	K_FAILED_ALLOCS,    /* failed page/vmalloc allocations, not recorded */
	K_ALLOC_MAP_FULL,   /* allocation lost: `allocs` full */
	K_STACK_FAILED,     /* stack not collected */
	K_BUCKET_MAP_FULL,  /* totals lost: `buckets` full */
	K_REPLACED,         /* record retired: its address was allocated again (its free was not seen) */
	K_STACK_WALKS,      /* stacks walked: a path's first allocation, or unreadable */
	K_STACK_CHECKS,     /* read paths checked against a walk */
	K_STACK_MISMATCHES, /* ... that named another stack */
	K_NESTED_FREES,     /* frees the kernel skipped in the main handler, done by nested_<event> */
	K_BUCKET_INSERTS,   /* entries made in `buckets`: how full it is between reads */
	N_KCOUNTERS,
};

#define CACHE_NAME_LEN 32

struct kbucket_key {
	u64 cgroup_id;
	u32 tgid;
	s32 stack_id;
	u32 block; /* first epoch (timestamp_ns >> AGE_BUCKET_SHIFT) of the age block */
	u32 cache_class; /* kmalloc: bytes_alloc; page: order; unnamed cache: object size */
	u8 kind;
	u8 kmalloc_type;
	u8 level; /* age_blocks.h */
	u8 pad[5];
	char cache[CACHE_NAME_LEN]; /* kmem_cache name, when the tracepoint has it */
};

struct kbucket_totals {
	s64 bytes[AGE_SLOTS]; /* per epoch at level 0, else all in slot 0 */
	s64 count[AGE_SLOTS];
	char comm[16]; /* of the task that created the entry (a freeing one above level 0) */
};

struct kalloc_key {
	u64 addr;
	u32 space;
	u32 pad;
};

struct kalloc_info {
	u64 size;
	u64 timestamp_ns;
	struct kbucket_key bucket; /* as allocated: level 0 */
};

/* First bytes of recorded objects, read on demand (read_contents). */
#define CONTENT_BYTES 64 /* power of two */
#define CONTENT_BATCH 64 /* objects per request */

struct content_head {
	u32 len; /* bytes read: 0 when the object was not outstanding or unreadable */
	u32 pad;
	u8 bytes[CONTENT_BYTES];
};

#endif
