//! --unreachable and --growth end to end: the reach fixture's blocks are
//! classified exactly, with -c and -p and as a musl static program, the
//! target keeps running whatever happens to memleak, and the growth fixture's
//! stacks are told apart.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// One stack of a classic report with the new suffixes.
#[derive(Debug, Clone, Default)]
struct Stack {
    bytes: u64,
    count: u64,
    unreachable: Option<(u64, u64)>,
    growth: Option<(i64, u64)>,
    frames: Vec<String>,
}

/// A report's header line and its stacks.
type Parsed = Vec<(String, Vec<Stack>)>;

/// Each report's stacks (and the growth summary's, as a last "report"
/// whose header starts with "Stacks that grew").
fn parse(lines: &[String]) -> Parsed {
    let mut reports: Vec<(String, Vec<Stack>)> = Vec::new();
    for line in lines {
        if (line.starts_with('[') && line.contains("stacks with outstanding allocations:"))
            || line.starts_with("Stacks that grew in every interval")
        {
            reports.push((line.clone(), Vec::new()));
            continue;
        }
        let Some((_, stacks)) = reports.last_mut() else {
            continue;
        };
        if let Some(frame) = line.strip_prefix("\t\t") {
            stacks.last_mut().unwrap().frames.push(frame.to_string());
        } else if let Some(rest) = line.strip_prefix('\t') {
            let mut parts = rest.split(", ");
            let head: Vec<&str> = parts.next().unwrap().split(' ').collect();
            assert_eq!(&head[2..], ["in", head[3], "allocations", "from", "stack"]);
            let mut stack = Stack {
                bytes: head[0].parse().unwrap(),
                count: head[3].parse().unwrap(),
                ..Default::default()
            };
            for part in parts {
                let w: Vec<&str> = part.split(' ').collect();
                if let Some(u) = part.strip_prefix("unreachable: ") {
                    let u: Vec<&str> = u.split(' ').collect();
                    assert_eq!(
                        (u.len(), u[1], u[2], u[4]),
                        (5, "bytes", "in", "allocations"),
                        "{line:?}"
                    );
                    stack.unreachable = Some((u[0].parse().unwrap(), u[3].parse().unwrap()));
                } else if w.len() == 4 && w[1] == "B" && w[2] == "since" && w[3] == "last" {
                    let delta = w[0].parse().unwrap();
                    stack.growth = Some((delta, 0));
                } else if w.len() == 3 && w[0] == "grew" && w[2] == "reports" {
                    let g = stack.growth.as_mut().expect("growth after delta");
                    g.1 = w[1].parse().unwrap();
                } else {
                    panic!("unexpected part {part:?} in {line:?}");
                }
            }
            stacks.push(stack);
        }
    }
    reports
}

fn by_function<'a>(stacks: &'a [Stack], func: &str) -> Option<&'a Stack> {
    let prefix = format!("{func}+0x");
    stacks
        .iter()
        .find(|s| s.frames.first().is_some_and(|f| f.starts_with(&prefix)))
}

/// The reach fixture's stacks: (function, bytes, count, unreachable bytes,
/// unreachable count).
const REACH: &[(&str, u64, u64, u64, u64)] = &[
    ("keep_global", 1280, 10, 0, 0),
    ("keep_interior", 1280, 5, 0, 0),
    ("keep_on_stack", 1280, 4, 0, 0),
    ("lose_pointers", 512, 8, 512, 8),
    ("lose_list", 480, 10, 480, 10),
];

fn assert_reach(stacks: &[Stack], what: &str) {
    for &(func, bytes, count, ub, uc) in REACH {
        let s = by_function(stacks, func)
            .unwrap_or_else(|| panic!("{what}: no stack from {func} in {stacks:#?}"));
        assert_eq!(
            (s.bytes, s.count, s.unreachable),
            (bytes, count, Some((ub, uc))),
            "{what}: {func}"
        );
    }
}

/// No thread of `pid` is stopped.
fn no_thread_stopped(pid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    dir.flatten().all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let s = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        !matches!(s, Some('t' | 'T'))
    })
}

/// The target is not stopped (within a few seconds: the kernel resumes a
/// dead tracer's tracees as it reaps it) and answers a ping.
fn assert_running(target: &mut Running, pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !no_thread_stopped(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} stays stopped: {}",
            state_of(pid).unwrap_or('?')
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    target.send("ping\n");
    target.wait_for(Duration::from_secs(10), |l| l == "pong");
    assert!(no_thread_stopped(pid));
}

/// Starts the reach fixture (`binary`), waits for "ready PID".
fn start_reach(binary: &std::path::Path) -> (Running, u32) {
    let mut target = Running::spawn(&mut Command::new(binary));
    let ready = target.wait_for(Duration::from_secs(10), |l| l.starts_with("ready "));
    (target, ready["ready ".len()..].parse().unwrap())
}

/// memleak -p PID ARGS on the waiting fixture; returns it once attached,
/// with the fixture's allocations done.
fn attach_and_allocate(target: &mut Running, pid: u32, args: &[&str]) -> Running {
    attach(target, pid, args, &[])
}

fn attach(target: &mut Running, pid: u32, args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(memleak_bin());
    cmd.arg("-p").arg(pid.to_string()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut memleak = Running::spawn(&mut cmd);
    // --json says it on stderr: its first report says it too.
    memleak.wait_for(Duration::from_secs(30), |l| {
        l.contains("Attaching to pid") || l.starts_with(r#"{"time""#)
    });
    target.send("go\n");
    target.wait_for(Duration::from_secs(10), |l| l == "done");
    memleak
}

#[test]
fn unreachable_by_pid() {
    let (mut target, pid) = start_reach(&fixture("reach"));
    let memleak = attach_and_allocate(&mut target, pid, &["--unreachable", "-v", "1"]);
    // A periodic report (the target is scanned and resumed), then the final.
    std::thread::sleep(Duration::from_millis(2500));
    // Between scans it runs (a scan may stop it at any moment: not checked).
    target.send("ping\n");
    target.wait_for(Duration::from_secs(10), |l| l == "pong");
    let (_, _, reports, stderr) = interrupt_raw(memleak);
    assert!(stderr.contains("threads stopped for"), "{stderr}");
    let (_, last) = reports.last().expect("a report");
    assert_reach(last, "final report");
    // Every report before the allocations were old enough is consistent too.
    assert!(reports.len() >= 2, "{reports:#?}");
    assert_running(&mut target, pid);
}

/// Ctrl+C: the final report, every report, stderr.
fn interrupt_raw(memleak: Running) -> (Option<i32>, Vec<String>, Parsed, String) {
    memleak.signal(libc::SIGINT);
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let reports = parse(&lines);
    (code, lines, reports, stderr)
}

#[test]
fn unreachable_json_tells_direct_from_indirect() {
    let (mut target, pid) = start_reach(&fixture("reach"));
    let memleak = attach_and_allocate(&mut target, pid, &["--unreachable", "--json", "1"]);
    std::thread::sleep(Duration::from_millis(1500));
    memleak.signal(libc::SIGINT);
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let last = lines.last().expect("a report");
    // From the stack's innermost frame to the end of its growth object.
    let stack_of = |func: &str| -> String {
        let needle = format!(r#""symbol":"{func}""#);
        let at = last
            .find(&needle)
            .unwrap_or_else(|| panic!("no {func} in {last}"));
        let end = at + last[at..].find(r#""growth""#).expect("growth") + 60;
        last[at..end.min(last.len())].to_string()
    };
    assert!(
        stack_of("lose_list").contains(
            r#""unreachable":{"bytes":480,"allocations":10,"direct_bytes":48,"direct_allocations":1,"indirect_bytes":432,"indirect_allocations":9}"#
        ),
        "{last}"
    );
    assert!(
        stack_of("lose_pointers").contains(
            r#""unreachable":{"bytes":512,"allocations":8,"direct_bytes":512,"direct_allocations":8,"indirect_bytes":0,"indirect_allocations":0}"#
        ),
        "{last}"
    );
    assert!(
        stack_of("keep_interior").contains(r#""unreachable":{"bytes":0,"allocations":0,"#),
        "{last}"
    );
    assert!(
        stack_of("keep_global").contains(r#""growth":{"bytes_since_last":0,"grew_reports":0}"#),
        "{last}"
    );
}

/// -c: a periodic report while it runs, then the final one from the scan
/// made as the command exits (its memory still there).
fn unreachable_by_command(binary: &std::path::Path) {
    let mut memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["--unreachable", "-c"])
            .arg(binary)
            .arg("1"),
    );
    memleak.wait_for(Duration::from_secs(30), |l| l.starts_with("ready "));
    memleak.send("go\n");
    memleak.wait_for(Duration::from_secs(10), |l| l == "done");
    // Two reports after it: the blocks are older than 500 ms in the second.
    for _ in 0..2 {
        memleak.wait_for(Duration::from_secs(10), |l| {
            l.contains("stacks with outstanding")
        });
    }
    memleak.wait_for(Duration::from_secs(10), |l| l.is_empty());
    std::thread::sleep(Duration::from_millis(200));
    memleak.send("ping\n");
    memleak.wait_for(Duration::from_secs(10), |l| l == "pong");
    // EOF on its stdin ends the command.
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let reports = parse(&lines);
    let done = lines.iter().position(|l| l == "done").unwrap();
    let after: Vec<_> = parse(&lines[done..]);
    assert!(after.len() >= 3, "{lines:#?}");
    assert_reach(&after[after.len() - 2].1, "periodic report");
    assert_reach(&reports.last().unwrap().1, "final report (at exit)");
}

#[test]
fn unreachable_by_command_glibc() {
    unreachable_by_command(&fixture("reach"));
}

#[test]
fn unreachable_by_command_musl_static() {
    unreachable_by_command(&fixture_built_with(
        "reach",
        "reach-musl-static",
        "musl-gcc",
        &["-static", "-pthread"],
    ));
}

#[test]
fn unreachable_musl_static_by_pid() {
    let binary = fixture_built_with(
        "reach",
        "reach-musl-static",
        "musl-gcc",
        &["-static", "-pthread"],
    );
    let (mut target, pid) = start_reach(&binary);
    let memleak = attach_and_allocate(&mut target, pid, &["--unreachable", "1"]);
    std::thread::sleep(Duration::from_millis(1500));
    let (_, _, reports, _) = interrupt_raw(memleak);
    assert_reach(&reports.last().unwrap().1, "musl static, final report");
    assert_running(&mut target, pid);
}

/// memleak dies by `signal` while the target is stopped for a scan (held
/// for 3 s by MEMLEAK_TEST_SCAN_DELAY_MS): the target runs on.
fn killed_during_scan(signal: i32) {
    let (mut target, pid) = start_reach(&fixture("reach"));
    let memleak = attach(
        &mut target,
        pid,
        &["--unreachable", "1"],
        &[("MEMLEAK_TEST_SCAN_DELAY_MS", "3000")],
    );
    // Stopped for the scan: its threads are in a ptrace stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    while no_thread_stopped(pid) {
        assert!(Instant::now() < deadline, "never stopped for a scan");
        std::thread::sleep(Duration::from_millis(10));
    }
    memleak.signal(signal);
    let (code, _, stderr) = memleak.finish(Duration::from_secs(60));
    match signal {
        libc::SIGKILL => assert_eq!(code, Some(128 + libc::SIGKILL)),
        _ => assert_eq!(code, Some(0), "{stderr}"),
    }
    assert_running(&mut target, pid);
}

#[test]
fn target_runs_on_after_sigint_during_scan() {
    killed_during_scan(libc::SIGINT);
}

#[test]
fn target_runs_on_after_sigterm_during_scan() {
    killed_during_scan(libc::SIGTERM);
}

#[test]
fn target_runs_on_after_sigkill_during_scan() {
    killed_during_scan(libc::SIGKILL);
}

#[test]
fn refuses_a_target_held_by_another_tracer() {
    let (mut target, pid) = start_reach(&fixture("reach"));
    // This test process becomes its tracer, as a debugger would.
    let seized = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid as i32, 0usize, 0usize) };
    assert_eq!(seized, 0, "{}", std::io::Error::last_os_error());
    let memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["--unreachable", "-p"])
            .arg(pid.to_string()),
    );
    let (code, _, stderr) = memleak.finish(Duration::from_secs(30));
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        format!(
            "memleak: --unreachable: process {pid} is already traced by process {} (a debugger?); it cannot be stopped for the scan\n",
            // The tracer is the thread that seized it.
            unsafe { libc::gettid() }
        )
    );
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid as i32, 0usize, 0usize) };
    target.send("go\n");
    target.wait_for(Duration::from_secs(10), |l| l == "done");
}

#[test]
fn kernel_mode_refuses_unreachable() {
    let memleak = Running::spawn(Command::new(memleak_bin()).arg("--unreachable"));
    let (code, _, stderr) = memleak.finish(Duration::from_secs(30));
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        "memleak: --unreachable scans a process's memory: use it with -p or -c, not in kernel mode (see memleak -h)\n"
    );
}

/// growth.c: one stack grows every step, one grows twice then plateaus,
/// one goes up and down. A step per report interval, then one more just
/// before Ctrl+C, so the final report's interval has one too.
#[test]
fn growth_names_the_stack_that_grew_every_interval() {
    let mut target = Running::spawn(&mut Command::new(fixture("growth")));
    let ready = target.wait_for(Duration::from_secs(10), |l| l.starts_with("ready "));
    let pid: u32 = ready["ready ".len()..].parse().unwrap();
    let mut memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["--growth", "-o", "0", "-p"])
            .arg(pid.to_string())
            .arg("2"),
    );
    memleak.wait_for(Duration::from_secs(30), |l| l.contains("Attaching to pid"));
    const STEPS: usize = 5;
    for _ in 0..STEPS {
        target.send("step\n");
        target.wait_for(Duration::from_secs(10), |l| l == "stepped");
        memleak.wait_for(Duration::from_secs(10), |l| {
            l.contains("stacks with outstanding")
        });
    }
    target.send("step\n");
    target.wait_for(Duration::from_secs(10), |l| l == "stepped");
    memleak.signal(libc::SIGINT);
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let reports = parse(&lines);
    // STEPS periodic reports, the final one, and the summary.
    assert_eq!(reports.len(), STEPS + 2, "{lines:#?}");
    for (i, (_, stacks)) in reports[..=STEPS].iter().enumerate() {
        let n = i as u64 + 1;
        let always = by_function(stacks, "grow_always").unwrap();
        assert_eq!(
            (always.bytes, always.growth),
            (100 * n, Some((100, n))),
            "report {n}"
        );
        let plateau = by_function(stacks, "grow_then_plateau").unwrap();
        let expected = if n <= 2 { (200, n) } else { (0, 0) };
        assert_eq!(
            (plateau.bytes, plateau.growth),
            (200 * n.min(2), Some((expected.0, expected.1))),
            "report {n}"
        );
        // Up on odd steps, back to nothing (not shown) on even ones.
        let updown = by_function(stacks, "up_down");
        if n % 2 == 1 {
            assert_eq!(
                updown.map(|s| (s.bytes, s.growth)),
                Some((300, Some((300, 1)))),
                "report {n}"
            );
        } else {
            assert!(updown.is_none(), "report {n}");
        }
    }
    let (header, summary) = reports.last().unwrap();
    assert_eq!(
        header,
        &format!("Stacks that grew in every interval ({}): 1", STEPS + 1)
    );
    assert_eq!(summary.len(), 1);
    assert!(
        summary[0].frames[0].starts_with("grow_always+0x"),
        "{summary:#?}"
    );
}

#[test]
fn unreachable_only_shows_the_leaks() {
    let (mut target, pid) = start_reach(&fixture("reach"));
    let memleak = attach_and_allocate(&mut target, pid, &["--unreachable-only", "1"]);
    std::thread::sleep(Duration::from_millis(1500));
    let (_, _, reports, _) = interrupt_raw(memleak);
    let (_, last) = reports.last().unwrap();
    let funcs: Vec<&str> = last
        .iter()
        .map(|s| s.frames[0].split('+').next().unwrap())
        .collect();
    assert_eq!(funcs, ["lose_list", "lose_pointers"], "{last:#?}");
    assert_eq!(
        by_function(last, "lose_list").unwrap().unreachable,
        Some((480, 10))
    );
    assert_running(&mut target, pid);
}

/// --grew 2: only the stacks that grew in each of the last 2 reports.
#[test]
fn grew_shows_only_stacks_that_kept_growing() {
    let mut target = Running::spawn(&mut Command::new(fixture("growth")));
    let ready = target.wait_for(Duration::from_secs(10), |l| l.starts_with("ready "));
    let pid: u32 = ready["ready ".len()..].parse().unwrap();
    let mut memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["--grew", "2", "-o", "0", "-p"])
            .arg(pid.to_string())
            .arg("2"),
    );
    memleak.wait_for(Duration::from_secs(30), |l| l.contains("Attaching to pid"));
    for _ in 0..3 {
        target.send("step\n");
        target.wait_for(Duration::from_secs(10), |l| l == "stepped");
        memleak.wait_for(Duration::from_secs(10), |l| {
            l.contains("stacks with outstanding")
        });
    }
    let (code, lines, stderr) = memleak.finish_after_signal(libc::SIGINT);
    assert_eq!(code, Some(0), "{stderr}");
    let reports = parse(&lines);
    let names = |stacks: &[Stack]| -> Vec<String> {
        stacks
            .iter()
            .map(|s| s.frames[0].split('+').next().unwrap().to_string())
            .collect()
    };
    assert!(reports[0].1.is_empty(), "{reports:#?}");
    assert_eq!(names(&reports[1].1), ["grow_always", "grow_then_plateau"]);
    assert_eq!(names(&reports[2].1), ["grow_always"]);
    assert_eq!(reports[2].1[0].growth, Some((100, 3)));
}

trait FinishAfterSignal {
    fn finish_after_signal(self, signal: i32) -> (Option<i32>, Vec<String>, String);
}

impl FinishAfterSignal for Running {
    fn finish_after_signal(self, signal: i32) -> (Option<i32>, Vec<String>, String) {
        self.signal(signal);
        self.finish(Duration::from_secs(60))
    }
}
