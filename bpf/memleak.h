/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Structs read by both the BPF programs and userspace. Mirrored once with
 * #[repr(C)] in src/bpf/abi.rs; keep the two in step (a unit test compares
 * each struct's size and members with the compiled object's BTF).
 */
#ifndef MEMLEAK_H
#define MEMLEAK_H

/* Where a tracepoint field lies in the event record (size 0: absent). */
struct tp_field {
	__u16 offset;
	__u16 size;
};

/* The kernel events memleak traces, in the order of src/tracepoints.rs. */
enum kernel_event {
	KEV_KMALLOC, KEV_KMALLOC_NODE, KEV_CACHE_ALLOC, KEV_CACHE_ALLOC_NODE,
	KEV_KFREE, KEV_CACHE_FREE, KEV_PAGE_ALLOC, KEV_PAGE_FREE,
	KEV_PERCPU_ALLOC, KEV_PERCPU_FREE, NR_KERNEL_EVENTS,
};

/*
 * The fields of one event: the address (ptr, or pfn for pages) and the size
 * (bytes_alloc; for pages the order). Read at these offsets, which come
 * from vmlinux BTF or from tracefs format files, so one program works on
 * every kernel's layout.
 */
struct event_fields {
	struct tp_field addr;
	struct tp_field size;
};

/*
 * Where raw tracepoint programs (tp_btf, raw_tp) find an event's address
 * and size among the tracepoint's arguments (its TP_PROTO, not the trace
 * record), which moved across kernel versions.
 */
enum raw_size { RAW_SIZE_NONE, RAW_SIZE_ARG, RAW_SIZE_CACHE };

struct raw_event_args {
	__u8 addr;		/* argument index of the address */
	__u8 size;		/* argument index of the size, or of the cache */
	__u8 size_kind;		/* enum raw_size; RAW_SIZE_CACHE: the u32 at
				 * cache_size_offset in the struct kmem_cache
				 * argument `size` points to (6.1+) */
	__u8 pad;
	__u16 cache_size_offset;
	__u16 pad2;
};

/* Read-only configuration, written by userspace before load. */
struct config {
	__u64 min_size;		/* inclusive */
	__u64 max_size;		/* inclusive */
	__u64 sample_every;	/* record each allocation with chance 1/N; 1 = all */
	__u32 target_tgid;	/* the one traced process; 0: see many_targets */
	__u8 trace;		/* stream every call through the ring buffer */
	__u8 drop_stale;	/* an address handed out again proves a missed free */
	__u8 combined;		/* keep per-stack totals in BPF (--combined-only) */
	__u8 kernel;		/* kernel stacks instead of user stacks */
	__u8 many_targets;	/* several processes: the targets map lists them */
	__u8 unwind;		/* enum unwind */
	__u8 hold_exec;		/* stop a target at exec (SIGSTOP) until memleak
				 * has probed the new program (-p; -c uses ptrace) */
	__u64 page_size;
	/* memleak's PID namespace when it is not the initial one: PIDs given
	 * by the user are numbers there. 0: the initial namespace. */
	__u64 pidns_dev;
	__u64 pidns_ino;
	struct event_fields kernel_events[NR_KERNEL_EVENTS];
	struct raw_event_args raw_events[NR_KERNEL_EVENTS];
};

/* Key of the outstanding-allocation table: the address, per process. */
struct alloc_key {
	__u64 addr;
	__u32 tgid;		/* 0 in kernel mode */
	__u32 pad;
};

struct alloc_info {
	__u64 size;
	__u64 timestamp_ns;	/* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 stack_id;		/* 64-bit hash of the stack; 0: not stored */
};

#define MAX_STACK_DEPTH 127

/* How user stacks are taken. */
enum unwind {
	UNWIND_FP,		/* frame pointers, walked in BPF */
	UNWIND_DWARF,		/* a copy, unwound in userspace with CFI */
	UNWIND_AUTO,		/* frame pointers, and a copy when they stop short */
	UNWIND_CFI,		/* in BPF, by rows userspace built from CFI */
};

/*
 * --unwind cfi: one row of a process's unwind table, built by userspace
 * from each mapped object's .eh_frame (src/unwind_tables.rs). A row covers
 * the addresses from its pc to the next row's. Rows of one process are
 * sorted by pc and found by binary search.
 */
enum cfi_kind {
	CFI_NONE,		/* no CFI here: step by the frame pointer */
	CFI_SP,			/* CFA = stack pointer + cfa_offset */
	CFI_FP,			/* CFA = frame pointer (rbp, x29) + cfa_offset */
	CFI_END,		/* the outermost frame: the walk ends */
};

struct cfi_row {
	__u64 pc;		/* absolute address in the process */
	__s32 cfa_offset;
	__s16 fp_offset;	/* caller's frame pointer at CFA + this; 0: unchanged */
	__s16 ra_offset;	/* return address at CFA + this; 0: in the link register */
	__u8 kind;		/* enum cfi_kind */
	__u8 pad[7];
};

/* Where a process's rows lie in the cfi_rows array. */
struct cfi_range {
	__u32 start;
	__u32 len;
	__u32 generation;	/* changes with every load: older cached rows are stale */
	__u32 pad;
};

/* A row found for a return address, cached per CPU (return addresses
 * recur: most allocations come from a few call sites). */
struct cfi_cached {
	__u64 pc;
	__u32 tgid;
	__u32 generation;
	struct cfi_row row;
};

#define CFI_CACHE_SIZE 1024

/* --unwind auto: a frame-pointer stack this short is taken as truncated. */
#define AUTO_MIN_FRAMES 4

/* Bytes of user stack copied for DWARF unwinding, from the stack pointer. */
#define STACK_COPY 8192

/* High bit of a stack id: the stack is unwound in userspace from the
 * unwind_sample with this id. */
#define UNWIND_ID_BIT (1ULL << 63)

/*
 * An allocation's call site for userspace to unwind with the objects'
 * CFI: registers at the return of the allocator function (x86_64: ip, sp,
 * bp; arm64: pc, sp, fp, lr) and the stack above the stack pointer.
 */
struct unwind_sample {
	__u64 id;		/* the stack id the allocation was recorded with */
	__u32 tgid;
	__u32 len;		/* bytes of stack copied */
	__u64 regs[4];
	__u8 stack[STACK_COPY];
};

/* A stack as bpf_get_stack writes it: addresses, then zeros. */
struct stack {
	__u64 ips[MAX_STACK_DEPTH];
};

struct combined_info {
	__u64 total_size;
	__u64 number_of_allocs;
};

/* The allocator functions, in the order of src/allocator Func. */
enum func {
	F_MALLOC, F_CALLOC, F_REALLOC, F_REALLOCARRAY, F_FREE, F_POSIX_MEMALIGN,
	F_ALIGNED_ALLOC, F_VALLOC, F_MEMALIGN, F_PVALLOC, F_MMAP, F_MUNMAP,
	F_MREMAP, F_MALLOCX, F_RALLOCX, F_XALLOCX, F_DALLOCX, F_FREE_SIZED,
	F_NEW, F_DELETE, F_UNTRACKED, F_KERNEL, NR_FUNCS,
};

enum event_kind { EV_ALLOC_ENTER, EV_ALLOC_EXIT, EV_FREE_ENTER };

/* One traced call, streamed with -t. */
struct event {
	__u64 timestamp_ns;
	__u64 size;
	__u64 addr;
	__u32 pid;
	__u32 tid;
	__u32 kind;		/* enum event_kind */
	__u32 func;		/* enum func */
	char comm[16];
};

/* What BPF could not record; summed over CPUs by userspace. */
enum loss {
	LOSS_ALLOCS_FULL,	/* allocs map full: allocation not tracked */
	LOSS_STACK,		/* stack could not be stored */
	LOSS_COMBINED_FULL,	/* combined map full: stack totals incomplete */
	LOSS_EVENTS,		/* ring buffer full: -t lines dropped */
	LOSS_INFLIGHT_FULL,	/* per-thread call state map full */
	LOSS_MISSED_RETURN,	/* an entry whose return never came */
	LOSS_UNTRACKED,		/* calls to allocator functions memleak cannot size */
	LOSS_COPY_FALLBACK,	/* stack copies refused (ring full): frame pointers used */
	LOSS_EXEC_UNHELD,	/* execs that could not be held: the new program's
				 * first allocations may be missed */
	RESCUED_FREES,		/* not a loss: frees a rescue program saw for the free
				 * program the kernel skipped (kernel mode, 6.1+) */
	LOSS_DLCLOSE_UNHELD,	/* dlcloses that could not be held: frames in
				 * the library may show no name */
	NR_LOSSES,
};

/* What happened to a traced process, for userspace to notice; per tgid. */
struct notices {
	__u64 execs;		/* it executed a new program */
	__u64 forks;		/* it forked: children are not traced */
	__u64 exec_ns;		/* bpf_ktime_get_ns() of the latest exec */
	__u64 threads;		/* it started a thread (traced like the rest) */
	__u64 holds;		/* times it was stopped for memleak: at exec
				 * (cfg.hold_exec) and at dlclose */
};

#endif /* MEMLEAK_H */
