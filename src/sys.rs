//! Safe wrappers for the system calls of the reachability scan: ptrace
//! (seize, interrupt, registers, continue, detach), waitpid and
//! process_vm_readv. Each takes plain values and returns io::Result; the
//! unsafe code stays here.

use std::io;

fn check(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Becomes the tracer of thread `tid` without stopping it (no options: its
/// children and exec are none of our business).
pub fn ptrace_seize(tid: u32) -> io::Result<()> {
    // SAFETY: PTRACE_SEIZE takes no pointers.
    check(unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid as libc::pid_t, 0usize, 0usize) })
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
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into a local int.
        let ret = unsafe { libc::waitpid(tid as libc::pid_t, &mut status, libc::__WALL) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        break;
    }
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
