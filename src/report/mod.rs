//! Reports: aggregation of the tracer's records (aggregate), and the
//! writers of each format: classic (BCC's layout), folded, json; pprof has
//! its own module. Knows nothing of libbpf or /proc: it gets plain records
//! and symbolized frames.

use std::fmt;
use std::io::{self, Write};

use crate::cli::Format;
use crate::records::{Losses, StackTotal};
use crate::symbolize::Frame;

pub mod aggregate;
mod classic;
mod folded;
mod json;

use aggregate::Growth;

/// `[HH:MM:SS]` in local time.
pub fn clock_time() -> String {
    match crate::sys::local_time_of_day() {
        Some((hours, minutes, seconds)) => format!("{hours:02}:{minutes:02}:{seconds:02}"),
        None => "??:??:??".to_string(),
    }
}

impl Losses {
    /// (count, JSON key, words for the `lost:` line) of each kind.
    fn kinds(&self) -> [(u64, &'static str, &'static str); 14] {
        [
            (
                self.allocs_map_full,
                "allocs_map_full",
                "allocations (allocs map full)",
            ),
            (
                self.inflight_full,
                "inflight_map_full",
                "allocations (per-thread map full)",
            ),
            (
                self.missed_returns,
                "missed_returns",
                "calls whose return was missed",
            ),
            (
                self.untracked_calls,
                "untracked_calls",
                "calls to allocator functions memleak cannot size",
            ),
            (
                self.stacks_lost,
                "stacks_lost",
                "stack captures (stack map full)",
            ),
            (
                self.copy_fallbacks,
                "copy_fallbacks",
                "stack copies (ring buffer full; frame pointers used)",
            ),
            (
                self.combined_map_full,
                "combined_map_full",
                "stack totals (combined map full)",
            ),
            (
                self.events_dropped,
                "events_dropped",
                "trace events (ring buffer full)",
            ),
            (
                self.recursion_misses,
                "recursion_misses",
                "probe hits (BPF recursion)",
            ),
            // Its own part, so that the one above reads as it always did.
            (
                self.recursion_missed_frees,
                "recursion_missed_frees",
                "of them frees (each a possible false leak)",
            ),
            (
                self.failed_attaches,
                "failed_attaches",
                "functions not attached",
            ),
            (
                self.execs_unheld,
                "execs_unheld",
                "execs not held until probed (the new program's first allocations may be missed)",
            ),
            (
                self.dlcloses_unheld,
                "dlcloses_unheld",
                "dlcloses not held until the maps were read (frames in the library may show no name)",
            ),
            (
                self.entries_unheld,
                "entries_unheld",
                "programs not held at their entry point (their first stacks may stop short)",
            ),
        ]
    }

    /// `None` when nothing was lost.
    pub fn line(&self) -> Option<String> {
        let parts: Vec<String> = self
            .kinds()
            .iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, _, what)| format!("{n} {what}"))
            .collect();
        if parts.is_empty() {
            None
        } else {
            Some(format!("lost: {}", parts.join(", ")))
        }
    }
}

/// A frame as the report shows it: resolved, or a bare address when names
/// are hidden (kernel.kptr_restrict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    Frame(Frame),
    Address(u64),
    /// Stands for a stack that cannot be shown: `[stack lost]`.
    Missing(&'static str),
    /// --raw: where the address is, for `memleak symbolize` to name:
    /// `[raw] 0xOFFSET BUILDID PATH` (BUILDID `-` when the file has none).
    Raw {
        offset: u64,
        build_id: Option<Vec<u8>>,
        path: String,
    },
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shown::Frame(frame) => frame.fmt(f),
            Shown::Address(a) => write!(f, "{a:#x}"),
            Shown::Missing(what) => f.write_str(what),
            Shown::Raw {
                offset,
                build_id,
                path,
            } => {
                let id: String = match build_id {
                    Some(id) if !id.is_empty() => id.iter().map(|b| format!("{b:02x}")).collect(),
                    _ => "-".to_string(),
                };
                write!(f, "{RAW_PREFIX}{offset:#x} {id} {path}")
            }
        }
    }
}

/// How a --raw frame line starts (after the two tabs of a frame).
pub const RAW_PREFIX: &str = "[raw] ";

/// One stack ready to print: totals plus its frames, already symbolized,
/// innermost first.
pub struct PrintedStack<'a> {
    pub total: &'a StackTotal,
    pub frames: Vec<Shown>,
    /// --unreachable: what of it the process can no longer reach (None:
    /// not scanned).
    pub unreachable: Option<Unreachable>,
    /// How it changed since the last report.
    pub growth: Option<Growth>,
}

/// The unreachable blocks of one stack: direct (nothing points to them)
/// and indirect (only other unreachable blocks do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unreachable {
    pub direct_bytes: u64,
    pub direct_count: u64,
    pub indirect_bytes: u64,
    pub indirect_count: u64,
}

impl Unreachable {
    pub fn bytes(&self) -> u64 {
        self.direct_bytes + self.indirect_bytes
    }

    pub fn count(&self) -> u64 {
        self.direct_count + self.indirect_count
    }
}

/// Which stacks grew in every interval, for the final report (--growth).
pub struct GrowthSummary<'a> {
    pub intervals: u64,
    pub stacks: &'a [PrintedStack<'a>],
}

/// Everything one report shows.
pub struct Report<'a> {
    /// `HH:MM:SS`, local time.
    pub time: &'a str,
    /// The -T value, which the classic header prints.
    pub top: usize,
    /// In printing order: largest last.
    pub stacks: &'a [PrintedStack<'a>],
    /// -a: each stack's blocks.
    pub show_allocs: bool,
    /// Several processes are traced: say whose each stack is.
    pub show_pids: bool,
    /// --estimate: the sample rate the totals were multiplied by, which
    /// the header states; None: sampled counts as recorded.
    pub estimate_weight: Option<u64>,
    pub losses: &'a Losses,
    /// --growth: the growth suffix on classic stack lines.
    pub show_growth: bool,
    /// The final report's summary of stacks that grew every interval.
    pub summary: Option<GrowthSummary<'a>>,
}

impl Report<'_> {
    pub fn write(&self, format: Format, out: &mut impl Write) -> io::Result<()> {
        match format {
            Format::Classic => self.write_classic(out)?,
            Format::Folded => self.write_folded(out)?,
            Format::Json => self.write_json(out)?,
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::aggregate::scale;
    use super::json::json_str;
    use super::*;

    fn example(total: &StackTotal, losses: &Losses, format: Format) -> String {
        example_weighted(total, losses, format, None)
    }

    fn example_weighted(
        total: &StackTotal,
        losses: &Losses,
        format: Format,
        estimate_weight: Option<u64>,
    ) -> String {
        let frame = |symbol: Option<&str>, offset, module: &str| {
            Shown::Frame(Frame {
                symbol: symbol.map(str::to_string),
                offset,
                module: Some(module.to_string()),
                ..Frame::default()
            })
        };
        let stacks = vec![PrintedStack {
            total,
            frames: vec![
                frame(Some("main"), 0x6d, "allocs"),
                frame(None, 0, "libc.so.6"),
                Shown::Address(0x10),
            ],
            unreachable: None,
            growth: None,
        }];
        let report = Report {
            time: "11:16:33",
            top: 10,
            stacks: &stacks,
            show_allocs: true,
            show_pids: false,
            estimate_weight,
            losses,
            show_growth: false,
            summary: None,
        };
        let mut out = Vec::new();
        report.write(format, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn layout_matches_the_example_document() {
        let total = StackTotal {
            stack_id: 1,
            bytes: 32,
            count: 2,
            allocs: vec![(0x948cf0, 16), (0x948cd0, 16)],
            tgid: 0,
        };
        assert_eq!(
            example(&total, &Losses::default(), Format::Classic),
            "[11:16:33] Top 10 stacks with outstanding allocations:\n\
             \taddr = 948cf0 size = 16\n\
             \taddr = 948cd0 size = 16\n\
             \t32 bytes in 2 allocations from stack\n\
             \t\tmain+0x6d [allocs]\n\
             \t\t[unknown] [libc.so.6]\n\
             \t\t0x10\n\n"
        );
    }

    #[test]
    fn estimate_scales_totals_and_says_so_in_the_header() {
        let mut totals = vec![StackTotal {
            stack_id: 1,
            bytes: 32,
            count: 2,
            ..Default::default()
        }];
        scale(&mut totals, 10);
        assert_eq!((totals[0].bytes, totals[0].count), (320, 20));
        let classic = example_weighted(&totals[0], &Losses::default(), Format::Classic, Some(10));
        assert_eq!(
            classic.lines().take(2).collect::<Vec<_>>(),
            [
                "[11:16:33] Top 10 stacks with outstanding allocations \
                 (estimated: each sampled allocation counts 10 times):",
                "\t320 bytes in 20 allocations from stack",
            ]
        );
        let json = example_weighted(&totals[0], &Losses::default(), Format::Json, Some(10));
        assert!(
            json.starts_with(r#"{"time":"11:16:33","top":10,"estimated_weight":10,"stacks":[{"bytes":320,"allocations":20,"#),
            "{json}"
        );
    }

    #[test]
    fn folded_is_root_first_weighted_by_bytes() {
        let total = StackTotal {
            stack_id: 1,
            bytes: 32,
            count: 2,
            tgid: 5,
            ..Default::default()
        };
        assert_eq!(
            example(&total, &Losses::default(), Format::Folded),
            "0x10;[libc.so.6];main 32\n"
        );
        let odd = Shown::Frame(Frame {
            symbol: Some("a;b\nc".into()),
            ..Frame::default()
        });
        assert_eq!(odd.folded_name(), "a:b c");
    }

    #[test]
    fn json_report() {
        let total = StackTotal {
            stack_id: 1,
            bytes: 32,
            count: 2,
            allocs: vec![(16, 8)],
            tgid: 5,
        };
        let losses = Losses {
            stacks_lost: 3,
            ..Default::default()
        };
        assert_eq!(
            example(&total, &losses, Format::Json),
            concat!(
                r#"{"time":"11:16:33","top":10,"stacks":[{"bytes":32,"allocations":2,"pid":5,"frames":["#,
                r#"{"symbol":"main","offset":109,"module":"allocs"},"#,
                r#"{"symbol":null,"offset":0,"module":"libc.so.6"},{"address":16}],"#,
                r#""allocs":[{"address":16,"size":8}]}],"lost":{"stacks_lost":3}}"#,
                "\n"
            )
        );
        assert_eq!(json_str("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\u0001é""#);
    }

    #[test]
    fn losses_line_only_when_something_was_lost() {
        assert_eq!(Losses::default().line(), None);
        let l = Losses {
            allocs_map_full: 12,
            stacks_lost: 3,
            ..Default::default()
        };
        assert_eq!(
            l.line().unwrap(),
            "lost: 12 allocations (allocs map full), 3 stack captures (stack map full)"
        );
    }

    #[test]
    fn clock_time_is_hh_mm_ss() {
        let t = clock_time();
        assert_eq!(t.len(), 8);
        assert_eq!(t.as_bytes()[2], b':');
    }
}
