//! End-to-end: `--pprof FILE` read by `go tool pprof` (Debian's golang-go),
//! the --raw profile of a stripped program named offline by `memleak
//! symbolize`, and the file replaced atomically while a reader loops.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("pprof")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `go tool pprof -symbolize=none ARGS FILE`: its stdout. Go's caches go
/// under the target directory, so it runs without a usable HOME.
fn go_pprof(args: &[&str], file: &Path) -> String {
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-home");
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof", "-symbolize=none"])
        .args(args)
        .arg(file)
        .env("HOME", &home)
        .env("GOCACHE", home.join("cache"))
        .env("GOPATH", home.join("gopath"))
        .env("PPROF_TMPDIR", &home)
        .output()
        .expect("go tool pprof runs (Debian package golang-go)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `-top` rows: function -> (flat, cum), with the unit suffix (B) dropped.
fn top_rows(top: &str) -> HashMap<String, (u64, u64)> {
    let number = |s: &str| -> u64 {
        s.trim_end_matches('B')
            .parse()
            .unwrap_or_else(|_| panic!("a whole number in -top: {s:?} in\n{top}"))
    };
    top.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat  flat%"))
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert!(cols.len() >= 6, "-top row {l:?}");
            (cols[5..].join(" "), (number(cols[0]), number(cols[3])))
        })
        .collect()
}

/// The table of `-top`, from its "Showing nodes" line on: the part that
/// does not name the file, the command line or the time.
fn top_table(top: &str) -> String {
    let start = top.find("Showing nodes").expect("a -top table");
    top[start..].to_string()
}

const TOP_BYTES: &[&str] = &[
    "-top",
    "-nodefraction=0",
    "-unit=byte",
    "-sample_index=inuse_space",
];

/// The gzip container as the tests see it, independently of memleak's
/// reader: stored blocks only (what memleak writes), CRC-32 and length
/// checked. A partly written file fails here.
fn gunzip_stored(data: &[u8]) -> Result<Vec<u8>, String> {
    if data.len() < 18 || data[..4] != [0x1f, 0x8b, 8, 0] {
        return Err(format!("not a gzip header ({} bytes)", data.len()));
    }
    let mut pos = 10;
    let mut out = Vec::new();
    loop {
        let header = *data.get(pos).ok_or("truncated")?;
        if header & 6 != 0 {
            return Err("a compressed block".into());
        }
        let b = data.get(pos + 1..pos + 5).ok_or("truncated")?;
        let len = u16::from_le_bytes([b[0], b[1]]) as usize;
        out.extend_from_slice(data.get(pos + 5..pos + 5 + len).ok_or("truncated")?);
        pos += 5 + len;
        if header & 1 != 0 {
            break;
        }
    }
    let t = data.get(pos..pos + 8).ok_or("no trailer")?;
    if pos + 8 != data.len() {
        return Err("bytes after the trailer".into());
    }
    let mut crc = !0u32;
    for &byte in &out {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                0xedb8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
        }
    }
    if u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != !crc
        || u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as usize != out.len()
    {
        return Err("CRC or length mismatch".into());
    }
    Ok(out)
}

/// Walks the top-level protobuf fields of a Profile to the exact end;
/// returns how many samples (field 2) it has.
fn count_samples(msg: &[u8]) -> Result<usize, String> {
    let varint = |pos: &mut usize| -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *msg.get(*pos).ok_or("truncated varint")?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("long varint".into())
    };
    let (mut pos, mut samples) = (0, 0);
    while pos < msg.len() {
        let key = varint(&mut pos)?;
        match key & 7 {
            0 => {
                varint(&mut pos)?;
            }
            2 => {
                let len = varint(&mut pos)? as usize;
                pos = pos.checked_add(len).ok_or("length")?;
                if pos > msg.len() {
                    return Err("truncated field".into());
                }
            }
            w => return Err(format!("wire type {w}")),
        }
        if key >> 3 == 2 {
            samples += 1;
        }
    }
    Ok(samples)
}

/// The leaker's profile gives go tool pprof exactly the classic report's
/// bytes and counts per leaking function, and its source lines.
#[test]
fn pprof_of_leaker_matches_the_classic_report() {
    let dir = scratch("leaker");
    let file = dir.join("leaks.pb.gz");
    let file_arg = file.display().to_string();
    let (_leaker, memleak) =
        trace_waiting_leaker(&["-o", "0", "-T", "50", "--pprof", &file_arg], &[]);
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    // The final report and the file were written from the same totals.
    assert_all_leaks(&report);
    let data = std::fs::read(&file).unwrap();
    assert_eq!(
        count_samples(&gunzip_stored(&data).unwrap()).unwrap(),
        report.stacks.len(),
        "a sample per stack"
    );

    let bytes = top_rows(&go_pprof(TOP_BYTES, &file));
    let objects = top_rows(&go_pprof(
        &["-top", "-nodefraction=0", "-sample_index=inuse_objects"],
        &file,
    ));
    let traces = go_pprof(&["-traces", "-lines"], &file);
    for &(func, expected_bytes, expected_count) in leaks() {
        let stack = report.expect(func);
        assert_eq!(
            bytes.get(func),
            Some(&(expected_bytes, expected_bytes)),
            "{func} in -top inuse_space: {bytes:#?}"
        );
        assert_eq!(stack.bytes, expected_bytes);
        assert_eq!(
            objects.get(func),
            Some(&(expected_count, expected_count)),
            "{func} in -top inuse_objects: {objects:#?}"
        );
        // `leak_malloc+0x16 [leaker] leaker.c:43` -> `leak_malloc .../leaker.c:43`.
        let line = stack.frames[0].rsplit(' ').next().unwrap();
        assert!(line.starts_with("leaker.c:"), "{stack:#?}");
        let shown = format!("{func} {}", env!("CARGO_MANIFEST_DIR"));
        assert!(
            traces
                .lines()
                .any(|l| l.contains(&shown) && l.ends_with(&format!("/tests/fixtures/{line}"))),
            "{func} at {line} in -traces:\n{traces}"
        );
    }
    let total: u64 = leaks().iter().map(|l| l.1).sum();
    assert_eq!(bytes.get("main").map(|r| r.1), Some(total), "{bytes:#?}");
    // The header shows the command line and that nothing was lost.
    let top = go_pprof(TOP_BYTES, &file);
    assert!(top.contains("--pprof"), "{top}");
    assert!(top.contains("lost: nothing"), "{top}");
    assert!(top.contains("kernel: Linux "), "{top}");
}

/// A stripped program traced with --raw to a profile (as on a device),
/// named by `memleak symbolize --symfs DIR` from an unstripped copy, gives
/// the -top of the unstripped program traced directly.
#[test]
fn raw_pprof_symbolized_offline_matches_unstripped() {
    let base = scratch("raw");
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

    let trace = |program: &Path, file: &Path, extra: &[&str]| {
        let memleak = Running::spawn(
            Command::new(memleak_bin())
                .args(["-o", "0", "--pprof"])
                .arg(file)
                .args(extra)
                .arg("-c")
                .arg(format!("{} --exit 3", program.display())),
        );
        let (code, _, stderr) = memleak.finish(Duration::from_secs(60));
        assert_eq!(code, Some(3), "{stderr}");
    };
    let raw = base.join("raw.pb.gz");
    trace(&stripped, &raw, &["--raw"]);
    let raw_message = gunzip_stored(&std::fs::read(&raw).unwrap()).unwrap();
    let has = |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        !has(&raw_message, "leak_malloc"),
        "a raw profile names nothing"
    );
    assert!(has(&raw_message, &stripped.display().to_string()));

    let symbolize = |input: &Path| {
        Command::new(memleak_bin())
            .arg("symbolize")
            .arg("--symfs")
            .arg(&symfs)
            .arg(input)
            .output()
            .unwrap()
    };
    let out = symbolize(&raw);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let named = base.join("named.pb.gz");
    std::fs::write(&named, &out.stdout).unwrap();

    let live = base.join("live.pb.gz");
    trace(&unstripped, &live, &[]);
    let offline_top = go_pprof(TOP_BYTES, &named);
    assert_eq!(
        top_table(&offline_top),
        top_table(&go_pprof(TOP_BYTES, &live))
    );
    let rows = top_rows(&offline_top);
    for &(func, bytes, _) in leaks() {
        assert_eq!(rows.get(func).map(|r| r.0), Some(bytes), "{func}");
    }

    // The plain (not gzipped) message is read too, and named the same.
    let plain = base.join("raw.pb");
    std::fs::write(&plain, &raw_message).unwrap();
    assert_eq!(symbolize(&plain).stdout, out.stdout);
    // Deflate-compressed input: one line saying what to do.
    let compressed = base.join("compressed.pb.gz");
    let gz = Command::new("gzip").arg("-c").arg(&plain).output().unwrap();
    std::fs::write(&compressed, gz.stdout).unwrap();
    let out = symbolize(&compressed);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("memleak: ") && err.contains("gunzip") && err.lines().count() == 1,
        "{err}"
    );
}

/// A reader looping over the file while reports replace it every second
/// never sees a partial file: each read is a whole gzip member whose CRC
/// and length match and whose profile parses to its end, with every one
/// of the 2500 stacks of the `stacks` fixture (a profile of some hundred
/// KB, written in many pages).
#[test]
fn pprof_file_is_replaced_atomically() {
    let dir = scratch("atomic");
    let file = dir.join("p.pb.gz");
    let mut memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-o", "0", "--pprof"])
            .arg(&file)
            .arg("-c")
            .arg(format!("{} --hold", fixture("stacks").display()))
            .arg("1"),
    );
    memleak.wait_for(Duration::from_secs(30), |l| l.starts_with("Attaching"));
    // The command leaks, then says "done" (its stdout is memleak's); the
    // second report after that has written a profile with every stack.
    let header = |l: &str| l.contains("stacks with outstanding allocations:");
    memleak.wait_for(Duration::from_secs(60), |l| l == "done");
    memleak.wait_for(Duration::from_secs(60), header);
    memleak.wait_for(Duration::from_secs(60), header);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, file) = (stop.clone(), file.clone());
        std::thread::spawn(move || {
            let (mut reads, mut versions) = (0u64, std::collections::HashSet::new());
            let mut seen_file = false;
            while !stop.load(Ordering::Relaxed) {
                match std::fs::read(&file) {
                    Ok(data) => {
                        seen_file = true;
                        let msg =
                            gunzip_stored(&data).unwrap_or_else(|e| panic!("read {reads}: {e}"));
                        let samples =
                            count_samples(&msg).unwrap_or_else(|e| panic!("read {reads}: {e}"));
                        assert!(samples >= 2500, "read {reads}: {samples} samples");
                        versions.insert(data);
                        reads += 1;
                    }
                    Err(e) if !seen_file && e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("read {reads}: {e} (the file must always be there)"),
                }
            }
            (reads, versions.len())
        })
    };
    // Five more replacements while the reader runs.
    for _ in 0..5 {
        memleak.wait_for(Duration::from_secs(60), header);
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, versions) = reader.join().expect("the reader saw only whole files");
    assert!(reads >= 20, "{reads} reads");
    assert!(
        versions >= 2,
        "the reader saw the file replaced ({versions})"
    );
    // Closing stdin ends the held command.
    let (code, _, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let tmp_left = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "p.pb.gz")
        .count();
    assert_eq!(tmp_left, 0, "no temporary file left behind");
}

/// A directory that does not exist is one clear line at start.
#[test]
fn pprof_in_a_missing_directory_is_refused() {
    let out = Command::new(memleak_bin())
        .args(["--pprof", "/no/such/dir/p.pb.gz", "-c", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        err.trim_end(),
        "memleak: --pprof /no/such/dir/p.pb.gz: no directory /no/such/dir"
    );
}

/// Kernel mode: the profile counts the pipe buffer arrays a program holds
/// exactly as the report written with it does, and every location lies in
/// one mapping, the kernel.
#[test]
fn kernel_mode_pprof_has_the_kernel_as_one_mapping() {
    const PIPES: u64 = 1000;
    let dir = scratch("kernel");
    let file = dir.join("kernel.pb.gz");
    let mut holder = Running::spawn(Command::new(fixture("kholder")).arg(PIPES.to_string()));
    holder.wait_for(Duration::from_secs(10), |l| l.starts_with("ready "));
    let mut memleak = Running::spawn(
        Command::new(memleak_bin())
            // Only the 1024-byte pipe buffer arrays: keeps reports small.
            .args([
                "-z", "1024", "-Z", "1024", "-o", "0", "-T", "10000", "--pprof",
            ])
            .arg(&file)
            .arg("1"),
    );
    memleak.wait_for(Duration::from_secs(30), |l| {
        l.starts_with("Attaching to kernel allocators")
    });
    holder.send("go\n");
    holder.wait_for(Duration::from_secs(30), |l| l == "held");
    let header = |l: &str| l.contains("stacks with outstanding allocations:");
    memleak.wait_for(Duration::from_secs(30), header);
    memleak.wait_for(Duration::from_secs(30), header);
    memleak.signal(libc::SIGINT);
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    // The final report and the last profile come from the same totals.
    let last = parse_reports(&lines).pop().expect("a final report");
    let held: u64 = last
        .stacks
        .iter()
        .filter(|s| {
            s.frames.iter().any(|f| f.starts_with("alloc_pipe_info+0x"))
                && s.frames
                    .iter()
                    .any(|f| f.starts_with("create_pipe_files+0x"))
        })
        .map(|s| s.count)
        .sum();
    // Other processes make pipes too: bounded, as in tests/kernel_mode.rs.
    assert!((PIPES..=PIPES + 30).contains(&held), "{held}: {last:#?}");

    let top = go_pprof(
        &[
            "-top",
            "-nodefraction=0",
            "-sample_index=inuse_objects",
            "-focus=^create_pipe_files$",
        ],
        &file,
    );
    assert_eq!(
        top_rows(&top).get("alloc_pipe_info").map(|r| r.1),
        Some(held),
        "{top}"
    );
    let raw = go_pprof(&["-raw"], &file);
    let mappings: Vec<&str> = raw
        .lines()
        .skip_while(|l| *l != "Mappings")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(mappings.len(), 1, "{raw}");
    assert!(mappings[0].contains(" [kernel.kallsyms]"), "{raw}");
    assert!(raw.contains("Comment: target: the kernel"), "{raw}");
    holder.send("go\n");
}

/// `grab [inliner] inliner.c:15 (inlined)` above `leak_inlined+0x25`:
/// in the profile, one location with two lines, the inlined function
/// first, as pprof models inlining.
#[test]
fn inlined_frames_are_lines_of_one_location() {
    let dir = scratch("inlined");
    let file = dir.join("inlined.pb.gz");
    let memleak = Running::spawn(
        Command::new(memleak_bin())
            .args(["-o", "0", "--pprof"])
            .arg(&file)
            .arg("-c")
            .arg(fixture("inliner")),
    );
    let (code, lines, stderr) = memleak.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let report = parse_reports(&lines).pop().expect("a report");
    let stack = report
        .stacks
        .iter()
        .find(|s| s.frames[0].starts_with("grab [inliner] "))
        .unwrap_or_else(|| panic!("no inlined frame: {report:#?}"));
    assert_eq!((stack.bytes, stack.count), (256, 4), "{stack:#?}");
    assert!(stack.frames[0].ends_with(" (inlined)"), "{stack:#?}");
    assert!(stack.frames[1].starts_with("leak_inlined+0x"), "{stack:#?}");
    // `... inliner.c:15 (inlined)` -> `inliner.c:15`.
    let source = |frame: &str| {
        let at = frame.find("inliner.c:").expect("a source line");
        frame[at..].split(' ').next().unwrap().to_string()
    };
    let (inner, outer) = (source(&stack.frames[0]), source(&stack.frames[1]));

    let raw = go_pprof(&["-raw"], &file);
    let locations: Vec<&str> = raw
        .lines()
        .skip_while(|l| *l != "Locations")
        .skip(1)
        .take_while(|l| *l != "Mappings")
        .collect();
    let i = locations
        .iter()
        .position(|l| l.contains(" grab ") && l.ends_with(&format!("/{inner} s=0")))
        .unwrap_or_else(|| panic!("grab at {inner}:\n{raw}"));
    // `     1: 0x562d9c13915e M=1 grab .../inliner.c:15 s=0`: a location.
    assert!(
        locations[i]
            .trim_start()
            .split(':')
            .next()
            .unwrap()
            .parse::<u64>()
            .is_ok(),
        "{raw}"
    );
    // Its next line, not a location of its own: the caller.
    let next = locations[i + 1].trim_start();
    assert!(
        next.starts_with("leak_inlined ") && next.ends_with(&format!("/{outer} s=0")),
        "{raw}"
    );
}

/// A report that cannot write the file says so on stderr and the run goes
/// on: the next report writes it again.
#[test]
fn pprof_write_failure_is_said_and_retried() {
    let dir = scratch("retry");
    let _ = std::fs::remove_dir_all(dir.with_extension("gone"));
    let file = dir.join("p.pb.gz");
    let file_arg = file.display().to_string();
    let (_leaker, mut memleak) =
        trace_waiting_leaker(&["-o", "0", "-T", "50", "--pprof", &file_arg, "1"], &[]);
    let header = |l: &str| l.contains("stacks with outstanding allocations:");
    memleak.wait_for(Duration::from_secs(30), header);
    memleak.wait_for(Duration::from_secs(30), header);
    assert!(file.exists());
    // Moved away whole (a report may be writing into it right now).
    std::fs::rename(&dir, dir.with_extension("gone")).unwrap();
    memleak.wait_for(Duration::from_secs(30), header);
    memleak.wait_for(Duration::from_secs(30), header);
    std::fs::create_dir_all(&dir).unwrap();
    memleak.wait_for(Duration::from_secs(30), header);
    memleak.wait_for(Duration::from_secs(30), header);
    let (report, code, _, stderr) = interrupt(memleak);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&format!("memleak: cannot write --pprof {file_arg}: "))),
        "{stderr}"
    );
    assert_all_leaks(&report);
    let top = top_rows(&go_pprof(TOP_BYTES, &file));
    assert_eq!(top.get("leak_malloc"), Some(&(1000, 1000)), "{top:#?}");
}
