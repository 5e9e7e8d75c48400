//! `#[repr(C)]` mirrors of bpf/memleak.h. Keep the two in step: a unit
//! test (`object_tests`) compares each struct's size and members with the
//! embedded object's BTF, and `Object` checks the config's size against the
//! object's .rodata at load time.

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Config {
    pub min_size: u64,
    pub max_size: u64,
    pub sample_every: u64,
    pub target_tgid: u32,
    pub trace: u8,
    pub drop_stale: u8,
    pub combined: u8,
    pub kernel: u8,
    pub many_targets: u8,
    /// enum unwind: 0 frame pointers, 1 dwarf, 2 auto, 3 cfi.
    pub unwind: u8,
    /// Stop a target at exec until the new program is probed (-p).
    pub hold_exec: u8,
    pub page_size: u64,
    pub pidns_dev: u64,
    pub pidns_ino: u64,
    pub kernel_events: [EventFields; NR_KERNEL_EVENTS],
    pub raw_events: [RawEventArgs; NR_KERNEL_EVENTS],
}

/// enum raw_size: where a raw tracepoint program finds the size.
pub const RAW_SIZE_NONE: u8 = 0;
pub const RAW_SIZE_ARG: u8 = 1;
pub const RAW_SIZE_CACHE: u8 = 2;

/// struct raw_event_args: an event's address and size among the raw
/// tracepoint's arguments.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawEventArgs {
    pub addr: u8,
    pub size: u8,
    pub size_kind: u8,
    pub pad: u8,
    pub cache_size_offset: u16,
    pub pad2: u16,
}

/// Where a tracepoint field lies in the event record; size 0: absent.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TpField {
    pub offset: u16,
    pub size: u16,
}

/// The address and size fields of one kernel event.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventFields {
    pub addr: TpField,
    pub size: TpField,
}

/// enum kernel_event.
pub const NR_KERNEL_EVENTS: usize = 10;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AllocKey {
    pub addr: u64,
    pub tgid: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AllocInfo {
    pub size: u64,
    pub timestamp_ns: u64,
    /// 64-bit hash of the stack; [`LOST_STACK`]: not stored.
    pub stack_id: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CombinedInfo {
    pub total_size: u64,
    pub number_of_allocs: u64,
}

/// The stack id of allocations whose stack was lost.
pub const LOST_STACK: u64 = 0;

pub const EV_ALLOC_ENTER: u32 = 0;
pub const EV_ALLOC_EXIT: u32 = 1;
pub const EV_FREE_ENTER: u32 = 2;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Event {
    pub timestamp_ns: u64,
    pub size: u64,
    pub addr: u64,
    pub pid: u32,
    pub tid: u32,
    pub kind: u32,
    pub func: u32,
    pub comm: [u8; 16],
}

/// Indexes of the `losses` per-CPU array (enum loss).
pub const LOSS_ALLOCS_FULL: usize = 0;
pub const LOSS_STACK: usize = 1;
pub const LOSS_COMBINED_FULL: usize = 2;
pub const LOSS_EVENTS: usize = 3;
pub const LOSS_INFLIGHT_FULL: usize = 4;
pub const LOSS_MISSED_RETURN: usize = 5;
pub const LOSS_UNTRACKED: usize = 6;
pub const LOSS_COPY_FALLBACK: usize = 7;
pub const LOSS_EXEC_UNHELD: usize = 8;
/// Not a loss: frees the rescue programs handled for a skipped free program.
pub const RESCUED_FREES: usize = 9;
pub const LOSS_DLCLOSE_UNHELD: usize = 10;

/// struct notices: what happened to one traced process.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notices {
    pub execs: u64,
    pub forks: u64,
    pub exec_ns: u64,
    pub threads: u64,
    /// Execs it was stopped at (SIGSTOP from BPF) for memleak to probe the
    /// new program; memleak sends SIGCONT.
    pub holds: u64,
}

/// enum cfi_kind.
pub const CFI_NONE: u8 = 0;
pub const CFI_SP: u8 = 1;
pub const CFI_FP: u8 = 2;
pub const CFI_END: u8 = 3;

/// struct cfi_row: one row of a process's unwind table (--unwind cfi).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CfiRow {
    pub pc: u64,
    pub cfa_offset: i32,
    pub fp_offset: i16,
    pub ra_offset: i16,
    pub kind: u8,
    pub pad: [u8; 7],
}

/// struct cfi_range: where one process's rows lie in `cfi_rows`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CfiRange {
    pub start: u32,
    pub len: u32,
    /// Changes with every load, so that BPF's cached rows go stale.
    pub generation: u32,
    pub pad: u32,
}

/// Bytes of user stack in an unwind sample (STACK_COPY).
pub const STACK_COPY: usize = 8192;

/// struct unwind_sample: an allocation's registers and a copy of its
/// stack, for userspace to unwind (--unwind dwarf, auto).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct UnwindSample {
    /// The stack id the allocation was recorded with.
    pub id: u64,
    pub tgid: u32,
    /// Bytes of `stack` copied.
    pub len: u32,
    /// ip, sp, fp, and lr on arm64.
    pub regs: [u64; 4],
    pub stack: [u8; STACK_COPY],
}

impl Default for UnwindSample {
    fn default() -> Self {
        UnwindSample {
            id: 0,
            tgid: 0,
            len: 0,
            regs: [0; 4],
            stack: [0; STACK_COPY],
        }
    }
}

/// High bit of a stack id: unwound in userspace (UNWIND_ID_BIT).
pub const UNWIND_ID_BIT: u64 = 1 << 63;

/// Frames per stack in the `stacks` map (MAX_STACK_DEPTH).
pub const MAX_STACK_DEPTH: usize = 127;

/// Plain old data that may be read from raw bytes a map or ring buffer gave.
///
/// # Safety
/// Implementors are `#[repr(C)]`, have no padding the kernel leaves
/// uninitialised that matters, and every bit pattern is a valid value.
pub unsafe trait Pod: Copy + Default {}
// SAFETY: #[repr(C)], integer fields only, padding spelled out as fields.
unsafe impl Pod for AllocKey {}
// SAFETY: #[repr(C)], integer fields only, padding spelled out as fields.
unsafe impl Pod for AllocInfo {}
// SAFETY: #[repr(C)], integer fields only, padding spelled out as fields.
unsafe impl Pod for CombinedInfo {}
// SAFETY: #[repr(C)], integer fields only, padding spelled out as fields.
unsafe impl Pod for Event {}
// SAFETY: an integer: every bit pattern is a value.
unsafe impl Pod for u64 {}
// SAFETY: an integer: every bit pattern is a value.
unsafe impl Pod for u32 {}
// SAFETY: an integer: every bit pattern is a value.
unsafe impl Pod for u8 {}
// SAFETY: #[repr(C)], integer fields only, padding spelled out as fields.
unsafe impl Pod for Notices {}
// SAFETY: #[repr(C)], integer fields only, padding spelled out as fields.
unsafe impl Pod for CfiRow {}
// SAFETY: #[repr(C)], integer fields only, padding spelled out as fields.
unsafe impl Pod for CfiRange {}
// SAFETY: #[repr(C)], integer fields only, padding spelled out as fields.
unsafe impl Pod for UnwindSample {}
