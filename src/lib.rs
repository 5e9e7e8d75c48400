//! memleak as a library: the modules the binary (src/main.rs) drives, and
//! that the fuzz targets and tests import instead of including source files.
//!
//! Data flows one way: cli -> plan -> tracer -> snapshot -> aggregate ->
//! symbolize -> report (see README, "How it works").
//!
//! unsafe code lives only in `bpf` (libbpf) and `sys` (every other system
//! call), behind safe APIs; the compiler refuses it anywhere else, and
//! clippy wants a SAFETY comment on each block.

#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once from -v; read by `verbose!`.
static VERBOSE: AtomicBool = AtomicBool::new(false);

pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

pub fn verbose_enabled() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// A note on stderr, only with -v.
macro_rules! verbose {
    ($($arg:tt)*) => {
        if $crate::verbose_enabled() {
            eprintln!("memleak: {}", format!($($arg)*));
        }
    };
}
pub(crate) use verbose;

pub mod allocator;
#[allow(unsafe_code)]
pub mod bpf;
pub mod cli;
pub mod elf;
pub mod error;
pub mod offline;
pub mod plan;
pub mod pprof;
pub mod process;
pub mod reach;
pub mod records;
pub mod report;
pub mod session;
pub mod setup_signals;
pub mod symbolize;
#[allow(unsafe_code)]
pub mod sys;
pub mod target;
pub mod tracepoint_args;
pub mod tracepoints;
pub mod tracer;
pub mod unwind_tables;
