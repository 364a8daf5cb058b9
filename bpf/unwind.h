/* unwind.h: user stacks through code built without frame pointers.
 *
 * bcc dialect, compiled at run time as part of user_alloc.c when UNWIND_CFI=1.
 * unwind_stack(ctx, w) is the only entry point, called from one program only
 * (user_alloc.c's recorder, tail-called by the return probes), so clang
 * and the verifier see the walk once. At a return probe it walks the
 * caller's stack with unwind rows that leaktrace/unwind/ built in user space
 * from each binary's .eh_frame, and stores the frames in `unwound_stacks`,
 * deduplicated by a hash of the frames (a hash collision between two
 * different stacks is detected, counted and reported as -EEXIST, never merged).
 * Addresses with no row fall back to the frame-pointer rule; processes with no
 * tables loaded (all their code keeps frame pointers) get UNWIND_NO_TABLES.
 *
 *   unwind_rows     every loaded binary's rows, binary by binary, sorted by pc
 *   unwind_spaces   tgid -> where its mappings are in unwind_mappings
 *   unwind_mappings each process's executable mappings with their load bias
 *                   and the range of rows of the mapped binary
 *   unwound_stacks  stack id -> frames (ids carry UNWIND_ID_BIT, so they never
 *                   meet stack_traces ids)
 *
 * bcc rewrites map calls (map.lookup()) only in the main file, so the maps and
 * one-line accessors for them live in user_alloc.c, which includes this header
 * first; bcc 0.26 cannot relocate bpf_loop callbacks, so the walk is a bounded
 * loop. Structs are mirrored in leaktrace/probes/unwinder.py and leaktrace/unwind/cfi.py.
 */
#ifndef LEAKTRACE_UNWIND_H
#define LEAKTRACE_UNWIND_H

#ifndef UNWIND_CFI
#define UNWIND_CFI 0
#endif
#ifndef UNWIND_MAX_DEPTH
/* Frames kept per stack, as deep as perf walks (kernel.perf_event_max_stack,
 * 127); a power of two: frame indices are masked with it. The walk is a
 * bounded loop that stops at the outermost frame, so shallow stacks cost what
 * they did at 32; the verifier's work grows with the bound (measured on 6.18:
 * 0.7 s at 32, 1.5 s at 128, once per load). */
#define UNWIND_MAX_DEPTH 128
#endif
#define UNWIND_CFI_WORDS ((UNWIND_MAX_DEPTH + 63) / 64)
#ifndef UNWIND_MAX_ROWS
#define UNWIND_MAX_ROWS 1048576 /* 8 MiB; libc ~28k rows, libstdc++ ~34k */
#endif
#ifndef UNWIND_MAX_PROCESSES
#define UNWIND_MAX_PROCESSES 64
#endif
#define UNWIND_MAX_MAPPINGS 128 /* executable mappings per process; power of two */
#define UNWIND_MAPPING_STEPS 8  /* log2(UNWIND_MAX_MAPPINGS) + 1 */
#ifndef UNWIND_ROW_STEPS
#define UNWIND_ROW_STEPS 21 /* rows per binary up to 2^21 */
#endif
#define UNWIND_ID_BIT 0x40000000

enum row_kind { ROW_NONE = 0, ROW_CFA_RSP, ROW_CFA_RBP, ROW_END, ROW_SIGNAL };
#define RBP_SAME 0
#define RBP_LOST (-128)
/* Offsets in the sigreturn frame: struct ucontext at rsp, uc_mcontext at +40,
 * gregs REG_RBP=10, REG_RSP=15, REG_RIP=16 (x86-64 ABI). */
#define SIGFRAME_RBP (40 + 10 * 8)
#define SIGFRAME_RSP (40 + 15 * 8)
#define SIGFRAME_RIP (40 + 16 * 8)

enum unwind_counter {
	U_WALKS = 0,    /* stacks walked with tables (frame methods are in each stack) */
	U_TRUNCATED,    /* walks cut at UNWIND_MAX_DEPTH */
	U_COLLISIONS,   /* two different stacks with one hash: the later one lost */
	U_MAP_FULL,     /* unwound_stacks full */
	U_UNKNOWN_CODE, /* walks stopped in code no mapping of the process's tables covers */
	N_UNWIND_COUNTERS,
};

struct unwind_row {
	u32 pc; /* the binary's own virtual address */
	s16 cfa_off;
	u8 kind;
	u8 rbp_slot; /* (s8): caller's rbp at CFA + 8 * slot; RBP_SAME, RBP_LOST (bcc has no s8) */
};

struct unwind_mapping {
	u64 start;
	u64 end;
	u64 bias; /* runtime address - file vaddr */
	u32 first_row;
	u32 rows;
};

/* Per process: its mappings sit at unwind_mappings[first .. first + count),
 * sorted by start. */
struct unwind_space {
	u32 first;
	u32 count;
};

/* Why a walk ended before the outermost frame (unwound_stack.stop). */
enum unwind_stop { STOP_END = 0, STOP_UNKNOWN_CODE = 1 };

struct unwound_stack {
	u32 depth;
	u32 stop; /* enum unwind_stop: STOP_UNKNOWN_CODE when the last frame is in code
	           * mapped after the tables were loaded (dlopen) that frame pointers
	           * could not leave */
	u64 cfi_frames[UNWIND_CFI_WORDS]; /* bit i % 64 of word i / 64: frame i came from a CFI row */
	u64 addrs[UNWIND_MAX_DEPTH];
};

struct unwind_walk {
	u64 pc;
	u64 sp;
	u64 bp;
	u64 exact; /* pc is an interrupted instruction, not a return address */
	struct unwound_stack stack;
};

#define UNWIND_NO_TABLES 1 /* unwind_stack(): this process has none, walk frame pointers */

#if UNWIND_CFI
/* Accessors defined next to the maps in user_alloc.c. */
static __always_inline struct unwind_row *unwind_row(u32 index);
static __always_inline struct unwind_space *unwind_space_of(u32 tgid);
static __always_inline struct unwind_mapping *unwind_mapping(u32 index);
static __always_inline struct unwound_stack *unwound_stack(u32 id);
static __always_inline int unwound_stack_insert(u32 id, struct unwound_stack *stack);
static __always_inline void unwind_count(int slot, u64 n);

/* The mapping holding pc, or NULL. Indices go through map keys, never
 * pointer offsets, so the verifier need not track them precisely and can
 * prune the search's branches. */
static __always_inline struct unwind_mapping *find_mapping(struct unwind_space *space, u64 pc)
{
	u32 lo = space->first, hi = space->first + space->count;
	if (space->count > UNWIND_MAX_MAPPINGS)
		return NULL;
	for (int i = 0; i < UNWIND_MAPPING_STEPS; i++) {
		if (lo >= hi)
			break;
		u32 mid = lo + (hi - lo) / 2;
		struct unwind_mapping *m = unwind_mapping(mid);
		if (!m)
			return NULL;
		if (m->start <= pc)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < hi || lo == space->first)
		return NULL;
	struct unwind_mapping *m = unwind_mapping(lo - 1);
	return m && pc < m->end ? m : NULL;
}

/* The row in force at pc, or NULL when its binary has none there. */
static __always_inline struct unwind_row *find_row(struct unwind_space *space, u64 pc)
{
	struct unwind_mapping *m = find_mapping(space, pc);
	if (!m || !m->rows)
		return NULL;
	u64 vaddr = pc - m->bias;
	if (vaddr >> 32)
		return NULL;
	u32 lo = m->first_row, hi = m->first_row + m->rows;
	for (int i = 0; i < UNWIND_ROW_STEPS; i++) {
		if (lo >= hi)
			break;
		u32 mid = lo + (hi - lo) / 2;
		struct unwind_row *row = unwind_row(mid);
		if (!row)
			return NULL;
		if (row->pc <= (u32)vaddr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo >= hi && lo > m->first_row) {
		return unwind_row(lo - 1);
	}
	return NULL;
}

static __always_inline int read_word(u64 *out, u64 addr)
{
	return bpf_probe_read_user(out, sizeof(*out), (void *)addr);
}

/* One step to the caller; 1 = recovered by CFI, 0 = by frame pointer, -1 =
 * stop, STEP_OUTERMOST = stop at the outermost frame (its row says so). */
#define STEP_OUTERMOST (-2)
static __always_inline int unwind_step(struct unwind_walk *w, struct unwind_space *space)
{
	struct unwind_row *row = find_row(space, w->exact ? w->pc : w->pc - 1);
	u64 ra = 0, bp = w->bp, cfa;
	int kind = row ? row->kind : ROW_NONE;
	if (kind == ROW_END)
		return STEP_OUTERMOST;
	if (kind == ROW_SIGNAL) {
		if (read_word(&w->pc, w->sp + SIGFRAME_RIP) || read_word(&w->bp, w->sp + SIGFRAME_RBP) ||
		    read_word(&w->sp, w->sp + SIGFRAME_RSP))
			return -1;
		w->exact = 1;
		return 1;
	}
	if (kind == ROW_NONE) {
		if (!w->bp || w->bp < w->sp || read_word(&ra, w->bp + 8) || read_word(&bp, w->bp))
			return -1;
		w->sp = w->bp + 16;
		w->bp = bp;
		w->pc = ra;
		w->exact = 0;
		return 0;
	}
	cfa = (kind == ROW_CFA_RSP ? w->sp : w->bp) + row->cfa_off;
	if (cfa <= w->sp || read_word(&ra, cfa - 8))
		return -1;
	s8 rbp_slot = (s8)row->rbp_slot;
	if (rbp_slot == RBP_LOST)
		bp = 0;
	else if (rbp_slot != RBP_SAME && read_word(&bp, cfa + (s64)rbp_slot * 8))
		return -1;
	w->sp = cfa;
	w->bp = bp;
	w->pc = ra;
	w->exact = 0;
	return 1;
}

/* Id of the walked stack in unwound_stacks, or -errno like bpf_get_stackid. */
static __always_inline s32 store_stack(struct unwound_stack *stack, u64 hash)
{
	hash ^= stack->depth;
	u32 id = UNWIND_ID_BIT | ((hash ^ (hash >> 32)) & (UNWIND_ID_BIT - 1));
	struct unwound_stack *known = unwound_stack(id);
	if (!known) {
		if (!unwound_stack_insert(id, stack))
			return id;
		known = unwound_stack(id); /* another CPU stored it first */
		if (!known) {
			unwind_count(U_MAP_FULL, 1);
			return -12; /* -ENOMEM */
		}
	}
	int same = known->depth == stack->depth && known->stop == stack->stop;
	for (int j = 0; j < UNWIND_CFI_WORDS; j++)
		same = same && known->cfi_frames[j] == stack->cfi_frames[j];
	for (int i = 0; i < UNWIND_MAX_DEPTH; i++) {
		if (i >= stack->depth || !same)
			break;
		/* Opaque index, masked: keeps clang from turning the loop into
		 * pointer arithmetic the verifier cannot bound. */
		u32 k = i;
		asm volatile("" : "+r"(k));
		k &= UNWIND_MAX_DEPTH - 1;
		same = known->addrs[k] == stack->addrs[k];
	}
	if (same)
		return id;
	unwind_count(U_COLLISIONS, 1);
	return -17; /* -EEXIST, as bpf_get_stackid reports a collision */
}

/* Walk the calling thread's user stack in w (scratch the caller owns: too big
 * for the BPF stack); UNWIND_NO_TABLES when its process has no tables (the
 * caller then walks frame pointers). */
static __always_inline s32 unwind_stack(struct pt_regs *ctx, struct unwind_walk *w)
{
	struct unwind_space *space = unwind_space_of(bpf_get_current_pid_tgid() >> 32);
	if (!space)
		return UNWIND_NO_TABLES;
	/* At a return probe the registers are the caller's, pc the return address. */
	w->pc = PT_REGS_IP(ctx);
	w->sp = PT_REGS_SP(ctx);
	w->bp = PT_REGS_FP(ctx);
	w->exact = 1;
	w->stack.depth = 0;
	w->stack.stop = STOP_END;
	for (int j = 0; j < UNWIND_CFI_WORDS; j++)
		w->stack.cfi_frames[j] = 0;
	w->stack.cfi_frames[0] = 1; /* frame 0 comes straight from the registers */
	u64 hash = 0xcbf29ce484222325ULL; /* FNV-1a over the frames */
	int how = 0;
	for (int i = 0; i < UNWIND_MAX_DEPTH; i++) {
		if (!w->pc)
			break;
		w->stack.addrs[i] = w->pc;
		w->stack.depth = i + 1;
		hash = (hash ^ w->pc) * 0x100000001b3ULL;
		if (i == UNWIND_MAX_DEPTH - 1) {
			unwind_count(U_TRUNCATED, 1);
			break;
		}
		how = unwind_step(w, space);
		if (how < 0)
			break;
		if (how)
			w->stack.cfi_frames[((i + 1) / 64) % UNWIND_CFI_WORDS] |= 1ULL << ((i + 1) % 64);
	}
	unwind_count(U_WALKS, 1);
	/* A walk that fails short of the limit in code none of the process's
	 * mappings holds stopped there for want of its tables. */
	if (how == -1 && w->pc && w->stack.depth < UNWIND_MAX_DEPTH &&
	    !find_mapping(space, w->exact ? w->pc : w->pc - 1)) {
		w->stack.stop = STOP_UNKNOWN_CODE;
		unwind_count(U_UNKNOWN_CODE, 1);
	}
	return store_stack(&w->stack, hash ^ ((u64)w->stack.stop << 32));
}
#endif /* UNWIND_CFI */

#endif
