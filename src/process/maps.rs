//! /proc/PID/maps: which file backs each address range of a process.
//!
//! The parser takes text, not a path, so tests feed it real files and
//! hand-made edge cases alike.

/// One line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    /// `rwxp` / `r--s` …, as printed.
    pub perms: String,
    /// Offset in the backing file of `start`.
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// The path column, with a trailing ` (deleted)` removed; empty for
    /// anonymous mappings. Pseudo paths such as `[heap]` or
    /// `/memfd:x` are kept as printed.
    pub path: String,
    /// The kernel marked the file as deleted.
    pub deleted: bool,
}

impl MapEntry {
    pub fn is_executable(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }

    /// Backed by a regular file (inode != 0 and an absolute path), as opposed
    /// to anonymous memory, `[heap]`, `[vdso]` or the like.
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }

    /// The name a report shows for the module: the file's base name.
    pub fn module_name(&self) -> &str {
        match self.path.rfind('/') {
            Some(i) => &self.path[i + 1..],
            None => &self.path,
        }
    }

    #[cfg(test)]
    /// The file offset that `addr` (inside this mapping) corresponds to.
    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.start + self.offset
    }
}

/// Parses the whole text of a maps file. Lines that do not parse are
/// skipped: the kernel's format is fixed, so a bad line means a truncated
/// read, and the rest is still useful.
pub fn parse(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// Parses one line: `start-end perms offset major:minor inode   path`.
pub fn parse_line(line: &str) -> Option<MapEntry> {
    let mut rest = line;
    let mut field = || -> Option<&str> {
        let trimmed = rest.trim_start_matches(' ');
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (word, tail) = trimmed.split_at(end);
        rest = tail;
        if word.is_empty() {
            None
        } else {
            Some(word)
        }
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end < start || perms.len() != 4 {
        return None;
    }
    let offset = u64::from_str_radix(offset, 16).ok()?;
    let (major, minor) = dev.split_once(':')?;
    let dev_major = u32::from_str_radix(major, 16).ok()?;
    let dev_minor = u32::from_str_radix(minor, 16).ok()?;
    let inode = inode.parse().ok()?;
    // The path is everything after the padding; it may itself contain
    // spaces, so it is not split further.
    let mut path = rest.trim_start_matches(' ').to_string();
    let mut deleted = false;
    if let Some(stripped) = path.strip_suffix(" (deleted)") {
        path = stripped.to_string();
        deleted = true;
    }
    Some(MapEntry {
        start,
        end,
        perms: perms.to_string(),
        offset,
        dev_major,
        dev_minor,
        inode,
        path,
        deleted,
    })
}

/// The mapping that contains `addr`, from entries sorted by address (as the
/// kernel prints them).
pub fn find(entries: &[MapEntry], addr: u64) -> Option<&MapEntry> {
    let i = entries.partition_point(|e| e.end <= addr);
    entries.get(i).filter(|e| e.start <= addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_self_maps() {
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let entries = parse(&text);
        assert_eq!(entries.len(), text.lines().count());
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_str().unwrap();
        let here = parses_real_self_maps as *const () as usize as u64;
        let entry = find(&entries, here).expect("own code is mapped");
        assert_eq!(entry.path, exe);
        assert!(entry.is_executable() && entry.is_file());
        assert!(entries.iter().any(|e| e.path == "[stack]" && !e.is_file()));
    }

    #[test]
    fn odd_paths() {
        let line = "7f00-7f10 r-xp 00001000 fd:01 1234   /tmp/dir with spaces/lib x.so (deleted)";
        let e = parse_line(line).unwrap();
        assert_eq!(e.path, "/tmp/dir with spaces/lib x.so");
        assert!(e.deleted);
        assert_eq!(e.module_name(), "lib x.so");
        assert_eq!(
            (e.start, e.end, e.offset, e.inode),
            (0x7f00, 0x7f10, 0x1000, 1234)
        );
        assert_eq!((e.dev_major, e.dev_minor), (0xfd, 1));

        let anon = parse_line("7f00-7f10 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(anon.path, "");
        assert!(!anon.is_file());

        let memfd = parse_line("7f00-7f10 r-xp 00000000 00:01 77 /memfd:jit (deleted)").unwrap();
        assert_eq!(memfd.path, "/memfd:jit");
        assert!(memfd.deleted && memfd.is_file());
    }

    #[test]
    fn bad_lines_are_skipped() {
        for line in [
            "",
            "zzzz-7f10 r-xp 00000000 00:00 0",
            "7f10-7f00 r-xp 00000000 00:00 0",
            "7f00-7f10 r-xp 00000000 00:00",
            "7f00-7f10 rx 00000000 00:00 0",
            "7f00 r-xp 00000000 00:00 0",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn find_uses_half_open_ranges() {
        let entries = parse("1000-2000 r-xp 0 00:00 1 /a\n2000-3000 r-xp 0 00:00 2 /b\n");
        assert_eq!(find(&entries, 0xfff), None);
        assert_eq!(find(&entries, 0x1000).unwrap().path, "/a");
        assert_eq!(find(&entries, 0x2000).unwrap().path, "/b");
        assert_eq!(find(&entries, 0x3000), None);
    }
}
