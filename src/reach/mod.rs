//! The reachability scan (--unreachable): stop every thread of a process,
//! read its registers, flood-fill from its registers, stacks and writable
//! memory through the outstanding blocks memleak traced, resume it, and
//! say which blocks it can no longer reach.
//!
//! The process is stopped for the whole scan, so that no pointer moves
//! while it is read. Every way out resumes it: `Stopped`'s Drop on return
//! and on error, and the kernel when memleak itself dies (a tracer's exit
//! detaches its tracees, which then run on).

mod graph;

use std::time::{Duration, Instant};

pub use graph::Class;
use graph::{Index, Memory};

use crate::error::{Error, Result};
use crate::sys::{self, Stop};

/// The thread memleak already traces in the process (-c's command, seized
/// to see its exit) and in what state it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    None,
    /// Traced and running: interrupted and continued like the others, but
    /// never detached.
    Running(u32),
    /// Stopped at its exit by the caller, who continues it.
    AtExit(u32),
}

/// The outcome of one scan of one process.
#[derive(Debug, Default, Clone)]
pub struct Scan {
    /// (address, size) sorted by address, and the class of each.
    blocks: Vec<(u64, u64)>,
    classes: Vec<Class>,
    pub threads: usize,
    pub bytes_scanned: u64,
    pub unreadable: u64,
    pub unreadable_bytes: u64,
    /// How long the process was stopped.
    pub pause: Duration,
    /// memleak's CPU time in that pause (less than the pause when other
    /// processes compete for the CPU).
    pub cpu: Duration,
}

impl Scan {
    /// The class of the block at `addr`; None for a block the scan did
    /// not know (allocated after it).
    pub fn class_of(&self, addr: u64) -> Option<Class> {
        let i = self.blocks.binary_search_by_key(&addr, |b| b.0).ok()?;
        self.classes.get(i).copied()
    }
}

/// PID of the process tracing `pid` (TracerPid in /proc/PID/status), if any.
pub fn tracer_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&t| t != 0)
}

/// Refuses a process another tracer (a debugger) holds: it cannot be
/// stopped by a second one.
pub fn check_not_traced(pid: u32) -> Result<()> {
    match tracer_of(pid) {
        Some(t) if t != std::process::id() => Err(Error::Target(format!(
            "--unreachable: process {pid} is already traced by process {t} (a debugger?); it cannot be stopped for the scan"
        ))),
        _ => Ok(()),
    }
}

/// Scans process `pid` whose outstanding blocks are `blocks` (address,
/// size; any order).
pub fn scan(pid: u32, mut blocks: Vec<(u64, u64)>, held: Held) -> Result<Scan> {
    blocks.sort_unstable();
    blocks.dedup_by_key(|b| b.0);
    let index = Index::new(&blocks);
    check_not_traced(pid)?;
    let started = Instant::now();
    let cpu_started = sys::thread_cpu_time();
    let stopped = Stopped::stop(pid, held)?;
    if let Some(ms) = test_delay_ms() {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| Error::input(format!("/proc/{pid}/maps"), e))?;
    let sps: Vec<u64> = stopped.threads.iter().filter_map(|t| t.sp).collect();
    let mut roots = Vec::new();
    for (start, end) in writable_mappings(&maps) {
        // A stack is scanned from its thread's stack pointer up (less the
        // x86-64 red zone): what lies below is dead frames. It is a root
        // whole, even where it lies in a traced block (a thread stack
        // mmap'd by the C library).
        let from = sps
            .iter()
            .filter(|&&sp| start <= sp && sp < end)
            .map(|&sp| sp.saturating_sub(128).max(start) & !7)
            .min();
        roots.push(graph::Root {
            start: from.unwrap_or(start),
            end,
            skip_blocks: from.is_none(),
        });
    }
    let registers: Vec<u64> = stopped
        .threads
        .iter()
        .flat_map(|t| t.registers.iter().copied())
        .collect();
    let mut mem = Process { pid };
    let (classes, cost) = graph::classify(&mut mem, &index, &roots, &registers, &sps);
    let threads = stopped.threads.len();
    drop(stopped);
    Ok(Scan {
        blocks,
        classes,
        threads,
        bytes_scanned: cost.bytes_scanned,
        unreadable: cost.unreadable,
        unreadable_bytes: cost.unreadable_bytes,
        pause: started.elapsed(),
        cpu: sys::thread_cpu_time().saturating_sub(cpu_started),
    })
}

/// MEMLEAK_TEST_SCAN_DELAY_MS: how long to hold the process stopped before
/// scanning, so that tests can kill memleak in the middle of a scan.
fn test_delay_ms() -> Option<u64> {
    std::env::var("MEMLEAK_TEST_SCAN_DELAY_MS")
        .ok()?
        .parse()
        .ok()
}

/// (start, end) of each writable mapping in /proc/PID/maps text.
fn writable_mappings(maps: &str) -> Vec<(u64, u64)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            if perms.as_bytes().get(1) != Some(&b'w') {
                return None;
            }
            // [vvar] and the like are not writable; device mappings fail
            // to read and are counted as unreadable.
            let (s, e) = range.split_once('-')?;
            Some((
                u64::from_str_radix(s, 16).ok()?,
                u64::from_str_radix(e, 16).ok()?,
            ))
        })
        .collect()
}

struct Process {
    pid: u32,
}

impl Memory for Process {
    fn read(&mut self, ranges: &[(u64, usize)], buf: &mut [u8]) -> usize {
        sys::read_ranges(self.pid, ranges, buf).unwrap_or(0)
    }
}

struct Thread {
    tid: u32,
    registers: Vec<u64>,
    sp: Option<u64>,
    /// The signal it was stopped on the way to, delivered when it goes on.
    signal: i32,
}

/// Every thread of a process, stopped; resumed on drop.
struct Stopped {
    threads: Vec<Thread>,
    held: Held,
    /// The held thread's signal to pass on when it is continued.
    held_signal: Option<i32>,
}

impl Stopped {
    /// Seizes and stops each thread in /proc/PID/task, listing again until
    /// no new one appears (a thread may be created while others stop).
    fn stop(pid: u32, held: Held) -> Result<Stopped> {
        let mut stopped = Stopped {
            threads: Vec::new(),
            held,
            held_signal: None,
        };
        let mut seen = std::collections::HashSet::new();
        loop {
            let tids = list_threads(pid)?;
            let new: Vec<u32> = tids.into_iter().filter(|t| seen.insert(*t)).collect();
            if new.is_empty() {
                break;
            }
            for tid in new {
                stopped.stop_one(tid)?;
            }
        }
        if stopped.threads.is_empty() {
            return Err(Error::Target(format!(
                "process {pid} has no threads left to stop"
            )));
        }
        Ok(stopped)
    }

    fn stop_one(&mut self, tid: u32) -> Result<()> {
        let gone = |e: &std::io::Error| e.raw_os_error() == Some(libc::ESRCH);
        let signal = match self.held {
            Held::AtExit(h) if h == tid => 0,
            Held::Running(h) if h == tid => {
                if !interrupt(tid)? {
                    return Ok(());
                }
                match sys::wait_stop(tid) {
                    Ok(Stop::Signal(s)) => {
                        self.held_signal = Some(s);
                        0
                    }
                    Ok(Stop::Gone) | Err(_) => return Ok(()),
                    // Its exit stop is the caller's to see; continued on drop.
                    Ok(_) => {
                        self.held_signal = Some(0);
                        0
                    }
                }
                .max(0)
            }
            _ => {
                if let Err(e) = sys::ptrace_seize(tid, 0) {
                    if gone(&e) {
                        return Ok(());
                    }
                    let by = tracer_of(tid)
                        .map(|t| format!(" (traced by process {t})"))
                        .unwrap_or_default();
                    return Err(Error::Target(format!(
                        "cannot ptrace thread {tid}{by}: {e}"
                    )));
                }
                // Not stopped: detaching needs a stopped tracee, but a
                // thread that is gone needs nothing.
                if !interrupt(tid)? {
                    return Ok(());
                }
                match sys::wait_stop(tid) {
                    Ok(Stop::Gone) => return Ok(()),
                    Ok(Stop::Signal(s)) => s,
                    Ok(_) => 0,
                    Err(e) => {
                        return Err(Error::Target(format!("cannot wait for thread {tid}: {e}")))
                    }
                }
            }
        };
        let registers = sys::ptrace_registers(tid).unwrap_or_default();
        let sp = registers.get(sys::SP_REGISTER).copied();
        self.threads.push(Thread {
            tid,
            registers,
            sp,
            signal,
        });
        Ok(())
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for t in &self.threads {
            match self.held {
                Held::AtExit(h) if h == t.tid => {}
                Held::Running(h) if h == t.tid => {
                    let _ = sys::ptrace_cont(t.tid, self.held_signal.unwrap_or(0));
                }
                _ => {
                    let _ = sys::ptrace_detach(t.tid, t.signal);
                }
            }
        }
    }
}

/// PTRACE_INTERRUPT of a thread memleak ptraces: Ok(false) when the
/// thread is gone (nothing to stop, nothing to detach).
fn interrupt(tid: u32) -> Result<bool> {
    match sys::ptrace_interrupt(tid) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(Error::Target(format!("cannot stop thread {tid}: {e}"))),
    }
}

fn list_threads(pid: u32) -> Result<Vec<u32>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| Error::Target(format!("cannot list the threads of process {pid}: {e}")))?;
    Ok(dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_mappings_only() {
        let maps = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 123 /usr/bin/x
55d0c0c02000-55d0c0c03000 rw-p 00002000 08:01 123 /usr/bin/x
7ffd1000-7ffd2000 rw-p 00000000 00:00 0 [stack]
7ffd3000-7ffd4000 r--p 00000000 00:00 0 [vvar]
";
        assert_eq!(
            writable_mappings(maps),
            [(0x55d0c0c02000, 0x55d0c0c03000), (0x7ffd1000, 0x7ffd2000)]
        );
    }
}
