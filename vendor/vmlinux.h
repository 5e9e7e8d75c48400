/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The few kernel types memleak's BPF programs need, for x86_64 and arm64.
 *
 * Why not a generated vmlinux.h: that file is megabytes per architecture and
 * ties the build to one kernel's BTF, while these programs only read the
 * argument and return registers of user functions (struct pt_regs, whose
 * layout is ABI) and use a handful of uapi constants. libbpf's headers
 * (bpf_helpers.h, bpf_tracing.h) come from libbpf-sys; this file holds only
 * what they expect the kernel headers to provide.
 */
#ifndef __VMLINUX_H__
#define __VMLINUX_H__

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_STACK_TRACE = 7,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

enum {
	BPF_F_NO_PREALLOC = 1U << 0,
};

/* bpf_get_stackid() flags */
enum {
	BPF_F_SKIP_FIELD_MASK = 0xffULL,
	BPF_F_USER_STACK = 1ULL << 8,
	BPF_F_FAST_STACK_CMP = 1ULL << 9,
	BPF_F_REUSE_STACKID = 1ULL << 10,
};

/* bpf_ringbuf_submit() flags */
enum {
	BPF_RB_NO_WAKEUP = 1ULL << 0,
	BPF_RB_FORCE_WAKEUP = 1ULL << 1,
};

/* bpf_get_ns_current_pid_tgid() result */
struct bpf_pidns_info {
	__u32 pid;
	__u32 tgid;
};

#if defined(__TARGET_ARCH_x86)
/* arch/x86/include/asm/ptrace.h, x86_64: the layout uprobes hand to BPF. */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax;
	unsigned long ip, cs, flags, sp, ss;
};
#elif defined(__TARGET_ARCH_arm64)
/* arch/arm64/include/uapi/asm/ptrace.h: the kernel's pt_regs starts with it. */
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
struct pt_regs {
	struct user_pt_regs user_regs;
	__u64 orig_x0;
};
#else
#error "memleak's BPF programs support x86_64 and arm64"
#endif

#endif /* __VMLINUX_H__ */
