//! The allocator of a live process, found through /proc/PID/maps.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use super::elf::{self, ElfInfo};
use super::{base_name, io_msg, link_map, name_match, require_core, Allocator};
use crate::elf::ElfFile;
use crate::process::maps::{self as proc_maps, MapEntry};

/// One file the target maps, however many mappings it has.
#[derive(Debug, Clone)]
struct Mapped {
    path: String,
    inode: u64,
    dev: (u32, u32),
    /// Range of its first mapping, which names its /proc/PID/map_files link.
    start: u64,
    end: u64,
    /// Some mapping of it is executable, so code in it can run.
    executable: bool,
    deleted: bool,
}

/// A mapped file's contents, read the way the kernel will find it again.
struct Loaded {
    info: ElfInfo,
    attach_path: String,
    via_map_files: bool,
}

enum LoadError {
    /// The file could not be read at all (permissions, vanished).
    Read(String),
    /// It was read but is no usable ELF object (data file, JIT blob).
    NotElf(String),
}

impl LoadError {
    fn message(&self) -> &str {
        match self {
            LoadError::Read(s) | LoadError::NotElf(s) => s,
        }
    }
}

/// For a running process: from /proc/PID/maps, the mapped ELF file that
/// defines malloc: the executable itself first when it defines malloc
/// (statically linked), then the other mapped files in the order they
/// appear. `obj_override` is the -O OBJ value: a path, or a name like
/// "libc.so.6", "c" or "libjemalloc.so.2" matched against the base names of
/// the mapped files ("c" meaning the C library); when nothing mapped matches
/// and it names an existing file, that file is used.
pub fn for_process(pid: u32, obj_override: Option<&str>) -> Result<Allocator, String> {
    let maps_path = format!("/proc/{pid}/maps");
    let text = fs::read_to_string(&maps_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "no process with pid {pid} (cannot read {maps_path}: {})",
                io_msg(&e)
            )
        } else {
            format!("cannot read {maps_path}: {}", io_msg(&e))
        }
    })?;
    let entries = proc_maps::parse(&text);
    let files = mapped_files(&entries);
    if files.is_empty() {
        return Err(format!(
            "pid {pid} maps no files (a kernel thread, or it has exited)"
        ));
    }
    match obj_override {
        Some(obj) => with_override(pid, &files, obj),
        None => automatic(pid, &entries, &files),
    }
}

/// The distinct files behind `entries`, in order of first appearance.
fn mapped_files(entries: &[MapEntry]) -> Vec<Mapped> {
    let mut files: Vec<Mapped> = Vec::new();
    for e in entries.iter().filter(|e| e.is_file()) {
        // Identity is device + inode: a path can be replaced on disk while
        // the old, deleted file stays mapped.
        let dev = (e.dev_major, e.dev_minor);
        if let Some(f) = files
            .iter_mut()
            .find(|f| f.inode == e.inode && f.dev == dev)
        {
            f.executable |= e.is_executable();
            continue;
        }
        files.push(Mapped {
            path: e.path.clone(),
            inode: e.inode,
            dev,
            start: e.start,
            end: e.end,
            executable: e.is_executable(),
            deleted: e.deleted,
        });
    }
    files
}

fn automatic(pid: u32, entries: &[MapEntry], files: &[Mapped]) -> Result<Allocator, String> {
    let exe = find_exe(pid, files);
    let mut unreadable = Vec::new();
    let mut exe_info = None;
    if let Some(i) = exe {
        match load(pid, &files[i]) {
            Ok(loaded) => {
                if require_core(&files[i].path, &loaded.info).is_ok() {
                    let what = "the executable itself defines malloc (statically linked or its own allocator)";
                    return Ok(found(pid, &files[i], loaded, what.to_string()));
                }
                exe_info = Some(loaded.info);
            }
            Err(LoadError::Read(e)) => unreadable.push(e),
            Err(LoadError::NotElf(_)) => {}
        }
    }

    // Symbol lookup follows the loader's load order, which maps (sorted by
    // address) does not show; without it, maps order is the best guess.
    let (load_order, order_note) = match exe_info
        .as_ref()
        .map(|info| link_map::dynamic_sections(pid, info))
    {
        Some(Ok(addrs)) => (
            addrs
                .iter()
                .filter_map(|&a| file_at(entries, files, a))
                .collect(),
            None,
        ),
        Some(Err(e)) => (Vec::new(), Some(e)),
        None => (
            Vec::new(),
            Some("the executable could not be read".to_string()),
        ),
    };
    // glibc's loader (ld-linux*.so.2) once exported a minimal malloc of its
    // own that the program never uses; try it only after everything else.
    let is_glibc_loader = |m: &Mapped| {
        let base = base_name(&m.path);
        base.starts_with("ld-linux") || (base.starts_with("ld-2.") && base.ends_with(".so"))
    };
    let mut order: Vec<usize> = Vec::new();
    for i in load_order.iter().copied().chain(0..files.len()) {
        if Some(i) != exe && files[i].executable && !order.contains(&i) {
            order.push(i);
        }
    }
    let (mut order, loaders): (Vec<usize>, Vec<usize>) = order
        .into_iter()
        .partition(|&i| !is_glibc_loader(&files[i]));
    order.extend(loaders);

    for &i in &order {
        let m = &files[i];
        let loaded = match load(pid, m) {
            Ok(l) => l,
            Err(LoadError::Read(e)) => {
                unreadable.push(e);
                continue;
            }
            Err(LoadError::NotElf(_)) => continue,
        };
        if require_core(&m.path, &loaded.info).is_err() {
            continue;
        }
        let what = if load_order.contains(&i) {
            "first object in the dynamic loader's lookup order that defines malloc".to_string()
        } else {
            let why = order_note.as_deref().unwrap_or("not in the loader's list");
            format!("first mapped file that defines malloc (load order unknown: {why})")
        };
        return Ok(found(pid, m, loaded, what));
    }
    let mut msg = format!(
        "no file mapped by pid {pid} defines malloc and free (checked {} executable mappings)",
        order.len() + usize::from(exe.is_some())
    );
    if let Some(first) = unreadable.first() {
        msg.push_str(&format!("; {} unreadable, e.g. {first}", unreadable.len()));
    }
    Err(msg)
}

/// Index in `files` of the file mapped at `addr`.
fn file_at(entries: &[MapEntry], files: &[Mapped], addr: u64) -> Option<usize> {
    let e = proc_maps::find(entries, addr).filter(|e| e.is_file())?;
    files
        .iter()
        .position(|m| m.inode == e.inode && m.dev == (e.dev_major, e.dev_minor))
}

fn with_override(pid: u32, files: &[Mapped], obj: &str) -> Result<Allocator, String> {
    let chosen = if obj.contains('/') {
        files.iter().find(|m| m.path == obj).or_else(|| {
            // The same file under another name (/lib vs /usr/lib, a symlink),
            // as the target sees it.
            let md = fs::metadata(target_path(pid, obj)).ok()?;
            files
                .iter()
                .find(|m| m.inode == md.ino() && m.dev == dev_numbers(md.dev()))
        })
    } else {
        // Exact base-name matches beat loose ones anywhere in the list.
        files
            .iter()
            .filter_map(|m| name_match(obj, base_name(&m.path)).map(|rank| (rank, m)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, m)| m)
    };
    if let Some(m) = chosen {
        let loaded = load(pid, m).map_err(|e| format!("-O {obj}: {}", e.message()))?;
        require_core(&m.path, &loaded.info)?;
        return Ok(found(pid, m, loaded, format!("-O {obj} override")));
    }

    // Not mapped (yet): the program may dlopen() it later, and a uprobe on
    // the file will fire then. The file is looked up as the target sees it.
    let mut tried = Vec::new();
    if obj.starts_with('/') {
        tried.push(target_path(pid, obj));
    }
    tried.push(obj.to_string());
    for path in &tried {
        let Ok(md) = fs::metadata(path) else { continue };
        if !md.is_file() {
            continue;
        }
        let file = crate::elf::open(path)
            .map_err(|e| format!("-O {obj}: cannot read {path}: {}", io_msg(&e)))?;
        let info = elf::inspect_file(&file, path, "").map_err(|e| format!("-O {obj}: {e}"))?;
        // A relative path is resolved against our working directory; make
        // both paths absolute so they stay meaningful.
        let abs = fs::canonicalize(path)
            .map_or_else(|_| path.clone(), |p| p.to_string_lossy().into_owned());
        let display = if obj.starts_with('/') {
            obj.to_string()
        } else {
            abs.clone()
        };
        require_core(&display, &info)?;
        let attach_path = if path.starts_with('/') {
            path.clone()
        } else {
            abs
        };
        return Ok(Allocator {
            attach_path,
            display_path: display,
            reason: format!("-O {obj} override; not mapped by pid {pid} (yet)"),
            offsets: info.traced(),
            sites: info.sites.clone(),
        });
    }
    Err(format!(
        "-O {obj}: pid {pid} maps no such object, and no file {obj} exists"
    ))
}

fn found(pid: u32, m: &Mapped, loaded: Loaded, what: String) -> Allocator {
    let mut reason = format!("{what}; mapped by pid {pid}");
    if let Some(debug) = &loaded.info.debug_file {
        reason.push_str(&format!("; symbols from {debug}"));
    }
    if loaded.via_map_files {
        reason.push_str(if m.deleted {
            "; file deleted, read via map_files"
        } else {
            "; path not reachable via /proc/PID/root, read via map_files"
        });
    }
    Allocator {
        attach_path: loaded.attach_path,
        display_path: m.path.clone(),
        reason,
        offsets: loaded.info.traced(),
        sites: loaded.info.sites.clone(),
    }
}

/// Which mapped file is the executable, matched by inode because the link
/// text of /proc/PID/exe may be relative to another mount namespace.
fn find_exe(pid: u32, files: &[Mapped]) -> Option<usize> {
    let link = format!("/proc/{pid}/exe");
    if let Ok(md) = fs::metadata(&link) {
        let dev = dev_numbers(md.dev());
        let same_ino = |m: &&Mapped| m.inode == md.ino();
        // Device numbers in maps can differ from stat's on overlayfs/btrfs,
        // so an inode-only match is the fallback.
        if let Some(i) = files.iter().position(|m| same_ino(&m) && m.dev == dev) {
            return Some(i);
        }
        if let Some(i) = files.iter().position(|m| same_ino(&m)) {
            return Some(i);
        }
    }
    let target = fs::read_link(&link).ok()?;
    let target = target.to_string_lossy();
    let target = target.strip_suffix(" (deleted)").unwrap_or(&target);
    files.iter().position(|m| m.path == target)
}

/// Reads a mapped file through /proc/PID/root/<path> when that is the very
/// inode the target maps (so containers and chroots work), else through
/// the /proc/PID/map_files link, which always is (it needs root).
fn load(pid: u32, m: &Mapped) -> Result<Loaded, LoadError> {
    let root = target_path(pid, &m.path);
    let why_not_root = if m.deleted {
        "deleted".to_string()
    } else {
        match read_if_inode(&root, m, true) {
            Ok(file) => return parse(pid, m, file, root, false),
            Err(e) => e,
        }
    };
    let map_files = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    match read_if_inode(&map_files, m, false) {
        Ok(file) => parse(pid, m, file, map_files, true),
        Err(e) => Err(LoadError::Read(format!(
            "cannot read {} of pid {pid}: {root}: {why_not_root}; {map_files}: {e}",
            m.path
        ))),
    }
}

fn parse(
    pid: u32,
    m: &Mapped,
    file: Arc<ElfFile>,
    attach_path: String,
    via_map_files: bool,
) -> Result<Loaded, LoadError> {
    match elf::inspect_file(&file, &m.path, &format!("/proc/{pid}/root")) {
        Ok(info) => Ok(Loaded {
            info,
            attach_path,
            via_map_files,
        }),
        Err(e) => Err(LoadError::NotElf(e.to_string())),
    }
}

/// Reads `path` if it is a regular file (and, when `check`, the mapped
/// inode of `m`), through the ELF layer: the mapped file read before in
/// this run is not opened again. Device nodes are refused before opening:
/// mapped /dev files such as /dev/zero would never finish reading.
fn read_if_inode(path: &str, m: &Mapped, check: bool) -> Result<Arc<ElfFile>, String> {
    let md = fs::metadata(path).map_err(|e| io_msg(&e))?;
    if !md.is_file() {
        return Err("not a regular file".to_string());
    }
    let id = (m.dev.0, m.dev.1, m.inode);
    if md.ino() == m.inode {
        if let Some(known) = crate::elf::cached(id, &md) {
            return Ok(known);
        }
    }
    let file = fs::File::open(path).map_err(|e| io_msg(&e))?;
    // Checked on the open file, so a rename in between cannot swap it.
    let md = file.metadata().map_err(|e| io_msg(&e))?;
    if check && md.ino() != m.inode {
        return Err(format!(
            "now a different file (inode {}, mapped inode {})",
            md.ino(),
            m.inode
        ));
    }
    let read = crate::elf::adopt(file, &md, path).map_err(|e| io_msg(&e))?;
    if md.ino() == m.inode {
        crate::elf::alias(id, &read);
    }
    Ok(read)
}

/// `path` as the target process sees it, reachable from our namespace.
fn target_path(pid: u32, path: &str) -> String {
    format!("/proc/{pid}/root{path}")
}

/// Splits a stat st_dev into (major, minor), as maps prints them.
fn dev_numbers(dev: u64) -> (u32, u32) {
    let dev = dev as libc::dev_t;
    (libc::major(dev), libc::minor(dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedups_files_and_keeps_first_range() {
        let text = "\
1000-2000 r--p 00000000 fe:00 7 /usr/bin/prog
2000-3000 r-xp 00001000 fe:00 7 /usr/bin/prog
4000-5000 rw-p 00000000 00:00 0 [heap]
6000-7000 r--s 00000000 00:05 9 /dev/zero
8000-9000 r-xp 00000000 fe:00 8 /usr/lib/libc.so.6 (deleted)
a000-b000 r--p 00000000 fe:00 10 /usr/lib/libc.so.6
";
        let files = mapped_files(&proc_maps::parse(text));
        assert_eq!(files.len(), 4);
        assert_eq!((files[0].start, files[0].end), (0x1000, 0x2000));
        assert!(files[0].executable);
        assert!(!files[1].executable);
        assert!(files[2].deleted && files[2].executable);
        assert_eq!(files[3].inode, 10);
    }

    #[test]
    fn dev_split() {
        assert_eq!(dev_numbers(libc::makedev(0xfe, 0)), (0xfe, 0));
        assert_eq!(dev_numbers(libc::makedev(8, 0x34512)), (8, 0x34512));
    }
}
