//! What this run attaches, decided before anything is loaded: which BPF
//! programs load and which the report counts, how kernel mode attaches
//! (tp_btf, raw_tp or classic tracepoints), map sizes, the configuration
//! BPF reads (its rodata), and where each function is probed.
//!
//! A plan is a plain value built from the options and the kernel's
//! features, probed once at start ([`Features`]); it holds no file
//! descriptor, so unit tests build plans without root. The tracer runs it.

use crate::allocator::{Allocator, Func};
pub use crate::bpf::programs::KernelPath;
use crate::bpf::programs::{self, Role};
use crate::bpf::{self, abi};
use crate::cli::{Options, Target, Unwind};
use crate::error::{Error, Result};
use crate::tracepoints;
use crate::tracer;

/// Facts about the running kernel (and run-time settings from the
/// environment), probed once at start; the plan branches on them, not on
/// errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Major and minor version, from uname.
    pub release: (u32, u32),
    pub page_size: u32,
    /// uprobe_multi links that filter by process (Linux 6.6+, probed, not
    /// guessed from the version). Only probed where it can matter: user
    /// mode without `--fallback links`.
    pub uprobe_multi: bool,
    /// memleak's PID namespace (device, inode) when it is not the initial
    /// one.
    pub pid_namespace: Option<(u64, u64)>,
    /// `make bench` only: attach programs that do nothing, to measure the
    /// cost of the probes themselves (MEMLEAK_BENCH_EMPTY_PROBES=1).
    pub empty_probes: bool,
}

impl Features {
    pub fn probe(opts: &Options) -> Features {
        let empty_probes = std::env::var_os("MEMLEAK_BENCH_EMPTY_PROBES").is_some();
        // The empty programs exist only as one-link-per-function programs.
        let uprobe_multi = !empty_probes
            && !matches!(opts.target, Target::Kernel)
            && !opts.fallbacks.single_links
            && probe_uprobe_multi();
        Features {
            release: tracer::kernel_release(),
            page_size: tracer::page_size(),
            uprobe_multi,
            pid_namespace: own_pid_namespace(),
            empty_probes,
        }
    }
}

fn probe_uprobe_multi() -> bool {
    let available = bpf::probe_uprobe_multi();
    if !available {
        crate::verbose!(
            "no uprobe_multi links that filter by process in this kernel: one link per function"
        );
    }
    available
}

/// memleak's PID namespace (device, inode) when it is not the initial one,
/// whose inode is fixed (PROC_PID_INIT_INO).
fn own_pid_namespace() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;
    let meta = std::fs::metadata("/proc/self/ns/pid").ok()?;
    (meta.ino() != PROC_PID_INIT_INO).then(|| (meta.dev(), meta.ino()))
}

/// What the tracer attaches to.
pub enum Attach<'a> {
    /// For each target process, uprobes on the functions of each of its
    /// objects: the allocator, and possibly the libc that provides the mmap
    /// family an allocator library (jemalloc, tcmalloc) does not define.
    User {
        targets: &'a [(u32, Vec<Allocator>)],
        /// Stop a target at exec until its new program is probed (-p;
        /// memleak -c holds its command with ptrace instead).
        hold_exec: bool,
    },
    /// The kmem (or percpu) tracepoints this kernel has.
    Kernel {
        events: &'a tracepoints::KernelEvents,
    },
}

impl KernelPath {
    /// Picks the path for `events`: raw tracepoints (each program with its
    /// own recursion guard, so a free in an interrupt is not lost to
    /// another program running on that CPU) unless turned off or their
    /// arguments are unknown.
    pub fn choose(
        opts: &Options,
        events: &tracepoints::KernelEvents,
        features: &Features,
    ) -> KernelPath {
        let path = Self::pick(opts, events);
        if path == KernelPath::Tracepoints && features.release < (6, 7) {
            // Raw tracepoints have no guard before 6.1 and count their misses since.
            crate::verbose!(
                "this kernel does not count the misses of classic tracepoint programs (6.7+): \
                 the lost: line cannot show them"
            );
        }
        path
    }

    fn pick(opts: &Options, events: &tracepoints::KernelEvents) -> KernelPath {
        if opts.fallbacks.tracepoints {
            crate::verbose!("kernel mode through classic tracepoints (--fallback tracepoints)");
            return KernelPath::Tracepoints;
        }
        match (&events.raw, events.source) {
            (Ok(_), tracepoints::LayoutSource::Btf) => {
                crate::verbose!("kernel mode through tp_btf raw tracepoints (arguments from BTF)");
                KernelPath::TpBtf
            }
            (Ok(_), tracepoints::LayoutSource::Format) => {
                crate::verbose!(
                    "kernel mode through raw_tp raw tracepoints (arguments from memleak's \
                     table, checked against tracefs)"
                );
                KernelPath::RawTp
            }
            (Err(e), _) => {
                crate::verbose!("kernel mode through classic tracepoints: {e}");
                KernelPath::Tracepoints
            }
        }
    }
}

/// Map sizes. Hash maps are not preallocated where the kernel allows it
/// safely (6.1+, which allocates map elements from BPF's own allocator):
/// older kernels warn about run-time allocation in tracing programs, so
/// there the outstanding-allocation table is preallocated and smaller.
pub struct Limits {
    pub max_allocs: u32,
    pub max_stacks: u32,
    pub preallocate: bool,
}

impl Limits {
    pub fn for_kernel(release: (u32, u32)) -> Limits {
        if release >= (6, 1) {
            Limits {
                max_allocs: 1_000_000,
                max_stacks: 10240,
                preallocate: false,
            }
        } else {
            Limits {
                max_allocs: 131_072,
                max_stacks: 10240,
                preallocate: true,
            }
        }
    }
}

/// Preallocated in kernel mode: about 100 bytes per entry of kernel memory.
const KERNEL_MAX_ALLOCS: u32 = 262_144;

/// The kernel sizes a hash table's buckets (16 bytes each, a power of two
/// of them) in 32 bits: more than 2^27 entries is refused with E2BIG.
const MAX_HASH_ENTRIES: u32 = 1 << 27;

fn check_table_sizes(max_allocs: u32, max_stacks: u32) -> Result<()> {
    if max_allocs > MAX_HASH_ENTRIES {
        return Err(Error::Other(format!(
            "--max-allocs {max_allocs} is too big for the allocation table: the kernel accepts at most {MAX_HASH_ENTRIES}"
        )));
    }
    // The per-stack totals take one entry more (allocations whose stack
    // was lost).
    if max_stacks > MAX_HASH_ENTRIES - 1 {
        return Err(Error::Other(format!(
            "--stack-storage-size {max_stacks} is too big for the stack table: the kernel accepts at most {}",
            MAX_HASH_ENTRIES - 1
        )));
    }
    Ok(())
}

/// Per-stack sums kept up to date by BPF make a report cost one read per
/// stack instead of one per outstanding allocation. They need final stack
/// ids (unwind sample ids are resolved in userspace), one process (the
/// sums are keyed by stack only) and no age filter (a sum cannot be split
/// by age, and keeping it would cost every traced call for nothing), and
/// no --unreachable (which needs every block's address anyway).
/// `--fallback sums` turns them off.
fn keep_stack_sums(opts: &Options, processes: usize) -> bool {
    opts.combined_only
        || (!opts.fallbacks.copy_report
            && !opts.unreachable
            && opts.older_ms == 0
            && matches!(opts.unwind, Unwind::FramePointer | Unwind::Cfi)
            && processes == 1)
}

/// --unwind cfi: the least room for rows in each half of the table (24
/// bytes a row), whatever the processes map at start: Debian's libc alone
/// has about 40,000, and a command is not executed yet when the table is
/// sized.
const CFI_MIN_ROWS: u32 = 1 << 17;

/// --unwind cfi: whose unwind rows are built at start, and whether the
/// command is stopped at its entry point to get its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfiPlan {
    /// A command is still memleak's own fork before its exec: none then.
    pub pids: Vec<u32>,
    /// -c: the `entry_stop` program loads.
    pub entry_stop: bool,
}

impl CfiPlan {
    /// Rows in each half of the table, given the rows built at start: room
    /// for libraries loaded later.
    pub fn half(initial_rows: usize) -> u32 {
        u32::try_from(initial_rows.saturating_mul(2))
            .unwrap_or(u32::MAX / 2)
            .clamp(CFI_MIN_ROWS, u32::MAX / 2)
    }
}

/// The sizes of the maps whose size depends on the run (`cfi_rows` is
/// sized by the tracer from [`CfiPlan::half`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSizes {
    pub allocs: u32,
    pub stacks: u32,
    /// One more than `stacks` when BPF keeps per-stack sums, else 1.
    pub combined: u32,
    /// `targets`, `notices` and `cfi_ranges`: one entry per process.
    pub processes: u32,
    /// Ring buffers, in bytes: a power-of-two number of pages.
    pub events: u32,
    pub samples: u32,
    /// `allocs`, `combined` and `stacks` allocate their entries as used.
    pub no_prealloc: bool,
}

/// Everything this run loads and attaches, decided up front.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What BPF reads (rodata).
    pub config: abi::Config,
    pub kernel: bool,
    /// Kernel mode only.
    pub kernel_path: KernelPath,
    /// Uprobes through uprobe_multi links (Linux 6.6+).
    pub multi: bool,
    /// `make bench` only: see [`Features::empty_probes`].
    pub empty_probes: bool,
    /// Every program of the object, and whether it loads.
    pub autoload: Vec<(&'static str, bool)>,
    /// The programs attached to the traced functions or events, whose
    /// recursion misses the `lost:` line counts.
    pub programs: Vec<&'static str>,
    /// Kernel mode: the programs that see frees (a miss is a false leak),
    /// and their rescues, by event (see [`rescue`]).
    pub free_programs: Vec<&'static str>,
    pub rescue_programs: Vec<(usize, &'static str)>,
    pub maps: MapSizes,
    pub cfi: Option<CfiPlan>,
    /// --unwind dwarf or auto: stack copies come through `samples`.
    pub dwarf: bool,
    pub combined_only: bool,
    /// `--fallback entry`: probe functions at their first instruction.
    pub entry_sites: bool,
}

impl Plan {
    pub fn new(opts: &Options, features: &Features, attach: &Attach<'_>) -> Result<Plan> {
        let limits = Limits::for_kernel(features.release);
        let kernel = matches!(attach, Attach::Kernel { .. });
        let kernel_path = match attach {
            Attach::Kernel { events } => KernelPath::choose(opts, events, features),
            Attach::User { .. } => KernelPath::Tracepoints,
        };
        let multi = !kernel && features.uprobe_multi;
        let config = config(opts, features, attach);
        let programs: Vec<&'static str> = match attach {
            Attach::User { .. } if multi => multi_programs(),
            Attach::User { .. } => user_programs(),
            Attach::Kernel { events } => traced_events(events)
                .map(|i| programs::kernel_event(i, kernel_path))
                .collect(),
        };
        let (free_programs, rescue_programs) = match attach {
            Attach::Kernel { events } => (
                traced_events(events)
                    .filter(|&i| tracepoints::EVENTS[i].size_fields.is_empty())
                    .map(|i| programs::kernel_event(i, kernel_path))
                    .collect(),
                traced_events(events)
                    .filter_map(|i| Some((i, rescue(i, kernel_path, features)?)))
                    .collect(),
            ),
            Attach::User { .. } => (Vec::new(), Vec::new()),
        };
        let max_allocs = match (opts.max_allocs, kernel) {
            (Some(n), _) => n,
            (None, true) => limits.max_allocs.min(KERNEL_MAX_ALLOCS),
            (None, false) => limits.max_allocs,
        };
        let max_stacks = opts.stack_storage_size.unwrap_or(limits.max_stacks);
        crate::verbose!(
            "room for {max_allocs} outstanding allocations and {max_stacks} stacks ({})",
            if kernel || limits.preallocate {
                "preallocated"
            } else {
                "allocated as used"
            }
        );
        check_table_sizes(max_allocs, max_stacks)?;
        let dwarf = matches!(opts.unwind, Unwind::Dwarf | Unwind::Auto) && !kernel;
        let command = matches!(opts.target, Target::Command(_));
        let cfi = match (opts.unwind, attach) {
            (Unwind::Cfi, Attach::User { targets, .. }) => Some(CfiPlan {
                pids: if command {
                    Vec::new()
                } else {
                    targets.iter().map(|(pid, _)| *pid).collect()
                },
                entry_stop: command,
            }),
            _ => None,
        };
        let page = features.page_size;
        let maps = MapSizes {
            allocs: max_allocs,
            stacks: max_stacks,
            // One more for the allocations whose stack was lost.
            combined: if config.combined != 0 {
                max_stacks.saturating_add(1)
            } else {
                1
            },
            processes: match attach {
                Attach::User { targets, .. } => targets.len().max(1) as u32,
                Attach::Kernel { .. } => 1,
            },
            // Keep a ring buffer at one page when nothing is streamed.
            events: if opts.trace { 1 << 20 } else { page },
            // Room for about 500 stack copies between two reads.
            samples: if dwarf { 8 << 20 } else { page },
            // The per-thread call map stays preallocated: it is small, and an
            // allocation failing under load would lose calls' entries.
            // Kernel mode traces the kernel's allocator, so BPF maps that
            // allocate on update would trace themselves (and trip the
            // recursion guard): there every map is preallocated.
            no_prealloc: !limits.preallocate && !kernel,
        };
        let autoload = autoload(&programs, &rescue_programs, kernel, cfi.as_ref());
        Ok(Plan {
            config,
            kernel,
            kernel_path,
            multi,
            empty_probes: features.empty_probes,
            autoload,
            programs,
            free_programs,
            rescue_programs,
            maps,
            cfi,
            dwarf,
            combined_only: opts.combined_only,
            entry_sites: opts.fallbacks.entry_sites,
        })
    }

    /// BPF keeps per-stack sums (the combined map).
    pub fn stack_sums(&self) -> bool {
        self.config.combined != 0
    }
}

/// The events of `events` this kernel has and this run traces, by index in
/// `tracepoints::EVENTS`.
fn traced_events(events: &tracepoints::KernelEvents) -> impl Iterator<Item = usize> + '_ {
    (0..events.events.len()).filter(|&i| events.events[i].is_some())
}

/// The configuration BPF reads.
fn config(opts: &Options, features: &Features, attach: &Attach<'_>) -> abi::Config {
    let mut cfg = abi::Config {
        min_size: opts.min_size.unwrap_or(0),
        max_size: opts.max_size.unwrap_or(u64::MAX),
        sample_every: opts.sample_rate.max(1),
        trace: opts.trace as u8,
        combined: keep_stack_sums(
            opts,
            match attach {
                Attach::User { targets, .. } => targets.len(),
                Attach::Kernel { .. } => 1,
            },
        ) as u8,
        unwind: match opts.unwind {
            Unwind::FramePointer => 0,
            Unwind::Dwarf => 1,
            Unwind::Auto => 2,
            Unwind::Cfi => 3,
        },
        page_size: features.page_size as u64,
        ..Default::default()
    };
    match attach {
        Attach::User { targets, hold_exec } => {
            cfg.hold_exec = *hold_exec as u8;
            match targets {
                [(pid, _)] => cfg.target_tgid = *pid,
                _ => cfg.many_targets = 1,
            }
            if let Some((dev, ino)) = features.pid_namespace {
                crate::verbose!("in PID namespace {ino}: matching PIDs as numbered there");
                (cfg.pidns_dev, cfg.pidns_ino) = (dev, ino);
            }
            // In user mode an address handed out again proves a missed free.
            cfg.drop_stale = 1;
        }
        Attach::Kernel { events } => {
            cfg.kernel = 1;
            cfg.drop_stale = opts.wa_missing_free as u8;
            for (i, event) in events.events.iter().enumerate() {
                if let Some((fields, _)) = event {
                    cfg.kernel_events[i] = *fields;
                }
            }
            if let Ok(raw) = &events.raw {
                for (i, args) in raw.iter().enumerate() {
                    cfg.raw_events[i] = args.unwrap_or_default();
                }
            }
        }
    }
    cfg
}

/// One entry program per function, and the shared return program.
pub fn user_programs() -> Vec<&'static str> {
    programs::names(|role| matches!(role, Role::Return | Role::Entry(_)))
}

/// With uprobe_multi: one program for all entries, one for all returns.
pub fn multi_programs() -> Vec<&'static str> {
    programs::names(|role| matches!(role, Role::MultiEntry | Role::MultiReturn))
}

/// The rescue program of kernel event `i` on `path`, where this path and
/// kernel have one: beside a free program on the same tracepoint, it does
/// the free program's work when the kernel skipped it because it was
/// already running on that CPU (raw tracepoints have a guard per program
/// from 6.1 on), and counts it in RESCUED_FREES.
fn rescue(i: usize, path: KernelPath, features: &Features) -> Option<&'static str> {
    // Before 6.1 raw tracepoint programs are never skipped.
    if features.release < (6, 1) {
        return None;
    }
    programs::kernel_rescue(i, path)
}

/// Whether each program of the object loads: only this run's.
fn autoload(
    programs: &[&'static str],
    rescue_programs: &[(usize, &'static str)],
    kernel: bool,
    cfi: Option<&CfiPlan>,
) -> Vec<(&'static str, bool)> {
    programs::PROGRAMS
        .iter()
        .map(|prog| {
            let load = match prog.role {
                Role::EmptyEntry | Role::EmptyReturn | Role::Exec | Role::Fork | Role::Dlclose => {
                    !kernel
                }
                Role::EntryStop => cfi.is_some_and(|c| c.entry_stop),
                _ => {
                    programs.contains(&prog.name)
                        || rescue_programs.iter().any(|&(_, r)| r == prog.name)
                }
            };
            (prog.name, load)
        })
        .collect()
}

/// The functions to probe and where: one probe per function (glibc's
/// aligned_alloc is memalign under another name; two probes would see
/// each call twice), past the entry where the kernel then emulates the
/// probed instruction instead of single-stepping it (unless
/// `--fallback entry`: `entry_sites`).
pub fn probe_sites(allocator: &Allocator, entry_sites: bool) -> Vec<(Func, u64)> {
    let mut sites: Vec<(Func, u64)> = Vec::new();
    for &(func, offset) in &allocator.offsets {
        if let Some((first, _)) = sites.iter().find(|(_, o)| *o == offset) {
            if *first != func {
                crate::verbose!(
                    "{} is an alias of {}; traced once",
                    func.name(),
                    first.name()
                );
            }
            continue;
        }
        sites.push((func, offset));
    }
    let moved: Vec<String> = sites
        .iter()
        .filter(|(_, entry)| allocator.site(*entry) != *entry)
        .map(|(func, entry)| format!("{}+{}", func.name(), allocator.site(*entry) - entry))
        .collect();
    if !moved.is_empty() {
        if entry_sites {
            crate::verbose!("probing every function at its entry (--fallback entry)");
        } else {
            crate::verbose!(
                "probed past the entry, at an instruction the kernel emulates: {}",
                moved.join(", ")
            );
            for (_, offset) in &mut sites {
                *offset = allocator.site(*offset);
            }
        }
    }
    sites
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Fallbacks;

    /// Kernel events by their index in `tracepoints::EVENTS`.
    const KMALLOC: usize = 0;
    const KFREE: usize = 4;
    const CACHE_FREE: usize = 5;
    const PAGE_FREE: usize = 7;
    const PERCPU_FREE: usize = 9;

    fn btf(event: usize) -> &'static str {
        programs::kernel_event(event, KernelPath::TpBtf)
    }

    fn rescue_of(event: usize) -> &'static str {
        programs::kernel_rescue(event, KernelPath::TpBtf).unwrap()
    }

    fn features(release: (u32, u32), uprobe_multi: bool) -> Features {
        Features {
            release,
            page_size: 4096,
            uprobe_multi,
            pid_namespace: None,
            empty_probes: false,
        }
    }

    fn allocator(offsets: &[(Func, u64)]) -> Allocator {
        Allocator {
            attach_path: "/usr/lib/libc.so.6".into(),
            display_path: "/usr/lib/libc.so.6".into(),
            reason: "test".into(),
            offsets: offsets.to_vec(),
            sites: Vec::new(),
        }
    }

    fn pids(opts: &Options) -> Options {
        Options {
            target: Target::Pids(vec![42]),
            ..opts.clone()
        }
    }

    fn user_plan(opts: &Options, features: &Features, pids: &[u32]) -> Result<Plan> {
        let targets: Vec<(u32, Vec<Allocator>)> = pids
            .iter()
            .map(|&pid| {
                (
                    pid,
                    vec![allocator(&[(Func::Malloc, 0x100), (Func::Free, 0x200)])],
                )
            })
            .collect();
        let attach = Attach::User {
            targets: &targets,
            hold_exec: true,
        };
        Plan::new(opts, features, &attach)
    }

    fn loads(plan: &Plan, prog: &str) -> bool {
        let found: Vec<bool> = plan
            .autoload
            .iter()
            .filter(|(p, _)| *p == prog)
            .map(|&(_, load)| load)
            .collect();
        assert_eq!(found.len(), 1, "{prog} is named once");
        found[0]
    }

    /// Every event of kmem (not percpu), as a kernel with BTF has them.
    fn kmem_events(source: tracepoints::LayoutSource, raw: bool) -> tracepoints::KernelEvents {
        let events: Vec<Option<(abi::EventFields, u64)>> = tracepoints::EVENTS
            .iter()
            .enumerate()
            .map(|(i, e)| (!e.percpu).then_some((abi::EventFields::default(), 100 + i as u64)))
            .collect();
        tracepoints::KernelEvents {
            source,
            raw: if raw {
                Ok(events
                    .iter()
                    .map(|e| e.map(|_| abi::RawEventArgs::default()))
                    .collect())
            } else {
                Err(Error::Other("no table for this kernel".into()))
            },
            events,
            missing: Vec::new(),
        }
    }

    #[test]
    fn one_process_with_uprobe_multi() {
        let opts = pids(&Options::default());
        let plan = user_plan(&opts, &features((6, 8), true), &[42]).unwrap();
        assert!(plan.multi && !plan.kernel);
        assert_eq!(plan.programs, multi_programs());
        assert!(
            loads(&plan, programs::name(Role::MultiEntry))
                && loads(&plan, programs::name(Role::Exec))
        );
        assert!(!loads(&plan, programs::entry(Func::Malloc)) && !loads(&plan, btf(KFREE)));
        assert!(!loads(&plan, programs::name(Role::EntryStop)));
        assert_eq!(plan.config.target_tgid, 42);
        assert_eq!(
            (
                plan.config.hold_exec,
                plan.config.drop_stale,
                plan.config.kernel
            ),
            (1, 1, 0)
        );
        // -o 500 (the default) cannot use per-stack sums.
        assert!(!plan.stack_sums());
        assert_eq!(
            plan.maps,
            MapSizes {
                allocs: 1_000_000,
                stacks: 10240,
                combined: 1,
                processes: 1,
                events: 4096,
                samples: 4096,
                no_prealloc: true,
            }
        );
    }

    #[test]
    fn one_link_per_function_without_uprobe_multi() {
        let opts = pids(&Options::default());
        let plan = user_plan(&opts, &features((6, 1), false), &[42]).unwrap();
        assert!(!plan.multi);
        assert_eq!(plan.programs, user_programs());
        assert!(
            loads(&plan, programs::entry(Func::Malloc))
                && !loads(&plan, programs::name(Role::MultiEntry))
        );
    }

    #[test]
    fn old_kernels_preallocate_a_smaller_table() {
        let opts = pids(&Options::default());
        let plan = user_plan(&opts, &features((5, 10), false), &[42]).unwrap();
        assert_eq!(plan.maps.allocs, 131_072);
        assert!(!plan.maps.no_prealloc);
    }

    #[test]
    fn stack_sums_need_one_process_and_no_age_filter() {
        let opts = Options {
            older_ms: 0,
            ..pids(&Options::default())
        };
        let f = features((6, 8), true);
        let one = user_plan(&opts, &f, &[42]).unwrap();
        assert!(one.stack_sums());
        assert_eq!(one.maps.combined, 10241);
        let two = user_plan(&opts, &f, &[42, 43]).unwrap();
        assert!(!two.stack_sums());
        assert_eq!(two.maps.combined, 1);
        assert_eq!((two.config.target_tgid, two.config.many_targets), (0, 1));
        assert_eq!(two.maps.processes, 2);
        let copy = Options {
            fallbacks: Fallbacks {
                copy_report: true,
                ..Fallbacks::default()
            },
            ..opts.clone()
        };
        assert!(!user_plan(&copy, &f, &[42]).unwrap().stack_sums());
        let dwarf = Options {
            unwind: Unwind::Dwarf,
            ..opts
        };
        let dwarf = user_plan(&dwarf, &f, &[42]).unwrap();
        assert!(!dwarf.stack_sums());
        assert_eq!(dwarf.maps.samples, 8 << 20);
        assert!(dwarf.dwarf);
    }

    #[test]
    fn tables_too_big_for_the_kernel_are_refused() {
        let opts = Options {
            max_allocs: Some((1 << 27) + 1),
            ..pids(&Options::default())
        };
        let err = user_plan(&opts, &features((6, 8), true), &[42])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--max-allocs 134217729 is too big"),
            "{err}"
        );
        let opts = Options {
            stack_storage_size: Some(1 << 27),
            ..pids(&Options::default())
        };
        let err = user_plan(&opts, &features((6, 8), true), &[42])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--stack-storage-size"), "{err}");
    }

    #[test]
    fn cfi_for_a_command_waits_for_its_entry_point() {
        let opts = Options {
            target: Target::Command(vec!["./leaker".into()]),
            unwind: Unwind::Cfi,
            ..Options::default()
        };
        let plan = user_plan(&opts, &features((6, 8), true), &[42]).unwrap();
        let cfi = plan.cfi.as_ref().unwrap();
        assert!(cfi.pids.is_empty() && cfi.entry_stop);
        assert!(loads(&plan, programs::name(Role::EntryStop)));
        let opts = Options {
            unwind: Unwind::Cfi,
            ..pids(&Options::default())
        };
        let plan = user_plan(&opts, &features((6, 8), true), &[42]).unwrap();
        assert_eq!(
            plan.cfi,
            Some(CfiPlan {
                pids: vec![42],
                entry_stop: false
            })
        );
        assert_eq!(CfiPlan::half(10), 1 << 17);
        assert_eq!(CfiPlan::half(1 << 20), 1 << 21);
        assert_eq!(CfiPlan::half(usize::MAX), u32::MAX / 2);
    }

    #[test]
    fn kernel_mode_takes_tp_btf_with_btf() {
        let events = kmem_events(tracepoints::LayoutSource::Btf, true);
        let attach = Attach::Kernel { events: &events };
        let plan = Plan::new(&Options::default(), &features((6, 8), false), &attach).unwrap();
        assert!(plan.kernel && !plan.multi);
        assert_eq!(plan.kernel_path, KernelPath::TpBtf);
        assert_eq!(plan.programs.len(), 8, "kmem events, not percpu ones");
        assert!(plan.programs.contains(&btf(KMALLOC)));
        assert_eq!(
            plan.free_programs,
            [btf(KFREE), btf(CACHE_FREE), btf(PAGE_FREE)]
        );
        let rescues: Vec<&str> = plan.rescue_programs.iter().map(|&(_, p)| p).collect();
        assert_eq!(
            rescues,
            [
                rescue_of(KFREE),
                rescue_of(CACHE_FREE),
                rescue_of(PAGE_FREE)
            ]
        );
        assert!(loads(&plan, rescue_of(KFREE)) && !loads(&plan, rescue_of(PERCPU_FREE)));
        assert!(
            !loads(&plan, programs::name(Role::Exec))
                && !loads(&plan, programs::entry(Func::Malloc))
        );
        assert_eq!(plan.config.kernel, 1);
        assert_eq!(plan.maps.allocs, 262_144);
        assert!(!plan.maps.no_prealloc, "kernel mode preallocates every map");
    }

    #[test]
    fn kernel_mode_paths() {
        let f = features((5, 15), false);
        let format = kmem_events(tracepoints::LayoutSource::Format, true);
        let plan = Plan::new(&Options::default(), &f, &Attach::Kernel { events: &format }).unwrap();
        assert_eq!(plan.kernel_path, KernelPath::RawTp);
        assert!(plan
            .programs
            .contains(&programs::kernel_event(KMALLOC, KernelPath::RawTp)));
        assert!(
            plan.rescue_programs.is_empty(),
            "raw tracepoints are never skipped before 6.1"
        );
        let unknown = kmem_events(tracepoints::LayoutSource::Format, false);
        let plan = Plan::new(
            &Options::default(),
            &f,
            &Attach::Kernel { events: &unknown },
        )
        .unwrap();
        assert_eq!(plan.kernel_path, KernelPath::Tracepoints);
        assert!(plan
            .programs
            .contains(&programs::kernel_event(KMALLOC, KernelPath::Tracepoints)));
        let forced = Options {
            fallbacks: Fallbacks {
                tracepoints: true,
                ..Fallbacks::default()
            },
            ..Options::default()
        };
        let btf = kmem_events(tracepoints::LayoutSource::Btf, true);
        let plan = Plan::new(&forced, &f, &Attach::Kernel { events: &btf }).unwrap();
        assert_eq!(plan.kernel_path, KernelPath::Tracepoints);
        assert!(plan.rescue_programs.is_empty());
    }

    #[test]
    fn aliases_are_probed_once_past_their_entry() {
        let mut a = allocator(&[
            (Func::Malloc, 0x100),
            (Func::Memalign, 0x300),
            (Func::AlignedAlloc, 0x300),
        ]);
        a.sites = vec![(0x100, 0x104)];
        assert_eq!(
            probe_sites(&a, false),
            [(Func::Malloc, 0x104), (Func::Memalign, 0x300)]
        );
        assert_eq!(
            probe_sites(&a, true),
            [(Func::Malloc, 0x100), (Func::Memalign, 0x300)]
        );
    }
}
