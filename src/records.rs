//! The plain records the tracer hands over from BPF: outstanding
//! allocations, per-stack totals, and what could not be recorded. The
//! tracer produces them and knows nothing of reports; the report consumes
//! them and knows nothing of BPF.

/// One outstanding allocation, as read from the BPF map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub addr: u64,
    pub size: u64,
    pub timestamp_ns: u64,
    /// 64-bit hash of the stack; 0: it could not be stored.
    pub stack_id: u64,
    /// The process that made it (0 in kernel mode).
    pub tgid: u32,
}

/// The outstanding allocations of one stack in one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackTotal {
    pub stack_id: u64,
    /// Stack ids are shared by all processes, but the same addresses mean
    /// other code in another process.
    pub tgid: u32,
    pub bytes: u64,
    pub count: u64,
    /// (address, size) of each allocation, kept only for -a.
    pub allocs: Vec<(u64, u64)>,
}

/// What the BPF side could not record, and attaches that failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Losses {
    pub allocs_map_full: u64,
    pub stacks_lost: u64,
    pub combined_map_full: u64,
    pub events_dropped: u64,
    pub inflight_full: u64,
    pub missed_returns: u64,
    pub untracked_calls: u64,
    pub copy_fallbacks: u64,
    pub recursion_misses: u64,
    /// Of `recursion_misses`, those of programs that see frees: each one
    /// a block that may be reported as leaked when it was freed.
    pub recursion_missed_frees: u64,
    pub failed_attaches: u64,
    pub execs_unheld: u64,
    pub dlcloses_unheld: u64,
    pub entries_unheld: u64,
}
