//! Shared by the end-to-end tests: builds the C fixtures with gcc, runs the
//! real memleak binary (real BPF, no mocks) and parses its reports.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The binary under test: $MEMLEAK_BIN (for example the static build), else
/// the one cargo built for these tests.
pub fn memleak_bin() -> PathBuf {
    match std::env::var_os("MEMLEAK_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_memleak")),
    }
}

/// Compiles tests/fixtures/NAME.c (or NAME.cpp, with g++) once per test
/// run, with frame pointers so that user stacks are complete.
pub fn fixture(name: &str) -> PathBuf {
    let cxx = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.cpp"));
    if cxx.exists() {
        build_fixture(&format!("{name}.cpp"), name, "g++", &["-pthread"])
    } else {
        build_fixture(&format!("{name}.c"), name, "gcc", &["-pthread"])
    }
}

/// Compiles tests/fixtures/SRC.c with `compiler` and extra `flags` into
/// OUT (for other C libraries: musl-gcc, -static).
pub fn fixture_built_with(src: &str, out: &str, compiler: &str, flags: &[&str]) -> PathBuf {
    build_fixture(&format!("{src}.c"), out, compiler, flags)
}

/// Compiles tests/fixtures/SRC.cpp with g++ and extra `flags` into OUT.
pub fn cxx_fixture_built_with(src: &str, out: &str, flags: &[&str]) -> PathBuf {
    build_fixture(&format!("{src}.cpp"), out, "g++", flags)
}

/// Compiles tests/fixtures/SRC into CARGO_TARGET_TMPDIR/fixtures/OUT, once
/// per OUT and test run.
fn build_fixture(src: &str, out: &str, compiler: &str, flags: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
    let path = dir.join(out);
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|n| n == out) {
        std::fs::create_dir_all(&dir).unwrap();
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(src);
        let status = Command::new(compiler)
            .args(["-O0", "-g", "-fno-omit-frame-pointer", "-Wall", "-Werror"])
            .arg("-o")
            .arg(&path)
            .arg(&src)
            // After the source, so that libraries resolve its references.
            .args(flags)
            .status()
            .unwrap_or_else(|e| panic!("{compiler} runs (.ci/run installs it): {e}"));
        assert!(status.success(), "{compiler} failed on {}", src.display());
        built.push(out.to_string());
    }
    path
}

/// A stripped copy of the built fixture `built`, named OUT: with
/// `debug_file`, its symbols go to OUT.debug beside it, named by a
/// .gnu_debuglink section, as distributions and firmware builds ship them;
/// without, they are gone. Made once per OUT and test run.
pub fn stripped_copy(built: &std::path::Path, out: &str, debug_file: bool) -> PathBuf {
    static MADE: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let dir = built.parent().unwrap();
    let path = dir.join(out);
    let made = MADE.get_or_init(|| Mutex::new(Vec::new()));
    let mut made = made.lock().unwrap_or_else(|e| e.into_inner());
    if !made.iter().any(|n| n == out) {
        let run =
            |cmd: &mut Command| assert!(cmd.status().expect("binutils runs").success(), "{cmd:?}");
        std::fs::copy(built, &path).unwrap();
        let debug = format!("{out}.debug");
        if debug_file {
            run(Command::new("objcopy")
                .arg("--only-keep-debug")
                .arg(&path)
                .arg(dir.join(&debug)));
        }
        run(Command::new("strip").arg("--strip-all").arg(&path));
        if debug_file {
            run(Command::new("objcopy")
                .arg(format!("--add-gnu-debuglink={debug}"))
                .arg(&path)
                .current_dir(dir));
        }
        made.push(out.to_string());
    }
    path
}

/// The leaker started with --wait, once it said "ready": its exec is over
/// and its libraries are mapped, so memleak -p sees the whole process.
pub fn ready_leaker() -> Running {
    let mut leaker = Running::spawn(Command::new(fixture("leaker")).arg("--wait"));
    leaker.wait_for(Duration::from_secs(10), |l| l.starts_with("ready "));
    leaker
}

/// A running process whose stdout lines arrive on a channel.
pub struct Running {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Running {
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line satisfying `pred`; panics with everything seen so
    /// far after `timeout`.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("timed out; output so far:\n{}", self.seen.join("\n"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("output ended; output so far:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for exit; returns (exit code, every stdout line, stderr).
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, Vec<String>, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                let mut stderr = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut stderr);
                }
                let code = status.code().or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    status.signal().map(|s| 128 + s)
                });
                return (code, std::mem::take(&mut self.seen), stderr);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "did not exit in time; output so far:\n{}",
                    self.seen.join("\n")
                );
            }
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One stack of a report.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    pub bytes: u64,
    pub count: u64,
    pub frames: Vec<String>,
    pub addrs: Vec<(String, u64)>,
    /// With several processes traced: the one the stack is in.
    pub pid: Option<u32>,
}

/// One report: its header and stacks.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub header: String,
    pub stacks: Vec<Stack>,
    pub losses: Option<String>,
}

impl Report {
    /// The stacks of process `pid` only (reports of several processes).
    pub fn of_pid(&self, pid: u32) -> Report {
        let stacks = self
            .stacks
            .iter()
            .filter(|s| s.pid == Some(pid))
            .cloned()
            .collect();
        Report {
            stacks,
            ..self.clone()
        }
    }

    /// The stack whose first frame is in `func` (`func+0x...`).
    pub fn by_function(&self, func: &str) -> Option<&Stack> {
        let prefix = format!("{func}+0x");
        self.stacks
            .iter()
            .find(|s| s.frames.first().is_some_and(|f| f.starts_with(&prefix)))
    }

    pub fn expect(&self, func: &str) -> &Stack {
        self.by_function(func)
            .unwrap_or_else(|| panic!("no stack from {func} in report:\n{self:#?}"))
    }
}

/// Splits memleak's stdout into reports, in the classic layout.
pub fn parse_reports(lines: &[String]) -> Vec<Report> {
    let mut reports: Vec<Report> = Vec::new();
    let mut pending_addrs: Vec<(String, u64)> = Vec::new();
    for line in lines {
        if line.starts_with('[') && line.contains("stacks with outstanding allocations") {
            reports.push(Report {
                header: line.clone(),
                ..Default::default()
            });
            continue;
        }
        let Some(report) = reports.last_mut() else {
            continue;
        };
        if let Some(rest) = line.strip_prefix("\taddr = ") {
            let (addr, size) = rest.split_once(" size = ").expect("addr line");
            pending_addrs.push((addr.to_string(), size.parse().expect("size")));
        } else if let Some(rest) = line.strip_prefix("\t\t") {
            report
                .stacks
                .last_mut()
                .expect("frame after stack line")
                .frames
                .push(rest.to_string());
        } else if let Some(rest) = line.strip_prefix('\t') {
            let (rest, pid) = match rest.split_once(" in pid ") {
                Some((head, pid)) => (head, Some(pid.parse().expect("pid"))),
                None => (rest, None),
            };
            let words: Vec<&str> = rest.split(' ').collect();
            assert!(
                rest.ends_with("allocations from stack"),
                "unexpected line {line:?}"
            );
            report.stacks.push(Stack {
                bytes: words[0].parse().expect("bytes"),
                count: words[3].parse().expect("count"),
                frames: Vec::new(),
                addrs: std::mem::take(&mut pending_addrs),
                pid,
            });
        } else if line.starts_with("lost: ") {
            report.losses = Some(line.clone());
        }
    }
    reports
}

/// The exact outstanding allocations leaker.c leaves: function, bytes,
/// count, from tests/fixtures/leaker.leaks (the one table; the VM checks
/// read it too).
pub fn leaks() -> &'static [(&'static str, u64, u64)] {
    static LEAKS: std::sync::OnceLock<Vec<(&'static str, u64, u64)>> = std::sync::OnceLock::new();
    LEAKS.get_or_init(|| {
        let table: Vec<_> = include_str!("../fixtures/leaker.leaks")
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default())
            .filter(|line| !line.trim().is_empty())
            .map(
                |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                    [func, bytes, count] => (
                        func,
                        bytes.parse().expect("bytes in leaker.leaks"),
                        count.parse().expect("count in leaker.leaks"),
                    ),
                    _ => panic!("leaker.leaks: expected `function bytes count`: {line:?}"),
                },
            )
            .collect();
        assert_eq!(
            table.len(),
            12,
            "leaker.leaks lists the 12 leak_* functions"
        );
        table
    })
}

/// Starts `leaker --wait EXTRA` and memleak -p on it with `args`, lets the
/// leaker run once memleak has attached, and returns both once the leaker
/// said "done".
pub fn trace_waiting_leaker(args: &[&str], extra: &[&str]) -> (Running, Running) {
    trace_waiting(
        Command::new(fixture("leaker")).arg("--wait").args(extra),
        args,
    )
}

/// Like `trace_waiting_leaker`, for any fixture that speaks the same
/// protocol (prints "ready PID", reads a line, prints "done").
pub fn trace_waiting(fixture_cmd: &mut Command, args: &[&str]) -> (Running, Running) {
    let mut leaker = Running::spawn(fixture_cmd);
    let ready = leaker.wait_for(Duration::from_secs(10), |l| l.starts_with("ready "));
    let pid: u32 = ready["ready ".len()..].parse().unwrap();
    let mut memleak = Running::spawn(
        Command::new(memleak_bin())
            .arg("-p")
            .arg(pid.to_string())
            .args(args),
    );
    memleak.wait_for(Duration::from_secs(30), |l| {
        l.starts_with("Attaching to pid")
    });
    leaker.send("go\n");
    // Generous: the stress fixture runs 10 million traced pairs.
    leaker.wait_for(Duration::from_secs(300), |l| l == "done");
    (leaker, memleak)
}

/// Ctrl+C: memleak detaches and prints a final report. Returns it, with
/// the exit code, every report and stderr.
pub fn interrupt(memleak: Running) -> (Report, Option<i32>, Vec<Report>, String) {
    memleak.signal(libc::SIGINT);
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(30));
    let reports = parse_reports(&lines);
    let last = reports.last().cloned().unwrap_or_else(|| {
        panic!(
            "no report; stdout:\n{}\nstderr:\n{stderr}",
            lines.join("\n")
        )
    });
    (last, code, reports, stderr)
}

/// The state letter of process `pid` in /proc/PID/stat (T: stopped, Z:
/// zombie); None when it is gone. It follows the last ')', as the
/// command name may hold any character.
pub fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// The module a frame line names: `main+0x1b [leaker] leaker.c:210` is in
/// `leaker` (a source line may follow the module).
pub fn module_of(frame: &str) -> Option<&str> {
    let start = frame.find(" [")? + 2;
    let len = frame[start..].find(']')?;
    Some(&frame[start..start + len])
}

/// Asserts every documented leak with its exact bytes and count.
pub fn assert_all_leaks(report: &Report) {
    assert_leaks(report, "leaker", leaks());
}

/// Asserts `leaks` exactly, for a leaker built as `module`.
pub fn assert_leaks(report: &Report, module: &str, leaks: &[(&str, u64, u64)]) {
    for &(func, bytes, count) in leaks {
        let stack = report.expect(func);
        assert_eq!(
            (stack.bytes, stack.count),
            (bytes, count),
            "{func}: {stack:#?}"
        );
        assert_eq!(
            module_of(&stack.frames[0]),
            Some(module),
            "{func} in {module}: {stack:#?}"
        );
        assert!(
            stack
                .frames
                .iter()
                .any(|f| f.starts_with("main+0x") && module_of(f) == Some(module)),
            "{func} called from main: {stack:#?}"
        );
    }
    assert_nothing_from_churn_or_fail(report);
}

/// `--unwind dwarf` (and auto) copy each recorded stack through a ring
/// buffer; a burst (the leaker's churn: 8,000 calls) can fill it, and
/// then a stack is walked by frame pointers instead, which the `lost:`
/// line counts. Such a stack ends where frame pointers end (in libc), so
/// one call site can show as two stacks. Without such losses the leaks
/// must be exact per stack (assert_all_leaks); with them, exact per
/// function, summed over the stacks it starts, each from main.
pub fn assert_all_leaks_allowing_copy_fallbacks(report: &Report) {
    let fallbacks_only = report.losses.as_deref().is_none_or(|l| {
        l.strip_prefix("lost: ")
            .and_then(|rest| rest.split_once(' '))
            .is_some_and(|(n, what)| {
                n.parse::<u64>().is_ok()
                    && what == "stack copies (ring buffer full; frame pointers used)"
            })
    });
    assert!(fallbacks_only, "{:?}", report.losses);
    if report.losses.is_none() {
        return assert_all_leaks(report);
    }
    for &(func, bytes, count) in leaks() {
        let prefix = format!("{func}+0x");
        let stacks: Vec<&Stack> = report
            .stacks
            .iter()
            .filter(|s| s.frames.first().is_some_and(|f| f.starts_with(&prefix)))
            .collect();
        let total = stacks
            .iter()
            .fold((0, 0), |(b, c), s| (b + s.bytes, c + s.count));
        assert_eq!(total, (bytes, count), "{func}: {stacks:#?}");
        for stack in stacks {
            assert!(
                stack
                    .frames
                    .iter()
                    .any(|f| f.starts_with("main+0x") && module_of(f) == Some("leaker")),
                "{func} called from main: {stack:#?}"
            );
        }
    }
    assert_nothing_from_churn_or_fail(report);
}

/// No stack starts in the leaker's churn or fail: everything they
/// allocate is freed, or never allocated.
fn assert_nothing_from_churn_or_fail(report: &Report) {
    for stack in &report.stacks {
        let first = stack.frames.first().map(String::as_str).unwrap_or("");
        assert!(
            !first.starts_with("churn+") && !first.starts_with("fail+"),
            "freed or failed allocation reported: {stack:#?}"
        );
    }
}
