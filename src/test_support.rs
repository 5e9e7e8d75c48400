//! What the unit tests share to build the small C programs they read:
//! the ELF, allocator and symbolization layers are tested against real
//! compiler and linker output, not hand-made images only, so every test
//! module needs a scratch directory and a compiler call. One copy here
//! keeps them alike (argument order, cleanup, the compiler's own words
//! on failure).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory under the system's temporary directory, removed when
/// dropped, also when the test panics. Its name holds the process ID and a
/// counter besides the caller's name: tests run in parallel threads and
/// test binaries in parallel processes, and none may see another's files.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("memleak-test-{}-{name}-{n}", std::process::id()));
        // A crashed run of a process with the same ID may have left it.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `src` to `dir/name.c` and builds `dir/name` with `cc src -o out
/// flags`, flags last so that `-l` libraries follow the code using them.
/// Returns the output's path as text, which is what the allocator layer
/// under test takes (its paths come from /proc); every other caller
/// takes it as a path. Panics with the compiler's stderr when it fails.
pub(crate) fn compile(cc: &str, dir: &TempDir, name: &str, src: &str, flags: &[&str]) -> String {
    build(cc, dir, name, src, flags).unwrap_or_else(|err| panic!("{cc} {name}: {err}"))
}

/// `compile` for a toolchain this machine may lack (a cross compiler, gcc
/// without 32-bit support): None when `cc` is missing or fails, so that
/// the caller can skip what it cannot build here and say so.
pub(crate) fn try_compile(
    cc: &str,
    dir: &TempDir,
    name: &str,
    src: &str,
    flags: &[&str],
) -> Option<String> {
    build(cc, dir, name, src, flags).ok()
}

fn build(cc: &str, dir: &TempDir, name: &str, src: &str, flags: &[&str]) -> Result<String, String> {
    let c = dir.0.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let out = dir.0.join(name).to_str().unwrap().to_string();
    let res = Command::new(cc)
        .arg(&c)
        .arg("-o")
        .arg(&out)
        .args(flags)
        .output()
        .map_err(|err| err.to_string())?;
    if !res.status.success() {
        return Err(String::from_utf8_lossy(&res.stderr).into_owned());
    }
    Ok(out)
}

/// Runs a tool the tests prepare files with (objcopy, strip) and insists
/// that it succeeded: a failed step would otherwise surface later as a
/// puzzling assertion about the file it should have made.
pub(crate) fn run(cmd: &mut Command) {
    let status = cmd.status().expect("gcc and binutils are installed");
    assert!(status.success(), "{cmd:?}");
}
