/* user_alloc.c: uprobe/uretprobe handlers for a process's allocator family.
 *
 * bcc dialect, compiled at run time by bcc (leaktrace/probes/user.py) with the
 * settings below passed as -D flags. Each probe is a short wrapper around the
 * shared helpers: a new allocator entry point costs a few lines.
 *
 * Data kept in the kernel:
 *   task_calls    per-thread arguments from entry to return (task storage: no
 *                 hash insert/delete per call; PENDING_HASH=1 uses a tid-keyed hash
 *                 on kernels without task storage for tracing programs)
 *   allocs        one record per outstanding allocation, keyed by (pid, kind, address)
 *   buckets       outstanding bytes/count per (pid, stack, age bucket, kind), so a
 *                 report reads a few hundred totals instead of every allocation;
 *                 per CPU, so threads on two CPUs never share a cache line
 *   stack_traces  deduplicated user stacks
 *   counters      events and every loss, per CPU
 *
 * With UNWIND_CFI=1, record() hands the allocation to one walker program
 * (unwind_walker, through the `walkers` program array) that walks the stack
 * with unwind tables and finishes the recording: clang compiles the walker
 * and the verifier checks it once, not once per return probe.
 */
#include <uapi/linux/ptrace.h>
#include "common.h"
#include "unwind.h"

/* ---- settings (fixed before load) ---------------------------------------- */
#ifndef MIN_SIZE
#define MIN_SIZE 0
#endif
#ifndef MAX_SIZE
#define MAX_SIZE 0 /* 0 = no upper bound */
#endif
#ifndef SAMPLE_RATE
#define SAMPLE_RATE 0 /* bytes per sample; 0 = record every allocation */
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
#ifndef TRACE_EVENTS
#define TRACE_EVENTS 0
#endif
#ifndef PENDING_HASH
#define PENDING_HASH 0
#endif
#define MAP_ANONYMOUS_FLAG 0x20
#define MAP_STACK_FLAG 0x20000

/* An allocation on its way from record() to finish_record(). */
struct record_args {
	u64 addr;
	u64 size;
	u64 timestamp_ns;
	u32 kind;
	u32 fn;
	u32 weight;
	u32 tid; /* who stored it (per-CPU scratch can be reused by another thread) */
};

/* What the walker program gets from record(), and room for its walk (too big
 * for the BPF stack). */
struct walk_scratch {
	struct record_args record;
	struct unwind_walk walk;
};

#if PENDING_HASH
BPF_HASH(pending, struct pending_key, struct pending_call, 16384);
#if UNWIND_CFI
BPF_PERCPU_ARRAY(walk_scratches, struct walk_scratch, 1);
#endif
#else
struct thread_calls {
	struct pending_call calls[FN_LAST + 1];
	u32 active; /* bit fn set between entry and return of fn */
#if UNWIND_CFI
	struct walk_scratch scratch; /* per thread: no other task can reuse it mid-walk */
#endif
};
BPF_TASK_STORAGE(task_calls, struct thread_calls);
#endif
/* Entries are allocated on insert, not at load: preallocating a million costs
 * attach time and memory a quiet target never uses. */
BPF_F_TABLE("hash", struct alloc_key, struct alloc_info, allocs, MAX_ALLOCS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("percpu_hash", struct bucket_key, struct bucket_totals, buckets, MAX_BUCKETS, BPF_F_NO_PREALLOC);
BPF_STACK_TRACE(stack_traces, MAX_STACKS);
BPF_PERCPU_ARRAY(counters, u64, N_COUNTERS);
#if UNWIND_CFI
/* Maps of the CFI walker; bcc rewrites map calls only in this file, so the
 * walker in unwind.h reaches them through these accessors. */
BPF_ARRAY(unwind_rows, struct unwind_row, UNWIND_MAX_ROWS);
BPF_HASH(unwind_spaces, u32, struct unwind_space, UNWIND_MAX_PROCESSES);
BPF_ARRAY(unwind_mappings, struct unwind_mapping, UNWIND_MAX_PROCESSES * UNWIND_MAX_MAPPINGS);
BPF_F_TABLE("hash", u32, struct unwound_stack, unwound_stacks, MAX_STACKS, BPF_F_NO_PREALLOC);
BPF_PROG_ARRAY(walkers, 1); /* slot 0: unwind_walker, set by user space before attaching */
BPF_PERCPU_ARRAY(unwind_counters, u64, N_UNWIND_COUNTERS);
static __always_inline struct unwind_row *unwind_row(u32 index) { return unwind_rows.lookup(&index); }
static __always_inline struct unwind_space *unwind_space_of(u32 tgid) { return unwind_spaces.lookup(&tgid); }
static __always_inline struct unwind_mapping *unwind_mapping(u32 index) { return unwind_mappings.lookup(&index); }
static __always_inline struct unwound_stack *unwound_stack(u32 id) { return unwound_stacks.lookup(&id); }
static __always_inline int unwound_stack_insert(u32 id, struct unwound_stack *stack) { return unwound_stacks.insert(&id, stack); }
static __always_inline void unwind_count(int slot, u64 n)
{
	u64 *value = unwind_counters.lookup(&slot);
	if (value)
		*value += n;
}
#endif
#if TRACE_EVENTS
BPF_PERF_OUTPUT(events);
#endif

static __always_inline void count(int slot)
{
	u64 *value = counters.lookup(&slot);
	if (value)
		*value += 1;
}

static __always_inline void emit(struct pt_regs *ctx, u32 fn, u64 addr, u64 size, s32 stack_id)
{
#if TRACE_EVENTS
	u64 id = bpf_get_current_pid_tgid();
	struct trace_event event = {
		.timestamp_ns = bpf_ktime_get_ns(), .addr = addr, .size = size,
		.tgid = id >> 32, .tid = (u32)id, .stack_id = stack_id, .fn = fn,
	};
	events.perf_submit(ctx, &event, sizeof(event));
#endif
}

static __always_inline int size_wanted(u64 size)
{
	if (size < MIN_SIZE)
		return 0;
	if (MAX_SIZE && size > MAX_SIZE)
		return 0;
	return 1;
}

#if !PENDING_HASH
static __always_inline struct thread_calls *thread_calls(u64 flags)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	return task_calls.task_storage_get(task, 0, flags);
}

/* Remember the size until the return probe sees the address. */
static __always_inline int call_enter(u32 fn, u64 size, u64 arg)
{
	struct thread_calls *calls = thread_calls(BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!calls || fn > FN_LAST) {
		count(C_PENDING_MAP_FULL);
		return 0;
	}
	calls->calls[fn].size = size;
	calls->calls[fn].arg = arg;
	calls->active |= 1u << fn;
	return 0;
}

/* Take back what call_enter stored; 0 when the entry was missed. */
static __always_inline int call_take(u32 fn, struct pending_call *out)
{
	struct thread_calls *calls = thread_calls(0);
	if (!calls || fn > FN_LAST || !(calls->active & (1u << fn)))
		return 0;
	*out = calls->calls[fn];
	calls->active &= ~(1u << fn);
	return 1;
}

/* An mmap made inside malloc & co belongs to the allocator. */
static __always_inline int inside_allocator(void)
{
	struct thread_calls *calls = thread_calls(0);
	return calls && (calls->active & HEAP_FN_BITS);
}

#if UNWIND_CFI
static __always_inline struct walk_scratch *walk_scratch(void)
{
	struct thread_calls *calls = thread_calls(0);
	return calls ? &calls->scratch : NULL;
}
#endif
#else
/* Remember the size until the return probe sees the address. */
static __always_inline int call_enter(u32 fn, u64 size, u64 arg)
{
	struct pending_key key = { .tid = (u32)bpf_get_current_pid_tgid(), .fn = fn };
	struct pending_call call = { .size = size, .arg = arg };
	if (pending.update(&key, &call))
		count(C_PENDING_MAP_FULL);
	return 0;
}

/* Take back what call_enter stored; 0 when the entry was missed. */
static __always_inline int call_take(u32 fn, struct pending_call *out)
{
	struct pending_key key = { .tid = (u32)bpf_get_current_pid_tgid(), .fn = fn };
	struct pending_call *call = pending.lookup(&key);
	if (!call)
		return 0;
	*out = *call;
	pending.delete(&key);
	return 1;
}

static __always_inline int inside_allocator(void)
{
	struct pending_key key = { .tid = (u32)bpf_get_current_pid_tgid() };
#pragma unroll
	for (u32 fn = FN_MALLOC; fn <= FN_LAST_HEAP; fn++) {
		key.fn = fn;
		if (pending.lookup(&key))
			return 1;
	}
	return 0;
}

#if UNWIND_CFI
static __always_inline struct walk_scratch *walk_scratch(void)
{
	u32 zero = 0;
	return walk_scratches.lookup(&zero);
}
#endif
#endif

/* This CPU's slot of the totals; user space sums the CPUs. A new key starts
 * with this event's amounts (zero on the other CPUs), one update in all. */
static __always_inline void bucket_add(struct bucket_key *key, s64 bytes, s64 weight)
{
	struct bucket_totals *totals = buckets.lookup(key);
	if (!totals) {
		struct bucket_totals first = { .bytes = bytes, .count = weight };
		if (!buckets.insert(key, &first))
			return;
		totals = buckets.lookup(key); /* inserted meanwhile by another thread */
		if (!totals) {
			count(C_BUCKET_MAP_FULL);
			return;
		}
	}
	/* Atomic although per CPU: another task's probe may preempt this one. */
	__sync_fetch_and_add(&totals->bytes, bytes);
	__sync_fetch_and_add(&totals->count, weight);
}

static __always_inline void bucket_of(struct bucket_key *key, u32 tgid, u32 kind, struct alloc_info *info)
{
	key->tgid = tgid;
	key->stack_id = info->stack_id;
	key->epoch = info->timestamp_ns >> AGE_BUCKET_SHIFT;
	key->kind = kind;
}

/* Forget a recorded allocation; 0 when it was never recorded. */
static __always_inline int release(u32 kind, u64 addr)
{
	struct alloc_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .kind = kind, .addr = addr };
	struct alloc_info *info = allocs.lookup(&key);
	if (!info)
		return 0;
	struct bucket_key bkey = {};
	bucket_of(&bkey, key.tgid, kind, info);
	u64 weight = info->weight;
	bucket_add(&bkey, -(s64)((info->size * weight) >> WEIGHT_SHIFT), -(s64)weight);
	allocs.delete(&key);
	return 1;
}

/* Sampling by bytes: an allocation of size s is kept with probability
 * min(1, s / SAMPLE_RATE) and stands for 1/p allocations, so totals stay
 * unbiased (tcmalloc's heap profiler does the same). Returns the weight. */
static __always_inline u64 sample_weight(u64 size)
{
#if SAMPLE_RATE
	if (size >= SAMPLE_RATE)
		return 1 << WEIGHT_SHIFT;
	if (size == 0 || bpf_get_prandom_u32() % SAMPLE_RATE >= size)
		return 0;
	return ((u64)SAMPLE_RATE << WEIGHT_SHIFT) / size;
#else
	return 1 << WEIGHT_SHIFT;
#endif
}

/* The second half of record(), once the stack is known. */
static __always_inline int finish_record(struct pt_regs *ctx, struct record_args *r, s32 stack_id)
{
	if (stack_id < 0)
		count(C_STACK_FAILED);
	struct alloc_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .kind = r->kind, .addr = r->addr };
	struct alloc_info info = {
		.size = r->size, .timestamp_ns = r->timestamp_ns, .stack_id = stack_id, .weight = r->weight,
	};
	if (allocs.update(&key, &info)) {
		count(C_ALLOC_MAP_FULL);
		return 0;
	}
	/* Totals move only once the allocation is really recorded. */
	struct bucket_key bkey = {};
	bucket_of(&bkey, key.tgid, r->kind, &info);
	bucket_add(&bkey, (r->size * r->weight) >> WEIGHT_SHIFT, r->weight);
	count(C_ALLOCS);
	emit(ctx, r->fn, r->addr, r->size, stack_id);
	return 0;
}

static __always_inline int record(struct pt_regs *ctx, u32 kind, u64 addr, u64 size, u32 fn)
{
	if (!size_wanted(size))
		return 0;
	u64 weight = sample_weight(size);
	if (!weight) {
		count(C_SAMPLED_OUT);
		return 0;
	}
	if (release(kind, addr))
		count(C_REPLACED);
	struct record_args r = {
		.addr = addr, .size = size, .timestamp_ns = bpf_ktime_get_ns(), .kind = kind, .fn = fn,
		.weight = weight, .tid = (u32)bpf_get_current_pid_tgid(),
	};
#if UNWIND_CFI
	struct walk_scratch *scratch = walk_scratch();
	if (scratch) {
		scratch->record = r;
		walkers.call(ctx, 0); /* returns only when no walker is loaded */
	}
#endif
	return finish_record(ctx, &r, stack_traces.get_stackid(ctx, BPF_F_USER_STACK));
}

#if UNWIND_CFI
/* Tail-called by record() at a return probe (ctx is that probe's registers):
 * walks the stack with unwind tables, or frame pointers when the process has
 * none, and records the allocation. */
int unwind_walker(struct pt_regs *ctx)
{
	struct walk_scratch *scratch = walk_scratch();
	if (!scratch) {
		count(C_PENDING_MAP_FULL);
		return 0;
	}
	struct record_args r = scratch->record;
	if (r.tid != (u32)bpf_get_current_pid_tgid()) {
		count(C_PENDING_MAP_FULL); /* another thread's probe reused this CPU's scratch */
		return 0;
	}
	s32 stack_id = unwind_stack(ctx, &scratch->walk);
	if (stack_id == UNWIND_NO_TABLES)
		stack_id = stack_traces.get_stackid(ctx, BPF_F_USER_STACK);
	return finish_record(ctx, &r, stack_id);
}
#endif

/* glibc's realloc(NULL, n) runs malloc, reallocarray runs realloc: the
 * outer call records the block, once, at its own return. */
static __always_inline int nested_call(void)
{
	if (!inside_allocator())
		return 0;
	count(C_NESTED_CALLS);
	return 1;
}

/* Return probe of the malloc family: the returned pointer is the allocation. */
static __always_inline int alloc_exit(struct pt_regs *ctx, u32 fn)
{
	struct pending_call call;
	if (!call_take(fn, &call) || nested_call())
		return 0;
	u64 addr = PT_REGS_RC(ctx);
	if (!addr) {
		count(C_FAILED_ALLOCS);
		return 0;
	}
	return record(ctx, KIND_HEAP, addr, call.size, fn);
}

/* realloc = free(old) + alloc(new); realloc(p, 0) returning NULL freed p
 * (glibc's realloc frees through __libc_free, the address of free, so
 * free_enter has usually released p already: count a free only if this
 * releases something, and never a failure); any other NULL is a failure that
 * leaves the old block allocated. */
static __always_inline int resize_exit(struct pt_regs *ctx, u32 fn)
{
	struct pending_call call;
	if (!call_take(fn, &call) || nested_call())
		return 0;
	u64 addr = PT_REGS_RC(ctx);
	if (!addr) {
		if (call.size != 0)
			count(C_FAILED_ALLOCS);
		else if (call.arg && release(KIND_HEAP, call.arg))
			count(C_FREES);
		return 0;
	}
	if (call.arg && release(KIND_HEAP, call.arg))
		count(C_FREES);
	return record(ctx, KIND_HEAP, addr, call.size, fn);
}

static __always_inline int forget(struct pt_regs *ctx, u32 kind, u64 addr)
{
	if (!addr)
		return 0;
	if (release(kind, addr)) {
		count(C_FREES);
		emit(ctx, 0, addr, kind == KIND_MMAP ? 0 : 1, -1);
	} else {
		count(C_UNKNOWN_FREES);
	}
	return 0;
}

/* n * size, or 1 on overflow. The empty asm keeps clang from turning the
 * check into a 128-bit multiply, which BPF cannot call. */
static __always_inline int product(u64 n, u64 size, u64 *out)
{
	u64 total = n * size;
	asm volatile("" : "+r"(total));
	*out = total;
	return n && total / n != size;
}

/* ---- probes ------------------------------------------------------------- */
int malloc_enter(struct pt_regs *ctx, size_t size) { return call_enter(FN_MALLOC, size, 0); }
int malloc_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_MALLOC); }

int calloc_enter(struct pt_regs *ctx, size_t n, size_t size)
{
	u64 total;
	if (product(n, size, &total)) {
		count(C_FAILED_ALLOCS); /* calloc fails without allocating */
		return 0;
	}
	return call_enter(FN_CALLOC, total, 0);
}
int calloc_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_CALLOC); }

int realloc_enter(struct pt_regs *ctx, void *ptr, size_t size) { return call_enter(FN_REALLOC, size, (u64)ptr); }
int realloc_exit(struct pt_regs *ctx) { return resize_exit(ctx, FN_REALLOC); }

int reallocarray_enter(struct pt_regs *ctx, void *ptr, size_t n, size_t size)
{
	u64 total;
	if (product(n, size, &total)) {
		count(C_FAILED_ALLOCS); /* fails, leaving ptr allocated */
		return 0;
	}
	return call_enter(FN_REALLOCARRAY, total, (u64)ptr);
}
int reallocarray_exit(struct pt_regs *ctx) { return resize_exit(ctx, FN_REALLOCARRAY); }

int posix_memalign_enter(struct pt_regs *ctx, void **memptr, size_t align, size_t size)
{
	return call_enter(FN_POSIX_MEMALIGN, size, (u64)memptr);
}
int posix_memalign_exit(struct pt_regs *ctx)
{
	struct pending_call call;
	void *addr = 0;
	if (!call_take(FN_POSIX_MEMALIGN, &call) || nested_call())
		return 0;
	if (PT_REGS_RC(ctx) != 0 || bpf_probe_read_user(&addr, sizeof(addr), (void *)call.arg) || !addr) {
		count(C_FAILED_ALLOCS);
		return 0;
	}
	return record(ctx, KIND_HEAP, (u64)addr, call.size, FN_POSIX_MEMALIGN);
}

int aligned_alloc_enter(struct pt_regs *ctx, size_t align, size_t size) { return call_enter(FN_ALIGNED_ALLOC, size, 0); }
int aligned_alloc_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_ALIGNED_ALLOC); }
int memalign_enter(struct pt_regs *ctx, size_t align, size_t size) { return call_enter(FN_MEMALIGN, size, 0); }
int memalign_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_MEMALIGN); }
int valloc_enter(struct pt_regs *ctx, size_t size) { return call_enter(FN_VALLOC, size, 0); }
int valloc_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_VALLOC); }
int pvalloc_enter(struct pt_regs *ctx, size_t size) { return call_enter(FN_PVALLOC, size, 0); }
int pvalloc_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_PVALLOC); }

int free_enter(struct pt_regs *ctx, void *ptr) { return forget(ctx, KIND_HEAP, (u64)ptr); }

/* mmap inside malloc & co (inside_allocator) belongs to the allocator: the
 * heap allocation that caused it is already counted. */
int mmap_enter(struct pt_regs *ctx, void *addr, size_t length, int prot, int flags)
{
	if (!(flags & MAP_ANONYMOUS_FLAG))
		return 0; /* file mappings are page cache, not heap */
	if (inside_allocator()) {
		count(C_NESTED_MMAPS);
		return 0;
	}
	return call_enter(FN_MMAP, length, flags & MAP_STACK_FLAG ? KIND_STACK : KIND_MMAP);
}
int mmap_exit(struct pt_regs *ctx)
{
	struct pending_call call;
	if (!call_take(FN_MMAP, &call))
		return 0;
	u64 addr = PT_REGS_RC(ctx);
	if ((s64)addr < 0 && (s64)addr > -4096) { /* MAP_FAILED or -errno */
		count(C_FAILED_ALLOCS);
		return 0;
	}
	return record(ctx, call.arg, addr, call.size, FN_MMAP);
}

int munmap_enter(struct pt_regs *ctx, void *addr)
{
	struct alloc_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .kind = KIND_STACK, .addr = (u64)addr };
	return forget(ctx, allocs.lookup(&key) ? KIND_STACK : KIND_MMAP, (u64)addr);
}

int mremap_enter(struct pt_regs *ctx, void *old, size_t old_size, size_t new_size)
{
	if (inside_allocator())
		return 0; /* realloc of a large block: the allocator's business */
	return call_enter(FN_MREMAP, new_size, (u64)old);
}
int mremap_exit(struct pt_regs *ctx)
{
	struct pending_call call;
	if (!call_take(FN_MREMAP, &call))
		return 0;
	u64 addr = PT_REGS_RC(ctx);
	if ((s64)addr < 0 && (s64)addr > -4096) {
		count(C_FAILED_ALLOCS);
		return 0;
	}
	if (!release(KIND_MMAP, call.arg))
		return 0; /* remapping something we never saw mapped */
	count(C_FREES);
	return record(ctx, KIND_MMAP, addr, call.size, FN_MREMAP);
}
