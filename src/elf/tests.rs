//! The ELF layer on real files: this machine's libc, programs compiled
//! here (non-PIE, whose segments' file offsets differ from their
//! addresses), a stripped copy with a .gnu_debuglink, and its debug file.

use super::*;
use crate::test_support::{compile, run, TempDir};
use std::process::Command;
use std::sync::Arc;

fn libc_path() -> String {
    [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/aarch64-linux-gnu/libc.so.6",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/aarch64-linux-gnu/libc.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("a glibc libc.so.6 on this machine")
    .to_string()
}

const PROG: &str = "int table[64] = { 1 };\n\
    __attribute__((noinline)) int leaf(int x) { return table[x & 63] + x; }\n\
    int main(void) { return leaf(3) - 4; }\n";

#[test]
fn libc_is_read_once_and_answers_every_question() {
    let path = libc_path();
    let a = open(&path).unwrap();
    let b = open(&path).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "the second open is the first copy");
    let meta = std::fs::metadata(&path).unwrap();
    assert!(cached(file_id(&meta), &meta).is_some_and(|c| Arc::ptr_eq(&c, &a)));
    assert_eq!(a.bytes().len() as u64, meta.len());
    assert!(a.header_error().is_none());
    assert!(a.is_64() && a.is_little_endian());

    let id = a.build_id().expect("Debian's libc has a build ID");
    assert_eq!(id.len(), 20);
    let text = a.section(".text").expect(".text");
    assert!(!text.nobits && !text.data.is_empty());
    assert!(a.section(".eh_frame").is_some());
    assert!(a.section("no such section").is_none());

    let syms = a.symbols().unwrap();
    assert_eq!(syms.build_id(), Some(id.as_slice()));
    let malloc = syms.symbol_address("malloc").expect("malloc");
    let off = a
        .segments()
        .vaddr_to_offset(malloc, Through::Code)
        .expect("malloc is code");
    assert_eq!(a.segments().offset_to_vaddr(off), Some(malloc));
    assert_eq!(syms.vaddr_to_file_offset(malloc), Some(off));
    let (name, delta) = syms.lookup_file_offset(off + 3).unwrap();
    assert!(["malloc", "__libc_malloc"].contains(&name), "{name}");
    assert_eq!(delta, 3);
}

/// A non-PIE executable is linked at 0x400000: every segment's address
/// differs from its file offset, and conversions go through the segment.
#[test]
fn offsets_and_addresses_differ_in_a_non_pie_executable() {
    let dir = TempDir::new("nopie");
    let exe = compile("gcc", &dir, "nopie", PROG, &["-no-pie", "-O1", "-g"]);
    let file = open(&exe).unwrap();
    let loads = file.segments().loads();
    assert!(loads.len() >= 2, "{loads:?}");
    assert!(loads.iter().all(|l| l.vaddr != l.offset), "{loads:?}");

    let syms = file.symbols().unwrap();
    let leaf = syms.symbol_address("leaf").unwrap();
    assert!(leaf >= 0x400000, "{leaf:#x}");
    let code = loads.iter().find(|l| l.exec).unwrap();
    let off = file
        .segments()
        .vaddr_to_offset(leaf, Through::Code)
        .unwrap();
    assert_eq!(off, leaf - code.vaddr + code.offset);
    assert_ne!(off, leaf);
    assert_eq!(file.segments().offset_to_vaddr(off + 2), Some(leaf + 2));
    assert_eq!(syms.lookup_file_offset(off + 2), Some(("leaf", 2)));
    assert_eq!(file.entry_file_offset().map(|o| o < leaf), Some(true));

    // `table` is data: an address, but no place for a uprobe.
    let table = syms.symbol_address("table").unwrap();
    let data_off = file
        .segments()
        .vaddr_to_offset(table, Through::Any)
        .unwrap();
    assert_eq!(file.segments().vaddr_to_offset(table, Through::Code), None);
    assert_eq!(file.segments().offset_to_vaddr(data_off), Some(table));
    assert!(!file.segments().same_segment(leaf, table));
    assert!(file.segments().same_segment(leaf, leaf + 1));
    // Outside every segment.
    assert_eq!(file.segments().offset_to_vaddr(u64::MAX), None);
    assert_eq!(file.segments().vaddr_to_offset(0x10, Through::Any), None);
}

/// A stripped copy names its debug file by .gnu_debuglink (whose CRC is
/// the debug file's) and shares its build ID; the symbols are in the
/// debug file, whose code sections are NOBITS.
#[test]
fn stripped_copy_and_its_debug_link() {
    let dir = TempDir::new("debuglink");
    let exe = compile("gcc", &dir, "p", PROG, &["-g", "-O1", "-Wl,--build-id"]);
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&exe)
        .arg(dir.path().join("p.debug")));
    run(Command::new("strip").arg("--strip-all").arg(&exe));
    run(Command::new("objcopy")
        .arg("--add-gnu-debuglink=p.debug")
        .current_dir(dir.path())
        .arg(&exe));
    let stripped = open(&exe).unwrap();
    let debug = open(dir.path().join("p.debug")).unwrap();

    let (name, crc) = stripped.debuglink().expect(".gnu_debuglink");
    assert_eq!(name, "p.debug");
    assert_eq!(crc, crate::process::debug_file::crc32(debug.bytes()));
    assert_eq!(stripped.build_id(), debug.build_id());
    assert!(stripped.build_id().is_some());

    let own = stripped.symbols().unwrap();
    assert!(own.is_stripped());
    assert_eq!(own.symbol_address("leaf"), None);
    let full = debug.symbols().unwrap();
    assert!(!full.is_stripped());
    let leaf = full.symbol_address("leaf").unwrap();
    // The debug file's segments are the stripped file's: same addresses.
    let off = stripped.segments().offset_to_vaddr(
        stripped
            .segments()
            .vaddr_to_offset(leaf, Through::Code)
            .unwrap(),
    );
    assert_eq!(off, Some(leaf));
    assert!(debug.section(".text").is_some_and(|s| s.nobits));
    assert!(debug.section(".debug_info").is_some_and(|s| !s.nobits));
    assert!(stripped.section(".debug_info").is_none());
    assert_eq!(debug.debuglink(), None);
}

/// The cache knows a file by (device, inode) without opening it, and
/// reads a file rewritten in place (same inode) again.
#[test]
fn cache_by_identity() {
    let dir = TempDir::new("cache");
    let exe = compile("gcc", &dir, "a", PROG, &["-O1"]);
    let first = open(&exe).unwrap();
    let meta = std::fs::metadata(&exe).unwrap();
    let id = file_id(&meta);
    let other_id = (id.0, id.1 ^ 0xfff, id.2);
    alias(other_id, &first);
    assert!(cached(other_id, &meta).is_some_and(|c| Arc::ptr_eq(&c, &first)));

    // Rewritten in place (same inode, other size): read again.
    std::fs::write(&exe, b"\x7fELF not really").unwrap();
    let second = open(&exe).unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert!(second.header_error().is_some());
    assert!(second.symbols().is_err());
    assert_eq!(second.segments().loads(), &[]);
    assert_eq!(second.build_id(), None);
    let now = std::fs::metadata(&exe).unwrap();
    assert!(cached(other_id, &now).is_none(), "changed since read");

    // A directory and a device are refused without reading.
    assert_eq!(
        open(dir.path()).err().and_then(|e| e.raw_os_error()),
        Some(libc::EISDIR)
    );
    assert!(open("/dev/zero").is_err());
    assert!(open(dir.path().join("missing")).is_err());
}

/// Files that are not ELF, or are cut short, give errors or nothing,
/// never a panic.
#[test]
fn damaged_bytes() {
    let libc = std::fs::read(libc_path()).unwrap();
    for bytes in [&b""[..], b"#!/bin/sh\n", &libc[..64], &libc[..4096]] {
        let f = ElfFile::from_bytes(bytes.to_vec(), "x");
        let _ = (f.build_id(), f.debuglink(), f.section(".text"));
        let _ = f.segments().offset_to_vaddr(0x1000);
        let _ = f.symbols();
    }
    assert!(ElfFile::from_bytes(Vec::new(), "x")
        .header_error()
        .is_some());
    let cut = ElfFile::from_bytes(libc[..libc.len() / 2].to_vec(), "x");
    // The headers at the front survive; the section headers at the end
    // do not.
    assert!(cut.header_error().is_none());
    assert!(!cut.segments().is_empty());
    assert!(cut.section(".text").is_none());
}
