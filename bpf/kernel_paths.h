/* kernel_paths.h: which path reached a kernel allocation, read off the stack
 * instead of walked.
 *
 * bcc dialect, compiled at run time as part of kernel_alloc.c. Walking a
 * kernel stack from a tracepoint costs over a microsecond (the unwinder first
 * climbs through the tracing machinery), so kernel_alloc.c walks each path
 * once and names later allocations on it by a hash of their return addresses:
 *
 *   A tracepoint program's context starts with the registers perf saved in the
 *   tracepoint's handler: sp is that handler's frame, its return address sits
 *   just above it, and each caller's return address sits a fixed distance
 *   further up: the frame size the compiler gave the function it returns into.
 *   Those distances are learned from the kernel's own unwinder. When a return
 *   address has no rule yet, the stack is walked (bpf_get_stack), its frames
 *   are found in a copy of the stack words, and each frame gets a rule in
 *   `kframe_rules`. Afterwards kpath_hash() reads the chain off the copy: one
 *   table look-up per frame instead of a walk.
 *
 * What the rules know: functions that align their stack to 16 bytes have two
 * possible distances (KRULE_TWO: the word that is a known return address, or
 * the call site the tracepoint names, decides); the outermost frame sits a fixed
 * distance below the stack top (KRULE_LAST, checked, since a fault taken in the
 * kernel continues the stack where a fault from user space ends it); a frame
 * whose size varies (the random stack offset of the syscall entry) ends the
 * chain when what follows is always the same outermost frame (KRULE_VAR), and
 * sends the allocation to a walk otherwise (KRULE_DEEP). With the random
 * stack offset, words below a return address may hold stale copies of the
 * next one: a learned step is tried first, and one found by search replaces
 * it only once it has been seen more often (`votes`). Anything the rules
 * cannot read (a frame never seen, interrupt stacks, chains deeper than
 * KPATH_MAX_FRAMES) is walked: never guessed.
 *
 * bcc rewrites map calls only in the main file, so kernel_alloc.c defines the
 * maps and the accessors declared here. Loop state is kept in the scratch map,
 * not in registers: the verifier then sees unknown values at each iteration and
 * prunes, instead of following every exit of every search.
 */
#ifndef LEAKTRACE_KERNEL_PATHS_H
#define LEAKTRACE_KERNEL_PATHS_H

#ifndef KPATH_STACK_SIZE
#define KPATH_STACK_SIZE 16384 /* THREAD_SIZE: task stacks are aligned to it */
#endif
#ifndef KPATH_RULES
#define KPATH_RULES 16384 /* direct-mapped by return address; power of two */
#endif
#define KPATH_WORDS 512       /* stack words copied at most: 4 KiB; power of two */
#define KPATH_PIECE 64        /* words copied at a time; divides KPATH_WORDS */
#ifndef KPATH_MAX_FRAMES
#define KPATH_MAX_FRAMES 24 /* frames read per chain */
#endif
#define KPATH_SEARCH_WORDS 128 /* largest frame learned: 1 KiB */
#define KPATH_IPS 32          /* frames of a learning walk; power of two */
#define KPATH_NO_SLOT 0xffffffff

#define KRULE_STEP 1      /* delta is known */
#define KRULE_TWO 2       /* next frame at delta or delta + 8 */
#define KRULE_LAST 4      /* seen as the outermost frame, `top` bytes below the stack top */
#define KRULE_NEXT_LAST 8 /* the frame after it was always `next`, the outermost */
#define KRULE_VAR 16      /* delta varies: the chain ends here if NEXT_LAST */
#define KRULE_DEEP 32     /* delta varies and so does what follows: walk */

struct kframe_rule {
	u64 ip;
	u64 next;
	s32 delta;
	u16 top;
	u16 flags;
	u32 votes; /* observations of delta, less those of another: a stale copy seen first is outvoted */
	u32 pad;
};

struct kpath_scratch {
	u64 words[KPATH_WORDS]; /* the stack from the tracepoint handler's frame up */
	u64 ips[KPATH_IPS];     /* a learning walk */
	u64 base;               /* address of words[0] */
	u64 top;                /* end of the stack */
	u32 count;              /* words copied */
	u32 slot;               /* loop state, see above */
	u32 found;
	u32 checks;             /* hits since the last check against a walk */
	u32 learn;              /* kpath_hash stopped at a frame a walk can teach */
	u32 pad;
};

/* Accessors defined next to the maps in kernel_alloc.c. */
static __always_inline struct kframe_rule *kframe_rule_entry(u64 ip);

static __always_inline struct kframe_rule *kframe_rule_of(u64 ip)
{
	struct kframe_rule *rule = kframe_rule_entry(ip);
	return rule && rule->ip == ip ? rule : NULL;
}

/* Loop state goes through memory (volatile: clang must not keep it in a
 * register), so the verifier sees an unknown value at each iteration. */
#define KPATH_STATE(field) (*(volatile u32 *)&(field))

/* words[i] with i opaque to clang, so the mask survives for the verifier. */
static __always_inline u64 kpath_word(struct kpath_scratch *s, u32 i)
{
	asm volatile("" : "+r"(i));
	return s->words[i & (KPATH_WORDS - 1)];
}

static __always_inline u64 kpath_ip(struct kpath_scratch *s, u32 i)
{
	asm volatile("" : "+r"(i));
	return s->ips[i & (KPATH_IPS - 1)];
}

/* Copy one more piece of the stack into s->words; 0 when there is none. */
static __always_inline int kpath_more(struct kpath_scratch *s)
{
	u32 count = KPATH_STATE(s->count);
	u64 left = s->top - (s->base + count * 8);
	if (count >= KPATH_WORDS || !left)
		return 0;
	u64 len = left < KPATH_PIECE * 8 ? left : KPATH_PIECE * 8;
	asm volatile("" : "+r"(len));
	asm volatile("" : "+r"(count));
	count &= KPATH_WORDS - KPATH_PIECE; /* whole pieces: stays inside words[] */
	if (len > KPATH_PIECE * 8 || bpf_probe_read_kernel(&s->words[count], len, (void *)(s->base + count * 8)))
		return 0;
	KPATH_STATE(s->count) = count + (len >> 3);
	return 1;
}

/* Whether words[slot] is copied, copying up to two more pieces (a step is at
 * most KPATH_SEARCH_WORDS) when it is not yet. */
static __always_inline int kpath_reach(struct kpath_scratch *s, u32 slot)
{
	if (slot >= s->count)
		kpath_more(s);
	if (slot >= s->count)
		kpath_more(s);
	return slot < s->count;
}

/* Start a copy of the stack above the tracepoint handler's frame (one piece:
 * copying is about a nanosecond a word, and most chains end within it); 0
 * when it cannot be read (not a task stack, or the registers are not where
 * they are expected). */
static __always_inline int kpath_copy(void *ctx, struct kpath_scratch *s)
{
	u64 regs = 0;
	struct { u64 ip, cs, flags, sp; } saved = {};
	if (bpf_probe_read_kernel(&regs, sizeof(regs), ctx) || !regs ||
	    bpf_probe_read_kernel(&saved, sizeof(saved), (void *)(regs + offsetof(struct pt_regs, ip))))
		return 0;
	s->base = saved.sp;
	s->top = (saved.sp | (KPATH_STACK_SIZE - 1)) + 1;
	s->count = 0;
	s->learn = 0;
	/* The handler's return address sits just above its frame. */
	return kpath_more(s) && s->count > 1 && s->words[1] == saved.ip;
}

/* Where the frame after a two-way rule is: the call site the tracepoint
 * names, else the one candidate that is a known return address. */
static __always_inline u32 kpath_pick(struct kpath_scratch *s, u32 slot, u64 site)
{
	if (!kpath_reach(s, slot + 1))
		return KPATH_NO_SLOT;
	u64 near = kpath_word(s, slot), far = kpath_word(s, slot + 1);
	if (site && near == site)
		return slot;
	if (site && far == site)
		return slot + 1;
	int near_known = kframe_rule_of(near) != NULL, far_known = kframe_rule_of(far) != NULL;
	if (near_known == far_known)
		return KPATH_NO_SLOT;
	return near_known ? slot : slot + 1;
}

static __always_inline u64 kpath_mix(u64 hash, u64 ip)
{
	return (hash ^ ip) * 0x100000001b3ULL; /* FNV-1a over the frames */
}

/* The hash of the chain of return addresses, or 0 when the rules cannot read
 * it. site: the call site the tracepoint names (0 if none). */
static __always_inline u64 kpath_hash(struct kpath_scratch *s, u64 site)
{
	u64 hash = 0xcbf29ce484222325ULL;
	KPATH_STATE(s->slot) = 1;
	s->learn = 0;
	/* Unrolled: 5.10 and 6.1 refuse the loop clang makes of this (its latch
	 * falls through into the loop's head, a back-edge they reject). */
#pragma unroll
	for (int frame = 0; frame < KPATH_MAX_FRAMES; frame++) {
		u32 slot = KPATH_STATE(s->slot);
		if (!kpath_reach(s, slot))
			return 0;
		u64 ip = kpath_word(s, slot);
		struct kframe_rule *rule = kframe_rule_of(ip);
		if (!rule || !(rule->flags & (KRULE_STEP | KRULE_LAST))) {
			s->learn = 1;
			return 0;
		}
		if (rule->flags & KRULE_DEEP)
			return 0;
		hash = kpath_mix(hash, ip);
		u64 below_top = KPATH_STACK_SIZE - ((s->base + slot * 8) & (KPATH_STACK_SIZE - 1));
		if (rule->flags & KRULE_LAST && below_top == rule->top)
			return hash | 1;
		if (rule->flags & KRULE_VAR)
			return rule->flags & KRULE_NEXT_LAST ? hash | 1 : 0;
		if (!(rule->flags & KRULE_STEP)) {
			s->learn = 1;
			return 0;
		}
		slot += (u32)rule->delta >> 3;
		if (rule->flags & KRULE_TWO)
			slot = kpath_pick(s, slot, frame ? 0 : site);
		KPATH_STATE(s->slot) = slot;
	}
	return 0;
}

/* One more observation of the frame after `ip`: `delta` bytes up, `next`
 * (the outermost frame when next_last). */
static __always_inline void kframe_learn_step(struct kframe_rule *rule, u64 ip, s32 delta, u64 next,
					      int next_last)
{
	if (rule->ip != ip) {
		rule->ip = ip;
		rule->next = next;
		rule->delta = delta;
		rule->top = 0;
		rule->flags = KRULE_STEP | (next_last ? KRULE_NEXT_LAST : 0);
		rule->votes = 1;
		return;
	}
	if (next != rule->next || !next_last)
		rule->flags &= ~KRULE_NEXT_LAST;
	if (!(rule->flags & KRULE_STEP)) {
		rule->next = next;
		rule->delta = delta;
		rule->flags |= KRULE_STEP | (next_last ? KRULE_NEXT_LAST : 0);
		rule->votes = 1;
		return;
	}
	if (rule->flags & (KRULE_VAR | KRULE_DEEP))
		return;
	if (delta == rule->delta || (rule->flags & KRULE_TWO && delta == rule->delta + 8)) {
		if (rule->votes < 1024)
			rule->votes++;
		return;
	}
	if (!(rule->flags & KRULE_TWO) && (delta == rule->delta + 8 || delta + 8 == rule->delta)) {
		if (delta < rule->delta)
			rule->delta = delta;
		rule->flags |= KRULE_TWO;
		return;
	}
	if (rule->flags & KRULE_NEXT_LAST) {
		rule->flags |= KRULE_VAR; /* the random stack offset of the syscall entry */
	} else if (rule->votes > 1) {
		rule->votes--; /* most likely a stale copy of `next`, found below the real one */
	} else {
		rule->delta = delta;
		rule->flags &= ~KRULE_TWO;
	}
}

static __always_inline void kframe_learn_last(struct kframe_rule *rule, u64 ip, u64 below_top)
{
	if (rule->ip != ip) {
		rule->ip = ip;
		rule->next = 0;
		rule->delta = 0;
		rule->flags = 0;
	}
	if (!(rule->flags & KRULE_LAST)) {
		rule->top = below_top;
		rule->flags |= KRULE_LAST;
	} else if (rule->top != below_top) {
		rule->flags |= KRULE_DEEP;
	}
}

/* The slot the rule for ip says `next` is at, when it holds it: stale copies
 * of a return address below the real one (left there by earlier calls, at
 * other random stack offsets) must not win over a known step. */
static __always_inline u32 kpath_predicted(struct kpath_scratch *s, struct kframe_rule *rule, u64 ip,
					   u32 from, u64 next)
{
	if (rule->ip != ip || !(rule->flags & KRULE_STEP) || rule->flags & (KRULE_VAR | KRULE_DEEP))
		return KPATH_NO_SLOT;
	u32 slot = from + ((u32)rule->delta >> 3);
	if (slot < s->count && kpath_word(s, slot) == next)
		return slot;
	if (rule->flags & KRULE_TWO && slot + 1 < s->count && kpath_word(s, slot + 1) == next)
		return slot + 1;
	return KPATH_NO_SLOT;
}

/* Find frame k of the walk above frame k - 1's slot and learn the step;
 * 0 when the chain of slots ends here. */
static __always_inline int kpath_learn_frame(struct kpath_scratch *s, u32 k, u32 frames)
{
	u64 ip = kpath_ip(s, k - 1);
	struct kframe_rule *rule = kframe_rule_entry(ip);
	u32 from = KPATH_STATE(s->slot);
	if (!rule || from >= KPATH_WORDS)
		return 0;
	if (k >= frames) { /* a walk that filled s->ips may have been cut short */
		if (frames < KPATH_IPS)
			kframe_learn_last(rule, ip, KPATH_STACK_SIZE - ((s->base + from * 8) & (KPATH_STACK_SIZE - 1)));
		return 0;
	}
	u64 next = kpath_ip(s, k);
	KPATH_STATE(s->found) = kpath_predicted(s, rule, ip, from, next);
	for (u32 i = 1; i <= KPATH_SEARCH_WORDS && KPATH_STATE(s->found) == KPATH_NO_SLOT; i++) {
		if (from + i >= s->count)
			break;
		if (kpath_word(s, from + i) == next) {
			KPATH_STATE(s->found) = from + i;
			break;
		}
	}
	u32 found = KPATH_STATE(s->found);
	if (found == KPATH_NO_SLOT || found <= from)
		return 0;
	kframe_learn_step(rule, ip, (s32)(found - from) * 8, next, k + 1 >= frames && frames < KPATH_IPS);
	KPATH_STATE(s->slot) = found;
	return 1;
}

/* Learn rules from a walk of the current stack (its frames in s->ips). */
static __always_inline void kpath_learn(struct kpath_scratch *s, u32 frames)
{
	if (!frames || s->words[1] != s->ips[0])
		return;
	for (int i = 0; i < KPATH_WORDS / KPATH_PIECE; i++) /* the search may go anywhere up */
		if (!kpath_more(s))
			break;
	KPATH_STATE(s->slot) = 1;
	for (u32 k = 1; k <= KPATH_MAX_FRAMES; k++) {
		if (!kpath_learn_frame(s, k, frames))
			break;
	}
}

#endif
