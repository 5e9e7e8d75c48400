//! Signals stay live while memleak sets up: creating tables of a hundred
//! million entries takes seconds, and the main thread reads its signals
//! only once the report loop runs.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// Until `finish`, SIGINT, SIGTERM or SIGHUP ends memleak at once: nothing
/// it attached outlives the process (the kernel drops every link and table
/// with the last file descriptor), and a command still held is killed, so
/// it never runs.
pub struct SetupSignals {
    done: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl SetupSignals {
    /// Call with the signals already blocked (every thread inherits that).
    pub fn watch(held_child: Option<u32>) -> Result<SetupSignals> {
        // SAFETY: eventfd returns a new fd or -1.
        let done = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if done < 0 {
            return Err(Error::Other(format!(
                "cannot create an eventfd: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: a new fd we own.
        let done = unsafe { OwnedFd::from_raw_fd(done) };
        // SAFETY: the sigset is initialised by sigemptyset before use.
        let signals = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(Error::Other(format!(
                    "cannot create a signalfd: {}",
                    io::Error::last_os_error()
                )));
            }
            OwnedFd::from_raw_fd(fd)
        };
        let done_fd = done.as_raw_fd();
        let thread = std::thread::Builder::new()
            .name("setup-signals".into())
            .spawn(move || wait(signals, done_fd, held_child))
            .map_err(|e| Error::Other(format!("cannot start a thread: {e}")))?;
        Ok(SetupSignals {
            done,
            thread: Some(thread),
        })
    }

    /// Setup is over: signals go to the report loop again.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let one = 1u64;
        // SAFETY: writing 8 bytes to our eventfd.
        unsafe { libc::write(self.done.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SetupSignals {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait(signals: OwnedFd, done: i32, held_child: Option<u32>) {
    let mut fds = [
        libc::pollfd {
            fd: signals.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: done,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: fds is a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if fds[1].revents != 0 || n < 0 {
            return;
        }
        if fds[0].revents != 0 {
            break;
        }
    }
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    unsafe {
        libc::read(
            signals.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            std::mem::size_of::<libc::signalfd_siginfo>(),
        )
    };
    if let Some(pid) = held_child {
        // SAFETY: killing our own child, still held before exec.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    let sig = info.ssi_signo as i32;
    let name = match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "SIGHUP",
    };
    eprintln!("memleak: {name} during setup; exiting with nothing attached");
    // SAFETY: ends the process; the kernel closes every fd, which detaches
    // and frees everything memleak set up.
    unsafe { libc::_exit(128 + sig) };
}
