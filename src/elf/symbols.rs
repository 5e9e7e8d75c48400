//! The function and object symbols of one ELF file, by address and by
//! name, with one rule for which of several names at an address is shown.
//!
//! Only .symtab/.dynsym and their string tables are read, with
//! goblin's bounds-checked primitives: a corrupt file yields an error or
//! fewer symbols, never a panic.

use goblin::elf::section_header::{SHN_ABS, SHN_UNDEF, SHT_DYNSYM, SHT_SYMTAB};
use goblin::elf::sym::{
    STB_GLOBAL, STB_GNU_UNIQUE, STB_LOCAL, STB_WEAK, STT_FUNC, STT_GNU_IFUNC, STT_OBJECT,
};
use goblin::elf::{Elf, Sym as GSym, Symtab};
use goblin::options::ParseOptions;

use super::{c_str, section_bytes, Segments, Through};

/// How far back a lookup looks for an enclosing sized symbol when the
/// nearest one does not cover the address (nested symbols are rare).
const MAX_BACKSCAN: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Sym {
    addr: u64,
    size: u64,
    name_start: u32,
    name_len: u32,
}

/// The function and object symbols of an ELF file plus its PT_LOAD
/// segments: enough to turn a file offset into `symbol+offset`.
#[derive(Debug, Default)]
pub struct ElfSymbols {
    /// One entry per address (the preferred name), sorted by address.
    syms: Vec<Sym>,
    /// The other names found at those addresses, for lookups by name.
    aliases: Vec<Sym>,
    names: String,
    segments: Segments,
    build_id: Option<Vec<u8>>,
    /// A full .symtab was read, not only the exports in .dynsym.
    has_symtab: bool,
}

/// A symbol as read, before deduplication.
struct Candidate<'a> {
    addr: u64,
    size: u64,
    /// Lower is preferred among names at one address.
    rank: (bool, u8, u8, usize, usize),
    name: &'a str,
}

/// Parses an ELF file's bytes (tests, fuzzing, files named offline).
/// Errors only when the headers are unusable; a file without symbol
/// tables gives an `ElfSymbols` that resolves nothing.
pub fn parse(bytes: &[u8]) -> Result<ElfSymbols, String> {
    super::ElfFile::from_bytes(bytes.to_vec(), "").symbols()
}

/// The symbols of a file whose headers are already parsed.
pub(super) fn read(file: &super::ElfFile) -> Result<ElfSymbols, String> {
    let h = file.headers.as_ref().map_err(Clone::clone)?;
    let bytes = file.bytes();
    let (ctx, shdrs) = (h.ctx, &h.shdrs);
    // Thumb function addresses have bit 0 set; the code starts one byte lower.
    let thumb = h.machine == goblin::elf::header::EM_ARM;
    let mut cands = Vec::new();
    let mut tables = 0;
    let mut has_symtab = false;
    for sh in shdrs
        .iter()
        .filter(|s| s.sh_type == SHT_SYMTAB || s.sh_type == SHT_DYNSYM)
    {
        let entsize = GSym::size(ctx.container) as u64;
        if sh.sh_entsize != entsize {
            continue;
        }
        let (Ok(off), Some(strtab)) = (
            usize::try_from(sh.sh_offset),
            shdrs.get(sh.sh_link as usize),
        ) else {
            continue;
        };
        let Some(strtab) = section_bytes(bytes, strtab) else {
            continue;
        };
        let Ok(symtab) = Symtab::parse(bytes, off, (sh.sh_size / entsize) as usize, ctx) else {
            continue;
        };
        tables += 1;
        has_symtab |= sh.sh_type == SHT_SYMTAB;
        collect(&symtab, |i| c_str(strtab, i), thumb, &mut cands);
    }
    let dynamic;
    if tables == 0 {
        // No usable section headers (sstrip-ed or truncated file): the
        // dynamic linker's view through PT_DYNAMIC still has the exports.
        // Permissive, so that damage elsewhere does not hide them.
        if let Ok(elf) = Elf::parse_with_opts(bytes, &ParseOptions::permissive()) {
            dynamic = elf;
            collect(
                &dynamic.dynsyms,
                |i| dynamic.dynstrtab.get_at(i),
                thumb,
                &mut cands,
            );
        }
    }
    let mut syms = ElfSymbols::from_candidates(cands);
    syms.segments = h.segments.clone();
    syms.build_id = file.build_id();
    syms.has_symtab = has_symtab;
    Ok(syms)
}

/// Appends the function and object symbols of one table to `out`.
fn collect<'a>(
    symtab: &Symtab,
    name_at: impl Fn(usize) -> Option<&'a str>,
    thumb: bool,
    out: &mut Vec<Candidate<'a>>,
) {
    for s in symtab.iter() {
        let kind = s.st_type();
        if !matches!(kind, STT_FUNC | STT_GNU_IFUNC | STT_OBJECT)
            || s.st_shndx == SHN_UNDEF as usize
            || s.st_shndx == SHN_ABS as usize
        {
            continue;
        }
        let Some(name) = name_at(s.st_name) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        let addr = if thumb && kind == STT_FUNC {
            s.st_value & !1
        } else {
            s.st_value
        };
        out.push(Candidate {
            addr,
            size: s.st_size,
            rank: display_rank(name, s.st_bind(), kind),
            name,
        });
    }
}

/// The one rule for which of several names at one address a frame shows
/// (lower first): unversioned, global over weak over local, functions
/// over objects, fewer leading underscores (`malloc` over
/// `__libc_malloc`), shorter. (Aliases' sizes: the largest, see
/// `from_candidates`.)
fn display_rank(name: &str, bind: u8, kind: u8) -> (bool, u8, u8, usize, usize) {
    let bind = match bind {
        STB_GLOBAL => 0,
        STB_WEAK | STB_GNU_UNIQUE => 1,
        _ => 2,
    };
    let underscores = name.bytes().take_while(|&b| b == b'_').count();
    (
        name.contains('@'),
        bind,
        u8::from(kind == STT_OBJECT),
        underscores,
        name.len(),
    )
}

/// The one rule for which of several definitions of one name the dynamic
/// linker binds to, where a uprobe for that name belongs (lower first):
/// 0 a global or weak default-version symbol, 1 an old symbol version
/// (`hidden` in .gnu.version, or `name@VER` in .symtab), 2 a local symbol
/// (possibly some unrelated static function that happens to share the
/// name).
pub fn definition_rank(bind: u8, old_version: bool) -> u8 {
    if bind == STB_LOCAL {
        2
    } else if old_version {
        1
    } else {
        0
    }
}

/// A .symtab name split from its version: `malloc@@GLIBC_2.2.5` is the
/// default version (false), `realloc@GLIBC_2.0` an old one (true).
pub fn split_version(name: &str) -> (&str, bool) {
    match name.split_once('@') {
        Some((base, ver)) => (base, !ver.starts_with('@')),
        None => (name, false),
    }
}

impl ElfSymbols {
    fn from_candidates(mut cands: Vec<Candidate>) -> ElfSymbols {
        cands.sort_unstable_by(|a, b| (a.addr, a.rank, a.name).cmp(&(b.addr, b.rank, b.name)));
        // .symtab and .dynsym repeat most global names.
        cands.dedup_by(|b, a| a.addr == b.addr && a.name == b.name);
        let mut out = ElfSymbols {
            names: String::with_capacity(cands.iter().map(|c| c.name.len()).sum()),
            ..ElfSymbols::default()
        };
        for c in &cands {
            let (Ok(name_start), Ok(name_len)) =
                (u32::try_from(out.names.len()), u32::try_from(c.name.len()))
            else {
                break;
            };
            out.names.push_str(c.name);
            let sym = Sym {
                addr: c.addr,
                size: c.size,
                name_start,
                name_len,
            };
            match out.syms.last_mut() {
                Some(prev) if prev.addr == c.addr => {
                    // Aliases may disagree on size; the largest covers the most.
                    prev.size = prev.size.max(c.size);
                    out.aliases.push(sym);
                }
                _ => out.syms.push(sym),
            }
        }
        out
    }

    fn name(&self, s: &Sym) -> &str {
        let start = s.name_start as usize;
        self.names
            .get(start..start + s.name_len as usize)
            .unwrap_or("")
    }

    /// Only the exported symbols (or none) are known: a separate debug
    /// file may have the rest.
    pub fn is_stripped(&self) -> bool {
        !self.has_symtab
    }

    /// The symbols of `debug` (this file's separate debug file) with this
    /// file's segments, which are the ones mapped.
    pub fn with_symbols_of(self, debug: ElfSymbols) -> ElfSymbols {
        ElfSymbols {
            segments: self.segments,
            build_id: self.build_id,
            ..debug
        }
    }

    #[cfg(test)]
    #[allow(clippy::len_without_is_empty)] // a count for tests only
    /// Number of distinct symbol addresses.
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    /// The GNU build-id note, if the file has one.
    pub fn build_id(&self) -> Option<&[u8]> {
        self.build_id.as_deref()
    }

    /// Resolves a file offset (`addr - map.start + map.offset` from
    /// /proc/PID/maps) to the raw name of the symbol containing it and the
    /// offset into that symbol.
    pub fn lookup_file_offset(&self, file_offset: u64) -> Option<(&str, u64)> {
        self.lookup_vaddr(self.file_offset_to_vaddr(file_offset)?)
    }

    /// Link-time virtual address of a file offset (see [`Segments`]).
    pub fn file_offset_to_vaddr(&self, file_offset: u64) -> Option<u64> {
        self.segments.offset_to_vaddr(file_offset)
    }

    /// File offset of a link-time virtual address: what a uprobe on a
    /// symbol at `vaddr` needs.
    pub fn vaddr_to_file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments.vaddr_to_offset(vaddr, Through::Any)
    }

    /// Link-time address of a symbol by raw name (`malloc`); a versioned
    /// name in the table (`malloc@@GLIBC_2.2.5`) matches its base name.
    pub fn symbol_address(&self, name: &str) -> Option<u64> {
        let matches = |s: &&Sym| {
            let n = self.name(s);
            n == name || split_version(n).0 == name
        };
        // Prefer an exact unversioned match over a versioned one.
        let all = || self.syms.iter().chain(&self.aliases);
        all()
            .find(|s| self.name(s) == name)
            .or_else(|| all().find(matches))
            .map(|s| s.addr)
    }

    /// The symbol containing a link-time virtual address.
    ///
    /// A sized symbol must cover the address. A zero-sized symbol (common
    /// for hand-written assembly) is accepted only when it is the nearest
    /// one below the address, no sized symbol covers the address, and both
    /// lie in the same PT_LOAD segment: a gap after a sized symbol is code
    /// with no symbol (e.g. a static function stripped from .dynsym), and
    /// naming it after its neighbour would mislead.
    pub fn lookup_vaddr(&self, vaddr: u64) -> Option<(&str, u64)> {
        let i = self.syms.partition_point(|s| s.addr <= vaddr);
        let nearest = self.syms.get(i.checked_sub(1)?)?;
        let covering = self.syms[i.saturating_sub(MAX_BACKSCAN)..i]
            .iter()
            .rev()
            .find(|s| s.size > 0 && vaddr - s.addr < s.size);
        let s = match covering {
            Some(s) => s,
            None if nearest.size == 0 && self.segments.same_segment(nearest.addr, vaddr) => nearest,
            None => return None,
        };
        Some((self.name(s), vaddr - s.addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::Load;
    use crate::process::maps as proc_maps;
    use crate::test_support::{try_compile, TempDir};

    /// Path of the glibc this test binary runs with; a static (musl)
    /// test build uses the system's glibc file instead.
    fn libc_path() -> String {
        let maps = proc_maps::parse(&std::fs::read_to_string("/proc/self/maps").unwrap());
        let malloc = libc::malloc as *const () as usize as u64;
        if let Some(entry) = proc_maps::find(&maps, malloc)
            .filter(|e| e.is_file() && e.module_name().starts_with("libc"))
        {
            return entry.path.clone();
        }
        [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/aarch64-linux-gnu/libc.so.6",
            "/usr/aarch64-linux-gnu/lib/libc.so.6",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a glibc libc.so.6 on this machine")
        .to_string()
    }

    #[test]
    fn real_libc() {
        let path = libc_path();
        let bytes = std::fs::read(&path).unwrap();
        let t0 = std::time::Instant::now();
        let elf = parse(&bytes).unwrap();
        eprintln!("{path}: {} symbols in {:?}", elf.len(), t0.elapsed());
        assert!(elf.len() > 500);
        assert!(elf.build_id().is_some_and(|id| id.len() >= 16));

        let malloc = elf.symbol_address("malloc").expect("malloc in libc");
        let off = elf.vaddr_to_file_offset(malloc).unwrap();
        let (name, delta) = elf.lookup_file_offset(off).unwrap();
        assert!(["malloc", "__libc_malloc"].contains(&name), "{name}");
        assert_eq!(delta, 0);
        assert_eq!(elf.file_offset_to_vaddr(off), Some(malloc));
        let (name2, delta) = elf.lookup_file_offset(off + 5).unwrap();
        assert_eq!((name2, delta), (name, 5));
        assert_eq!(elf.symbol_address("__libc_malloc"), Some(malloc));
        assert_eq!(elf.symbol_address("no_such_symbol_here"), None);
        // Beyond every segment.
        assert_eq!(elf.lookup_file_offset(bytes.len() as u64 * 4), None);
    }

    #[test]
    fn truncated_and_garbage() {
        let libc = std::fs::read(libc_path()).unwrap();
        let maps = std::fs::read("/proc/self/maps").unwrap();
        // Deterministic pseudo-random bytes, some with an ELF header on top.
        let mut x = 0x2545f4914f6cdd1du64;
        let mut noise = vec![0u8; 1 << 16];
        for b in &mut noise {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let mut elf_noise = noise.clone();
        elf_noise[..64].copy_from_slice(&libc[..64]);
        let mut libc_bad_shdrs = libc.clone();
        let shoff = u64::from_le_bytes(libc[0x28..0x30].try_into().unwrap()) as usize;
        for b in &mut libc_bad_shdrs[shoff..] {
            *b = !*b;
        }
        let inputs: [(&str, &[u8]); 9] = [
            ("empty", &[]),
            ("64 bytes", &libc[..64]),
            ("4096 bytes", &libc[..4096]),
            ("half", &libc[..libc.len() / 2]),
            ("all but one", &libc[..libc.len() - 1]),
            ("noise", &noise),
            ("elf header + noise", &elf_noise),
            ("maps text", &maps),
            ("corrupt section headers", &libc_bad_shdrs),
        ];
        for (what, bytes) in inputs {
            match parse(bytes) {
                Ok(e) => {
                    for off in [0, 0x1000, 0x26000, 0x98930, u64::MAX] {
                        let _ = e.lookup_file_offset(off);
                        let _ = e.vaddr_to_file_offset(off);
                    }
                    eprintln!("{what}: Ok, {} symbols", e.len());
                }
                Err(err) => eprintln!("{what}: Err({err})"),
            }
        }
        assert!(parse(&[]).is_err());
        assert!(parse(&maps).is_err());
        assert!(parse(&noise).is_err());
    }

    #[test]
    fn no_section_headers_uses_dynamic() {
        let mut libc = std::fs::read(libc_path()).unwrap();
        // e_shoff = 0 and e_shnum = 0, as sstrip leaves a file (64-bit LE).
        libc[0x28..0x30].fill(0);
        libc[0x3c..0x3e].fill(0);
        let elf = parse(&libc).unwrap();
        let malloc = elf.symbol_address("malloc").expect("malloc via PT_DYNAMIC");
        let off = elf.vaddr_to_file_offset(malloc).unwrap();
        assert_eq!(elf.lookup_file_offset(off + 1).map(|(_, d)| d), Some(1));
        // Also when the section headers are there but cut off.
        let full = std::fs::read(libc_path()).unwrap();
        let cut = parse(&full[..full.len() - 1]).unwrap();
        assert_eq!(cut.symbol_address("malloc"), Some(malloc));
    }

    #[test]
    fn hand_made_lookup_rules() {
        let c = |addr, size, name| Candidate {
            addr,
            size,
            rank: (false, 0, 0, 0, 0),
            name,
        };
        let mut e = ElfSymbols::from_candidates(vec![
            c(0x1000, 0x100, "sized"),
            c(0x1080, 0, "label_inside"),
            c(0x1200, 0, "asm_func"),
            c(0x1300, 0x10, "small"),
            c(0x1400, 0x1000, "outer"),
            c(0x1500, 0x10, "inner"),
        ]);
        e.segments = Segments::new(vec![Load {
            offset: 0,
            vaddr: 0x1000,
            filesz: 0x1000,
            memsz: 0x1000,
            exec: true,
        }]);
        assert_eq!(e.lookup_vaddr(0xfff), None);
        assert_eq!(e.lookup_vaddr(0x1000), Some(("sized", 0)));
        // A zero-sized label inside a sized symbol loses to it.
        assert_eq!(e.lookup_vaddr(0x1090), Some(("sized", 0x90)));
        // The gap after `sized` holds a zero-sized symbol: accepted.
        assert_eq!(e.lookup_vaddr(0x1210), Some(("asm_func", 0x10)));
        // Past the end of a sized symbol: unknown.
        assert_eq!(e.lookup_vaddr(0x1310), None);
        // Nested sized symbols: the innermost wins, the outer covers the rest.
        assert_eq!(e.lookup_vaddr(0x1505), Some(("inner", 5)));
        assert_eq!(e.lookup_vaddr(0x1600), Some(("outer", 0x200)));
        assert_eq!(e.lookup_vaddr(0x2400), None);
        // File offsets go through the segment.
        assert_eq!(e.lookup_file_offset(0x5), Some(("sized", 5)));
        assert_eq!(e.lookup_file_offset(0x205), Some(("asm_func", 5)));
        assert_eq!(e.vaddr_to_file_offset(0x1200), Some(0x200));
        assert_eq!(e.lookup_file_offset(0x1000), None);
    }

    #[test]
    fn alias_preference() {
        let mut cands = Vec::new();
        for (name, bind) in [
            ("__libc_malloc", 0),
            ("malloc@GLIBC_2.2.5", 0),
            ("malloc", 0),
            ("local_malloc", 2),
        ] {
            let underscores = name.bytes().take_while(|&b| b == b'_').count();
            cands.push(Candidate {
                addr: 0x10,
                size: 8,
                rank: (name.contains('@'), bind, 0, underscores, name.len()),
                name,
            });
        }
        let e = ElfSymbols::from_candidates(cands);
        assert_eq!(e.len(), 1);
        assert_eq!(e.lookup_vaddr(0x12), Some(("malloc", 2)));
        assert_eq!(e.symbol_address("local_malloc"), Some(0x10));
    }

    const TWO_FUNCS: &str =
        "int helper(int x) { return x * 3; }\nint main(void) { return helper(2) - 6; }\n";

    #[test]
    fn elf32_and_big_endian() {
        let freestanding = [
            "-O0",
            "-nostdlib",
            "-static",
            "-Wl,-e,main",
            "-Wl,--build-id",
        ];
        let builds = [
            ("gcc", "-m32", "ELF32 little endian"),
            ("aarch64-linux-gnu-gcc", "-mbig-endian", "ELF64 big endian"),
        ];
        for (cc, flag, what) in builds {
            let mut args = vec![flag];
            args.extend(freestanding);
            let dir = TempDir::new(cc);
            let Some(exe) = try_compile(cc, &dir, "x", TWO_FUNCS, &args) else {
                eprintln!("{what}: no {cc} {flag}; skipping");
                continue;
            };
            let bytes = std::fs::read(exe).unwrap();
            let elf = parse(&bytes).unwrap();
            assert!(elf.build_id().is_some(), "{what}");
            for name in ["main", "helper"] {
                let addr = elf.symbol_address(name).unwrap();
                let off = elf.vaddr_to_file_offset(addr + 2).unwrap();
                assert_eq!(elf.lookup_file_offset(off), Some((name, 2)), "{what}");
            }
        }
    }

    #[test]
    fn non_pie_executable() {
        let dir = TempDir::new("non-pie");
        let Some(exe) = try_compile("gcc", &dir, "x", TWO_FUNCS, &["-no-pie", "-O0"]) else {
            eprintln!("no gcc; skipping");
            return;
        };
        let bytes = std::fs::read(exe).unwrap();
        let elf = parse(&bytes).unwrap();
        let main = elf.symbol_address("main").unwrap();
        // Non-PIE: linked at a fixed address, not near zero.
        assert!(main >= 0x400000, "{main:#x}");
        let off = elf.vaddr_to_file_offset(main + 4).unwrap();
        assert!(off < main);
        assert_eq!(elf.lookup_file_offset(off), Some(("main", 4)));
        let helper = elf.symbol_address("helper").unwrap();
        assert_eq!(
            elf.lookup_file_offset(elf.vaddr_to_file_offset(helper).unwrap()),
            Some(("helper", 0))
        );
    }
}
