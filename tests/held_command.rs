//! End-to-end: the command memleak -c holds before exec never outlives
//! memleak, and never runs once memleak is gone; signals to memleak reach
//! the command and stay live during a long setup.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Whether a live process's command line contains `words` (arguments
/// joined by spaces): the command itself, or the held child, which still
/// has memleak's command line.
fn running(words: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let text: String = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(words) {
            found.push(pid);
        }
    }
    found
}

/// Whether a process's command line is exactly `words`.
fn command_runs(words: &str) -> bool {
    running(words).iter().any(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim_end() == words)
    })
}

/// Waits (generously: the machine may be loaded) until no process matches.
fn assert_none_left(words: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running(words).is_empty() {
        assert!(
            Instant::now() < deadline,
            "still running: {:?}",
            running(words)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill_all(words: &str) {
    for pid in running(words) {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// A script that leaves a marker file, then sleeps: `mark MARKER SECONDS`.
fn marking_script() -> PathBuf {
    // Once per test process: the tests run on several threads, which share
    // a process id, so a temporary name made of it is not theirs alone.
    static SCRIPT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SCRIPT
        .get_or_init(|| {
            let dir = fixture("leaker").parent().unwrap().to_path_buf();
            let path = dir.join("mark-and-sleep.sh");
            let text = "#!/bin/sh\ntouch \"$1\"\nexec sleep \"$2\"\n";
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
                let tmp = dir.join(format!("mark-and-sleep.sh.{}", std::process::id()));
                std::fs::write(&tmp, text).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            }
            path
        })
        .clone()
}

fn marker(name: &str) -> PathBuf {
    let path =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// `memleak -c "sleep 77" | true`: the pipe's reader is gone before
/// memleak writes its first line.
#[test]
fn closed_stdout_kills_the_held_command() {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let out = Command::new(memleak_bin())
        .args(["-o", "0", "-c", "sleep 7711"])
        .stdout(Stdio::from(write))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Quiet, as `memleak | head` is.
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "", "quiet");
    assert_none_left("sleep 7711");
}

/// `memleak -c ... > /dev/full`: the first line cannot be written.
#[test]
fn full_stdout_kills_the_held_command() {
    let out = Command::new(memleak_bin())
        .args(["-o", "0", "-c", "sleep 7712"])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        "memleak: cannot write the report: No space left on device (os error 28)\n"
    );
    assert_none_left("sleep 7712");
}

/// SIGKILL of memleak at 10 points of its setup (made long by a big
/// table): the held child dies with it and the command never runs.
#[test]
fn sigkill_during_setup_never_runs_the_command() {
    let script = marking_script();
    let mark = marker("sigkill-marker");
    let command = format!("{} {} 7713", script.display(), mark.display());
    let args = ["--max-allocs", "20000000", "-o", "0", "-c", &command];
    // How long setup takes here and now: the shorter of two runs, since
    // a first run on a cold cache (or beside a busy test) can take many
    // times as long as the ones after it, which would put most kill
    // points after setup.
    let mut setup = Duration::MAX;
    for _ in 0..2 {
        let started = Instant::now();
        let mut memleak = Running::spawn(Command::new(memleak_bin()).args(args));
        memleak.wait_for(Duration::from_secs(60), |l| l.starts_with("Attaching"));
        setup = setup.min(started.elapsed());
        memleak.signal(libc::SIGKILL);
        drop(memleak);
        kill_all("7713");
        assert_none_left("7713");
    }
    let mut before_attaching = 0;
    for point in 0..10u32 {
        let _ = std::fs::remove_file(&mark);
        let mut memleak = Running::spawn(Command::new(memleak_bin()).args(args));
        std::thread::sleep(setup * point / 10);
        memleak.signal(libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(30);
        while memleak.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "memleak did not die");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Time for a command let run to leave its mark.
        std::thread::sleep(Duration::from_millis(300));
        let ran = mark.exists();
        let left = running("7713");
        // A command let run (killed after setup) holds memleak's stdout
        // and stderr open.
        kill_all("7713");
        let (code, lines, _) = memleak.finish(Duration::from_secs(30));
        assert_eq!(code, Some(128 + libc::SIGKILL));
        if !lines.iter().any(|l| l.starts_with("Attaching")) {
            before_attaching += 1;
            assert_eq!(left, Vec::<u32>::new(), "left behind (point {point})");
            assert!(!ran, "the command ran after memleak died (point {point})");
        }
        assert_none_left("7713");
    }
    assert!(
        before_attaching >= 5,
        "only {before_attaching} kills during setup"
    );
}

/// SIGTERM during setup ends memleak at once: the command never runs.
#[test]
fn sigterm_during_setup_exits_promptly() {
    let script = marking_script();
    let mark = marker("sigterm-marker");
    let command = format!("{} {} 7715", script.display(), mark.display());
    let memleak = Running::spawn(Command::new(memleak_bin()).args([
        "--max-allocs",
        "50000000",
        "-o",
        "0",
        "-c",
        &command,
    ]));
    std::thread::sleep(Duration::from_millis(300));
    memleak.signal(libc::SIGTERM);
    let sent = Instant::now();
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(30));
    assert_eq!(code, Some(128 + libc::SIGTERM), "{stderr}");
    assert!(
        !lines.iter().any(|l| l.starts_with("Attaching")),
        "setup was over: {lines:?}"
    );
    assert_eq!(
        stderr,
        "memleak: SIGTERM during setup; exiting with nothing attached\n"
    );
    // Not after the whole setup (seconds); a table being created is
    // finished first by the kernel.
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "{:?}",
        sent.elapsed()
    );
    assert_none_left("7715");
    assert!(!mark.exists(), "the command ran");
}

/// SIGTERM (or SIGINT) sent to memleak alone reaches the command too, as
/// under timeout; the final report follows its exit.
fn signal_reaches_command(sig: i32, name: &str, seconds: &str, describe: &str) {
    let command = format!("sleep {seconds}");
    let mut memleak = Running::spawn(Command::new(memleak_bin()).args(["-o", "0", "-c", &command]));
    let attaching = memleak.wait_for(Duration::from_secs(60), |l| l.starts_with("Attaching"));
    let pid: u32 = attaching["Attaching to pid ".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Its exec is over when it has the command's command line.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !command_runs(&command) {
        assert!(Instant::now() < deadline, "{:?}", running(&command));
        std::thread::sleep(Duration::from_millis(10));
    }
    memleak.signal(sig);
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "memleak: passed {name} on to the command (pid {pid}), which {describe}\n"
        )),
        "{stderr}"
    );
    assert_eq!(
        parse_reports(&lines).len(),
        1,
        "the final report: {lines:?}"
    );
    assert_none_left(&command);
}

#[test]
fn sigterm_reaches_the_command() {
    signal_reaches_command(
        libc::SIGTERM,
        "SIGTERM",
        "7714",
        "was killed by signal 15 (Terminated)",
    );
}

#[test]
fn sigint_reaches_the_command() {
    signal_reaches_command(
        libc::SIGINT,
        "SIGINT",
        "7716",
        "was killed by signal 2 (Interrupt)",
    );
}

/// Waits up to 10 s for process `pid` to be in a state other than
/// stopped (T, or t under a tracer); the state it was last seen in.
fn wait_not_stopped(pid: u32) -> Option<char> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = state_of(pid);
        if !matches!(state, Some('T' | 't')) || Instant::now() >= deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// memleak stops a traced process for milliseconds at a time (at exec,
/// at its entry point, at dlclose). SIGKILLed in such a hold it cannot let
/// go: its guardian continues the process. A stop of the traced process
/// stands in for the hold here, by -p and by -c (whose command, once
/// released and executed, outlives memleak).
#[test]
fn sigkill_of_memleak_in_a_hold_leaves_no_process_stopped() {
    for by in ["-p", "-c"] {
        let mut target = None;
        let mut memleak = match by {
            "-p" => {
                let sleeper = Command::new("sleep").arg("7731").spawn().unwrap();
                let pid = sleeper.id();
                target = Some(sleeper);
                Running::spawn(Command::new(memleak_bin()).args([
                    "-o",
                    "0",
                    "-p",
                    &pid.to_string(),
                    "3600",
                ]))
            }
            _ => Running::spawn(Command::new(memleak_bin()).args([
                "-o",
                "0",
                "-c",
                "sleep 7731",
                "3600",
            ])),
        };
        let line = memleak.wait_for(Duration::from_secs(60), |l| l.starts_with("Attaching"));
        let pid = match &target {
            Some(sleeper) => sleeper.id(),
            // "Attaching to pid N, Ctrl+C to quit."
            None => line
                .split(' ')
                .nth(3)
                .and_then(|p| p.trim_end_matches(',').parse().ok())
                .unwrap_or_else(|| panic!("{line}")),
        };
        // "Attaching" comes before -c's command is let go: wait until it
        // runs the command (a held child dies with memleak).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n"
        {
            assert!(Instant::now() < deadline, "{by}: {pid} never ran sleep");
            std::thread::sleep(Duration::from_millis(10));
        }
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        // t under -c: memleak is its tracer (ptrace) until it dies.
        while !matches!(state_of(pid), Some('T' | 't')) {
            assert!(Instant::now() < deadline, "{by}: {pid} never stopped");
            std::thread::sleep(Duration::from_millis(10));
        }
        memleak.signal(libc::SIGKILL);
        let state = wait_not_stopped(pid);
        kill_all("7731");
        if let Some(mut sleeper) = target {
            let _ = sleeper.wait();
        }
        assert_none_left("7731");
        assert!(
            matches!(state, Some('S' | 'R')),
            "{by}: {pid} left in state {state:?}"
        );
    }
}

/// The guardian acts only when memleak dies without letting go: a user's
/// own stop of the target outlasts memleak's normal end.
#[test]
fn a_normal_end_leaves_a_users_stop_alone() {
    let mut sleeper = Command::new("sleep").arg("7732").spawn().unwrap();
    let pid = sleeper.id();
    let mut memleak = Running::spawn(Command::new(memleak_bin()).args([
        "-o",
        "0",
        "-p",
        &pid.to_string(),
        "3600",
    ]));
    memleak.wait_for(Duration::from_secs(60), |l| l.starts_with("Attaching"));
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    memleak.signal(libc::SIGINT);
    let (code, _, stderr) = memleak.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    // Longer than the guardian would take to look.
    std::thread::sleep(Duration::from_millis(500));
    let state = state_of(pid);
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = sleeper.wait();
    assert_eq!(state, Some('T'), "the user's stop stands");
}
