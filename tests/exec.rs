//! End-to-end: a traced program that executes another one. The new
//! program's allocator is probed before it runs its first instruction
//! (under -c its ptrace exec stop, under -p a SIGSTOP from BPF), whatever
//! C library either program uses, and through a #! script.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// Runs of each case: a hold that works by luck fails some of them.
const RUNS: usize = 10;

/// ticker.c: 300 blocks of 1000..1299 bytes, one per millisecond.
const TICKER: (u64, u64) = (344_850, 300);

fn ticker() -> PathBuf {
    fixture("ticker")
}

/// The first program of the pair, built with `libc`.
fn first(libc: &str) -> PathBuf {
    match libc {
        "glibc" => fixture("exec_first"),
        "musl" => fixture_built_with("exec_first", "exec_first-musl", "musl-gcc", &[]),
        "musl-static" => fixture_built_with(
            "exec_first",
            "exec_first-musl-static",
            "musl-gcc",
            &["-static"],
        ),
        other => panic!("no such build {other}"),
    }
}

/// A `#!/bin/sh` script that executes the ticker.
fn wrapper() -> PathBuf {
    let dir = ticker().parent().unwrap().to_path_buf();
    let path = dir.join("exec-ticker.sh");
    let text = format!("#!/bin/sh\nexec {} \"$@\"\n", ticker().display());
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        let tmp = dir.join(format!("exec-ticker.sh.{}", std::process::id()));
        std::fs::write(&tmp, &text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

fn assert_ticker_only(report: &Report, stderr: &str) {
    let ticking = report.expect("leak_ticking");
    assert_eq!(
        (ticking.bytes, ticking.count),
        TICKER,
        "{report:#?}\n{stderr}"
    );
    assert!(
        report.by_function("leak_before_exec").is_none(),
        "dropped with the exec: {report:#?}"
    );
    assert_eq!(report.losses, None, "nothing may be lost: {report:#?}");
}

/// memleak -c "FIRST PROGRAM": the final report after the command exits.
fn under_command(first: &Path, then: &Path) {
    for run in 0..RUNS {
        let memleak = Running::spawn(
            Command::new(memleak_bin())
                .args(["-o", "0", "-c"])
                .arg(format!("{} {}", first.display(), then.display())),
        );
        let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
        assert_eq!(code, Some(0), "run {run}: {stderr}");
        let reports = parse_reports(&lines);
        let report = reports
            .last()
            .unwrap_or_else(|| panic!("no report: {stderr}"));
        assert_ticker_only(report, &stderr);
    }
}

/// memleak -p on FIRST --wait PROGRAM.
fn under_pid(first: &Path, then: &Path) {
    for _ in 0..RUNS {
        let (_first, memleak) =
            trace_waiting(Command::new(first).arg("--wait").arg(then), &["-o", "0"]);
        let (report, code, _, stderr) = interrupt(memleak);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(
            stderr.contains(&format!(" executed {}; ", then_program(then).display())),
            "{stderr}"
        );
        assert_ticker_only(&report, &stderr);
    }
}

/// What finally runs: the ticker, also behind the script.
fn then_program(_then: &Path) -> PathBuf {
    ticker()
}

#[test]
fn exec_glibc_to_glibc_by_command() {
    under_command(&first("glibc"), &ticker());
}

#[test]
fn exec_glibc_to_glibc_by_pid() {
    under_pid(&first("glibc"), &ticker());
}

#[test]
fn exec_musl_to_glibc_by_command() {
    under_command(&first("musl"), &ticker());
}

#[test]
fn exec_musl_to_glibc_by_pid() {
    under_pid(&first("musl"), &ticker());
}

#[test]
fn exec_static_musl_to_glibc_by_command() {
    under_command(&first("musl-static"), &ticker());
}

#[test]
fn exec_static_musl_to_glibc_by_pid() {
    under_pid(&first("musl-static"), &ticker());
}

#[test]
fn exec_through_a_script_by_command() {
    under_command(&first("glibc"), &wrapper());
}

#[test]
fn exec_through_a_script_by_pid() {
    under_pid(&first("glibc"), &wrapper());
}

/// -c runs a script as a shell would (its #! interpreter), and traces the
/// program it finally executes.
#[test]
fn command_is_a_script() {
    let script = wrapper();
    for run in 0..RUNS {
        let memleak = Running::spawn(
            Command::new(memleak_bin())
                .args(["-o", "0", "-c"])
                .arg(script.display().to_string()),
        );
        let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
        assert_eq!(code, Some(0), "run {run}: {stderr}");
        let reports = parse_reports(&lines);
        let report = reports
            .last()
            .unwrap_or_else(|| panic!("no report: {stderr}"));
        assert_ticker_only(report, &stderr);
    }
}
