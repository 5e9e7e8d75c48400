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
// Without "tracer" only the parsers are built (for the fuzz crate), and
// much of what they offer the tracer goes unused.
#![cfg_attr(
    not(feature = "tracer"),
    allow(dead_code, unused_imports, unused_macros)
)]

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
#[cfg(feature = "tracer")]
#[allow(unsafe_code)]
pub mod bpf;
#[cfg(feature = "tracer")]
pub mod cli;
pub mod elf;
pub mod error;
#[cfg(feature = "tracer")]
pub mod offline;
#[cfg(feature = "tracer")]
pub mod plan;
#[cfg(feature = "tracer")]
pub mod pprof;
pub mod process;
#[cfg(feature = "tracer")]
pub mod reach;
#[cfg(feature = "tracer")]
pub mod records;
#[cfg(feature = "tracer")]
pub mod report;
#[cfg(feature = "tracer")]
pub mod session;
#[cfg(feature = "tracer")]
pub mod setup_signals;
pub mod symbolize;
#[cfg(feature = "tracer")]
#[allow(unsafe_code)]
pub mod sys;
#[cfg(feature = "tracer")]
pub mod target;
#[cfg(test)]
mod test_support;
#[cfg(feature = "tracer")]
pub mod tracepoint_args;
#[cfg(feature = "tracer")]
pub mod tracepoints;
#[cfg(feature = "tracer")]
pub mod tracer;
#[cfg(feature = "tracer")]
pub mod unwind_tables;
