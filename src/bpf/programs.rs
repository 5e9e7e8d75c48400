//! Every program in bpf/memleak.bpf.c, with what it is for: the one list
//! the tracer picks its programs from. A unit test (no root needed) checks
//! it against the embedded object both ways, and each program's section
//! against its role.

use crate::allocator::Func;

/// How kernel mode attaches to the kmem/percpu events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPath {
    /// tp_btf programs: raw tracepoints typed by the kernel's BTF.
    TpBtf,
    /// raw_tp programs, argument positions from the version table.
    RawTp,
    /// Classic tracepoint programs reading the trace record
    /// (`--fallback tracepoints`, or raw tracepoints unusable).
    Tracepoints,
}

/// What a program does, and on which allocator function or kernel event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The entry probe of one allocator function, with a link of its own.
    Entry(Func),
    /// The return probe every allocating function shares.
    Return,
    /// uprobe_multi (Linux 6.6+): every entry of an object in one link,
    /// told apart by the attach cookie (enum func).
    MultiEntry,
    /// uprobe_multi: every return of an object in one link.
    MultiReturn,
    /// Kernel mode: event `event` (index into `tracepoints::EVENTS`, enum
    /// kernel_event) on one path.
    Kernel {
        event: usize,
        path: KernelPath,
    },
    /// Beside a raw free program on the same tracepoint: does its work when
    /// the kernel skipped it (6.1+ guards each raw program per CPU).
    Rescue {
        event: usize,
        path: KernelPath,
    },
    /// User mode: a traced process executed a program (raw tracepoint).
    Exec,
    /// User mode: a traced process started a task (raw tracepoint).
    Fork,
    /// User mode, glibc: a traced process is about to dlclose a library.
    Dlclose,
    /// --unwind cfi with -c: the command's entry point.
    EntryStop,
    /// `make bench`: the cost of the probes alone.
    EmptyEntry,
    EmptyReturn,
}

/// One BPF program: its name in the object, and its role.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    pub name: &'static str,
    pub role: Role,
}

const fn p(name: &'static str, role: Role) -> Program {
    Program { name, role }
}

const fn kernel(name: &'static str, event: usize, path: KernelPath) -> Program {
    p(name, Role::Kernel { event, path })
}

const fn rescue(name: &'static str, event: usize, path: KernelPath) -> Program {
    p(name, Role::Rescue { event, path })
}

use KernelPath::{RawTp, TpBtf, Tracepoints};

/// Every program of bpf/memleak.bpf.c. Kernel events by their index in
/// `tracepoints::EVENTS`.
pub const PROGRAMS: &[Program] = &[
    p("memleak__alloc_exit", Role::Return),
    p("memleak__malloc_enter", Role::Entry(Func::Malloc)),
    p("memleak__calloc_enter", Role::Entry(Func::Calloc)),
    p("memleak__realloc_enter", Role::Entry(Func::Realloc)),
    p("memleak__reallocarr_enter", Role::Entry(Func::Reallocarray)),
    p("memleak__free_enter", Role::Entry(Func::Free)),
    p(
        "memleak__memalign_p_enter",
        Role::Entry(Func::PosixMemalign),
    ),
    p("memleak__aligned_enter", Role::Entry(Func::AlignedAlloc)),
    p("memleak__valloc_enter", Role::Entry(Func::Valloc)),
    p("memleak__memalign_enter", Role::Entry(Func::Memalign)),
    p("memleak__pvalloc_enter", Role::Entry(Func::Pvalloc)),
    p("memleak__mmap_enter", Role::Entry(Func::Mmap)),
    p("memleak__munmap_enter", Role::Entry(Func::Munmap)),
    p("memleak__mremap_enter", Role::Entry(Func::Mremap)),
    p("memleak__mallocx_enter", Role::Entry(Func::Mallocx)),
    p("memleak__rallocx_enter", Role::Entry(Func::Rallocx)),
    p("memleak__xallocx_enter", Role::Entry(Func::Xallocx)),
    p("memleak__dallocx_enter", Role::Entry(Func::Dallocx)),
    p("memleak__free_sized_enter", Role::Entry(Func::FreeSized)),
    p("memleak__new_enter", Role::Entry(Func::New)),
    p("memleak__delete_enter", Role::Entry(Func::Delete)),
    p("memleak__untracked_enter", Role::Entry(Func::Untracked)),
    p("memleak__enter_multi", Role::MultiEntry),
    p("memleak__exit_multi", Role::MultiReturn),
    p("memleak__on_exec", Role::Exec),
    p("memleak__on_fork", Role::Fork),
    p("memleak__dlclose_enter", Role::Dlclose),
    p("memleak__entry_stop", Role::EntryStop),
    p("memleak__empty_enter", Role::EmptyEntry),
    p("memleak__empty_exit", Role::EmptyReturn),
    // kmem:kmalloc
    kernel("memleak__kmalloc", 0, Tracepoints),
    kernel("memleak__btf_kmalloc", 0, TpBtf),
    kernel("memleak__raw_kmalloc", 0, RawTp),
    // kmem:kmalloc_node
    kernel("memleak__kmalloc_node", 1, Tracepoints),
    kernel("memleak__btf_kmalloc_node", 1, TpBtf),
    kernel("memleak__raw_kmalloc_node", 1, RawTp),
    // kmem:kmem_cache_alloc
    kernel("memleak__cache_alloc", 2, Tracepoints),
    kernel("memleak__btf_cache_alloc", 2, TpBtf),
    kernel("memleak__raw_cache_alloc", 2, RawTp),
    // kmem:kmem_cache_alloc_node
    kernel("memleak__cache_alloc_node", 3, Tracepoints),
    kernel("memleak__btf_cache_alloc_node", 3, TpBtf),
    kernel("memleak__raw_cache_alloc_node", 3, RawTp),
    // kmem:kfree
    kernel("memleak__kfree", 4, Tracepoints),
    kernel("memleak__btf_kfree", 4, TpBtf),
    kernel("memleak__raw_kfree", 4, RawTp),
    rescue("memleak__btf_kfree_r", 4, TpBtf),
    rescue("memleak__raw_kfree_r", 4, RawTp),
    // kmem:kmem_cache_free
    kernel("memleak__cache_free", 5, Tracepoints),
    kernel("memleak__btf_cache_free", 5, TpBtf),
    kernel("memleak__raw_cache_free", 5, RawTp),
    rescue("memleak__btf_cache_free_r", 5, TpBtf),
    rescue("memleak__raw_cache_free_r", 5, RawTp),
    // kmem:mm_page_alloc
    kernel("memleak__page_alloc", 6, Tracepoints),
    kernel("memleak__btf_page_alloc", 6, TpBtf),
    kernel("memleak__raw_page_alloc", 6, RawTp),
    // kmem:mm_page_free
    kernel("memleak__page_free", 7, Tracepoints),
    kernel("memleak__btf_page_free", 7, TpBtf),
    kernel("memleak__raw_page_free", 7, RawTp),
    rescue("memleak__btf_page_free_r", 7, TpBtf),
    rescue("memleak__raw_page_free_r", 7, RawTp),
    // percpu:percpu_alloc_percpu
    kernel("memleak__percpu_alloc", 8, Tracepoints),
    kernel("memleak__btf_percpu_alloc", 8, TpBtf),
    kernel("memleak__raw_percpu_alloc", 8, RawTp),
    // percpu:percpu_free_percpu
    kernel("memleak__percpu_free", 9, Tracepoints),
    kernel("memleak__btf_percpu_free", 9, TpBtf),
    kernel("memleak__raw_percpu_free", 9, RawTp),
    rescue("memleak__btf_percpu_free_r", 9, TpBtf),
    rescue("memleak__raw_percpu_free_r", 9, RawTp),
];

/// The program with this role, if the object has one (only free events
/// have rescues).
pub fn find(role: Role) -> Option<&'static str> {
    PROGRAMS.iter().find(|p| p.role == role).map(|p| p.name)
}

/// The program with this role, for roles every build has (a unit test
/// checks each): should one be missing, the empty name makes the lookup
/// in the object fail with an error instead of a panic.
pub fn name(role: Role) -> &'static str {
    find(role).unwrap_or("")
}

/// Entry program of each allocator function.
pub fn entry(func: Func) -> &'static str {
    name(Role::Entry(func))
}

/// The program of kernel event `event` on `path`.
pub fn kernel_event(event: usize, path: KernelPath) -> &'static str {
    name(Role::Kernel { event, path })
}

/// The rescue program of kernel event `event` on a raw path, if it is a
/// free event.
pub fn kernel_rescue(event: usize, path: KernelPath) -> Option<&'static str> {
    find(Role::Rescue { event, path })
}

/// The names of the programs whose role passes `keep`.
pub fn names(keep: impl Fn(Role) -> bool) -> Vec<&'static str> {
    PROGRAMS
        .iter()
        .filter(|p| keep(p.role))
        .map(|p| p.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::abi::NR_KERNEL_EVENTS;

    #[test]
    fn names_are_unique_and_prefixed() {
        for (i, a) in PROGRAMS.iter().enumerate() {
            assert!(a.name.starts_with("memleak__"), "{}", a.name);
            assert!(
                PROGRAMS[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
            assert!(
                PROGRAMS[i + 1..].iter().all(|b| b.role != a.role),
                "{:?} twice",
                a.role
            );
        }
    }

    #[test]
    fn every_function_and_event_has_its_programs() {
        for &func in Func::ALL.iter() {
            assert!(find(Role::Entry(func)).is_some(), "{func:?}");
        }
        for role in [Role::Return, Role::MultiEntry, Role::MultiReturn] {
            assert!(find(role).is_some(), "{role:?}");
        }
        for event in 0..NR_KERNEL_EVENTS {
            for path in [Tracepoints, TpBtf, RawTp] {
                assert!(find(Role::Kernel { event, path }).is_some());
            }
            let free = crate::tracepoints::EVENTS[event].size_fields.is_empty();
            for path in [TpBtf, RawTp] {
                assert_eq!(kernel_rescue(event, path).is_some(), free, "{event}");
            }
            assert_eq!(kernel_rescue(event, Tracepoints), None);
        }
    }
}
