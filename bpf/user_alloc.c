/* user_alloc.c: uprobe/uretprobe handlers for a process's allocator family.
 *
 * bcc dialect, compiled at run time by bcc (leaktrace/probes/user.py) with the
 * settings below and in program.h passed as -D flags. Each probe is a short
 * wrapper around the shared helpers: a new allocator entry point is one row in
 * leaktrace/probes/alloc_functions.py (which numbers it FN_<NAME> and says
 * which registers its entry handler reads) plus its <name>_enter/_exit here.
 *
 * Data kept in the kernel:
 *   task_calls    per-thread arguments from entry to return (task storage: no
 *                 hash insert/delete per call; PENDING_HASH=1 uses a tid-keyed hash
 *                 on kernels without task storage for tracing programs), with the
 *                 stack pointer at entry: a mark whose return was never seen
 *                 (entered while the probes were being attached, left by longjmp)
 *                 is recognised by it, dropped and counted, never taken for an
 *                 outer call that every later allocation would be nested in
 *   allocs        one record per outstanding allocation, keyed by (pid, kind, address)
 *   buckets       outstanding bytes/count per (pid, stack, kind, exec image, age
 *                 block: age_blocks.h), so a report reads a few totals per stack
 *                 instead of every allocation
 *   images        per traced pid, its exec generation (sched_process_exec): the
 *                 allocations of an image that exec replaced are gone. With
 *                 FOLLOW_FORKS it is the traced set: the uprobes fire in every
 *                 process mapping the hooked objects (uprobes are per file), a
 *                 process records only while it is here, and sched_process_fork
 *                 adds a traced process's children before they first run
 *   stack_traces  deduplicated user stacks
 *   counters      events and every loss, per CPU
 *
 * Every return probe hands its allocation, through a per-thread scratch, to
 * one recorder program (through the `recorders` program array) that samples
 * it, takes the stack (with unwind tables when UNWIND_CFI=1, else frame
 * pointers) and records it: clang compiles that and the verifier checks it
 * once, not once per return probe.
 */
#include <uapi/linux/ptrace.h>
#include "common.h"
#include "unwind.h"

/* The totals program.h adds to, and the counters it uses. */
#define BUCKET_KEY struct bucket_key
#define BUCKET_TOTALS struct bucket_totals
#define BUCKET_INSERTS_SLOT C_BUCKET_INSERTS
#define BUCKET_MAP_FULL_SLOT C_BUCKET_MAP_FULL
#include "program.h"

/* ---- settings of this program (fixed before load; program.h has the shared ones) */
#ifndef SAMPLE_RATE
#define SAMPLE_RATE 0 /* bytes per sample; 0 = record every allocation */
#endif
#ifndef TRACE_EVENTS
#define TRACE_EVENTS 0
#endif
#ifndef PENDING_HASH
#define PENDING_HASH 0
#endif
#ifndef TAIL_CALL_NS
/* A call entered at the same stack pointer as another allocator call still
 * in progress was jumped to by it (glibc's realloc(NULL, n) jumps to malloc)
 * if it came this soon; later, the earlier mark is one whose return was
 * missed. */
#define TAIL_CALL_NS 1000000
#endif
#ifndef FOLLOW_FORKS
#define FOLLOW_FORKS 0 /* 1: uprobes for every process, filtered by `images` */
#endif
#ifndef TASK_TGID_OFFSET
#define TASK_TGID_OFFSET 0 /* offsetof(struct task_struct, tgid), from BTF (FOLLOW_FORKS) */
#endif
#ifndef MAX_TRACED
#define MAX_TRACED 1024 /* processes in `images` */
#endif
#define MAP_ANONYMOUS_FLAG 0x20
#define MAP_STACK_FLAG 0x20000

/* An allocation on its way from a return probe to the recorder. */
struct record_args {
	u64 addr;
	u64 size;
	u64 timestamp_ns;
	u32 kind;
	u32 fn;
	u32 weight;
	u32 tid; /* who stored it (per-CPU scratch can be reused by another thread) */
	u32 image;
	u32 pad;
};

/* What the recorder gets from a return probe, and room for its walk (too
 * big for the BPF stack). */
struct walk_scratch {
	struct record_args record;
#if UNWIND_CFI
	struct unwind_walk walk;
#endif
};

#if PENDING_HASH
BPF_HASH(pending, struct pending_key, struct pending_call, 16384);
BPF_PERCPU_ARRAY(walk_scratches, struct walk_scratch, 1);
#else
struct thread_calls {
	struct pending_call calls[FN_LAST + 1];
	u32 active; /* bit fn set between entry and return of fn */
	struct walk_scratch scratch; /* per thread: no other task can reuse it mid-walk */
};
BPF_TASK_STORAGE(task_calls, struct thread_calls);
#endif
/* Entries are allocated on insert, not at load: preallocating a million costs
 * attach time and memory a quiet target never uses. */
BPF_F_TABLE("hash", struct alloc_key, struct alloc_info, allocs, MAX_ALLOCS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct bucket_key, struct bucket_totals, buckets, MAX_BUCKETS, BPF_F_NO_PREALLOC);
/* Filled by user space with the traced pids (and with FOLLOW_FORKS by the fork tracepoint). */
BPF_F_TABLE("hash", u32, struct image, images, MAX_TRACED, BPF_F_NO_PREALLOC);
BPF_STACK_TRACE(stack_traces, MAX_STACKS);
BPF_PERCPU_ARRAY(counters, u64, N_COUNTERS);
BPF_PROG_ARRAY(recorders, 1); /* slot 0: recorder, set by user space before attaching */
#if UNWIND_CFI
/* Maps of the CFI walker; bcc rewrites map calls only in this file, so the
 * walker in unwind.h reaches them through these accessors. */
BPF_ARRAY(unwind_rows, struct unwind_row, UNWIND_MAX_ROWS);
BPF_HASH(unwind_spaces, u32, struct unwind_space, UNWIND_MAX_PROCESSES);
BPF_ARRAY(unwind_mappings, struct unwind_mapping, UNWIND_MAX_PROCESSES * UNWIND_MAX_MAPPINGS);
BPF_F_TABLE("hash", u32, struct unwound_stack, unwound_stacks, MAX_STACKS, BPF_F_NO_PREALLOC);
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
static __always_inline u64 *counter(int slot) { return counters.lookup(&slot); }
static __always_inline struct bucket_totals *totals_of(struct bucket_key *key) { return buckets.lookup(key); }
static __always_inline int totals_insert(struct bucket_key *key, struct bucket_totals *fresh) { return buckets.insert(key, fresh); }
static __always_inline void totals_start(struct bucket_totals *fresh) {}

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

/* Whether this process is outside the traced set: only with FOLLOW_FORKS,
 * where the probes are not filtered by pid. */
static __always_inline int untraced(void)
{
#if FOLLOW_FORKS
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct image *image = images.lookup(&tgid);
	return !image || image->state;
#else
	return 0;
#endif
}

/* Can the call of `marked` behind `mark` still be running around a call of
 * fn entered at sp (at time now)? Calls nest deeper, at a lower sp; one at
 * the same sp was jumped to (realloc(NULL, n) jumps to malloc), which only
 * another function does, and at once. Any other mark is of a call whose
 * return was missed. */
static __always_inline int encloses(struct pending_call *mark, u32 marked, u32 fn, u64 sp, u64 now)
{
	if (mark->sp > sp)
		return 1;
	return mark->sp == sp && marked != fn && now - mark->entered_ns < TAIL_CALL_NS;
}

#if !PENDING_HASH
static __always_inline struct thread_calls *thread_calls(u64 flags)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	return task_calls.task_storage_get(task, 0, flags);
}

/* Drop, and count as lost, the marks of malloc & co that cannot be around a
 * call of fn at sp. Only inside_allocator() needs the other functions' marks
 * to be right; a function's own mark is checked when it is entered again
 * and at its return. */
static __always_inline void drop_missed(struct thread_calls *calls, u32 fn, u64 sp, u64 now)
{
#pragma clang loop unroll(disable)
	for (u32 f = FN_MALLOC; f <= FN_LAST_HEAP; f++) {
		if ((calls->active & (1u << f)) && !encloses(&calls->calls[f], f, fn, sp, now)) {
			calls->active &= ~(1u << f);
			count(C_MISSED_RETURNS);
		}
	}
}

/* Remember the size until the return probe sees the address. */
static __always_inline int call_enter(struct pt_regs *ctx, u32 fn, u64 size, u64 arg)
{
	if (untraced())
		return 0; /* no mark: its return probe records nothing either */
	struct thread_calls *calls = thread_calls(BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!calls || fn > FN_LAST) {
		count(C_PENDING_MAP_FULL);
		return 0;
	}
	u64 sp = PT_REGS_SP(ctx), now = bpf_ktime_get_ns();
	struct pending_call *call = &calls->calls[fn];
	if (calls->active & (1u << fn)) {
		if (encloses(call, fn, fn, sp, now)) {
			count(C_NESTED_CALLS); /* inside a call of itself: left to that one */
			return 0;
		}
		count(C_MISSED_RETURNS); /* its return was never seen */
	}
	call->size = size;
	call->arg = arg;
	call->sp = sp;
	call->entered_ns = now;
	calls->active |= 1u << fn;
	return 0;
}

/* Take back what call_enter stored for the call returning now; 0 when its
 * entry was not seen. */
static __always_inline int call_take(struct pt_regs *ctx, u32 fn, struct pending_call *out)
{
	struct thread_calls *calls = thread_calls(0);
	if (!calls || fn > FN_LAST || !(calls->active & (1u << fn)))
		return 0;
	u64 sp = PT_REGS_SP(ctx) - 8; /* the return address is popped */
	struct pending_call *call = &calls->calls[fn];
	if (call->sp > sp)
		return 0; /* a nested call of fn, left to the outer one that is still running */
	calls->active &= ~(1u << fn);
	if (call->sp < sp) {
		count(C_MISSED_RETURNS); /* a deeper call of fn never returned through its probe */
		return 0;
	}
	*out = *call;
	return 1;
}

/* Is a call of fn entered at sp (at time now) made inside malloc & co? */
static __always_inline int inside_allocator(u32 fn, u64 sp, u64 now)
{
	struct thread_calls *calls = thread_calls(0);
	if (!calls || !(calls->active & HEAP_FN_BITS))
		return 0;
	drop_missed(calls, fn, sp, now);
	return (calls->active & HEAP_FN_BITS) != 0;
}

static __always_inline struct walk_scratch *walk_scratch(void)
{
	struct thread_calls *calls = thread_calls(0);
	return calls ? &calls->scratch : NULL;
}
#else
/* Remember the size until the return probe sees the address. */
static __always_inline int call_enter(struct pt_regs *ctx, u32 fn, u64 size, u64 arg)
{
	if (untraced())
		return 0;
	struct pending_key key = { .tid = (u32)bpf_get_current_pid_tgid(), .fn = fn };
	struct pending_call call = { .size = size, .arg = arg, .sp = PT_REGS_SP(ctx), .entered_ns = bpf_ktime_get_ns() };
	struct pending_call *known = pending.lookup(&key);
	if (known) {
		if (encloses(known, fn, fn, call.sp, call.entered_ns)) {
			count(C_NESTED_CALLS);
			return 0;
		}
		count(C_MISSED_RETURNS);
	}
	if (pending.update(&key, &call))
		count(C_PENDING_MAP_FULL);
	return 0;
}

/* Take back what call_enter stored for the call returning now; 0 when its
 * entry was not seen. */
static __always_inline int call_take(struct pt_regs *ctx, u32 fn, struct pending_call *out)
{
	struct pending_key key = { .tid = (u32)bpf_get_current_pid_tgid(), .fn = fn };
	struct pending_call *call = pending.lookup(&key);
	if (!call)
		return 0;
	u64 sp = PT_REGS_SP(ctx) - 8;
	if (call->sp > sp)
		return 0;
	int missed = call->sp < sp;
	*out = *call;
	pending.delete(&key);
	if (missed)
		count(C_MISSED_RETURNS);
	return !missed;
}

static __always_inline int inside_allocator(u32 fn, u64 sp, u64 now)
{
	struct pending_key key = { .tid = (u32)bpf_get_current_pid_tgid() };
	int inside = 0;
#pragma clang loop unroll(disable)
	for (u32 f = FN_MALLOC; f <= FN_LAST_HEAP; f++) {
		key.fn = f;
		struct pending_call *mark = pending.lookup(&key);
		if (!mark)
			continue;
		if (encloses(mark, f, fn, sp, now)) {
			inside = 1;
		} else {
			pending.delete(&key);
			count(C_MISSED_RETURNS);
		}
	}
	return inside;
}

static __always_inline struct walk_scratch *walk_scratch(void)
{
	u32 zero = 0;
	return walk_scratches.lookup(&zero);
}
#endif

/* The exec generation of a traced process (0 until it execs). */
static __always_inline u32 image_of(u32 tgid)
{
	struct image *image = images.lookup(&tgid);
	return image ? image->generation : 0;
}

/* The totals entry of a recorded allocation at epoch `now`; returns the slot. */
static __always_inline u32 bucket_of(struct bucket_key *key, u32 tgid, u32 kind, struct alloc_info *info, u32 now)
{
	key->tgid = tgid;
	key->stack_id = info->stack_id;
	key->kind = kind;
	key->image = info->image;
	return age_place(info->timestamp_ns >> AGE_BUCKET_SHIFT, now, &key->block, &key->level);
}

/* Forget a recorded allocation: the image it was made in, or -1 when it was
 * never recorded. */
static __always_inline s64 release(u32 kind, u64 addr)
{
	struct alloc_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .kind = kind, .addr = addr };
	struct alloc_info *info = allocs.lookup(&key);
	if (!info)
		return -1;
	struct bucket_key bkey = {};
	u32 slot = bucket_of(&bkey, key.tgid, kind, info, bpf_ktime_get_ns() >> AGE_BUCKET_SHIFT);
	u64 weight = info->weight;
	s64 image = info->image;
	bucket_add(&bkey, slot, -(s64)((info->size * weight) >> WEIGHT_SHIFT), -(s64)weight);
	allocs.delete(&key);
	return image;
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
		.image = r->image,
	};
	if (allocs.update(&key, &info)) {
		count(C_ALLOC_MAP_FULL);
		return 0;
	}
	/* Totals move only once the allocation is really recorded. */
	struct bucket_key bkey = {};
	u32 slot = bucket_of(&bkey, key.tgid, r->kind, &info, r->timestamp_ns >> AGE_BUCKET_SHIFT);
	bucket_add(&bkey, slot, (r->size * r->weight) >> WEIGHT_SHIFT, r->weight);
	count(C_ALLOCS);
	emit(ctx, r->fn, r->addr, r->size, stack_id);
	return 0;
}

/* Hand an allocation to the recorder program. */
static __always_inline int record(struct pt_regs *ctx, u32 kind, u64 addr, u64 size, u32 fn)
{
	if (!size_wanted(size))
		return 0;
	struct walk_scratch *scratch = walk_scratch();
	if (!scratch) {
		count(C_PENDING_MAP_FULL);
		return 0;
	}
	struct record_args r = { .addr = addr, .size = size, .kind = kind, .fn = fn,
				 .tid = (u32)bpf_get_current_pid_tgid() };
	scratch->record = r;
	recorders.call(ctx, 0);
	count(C_PENDING_MAP_FULL); /* no recorder: user space sets it before attaching */
	return 0;
}

/* Tail-called by every return probe (ctx is that probe's registers): samples
 * the allocation, takes its stack and records it. */
int recorder(struct pt_regs *ctx)
{
	struct walk_scratch *scratch = walk_scratch();
	if (!scratch) {
		count(C_PENDING_MAP_FULL);
		return 0;
	}
	struct record_args r = scratch->record;
	u64 id = bpf_get_current_pid_tgid();
	if (r.tid != (u32)id) {
		count(C_PENDING_MAP_FULL); /* another thread's probe reused this CPU's scratch */
		return 0;
	}
	r.weight = sample_weight(r.size);
	if (!r.weight) {
		count(C_SAMPLED_OUT);
		return 0;
	}
	r.timestamp_ns = bpf_ktime_get_ns();
	r.image = image_of(id >> 32);
	/* An address recorded twice: its free was missed, unless the process
	 * exec'd since (that address space is gone, its records with it). */
	if (release(r.kind, r.addr) == r.image)
		count(C_REPLACED);
	s32 stack_id = UNWIND_NO_TABLES;
#if UNWIND_CFI
	stack_id = unwind_stack(ctx, &scratch->walk);
#endif
	if (stack_id == UNWIND_NO_TABLES)
		stack_id = stack_traces.get_stackid(ctx, BPF_F_USER_STACK);
	return finish_record(ctx, &r, stack_id);
}

/* glibc's realloc(NULL, n) runs malloc, reallocarray runs realloc: the
 * outer call records the block, once, at its own return. */
static __always_inline int nested_call(u32 fn, struct pending_call *call)
{
	if (!inside_allocator(fn, call->sp, call->entered_ns))
		return 0;
	count(C_NESTED_CALLS);
	return 1;
}

/* Return probe of the malloc family: the returned pointer is the allocation. */
static __always_inline int alloc_exit(struct pt_regs *ctx, u32 fn)
{
	struct pending_call call;
	if (!call_take(ctx, fn, &call) || nested_call(fn, &call))
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
	if (!call_take(ctx, fn, &call) || nested_call(fn, &call))
		return 0;
	u64 addr = PT_REGS_RC(ctx);
	if (!addr) {
		if (call.size != 0)
			count(C_FAILED_ALLOCS);
		else if (call.arg && release(KIND_HEAP, call.arg) >= 0)
			count(C_FREES);
		return 0;
	}
	if (call.arg && release(KIND_HEAP, call.arg) >= 0)
		count(C_FREES);
	return record(ctx, KIND_HEAP, addr, call.size, fn);
}

static __always_inline int forget(struct pt_regs *ctx, u32 kind, u64 addr)
{
	if (!addr || untraced())
		return 0;
	if (release(kind, addr) >= 0) {
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
int malloc_enter(struct pt_regs *ctx, size_t size) { return call_enter(ctx, FN_MALLOC, size, 0); }
int malloc_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_MALLOC); }

int calloc_enter(struct pt_regs *ctx, size_t n, size_t size)
{
	u64 total;
	if (product(n, size, &total)) {
		count(C_FAILED_ALLOCS); /* calloc fails without allocating */
		return 0;
	}
	return call_enter(ctx, FN_CALLOC, total, 0);
}
int calloc_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_CALLOC); }

int realloc_enter(struct pt_regs *ctx, void *ptr, size_t size) { return call_enter(ctx, FN_REALLOC, size, (u64)ptr); }
int realloc_exit(struct pt_regs *ctx) { return resize_exit(ctx, FN_REALLOC); }

int reallocarray_enter(struct pt_regs *ctx, void *ptr, size_t n, size_t size)
{
	u64 total;
	if (product(n, size, &total)) {
		count(C_FAILED_ALLOCS); /* fails, leaving ptr allocated */
		return 0;
	}
	return call_enter(ctx, FN_REALLOCARRAY, total, (u64)ptr);
}
int reallocarray_exit(struct pt_regs *ctx) { return resize_exit(ctx, FN_REALLOCARRAY); }

int posix_memalign_enter(struct pt_regs *ctx, void **memptr, size_t align, size_t size)
{
	return call_enter(ctx, FN_POSIX_MEMALIGN, size, (u64)memptr);
}
int posix_memalign_exit(struct pt_regs *ctx)
{
	struct pending_call call;
	void *addr = 0;
	if (!call_take(ctx, FN_POSIX_MEMALIGN, &call) || nested_call(FN_POSIX_MEMALIGN, &call))
		return 0;
	if (PT_REGS_RC(ctx) != 0 || bpf_probe_read_user(&addr, sizeof(addr), (void *)call.arg) || !addr) {
		count(C_FAILED_ALLOCS);
		return 0;
	}
	return record(ctx, KIND_HEAP, (u64)addr, call.size, FN_POSIX_MEMALIGN);
}

int aligned_alloc_enter(struct pt_regs *ctx, size_t align, size_t size) { return call_enter(ctx, FN_ALIGNED_ALLOC, size, 0); }
int aligned_alloc_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_ALIGNED_ALLOC); }
int memalign_enter(struct pt_regs *ctx, size_t align, size_t size) { return call_enter(ctx, FN_MEMALIGN, size, 0); }
int memalign_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_MEMALIGN); }
int valloc_enter(struct pt_regs *ctx, size_t size) { return call_enter(ctx, FN_VALLOC, size, 0); }
int valloc_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_VALLOC); }
int pvalloc_enter(struct pt_regs *ctx, size_t size) { return call_enter(ctx, FN_PVALLOC, size, 0); }
int pvalloc_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_PVALLOC); }

int free_enter(struct pt_regs *ctx, void *ptr) { return forget(ctx, KIND_HEAP, (u64)ptr); }

/* A traced process exec'd: what it held went with its address space. */
TRACEPOINT_PROBE(sched, sched_process_exec)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct image *image = images.lookup(&tgid);
	if (image) {
		image->exec_ns = bpf_ktime_get_ns();
		__sync_fetch_and_add(&image->generation, 1);
		if (image->parent)
			image->state |= IMAGE_EXECED; /* the parent's probes do not cover the new program */
	}
	return 0;
}

#if FOLLOW_FORKS
/* In the parent, before the child first runs: a traced process's new
 * process (not a thread) is traced from its first instruction. What it
 * inherited was allocated by the parent and stays the parent's. */
RAW_TRACEPOINT_PROBE(sched_process_fork)
{
	u32 parent = bpf_get_current_pid_tgid() >> 32, child = 0;
	struct image *traced = images.lookup(&parent);
	if (!traced || traced->state)
		return 0;
	bpf_probe_read_kernel(&child, sizeof(child), (void *)(ctx->args[1] + TASK_TGID_OFFSET));
	if (child == parent || !child)
		return 0; /* a thread: already traced as its process */
	struct image image = { .parent = parent };
	if (images.update(&child, &image)) {
		count(C_FORKS_LOST);
		return 0;
	}
#if UNWIND_CFI
	struct unwind_space *space = unwind_space_of(parent);
	if (space) { /* the same mappings until the child maps something */
		struct unwind_space copy = *space;
		unwind_spaces.update(&child, &copy);
	}
#endif
	return 0;
}

/* A traced process exited: its pid may come back as anyone's. */
TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (tgid != (u32)id)
		return 0; /* a thread other than the main one */
	struct image *image = images.lookup(&tgid);
	if (image)
		image->state |= IMAGE_EXITED;
	return 0;
}
#endif

/* mmap inside malloc & co (inside_allocator) belongs to the allocator: the
 * heap allocation that caused it is already counted. */
int mmap_enter(struct pt_regs *ctx, void *addr, size_t length, int prot, int flags)
{
	if (!(flags & MAP_ANONYMOUS_FLAG))
		return 0; /* file mappings are page cache, not heap */
	if (inside_allocator(FN_MMAP, PT_REGS_SP(ctx), bpf_ktime_get_ns())) {
		count(C_NESTED_MMAPS);
		return 0;
	}
	return call_enter(ctx, FN_MMAP, length, flags & MAP_STACK_FLAG ? KIND_STACK : KIND_MMAP);
}
int mmap_exit(struct pt_regs *ctx)
{
	struct pending_call call;
	if (!call_take(ctx, FN_MMAP, &call))
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
	if (inside_allocator(FN_MREMAP, PT_REGS_SP(ctx), bpf_ktime_get_ns()))
		return 0; /* realloc of a large block: the allocator's business */
	return call_enter(ctx, FN_MREMAP, new_size, (u64)old);
}
int mremap_exit(struct pt_regs *ctx)
{
	struct pending_call call;
	if (!call_take(ctx, FN_MREMAP, &call))
		return 0;
	u64 addr = PT_REGS_RC(ctx);
	if ((s64)addr < 0 && (s64)addr > -4096) {
		count(C_FAILED_ALLOCS);
		return 0;
	}
	if (release(KIND_MMAP, call.arg) < 0)
		return 0; /* remapping something we never saw mapped */
	count(C_FREES);
	return record(ctx, KIND_MMAP, addr, call.size, FN_MREMAP);
}

/* ---- C++ operator new/delete, where the allocator defines them ----------- */
/* An allocator's operator new may run its own aligned_alloc (jemalloc's
 * aligned new does): nested_call leaves that to new, which records it once. */
/* The throwing variants keep their caller's true return address (their
 * entry probe sits at the start, where [sp] holds it and the return probe has
 * not replaced it yet): raise_exception_enter puts it back. */
static __always_inline int throwing_new_enter(struct pt_regs *ctx, u32 fn, u64 size)
{
	u64 ret = 0;
	bpf_probe_read_user(&ret, sizeof(ret), (void *)PT_REGS_SP(ctx));
	return call_enter(ctx, fn, size, ret);
}
int new_enter(struct pt_regs *ctx, size_t size) { return throwing_new_enter(ctx, FN_NEW, size); }
int new_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_NEW); }
int new_nothrow_enter(struct pt_regs *ctx, size_t size) { return call_enter(ctx, FN_NEW_NOTHROW, size, 0); }
int new_nothrow_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_NEW_NOTHROW); }
int new_aligned_enter(struct pt_regs *ctx, size_t size, size_t align)
{
	return throwing_new_enter(ctx, FN_NEW_ALIGNED, size);
}
int new_aligned_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_NEW_ALIGNED); }
int new_aligned_nothrow_enter(struct pt_regs *ctx, size_t size, size_t align)
{
	return call_enter(ctx, FN_NEW_ALIGNED_NOTHROW, size, 0);
}
int new_aligned_nothrow_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_NEW_ALIGNED_NOTHROW); }
int delete_enter(struct pt_regs *ctx, void *ptr) { return forget(ctx, KIND_HEAP, (u64)ptr); }

/* ---- allocator-native APIs ---------------------------------------------- */
int mallocx_enter(struct pt_regs *ctx, size_t size, int flags) { return call_enter(ctx, FN_MALLOCX, size, 0); }
int mallocx_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_MALLOCX); }
int rallocx_enter(struct pt_regs *ctx, void *ptr, size_t size, int flags) { return call_enter(ctx, FN_RALLOCX, size, (u64)ptr); }
int rallocx_exit(struct pt_regs *ctx) { return resize_exit(ctx, FN_RALLOCX); }
int sdallocx_enter(struct pt_regs *ctx, void *ptr) { return forget(ctx, KIND_HEAP, (u64)ptr); }
int dallocx_enter(struct pt_regs *ctx, void *ptr) { return forget(ctx, KIND_HEAP, (u64)ptr); }
int malloc_aligned_enter(struct pt_regs *ctx, size_t size, size_t align) { return call_enter(ctx, FN_MALLOC_ALIGNED, size, 0); }
int malloc_aligned_exit(struct pt_regs *ctx) { return alloc_exit(ctx, FN_MALLOC_ALIGNED); }

/* A recorded block's size changed where it lies: its totals move by the
 * difference; its stack and age stay those of the allocation. */
static __always_inline int resize_in_place(u64 addr, u64 size)
{
	struct alloc_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .kind = KIND_HEAP, .addr = addr };
	struct alloc_info *info = allocs.lookup(&key);
	if (!info)
		return 0;
	struct bucket_key bkey = {};
	u32 slot = bucket_of(&bkey, key.tgid, KIND_HEAP, info, bpf_ktime_get_ns() >> AGE_BUCKET_SHIFT);
	s64 before = (info->size * info->weight) >> WEIGHT_SHIFT, after = (size * info->weight) >> WEIGHT_SHIFT;
	s64 same_count = 0;
	/* Opaque to clang: an add of a constant 0 becomes an atomic OR, which
	 * kernels before 5.12 refuse ("BPF_STX uses reserved fields"). */
	asm volatile("" : "+r"(same_count));
	bucket_add(&bkey, slot, after - before, same_count);
	info->size = size;
	return 0;
}

/* xallocx(ptr, size, extra, flags) returns the block's size, grown or not. */
int xallocx_enter(struct pt_regs *ctx, void *ptr, size_t size, size_t extra, int flags) { return call_enter(ctx, FN_XALLOCX, 0, (u64)ptr); }
int xallocx_exit(struct pt_regs *ctx)
{
	struct pending_call call;
	if (!call_take(ctx, FN_XALLOCX, &call) || nested_call(FN_XALLOCX, &call) || !call.arg)
		return 0;
	return resize_in_place(call.arg, PT_REGS_RC(ctx));
}

/* ---- C++ exceptions out of a probed operator new ------------------------- */
/* An exception cannot unwind through a return probe: the unwinder finds the
 * kernel's trampoline where new's return address was, has no unwind table
 * for it and terminates the program. When a throw starts inside a call of a
 * throwing new, its caller's return address goes back in place (the value
 * the program had there; the kernel drops its stale return record itself at
 * the next return probe, as after longjmp). The call allocated nothing. */
static __always_inline void restore_return(struct pending_call *call, u64 sp)
{
	u64 now = 0;
	if (call->sp <= sp || !call->arg || bpf_probe_read_user(&now, sizeof(now), (void *)call->sp))
		return;
	if (now != call->arg)
		bpf_probe_write_user((void *)call->sp, &call->arg, sizeof(call->arg));
}

#if !PENDING_HASH
static __always_inline void leave_throwing_call(struct thread_calls *calls, u32 fn, u64 sp)
{
	if (fn > FN_LAST || !(calls->active & (1u << fn)))
		return;
	restore_return(&calls->calls[fn], sp);
	calls->active &= ~(1u << fn);
	count(C_FAILED_ALLOCS);
}

int raise_exception_enter(struct pt_regs *ctx)
{
	struct thread_calls *calls = thread_calls(0);
	if (!calls)
		return 0;
	leave_throwing_call(calls, FN_NEW, PT_REGS_SP(ctx));
	leave_throwing_call(calls, FN_NEW_ALIGNED, PT_REGS_SP(ctx));
	return 0;
}
#else
static __always_inline void leave_throwing_call(u32 fn, u64 sp)
{
	struct pending_key key = { .tid = (u32)bpf_get_current_pid_tgid(), .fn = fn };
	struct pending_call *call = pending.lookup(&key);
	if (!call)
		return;
	restore_return(call, sp);
	pending.delete(&key);
	count(C_FAILED_ALLOCS);
}

int raise_exception_enter(struct pt_regs *ctx)
{
	leave_throwing_call(FN_NEW, PT_REGS_SP(ctx));
	leave_throwing_call(FN_NEW_ALIGNED, PT_REGS_SP(ctx));
	return 0;
}
#endif
