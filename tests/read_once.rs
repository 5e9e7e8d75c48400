//! Each ELF file is read once per run: the allocator search, dlclose's
//! lookup, symbols, separate debug files, CFI (--unwind dwarf) and source
//! lines all share the one copy the ELF layer keeps (src/elf). Counted
//! with strace: the opens that memleak makes of each ELF file while it
//! traces a leaker, less those its own dynamic loader makes (a run of
//! `memleak -h` under strace).

mod common;

use common::*;
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

/// The opens in an `strace -f -y -e trace=openat` log, by the path the
/// returned descriptor names (what the kernel opened, however reached:
/// /proc/PID/root/..., /proc/PID/map_files/..., the plain path).
fn opens_by_file(log: &str) -> HashMap<String, usize> {
    let mut opens = HashMap::new();
    for line in log.lines().filter(|l| l.contains("openat(")) {
        let Some(result) = line.rsplit_once(") = ").map(|(_, r)| r) else {
            continue;
        };
        let Some((fd, rest)) = result.split_once('<') else {
            continue;
        };
        if fd.parse::<u32>().is_err() {
            continue;
        }
        let path = rest.strip_suffix('>').unwrap_or(rest);
        *opens.entry(path.to_string()).or_insert(0) += 1;
    }
    opens
}

fn strace_log(name: &str, memleak_args: &[String]) -> (Command, std::path::PathBuf) {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let log = dir.join(format!("read_once-{name}-{}.strace", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-y", "-e", "trace=openat", "-o"])
        .arg(&log)
        .arg(memleak_bin())
        .args(memleak_args);
    (cmd, log)
}

fn is_elf(path: &str) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

/// Traces the leaker with `args`; asserts that memleak opened its
/// executable and its libc exactly once, and no ELF file more than once.
fn each_elf_file_read_once(name: &str, args: &[&str]) {
    // What memleak's own loader opens (libc, libgcc_s for a dynamic build).
    let (mut cmd, base_log) = strace_log(&format!("{name}-base"), &["-h".to_string()]);
    assert!(cmd
        .output()
        .expect("strace runs (tests/deps.sh test)")
        .status
        .success());
    let baseline = opens_by_file(&std::fs::read_to_string(&base_log).unwrap());

    let mut leaker = Running::spawn(Command::new(fixture("leaker")).arg("--wait"));
    let ready = leaker.wait_for(Duration::from_secs(10), |l| l.starts_with("ready "));
    let pid: u32 = ready["ready ".len()..].parse().unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let libc = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so"))
        .expect("the leaker maps glibc's libc")
        .to_string();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap()
        .display()
        .to_string();

    let mut memleak_args: Vec<String> = vec!["-p".into(), pid.to_string()];
    memleak_args.extend(args.iter().map(|a| a.to_string()));
    let (mut cmd, log) = strace_log(name, &memleak_args);
    let mut memleak = Running::spawn(&mut cmd);
    memleak.wait_for(Duration::from_secs(60), |l| {
        l.starts_with("Attaching to pid")
    });
    leaker.send("go\n");
    leaker.wait_for(Duration::from_secs(60), |l| l == "done");
    // -p PID 1 3: three reports a second apart, then exit.
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}");
    let reports = parse_reports(&lines);
    let last = reports.last().expect("a report");
    // The run found the allocator and named every leak, with source lines.
    assert_all_leaks_allowing_copy_fallbacks(last);
    let stack = last.expect("leak_malloc");
    assert!(
        stack.frames.iter().any(|f| f.contains("leaker.c:")),
        "{stack:?}"
    );
    drop(leaker);

    let run = opens_by_file(&std::fs::read_to_string(&log).unwrap());
    let by_memleak = |path: &str| {
        run.get(path)
            .copied()
            .unwrap_or(0)
            .saturating_sub(baseline.get(path).copied().unwrap_or(0))
    };
    assert_eq!(by_memleak(&libc), 1, "opens of {libc}: {run:?}");
    assert_eq!(by_memleak(&exe), 1, "opens of {exe}: {run:?}");
    for path in run.keys().filter(|p| is_elf(p)) {
        assert!(
            by_memleak(path) <= 1,
            "{path} opened {} times",
            by_memleak(path)
        );
    }
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&base_log);
}

#[test]
fn each_elf_file_read_once_with_dwarf_unwinding_and_lines() {
    each_elf_file_read_once(
        "dwarf",
        &["-o", "0", "-T", "50", "--unwind", "dwarf", "1", "3"],
    );
}

#[test]
fn each_elf_file_read_once_by_default() {
    each_elf_file_read_once("default", &["-o", "0", "-T", "50", "1", "3"]);
}
