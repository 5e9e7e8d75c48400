//! Aggregation of outstanding allocations into per-stack totals, sorting,
//! top N, and the classic text layout of BCC's memleak. Knows nothing of
//! libbpf or /proc: it gets plain records and symbolized frames.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};

use crate::cli::{Format, SortKey};
use crate::symbolize::Frame;

/// One outstanding allocation, as read from the BPF map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub addr: u64,
    pub size: u64,
    pub timestamp_ns: u64,
    /// 64-bit hash of the stack; 0: it could not be stored.
    pub stack_id: u64,
    /// The process that made it (0 in kernel mode).
    pub tgid: u32,
}

/// The outstanding allocations of one stack in one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackTotal {
    pub stack_id: u64,
    /// Stack ids are shared by all processes, but the same addresses mean
    /// other code in another process.
    pub tgid: u32,
    pub bytes: u64,
    pub count: u64,
    /// (address, size) of each allocation, kept only for -a.
    pub allocs: Vec<(u64, u64)>,
}

/// Groups allocations by stack in one pass as they are read, skipping those
/// younger than `min_age_ns` at `now_ns` (BCC's -o, applied at report
/// time). Nothing per allocation is kept, so a million outstanding blocks
/// cost a hash map entry per stack, not per block.
pub struct Aggregator {
    by_stack: HashMap<(u32, u64), StackTotal>,
    now_ns: u64,
    min_age_ns: u64,
}

impl Aggregator {
    pub fn new(now_ns: u64, min_age_ns: u64) -> Aggregator {
        Aggregator {
            by_stack: HashMap::new(),
            now_ns,
            min_age_ns,
        }
    }

    /// Old enough to be reported.
    pub fn is_old_enough(&self, a: &Allocation) -> bool {
        self.now_ns.saturating_sub(a.timestamp_ns) >= self.min_age_ns
    }

    pub fn add(&mut self, a: &Allocation) {
        if !self.is_old_enough(a) {
            return;
        }
        let (stack_id, tgid) = (a.stack_id, a.tgid);
        let total = self
            .by_stack
            .entry((tgid, stack_id))
            .or_insert_with(|| StackTotal {
                stack_id,
                tgid,
                ..Default::default()
            });
        total.bytes = total.bytes.saturating_add(a.size);
        total.count += 1;
    }

    pub fn finish(self) -> Vec<StackTotal> {
        self.by_stack.into_values().collect()
    }
}

/// The `top` largest stacks by `sort`, in BCC's printing order: ascending,
/// so the largest is printed last, nearest the prompt. Ties are broken by
/// the other measure, then by stack id, so output is stable.
pub fn top(mut stacks: Vec<StackTotal>, sort: &SortKey, top: usize) -> Vec<StackTotal> {
    let key = |s: &StackTotal| match sort {
        SortKey::Size => (s.bytes, s.count, s.stack_id, s.tgid),
        SortKey::Count => (s.count, s.bytes, s.stack_id, s.tgid),
    };
    stacks.retain(|s| s.count > 0);
    stacks.sort_unstable_by_key(|s| std::cmp::Reverse(key(s)));
    stacks.truncate(top);
    stacks.reverse();
    stacks
}

/// --estimate: each sampled allocation stands for `weight` allocations.
pub fn scale(stacks: &mut [StackTotal], weight: u64) {
    for s in stacks {
        s.bytes = s.bytes.saturating_mul(weight);
        s.count = s.count.saturating_mul(weight);
    }
}

/// `[HH:MM:SS]` in local time.
pub fn clock_time() -> String {
    match crate::sys::local_time_of_day() {
        Some((hours, minutes, seconds)) => format!("{hours:02}:{minutes:02}:{seconds:02}"),
        None => "??:??:??".to_string(),
    }
}

/// What the BPF side could not record, and attaches that failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Losses {
    pub allocs_map_full: u64,
    pub stacks_lost: u64,
    pub combined_map_full: u64,
    pub events_dropped: u64,
    pub inflight_full: u64,
    pub missed_returns: u64,
    pub untracked_calls: u64,
    pub copy_fallbacks: u64,
    pub recursion_misses: u64,
    /// Of `recursion_misses`, those of programs that see frees: each one
    /// a block that may be reported as leaked when it was freed.
    pub recursion_missed_frees: u64,
    pub failed_attaches: u64,
    pub execs_unheld: u64,
    pub dlcloses_unheld: u64,
}

impl Losses {
    /// (count, JSON key, words for the `lost:` line) of each kind.
    fn kinds(&self) -> [(u64, &'static str, &'static str); 13] {
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

impl Shown {
    /// The frame's name in folded stacks: the function, else the file it
    /// is in (`[libc.so.6]`), else `[unknown]` or the address. Folded
    /// stacks separate frames with ';' and end a line with a space and a
    /// number, so neither a ';' nor a line break may appear in a name.
    fn folded_name(&self) -> String {
        let name = match self {
            Shown::Frame(Frame {
                symbol: Some(s), ..
            }) => s.clone(),
            Shown::Frame(Frame {
                module: Some(m), ..
            }) => format!("[{m}]"),
            Shown::Frame(_) => "[unknown]".to_string(),
            Shown::Address(a) => format!("{a:#x}"),
            Shown::Missing(what) => what.to_string(),
            raw @ Shown::Raw { .. } => raw.to_string(),
        };
        name.replace(';', ":").replace('\n', " ")
    }
}

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

/// A stack's outstanding bytes compared with the last report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Growth {
    /// Bytes now minus bytes at the last report (0 before the first).
    pub delta_bytes: i64,
    /// For how many reports in a row its bytes grew (this one included).
    pub grew_reports: u64,
}

/// Remembers each stack's bytes from report to report. The first report
/// compares with the moment tracing began, when nothing was outstanding,
/// so a stack that grew in every interval has grown in as many reports as
/// there were.
#[derive(Debug, Default)]
pub struct GrowthTracker {
    last: HashMap<(u32, u64), (u64, u64)>,
    reports: u64,
}

impl GrowthTracker {
    /// Records a report's totals (every stack, before top N) and returns
    /// each stack's growth.
    pub fn update(&mut self, totals: &[StackTotal]) -> HashMap<(u32, u64), Growth> {
        self.reports += 1;
        let mut now = HashMap::with_capacity(totals.len());
        let mut growth = HashMap::with_capacity(totals.len());
        for t in totals.iter().filter(|t| t.count > 0) {
            let key = (t.tgid, t.stack_id);
            let (bytes, streak) = self.last.get(&key).copied().unwrap_or((0, 0));
            let grew = t.bytes > bytes;
            let streak = if grew { streak + 1 } else { 0 };
            now.insert(key, (t.bytes, streak));
            growth.insert(
                key,
                Growth {
                    delta_bytes: t.bytes as i64 - bytes as i64,
                    grew_reports: streak,
                },
            );
        }
        self.last = now;
        growth
    }

    /// Reports so far: the intervals since tracing began.
    pub fn reports(&self) -> u64 {
        self.reports
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

    /// The layout of BCC's example document:
    ///
    /// ```text
    /// [11:16:33] Top 10 stacks with outstanding allocations:
    ///         addr = 948cd0 size = 16            (with -a)
    ///         80 bytes in 5 allocations from stack
    ///                 main+0x6d [allocs]
    /// ```
    /// followed by a blank line after each stack, then the `lost:` line if
    /// anything was. With several processes traced each stack line ends
    /// with ` in pid PID`.
    fn write_classic(&self, out: &mut impl Write) -> io::Result<()> {
        write!(
            out,
            "[{}] Top {} stacks with outstanding allocations",
            self.time, self.top
        )?;
        match self.estimate_weight {
            Some(n) => writeln!(
                out,
                " (estimated: each sampled allocation counts {n} times):"
            )?,
            None => writeln!(out, ":")?,
        }
        for s in self.stacks {
            if self.show_allocs {
                for (addr, size) in &s.total.allocs {
                    writeln!(out, "\taddr = {addr:x} size = {size}")?;
                }
            }
            self.write_classic_stack(s, out)?;
        }
        if let Some(line) = self.losses.line() {
            writeln!(out, "{line}")?;
        }
        if let Some(summary) = &self.summary {
            writeln!(
                out,
                "Stacks that grew in every interval ({}): {}",
                summary.intervals,
                summary.stacks.len()
            )?;
            for s in summary.stacks {
                self.write_classic_stack(s, out)?;
            }
        }
        Ok(())
    }

    /// A stack line and its frames, then a blank line. The stack line is
    /// BCC's, then ` in pid PID` (several processes), then
    /// `, unreachable: U bytes in K allocations` (--unreachable), then
    /// `, +B B since last, grew N reports` (--growth).
    fn write_classic_stack(&self, s: &PrintedStack<'_>, out: &mut impl Write) -> io::Result<()> {
        write!(
            out,
            "\t{} bytes in {} allocations from stack",
            s.total.bytes, s.total.count
        )?;
        if self.show_pids {
            write!(out, " in pid {}", s.total.tgid)?;
        }
        if let Some(u) = &s.unreachable {
            write!(
                out,
                ", unreachable: {} bytes in {} allocations",
                u.bytes(),
                u.count()
            )?;
        }
        if let (true, Some(g)) = (self.show_growth, &s.growth) {
            write!(
                out,
                ", {:+} B since last, grew {} reports",
                g.delta_bytes, g.grew_reports
            )?;
        }
        writeln!(out)?;
        for frame in &s.frames {
            writeln!(out, "\t\t{frame}")?;
        }
        writeln!(out)
    }

    /// `outermost;...;innermost BYTES` per stack, the input of flamegraph.pl
    /// and inferno (weights in bytes); with several processes the process
    /// is the root frame (`pid 123`). Losses go to stderr: the stream must
    /// stay parseable, and a loss must not pass unsaid.
    fn write_folded(&self, out: &mut impl Write) -> io::Result<()> {
        for s in self.stacks {
            let mut names: Vec<String> = s.frames.iter().rev().map(Shown::folded_name).collect();
            if self.show_pids {
                names.insert(0, format!("pid {}", s.total.tgid));
            }
            if names.is_empty() {
                names.push("[no stack]".to_string());
            }
            writeln!(out, "{} {}", names.join(";"), s.total.bytes)?;
        }
        if let Some(line) = self.losses.line() {
            eprintln!("memleak: {line}");
        }
        Ok(())
    }

    /// One object per report, on one line:
    /// `{"time", "top", "stacks": [{"bytes", "allocations", "pid",
    /// "frames": [{"symbol", "offset", "module", and "file", "line" where
    /// known, "inlined": true for inlined functions}, {"address"} or
    /// {"missing": "[stack lost]"}],
    /// "allocs": [{"address", "size"}] (with -a)}], "lost": {kind: count}}`,
    /// stacks largest first, frames innermost first; "lost" lists only
    /// what was lost.
    fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        let stacks: Vec<String> = self
            .stacks
            .iter()
            .rev()
            .map(|s| self.json_stack(s))
            .collect();
        let lost: Vec<String> = self
            .losses
            .kinds()
            .iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, key, _)| format!(r#""{key}":{n}"#))
            .collect();
        let summary = match &self.summary {
            Some(g) => {
                let stacks: Vec<String> =
                    g.stacks.iter().rev().map(|s| self.json_stack(s)).collect();
                format!(
                    r#","grew_in_every_interval":{{"intervals":{},"stacks":[{}]}}"#,
                    g.intervals,
                    stacks.join(",")
                )
            }
            None => String::new(),
        };
        let estimate = self
            .estimate_weight
            .map_or_else(String::new, |n| format!(r#","estimated_weight":{n}"#));
        writeln!(
            out,
            r#"{{"time":{},"top":{}{estimate},"stacks":[{}],"lost":{{{}}}{}}}"#,
            json_str(self.time),
            self.top,
            stacks.join(","),
            lost.join(","),
            summary
        )
    }

    /// One stack as a JSON object (see [`Report::write_json`]).
    fn json_stack(&self, s: &PrintedStack<'_>) -> String {
        let opt = |v: &Option<String>| v.as_deref().map_or_else(|| "null".to_string(), json_str);
        let frames: Vec<String> = s
            .frames
            .iter()
            .map(|frame| match frame {
                Shown::Frame(f) => {
                    let mut frame = format!(
                        r#"{{"symbol":{},"offset":{},"module":{}"#,
                        opt(&f.symbol),
                        f.offset,
                        opt(&f.module)
                    );
                    if let Some((file, line)) = &f.source {
                        frame.push_str(&format!(r#","file":{},"line":{line}"#, json_str(file)));
                    }
                    if f.inlined {
                        frame.push_str(r#","inlined":true"#);
                    }
                    frame.push('}');
                    frame
                }
                Shown::Address(a) => format!(r#"{{"address":{a}}}"#),
                Shown::Missing(what) => format!(r#"{{"missing":{}}}"#, json_str(what)),
                raw @ Shown::Raw { .. } => {
                    format!(r#"{{"raw":{}}}"#, json_str(&raw.to_string()))
                }
            })
            .collect();
        let mut stack = format!(
            r#"{{"bytes":{},"allocations":{},"pid":{},"frames":[{}]"#,
            s.total.bytes,
            s.total.count,
            s.total.tgid,
            frames.join(",")
        );
        if let Some(u) = &s.unreachable {
            stack.push_str(&format!(
                r#","unreachable":{{"bytes":{},"allocations":{},"direct_bytes":{},"direct_allocations":{},"indirect_bytes":{},"indirect_allocations":{}}}"#,
                u.bytes(),
                u.count(),
                u.direct_bytes,
                u.direct_count,
                u.indirect_bytes,
                u.indirect_count
            ));
        }
        if let Some(g) = &s.growth {
            stack.push_str(&format!(
                r#","growth":{{"bytes_since_last":{},"grew_reports":{}}}"#,
                g.delta_bytes, g.grew_reports
            ));
        }
        if self.show_allocs {
            let blocks: Vec<String> = s
                .total
                .allocs
                .iter()
                .map(|(a, size)| format!(r#"{{"address":{a},"size":{size}}}"#))
                .collect();
            stack.push_str(&format!(r#","allocs":[{}]"#, blocks.join(",")));
        }
        stack.push('}');
        stack
    }
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(addr: u64, size: u64, ts: u64, stack_id: u64) -> Allocation {
        Allocation {
            addr,
            size,
            timestamp_ns: ts,
            stack_id,
            tgid: 7,
        }
    }

    #[test]
    fn aggregates_per_stack_and_filters_by_age() {
        let allocs = vec![
            alloc(0x10, 16, 0, 1),
            alloc(0x20, 16, 0, 1),
            alloc(0x30, 100, 0, 2),
            alloc(0x40, 5, 950, 2),
            alloc(0x50, 7, 0, 0),
        ];
        let mut agg = Aggregator::new(1000, 100);
        for a in &allocs {
            agg.add(a);
        }
        let mut totals = agg.finish();
        totals.sort_by_key(|t| t.stack_id);
        assert_eq!(totals.len(), 3);
        assert_eq!(
            (totals[0].stack_id, totals[0].bytes, totals[0].count),
            (0, 7, 1),
            "lost stacks"
        );
        assert_eq!((totals[1].bytes, totals[1].count), (32, 2));
        assert_eq!(
            (totals[2].bytes, totals[2].count),
            (100, 1),
            "the young allocation is skipped"
        );
    }

    #[test]
    fn top_is_ascending_and_truncated() {
        let t = |id, bytes, count| StackTotal {
            stack_id: id,
            bytes,
            count,
            ..Default::default()
        };
        let stacks = vec![t(1, 10, 5), t(2, 30, 1), t(3, 20, 9), t(4, 0, 0)];
        let by_size: Vec<u64> = top(stacks.clone(), &SortKey::Size, 2)
            .iter()
            .map(|s| s.stack_id)
            .collect();
        assert_eq!(by_size, vec![3, 2]);
        let by_count: Vec<u64> = top(stacks, &SortKey::Count, 10)
            .iter()
            .map(|s| s.stack_id)
            .collect();
        assert_eq!(by_count, vec![2, 1, 3], "empty stacks are dropped");
    }

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
