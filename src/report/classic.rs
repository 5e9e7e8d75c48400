//! The classic layout, byte-compatible with BCC's memleak.

use std::io::{self, Write};

use super::{PrintedStack, Report};

impl Report<'_> {
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
    pub(super) fn write_classic(&self, out: &mut impl Write) -> io::Result<()> {
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
}
