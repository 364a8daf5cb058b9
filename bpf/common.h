/* Structs and constants shared by the BPF programs and leaktrace's Python side
 * (leaktrace/probes/user.py and unwinder.py mirror them; tests/unit/test_bpf_agreement.py
 * keeps both in step).
 * bcc dialect: compiled at run time by bcc, not by a build step. */
#ifndef LEAKTRACE_COMMON_H
#define LEAKTRACE_COMMON_H

#include "age_blocks.h"

/* Allocator entry points that carry state from entry to return are numbered
 * FN_<NAME> (1..FN_LAST, the allocator's own 1..FN_LAST_HEAP) by the table in
 * leaktrace/probes/alloc_functions.py, which passes them as -D flags. */
#if !defined(FN_MALLOC) || !defined(FN_LAST_HEAP) || !defined(FN_LAST)
#error "compile with the FN_* flags of leaktrace/probes/alloc_functions.py (--dump-bpf shows them)"
#endif
#define HEAP_FN_BITS (((1u << (FN_LAST_HEAP + 1)) - 1) & ~1u)

enum alloc_kind {
	KIND_HEAP = 0,
	KIND_MMAP = 1,
	KIND_STACK = 2, /* mmap with MAP_STACK: a thread stack (pthread_create) */
};

/* Event and loss counters, one slot each in the per-CPU `counters` array. */
enum counter {
	C_ALLOCS = 0,          /* allocations recorded */
	C_FREES,               /* frees that matched a recorded allocation */
	C_UNKNOWN_FREES,       /* frees of pointers never seen (allocated before attach) */
	C_FAILED_ALLOCS,       /* NULL / MAP_FAILED returns, not recorded */
	C_ALLOC_MAP_FULL,      /* allocation lost: `allocs` full */
	C_STACK_FAILED,        /* stack not collected (map full or walk failed) */
	C_BUCKET_MAP_FULL,     /* totals lost: `buckets` full */
	C_PENDING_MAP_FULL,    /* call lost between entry and return (no per-thread slot) */
	C_SAMPLED_OUT,         /* allocations skipped by sampling */
	C_NESTED_MMAPS,        /* mmaps made inside malloc & co, left to the allocator */
	C_REPLACED,            /* address recorded twice (a free was missed) */
	C_NESTED_CALLS,        /* allocator calls made inside another, left to the outer call */
	C_MISSED_RETURNS,      /* calls whose return was never seen (entered while attaching,
	                          or left by longjmp): their allocation is lost */
	C_BUCKET_INSERTS,      /* entries made in `buckets`: how full it is between reads */
	C_FORKS_LOST,          /* FOLLOW_FORKS: a traced process's child not followed (`images` full) */
	N_COUNTERS,
};

struct pending_key {
	u32 tid;
	u32 fn;
};

struct pending_call {
	u64 size;
	u64 arg; /* realloc/mremap: old address; posix_memalign: memptr */
	u64 sp;  /* at entry: the return probe sees sp + 8, a nested call less */
	u64 entered_ns;
};

struct alloc_key {
	u32 tgid;
	u32 kind;
	u64 addr;
};

struct alloc_info {
	u64 size;
	u64 timestamp_ns;
	s32 stack_id;
	u32 weight; /* allocations this record stands for, << WEIGHT_SHIFT */
	u32 image;  /* exec generation of the process when allocated */
	u32 pad;
};

struct bucket_key {
	u32 tgid;
	s32 stack_id;
	u32 block; /* first epoch (timestamp_ns >> AGE_BUCKET_SHIFT) of the age block */
	u8 kind;
	u8 level;  /* age_blocks.h */
	u16 image; /* exec generation: older images are dropped by user space */
};

struct bucket_totals {
	s64 bytes[AGE_SLOTS]; /* per epoch at level 0, else all in slot 0 */
	s64 count[AGE_SLOTS]; /* << WEIGHT_SHIFT, so sampled estimates keep their fraction */
};

/* Per traced process: how many times it exec'd since tracing began; with
 * FOLLOW_FORKS also the process it was forked from (0: a named target) and
 * whether it is still traced (IMAGE_* bits). */
struct image {
	u32 generation;
	u32 parent;
	u64 exec_ns;
	u32 state;
	u32 pad;
};
#define IMAGE_EXITED 1 /* its pid may be reused by a process nobody asked for */
#define IMAGE_EXECED 2 /* a followed child that exec'd: another program, not followed */

struct trace_event {
	u64 timestamp_ns;
	u64 addr;
	u64 size;
	u32 tgid;
	u32 tid;
	s32 stack_id;
	u32 fn; /* 0 = free, FN_MMAP with size 0 = munmap */
};

#define WEIGHT_SHIFT 10

#endif
