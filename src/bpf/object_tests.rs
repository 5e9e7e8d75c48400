//! The BPF interface checked against the embedded object, without root:
//! opening an object (bpf_object__open_mem) makes no system call that
//! needs privileges. Every program in `programs::PROGRAMS` is in the object
//! with the section its role implies, and the object has no other; every
//! struct bpf/memleak.h shares with src/bpf/abi.rs has the same size and
//! members (names, offsets, sizes, in order) in the object's BTF as the
//! `#[repr(C)]` mirror; every enum userspace mirrors has the same values.

use std::mem::{offset_of, size_of};

use super::abi::*;
use super::programs::{KernelPath, Role, PROGRAMS};
use super::Object;
use crate::tracepoints::EVENTS;

/// The section a program of this role must be in.
fn section(role: Role) -> String {
    let kernel = |event: usize, path| {
        let ev = &EVENTS[event];
        match path {
            KernelPath::Tracepoints => format!("tracepoint/{}/{}", ev.category, ev.name),
            KernelPath::TpBtf => format!("tp_btf/{}", ev.name),
            KernelPath::RawTp => format!("raw_tp/{}", ev.name),
        }
    };
    match role {
        Role::Entry(_) | Role::Dlclose | Role::EntryStop | Role::EmptyEntry => "uprobe".into(),
        Role::Return | Role::EmptyReturn => "uretprobe".into(),
        Role::MultiEntry => "uprobe.multi".into(),
        Role::MultiReturn => "uretprobe.multi".into(),
        Role::Exec => "raw_tracepoint/sched_process_exec".into(),
        Role::Fork => "raw_tracepoint/task_newtask".into(),
        Role::Kernel { event, path } | Role::Rescue { event, path } => kernel(event, path),
    }
}

#[test]
fn program_table_matches_the_object() {
    let obj = Object::open().expect("open the embedded object");
    let in_object = obj.programs();
    let mut errors = Vec::new();
    for p in PROGRAMS {
        match in_object.iter().find(|(name, _)| name == p.name) {
            None => errors.push(format!("{} is not in the object", p.name)),
            Some((_, sec)) if *sec != section(p.role) => errors.push(format!(
                "{} is in section {sec}, its role {:?} wants {}",
                p.name,
                p.role,
                section(p.role)
            )),
            Some(_) => {}
        }
    }
    for (name, _) in &in_object {
        if !PROGRAMS.iter().any(|p| p.name == name) {
            errors.push(format!(
                "{name} is in the object, not in programs::PROGRAMS"
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// A struct's size and members (name, offset, size) as Rust lays it out.
type Layout = (usize, Vec<(&'static str, usize, usize)>);

fn size_of_field<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// The layout of `$ty` with the fields listed, in order; the check fails
/// on a field missing on either side, so each list names every field.
macro_rules! layout {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        (
            size_of::<$ty>(),
            vec![$((
                stringify!($field),
                offset_of!($ty, $field),
                size_of_field::<$ty, _>(|s| &s.$field),
            )),*],
        )
    };
}

/// Every struct of bpf/memleak.h that userspace reads or writes, and its
/// mirror.
fn shared_structs() -> Vec<(&'static str, Layout)> {
    vec![
        ("tp_field", layout!(TpField { offset, size })),
        ("event_fields", layout!(EventFields { addr, size })),
        (
            "raw_event_args",
            layout!(RawEventArgs {
                addr,
                size,
                size_kind,
                pad,
                cache_size_offset,
                pad2
            }),
        ),
        (
            "config",
            layout!(Config {
                min_size,
                max_size,
                sample_every,
                target_tgid,
                trace,
                drop_stale,
                combined,
                kernel,
                many_targets,
                unwind,
                hold_exec,
                page_size,
                pidns_dev,
                pidns_ino,
                kernel_events,
                raw_events,
            }),
        ),
        ("alloc_key", layout!(AllocKey { addr, tgid, pad })),
        (
            "alloc_info",
            layout!(AllocInfo {
                size,
                timestamp_ns,
                stack_id
            }),
        ),
        (
            "combined_info",
            layout!(CombinedInfo {
                total_size,
                number_of_allocs
            }),
        ),
        (
            "event",
            layout!(Event {
                timestamp_ns,
                size,
                addr,
                pid,
                tid,
                kind,
                func,
                comm
            }),
        ),
        (
            "notices",
            layout!(Notices {
                execs,
                forks,
                exec_ns,
                threads,
                holds
            }),
        ),
        (
            "cfi_row",
            layout!(CfiRow {
                pc,
                cfa_offset,
                fp_offset,
                ra_offset,
                kind,
                pad
            }),
        ),
        (
            "cfi_range",
            layout!(CfiRange {
                start,
                len,
                generation,
                pad
            }),
        ),
        (
            "unwind_sample",
            layout!(UnwindSample {
                id,
                tgid,
                len,
                regs,
                stack
            }),
        ),
        // The stacks map's value, read as MAX_STACK_DEPTH addresses.
        (
            "stack",
            (MAX_STACK_DEPTH * 8, vec![("ips", 0, MAX_STACK_DEPTH * 8)]),
        ),
    ]
}

/// Where `layout` differs from the object's struct `name`.
fn differences(obj: &Object, name: &str, (size, fields): &Layout) -> Vec<String> {
    let Some((btf_size, members)) = obj.btf_struct(name) else {
        return vec![format!("struct {name} is not in the object's BTF")];
    };
    let mut out = Vec::new();
    if btf_size as usize != *size {
        out.push(format!(
            "struct {name}: {btf_size} bytes in BPF, {size} in Rust"
        ));
    }
    let btf: Vec<(&str, usize, usize)> = members
        .iter()
        .map(|(n, o, s)| (n.as_str(), *o as usize, *s as usize))
        .collect();
    if btf != *fields {
        out.push(format!(
            "struct {name}: members (name, offset, size) in BPF {btf:?}, in Rust {fields:?}"
        ));
    }
    out
}

#[test]
fn shared_structs_match_the_object_btf() {
    let obj = Object::open().expect("open the embedded object");
    let errors: Vec<String> = shared_structs()
        .iter()
        .flat_map(|(name, layout)| differences(&obj, name, layout))
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The check sees a mismatch: a member moved, a size changed, a member
/// missing on one side.
#[test]
fn a_layout_mismatch_is_reported() {
    let obj = Object::open().expect("open the embedded object");
    let (size, mut fields) = layout!(AllocKey { addr, tgid, pad });
    assert!(differences(&obj, "alloc_key", &(size, fields.clone())).is_empty());
    fields[1].1 += 4;
    assert_eq!(
        differences(&obj, "alloc_key", &(size, fields.clone())).len(),
        1
    );
    assert_eq!(differences(&obj, "alloc_key", &(size + 8, fields)).len(), 2);
    let (size, mut fields) = layout!(AllocKey { addr, tgid, pad });
    fields.pop();
    assert_eq!(differences(&obj, "alloc_key", &(size, fields)).len(), 1);
    assert_eq!(
        differences(&obj, "no_such_struct", &layout!(AllocKey { addr })).len(),
        1
    );
}

/// Enum `name` in the object's BTF has exactly these enumerators (the
/// `NR_*` count last, where the C enum has one).
fn check_enum(obj: &Object, name: &str, rust: &[(&str, i64)]) -> Option<String> {
    let btf = obj.btf_enum(name);
    let rust: Vec<(String, i64)> = rust.iter().map(|&(n, v)| (n.to_string(), v)).collect();
    (btf.as_ref() != Some(&rust)).then(|| format!("enum {name}: in BPF {btf:?}, in Rust {rust:?}"))
}

/// `PosixMemalign` -> `F_POSIX_MEMALIGN`.
fn c_name(func: crate::allocator::Func) -> String {
    let mut out = String::from("F");
    for c in format!("{func:?}").chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[test]
fn shared_enums_match_the_object_btf() {
    let obj = Object::open().expect("open the embedded object");
    let funcs: Vec<(String, i64)> = crate::allocator::Func::ALL
        .iter()
        .map(|&f| (c_name(f), f as i64))
        .collect();
    let mut funcs: Vec<(&str, i64)> = funcs.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let kernel = funcs.len() as i64;
    // Past the user functions: a kernel event (session.rs decodes -t lines so).
    funcs.extend([("F_KERNEL", kernel), ("NR_FUNCS", kernel + 1)]);
    // In the order of tracepoints::EVENTS, by event name.
    let events = [
        ("KEV_KMALLOC", "kmalloc"),
        ("KEV_KMALLOC_NODE", "kmalloc_node"),
        ("KEV_CACHE_ALLOC", "kmem_cache_alloc"),
        ("KEV_CACHE_ALLOC_NODE", "kmem_cache_alloc_node"),
        ("KEV_KFREE", "kfree"),
        ("KEV_CACHE_FREE", "kmem_cache_free"),
        ("KEV_PAGE_ALLOC", "mm_page_alloc"),
        ("KEV_PAGE_FREE", "mm_page_free"),
        ("KEV_PERCPU_ALLOC", "percpu_alloc_percpu"),
        ("KEV_PERCPU_FREE", "percpu_free_percpu"),
    ];
    let mut kernel_events: Vec<(&str, i64)> = events
        .iter()
        .map(|&(c, name)| {
            let i = EVENTS.iter().position(|e| e.name == name);
            (c, i.map_or(-1, |i| i as i64))
        })
        .collect();
    kernel_events.push(("NR_KERNEL_EVENTS", NR_KERNEL_EVENTS as i64));
    let checks = [
        check_enum(&obj, "func", &funcs),
        check_enum(&obj, "kernel_event", &kernel_events),
        check_enum(
            &obj,
            "raw_size",
            &[
                ("RAW_SIZE_NONE", RAW_SIZE_NONE.into()),
                ("RAW_SIZE_ARG", RAW_SIZE_ARG.into()),
                ("RAW_SIZE_CACHE", RAW_SIZE_CACHE.into()),
            ],
        ),
        check_enum(
            &obj,
            "cfi_kind",
            &[
                ("CFI_NONE", CFI_NONE.into()),
                ("CFI_SP", CFI_SP.into()),
                ("CFI_FP", CFI_FP.into()),
                ("CFI_END", CFI_END.into()),
            ],
        ),
        check_enum(
            &obj,
            "event_kind",
            &[
                ("EV_ALLOC_ENTER", EV_ALLOC_ENTER.into()),
                ("EV_ALLOC_EXIT", EV_ALLOC_EXIT.into()),
                ("EV_FREE_ENTER", EV_FREE_ENTER.into()),
            ],
        ),
        check_enum(
            &obj,
            "loss",
            &[
                ("LOSS_ALLOCS_FULL", LOSS_ALLOCS_FULL as i64),
                ("LOSS_STACK", LOSS_STACK as i64),
                ("LOSS_COMBINED_FULL", LOSS_COMBINED_FULL as i64),
                ("LOSS_EVENTS", LOSS_EVENTS as i64),
                ("LOSS_INFLIGHT_FULL", LOSS_INFLIGHT_FULL as i64),
                ("LOSS_MISSED_RETURN", LOSS_MISSED_RETURN as i64),
                ("LOSS_UNTRACKED", LOSS_UNTRACKED as i64),
                ("LOSS_COPY_FALLBACK", LOSS_COPY_FALLBACK as i64),
                ("LOSS_EXEC_UNHELD", LOSS_EXEC_UNHELD as i64),
                ("RESCUED_FREES", RESCUED_FREES as i64),
                ("LOSS_DLCLOSE_UNHELD", LOSS_DLCLOSE_UNHELD as i64),
                ("NR_LOSSES", LOSS_DLCLOSE_UNHELD as i64 + 1),
            ],
        ),
    ];
    let errors: Vec<String> = checks.into_iter().flatten().collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
