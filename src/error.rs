//! The one error type. Every failure becomes one line on stderr (main.rs);
//! the variant says what kind of thing failed, so that main picks the exit
//! code and recognises a closed stdout by its kind, never by its text.

use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// Bad flags or arguments: exit 2, with a pointer to `memleak -h`.
    Usage(String),
    /// Not root and without the capabilities BPF needs.
    Privilege(String),
    /// A libbpf or bpf(2) operation failed: what was attempted, errno, and
    /// a note on what to do about it (empty, or " (run as root, ...)").
    Bpf {
        op: String,
        errno: i32,
        note: String,
    },
    /// An ELF file could not be read or parsed, or lacks what was needed.
    Elf { path: PathBuf, msg: String },
    /// The traced process or command: gone, not traceable, not startable.
    Target(String),
    /// The report, a profile or other output could not be written: what
    /// (`the report`, `--pprof FILE`; None where the message has always
    /// been the bare reason, as for `memleak symbolize`), and why.
    Output {
        what: Option<String>,
        err: io::Error,
    },
    /// Reading an input (a /proc file, a saved report, a profile).
    Input { what: String, err: io::Error },
    /// An input memleak read is not in the form it expects (a saved
    /// profile that is not pprof, a gzip stream it cannot unwrap).
    Format(String),
    /// Anything else memleak can explain in one line (the kernel lacks a
    /// feature, a table is too big, ...).
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// `memleak | head`: the reader went away; not a failure of memleak.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output { err, .. } if err.kind() == io::ErrorKind::BrokenPipe)
    }

    /// Writing the report (stdout) failed.
    pub fn report_output(err: io::Error) -> Error {
        Error::output("the report", err)
    }

    pub fn output(what: impl Into<String>, err: io::Error) -> Error {
        Error::Output {
            what: Some(what.into()),
            err,
        }
    }

    pub fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }

    pub fn target(msg: impl Into<String>) -> Error {
        Error::Target(msg.into())
    }

    pub fn format(msg: impl Into<String>) -> Error {
        Error::Format(msg.into())
    }

    pub fn other(msg: impl Into<String>) -> Error {
        Error::Other(msg.into())
    }

    pub fn bpf(op: impl Into<String>, errno: i32) -> Error {
        Error::Bpf {
            op: op.into(),
            errno: errno.abs(),
            note: String::new(),
        }
    }

    /// The same failure with `note` after its reason: a hint at a remedy
    /// (" (--fallback tracepoints takes the classic tracepoints)").
    pub fn noted(mut self, extra: &str) -> Error {
        match &mut self {
            Error::Bpf { note, .. } => note.push_str(extra),
            Error::Usage(msg)
            | Error::Privilege(msg)
            | Error::Target(msg)
            | Error::Format(msg)
            | Error::Other(msg) => msg.push_str(extra),
            Error::Elf { msg, .. } => msg.push_str(extra),
            // Their reason is an io::Error's own words: the note follows
            // them in a line of its own kind.
            Error::Output { .. } | Error::Input { .. } => {
                return Error::Other(format!("{self}{extra}"))
            }
        }
        self
    }

    /// A failed libbpf or bpf(2) call reported as an io::Error: Bpf when
    /// it carries an errno (the same words either way).
    pub fn bpf_io(op: impl Into<String>, err: io::Error) -> Error {
        match err.raw_os_error() {
            Some(errno) => Error::bpf(op, errno),
            None => Error::Other(format!("{}: {err}", op.into())),
        }
    }

    pub fn elf(path: impl Into<PathBuf>, msg: impl fmt::Display) -> Error {
        Error::Elf {
            path: path.into(),
            msg: msg.to_string(),
        }
    }

    pub fn input(what: impl Into<String>, err: io::Error) -> Error {
        Error::Input {
            what: what.into(),
            err,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg)
            | Error::Privilege(msg)
            | Error::Target(msg)
            | Error::Format(msg)
            | Error::Other(msg) => f.write_str(msg),
            Error::Bpf { op, errno, note } => {
                write!(f, "{op}: {}{note}", io::Error::from_raw_os_error(*errno))
            }
            Error::Elf { path, msg } => write!(f, "{}: {msg}", path.display()),
            Error::Output {
                what: Some(what),
                err,
            } => write!(f, "cannot write {what}: {err}"),
            Error::Output { what: None, err } => write!(f, "{err}"),
            Error::Input { what, err } => write!(f, "cannot read {what}: {err}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> io::Error {
        io::Error::from(io::ErrorKind::BrokenPipe)
    }

    #[test]
    fn only_a_closed_output_is_a_broken_pipe() {
        assert!(Error::report_output(pipe()).is_broken_pipe());
        assert!(Error::Output {
            what: None,
            err: pipe()
        }
        .is_broken_pipe());
        assert!(!Error::input("the report", pipe()).is_broken_pipe());
        assert!(!Error::report_output(io::Error::from_raw_os_error(libc::ENOSPC)).is_broken_pipe());
        // The words do not matter, only the kind.
        assert!(!Error::other("Broken pipe").is_broken_pipe());
    }

    #[test]
    fn messages_are_one_line_with_what_failed() {
        let enospc = || io::Error::from_raw_os_error(libc::ENOSPC);
        let cases = [
            (
                Error::report_output(enospc()),
                "cannot write the report: No space left on device (os error 28)",
            ),
            (
                Error::output("--pprof p.pb.gz", enospc()),
                "cannot write --pprof p.pb.gz: No space left on device (os error 28)",
            ),
            (
                Error::Output {
                    what: None,
                    err: enospc(),
                },
                "No space left on device (os error 28)",
            ),
            (
                Error::input("/proc/1/maps", io::Error::from_raw_os_error(libc::EACCES)),
                "cannot read /proc/1/maps: Permission denied (os error 13)",
            ),
            (
                Error::bpf("cannot size map allocs", -libc::E2BIG),
                "cannot size map allocs: Argument list too long (os error 7)",
            ),
            (
                Error::bpf_io("cannot attach", io::Error::from_raw_os_error(libc::EPERM))
                    .noted(" (run as root)")
                    .noted(" (--fallback)"),
                "cannot attach: Operation not permitted (os error 1) (run as root) (--fallback)",
            ),
            (
                // Not an errno: said as it is, with the note.
                Error::bpf_io(
                    "cannot attach",
                    io::Error::from(io::ErrorKind::InvalidInput),
                )
                .noted(" (--fallback)"),
                "cannot attach: invalid input parameter (--fallback)",
            ),
            (
                Error::elf("/lib/x.so", "not an ELF file"),
                "/lib/x.so: not an ELF file",
            ),
            (Error::usage("bad flag"), "bad flag"),
            (Error::format("truncated gzip data"), "truncated gzip data"),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want, "{e:?}");
        }
        assert!(matches!(
            Error::bpf_io("x", io::Error::from_raw_os_error(libc::EPERM)),
            Error::Bpf {
                errno: libc::EPERM,
                ..
            }
        ));
    }
}
