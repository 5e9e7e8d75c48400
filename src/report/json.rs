//! One JSON object per report, on one line.

use std::io::{self, Write};

use super::{PrintedStack, Report, Shown};

impl Report<'_> {
    /// One object per report, on one line:
    /// `{"time", "top", "stacks": [{"bytes", "allocations", "pid",
    /// "frames": [{"symbol", "offset", "module", and "file", "line" where
    /// known, "inlined": true for inlined functions}, {"address"} or
    /// {"missing": "[stack lost]"}],
    /// "allocs": [{"address", "size"}] (with -a)}], "lost": {kind: count}}`,
    /// stacks largest first, frames innermost first; "lost" lists only
    /// what was lost.
    pub(super) fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
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
pub(super) fn json_str(s: &str) -> String {
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
