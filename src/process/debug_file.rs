//! Separate debug files: where the symbols of a stripped ELF file went.
//!
//! Distributions and firmware builds strip binaries and keep the symbols in
//! a second file (`objcopy --only-keep-debug`), found the way gdb finds it:
//! by build ID under /usr/lib/debug/.build-id/xx/rest.debug, or by the name
//! in the .gnu_debuglink section, next to the file, in its .debug/
//! directory, or under /usr/lib/debug plus the file's directory. A
//! candidate counts only if it matches (same build ID, or the CRC-32 the
//! link records), so a stale debug file is never used.

use std::sync::Arc;

use crate::elf::{self, ElfFile};

/// The directory debug files are installed under (libc6-dbg and the
/// like).
const DEBUG_DIR: &str = "/usr/lib/debug";

/// What an ELF file says about its debug file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DebugLinks {
    pub build_id: Option<Vec<u8>>,
    /// .gnu_debuglink: the debug file's name and its CRC-32.
    pub debuglink: Option<(String, u32)>,
}

/// Reads the build ID and .gnu_debuglink of an ELF file's bytes; missing
/// or damaged parts are simply absent.
pub fn links(bytes: &[u8]) -> DebugLinks {
    links_of(&ElfFile::from_bytes(bytes.to_vec(), ""))
}

/// [`links`] of a file already read.
pub fn links_of(file: &ElfFile) -> DebugLinks {
    DebugLinks {
        build_id: file.build_id(),
        debuglink: file.debuglink(),
    }
}

/// The debug file of the ELF file `file`, which lives at `path` as seen
/// under `root` ("" for our own view, "/proc/PID/root" for a process's).
/// Returns its path (under `root`) and the file, read once per run.
pub fn find(file: &ElfFile, path: &str, root: &str) -> Option<(String, Arc<ElfFile>)> {
    let links = links_of(file);
    if let Some(id) = links.build_id.as_ref().filter(|id| id.len() >= 2) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let candidate = format!(
            "{root}{DEBUG_DIR}/.build-id/{}/{}.debug",
            &hex[..2],
            &hex[2..]
        );
        if let Ok(debug) = elf::open(&candidate) {
            if debug.build_id().as_ref() == Some(id) {
                return Some((candidate, debug));
            }
        }
    }
    let (name, crc) = links.debuglink?;
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    let candidates = [
        format!("{root}{dir}/{name}"),
        format!("{root}{dir}/.debug/{name}"),
        format!("{root}{DEBUG_DIR}{dir}/{name}"),
    ];
    candidates.into_iter().find_map(|candidate| {
        // The file itself can carry its own name as the link; skip it.
        if candidate == format!("{root}{path}") {
            return None;
        }
        let debug = elf::open(&candidate).ok()?;
        (crc32(debug.bytes()) == crc).then_some((candidate, debug))
    })
}

/// The CRC-32 of .gnu_debuglink (zlib's: reflected, polynomial 0xedb88320).
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{compile, run, TempDir};
    use std::process::Command;

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414f_a339
        );
    }

    #[test]
    fn debuglink_section_contents() {
        assert_eq!(
            crate::elf::parse_debuglink(b"a.debug\0\x78\x56\x34\x12", true),
            Some(("a.debug".into(), 0x1234_5678))
        );
        // "abc\0" is already 4 bytes: no padding.
        assert_eq!(
            crate::elf::parse_debuglink(b"abc\0\x01\x00\x00\x00", true),
            Some(("abc".into(), 1))
        );
        assert_eq!(
            crate::elf::parse_debuglink(b"abc\0\x00\x00\x00\x01", false),
            Some(("abc".into(), 1))
        );
        assert_eq!(
            crate::elf::parse_debuglink(b"abc\0\x01\x00", true),
            None,
            "truncated CRC"
        );
        assert_eq!(
            crate::elf::parse_debuglink(b"abc", true),
            None,
            "no terminator"
        );
        assert_eq!(
            crate::elf::parse_debuglink(b"\0\0\0\0\0\0\0\0", true),
            None,
            "empty name"
        );
        assert_eq!(
            crate::elf::parse_debuglink(b"../x\0\0\0\0\0\0\0\0", true),
            None,
            "a path, not a name"
        );
    }

    #[test]
    fn garbage_has_no_links() {
        assert_eq!(links(b""), DebugLinks::default());
        assert_eq!(links(b"\x7fELF\x02\x01\x01"), DebugLinks::default());
    }

    /// A real stripped program and its debug file made by objcopy: found
    /// through .gnu_debuglink (next to it and in .debug/), never when
    /// the CRC does not match, and through the build-id tree.
    #[test]
    fn finds_objcopy_debug_files() {
        let tmp = TempDir::new("debugfile");
        let dir = tmp.path();
        let prog = compile(
            "gcc",
            &tmp,
            "p",
            "int leaf(void) { return 7; }\nint main(void) { return leaf(); }\n",
            &["-g", "-Wl,--build-id"],
        );
        run(Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&prog)
            .arg(dir.join("p.debug")));
        run(Command::new("strip").arg("--strip-all").arg(&prog));
        run(Command::new("objcopy")
            .arg("--add-gnu-debuglink=p.debug")
            .current_dir(dir)
            .arg(&prog));
        let bytes = std::fs::read(&prog).unwrap();
        let path = prog.as_str();

        let l = links(&bytes);
        assert_eq!(
            l.debuglink.as_ref().map(|(n, _)| n.as_str()),
            Some("p.debug")
        );
        assert_eq!(l.build_id.as_ref().map(Vec::len), Some(20));

        let file = ElfFile::from_bytes(bytes, path);
        let (found, debug) = find(&file, path, "").expect("next to the file");
        assert_eq!(found, dir.join("p.debug").to_str().unwrap());
        let syms = debug.symbols().unwrap();
        assert!(syms.symbol_address("leaf").is_some());

        std::fs::create_dir_all(dir.join(".debug")).unwrap();
        std::fs::rename(dir.join("p.debug"), dir.join(".debug/p.debug")).unwrap();
        assert_eq!(
            find(&file, path, "").unwrap().0,
            dir.join(".debug/p.debug").to_str().unwrap()
        );

        // Another file under the right name: the CRC refuses it.
        std::fs::write(dir.join(".debug/p.debug"), b"stale").unwrap();
        assert!(find(&file, path, "").is_none());

        // The build-id tree, under a root (as /proc/PID/root is used).
        let hex: String = l
            .build_id
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let root = dir.join("root");
        let tree = root.join(format!("usr/lib/debug/.build-id/{}", &hex[..2]));
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join(format!("{}.debug", &hex[2..])), debug.bytes()).unwrap();
        let (found, _) = find(&file, path, root.to_str().unwrap()).expect("by build id");
        assert!(found.ends_with(&format!("{}.debug", &hex[2..])), "{found}");
    }
}
