//! Replays every saved input under regressions/<target>/ (and the seed
//! corpora) through the fuzz targets' bodies: a crash found once stays
//! fixed. `cargo test` in tests/fuzz runs it.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in ["regressions", "corpus"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        let mut files: Vec<_> = rd.filter_map(|e| Some(e.ok()?.path())).collect();
        files.sort();
        for f in files.iter().filter(|f| f.is_file()) {
            if f.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                continue;
            }
            let data = std::fs::read(f).unwrap();
            eprintln!("replaying {}", f.display());
            check(&data);
            n += 1;
        }
    }
    eprintln!("{target}: {n} inputs replayed");
}

#[test]
fn proc_maps() {
    replay("proc_maps", memleak_fuzz::check_proc_maps);
}

#[test]
fn elf() {
    replay("elf", memleak_fuzz::check_elf);
}

#[test]
fn kallsyms() {
    replay("kallsyms", memleak_fuzz::check_kallsyms);
}
