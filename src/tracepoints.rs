//! Kernel mode's events: where tracefs is (mounting it if needed), which
//! kmem/percpu tracepoints this kernel has, and where their fields lie.
//!
//! Field offsets come from the kernel's BTF when it has one, else from the
//! tracefs `format` files; the event layouts changed across versions
//! (kmalloc_node and kmem_cache_alloc_node were folded into kmalloc and
//! kmem_cache_alloc in 6.1, kfree got its own class in 5.12), so nothing is
//! hard-coded.

use std::path::{Path, PathBuf};

use crate::bpf::abi::{EventFields, RawEventArgs, TpField, NR_KERNEL_EVENTS};
use crate::bpf::KernelBtf;
use crate::error::{Error, Result};

/// One traced kernel event, in the order of `enum kernel_event`.
pub struct KernelEvent {
    pub category: &'static str,
    pub name: &'static str,
    /// Address field: `ptr`, or `pfn` for pages.
    pub addr_field: &'static str,
    /// Size field candidates, first found wins; None for frees.
    pub size_fields: &'static [&'static str],
    /// BTF struct candidates (`trace_event_raw_<class>`), newest first.
    pub btf_structs: &'static [&'static str],
    pub percpu: bool,
}

pub const EVENTS: [KernelEvent; NR_KERNEL_EVENTS] = [
    KernelEvent {
        category: "kmem",
        name: "kmalloc",
        addr_field: "ptr",
        size_fields: &["bytes_alloc"],
        btf_structs: &["trace_event_raw_kmalloc", "trace_event_raw_kmem_alloc"],
        percpu: false,
    },
    KernelEvent {
        category: "kmem",
        name: "kmalloc_node",
        addr_field: "ptr",
        size_fields: &["bytes_alloc"],
        btf_structs: &["trace_event_raw_kmem_alloc_node"],
        percpu: false,
    },
    KernelEvent {
        category: "kmem",
        name: "kmem_cache_alloc",
        addr_field: "ptr",
        size_fields: &["bytes_alloc"],
        btf_structs: &[
            "trace_event_raw_kmem_cache_alloc",
            "trace_event_raw_kmem_alloc",
        ],
        percpu: false,
    },
    KernelEvent {
        category: "kmem",
        name: "kmem_cache_alloc_node",
        addr_field: "ptr",
        size_fields: &["bytes_alloc"],
        btf_structs: &["trace_event_raw_kmem_alloc_node"],
        percpu: false,
    },
    KernelEvent {
        category: "kmem",
        name: "kfree",
        addr_field: "ptr",
        size_fields: &[],
        btf_structs: &["trace_event_raw_kfree", "trace_event_raw_kmem_free"],
        percpu: false,
    },
    KernelEvent {
        category: "kmem",
        name: "kmem_cache_free",
        addr_field: "ptr",
        size_fields: &[],
        btf_structs: &[
            "trace_event_raw_kmem_cache_free",
            "trace_event_raw_kmem_free",
        ],
        percpu: false,
    },
    KernelEvent {
        category: "kmem",
        name: "mm_page_alloc",
        addr_field: "pfn",
        size_fields: &["order"],
        btf_structs: &["trace_event_raw_mm_page_alloc"],
        percpu: false,
    },
    KernelEvent {
        category: "kmem",
        name: "mm_page_free",
        addr_field: "pfn",
        size_fields: &[],
        btf_structs: &["trace_event_raw_mm_page_free"],
        percpu: false,
    },
    KernelEvent {
        category: "percpu",
        name: "percpu_alloc_percpu",
        addr_field: "ptr",
        // bytes_alloc appeared in 6.2; before it, the requested size.
        size_fields: &["bytes_alloc", "size"],
        btf_structs: &["trace_event_raw_percpu_alloc_percpu"],
        percpu: true,
    },
    KernelEvent {
        category: "percpu",
        name: "percpu_free_percpu",
        addr_field: "ptr",
        size_fields: &[],
        btf_structs: &["trace_event_raw_percpu_free_percpu"],
        percpu: true,
    },
];

/// The tracefs directory to use: a mounted one, or one memleak mounts.
pub fn tracefs(verbose_note: impl Fn(&str)) -> Result<PathBuf> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    let dir = "/sys/kernel/tracing";
    if let Err(e) = crate::sys::mount("nodev", dir, "tracefs") {
        return Err(Error::Other(format!(
            "tracefs is not mounted and cannot be mounted on {dir}: {e}"
        )));
    }
    verbose_note(&format!("mounted tracefs on {dir}"));
    Ok(PathBuf::from(dir))
}

/// A field of a tracefs `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatField {
    pub name: String,
    pub offset: u16,
    pub size: u16,
}

/// Parses a tracefs `format` file:
/// `\tfield:const void * ptr;\toffset:16;\tsize:8;\tsigned:0;`
pub fn parse_format(text: &str) -> Vec<FormatField> {
    let mut fields = Vec::new();
    for line in text.lines() {
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in line.split(';') {
            let part = part.trim();
            if let Some(d) = part.strip_prefix("field:") {
                decl = Some(d);
            } else if let Some(o) = part.strip_prefix("offset:") {
                offset = o.parse().ok();
            } else if let Some(s) = part.strip_prefix("size:") {
                size = s.parse().ok();
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            continue;
        };
        // The name is the last word of the declaration, minus any array
        // suffix (`char comm[16]`) or pointer star.
        let name = decl.rsplit([' ', '*']).next().unwrap_or("");
        let name = name.split('[').next().unwrap_or("").to_string();
        if !name.is_empty() {
            fields.push(FormatField { name, offset, size });
        }
    }
    fields
}

/// Picks an event's fields from its list of (name, offset, size).
fn fields_of(event: &KernelEvent, fields: &[(String, u32, u32)]) -> Option<EventFields> {
    let find = |name: &str| {
        fields
            .iter()
            .find(|(n, _, _)| n == name)
            .and_then(|&(_, off, size)| {
                // The BPF side reads 4- or 8-byte fields.
                (size == 4 || size == 8).then_some(TpField {
                    offset: u16::try_from(off).ok()?,
                    size: size as u16,
                })
            })
    };
    let addr = find(event.addr_field)?;
    let size = if event.size_fields.is_empty() {
        TpField::default()
    } else {
        event.size_fields.iter().find_map(|f| find(f))?
    };
    Some(EventFields { addr, size })
}

/// Where the field offsets came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutSource {
    Btf,
    Format,
}

/// The events this kernel has, with their fields and perf event ids.
pub struct KernelEvents {
    pub source: LayoutSource,
    /// For raw tracepoint programs: each event's arguments (aligned with
    /// `events`), or why they are unknown. tp_btf programs when `source`
    /// is BTF, raw_tp ones otherwise.
    pub raw: Result<Vec<Option<RawEventArgs>>>,
    /// Per event: fields and tracepoint id, or None where the kernel lacks
    /// it or this run does not trace it.
    pub events: Vec<Option<(EventFields, u64)>>,
    /// Events this run wanted that the kernel does not have.
    pub missing: Vec<String>,
}

/// Decides which events to trace and where their fields are. With BTF
/// (unless `force_format`), offsets come from `trace_event_raw_*` structs;
/// otherwise from the tracefs format files.
pub fn discover(tracefs: &Path, percpu: bool, force_format: bool) -> Result<KernelEvents> {
    let btf = if force_format {
        None
    } else {
        KernelBtf::load().ok()
    };
    let source = if btf.is_some() {
        LayoutSource::Btf
    } else {
        LayoutSource::Format
    };
    let mut events = Vec::new();
    let mut missing = Vec::new();
    let release = crate::tracer::kernel_release();
    let mut raw: Result<Vec<Option<RawEventArgs>>> = Ok(Vec::new());
    for event in &EVENTS {
        if event.percpu != percpu {
            events.push(None);
            if let Ok(raw) = &mut raw {
                raw.push(None);
            }
            continue;
        }
        let dir = tracefs.join("events").join(event.category).join(event.name);
        let Ok(id) = std::fs::read_to_string(dir.join("id")) else {
            missing.push(format!("{}:{}", event.category, event.name));
            events.push(None);
            if let Ok(raw) = &mut raw {
                raw.push(None);
            }
            continue;
        };
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| Error::Other(format!("bad tracepoint id in {}", dir.display())))?;
        let format = match &btf {
            Some(_) => None,
            None => Some(
                std::fs::read_to_string(dir.join("format"))
                    .map_err(|e| Error::input(format!("{}/format", dir.display()), e))?,
            ),
        };
        if let Ok(args) = &mut raw {
            match crate::tracepoint_args::raw_args(event, btf.as_ref(), format.as_deref(), release)
            {
                Ok(a) => args.push(Some(a)),
                Err(e) => raw = Err(e),
            }
        }
        let fields = match &btf {
            Some(btf) => event
                .btf_structs
                .iter()
                .find_map(|s| btf.struct_members(s))
                .and_then(|m| fields_of(event, &m)),
            None => {
                let text = format.unwrap_or_default();
                let fields: Vec<(String, u32, u32)> = parse_format(&text)
                    .into_iter()
                    .map(|f| (f.name, f.offset as u32, f.size as u32))
                    .collect();
                fields_of(event, &fields)
            }
        };
        let fields = fields.ok_or_else(|| {
            Error::Other(format!(
                "cannot find the fields of {}:{} in the kernel's {}",
                event.category,
                event.name,
                if btf.is_some() { "BTF" } else { "format file" }
            ))
        })?;
        events.push(Some((fields, id)));
    }
    if events.iter().all(Option::is_none) {
        return Err(Error::Other(format!(
            "this kernel has none of the tracepoints needed ({})",
            missing.join(", ")
        )));
    }
    Ok(KernelEvents {
        source,
        raw,
        events,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KMALLOC_618: &str = "name: kmalloc\nID: 611\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:unsigned long call_site;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:const void * ptr;\toffset:16;\tsize:8;\tsigned:0;\n\
\tfield:size_t bytes_req;\toffset:24;\tsize:8;\tsigned:0;\n\
\tfield:size_t bytes_alloc;\toffset:32;\tsize:8;\tsigned:0;\n\
\tfield:char comm[16];\toffset:40;\tsize:16;\tsigned:0;\n\n\
print fmt: \"call_site=%pS ptr=%p\", REC->call_site, REC->ptr\n";

    #[test]
    fn parses_format_files() {
        let fields = parse_format(KMALLOC_618);
        let get = |n: &str| fields.iter().find(|f| f.name == n).cloned();
        assert_eq!(
            get("ptr"),
            Some(FormatField {
                name: "ptr".into(),
                offset: 16,
                size: 8
            })
        );
        assert_eq!(get("bytes_alloc").map(|f| f.offset), Some(32));
        assert_eq!(get("comm").map(|f| f.size), Some(16));
        assert_eq!(get("common_pid").map(|f| f.offset), Some(4));
        assert!(parse_format("garbage\nfield:;offset:x;size:;\n").is_empty());
    }

    #[test]
    fn percpu_size_falls_back_to_requested_size() {
        // 5.10's percpu_alloc_percpu has no bytes_alloc.
        let fields = vec![("ptr".to_string(), 40, 8), ("size".to_string(), 24, 8)];
        let f = fields_of(&EVENTS[8], &fields).unwrap();
        assert_eq!((f.addr.offset, f.size.offset), (40, 24));
        assert!(
            fields_of(&EVENTS[0], &fields).is_none(),
            "kmalloc needs bytes_alloc"
        );
    }

    /// The BTF path and the format-file path agree on this kernel.
    #[test]
    #[ignore = "needs root; make test runs it (make check cannot)"]
    fn btf_and_format_files_agree() {
        let Ok(dir) = tracefs(|_| {}) else {
            panic!("tracefs is needed for this test (run as root)")
        };
        let from_format = discover(&dir, false, true).unwrap();
        assert_eq!(from_format.source, LayoutSource::Format);
        assert!(from_format.events[0].is_some(), "kmalloc exists everywhere");
        if KernelBtf::load().is_err() {
            panic!("this kernel has no BTF; the BTF path cannot be compared here");
        }
        let from_btf = discover(&dir, false, false).unwrap();
        assert_eq!(from_btf.source, LayoutSource::Btf);
        for (i, (a, b)) in from_btf.events.iter().zip(&from_format.events).enumerate() {
            assert_eq!(a, b, "{}", EVENTS[i].name);
        }
        let percpu_btf = discover(&dir, true, false).unwrap();
        let percpu_format = discover(&dir, true, true).unwrap();
        assert_eq!(percpu_btf.events, percpu_format.events);
        assert!(percpu_btf.events[8].is_some());
    }
}
