//! Where to hold a process that unloads a library: glibc's dlclose. A
//! frame is named from memleak's snapshots of /proc/PID/maps; a library
//! loaded and unloaded between two snapshots would leave its frames
//! `[unknown]`, so the process is stopped at dlclose's entry until memleak
//! has read its maps (see `dlclose_enter` in bpf/memleak.bpf.c).

use super::{base_name, io_msg, Allocator};
use crate::elf::{self, ElfSymbols};

/// dlclose in one file: where to attach a uprobe.
#[derive(Debug, Clone)]
pub struct DlcloseSite {
    pub path: String,
    pub offset: u64,
    /// (device, inode): the same file under another name (/lib and
    /// /usr/lib, /proc/PID/root/...) is the same site.
    file: Option<(u64, u64)>,
}

impl DlcloseSite {
    fn new(path: String, offset: u64) -> DlcloseSite {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
        DlcloseSite { path, offset, file }
    }
}

impl PartialEq for DlcloseSite {
    fn eq(&self, other: &DlcloseSite) -> bool {
        let same_file = match (self.file, other.file) {
            (Some(a), Some(b)) => a == b,
            _ => self.path == other.path,
        };
        same_file && self.offset == other.offset
    }
}

/// glibc's dlclose for a process whose C library is `libc`: in libc.so.6
/// since glibc 2.34, in libdl.so.2 beside it before. Ok(None) when the C
/// library is not glibc: musl's dlclose unmaps nothing, so its frames stay
/// named.
pub fn dlclose_site(libc: &Allocator) -> Result<Option<DlcloseSite>, String> {
    let path = &libc.attach_path;
    let file = elf::open(path).map_err(|e| format!("cannot read {path}: {}", io_msg(&e)))?;
    let syms = file.symbols().map_err(|e| format!("{path}: {e}"))?;
    // Only glibc has this; musl's libc does not.
    if syms.symbol_address("gnu_get_libc_version").is_none() {
        return Ok(None);
    }
    if let Some(offset) = offset_of(&syms, "dlclose") {
        return Ok(Some(DlcloseSite::new(path.clone(), offset)));
    }
    let dir = match path.rfind('/') {
        Some(i) => &path[..i],
        None => ".",
    };
    let libdl = format!("{dir}/libdl.so.2");
    let found = elf::open(&libdl)
        .ok()
        .and_then(|f| f.symbols().ok())
        .and_then(|s| offset_of(&s, "dlclose"));
    match found {
        Some(offset) => Ok(Some(DlcloseSite::new(libdl, offset))),
        None => Err(format!(
            "neither {} nor {libdl} defines dlclose",
            base_name(path)
        )),
    }
}

fn offset_of(syms: &ElfSymbols, name: &str) -> Option<u64> {
    syms.vaddr_to_file_offset(syms.symbol_address(name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test process must itself run on glibc.
    #[cfg(target_env = "gnu")]
    #[test]
    fn finds_glibc_dlclose() {
        let libc = super::super::for_process(std::process::id(), Some("c")).unwrap();
        let site = dlclose_site(&libc).unwrap().expect("glibc has dlclose");
        // The offset is where this process's own dlclose is mapped.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let entries = crate::process::maps::parse(&maps);
        extern "C" {
            fn dlclose(handle: *mut libc::c_void) -> libc::c_int;
        }
        let addr = dlclose as *const () as usize as u64;
        let entry = crate::process::maps::find(&entries, addr).unwrap();
        assert_eq!(
            std::fs::canonicalize(&entry.path).unwrap(),
            std::fs::canonicalize(&site.path).unwrap()
        );
        assert_eq!(entry.file_offset(addr), site.offset);
        // The same file under another name is the same site.
        let elsewhere = format!("/proc/self/root{}", site.path);
        assert_eq!(DlcloseSite::new(elsewhere, site.offset), site);
        assert_ne!(DlcloseSite::new(site.path.clone(), site.offset + 1), site);
    }
}
