//! Signals stay live while memleak sets up: creating tables of a hundred
//! million entries takes seconds, and the main thread reads its signals
//! only once the report loop runs.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::sys;

/// Until `finish`, SIGINT, SIGTERM or SIGHUP ends memleak at once: nothing
/// it attached outlives the process (the kernel drops every link and table
/// with the last file descriptor), and a command still held is killed, so
/// it never runs.
pub struct SetupSignals {
    /// An eventfd: written once setup is over.
    done: File,
    thread: Option<JoinHandle<()>>,
}

impl SetupSignals {
    /// Call with the signals already blocked (every thread inherits that).
    pub fn watch(held_child: Option<u32>) -> Result<SetupSignals> {
        let done =
            sys::eventfd().map_err(|e| Error::Other(format!("cannot create an eventfd: {e}")))?;
        let done = File::from(done);
        let signals = sys::signalfd(
            &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP],
            libc::SFD_CLOEXEC,
        )
        .map_err(|e| Error::Other(format!("cannot create a signalfd: {e}")))?;
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
        // An eventfd reads each write as an 8-byte increment.
        let _ = (&self.done).write(&1u64.to_ne_bytes());
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
        let polled = sys::poll(&mut fds, -1);
        if polled
            .as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::Interrupted)
        {
            continue;
        }
        if fds[1].revents != 0 || polled.is_err() {
            return;
        }
        if fds[0].revents != 0 {
            break;
        }
    }
    let sig = sys::read_signal(signals.as_fd()).map_or(0, |info| info.signo);
    if let Some(pid) = held_child {
        // Our own child, still held before exec: it never runs.
        let _ = sys::kill(pid, libc::SIGKILL);
    }
    let name = match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "SIGHUP",
    };
    eprintln!("memleak: {name} during setup; exiting with nothing attached");
    // The kernel closes every fd, which detaches and frees everything
    // memleak set up.
    sys::exit_now(128 + sig);
}
