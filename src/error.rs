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
    /// A libbpf or bpf(2) operation failed: what was attempted, and errno.
    Bpf { op: String, errno: i32 },
    /// An ELF file could not be read or parsed, or lacks what was needed.
    Elf { path: PathBuf, msg: String },
    /// The traced process or command: gone, not traceable, not startable.
    Target(String),
    /// The report, profile or other output could not be written.
    Output(io::Error),
    /// Reading an input (a /proc file, a saved report, a profile).
    Input { what: String, err: io::Error },
    /// Anything else memleak can explain in one line (the kernel lacks a
    /// feature, a table is too big, ...).
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// `memleak | head`: the reader went away; not a failure of memleak.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    pub fn bpf(op: impl Into<String>, errno: i32) -> Error {
        Error::Bpf {
            op: op.into(),
            errno: errno.abs(),
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
            Error::Usage(msg) | Error::Privilege(msg) | Error::Target(msg) | Error::Other(msg) => {
                f.write_str(msg)
            }
            Error::Bpf { op, errno } => {
                write!(f, "{op}: {}", io::Error::from_raw_os_error(*errno))
            }
            Error::Elf { path, msg } => write!(f, "{}: {msg}", path.display()),
            Error::Output(e) => write!(f, "cannot write the report: {e}"),
            Error::Input { what, err } => write!(f, "cannot read {what}: {err}"),
        }
    }
}

impl std::error::Error for Error {}
