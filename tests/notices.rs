//! End-to-end: what memleak says about threads, thread IDs, table sizes and
//! -O names, each asserted word for word.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn assert_no_fork_notice(stderr: &str) {
    assert!(!stderr.contains("forked"), "threads are no fork: {stderr}");
}

/// Starting threads is no fork (-p).
#[test]
fn threads_are_not_forks_by_pid() {
    let (_threads, memleak) = trace_waiting(&mut Command::new(fixture("threads")), &["-o", "0"]);
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert_no_fork_notice(&stderr);
    let leak = report.expect("thread_leak");
    assert_eq!((leak.bytes, leak.count), (5120, 80), "{report:#?}");
}

/// The same under -c.
#[test]
fn threads_are_not_forks_by_command() {
    let mut memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-o", "0", "-c"])
            .arg(fixture("threads")),
    );
    memleak.wait_for(Duration::from_secs(60), |l| l.starts_with("ready "));
    memleak.send("go\n");
    memleak.wait_for(Duration::from_secs(60), |l| l == "done");
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    assert_no_fork_notice(&stderr);
    let reports = parse_reports(&lines);
    let leak = reports.last().expect("a report").expect("thread_leak");
    assert_eq!((leak.bytes, leak.count), (5120, 80));
}

/// A fork is still told.
#[test]
fn a_fork_is_told() {
    let (_execer, memleak) = trace_waiting(&mut Command::new(fixture("execer")), &["-o", "0"]);
    let (_, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr
            .matches(" forked; its children are not traced\n")
            .count(),
        1,
        "{stderr}"
    );
}

/// -p TID of a thread traces its process, and says so.
#[test]
fn pid_of_a_thread_traces_its_process() {
    let mut tid = Running::spawn(&mut Command::new(fixture("tid")));
    let ready = tid.wait_for(Duration::from_secs(10), |l| l.starts_with("ready "));
    let ids: Vec<u32> = ready
        .split(' ')
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    let (pid, thread) = (ids[0], ids[1]);
    assert_ne!(pid, thread);
    let mut memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-o", "0", "-p"])
            .arg(thread.to_string()),
    );
    let attaching = memleak.wait_for(Duration::from_secs(60), |l| l.starts_with("Attaching"));
    assert_eq!(
        attaching,
        format!("Attaching to pid {pid}, Ctrl+C to quit.")
    );
    tid.send("go\n");
    tid.wait_for(Duration::from_secs(30), |l| l == "done");
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "memleak: {thread} is a thread of process {pid}; tracing the process\n"
        )),
        "{stderr}"
    );
    let leak = report.expect("leak_in_thread");
    assert_eq!((leak.bytes, leak.count), (1332, 4), "{report:#?}");
}

fn one_line_error(args: &[&str], dir: Option<&std::path::Path>) -> String {
    let mut cmd = Command::new(memleak_bin());
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

/// Tables the kernel cannot make: which one, and the largest it takes.
#[test]
fn tables_too_big_are_named() {
    assert_eq!(
        one_line_error(&["--max-allocs", "200000000", "-c", "true"], None),
        "memleak: --max-allocs 200000000 is too big for the allocation table: the kernel accepts at most 134217728\n"
    );
    assert_eq!(
        one_line_error(&["--stack-storage-size", "200000000", "-c", "true"], None),
        "memleak: --stack-storage-size 200000000 is too big for the stack table: the kernel accepts at most 134217727\n"
    );
}

/// -O NAME where a file NAME exists here: that file is meant.
#[test]
fn obj_names_a_file_here_first() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("obj-here.{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notelf.txt"), "not a program\n").unwrap();
    assert_eq!(
        one_line_error(&["-O", "notelf.txt", "-c", "true"], Some(&dir)),
        "memleak: -O ./notelf.txt: not an ELF file\n"
    );
    let sleeper = Running::spawn(Command::new("sleep").arg("30"));
    assert_eq!(
        one_line_error(
            &["-O", "notelf.txt", "-p", &sleeper.child.id().to_string()],
            Some(&dir)
        ),
        "memleak: -O ./notelf.txt: ./notelf.txt: not an ELF file\n"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With the default -o 500, a command that exits at once still gets every
/// block it left in the final report: after its exit none is young.
#[test]
fn final_report_of_an_exited_command_ignores_the_age_limit() {
    let memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-T", "50", "-c"])
            .arg(format!("{} --exit 3", fixture("leaker").display())),
    );
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(3), "{stderr}");
    assert_all_leaks(parse_reports(&lines).last().expect("final report"));
}

/// `memleak symbolize` copies lines that are not UTF-8 through unchanged.
#[test]
fn symbolize_copies_other_bytes_through() {
    let input: &[u8] = b"[12:00:00] Top 10 stacks with outstanding allocations:\n\t100 bytes in 1 allocations from stack\n\t\tf+0x1 [caf\xe9.so]\n\xff\xfe\n";
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("latin1-report.{}", std::process::id()));
    std::fs::write(&path, input).unwrap();
    let out = Command::new(memleak_bin())
        .arg("symbolize")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, input);
    assert_eq!(out.stderr, b"");
    std::fs::remove_file(&path).unwrap();
}
