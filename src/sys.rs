//! Safe wrappers for every system call memleak makes outside libbpf:
//! ptrace, waitpid, fork and exec of a held command, signals (signalfd,
//! sigprocmask, kill), poll, process_vm_readv, clocks, mount, uname.
//! Each takes plain values and returns plain values or io::Result; the
//! unsafe code stays here and in src/bpf (the crate denies it elsewhere).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

fn check(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Becomes the tracer of thread `tid` without stopping it, with ptrace
/// `options` (PTRACE_O_*; 0: its children and exec are none of our
/// business).
pub fn ptrace_seize(tid: u32, options: i32) -> io::Result<()> {
    // SAFETY: PTRACE_SEIZE takes the options as a plain value, no pointers.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            tid as libc::pid_t,
            0usize,
            options as usize,
        )
    })
}

/// Asks a seized thread to stop; `wait_stop` sees it stopped.
pub fn ptrace_interrupt(tid: u32) -> io::Result<()> {
    // SAFETY: PTRACE_INTERRUPT takes no pointers.
    check(unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid as libc::pid_t, 0usize, 0usize) })
}

/// Lets a stopped tracee go, delivering `signal` (0: none).
pub fn ptrace_detach(tid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: PTRACE_DETACH takes the signal as a plain value.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_DETACH,
            tid as libc::pid_t,
            0usize,
            signal as usize,
        )
    })
}

/// Resumes a stopped tracee that stays traced, delivering `signal`.
pub fn ptrace_cont(tid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: PTRACE_CONT takes the signal as a plain value.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_CONT,
            tid as libc::pid_t,
            0usize,
            signal as usize,
        )
    })
}

/// The general registers of a stopped tracee as machine words, in the
/// kernel's order (user_regs_struct on x86_64, user_pt_regs on aarch64).
pub fn ptrace_registers(tid: u32) -> io::Result<Vec<u64>> {
    const NT_PRSTATUS: usize = 1;
    let mut words = [0u64; 64];
    let mut iov = libc::iovec {
        iov_base: words.as_mut_ptr().cast(),
        iov_len: std::mem::size_of_val(&words),
    };
    // SAFETY: the kernel writes at most iov_len bytes into `words` and
    // sets iov_len to what it wrote.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid as libc::pid_t,
            NT_PRSTATUS,
            &mut iov as *mut libc::iovec,
        )
    })?;
    let n = (iov.iov_len / 8).min(words.len());
    Ok(words[..n].to_vec())
}

/// The index of the stack pointer in [`ptrace_registers`]'s words.
#[cfg(target_arch = "x86_64")]
pub const SP_REGISTER: usize = 19;
#[cfg(target_arch = "aarch64")]
pub const SP_REGISTER: usize = 31;

/// What `wait_stop` saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stopped by PTRACE_INTERRUPT or a group stop (PTRACE_EVENT_STOP).
    Interrupted,
    /// Stopped on its way to receive `signal`, which must be passed on.
    Signal(i32),
    /// Stopped at its exit (PTRACE_EVENT_EXIT).
    Exiting,
    /// Another ptrace event.
    Event(i32),
    /// Gone: exited or killed.
    Gone,
}

/// Waits until tracee `tid` stops or dies.
pub fn wait_stop(tid: u32) -> io::Result<Stop> {
    let Some(status) = waitpid(tid, libc::__WALL)? else {
        // Without WNOHANG, waitpid returns only with a status.
        return Ok(Stop::Gone);
    };
    if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
        return Ok(Stop::Gone);
    }
    let event = status >> 16;
    Ok(match event {
        0 => Stop::Signal(libc::WSTOPSIG(status)),
        libc::PTRACE_EVENT_STOP => Stop::Interrupted,
        libc::PTRACE_EVENT_EXIT => Stop::Exiting,
        other => Stop::Event(other),
    })
}

/// waitpid(2) for child or tracee `pid` with `flags` (WNOHANG, __WALL,
/// ...), retried when a signal interrupts it: its raw wait status, to be
/// read with libc::WIFEXITED and friends, or None if WNOHANG found no
/// change.
pub fn waitpid(pid: u32, flags: i32) -> io::Result<Option<i32>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into a local int.
        let ret = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok((ret > 0).then_some(status));
    }
}

/// Reads the ranges `(address, length)` of process `pid` into `buf`, one
/// after the other, in one call (at most 1024 ranges). Returns how many
/// bytes were read: the kernel stops at the first range it cannot read,
/// so a short count means the ranges up to that byte were read whole.
pub fn read_ranges(pid: u32, ranges: &[(u64, usize)], buf: &mut [u8]) -> io::Result<usize> {
    let total: usize = ranges.iter().map(|r| r.1).sum();
    if total > buf.len() || ranges.len() > 1024 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: total,
    };
    let remote: Vec<libc::iovec> = ranges
        .iter()
        .map(|&(addr, len)| libc::iovec {
            iov_base: addr as usize as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    // SAFETY: the local iovec covers `total` bytes of `buf`; the remote
    // ones are only addresses in the other process, checked by the kernel.
    let n = unsafe {
        libc::process_vm_readv(
            pid as libc::pid_t,
            &local,
            1,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// CPU time the calling thread has used.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The time of `clock` (libc::CLOCK_MONOTONIC, ...) in nanoseconds.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec, a local.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The local time of day now: (hours, minutes, seconds).
pub fn local_time_of_day() -> Option<(i32, i32, i32)> {
    // SAFETY: time with a null pointer only returns the time.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: tm is plain data (integers and a pointer that localtime_r
    // sets); zero is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r reads `now` and writes only into `tm`, both
    // locals (unlike localtime, it keeps no shared state of ours).
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return None;
    }
    Some((tm.tm_hour, tm.tm_min, tm.tm_sec))
}

/// The effective user ID.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The running kernel's release string (uname -r), e.g. "6.1.0-18-amd64".
pub fn kernel_release() -> Option<String> {
    // SAFETY: utsname is arrays of chars; zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the struct, a local.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    // SAFETY: the kernel NUL-terminates each field, and the zeroed struct
    // has a NUL at the end of the array whatever it wrote.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    Some(release.to_string_lossy().into_owned())
}

/// The system's memory page size in bytes, if sysconf knows it.
pub fn page_size() -> Option<u64> {
    // SAFETY: sysconf takes a plain value and has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0)
}

/// mount(2) of file system `fstype` from `source` on `target`, no flags
/// and no data.
pub fn mount(source: &str, target: &str, fstype: &str) -> io::Result<()> {
    let cstr = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (source, target, fstype) = (cstr(source)?, cstr(target)?, cstr(fstype)?);
    // SAFETY: three NUL-terminated strings that outlive the call, and no
    // data.
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    check(ret.into())
}

/// Sends `signal` to process `pid`.
pub fn kill(pid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain values.
    check(unsafe { libc::kill(pid as libc::pid_t, signal) }.into())
}

/// The C library's description of `signal` ("Segmentation fault").
pub fn signal_description(signal: i32) -> String {
    // SAFETY: strsignal returns a pointer to a NUL-terminated string (a
    // static one, or a buffer of this thread for unknown signals) that
    // stays valid until the next strsignal call of this thread; it is
    // copied before that.
    unsafe { CStr::from_ptr(libc::strsignal(signal)) }
        .to_string_lossy()
        .into_owned()
}

/// Ends the process at once with `code`: no atexit handlers, no flushing
/// of stdio buffers; the kernel closes every file descriptor.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process; nothing runs after it.
    unsafe { libc::_exit(code) }
}

/// A file descriptor that polls readable when process `pid` exits (pidfd,
/// Linux 5.3+).
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes plain values.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    owned_fd(fd)
}

/// An eventfd (counter 0, close-on-exec).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes plain values.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    owned_fd(fd.into())
}

/// A pipe, both ends close-on-exec: (read end, write end).
pub fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is an array of two ints for pipe2 to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
    // SAFETY: pipe2 succeeded: two new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Takes ownership of a new file descriptor a system call returned (or
/// its error, when negative).
fn owned_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(ret).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the system call just created `fd`; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a local sigset_t; these only write into it (an
    // invalid signal number is refused, leaving it as it was).
    unsafe {
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
    }
    set
}

/// Blocks `signals` in the calling thread (threads started later inherit
/// that), so that they wait for a signalfd.
pub fn block_signals(signals: &[i32]) -> io::Result<()> {
    let set = sigset(signals);
    // SAFETY: `set` is an initialised sigset; the old mask is not wanted.
    let ret = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A signalfd for `signals` with `flags` (SFD_CLOEXEC, SFD_NONBLOCK).
pub fn signalfd(signals: &[i32], flags: i32) -> io::Result<OwnedFd> {
    let set = sigset(signals);
    // SAFETY: `set` is an initialised sigset; -1 asks for a new fd.
    let fd = unsafe { libc::signalfd(-1, &set, flags) };
    owned_fd(fd.into())
}

/// One signal read from a signalfd: its number and si_code (SI_KERNEL:
/// from the terminal; SI_USER: kill(2) by a process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalInfo {
    pub signo: i32,
    pub code: i32,
}

/// Reads one signal from signalfd `fd`; None if none is waiting (a
/// non-blocking fd) or the read failed.
pub fn read_signal(fd: BorrowedFd) -> Option<SignalInfo> {
    const SIZE: usize = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: signalfd_siginfo is plain integers; zero is a valid value.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    // SAFETY: read writes at most SIZE bytes into `info`, a local of that
    // size.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            SIZE,
        )
    };
    (n == SIZE as isize).then_some(SignalInfo {
        signo: info.ssi_signo as i32,
        code: info.ssi_code,
    })
}

/// poll(2) on `fds` for at most `timeout_ms` (-1: no limit): how many have
/// events (their `revents` are set).
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: fds is a live, writable slice of pollfd of the length given.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// What the parent's pipes tell a child forked by [`fork_held`], and it
/// tells back.
pub struct HeldPipes {
    /// Read by the child: one byte lets it exec; EOF means never run.
    pub go_read: OwnedFd,
    pub go_write: OwnedFd,
    /// Written by the child: the errno of a failed exec (close-on-exec
    /// gives the parent EOF when exec succeeds).
    pub error_read: OwnedFd,
    pub error_write: OwnedFd,
}

/// Forks a child that waits for the go byte on `pipes.go_read` and then
/// executes `path` with `argv`; returns its PID in the parent. The child
/// dies with memleak while held, and never runs if memleak is already gone.
///
/// Between fork and exec the child makes only async-signal-safe calls on
/// memory prepared before the fork: memleak may have threads, and the
/// child has only a copy of the forking one.
pub fn fork_held(path: &CStr, argv: &[CString], pipes: &HeldPipes) -> io::Result<u32> {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let parent = std::process::id() as libc::pid_t;
    let go_read = pipes.go_read.as_raw_fd();
    let go_write = pipes.go_write.as_raw_fd();
    let error_read = pipes.error_read.as_raw_fd();
    let error_write = pipes.error_write.as_raw_fd();
    // SAFETY: the child runs only child_until_exec, which makes
    // async-signal-safe calls and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: `path` and `argv_ptrs` (NULL-terminated, pointing into
        // `argv`) were built before the fork and live in the child's copy
        // of memory; the fds are this process's own.
        unsafe {
            child_until_exec(
                parent,
                path.as_ptr(),
                argv_ptrs.as_ptr(),
                [go_read, go_write, error_read, error_write],
            )
        }
    }
    Ok(pid as u32)
}

/// The child of [`fork_held`] until exec or _exit.
///
/// # Safety
/// Call only in a freshly forked child; `path` and `argv` must be valid
/// NUL-terminated C strings and a NULL-terminated array of them.
unsafe fn child_until_exec(
    parent: libc::pid_t,
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    [go_read, go_write, error_read, error_write]: [libc::c_int; 4],
) -> ! {
    // SAFETY: each call below is async-signal-safe (sigprocmask, signal,
    // prctl, getppid, close, read, execv, write, _exit), takes plain values
    // or pointers to locals and to the caller's strings, and the function
    // ends in exec or _exit.
    unsafe {
        // Undo what memleak set for itself: blocked signals (for its
        // signalfd) and the ignored SIGPIPE survive exec otherwise.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // Die with memleak while held, however it dies; if it is
        // already gone (reparented), never run the command.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent {
            libc::_exit(127);
        }
        // memleak's ends of the pipes: with the write end open
        // here, memleak's death would never give EOF.
        libc::close(go_write);
        libc::close(error_read);
        let mut byte = 0u8;
        // Wait for the go; EOF (memleak died) means do not run.
        if libc::read(go_read, (&mut byte as *mut u8).cast(), 1) != 1 {
            libc::_exit(127);
        }
        // Released: from now on the command runs on its own if
        // memleak ends, as a -p target does.
        libc::prctl(libc::PR_SET_PDEATHSIG, 0 as libc::c_ulong);
        if libc::getppid() != parent {
            libc::_exit(127);
        }
        libc::execv(path, argv);
        let errno = *libc::__errno_location();
        libc::write(error_write, (&errno as *const i32).cast(), 4);
        libc::_exit(127);
    }
}

/// The guardian of the traced processes: a small child of memleak that
/// outlives it. memleak's BPF programs stop a traced process (SIGSTOP) for
/// a few milliseconds while memleak reads what it just loaded (at exec, at
/// its entry point, at dlclose) and memleak lets it go (SIGCONT). Every way
/// memleak ends normally lets go first (the tracer's Drop); a SIGKILL, or
/// an abort, would leave the process stopped for good. Dropping the
/// `Guardian` (after the tracer) dismisses it; if memleak ends without
/// that, the guardian waits until memleak has fully exited (its BPF links
/// closed, so no new stop can come) and continues each traced process it
/// finds stopped.
///
/// It cannot tell memleak's stop from one a user sent: after memleak died
/// without detaching, a stopped traced process is taken to be its hold.
pub struct Guardian {
    dismiss: OwnedFd,
}

/// Processes one guardian watches, at most (more are watched by none).
const GUARDED_MAX: usize = 16;

impl Guardian {
    /// Forks the guardian of processes `pids` (the first GUARDED_MAX).
    pub fn spawn(pids: &[u32]) -> io::Result<Guardian> {
        let (read_end, write_end) = pipe_cloexec()?;
        // Everything the child needs is made before the fork: memleak may
        // have threads, and the child may only make async-signal-safe
        // calls.
        let paths: Vec<(libc::pid_t, CString)> = pids
            .iter()
            .take(GUARDED_MAX)
            .filter_map(|&pid| {
                let path = CString::new(format!("/proc/{pid}/stat")).ok()?;
                Some((pid as libc::pid_t, path))
            })
            .collect();
        let mut guarded = [(0 as libc::pid_t, std::ptr::null::<libc::c_char>()); GUARDED_MAX];
        for (slot, (pid, path)) in guarded.iter_mut().zip(&paths) {
            *slot = (*pid, path.as_ptr());
        }
        // SAFETY: getpid takes nothing.
        let memleak = unsafe { libc::getpid() };
        let watch = read_end.as_raw_fd();
        // SAFETY: the child runs only guard, which makes async-signal-safe
        // calls and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: `guarded` holds pointers into `paths`, built before
            // the fork, in the child's copy of memory; `watch` is its own.
            unsafe { guard(memleak, watch, &guarded[..paths.len()]) }
        }
        Ok(Guardian { dismiss: write_end })
    }
}

impl Drop for Guardian {
    /// memleak let every process go: the guardian ends doing nothing.
    fn drop(&mut self) {
        // SAFETY: writes one byte from a local to memleak's own pipe.
        unsafe { libc::write(self.dismiss.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    }
}

/// The guardian's whole life; see [`Guardian`].
///
/// # Safety
/// Call only in a freshly forked child; each path must be a valid
/// NUL-terminated C string.
unsafe fn guard(
    memleak: libc::pid_t,
    watch: libc::c_int,
    guarded: &[(libc::pid_t, *const libc::c_char)],
) -> ! {
    // SAFETY: each call below is async-signal-safe (setsid, prctl, close,
    // syscall(close_range), sigprocmask, read, getppid, nanosleep, open,
    // kill, _exit) and takes plain values or pointers to locals and to the
    // caller's strings; the function ends in _exit.
    unsafe {
        // Its own session, out of the terminal's reach (a Ctrl+C meant
        // for memleak), and its own name, out of `killall memleak`'s.
        libc::setsid();
        libc::prctl(libc::PR_SET_NAME, c"memleak-guard".as_ptr());
        // None of memleak's descriptors: a guardian holding stdout open
        // would keep `memleak | head` waiting, one holding a held
        // command's go pipe would keep it from ever seeing EOF.
        close_all_but(watch);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        let mut byte = 0u8;
        loop {
            let n = libc::read(watch, (&mut byte as *mut u8).cast(), 1);
            if n == 1 && byte == b'x' {
                libc::_exit(0);
            }
            if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                break;
            }
        }
        // memleak died without letting go. Its fds, BPF links among them,
        // are closed before its children are handed to another parent:
        // from then on no new stop can come.
        for _ in 0..1000 {
            if libc::getppid() != memleak {
                break;
            }
            sleep_ms(5);
        }
        // A stop sent just before may still be on its way: look again.
        for _ in 0..3 {
            for &(pid, path) in guarded {
                if is_stopped(path) {
                    libc::kill(pid, libc::SIGCONT);
                }
            }
            sleep_ms(20);
        }
        libc::_exit(0);
    }
}

/// Closes every descriptor but `keep` (close_range, Linux 5.9+; one by one
/// before).
///
/// # Safety
/// Only for a process that owns nothing it still needs in them.
unsafe fn close_all_but(keep: libc::c_int) {
    // The system call's number is 436 on x86_64 and arm64 alike.
    const SYS_CLOSE_RANGE: libc::c_long = 436;
    // SAFETY: close_range and close take plain values.
    unsafe {
        let below = keep == 0 || libc::syscall(SYS_CLOSE_RANGE, 0u32, (keep - 1) as u32, 0u32) == 0;
        let above = libc::syscall(SYS_CLOSE_RANGE, (keep + 1) as u32, u32::MAX, 0u32) == 0;
        if !(below && above) {
            for fd in 0..4096 {
                if fd != keep {
                    libc::close(fd);
                }
            }
        }
    }
}

/// Sleeps `ms` milliseconds (async-signal-safe).
fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: (ms * 1_000_000) as libc::c_long,
    };
    // SAFETY: nanosleep reads a local timespec; no remainder is asked for.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

/// Whether the process whose /proc/PID/stat is `path` is stopped (state
/// T), read without allocating (async-signal-safe).
///
/// # Safety
/// `path` must be a valid NUL-terminated C string.
unsafe fn is_stopped(path: *const libc::c_char) -> bool {
    let mut buf = [0u8; 512];
    // SAFETY: open, read into a local buffer, close.
    let n = unsafe {
        let fd = libc::open(path, libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let Ok(n) = usize::try_from(n) else {
        return false;
    };
    // "PID (COMM) S ...": the state follows the last ')', as COMM may
    // hold any character.
    let stat = &buf[..n.min(buf.len())];
    stat.iter()
        .rposition(|&b| b == b')')
        .and_then(|close| stat.get(close + 2))
        .is_some_and(|&state| state == b'T')
}
