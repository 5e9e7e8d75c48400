//! One run of memleak: pick the target, start the tracer, then report every
//! interval until the count is reached, a signal arrives, or the target
//! exits. Output errors (a closed pipe) end the run; main decides how.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::allocator::{self, Func};
use crate::bpf::abi;
use crate::cli::{Format, Options, Target};
use crate::error::{Error, Result};
use crate::offline;
use crate::plan::{Attach, Features, Plan};
use crate::pprof;
use crate::reach;
use crate::records::{Allocation, Losses, StackTotal};
use crate::report::aggregate::{self, Aggregator, GrowthTracker, Selection, UnreachableByStack};
use crate::report::{self, PrintedStack, Shown};
use crate::symbolize::unwind;
use crate::symbolize::{KernelSymbolizer, ProcessSymbolizer};
use crate::sys;
use crate::target::{self, Child, ChildEvent};
use crate::tracepoints;
use crate::tracer::{EventCallback, Tracer};
use std::collections::HashMap;

/// Names for the addresses of a stack: each traced process's, or the
/// kernel's.
enum Symbolizer {
    Processes(Vec<(u32, ProcessSymbolizer)>),
    Kernel(KernelSymbolizer),
}

impl Symbolizer {
    fn refresh(&mut self) {
        if let Symbolizer::Processes(list) = self {
            for (_, p) in list {
                p.refresh();
            }
        }
    }

    /// Frames at the top of a stack that only show how it was taken.
    fn tracing_frames(&self, ips: &[u64]) -> usize {
        match self {
            Symbolizer::Kernel(k) => k.tracing_frames(ips),
            Symbolizer::Processes(_) => 0,
        }
    }

    fn process(&mut self, pid: u32) -> Option<&mut ProcessSymbolizer> {
        match self {
            Symbolizer::Processes(list) => list.iter_mut().find(|(p, _)| *p == pid).map(|(_, s)| s),
            Symbolizer::Kernel(_) => None,
        }
    }

    /// The frames of `ip` in a stack recorded in process `tgid` (0: the
    /// kernel, or unknown: --combined-only totals, kept for a single
    /// process): functions inlined there first, with source lines where
    /// debug info has them.
    fn frames(
        &mut self,
        tgid: u32,
        ip: u64,
        raw: bool,
        symfs: Option<&mut offline::Resolver>,
    ) -> Vec<Shown> {
        if raw || symfs.is_some() {
            let p = match self {
                Symbolizer::Processes(list) if list.len() == 1 => Some(&mut list[0].1),
                _ => self.process(tgid),
            };
            let place = p.and_then(|p| p.raw(ip));
            if raw {
                // Addresses outside any file (JIT code) stay addresses.
                return vec![match place {
                    Some((path, build_id, offset)) => Shown::Raw {
                        offset,
                        build_id,
                        path,
                    },
                    None => Shown::Address(ip),
                }];
            }
            let named = place.zip(symfs).and_then(|((path, id, offset), r)| {
                r.frames_from_symfs(offset, id.as_deref(), &path)
            });
            if let Some(frames) = named {
                return frames.into_iter().map(Shown::Frame).collect();
            }
        }
        let frames = match self {
            Symbolizer::Processes(list) if list.len() == 1 => list[0].1.symbolize_with_lines(ip),
            Symbolizer::Processes(_) => match self.process(tgid) {
                Some(p) => p.symbolize_with_lines(ip),
                None => return vec![Shown::Address(ip)],
            },
            // kptr_restrict hides kallsyms' addresses: show raw ones.
            Symbolizer::Kernel(k) if k.addresses_hidden() => return vec![Shown::Address(ip)],
            Symbolizer::Kernel(k) => vec![k.symbolize(ip)],
        };
        frames.into_iter().map(Shown::Frame).collect()
    }
}

impl Symbolizer {
    /// The mapping `ip` lies in, for --pprof: a line of the process's maps,
    /// or the kernel as a whole (`kernel`).
    fn mapped_file(
        &mut self,
        tgid: u32,
        ip: u64,
        kernel: Option<&pprof::MappedFile>,
    ) -> Option<pprof::MappedFile> {
        let p = match self {
            Symbolizer::Kernel(_) => return kernel.cloned(),
            Symbolizer::Processes(list) if list.len() == 1 => &mut list[0].1,
            _ => self.process(tgid)?,
        };
        let (entry, build_id) = p.mapped_file(ip)?;
        Some(pprof::MappedFile {
            start: entry.start,
            end: entry.end,
            offset: entry.offset,
            path: entry.path,
            build_id,
        })
    }
}

/// --pprof FILE: where each report's profile goes, and what every profile
/// of the run says.
struct PprofOutput {
    path: String,
    /// Tracing started: a profile's duration runs from here.
    since: Instant,
    /// The comment lines that stay the same all run (command line, kernel).
    comments: Vec<String>,
    /// Kernel mode: the kernel, as the one mapping of every frame.
    kernel: Option<pprof::MappedFile>,
}

impl PprofOutput {
    fn new(path: &str, symbolizer: &Symbolizer, traced: &[Traced]) -> PprofOutput {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into())
        };
        let args: Vec<String> = std::env::args().collect();
        let mut comments = vec![
            args.join(" "),
            format!("kernel: Linux {} {}", read("osrelease"), read("version")),
        ];
        let kernel = match symbolizer {
            Symbolizer::Kernel(k) => {
                comments.push("target: the kernel".into());
                let (start, end) = k
                    .text_range()
                    .map_or((0, u64::MAX), |(lo, hi)| (lo, hi.saturating_add(1)));
                Some(pprof::MappedFile {
                    start,
                    end,
                    offset: 0,
                    path: "[kernel.kallsyms]".into(),
                    build_id: pprof::kernel_build_id(),
                })
            }
            Symbolizer::Processes(_) => {
                let pids: Vec<String> = traced.iter().map(|t| t.pid.to_string()).collect();
                comments.push(format!("target: pid {}", pids.join(", ")));
                None
            }
        };
        PprofOutput {
            path: path.to_string(),
            since: Instant::now(),
            comments,
            kernel,
        }
    }
}

/// One traced process and what is known of it.
struct Traced {
    pid: u32,
    /// The files whose functions have probes for it.
    objects: Vec<allocator::Allocator>,
    /// Where it is held while a library it unloads is still mapped.
    dlclose: Option<allocator::DlcloseSite>,
    /// Becomes readable when it exits (None for -c's child, whose exit
    /// comes as SIGCHLD).
    pidfd: Option<OwnedFd>,
    watch: Watch,
    exited: bool,
}

/// How a run ended, for main's exit code.
pub enum Outcome {
    /// Count reached or interrupted: exit 0.
    Done,
    /// The traced command ended: exit with its status.
    ChildExited(target::ExitStatus),
    /// The traced process went away: a final report, then this error.
    TargetExited(u32),
}

/// Needs root, or CAP_BPF + CAP_PERFMON (Linux 5.8+), or CAP_SYS_ADMIN.
pub fn check_privileges() -> Result<()> {
    if sys::geteuid() == 0 {
        return Ok(());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_PERFMON: u64 = 38;
    const CAP_BPF: u64 = 39;
    let has = |cap: u64| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(Error::Privilege("permission denied: loading BPF programs needs root, or CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8)".into()))
}

/// Signals are read from a signalfd so that the poll loop sees them as
/// file descriptors, with no handler racing the main loop.
fn block_signals() -> Result<OwnedFd> {
    let signals = [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD, libc::SIGHUP];
    sys::block_signals(&signals).map_err(|e| Error::Other(format!("cannot block signals: {e}")))?;
    sys::signalfd(&signals, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
        .map_err(|e| Error::Other(format!("cannot create a signalfd: {e}")))
}

/// Drains the signalfd; returns the signals that arrived, each with its
/// si_code (SI_KERNEL: from the terminal; SI_USER: kill(2) by a process).
fn read_signals(fd: &OwnedFd) -> Vec<(i32, i32)> {
    std::iter::from_fn(|| sys::read_signal(fd.as_fd()))
        .map(|info| (info.signo, info.code))
        .collect()
}

fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC is the clock of bpf_ktime_get_ns, which stamps
    // allocations.
    sys::clock_ns(libc::CLOCK_MONOTONIC)
}

fn func_name(func: u32) -> &'static str {
    // Past the user allocator functions: a kernel event (F_KERNEL).
    allocator::Func::ALL
        .get(func as usize)
        .map(|f| f.name())
        .unwrap_or("kernel")
}

/// One -t line per traced call.
fn format_event(e: &abi::Event) -> String {
    let comm_len = e.comm.iter().position(|&b| b == 0).unwrap_or(e.comm.len());
    let comm = String::from_utf8_lossy(&e.comm[..comm_len]);
    let head = format!(
        "{:.6} {} {}/{} {}:",
        e.timestamp_ns as f64 / 1e9,
        comm,
        e.pid,
        e.tid,
        func_name(e.func)
    );
    match e.kind {
        abi::EV_ALLOC_ENTER => format!("{head} alloc entered, size = {}", e.size),
        abi::EV_ALLOC_EXIT => format!(
            "{head} alloc exited, size = {}, result = {:x}",
            e.size, e.addr
        ),
        abi::EV_FREE_ENTER => format!(
            "{head} free entered, address = {:x}, size = {}",
            e.addr, e.size
        ),
        kind => format!("{head} unknown event {kind}"),
    }
}

pub fn run(opts: &Options) -> Result<Outcome> {
    let resolved = resolve_obj(opts);
    let opts = resolved.as_ref().unwrap_or(opts);
    check_paths(opts)?;
    check_privileges()?;
    let signals = block_signals()?;
    let (traced, mut child) = find_targets(opts)?;
    // Declared before the tracer, so dropped after it: see sys::Guardian.
    let _guardian = guard(&traced);
    // Setup can take seconds (tables of 100 million entries): a signal
    // ends it at once.
    let setup = crate::setup_signals::SetupSignals::watch(child.as_ref().map(|c| c.pid))?;
    let (on_event, trace_error) = trace_printer(opts);
    let mut tracer = start_tracer(opts, &traced, &mut child, on_event)?;
    announce(opts, &mut tracer, &traced, setup)?;
    if let Some(c) = &mut child {
        release_command(opts, c, &mut tracer)?;
    }
    let reports = Reports::new(opts, &traced)?;
    let mut session = Session {
        opts,
        signals,
        tracer,
        reports,
        traced,
        child,
        trace_error,
        interval: Duration::from_secs(opts.interval_s),
        next_report: Instant::now() + Duration::from_secs(opts.interval_s),
        // The first look comes soon: a command has only just been executed,
        // and its loader maps the libraries after exec returns to us.
        next_refresh: Instant::now() + Duration::from_millis(20),
        reports_made: 0,
    };
    let outcome = session.run()?;
    if let Some(c) = &mut session.child {
        settle_child(c, &mut session.tracer);
        c.abandon();
    }
    Ok(outcome)
}

/// A guardian that continues the traced processes should memleak die
/// while one is held (see sys::Guardian): -p's targets, and -c's command,
/// which runs on its own once released. Kernel mode holds nothing.
/// Without one (fork failed) tracing goes on, as it always could.
fn guard(traced: &[Traced]) -> Option<sys::Guardian> {
    if traced.is_empty() {
        return None;
    }
    let pids: Vec<u32> = traced.iter().map(|t| t.pid).collect();
    sys::Guardian::spawn(&pids)
        .inspect_err(|e| crate::verbose!("no guardian for the traced processes: {e}"))
        .ok()
}

/// -O NAME: a file of that name in the current directory is meant first,
/// as the user can see it there; other names are matched against what the
/// target loads. None: the options stand as given.
fn resolve_obj(opts: &Options) -> Option<Options> {
    match opts.obj.as_deref() {
        Some(obj) if !obj.contains('/') && std::path::Path::new(obj).is_file() => Some(Options {
            obj: Some(format!("./{obj}")),
            ..opts.clone()
        }),
        _ => None,
    }
}

/// The directories --symfs and --pprof name exist: said now, not after
/// the first interval.
fn check_paths(opts: &Options) -> Result<()> {
    if let Some(dir) = &opts.symfs {
        if !std::path::Path::new(dir).is_dir() {
            return Err(Error::Other(format!("--symfs {dir}: not a directory")));
        }
    }
    if let Some(file) = &opts.pprof {
        let path = std::path::Path::new(file);
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        if path.is_dir() {
            return Err(Error::Other(format!(
                "--pprof {file}: a directory, not a file"
            )));
        }
        if !dir.is_dir() {
            return Err(Error::Other(format!(
                "--pprof {file}: no directory {}",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// The targets: existing processes, a command held before exec (with its
/// `Child`), or the kernel (none).
fn find_targets(opts: &Options) -> Result<(Vec<Traced>, Option<Child>)> {
    match &opts.target {
        Target::Pids(pids) => Ok((traced_processes(opts, pids)?, None)),
        Target::Command(argv) => {
            let (traced, child) = held_command(opts, argv)?;
            Ok((vec![traced], Some(child)))
        }
        Target::Kernel => Ok((Vec::new(), None)),
    }
}

/// -p: each process once, whichever of its threads was named.
fn traced_processes(opts: &Options, pids: &[u32]) -> Result<Vec<Traced>> {
    let mut traced: Vec<Traced> = Vec::new();
    let mut seen = Vec::new();
    for &given in pids {
        target::check_pid(given)?;
        let pid = target::process_of(given);
        if pid != given {
            eprintln!("memleak: {given} is a thread of process {pid}; tracing the process");
        }
        if seen.contains(&pid) {
            continue;
        }
        seen.push(pid);
        if opts.unreachable {
            // A debugger holds it: it cannot be stopped for scans.
            reach::check_not_traced(pid)?;
        }
        let allocator = allocator::for_process(pid, opts.obj.as_deref())?;
        let objects = traced_objects(
            allocator,
            || allocator::for_process(pid, Some("c")),
            Some(exe_paths(pid)),
        );
        traced.push(Traced {
            pid,
            objects,
            dlclose: dlclose_site(pid, allocator::for_process(pid, Some("c"))),
            pidfd: target::pidfd_open(pid),
            watch: Watch::default(),
            exited: false,
        });
    }
    Ok(traced)
}

/// -c: the command, started and held before its exec.
fn held_command(opts: &Options, argv: &[String]) -> Result<(Traced, Child)> {
    let program = argv.first().ok_or_else(|| Error::target("empty command"))?;
    let path = target::resolve_command(program)?;
    // A script runs its #! interpreter: that program is probed
    // first, and whatever the script executes is held and probed
    // in turn.
    let image = target::interpreter_of(&path)?;
    let allocator = allocator::for_executable(&image, opts.obj.as_deref())?;
    let started = Child::spawn_held(&path, argv)?;
    let pid = started.pid;
    let objects = traced_objects(
        allocator,
        || allocator::for_executable(&image, Some("c")),
        Some((image.clone(), image.clone())),
    );
    // -c's own exec of the command is expected; any later one is news.
    let watch = Watch {
        execs_seen: 1,
        ..Watch::default()
    };
    let traced = Traced {
        pid,
        objects,
        dlclose: dlclose_site(pid, allocator::for_executable(&image, Some("c"))),
        pidfd: None,
        watch,
        exited: false,
    };
    Ok((traced, started))
}

/// -t: the first error writing a trace line, kept for the loop to end the
/// run with.
type TraceError = std::rc::Rc<std::cell::RefCell<Option<io::Error>>>;

/// -t: what prints each traced call on stdout.
fn trace_printer(opts: &Options) -> (Option<EventCallback>, TraceError) {
    let output_error = TraceError::default();
    let on_event: Option<EventCallback> = if opts.trace {
        let output_error = output_error.clone();
        Some(Box::new(move |e: &abi::Event| {
            let mut out = io::stdout().lock();
            if let Err(err) = writeln!(out, "{}", format_event(e)) {
                output_error.borrow_mut().get_or_insert(err);
            }
        }))
    } else {
        None
    };
    (on_event, output_error)
}

/// Kernel mode's events, as this kernel has them.
fn kernel_events(opts: &Options) -> Result<tracepoints::KernelEvents> {
    let tracefs = tracepoints::tracefs(|note| crate::verbose!("{note}"))?;
    // MEMLEAK_NO_BTF=1 takes the path of kernels without BTF.
    let force_format = std::env::var_os("MEMLEAK_NO_BTF").is_some();
    tracepoints::discover(&tracefs, opts.percpu, force_format)
}

/// Plans the run and starts the tracer on `traced` (none: the kernel). A
/// command whose probes cannot be attached never runs.
fn start_tracer(
    opts: &Options,
    traced: &[Traced],
    child: &mut Option<Child>,
    on_event: Option<EventCallback>,
) -> Result<Tracer> {
    let kernel_events = match traced.is_empty() {
        false => None,
        true => Some(kernel_events(opts)?),
    };
    let targets: Vec<(u32, Vec<allocator::Allocator>)> =
        traced.iter().map(|t| (t.pid, t.objects.clone())).collect();
    let attach = match &kernel_events {
        Some(events) => Attach::Kernel { events },
        None => Attach::User {
            targets: &targets,
            hold_exec: matches!(opts.target, Target::Pids(_)),
        },
    };
    let features = Features::probe(opts);
    let started =
        Plan::new(opts, &features, &attach).and_then(|plan| Tracer::start(plan, attach, on_event));
    match started {
        Ok(t) => Ok(t),
        Err(e) => {
            if let Some(c) = child {
                c.abandon();
            }
            Err(e)
        }
    }
}

/// Setup is done: says how reports are made (-v), holds each target at
/// dlclose, ends setup, and prints the line that says tracing began.
fn announce(
    opts: &Options,
    tracer: &mut Tracer,
    traced: &[Traced],
    setup: crate::setup_signals::SetupSignals,
) -> Result<()> {
    if !opts.combined_only {
        crate::verbose!(
            "reports {}",
            match (tracer.keeps_stack_sums(), opts.older_ms) {
                (true, _) => "read the per-stack sums BPF keeps",
                (false, 0) => "copy every allocation out",
                (false, _) => "copy every allocation out, to filter by age (-o 0 reads per-stack sums instead)",
            }
        );
    }
    for t in traced {
        hold_at_dlclose(tracer, t.pid, t.dlclose.as_ref());
    }
    // Setup is over before the line that says so: a signal sent once it
    // is seen gets the final report.
    setup.finish();
    let attaching = match traced {
        [] => "Attaching to kernel allocators, Ctrl+C to quit.".to_string(),
        [one] => format!("Attaching to pid {}, Ctrl+C to quit.", one.pid),
        many => {
            let pids: Vec<String> = many.iter().map(|t| t.pid.to_string()).collect();
            format!("Attaching to pids {}, Ctrl+C to quit.", pids.join(", "))
        }
    };
    // Folded stacks and JSON keep stdout for the data.
    match opts.format {
        Format::Classic => {
            writeln!(io::stdout().lock(), "{attaching}").map_err(Error::report_output)?
        }
        Format::Folded | Format::Json => eprintln!("memleak: {attaching}"),
    }
    Ok(())
}

/// -c: lets the command run, now that its probes are attached.
fn release_command(opts: &Options, c: &mut Child, tracer: &mut Tracer) -> Result<()> {
    let entry_stop = match &opts.target {
        Target::Command(argv) => argv
            .first()
            .and_then(|p| target::resolve_command(p).ok())
            .is_some_and(|path| tracer.attach_entry_stop(c.pid, &path)),
        _ => false,
    };
    if let Err(e) = c.release(&opts_command_name(opts)) {
        c.poll();
        return Err(e);
    }
    // --unwind cfi: the libraries its loader mapped get their rows
    // before main runs.
    if entry_stop {
        let stopped = c.wait_for_stop(Duration::from_secs(10));
        let loaded = tracer.refresh_unwind_rows(&[c.pid]);
        if stopped {
            c.continue_from_stop();
        }
        tracer.drop_entry_stop();
        loaded?;
    }
    Ok(())
}

/// How often the targets' memory maps are re-read, so that a report made
/// after a target exited can still be symbolized.
const MAPS_REFRESH: Duration = Duration::from_millis(500);

/// A run once tracing began: the loop that reports every interval until
/// the count is reached, a signal arrives, or the targets exit.
struct Session<'a> {
    opts: &'a Options,
    signals: OwnedFd,
    /// Dropped (detached) before `child` is let go.
    tracer: Tracer,
    reports: Reports,
    traced: Vec<Traced>,
    child: Option<Child>,
    trace_error: TraceError,
    interval: Duration,
    next_report: Instant,
    next_refresh: Instant,
    reports_made: u64,
}

impl Session<'_> {
    fn run(&mut self) -> Result<Outcome> {
        loop {
            let pidfds = self.wait();
            self.tracer.consume_events();
            if let Some(e) = self.trace_error.borrow_mut().take() {
                return Err(Error::report_output(e));
            }
            // Stack copies are unwound while the process and its maps are there.
            self.reports
                .unwound
                .drain(&mut self.tracer, &mut self.reports.symbolizer);
            self.serve_holds()?;
            let stop = self.handle_signals()?;
            let refresh_due = Instant::now() >= self.next_refresh;
            let all_gone = self.note_exits(&pidfds, refresh_due);
            let stop = stop.or(all_gone);
            if refresh_due {
                if stop.is_none() {
                    self.check_targets()?;
                }
                self.reports.symbolizer.refresh();
                let alive: Vec<u32> = self
                    .traced
                    .iter()
                    .filter(|t| !t.exited)
                    .map(|t| t.pid)
                    .collect();
                self.tracer.refresh_unwind_rows(&alive)?;
                self.next_refresh = Instant::now() + MAPS_REFRESH;
            }
            if let Some(Outcome::Done) = &stop {
                self.check_targets()?;
                self.reports.symbolizer.refresh();
            }
            if let Some(outcome) = stop {
                self.final_report(&outcome)?;
                return Ok(outcome);
            }
            if Instant::now() >= self.next_report && self.interval_report()? {
                return Ok(Outcome::Done);
            }
        }
    }

    /// Waits for a signal, a ring buffer, a process's exit, or the next
    /// report or look at the maps; returns the pidfds of the processes not
    /// known to have exited, with what poll said of them.
    fn wait(&self) -> Vec<libc::pollfd> {
        let now = Instant::now();
        let wake = self.next_report.min(self.next_refresh);
        // Rounded up: a zero timeout before the deadline would spin.
        let timeout_ms = wake
            .saturating_duration_since(now)
            .as_micros()
            .div_ceil(1000)
            .min(i32::MAX as u128) as i32;
        let mut fds = vec![libc::pollfd {
            fd: self.signals.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let tracer = &self.tracer;
        for fd in [tracer.ring_fd(), tracer.samples_fd(), tracer.held_fd()]
            .into_iter()
            .flatten()
        {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let first_pidfd = fds.len();
        for t in self.traced.iter().filter(|t| !t.exited) {
            if let Some(fd) = &t.pidfd {
                fds.push(libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        let _ = sys::poll(&mut fds, timeout_ms);
        fds.split_off(first_pidfd)
    }

    /// A target stopped at exec (-p) waits for its new program's probes;
    /// one stopped at dlclose, for its maps to be read while the library
    /// is still there (its symbols too: the file may be gone by the
    /// report).
    fn serve_holds(&mut self) -> Result<()> {
        self.tracer.consume_held();
        for t in self.traced.iter_mut().filter(|t| !t.exited) {
            if self.tracer.is_held(t.pid) {
                if let Some(p) = self.reports.symbolizer.process(t.pid) {
                    p.refresh();
                    p.prefetch();
                }
                t.watch
                    .check(t.pid, self.opts, &mut self.tracer, &mut t.objects, false)?;
            }
        }
        Ok(())
    }

    /// Each target's exec and fork since the last look.
    fn check_targets(&mut self) -> Result<()> {
        for t in self.traced.iter_mut().filter(|t| !t.exited) {
            t.watch
                .check(t.pid, self.opts, &mut self.tracer, &mut t.objects, false)?;
        }
        Ok(())
    }

    /// The signals that arrived: SIGCHLD from -c's command, or one that
    /// ends the run. Returns how the run ends, if it does.
    fn handle_signals(&mut self) -> Result<Option<Outcome>> {
        let mut stop = None;
        for (sig, code) in read_signals(&self.signals) {
            match sig {
                libc::SIGCHLD => {
                    if let Some(c) = &mut self.child {
                        let events = ChildEvents {
                            opts: self.opts,
                            tracer: &mut self.tracer,
                            reports: &mut self.reports,
                            traced: &mut self.traced,
                        };
                        if let Some(status) = events.handle(c)? {
                            stop = Some(Outcome::ChildExited(status));
                        }
                    }
                }
                _ => {
                    // A signal sent to memleak alone (kill, a service
                    // manager, timeout) would leave the command running
                    // untraced: it gets the signal too, as under timeout. One
                    // from the terminal reached the whole process group.
                    if let Some(c) = self
                        .child
                        .as_mut()
                        .filter(|c| c.released() && c.status.is_none() && stop.is_none())
                    {
                        if code != libc::SI_KERNEL {
                            let events = ChildEvents {
                                opts: self.opts,
                                tracer: &mut self.tracer,
                                reports: &mut self.reports,
                                traced: &mut self.traced,
                            };
                            events.pass_signal(c, sig)?;
                        }
                    }
                    stop = stop.or(Some(Outcome::Done));
                }
            }
        }
        Ok(stop)
    }

    /// Which processes went away: their pidfd (in `pidfds`, as `wait`
    /// returned them) became readable, or (without pidfds, before Linux
    /// 5.3) /proc says so when `refresh_due`. The last one's exit ends the
    /// run: returned.
    fn note_exits(&mut self, pidfds: &[libc::pollfd], refresh_due: bool) -> Option<Outcome> {
        let mut polled = pidfds.iter();
        let mut gone_now = Vec::new();
        let no_child = self.child.is_none();
        for t in self.traced.iter_mut().filter(|t| !t.exited) {
            let gone = match &t.pidfd {
                Some(_) => polled.next().is_some_and(|p| p.revents & libc::POLLIN != 0),
                None => no_child && refresh_due && !target::is_alive(t.pid),
            };
            if gone {
                t.exited = true;
                gone_now.push(t.pid);
            }
        }
        let alive = self.traced.iter().filter(|t| !t.exited).count();
        if alive > 0 {
            // The last one's exit ends the run and is told then.
            for pid in gone_now {
                eprintln!("memleak: process {pid} exited; its allocations stay in the report");
            }
        }
        if no_child && !self.traced.is_empty() && alive == 0 {
            let last = self.traced.last().map_or(0, |t| t.pid);
            return Some(Outcome::TargetExited(last));
        }
        None
    }

    /// The final report, then every probe goes.
    fn final_report(&mut self, outcome: &Outcome) -> Result<()> {
        // The final report first: detaching takes the kernel about
        // 0.1 s per probe (an RCU grace period each), which the user
        // should not wait for before seeing the numbers.
        self.tracer.consume_events();
        // Once the traced program has exited, every block it left is a
        // leak of that run, however young: -o, which hides blocks a
        // running program may still free, no longer applies.
        let opts = self.opts;
        let at_exit;
        let report_opts = match outcome {
            Outcome::ChildExited(_) | Outcome::TargetExited(_) if opts.older_ms > 0 => {
                at_exit = Options {
                    older_ms: 0,
                    ..opts.clone()
                };
                &at_exit
            }
            _ => opts,
        };
        let live = live_targets(&self.traced, self.child.as_ref());
        self.reports.print(
            report_opts,
            &mut self.tracer,
            &live,
            true,
            &mut io::stdout().lock(),
        )?;
        self.tracer.detach();
        Ok(())
    }

    /// The report of an interval; true when it was the count's last (every
    /// probe is gone then).
    fn interval_report(&mut self) -> Result<bool> {
        self.reports.symbolizer.refresh();
        let live = live_targets(&self.traced, self.child.as_ref());
        // The count's last report is the final one.
        let last = self.opts.count.is_some_and(|c| self.reports_made + 1 >= c);
        self.reports.print(
            self.opts,
            &mut self.tracer,
            &live,
            last,
            &mut io::stdout().lock(),
        )?;
        self.reports_made += 1;
        if self.opts.count.is_some_and(|c| self.reports_made >= c) {
            self.tracer.detach();
            return Ok(true);
        }
        self.next_report += self.interval;
        Ok(false)
    }
}

/// -c, once the probes are gone: a SIGSTOP of memleak's hold at dlclose
/// still on its way to the command is dropped, or memleak's exit (which
/// ends the ptrace) would deliver it and leave the command stopped.
fn settle_child(c: &mut Child, tracer: &mut Tracer) {
    if !c.released() {
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(100);
    while c.status.is_none() {
        for event in c.poll() {
            match event {
                ChildEvent::Stopped if !tracer.claim_stop(c.pid) => c.resume_with(libc::SIGSTOP),
                ChildEvent::Exited(_) => {}
                _ => c.resume(),
            }
        }
        if !tracer.stop_unclaimed(c.pid) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What memleak noticed of the traced process's exec and fork.
#[derive(Default)]
struct Watch {
    execs_seen: u64,
    fork_reported: bool,
}

impl Watch {
    /// An exec replaced the process's memory: its earlier records describe
    /// nothing any more, and the new program may use another allocator. A
    /// fork starts a process that is not traced: said once (a thread is
    /// traced like the rest of its process).
    ///
    /// `stopped_at_exec`: -c's command is in its ptrace exec stop. A -p
    /// target the BPF program stopped at exec is held too. Either way the
    /// new program has not run an instruction yet, its loader has mapped
    /// nothing, and it goes on only once its allocator has probes.
    fn check(
        &mut self,
        pid: u32,
        opts: &Options,
        tracer: &mut Tracer,
        objects: &mut Vec<allocator::Allocator>,
        stopped_at_exec: bool,
    ) -> Result<()> {
        // execs is read before holds (struct order): an exec counted is
        // already known to be held if it is.
        let notices = tracer.notices(pid);
        let held = tracer.is_held(pid);
        let result = self.after_exec(pid, opts, tracer, objects, notices, stopped_at_exec || held);
        if held {
            // A hold at the entry point: the libraries its loader mapped.
            let rows = tracer.refresh_unwind_rows(&[pid]);
            tracer.release_hold(pid);
            rows?;
        }
        result
    }

    fn after_exec(
        &mut self,
        pid: u32,
        opts: &Options,
        tracer: &mut Tracer,
        objects: &mut Vec<allocator::Allocator>,
        notices: abi::Notices,
        stopped: bool,
    ) -> Result<()> {
        if notices.forks > 0 && !self.fork_reported {
            self.fork_reported = true;
            eprintln!("memleak: process {pid} forked; its children are not traced");
        }
        if notices.execs <= self.execs_seen {
            return Ok(());
        }
        self.execs_seen = notices.execs;
        let (read, exe) = exe_paths(pid);
        let dropped = tracer.forget_process(pid, notices.exec_ns)?;
        eprintln!("memleak: process {pid} executed {exe}; {dropped} allocations made before it are dropped");
        let found = if stopped {
            // Nothing is mapped but the program and its loader yet: find
            // its allocator as for a command about to run.
            let path = if std::path::Path::new(&exe).exists() {
                exe.clone()
            } else {
                read.clone()
            };
            let site = dlclose_site(pid, allocator::for_executable(&path, Some("c")));
            hold_at_dlclose(tracer, pid, site.as_ref());
            tracer.hold_at_entry(pid, &path)?;
            allocator::for_executable(&path, opts.obj.as_deref()).map(|a| {
                traced_objects(
                    a,
                    || allocator::for_executable(&path, Some("c")),
                    Some((read, exe)),
                )
            })
        } else {
            let site = dlclose_site(pid, allocator::for_process(pid, Some("c")));
            hold_at_dlclose(tracer, pid, site.as_ref());
            allocator::for_process(pid, opts.obj.as_deref()).map(|a| {
                traced_objects(
                    a,
                    || allocator::for_process(pid, Some("c")),
                    Some(exe_paths(pid)),
                )
            })
        };
        match found {
            Ok(new) => {
                tracer.update_user_probes(pid, &new)?;
                *objects = new;
            }
            Err(e) => eprintln!("memleak: warning: after exec: {e}"),
        }
        Ok(())
    }
}

/// What handling the -c command's state changes needs.
struct ChildEvents<'a> {
    opts: &'a Options,
    tracer: &'a mut Tracer,
    reports: &'a mut Reports,
    traced: &'a mut [Traced],
}

impl ChildEvents<'_> {
    /// Handles every pending state change of the command; its exit status
    /// once it exited.
    fn handle(self, c: &mut Child) -> Result<Option<target::ExitStatus>> {
        let mut exited = None;
        for event in c.poll() {
            match event {
                ChildEvent::Exec => {
                    if let Some(t) = self.traced.iter_mut().find(|t| t.pid == c.pid) {
                        let result =
                            t.watch
                                .check(t.pid, self.opts, self.tracer, &mut t.objects, true);
                        // Never left stopped, even when probing failed.
                        c.resume();
                        result?;
                    } else {
                        c.resume();
                    }
                }
                ChildEvent::Stopped => {
                    // memleak's hold at a dlclose, most likely: the
                    // library is still mapped, so its name and symbols are
                    // read now. The hold is released (SIGCONT) as any.
                    if let Some(p) = self.reports.symbolizer.process(c.pid) {
                        p.refresh();
                        p.prefetch();
                    }
                    // Or at an executed program's entry point.
                    let rows = self.tracer.refresh_unwind_rows(&[c.pid]);
                    if self.tracer.claim_stop(c.pid) {
                        c.resume();
                    } else {
                        c.resume_with(libc::SIGSTOP);
                    }
                    rows?;
                }
                ChildEvent::Exiting => {
                    // Its last stack copies, while its maps are there.
                    let reports = &mut *self.reports;
                    reports.unwound.drain(self.tracer, &mut reports.symbolizer);
                    if self.opts.unreachable {
                        // Its memory is still there: what it leaked at
                        // exit is the final answer.
                        self.reports.across.scan_at_exit(self.tracer, c.pid)?;
                    }
                    if let Some(p) = self.reports.symbolizer.process(c.pid) {
                        p.refresh();
                        p.prefetch();
                    }
                    c.resume();
                    // Its exit comes with the next SIGCHLD.
                }
                ChildEvent::Exited(status) => exited = Some(status),
            }
        }
        Ok(exited)
    }

    /// Passes `sig` on to the command and waits a moment for it to end,
    /// so that the final report comes after its exit; says so on stderr.
    fn pass_signal(self, c: &mut Child, sig: i32) -> Result<()> {
        const GRACE: Duration = Duration::from_secs(1);
        let name = match sig {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            libc::SIGHUP => "SIGHUP",
            _ => "the signal",
        };
        c.signal(sig);
        let deadline = Instant::now() + GRACE;
        let status = loop {
            let events = ChildEvents {
                opts: self.opts,
                tracer: &mut *self.tracer,
                reports: &mut *self.reports,
                traced: &mut *self.traced,
            };
            if let Some(status) = events.handle(c)? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.tracer.consume_events();
        match status {
            Some(status) => eprintln!(
                "memleak: passed {name} on to the command (pid {}), which {}",
                c.pid,
                status.describe()
            ),
            None => eprintln!(
                "memleak: passed {name} on to the command (pid {}), which still runs after {} s; it is left running untraced",
                c.pid,
                GRACE.as_secs()
            ),
        }
        Ok(())
    }
}

/// Where to hold process `pid` at dlclose, given its C library: glibc's
/// dlclose; none for musl's, which unmaps nothing, or without a C library.
fn dlclose_site(pid: u32, libc: Result<allocator::Allocator>) -> Option<allocator::DlcloseSite> {
    match libc.and_then(|l| allocator::dlclose_site(&l)) {
        Ok(site) => site,
        Err(e) => {
            crate::verbose!("process {pid} is not held at dlclose: {e}");
            None
        }
    }
}

/// Holds process `pid` at each dlclose through `site` (none: no longer).
/// Failing that, frames in a library it loads and unloads between two
/// looks at its maps may show no module: said on stderr.
fn hold_at_dlclose(tracer: &mut Tracer, pid: u32, site: Option<&allocator::DlcloseSite>) {
    let result = match site {
        Some(site) => tracer.hold_at_dlclose(pid, site),
        None => {
            tracer.stop_holding_at_dlclose(pid);
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("memleak: warning: {e}; frames in a library process {pid} unloads soon after loading it may show no name");
    }
}

/// Every object whose functions get probes in one process: its allocator;
/// the C library for the standard functions an allocator library leaves to
/// it (jemalloc and tcmalloc leave mmap, munmap and mremap, sometimes
/// reallocarray or pvalloc); a prefixed allocator built into the executable
/// (`exe`: where to read it, how to name it). A libc function that calls
/// back into the allocator is a nested call and counts once.
fn traced_objects(
    allocator: allocator::Allocator,
    libc: impl FnOnce() -> Result<allocator::Allocator>,
    exe: Option<(String, String)>,
) -> Vec<allocator::Allocator> {
    crate::verbose!(
        "allocator: {} ({})",
        allocator.display_path,
        allocator.reason
    );
    let missing: Vec<Func> = Func::STANDARD
        .iter()
        .copied()
        .filter(|&f| allocator.offset(f).is_none())
        .collect();
    let main = allocator.display_path.clone();
    let mut objects = vec![allocator];
    if !missing.is_empty() {
        match libc() {
            // Without a C library the missing functions just go untraced.
            Err(e) => crate::verbose!("no C library for the functions the allocator lacks: {e}"),
            Ok(mut libc) if libc.display_path != main => {
                libc.offsets.retain(|(f, _)| missing.contains(f));
                if !libc.offsets.is_empty() {
                    let names: Vec<&str> = libc.offsets.iter().map(|(f, _)| f.name()).collect();
                    crate::verbose!("{} from {}", names.join(", "), libc.display_path);
                    objects.push(libc);
                }
            }
            Ok(_) => {}
        }
    }
    if let Some((read, display)) = exe.filter(|(_, display)| *display != main) {
        if let Some(extra) = allocator::prefixed_in_executable(&read, &display) {
            crate::verbose!("also traced: {} ({})", extra.display_path, extra.reason);
            objects.push(extra);
        }
    }
    objects
}

/// Where to read a process's executable (the /proc link works for deleted
/// files and other mount namespaces) and the path it was started from.
fn exe_paths(pid: u32) -> (String, String) {
    let link = format!("/proc/{pid}/exe");
    let display = std::fs::read_link(&link)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| link.clone());
    (link, display)
}

fn opts_command_name(opts: &Options) -> String {
    match &opts.target {
        Target::Command(argv) => argv.first().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

/// Stacks unwound in userspace (--unwind dwarf), by their 64-bit hash, and
/// which hash each BPF sample id became.
#[derive(Default)]
struct Unwound {
    by_sample: HashMap<u64, u64>,
    stacks: HashMap<u64, Vec<u64>>,
}

impl Unwound {
    /// Unwinds every stack copy waiting in the tracer.
    fn drain(&mut self, tracer: &mut Tracer, symbolizer: &mut Symbolizer) {
        let samples = tracer.take_samples();
        if !samples.is_empty() {
            // Libraries mapped since the last look (a new process's own
            // libc, a dlopen) must be known to walk through them.
            symbolizer.refresh();
        }
        for sample in samples {
            let [ip, sp, fp, lr] = sample.regs;
            let regs = unwind::Registers { ip, sp, fp, lr };
            let ips = match symbolizer.process(sample.tgid) {
                Some(p) => p.unwind(regs, &sample.stack, abi::MAX_STACK_DEPTH),
                None => vec![ip],
            };
            let hash = unwind::stack_hash(&ips);
            self.stacks.entry(hash).or_insert(ips);
            self.by_sample.insert(sample.id, hash);
        }
    }

    /// The stack id to group an allocation by: a sample's id becomes the
    /// hash of its unwound stack (lost if its copy never arrived).
    fn resolve(&self, stack_id: u64) -> u64 {
        if stack_id & abi::UNWIND_ID_BIT == 0 {
            return stack_id;
        }
        self.by_sample
            .get(&stack_id)
            .copied()
            .unwrap_or(abi::LOST_STACK)
    }
}

/// The processes still there to scan, and which one memleak already traces
/// (-c's command, when its ptrace seize worked).
fn live_targets(traced: &[Traced], child: Option<&Child>) -> Vec<(u32, reach::Held)> {
    traced
        .iter()
        .filter(|t| !t.exited)
        .filter_map(|t| match child {
            Some(c) if c.pid == t.pid && c.status.is_some() => None,
            Some(c) if c.pid == t.pid => Some((t.pid, reach::Held::Running(t.pid))),
            _ => Some((t.pid, reach::Held::None)),
        })
        .collect()
}

/// What reports keep from one to the next: each stack's growth, and the
/// scan of -c's command made as it exited.
#[derive(Default)]
struct Across {
    growth: GrowthTracker,
    exit_scans: HashMap<u32, reach::Scan>,
}

impl Across {
    /// Scans `pid`, stopped at its exit, for the final report.
    fn scan_at_exit(&mut self, tracer: &Tracer, pid: u32) -> Result<()> {
        let mut blocks = Vec::new();
        tracer.for_each_allocation(|a| {
            if a.tgid == pid {
                blocks.push((a.addr, a.size));
            }
        })?;
        match reach::scan(pid, blocks, reach::Held::AtExit(pid)) {
            Ok(scan) => {
                log_scan(pid, &scan);
                self.exit_scans.insert(pid, scan);
            }
            Err(e) => eprintln!("memleak: cannot scan process {pid} at its exit: {e}"),
        }
        Ok(())
    }

    /// Scans each live process in `live` whose blocks are in `allocs`; a
    /// process gone since keeps the scan made at its exit, if any.
    fn scans(
        &mut self,
        live: &[(u32, reach::Held)],
        allocs: &[Allocation],
    ) -> HashMap<u32, reach::Scan> {
        let mut blocks: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
        for a in allocs {
            blocks.entry(a.tgid).or_default().push((a.addr, a.size));
        }
        let mut scans = HashMap::new();
        for (pid, mine) in blocks {
            let scan = match live.iter().find(|(p, _)| *p == pid) {
                Some(&(_, held)) => match reach::scan(pid, mine, held) {
                    Ok(scan) => {
                        log_scan(pid, &scan);
                        scan
                    }
                    Err(e) => {
                        eprintln!("memleak: cannot scan process {pid}: {e}");
                        continue;
                    }
                },
                // Kept for every report after its exit.
                None => match self.exit_scans.get(&pid) {
                    Some(scan) => scan.clone(),
                    None => continue,
                },
            };
            scans.insert(pid, scan);
        }
        scans
    }
}

fn log_scan(pid: u32, scan: &reach::Scan) {
    crate::verbose!(
        "scan of process {pid}: {} threads stopped for {:.1} ms ({:.1} ms of CPU), {} bytes scanned ({:.2} GB/s), {} ranges ({} bytes) unreadable",
        scan.threads,
        scan.pause.as_secs_f64() * 1e3,
        scan.cpu.as_secs_f64() * 1e3,
        scan.bytes_scanned,
        scan.bytes_scanned as f64 / scan.pause.as_secs_f64().max(1e-9) / 1e9,
        scan.unreadable,
        scan.unreadable_bytes
    );
}

/// What every report of the run draws on besides the tracer: names for
/// addresses, the stacks unwound in userspace, what reports keep from one
/// to the next, and where each profile goes.
struct Reports {
    symbolizer: Symbolizer,
    /// --symfs: unstripped copies to name frames from, looked up by build ID.
    symfs: Option<offline::Resolver>,
    unwound: Unwound,
    across: Across,
    pprof: Option<PprofOutput>,
    /// Several processes are traced: each stack says whose it is.
    show_pids: bool,
}

impl Reports {
    fn new(opts: &Options, traced: &[Traced]) -> Result<Reports> {
        let symbolizer = if traced.is_empty() {
            let kernel = KernelSymbolizer::load().map_err(|e| Error::input("/proc/kallsyms", e))?;
            if kernel.addresses_hidden() {
                eprintln!("memleak: kernel addresses are hidden (kernel.kptr_restrict); frames are shown as raw addresses");
            }
            Symbolizer::Kernel(kernel)
        } else {
            Symbolizer::Processes(
                traced
                    .iter()
                    .map(|t| (t.pid, ProcessSymbolizer::new(t.pid)))
                    .collect(),
            )
        };
        Ok(Reports {
            pprof: opts
                .pprof
                .as_deref()
                .map(|path| PprofOutput::new(path, &symbolizer, traced)),
            symbolizer,
            symfs: opts
                .symfs
                .as_deref()
                .map(|dir| offline::Resolver::new(Some(dir), false)),
            unwound: Unwound::default(),
            across: Across::default(),
            show_pids: traced.len() > 1,
        })
    }

    /// Writes one report to `out` (and the profile, with --pprof).
    /// `live`: the processes that can still be scanned (--unreachable);
    /// `last`: the run's final report.
    fn print(
        &mut self,
        opts: &Options,
        tracer: &mut Tracer,
        live: &[(u32, reach::Held)],
        last: bool,
        out: &mut impl Write,
    ) -> Result<()> {
        let started = Instant::now();
        self.unwound.drain(tracer, &mut self.symbolizer);
        let now = monotonic_ns();
        let min_age = opts.older_ms.saturating_mul(1_000_000);
        let mut unreachable = UnreachableByStack::default();
        let (totals, read) = self.totals(opts, tracer, live, (now, min_age), &mut unreachable)?;
        let Selection {
            mut top,
            every_stack,
            grew_always,
            growth,
            intervals,
            estimate_weight,
        } = aggregate::select(
            totals,
            opts,
            &mut self.across.growth,
            &unreachable,
            last,
            self.pprof.is_some(),
        );
        // -a: a second pass collects the blocks of the stacks shown only.
        if opts.show_allocs && !opts.combined_only {
            self.collect_blocks(tracer, &mut top, Aggregator::new(now, min_age))?;
        }
        // The stacks shown, then those of the growth summary.
        let shown = top.len();
        top.extend(grew_always.into_iter().flatten());
        let summary_asked = opts.growth && last;
        let mut printed: Vec<PrintedStack<'_>> = top
            .iter()
            .map(|total| PrintedStack {
                total,
                frames: self.frames_of(opts, tracer, total),
                unreachable: unreachable.of(total),
                growth: growth.get(&(total.tgid, total.stack_id)).copied(),
            })
            .collect();
        let always_printed = printed.split_off(shown);
        let losses = tracer.losses();
        let report = report::Report {
            time: &report::clock_time(),
            top: opts.top,
            stacks: &printed,
            show_allocs: opts.show_allocs && !opts.combined_only,
            show_pids: self.show_pids,
            estimate_weight,
            losses: &losses,
            show_growth: opts.growth,
            summary: summary_asked.then_some(report::GrowthSummary {
                intervals,
                stacks: &always_printed,
            }),
        };
        report
            .write(opts.format, out)
            .map_err(Error::report_output)?;
        if let Some(stacks) = every_stack {
            self.write_profile(opts, &stacks, tracer, &losses);
        }
        crate::verbose!(
            "report of {read} outstanding allocations took {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    }

    /// Every stack's totals, and how many outstanding allocations were
    /// read: from the per-stack sums BPF keeps (--combined-only, or when
    /// they hold the whole answer), else grouped here from every
    /// allocation at least `min_age` old at `now` (both in ns); then the
    /// live processes are scanned for --unreachable, into `unreachable`.
    fn totals(
        &mut self,
        opts: &Options,
        tracer: &Tracer,
        live: &[(u32, reach::Held)],
        (now, min_age): (u64, u64),
        unreachable: &mut UnreachableByStack,
    ) -> Result<(Vec<StackTotal>, usize)> {
        if opts.combined_only {
            return Ok((tracer.combined()?, 0));
        }
        // The sums BPF keeps per stack (only without an age limit) are the report.
        if !opts.unreachable {
            if let Some(totals) = tracer.stack_sums()? {
                let read = totals.iter().map(|t| t.count as usize).sum();
                return Ok((totals, read));
            }
        }
        let unwound = &mut self.unwound;
        let mut agg = Aggregator::new(now, min_age);
        let mut live_samples = std::collections::HashSet::new();
        // --unreachable keeps every block (young ones too: they may hold
        // the only pointer to an old one) for the scan.
        let mut kept = Vec::new();
        let read = tracer.for_each_allocation(|a| {
            if a.stack_id & abi::UNWIND_ID_BIT != 0 {
                live_samples.insert(a.stack_id);
            }
            let a = Allocation {
                stack_id: unwound.resolve(a.stack_id),
                ..*a
            };
            agg.add(&a);
            if opts.unreachable {
                kept.push(a);
            }
        })?;
        if opts.unreachable {
            // In address order the lookups of each block's class below
            // touch memory in order (a million random ones took seconds).
            kept.sort_unstable_by_key(|a| (a.tgid, a.addr));
            let scans = self.across.scans(live, &kept);
            for &pid in scans.keys() {
                unreachable.scanned(pid);
            }
            for a in kept.iter().filter(|a| agg.is_old_enough(a)) {
                let class = scans.get(&a.tgid).and_then(|s| s.class_of(a.addr));
                unreachable.add(a, class);
            }
        }
        // Samples whose blocks were freed are done with.
        if !unwound.by_sample.is_empty() {
            unwound.by_sample.retain(|id, _| live_samples.contains(id));
        }
        Ok((agg.finish(), read))
    }

    /// -a: the blocks of each stack in `top` old enough for `agg`, in
    /// order of size.
    fn collect_blocks(
        &self,
        tracer: &Tracer,
        top: &mut [StackTotal],
        agg: Aggregator,
    ) -> Result<()> {
        let shown: HashMap<(u32, u64), usize> = top
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.tgid, s.stack_id), i))
            .collect();
        tracer.for_each_allocation(|a| {
            if let Some(&i) = shown.get(&(a.tgid, self.unwound.resolve(a.stack_id))) {
                if agg.is_old_enough(a) {
                    top[i].allocs.push((a.addr, a.size));
                }
            }
        })?;
        for s in top {
            s.allocs.sort_unstable_by_key(|&(addr, size)| (size, addr));
        }
        Ok(())
    }

    /// The return addresses of `total`'s stack: unwound here, or as BPF
    /// recorded them.
    fn stack_of(&self, tracer: &Tracer, total: &StackTotal) -> Option<Vec<u64>> {
        self.unwound
            .stacks
            .get(&total.stack_id)
            .cloned()
            .or_else(|| tracer.stack(total.stack_id))
    }

    /// The frames the report shows for `total`'s stack.
    fn frames_of(&mut self, opts: &Options, tracer: &Tracer, total: &StackTotal) -> Vec<Shown> {
        match self.stack_of(tracer, total) {
            Some(ips) => ips[self.symbolizer.tracing_frames(&ips)..]
                .iter()
                .flat_map(|&ip| {
                    self.symbolizer
                        .frames(total.tgid, ip, opts.raw, self.symfs.as_mut())
                })
                .collect(),
            None if total.stack_id == abi::LOST_STACK => vec![Shown::Missing("[stack lost]")],
            None => vec![Shown::Missing("[stack unavailable]")],
        }
    }

    /// --pprof: replaces the profile with `stacks`. A full disk or a
    /// directory gone for a while should not end a long trace: said, and
    /// tried again at the next report.
    fn write_profile(
        &mut self,
        opts: &Options,
        stacks: &[StackTotal],
        tracer: &Tracer,
        losses: &Losses,
    ) {
        let Some(profile) = self.profile_of(opts, stacks, tracer, losses) else {
            return;
        };
        let Some(output) = &self.pprof else { return };
        if let Err(e) = pprof::write_atomically(&output.path, &profile.to_file_bytes()) {
            eprintln!("memleak: {e}");
        }
    }

    /// Every stack as a pprof profile: a sample each, a location per return
    /// address with its mapping and named frames (none with --raw). None
    /// without --pprof.
    fn profile_of(
        &mut self,
        opts: &Options,
        stacks: &[StackTotal],
        tracer: &Tracer,
        losses: &Losses,
    ) -> Option<pprof::Profile> {
        let output = self.pprof.as_ref()?;
        let mut builder = pprof::Builder::new();
        for total in stacks {
            let locations = match self.stack_of(tracer, total) {
                Some(ips) => ips
                    .iter()
                    .map(|&ip| {
                        builder.location(total.tgid, ip, || {
                            (
                                self.symbolizer
                                    .mapped_file(total.tgid, ip, output.kernel.as_ref()),
                                self.symbolizer.frames(
                                    total.tgid,
                                    ip,
                                    opts.raw,
                                    self.symfs.as_mut(),
                                ),
                            )
                        })
                    })
                    .collect(),
                None if total.stack_id == abi::LOST_STACK => vec![builder.missing("[stack lost]")],
                None => vec![builder.missing("[stack unavailable]")],
            };
            let pid = (total.tgid != 0).then_some(total.tgid);
            builder.sample(locations, total.count, total.bytes, pid);
        }
        let mut comments = output.comments.clone();
        comments.push(losses.line().unwrap_or_else(|| "lost: nothing".into()));
        let time_nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        Some(builder.finish(&pprof::Meta {
            time_nanos,
            duration_nanos: output.since.elapsed().as_nanos() as i64,
            period: opts.sample_rate,
            comments: &comments,
        }))
    }
}
