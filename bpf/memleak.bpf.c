// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * memleak: track outstanding allocations and the stacks that made them.
 *
 * User mode: an entry probe on each allocator function saves its arguments
 * per thread; one shared return probe records the result, with the stack
 * taken at return so its first frame is the call site. Free-like functions
 * only need an entry probe.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "memleak.h"

#define EEXIST 17
#define MAP_FAILED ((__u64)-1)

const volatile struct config cfg = {
	.max_size = ~0ULL,
	.sample_every = 1,
};

/* Sizes below are defaults; userspace resizes maps before load. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1000000);
	__type(key, struct alloc_key);
	__type(value, struct alloc_info);
} allocs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u64);	/* stack id, 0 for lost stacks */
	__type(value, struct combined_info);
} combined SEC(".maps");

/*
 * Stacks by a 64-bit hash of their addresses. The kernel's stack-trace map
 * keys by a 32-bit hash into few buckets and drops a stack whose bucket a
 * different stack holds; here distinct stacks never merge or collide in
 * practice.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u64);
	__type(value, struct stack);
} stacks SEC(".maps");

/* --unwind=dwarf: stack copies for userspace (sized by userspace). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} samples SEC(".maps");

/* Per-CPU sequence numbers that make unwind sample ids unique. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sample_seq SEC(".maps");

/*
 * Where a stack is captured before it is hashed (too big for the BPF
 * stack). One slot per nesting level: raw tracepoint programs (kernel
 * mode) have no guard shared between programs, so an allocation in an
 * interrupt can run its program while another one's stack sits here.
 */
#define SCRATCH_LEVELS 4

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SCRATCH_LEVELS);
	__type(key, __u32);
	__type(value, struct stack);
} stack_scratch SEC(".maps");

/* How many programs on this CPU hold a stack_scratch slot. Interrupts
 * nest, so each one gives its slot back before the one it interrupted
 * resumes, and a plain increment is enough. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} scratch_level SEC(".maps");

/* --unwind cfi: every traced process's unwind rows (sized by userspace),
 * and each process's range of them. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cfi_row);
} cfi_rows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);	/* tgid */
	__type(value, struct cfi_range);
} cfi_ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CFI_CACHE_SIZE);
	__type(key, __u32);
	__type(value, struct cfi_cached);
} cfi_cache SEC(".maps");

/* Bytes of the stack a CFI walk copies at once (a power of two). A frame
 * then costs a word load from the copy where one bpf_probe_read_user would
 * cost most of a frame-pointer step (about 70 ns here); one copy costs
 * about as much as one such read. 1 KiB holds the frames of most
 * allocation paths to main; see cfi_read_word. */
#define CFI_STACK_BYTES 1024
#define CFI_STACK_WORDS (CFI_STACK_BYTES / 8)

/* A walk's registers between its frames (see cfi_step), and its window on
 * the stack, one per stack_scratch slot. */
struct cfi_walk {
	__u64 sp;
	__u64 fp;
	__u64 lr;
	__u32 tgid;
	__u32 start;
	__u32 len;
	__u32 generation;
	__u64 stack_base;	/* the user address of stack[0] */
	__u64 stack_len;	/* bytes copied, at most CFI_STACK_BYTES */
	__u64 stack[CFI_STACK_WORDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SCRATCH_LEVELS);
	__type(key, __u32);
	__type(value, struct cfi_walk);
} cfi_walks SEC(".maps");

/* A call in progress on one thread: entry probe to return probe. */
struct inflight {
	__u64 size;
	__u64 old_addr;		/* realloc, mremap: the block being replaced */
	__u64 memptr;		/* posix_memalign: where the result is stored */
	__u64 entry_sp;		/* to tell a nested call from a stale entry */
	__u64 ret_addr;		/* where the outermost call returns to */
	__u32 func;
	__u32 depth;		/* > 1: an allocator call inside another */
	__u32 skip;		/* filtered out (size, sampling, overflow) */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);	/* thread id */
	__type(value, struct inflight);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NR_LOSSES);
	__type(key, __u32);
	__type(value, __u64);
} losses SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);	/* tgid */
	__type(value, struct notices);
} notices SEC(".maps");

/* Wakes memleak when a target was stopped for it (at exec with
 * cfg.hold_exec, or at dlclose): the tgid. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} held SEC(".maps");

/* With several target processes (-p 1,2,3): their tgids. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8);
} targets SEC(".maps");

/*
 * (tgid << 32 | pid) of the current task as memleak's PID namespace numbers
 * it, so that a memleak running in a container matches the PIDs it was
 * given. 0 for a task outside that namespace.
 */
static __always_inline __u64 current_ids(void)
{
	struct bpf_pidns_info ns = {};

	if (!cfg.pidns_ino)
		return bpf_get_current_pid_tgid();
	if (bpf_get_ns_current_pid_tgid(cfg.pidns_dev, cfg.pidns_ino, &ns, sizeof(ns)))
		return 0;
	return (__u64)ns.tgid << 32 | ns.pid;
}

static __always_inline void count_loss(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&losses, &which);

	/* Atomic: a raw tracepoint program in an interrupt may count on this
	 * CPU between another's read and write. */
	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline void emit(__u32 kind, __u32 func, __u64 size, __u64 addr)
{
	struct event *e;
	__u64 id;

	if (!cfg.trace)
		return;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_loss(LOSS_EVENTS);
		return;
	}
	id = current_ids();
	e->timestamp_ns = bpf_ktime_get_ns();
	e->size = size;
	e->addr = addr;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->kind = kind;
	e->func = func;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
}

static __always_inline bool is_target(void)
{
	__u32 tgid;

	if (cfg.target_tgid)
		return (current_ids() >> 32) == cfg.target_tgid;
	if (!cfg.many_targets)
		return true;	/* kernel mode */
	tgid = current_ids() >> 32;
	return tgid && bpf_map_lookup_elem(&targets, &tgid);
}

static __always_inline struct alloc_key key_of(__u64 addr)
{
	struct alloc_key key = {
		.addr = addr,
		.tgid = cfg.kernel ? 0 : current_ids() >> 32,
	};
	return key;
}

static __always_inline void combined_add(__u64 stack_id, __u64 size)
{
	__u64 key = stack_id;
	struct combined_info *c, fresh = {};

	c = bpf_map_lookup_elem(&combined, &key);
	if (!c) {
		/* Another CPU may create it first; then add to theirs. */
		bpf_map_update_elem(&combined, &key, &fresh, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&combined, &key);
		if (!c) {
			count_loss(LOSS_COMBINED_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&c->total_size, size);
	__sync_fetch_and_add(&c->number_of_allocs, 1);
}

static __always_inline void combined_sub(__u64 stack_id, __u64 size)
{
	__u64 key = stack_id;
	struct combined_info *c = bpf_map_lookup_elem(&combined, &key);

	if (!c)
		return;
	__sync_fetch_and_add(&c->total_size, -size);
	__sync_fetch_and_add(&c->number_of_allocs, -1);
}

/* Forget a block; the record is read before it is deleted. */
static __always_inline void release(__u64 addr)
{
	struct alloc_key key = key_of(addr);
	struct alloc_info *info, copy;

	info = bpf_map_lookup_elem(&allocs, &key);
	if (!info)
		return;
	copy = *info;
	if (bpf_map_delete_elem(&allocs, &key))
		return;		/* a concurrent free of the same block won */
	if (cfg.combined)
		combined_sub(copy.stack_id, copy.size);
}

/* A block grown or shrunk in place keeps its stack and age. */
static __always_inline void resize(__u64 addr, __u64 size)
{
	struct alloc_key key = key_of(addr);
	struct alloc_info *info = bpf_map_lookup_elem(&allocs, &key);
	__u64 old;

	if (!info)
		return;
	old = info->size;
	info->size = size;
	if (cfg.combined) {
		combined_sub(info->stack_id, old);
		combined_add(info->stack_id, size);
	}
}

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL
/* A frame bigger than this ends a frame-pointer walk (see walk_user). */
#define MAX_FRAME_SIZE (1ULL << 20)

/*
 * Walks user frame pointers into st->ips (zero after the last frame) and
 * returns the FNV-1a hash of the addresses. bpf_get_stack's walk goes on
 * through whatever the outermost frame pointer holds (code built without
 * frame pointers leaves anything there) until a read faults, and in a VM
 * that fault costs more than the rest of the walk (1.2 us of it here).
 * Here each frame must lie above the last, at most MAX_FRAME_SIZE away, as
 * frames on one stack do, which ends such walks before they fault.
 */
static __always_inline __u64 walk_user(struct pt_regs *ctx, struct stack *st)
{
	struct {
		__u64 fp;
		__u64 ret;
	} frame;
	__u64 fp = PT_REGS_FP(ctx), ip = PT_REGS_IP(ctx);
	__u64 hash = (FNV_OFFSET ^ ip) * FNV_PRIME;
	int i;

	st->ips[0] = ip;
	for (i = 1; i < MAX_STACK_DEPTH; i++) {
		if (!fp || (fp & 7) || bpf_probe_read_user(&frame, sizeof(frame), (void *)fp) || !frame.ret) {
			st->ips[i] = 0;
			break;
		}
		st->ips[i] = frame.ret;
		hash = (hash ^ frame.ret) * FNV_PRIME;
		if (frame.fp <= fp || frame.fp - fp > MAX_FRAME_SIZE) {
			if (i + 1 < MAX_STACK_DEPTH)
				st->ips[i + 1] = 0;
			break;
		}
		fp = frame.fp;
	}
	return hash;
}

/*
 * The index of the last row of [start, start + len) whose pc is at most
 * `pc`; -1 when there is none.
 */
static __always_inline int cfi_find(__u32 start, __u32 len, __u64 pc)
{
	__u32 lo = start, hi = start + len, mid;
	struct cfi_row *row;
	int i;

	if (!len)
		return -1;
	/* 2^24 rows at most: 24 halvings. */
	for (i = 0; i < 24 && hi - lo > 1; i++) {
		mid = lo + (hi - lo) / 2;
		row = bpf_map_lookup_elem(&cfi_rows, &mid);
		if (!row)
			return -1;
		if (row->pc <= pc)
			lo = mid;
		else
			hi = mid;
	}
	row = bpf_map_lookup_elem(&cfi_rows, &lo);
	if (!row || row->pc > pc)
		return -1;
	return lo;
}

/*
 * A rule packed in 64 bits, so that a global function can return it: kind
 * (2 bits), ra_offset (16), fp_offset (16), cfa_offset (30, signed).
 */
#define CFI_PACK(kind, ra, fp, cfa)                                        \
	((__u64)(kind) | (__u64)(__u16)(ra) << 2 | (__u64)(__u16)(fp) << 18 | \
	 (__u64)((__u32)(cfa) & 0x3fffffff) << 34)

/* Code without CFI: a frame-pointer step, which is the rule CFA = fp + 16,
 * fp saved at CFA - 16 and the return address at CFA - 8 (on x86_64 and
 * arm64 alike). */
#define CFI_FP_STEP CFI_PACK(CFI_FP, -8, -16, 16)

static __always_inline __u64 cfi_pack(struct cfi_row *row)
{
	if (row->kind == CFI_NONE)
		return CFI_FP_STEP;
	return CFI_PACK(row->kind & 3, row->ra_offset, row->fp_offset, row->cfa_offset);
}

/*
 * The rule for the return address `ip` in process `tgid`, whose rows are
 * [start, start + len) of generation `generation`, packed; a frame-pointer
 * step where there is no CFI. Rows of return addresses recur (most
 * allocations come from a few call sites), so a per-CPU cache keeps the
 * rows found.
 */
static __always_inline __u64 cfi_rule(__u32 tgid, __u32 start, __u32 len, __u32 generation,
				      __u64 ip)
{
	__u32 slot = (ip ^ (ip >> 10) ^ (ip >> 20)) & (CFI_CACHE_SIZE - 1), idx;
	struct cfi_cached *cached;
	struct cfi_row *row;
	int found;

	cached = bpf_map_lookup_elem(&cfi_cache, &slot);
	if (!cached)
		return CFI_FP_STEP;
	if (cached->pc == ip && cached->tgid == tgid && cached->generation == generation)
		return cfi_pack(&cached->row);
	/* A return address: the call is the instruction before it. */
	found = cfi_find(start, len, ip - 1);
	if (found < 0)
		return CFI_FP_STEP;
	idx = found;
	row = bpf_map_lookup_elem(&cfi_rows, &idx);
	if (!row)
		return CFI_FP_STEP;
	cached->row = *row;
	cached->pc = ip;
	cached->tgid = tgid;
	cached->generation = generation;
	return cfi_pack(row);
}

/*
 * Reads the user word at `addr` for a CFI walk, from its window on the
 * stack. A word outside the window moves it: the window is refilled from
 * `addr` up, as far as CFI_STACK_BYTES or the end of addr's 4 KiB block,
 * whichever comes first. A block lies within one page on every page size,
 * so the copy faults only where the word itself cannot be read: a copy
 * that ran past the end of the stack's mapping would fail as a whole, and
 * a fault costs microseconds (3 us here), on every allocation of a thread
 * whose stack top is that close. The walk moves up the stack, and
 * cfi_step reads each frame's words in ascending order, so a word is
 * copied at most once. Returns 0 on success.
 */
static __always_inline long cfi_read_word(struct cfi_walk *w, __u64 addr, __u64 *word)
{
	__u64 off = addr - w->stack_base, copy;

	/* Saved registers are 8-aligned; anything else is read as it is. */
	if (addr & 7)
		return bpf_probe_read_user(word, sizeof(*word), (void *)addr);
	if (off >= w->stack_len || w->stack_len - off < 8) {
		copy = 4096 - (addr & 4095);
		if (copy > CFI_STACK_BYTES)
			copy = CFI_STACK_BYTES;
		w->stack_len = 0;
		if (bpf_probe_read_user(w->stack, copy, (void *)addr))
			return -1;
		w->stack_base = addr;
		w->stack_len = copy;
		off = 0;
	}
	*word = w->stack[(off >> 3) & (CFI_STACK_WORDS - 1)];
	return 0;
}

/*
 * One frame of walk_cfi: from the frame that returns to `ip`, with the
 * registers kept in cfi_walks[slot], to its caller. Returns the caller's
 * return address and keeps its registers; 0 where the walk ends. The CFA
 * comes from the stack or frame pointer per the row; the return address
 * and the caller's frame pointer are read at their offsets from it. Code
 * without CFI is stepped by its frame pointer, which is the same rule
 * (CFA = fp + 16, fp saved at CFA - 16, the return address at CFA - 8,
 * on x86_64 and arm64 alike). A global function: the verifier checks it
 * once, where a step inlined in the walk's loop was checked once per
 * frame of each program (most of the time to attach).
 */
__noinline __u64 cfi_step(__u32 slot, __u64 ip)
{
	__s64 cfa_offset, fp_offset, ra_offset;
	__u64 cfa, rule, sp, fp;
	struct cfi_walk *w;
	__u32 kind;

	w = bpf_map_lookup_elem(&cfi_walks, &slot);
	if (!w)
		return 0;
	rule = cfi_rule(w->tgid, w->start, w->len, w->generation, ip);
	kind = rule & 3;
	if (kind == CFI_END || kind == CFI_NONE)
		return 0;
	sp = w->sp;
	fp = w->fp;
	/* A frame pointer is 8-aligned; anything else is not one. */
	if (kind == CFI_FP && (!fp || (fp & 7)))
		return 0;
	ra_offset = (__s16)(rule >> 2);
	fp_offset = (__s16)(rule >> 18);
	cfa_offset = (__s64)rule >> 34;
	cfa = (kind == CFI_SP ? sp : fp) + cfa_offset;
	/* A caller's frame lies above: anything else is a bad row or a
	 * corrupt stack, and would loop. */
	if (cfa <= sp || cfa - sp > MAX_FRAME_SIZE)
		return 0;
	if (!ra_offset && !w->lr)
		return 0;
	/* The lower slot first (see cfi_read_word): in a frame-pointer frame
	 * the caller's frame pointer, just below the return address. */
	if (fp_offset && (!ra_offset || fp_offset < ra_offset) && cfi_read_word(w, cfa + fp_offset, &fp))
		return 0;
	if (ra_offset) {
		if (cfi_read_word(w, cfa + ra_offset, &ip))
			return 0;
	} else {
		ip = w->lr;	/* arm64 code that keeps it in x30 */
	}
	if (fp_offset && ra_offset && fp_offset > ra_offset && cfi_read_word(w, cfa + fp_offset, &fp))
		return 0;
	/* The link register holds a return address in the innermost frame
	 * only. */
	w->lr = 0;
	w->sp = cfa;
	w->fp = fp;
	return ip;
}

/*
 * Default user stacks (--unwind cfi): walks the stack in BPF with the
 * process's unwind rows (see cfi_step), so code without frame pointers
 * unwinds as completely as code with them, and nothing is handed to
 * userspace (no ring buffer to fill). `slot`
 * is the caller's stack_scratch slot. Returns the FNV-1a hash of the
 * addresses.
 */
static __always_inline __u64 walk_cfi(struct pt_regs *ctx, struct stack *st, __u32 slot)
{
	__u64 ip = PT_REGS_IP(ctx), hash = FNV_OFFSET;
	__u32 tgid = current_ids() >> 32;
	struct cfi_range *range;
	struct cfi_walk *w;
	int i;

	st->ips[0] = ip;
	st->ips[1] = 0;
	w = bpf_map_lookup_elem(&cfi_walks, &slot);
	if (!w)
		return (hash ^ ip) * FNV_PRIME;
	w->sp = PT_REGS_SP(ctx);
	w->fp = PT_REGS_FP(ctx);
	/* An empty window: the first word read fills it (cfi_read_word). */
	w->stack_base = 0;
	w->stack_len = 0;
#if defined(__TARGET_ARCH_x86)
	w->lr = 0;
#else
	w->lr = ctx->user_regs.regs[30];
#endif
	w->tgid = tgid;
	w->start = w->len = w->generation = 0;
	range = bpf_map_lookup_elem(&cfi_ranges, &tgid);
	if (range) {
		w->start = range->start;
		w->len = range->len;
		w->generation = range->generation;
	}
	for (i = 0; i < MAX_STACK_DEPTH; i++) {
		st->ips[i] = ip;
		hash = (hash ^ ip) * FNV_PRIME;
		if (i + 1 >= MAX_STACK_DEPTH)
			break;
		st->ips[i + 1] = 0;
		ip = cfi_step(slot, ip);
		if (!ip)
			break;
	}
	return hash;
}

/*
 * Stores the current stack under a 64-bit hash of its addresses (FNV-1a
 * over whole words, then a final mix) and returns the hash; 0 when it
 * could not be stored. `frames` is set only where it is needed (--unwind
 * auto), which takes the kernel's walk.
 */
static __always_inline __u64 hash_stack(void *ctx, struct stack *st, __u32 slot, __u32 *frames)
{
	__u64 flags = cfg.kernel ? 0 : BPF_F_USER_STACK;
	__u64 hash = FNV_OFFSET;
	long len;
	int i;

	if (!cfg.kernel && cfg.unwind == UNWIND_CFI) {
		hash = walk_cfi(ctx, st, slot);
	} else if (!cfg.kernel && cfg.unwind != UNWIND_AUTO) {
		hash = walk_user(ctx, st);
	} else {
		len = bpf_get_stack(ctx, st->ips, sizeof(st->ips), flags);
		if (len <= 0)
			return 0;
		/* bpf_get_stack zeroes the rest of the buffer: the stored
		 * stack ends at the first zero. */
		*frames = len / 8;
		for (i = 0; i < MAX_STACK_DEPTH && i < len / 8; i++)
			hash = (hash ^ st->ips[i]) * FNV_PRIME;
	}
	hash ^= hash >> 33;
	hash *= 0xff51afd7ed558ccdULL;
	hash ^= hash >> 33;
	/* The top bit marks samples unwound in userspace; 0 a lost stack. */
	hash &= ~UNWIND_ID_BIT;
	if (!hash)
		hash = 1;
	if (bpf_map_lookup_elem(&stacks, &hash))
		return hash;
	if (bpf_map_update_elem(&stacks, &hash, st, BPF_NOEXIST) &&
	    !bpf_map_lookup_elem(&stacks, &hash))
		return 0;	/* full */
	return hash;
}

static __always_inline __u64 store_stack(void *ctx, __u32 *frames)
{
	__u32 zero = 0, slot, *level;
	struct stack *st;
	__u64 hash;

	level = bpf_map_lookup_elem(&scratch_level, &zero);
	if (!level)
		return 0;
	slot = *level;
	if (slot >= SCRATCH_LEVELS)
		return 0;
	st = bpf_map_lookup_elem(&stack_scratch, &slot);
	if (!st)
		return 0;
	*level = slot + 1;
	hash = hash_stack(ctx, st, slot, frames);
	*level = slot;
	return hash;
}

/*
 * --unwind=dwarf: hands userspace the registers and a copy of the user
 * stack to unwind with the objects' CFI, and returns the id the
 * allocation is recorded with; 0 when no room was left. A copy near the
 * top of the stack mapping can fault, so shorter ones are tried.
 */
static __always_inline __u64 sample_for_unwind(struct pt_regs *ctx)
{
	struct unwind_sample *s;
	__u32 zero = 0;
	__u64 *seq, id, sp;

	seq = bpf_map_lookup_elem(&sample_seq, &zero);
	if (!seq)
		return 0;
	s = bpf_ringbuf_reserve(&samples, sizeof(*s), 0);
	if (!s)
		return 0;
	id = UNWIND_ID_BIT | (__u64)bpf_get_smp_processor_id() << 40 |
	     (*seq & ((1ULL << 40) - 1));
	*seq += 1;
	sp = PT_REGS_SP(ctx);
	s->id = id;
	s->tgid = current_ids() >> 32;
	s->regs[0] = PT_REGS_IP(ctx);
	s->regs[1] = sp;
#if defined(__TARGET_ARCH_x86)
	s->regs[2] = ctx->bp;
	s->regs[3] = 0;
#else
	s->regs[2] = ctx->user_regs.regs[29];
	s->regs[3] = ctx->user_regs.regs[30];
#endif
	s->len = 0;
	/* Fewer bytes each time, down to the first readable size. */
	if (!bpf_probe_read_user(s->stack, STACK_COPY, (void *)sp))
		s->len = STACK_COPY;
	else if (!bpf_probe_read_user(s->stack, STACK_COPY * 3 / 4, (void *)sp))
		s->len = STACK_COPY * 3 / 4;
	else if (!bpf_probe_read_user(s->stack, STACK_COPY / 2, (void *)sp))
		s->len = STACK_COPY / 2;
	else if (!bpf_probe_read_user(s->stack, STACK_COPY * 3 / 8, (void *)sp))
		s->len = STACK_COPY * 3 / 8;
	else if (!bpf_probe_read_user(s->stack, STACK_COPY / 4, (void *)sp))
		s->len = STACK_COPY / 4;
	else if (!bpf_probe_read_user(s->stack, STACK_COPY / 8, (void *)sp))
		s->len = STACK_COPY / 8;
	else if (!bpf_probe_read_user(s->stack, STACK_COPY / 16, (void *)sp))
		s->len = STACK_COPY / 16;
	else if (!bpf_probe_read_user(s->stack, 256, (void *)sp))
		s->len = 256;
	bpf_ringbuf_submit(s, 0);
	return id;
}

static __noinline void record(void *ctx, __u64 addr, __u64 size, bool drop_stale)
{
	struct alloc_key key = key_of(addr);
	struct alloc_info info = {
		.size = size,
		.timestamp_ns = bpf_ktime_get_ns(),
	};
	long err;

	if (cfg.unwind == UNWIND_DWARF)
		info.stack_id = sample_for_unwind(ctx);
	if (!info.stack_id) {
		__u32 frames = 0;
		__u64 copy;

		/* No room for a copy: frame pointers are better than nothing. */
		if (cfg.unwind == UNWIND_DWARF)
			count_loss(LOSS_COPY_FALLBACK);
		info.stack_id = store_stack(ctx, &frames);
		/* Frame pointers that stop this soon met code built without
		 * them: unwind a copy instead, if there is room for one. */
		if (cfg.unwind == UNWIND_AUTO && frames < AUTO_MIN_FRAMES) {
			copy = sample_for_unwind(ctx);
			if (copy)
				info.stack_id = copy;
			else
				count_loss(LOSS_COPY_FALLBACK);
		}
	}
	if (!info.stack_id)
		count_loss(LOSS_STACK);
	/* Insert first: only an address still tracked needs more work. */
	err = bpf_map_update_elem(&allocs, &key, &info, BPF_NOEXIST);
	if (err == -EEXIST) {
		if (drop_stale)
			release(addr);
		err = bpf_map_update_elem(&allocs, &key, &info, BPF_ANY);
	}
	if (err) {
		count_loss(LOSS_ALLOCS_FULL);
		return;
	}
	if (cfg.combined)
		combined_add(info.stack_id, size);
}

/*
 * nmemb * size wraps: the call fails. Written so that clang does not turn it
 * into a 128-bit multiply, which BPF lacks.
 */
static __always_inline bool mul_overflows(__u64 nmemb, __u64 size)
{
	__u64 limit;

	if (!size)
		return false;
	limit = ~0ULL / size;
	barrier_var(limit);
	return nmemb > limit;
}

/*
 * The size of nmemb * size elements; SIZE_OVERFLOW when the product wraps,
 * which makes the call fail (no real allocation has that size either).
 */
#define SIZE_OVERFLOW (~0ULL)

static __always_inline __u64 product(__u64 nmemb, __u64 size)
{
	return mul_overflows(nmemb, size) ? SIZE_OVERFLOW : nmemb * size;
}

static __always_inline bool keep_size(__u64 size)
{
	return size >= cfg.min_size && size <= cfg.max_size;
}

/*
 * -s N: each allocation is recorded with probability 1/N, drawn on its
 * own, so no rhythm of the program (ten call sites in turn, a handler
 * that allocates ten times per request) can line up with the sampling
 * and hide a call site, as counting every Nth call did. The modulo's bias
 * is below N / 2^32.
 */
static __always_inline bool sampled(void)
{
	if (cfg.sample_every <= 1)
		return true;
	return bpf_get_prandom_u32() % cfg.sample_every == 0;
}

/* The return address at function entry: on the stack on x86_64, in the
 * link register on arm64. */
static __always_inline __u64 return_address(struct pt_regs *ctx)
{
#if defined(__TARGET_ARCH_x86)
	__u64 ret = 0;

	bpf_probe_read_user(&ret, sizeof(ret), (void *)PT_REGS_SP(ctx));
	return ret;
#else
	return PT_REGS_RET(ctx);
#endif
}

/*
 * Entry of an allocating call. An allocator called from inside another
 * (musl's calloc calls malloc, glibc's realloc(NULL, n) calls malloc) is
 * nested: only the outermost call is recorded, so a block counts once.
 *
 * Nested calls run below their caller's stack pointer, except tail calls
 * (glibc's reallocarray jumps to realloc), which reuse the caller's frame:
 * there the return address is the uretprobe trampoline the outer call's
 * return probe put in place, not the one saved at the outer entry. An
 * entry at the same or a higher stack pointer with the saved return
 * address is a new call; the previous one's return was missed.
 */
static __noinline int enter(struct pt_regs *ctx, __u32 func, __u64 size,
			    __u64 old_addr, __u64 memptr)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 sp = PT_REGS_SP(ctx);
	struct inflight *st, fresh = {};
	long err;

	if (!is_target())
		return 0;
	fresh.size = size;
	fresh.old_addr = old_addr;
	fresh.memptr = memptr;
	fresh.entry_sp = sp;
	fresh.ret_addr = return_address(ctx);
	fresh.func = func;
	fresh.depth = 1;
	fresh.skip = size == SIZE_OVERFLOW || !keep_size(size);

	/* The common case, no call in flight on this thread, costs one
	 * insert; only an existing entry needs a lookup. */
	err = bpf_map_update_elem(&inflight, &tid, &fresh, BPF_NOEXIST);
	if (err == -EEXIST) {
		st = bpf_map_lookup_elem(&inflight, &tid);
		if (!st)
			return 0;
		if (st->depth && (sp < st->entry_sp ||
				  (sp == st->entry_sp && fresh.ret_addr != st->ret_addr))) {
			st->depth++;
			return 0;
		}
		if (st->depth)
			count_loss(LOSS_MISSED_RETURN);
		err = bpf_map_update_elem(&inflight, &tid, &fresh, BPF_ANY);
	}
	if (err) {
		count_loss(LOSS_INFLIGHT_FULL);
		return 0;
	}
	/* Sampling counts outermost calls only, so it is decided here. */
	if (!fresh.skip && !sampled()) {
		st = bpf_map_lookup_elem(&inflight, &tid);
		if (st)
			st->skip = 1;
		return 0;
	}
	if (!fresh.skip)
		emit(EV_ALLOC_ENTER, func, size, 0);
	return 0;
}

static __noinline int exit_common(struct pt_regs *ctx, __u64 ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct inflight *st, call;
	__u64 addr = ret;

	if (!is_target())
		return 0;
	st = bpf_map_lookup_elem(&inflight, &tid);
	if (!st || !st->depth)
		return 0;
	if (st->depth > 1) {
		st->depth--;
		return 0;
	}
	/*
	 * The outermost call returns above its entry stack pointer (x86_64
	 * pops the return address; arm64 returns at the same one). A return
	 * below it is a nested call whose entry could not be counted (the
	 * per-thread map refused it): taking it for the outer call's would
	 * record the nested result (a failed mmap inside malloc) as a block.
	 */
#if defined(__TARGET_ARCH_x86)
	if (PT_REGS_SP(ctx) <= st->entry_sp)
		return 0;
#else
	if (PT_REGS_SP(ctx) < st->entry_sp)
		return 0;
#endif
	call = *st;
	bpf_map_delete_elem(&inflight, &tid);

	/* A call that is not recorded (sampled out, or outside -z/-Z) still
	 * frees or resizes the block it replaces, which may be recorded:
	 * skipping that would leave a false leak. */
	switch (call.func) {
	case F_POSIX_MEMALIGN:
		/* Returns an error number; the block is stored at *memptr. */
		if ((int)ret != 0 || call.skip)
			return 0;
		if (bpf_probe_read_user(&addr, sizeof(addr), (void *)call.memptr))
			return 0;
		break;
	case F_REALLOC:
	case F_REALLOCARRAY:
		/* The old block goes only if the call succeeded; realloc(p, 0)
		 * frees p and may return NULL. */
		if (call.old_addr && (ret || !call.size))
			release(call.old_addr);
		break;
	case F_RALLOCX:
		/* Never frees: on failure the old block stays. */
		if (ret)
			release(call.old_addr);
		break;
	case F_XALLOCX:
		/* The block stays where it is, with the usable size returned. */
		if (!call.skip)
			emit(EV_ALLOC_EXIT, call.func, ret, call.old_addr);
		resize(call.old_addr, ret);
		return 0;
	case F_MMAP:
		if (ret == MAP_FAILED)
			return 0;
		break;
	case F_MREMAP:
		if (ret == MAP_FAILED)
			return 0;
		release(call.old_addr);
		break;
	}
	if (call.skip)
		return 0;
	emit(EV_ALLOC_EXIT, call.func, call.size, addr);
	if (addr)
		record(ctx, addr, call.size, cfg.drop_stale);
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(memleak__alloc_exit, __u64 ret)
{
	return exit_common(ctx, ret);
}

static __noinline int free_common(__u32 func, __u64 addr)
{
	if (!addr || !is_target())
		return 0;
	if (cfg.trace) {
		struct alloc_key key = key_of(addr);
		struct alloc_info *info = bpf_map_lookup_elem(&allocs, &key);

		emit(EV_FREE_ENTER, func, info ? info->size : 0, addr);
	}
	release(addr);
	return 0;
}

/* A call memleak cannot size: counted, so the report says it is short. */
static __always_inline int untracked(void)
{
	if (is_target())
		count_loss(LOSS_UNTRACKED);
	return 0;
}

/*
 * The one place that knows each allocator function's arguments: which is
 * the size (or nmemb and size), which the block being replaced, where
 * posix_memalign stores its result. The one-link-per-function programs
 * pass a constant func, so the switch folds away and each compiles to its
 * function's case alone; enter_multi passes the attach cookie.
 */
static __always_inline int enter_func(struct pt_regs *ctx, __u64 func)
{
	switch (func) {
	case F_MALLOC:		/* (size) */
	case F_VALLOC:
	case F_PVALLOC:
	case F_MALLOCX:		/* (size, flags) */
	case F_NEW:
		return enter(ctx, func, PT_REGS_PARM1(ctx), 0, 0);
	case F_CALLOC:		/* (nmemb, size) */
		return enter(ctx, func, product(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx)), 0, 0);
	case F_REALLOC:		/* (ptr, size) */
	case F_RALLOCX:		/* (ptr, size, flags) */
	case F_XALLOCX:
		return enter(ctx, func, PT_REGS_PARM2(ctx), PT_REGS_PARM1(ctx), 0);
	case F_REALLOCARRAY:	/* (ptr, nmemb, size) */
		return enter(ctx, func, product(PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx)),
			     PT_REGS_PARM1(ctx), 0);
	case F_POSIX_MEMALIGN:	/* (memptr, alignment, size) */
		return enter(ctx, func, PT_REGS_PARM3(ctx), 0, PT_REGS_PARM1(ctx));
	case F_ALIGNED_ALLOC:	/* (alignment, size) */
	case F_MEMALIGN:
	case F_MMAP:		/* (addr, length, ...) */
		return enter(ctx, func, PT_REGS_PARM2(ctx), 0, 0);
	case F_MREMAP:		/* (old_addr, old_size, new_size, ...) */
		return enter(ctx, func, PT_REGS_PARM3(ctx), PT_REGS_PARM1(ctx), 0);
	case F_FREE:		/* (ptr, ...) */
	case F_MUNMAP:		/* only an exact start address is released:
				 * partial unmaps are not split */
	case F_DALLOCX:
	case F_FREE_SIZED:
	case F_DELETE:
		return free_common(func, PT_REGS_PARM1(ctx));
	case F_UNTRACKED:
		return untracked();
	}
	return 0;
}

/* One program per allocator function, each attached by a link of its own. */
#define ENTRY_PROGRAM(name, func)					\
SEC("uprobe")								\
int memleak__##name(struct pt_regs *ctx) { return enter_func(ctx, func); }

ENTRY_PROGRAM(malloc_enter, F_MALLOC)
ENTRY_PROGRAM(calloc_enter, F_CALLOC)
ENTRY_PROGRAM(realloc_enter, F_REALLOC)
ENTRY_PROGRAM(reallocarr_enter, F_REALLOCARRAY)
ENTRY_PROGRAM(free_enter, F_FREE)
ENTRY_PROGRAM(memalign_p_enter, F_POSIX_MEMALIGN)
ENTRY_PROGRAM(aligned_enter, F_ALIGNED_ALLOC)
ENTRY_PROGRAM(valloc_enter, F_VALLOC)
ENTRY_PROGRAM(memalign_enter, F_MEMALIGN)
ENTRY_PROGRAM(pvalloc_enter, F_PVALLOC)
ENTRY_PROGRAM(mmap_enter, F_MMAP)
ENTRY_PROGRAM(munmap_enter, F_MUNMAP)
ENTRY_PROGRAM(mremap_enter, F_MREMAP)
ENTRY_PROGRAM(mallocx_enter, F_MALLOCX)
ENTRY_PROGRAM(rallocx_enter, F_RALLOCX)
ENTRY_PROGRAM(xallocx_enter, F_XALLOCX)
ENTRY_PROGRAM(dallocx_enter, F_DALLOCX)
ENTRY_PROGRAM(free_sized_enter, F_FREE_SIZED)
ENTRY_PROGRAM(new_enter, F_NEW)
ENTRY_PROGRAM(delete_enter, F_DELETE)
ENTRY_PROGRAM(untracked_enter, F_UNTRACKED)

/*
 * The same, as two programs for uprobe_multi links (Linux 6.6+): one link
 * for every entry and one for every return, told apart by the attach
 * cookie (enum func). Detaching a multi link waits for one RCU grace
 * period, where one link per function waits for one each (2 s here).
 */
SEC("uprobe.multi")
int memleak__enter_multi(struct pt_regs *ctx)
{
	return enter_func(ctx, bpf_get_attach_cookie(ctx));
}

SEC("uretprobe.multi")
int memleak__exit_multi(struct pt_regs *ctx)
{
	return exit_common(ctx, PT_REGS_RC(ctx));
}

/*
 * User mode: an exec replaces the traced process's memory, so its earlier
 * records describe nothing any more; a fork starts a process the probes do
 * not follow. Raw tracepoints need no tracefs.
 */
static __always_inline struct notices *notices_of_current(void)
{
	struct notices fresh = {};
	__u32 tgid;

	if (cfg.kernel || !is_target())
		return NULL;
	tgid = current_ids() >> 32;
	bpf_map_update_elem(&notices, &tgid, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&notices, &tgid);
}

#define SIGSTOP 19
#define CLONE_THREAD 0x00010000

SEC("raw_tracepoint/sched_process_exec")
int memleak__on_exec(void *ctx)
{
	struct notices *n = notices_of_current();
	__u32 tgid;

	if (!n)
		return 0;
	/*
	 * The new program must not run before its allocator has probes: a
	 * SIGSTOP sent now stops it before it returns to user space, and
	 * memleak sends SIGCONT once attached (bpf_send_signal: Linux 5.3).
	 * holds goes up before execs, so that memleak, seeing the exec, also
	 * sees that the process is held.
	 */
	if (cfg.hold_exec) {
		if (bpf_send_signal(SIGSTOP) == 0) {
			__sync_fetch_and_add(&n->holds, 1);
		} else {
			count_loss(LOSS_EXEC_UNHELD);
		}
	}
	/* Records older than this belong to the program that was replaced. */
	n->exec_ns = bpf_ktime_get_ns();
	__sync_fetch_and_add(&n->execs, 1);
	if (cfg.hold_exec) {
		tgid = current_ids() >> 32;
		/* Only a wakeup: memleak also looks at the notices every 0.5 s. */
		bpf_ringbuf_output(&held, &tgid, sizeof(tgid), 0);
	}
	return 0;
}

/*
 * User mode, glibc: a traced process is about to dlclose a library. Its
 * frames are named from memleak's snapshots of /proc/PID/maps, and a
 * library loaded and unloaded between two of them would never be seen: the
 * process is stopped here (SIGSTOP takes effect before dlclose's body runs,
 * so nothing is unmapped yet) until memleak has read its maps, then
 * continued with SIGCONT. dlclose is rare, so the stop costs little.
 */
SEC("uprobe")
int memleak__dlclose_enter(void *ctx)
{
	struct notices *n = notices_of_current();
	__u32 tgid;

	if (!n)
		return 0;
	if (bpf_send_signal(SIGSTOP) != 0) {
		count_loss(LOSS_DLCLOSE_UNHELD);
		return 0;
	}
	__sync_fetch_and_add(&n->holds, 1);
	tgid = current_ids() >> 32;
	bpf_ringbuf_output(&held, &tgid, sizeof(tgid), 0);
	return 0;
}

/*
 * Runs in the parent (current) for every new task: args are the new
 * task_struct and the clone flags. A thread (CLONE_THREAD) is traced like
 * the rest of the process; another process is not.
 */
SEC("raw_tracepoint/task_newtask")
int memleak__on_fork(__u64 *args)
{
	struct notices *n = notices_of_current();

	if (!n)
		return 0;
	if (args[1] & CLONE_THREAD)
		__sync_fetch_and_add(&n->threads, 1);
	else
		__sync_fetch_and_add(&n->forks, 1);
	return 0;
}

/*
 * Kernel mode: each allocation is one tracepoint, entry and result at once.
 *
 * Classic tracepoint programs read the trace record at offsets from BTF or
 * tracefs. The kernel runs them under one per-CPU guard shared by every
 * tracepoint and kprobe program, so a free in an interrupt that arrives
 * while any of them runs is skipped. Raw tracepoint programs (tp_btf with
 * BTF, raw_tp without) read the tracepoint's arguments instead and have a
 * guard per program (none before 6.1), so such a free is still seen.
 * Userspace reports whatever misses remain.
 */
static __always_inline __u64 read_field(void *ctx, struct tp_field f)
{
	__u64 v = 0;
	__u32 v32 = 0;

	if (f.size == 8) {
		bpf_probe_read_kernel(&v, sizeof(v), ctx + f.offset);
	} else if (f.size == 4) {
		bpf_probe_read_kernel(&v32, sizeof(v32), ctx + f.offset);
		v = v32;
	}
	return v;
}

static __always_inline int kernel_alloc_at(void *ctx, __u32 ev, bool slab,
					   __u64 addr, __u64 size)
{
	if (ev == KEV_PAGE_ALLOC)
		size = cfg.page_size << size;	/* the field is the order */
	if (!addr || !keep_size(size) || !sampled())
		return 0;
	emit(EV_ALLOC_EXIT, F_KERNEL, size, addr);
	/* --wa-missing-free: a slab address handed out again proves that its
	 * earlier free was missed. */
	record(ctx, addr, size, slab && cfg.drop_stale);
	return 0;
}

static __always_inline int kernel_alloc(void *ctx, __u32 ev, bool slab)
{
	struct event_fields f = cfg.kernel_events[ev];

	return kernel_alloc_at(ctx, ev, slab, read_field(ctx, f.addr),
			       read_field(ctx, f.size));
}

static __always_inline int kernel_free(void *ctx, __u32 ev)
{
	struct event_fields f = cfg.kernel_events[ev];

	return free_common(F_KERNEL, read_field(ctx, f.addr));
}

/* Argument i of a raw tracepoint (an array of u64, one per argument). */
static __always_inline __u64 raw_arg(void *ctx, __u32 i)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (__u64 *)ctx + (i & 15));
	return v;
}

static __always_inline int raw_alloc(void *ctx, __u32 ev, bool slab)
{
	struct raw_event_args a = cfg.raw_events[ev];
	__u64 size = 0;
	__u32 size32 = 0;

	if (a.size_kind == RAW_SIZE_ARG) {
		size = raw_arg(ctx, a.size);
	} else if (a.size_kind == RAW_SIZE_CACHE) {
		void *cache = (void *)raw_arg(ctx, a.size);

		if (cache)
			bpf_probe_read_kernel(&size32, sizeof(size32),
					      cache + a.cache_size_offset);
		size = size32;
	}
	return kernel_alloc_at(ctx, ev, slab, raw_arg(ctx, a.addr), size);
}

/*
 * Per CPU and event: a free program is running. From 6.1 on the kernel
 * skips a raw tracepoint program that is already running on the CPU, so a
 * free in an interrupt that arrives while that event's program runs would
 * be lost: a second program on the same tracepoint, the rescue, sees the
 * flag and does its work. Otherwise the rescue does nothing. (Both skipped
 * takes an interrupt within an interrupt; those the kernel counts.)
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NR_KERNEL_EVENTS);
	__type(key, __u32);
	__type(value, __u32);
} free_running SEC(".maps");

static __always_inline int raw_free(void *ctx, __u32 ev)
{
	/* Read before ev's address is taken for the lookup: the verifier
	 * must see a constant index into cfg. */
	__u64 addr = raw_arg(ctx, cfg.raw_events[ev].addr);
	__u32 key = ev, *running = bpf_map_lookup_elem(&free_running, &key);

	if (running)
		*running += 1;
	free_common(F_KERNEL, addr);
	if (running)
		*running -= 1;
	return 0;
}

static __always_inline int raw_free_rescue(void *ctx, __u32 ev)
{
	__u64 addr = raw_arg(ctx, cfg.raw_events[ev].addr);
	__u32 key = ev, *running = bpf_map_lookup_elem(&free_running, &key);

	if (!running || !*running)
		return 0;	/* the free program saw this one */
	count_loss(RESCUED_FREES);
	return free_common(F_KERNEL, addr);
}

/*
 * Each event three ways: a classic tracepoint (memleak__prog), tp_btf
 * (memleak__btf_prog) and raw_tp (memleak__raw_prog); userspace loads one
 * of them. Frees also have a rescue (memleak__btf_prog_r,
 * memleak__raw_prog_r), loaded beside the raw one from 6.1 on. The table
 * of every program is src/bpf/programs.rs.
 */
#define KERNEL_ALLOC(prog, category, tp, ev, slab)			\
SEC("tracepoint/" #category "/" #tp)					\
int memleak__##prog(void *ctx) { return kernel_alloc(ctx, ev, slab); }	\
SEC("tp_btf/" #tp)							\
int memleak__btf_##prog(void *ctx) { return raw_alloc(ctx, ev, slab); }	\
SEC("raw_tp/" #tp)							\
int memleak__raw_##prog(void *ctx) { return raw_alloc(ctx, ev, slab); }

#define KERNEL_FREE(prog, category, tp, ev)				\
SEC("tracepoint/" #category "/" #tp)					\
int memleak__##prog(void *ctx) { return kernel_free(ctx, ev); }		\
SEC("tp_btf/" #tp)							\
int memleak__btf_##prog(void *ctx) { return raw_free(ctx, ev); }	\
SEC("raw_tp/" #tp)							\
int memleak__raw_##prog(void *ctx) { return raw_free(ctx, ev); }	\
SEC("tp_btf/" #tp)							\
int memleak__btf_##prog##_r(void *ctx) { return raw_free_rescue(ctx, ev); } \
SEC("raw_tp/" #tp)							\
int memleak__raw_##prog##_r(void *ctx) { return raw_free_rescue(ctx, ev); }

KERNEL_ALLOC(kmalloc, kmem, kmalloc, KEV_KMALLOC, true)
KERNEL_ALLOC(kmalloc_node, kmem, kmalloc_node, KEV_KMALLOC_NODE, true)
KERNEL_ALLOC(cache_alloc, kmem, kmem_cache_alloc, KEV_CACHE_ALLOC, true)
KERNEL_ALLOC(cache_alloc_node, kmem, kmem_cache_alloc_node, KEV_CACHE_ALLOC_NODE, true)
KERNEL_FREE(kfree, kmem, kfree, KEV_KFREE)
KERNEL_FREE(cache_free, kmem, kmem_cache_free, KEV_CACHE_FREE)
KERNEL_ALLOC(page_alloc, kmem, mm_page_alloc, KEV_PAGE_ALLOC, false)
KERNEL_FREE(page_free, kmem, mm_page_free, KEV_PAGE_FREE)
KERNEL_ALLOC(percpu_alloc, percpu, percpu_alloc_percpu, KEV_PERCPU_ALLOC, false)
KERNEL_FREE(percpu_free, percpu, percpu_free_percpu, KEV_PERCPU_FREE)

/*
 * --unwind cfi with -c: the command's entry point, reached once its loader
 * has mapped the libraries. Stopping it there lets userspace load their
 * unwind rows before main makes its first allocation.
 */
#define SIGSTOP 19

SEC("uprobe")
int memleak__entry_stop(void *ctx)
{
	if (is_target())
		bpf_send_signal(SIGSTOP);
	return 0;
}

/* For `make bench`: the cost of the probes alone, with no work in them. */
SEC("uprobe")
int memleak__empty_enter(void *ctx)
{
	return 0;
}

SEC("uretprobe")
int memleak__empty_exit(void *ctx)
{
	return 0;
}

/*
 * Never called, never loaded: names in a function's signature what the
 * object's BTF would otherwise leave out (BTF has no local variables, and
 * an enum used only for its constants has no type): the structs that
 * travel only through ring buffers, and the enums userspace mirrors. A
 * unit test compares them with src/bpf/abi.rs.
 */
struct btf_anchor {
	struct event event;
	struct unwind_sample unwind_sample;
	enum kernel_event kernel_event;
	enum raw_size raw_size;
	enum cfi_kind cfi_kind;
	enum func func;
	enum event_kind event_kind;
	enum loss loss;
};

__noinline int memleak__btf_anchor(struct btf_anchor *a)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
