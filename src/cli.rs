//! Command-line flags: a lexopt loop fills a plain `Raw` struct, and one
//! validation step turns it into `Options`. Spellings, defaults and help text
//! follow BCC's memleak.py so existing muscle memory and scripts keep working.

use std::ffi::{OsStr, OsString};

use crate::error::{Error, Result};

/// How stacks are ranked in a report (`--sort`).
#[derive(Debug, Clone, PartialEq)]
pub enum SortKey {
    Size,
    Count,
}

/// How reports are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// BCC's text layout.
    Classic,
    /// One `root;...;leaf BYTES` line per stack, for flamegraph tools.
    Folded,
    /// One JSON object per report, one per line.
    Json,
}

/// How user stacks are walked (`--unwind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwind {
    /// Frame pointers, in BPF: cheapest, complete where code keeps them.
    FramePointer,
    /// A copy of the stack, unwound in userspace with .eh_frame CFI.
    Dwarf,
    /// Frame pointers, and a copy where they stop after a few frames.
    Auto,
    /// In BPF, from rows built in userspace from each object's CFI
    /// (default): complete without frame pointers, no copy. Kernel stacks
    /// are the kernel's own walk whatever the mode.
    Cfi,
}

/// Fast paths turned off with `--fallback` (to compare, to test the
/// slower path a kernel without the feature takes, or to work around a
/// problem). Each is on by default where the kernel supports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fallbacks {
    /// `entry`: probe each function at its first instruction, not at the
    /// first one the kernel can emulate.
    pub entry_sites: bool,
    /// `links`: one uprobe link per function, not uprobe_multi links.
    pub single_links: bool,
    /// `sums`: copy every allocation out at report time instead of summing
    /// per stack in the kernel.
    pub copy_report: bool,
    /// `tracepoints`: kernel mode through classic tracepoint programs, not
    /// raw tracepoints (tp_btf, raw_tp).
    pub tracepoints: bool,
}

impl Fallbacks {
    pub const NAMES: &'static str = "entry, links, sums or tracepoints";
}

/// What gets traced.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Existing processes (`-p PID` or `-p PID,PID,...`), without repeats.
    Pids(Vec<u32>),
    /// A program to start and trace (`-c`), already split into argv.
    Command(Vec<String>),
    /// Kernel allocators (neither `-p` nor `-c`).
    Kernel,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub target: Target,
    pub trace: bool,
    pub show_allocs: bool,
    pub older_ms: u64,
    pub combined_only: bool,
    pub wa_missing_free: bool,
    pub sample_rate: u64,
    /// --estimate: counts and bytes are multiplied by the sample rate.
    pub estimate: bool,
    pub top: usize,
    /// Inclusive lower bound on the allocation size.
    pub min_size: Option<u64>,
    /// Inclusive upper bound on the allocation size.
    pub max_size: Option<u64>,
    pub obj: Option<String>,
    pub sort: SortKey,
    pub format: Format,
    pub unwind: Unwind,
    pub fallbacks: Fallbacks,
    /// --raw: frames as build ID + file offset, for `memleak symbolize`.
    pub raw: bool,
    /// --symfs DIR: unstripped copies of the traced binaries to name frames.
    pub symfs: Option<String>,
    /// --pprof FILE: each report also replaces FILE with a pprof profile.
    pub pprof: Option<String>,
    pub percpu: bool,
    /// Outstanding allocations the BPF table can hold (None: default).
    pub max_allocs: Option<u32>,
    /// Distinct stacks the BPF stack map can hold (None: default).
    pub stack_storage_size: Option<u32>,
    pub verbose: bool,
    /// --unreachable: scan the process for blocks it cannot reach.
    pub unreachable: bool,
    /// --unreachable-only: show only stacks with unreachable blocks.
    pub unreachable_only: bool,
    /// --growth: each stack's change since the last report.
    pub growth: bool,
    /// --grew N: show only stacks that grew in each of the last N reports.
    pub grew: Option<u64>,
    pub interval_s: u64,
    /// `None` means report until interrupted.
    pub count: Option<u64>,
}

impl Default for Options {
    /// BCC's defaults: kernel mode, 500 ms age, top 10, every 5 s, forever.
    fn default() -> Self {
        Options {
            target: Target::Kernel,
            trace: false,
            show_allocs: false,
            older_ms: 500,
            combined_only: false,
            wa_missing_free: false,
            sample_rate: 1,
            estimate: false,
            top: 10,
            min_size: None,
            max_size: None,
            obj: None,
            sort: SortKey::Size,
            format: Format::Classic,
            unwind: Unwind::Cfi,
            fallbacks: Fallbacks::default(),
            raw: false,
            symfs: None,
            pprof: None,
            percpu: false,
            max_allocs: None,
            stack_storage_size: None,
            verbose: false,
            unreachable: false,
            unreachable_only: false,
            growth: false,
            grew: None,
            interval_s: 5,
            count: None,
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Parsed {
    Run(Options),
    Help,
    Version,
    /// `memleak symbolize [--symfs DIR] [REPORT | PROFILE]`: name the frames of a
    /// report made with --raw.
    Symbolize {
        symfs: Option<String>,
        report: Option<String>,
    },
}

/// The synopsis printed after an error. No trailing newline.
pub const SHORT_USAGE: &str = "\
usage: memleak [-h] [-p PID] [-t] [-a] [-o OLDER] [-c COMMAND]
               [--combined-only] [--wa-missing-free] [-s SAMPLE_RATE]
               [-T TOP] [-z MIN_SIZE] [-Z MAX_SIZE] [-O OBJ] [--sort SORT]
               [--percpu] [--max-allocs N] [--stack-storage-size N]
               [--folded | --json] [--unwind {fp,dwarf,auto,cfi}] [--raw]
               [--symfs DIR] [--fallback LIST] [--pprof FILE]
               [--unreachable | --unreachable-only] [--growth]
               [--grew N] [--estimate] [-v] [--version] [interval] [count]";

// Everything after the synopsis; argparse layout so it reads like BCC's.
const HELP_BODY: &str = r#"Trace outstanding memory allocations that weren't freed.
Supports both user-mode allocations made with libc functions and kernel-mode
allocations made with kmalloc/kmem_cache_alloc/get_free_pages and corresponding
memory release functions.

positional arguments:
  interval              interval in seconds to print outstanding allocations
  count                 number of times to print the report before exiting

optional arguments:
  -h, --help            show this help message and exit
  -p PID, --pid PID     the PID to trace; if not specified, trace kernel
                        allocs (several: PID,PID,...)
  -t, --trace           print trace messages for each alloc/free call
  -a, --show-allocs     show allocation addresses and sizes as well as call
                        stacks
  -o OLDER, --older OLDER
                        prune allocations younger than this age in
                        milliseconds
  -c COMMAND, --command COMMAND
                        execute and trace the specified command
  --combined-only       show combined allocation statistics only
  --wa-missing-free     Workaround to alleviate misjudgments when free is
                        missing
  -s SAMPLE_RATE, --sample-rate SAMPLE_RATE
                        sample every N-th allocation to decrease the overhead
                        (each one independently, with probability 1/N)
  --estimate            with -s N, print estimated totals (each sampled
                        allocation weighs N) instead of the sampled counts
  -T TOP, --top TOP     display only this many top allocating stacks (by size)
  -z MIN_SIZE, --min-size MIN_SIZE
                        capture only allocations of at least this size
  -Z MAX_SIZE, --max-size MAX_SIZE
                        capture only allocations of at most this size
  -O OBJ, --obj OBJ     attach to allocator functions in the specified object
  --sort SORT           report sorted in given key; available key list: size,
                        count
  --percpu              trace percpu allocations
  --max-allocs N        track at most N outstanding allocations (default
                        1000000; 262144 in kernel mode, 131072 before Linux
                        6.1, where the table is preallocated)
  --stack-storage-size N
                        store at most N distinct stacks (default 10240)
  --folded              print each report as folded stacks (root;...;leaf
                        BYTES), the input of flamegraph.pl and inferno
  --json                print each report as one JSON object per line
  --unwind {fp,dwarf,auto,cfi}
                        walk user stacks in BPF with tables built from
                        each object's CFI (cfi, default: complete without
                        frame pointers), by frame pointers only (fp:
                        cheapest, stops at code built without them), or
                        copy them and unwind with .eh_frame (dwarf), or
                        walk frame pointers and copy where they stop
                        short (auto)
  --raw                 print user frames as file, build ID and offset, for
                        `memleak symbolize --symfs DIR REPORT` to name on
                        a machine with unstripped copies of the binaries
  --symfs DIR           name frames from unstripped copies of the binaries
                        under DIR (same build ID), e.g. a sysroot
  --pprof FILE          at each report, also replace FILE (atomically) with
                        the outstanding allocations as a gzipped pprof
                        profile (inuse_objects, inuse_space), for go tool
                        pprof, Pyroscope or Parca; with --raw, unnamed
                        addresses for `memleak symbolize` to name
  --fallback LIST       turn off fast paths, comma-separated: entry (probe
                        functions at their first instruction), links (one
                        uprobe link per function), sums (copy every
                        allocation out for each report), tracepoints
                        (kernel mode through classic tracepoints, not raw
                        ones); -v says which paths a run uses
  --unreachable         at each report stop the process briefly, scan its
                        memory from its registers, stacks and globals, and
                        show how much of each stack is no longer reachable
                        (leaked, not just outstanding)
  --unreachable-only    the same, showing only stacks with unreachable blocks
  --growth              show each stack's change since the last report and
                        for how many reports in a row it grew
  --grew N              show only stacks that grew in each of the last N
                        reports (implies --growth)
  -v, --verbose         print debug messages to stderr
  --version             show program's version number and exit

EXAMPLES:

./memleak -p $(pidof allocs)
        Trace allocations and display a summary of "leaked" (outstanding)
        allocations every 5 seconds
./memleak -p $(pidof allocs) -t
        Trace allocations and display each individual allocator function call
./memleak -ap $(pidof allocs) 10
        Trace allocations and display allocated addresses, sizes, and stacks
        every 10 seconds for outstanding allocations
./memleak -c "./allocs"
        Run the specified command and trace its allocations
./memleak
        Trace allocations in kernel mode and display a summary of outstanding
        allocations every 5 seconds
./memleak -o 60000
        Trace allocations in kernel mode and display a summary of outstanding
        allocations that are at least one minute (60 seconds) old
./memleak -s 5
        Trace roughly every 5th allocation, to reduce overhead
./memleak --sort count
        Trace allocations in kernel mode and display a summary of outstanding
        allocations that are sorted in count order
./memleak -p $(pidof app) --unwind dwarf --folded 10 1 > leaks.folded
        One report after 10 seconds, with stacks unwound without frame
        pointers, as folded stacks for a flame graph
./memleak -p $(pidof app) --raw 10 1 > report.txt   (on the device)
./memleak symbolize --symfs ./sysroot report.txt    (on your machine)
        Name the frames of a stripped device from unstripped copies
./memleak -p $(pidof app) --pprof /var/lib/memleak/app.pb.gz 60
        Keep a pprof profile of the outstanding allocations, replaced every
        minute: go tool pprof -top -sample_index=inuse_space app.pb.gz
./memleak symbolize --symfs ./sysroot raw.pb.gz > named.pb.gz
        Name a profile written with --raw --pprof raw.pb.gz"#;

/// The full `-h` text. No trailing newline.
pub fn usage() -> String {
    format!("{SHORT_USAGE}\n\n{HELP_BODY}")
}

/// Flags as seen, before cross-flag checks.
#[derive(Default)]
struct Raw {
    pids: Option<Vec<u32>>,
    command: Option<Vec<String>>,
    trace: bool,
    show_allocs: bool,
    older_ms: Option<u64>,
    combined_only: bool,
    wa_missing_free: bool,
    sample_rate: Option<u64>,
    estimate: bool,
    top: Option<usize>,
    min_size: Option<u64>,
    max_size: Option<u64>,
    obj: Option<String>,
    sort: Option<SortKey>,
    percpu: bool,
    format: Option<Format>,
    unwind: Option<Unwind>,
    fallbacks: Fallbacks,
    raw: bool,
    symfs: Option<String>,
    pprof: Option<String>,
    max_allocs: Option<u32>,
    stack_storage_size: Option<u32>,
    verbose: bool,
    unreachable: bool,
    unreachable_only: bool,
    growth: bool,
    grew: Option<u64>,
    interval_s: Option<u64>,
    count: Option<u64>,
}

// What each numeric flag expects, shown after "invalid value 'x' for -f: ".
const WHOLE_AT_LEAST_1: &str = "expected a whole number of at least 1";
const PID: &str = "expected a process ID";
const PIDS: &str = "expected a process ID, or several separated by commas";
const AGE: &str = "expected an age in milliseconds";
const SIZE: &str = "expected a size in bytes";

/// Parses argv (without argv[0]). `Err` is one line, without a program-name
/// prefix or trailing newline.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Parsed> {
    use lexopt::Arg::{Long, Short, Value};

    let args: Vec<OsString> = args.into_iter().collect();
    if args.first().is_some_and(|a| a == "symbolize") {
        return parse_symbolize(args.into_iter().skip(1));
    }
    let mut p = lexopt::Parser::from_args(args);
    let mut raw = Raw::default();
    while let Some(arg) = p.next().map_err(lex_error)? {
        // The spelling the user typed, so errors point at what they wrote.
        let flag = match &arg {
            Short(c) => format!("-{c}"),
            Long(l) => format!("--{l}"),
            Value(_) => String::new(),
        };
        match arg {
            // Help and version win over anything else, as with argparse.
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("version") => return Ok(Parsed::Version),
            Short('p') | Long("pid") => {
                // pid_t is a signed int, so anything above i32::MAX is no PID.
                let v = value(&mut p)?;
                let list = text(&flag, &v)?;
                let expected = if list.contains(',') { PIDS } else { PID };
                let mut pids: Vec<u32> = Vec::new();
                for part in list.split(',') {
                    let n = number(&flag, OsStr::new(part), 1, i32::MAX as u64, expected)
                        .map_err(|_| invalid(&flag, &v, expected))?;
                    let pid = n as u32;
                    if !pids.contains(&pid) {
                        pids.push(pid);
                    }
                }
                raw.pids = Some(pids);
            }
            Short('t') | Long("trace") => raw.trace = true,
            Short('a') | Long("show-allocs") => raw.show_allocs = true,
            Short('o') | Long("older") => {
                // Capped so the caller's conversion to nanoseconds can't overflow.
                let max = u64::MAX / 1_000_000;
                raw.older_ms = Some(next_number(&mut p, &flag, 0, max, AGE)?);
            }
            Short('c') | Long("command") => {
                let v = value(&mut p)?;
                let words = text(&flag, &v)
                    .and_then(|s| split_words(s).map_err(|why| invalid(&flag, &v, why)))?;
                // An empty program name can only fail at exec time; say so now.
                if words.first().is_none_or(|w| w.is_empty()) {
                    return Err(invalid(&flag, &v, "expected a command"));
                }
                raw.command = Some(words);
            }
            Long("combined-only") => raw.combined_only = true,
            Long("wa-missing-free") => raw.wa_missing_free = true,
            Short('s') | Long("sample-rate") => {
                raw.sample_rate = Some(next_number(&mut p, &flag, 1, u64::MAX, WHOLE_AT_LEAST_1)?);
            }
            Long("estimate") => raw.estimate = true,
            Short('T') | Long("top") => {
                let n = next_number(&mut p, &flag, 1, usize::MAX as u64, WHOLE_AT_LEAST_1)?;
                raw.top = usize::try_from(n).ok();
            }
            Short('z') | Long("min-size") => {
                raw.min_size = Some(next_number(&mut p, &flag, 0, u64::MAX, SIZE)?);
            }
            Short('Z') | Long("max-size") => {
                raw.max_size = Some(next_number(&mut p, &flag, 0, u64::MAX, SIZE)?);
            }
            Short('O') | Long("obj") => {
                let v = value(&mut p)?;
                let s = text(&flag, &v)?;
                if s.is_empty() {
                    return Err(invalid(&flag, &v, "expected an object name or path"));
                }
                raw.obj = Some(s.to_owned());
            }
            Long("sort") => {
                let v = value(&mut p)?;
                raw.sort = Some(match v.to_str() {
                    Some("size") => SortKey::Size,
                    Some("count") => SortKey::Count,
                    _ => return Err(invalid(&flag, &v, "expected size or count")),
                });
            }
            Long("percpu") => raw.percpu = true,
            Long("unwind") => {
                let v = value(&mut p)?;
                raw.unwind = Some(match text(&flag, &v)? {
                    "fp" => Unwind::FramePointer,
                    "dwarf" => Unwind::Dwarf,
                    "auto" => Unwind::Auto,
                    "cfi" => Unwind::Cfi,
                    _ => return Err(invalid(&flag, &v, "expected fp, dwarf, auto or cfi")),
                });
            }
            Long("fallback") => {
                let v = value(&mut p)?;
                for name in text(&flag, &v)?.split(',') {
                    match name {
                        "entry" => raw.fallbacks.entry_sites = true,
                        "links" => raw.fallbacks.single_links = true,
                        "sums" => raw.fallbacks.copy_report = true,
                        "tracepoints" => raw.fallbacks.tracepoints = true,
                        _ => {
                            return Err(invalid(
                                &flag,
                                &v,
                                &format!("expected {} (comma-separated)", Fallbacks::NAMES),
                            ))
                        }
                    }
                }
            }
            Long("raw") => raw.raw = true,
            Long("unreachable") => raw.unreachable = true,
            Long("unreachable-only") => {
                raw.unreachable = true;
                raw.unreachable_only = true;
            }
            Long("growth") => raw.growth = true,
            Long("grew") => {
                raw.growth = true;
                raw.grew = Some(next_number(
                    &mut p,
                    &flag,
                    1,
                    u32::MAX as u64,
                    WHOLE_AT_LEAST_1,
                )?);
            }
            Long("symfs") => {
                let v = value(&mut p)?;
                raw.symfs = Some(text(&flag, &v)?.to_string());
            }
            Long("pprof") => {
                let v = value(&mut p)?;
                let path = text(&flag, &v)?;
                if path.is_empty() {
                    return Err(Error::usage("--pprof needs a file name"));
                }
                raw.pprof = Some(path.to_string());
            }
            Long("folded") | Long("json") => {
                let format = if flag == "--json" {
                    Format::Json
                } else {
                    Format::Folded
                };
                if raw.format.is_some_and(|f| f != format) {
                    return Err(Error::usage("--folded and --json cannot be used together"));
                }
                raw.format = Some(format);
            }
            // Map sizes: the kernel takes a u32; 1 is useless but legal.
            Long("max-allocs") => {
                raw.max_allocs =
                    Some(next_number(&mut p, &flag, 1, u32::MAX as u64, WHOLE_AT_LEAST_1)? as u32);
            }
            Long("stack-storage-size") => {
                raw.stack_storage_size =
                    Some(next_number(&mut p, &flag, 1, u32::MAX as u64, WHOLE_AT_LEAST_1)? as u32);
            }
            Short('v') | Long("verbose") => raw.verbose = true,
            // Capped at u32::MAX seconds (136 years) so `Instant + interval`
            // can't overflow in the caller.
            Value(v) if raw.interval_s.is_none() => {
                raw.interval_s = Some(number(
                    "interval",
                    &v,
                    1,
                    u32::MAX as u64,
                    "expected a number of seconds of at least 1",
                )?);
            }
            Value(v) if raw.count.is_none() => {
                raw.count = Some(number("count", &v, 1, u64::MAX, WHOLE_AT_LEAST_1)?);
            }
            Value(v) => return Err(Error::Usage(format!("unexpected argument '{}'", shown(&v)))),
            // lexopt reads "-1" as a short flag; explain the likely intent.
            Short(c) if c.is_ascii_digit() => {
                return Err(Error::Usage(format!(
                    "unknown option '-{c}' (interval and count can't be negative)"
                )));
            }
            other => return Err(lex_error(other.unexpected())),
        }
    }
    validate(raw).map(Parsed::Run)
}

/// `memleak symbolize [--symfs DIR] [REPORT]`.
fn parse_symbolize(args: impl Iterator<Item = OsString>) -> Result<Parsed> {
    use lexopt::Arg::{Long, Short, Value};
    let mut p = lexopt::Parser::from_args(args);
    let (mut symfs, mut report) = (None, None);
    while let Some(arg) = p.next().map_err(lex_error)? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("symfs") => {
                let v = value(&mut p)?;
                symfs = Some(text("--symfs", &v)?.to_string());
            }
            Value(v) if report.is_none() => report = Some(text("REPORT", &v)?.to_string()),
            other => return Err(lex_error(other.unexpected())),
        }
    }
    Ok(Parsed::Symbolize { symfs, report })
}

/// Cross-flag checks and defaults, done once after all flags are seen.
fn validate(raw: Raw) -> Result<Options> {
    if raw.trace && raw.format.is_some() {
        return Err(Error::usage(
            "-t writes text lines: it cannot be used with --folded or --json",
        ));
    }
    if raw.raw && raw.pids.is_none() && raw.command.is_none() {
        return Err(Error::usage(
            "--raw is for user stacks: use it with -p or -c",
        ));
    }
    if raw.raw && raw.format.is_some() {
        return Err(Error::usage(
            "--raw writes the classic layout for memleak symbolize: not with --folded or --json",
        ));
    }
    if let Some(mode @ (Unwind::Dwarf | Unwind::Auto | Unwind::Cfi)) = raw.unwind {
        let name = match mode {
            Unwind::Dwarf => "dwarf",
            Unwind::Auto => "auto",
            _ => "cfi",
        };
        if raw.pids.is_none() && raw.command.is_none() {
            return Err(Error::Usage(format!(
                "--unwind {name} walks user stacks: use it with -p or -c"
            )));
        }
        if raw.combined_only && mode != Unwind::Cfi {
            return Err(Error::Usage(format!("--unwind {name} cannot be used with --combined-only (stacks are unwound outside BPF)")));
        }
    }
    if raw.unreachable {
        let flag = if raw.unreachable_only {
            "--unreachable-only"
        } else {
            "--unreachable"
        };
        if raw.pids.is_none() && raw.command.is_none() {
            return Err(Error::Usage(format!(
                "{flag} scans a process's memory: use it with -p or -c, not in kernel mode"
            )));
        }
        if raw.combined_only {
            return Err(Error::Usage(format!(
                "{flag} needs each allocation's address: not with --combined-only"
            )));
        }
    }
    if raw.estimate && raw.sample_rate.is_none_or(|n| n < 2) {
        return Err(Error::usage(
            "--estimate scales sampled counts: use it with -s N (N > 1)",
        ));
    }
    let target = match (raw.pids, raw.command) {
        // BCC silently lets -c win; refusing is less surprising.
        (Some(_), Some(_)) => return Err(Error::usage("-p and -c cannot be used together")),
        // One stack id can mean different code in different processes.
        (Some(pids), None) if pids.len() > 1 && raw.combined_only => {
            return Err(Error::usage("--combined-only works with one process only"))
        }
        (Some(pids), None) => Target::Pids(pids),
        (None, Some(cmd)) => Target::Command(cmd),
        (None, None) => Target::Kernel,
    };
    if let (Some(min), Some(max)) = (raw.min_size, raw.max_size) {
        if min > max {
            return Err(Error::usage(
                "-z (min size) can't be greater than -Z (max size)",
            ));
        }
    }
    let d = Options::default();
    Ok(Options {
        target,
        trace: raw.trace,
        show_allocs: raw.show_allocs,
        older_ms: raw.older_ms.unwrap_or(d.older_ms),
        combined_only: raw.combined_only,
        wa_missing_free: raw.wa_missing_free,
        sample_rate: raw.sample_rate.unwrap_or(d.sample_rate),
        estimate: raw.estimate,
        top: raw.top.unwrap_or(d.top),
        min_size: raw.min_size,
        max_size: raw.max_size,
        obj: raw.obj,
        sort: raw.sort.unwrap_or(d.sort),
        percpu: raw.percpu,
        format: raw.format.unwrap_or(Format::Classic),
        unwind: raw.unwind.unwrap_or(d.unwind),
        fallbacks: raw.fallbacks,
        raw: raw.raw,
        symfs: raw.symfs,
        pprof: raw.pprof,
        max_allocs: raw.max_allocs,
        stack_storage_size: raw.stack_storage_size,
        verbose: raw.verbose,
        unreachable: raw.unreachable,
        unreachable_only: raw.unreachable_only,
        growth: raw.growth,
        grew: raw.grew,
        interval_s: raw.interval_s.unwrap_or(d.interval_s),
        count: raw.count,
    })
}

fn value(p: &mut lexopt::Parser) -> Result<OsString> {
    p.value().map_err(lex_error)
}

/// The flag's value as a number in `min..=max`.
fn next_number(
    p: &mut lexopt::Parser,
    flag: &str,
    min: u64,
    max: u64,
    expected: &str,
) -> Result<u64> {
    number(flag, &value(p)?, min, max, expected)
}

/// Plain decimal in `min..=max`. Stricter than `u64::from_str`, which would
/// take "+5"; a sign or anything else is more likely a typo than intent.
fn number(flag: &str, v: &OsStr, min: u64, max: u64, expected: &str) -> Result<u64> {
    v.to_str()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| invalid(flag, v, expected))
}

fn text<'a>(flag: &str, v: &'a OsStr) -> Result<&'a str> {
    v.to_str()
        .ok_or_else(|| invalid(flag, v, "expected UTF-8 text"))
}

fn invalid(flag: &str, v: &OsStr, expected: &str) -> Error {
    Error::Usage(format!(
        "invalid value '{}' for {flag}: {expected}",
        shown(v)
    ))
}

/// A value made safe for a one-line message: lossy UTF-8, control
/// characters escaped.
fn shown(v: &OsStr) -> String {
    v.to_string_lossy()
        .chars()
        .flat_map(|c| {
            let esc = c.is_control();
            c.escape_default()
                .filter(move |_| esc)
                .chain(Some(c).filter(|_| !esc))
        })
        .collect()
}

/// lexopt's own messages quote values with `{:?}`; reword them to match ours.
fn lex_error(e: lexopt::Error) -> Error {
    use lexopt::Error as E;
    Error::Usage(match e {
        E::MissingValue { option: Some(o) } => format!("missing value for {o}"),
        E::MissingValue { option: None } => "missing value".to_owned(),
        E::UnexpectedOption(o) => format!("unknown option '{o}'"),
        E::UnexpectedArgument(v) => format!("unexpected argument '{}'", shown(&v)),
        E::UnexpectedValue { option, value } => {
            format!("{option} doesn't take a value (got '{}')", shown(&value))
        }
        other => other.to_string(),
    })
}

/// Splits `-c`'s string the way a POSIX shell splits words, with no
/// expansion: BCC's `str.split()` can't pass an argument containing a space.
fn split_words(s: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    // Separate from `word.is_empty()` so that `''` yields an empty argument.
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        // Inside double quotes a backslash only escapes
                        // these; before anything else it stays literal.
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => word.push(e),
                            Some('\n') => {} // line continuation
                            Some(e) => {
                                word.push('\\');
                                word.push(e);
                            }
                            None => return Err("unterminated double quote"),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote"),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {} // line continuation, joins the halves
                Some(e) => {
                    in_word = true;
                    word.push(e);
                }
                // A trailing backslash has nothing to escape; keep it, as bash does.
                None => {
                    in_word = true;
                    word.push('\\');
                }
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses; a failure must be a usage error, given as its one line.
    fn run(args: &[&str]) -> Result<Parsed, String> {
        parse(args.iter().map(OsString::from)).map_err(usage_message)
    }

    fn usage_message(e: Error) -> String {
        match e {
            Error::Usage(msg) => msg,
            other => panic!("not a usage error: {other:?}"),
        }
    }

    type Getter<T> = fn(&Options) -> T;

    fn opts(args: &[&str]) -> Options {
        match run(args) {
            Ok(Parsed::Run(o)) => o,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    fn err(args: &[&str]) -> String {
        match run(args) {
            Err(e) => e,
            other => panic!("{args:?} should fail, gave {other:?}"),
        }
    }

    #[test]
    fn defaults_match_bcc() {
        let o = opts(&[]);
        assert_eq!(o, Options::default());
        assert_eq!(o.target, Target::Kernel);
        assert_eq!(o.older_ms, 500);
        assert_eq!(o.top, 10);
        assert_eq!(o.interval_s, 5);
        assert_eq!(o.sample_rate, 1);
        assert_eq!(o.count, None);
        assert_eq!(o.sort, SortKey::Size);
        assert_eq!((o.min_size, o.max_size, o.obj.clone()), (None, None, None));
        assert!(
            !(o.trace
                || o.show_allocs
                || o.combined_only
                || o.wa_missing_free
                || o.percpu
                || o.verbose)
        );
    }

    #[test]
    fn every_flag_short_and_long() {
        for (short, long) in [
            (&["-p", "42"][..], &["--pid", "42"][..]),
            (&["-p42"], &["--pid=42"]),
        ] {
            assert_eq!(opts(short).target, Target::Pids(vec![42]));
            assert_eq!(opts(long).target, Target::Pids(vec![42]));
        }
        let bools: [(&str, &str, Getter<bool>); 3] = [
            ("-t", "--trace", |o| o.trace),
            ("-a", "--show-allocs", |o| o.show_allocs),
            ("-v", "--verbose", |o| o.verbose),
        ];
        for (s, l, get) in bools {
            assert!(get(&opts(&[s])), "{s}");
            assert!(get(&opts(&[l])), "{l}");
        }
        assert!(opts(&["--combined-only"]).combined_only);
        assert!(opts(&["--wa-missing-free"]).wa_missing_free);
        assert!(opts(&["--percpu"]).percpu);

        let nums: [(&str, &str, Getter<u64>); 3] = [
            ("-o", "--older", |o| o.older_ms),
            ("-s", "--sample-rate", |o| o.sample_rate),
            ("-T", "--top", |o| o.top as u64),
        ];
        for (s, l, get) in nums {
            assert_eq!(get(&opts(&[s, "7"])), 7, "{s}");
            assert_eq!(get(&opts(&[l, "7"])), 7, "{l}");
            assert_eq!(get(&opts(&[&format!("{l}=8")])), 8, "{l}=");
            assert_eq!(get(&opts(&[&format!("{s}9")])), 9, "{s}N");
        }
        assert_eq!(opts(&["-z", "16"]).min_size, Some(16));
        assert_eq!(opts(&["--min-size", "16"]).min_size, Some(16));
        assert_eq!(opts(&["-Z", "32"]).max_size, Some(32));
        assert_eq!(
            opts(&["--pprof", "a.pb.gz"]).pprof.as_deref(),
            Some("a.pb.gz")
        );
        assert_eq!(opts(&["--pprof=b"]).pprof.as_deref(), Some("b"));
        assert!(run(&["--pprof", ""])
            .unwrap_err()
            .contains("needs a file name"));
        assert_eq!(opts(&["--max-size", "32"]).max_size, Some(32));
        assert_eq!(
            opts(&["-O", "libjemalloc.so.2"]).obj.as_deref(),
            Some("libjemalloc.so.2")
        );
        assert_eq!(
            opts(&["--obj", "/lib/libc.so.6"]).obj.as_deref(),
            Some("/lib/libc.so.6")
        );
        assert_eq!(opts(&["--sort", "count"]).sort, SortKey::Count);
        assert_eq!(opts(&["--sort=size"]).sort, SortKey::Size);
        let c = vec!["./allocs".to_owned(), "1".to_owned()];
        assert_eq!(
            opts(&["-c", "./allocs 1"]).target,
            Target::Command(c.clone())
        );
        assert_eq!(
            opts(&["--command", "./allocs 1"]).target,
            Target::Command(c.clone())
        );
        assert_eq!(opts(&["--command=./allocs 1"]).target, Target::Command(c));
    }

    #[test]
    fn combined_short_flags() {
        let o = opts(&["-ap", "123", "10"]);
        assert_eq!(
            (o.show_allocs, o.target, o.interval_s),
            (true, Target::Pids(vec![123]), 10)
        );
        let o = opts(&["-tav", "-p123"]);
        assert!(o.trace && o.show_allocs && o.verbose);
        assert_eq!(o.target, Target::Pids(vec![123]));
        let o = opts(&["-as10"]);
        assert_eq!((o.show_allocs, o.sample_rate), (true, 10));
        assert_eq!(opts(&["-p=5"]).target, Target::Pids(vec![5]));
    }

    #[test]
    fn estimate_needs_a_sample_rate() {
        let o = opts(&["-s", "10", "--estimate"]);
        assert!(o.estimate && o.sample_rate == 10);
        assert!(!opts(&["-s", "10"]).estimate);
        for args in [&["--estimate"][..], &["-s", "1", "--estimate"]] {
            assert_eq!(
                err(args),
                "--estimate scales sampled counts: use it with -s N (N > 1)"
            );
        }
    }

    #[test]
    fn positionals() {
        let o = opts(&["1", "10"]);
        assert_eq!((o.interval_s, o.count), (1, Some(10)));
        let o = opts(&["-p", "2614", "-s", "10", "5", "3"]);
        assert_eq!(
            (o.target, o.sample_rate, o.interval_s, o.count),
            (Target::Pids(vec![2614]), 10, 5, Some(3))
        );
        // Flags may follow positionals, as with argparse.
        let o = opts(&["2", "-a"]);
        assert_eq!((o.interval_s, o.show_allocs), (2, true));
        // After `--` everything is positional.
        assert_eq!(opts(&["--", "7"]).interval_s, 7);
        assert_eq!(err(&["1", "2", "3"]), "unexpected argument '3'");
    }

    #[test]
    fn bad_numbers() {
        assert_eq!(
            err(&["-p", "abc"]),
            "invalid value 'abc' for -p: expected a process ID"
        );
        assert_eq!(
            err(&["--pid", "0"]),
            "invalid value '0' for --pid: expected a process ID"
        );
        assert_eq!(
            err(&["-p", "-1"]),
            "invalid value '-1' for -p: expected a process ID"
        );
        assert_eq!(
            err(&["-p", "2147483648"]),
            "invalid value '2147483648' for -p: expected a process ID"
        );
        assert_eq!(
            opts(&["-p", "2147483647"]).target,
            Target::Pids(vec![2147483647])
        );
        assert!(err(&["-p", "+5"]).starts_with("invalid value '+5' for -p"));
        assert!(err(&["-p", " 5"]).starts_with("invalid value ' 5' for -p"));
        assert!(err(&["-p", "0x10"]).starts_with("invalid value '0x10' for -p"));
        assert!(err(&["-p", ""]).starts_with("invalid value '' for -p"));
        assert_eq!(
            opts(&["-p", "3,1,2,1"]).target,
            Target::Pids(vec![3, 1, 2]),
            "in order, once each"
        );
        for bad in ["1,,2", "1,", ",1", "1,x", "1, 2", "1,0"] {
            assert_eq!(
                err(&["-p", bad]),
                format!("invalid value '{bad}' for -p: expected a process ID, or several separated by commas")
            );
        }
        assert_eq!(
            err(&["-p", "1,2", "--combined-only"]),
            "--combined-only works with one process only"
        );
        assert_eq!(opts(&["--folded"]).format, Format::Folded);
        assert_eq!(opts(&["--json", "--json"]).format, Format::Json);
        assert_eq!(opts(&[]).format, Format::Classic);
        assert_eq!(
            err(&["--json", "--folded"]),
            "--folded and --json cannot be used together"
        );
        assert_eq!(
            err(&["-t", "--json"]),
            "-t writes text lines: it cannot be used with --folded or --json"
        );
        assert_eq!(opts(&["-p", "1"]).unwind, Unwind::Cfi);
        assert!(opts(&["-p", "1", "--raw"]).raw);
        assert!(err(&["--raw"]).contains("use it with -p or -c"));
        assert!(err(&["-p", "1", "--raw", "--json"]).contains("--raw"));
        let sym = |a: &[&str]| {
            run(&std::iter::once("symbolize")
                .chain(a.iter().copied())
                .collect::<Vec<_>>())
        };
        assert_eq!(
            sym(&["--symfs", "/d", "r.txt"]),
            Ok(Parsed::Symbolize {
                symfs: Some("/d".into()),
                report: Some("r.txt".into())
            })
        );
        assert_eq!(
            sym(&[]),
            Ok(Parsed::Symbolize {
                symfs: None,
                report: None
            })
        );
        assert!(sym(&["a", "b"]).is_err());
        assert!(sym(&["--bogus"]).is_err());
        assert_eq!(
            opts(&["-p", "1", "--unwind", "dwarf"]).unwind,
            Unwind::Dwarf
        );
        assert_eq!(
            opts(&["-p", "1", "--unwind=fp"]).unwind,
            Unwind::FramePointer
        );
        assert_eq!(opts(&["-c", "ls", "--unwind", "auto"]).unwind, Unwind::Auto);
        assert!(err(&["--unwind", "auto"]).contains("--unwind auto walks user stacks"));
        assert_eq!(
            err(&["-p", "1", "--unwind", "lbr"]),
            "invalid value 'lbr' for --unwind: expected fp, dwarf, auto or cfi"
        );
        assert!(err(&["--unwind", "dwarf"]).contains("use it with -p or -c"));
        assert_eq!(
            opts(&["--fallback", "sums,entry"]).fallbacks,
            Fallbacks {
                entry_sites: true,
                single_links: false,
                copy_report: true,
                tracepoints: false,
            }
        );
        assert_eq!(
            opts(&["--fallback=links"]).fallbacks,
            Fallbacks {
                single_links: true,
                ..Fallbacks::default()
            }
        );
        assert_eq!(
            opts(&["--fallback=tracepoints"]).fallbacks,
            Fallbacks {
                tracepoints: true,
                ..Fallbacks::default()
            }
        );
        assert_eq!(
            err(&["--fallback", "entry,fast"]),
            "invalid value 'entry,fast' for --fallback: expected entry, links, sums or tracepoints (comma-separated)"
        );
        assert!(
            err(&["-p", "1", "--unwind", "dwarf", "--combined-only"]).contains("--combined-only")
        );
        assert_eq!(
            opts(&["-p", "1,1", "--combined-only"]).target,
            Target::Pids(vec![1])
        );

        assert_eq!(
            err(&["-s", "0"]),
            "invalid value '0' for -s: expected a whole number of at least 1"
        );
        assert!(err(&["--sample-rate", "-3"]).starts_with("invalid value '-3' for --sample-rate"));
        assert_eq!(
            err(&["-T", "0"]),
            "invalid value '0' for -T: expected a whole number of at least 1"
        );
        assert!(err(&["--top", "ten"]).starts_with("invalid value 'ten' for --top"));

        assert_eq!(opts(&["-o", "0"]).older_ms, 0);
        assert!(err(&["-o", "-1"]).starts_with("invalid value '-1' for -o: expected an age"));
        assert!(err(&["-o", "18446744073709551615"]).starts_with("invalid value"));
        assert!(err(&["-o", "1.5"]).starts_with("invalid value '1.5' for -o"));

        assert_eq!(opts(&["-z", "0"]).min_size, Some(0));
        assert_eq!(
            opts(&["-Z", "18446744073709551615"]).max_size,
            Some(u64::MAX)
        );
        assert_eq!(
            err(&["-Z", "18446744073709551616"]),
            "invalid value '18446744073709551616' for -Z: expected a size in bytes"
        );
        assert!(err(&["-z", "-1"]).starts_with("invalid value '-1' for -z"));
        assert!(err(&["--min-size", "1k"]).starts_with("invalid value '1k' for --min-size"));

        assert_eq!(
            err(&["0"]),
            "invalid value '0' for interval: expected a number of seconds of at least 1"
        );
        assert!(err(&["x"]).starts_with("invalid value 'x' for interval"));
        assert!(err(&["4294967296"]).starts_with("invalid value '4294967296' for interval"));
        assert_eq!(
            err(&["1", "0"]),
            "invalid value '0' for count: expected a whole number of at least 1"
        );
        assert!(err(&["1", "99999999999999999999"])
            .starts_with("invalid value '99999999999999999999' for count"));
        assert!(err(&["-1"]).contains("can't be negative"));
        assert!(err(&["5", "-3"]).contains("can't be negative"));
    }

    #[test]
    fn missing_and_unknown() {
        assert_eq!(err(&["-p"]), "missing value for -p");
        assert_eq!(err(&["--older"]), "missing value for --older");
        assert_eq!(err(&["-x"]), "unknown option '-x'");
        assert_eq!(err(&["--frobnicate"]), "unknown option '--frobnicate'");
        assert_eq!(err(&["-aq"]), "unknown option '-q'");
        // Only the long spellings exist for these, as in BCC.
        assert_eq!(err(&["-C"]), "unknown option '-C'");
        assert_eq!(err(&["-P"]), "unknown option '-P'");
        assert_eq!(
            err(&["--trace=yes"]),
            "--trace doesn't take a value (got 'yes')"
        );
    }

    #[test]
    fn cross_flag_checks() {
        assert_eq!(
            err(&["-p", "1", "-c", "ls"]),
            "-p and -c cannot be used together"
        );
        assert_eq!(
            err(&["-z", "17", "-Z", "16"]),
            "-z (min size) can't be greater than -Z (max size)"
        );
        let o = opts(&["-z", "16", "-Z", "16"]);
        assert_eq!((o.min_size, o.max_size), (Some(16), Some(16)));
        // Later occurrences win, as with argparse.
        assert_eq!(opts(&["-p", "1", "-p", "2"]).target, Target::Pids(vec![2]));
    }

    #[test]
    fn sort_values() {
        assert_eq!(
            err(&["--sort", "foo"]),
            "invalid value 'foo' for --sort: expected size or count"
        );
        assert_eq!(
            err(&["--sort", "Size"]),
            "invalid value 'Size' for --sort: expected size or count"
        );
        assert_eq!(err(&["--sort"]), "missing value for --sort");
    }

    fn words(s: &str) -> Vec<String> {
        match split_words(s) {
            Ok(w) => w,
            Err(e) => panic!("{s:?}: {e}"),
        }
    }

    #[test]
    fn shell_splitting() {
        assert_eq!(
            words("./prog 'a b' c\"d\\\"e\""),
            ["./prog", "a b", "cd\"e"]
        );
        assert_eq!(words("  ls\t-l \n /tmp  "), ["ls", "-l", "/tmp"]);
        assert_eq!(words("a '' b"), ["a", "", "b"]);
        assert_eq!(
            words(r#"echo 'it''s' "x\y" \$HOME a\ b"#),
            ["echo", "its", "x\\y", "$HOME", "a b"]
        );
        assert_eq!(words(r#""\\ \$ \` \" \n""#), ["\\ $ ` \" \\n"]);
        assert_eq!(words("'\\\"'"), ["\\\""]);
        assert_eq!(words("ab\\\ncd \"e\\\nf\""), ["abcd", "ef"]);
        assert_eq!(
            words("echo $HOME *.c ; x|y"),
            ["echo", "$HOME", "*.c", ";", "x|y"]
        );
        assert_eq!(words("a\\"), ["a\\"]);
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(split_words("'abc"), Err("unterminated single quote"));
        assert_eq!(split_words("\"abc"), Err("unterminated double quote"));
        assert_eq!(split_words("\"abc\\"), Err("unterminated double quote"));
    }

    #[test]
    fn command_errors() {
        assert_eq!(
            err(&["-c", "./prog 'a b"]),
            "invalid value './prog 'a b' for -c: unterminated single quote"
        );
        assert_eq!(
            err(&["-c", "\"x"]),
            "invalid value '\"x' for -c: unterminated double quote"
        );
        assert_eq!(
            err(&["-c", ""]),
            "invalid value '' for -c: expected a command"
        );
        assert_eq!(
            err(&["-c", "  \t "]),
            "invalid value '  \\t ' for -c: expected a command"
        );
        assert_eq!(
            err(&["-c", "'' x"]),
            "invalid value ''' x' for -c: expected a command"
        );
        assert_eq!(err(&["-c"]), "missing value for -c");
        // A command that starts with a dash is still the value of -c.
        assert_eq!(
            opts(&["-c", "-x"]).target,
            Target::Command(vec!["-x".to_owned()])
        );
        assert_eq!(
            opts(&["-c", "./prog 'a b' c\"d\\\"e\""]).target,
            Target::Command(vec![
                "./prog".to_owned(),
                "a b".to_owned(),
                "cd\"e".to_owned()
            ])
        );
    }

    #[test]
    fn non_utf8_values() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b'a', 0xff]);
        for flag in ["-c", "-O", "-p"] {
            let e = match parse([OsString::from(flag), bad.clone()]) {
                Err(e) => usage_message(e),
                other => panic!("{other:?}"),
            };
            assert!(e.starts_with("invalid value 'a\u{fffd}' for "), "{e}");
        }
        assert_eq!(
            err(&["-O", ""]),
            "invalid value '' for -O: expected an object name or path"
        );
    }

    #[test]
    fn help_and_version() {
        assert_eq!(run(&["-h"]), Ok(Parsed::Help));
        assert_eq!(run(&["--help"]), Ok(Parsed::Help));
        assert_eq!(run(&["-ah"]), Ok(Parsed::Help));
        assert_eq!(run(&["-p", "1", "-c", "x", "--help"]), Ok(Parsed::Help));
        assert_eq!(run(&["--version"]), Ok(Parsed::Version));
        assert_eq!(
            run(&["-t", "--version", "1", "2", "3"]),
            Ok(Parsed::Version)
        );
        assert_eq!(err(&["-V"]), "unknown option '-V'");
    }

    #[test]
    fn reachability_and_growth_flags() {
        let o = opts(&["-p", "1", "--unreachable"]);
        assert!(o.unreachable && !o.unreachable_only && !o.growth);
        let o = opts(&["-c", "ls", "--unreachable-only", "--grew", "3"]);
        assert!(o.unreachable && o.unreachable_only && o.growth);
        assert_eq!(o.grew, Some(3));
        assert!(opts(&["--growth"]).growth);
        assert_eq!(
            err(&["--unreachable"]),
            "--unreachable scans a process's memory: use it with -p or -c, not in kernel mode"
        );
        assert_eq!(
            err(&["-p", "1", "--combined-only", "--unreachable-only"]),
            "--unreachable-only needs each allocation's address: not with --combined-only"
        );
        assert!(err(&["--grew", "0"]).contains("--grew"));
    }

    #[test]
    fn map_sizes() {
        let o = opts(&["--max-allocs", "5", "--stack-storage-size=64"]);
        assert_eq!((o.max_allocs, o.stack_storage_size), (Some(5), Some(64)));
        assert_eq!(opts(&[]).max_allocs, None);
        assert!(err(&["--max-allocs", "0"]).contains("--max-allocs"));
        assert!(err(&["--stack-storage-size", "4294967296"]).contains("--stack-storage-size"));
    }

    #[test]
    fn usage_text() {
        let u = usage();
        assert!(u.starts_with("usage: memleak [-h] [-p PID] [-t] [-a] [-o OLDER] [-c COMMAND]\n"));
        assert!(u.starts_with(SHORT_USAGE));
        assert_eq!(SHORT_USAGE.lines().count(), 8);
        assert!(!u.ends_with('\n') && !SHORT_USAGE.ends_with('\n'));
        for line in u.lines() {
            assert!(line.len() <= 80, "too wide: {line:?}");
        }
        for needle in [
            "-p PID, --pid PID",
            "-t, --trace",
            "-a, --show-allocs",
            "-o OLDER, --older OLDER",
            "-c COMMAND, --command COMMAND",
            "--combined-only",
            "--wa-missing-free",
            "-s SAMPLE_RATE, --sample-rate SAMPLE_RATE",
            "--estimate",
            "-T TOP, --top TOP",
            "-z MIN_SIZE, --min-size MIN_SIZE",
            "capture only allocations of at least this size",
            "-Z MAX_SIZE, --max-size MAX_SIZE",
            "capture only allocations of at most this size",
            "-O OBJ, --obj OBJ",
            "--sort SORT",
            "--percpu",
            "--max-allocs N",
            "--stack-storage-size N",
            "--folded",
            "--json",
            "--unwind {fp,dwarf,auto,cfi}",
            "--raw",
            "--symfs DIR",
            "--fallback LIST",
            "--pprof FILE",
            "-v, --verbose",
            "--version",
            "EXAMPLES:\n\n./memleak -p $(pidof allocs)\n",
            "./memleak -ap $(pidof allocs) 10",
            "./memleak -s 5\n        Trace roughly every 5th allocation, to reduce overhead",
        ] {
            assert!(u.contains(needle), "missing {needle:?}");
        }
        assert!(!u.contains("memleak.py"));
        // Every flag in the synopsis is one parse() accepts.
        for word in SHORT_USAGE
            .split(['[', ']', ' ', '\n'])
            .filter(|w| w.starts_with('-'))
        {
            let arg = match word {
                "--sort" => vec![word, "count"],
                "-c" => vec![word, "ls"],
                "-O" => vec![word, "c"],
                "--unwind" => vec!["-p", "1", word, "fp"],
                "--raw" => vec!["-p", "1", word],
                "--symfs" => vec![word, "/"],
                "--fallback" => vec![word, "entry,links,sums,tracepoints"],
                "--pprof" => vec![word, "leaks.pb.gz"],
                "--unreachable" | "--unreachable-only" => vec!["-p", "1", word],
                "--grew" => vec![word, "2"],
                "--estimate" => vec!["-s", "2", word],
                w if [
                    "-p",
                    "-o",
                    "-s",
                    "-T",
                    "-z",
                    "-Z",
                    "--max-allocs",
                    "--stack-storage-size",
                ]
                .contains(&w) =>
                {
                    vec![word, "1"]
                }
                _ => vec![word],
            };
            assert!(run(&arg).is_ok(), "{arg:?}");
        }
    }
}
