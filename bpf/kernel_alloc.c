/* kernel_alloc.c: kmem/percpu/vmalloc tracepoint handlers, system-wide.
 *
 * bcc dialect, compiled at run time by bcc (leaktrace/probes/kernel.py). Which
 * handlers exist is decided before load from the tracepoints this kernel has
 * (leaktrace/probes/tracepoints.py): one HAVE_<EVENT> flag per handler, one
 * flag per optional field. Tracepoints only: no kprobes needed.
 *
 * Data kept in the kernel:
 *   allocs        one record per outstanding allocation, keyed by (space, address):
 *                 frees happen in other contexts (RCU, kworkers, irqs), so they
 *                 are matched by address alone; pages by pfn
 *   buckets       outstanding bytes/count per (process, cgroup, cache, stack, kind,
 *                 age block: age_blocks.h); a report reads these totals, never
 *                 `allocs`
 *   stack_traces  deduplicated kernel stacks
 *   path_stacks   the stack of each path, by the hash of its return addresses
 *                 (kernel_paths.h): walking a kernel stack from a tracepoint
 *                 costs over a microsecond, so each path is walked once and its
 *                 later allocations are named by the chain read off the stack,
 *                 with one in KPATH_CHECK_EVERY checked against a walk;
 *                 FULL_STACKS=1 walks every allocation
 *   kframe_rules  where each return address's caller sits on the stack
 *   silent_frees  per row (a bucket key without its age block): records
 *                 retired because their address was allocated again, by any
 *                 task - their free fired no tracepoint this trace saw
 *   counters      events and every loss, per CPU
 *   content_requests, content_heads   objects whose first bytes to read, and
 *                 those bytes (read_contents, at the end)
 */
#include <uapi/linux/ptrace.h>
#include "kernel_common.h"
#include "kernel_paths.h"

/* The totals program.h adds to, and the counters it uses. */
#define BUCKET_KEY struct kbucket_key
#define BUCKET_TOTALS struct kbucket_totals
#define BUCKET_INSERTS_SLOT K_BUCKET_INSERTS
#define BUCKET_MAP_FULL_SLOT K_BUCKET_MAP_FULL
#include "program.h"

/* ---- settings of this program (fixed before load; program.h has the shared ones) */
#ifndef FILTER_PIDS
#define FILTER_PIDS 0 /* only tgids in `wanted_pids` */
#endif
#ifndef SELF_TGID
#define SELF_TGID 0 /* leaktrace's own process: its page faults are not the user's */
#endif
#ifndef FILTER_COMMS
#define FILTER_COMMS 0 /* only tasks whose comm is in `wanted_comms` */
#endif
#ifndef FILTER_CACHES
#define FILTER_CACHES 0 /* only caches in `wanted_caches` / `wanted_kmalloc` */
#endif
#ifndef STACK_DEPTH
#define STACK_DEPTH 48 /* frames kept per kernel stack: bounds the walk's cost too */
#endif
#ifndef FULL_STACKS
#define FULL_STACKS 0
#endif
#ifndef MAX_PATHS
#define MAX_PATHS 16384
#endif
#ifndef KPATH_CHECK_EVERY
#define KPATH_CHECK_EVERY 1024 /* read paths per check against a walk (power of two); 0 = never */
#endif
#ifndef READ_CONTENTS
#define READ_CONTENTS 1 /* read_contents(): first bytes of recorded objects, on demand */
#endif
#ifndef MAX_SILENT_ROWS
#define MAX_SILENT_ROWS 16384 /* rows with frees seen only by address reuse */
#endif
#ifndef PAGE_SIZE_BYTES
#define PAGE_SIZE_BYTES 4096
#endif
#ifndef POSSIBLE_CPUS
#define POSSIBLE_CPUS 1 /* percpu size multiplier when bytes_alloc is missing */
#endif
#define GFP_DMA_BIT 0x1
#define GFP_RECLAIMABLE_BIT 0x10
#define GFP_ACCOUNT_BIT 0x400000

BPF_HASH(allocs, struct kalloc_key, struct kalloc_info, MAX_ALLOCS);
BPF_HASH(buckets, struct kbucket_key, struct kbucket_totals, MAX_BUCKETS);
struct kstack { u64 ip[STACK_DEPTH]; };
BPF_TABLE("stacktrace", int, struct kstack, stack_traces, MAX_STACKS);
BPF_PERCPU_ARRAY(counters, u64, N_KCOUNTERS);
BPF_HASH(silent_frees, struct kbucket_key, u64, MAX_SILENT_ROWS);
#if !FULL_STACKS
BPF_TABLE("lru_hash", u64, s32, path_stacks, MAX_PATHS);
BPF_ARRAY(kframe_rules, struct kframe_rule, KPATH_RULES);
BPF_PERCPU_ARRAY(kpath_scratches, struct kpath_scratch, 1);
static __always_inline struct kframe_rule *kframe_rule_entry(u64 ip)
{
	u32 index = (ip * 0x9E3779B97F4A7C15ULL) >> 32 & (KPATH_RULES - 1);
	return kframe_rules.lookup(&index);
}
#endif
#if FILTER_PIDS
BPF_HASH(wanted_pids, u32, u8, 1024);
#endif
#if FILTER_COMMS
struct comm_name { char name[16]; };
BPF_HASH(wanted_comms, struct comm_name, u8, 256);
#endif
#if FILTER_CACHES
struct cache_name { char name[CACHE_NAME_LEN]; };
BPF_HASH(wanted_caches, struct cache_name, u8, 1024);
BPF_HASH(wanted_kmalloc, u32, u8, 1024); /* bytes_alloc | type << 28 */
#endif

static __always_inline u64 *counter(int slot) { return counters.lookup(&slot); }
static __always_inline struct kbucket_totals *totals_of(struct kbucket_key *key) { return buckets.lookup(key); }
static __always_inline int totals_insert(struct kbucket_key *key, struct kbucket_totals *fresh) { return buckets.insert(key, fresh); }
/* A row's task name: the allocating task's (a freeing one's above level 0). */
static __always_inline void totals_start(struct kbucket_totals *fresh) { bpf_get_current_comm(&fresh->comm, sizeof(fresh->comm)); }

static __always_inline int task_wanted(u32 tgid)
{
	if (SELF_TGID && tgid == SELF_TGID)
		return 0;
#if FILTER_PIDS
	if (!wanted_pids.lookup(&tgid))
		return 0;
#endif
#if FILTER_COMMS
	struct comm_name comm = {};
	bpf_get_current_comm(&comm.name, sizeof(comm.name));
	if (!wanted_comms.lookup(&comm))
		return 0;
#endif
	return 1;
}

#if !FULL_STACKS
/* The stack id of a path seen for the first time (or checked): walk it, and
 * learn its frames so that the next allocation on it is read, not walked. */
static __always_inline s32 walk_path(void *ctx, struct kpath_scratch *s, u64 path, u64 site, s32 *known)
{
	s32 id = stack_traces.get_stackid(ctx, 0);
	count(K_STACK_WALKS);
	if (id < 0 || !s)
		return id;
	if (known) {
		count(K_STACK_CHECKS);
		if (*known == id)
			return id;
		count(K_STACK_MISMATCHES);
	}
	if (!path && s->learn) { /* a frame without a rule yet: learn it from a walk */
		long got = bpf_get_stack(ctx, s->ips, sizeof(s->ips), 0);
		kpath_learn(s, got > 0 ? (u32)got >> 3 : 0);
		return id; /* the next allocation on it is read and recorded: kpath_hash, unrolled, is inlined once */
	}
	if (path)
		path_stacks.update(&path, &id);
	return id;
}
#endif

/* The stack of this allocation: read off the stack when its path was seen
 * before, walked otherwise (always with FULL_STACKS). */
static __always_inline s32 stack_of(void *ctx, u64 site)
{
#if FULL_STACKS
	return stack_traces.get_stackid(ctx, 0);
#else
	u32 zero = 0;
	struct kpath_scratch *s = kpath_scratches.lookup(&zero);
	u64 path = s && kpath_copy(ctx, s) ? kpath_hash(s, site) : 0;
	s32 *known = path ? path_stacks.lookup(&path) : NULL;
	if (!known)
		return walk_path(ctx, s, path, site, NULL);
	if (KPATH_CHECK_EVERY && ++s->checks % KPATH_CHECK_EVERY == 0)
		return walk_path(ctx, s, path, site, known);
	return *known;
#endif
}

static __always_inline void count_silent(struct kbucket_key *row)
{
	u64 *silent = silent_frees.lookup(row);
	if (!silent) {
		u64 zero = 0;
		silent_frees.insert(row, &zero);
		silent = silent_frees.lookup(row);
	}
	if (silent)
		__sync_fetch_and_add(silent, 1);
}

/* Forget a recorded allocation; 0 when it was never recorded. `silent`: its
 * address is being handed out again, to whichever task - it was freed
 * without a tracepoint this trace saw (kfree_rcu batches and bulk frees fire
 * none; a free may have been skipped): count it against its row, whose
 * objects are thus known to go silently. */
static __always_inline int release(u32 space, u64 addr, int silent)
{
	struct kalloc_key key = { .addr = addr, .space = space };
	struct kalloc_info *found = allocs.lookup(&key);
	if (!found)
		return 0;
	/* Totals move only if the record really goes: a nested free (below)
	 * can find the map busy, and the record must then stay whole. */
	struct kalloc_info info = *found;
	if (allocs.delete(&key))
		return 0;
	/* The block that holds the allocation's age range now. */
	u32 slot = age_place(info.timestamp_ns >> AGE_BUCKET_SHIFT, bpf_ktime_get_ns() >> AGE_BUCKET_SHIFT,
			     &info.bucket.block, &info.bucket.level);
	bucket_add(&info.bucket, slot, -(s64)info.size, -1);
	if (silent) {
		count(K_REPLACED);
		info.bucket.block = 0; /* the row, whatever its age */
		info.bucket.level = 0;
		count_silent(&info.bucket);
	}
	return 1;
}

/* info->bucket arrives with kind and cache fields set; the rest is filled here. */
static __always_inline int record(void *ctx, u32 space, u64 addr, u64 site, struct kalloc_info *info)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!size_wanted(info->size) || !task_wanted(tgid)) {
		release(space, addr, 1); /* any task's allocation here proves the free */
		return 0;
	}
	info->timestamp_ns = bpf_ktime_get_ns();
	info->bucket.tgid = tgid;
	info->bucket.cgroup_id = bpf_get_current_cgroup_id();
	u32 epoch = info->timestamp_ns >> AGE_BUCKET_SHIFT;
	u32 slot = age_place(epoch, epoch, &info->bucket.block, &info->bucket.level);
	info->bucket.stack_id = stack_of(ctx, site);
	if (info->bucket.stack_id < 0)
		count(K_STACK_FAILED);
	struct kalloc_key key = { .addr = addr, .space = space };
	int err = allocs.insert(&key, info);
	if (err == -17) { /* EEXIST: an object recorded here was freed unseen */
		release(space, addr, 1);
		err = allocs.insert(&key, info);
	}
	if (err) {
		count(K_ALLOC_MAP_FULL);
		return 0;
	}
	/* Totals move only once the allocation is really recorded. */
	bucket_add(&info->bucket, slot, info->size, 1);
	count(K_ALLOCS);
	return 0;
}

static __always_inline int forget(u32 space, u64 addr)
{
	if (!addr)
		return 0;
	count(release(space, addr, 0) ? K_FREES : K_UNKNOWN_FREES);
	return 0;
}

/* kmalloc: the cache is kmalloc-<bytes_alloc>, of the family the gfp flags pick. */
static __always_inline int kmalloc_alloc(void *ctx, u64 ptr, u64 site, u64 bytes_alloc, u64 gfp)
{
	if (!ptr)
		return 0;
	struct kalloc_info info = { .size = bytes_alloc };
	info.bucket.kind = KIND_KMALLOC;
	info.bucket.cache_class = bytes_alloc;
	if (gfp & GFP_DMA_BIT)
		info.bucket.kmalloc_type = KMALLOC_DMA;
	else if (gfp & GFP_RECLAIMABLE_BIT)
		info.bucket.kmalloc_type = KMALLOC_RECLAIM;
	else if (gfp & GFP_ACCOUNT_BIT)
		info.bucket.kmalloc_type = KMALLOC_CGROUP;
#if FILTER_CACHES
	u32 class = (u32)bytes_alloc | ((u32)info.bucket.kmalloc_type << 28);
	if (!wanted_kmalloc.lookup(&class)) {
		release(SPACE_SLAB, ptr, 1);
		return 0;
	}
#endif
	return record(ctx, SPACE_SLAB, ptr, site, &info);
}

#if CACHE_NAME_FROM_PAGE
/* Kernels before 6.1 say nothing of the cache: the object's slab page does.
 * x86-64 virtual memmap, addresses and offsets from kallsyms and BTF
 * (leaktrace/probes/cache_names.py); a failed read leaves the name empty. */
static __always_inline void cache_name_of(u64 ptr, char *name)
{
	u64 base = 0, vmemmap = 0, head = 0, cache = 0;
	const char *text = NULL;
	bpf_probe_read_kernel(&base, sizeof(base), (void *)PAGE_OFFSET_BASE_ADDR);
	bpf_probe_read_kernel(&vmemmap, sizeof(vmemmap), (void *)VMEMMAP_BASE_ADDR);
	u64 page = vmemmap + ((ptr - base) / PAGE_SIZE_BYTES) * STRUCT_PAGE_SIZE;
	bpf_probe_read_kernel(&head, sizeof(head), (void *)(page + PAGE_COMPOUND_HEAD_OFFSET));
	if (head & 1)
		page = head - 1;
	bpf_probe_read_kernel(&cache, sizeof(cache), (void *)(page + PAGE_SLAB_CACHE_OFFSET));
	bpf_probe_read_kernel(&text, sizeof(text), (void *)(cache + KMEM_CACHE_NAME_OFFSET));
	bpf_probe_read_kernel_str(name, CACHE_NAME_LEN, text);
}
#endif

static __always_inline int cache_alloc(void *ctx, u64 ptr, u64 site, struct kalloc_info *info)
{
	if (!ptr)
		return 0;
#if CACHE_NAME_FROM_PAGE
	cache_name_of(ptr, info->bucket.cache);
#endif
	info->bucket.kind = KIND_CACHE;
	info->bucket.cache_class = info->size;
#if FILTER_CACHES
	if (!wanted_caches.lookup((struct cache_name *)info->bucket.cache)) {
		release(SPACE_SLAB, ptr, 1);
		return 0;
	}
#endif
	return record(ctx, SPACE_SLAB, ptr, site, info);
}

/* ---- probes ------------------------------------------------------------- */
#ifndef KMALLOC_GFP
#define KMALLOC_GFP 0
#endif
#if KMALLOC_GFP
#define GFP_OF(args) ((u64)(args)->gfp_flags)
#else
#define GFP_OF(args) 0
#endif

#if HAVE_KMALLOC
TRACEPOINT_PROBE(kmem, kmalloc)
{
	return kmalloc_alloc(args, (u64)args->ptr, args->call_site, args->bytes_alloc, GFP_OF(args));
}
#endif
#if HAVE_KMALLOC_NODE
TRACEPOINT_PROBE(kmem, kmalloc_node)
{
	return kmalloc_alloc(args, (u64)args->ptr, args->call_site, args->bytes_alloc, GFP_OF(args));
}
#endif
/* Slab frees are raw tracepoints. A tracepoint program is skipped while any
 * other one runs on the CPU (bpf_prog_active), uncounted before 6.7, and RCU
 * frees objects in batches from softirqs that interrupt the allocation
 * handlers: whole batches went missing (600 filp of held pipes closed under
 * 6.1: 103 still listed). A raw tracepoint program is only skipped when it is
 * already running on the CPU - and a free in an interrupt that lands during a
 * free is just that (110 frees lost, counted, in one of two runs). So each
 * event has a second program, nested_<event>, that does nothing unless the
 * first is running on this CPU right now, i.e. the kernel has just skipped it.
 * The pointer is the second raw argument of both events on every kernel. */
enum free_event { FREE_KFREE = 0, FREE_CACHE, N_FREE_EVENTS };
BPF_PERCPU_ARRAY(freeing, u32, N_FREE_EVENTS); /* 1 while that free handler runs */

static __always_inline int slab_free(u32 event, u64 ptr)
{
	u32 *busy = freeing.lookup(&event);
	if (busy)
		*busy = 1;
	forget(SPACE_SLAB, ptr);
	if (busy)
		*busy = 0;
	return 0;
}

static __always_inline int nested_free(u32 event, u64 ptr)
{
	u32 *busy = freeing.lookup(&event);
	if (!busy || !*busy)
		return 0;
	count(K_NESTED_FREES);
	return forget(SPACE_SLAB, ptr);
}

#if HAVE_KFREE
RAW_TRACEPOINT_PROBE(kfree) { return slab_free(FREE_KFREE, ctx->args[1]); }
int nested_kfree(struct bpf_raw_tracepoint_args *ctx) { return nested_free(FREE_KFREE, ctx->args[1]); }
#endif

#if HAVE_CACHE_ALLOC
TRACEPOINT_PROBE(kmem, kmem_cache_alloc)
{
	struct kalloc_info info = { .size = args->bytes_alloc };
#if CACHE_NAME
	TP_DATA_LOC_READ_STR(info.bucket.cache, name, CACHE_NAME_LEN);
#endif
	return cache_alloc(args, (u64)args->ptr, args->call_site, &info);
}
#endif
#if CACHE_NAME_FROM_STRUCT
/* Linux 6.1's kmem_cache_alloc has no `name` field, but its raw arguments are
 * (call_site, ptr, struct kmem_cache *s, gfp_flags, node): read s->name and
 * s->size at the offsets the kernel's BTF gives (user space passes them). */
RAW_TRACEPOINT_PROBE(kmem_cache_alloc)
{
	const char *s = (const char *)ctx->args[2];
	const char *name = NULL;
	unsigned int size = 0;
	bpf_probe_read_kernel(&size, sizeof(size), s + KMEM_CACHE_SIZE_OFFSET);
	bpf_probe_read_kernel(&name, sizeof(name), s + KMEM_CACHE_NAME_OFFSET);
	struct kalloc_info info = { .size = size };
	bpf_probe_read_kernel_str(info.bucket.cache, CACHE_NAME_LEN, name);
	return cache_alloc(ctx, ctx->args[1], ctx->args[0], &info);
}
#endif
#if HAVE_CACHE_ALLOC_NODE
TRACEPOINT_PROBE(kmem, kmem_cache_alloc_node)
{
	struct kalloc_info info = { .size = args->bytes_alloc };
#if CACHE_NODE_NAME
	TP_DATA_LOC_READ_STR(info.bucket.cache, name, CACHE_NAME_LEN);
#endif
	return cache_alloc(args, (u64)args->ptr, args->call_site, &info);
}
#endif
#if HAVE_CACHE_FREE
RAW_TRACEPOINT_PROBE(kmem_cache_free) { return slab_free(FREE_CACHE, ctx->args[1]); }
int nested_kmem_cache_free(struct bpf_raw_tracepoint_args *ctx) { return nested_free(FREE_CACHE, ctx->args[1]); }
#endif

#if HAVE_PAGE_ALLOC
TRACEPOINT_PROBE(kmem, mm_page_alloc)
{
	if (args->pfn == (unsigned long)-1) {
		count(K_FAILED_ALLOCS);
		return 0;
	}
	struct kalloc_info info = { .size = (u64)PAGE_SIZE_BYTES << args->order };
	info.bucket.kind = KIND_PAGE;
	info.bucket.cache_class = args->order;
	return record(args, SPACE_PAGE, args->pfn, 0, &info); /* no call site here */
}
#endif
#if HAVE_PAGE_FREE
TRACEPOINT_PROBE(kmem, mm_page_free) { return forget(SPACE_PAGE, args->pfn); }
#endif

#if HAVE_PERCPU_ALLOC
TRACEPOINT_PROBE(percpu, percpu_alloc_percpu)
{
#if PERCPU_BYTES_ALLOC
	struct kalloc_info info = { .size = args->bytes_alloc };
#else
	struct kalloc_info info = { .size = (u64)args->size * POSSIBLE_CPUS };
#endif
	if (!args->ptr)
		return 0;
	info.bucket.kind = KIND_PERCPU;
	return record(args, SPACE_PERCPU, (u64)args->ptr, 0, &info);
}
#endif
#if HAVE_PERCPU_FREE
TRACEPOINT_PROBE(percpu, percpu_free_percpu) { return forget(SPACE_PERCPU, (u64)args->ptr); }
#endif

#if HAVE_VMAP_ALLOC
TRACEPOINT_PROBE(vmalloc, alloc_vmap_area)
{
#if VMAP_FAILED
	if (args->failed) {
		count(K_FAILED_ALLOCS);
		return 0;
	}
#endif
	struct kalloc_info info = { .size = args->size };
	info.bucket.kind = KIND_VMALLOC;
	return record(args, SPACE_VMALLOC, args->addr, 0, &info);
}
#endif
#if HAVE_VMAP_FREE
TRACEPOINT_PROBE(vmalloc, free_vmap_area_noflush) { return forget(SPACE_VMALLOC, args->va_start); }
#endif

/* ---- object contents, read on demand ------------------------------------- */
#if READ_CONTENTS
/* leaktrace fills content_requests with addresses of objects it recorded,
 * then calls getppid(): this program, attached only then, copies the first
 * bytes of each object that is still recorded as outstanding (never any
 * other address) into content_heads, at most the object's size. A request
 * in SPACE_KERNEL_DATA reads a table the objects point at, only inside the
 * kernel's read-only and data sections (kernel_data: bounds from kallsyms). */
#define SPACE_KERNEL_DATA 255
struct kernel_range { u64 start; u64 end; };
BPF_ARRAY(content_requests, struct kalloc_key, CONTENT_BATCH);
BPF_ARRAY(content_heads, struct content_head, CONTENT_BATCH);
BPF_ARRAY(kernel_data, struct kernel_range, 1);

/* Bytes that may be read at key->addr: 0 when it is not a recorded
 * outstanding object nor inside the kernel's data. */
static __always_inline u32 readable(struct kalloc_key *key)
{
	if (key->space == SPACE_KERNEL_DATA) {
		u32 zero = 0;
		struct kernel_range *data = kernel_data.lookup(&zero);
		int inside = data && key->addr >= data->start && key->addr + CONTENT_BYTES <= data->end;
		return inside ? CONTENT_BYTES : 0;
	}
	if (!key->addr || key->space != SPACE_SLAB)
		return 0;
	struct kalloc_info *info = allocs.lookup(key);
	if (!info)
		return 0; /* freed since, or never recorded: not read */
	return info->size < CONTENT_BYTES ? info->size : CONTENT_BYTES;
}

static __always_inline void read_content(u32 index)
{
	struct kalloc_key *key = content_requests.lookup(&index);
	struct content_head *head = content_heads.lookup(&index);
	if (!key || !head)
		return;
	head->len = 0;
	u32 len = readable(key);
	asm volatile("" : "+r"(len));
	if (len == 0 || len > CONTENT_BYTES)
		return;
	if (bpf_probe_read_kernel(head->bytes, len, (void *)key->addr) == 0)
		head->len = len;
}

int read_contents(void *ctx)
{
	if (bpf_get_current_pid_tgid() >> 32 != SELF_TGID)
		return 0;
	for (u32 i = 0; i < CONTENT_BATCH; i++)
		read_content(i);
	return 0;
}
#endif
