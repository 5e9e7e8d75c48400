//! Tests against real files of this machine (glibc, gcc, musl-gcc when
//! installed) and hand-made ELF images.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::*;
use crate::process::maps as proc_maps;
use crate::test_support::{compile, TempDir};

const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
const MUSL_GCC: &str = "/usr/bin/musl-gcc";

const PROG: &str = "#include <stdlib.h>\n#include <stdio.h>\n#include <unistd.h>\n\
    int main(int argc, char **argv) { void *p = malloc(10); free(p);\n\
    if (argc > 1) { puts(\"ready\"); fflush(stdout); pause(); } return 0; }\n";

/// Starts `exe wait` and returns once it has printed "ready", so its maps
/// are those of the new program, not of the pre-exec child.
struct Running(Child);

impl Running {
    fn start(exe: &str) -> Running {
        let mut child = Command::new(exe)
            .arg("wait")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        Running(child)
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn off(offsets: &[(Func, u64)], f: Func) -> Option<u64> {
    offsets.iter().find(|(g, _)| *g == f).map(|(_, o)| *o)
}

/// Func's order is the BPF side's `enum func` (the attach cookie and the
/// -t event carry the number).
#[test]
fn func_order_matches_bpf_enum() {
    let header = include_str!("../../bpf/memleak.h");
    let start = header.find("enum func {").unwrap();
    let body = &header[start..start + header[start..].find('}').unwrap()];
    let names: Vec<String> = body["enum func {".len()..]
        .split(',')
        .map(|n| {
            n.trim()
                .trim_start_matches("F_")
                .to_lowercase()
                .replace('_', "")
        })
        .filter(|n| !n.is_empty())
        .collect();
    let rust: Vec<String> = Func::ALL
        .iter()
        .map(|f| format!("{f:?}").to_lowercase())
        .collect();
    assert_eq!(&names[..rust.len()], &rust[..]);
    assert_eq!(&names[rust.len()..], ["kernel", "nrfuncs"]);
    for (i, f) in Func::ALL.iter().enumerate() {
        assert_eq!(*f as u32, i as u32);
    }
}

#[test]
fn symbols_map_to_calling_shapes() {
    assert_eq!(
        Func::from_symbol("posix_memalign"),
        Some(Func::PosixMemalign)
    );
    assert_eq!(Func::from_symbol("sdallocx"), Some(Func::Dallocx));
    assert_eq!(
        Func::from_symbol("free_aligned_sized"),
        Some(Func::FreeSized)
    );
    assert_eq!(
        Func::from_symbol("_ZnamSt11align_val_tRKSt9nothrow_t"),
        Some(Func::New)
    );
    assert_eq!(Func::from_symbol("_ZdlPvm"), Some(Func::Delete));
    assert_eq!(Func::from_symbol("malloc_usable_size"), None);
    assert_eq!(Func::from_symbol("je_malloc"), None);
    assert_eq!(Func::from_prefixed("je_", "malloc"), Some(Func::Malloc));
    assert_eq!(
        Func::from_prefixed("_rjem_", "sdallocx"),
        Some(Func::Dallocx)
    );
    assert_eq!(Func::from_prefixed("mi_", "new_n"), Some(Func::Calloc));
    assert_eq!(Func::from_prefixed("mi_", "strdup"), Some(Func::Untracked));
    assert_eq!(Func::from_prefixed("mi_", "free_size"), Some(Func::Free));
    // Mangled names never carry a C prefix.
    assert_eq!(Func::from_prefixed("je_", "_Znwm"), None);
    assert!(!Func::Delete.has_return() && Func::New.has_return() && Func::Xallocx.has_return());
}

// The test process must itself run on glibc (not a musl static build).
#[cfg(target_env = "gnu")]
#[test]
fn self_process_uses_glibc_and_offsets_match_live_addresses() {
    let pid = std::process::id();
    let a = for_process(pid, None).unwrap();
    assert_eq!(a.display_path, LIBC, "{a:?}");
    assert_eq!(a.attach_path, format!("/proc/{pid}/root{LIBC}"));
    assert!(
        a.reason.contains(&format!("mapped by pid {pid}")),
        "{}",
        a.reason
    );
    assert!(a.reason.contains("lookup order"), "{}", a.reason);

    let maps = proc_maps::parse(&fs::read_to_string("/proc/self/maps").unwrap());
    let text = maps
        .iter()
        .find(|e| e.path == LIBC && e.is_executable())
        .unwrap();
    let bias = text.start - text.offset;
    let live: [(Func, usize); 4] = [
        (Func::Malloc, libc::malloc as *const () as usize),
        (Func::Free, libc::free as *const () as usize),
        (Func::Calloc, libc::calloc as *const () as usize),
        (Func::Realloc, libc::realloc as *const () as usize),
    ];
    for (f, addr) in live {
        let o = a.offset(f).unwrap_or_else(|| panic!("no {}", f.name()));
        assert_eq!(bias + o, addr as u64, "{}", f.name());
    }
}

#[test]
fn glibc_defines_all_thirteen() {
    let bytes = fs::read(LIBC).unwrap();
    let offsets = function_offsets(&bytes).unwrap();
    let names: Vec<_> = offsets.iter().map(|(f, _)| f.name()).collect();
    assert_eq!(offsets.len(), 13, "{names:?}");
    // In Func order, each inside the file.
    for (i, (f, o)) in offsets.iter().enumerate() {
        assert_eq!(*f, Func::ALL[i]);
        assert!(*o > 0 && *o < bytes.len() as u64);
    }
    // glibc's aligned_alloc is an alias of memalign: same code, same offset.
    assert_eq!(
        off(&offsets, Func::AlignedAlloc),
        off(&offsets, Func::Memalign)
    );
}

#[test]
fn bad_bytes_give_errors_not_panics() {
    assert_eq!(function_offsets(b"").unwrap_err(), "not an ELF file");
    assert_eq!(
        function_offsets(b"#!/bin/sh\necho hi\n").unwrap_err(),
        "not an ELF file"
    );
    assert!(function_offsets(b"\x7fELF").is_err());

    let libc = fs::read(LIBC).unwrap();
    // Any truncation cuts into a segment or the section headers.
    let mut cuts: Vec<usize> = (0..200).collect();
    cuts.extend((1..64).map(|i| libc.len() * i / 64));
    cuts.push(libc.len() - 1);
    for n in cuts {
        let r = function_offsets(&libc[..n]);
        assert!(r.is_err(), "truncated at {n}: {r:?}");
        assert!(!r.unwrap_err().contains('\n'));
    }

    // Random corruption of a small binary's headers and tables may parse or
    // not, but must never panic.
    let orig = fs::read("/usr/bin/true").unwrap();
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..400 {
        let mut b = orig.clone();
        for _ in 0..1 + rand() % 8 {
            // Mostly the ELF/program headers and the tail (section headers).
            let at = if rand() % 2 == 0 {
                rand() as usize % 512
            } else {
                b.len() - 1 - rand() as usize % 2048
            };
            b[at] = rand() as u8;
        }
        let _ = function_offsets(&b);
    }
}

// The test process must itself run on glibc (not a musl static build).
#[cfg(target_env = "gnu")]
#[test]
fn override_c_name_and_paths_pick_libc() {
    let pid = std::process::id();
    for obj in [
        "c",
        "libc.so.6",
        "libc",
        LIBC,
        "/lib/x86_64-linux-gnu/libc.so.6",
    ] {
        let a = for_process(pid, Some(obj)).unwrap_or_else(|e| panic!("{obj}: {e}"));
        assert_eq!(a.display_path, LIBC, "{obj}");
        assert!(a.reason.contains("-O"), "{}", a.reason);
        assert_eq!(a.offsets.len(), 13);
    }
}

// The test process must itself run on glibc (not a musl static build).
#[cfg(target_env = "gnu")]
#[test]
fn override_errors() {
    let pid = std::process::id();
    let e = for_process(pid, Some("libnothere.so.9"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "-O libnothere.so.9: pid {pid} maps no such object, and no file libnothere.so.9 exists"
        )
    );
    let e = for_process(pid, Some("/nonexistent/libfoo.so"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/libfoo.so") && e.contains(&pid.to_string()),
        "{e}"
    );

    // Mapped, but not an allocator: the test binary itself.
    let me = fs::read_link("/proc/self/exe").unwrap();
    let me = me.to_str().unwrap();
    assert_eq!(
        for_process(pid, Some(me)).unwrap_err().to_string(),
        format!("{me} does not define malloc")
    );
    // An existing non-ELF file.
    let e = for_process(pid, Some("/etc/hostname"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an ELF file"), "{e}");
}

#[test]
fn missing_pid() {
    // Above any possible pid_max.
    let pid = 0x7fff_fff0;
    let e = for_process(pid, None).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "no process with pid {pid} (cannot read /proc/{pid}/maps: No such file or directory)"
        )
    );
}

#[test]
fn ls_resolves_libc_through_needed() {
    let a = for_executable("/bin/ls", None).unwrap();
    assert_eq!(
        a.display_path.rsplit('/').next(),
        Some("libc.so.6"),
        "{a:?}"
    );
    assert_eq!(fs::canonicalize(&a.attach_path).unwrap(), Path::new(LIBC));
    assert!(a.reason.contains("needed"), "{}", a.reason);
    assert_eq!(a.offsets.len(), 13);

    let c = for_executable("/bin/ls", Some("c")).unwrap();
    assert_eq!(c.attach_path, a.attach_path);
    let e = for_executable("/bin/ls", Some("libnothere.so"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "-O libnothere.so: /bin/ls does not load such an object and no file libnothere.so exists"
    );
    let e = for_executable("/nonexistent/prog", None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "cannot read /nonexistent/prog: No such file or directory"
    );
    let e = for_executable("/etc/hostname", None)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "/etc/hostname: not an ELF file");
}

#[test]
fn glibc_static_executable_is_its_own_allocator() {
    let dir = TempDir::new("static");
    let exe = compile("gcc", &dir, "prog", PROG, &["-static", "-O1"]);
    let a = for_executable(&exe, None).unwrap();
    assert_eq!(a.display_path, exe);
    assert!(a.reason.contains("executable itself"), "{}", a.reason);
    let malloc = a.offset(Func::Malloc).unwrap();
    assert!(a.offset(Func::Free).is_some());

    // The same when it runs.
    let run = Running::start(&exe);
    let p = for_process(run.pid(), None).unwrap();
    assert_eq!(p.display_path, exe);
    assert_eq!(p.attach_path, format!("/proc/{}/root{exe}", run.pid()));
    assert_eq!(p.offset(Func::Malloc), Some(malloc));
    assert!(p.reason.contains("executable itself"), "{}", p.reason);
}

#[test]
fn dynamic_program_runtime_matches_prediction() {
    let dir = TempDir::new("dyn");
    let exe = compile("gcc", &dir, "prog", PROG, &[]);
    let predicted = for_executable(&exe, None).unwrap();
    let run = Running::start(&exe);
    let live = for_process(run.pid(), None).unwrap();
    assert_eq!(live.display_path, LIBC);
    assert_eq!(
        fs::canonicalize(&predicted.attach_path).unwrap(),
        Path::new(LIBC)
    );
    assert_eq!(live.offsets, predicted.offsets);
}

#[test]
#[ignore = "needs root; make test runs it (make check cannot)"]
fn deleted_library_is_read_through_map_files() {
    // A copy of the program's allocator library that is deleted while mapped
    // can only be reached through /proc/PID/map_files.
    let dir = TempDir::new("deleted");
    let lib = compile("gcc", &dir, "libfake.so", FAKE_ALLOC, &["-shared", "-fPIC"]);
    let exe = compile(
        "gcc",
        &dir,
        "prog",
        PROG,
        &[
            "-L",
            dir.path().to_str().unwrap(),
            "-Wl,--no-as-needed",
            "-lfake",
            "-Wl,-rpath,$ORIGIN",
        ],
    );
    let run = Running::start(&exe);
    fs::remove_file(&lib).unwrap();
    let a = for_process(run.pid(), None).unwrap();
    assert_eq!(a.display_path, lib);
    assert!(
        a.attach_path
            .starts_with(&format!("/proc/{}/map_files/", run.pid())),
        "{a:?}"
    );
    assert!(a.reason.contains("deleted"), "{}", a.reason);
    // /proc/PID/maps lists libc first (lower address); the loader's list
    // has libfake.so first, as symbol lookup does.
    assert!(a.reason.contains("lookup order"), "{}", a.reason);
    let md = fs::metadata(&a.attach_path).unwrap();
    assert!(md.is_file());
}

#[test]
fn live_preload_wins_over_libc() {
    let dir = TempDir::new("preload");
    let lib = compile("gcc", &dir, "libfake.so", FAKE_ALLOC, &["-shared", "-fPIC"]);
    let exe = compile("gcc", &dir, "prog", PROG, &[]);
    let mut child = Command::new(&exe)
        .arg("wait")
        .env("LD_PRELOAD", &lib)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let run = Running(child);
    assert_eq!(line, "ready\n");
    let maps = fs::read_to_string(format!("/proc/{}/maps", run.pid())).unwrap();
    let (at_lib, at_libc) = (maps.find(lib.as_str()).unwrap(), maps.find(LIBC).unwrap());
    assert!(
        at_libc < at_lib,
        "maps order is address order, not load order"
    );
    let a = for_process(run.pid(), None).unwrap();
    assert_eq!(a.display_path, lib, "{a:?}");
    assert_eq!(
        for_process(run.pid(), Some("c")).unwrap().display_path,
        LIBC
    );
}

/// An allocator-shaped library: malloc and free, nothing else.
const FAKE_ALLOC: &str = "#include <stddef.h>\n\
    static char pool[1 << 20]; static size_t used;\n\
    void *malloc(size_t n) { void *p = pool + used; used += (n + 15) & ~(size_t)15; return p; }\n\
    void free(void *p) { (void)p; }\n";

#[test]
fn needed_search_order_rpath_origin_and_wrong_machine() {
    let dir = TempDir::new("needed");
    let d = |s: &str| dir.path().join(s).to_str().unwrap().to_string();
    fs::create_dir_all(d("lib")).unwrap();
    fs::create_dir_all(d("bad")).unwrap();
    fs::create_dir_all(d("text")).unwrap();
    let fake = compile(
        "gcc",
        &dir,
        "lib/libfake.so",
        FAKE_ALLOC,
        &["-shared", "-fPIC"],
    );
    // Decoys found first on the search path: another machine, and not ELF.
    let mut other = fs::read(&fake).unwrap();
    other[18..20].copy_from_slice(&goblin::elf::header::EM_AARCH64.to_le_bytes());
    fs::write(d("bad/libfake.so"), other).unwrap();
    fs::write(d("text/libfake.so"), "INPUT(-lc)\n").unwrap();
    let wrap = compile(
        "gcc",
        &dir,
        "lib/libwrap.so",
        "void *malloc(unsigned long); void *wrap(void) { return malloc(1); }\n",
        &[
            "-shared",
            "-fPIC",
            "-L",
            &d("lib"),
            "-Wl,--no-as-needed",
            "-lfake",
        ],
    );
    let lib_args = |lib: &str| -> Vec<String> {
        [
            "-L",
            &d("lib"),
            "-Wl,--no-as-needed",
            lib,
            "-Wl,--disable-new-dtags",
            "-Wl,-rpath,$ORIGIN/text:$ORIGIN/bad:$ORIGIN/lib",
        ]
        .map(String::from)
        .to_vec()
    };
    let args = lib_args("-lfake");
    let direct = compile(
        "gcc",
        &dir,
        "direct",
        PROG,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let args = lib_args("-lwrap");
    let indirect = compile(
        "gcc",
        &dir,
        "indirect",
        PROG,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    // NEEDED libfake.so comes before libc.so.6; the decoys are skipped.
    let a = for_executable(&direct, None).unwrap();
    assert_eq!(
        a.display_path,
        format!(
            "{}/lib/libfake.so",
            dir.path().canonicalize().unwrap().display()
        ),
        "{a:?}"
    );
    assert_eq!(a.offsets.len(), 2);

    // Breadth first: the program's libc.so.6 before libwrap's libfake.so,
    // though libwrap comes first.
    let a = for_executable(&indirect, None).unwrap();
    assert_eq!(
        fs::canonicalize(&a.attach_path).unwrap(),
        Path::new(LIBC),
        "{a:?}"
    );
    // libwrap has no RPATH: its libfake.so is found through the program's
    // DT_RPATH, which applies to everything it loads.
    let a = for_executable(&indirect, Some("fake")).unwrap();
    assert_eq!(
        fs::canonicalize(&a.attach_path).unwrap(),
        fs::canonicalize(&fake).unwrap()
    );
    assert!(a.reason.contains("-O fake"), "{}", a.reason);
    // libwrap is loaded but not an allocator.
    let e = for_executable(&indirect, Some("libwrap.so"))
        .unwrap_err()
        .to_string();
    assert!(e.ends_with("libwrap.so does not define malloc"), "{e}");
    let _ = wrap;

    // LD_PRELOAD comes first of all.
    let ls = fs::read("/bin/ls").unwrap();
    let info = elf::inspect(&ls).unwrap();
    let mut search = exec::Search::from_system(&info);
    search.preload = vec![fake.clone()];
    let a = exec::resolve_with("/bin/ls", info, None, search).unwrap();
    assert_eq!(a.display_path, fake);
    assert!(a.reason.contains("preloaded"), "{}", a.reason);
}

fn musl_available() -> bool {
    if Path::new(MUSL_GCC).exists() {
        return true;
    }
    eprintln!("SKIPPED: {MUSL_GCC} is missing (apt-get install musl-tools); musl cases not tested");
    false
}

#[test]
fn musl_dynamic_uses_its_loader() {
    if !musl_available() {
        return;
    }
    let dir = TempDir::new("musl-dyn");
    let exe = compile(MUSL_GCC, &dir, "prog", PROG, &[]);
    let a = for_executable(&exe, None).unwrap();
    assert_eq!(
        a.display_path.rsplit('/').next(),
        Some("ld-musl-x86_64.so.1"),
        "{a:?}"
    );
    assert!(a.reason.contains("musl"), "{}", a.reason);
    assert!(a.offset(Func::Malloc).is_some() && a.offset(Func::Free).is_some());
    let c = for_executable(&exe, Some("c")).unwrap();
    assert_eq!(c.display_path, a.display_path);

    // Running, maps shows the loader under its real name (libc.so).
    let run = Running::start(&exe);
    let p = for_process(run.pid(), None).unwrap();
    assert_eq!(
        fs::canonicalize(&p.display_path).unwrap(),
        fs::canonicalize(&a.display_path).unwrap()
    );
    assert_eq!(p.offsets, a.offsets);
    let p = for_process(run.pid(), Some("c")).unwrap();
    assert_eq!(p.offsets, a.offsets);
}

#[test]
fn musl_static_is_its_own_allocator() {
    if !musl_available() {
        return;
    }
    let dir = TempDir::new("musl-static");
    let exe = compile(MUSL_GCC, &dir, "prog", PROG, &["-static"]);
    let a = for_executable(&exe, None).unwrap();
    assert_eq!(a.display_path, exe);
    assert!(
        a.offset(Func::Malloc).is_some() && a.offset(Func::Free).is_some(),
        "{a:?}"
    );
    let run = Running::start(&exe);
    assert_eq!(for_process(run.pid(), None).unwrap().offsets, a.offsets);
}

#[test]
fn stripped_static_executable_explains() {
    let dir = TempDir::new("stripped");
    let exe = compile("gcc", &dir, "prog", PROG, &["-static", "-s"]);
    let e = for_executable(&exe, Some(&exe)).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{exe} does not define malloc (it has no symbol table: stripped; install its debug file under /usr/lib/debug/.build-id or beside it)")
    );
}

// ---- Hand-made ELF images ----

const EXEC_VADDR: u64 = 0x401000;
const EXEC_OFF: u64 = 0x1000;
const DATA_VADDR: u64 = 0x402000;

/// (name, st_info, st_shndx, st_value)
type RawSym<'a> = (&'a str, u8, u16, u64);

fn info(bind: u8, typ: u8) -> u8 {
    (bind << 4) | typ
}

/// A little-endian ELF64 x86-64 image: an executable PT_LOAD at file
/// 0x1000 / vaddr 0x401000 (0x100 bytes), a read-only one at 0x1100 /
/// 0x402000, and a .symtab with `syms`.
fn make_elf(e_type: u16, syms: &[RawSym]) -> Vec<u8> {
    let mut strtab = vec![0u8];
    let mut symtab = vec![0u8; 24];
    for (name, st_info, shndx, value) in syms {
        let name_off = strtab.len() as u32;
        strtab.extend_from_slice(name.as_bytes());
        strtab.push(0);
        symtab.extend_from_slice(&name_off.to_le_bytes());
        symtab.push(*st_info);
        symtab.push(0);
        symtab.extend_from_slice(&shndx.to_le_bytes());
        symtab.extend_from_slice(&value.to_le_bytes());
        symtab.extend_from_slice(&16u64.to_le_bytes());
    }
    let symtab_off = 0x1200u64;
    let strtab_off = symtab_off + symtab.len() as u64;
    let shoff = (strtab_off + strtab.len() as u64 + 7) & !7;

    let mut b = Vec::new();
    b.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    b.extend_from_slice(&e_type.to_le_bytes());
    b.extend_from_slice(&goblin::elf::header::EM_X86_64.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // e_version
    b.extend_from_slice(&EXEC_VADDR.to_le_bytes()); // e_entry
    b.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    b.extend_from_slice(&shoff.to_le_bytes()); // e_shoff
    b.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [64u16, 56, 2, 64, 3, 0] {
        // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
        b.extend_from_slice(&v.to_le_bytes());
    }
    let phdr = |b: &mut Vec<u8>, flags: u32, off: u64, vaddr: u64| {
        b.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        b.extend_from_slice(&flags.to_le_bytes());
        for v in [off, vaddr, vaddr, 0x100, 0x100, 0x1000] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    };
    phdr(&mut b, 5, EXEC_OFF, EXEC_VADDR); // R E
    phdr(&mut b, 4, 0x1100, DATA_VADDR); // R
    b.resize(symtab_off as usize, 0xcc);
    b.extend_from_slice(&symtab);
    b.extend_from_slice(&strtab);
    b.resize(shoff as usize, 0);
    let shdr = |b: &mut Vec<u8>, typ: u32, off: u64, size: u64, link: u32, entsize: u64| {
        b.extend_from_slice(&0u32.to_le_bytes()); // sh_name
        b.extend_from_slice(&typ.to_le_bytes());
        for v in [0u64, 0, off, size] {
            // flags, addr, offset, size
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&link.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // sh_info
        b.extend_from_slice(&8u64.to_le_bytes()); // addralign
        b.extend_from_slice(&entsize.to_le_bytes());
    };
    shdr(&mut b, 0, 0, 0, 0, 0);
    shdr(&mut b, 2, symtab_off, symtab.len() as u64, 2, 24); // SHT_SYMTAB
    shdr(&mut b, 3, strtab_off, strtab.len() as u64, 0, 0); // SHT_STRTAB
    b
}

#[test]
fn hand_made_symbol_rules() {
    use goblin::elf::sym::{STB_GLOBAL, STB_LOCAL, STB_WEAK, STT_FUNC, STT_GNU_IFUNC, STT_OBJECT};
    let g = info(STB_GLOBAL, STT_FUNC);
    let syms: &[RawSym] = &[
        ("malloc", g, 1, EXEC_VADDR + 0x10),
        ("free", info(STB_WEAK, STT_FUNC), 1, EXEC_VADDR + 0x20),
        (
            "calloc",
            info(STB_GLOBAL, STT_GNU_IFUNC),
            1,
            EXEC_VADDR + 0x30,
        ),
        ("realloc", g, 0, 0),                    // undefined import
        ("valloc@@V1", g, 1, EXEC_VADDR + 0x40), // default version
        ("pvalloc", info(STB_LOCAL, STT_FUNC), 1, EXEC_VADDR + 0x60),
        ("pvalloc@V0", g, 1, EXEC_VADDR + 0x50), // old version beats local
        ("posix_memalign@OLD", g, 1, EXEC_VADDR + 0x70),
        ("posix_memalign", g, 1, EXEC_VADDR + 0x80), // default beats old
        ("memalign", g, 1, DATA_VADDR + 0x10),       // not in executable segment
        ("mmap", g, 1, EXEC_VADDR + 0x200),          // past the segment
        ("munmap", info(STB_GLOBAL, STT_OBJECT), 1, EXEC_VADDR + 0x90),
        ("aligned_alloc_not", g, 1, EXEC_VADDR + 0xa0), // only a prefix
        ("aligned", g, 1, EXEC_VADDR + 0xa0),
    ];
    let img = make_elf(goblin::elf::header::ET_EXEC, syms);
    let o = function_offsets(&img).unwrap();
    assert_eq!(
        o,
        vec![
            (Func::Malloc, EXEC_OFF + 0x10),
            (Func::Free, EXEC_OFF + 0x20),
            (Func::PosixMemalign, EXEC_OFF + 0x80),
            (Func::Valloc, EXEC_OFF + 0x40),
            (Func::Pvalloc, EXEC_OFF + 0x50),
        ]
    );
    let info = elf::inspect(&img).unwrap();
    assert_eq!(info.ifuncs, vec![Func::Calloc]);

    // An IFUNC-only malloc is reported as such.
    let img = make_elf(
        goblin::elf::header::ET_DYN,
        &[
            ("malloc", info_ifunc(), 1, EXEC_VADDR),
            ("free", g, 1, EXEC_VADDR + 8),
        ],
    );
    let info = elf::inspect(&img).unwrap();
    assert_eq!(
        require_core("/x/lib.so", &info).unwrap_err(),
        "/x/lib.so does not define malloc (only as an IFUNC resolver, which cannot be traced)"
    );

    // Relocatable objects and truncated images are refused.
    let rel = make_elf(goblin::elf::header::ET_REL, syms);
    assert_eq!(
        function_offsets(&rel).unwrap_err(),
        "ELF type REL is not an executable or shared object"
    );
    let mut short = make_elf(goblin::elf::header::ET_EXEC, &[]);
    // Keep the headers, drop the segments' bytes.
    short.truncate(0x1080);
    assert!(function_offsets(&short).is_err());
}

fn info_ifunc() -> u8 {
    info(
        goblin::elf::sym::STB_GLOBAL,
        goblin::elf::sym::STT_GNU_IFUNC,
    )
}

#[test]
fn name_matching() {
    assert_eq!(name_match("c", "libc.so.6"), Some(0));
    assert_eq!(name_match("c", "libc-2.31.so"), Some(0));
    assert_eq!(name_match("c", "ld-musl-x86_64.so.1"), Some(0));
    assert_eq!(name_match("c", "libcrypto.so.3"), None);
    assert_eq!(name_match("c", "libc-client.so"), None);
    assert_eq!(name_match("libjemalloc.so.2", "libjemalloc.so.2"), Some(0));
    assert_eq!(name_match("jemalloc", "libjemalloc.so.2"), Some(1));
    assert_eq!(name_match("libjemalloc.so", "libjemalloc.so.2"), Some(1));
    assert_eq!(name_match("jemalloc", "libjemalloc_pic.so"), None);
    assert_eq!(name_match("tcmalloc", "libtcmalloc_minimal.so.4"), None);
}

/// Debian's allocator libraries (installed by .ci/run): their own APIs and
/// operator new/delete are found under the right shapes.
#[test]
fn allocator_library_profiles() {
    // The files are only parsed, so the host's own libraries serve any
    // build (the aarch64 one runs here under qemu-user).
    let inspect = |name: &str| {
        let path = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]
            .iter()
            .map(|dir| format!("{dir}/{name}"))
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| panic!("{name} not installed (.ci/run installs it)"));
        elf::inspect(&std::fs::read(&path).unwrap()).unwrap()
    };
    let count = |offsets: &[(Func, u64)], f: Func| offsets.iter().filter(|(g, _)| *g == f).count();

    let je = inspect("libjemalloc.so.2");
    for f in [
        Func::Malloc,
        Func::Free,
        Func::Mallocx,
        Func::Rallocx,
        Func::Xallocx,
    ] {
        assert_eq!(count(&je.offsets, f), 1, "{f:?}");
    }
    assert_eq!(count(&je.offsets, Func::Dallocx), 2, "dallocx and sdallocx");
    assert_eq!(
        count(&je.offsets, Func::New),
        8,
        "every operator new variant"
    );
    assert_eq!(
        count(&je.offsets, Func::Delete),
        12,
        "every operator delete variant"
    );
    assert!(je.families.is_empty());

    // tcmalloc's tc_ names are aliases of the standard ones: nothing more.
    let tc = inspect("libtcmalloc_minimal.so.4");
    assert!(tc.families.is_empty());
    assert!(count(&tc.offsets, Func::New) >= 1 && count(&tc.offsets, Func::Delete) >= 1);

    let mi = inspect("libmimalloc.so.2");
    let (prefix, api) = &mi.families[0];
    assert_eq!((*prefix, mi.families.len()), ("mi_", 1));
    assert_eq!(
        off(api, Func::Malloc),
        off(&mi.offsets, Func::Malloc),
        "mi_malloc is malloc"
    );
    assert!(
        count(api, Func::Malloc) >= 3,
        "mi_malloc, mi_zalloc, mi_malloc_aligned: {api:?}"
    );
    assert!(
        count(api, Func::New) >= 1 && count(api, Func::Untracked) >= 2,
        "{api:?}"
    );
    assert!(mi.traced().len() > mi.offsets.len());
}
