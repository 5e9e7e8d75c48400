//! Loads the BPF programs with this run's configuration, attaches them, and
//! reads back plain data: outstanding allocations, stacks, losses.

use std::io;

use crate::allocator::{Allocator, DlcloseSite, Func};
use crate::bpf::programs::{self, Role};
use crate::bpf::{self, abi, Link, Map, Object, PerCpuMap, RingBuffer, StackMap};
use crate::error::{Error, Result};
use crate::plan::{self, Attach, CfiPlan, KernelPath, Plan};
use crate::records::{Allocation, Losses, StackTotal};
use crate::tracepoints;
use crate::unwind_tables;

fn has_return_probe(func: Func) -> bool {
    func.has_return()
}

/// Without these the report would be wrong, not just incomplete.
fn is_mandatory(func: Func) -> bool {
    matches!(func, Func::Malloc | Func::Free)
}

/// The running kernel's major and minor version, from uname.
pub fn kernel_release() -> (u32, u32) {
    let Some(release) = crate::sys::kernel_release() else {
        return (0, 0);
    };
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// A loaded, attached set of BPF programs. Its links, maps and ring buffers
/// each keep the object open (see crate::bpf), so no drop order can leave
/// one behind its object.
pub struct Tracer {
    /// Each with the process it traces (0: the kernel) and the index in
    /// `objects` of what it probes.
    links: Vec<(u32, usize, Link)>,
    /// Every object ever probed: links of an object a new program still
    /// uses are kept across its exec.
    objects: Vec<ProbedObject>,
    /// The object the links being made belong to.
    attaching: usize,
    /// Wakeups for a target stopped for memleak at exec or dlclose (struct
    /// notices holds), and how many holds of each target were released
    /// with SIGCONT.
    held: Option<RingBuffer>,
    released_holds: Vec<(u32, u64)>,
    /// -c: how many holds of each target a ptrace signal stop took the
    /// SIGSTOP of (see [`Tracer::claim_stop`]).
    claimed_stops: Vec<(u32, u64)>,
    /// The uprobe on dlclose that holds each target (glibc only).
    dlclose_links: Vec<(u32, DlcloseSite, Link)>,
    /// Raw tracepoints that notice the traced process's exec and fork.
    watch_links: Vec<Link>,
    ring: Option<RingBuffer>,
    /// --unwind dwarf: stack copies, queued by the ring buffer's callback.
    samples: Option<(RingBuffer, SampleQueue)>,
    /// --unwind cfi: the unwind rows BPF walks stacks with.
    cfi: Option<CfiTables>,
    /// --unwind cfi with -c: the probe that stops the command at its entry
    /// point, until it did (a later exec of the same program must not stop).
    entry_stop: Option<Link>,
    /// --unwind cfi: per process, a hold at the entry point of the program
    /// it executed, where its loader has mapped the libraries, for their
    /// rows to be loaded before main runs.
    entry_holds: Vec<(u32, Link)>,
    obj: Object,
    allocs: Map<abi::AllocKey, abi::AllocInfo>,
    stacks: StackMap,
    combined: Map<u64, abi::CombinedInfo>,
    losses: PerCpuMap<u32, u64>,
    notices: Map<u32, abi::Notices>,
    failed_attaches: u64,
    /// --unwind cfi: programs that could not be held at their entry point,
    /// so their first allocations ran before their libraries' rows loaded.
    entries_unheld: u64,
    /// The per-stack sums BPF keeps (see [`Plan::stack_sums`]) are stale
    /// once an exec dropped records.
    sums_stale: bool,
    /// What was loaded and attached, and how.
    plan: Plan,
}

/// What a set of uprobe links probes: the file, by device and inode however
/// it was named (/lib and /usr/lib are one directory on merged-/usr
/// systems), and the sites in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProbedObject {
    file: Result<(u64, u64), String>,
    offsets: Vec<(Func, u64)>,
    sites: Vec<(u64, u64)>,
}

impl ProbedObject {
    fn of(allocator: &Allocator) -> ProbedObject {
        use std::os::unix::fs::MetadataExt;
        ProbedObject {
            file: std::fs::metadata(&allocator.attach_path)
                .map(|m| (m.dev(), m.ino()))
                .map_err(|_| allocator.attach_path.clone()),
            offsets: allocator.offsets.clone(),
            sites: allocator.sites.clone(),
        }
    }
}

/// The unwind rows BPF reads (`cfi_rows`, `cfi_ranges`). The array has
/// two halves: a rebuild is written to the one BPF does not read, then the
/// processes' ranges switch to it, so no walk sees half a table.
struct CfiTables {
    rows: Map<u32, abi::CfiRow>,
    ranges: Map<u32, abi::CfiRange>,
    /// Rows in each half.
    half: u32,
    /// The half BPF reads now.
    active: u32,
    /// Loads so far.
    generation: u32,
    builder: unwind_tables::Builder,
    full_told: bool,
}

impl CfiTables {
    /// Writes each process's rows to the inactive half and switches to it.
    /// A process whose rows do not fit gets none (its stacks are walked by
    /// frame pointers), and stderr says so once.
    fn load(&mut self, tables: &[(u32, Vec<abi::CfiRow>)]) -> Result<()> {
        let target = 1 - self.active;
        self.generation = self.generation.wrapping_add(1);
        let err = |e: io::Error| Error::bpf_io("cannot load unwind rows", e);
        let mut next = 0u32;
        let mut ranges = Vec::new();
        for (pid, rows) in tables {
            let len = u32::try_from(rows.len()).unwrap_or(u32::MAX);
            if len > self.half - next {
                if !self.full_told {
                    eprintln!(
                        "memleak: no room for the {len} unwind rows of pid {pid} ({} left): its stacks are walked by frame pointers",
                        self.half - next
                    );
                    self.full_told = true;
                }
                let generation = self.generation;
                ranges.push((
                    *pid,
                    abi::CfiRange {
                        generation,
                        ..Default::default()
                    },
                ));
                continue;
            }
            let first = target * self.half + next;
            let keys: Vec<u32> = (first..first + len).collect();
            self.rows.update_batch(&keys, rows).map_err(err)?;
            ranges.push((
                *pid,
                abi::CfiRange {
                    start: target * self.half + next,
                    len,
                    generation: self.generation,
                    pad: 0,
                },
            ));
            next += len;
        }
        for (pid, range) in &ranges {
            self.ranges.update(pid, range).map_err(err)?;
        }
        self.active = target;
        crate::verbose!("{next} unwind rows loaded");
        Ok(())
    }
}

/// --unwind cfi: the unwind rows of the processes traced at start, built
/// before the object loads to size the table (with room for libraries
/// loaded later; -c's command is not even executed yet and gets its rows
/// at its entry point).
struct InitialUnwindRows {
    builder: unwind_tables::Builder,
    half: u32,
    rows: Vec<(u32, Vec<abi::CfiRow>)>,
}

impl InitialUnwindRows {
    fn build(cfi: &CfiPlan) -> InitialUnwindRows {
        let mut builder = unwind_tables::Builder::default();
        let rows = builder.rebuild_if_changed(&cfi.pids).unwrap_or_default();
        let total: usize = rows.iter().map(|(_, rows)| rows.len()).sum();
        InitialUnwindRows {
            builder,
            half: CfiPlan::half(total),
            rows,
        }
    }
}

impl CfiTables {
    /// The tables of the loaded `obj`, with the rows built at start.
    fn start(obj: &Object, initial: InitialUnwindRows) -> Result<CfiTables> {
        let mut tables = CfiTables {
            rows: obj.map_fd("cfi_rows")?,
            ranges: obj.map_fd("cfi_ranges")?,
            half: initial.half,
            active: 1,
            generation: 0,
            builder: initial.builder,
            full_told: false,
        };
        tables.load(&initial.rows)?;
        Ok(tables)
    }
}

/// Opens the embedded object, sets what `plan` decided (which programs
/// load, the configuration, map sizes and flags) and loads it.
/// `cfi_half`: rows in each half of the unwind table (--unwind cfi).
fn load_object(plan: &Plan, cfi_half: Option<u32>) -> Result<Object> {
    let mut obj = Object::open()?;
    for &(prog, load) in &plan.autoload {
        obj.set_autoload(prog, load)?;
    }
    obj.set_config(&plan.config)?;
    let maps = &plan.maps;
    obj.set_max_entries("targets", maps.processes)?;
    obj.set_max_entries("notices", maps.processes)?;
    obj.set_max_entries("cfi_rows", cfi_half.map_or(1, |half| half * 2))?;
    obj.set_max_entries("cfi_ranges", maps.processes)?;
    obj.set_max_entries("allocs", maps.allocs)?;
    obj.set_max_entries("stacks", maps.stacks)?;
    obj.set_max_entries("combined", maps.combined)?;
    if maps.no_prealloc {
        for map in ["allocs", "combined", "stacks"] {
            obj.set_map_flags(map, libc_bpf_f_no_prealloc())?;
        }
    }
    obj.set_max_entries("events", maps.events)?;
    obj.set_max_entries("samples", maps.samples)?;
    obj.load().map_err(|e| {
        if e.raw_os_error() == Some(libc::E2BIG) {
            // Older kernels also cap a table's memory (4 GiB).
            Error::Other(format!(
                "cannot create the tables: this kernel refuses {} allocations or {} stacks as too big (Argument list too long); try a smaller --max-allocs or --stack-storage-size",
                maps.allocs, maps.stacks
            ))
        } else {
            let err = bpf_failure("cannot load the BPF programs", e);
            if plan.kernel && plan.kernel_path != KernelPath::Tracepoints {
                err.noted(" (--fallback tracepoints takes the classic tracepoints)")
            } else {
                err
            }
        }
    })?;
    Ok(obj)
}

/// What -t hands each traced call to.
pub type EventCallback = Box<dyn FnMut(&abi::Event)>;

/// Raw unwind samples (struct unwind_sample) waiting for userspace.
type SampleQueue = std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>>;

/// One stack copy to unwind (struct unwind_sample).
pub struct UnwindSample {
    /// The stack id its allocation was recorded with.
    pub id: u64,
    pub tgid: u32,
    /// ip, sp, fp, and lr on arm64.
    pub regs: [u64; 4],
    pub stack: Vec<u8>,
}

impl UnwindSample {
    /// A ring buffer record: one whole struct unwind_sample, of which the
    /// first `len` bytes of stack were copied.
    fn parse(bytes: &[u8]) -> Option<UnwindSample> {
        let raw = bpf::read_pod::<abi::UnwindSample>(bytes)?;
        let len = (raw.len as usize).min(abi::STACK_COPY);
        Some(UnwindSample {
            id: raw.id,
            tgid: raw.tgid,
            regs: raw.regs,
            stack: raw.stack[..len].to_vec(),
        })
    }
}

impl Tracer {
    /// Runs `plan`: loads the programs it names with its configuration and
    /// map sizes, then attaches them to `attach` (from which the plan was
    /// made). `on_event` gets each traced call (-t).
    pub fn start(
        plan: Plan,
        attach: Attach<'_>,
        on_event: Option<EventCallback>,
    ) -> Result<Tracer> {
        let cfi = plan.cfi.as_ref().map(InitialUnwindRows::build);
        let obj = load_object(&plan, cfi.as_ref().map(|c| c.half))?;
        let cfi = match cfi {
            Some(initial) => Some(CfiTables::start(&obj, initial)?),
            None => None,
        };
        let mut tracer = Tracer::with_maps(obj, plan, cfi, on_event)?;
        match attach {
            Attach::User { targets, .. } => tracer.attach_processes(targets)?,
            Attach::Kernel { events } => tracer.attach_kernel(events)?,
        }
        Ok(tracer)
    }

    /// The tracer of the loaded `obj`: its maps and ring buffers, nothing
    /// attached yet.
    fn with_maps(
        obj: Object,
        plan: Plan,
        cfi: Option<CfiTables>,
        on_event: Option<EventCallback>,
    ) -> Result<Tracer> {
        let allocs = obj.map_fd("allocs")?;
        let stacks = obj.map_fd("stacks")?;
        let combined = obj.map_fd("combined")?;
        let losses = obj.map_fd("losses")?;
        let notices = obj.map_fd("notices")?;
        let ring = match on_event {
            Some(mut callback) => Some(RingBuffer::new(
                obj.map_fd("events")?,
                Box::new(move |bytes: &[u8]| {
                    if let Some(event) = bpf::read_pod::<abi::Event>(bytes) {
                        callback(&event);
                    }
                }),
            )?),
            None => None,
        };
        let samples = if plan.dwarf {
            let queue = SampleQueue::default();
            let sink = queue.clone();
            let ring = RingBuffer::new(
                obj.map_fd("samples")?,
                Box::new(move |bytes: &[u8]| sink.borrow_mut().push(bytes.to_vec())),
            )?;
            Some((ring, queue))
        } else {
            None
        };

        let held = if !plan.kernel {
            Some(RingBuffer::new(
                obj.map_fd("held")?,
                Box::new(|_: &[u8]| {}),
            )?)
        } else {
            None
        };
        Ok(Tracer {
            links: Vec::new(),
            objects: Vec::new(),
            attaching: usize::MAX,
            held,
            released_holds: Vec::new(),
            claimed_stops: Vec::new(),
            dlclose_links: Vec::new(),
            watch_links: Vec::new(),
            ring,
            samples,
            cfi,
            entry_stop: None,
            entry_holds: Vec::new(),
            obj,
            allocs,
            stacks,
            combined,
            losses,
            notices,
            failed_attaches: 0,
            entries_unheld: 0,
            sums_stale: false,
            plan,
        })
    }

    /// User mode: uprobes on each process's objects, and the raw
    /// tracepoints that notice their exec and fork.
    fn attach_processes(&mut self, targets: &[(u32, Vec<Allocator>)]) -> Result<()> {
        for (pid, objects) in targets {
            self.released_holds.push((*pid, 0));
            let has = |f: Func| objects.iter().any(|o| o.offset(f).is_some());
            if !has(Func::Malloc) || !has(Func::Free) {
                let name = objects
                    .first()
                    .map(|o| o.display_path.as_str())
                    .unwrap_or("the allocator");
                return Err(Error::Target(format!(
                    "{name} does not define malloc and free"
                )));
            }
            for func in Func::STANDARD.iter().filter(|&&f| !has(f)) {
                crate::verbose!(
                    "no traced object of pid {pid} defines {}; not traced",
                    func.name()
                );
            }
        }
        if targets.len() > 1 {
            let map: Map<u32, u8> = self.obj.map_fd("targets")?;
            for (pid, _) in targets {
                map.update(pid, &1u8)
                    .map_err(|e| Error::bpf_io("cannot fill the targets map", e))?;
            }
        }
        for (pid, objects) in targets {
            self.attach_objects(*pid, objects)?;
        }
        for (prog, tp) in [
            (programs::name(Role::Exec), "sched_process_exec"),
            (programs::name(Role::Fork), "task_newtask"),
        ] {
            match self.obj.attach_raw_tracepoint(prog, tp) {
                Ok(link) => self.watch_links.push(link),
                Err(e) => crate::verbose!(
                    "cannot watch {tp}: {e}; exec and fork of the target go unnoticed"
                ),
            }
        }
        Ok(())
    }

    fn attach_objects(&mut self, pid: u32, objects: &[Allocator]) -> Result<()> {
        for object in objects {
            self.attach_object(pid, object)?;
        }
        Ok(())
    }

    fn attach_object(&mut self, pid: u32, object: &Allocator) -> Result<()> {
        let probed = ProbedObject::of(object);
        self.attaching = match self.objects.iter().position(|o| *o == probed) {
            Some(i) => i,
            None => {
                self.objects.push(probed);
                self.objects.len() - 1
            }
        };
        if self.plan.multi {
            self.attach_user_multi(pid, object)
        } else {
            self.attach_user(pid, object)
        }
    }

    /// After the target executed another program: probes on `objects`.
    /// The probes of an object the new program uses too (its file, however
    /// named, with the same functions) stay: the kernel applies them to the
    /// new mapping of that file, and nothing is missed in between. The
    /// others go before the new ones come, so no call is seen twice.
    pub fn update_user_probes(&mut self, pid: u32, objects: &[Allocator]) -> Result<()> {
        let wanted: Vec<ProbedObject> = objects.iter().map(ProbedObject::of).collect();
        let (stale, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|(p, i, _)| *p == pid && !wanted.contains(&self.objects[*i]));
        self.links = kept;
        release_links(stale.into_iter().map(|(_, _, link)| link).collect());
        for (object, probed) in objects.iter().zip(&wanted) {
            let has_links = self
                .links
                .iter()
                .any(|(p, i, _)| *p == pid && self.objects[*i] == *probed);
            if has_links {
                crate::verbose!(
                    "probes on {} kept: the new program uses the same file",
                    object.display_path
                );
            } else {
                self.attach_object(pid, object)?;
            }
        }
        Ok(())
    }

    /// Holds process `pid` at each dlclose through `site` until memleak has
    /// read its maps (released like an exec hold). A probe on the same site
    /// stays; one on another file (before an exec) goes.
    pub fn hold_at_dlclose(&mut self, pid: u32, site: &DlcloseSite) -> Result<()> {
        if self
            .dlclose_links
            .iter()
            .any(|(p, s, _)| *p == pid && s == site)
        {
            return Ok(());
        }
        self.stop_holding_at_dlclose(pid);
        let link = self
            .obj
            .attach_uprobe(
                programs::name(Role::Dlclose),
                pid as i32,
                &site.path,
                site.offset,
                false,
            )
            .map_err(|e| {
                bpf_failure(
                    format!("cannot attach a uprobe to dlclose in {}", site.path),
                    e,
                )
            })?;
        crate::verbose!(
            "process {pid} is held at dlclose ({}) while its maps are read",
            site.path
        );
        self.dlclose_links.push((pid, site.clone(), link));
        Ok(())
    }

    /// No more holds of process `pid` at dlclose (its new program has no
    /// glibc).
    pub fn stop_holding_at_dlclose(&mut self, pid: u32) {
        let (stale, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.dlclose_links)
            .into_iter()
            .partition(|(p, _, _)| *p == pid);
        self.dlclose_links = kept;
        release_links(stale.into_iter().map(|(_, _, link)| link).collect());
    }

    /// -c: the command's ptraced thread stopped with a SIGSTOP. True when
    /// it is memleak's own hold (at dlclose), which is then not delivered:
    /// memleak's reading of the maps is the whole point of it. A hold whose
    /// SIGSTOP a thread not ptraced took, or that SIGCONT cancelled before
    /// delivery, leaves the count behind: then the next SIGSTOP someone
    /// else sends is taken for memleak's, once per such hold.
    pub fn claim_stop(&mut self, pid: u32) -> bool {
        let holds = self.notices(pid).holds;
        // One at a time: two holds whose SIGSTOPs came one after the other
        // bring two stops, and delivering the second would stop the whole
        // process after memleak let it go. Coalesced ones leave the count
        // behind, which errs on the side of not stopping.
        let claimed = match self.claimed_stops.iter_mut().find(|(p, _)| *p == pid) {
            Some(entry) => entry,
            None => {
                self.claimed_stops.push((pid, 0));
                let last = self.claimed_stops.len() - 1;
                &mut self.claimed_stops[last]
            }
        };
        if holds > claimed.1 {
            claimed.1 += 1;
            true
        } else {
            false
        }
    }

    /// Whether a hold of process `pid` may still bring a SIGSTOP to its
    /// ptraced thread (see [`Tracer::claim_stop`]).
    pub fn stop_unclaimed(&self, pid: u32) -> bool {
        self.notices(pid).holds > count_for(&self.claimed_stops, pid)
    }

    /// A file descriptor that polls readable when a target was stopped at
    /// exec (-p) or dlclose, for `release_hold`.
    pub fn held_fd(&self) -> Option<i32> {
        self.held.as_ref().map(|r| r.epoll_fd())
    }

    /// Empties the stopped-at-exec wakeups; the notices say who is held.
    pub fn consume_held(&mut self) {
        if let Some(r) = &mut self.held {
            r.consume();
        }
    }

    /// Whether process `pid` is stopped at an exec (or about to be) that
    /// memleak has not let go on from yet.
    pub fn is_held(&self, pid: u32) -> bool {
        self.notices(pid).holds > count_for(&self.released_holds, pid)
    }

    /// Lets process `pid` go on from every exec it was stopped at.
    pub fn release_hold(&mut self, pid: u32) {
        let holds = self.notices(pid).holds;
        if let Some(entry) = self.released_holds.iter_mut().find(|(p, _)| *p == pid) {
            if holds > entry.1 {
                entry.1 = holds;
                crate::target::send_sigcont(pid);
            }
        }
    }

    /// How often process `pid` executed a program and forked so far, and
    /// when (bpf_ktime_get_ns) it last executed one.
    pub fn notices(&self, pid: u32) -> abi::Notices {
        self.notices.lookup(&pid).unwrap_or_default()
    }

    /// Drops the records process `tgid` made before `before_ns` (its memory
    /// is gone: it executed a new program). Per-stack totals cannot be split
    /// by time: with --combined-only they start over, otherwise reports stop
    /// using them.
    pub fn forget_process(&mut self, tgid: u32, before_ns: u64) -> Result<usize> {
        let mut keys = Vec::new();
        self.allocs
            .dump(|k, v| {
                if k.tgid == tgid && v.timestamp_ns < before_ns {
                    keys.push(*k);
                }
            })
            .map_err(|e| Error::bpf_io("cannot read the allocation table", e))?;
        let dropped = keys.iter().filter(|k| self.allocs.delete(*k)).count();
        self.sums_stale = true;
        let mut stacks = Vec::new();
        self.combined
            .dump(|k, _| stacks.push(*k))
            .map_err(|e| Error::bpf_io("cannot read the combined table", e))?;
        for k in &stacks {
            self.combined.delete(k);
        }
        Ok(dropped)
    }

    fn attach_kernel(&mut self, events: &tracepoints::KernelEvents) -> Result<()> {
        for name in &events.missing {
            crate::verbose!("this kernel has no {name} tracepoint");
        }
        let path = self.plan.kernel_path;
        for (i, (event, def)) in events
            .events
            .iter()
            .zip(tracepoints::EVENTS.iter())
            .enumerate()
        {
            let Some((_, id)) = event else { continue };
            let prog = programs::kernel_event(i, path);
            let link = match path {
                KernelPath::Tracepoints => self.obj.attach_tracepoint(prog, *id),
                KernelPath::TpBtf => self.obj.attach_tp_btf(prog),
                KernelPath::RawTp => self.obj.attach_raw_tracepoint(prog, def.name),
            };
            let link = link.map_err(|e| {
                bpf_failure(
                    format!("cannot attach to tracepoint {}:{}", def.category, def.name),
                    e,
                )
                .noted(if path == KernelPath::Tracepoints {
                    ""
                } else {
                    " (--fallback tracepoints takes the classic tracepoints)"
                })
            })?;
            self.links.push((0, usize::MAX, link));
            let rescue = self.plan.rescue_programs.iter().find(|(e, _)| *e == i);
            if let Some(&(_, rescue)) = rescue {
                let link = match path {
                    KernelPath::TpBtf => self.obj.attach_tp_btf(rescue),
                    _ => self.obj.attach_raw_tracepoint(rescue, def.name),
                };
                // Without it frees in interrupts are lost and counted as today.
                match link {
                    Ok(link) => self.links.push((0, usize::MAX, link)),
                    Err(e) => crate::verbose!("cannot attach {rescue}: {e}"),
                }
            }
        }
        match path {
            KernelPath::Tracepoints => crate::verbose!(
                "attached {} tracepoints (field offsets from {:?})",
                self.links.len(),
                events.source
            ),
            path => crate::verbose!(
                "attached {} raw tracepoints ({})",
                self.links.len(),
                if path == KernelPath::TpBtf {
                    "tp_btf"
                } else {
                    "raw_tp"
                }
            ),
        }
        Ok(())
    }

    /// Two links in all: every entry, every return.
    fn attach_user_multi(&mut self, pid: u32, allocator: &Allocator) -> Result<()> {
        let sites = plan::probe_sites(allocator, self.plan.entry_sites);
        let cookie = |&(f, o): &(Func, u64)| (o, f as u64);
        let returns: Vec<(u64, u64)> = sites
            .iter()
            .filter(|(f, _)| has_return_probe(*f))
            .map(cookie)
            .collect();
        let entries: Vec<(u64, u64)> = sites.iter().map(cookie).collect();
        let fail = |e: io::Error| {
            bpf_failure(
                format!("cannot attach uprobes in {}", allocator.display_path),
                e,
            )
        };
        // Returns first, as in attach_function.
        let exit = self
            .obj
            .attach_uprobe_multi(
                programs::name(Role::MultiReturn),
                pid as i32,
                &allocator.attach_path,
                &returns,
                true,
            )
            .map_err(fail)?;
        self.links.push((pid, self.attaching, exit));
        let entry = self
            .obj
            .attach_uprobe_multi(
                programs::name(Role::MultiEntry),
                pid as i32,
                &allocator.attach_path,
                &entries,
                false,
            )
            .map_err(fail)?;
        self.links.push((pid, self.attaching, entry));
        crate::verbose!(
            "attached {} functions of {} with uprobe_multi links",
            sites.len(),
            allocator.display_path
        );
        Ok(())
    }

    fn attach_user(&mut self, pid: u32, allocator: &Allocator) -> Result<()> {
        for (func, offset) in plan::probe_sites(allocator, self.plan.entry_sites) {
            if let Err(e) = self.attach_function(pid, allocator, func, offset) {
                let err = bpf_failure(
                    format!(
                        "cannot attach uprobe to {} in {}",
                        func.name(),
                        allocator.display_path
                    ),
                    e,
                );
                if is_mandatory(func) {
                    return Err(err);
                }
                eprintln!("memleak: warning: {err}");
                self.failed_attaches += 1;
            }
        }
        let attached = self.links.iter().filter(|(p, _, _)| *p == pid).count();
        crate::verbose!(
            "attached {attached} probes to {} for pid {pid}",
            allocator.display_path
        );
        Ok(())
    }

    /// The return probe goes first: an entry seen without its return would
    /// leave a call in flight forever, while a return without its entry is
    /// simply ignored.
    fn attach_function(
        &mut self,
        pid: u32,
        allocator: &Allocator,
        func: Func,
        offset: u64,
    ) -> Result<(), io::Error> {
        let (entry_prog, exit_prog) = if self.plan.empty_probes {
            (
                programs::name(Role::EmptyEntry),
                programs::name(Role::EmptyReturn),
            )
        } else {
            (programs::entry(func), programs::name(Role::Return))
        };
        if has_return_probe(func) {
            let exit = self.obj.attach_uprobe(
                exit_prog,
                pid as i32,
                &allocator.attach_path,
                offset,
                true,
            )?;
            self.links.push((pid, self.attaching, exit));
        }
        let entry = self.obj.attach_uprobe(
            entry_prog,
            pid as i32,
            &allocator.attach_path,
            offset,
            false,
        )?;
        self.links.push((pid, self.attaching, entry));
        Ok(())
    }

    /// --unwind cfi: rebuilds the unwind rows when a process's executable
    /// mappings changed (its loader mapped libraries, a dlopen).
    pub fn refresh_unwind_rows(&mut self, pids: &[u32]) -> Result<()> {
        let Some(cfi) = &mut self.cfi else {
            return Ok(());
        };
        match cfi.builder.rebuild_if_changed(pids) {
            Some(tables) => cfi.load(&tables),
            None => Ok(()),
        }
    }

    /// --unwind cfi with -c: a probe at the command's entry point that
    /// stops it (SIGSTOP), once its loader has mapped the libraries and
    /// before main runs, for the caller to load their unwind rows. False
    /// when there is none (another mode, or no ELF entry point found).
    pub fn attach_entry_stop(&mut self, pid: u32, exe_path: &str) -> bool {
        if self.cfi.is_none() {
            return false;
        }
        let Some(offset) = self.entry_offset(exe_path) else {
            return false;
        };
        match self.obj.attach_uprobe(
            programs::name(Role::EntryStop),
            pid as i32,
            exe_path,
            offset,
            false,
        ) {
            Ok(link) => {
                self.entry_stop = Some(link);
                true
            }
            Err(e) => {
                self.entry_unheld(exe_path, &e.to_string());
                false
            }
        }
    }

    /// The file offset of `exe_path`'s entry point, for a hold there;
    /// `None` when there is none. An ELF file without one counts as a
    /// program not held; a file that is no ELF file (a `#!` script under
    /// -c) does not: the interpreter it runs is held when it executes.
    fn entry_offset(&mut self, exe_path: &str) -> Option<u64> {
        let file = crate::elf::open(exe_path);
        let is_elf = file
            .as_ref()
            .is_ok_and(|file| file.header_error().is_none());
        match file.map(|file| file.entry_file_offset()) {
            Ok(Some(offset)) => Some(offset),
            Ok(None) if is_elf => {
                self.entry_unheld(exe_path, "no entry point in its file");
                None
            }
            Ok(None) => {
                crate::verbose!("no entry point to hold in {exe_path}: not an ELF file");
                None
            }
            Err(e) => {
                crate::verbose!("no entry point to hold in {exe_path}: {e}");
                None
            }
        }
    }

    /// A program that runs unheld: its first stacks through libraries
    /// whose rows are not loaded yet may stop short, which the report's
    /// `lost:` line says.
    fn entry_unheld(&mut self, exe_path: &str, why: &str) {
        crate::verbose!("cannot hold {exe_path} at its entry point: {why}");
        self.entries_unheld += 1;
    }

    /// --unwind cfi: holds process `pid`, which executed `exe_path`, at its
    /// entry point (as at dlclose, released the same way) for the rows of
    /// the libraries its loader maps to be loaded first. A stale process's
    /// range is dropped at once: its rows describe the memory it had.
    pub fn hold_at_entry(&mut self, pid: u32, exe_path: &str) -> Result<()> {
        if self.cfi.is_none() {
            return Ok(());
        }
        let (stale, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.entry_holds)
            .into_iter()
            .partition(|(p, _)| *p == pid);
        self.entry_holds = kept;
        release_links(stale.into_iter().map(|(_, link)| link).collect());
        self.refresh_unwind_rows(&[pid])?;
        let Some(offset) = self.entry_offset(exe_path) else {
            return Ok(());
        };
        match self.obj.attach_uprobe(
            programs::name(Role::Dlclose),
            pid as i32,
            exe_path,
            offset,
            false,
        ) {
            Ok(link) => self.entry_holds.push((pid, link)),
            Err(e) => self.entry_unheld(exe_path, &e.to_string()),
        }
        Ok(())
    }

    /// Removes the entry-point probe of `attach_entry_stop` once it served.
    pub fn drop_entry_stop(&mut self) {
        self.entry_stop = None;
    }

    /// Stops tracing: every probe goes away with its link. Each uprobe
    /// link's release waits for a grace period (about 40 ms here), so they
    /// are released in parallel, and memleak stops in one wait, not one per
    /// link.
    pub fn detach(&mut self) {
        let links: Vec<Link> = self
            .links
            .drain(..)
            .map(|(_, _, link)| link)
            .chain(self.watch_links.drain(..))
            .chain(self.dlclose_links.drain(..).map(|(_, _, link)| link))
            .chain(self.entry_holds.drain(..).map(|(_, link)| link))
            .collect();
        release_links(links);
        // Nothing can stop a target any more: let go of any still held.
        let pids: Vec<u32> = self.released_holds.iter().map(|(p, _)| *p).collect();
        for pid in pids {
            self.release_hold(pid);
        }
    }

    pub fn ring_fd(&self) -> Option<i32> {
        self.ring.as_ref().map(|r| r.epoll_fd())
    }

    pub fn consume_events(&mut self) {
        if let Some(ring) = &mut self.ring {
            ring.consume();
        }
    }

    /// The fd that polls readable when stack copies wait (--unwind dwarf).
    pub fn samples_fd(&self) -> Option<i32> {
        self.samples.as_ref().map(|(r, _)| r.epoll_fd())
    }

    /// Every stack copy waiting, oldest first.
    pub fn take_samples(&mut self) -> Vec<UnwindSample> {
        let Some((ring, queue)) = &mut self.samples else {
            return Vec::new();
        };
        ring.consume();
        let raw = std::mem::take(&mut *queue.borrow_mut());
        raw.iter().filter_map(|b| UnwindSample::parse(b)).collect()
    }

    /// Hands every outstanding allocation to `visit`, in one batched pass
    /// over the map; returns how many there were.
    pub fn for_each_allocation(&self, mut visit: impl FnMut(&Allocation)) -> Result<usize> {
        let mut n = 0;
        self.allocs
            .dump(|k, v| {
                n += 1;
                visit(&Allocation {
                    addr: k.addr,
                    size: v.size,
                    timestamp_ns: v.timestamp_ns,
                    stack_id: v.stack_id,
                    tgid: k.tgid,
                })
            })
            .map_err(|e| Error::bpf_io("cannot read the allocation table", e))?;
        Ok(n)
    }

    pub fn keeps_stack_sums(&self) -> bool {
        self.plan.stack_sums()
    }

    /// Per-stack totals of every outstanding allocation, as BPF keeps them
    /// (see [`Plan::stack_sums`]); None when it does not, or when they are
    /// incomplete (their map overflowed, or an exec dropped older records):
    /// then [`Tracer::for_each_allocation`] gives the exact answer.
    pub fn stack_sums(&self) -> Result<Option<Vec<StackTotal>>> {
        if !self.plan.stack_sums() || self.sums_stale || self.loss(abi::LOSS_COMBINED_FULL) > 0 {
            return Ok(None);
        }
        let mut totals = self.combined()?;
        for t in &mut totals {
            t.tgid = self.plan.config.target_tgid;
            // A free that runs between another thread's insert and its sum
            // update leaves a sum below zero for a moment: none outstanding.
            if (t.count as i64) < 0 || (t.bytes as i64) < 0 {
                (t.count, t.bytes) = (0, 0);
            }
        }
        Ok(Some(totals))
    }

    /// Per-stack totals kept in BPF (--combined-only).
    pub fn combined(&self) -> Result<Vec<StackTotal>> {
        let mut out = Vec::new();
        self.combined
            .dump(|k, v| {
                out.push(StackTotal {
                    stack_id: *k,
                    bytes: v.total_size,
                    count: v.number_of_allocs,
                    ..Default::default()
                })
            })
            .map_err(|e| Error::bpf_io("cannot read the combined table", e))?;
        Ok(out)
    }

    pub fn stack(&self, stack_id: u64) -> Option<Vec<u64>> {
        self.stacks.lookup_stack(stack_id)
    }

    fn loss(&self, kind: usize) -> u64 {
        self.losses.lookup(&(kind as u32)).iter().sum()
    }

    pub fn losses(&self) -> Losses {
        let sum = |i: usize| self.loss(i);
        let rescued = sum(abi::RESCUED_FREES);
        Losses {
            allocs_map_full: sum(abi::LOSS_ALLOCS_FULL),
            stacks_lost: sum(abi::LOSS_STACK),
            // Otherwise the sums are a shortcut, and reports that cannot
            // take it copy every allocation out instead: nothing is lost.
            combined_map_full: if self.plan.combined_only {
                sum(abi::LOSS_COMBINED_FULL)
            } else {
                0
            },
            events_dropped: sum(abi::LOSS_EVENTS),
            inflight_full: sum(abi::LOSS_INFLIGHT_FULL),
            missed_returns: sum(abi::LOSS_MISSED_RETURN),
            untracked_calls: sum(abi::LOSS_UNTRACKED),
            copy_fallbacks: sum(abi::LOSS_COPY_FALLBACK),
            // A skipped free program whose rescue did its work lost nothing.
            recursion_misses: self
                .plan
                .programs
                .iter()
                .map(|p| self.obj.recursion_misses(p))
                .sum::<u64>()
                .saturating_sub(rescued),
            recursion_missed_frees: self
                .plan
                .free_programs
                .iter()
                .map(|p| self.obj.recursion_misses(p))
                .sum::<u64>()
                .saturating_sub(rescued),
            failed_attaches: self.failed_attaches,
            execs_unheld: sum(abi::LOSS_EXEC_UNHELD),
            dlcloses_unheld: sum(abi::LOSS_DLCLOSE_UNHELD),
            entries_unheld: self.entries_unheld,
        }
    }
}

/// Drops links in parallel: each uprobe link's release waits for a grace
/// period.
/// Process `pid`'s count in a per-process list of counts (0 if absent).
fn count_for(counts: &[(u32, u64)], pid: u32) -> u64 {
    counts
        .iter()
        .find(|(p, _)| *p == pid)
        .map_or(0, |(_, n)| *n)
}

fn release_links(links: Vec<Link>) {
    std::thread::scope(|scope| {
        for link in links {
            // Without a thread the closure, and the link in it, is
            // dropped right here: one wait longer, nothing left behind.
            let _ = std::thread::Builder::new().spawn_scoped(scope, move || drop(link));
        }
    });
}

impl Drop for Tracer {
    /// Whatever way a run ends, no probe stays and no target stays stopped.
    fn drop(&mut self) {
        self.detach();
    }
}

fn libc_bpf_f_no_prealloc() -> u32 {
    libbpf_sys::BPF_F_NO_PREALLOC
}

pub fn page_size() -> u32 {
    crate::sys::page_size().map_or(4096, |size| size as u32)
}

fn privilege_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (run as root, or grant CAP_BPF and CAP_PERFMON)"
        }
        _ => "",
    }
}

/// A failed load or attach, with a hint when it was refused for want of
/// privileges.
fn bpf_failure(op: impl Into<String>, e: io::Error) -> Error {
    let hint = privilege_hint(&e);
    Error::bpf_io(op, e).noted(hint)
}
