//! End-to-end: memleak -p and -c on tests/fixtures/leaker.c, with real BPF.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn pid_mode_reports_every_leak_exactly() {
    let (_leaker, memleak) = trace_waiting_leaker(&["-o", "0", "-T", "50", "1"], &[]);
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        report
            .header
            .contains("Top 50 stacks with outstanding allocations:"),
        "{}",
        report.header
    );
    assert_all_leaks(&report);
    // Largest last, as BCC prints them.
    let sizes: Vec<u64> = report.stacks.iter().map(|s| s.bytes).collect();
    assert!(
        sizes.windows(2).all(|w| w[0] <= w[1]),
        "ascending: {sizes:?}"
    );
}

/// Kernels before 6.6 have no uprobe_multi: one link per function.
#[test]
fn pid_mode_without_uprobe_multi_gives_the_same_totals() {
    let stderr = leaker_totals_with(&["--fallback", "links"]);
    assert!(
        stderr.contains("probes to /") && !stderr.contains("uprobe_multi"),
        "{stderr}"
    );
}

/// The default paths, as -v states them. On x86-64, glibc's free starts
/// with `test %rdi,%rdi`, which the kernel would single-step; its probe sits
/// on the `je` after it, which the kernel emulates. The leaker frees through
/// every path free has (NULL, small blocks, an mmapped 1 MiB block, realloc
/// failure), so exact totals show the moved probe sees every call.
#[test]
fn fast_paths_give_exact_totals() {
    let stderr = leaker_totals_with(&[]);
    if cfg!(target_arch = "x86_64") {
        assert!(
            stderr.contains("at an instruction the kernel emulates: free+3"),
            "{stderr}"
        );
    }
    assert!(stderr.contains("with uprobe_multi links"), "{stderr}");
    assert!(
        stderr.contains("reports read the per-stack sums BPF keeps"),
        "{stderr}"
    );
}

/// `--fallback entry`: every probe at the function's first instruction.
#[test]
fn entry_probes_give_the_same_totals() {
    let stderr = leaker_totals_with(&["--fallback", "entry"]);
    assert!(!stderr.contains("kernel emulates:"), "{stderr}");
}

/// `--fallback sums`: every report copies all allocations out of BPF.
#[test]
fn copied_reports_give_the_same_totals() {
    let stderr = leaker_totals_with(&["--fallback", "sums"]);
    assert!(
        stderr.contains("reports copy every allocation out"),
        "{stderr}"
    );
}

/// memleak -v -p on the leaker with `flags`: asserts every leak exactly
/// and returns memleak's stderr.
fn leaker_totals_with(flags: &[&str]) -> String {
    let mut args = vec!["-v", "-o", "0", "-T", "50"];
    args.extend_from_slice(flags);
    args.push("1");
    let (_leaker, memleak) = trace_waiting_leaker(&args, &[]);
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert_all_leaks(&report);
    assert_eq!(report.losses, None, "{report:#?}");
    stderr
}

#[test]
fn command_mode_traces_from_the_first_allocation_and_exits_with_its_status() {
    let memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-o", "0", "-T", "50", "-c"])
            .arg(format!("{} --exit 7", fixture("leaker").display())),
    );
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(
        code,
        Some(7),
        "exit status of the command; stderr: {stderr}"
    );
    assert!(stderr.contains("command exited with status 7"), "{stderr}");
    assert!(lines[0].starts_with("Attaching to pid "), "{lines:?}");
    let reports = parse_reports(&lines);
    assert_eq!(reports.len(), 1, "one final report: {lines:#?}");
    assert_all_leaks(&reports[0]);
}

#[test]
fn command_is_searched_in_path_and_split_like_a_shell() {
    let dir = fixture("leaker");
    let path = format!(
        "{}:{}",
        dir.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let memleak = Running::spawn(Command::new(memleak_bin()).env("PATH", path).args([
        "-o",
        "0",
        "-c",
        "leaker '--exit' \"3\"",
    ]));
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(3), "{stderr}");
    assert_eq!((parse_reports(&lines)[0].expect("leak_malloc").bytes), 1000);
}

#[test]
fn combined_only_gives_the_same_totals() {
    let (_leaker, memleak) = trace_waiting_leaker(&["--combined-only", "-T", "50", "1"], &[]);
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert_all_leaks(&report);
}

#[test]
fn show_allocs_lists_each_block() {
    let (_leaker, memleak) = trace_waiting_leaker(&["-a", "-o", "0", "-T", "50", "1"], &[]);
    let (report, _, _, _) = interrupt(memleak);
    let stack = report.expect("leak_malloc");
    assert_eq!(stack.addrs.len(), 10, "{stack:#?}");
    assert!(stack.addrs.iter().all(|(addr, size)| *size == 100
        && !addr.starts_with("0x")
        && u64::from_str_radix(addr, 16).is_ok()));
    assert_eq!(report.expect("leak_mmap").addrs.len(), 2);
}

#[test]
fn size_filters_are_inclusive() {
    let (_leaker, memleak) = trace_waiting_leaker(
        &["-z", "300", "-Z", "1000", "-o", "0", "-T", "50", "1"],
        &[],
    );
    let (report, _, _, _) = interrupt(memleak);
    assert!(report.by_function("leak_malloc").is_none(), "100 < 300");
    assert!(report.by_function("leak_mmap").is_none(), "8192 > 1000");
    assert_eq!(
        report.expect("leak_realloc").bytes,
        1200,
        "300 is kept (inclusive)"
    );
    assert_eq!(
        report.expect("leak_valloc").bytes,
        1000,
        "1000 is kept (inclusive)"
    );
    assert_eq!(report.expect("leak_posix_memalign").bytes, 1024);
    assert_eq!(report.expect("leak_reallocarray").bytes, 900);
}

#[test]
fn top_limits_the_stacks_shown() {
    let (_leaker, memleak) = trace_waiting_leaker(&["-T", "2", "-o", "0", "1"], &[]);
    let (report, _, _, _) = interrupt(memleak);
    assert!(report.header.contains("Top 2 stacks"));
    let firsts: Vec<&str> = report
        .stacks
        .iter()
        .map(|s| s.frames[0].split('+').next().unwrap())
        .collect();
    assert_eq!(
        firsts,
        vec!["leak_mremap", "leak_mmap"],
        "the two largest, largest last"
    );
}

#[test]
fn sort_by_count() {
    let (_leaker, memleak) =
        trace_waiting_leaker(&["--sort", "count", "-T", "1", "-o", "0", "1"], &[]);
    let (report, _, _, _) = interrupt(memleak);
    assert_eq!(report.stacks.len(), 1);
    assert_eq!(report.expect("leak_malloc").count, 10);
}

#[test]
fn older_hides_young_allocations() {
    let (_leaker, memleak) = trace_waiting_leaker(&["-o", "60000", "1"], &[]);
    let (report, _, _, _) = interrupt(memleak);
    assert!(report.stacks.is_empty(), "{report:#?}");
}

/// A realloc that is not recorded (here outside -Z) still frees the block
/// it replaces: leak_realloc's malloc(8) blocks are gone, not leaked.
#[test]
fn unrecorded_realloc_frees_the_old_block() {
    let (_leaker, memleak) = trace_waiting_leaker(&["-Z", "100", "-o", "0", "-T", "50", "1"], &[]);
    let (report, _, _, _) = interrupt(memleak);
    assert!(report.by_function("leak_realloc").is_none(), "{report:#?}");
    assert_eq!(report.expect("leak_malloc").bytes, 1000);
}

/// Runs roundrobin.c (ten call sites in turn, 100,000 leaked malloc(64)
/// each) under `-s n`, with `--estimate` if asked, and returns the final
/// report after checking nothing was lost.
fn round_robin_report(n: u64, estimate: bool) -> Report {
    let n = n.to_string();
    let mut args = vec!["-s", &n, "-o", "0", "-T", "50"];
    // -s 2 keeps 500,000 blocks: more than the default table before 6.1.
    args.extend(["--max-allocs", "1000000"]);
    if estimate {
        args.push("--estimate");
    }
    // One report, at Ctrl+C: reading 500,000 blocks each second would
    // only slow the run.
    args.push("3600");
    let (_program, memleak) = trace_waiting(&mut Command::new(fixture("roundrobin")), &args);
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report.losses, None, "{stderr}");
    report
}

/// -s N records each allocation on its own with probability 1/N, so a
/// program's rhythm cannot line up with it: every one of ten call sites in
/// a fixed cycle is seen about 100,000/N times (sampling every Nth call saw
/// one site with -s 10 and none of the others).
///
/// Bounds: a site's count is Binomial(100,000, 1/N), the total
/// Binomial(1,000,000, 1/N). Each site is checked at 6 standard deviations
/// (two-sided miss 2e-9 by the normal approximation, good at np >= 10,000;
/// 5 would miss 6e-7 per check, too much for 66 checks), the total within
/// 2% (>= 6.7 sd for N <= 10), with --estimate the scaled site counts at
/// N * 6 sd. 66 checks in all: a correct implementation fails this test
/// about once in 7 million runs. For -s 10 the site bounds are
/// [9,431, 10,569] raw and 100,000 +- 5.7% estimated, inside the issue's
/// [9,400, 10,600] and 6%.
fn assert_round_robin_sampled(n: u64) {
    const ROUNDS: f64 = 100_000.0;
    let p = 1.0 / n as f64;
    let mean = ROUNDS * p;
    let six_sd = 6.0 * (ROUNDS * p * (1.0 - p)).sqrt();
    let sites: Vec<String> = (0..10).map(|i| format!("site_{i}")).collect();
    let raw = round_robin_report(n, false);
    assert!(
        raw.header.ends_with("stacks with outstanding allocations:"),
        "{}",
        raw.header
    );
    let mut total = 0;
    for site in &sites {
        let stack = raw.expect(site);
        assert_eq!(stack.bytes, 64 * stack.count, "{site}: {stack:#?}");
        let count = stack.count as f64;
        assert!(
            (count - mean).abs() <= six_sd,
            "-s {n}: {site} {count}, expected {mean} +- {six_sd:.0}"
        );
        if n == 10 {
            assert!((9_400..=10_600).contains(&stack.count), "{site}: {count}");
        }
        total += stack.count;
    }
    let expected_total = ROUNDS * 10.0 * p;
    assert!(
        (total as f64 - expected_total).abs() <= 0.02 * expected_total,
        "-s {n}: total {total}, expected {expected_total}"
    );
    let estimated = round_robin_report(n, true);
    assert!(
        estimated.header.ends_with(&format!(
            "stacks with outstanding allocations (estimated: each sampled allocation counts {n} times):"
        )),
        "{}",
        estimated.header
    );
    let bound = n as f64 * six_sd;
    assert!(bound <= 0.06 * ROUNDS, "the issue's 6% bound holds");
    for site in &sites {
        let stack = estimated.expect(site);
        assert_eq!(stack.count % n, 0, "{site}: {stack:#?}");
        assert_eq!(stack.bytes, 64 * stack.count, "{site}: {stack:#?}");
        let count = stack.count as f64;
        assert!(
            (count - ROUNDS).abs() <= bound,
            "-s {n} --estimate: {site} {count}, expected {ROUNDS} +- {bound:.0}"
        );
    }
}

#[test]
fn sampling_sees_every_site_of_a_cycle_of_ten() {
    assert_round_robin_sampled(10);
}

#[test]
fn sampling_by_two_sees_every_site_of_a_cycle_of_ten() {
    assert_round_robin_sampled(2);
}

#[test]
fn sampling_by_five_sees_every_site_of_a_cycle_of_ten() {
    assert_round_robin_sampled(5);
}

#[test]
fn trace_prints_each_call_and_reports_go_on() {
    let (_leaker, memleak) = trace_waiting_leaker(&["-t", "-o", "0", "-T", "50", "1"], &[]);
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert_all_leaks(&report);
    // The lines are in the output before the final report.
    let (_leaker, memleak) = trace_waiting_leaker(&["-t", "1"], &[]);
    memleak.signal(libc::SIGINT);
    let (_, lines, _) = memleak.finish(Duration::from_secs(30));
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert!(
        count("malloc: alloc entered, size = 100") >= 10,
        "{}",
        lines.len()
    );
    assert!(count("malloc: alloc exited, size = 100, result = ") >= 10);
    assert!(count("mmap: alloc entered, size = 8192") >= 2);
    assert!(count("free: free entered, address = ") >= 1000);
    assert!(
        lines.iter().any(|l| l.contains(" leaker ")),
        "comm is shown"
    );
}

#[test]
fn interval_and_count_end_the_run() {
    let (_leaker, memleak) = trace_waiting_leaker(&["1", "3"], &[]);
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(parse_reports(&lines).len(), 3, "{lines:#?}");
}

#[test]
fn sigterm_prints_a_final_report_and_detaches() {
    let (_leaker, memleak) = trace_waiting_leaker(&["-o", "0", "60"], &[]);
    memleak.signal(libc::SIGTERM);
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    let reports = parse_reports(&lines);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].expect("leak_malloc").bytes, 1000);
}

#[test]
fn target_exit_gives_a_symbolized_final_report_and_an_error() {
    let (leaker, memleak) = trace_waiting_leaker(&["-o", "0", "-T", "50", "60"], &[]);
    // Let memleak re-read the maps once, then end the leaker.
    std::thread::sleep(Duration::from_millis(800));
    let (leaker_code, _, _) = leaker.finish(Duration::from_secs(10));
    assert_eq!(leaker_code, Some(0));
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(30));
    assert_eq!(code, Some(1));
    assert!(stderr.trim_end().ends_with("exited"), "{stderr}");
    assert_all_leaks(parse_reports(&lines).last().expect("final report"));
}

#[test]
fn closed_stdout_exits_quietly() {
    // `memleak | head -1`: the reader goes away after the first line.
    let leaker = ready_leaker();
    let pid = leaker.child.id();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} -p {pid} -o 0 1 | head -1",
            memleak_bin().display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Attaching to pid {pid}, Ctrl+C to quit.\n")
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "no message on a closed pipe"
    );
}

#[test]
fn pipefail_status_of_memleak_is_zero() {
    let leaker = ready_leaker();
    let pid = leaker.child.id();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {} -p {pid} -o 0 1 | head -1 >/dev/null",
            memleak_bin().display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cxx_frames_are_demangled() {
    let memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-o", "0", "-c"])
            .arg(fixture("cxxleak")),
    );
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let report = &parse_reports(&lines)[0];
    // libstdc++'s operator new calls malloc, so the stack starts there
    // (new[] tail-calls new). The caller inside the program is lost:
    // Debian builds libstdc++ without frame pointers (issue 7's subject).
    let mut by_new: Vec<(u64, u64)> = report
        .stacks
        .iter()
        .filter(|s| {
            s.frames[0].starts_with("operator new(unsigned long)+0x")
                && s.frames[0].contains(" [libstdc++.so")
        })
        .map(|s| (s.bytes, s.count))
        .collect();
    by_new.sort();
    assert_eq!(by_new, vec![(7 * 40, 7), (25 * 4 * 3, 3)], "{report:#?}");
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("_Znwm") && !l.contains("_Znam")),
        "mangled names: {lines:#?}"
    );
}

#[test]
fn nothing_stays_attached_after_exit() {
    let (_leaker, memleak) = trace_waiting_leaker(&["-o", "0", "1"], &[]);
    let (_, code, _, _) = interrupt(memleak);
    assert_eq!(code, Some(0));
    // Probes are perf-event based and die with memleak's file descriptors;
    // none may have been left in tracefs either.
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if let Ok(events) = std::fs::read_to_string(format!("{dir}/uprobe_events")) {
            assert!(!events.contains("memleak"), "{events}");
            assert_eq!(events, "", "{dir}/uprobe_events");
        }
    }
}

#[test]
fn threads_freeing_each_others_blocks_give_exact_totals() {
    let (_threads, memleak) = trace_waiting(
        &mut Command::new(fixture("threads")),
        &["-o", "0", "-T", "50", "1"],
    );
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    let leak = report.expect("thread_leak");
    assert_eq!((leak.bytes, leak.count), (8 * 10 * 64, 80), "{leak:#?}");
    assert!(
        report.by_function("cross_alloc").is_none(),
        "cross-thread frees were missed: {report:#?}"
    );
    assert_eq!(report.losses, None, "{report:#?}");
}

#[cfg(target_arch = "x86_64")]
/// The bytes of `len` at `addr` in process `pid`'s memory.
fn peek(pid: u32, addr: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    mem.seek(SeekFrom::Start(addr)).unwrap();
    let mut buf = vec![0; len];
    mem.read_exact(&mut buf).unwrap();
    buf
}

/// x86_64 only: the breakpoint instruction checked for is int3.
#[cfg(target_arch = "x86_64")]
#[test]
fn sigkill_leaves_no_probe_behind() {
    let (leaker, memleak) = trace_waiting_leaker(&["1"], &[]);
    let pid = leaker.child.id();
    // malloc's address in the leaker: its libc mapping plus the offset of
    // malloc in that file, found the same way as in this test process.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let own_maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let libc_base = |maps: &str| {
        maps.lines()
            .find(|l| l.contains("/libc.so.6") && l.split_whitespace().nth(2) == Some("00000000"))
            .map(|l| u64::from_str_radix(l.split('-').next().unwrap(), 16).unwrap())
            .expect("libc mapped")
    };
    let offset = libc::malloc as *const () as usize as u64 - libc_base(&own_maps);
    let malloc_addr = libc_base(&maps) + offset;
    let original = peek(
        std::process::id(),
        libc::malloc as *const () as usize as u64,
        1,
    );
    // A uprobe is an int3 (0xcc) written into the process's copy of the page.
    assert_eq!(
        peek(pid, malloc_addr, 1),
        vec![0xcc],
        "probe in place while traced"
    );
    memleak.signal(libc::SIGKILL);
    let (code, _, _) = memleak.finish(Duration::from_secs(30));
    assert_eq!(code, Some(128 + 9));
    assert_eq!(
        peek(pid, malloc_addr, 1),
        original,
        "the probe went away with memleak"
    );
}

/// musl has no pvalloc; everything else leaks the same.
fn musl_leaks() -> Vec<(&'static str, u64, u64)> {
    leaks()
        .iter()
        .copied()
        .filter(|(f, _, _)| *f != "leak_pvalloc")
        .collect()
}

/// Alpine/OpenWrt style: musl's libc is its dynamic loader,
/// /lib/ld-musl-x86_64.so.1, and its calloc calls malloc.
#[test]
fn musl_dynamic_program() {
    let leaker = fixture_built_with("leaker", "leaker-musl", "musl-gcc", &[]);
    let memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-v", "-o", "0", "-T", "50", "-c"])
            .arg(format!("{} --exit 3", leaker.display())),
    );
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("allocator: /lib/ld-musl-"),
        "-v says which object: {stderr}"
    );
    assert_leaks(&parse_reports(&lines)[0], "leaker-musl", &musl_leaks());
}

/// A statically linked program is its own allocator.
#[test]
fn musl_static_program() {
    let leaker = fixture_built_with("leaker", "leaker-musl-static", "musl-gcc", &["-static"]);
    let memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-v", "-o", "0", "-T", "50", "-c"])
            .arg(format!("{} --exit 3", leaker.display())),
    );
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("allocator: {}", leaker.display())),
        "{stderr}"
    );
    assert_leaks(
        &parse_reports(&lines)[0],
        "leaker-musl-static",
        &musl_leaks(),
    );
}

/// The same static program, traced with -p after it started.
#[test]
fn musl_static_program_by_pid() {
    let leaker = fixture_built_with("leaker", "leaker-musl-static", "musl-gcc", &["-static"]);
    let (_leaker, memleak) = trace_waiting(
        Command::new(&leaker).arg("--wait"),
        &["-o", "0", "-T", "50", "1"],
    );
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert_leaks(&report, "leaker-musl-static", &musl_leaks());
}

/// A stripped static program (musl, as on appliances): no symbol table is
/// left to find malloc in, so memleak reads its separate debug file (found
/// through .gnu_debuglink), for the probes and for the report's names.
#[test]
fn stripped_static_program() {
    let built = fixture_built_with("leaker", "leaker-musl-static", "musl-gcc", &["-static"]);
    let leaker = stripped_copy(&built, "leaker-stripped", true);
    let memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-v", "-o", "0", "-T", "50", "-c"])
            .arg(format!("{} --exit 3", leaker.display())),
    );
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(3), "{stderr}");
    let chosen = format!("allocator: {} (", leaker.display());
    assert!(
        stderr.contains(&chosen)
            && stderr.contains("symbols from ")
            && stderr.contains("leaker-stripped.debug"),
        "{stderr}"
    );
    assert_leaks(&parse_reports(&lines)[0], "leaker-stripped", &musl_leaks());
}

/// The same by -p: the debug file is looked up as the process sees the
/// filesystem.
#[test]
fn stripped_static_program_by_pid() {
    let built = fixture_built_with("leaker", "leaker-musl-static", "musl-gcc", &["-static"]);
    let leaker = stripped_copy(&built, "leaker-stripped", true);
    let (_leaker, memleak) = trace_waiting(
        Command::new(&leaker).arg("--wait"),
        &["-v", "-o", "0", "-T", "50", "1"],
    );
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("leaker-stripped.debug"), "{stderr}");
    assert_leaks(&report, "leaker-stripped", &musl_leaks());
}

/// glibc statically linked: its allocator functions are the executable's.
#[test]
fn glibc_static_program() {
    let leaker = fixture_built_with("leaker", "leaker-glibc-static", "gcc", &["-static"]);
    let memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-o", "0", "-T", "50", "-c"])
            .arg(format!("{} --exit 3", leaker.display())),
    );
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(3), "{stderr}");
    assert_leaks(&parse_reports(&lines)[0], "leaker-glibc-static", leaks());
}

/// A program linked with an allocator library: its malloc family is
/// jemalloc's or tcmalloc's, while mmap and whatever the library lacks
/// (reallocarray, pvalloc) stay in libc; both are traced, exactly once.
fn allocator_library(out: &str, lib: &str, expect_object: &str) {
    let leaker = fixture_built_with("leaker", out, "gcc", &["-Wl,--no-as-needed", lib]);
    let memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-v", "-o", "0", "-T", "50", "-c"])
            .arg(format!("{} --exit 3", leaker.display())),
    );
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("memleak: allocator: ") && l.contains(expect_object)),
        "{stderr}"
    );
    assert_leaks(&parse_reports(&lines)[0], out, leaks());
}

#[test]
fn jemalloc_program() {
    allocator_library("leaker-jemalloc", "-ljemalloc", "libjemalloc.so.2");
}

#[test]
fn tcmalloc_program() {
    allocator_library(
        "leaker-tcmalloc",
        "-l:libtcmalloc_minimal.so.4",
        "libtcmalloc_minimal.so.4",
    );
}

/// memleak run on `program` until it exits (-c), with -v: its report and
/// stderr, after checking that `expect_object` was chosen as the allocator.
fn run_to_exit(program: &std::path::Path, expect_object: &str) -> (Report, Vec<String>, String) {
    run_to_exit_with(program, expect_object, &[])
}

fn run_to_exit_with(
    program: &std::path::Path,
    expect_object: &str,
    flags: &[&str],
) -> (Report, Vec<String>, String) {
    let memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-v", "-o", "0"])
            .args(flags)
            .arg("-c")
            .arg(program),
    );
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("memleak: allocator: ") && l.contains(expect_object)),
        "{stderr}"
    );
    let report = parse_reports(&lines)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no report: {lines:#?}"));
    (report, lines, stderr)
}

/// C++ against an allocator that defines operator new and delete itself
/// instead of calling malloc and free: new is probed there, so the leak's
/// first frame in the program is the function calling new, with exact
/// totals, and no delete variant leaves a block behind.
fn cxx_with_allocator(out: &str, flags: &[&str], expect_object: &str) {
    let program = cxx_fixture_built_with("cxxleak", out, flags);
    let (report, _, stderr) = run_to_exit(&program, expect_object);
    let in_program = |s: &Stack| -> String {
        s.frames
            .iter()
            .find(|f| module_of(f) == Some(out) && !f.starts_with("operator new"))
            .cloned()
            .unwrap_or_default()
    };
    let mut leaks: Vec<(String, u64, u64)> = report
        .stacks
        .iter()
        .map(|s| {
            (
                in_program(s).split("+0x").next().unwrap_or("").to_string(),
                s.bytes,
                s.count,
            )
        })
        // Blocks the runtime keeps for good (libstdc++'s exception pool,
        // the allocator's own bookkeeping) have no frame in the program.
        .filter(|(function, _, _)| !function.is_empty())
        .collect();
    leaks.sort();
    let expected = vec![
        ("app::Factory::make_array()".to_string(), 3 * 25 * 4, 3),
        ("app::Factory::make_widget()".to_string(), 7 * 40, 7),
    ];
    assert_eq!(leaks, expected, "{report:#?}\n{stderr}");
    assert_eq!(report.losses, None);
}

#[test]
fn cxx_with_jemalloc() {
    cxx_with_allocator(
        "cxxleak-jemalloc",
        &["-Wl,--no-as-needed", "-ljemalloc"],
        "libjemalloc.so.2",
    );
}

#[test]
fn cxx_with_tcmalloc() {
    cxx_with_allocator(
        "cxxleak-tcmalloc",
        &["-Wl,--no-as-needed", "-l:libtcmalloc_minimal.so.4"],
        "libtcmalloc_minimal.so.4",
    );
}

/// mimalloc's header defines new and delete in the program, calling mi_new
/// and mi_free, which memleak traces in libmimalloc.
#[test]
fn cxx_with_mimalloc() {
    cxx_with_allocator(
        "cxxleak-mimalloc",
        &[
            "-include",
            "mimalloc-new-delete.h",
            "-Wl,--no-as-needed",
            "-lmimalloc",
        ],
        "libmimalloc.so.2",
    );
}

/// How many stacks `module`'s own code allocated (innermost frame in it):
/// not the C library's stdio buffers (whose complete stacks pass through
/// the program's printf calls) nor the runtime's pools.
fn stacks_in(report: &Report, module: &str) -> usize {
    report
        .stacks
        .iter()
        .filter(|s| s.frames.first().and_then(|f| module_of(f)) == Some(module))
        .count()
}

/// jemalloc's own API: mallocx, rallocx and xallocx allocate (xallocx
/// resizes in place), dallocx and sdallocx free.
#[test]
fn jemalloc_extended_api() {
    jemalloc_api_with(&[]);
}

/// The same through one uprobe link per function (kernels before 6.6),
/// where each of these functions has its own entry program.
#[test]
fn jemalloc_extended_api_without_uprobe_multi() {
    jemalloc_api_with(&["--fallback", "links"]);
}

fn jemalloc_api_with(flags: &[&str]) {
    let program = fixture_built_with("jemalloc_api", "jemalloc-api", "gcc", &["-ljemalloc"]);
    let (report, lines, stderr) = run_to_exit_with(&program, "libjemalloc.so.2", flags);
    let resized: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("xallocx "))
        .and_then(|n| n.parse().ok())
        .expect("xallocx line");
    assert_leaks(
        &report,
        "jemalloc-api",
        &[
            ("leak_mallocx", 800, 4),
            ("leak_rallocx", 1500, 3),
            ("alloc_big", resized, 1),
        ],
    );
    assert_eq!(
        stacks_in(&report, "jemalloc-api"),
        3,
        "{report:#?}\n{stderr}"
    );
    assert_eq!(report.losses, None);
}

/// mimalloc's own API, including calls memleak cannot size, which the
/// report counts instead of missing silently.
#[test]
fn mimalloc_extended_api() {
    let program = fixture_built_with("mimalloc_api", "mimalloc-api", "gcc", &["-lmimalloc"]);
    let (report, _, stderr) = run_to_exit(&program, "libmimalloc.so.2");
    let leaks = [
        ("leak_mi_malloc", 320, 5),
        ("leak_mi_zalloc", 300, 3),
        ("leak_mi_new_n", 600, 2),
        ("leak_mi_malloc_aligned", 512, 2),
        ("leak_mi_reallocn", 400, 2),
    ];
    assert_leaks(&report, "mimalloc-api", &leaks);
    assert_eq!(
        stacks_in(&report, "mimalloc-api"),
        leaks.len(),
        "{report:#?}\n{stderr}"
    );
    assert_eq!(
        report.losses.as_deref(),
        Some("lost: 2 calls to allocator functions memleak cannot size")
    );
}

/// A program linked with mimalloc uses it through the standard names too.
#[test]
fn mimalloc_program() {
    allocator_library("leaker-mimalloc", "-lmimalloc", "libmimalloc.so.2");
}

/// prefixed_jemalloc.c linked with a je_-prefixed copy of Debian's static
/// jemalloc (objcopy renames its API).
fn prefixed_jemalloc_program() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_prefixed_jemalloc).clone()
}

fn build_prefixed_jemalloc() -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let archive = dir.join("libjemalloc-prefixed.a");
    let api = [
        "malloc",
        "calloc",
        "realloc",
        "free",
        "posix_memalign",
        "aligned_alloc",
        "valloc",
        "memalign",
        "pvalloc",
        "mallocx",
        "rallocx",
        "xallocx",
        "sdallocx",
        "dallocx",
        "sallocx",
        "nallocx",
        "malloc_usable_size",
        "mallctl",
        "mallctlnametomib",
        "mallctlbymib",
        "malloc_stats_print",
    ];
    let renames: Vec<String> = api
        .iter()
        .map(|s| format!("--redefine-sym={s}=je_{s}"))
        .collect();
    let multiarch = if cfg!(target_arch = "aarch64") {
        "aarch64-linux-gnu"
    } else {
        "x86_64-linux-gnu"
    };
    let status = Command::new("objcopy")
        .args(&renames)
        .arg(format!("/usr/lib/{multiarch}/libjemalloc_pic.a"))
        .arg(&archive)
        .status()
        .expect("objcopy runs");
    assert!(status.success());
    let archive = archive.display().to_string();
    fixture_built_with(
        "prefixed_jemalloc",
        "prefixed-jemalloc",
        "gcc",
        &[&archive, "-lpthread", "-ldl", "-lm", "-lstdc++"],
    )
}

const PREFIXED_LEAKS: &[(&str, u64, u64)] = &[
    ("leak_je_malloc", 300, 3),
    ("leak_je_mallocx", 128, 2),
    ("leak_libc_malloc", 200, 4),
];

/// A jemalloc built into the executable under a prefix is traced beside
/// libc's malloc: both sets of leaks, exactly.
#[test]
fn prefixed_allocator_in_executable() {
    let program = prefixed_jemalloc_program();
    let (report, _, stderr) = run_to_exit(&program, "libc.so.6");
    assert!(
        stderr.contains("also traced: ") && stderr.contains("(je_*)"),
        "{stderr}"
    );
    assert_leaks(&report, "prefixed-jemalloc", PREFIXED_LEAKS);
}

/// The same with -p: the executable is probed through /proc/PID/exe.
#[test]
fn prefixed_allocator_in_executable_by_pid() {
    let program = prefixed_jemalloc_program();
    let (_program, memleak) = trace_waiting(
        Command::new(&program).arg("--wait"),
        &["-v", "-o", "0", "1"],
    );
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("(je_*)"), "{stderr}");
    assert_leaks(&report, "prefixed-jemalloc", PREFIXED_LEAKS);
}

/// Starts `fixture_cmd` and waits for its "ready PID" line.
fn start_waiting(fixture_cmd: &mut Command) -> (Running, u32) {
    let mut running = Running::spawn(fixture_cmd);
    let ready = running.wait_for(Duration::from_secs(10), |l| l.starts_with("ready "));
    let pid = ready["ready ".len()..].parse().unwrap();
    (running, pid)
}

/// -p PID,PID: two processes with different allocators (glibc's libc and
/// a static musl executable), each with its own probes and symbols; every
/// stack says whose it is, and each process's totals are exact. One
/// exiting early is told, and its leaks stay in the report.
#[test]
fn several_processes() {
    let musl = fixture_built_with("leaker", "leaker-musl-static", "musl-gcc", &["-static"]);
    let (mut glibc_leaker, glibc_pid) =
        start_waiting(Command::new(fixture("leaker")).arg("--wait"));
    let (mut musl_leaker, musl_pid) = start_waiting(Command::new(&musl).arg("--wait"));
    let pids = format!("{glibc_pid},{musl_pid}");
    let mut memleak = Running::spawn(
        Command::new(memleak_bin()).args(["-v", "-o", "0", "-T", "50", "-p", &pids, "1"]),
    );
    memleak.wait_for(Duration::from_secs(30), |l| {
        l == format!("Attaching to pids {glibc_pid}, {musl_pid}, Ctrl+C to quit.")
    });
    for leaker in [&mut glibc_leaker, &mut musl_leaker] {
        leaker.send("go\n");
        leaker.wait_for(Duration::from_secs(30), |l| l == "done");
    }
    // The musl one exits; memleak goes on with the other.
    drop(musl_leaker);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        memleak.child.try_wait().unwrap().is_none(),
        "memleak must go on tracing the other process"
    );
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "memleak: process {musl_pid} exited; its allocations stay in the report"
        )),
        "{stderr}"
    );
    assert!(
        report
            .stacks
            .iter()
            .all(|s| s.pid == Some(glibc_pid) || s.pid == Some(musl_pid)),
        "{report:#?}"
    );
    assert_leaks(&report.of_pid(glibc_pid), "leaker", leaks());
    assert_leaks(
        &report.of_pid(musl_pid),
        "leaker-musl-static",
        &musl_leaks(),
    );
}

/// Both processes gone: the run ends as with one (final report, exit 1).
#[test]
fn several_processes_all_exit() {
    let (leaker_a, a) = start_waiting(Command::new(fixture("leaker")).arg("--wait"));
    let (leaker_b, b) = start_waiting(Command::new(fixture("leaker")).arg("--wait"));
    let mut memleak = Running::spawn(Command::new(memleak_bin()).args([
        "-o",
        "0",
        "-p",
        &format!("{a},{b}"),
        "60",
    ]));
    memleak.wait_for(Duration::from_secs(30), |l| {
        l.starts_with("Attaching to pids")
    });
    drop(leaker_a);
    drop(leaker_b);
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(30));
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        parse_reports(&lines).len(),
        1,
        "the final report: {lines:#?}"
    );
    assert!(stderr.trim_end().ends_with(" exited"), "{stderr}");
}

/// A program whose file was replaced on disk after it started (an
/// upgrade): the probes go on the inode it runs, reached through
/// /proc/PID/map_files, and the report names its functions from it.
#[test]
fn program_replaced_after_start() {
    let statically = fixture_built_with("leaker", "leaker-glibc-static", "gcc", &["-static"]);
    let path =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixtures/leaker-replaced");
    std::fs::copy(&statically, &path).unwrap();
    let (mut leaker, pid) = start_waiting(Command::new(&path).arg("--wait"));
    // Rename something else over it, as package managers do.
    let other = path.with_extension("new");
    std::fs::copy("/bin/true", &other).unwrap();
    std::fs::rename(&other, &path).unwrap();
    let mut memleak = Running::spawn(Command::new(memleak_bin()).args([
        "-v",
        "-o",
        "0",
        "-T",
        "50",
        "-p",
        &pid.to_string(),
        "1",
    ]));
    memleak.wait_for(Duration::from_secs(30), |l| {
        l.starts_with("Attaching to pid")
    });
    leaker.send("go\n");
    leaker.wait_for(Duration::from_secs(30), |l| l == "done");
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("file deleted, read via map_files"),
        "{stderr}"
    );
    assert_leaks(&report, "leaker-replaced", leaks());
}

/// A process under another root with its own copy of libc (a container's
/// view), traced from outside: the probes go on the copy it really maps.
#[test]
fn process_under_another_root() {
    let root = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chroot");
    let _ = std::fs::remove_dir_all(&root);
    let libdir = root.join("lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&libdir).unwrap();
    std::fs::create_dir_all(root.join("lib64")).unwrap();
    // Copies, not links: other files (inodes) than the host's.
    std::fs::copy(
        "/lib64/ld-linux-x86-64.so.2",
        root.join("lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    std::fs::copy("/lib/x86_64-linux-gnu/libc.so.6", libdir.join("libc.so.6")).unwrap();
    std::fs::copy(fixture("leaker"), root.join("leaker")).unwrap();
    let mut chrooted = Command::new("chroot");
    chrooted.arg(&root).args(["/leaker", "--wait"]);
    let (_leaker, memleak) = trace_waiting(&mut chrooted, &["-v", "-o", "0", "-T", "50", "1"]);
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    let chosen = format!("memleak: allocator: {}", libdir.join("libc.so.6").display());
    assert!(
        stderr.contains(&chosen),
        "the chroot's libc, not the host's: {stderr}"
    );
    assert_all_leaks(&report);
}

/// memleak's resident memory, from /proc/PID/status (kB).
fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

/// Two threads churning malloc/free while memleak reports every second:
/// the final totals are exact, nothing is lost, and memleak's memory does
/// not grow with the number of calls traced.
#[test]
fn stress_two_threads_exact_and_flat() {
    // 10 million pairs in all, as the issue asks: about 90 s here.
    const PAIRS_PER_THREAD: &str = "5000000";
    let (_stress, mut memleak) = trace_waiting(
        Command::new(fixture("stress")).arg(PAIRS_PER_THREAD),
        &["-o", "0", "1"],
    );
    let pid = memleak.child.id();
    // Reports were printed while the churn ran; one more after it.
    memleak.wait_for(Duration::from_secs(30), |l| {
        l.contains("stacks with outstanding allocations:")
    });
    let rss_after_churn = rss_kb(pid, "VmRSS:");
    memleak.wait_for(Duration::from_secs(30), |l| {
        l.contains("stacks with outstanding allocations:")
    });
    memleak.wait_for(Duration::from_secs(30), |l| {
        l.contains("stacks with outstanding allocations:")
    });
    let peak = rss_kb(pid, "VmHWM:");
    let rss_later = rss_kb(pid, "VmRSS:");
    let (report, code, reports, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(reports.len() >= 3);
    let leak = report.expect("stress_leak");
    assert_eq!((leak.bytes, leak.count), (2 * 50 * 48, 100), "{leak:#?}");
    assert!(report.by_function("churn").is_none(), "{report:#?}");
    assert_eq!(report.losses, None, "nothing lost: {report:#?}");
    assert!(
        rss_later <= rss_after_churn + 512,
        "RSS grew: {rss_after_churn} kB -> {rss_later} kB"
    );
    assert!(peak < 16 * 1024, "peak RSS {peak} kB");
}

/// 2500 distinct stacks, enough to collide many times over in a stack map
/// keyed by a 32-bit hash: each is its own line with its own size, none is
/// lost (memleak keys stacks by a 64-bit hash of their addresses).
#[test]
fn distinct_stacks_never_merge() {
    let memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-o", "0", "-T", "10000", "-c"])
            .arg(fixture("stacks")),
    );
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}");
    let report = &parse_reports(&lines)[0];
    assert_eq!(report.losses, None);
    let mut sizes: Vec<u64> = report
        .stacks
        .iter()
        .filter(|s| s.frames.first().is_some_and(|f| f.starts_with("down_b+")))
        .map(|s| {
            assert_eq!(s.count, 1, "{s:#?}");
            // Frames: b x down_b, a x down_a, then main.
            let b = s.frames.iter().filter(|f| f.starts_with("down_b+")).count() as u64;
            let a = s.frames.iter().filter(|f| f.starts_with("down_a+")).count() as u64;
            assert_eq!(s.bytes, 1000 * a + b, "{s:#?}");
            s.bytes
        })
        .collect();
    sizes.sort();
    let expected: Vec<u64> = (1..=50)
        .flat_map(|a| (1..=50).map(move |b| 1000 * a + b))
        .collect();
    assert_eq!(sizes, expected);
}

/// A full table is reported, not silently wrong: the shown allocations are
/// the ones that fit, and the losses line says how many did not.
#[test]
fn full_maps_are_reported_as_losses() {
    let (_leaker, memleak) =
        trace_waiting_leaker(&["--max-allocs", "5", "-o", "0", "-T", "50", "1"], &[]);
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        report.stacks.iter().map(|s| s.count).sum::<u64>(),
        5,
        "{report:#?}"
    );
    let losses = report.losses.as_deref().unwrap_or_default();
    assert!(
        losses.starts_with("lost: ") && losses.contains(" allocations (allocs map full)"),
        "{report:#?}"
    );

    let (_leaker, memleak) = trace_waiting_leaker(
        &["--stack-storage-size", "2", "-o", "0", "-T", "50", "1"],
        &[],
    );
    let (report, _, _, _) = interrupt(memleak);
    let losses = report.losses.as_deref().unwrap_or_default();
    assert!(
        losses.contains(" stack captures (stack map full)"),
        "{report:#?}"
    );
    // Every leaked byte is still counted, under "[stack lost]" if need be.
    let total: u64 = report.stacks.iter().map(|s| s.bytes).sum();
    let expected: u64 = leaks().iter().map(|(_, b, _)| b).sum();
    assert_eq!(total, expected, "{report:#?}");
    assert!(
        report.stacks.iter().any(|s| s.frames == ["[stack lost]"]),
        "{report:#?}"
    );
}

/// exec replaces the traced process's memory: what it allocated before is
/// dropped (and said so), what the new program leaks is reported; a fork
/// is noted once.
#[test]
fn exec_drops_earlier_allocations_and_fork_is_noted() {
    let (_execer, memleak) = trace_waiting(
        &mut Command::new(fixture("execer")),
        &["-o", "0", "-T", "50", "1"],
    );
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(" forked; its children are not traced"),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(" executed ") && l.contains("execer; ")),
        "{stderr}"
    );
    assert!(
        report.by_function("leak_before_exec").is_none(),
        "{report:#?}"
    );
    let after = report.expect("leak_after_exec");
    assert_eq!((after.bytes, after.count), (1400, 7), "{after:#?}");
    assert!(
        report.stacks.iter().all(|s| s.bytes != 5000),
        "the child is not traced: {report:#?}"
    );
}

/// memleak itself in a container's PID namespace: the PIDs it is given and
/// sees are that namespace's, not the host's that BPF reports by default.
#[test]
fn memleak_inside_a_pid_namespace() {
    let leaker = fixture("leaker");
    let memleak = Running::spawn(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(memleak_bin())
            .args(["-o", "0", "-T", "50", "-c"])
            .arg(format!("{} --exit 3", leaker.display())),
    );
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(3), "{stderr}");
    assert_eq!(
        lines[0], "Attaching to pid 2, Ctrl+C to quit.",
        "PID 2 in the new namespace"
    );
    assert_all_leaks(&parse_reports(&lines)[0]);
}

/// memleak -o 0 FLAGS -c leaker, run to the end: (stdout, stderr).
fn leaker_report_as(flags: &[&str]) -> (String, String) {
    let out = Command::new(memleak_bin())
        .args(["-o", "0", "-T", "50"])
        .args(flags)
        .arg("-c")
        .arg(fixture("leaker"))
        .output()
        .expect("memleak runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

/// --folded: one `root;...;leaf BYTES` line per stack, nothing else on
/// stdout, exact bytes per leaking function, and inferno (installed by
/// .ci/run) draws a flame graph from it.
#[test]
fn folded_output_feeds_a_flame_graph() {
    let (folded, stderr) = leaker_report_as(&["--folded"]);
    assert!(
        stderr.contains("Attaching to pid"),
        "the banner goes to stderr: {stderr}"
    );
    for line in folded.lines() {
        let (stack, bytes) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        assert!(
            bytes.parse::<u64>().is_ok() && !stack.is_empty(),
            "{line:?}"
        );
    }
    for &(func, bytes, _) in leaks() {
        let want = format!(";main;{func} {bytes}");
        assert!(
            folded.lines().any(|l| l.ends_with(&want)),
            "{want} in:\n{folded}"
        );
    }
    let mut inferno = Command::new("inferno-flamegraph")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("inferno-flamegraph runs (.ci/run: cargo install inferno)");
    use std::io::Write;
    inferno
        .stdin
        .take()
        .unwrap()
        .write_all(folded.as_bytes())
        .unwrap();
    let svg = inferno.wait_with_output().unwrap();
    assert!(svg.status.success());
    let svg = String::from_utf8_lossy(&svg.stdout);
    assert!(
        svg.starts_with("<?xml") && svg.contains("<svg") && svg.contains("leak_mremap"),
        "{svg}"
    );
}

/// --json: one object per report that python3's json module reads, with
/// exact totals and the leaking function as each stack's first frame.
#[test]
fn json_output_parses() {
    let (json, stderr) = leaker_report_as(&["--json", "-v"]);
    assert_eq!(json.lines().count(), 1, "one report, one line: {json}");
    let checked = Command::new("python3")
        .args(["-m", "json.tool"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn();
    let mut checked = checked.expect("python3 runs");
    use std::io::Write;
    checked
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    assert!(
        checked.wait().unwrap().success(),
        "python3 -m json.tool rejects:\n{json}"
    );
    // Each stack as "first-frame-symbol bytes allocations", via python.
    let script = "import json,sys\nr=json.loads(sys.stdin.read())\nassert r['lost']=={}, r['lost']\nfor s in r['stacks']: print(s['frames'][0]['symbol'], s['bytes'], s['allocations'], s['frames'][0]['module'])";
    let mut py = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(json.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = String::from_utf8(out.stdout).unwrap();
    let rows = format!("{rows}(memleak stderr: {stderr})");
    for &(func, bytes, count) in leaks() {
        let want = format!("{func} {bytes} {count} leaker");
        assert!(rows.lines().any(|l| l == want), "{want} in:\n{rows}");
    }
}

/// The chain deep.c leaks from, innermost first, each with the call it
/// makes (whose line the frame must show); between compare and sort_pair
/// lie glibc's qsort frames.
const DEEP_CHAIN: &[(&str, &str)] = &[
    ("compare", "sink = malloc(48);"),
    ("sort_pair", "qsort(v, 2,"),
    ("level3", "sort_pair();"),
    ("level2", "level3();"),
    ("level1", "level2();"),
    ("main", "level1();"),
];

/// The line of deep.c holding `text`.
fn deep_line(text: &str) -> usize {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/deep.c"
    ))
    .unwrap();
    src.lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{text} in deep.c"))
        + 1
}

/// deep.c built with -O2 -fomit-frame-pointer, traced with `--unwind
/// unwind` ("": no --unwind, the default).
fn deep_report(unwind: &str) -> Report {
    let program = fixture_built_with("deep", "deep-nofp", "gcc", &["-O2", "-fomit-frame-pointer"]);
    let mut cmd = Command::new(memleak_bin());
    if !unwind.is_empty() {
        cmd.args(["--unwind", unwind]);
    }
    let memleak = Running::spawn(cmd.args(["-o", "0", "-c"]).arg(&program));
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let report = parse_reports(&lines)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no report: {lines:#?}"));
    // -O2 unrolls level1's loop: up to three call sites, one stack each.
    let from_compare: Vec<&Stack> = report
        .stacks
        .iter()
        .filter(|s| s.frames[0].starts_with("compare+0x"))
        .collect();
    let bytes: u64 = from_compare.iter().map(|s| s.bytes).sum();
    let count: u64 = from_compare.iter().map(|s| s.count).sum();
    assert_eq!((bytes, count), (144, 3), "{report:#?}\n{stderr}");
    report
}

/// Every stack from compare in `report` walks the whole chain up to main,
/// through qsort in libc, each frame with the file and line of its call.
fn assert_deep_chain(report: &Report) {
    for stack in report
        .stacks
        .iter()
        .filter(|s| s.frames[0].starts_with("compare+0x"))
    {
        let names: Vec<&str> = stack
            .frames
            .iter()
            .map(|f| f.split("+0x").next().unwrap_or(""))
            .collect();
        let mut at = 0;
        for (want, call) in DEEP_CHAIN {
            let found = names[at..]
                .iter()
                .position(|n| n == want)
                .unwrap_or_else(|| panic!("{want} after {at} in {names:?}"));
            at += found + 1;
            let line = format!(" [deep-nofp] deep.c:{}", deep_line(call));
            assert!(
                stack.frames[at - 1].ends_with(&line),
                "{want}: {line} in {:#?}",
                stack.frames
            );
        }
        assert_eq!(
            module_of(&stack.frames[1]),
            Some("libc.so.6"),
            "qsort's frames: {names:?}"
        );
        assert!(
            stack
                .frames
                .iter()
                .all(|f| matches!(module_of(f), Some("deep-nofp" | "libc.so.6"))),
            "{names:?}"
        );
    }
}

/// Code without frame pointers, through a libc callback: DWARF unwinding
/// gives the whole chain up to main (and on to _start), each frame with
/// the file and line of its call, and so does auto, where frame pointers
/// stop after one frame; frame-pointer walking still gives exact totals
/// and the leaking function.
#[test]
fn dwarf_unwinding_without_frame_pointers() {
    let report = deep_report("dwarf");
    assert_deep_chain(&report);
    assert_deep_chain(&deep_report("auto"));
    let frame_pointers = deep_report("fp");
    let fp_frames = frame_pointers
        .stacks
        .iter()
        .map(|s| s.frames.len())
        .max()
        .unwrap_or(0);
    let dwarf_frames = report
        .stacks
        .iter()
        .map(|s| s.frames.len())
        .min()
        .unwrap_or(0);
    assert!(
        fp_frames < dwarf_frames,
        "fp {fp_frames} frames, dwarf {dwarf_frames}"
    );
}

/// Stacks unwound in BPF from the objects' CFI (--unwind cfi): the whole
/// chain through qsort up to main, each frame with its file and line,
/// from a command whose libraries its loader maps after memleak attached
/// (they get their rows at its entry point), with nothing lost.
#[test]
fn cfi_stacks_are_complete_without_frame_pointers() {
    let report = deep_report("cfi");
    assert_deep_chain(&report);
    assert_eq!(report.losses, None);
}

/// The default (no --unwind flag) is complete without frame pointers:
/// the whole chain through qsort up to main, each frame with its file and
/// line, with nothing lost.
#[test]
fn default_stacks_are_complete_without_frame_pointers() {
    let report = deep_report("");
    assert_deep_chain(&report);
    assert_eq!(report.losses, None);
}

/// --unwind cfi by -p on ordinary code gives the exact totals and leaking
/// functions frame-pointer walking gives, with nothing lost.
#[test]
fn cfi_unwinding_keeps_exact_totals() {
    let (_leaker, memleak) =
        trace_waiting_leaker(&["--unwind", "cfi", "-o", "0", "-T", "50", "1"], &[]);
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert_all_leaks(&report);
    assert_eq!(report.losses, None, "{stderr}");
}

/// DWARF unwinding (and auto) of ordinary code (with frame pointers) by
/// -p gives the same exact totals and leaking functions as frame-pointer
/// walking.
#[test]
fn dwarf_unwinding_keeps_exact_totals() {
    for mode in ["dwarf", "auto"] {
        let (_leaker, memleak) =
            trace_waiting_leaker(&["--unwind", mode, "-o", "0", "-T", "50", "1"], &[]);
        let (report, code, _, stderr) = interrupt(memleak);
        assert_eq!(code, Some(0), "{mode}: {stderr}");
        // A busy machine may leave the consumer behind: then stacks come
        // from frame pointers, the report says so, and the totals stay
        // exact per function.
        assert_all_leaks_allowing_copy_fallbacks(&report);
    }
}

/// Stacks of a report as comparable text: bytes, count and frames.
fn stack_texts(report: &Report) -> Vec<String> {
    let mut all: Vec<String> = report
        .stacks
        .iter()
        .map(|s| format!("{} {} {}", s.bytes, s.count, s.frames.join(" | ")))
        .collect();
    all.sort();
    all
}

/// A stripped program traced with --raw (as on a device), then named
/// offline by `memleak symbolize --symfs DIR` from an unstripped copy,
/// gives the report that tracing the unstripped program gives.
#[test]
fn raw_report_symbolized_offline() {
    let base = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("raw");
    let _ = std::fs::remove_dir_all(&base);
    let (device, symfs) = (base.join("device"), base.join("symfs"));
    std::fs::create_dir_all(&device).unwrap();
    std::fs::create_dir_all(&symfs).unwrap();
    let unstripped = symfs.join("leaker");
    std::fs::copy(fixture("leaker"), &unstripped).unwrap();
    let stripped = device.join("leaker");
    assert!(Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&stripped)
        .arg(&unstripped)
        .status()
        .unwrap()
        .success());

    let trace = |program: &std::path::Path, extra: &[&str]| -> Vec<String> {
        let memleak = Running::spawn(
            Command::new(memleak_bin())
                .args(["-o", "0", "-T", "50"])
                .args(extra)
                .arg("-c")
                .arg(format!("{} --exit 3", program.display())),
        );
        let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
        assert_eq!(code, Some(3), "{stderr}");
        lines
    };
    let raw = trace(&stripped, &["--raw"]);
    assert!(
        raw.iter().any(|l| l.starts_with("\t\t[raw] 0x")),
        "{raw:#?}"
    );
    let raw_file = base.join("report.raw");
    std::fs::write(&raw_file, raw.join("\n") + "\n").unwrap();
    let out = Command::new(memleak_bin())
        .arg("symbolize")
        .arg("--symfs")
        .arg(&symfs)
        .arg(&raw_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let offline = parse_reports(&offline).pop().expect("a report");
    assert_all_leaks(&offline);

    let live = parse_reports(&trace(&unstripped, &[]))
        .pop()
        .expect("a report");
    assert_eq!(stack_texts(&offline), stack_texts(&live));

    // Live, with the copies at hand (--symfs on the device): the same.
    let symfs_arg = symfs.display().to_string();
    let named = parse_reports(&trace(&stripped, &["--symfs", &symfs_arg]))
        .pop()
        .expect("a report");
    assert_eq!(stack_texts(&named), stack_texts(&live));
}

/// A program that cannot be held at its entry point (its e_entry lies in
/// no segment, so no probe can go there) runs unheld, and the report says
/// so on its `lost:` line: its first stacks may stop short.
#[test]
fn a_program_not_held_at_its_entry_point_is_counted() {
    let program = fixture_built_with("deep", "deep-bad-entry", "gcc", &["-O2"]);
    let mut bytes = std::fs::read(&program).unwrap();
    // e_entry of an ELF64 header, at offset 24: an address far above any
    // segment of a small program.
    bytes[24..32].copy_from_slice(&0x7000_0000_0000u64.to_le_bytes());
    let patched = program.with_file_name("deep-bad-entry-patched");
    std::fs::write(&patched, &bytes).unwrap();
    std::fs::set_permissions(
        &patched,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-o", "0", "-c"])
            .arg(&patched),
    );
    let (_, lines, stderr) = memleak.finish(Duration::from_secs(60));
    let losses: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("lost: "))
        .cloned()
        .collect();
    assert_eq!(
        losses,
        ["lost: 1 programs not held at their entry point (their first stacks may stop short)"],
        "{lines:#?}\n{stderr}"
    );
}
