//! Turning stack addresses into `symbol+0xoff [module]` frames, for user
//! processes (ELF symbols through /proc/PID/maps) and the kernel
//! (/proc/kallsyms).

pub mod demangle;
pub mod kallsyms;
pub mod source;
pub mod unwind;

use std::collections::HashMap;
use std::fmt;

use crate::elf::{ElfFile, ElfSymbols};
use crate::process::maps::{self as proc_maps, MapEntry};
use crate::process::{debug_file, open_mapped};
use kallsyms::Kallsyms;

/// One resolved stack frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// Demangled symbol name.
    pub symbol: Option<String>,
    /// Offset of the address from the symbol's start.
    pub offset: u64,
    /// File base name (`libc.so.6`), or `kernel` / a kernel module's name.
    pub module: Option<String>,
    /// Source file (as the compiler recorded it) and line, from DWARF.
    pub source: Option<(String, u32)>,
    /// A function inlined into the frame that follows it: it has a name
    /// and a line but no address of its own.
    pub inlined: bool,
}

impl Frame {
    fn unknown(module: Option<String>) -> Frame {
        Frame {
            module,
            ..Frame::default()
        }
    }
}

impl fmt::Display for Frame {
    /// `sym+0xoff [module]`, `[unknown] [module]` or `[unknown]`, then
    /// ` file.c:123` when the line is known; an inlined function shows as
    /// `sym [module] file.c:12 (inlined)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.symbol {
            Some(s) if self.inlined => f.write_str(s)?,
            Some(s) => write!(f, "{s}+{:#x}", self.offset)?,
            None => f.write_str("[unknown]")?,
        }
        if let Some(m) = &self.module {
            write!(f, " [{m}]")?;
        }
        if let Some((file, line)) = &self.source {
            let base = file.rsplit('/').next().unwrap_or(file);
            write!(f, " {base}:{line}")?;
        }
        if self.inlined {
            f.write_str(" (inlined)")?;
        }
        Ok(())
    }
}

/// Identifies a file independent of its path: (dev major, dev minor, inode).
type FileKey = (u32, u32, u64);

/// Symbolizes addresses of one process.
pub struct ProcessSymbolizer {
    pid: u32,
    maps_text: String,
    maps: Vec<MapEntry>,
    /// Parsed files, failures included (`None`) so they are tried once.
    cache: HashMap<FileKey, Option<ElfSymbols>>,
    /// Their call frame information, read on the first unwind through them.
    cfi: HashMap<FileKey, Option<unwind::CfiTable>>,
    /// Their DWARF line tables, read when a report first shows them.
    lines: HashMap<FileKey, Option<source::SourceLines>>,
}

impl ProcessSymbolizer {
    /// Takes a first snapshot of the process's mappings right away.
    pub fn new(pid: u32) -> Self {
        let mut s = ProcessSymbolizer {
            pid,
            maps_text: String::new(),
            maps: Vec::new(),
            cache: HashMap::new(),
            cfi: HashMap::new(),
            lines: HashMap::new(),
        };
        s.refresh();
        s
    }

    /// Rereads /proc/PID/maps. Returns false if the process is gone or the
    /// file unreadable; the previous snapshot is kept then, so addresses
    /// from a process that has exited still resolve.
    pub fn refresh(&mut self) -> bool {
        let text = match std::fs::read_to_string(format!("/proc/{}/maps", self.pid)) {
            Ok(t) => t,
            Err(_) => return false,
        };
        // A zombie's maps file reads as empty: that is "gone", not "no mappings".
        if text.is_empty() {
            return false;
        }
        if text != self.maps_text {
            self.maps = merge_maps(proc_maps::parse(&text), &self.maps);
            self.maps_text = text;
        }
        true
    }

    /// Resolves one user-space address.
    pub fn symbolize(&mut self, addr: u64) -> Frame {
        let Some(entry) = proc_maps::find(&self.maps, addr) else {
            return Frame::unknown(None);
        };
        if !entry.is_file() {
            // Anonymous memory (JIT code), [vdso], [heap]: nothing to read.
            return Frame::unknown(None);
        }
        let module = Some(entry.module_name().to_string());
        let Some(syms) = load_cached(&mut self.cache, self.pid, entry) else {
            return Frame::unknown(module);
        };
        // As MapEntry::file_offset, without overflow on a bogus offset.
        match (addr - entry.start).checked_add(entry.offset) {
            Some(offset) => frame_at(syms, module, offset),
            None => Frame::unknown(module),
        }
    }

    /// Resolves a return address (every address of a stack is one) with
    /// source lines where debug info exists: see [`frames_at`].
    pub fn symbolize_with_lines(&mut self, addr: u64) -> Vec<Frame> {
        let Some(entry) = proc_maps::find(&self.maps, addr)
            .filter(|e| e.is_file())
            .cloned()
        else {
            return vec![self.symbolize(addr)];
        };
        let module = Some(entry.module_name().to_string());
        let key = (entry.dev_major, entry.dev_minor, entry.inode);
        let pid = self.pid;
        load_cached(&mut self.cache, pid, &entry);
        let lines = self.lines.entry(key).or_insert_with(|| {
            open_mapped(pid, &entry).and_then(|file| source_lines(&file, pid, &entry.path))
        });
        let (Some(syms), Some(offset)) = (
            self.cache.get(&key).and_then(Option::as_ref),
            (addr - entry.start).checked_add(entry.offset),
        ) else {
            return vec![Frame::unknown(module)];
        };
        frames_at(syms, lines.as_ref(), module, offset)
    }

    /// Where `addr` lies: the mapped file's path (as the process sees it),
    /// its build ID, and the file offset. For `--raw` reports, which are
    /// symbolized elsewhere.
    pub fn raw(&mut self, addr: u64) -> Option<(String, Option<Vec<u8>>, u64)> {
        let entry = proc_maps::find(&self.maps, addr)
            .filter(|e| e.is_file())?
            .clone();
        let build_id = load_cached(&mut self.cache, self.pid, &entry)
            .and_then(|s| s.build_id().map(<[u8]>::to_vec));
        Some((
            entry.path.clone(),
            build_id,
            (addr - entry.start).checked_add(entry.offset)?,
        ))
    }

    /// The mapping `addr` lies in and its file's build ID (for --pprof).
    pub fn mapped_file(&mut self, addr: u64) -> Option<(MapEntry, Option<Vec<u8>>)> {
        let entry = proc_maps::find(&self.maps, addr)
            .filter(|e| e.is_file())?
            .clone();
        let build_id = load_cached(&mut self.cache, self.pid, &entry)
            .and_then(|s| s.build_id().map(<[u8]>::to_vec));
        Some((entry, build_id))
    }

    /// The return addresses of a stack copied at `regs.sp` (see
    /// [`unwind::unwind`]), through this process's mappings.
    pub fn unwind(&mut self, regs: unwind::Registers, stack: &[u8], max: usize) -> Vec<u64> {
        // Load every table the walk may need first: the walk borrows them.
        let mut wanted = Vec::new();
        for e in self
            .maps
            .iter()
            .filter(|e| e.is_executable() && e.is_file())
        {
            let key = (e.dev_major, e.dev_minor, e.inode);
            if !self.cfi.contains_key(&key) && !wanted.iter().any(|(k, _)| *k == key) {
                wanted.push((key, e.clone()));
            }
        }
        let pid = self.pid;
        for (key, entry) in wanted {
            let table = open_mapped(pid, &entry).and_then(|file| unwind::CfiTable::of(&file));
            self.cfi.insert(key, table);
        }
        let (maps, cfi) = (&self.maps, &self.cfi);
        unwind::unwind(regs, stack, max, |ip| {
            let e = proc_maps::find(maps, ip).filter(|e| e.is_file())?;
            let table = cfi.get(&(e.dev_major, e.dev_minor, e.inode))?.as_ref()?;
            let vaddr = table.vaddr_of((ip - e.start).checked_add(e.offset)?)?;
            Some((table, vaddr))
        })
    }

    /// Parses (and caches) every executable file mapping now, so that the
    /// files stay resolvable after the process exits or they are replaced.
    pub fn prefetch(&mut self) {
        for entry in self
            .maps
            .iter()
            .filter(|e| e.is_executable() && e.is_file())
        {
            load_cached(&mut self.cache, self.pid, entry);
        }
    }
}

fn load_cached<'c>(
    cache: &'c mut HashMap<FileKey, Option<ElfSymbols>>,
    pid: u32,
    entry: &MapEntry,
) -> Option<&'c ElfSymbols> {
    cache
        .entry((entry.dev_major, entry.dev_minor, entry.inode))
        .or_insert_with(|| {
            open_mapped(pid, entry).and_then(|file| parse_with_debug_file(&file, pid, &entry.path))
        })
        .as_ref()
}

/// A mapped file's symbols; for a stripped file, those of its separate
/// debug file when one is installed (as the process sees the filesystem).
fn parse_with_debug_file(file: &ElfFile, pid: u32, path: &str) -> Option<ElfSymbols> {
    symbols_under(file, path, &format!("/proc/{pid}/root"))
}

/// The frames of a return address at `file_offset` in an object with
/// symbols `syms` (and DWARF `lines`): the functions inlined at the call
/// first, then the function the address is in, as `sym+0xoff`, each with
/// the source line of the call (looked up at the address minus one: the
/// call is the instruction before the return address). Live reports and
/// `memleak symbolize` both use it, so both print the same frames.
pub fn frames_at(
    syms: &ElfSymbols,
    lines: Option<&source::SourceLines>,
    module: Option<String>,
    file_offset: u64,
) -> Vec<Frame> {
    let mut frame = frame_at(syms, module, file_offset);
    let found = match (lines, syms.file_offset_to_vaddr(file_offset)) {
        (Some(lines), Some(vaddr)) => lines.lookup(vaddr.wrapping_sub(1)),
        _ => Vec::new(),
    };
    let Some((outer, inlined)) = found.split_last() else {
        return vec![frame];
    };
    let located = |s: &source::SourceFrame| Some((s.file.clone()?, s.line?));
    frame.source = located(outer);
    let mut frames: Vec<Frame> = inlined
        .iter()
        .map(|s| Frame {
            symbol: s
                .function
                .as_deref()
                .map(|n| demangle::demangle(n).into_owned()),
            module: frame.module.clone(),
            source: located(s),
            inlined: true,
            ..Frame::default()
        })
        .collect();
    frames.push(frame);
    frames
}

/// A new snapshot of a process's mappings, plus the earlier mappings it no
/// longer shows where nothing else took their place. Addresses recorded
/// while a library was mapped stay nameable after it is unmapped, and a
/// snapshot read while the process tears down its address space at exit
/// does not erase what its stacks point into.
fn merge_maps(new: Vec<MapEntry>, old: &[MapEntry]) -> Vec<MapEntry> {
    let overlaps = |o: &MapEntry| new.iter().any(|n| n.start < o.end && o.start < n.end);
    let kept: Vec<MapEntry> = old.iter().filter(|o| !overlaps(o)).cloned().collect();
    let mut merged = new;
    merged.extend(kept);
    merged.sort_by_key(|e| e.start);
    merged
}

/// `sym+0xoff [module]` of a file offset, from the symbol table alone.
fn frame_at(syms: &ElfSymbols, module: Option<String>, file_offset: u64) -> Frame {
    match syms.lookup_file_offset(file_offset) {
        Some((name, off)) => Frame {
            symbol: Some(demangle::demangle(name).into_owned()),
            offset: off,
            module,
            ..Frame::default()
        },
        None => Frame::unknown(module),
    }
}

/// A mapped file's DWARF lines, or its separate debug file's.
fn source_lines(file: &ElfFile, pid: u32, path: &str) -> Option<source::SourceLines> {
    source_lines_under(file, path, &format!("/proc/{pid}/root"))
}

/// A file's DWARF lines, or those of its separate debug file under `root`.
pub fn source_lines_under(file: &ElfFile, path: &str, root: &str) -> Option<source::SourceLines> {
    source::SourceLines::of(file).or_else(|| {
        let (_, debug) = debug_file::find(file, path, root)?;
        source::SourceLines::of(&debug)
    })
}

/// A file's symbols, or for a stripped file its debug file's (under
/// `root`).
pub fn symbols_under(file: &ElfFile, path: &str, root: &str) -> Option<ElfSymbols> {
    let syms = file.symbols().ok()?;
    if !syms.is_stripped() {
        return Some(syms);
    }
    let debug = debug_file::find(file, path, root).and_then(|(_, debug)| debug.symbols().ok());
    Some(match debug {
        Some(debug) if !debug.is_stripped() => syms.with_symbols_of(debug),
        _ => syms,
    })
}

/// Symbolizes kernel addresses with /proc/kallsyms, read once.
pub struct KernelSymbolizer {
    kallsyms: Kallsyms,
}

impl KernelSymbolizer {
    pub fn load() -> std::io::Result<Self> {
        let text = std::fs::read_to_string("/proc/kallsyms")?;
        Ok(Self::from_kallsyms(Kallsyms::parse(&text)))
    }

    pub fn from_kallsyms(kallsyms: Kallsyms) -> Self {
        KernelSymbolizer { kallsyms }
    }

    /// True when kallsyms shows only zero addresses (kptr_restrict), so
    /// every kernel frame will be `[unknown]`.
    pub fn addresses_hidden(&self) -> bool {
        self.kallsyms.addresses_hidden()
    }

    /// The lowest and highest text address of the kernel and its modules.
    pub fn text_range(&self) -> Option<(u64, u64)> {
        self.kallsyms.text_range()
    }

    /// How many frames at the top of a kernel stack belong to the tracing
    /// machinery rather than to the allocator: a raw tracepoint program
    /// takes its stack from inside itself, so its own frames (`[bpf]`) and
    /// the kernel's bpf_trace_run*, __bpf_trace_* and __traceiter_* come
    /// first. Classic tracepoint stacks start at the allocator: 0.
    pub fn tracing_frames(&self, ips: &[u64]) -> usize {
        ips.iter()
            .take_while(|&&ip| {
                self.kallsyms.lookup(ip).is_some_and(|s| {
                    s.module == Some("bpf")
                        || ["bpf_trace_run", "__bpf_trace_", "__traceiter_"]
                            .iter()
                            .any(|p| s.name.starts_with(p))
                })
            })
            .count()
    }

    pub fn symbolize(&self, addr: u64) -> Frame {
        match self.kallsyms.lookup(addr) {
            Some(s) => Frame {
                // Rust-for-Linux symbols are mangled.
                symbol: Some(demangle::demangle(s.name).into_owned()),
                offset: s.offset,
                module: Some(s.module.unwrap_or("kernel").to_string()),
                ..Frame::default()
            },
            None => Frame::unknown(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_maps_keep_what_was_unmapped() {
        let old = proc_maps::parse(
            "1000-2000 r-xp 00000000 fe:00 7 /usr/bin/prog\n3000-4000 r-xp 00000000 fe:00 8 /usr/lib/libgone.so\n",
        );
        let new = proc_maps::parse(
            "1000-2000 r-xp 00000000 fe:00 7 /usr/bin/prog\n3800-5000 rw-p 00000000 00:00 0\n",
        );
        let merged = merge_maps(new, &old);
        // libgone overlaps the new anonymous mapping: the new one wins.
        assert_eq!(
            merged.iter().map(|e| e.start).collect::<Vec<_>>(),
            vec![0x1000, 0x3800]
        );
        let teardown = proc_maps::parse("1000-2000 r-xp 00000000 fe:00 7 /usr/bin/prog\n");
        let merged = merge_maps(teardown, &old);
        assert_eq!(merged.len(), 2, "{merged:?}");
        assert_eq!(
            proc_maps::find(&merged, 0x3500).map(|e| e.path.as_str()),
            Some("/usr/lib/libgone.so")
        );
    }

    #[test]
    fn frame_display() {
        let f = |s: Option<&str>, offset, m: Option<&str>| {
            Frame {
                symbol: s.map(String::from),
                offset,
                module: m.map(String::from),
                ..Frame::default()
            }
            .to_string()
        };
        assert_eq!(f(Some("main"), 0x6d, Some("allocs")), "main+0x6d [allocs]");
        assert_eq!(
            f(Some("malloc"), 0, Some("libc.so.6")),
            "malloc+0x0 [libc.so.6]"
        );
        assert_eq!(f(Some("x"), 0xABCDEF, Some("m")), "x+0xabcdef [m]");
        assert_eq!(f(None, 0, Some("libc.so.6")), "[unknown] [libc.so.6]");
        assert_eq!(f(None, 0, None), "[unknown]");
        let lined = Frame {
            symbol: Some("leak".into()),
            offset: 0x16,
            module: Some("p".into()),
            source: Some(("/src/p.c".into(), 22)),
            inlined: false,
        };
        assert_eq!(lined.to_string(), "leak+0x16 [p] p.c:22");
        let inlined = Frame {
            symbol: Some("helper".into()),
            source: Some(("h.h".into(), 3)),
            inlined: true,
            ..lined
        };
        assert_eq!(inlined.to_string(), "helper [p] h.h:3 (inlined)");
        assert_eq!(
            f(Some("kfree"), 0x1a, Some("kernel")),
            "kfree+0x1a [kernel]"
        );
        assert_eq!(f(Some("sym"), 1, None), "sym+0x1");
    }

    #[inline(never)]
    fn a_function_of_the_test_binary(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_mul(3)
    }

    // The test process must itself run on glibc (not a musl static build).
    #[cfg(target_env = "gnu")]
    #[test]
    fn self_process() {
        let mut s = ProcessSymbolizer::new(std::process::id());
        s.prefetch();
        let malloc = libc::malloc as *const () as usize as u64;
        let f = s.symbolize(malloc);
        assert!(
            f.symbol.as_deref() == Some("malloc") || f.symbol.as_deref() == Some("__libc_malloc"),
            "{f}"
        );
        assert_eq!(f.offset, 0);
        assert!(
            f.module.as_deref().is_some_and(|m| m.starts_with("libc")),
            "{f}"
        );
        let f = s.symbolize(malloc + 3);
        assert_eq!(f.offset, 3);

        // PIE test binary, Rust name demangled (no hash).
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe_name = exe.file_name().unwrap().to_str().unwrap().to_string();
        let here = a_function_of_the_test_binary as *const () as usize as u64;
        assert_eq!(a_function_of_the_test_binary(2), 6);
        let f = s.symbolize(here);
        let sym = f.symbol.as_deref().unwrap_or_default();
        assert!(sym.ends_with("tests::a_function_of_the_test_binary"), "{f}");
        assert_eq!(
            (f.offset, f.module.as_deref()),
            (0, Some(exe_name.as_str()))
        );

        // Unmapped and anonymous addresses.
        assert_eq!(s.symbolize(8).to_string(), "[unknown]");
        let heap = Box::new(5u64);
        assert_eq!(
            s.symbolize(&*heap as *const u64 as u64).to_string(),
            "[unknown]"
        );
    }

    // The test process must itself run on glibc (not a musl static build).
    #[cfg(target_env = "gnu")]
    #[test]
    fn exited_process_keeps_snapshot() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut s = ProcessSymbolizer::new(child.id());
        // spawn() returns while execve is still mapping the new image: the
        // maps can list only [stack] for a moment. Wait for libc.
        for _ in 0..200 {
            if s.maps
                .iter()
                .any(|e| e.is_executable() && e.path.contains("libc"))
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            s.refresh();
        }
        s.prefetch();
        let maps = s.maps.clone();
        // Where our malloc sits in the child's copy of the same libc.
        let own = proc_maps::parse(&std::fs::read_to_string("/proc/self/maps").unwrap());
        let malloc = libc::malloc as *const () as usize as u64;
        let own_entry = proc_maps::find(&own, malloc).unwrap();
        let file_off = own_entry.file_offset(malloc);
        let entry = maps
            .iter()
            .find(|e| {
                e.inode == own_entry.inode
                    && e.offset <= file_off
                    && file_off - e.offset < e.end - e.start
            })
            .expect("child maps the same libc");
        let child_malloc = file_off - entry.offset + entry.start;
        let before = s.symbolize(child_malloc);
        assert!(
            before
                .symbol
                .as_deref()
                .is_some_and(|n| n.contains("malloc")),
            "{before}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!s.refresh());
        assert_eq!(s.maps, maps);
        assert_eq!(s.symbolize(child_malloc), before);
    }

    #[test]
    fn missing_process() {
        // PIDs beyond pid_max never exist.
        let mut s = ProcessSymbolizer::new(u32::MAX);
        assert!(!s.refresh());
        assert_eq!(s.symbolize(0x400000).to_string(), "[unknown]");
        s.prefetch();
    }

    #[test]
    fn kernel() {
        let k = match KernelSymbolizer::load() {
            Ok(k) => k,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        if k.addresses_hidden() {
            eprintln!("kallsyms addresses hidden; skipping");
            return;
        }
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let line = text
            .lines()
            .find(|l| l.ends_with(" T _stext") || l.ends_with(" T _text"))
            .unwrap();
        let addr = u64::from_str_radix(&line[..16], 16).unwrap();
        let f = k.symbolize(addr + 1);
        assert_eq!((f.offset, f.module.as_deref()), (1, Some("kernel")), "{f}");
        assert_eq!(k.symbolize(1).to_string(), "[unknown]");

        let fake =
            KernelSymbolizer::from_kallsyms(Kallsyms::parse("ffffffffc0001000 t foo\t[mymod]\n"));
        assert_eq!(
            fake.symbolize(0xffffffffc0001010).to_string(),
            "foo+0x10 [mymod]"
        );
    }
}
