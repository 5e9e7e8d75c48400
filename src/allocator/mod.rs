//! Which ELF file provides malloc and friends to the traced program, and
//! where in that file each allocator function starts (uprobes are attached
//! by path + file offset).
//!
//! Two entry points: [`for_process`] looks at what a live process has
//! mapped; [`for_executable`] predicts what the dynamic loader will pick for
//! a command that memleak is about to start.

mod elf;
mod exec;
mod link_map;
mod process;

#[cfg(test)]
mod tests;

pub use exec::for_executable;
pub use process::for_process;

/// The allocator functions memleak traces, in this order.
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
}

impl Func {
    pub const ALL: [Func; 13] = [
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
    ];

    /// The C symbol name.
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
        }
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
}

impl Allocator {
    /// The file offset of `f`, if the object defines it.
    pub fn offset(&self, f: Func) -> Option<u64> {
        self.offsets
            .iter()
            .find(|(g, _)| *g == f)
            .map(|(_, off)| *off)
    }
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
            " (it has no symbol table: stripped?)"
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
