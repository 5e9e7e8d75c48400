//! Compiles the BPF programs in bpf/ with clang for the target's
//! architecture; src/bpf embeds the object with include_bytes!.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    // Without the "tracer" feature (the fuzz crate's build) there are no
    // BPF programs to compile and no binary to name.
    if env::var_os("CARGO_FEATURE_TRACER").is_none() {
        return;
    }
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // libbpf-sys installs libbpf's headers (bpf_helpers.h, bpf_tracing.h)
    // and exports their location because its manifest says links = "bpf".
    let libbpf_include = env::var("DEP_BPF_INCLUDE").expect("libbpf-sys exports DEP_BPF_INCLUDE");
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("memleak's BPF programs support x86_64 and aarch64, not {other}"),
        Err(_) => panic!("cargo sets CARGO_CFG_TARGET_ARCH"),
    };
    let clang = find_clang();
    let src = manifest.join("bpf/memleak.bpf.c");
    let obj = out.join("memleak.bpf.o");
    let status = Command::new(&clang)
        .args([
            "-target", "bpf", "-O2", "-g", "-Wall", "-Werror", "-mcpu=v3",
        ])
        .arg(format!("-D__TARGET_ARCH_{arch}"))
        .arg("-I")
        .arg(manifest.join("vendor"))
        .arg("-I")
        .arg(manifest.join("bpf"))
        .arg("-I")
        .arg(&libbpf_include)
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {clang}: {e} (install clang, or set CLANG)"));
    assert!(
        status.success(),
        "{clang} failed to compile {}",
        src.display()
    );
    // DWARF is only for humans; libbpf needs the .BTF sections, which
    // `strip -g` keeps. The relocations of .BTF and .BTF.ext (a quarter of
    // the object) are for linkers: libbpf skips relocation sections of
    // anything but code. Optional: without llvm-strip the binary is larger.
    let strip = clang.replacen("clang", "llvm-strip", 1);
    let _ = Command::new(&strip)
        .args([
            "-g",
            "-R",
            ".rel.BTF",
            "-R",
            ".rel.BTF.ext",
            "-R",
            ".llvm_addrsig",
        ])
        .arg(&obj)
        .status();
    compress(&obj, &out.join("memleak.bpf.o.z"));
    for f in ["bpf/memleak.bpf.c", "bpf/memleak.h", "vendor/vmlinux.h"] {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    build_identity();
}

/// The object as embedded: its length (u32, little endian), then the object
/// in zlib format. Embedded as is it was most of the static binaries' 1.5
/// MiB budget's margin; zlib is linked anyway (libbpf reads config.gz).
fn compress(obj: &std::path::Path, out: &std::path::Path) {
    let data = std::fs::read(obj).unwrap_or_else(|e| panic!("cannot read {}: {e}", obj.display()));
    let len = u32::try_from(data.len()).expect("a BPF object under 4 GiB");
    let mut z = len.to_le_bytes().to_vec();
    z.extend(miniz_oxide::deflate::compress_to_vec_zlib(&data, 10));
    std::fs::write(out, z).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}

/// What `memleak --version` says beyond the version: the commit, the
/// architecture and whether the binary is static, so that someone on a
/// board's serial console can tell which of several copies they have.
fn build_identity() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    // A release tarball has no .git: say so rather than fail the build.
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MEMLEAK_COMMIT={commit}");
    // HEAD's reflog changes with every commit and checkout (also in a
    // worktree, whose git directory is elsewhere), so the commit is fresh.
    if let Some(log) = git(&["rev-parse", "--git-path", "logs/HEAD"]) {
        println!("cargo:rerun-if-changed={log}");
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let linking = if features.split(',').any(|f| f == "crt-static") {
        "static"
    } else {
        "dynamic"
    };
    let libc = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    println!("cargo:rustc-env=MEMLEAK_TARGET={arch}, {linking}, {libc}");
}

/// $CLANG, else the newest versioned clang on PATH, else plain `clang`.
fn find_clang() -> String {
    if let Ok(clang) = env::var("CLANG") {
        return clang;
    }
    let works = |name: &str| {
        Command::new(name)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    (14..=21)
        .rev()
        .map(|v| format!("clang-{v}"))
        .find(|name| works(name))
        .unwrap_or_else(|| "clang".to_string())
}
