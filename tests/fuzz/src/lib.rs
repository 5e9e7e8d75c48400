//! The parsers under test, from the memleak library crate built without
//! its "tracer" feature: the parser modules only, with no libbpf (which
//! would otherwise be compiled under AddressSanitizer for every fuzz build).
//!
//! Each `check_*` function is the body of one fuzz target and of its
//! regression test, so both exercise exactly the same calls.

use memleak::allocator::x86;
use memleak::elf::symbols as elf_symbols;
use memleak::process::debug_file;
use memleak::process::maps as proc_maps;
use memleak::symbolize::{kallsyms, unwind};

/// Addresses worth probing for any parsed table: edges and a few taken
/// from the input itself.
fn probes(data: &[u8], extra: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut v = vec![0, 1, u64::MAX, u64::MAX - 1, 0x1000, 0xffffffff81000000];
    for c in data.chunks_exact(8).take(4) {
        v.push(u64::from_le_bytes(c.try_into().unwrap()));
    }
    for x in extra {
        v.extend([x, x.wrapping_sub(1), x.wrapping_add(1)]);
    }
    v
}

pub fn check_proc_maps(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let entries = proc_maps::parse(text);
    for line in text.lines() {
        let _ = proc_maps::parse_line(line);
    }
    let edges: Vec<u64> = entries.iter().flat_map(|e| [e.start, e.end]).collect();
    for addr in probes(data, edges) {
        if let Some(e) = proc_maps::find(&entries, addr) {
            let _ = (e.is_executable(), e.is_file(), e.module_name());
        }
    }
}

pub fn check_elf(data: &[u8]) {
    // The debug-link notes and the call frame information come from the
    // same untrusted file.
    let _ = debug_file::links(data);
    // Any byte string may be a function's code; decode it from each of
    // its first offsets.
    for start in 0..data.len().min(16) {
        let _ = x86::probe_site(&data[start..]);
    }
    if let Some(cfi) = unwind::CfiTable::parse(data) {
        // Walk a "stack" made of the input itself, every address mapped
        // to this table, from registers taken from the input.
        let word = |i: usize| data.get(i * 8..i * 8 + 8).map_or(i as u64, |b| u64::from_le_bytes(b.try_into().unwrap()));
        let regs = unwind::Registers { ip: word(0), sp: word(1), fp: word(2), lr: word(3) };
        let _ = unwind::unwind(regs, data, 64, |ip| Some((&cfi, ip)));
        for off in probes(data, [data.len() as u64]) {
            let _ = cfi.vaddr_of(off);
        }
    }
    let Ok(syms) = elf_symbols::parse(data) else { return };
    for off in probes(data, [data.len() as u64]) {
        let _ = syms.lookup_file_offset(off);
        let _ = syms.file_offset_to_vaddr(off);
        let _ = syms.lookup_vaddr(off);
    }
}

pub fn check_kallsyms(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let k = kallsyms::Kallsyms::parse(text);
    let _ = k.addresses_hidden();
    let addrs = text
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split(' ').next()?, 16).ok());
    for addr in probes(data, addrs) {
        if let Some(s) = k.lookup(addr) {
            let _ = (s.name.len(), s.offset, s.module);
        }
    }
}
