//! memleak: which call stacks allocated memory that was never freed.
//!
//! main parses flags, runs a session, and turns every error into one line
//! on stderr and an exit code. A closed stdout (`memleak | head`) exits 0.

use std::io::{self, IsTerminal, Write};

use memleak::{bpf, cli, offline, session};

/// `memleak symbolize`: no BPF, no privileges; errors as for a run.
fn symbolize_report(symfs: Option<&str>, report: Option<&str>) -> i32 {
    let stdout = io::stdout();
    let terminal = stdout.is_terminal();
    match offline::run(symfs, report, &mut stdout.lock(), terminal) {
        Ok(()) => 0,
        // A closed stdout (`memleak symbolize r | head`) is not an error.
        Err(e) if e.contains("Broken pipe") => 0,
        Err(e) => {
            eprintln!("memleak: {e}");
            1
        }
    }
}

fn main() {
    std::process::exit(real_main());
}

fn real_main() -> i32 {
    let opts = match cli::parse(std::env::args_os().skip(1)) {
        Ok(cli::Parsed::Run(opts)) => opts,
        Ok(cli::Parsed::Help) => return print_or_quiet(&cli::usage()),
        Ok(cli::Parsed::Version) => {
            return print_or_quiet(&format!(
                "memleak {} (commit {}, {})",
                env!("CARGO_PKG_VERSION"),
                env!("MEMLEAK_COMMIT"),
                env!("MEMLEAK_TARGET")
            ))
        }
        Ok(cli::Parsed::Symbolize { symfs, report }) => {
            return symbolize_report(symfs.as_deref(), report.as_deref())
        }
        Err(e) => {
            eprintln!("memleak: {e} (see memleak -h)");
            return 2;
        }
    };
    memleak::set_verbose(opts.verbose);
    bpf::set_libbpf_verbose(opts.verbose);
    match session::run(&opts) {
        Ok(session::Outcome::Done) => 0,
        Ok(session::Outcome::ChildExited(status)) => {
            eprintln!("memleak: command {}", status.describe());
            status.exit_code()
        }
        Ok(session::Outcome::TargetExited(pid)) => {
            eprintln!("memleak: process {pid} exited");
            1
        }
        Err(session::Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(session::Failure::Output(e)) => {
            eprintln!("memleak: cannot write the report: {e}");
            1
        }
        Err(session::Failure::Fatal(msg)) => {
            eprintln!("memleak: {msg}");
            1
        }
    }
}

fn print_or_quiet(text: &str) -> i32 {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|_| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(_) => 1,
    }
}
