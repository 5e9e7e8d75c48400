//! What memleak needs out of one ELF file: where the allocator functions sit
//! in the file (uprobes are placed by file offset), and the dynamic-loading
//! facts (class, machine, interpreter, NEEDED, RPATH/RUNPATH) used to predict
//! what a program that has not started yet will load.

use goblin::elf::{header, program_header, section_header, sym, Sym};

use super::Func;
use crate::elf::{symbols, ElfFile, Segments, Through};
use crate::error::{Error, Result};
use crate::process::debug_file;

/// Everything this module reads from an ELF file, owned so the file's bytes
/// can be dropped right away.
#[derive(Debug, Clone)]
pub(crate) struct ElfInfo {
    pub is_64: bool,
    pub machine: u16,
    /// PT_INTERP, e.g. `/lib/ld-musl-x86_64.so.1`.
    pub interp: Option<String>,
    pub soname: Option<String>,
    pub needed: Vec<String>,
    /// DT_RPATH / DT_RUNPATH entries, already split at ':'.
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    /// Usable allocator functions under their standard names, in `Func`
    /// order; a function may appear at several offsets (operator new's
    /// variants), an offset under several functions (aliases).
    pub offsets: Vec<(Func, u64)>,
    /// Prefixed allocator APIs the file defines (`je_malloc`, `mi_new`):
    /// (prefix, functions), for prefixes whose malloc and a release
    /// function are both defined.
    pub families: Vec<(&'static str, Vec<(Func, u64)>)>,
    /// Where to probe a function other than at its entry: (entry, site)
    /// file offsets, for x86-64 functions whose first instruction the
    /// kernel would single-step but a later one it emulates (see
    /// [`super::x86::probe_site`]).
    pub sites: Vec<(u64, u64)>,
    /// Functions that exist only as GNU IFUNCs: a uprobe there would hit the
    /// resolver, which runs once at load time, not on every call.
    pub ifuncs: Vec<Func>,
    /// Neither .symtab nor .dynsym has a symbol (a stripped static binary).
    pub no_symbols: bool,
    /// The separate debug file the symbols were read from, if any.
    pub debug_file: Option<String>,
    /// e_entry, to compute a running executable's load bias from AT_ENTRY.
    pub entry: u64,
    /// PT_DYNAMIC's (p_vaddr, p_memsz): where DT_DEBUG leads to the loader's
    /// list of loaded objects.
    pub dynamic: Option<(u64, u64)>,
}

impl ElfInfo {
    /// Every function to probe in this file when it is the allocator: the
    /// standard names and the prefixed families it also defines (mimalloc's
    /// mi_malloc is malloc; mi_zalloc is only reachable under its prefix).
    pub fn traced(&self) -> Vec<(Func, u64)> {
        let mut all = self.offsets.clone();
        for (_, list) in &self.families {
            all.extend(list.iter().copied());
        }
        all
    }
}

#[cfg(test)]
/// See [`super::function_offsets`].
pub(crate) fn function_offsets(bytes: &[u8]) -> Result<Vec<(Func, u64)>, String> {
    inspect(bytes).map(|info| info.offsets)
}

/// [`inspect`] of a file read through the ELF layer, and for a stripped
/// file that lacks malloc or free, the symbols of its separate debug file
/// (see `process::debug_file`), found under `root` from `path`, the
/// file's name as the target sees it. Errors name `path`.
pub(crate) fn inspect_file(file: &ElfFile, path: &str, root: &str) -> Result<ElfInfo> {
    let info = inspect_parts(file, None).map_err(|e| Error::elf(path, e))?;
    let has = |f: Func| info.offsets.iter().any(|(g, _)| *g == f);
    if has(Func::Malloc) && has(Func::Free) {
        return Ok(info);
    }
    let Some((debug_path, debug)) = debug_file::find(file, path, root) else {
        return Ok(info);
    };
    match inspect_parts(file, Some(&debug)) {
        Ok(with_debug) => Ok(ElfInfo {
            debug_file: Some(debug_path),
            ..with_debug
        }),
        Err(_) => Ok(info),
    }
}

/// What the allocator search needs of an ELF file's bytes.
#[cfg(test)]
pub(crate) fn inspect(bytes: &[u8]) -> Result<ElfInfo, String> {
    inspect_parts(&ElfFile::from_bytes(bytes.to_vec(), ""), None)
}

/// What the allocator search needs of a file, from its own symbols only.
pub(crate) fn inspect_own(file: &ElfFile) -> Result<ElfInfo, String> {
    inspect_parts(file, None)
}

/// Reads `file`, taking the symbols from `symbols` (a separate debug
/// file, whose addresses are the same) too when given.
fn inspect_parts(file: &ElfFile, symbols: Option<&ElfFile>) -> Result<ElfInfo, String> {
    let bytes = file.bytes();
    // Checked here so the common "this is a data file" case gets a plain
    // message instead of goblin's magic-number dump.
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file".to_string());
    }
    let elf = file
        .goblin()
        .map_err(|e| format!("malformed ELF: {}", one_line(&e.to_string())))?;
    let e_type = elf.header.e_type;
    if e_type != header::ET_EXEC && e_type != header::ET_DYN {
        return Err(format!(
            "ELF type {} is not an executable or shared object",
            header::et_to_str(e_type)
        ));
    }
    // A loadable segment running past the end of the data means a truncated
    // copy: offsets computed from it could point at nothing.
    for ph in elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == program_header::PT_LOAD)
    {
        let end = ph.p_offset.checked_add(ph.p_filesz);
        if end.is_none_or(|end| end > bytes.len() as u64) {
            return Err(format!(
                "truncated ELF: a loadable segment needs {} bytes, the file has {}",
                end.map_or_else(|| "more than 2^64".to_string(), |e| e.to_string()),
                bytes.len()
            ));
        }
    }

    let debug = match symbols {
        Some(d) => Some(
            d.goblin()
                .map_err(|e| format!("malformed debug file: {}", one_line(&e.to_string())))?,
        ),
        None => None,
    };
    let segments = file.segments();
    let mut best = Best::default();
    for symbols in std::iter::once(&elf).chain(debug.as_ref()) {
        let versym = symbols.versym.as_ref();
        for (i, s) in symbols.dynsyms.iter().enumerate() {
            // In .dynsym the version lives in .gnu.version; the hidden bit
            // marks an old non-default version (`name@VER`, not `name@@VER`).
            let hidden = versym
                .and_then(|v| v.get_at(i))
                .is_some_and(|v| v.is_hidden());
            if let Some(name) = symbols.dynstrtab.get_at(s.st_name) {
                consider(segments, &s, name, hidden, &mut best);
            }
        }
        for s in symbols.syms.iter() {
            if let Some(name) = symbols.strtab.get_at(s.st_name) {
                consider(segments, &s, name, false, &mut best);
            }
        }
    }
    let sites = best.sites(elf.header.e_machine, bytes);
    let (offsets, ifuncs, families) = best.finish();
    let split = |list: &[&str]| -> Vec<String> {
        list.iter()
            .flat_map(|l| l.split(':'))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(ElfInfo {
        is_64: elf.is_64,
        machine: elf.header.e_machine,
        interp: elf.interpreter.map(str::to_string),
        soname: elf.soname.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
        offsets,
        families,
        sites,
        ifuncs,
        no_symbols: elf.dynsyms.is_empty() && elf.syms.is_empty(),
        debug_file: None,
        entry: elf.header.e_entry,
        dynamic: elf
            .program_headers
            .iter()
            .find(|p| p.p_type == program_header::PT_DYNAMIC)
            .map(|p| (p.p_vaddr, p.p_memsz)),
    })
}

/// A traced symbol: (prefix, function, name without version).
type SymbolKey = (&'static str, Func, String);

/// The best definition seen so far of each traced symbol name.
#[derive(Default)]
struct Best {
    /// Each symbol's best (rank, file offset, size).
    found: Vec<(SymbolKey, (u8, u64, u64))>,
    /// Functions seen only as GNU IFUNCs, per prefix.
    ifuncs: Vec<(&'static str, Func)>,
}

impl Best {
    fn offer(&mut self, key: SymbolKey, rank: u8, off: u64, size: u64) {
        match self.found.iter_mut().find(|(k, _)| *k == key) {
            Some((_, best)) if rank < best.0 => *best = (rank, off, size),
            Some(_) => {}
            None => self.found.push((key, (rank, off, size))),
        }
    }

    /// (entry, site) offsets of the functions found whose probe belongs
    /// past their entry; `bytes` is the file the offsets point into.
    fn sites(&self, machine: u16, bytes: &[u8]) -> Vec<(u64, u64)> {
        if machine != header::EM_X86_64 {
            return Vec::new();
        }
        let mut sites: Vec<(u64, u64)> = self
            .found
            .iter()
            .filter_map(|&(_, (_, off, size))| {
                let end = off.checked_add(size)?;
                let code = bytes.get(usize::try_from(off).ok()?..usize::try_from(end).ok()?)?;
                let delta = super::x86::probe_site(code) as u64;
                (delta > 0).then_some((off, off + delta))
            })
            .collect();
        sites.sort_unstable();
        sites.dedup();
        sites
    }

    /// (standard offsets, standard IFUNC-only functions, prefixed families)
    #[allow(clippy::type_complexity)]
    fn finish(
        self,
    ) -> (
        Vec<(Func, u64)>,
        Vec<Func>,
        Vec<(&'static str, Vec<(Func, u64)>)>,
    ) {
        let of = |prefix: &str| -> Vec<(Func, u64)> {
            let mut list: Vec<(Func, u64)> = self
                .found
                .iter()
                .filter(|((p, _, _), _)| *p == prefix)
                .map(|((_, f, _), (_, off, _))| (*f, *off))
                .collect();
            list.sort_by_key(|(f, off)| (*f as u32, *off));
            list.dedup();
            list
        };
        let offsets = of("");
        let mut ifuncs: Vec<Func> = Vec::new();
        for f in Func::ALL {
            let only_ifunc =
                self.ifuncs.contains(&("", f)) && !offsets.iter().any(|(g, _)| *g == f);
            if only_ifunc {
                ifuncs.push(f);
            }
        }
        let families = super::PREFIXES
            .iter()
            .map(|p| (*p, of(p)))
            .filter(|(_, list)| {
                let has = |f: Func| list.iter().any(|(g, _)| *g == f);
                has(Func::Malloc) && (has(Func::Free) || has(Func::Dallocx))
            })
            .collect();
        (offsets, ifuncs, families)
    }
}

/// Records `s` for the allocator function it names, if it is a usable
/// definition and better ranked ([`symbols::definition_rank`]) than what
/// was seen before, so the one the dynamic linker binds to wins.
fn consider(segments: &Segments, s: &Sym, name: &str, hidden: bool, best: &mut Best) {
    // .symtab spells versions into the name.
    let (base, old_version) = symbols::split_version(name);
    let (prefix, func) = match Func::from_symbol(base) {
        Some(f) => ("", f),
        None => {
            let found = super::PREFIXES.iter().find_map(|p| {
                let rest = base.strip_prefix(p)?;
                Func::from_prefixed(p, rest).map(|f| (*p, f))
            });
            match found {
                Some(x) => x,
                None => return,
            }
        }
    };
    if s.st_shndx == section_header::SHN_UNDEF as usize || s.st_value == 0 {
        return;
    }
    match s.st_type() {
        sym::STT_FUNC => {}
        sym::STT_GNU_IFUNC => {
            if !best.ifuncs.contains(&(prefix, func)) {
                best.ifuncs.push((prefix, func));
            }
            return;
        }
        _ => return,
    }
    // Through an executable segment: a uprobe belongs in code.
    let Some(off) = segments.vaddr_to_offset(s.st_value, Through::Code) else {
        return;
    };
    let rank = symbols::definition_rank(s.st_bind(), hidden || old_version);
    best.offer((prefix, func, base.to_string()), rank, off, s.st_size);
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
