//! Which ELF file provides malloc and friends to the traced program, and
//! where in that file each allocator function starts (uprobes are attached
//! by path + file offset).
//!
//! Two entry points: [`for_process`] looks at what a live process has
//! mapped; [`for_executable`] predicts what the dynamic loader will pick for
//! a command that memleak is about to start.

mod dlclose;
mod elf;
mod exec;
mod link_map;
mod process;
/// Uprobe sites the kernel can emulate instead of single-stepping.
pub mod x86;

#[cfg(test)]
mod tests;

pub use dlclose::DlcloseSite;

use crate::error::{Error, Result};

// The finding below says in words what failed (a file, a process, an -O
// value); these entry points give it its kind. Inside, the ELF layer's
// rewrite (issue 19) converts the rest.

/// The allocator of a command about to run (see [`exec::for_executable`]).
pub fn for_executable(exe_path: &str, obj_override: Option<&str>) -> Result<Allocator> {
    exec::for_executable(exe_path, obj_override).map_err(Error::Target)
}

/// The allocator of a live process (see [`process::for_process`]).
pub fn for_process(pid: u32, obj_override: Option<&str>) -> Result<Allocator> {
    process::for_process(pid, obj_override).map_err(Error::Target)
}

/// Where to hold a process at dlclose (see [`dlclose::dlclose_site`]).
pub fn dlclose_site(libc: &Allocator) -> Result<Option<DlcloseSite>> {
    dlclose::dlclose_site(libc).map_err(Error::Other)
}

/// The allocator functions memleak traces, in this order (the BPF side's
/// `enum func`). Each is a calling shape: where the size and the block are
/// found, and what the result means. Several symbols may share one shape
/// (every operator new variant is [`Func::New`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Func {
    Malloc = 0,
    Calloc,
    Realloc,
    Reallocarray,
    Free,
    PosixMemalign,
    AlignedAlloc,
    Valloc,
    Memalign,
    Pvalloc,
    Mmap,
    Munmap,
    Mremap,
    /// jemalloc's mallocx(size, flags).
    Mallocx,
    /// jemalloc's rallocx(ptr, size, flags): realloc that never frees.
    Rallocx,
    /// jemalloc's xallocx(ptr, size, extra, flags): resizes in place and
    /// returns the new usable size.
    Xallocx,
    /// jemalloc's dallocx(ptr, flags) and sdallocx(ptr, size, flags).
    Dallocx,
    /// C23 free_sized(ptr, size) and free_aligned_sized(ptr, align, size).
    FreeSized,
    /// Every operator new and new[] (plain, nothrow, aligned): size first.
    New,
    /// Every operator delete and delete[]: pointer first.
    Delete,
    /// An allocator entry point whose size memleak cannot learn (mimalloc's
    /// mi_strdup, mi_expand): calls are counted as losses, not recorded.
    Untracked,
}

/// Families of allocators that export their API under a prefix, beside or
/// instead of the standard names: jemalloc built with a prefix (`je_`,
/// Rust's tikv-jemallocator `_rjem_`) and mimalloc (`mi_`).
pub const PREFIXES: [&str; 3] = ["je_", "_rjem_", "mi_"];

/// Operator new and delete, Itanium-mangled for 64-bit (`m`) and 32-bit
/// (`j`) size_t.
const NEW_SYMBOLS: [&str; 16] = [
    "_Znwm",
    "_Znam",
    "_ZnwmRKSt9nothrow_t",
    "_ZnamRKSt9nothrow_t",
    "_ZnwmSt11align_val_t",
    "_ZnamSt11align_val_t",
    "_ZnwmSt11align_val_tRKSt9nothrow_t",
    "_ZnamSt11align_val_tRKSt9nothrow_t",
    "_Znwj",
    "_Znaj",
    "_ZnwjRKSt9nothrow_t",
    "_ZnajRKSt9nothrow_t",
    "_ZnwjSt11align_val_t",
    "_ZnajSt11align_val_t",
    "_ZnwjSt11align_val_tRKSt9nothrow_t",
    "_ZnajSt11align_val_tRKSt9nothrow_t",
];
const DELETE_SYMBOLS: [&str; 16] = [
    "_ZdlPv",
    "_ZdaPv",
    "_ZdlPvm",
    "_ZdaPvm",
    "_ZdlPvj",
    "_ZdaPvj",
    "_ZdlPvRKSt9nothrow_t",
    "_ZdaPvRKSt9nothrow_t",
    "_ZdlPvSt11align_val_t",
    "_ZdaPvSt11align_val_t",
    "_ZdlPvmSt11align_val_t",
    "_ZdaPvmSt11align_val_t",
    "_ZdlPvjSt11align_val_t",
    "_ZdaPvjSt11align_val_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t",
    "_ZdaPvSt11align_val_tRKSt9nothrow_t",
];

impl Func {
    pub const ALL: [Func; 21] = [
        Func::Malloc,
        Func::Calloc,
        Func::Realloc,
        Func::Reallocarray,
        Func::Free,
        Func::PosixMemalign,
        Func::AlignedAlloc,
        Func::Valloc,
        Func::Memalign,
        Func::Pvalloc,
        Func::Mmap,
        Func::Munmap,
        Func::Mremap,
        Func::Mallocx,
        Func::Rallocx,
        Func::Xallocx,
        Func::Dallocx,
        Func::FreeSized,
        Func::New,
        Func::Delete,
        Func::Untracked,
    ];

    /// The functions every C library offers (the first of `ALL`): what an
    /// allocator library does not define is traced in libc instead.
    pub const STANDARD: &'static [Func] = Func::ALL.split_at(13).0;

    /// The name shown to people (-t lines, -v notes).
    pub fn name(self) -> &'static str {
        match self {
            Func::Malloc => "malloc",
            Func::Calloc => "calloc",
            Func::Realloc => "realloc",
            Func::Reallocarray => "reallocarray",
            Func::Free => "free",
            Func::PosixMemalign => "posix_memalign",
            Func::AlignedAlloc => "aligned_alloc",
            Func::Valloc => "valloc",
            Func::Memalign => "memalign",
            Func::Pvalloc => "pvalloc",
            Func::Mmap => "mmap",
            Func::Munmap => "munmap",
            Func::Mremap => "mremap",
            Func::Mallocx => "mallocx",
            Func::Rallocx => "rallocx",
            Func::Xallocx => "xallocx",
            Func::Dallocx => "dallocx",
            Func::FreeSized => "free_sized",
            Func::New => "operator new",
            Func::Delete => "operator delete",
            Func::Untracked => "untracked",
        }
    }

    /// The function an unprefixed symbol name is, if memleak traces it.
    pub fn from_symbol(name: &str) -> Option<Func> {
        if let Some(f) = Func::STANDARD.iter().find(|f| f.name() == name) {
            return Some(*f);
        }
        Some(match name {
            "cfree" => Func::Free,
            "mallocx" => Func::Mallocx,
            "rallocx" => Func::Rallocx,
            "xallocx" => Func::Xallocx,
            "dallocx" | "sdallocx" => Func::Dallocx,
            "free_sized" | "free_aligned_sized" => Func::FreeSized,
            _ if NEW_SYMBOLS.contains(&name) => Func::New,
            _ if DELETE_SYMBOLS.contains(&name) => Func::Delete,
            _ => return None,
        })
    }

    /// The function a symbol of a prefixed family is (`name` without the
    /// prefix): the standard and jemalloc names, plus mimalloc's own API,
    /// mapped onto the shape that reads its arguments right.
    pub fn from_prefixed(prefix: &str, name: &str) -> Option<Func> {
        if prefix == "mi_" {
            let f = match name {
                "zalloc" | "malloc_aligned" | "zalloc_aligned" => Func::Malloc,
                "mallocn" | "calloc_aligned" | "new_n" => Func::Calloc,
                "rezalloc" | "realloc_aligned" | "rezalloc_aligned" | "new_realloc" => {
                    Func::Realloc
                }
                "reallocn" | "recalloc" | "recalloc_aligned" | "new_reallocn" => Func::Reallocarray,
                "free_size" | "free_aligned" | "free_size_aligned" => Func::Free,
                "new" | "new_nothrow" | "new_aligned" | "new_aligned_nothrow" => Func::New,
                "strdup" | "strndup" | "realpath" | "expand" => Func::Untracked,
                _ => {
                    return Func::from_symbol(name)
                        .filter(|f| !matches!(f, Func::New | Func::Delete))
                }
            };
            return Some(f);
        }
        Func::from_symbol(name).filter(|f| !matches!(f, Func::New | Func::Delete))
    }

    /// Whether the BPF side needs a return probe: allocations learn their
    /// block from the result; releases and untracked calls need only entry.
    pub fn has_return(self) -> bool {
        !matches!(
            self,
            Func::Free
                | Func::Munmap
                | Func::Dallocx
                | Func::FreeSized
                | Func::Delete
                | Func::Untracked
        )
    }
}

/// The object whose allocator functions get uprobes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocator {
    /// Path to hand to the kernel for the uprobe; it resolves in OUR mount
    /// namespace to the very inode the target maps, e.g.
    /// `/proc/PID/root/usr/lib/x86_64-linux-gnu/libc.so.6` for a live process.
    pub attach_path: String,
    /// What to show the user: the path as the target sees it, e.g.
    /// `/usr/lib/x86_64-linux-gnu/libc.so.6`.
    pub display_path: String,
    /// Why it was chosen (for -v), e.g. "defines malloc; mapped by pid 123".
    pub reason: String,
    /// File offset of each function the object defines, in `Func` order;
    /// functions it lacks are absent. Aliases share an offset (glibc's
    /// memalign and aligned_alloc are one function), so several entries may
    /// carry the same offset.
    pub offsets: Vec<(Func, u64)>,
    /// (entry, site): functions to probe past their entry, at the first
    /// instruction the kernel emulates instead of single-stepping.
    pub sites: Vec<(u64, u64)>,
}

impl Allocator {
    /// Where to probe the function that starts at file offset `entry`.
    pub fn site(&self, entry: u64) -> u64 {
        self.sites
            .iter()
            .find(|(e, _)| *e == entry)
            .map_or(entry, |(_, site)| *site)
    }

    /// The file offset of `f`, if the object defines it.
    pub fn offset(&self, f: Func) -> Option<u64> {
        self.offsets
            .iter()
            .find(|(g, _)| *g == f)
            .map(|(_, off)| *off)
    }
}

/// A prefixed allocator compiled into the executable beside the malloc the
/// process uses (Rust programs with tikv-jemallocator carry `_rjem_malloc`;
/// C programs may carry a `je_` jemalloc): its own set of probes. `read_path`
/// is where we read the executable, e.g. /proc/PID/exe, which also serves
/// to attach. None when there is no such family or the file is unreadable.
pub fn prefixed_in_executable(read_path: &str, display: &str) -> Option<Allocator> {
    let file = crate::elf::open(read_path).ok()?;
    let info = elf::inspect_own(&file).ok()?;
    let prefixes: Vec<&str> = info.families.iter().map(|(p, _)| *p).collect();
    let offsets: Vec<(Func, u64)> = info
        .families
        .iter()
        .flat_map(|(_, list)| list.iter().copied())
        .collect();
    if offsets.is_empty() {
        return None;
    }
    Some(Allocator {
        attach_path: read_path.to_string(),
        display_path: display.to_string(),
        reason: format!(
            "the executable defines a prefixed allocator ({}*)",
            prefixes.join("*, ")
        ),
        offsets,
        sites: info.sites.clone(),
    })
}

#[cfg(test)]
/// Offsets of the allocator functions in an ELF file's bytes.
///
/// Each name is looked up in .dynsym and .symtab (versioned names such as
/// `malloc@@GLIBC_2.2.5` and weak symbols count). The symbol must be a
/// defined FUNC; GNU IFUNCs are skipped because a uprobe there would sit on
/// the resolver, which runs once, not on the function. The address is
/// turned into a file offset through the executable PT_LOAD segment that
/// holds it, which is right for ET_EXEC, PIE and shared objects alike.
///
/// Returns an error only for data that is not a usable ELF executable or
/// shared object; a valid file defining none of the functions gives an
/// empty list.
pub fn function_offsets(bytes: &[u8]) -> Result<Vec<(Func, u64)>, String> {
    elf::function_offsets(bytes)
}

/// memleak needs at least malloc and free to pair allocations with
/// releases; anything less is not the allocator.
fn require_core(display: &str, info: &elf::ElfInfo) -> Result<(), String> {
    for f in [Func::Malloc, Func::Free] {
        if info.offsets.iter().any(|(g, _)| *g == f) {
            continue;
        }
        let hint = if info.ifuncs.contains(&f) {
            " (only as an IFUNC resolver, which cannot be traced)"
        } else if info.no_symbols {
            " (it has no symbol table: stripped; install its debug file under /usr/lib/debug/.build-id or beside it)"
        } else {
            ""
        };
        return Err(format!("{display} does not define {}{hint}", f.name()));
    }
    Ok(())
}

/// The "c" shorthand of -O: the C library, whatever its file is called
/// (glibc's libc.so.6, old glibc's libc-2.31.so, musl's ld-musl-*.so.1 or
/// libc.so).
fn is_libc_name(base: &str) -> bool {
    base.starts_with("libc.so")
        || base.starts_with("ld-musl")
        || base
            .strip_prefix("libc-")
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// How well a -O name (no '/') matches a file's base name: 0 exactly (or the
/// "c" shorthand), 1 loosely (BCC-style `jemalloc` for libjemalloc.so.2, or
/// `libjemalloc.so` for libjemalloc.so.2), None not at all.
fn name_match(name: &str, base: &str) -> Option<u8> {
    if base == name || (name == "c" && is_libc_name(base)) {
        return Some(0);
    }
    let versioned_of = |stem: &str| {
        base.strip_prefix(stem)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    if versioned_of(name) || versioned_of(&format!("lib{name}.so")) {
        return Some(1);
    }
    None
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// io::Error text without the " (os error N)" tail, to keep messages short.
fn io_msg(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
