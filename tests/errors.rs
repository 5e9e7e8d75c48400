//! End-to-end: bad input gets one clear line on stderr and a non-zero exit.

mod common;

use std::process::Command;

use common::*;

/// Runs memleak with `args`; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(memleak_bin())
        .args(args)
        .output()
        .expect("memleak runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of the binary that any user may run: the checkout CI clones may
/// sit in a directory other users cannot enter. One file in /tmp, replaced
/// atomically once per test process.
fn binary_for_other_users() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static COPY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let dest = std::env::temp_dir().join("memleak-errors-test");
        let partial =
            std::env::temp_dir().join(format!("memleak-errors-test.{}", std::process::id()));
        std::fs::copy(memleak_bin(), &partial).unwrap();
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&partial, &dest).unwrap();
        dest
    })
    .clone()
}

/// Runs memleak `args` as nobody with setpriv's capability options `caps`;
/// asserts exit 1 with one `memleak: ` line on stderr and returns it.
fn as_nobody(caps: &[&str], args: &[&str]) -> String {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(caps)
        .arg(binary_for_other_users())
        .args(args)
        .output()
        .expect("setpriv (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("memleak: "), "{stderr}");
    stderr
}

fn assert_one_line_error(args: &[&str], code: i32, needle: &str) {
    let (got, _, stderr) = run(args);
    assert_eq!(got, Some(code), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr:?}");
    assert!(
        stderr.starts_with("memleak: ") && stderr.contains(needle),
        "{args:?}: {stderr:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_values_are_usage_errors() {
    for (args, needle) in [
        (&["-p", "abc"][..], "-p"),
        (&["-p", "-5"], "-p"),
        (&["-s", "0"], "-s"),
        (&["-T", "x"], "-T"),
        (&["-z", "10", "-Z", "5"], "-z"),
        (&["--sort", "name"], "--sort"),
        (&["0"], "interval"),
        (&["1", "0"], "count"),
        (&["1", "2", "3"], "3"),
        (&["--bogus"], "--bogus"),
        (&["-p", "1", "-c", "true"], "-c"),
        (&["-c", "'unterminated"], "quote"),
        (&["-o", "99999999999999999999999"], "-o"),
    ] {
        assert_one_line_error(args, 2, needle);
    }
}

#[test]
fn help_and_version() {
    let (code, stdout, _) = run(&["-h"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with("usage: memleak [-h] [-p PID]"),
        "{stdout}"
    );
    assert!(stdout.contains("EXAMPLES:") && stdout.contains("./memleak -p $(pidof allocs)"));
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    // Version, commit, architecture and linking: what tells two copies on a
    // board apart. The static builds are the musl ones (make test-static).
    let static_build = memleak_bin().to_string_lossy().contains("-musl/");
    let expected_tail = format!(
        ", {}, {})",
        std::env::consts::ARCH,
        if static_build {
            "static, musl"
        } else {
            "dynamic, gnu"
        }
    );
    let line = stdout.trim_end();
    let commit = line
        .strip_prefix(&format!("memleak {} (commit ", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(&expected_tail))
        .unwrap_or_else(|| panic!("{line:?} is not 'memleak VERSION (commit C{expected_tail}'"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{line}"
    );
}

#[test]
fn unknown_pid() {
    assert_one_line_error(&["-p", "999999999"], 1, "no process with PID 999999999");
}

#[test]
fn kernel_thread_pid() {
    assert_one_line_error(&["-p", "2"], 1, "kernel thread");
}

#[test]
fn symfs_that_is_not_a_directory() {
    assert_one_line_error(
        &["--symfs", "/no/such/dir", "-c", "true"],
        1,
        "--symfs /no/such/dir: not a directory",
    );
    assert_one_line_error(
        &["symbolize", "--symfs", "/no/such/dir"],
        1,
        "--symfs /no/such/dir: not a directory",
    );
    assert_one_line_error(
        &["symbolize", "/no/such/report"],
        1,
        "cannot read /no/such/report",
    );
}

#[test]
fn command_not_found() {
    assert_one_line_error(
        &["-c", "no-such-command-memleak"],
        1,
        "command not found: no-such-command-memleak",
    );
    assert_one_line_error(&["-c", "/no/such/program"], 1, "No such file");
}

#[test]
fn object_without_malloc() {
    let leaker = ready_leaker();
    let pid = leaker.child.id().to_string();
    assert_one_line_error(
        &["-p", &pid, "-O", "/bin/true"],
        1,
        "does not define malloc",
    );
    assert_one_line_error(&["-p", &pid, "-O", "libnosuch.so"], 1, "libnosuch.so");
}

/// A stripped static program without a debug file has no symbols left to
/// find malloc by: said in one line, with the way out.
#[test]
fn stripped_static_program_without_debug_file() {
    let built = fixture_built_with("leaker", "leaker-glibc-static", "gcc", &["-static"]);
    let stripped = stripped_copy(&built, "leaker-stripped-bare", false);
    assert_one_line_error(&["-c", stripped.to_str().unwrap()], 1, "no symbol table");
}

#[test]
fn unprivileged_user_is_told_what_is_missing() {
    let stderr = as_nobody(&["--inh-caps=-all", "--bounding-set=-all"], &["-p", "1"]);
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("CAP_PERFMON"),
        "{stderr}"
    );
}

#[test]
fn zombie_pid() {
    // The child outlives the shell, which by then is `sleep` and never
    // reaps it: after 0.2 s it is a zombie.
    let mut parent =
        Running::spawn(Command::new("sh").args(["-c", "sleep 0.2 & echo $!; exec sleep 30"]));
    let zombie = parent.wait_for(std::time::Duration::from_secs(10), |l| !l.is_empty());
    for _ in 0..100 {
        if zombie.parse().ok().and_then(state_of) == Some('Z') {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_one_line_error(
        &["-p", &zombie],
        1,
        &format!("process {zombie} has exited (zombie)"),
    );
}

#[test]
fn object_that_is_not_elf_or_is_truncated() {
    let leaker = ready_leaker();
    let pid = leaker.child.id().to_string();
    assert_one_line_error(&["-p", &pid, "-O", "/etc/passwd"], 1, "not an ELF file");
    let truncated = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("libc-truncated.so");
    let libc = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6")
        .or_else(|_| std::fs::read("/lib/aarch64-linux-gnu/libc.so.6"))
        .unwrap();
    std::fs::write(&truncated, &libc[..libc.len() / 3]).unwrap();
    assert_one_line_error(
        &["-p", &pid, "-O", truncated.to_str().unwrap()],
        1,
        "truncated",
    );
}

#[test]
fn unreadable_proc_entries() {
    // Allowed to load BPF (CAP_BPF, CAP_PERFMON) but not to read another
    // user's /proc/PID/maps: one clear line, not a crash.
    let leaker = ready_leaker();
    let pid = leaker.child.id().to_string();
    let stderr = as_nobody(
        &["--inh-caps=+bpf,+perfmon", "--ambient-caps=+bpf,+perfmon"],
        &["-p", &pid],
    );
    assert!(stderr.contains("Permission denied"), "{stderr}");
}

/// `memleak symbolize`'s output: a reader that goes away (`| head -1`) is
/// no error, a full disk is one line and exit 1. The closed pipe is known
/// by its kind (EPIPE), not by the words of the message.
#[test]
fn symbolize_output_that_cannot_be_written() {
    // Far more than a pipe buffer (64 KiB), so that writes go on after
    // head has exited.
    let report = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("symbolize-output-{}.txt", std::process::id()));
    let line = "\t\t[unknown] 0x1234 a line of a report copied through unchanged\n";
    std::fs::write(&report, line.repeat(20_000)).unwrap();
    let report_arg = report.to_str().unwrap();

    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' symbolize '{report_arg}' | head -1 >/dev/null",
            memleak_bin().display()
        ))
        .output()
        .expect("sh runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "closed pipe: {stderr}");
    assert_eq!(stderr, "", "quiet, as `memleak | head` is");

    let out = Command::new(memleak_bin())
        .args(["symbolize", report_arg])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .expect("memleak runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr, "memleak: No space left on device (os error 28)\n");
    std::fs::remove_file(&report).unwrap();
}
