//! The one ELF layer: a file read once per run and kept (by device and
//! inode), its headers parsed once, and what the rest of memleak asks of
//! it: sections by name, file offset <-> virtual address, symbols by
//! address and by name ([`symbols`]), the build ID and .gnu_debuglink.
//!
//! The allocator side (which file provides malloc, and where) and the
//! symbolizer (names, CFI, source lines) both open files here, so a
//! library that is both traced and symbolized is read once. Files are
//! read, not memory-mapped: a file truncated or rewritten in place under
//! a mapping would kill memleak with SIGBUS at its next look (the unit
//! test of debug files does just that to a debug file).
//!
//! Nothing here knows about processes: callers that find files through
//! /proc (see `crate::process`) look them up by the (device, inode) their
//! maps line gives, then open and [`adopt`] them.

pub mod symbols;

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use goblin::container::{Container, Ctx};
use goblin::elf::program_header::{PF_X, PT_LOAD, PT_NOTE};
use goblin::elf::section_header::{SHT_NOBITS, SHT_NOTE, SHT_PROGBITS};
use goblin::elf::{Elf, ProgramHeader, SectionHeader};

pub use symbols::ElfSymbols;

/// Files larger than this are not read into memory.
pub const MAX_ELF_SIZE: u64 = 2 << 30;

/// A file independent of its path: (device major, device minor, inode),
/// as /proc/PID/maps prints them.
pub type FileId = (u32, u32, u64);

/// One ELF file's bytes and parsed headers.
pub struct ElfFile {
    path: PathBuf,
    bytes: Vec<u8>,
    headers: Result<Headers, String>,
    /// Size and modification time when read: a file rewritten in place,
    /// or a new file that took a deleted one's inode, is not taken for it.
    stamp: Option<(u64, i64, i64)>,
}

/// The headers, parsed once when the file is read.
struct Headers {
    ctx: Ctx,
    machine: u16,
    entry: u64,
    phdrs: Vec<ProgramHeader>,
    /// Empty when the section headers are missing or cut off (sstrip, a
    /// truncated copy): the segments still serve then.
    shdrs: Vec<SectionHeader>,
    shstrndx: usize,
    segments: Segments,
}

/// One section's link-time address and contents.
#[derive(Debug, Clone, Copy)]
pub struct Section<'a> {
    pub addr: u64,
    pub flags: u64,
    /// Empty for SHT_NOBITS (a debug file's copy of .text, .bss).
    pub data: &'a [u8],
    pub nobits: bool,
}

impl ElfFile {
    /// Parses `bytes` read from `path`; an unusable header is kept as the
    /// error the parts that need it return.
    pub fn from_bytes(bytes: Vec<u8>, path: impl Into<PathBuf>) -> ElfFile {
        ElfFile::new(bytes, path.into())
    }

    fn new(bytes: Vec<u8>, path: PathBuf) -> ElfFile {
        let headers = Headers::parse(&bytes);
        ElfFile {
            path,
            bytes,
            headers,
            stamp: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn headers(&self) -> Option<&Headers> {
        self.headers.as_ref().ok()
    }

    /// Why the headers cannot be used, if they cannot.
    pub fn header_error(&self) -> Option<&str> {
        self.headers.as_ref().err().map(String::as_str)
    }

    /// The whole file through goblin, for the dynamic-linking facts
    /// (interpreter, NEEDED, RPATH, symbol versions) the allocator reads.
    pub fn goblin(&self) -> Result<Elf<'_>, goblin::error::Error> {
        Elf::parse(&self.bytes)
    }

    pub fn machine(&self) -> Option<u16> {
        self.headers().map(|h| h.machine)
    }

    pub fn is_little_endian(&self) -> bool {
        self.headers().is_none_or(|h| h.ctx.is_little_endian())
    }

    pub fn is_64(&self) -> bool {
        self.headers()
            .is_some_and(|h| h.ctx.container == Container::Big)
    }

    /// The file offset of the entry point (e_entry), through the PT_LOAD
    /// that maps it.
    pub fn entry_file_offset(&self) -> Option<u64> {
        let entry = self.headers()?.entry;
        self.segments().vaddr_to_offset(entry, Through::Any)
    }

    /// The loadable segments (empty when the headers are unusable).
    pub fn segments(&self) -> &Segments {
        static NONE: Segments = Segments { loads: Vec::new() };
        self.headers().map_or(&NONE, |h| &h.segments)
    }

    /// The first section called `name`.
    pub fn section(&self, name: &str) -> Option<Section<'_>> {
        let h = self.headers()?;
        let names = h
            .shdrs
            .get(h.shstrndx)
            .and_then(|s| section_bytes(&self.bytes, s))?;
        let sh = h
            .shdrs
            .iter()
            .find(|s| c_str(names, s.sh_name) == Some(name))?;
        let nobits = sh.sh_type == SHT_NOBITS;
        let data = if nobits {
            &[]
        } else {
            section_bytes(&self.bytes, sh)?
        };
        Some(Section {
            addr: sh.sh_addr,
            flags: sh.sh_flags,
            data,
            nobits,
        })
    }

    /// The GNU build-id note, from a PT_NOTE segment or a note section.
    pub fn build_id(&self) -> Option<Vec<u8>> {
        let h = self.headers()?;
        find_build_id(&self.bytes, &h.phdrs, &h.shdrs, h.ctx.is_little_endian())
    }

    /// .gnu_debuglink: the separate debug file's name and its CRC-32.
    pub fn debuglink(&self) -> Option<(String, u32)> {
        let h = self.headers()?;
        let names = h
            .shdrs
            .get(h.shstrndx)
            .and_then(|s| section_bytes(&self.bytes, s))?;
        h.shdrs
            .iter()
            .filter(|s| s.sh_type == SHT_PROGBITS)
            .find(|s| c_str(names, s.sh_name) == Some(".gnu_debuglink"))
            .and_then(|s| parse_debuglink(section_bytes(&self.bytes, s)?, h.ctx.is_little_endian()))
    }

    /// The function and object symbols (see [`symbols`]).
    pub fn symbols(&self) -> Result<ElfSymbols, String> {
        symbols::read(self)
    }
}

impl Headers {
    fn parse(bytes: &[u8]) -> Result<Headers, String> {
        let header = Elf::parse_header(bytes).map_err(|e| format!("ELF header: {e}"))?;
        let container = header.container().map_err(|e| e.to_string())?;
        let endian = header.endianness().map_err(|e| e.to_string())?;
        let ctx = Ctx::new(container, endian);
        let phdrs =
            ProgramHeader::parse(bytes, to_usize(header.e_phoff)?, header.e_phnum.into(), ctx)
                .map_err(|e| format!("program headers: {e}"))?;
        // Section headers sit at the end of the file, so a truncated file
        // loses them first; the segments are still worth keeping then.
        let shdrs = usize::try_from(header.e_shoff)
            .ok()
            .and_then(|off| SectionHeader::parse(bytes, off, header.e_shnum.into(), ctx).ok())
            .unwrap_or_default();
        let segments = Segments {
            loads: phdrs
                .iter()
                .filter(|p| p.p_type == PT_LOAD)
                .map(|p| Load {
                    offset: p.p_offset,
                    vaddr: p.p_vaddr,
                    filesz: p.p_filesz,
                    memsz: p.p_memsz,
                    exec: p.p_flags & PF_X != 0,
                })
                .collect(),
        };
        Ok(Headers {
            ctx,
            machine: header.e_machine,
            entry: header.e_entry,
            phdrs,
            shdrs,
            shstrndx: usize::from(header.e_shstrndx),
            segments,
        })
    }
}

/// One PT_LOAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub exec: bool,
}

/// The PT_LOAD segments of a file, in file order: the one place a file
/// offset (what /proc/PID/maps and uprobes speak) becomes a link-time
/// virtual address (what symbols, CFI and DWARF speak) and back. Right
/// for ET_EXEC, PIE and shared objects alike, and for segments whose
/// p_offset differs from p_vaddr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Segments {
    loads: Vec<Load>,
}

/// Which segments a conversion may go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Through {
    /// Any loadable segment.
    Any,
    /// Only executable ones: where a uprobe may be placed.
    Code,
}

impl Segments {
    pub fn new(loads: Vec<Load>) -> Segments {
        Segments { loads }
    }

    pub fn loads(&self) -> &[Load] {
        &self.loads
    }

    pub fn is_empty(&self) -> bool {
        self.loads.is_empty()
    }

    /// Link-time virtual address of a file offset, through the PT_LOAD
    /// that holds it in file-backed bytes, an executable one first (the
    /// last page of one segment may be mapped by the next as well).
    pub fn offset_to_vaddr(&self, file_offset: u64) -> Option<u64> {
        let inside = |l: &&Load| file_offset >= l.offset && file_offset - l.offset < l.filesz;
        let l = self
            .loads
            .iter()
            .filter(|l| l.exec)
            .find(inside)
            .or_else(|| self.loads.iter().find(inside))?;
        (file_offset - l.offset).checked_add(l.vaddr)
    }

    /// File offset of a link-time virtual address, through the first
    /// PT_LOAD (of the kind `through` asks for) holding it in file-backed
    /// bytes.
    pub fn vaddr_to_offset(&self, vaddr: u64, through: Through) -> Option<u64> {
        let l = self
            .loads
            .iter()
            .filter(|l| through == Through::Any || l.exec)
            .find(|l| vaddr >= l.vaddr && vaddr - l.vaddr < l.filesz)?;
        (vaddr - l.vaddr).checked_add(l.offset)
    }

    /// Both addresses lie in one segment's memory image (no segments: all
    /// addresses count as one).
    pub fn same_segment(&self, a: u64, b: u64) -> bool {
        if self.loads.is_empty() {
            return true;
        }
        let seg = |x: u64| {
            self.loads
                .iter()
                .position(|l| x >= l.vaddr && x - l.vaddr < l.memsz)
        };
        seg(a).is_some() && seg(a) == seg(b)
    }
}

/// The files read so far in this run, by (device, inode). A file stays
/// until memleak exits: a library that was traced is symbolized later,
/// and one unmapped meanwhile still names the addresses it had.
fn cache() -> &'static Mutex<HashMap<FileId, Arc<ElfFile>>> {
    static CACHE: OnceLock<Mutex<HashMap<FileId, Arc<ElfFile>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The file known as `id`, if it was read already and is unchanged since
/// (`meta`: the file's stat now, taken without opening it).
pub fn cached(id: FileId, meta: &Metadata) -> Option<Arc<ElfFile>> {
    let cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    cache
        .get(&id)
        .filter(|f| f.stamp == Some(stamp(meta)))
        .cloned()
}

/// Remembers `file` under another identity too (a maps line may show
/// other device numbers than stat, as on overlayfs and btrfs).
pub fn alias(id: FileId, file: &Arc<ElfFile>) {
    let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    cache.entry(id).or_insert_with(|| Arc::clone(file));
}

/// A file's identity from its metadata.
pub fn file_id(meta: &Metadata) -> FileId {
    let dev = meta.dev() as libc::dev_t;
    (libc::major(dev), libc::minor(dev), meta.ino())
}

fn stamp(meta: &Metadata) -> (u64, i64, i64) {
    (meta.len(), meta.mtime(), meta.mtime_nsec())
}

/// Reads an opened regular file (`meta`: its fstat) and keeps it for the
/// run; the copy already read is returned when there is one.
pub fn adopt(
    mut file: File,
    meta: &Metadata,
    path: impl Into<PathBuf>,
) -> io::Result<Arc<ElfFile>> {
    let id = file_id(meta);
    if let Some(known) = cached(id, meta) {
        return Ok(known);
    }
    if meta.len() > MAX_ELF_SIZE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "file too large"));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    let mut elf = ElfFile::new(bytes, path.into());
    elf.stamp = Some(stamp(meta));
    let elf = Arc::new(elf);
    let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    cache.insert(id, Arc::clone(&elf));
    Ok(elf)
}

/// Opens the regular file at `path`, read at most once per run (a file
/// already read under any name is found by stat, without opening it).
/// Device nodes are refused before opening: /dev/zero would never finish.
pub fn open(path: impl AsRef<Path>) -> io::Result<Arc<ElfFile>> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        // What read(2) would have said.
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if let Some(known) = cached(file_id(&meta), &meta) {
        return Ok(known);
    }
    let file = File::open(path)?;
    let meta = file.metadata()?;
    adopt(file, &meta, path)
}

fn to_usize(x: u64) -> Result<usize, String> {
    usize::try_from(x).map_err(|_| format!("offset {x:#x} too large"))
}

pub(crate) fn section_bytes<'a>(bytes: &'a [u8], sh: &SectionHeader) -> Option<&'a [u8]> {
    let start = usize::try_from(sh.sh_offset).ok()?;
    let len = usize::try_from(sh.sh_size).ok()?;
    bytes.get(start..start.checked_add(len)?)
}

/// The NUL-terminated UTF-8 string at `off`; `None` if out of bounds,
/// unterminated or not UTF-8 (such a name is skipped, not the whole table).
pub(crate) fn c_str(table: &[u8], off: usize) -> Option<&str> {
    let tail = table.get(off..)?;
    let end = tail.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&tail[..end]).ok()
}

const NT_GNU_BUILD_ID: u32 = 3;

fn find_build_id(
    bytes: &[u8],
    phdrs: &[ProgramHeader],
    shdrs: &[SectionHeader],
    le: bool,
) -> Option<Vec<u8>> {
    let from_segments = phdrs.iter().filter(|p| p.p_type == PT_NOTE).find_map(|p| {
        let start = usize::try_from(p.p_offset).ok()?;
        let data = bytes.get(start..start.checked_add(usize::try_from(p.p_filesz).ok()?)?)?;
        build_id_note(data, p.p_align, le)
    });
    from_segments.or_else(|| {
        shdrs
            .iter()
            .filter(|s| s.sh_type == SHT_NOTE)
            .find_map(|s| build_id_note(section_bytes(bytes, s)?, s.sh_addralign, le))
    })
}

/// Walks the notes in `data` (namesz, descsz, type, name, desc; name and
/// desc padded to the note alignment, 4 or 8).
fn build_id_note(mut data: &[u8], align: u64, le: bool) -> Option<Vec<u8>> {
    let align = if align == 8 { 8 } else { 4 };
    let pad = |n: usize| n.checked_add(align - 1).map(|n| n & !(align - 1));
    let word = |b: &[u8], i: usize| -> Option<u32> {
        let w: [u8; 4] = b.get(i..i + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        })
    };
    while data.len() >= 12 {
        let namesz = word(data, 0)? as usize;
        let descsz = word(data, 4)? as usize;
        let kind = word(data, 8)?;
        let desc_start = 12usize.checked_add(pad(namesz)?)?;
        let name = data.get(12..12usize.checked_add(namesz)?)?;
        let desc = data.get(desc_start..desc_start.checked_add(descsz)?)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return Some(desc.to_vec());
        }
        data = data.get(desc_start.checked_add(pad(descsz)?)?..)?;
    }
    None
}

/// .gnu_debuglink's contents: a NUL-terminated file name, padding to a
/// multiple of 4, then the CRC-32 of the debug file.
pub(crate) fn parse_debuglink(data: &[u8], le: bool) -> Option<(String, u32)> {
    let end = data.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&data[..end]).ok()?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let crc_at = (end + 1).checked_add(3)? & !3;
    let crc: [u8; 4] = data.get(crc_at..crc_at + 4)?.try_into().ok()?;
    let crc = if le {
        u32::from_le_bytes(crc)
    } else {
        u32::from_be_bytes(crc)
    };
    Some((name.to_string(), crc))
}

#[cfg(test)]
mod tests;
