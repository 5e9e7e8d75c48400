//! End-to-end: a library loaded, called and unloaded between two of
//! memleak's looks at /proc/PID/maps (0.5 s apart) still names its frames,
//! its file deleted while it was loaded: memleak holds the process at
//! dlclose while it reads the maps and the symbols. Exact totals.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// The library dlcloser loads (tests/fixtures/plugin.c).
fn plugin() -> std::path::PathBuf {
    fixture_built_with("plugin", "libplugin.so", "gcc", &["-shared", "-fPIC"])
}

/// The stack from leak_in_plugin: every block (3 per load) with its exact
/// total, named in the unloaded library and called from `caller` in
/// dlcloser.
fn assert_plugin_leak(report: &Report, loads: u64, caller: &str) {
    let leak = report.expect("leak_in_plugin");
    assert_eq!(
        (leak.bytes, leak.count),
        (300 * loads, 3 * loads),
        "{report:#?}"
    );
    assert_eq!(
        module_of(&leak.frames[0]),
        Some("libplugin.so"),
        "{leak:#?}"
    );
    assert!(
        leak.frames[1].starts_with(&format!("{caller}+0x"))
            && module_of(&leak.frames[1]) == Some("dlcloser"),
        "{leak:#?}"
    );
    assert!(report.losses.is_none(), "{report:#?}");
}

/// -c: the command loads and unloads the library at once, before memleak's
/// first look at its maps; with `args`, in a thread and repeatedly.
fn by_command(args: &[&str]) -> Report {
    let mut memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-o", "0", "-T", "50", "-c"])
            .arg(format!(
                "{} {} {}",
                fixture("dlcloser").display(),
                plugin().display(),
                args.join(" ")
            )),
    );
    memleak.wait_for(Duration::from_secs(60), |l| l == "done");
    // Closing stdin ends the command, and memleak with it.
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let reports = parse_reports(&lines);
    reports.last().cloned().expect("a report")
}

#[test]
fn unloaded_library_is_named_by_command() {
    assert_plugin_leak(&by_command(&[]), 1, "load_leak_unload");
}

/// From a thread that is not the one memleak ptraces, 20 times.
#[test]
fn unloaded_library_is_named_by_command_from_a_thread() {
    assert_plugin_leak(
        &by_command(&["--thread", "--repeat=20"]),
        20,
        "load_leak_unload",
    );
}

/// -p, attached before the load: the process is held and let go, and not
/// left stopped after memleak ends.
fn by_pid(args: &[&str]) {
    let mut cmd = Command::new(fixture("dlcloser"));
    cmd.arg(plugin()).arg("--wait").args(args);
    let (dlcloser, memleak) = trace_waiting(&mut cmd, &["-o", "0", "-T", "50"]);
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    let loads = args
        .iter()
        .find_map(|a| a.strip_prefix("--repeat="))
        .map_or(1, |n| n.parse().unwrap());
    assert_plugin_leak(&report, loads, "load_leak_unload");
    let pid = dlcloser.child.id();
    // Waiting on its stdin: sleeping, never stopped.
    assert_eq!(state_of(pid), Some('S'), "dlcloser {pid} after memleak");
}

#[test]
fn unloaded_library_is_named_by_pid() {
    by_pid(&[]);
}

#[test]
fn unloaded_library_is_named_by_pid_from_a_thread() {
    by_pid(&["--thread", "--repeat=20"]);
}
