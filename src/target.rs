//! The traced thing: an existing process, or a command that memleak starts
//! and holds until every probe is attached, so its first allocation is seen.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

use crate::error::{Error, Result};
use crate::sys;

/// Checks that `pid` names a live user process memleak may trace.
pub fn check_pid(pid: u32) -> Result<()> {
    let state = process_state(pid).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::Target(format!("no process with PID {pid}")),
        _ => Error::input(format!("/proc/{pid}/stat"), e),
    })?;
    if state == 'Z' || state == 'X' {
        return Err(Error::Target(format!("process {pid} has exited (zombie)")));
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
    if let Err(e) = exe {
        if e.kind() == io::ErrorKind::NotFound {
            return Err(Error::Target(format!(
                "process {pid} is a kernel thread; trace the kernel by running memleak without -p"
            )));
        }
    }
    Ok(())
}

/// A file descriptor that polls readable when the process exits (pidfd,
/// Linux 5.3+). `None` on older kernels: the caller polls /proc instead.
pub fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    sys::pidfd_open(pid).ok()
}

/// Lets a process stopped at exec (by the BPF program, for memleak to probe
/// its new program) go on.
pub fn send_sigcont(pid: u32) {
    let _ = sys::kill(pid, libc::SIGCONT);
}

/// The state letter of /proc/PID/stat (R, S, Z, ...).
fn process_state(pid: u32) -> io::Result<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The state follows the parenthesised command name, which may itself
    // contain spaces and parentheses.
    Ok(stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
        .unwrap_or('?'))
}

/// Running, as opposed to gone or a zombie.
pub fn is_alive(pid: u32) -> bool {
    process_state(pid).is_ok_and(|s| s != 'Z' && s != 'X')
}

/// Finds `program` as execvp would: a name with a slash is used as is,
/// anything else is searched in $PATH.
pub fn resolve_command(program: &str) -> Result<String> {
    let is_executable = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = std::path::Path::new(program);
        if !path.exists() {
            return Err(Error::Target(format!(
                "cannot run {program}: No such file or directory"
            )));
        }
        if !is_executable(path) {
            return Err(Error::Target(format!(
                "cannot run {program}: not an executable file"
            )));
        }
        return Ok(program.to_string());
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_string());
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = std::path::Path::new(dir).join(program);
        if is_executable(&candidate) {
            return Ok(candidate.to_string_lossy().into_owned());
        }
    }
    Err(Error::Target(format!("command not found: {program}")))
}

/// The thread group (process) of `pid`: itself for a process, its process
/// for a thread's ID (which /proc also answers to).
pub fn process_of(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(pid)
}

/// The program exec really runs for `path`: the file itself, or for a
/// script its `#!` interpreter (followed as the kernel does, up to 4
/// levels deep).
pub fn interpreter_of(path: &str) -> Result<String> {
    use std::io::Read;
    let mut current = path.to_string();
    for _ in 0..5 {
        let mut head = [0u8; 256];
        let n = std::fs::File::open(&current)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|e| Error::input(current.as_str(), e))?;
        let Some(line) = head[..n].strip_prefix(b"#!") else {
            return Ok(current);
        };
        let line = line.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let line = String::from_utf8_lossy(line);
        let Some(interp) = line.split_ascii_whitespace().next() else {
            return Err(Error::Target(format!(
                "cannot run {current}: its #! line names no interpreter"
            )));
        };
        if !std::path::Path::new(interp).exists() {
            return Err(Error::Target(format!(
                "cannot run {current}: its interpreter {interp} does not exist"
            )));
        }
        current = interp.to_string();
    }
    Err(Error::Target(format!(
        "cannot run {path}: too many levels of #! interpreters"
    )))
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    fn from_wait(status: libc::c_int) -> Option<ExitStatus> {
        if libc::WIFEXITED(status) {
            Some(ExitStatus::Code(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ExitStatus::Signal(libc::WTERMSIG(status)))
        } else {
            None
        }
    }

    /// memleak's own exit code: the child's, or 128 + signal as a shell does.
    pub fn exit_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }

    pub fn describe(self) -> String {
        match self {
            ExitStatus::Code(c) => format!("exited with status {c}"),
            ExitStatus::Signal(s) => {
                let name = sys::signal_description(s);
                format!("was killed by signal {s} ({name})")
            }
        }
    }
}

/// What a child did, as seen by `Child::poll`.
pub enum ChildEvent {
    /// Executed a program and stopped there, before its first instruction,
    /// until `Child::resume`: time to probe the new program's allocator.
    Exec,
    /// About to exit and stopped there: its memory map is still readable
    /// until `Child::resume`.
    Exiting,
    /// A SIGSTOP on its way to it, held back until `Child::resume` (drop
    /// it) or `Child::resume_with` (deliver it): memleak may have sent it,
    /// to read the maps before a dlclose.
    Stopped,
    Exited(ExitStatus),
}

/// A command forked and held before exec until `release`.
///
/// The child is ptrace-seized (without stopping it) only to get an exit
/// stop: at that moment /proc/PID/maps still lists its libraries, so a
/// report printed after it exited is still symbolized.
pub struct Child {
    pub pid: u32,
    go: Option<OwnedFd>,
    exec_error: Option<OwnedFd>,
    pub status: Option<ExitStatus>,
    /// ptrace-seized: a stop signal is seen (and suppressed) as a ptrace
    /// stop instead of stopping the child.
    seized: bool,
}

impl Child {
    /// Forks; the child waits for `release` and then execs `argv`.
    /// `path` is argv[0] resolved through $PATH.
    pub fn spawn_held(path: &str, argv: &[String]) -> Result<Child> {
        let cpath =
            CString::new(path).map_err(|_| Error::Target(format!("bad command path {path:?}")))?;
        let cargs: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| Error::target("command contains a NUL byte"))?;
        let (go_read, go_write) =
            sys::pipe_cloexec().map_err(|e| Error::Target(format!("cannot create a pipe: {e}")))?;
        let (error_read, error_write) =
            sys::pipe_cloexec().map_err(|e| Error::Target(format!("cannot create a pipe: {e}")))?;
        let pipes = sys::HeldPipes {
            go_read,
            go_write,
            error_read,
            error_write,
        };
        let pid = sys::fork_held(&cpath, &cargs, &pipes)
            .map_err(|e| Error::Target(format!("cannot fork: {e}")))?;
        // The child's ends: with the error pipe's write end closed here,
        // reading it gives EOF once the child has executed (or died).
        let sys::HeldPipes {
            go_read,
            go_write,
            error_read,
            error_write,
        } = pipes;
        drop(go_read);
        drop(error_write);
        // Exec stops hold the command at each exec until its new program
        // is probed; the exit stop keeps its maps readable for the final
        // report.
        let seized = sys::ptrace_seize(pid, libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_TRACEEXEC);
        if let Err(e) = &seized {
            // Without it, an exec is noticed late and the report made
            // after exit is not symbolized; tracing works.
            eprintln!(
                "memleak: warning: cannot ptrace process {pid}: {e}; a program it executes may lose its first allocations"
            );
        }
        Ok(Child {
            pid,
            go: Some(go_write),
            exec_error: Some(error_read),
            status: None,
            seized: seized.is_ok(),
        })
    }

    /// Lets the child exec. Returns the exec error, if any.
    pub fn release(&mut self, program: &str) -> Result<()> {
        if let Some(go) = self.go.take() {
            let _ = std::fs::File::from(go).write(&[1u8]);
        }
        if let Some(err) = self.exec_error.take() {
            let mut errno = [0u8; 4];
            // Blocks until exec succeeds (close-on-exec gives EOF) or fails.
            let n = std::fs::File::from(err).read(&mut errno);
            if matches!(n, Ok(4)) {
                return Err(Error::Target(format!(
                    "cannot run {program}: {}",
                    io::Error::from_raw_os_error(i32::from_ne_bytes(errno))
                )));
            }
        }
        Ok(())
    }

    /// Waits (at most `timeout`) for the child to stop itself with SIGSTOP
    /// (--unwind cfi's probe at its entry point), passing other signals
    /// on. True: it is stopped there until `continue_from_stop`. False: it
    /// exited first (its status is kept) or the time ran out.
    pub fn wait_for_stop(&mut self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let flags = libc::WNOHANG | libc::WUNTRACED | libc::__WALL;
            let Ok(status) = sys::waitpid(self.pid, flags) else {
                return false;
            };
            let Some(status) = status else {
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
                continue;
            };
            if let Some(exit) = ExitStatus::from_wait(status) {
                self.status = Some(exit);
                return false;
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            let event = status >> 16;
            let signal = libc::WSTOPSIG(status);
            if signal == libc::SIGSTOP && (event == 0 || !self.seized) {
                return true;
            }
            // Anything else (its exit, another signal) goes on as poll
            // would let it.
            let inject = if event == 0 && self.seized { signal } else { 0 };
            let _ = sys::ptrace_cont(self.pid, inject);
        }
    }

    /// Lets a child stopped by `wait_for_stop` go on, without the stop
    /// signal.
    pub fn continue_from_stop(&mut self) {
        if self.seized {
            // The child is in a signal-delivery stop; 0 drops the signal.
            let _ = sys::ptrace_cont(self.pid, 0);
        } else {
            let _ = sys::kill(self.pid, libc::SIGCONT);
        }
    }

    /// Handles every pending state change of the child (call on SIGCHLD).
    pub fn poll(&mut self) -> Vec<ChildEvent> {
        let mut events = Vec::new();
        while let Ok(Some(status)) = sys::waitpid(self.pid, libc::WNOHANG | libc::__WALL) {
            if let Some(exit) = ExitStatus::from_wait(status) {
                self.status = Some(exit);
                events.push(ChildEvent::Exited(exit));
                break;
            }
            if libc::WIFSTOPPED(status) {
                let event = status >> 16;
                let mut inject = 0;
                if event == libc::PTRACE_EVENT_EXIT {
                    // Stays stopped until the caller has read its maps.
                    events.push(ChildEvent::Exiting);
                    break;
                } else if event == libc::PTRACE_EVENT_EXEC {
                    // Stays stopped until the caller has probed it.
                    events.push(ChildEvent::Exec);
                    break;
                } else if event == 0 && libc::WSTOPSIG(status) == libc::SIGSTOP {
                    // Stays stopped until the caller says whose it is.
                    events.push(ChildEvent::Stopped);
                    break;
                } else if event == 0 {
                    // A signal on its way to the child: pass it on.
                    inject = libc::WSTOPSIG(status);
                }
                // Group stops (PTRACE_EVENT_STOP) just continue: memleak
                // never wants the child stopped.
                let _ = sys::ptrace_cont(self.pid, inject);
            }
        }
        events
    }

    /// Whether the command has been let run (it may have exited since).
    pub fn released(&self) -> bool {
        self.go.is_none()
    }

    /// Sends `sig` to the command, if it still runs.
    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            let _ = sys::kill(self.pid, sig);
        }
    }

    /// Lets a child stopped at its exit, an exec or a SIGSTOP go on (the
    /// SIGSTOP dropped).
    pub fn resume(&mut self) {
        self.resume_with(0);
    }

    /// Lets a child in a ptrace stop go on, delivering `sig` (0: none).
    pub fn resume_with(&mut self, sig: i32) {
        let _ = sys::ptrace_cont(self.pid, sig);
    }

    /// Called on exit: a child still held before exec is killed (it never
    /// ran); a running one is detached and left running, as with -p.
    pub fn abandon(&mut self) {
        if self.status.is_some() {
            return;
        }
        if self.go.take().is_some() {
            let _ = sys::kill(self.pid, libc::SIGKILL);
            let status = sys::waitpid(self.pid, libc::__WALL).ok().flatten();
            self.status = status
                .and_then(ExitStatus::from_wait)
                .or(Some(ExitStatus::Signal(libc::SIGKILL)));
        }
        // A tracer's exit detaches it; nothing else to undo.
    }
}

impl Drop for Child {
    /// However a run ends (an error, a closed stdout), a command still
    /// held never runs.
    fn drop(&mut self) {
        self.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_commands_like_execvp() {
        assert!(resolve_command("sh").unwrap().ends_with("/sh"));
        assert_eq!(resolve_command("/bin/sh").unwrap(), "/bin/sh");
        assert_eq!(
            resolve_command("no-such-command-xyz")
                .unwrap_err()
                .to_string(),
            "command not found: no-such-command-xyz"
        );
        assert!(resolve_command("./no/such")
            .unwrap_err()
            .to_string()
            .contains("No such file"));
        assert!(resolve_command("/etc/passwd")
            .unwrap_err()
            .to_string()
            .contains("not an executable"));
    }

    #[test]
    #[ignore = "needs root; make test runs it (make check cannot)"]
    fn checks_pids() {
        assert!(check_pid(std::process::id()).is_ok());
        assert_eq!(
            check_pid(999_999_999).unwrap_err().to_string(),
            "no process with PID 999999999"
        );
        // kthreadd is PID 2 on every Linux.
        assert!(check_pid(2)
            .unwrap_err()
            .to_string()
            .contains("kernel thread"));
    }

    #[test]
    fn exit_status_codes() {
        assert_eq!(ExitStatus::Code(3).exit_code(), 3);
        assert_eq!(ExitStatus::Signal(9).exit_code(), 137);
        assert!(ExitStatus::Signal(11)
            .describe()
            .starts_with("was killed by signal 11"));
    }
}
