//! The order in which a running process's dynamic loader loaded its
//! objects, read from the loader's own list (r_debug.r_map, reached through
//! the executable's DT_DEBUG entry), the list debuggers use. Symbol lookup
//! follows this order, so with LD_PRELOAD=libjemalloc.so.2 the preloaded
//! object comes before libc, although /proc/PID/maps, sorted by address,
//! lists it after (the loader maps objects top-down). glibc and musl both
//! keep this list.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;

use super::elf::ElfInfo;
use super::io_msg;

const AT_NULL: u64 = 0;
const AT_ENTRY: u64 = 9;
const DT_NULL: u64 = 0;
const DT_DEBUG: u64 = 21;
/// More than any real program loads; bounds a corrupt or cyclic list.
const MAX_OBJECTS: usize = 16384;
/// Bounds the read of a (corrupt) PT_DYNAMIC size.
const MAX_DYNAMIC: u64 = 64 * 1024;

/// The run-time addresses of the loaded objects' dynamic sections (l_ld),
/// in load order; the caller maps them to files through /proc/PID/maps.
/// `exe` describes the process's executable. Needs the same access as a
/// debugger (root, or ptrace rights over the process).
pub(crate) fn dynamic_sections(pid: u32, exe: &ElfInfo) -> Result<Vec<u64>, String> {
    let word = if exe.is_64 { 8 } else { 4 };
    let (dyn_vaddr, dyn_size) = exe.dynamic.ok_or("the executable has no dynamic section")?;

    // The executable's load bias (non-zero for PIE) is where the kernel put
    // its entry point minus where the file says it is.
    let auxv_path = format!("/proc/{pid}/auxv");
    let auxv =
        fs::read(&auxv_path).map_err(|e| format!("cannot read {auxv_path}: {}", io_msg(&e)))?;
    let at_entry = pairs(&auxv, word)
        .take_while(|(tag, _)| *tag != AT_NULL)
        .find(|(tag, _)| *tag == AT_ENTRY)
        .map(|(_, v)| v)
        .ok_or_else(|| format!("{auxv_path} has no AT_ENTRY"))?;
    let bias = at_entry.wrapping_sub(exe.entry);

    let mem_path = format!("/proc/{pid}/mem");
    let mem =
        File::open(&mem_path).map_err(|e| format!("cannot open {mem_path}: {}", io_msg(&e)))?;
    let read = |addr: u64, len: u64| -> Result<Vec<u8>, String> {
        let mut buf = vec![0; len as usize];
        mem.read_exact_at(&mut buf, addr)
            .map_err(|e| format!("cannot read {mem_path} at {addr:#x}: {}", io_msg(&e)))?;
        Ok(buf)
    };
    let read_word = |addr: u64| read(addr, word as u64).map(|b| word_at(&b, 0, word));

    let dynamic = read(bias.wrapping_add(dyn_vaddr), dyn_size.min(MAX_DYNAMIC))?;
    let r_debug = pairs(&dynamic, word)
        .take_while(|(tag, _)| *tag != DT_NULL)
        .find(|(tag, _)| *tag == DT_DEBUG)
        .map_or(0, |(_, v)| v);
    if r_debug == 0 {
        return Err(
            "the dynamic loader has not published its object list (DT_DEBUG is 0)".to_string(),
        );
    }
    let w = word as u64;
    // struct r_debug { int r_version; struct link_map *r_map; ... }: the
    // pointer is word-aligned, so it sits one word in.
    let mut lm = read_word(r_debug.wrapping_add(w))?;
    // struct link_map { l_addr, l_name, l_ld, l_next, l_prev }: all words.
    let mut out = Vec::new();
    while lm != 0 && out.len() < MAX_OBJECTS {
        out.push(read_word(lm.wrapping_add(2 * w))?);
        lm = read_word(lm.wrapping_add(3 * w))?;
    }
    Ok(out)
}

/// (tag, value) pairs of target-word-sized integers, as in auxv and
/// .dynamic.
fn pairs(bytes: &[u8], word: usize) -> impl Iterator<Item = (u64, u64)> + '_ {
    bytes
        .chunks_exact(2 * word)
        .map(move |c| (word_at(c, 0, word), word_at(c, word, word)))
}

/// The target's native-endian word at `at` (the target runs on this
/// machine, so its byte order is ours); 0 when out of range.
fn word_at(b: &[u8], at: usize, word: usize) -> u64 {
    match b.get(at..at + word) {
        Some(s) if word == 8 => s.try_into().map_or(0, u64::from_ne_bytes),
        Some(s) => s.try_into().map_or(0, |a| u32::from_ne_bytes(a) as u64),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_pairs() {
        let mut b = Vec::new();
        for v in [9u64, 0x1234, 0, 0] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(pairs(&b, 8).collect::<Vec<_>>(), [(9, 0x1234), (0, 0)]);
        let small: Vec<u8> = [21u32, 7].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(pairs(&small, 4).collect::<Vec<_>>(), [(21, 7)]);
        assert_eq!(word_at(&small, 6, 4), 0);
    }
}
