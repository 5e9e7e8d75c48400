//! Folded stacks, the input of flamegraph.pl and inferno.

use std::io::{self, Write};

use super::{Report, Shown};
use crate::symbolize::Frame;

impl Report<'_> {
    /// `outermost;...;innermost BYTES` per stack, the input of flamegraph.pl
    /// and inferno (weights in bytes); with several processes the process
    /// is the root frame (`pid 123`). Losses go to stderr: the stream must
    /// stay parseable, and a loss must not pass unsaid.
    pub(super) fn write_folded(&self, out: &mut impl Write) -> io::Result<()> {
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
}

impl Shown {
    /// The frame's name in folded stacks: the function, else the file it
    /// is in (`[libc.so.6]`), else `[unknown]` or the address. Folded
    /// stacks separate frames with ';' and end a line with a space and a
    /// number, so neither a ';' nor a line break may appear in a name.
    pub(super) fn folded_name(&self) -> String {
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
