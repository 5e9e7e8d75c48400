//! Facts about running processes and the files they see: their memory
//! maps, the file behind a mapping, and separate debug files as a
//! process's filesystem holds them. Both the allocator search and the
//! symbolizer use these; neither reaches into the other.

pub mod debug_file;
pub mod maps;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use crate::elf::{self, ElfFile};
use maps::MapEntry;

/// The file behind a mapping, read once per run. map_files gives the
/// exact inode (even deleted or in another mount namespace) but needs
/// privilege; the process's root covers containers; the plain path is the
/// last resort. A candidate whose inode matches the maps entry wins over
/// the others. A file read before (by the allocator search, another
/// process, an earlier report) is not opened again.
pub fn open_mapped(pid: u32, entry: &MapEntry) -> Option<Arc<ElfFile>> {
    let id = (entry.dev_major, entry.dev_minor, entry.inode);
    let candidates = [
        format!("/proc/{pid}/map_files/{:x}-{:x}", entry.start, entry.end),
        format!("/proc/{pid}/root{}", entry.path),
        entry.path.clone(),
    ];
    let mut fallback = None;
    for path in &candidates {
        // Known already (stat, unlike open, reads nothing): not opened.
        let known = std::fs::metadata(path)
            .ok()
            .filter(|meta| entry.inode != 0 && meta.ino() == entry.inode)
            .and_then(|meta| elf::cached(id, &meta));
        if known.is_some() {
            return known;
        }
        let Ok(file) = File::open(path) else { continue };
        let Ok(meta) = file.metadata() else { continue };
        if !meta.is_file() || meta.len() > elf::MAX_ELF_SIZE {
            continue;
        }
        if entry.inode == 0 || meta.ino() == entry.inode {
            let read = elf::adopt(file, &meta, path).ok()?;
            if entry.inode != 0 {
                elf::alias(id, &read);
            }
            return Some(read);
        }
        // Overlay filesystems may report another inode for the same file,
        // so a mismatch is kept as a fallback, except for a deleted file,
        // whose path now names something else.
        if fallback.is_none() && !entry.deleted {
            fallback = Some((file, meta, path));
        }
    }
    let (file, meta, path) = fallback?;
    elf::adopt(file, &meta, path).ok()
}
