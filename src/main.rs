//! memleak: which call stacks allocated memory that was never freed.
//!
//! main parses flags, runs a session, and turns every error into one line
//! on stderr and an exit code (`exit_code`). A closed stdout
//! (`memleak | head`) exits 0.

#![deny(unsafe_code)]

use std::io::{self, IsTerminal, Write};

use memleak::error::{Error, Result};
use memleak::{bpf, cli, offline, session};

fn main() {
    std::process::exit(real_main());
}

fn real_main() -> i32 {
    run().unwrap_or_else(exit_code)
}

/// The one place an error becomes a line on stderr and an exit code: a
/// usage error 2 (with a pointer to -h), a closed stdout 0, others 1.
fn exit_code(e: Error) -> i32 {
    if e.is_broken_pipe() {
        return 0;
    }
    match e {
        Error::Usage(msg) => {
            eprintln!("memleak: {msg} (see memleak -h)");
            2
        }
        other => {
            eprintln!("memleak: {other}");
            1
        }
    }
}

fn run() -> Result<i32> {
    let opts = match cli::parse(std::env::args_os().skip(1))? {
        cli::Parsed::Run(opts) => opts,
        cli::Parsed::Help => return Ok(print_or_quiet(&cli::usage())),
        cli::Parsed::Version => {
            return Ok(print_or_quiet(&format!(
                "memleak {} (commit {}, {})",
                env!("CARGO_PKG_VERSION"),
                env!("MEMLEAK_COMMIT"),
                env!("MEMLEAK_TARGET")
            )))
        }
        // `memleak symbolize`: no BPF, no privileges; errors as for a run.
        cli::Parsed::Symbolize { symfs, report } => {
            let stdout = io::stdout();
            let terminal = stdout.is_terminal();
            offline::run(
                symfs.as_deref(),
                report.as_deref(),
                &mut stdout.lock(),
                terminal,
            )?;
            return Ok(0);
        }
    };
    memleak::set_verbose(opts.verbose);
    bpf::set_libbpf_verbose(opts.verbose);
    Ok(match session::run(&opts)? {
        session::Outcome::Done => 0,
        session::Outcome::ChildExited(status) => {
            eprintln!("memleak: command {}", status.describe());
            status.exit_code()
        }
        session::Outcome::TargetExited(pid) => {
            eprintln!("memleak: process {pid} exited");
            1
        }
    })
}

fn print_or_quiet(text: &str) -> i32 {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|_| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(_) => 1,
    }
}
