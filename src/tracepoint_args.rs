//! Where raw tracepoint programs find an event's address and size.
//!
//! A raw tracepoint program (tp_btf, raw_tp) sees the tracepoint's
//! arguments (its TP_PROTO, as an array of u64), not the trace record's
//! fields, and the arguments moved across kernel versions: kmalloc_node and
//! kmem_cache_alloc_node were folded into kmalloc and kmem_cache_alloc in
//! 6.1, where kmem_cache_alloc began to pass the cache instead of its size;
//! kmem_cache_free gained a third argument in 5.12; percpu_alloc_percpu
//! gained call_site and bytes_alloc. With BTF, the kernel's own
//! `__bpf_trace_<event>` function names its parameters; where BTF lacks it,
//! `btf_trace_<event>` tells how many there are and the table below which
//! layout has that many. Without BTF, the table's layouts are checked
//! against the tracefs format files, whose fields follow the prototype.

use std::path::Path;

use crate::bpf::abi::{RawEventArgs, RAW_SIZE_ARG, RAW_SIZE_CACHE, RAW_SIZE_NONE};
use crate::bpf::{KernelBtf, TracepointParams};
use crate::error::{Error, Result};
use crate::tracepoints::{parse_format, KernelEvent};

/// One prototype an event has had since 5.4.
struct Layout {
    /// The tracepoint's arguments after `void *__data`.
    args: &'static [&'static str],
    /// Kernels that have it: [since, until).
    since: (u32, u32),
    until: (u32, u32),
    /// Fields its trace record has, in this order, and fields it lacks:
    /// what tells this layout from the others in a format file.
    format_has: &'static [&'static str],
    format_lacks: &'static [&'static str],
}

const ANY: (u32, u32) = (u32::MAX, 0);

/// A `Layout` literal (a const fn call would not be promoted to 'static).
macro_rules! layout {
    ($args:expr, $since:expr, $until:expr, $has:expr, $lacks:expr $(,)?) => {
        Layout {
            args: $args,
            since: $since,
            until: $until,
            format_has: $has,
            format_lacks: $lacks,
        }
    };
}

const KMALLOC_5: &[&str] = &["call_site", "ptr", "bytes_req", "bytes_alloc", "gfp_flags"];
const KMALLOC_NODE: &[&str] = &[
    "call_site",
    "ptr",
    "bytes_req",
    "bytes_alloc",
    "gfp_flags",
    "node",
];

/// The layouts of each event, in the order of `tracepoints::EVENTS`.
fn layouts(event: &str) -> &'static [Layout] {
    const V4: (u32, u32) = (5, 4);
    const V61: (u32, u32) = (6, 1);
    match event {
        "kmalloc" => &[
            layout!(KMALLOC_NODE, V61, ANY, KMALLOC_NODE, &[]),
            layout!(KMALLOC_5, V4, V61, KMALLOC_5, &["node"]),
        ],
        "kmalloc_node" | "kmem_cache_alloc_node" => {
            &[layout!(KMALLOC_NODE, V4, V61, KMALLOC_NODE, &[])]
        }
        "kmem_cache_alloc" => &[
            // bytes_alloc in the record is the cache's size.
            layout!(
                &["call_site", "ptr", "s", "gfp_flags", "node"],
                V61,
                ANY,
                &["call_site", "ptr", "node"],
                &[],
            ),
            layout!(KMALLOC_5, V4, V61, KMALLOC_5, &["node"]),
        ],
        "kfree" => &[layout!(
            &["call_site", "ptr"],
            V4,
            ANY,
            &["call_site", "ptr"],
            &[],
        )],
        "kmem_cache_free" => &[
            // The cache's name (5.12), then the cache itself (6.1).
            layout!(
                &["call_site", "ptr", "s"],
                (5, 12),
                ANY,
                &["call_site", "ptr", "name"],
                &[],
            ),
            layout!(
                &["call_site", "ptr"],
                V4,
                (5, 12),
                &["call_site", "ptr"],
                &["name"],
            ),
        ],
        "mm_page_alloc" => &[layout!(
            &["page", "order", "gfp_flags", "migratetype"],
            V4,
            ANY,
            &["pfn", "order", "gfp_flags", "migratetype"],
            &[],
        )],
        "mm_page_free" => &[layout!(&["page", "order"], V4, ANY, &["pfn", "order"], &[],)],
        "percpu_alloc_percpu" => &[
            layout!(
                &[
                    "call_site",
                    "reserved",
                    "is_atomic",
                    "size",
                    "align",
                    "base_addr",
                    "off",
                    "ptr",
                    "bytes_alloc",
                    "gfp_flags",
                ],
                (6, 2),
                ANY,
                &["call_site", "reserved", "ptr", "bytes_alloc"],
                &[],
            ),
            layout!(
                &[
                    "reserved",
                    "is_atomic",
                    "size",
                    "align",
                    "base_addr",
                    "off",
                    "ptr",
                ],
                V4,
                (6, 2),
                &[
                    "reserved",
                    "is_atomic",
                    "size",
                    "align",
                    "base_addr",
                    "off",
                    "ptr"
                ],
                &["call_site", "bytes_alloc"],
            ),
        ],
        "percpu_free_percpu" => &[layout!(
            &["base_addr", "off", "ptr"],
            V4,
            ANY,
            &["base_addr", "off", "ptr"],
            &[],
        )],
        _ => &[],
    }
}

impl Layout {
    fn covers(&self, release: (u32, u32)) -> bool {
        release >= self.since && (self.until == ANY || release < self.until)
    }

    /// The format file's fields include `format_has` in that order and
    /// none of `format_lacks`.
    fn matches_format(&self, fields: &[String]) -> bool {
        let mut rest = fields.iter();
        self.format_has.iter().all(|want| rest.any(|f| f == want))
            && !self
                .format_lacks
                .iter()
                .any(|no| fields.iter().any(|f| f == no))
    }
}

/// Offset of `size` in SLUB's struct kmem_cache on 64-bit kernels, for
/// kmem_cache_alloc 6.1+ without BTF: after cpu_slab, flags and
/// min_partial, and from 6.18 on after cpu_sheaves too.
fn slub_cache_size_offset(release: (u32, u32)) -> u16 {
    if release >= (6, 18) {
        32
    } else {
        24
    }
}

/// Picks the arguments of `event` from what BTF says about it (`btf`), or
/// else from the table checked against its tracefs `format` text.
pub fn raw_args(
    event: &KernelEvent,
    btf: Option<&KernelBtf>,
    format: Option<&str>,
    release: (u32, u32),
) -> Result<RawEventArgs> {
    let table = layouts(event.name);
    let in_release = |l: &&Layout| l.covers(release);
    let args: Vec<String> = match btf.and_then(|b| b.tracepoint_params(event.name)) {
        Some(TracepointParams::Named(names)) => names,
        Some(TracepointParams::Count(n)) => {
            // Same arity in this release's range first, then any.
            let fits = |l: &&Layout| l.args.len() == n;
            table
                .iter()
                .filter(in_release)
                .find(fits)
                .or_else(|| table.iter().find(fits))
                .map(|l| l.args.iter().map(|a| a.to_string()).collect())
                .ok_or_else(|| {
                    Error::Other(format!(
                        "{} has {n} arguments, a layout memleak does not know",
                        event.name
                    ))
                })?
        }
        None => {
            let format = format
                .ok_or_else(|| Error::Other(format!("no prototype of {} in BTF", event.name)))?;
            let fields: Vec<String> = parse_format(format).into_iter().map(|f| f.name).collect();
            let fits = |l: &&Layout| l.matches_format(&fields);
            table
                .iter()
                .filter(in_release)
                .find(fits)
                .or_else(|| table.iter().find(fits))
                .map(|l| l.args.iter().map(|a| a.to_string()).collect())
                .ok_or_else(|| {
                    Error::Other(format!(
                        "the format of {} ({}) matches no layout memleak knows",
                        event.name,
                        fields.join(" ")
                    ))
                })?
        }
    };
    let position = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| u8::try_from(i).ok())
            .filter(|&i| i < 16)
    };
    let addr_name = if event.addr_field == "pfn" {
        "page"
    } else {
        event.addr_field
    };
    let addr = position(addr_name)
        .ok_or_else(|| Error::Other(format!("{} has no argument {addr_name}", event.name)))?;
    let mut out = RawEventArgs {
        addr,
        size_kind: RAW_SIZE_NONE,
        ..Default::default()
    };
    if event.size_fields.is_empty() {
        return Ok(out);
    }
    if let Some(i) = event.size_fields.iter().find_map(|f| position(f)) {
        out.size = i;
        out.size_kind = RAW_SIZE_ARG;
    } else if let Some(i) = position("s") {
        out.size = i;
        out.size_kind = RAW_SIZE_CACHE;
        out.cache_size_offset = cache_size_offset(btf, release)?;
    } else {
        return Err(Error::Other(format!("{} has no size argument", event.name)));
    }
    Ok(out)
}

/// Where struct kmem_cache keeps the size of its objects.
fn cache_size_offset(btf: Option<&KernelBtf>, release: (u32, u32)) -> Result<u16> {
    if let Some(btf) = btf {
        return btf
            .struct_members("kmem_cache")
            .and_then(|m| {
                m.into_iter()
                    .find(|(n, _, size)| n == "size" && *size == 4)
                    .and_then(|(_, off, _)| u16::try_from(off).ok())
            })
            .ok_or_else(|| Error::other("no kmem_cache.size in the kernel's BTF"));
    }
    // Only SLUB has /sys/kernel/slab; SLAB (gone since 6.5) lays its
    // struct out differently.
    if cfg!(target_pointer_width = "64") && Path::new("/sys/kernel/slab").is_dir() {
        Ok(slub_cache_size_offset(release))
    } else {
        Err(Error::other(
            "the allocator is not SLUB and there is no BTF: kmem_cache's layout is unknown",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracepoints::EVENTS;

    fn format(fields: &[&str]) -> String {
        let mut text = String::from("name: x\nID: 1\nformat:\n");
        for (i, f) in fields.iter().enumerate() {
            text += &format!(
                "\tfield:unsigned long {f};\toffset:{};\tsize:8;\tsigned:0;\n",
                8 + 8 * i
            );
        }
        text
    }

    fn event(name: &str) -> &'static KernelEvent {
        EVENTS.iter().find(|e| e.name == name).unwrap()
    }

    fn args(name: &str, fields: &[&str], release: (u32, u32)) -> RawEventArgs {
        raw_args(event(name), None, Some(&format(fields)), release).unwrap()
    }

    #[test]
    fn kmalloc_layouts_of_5_10_and_6_1() {
        let old = args("kmalloc", KMALLOC_5, (5, 10));
        assert_eq!((old.addr, old.size, old.size_kind), (1, 3, RAW_SIZE_ARG));
        let new = args("kmalloc", &[KMALLOC_NODE, &["accounted"]].concat(), (6, 1));
        assert_eq!((new.addr, new.size, new.size_kind), (1, 3, RAW_SIZE_ARG));
        let node = args("kmalloc_node", KMALLOC_NODE, (5, 10));
        assert_eq!((node.addr, node.size), (1, 3));
    }

    #[test]
    fn kmem_cache_alloc_passes_the_cache_since_6_1() {
        let old = args("kmem_cache_alloc", KMALLOC_5, (5, 10));
        assert_eq!((old.addr, old.size, old.size_kind), (1, 3, RAW_SIZE_ARG));
        let fields = [
            "call_site",
            "ptr",
            "name",
            "bytes_req",
            "bytes_alloc",
            "gfp_flags",
            "node",
            "accounted",
        ];
        match raw_args(
            event("kmem_cache_alloc"),
            None,
            Some(&format(&fields)),
            (6, 12),
        ) {
            Ok(a) => {
                assert_eq!((a.addr, a.size, a.size_kind), (1, 2, RAW_SIZE_CACHE));
                assert_eq!(a.cache_size_offset, 24);
            }
            Err(e) => assert!(!Path::new("/sys/kernel/slab").is_dir(), "{e}"),
        }
    }

    #[test]
    fn frees_pages_and_percpu() {
        let free = args("kmem_cache_free", &["call_site", "ptr"], (5, 10));
        assert_eq!((free.addr, free.size_kind), (1, RAW_SIZE_NONE));
        let free = args("kmem_cache_free", &["call_site", "ptr", "name"], (6, 1));
        assert_eq!(free.addr, 1);
        let page = args(
            "mm_page_alloc",
            &["pfn", "order", "gfp_flags", "migratetype"],
            (5, 10),
        );
        assert_eq!((page.addr, page.size, page.size_kind), (0, 1, RAW_SIZE_ARG));
        assert_eq!(args("mm_page_free", &["pfn", "order"], (6, 12)).addr, 0);
        let old = [
            "reserved",
            "is_atomic",
            "size",
            "align",
            "base_addr",
            "off",
            "ptr",
        ];
        let pcpu = args("percpu_alloc_percpu", &old, (5, 10));
        assert_eq!((pcpu.addr, pcpu.size), (6, 2));
        let new = [&["call_site"][..], &old, &["bytes_alloc", "gfp_flags"]].concat();
        let pcpu = args("percpu_alloc_percpu", &new, (6, 12));
        assert_eq!((pcpu.addr, pcpu.size), (7, 8));
        assert_eq!(
            args("percpu_free_percpu", &["base_addr", "off", "ptr"], (5, 10)).addr,
            2
        );
    }

    #[test]
    fn an_unknown_format_is_refused() {
        let e = raw_args(
            event("kmalloc"),
            None,
            Some(&format(&["ptr", "call_site"])),
            (6, 1),
        );
        assert!(e.unwrap_err().to_string().contains("matches no layout"));
    }

    /// BTF's named parameters and the table checked against this kernel's
    /// format files agree on every event this kernel has.
    #[test]
    #[ignore = "needs root; make test runs it (make check cannot)"]
    fn btf_and_table_agree_on_this_kernel() {
        let btf = KernelBtf::load().expect("this test needs the kernel's BTF");
        let dir = crate::tracepoints::tracefs(|_| {}).expect("tracefs (run as root)");
        let release = crate::tracer::kernel_release();
        let mut checked = 0;
        for event in &EVENTS {
            let path = dir.join("events").join(event.category).join(event.name);
            let Ok(text) = std::fs::read_to_string(path.join("format")) else {
                continue;
            };
            let from_btf = raw_args(event, Some(&btf), None, release).unwrap();
            let from_table = raw_args(event, None, Some(&text), release);
            // With the cache's size offset: SLUB's, as the table guesses.
            let from_table = from_table.unwrap_or_else(|e| panic!("{}: {e}", event.name));
            assert_eq!(from_table, from_btf, "{}", event.name);
            checked += 1;
        }
        assert!(checked >= 6, "{checked}");
    }
}
