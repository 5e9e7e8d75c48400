//! `memleak symbolize [--symfs DIR] [REPORT]`: names the frames of a report
//! made with `--raw` on a device whose binaries are stripped.
//!
//! A raw frame records where an address lies, not what is there:
//! `[raw] 0xOFFSET BUILDID PATH` (file offset, GNU build ID, the path on
//! the device). Here each is looked up in an unstripped copy of the same
//! build: under DIR at the device's path, under DIR by its base name, any
//! ELF file under DIR with that build ID, then the path on this machine. A
//! candidate counts only if its build ID matches, so a copy of another
//! build never names a frame wrongly. Frames come out exactly as a live
//! report would print them (`symbolize::frames_at`); every other line of
//! the report is copied unchanged.
//!
//! A pprof profile written with `--pprof` and `--raw` (gzip or plain) is
//! named the same way, location by location from its mapping's path, build
//! ID and file offset, and written out as a profile again.

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};

use crate::elf::ElfSymbols;
use crate::error::{Error, Result};
use crate::pprof::Profile;
use crate::report::RAW_PREFIX;
use crate::symbolize::{self, source::SourceLines};

/// An object found for a raw frame.
struct Object {
    syms: ElfSymbols,
    lines: Option<SourceLines>,
}

/// Resolves raw frames, caching objects by (build ID, path).
pub struct Resolver {
    symfs: Option<PathBuf>,
    /// Also try the path on this machine (offline; live, the process's own
    /// view of its files is used instead).
    local: bool,
    /// Build ID (hex) -> path of an ELF file under symfs; built on first need.
    by_build_id: Option<HashMap<String, PathBuf>>,
    objects: HashMap<(String, String), Option<Object>>,
}

/// Reads REPORT (or stdin) and writes it with named frames.
/// `out_is_terminal`: a profile (binary) is not written to a terminal.
pub fn run(
    symfs: Option<&str>,
    report: Option<&str>,
    out: &mut impl Write,
    out_is_terminal: bool,
) -> Result<()> {
    let mut input: Box<dyn BufRead> = match report {
        Some(path) => Box::new(io::BufReader::new(
            std::fs::File::open(path).map_err(|e| Error::input(path, e))?,
        )),
        None => Box::new(io::BufReader::new(io::stdin())),
    };
    if let Some(dir) = symfs {
        if !Path::new(dir).is_dir() {
            return Err(Error::Other(format!("--symfs {dir}: not a directory")));
        }
    }
    let mut resolver = Resolver::new(symfs, true);
    // A text report starts with text; a profile with a gzip header or its
    // first field, sample_type (field 1, length-delimited: 0x0a).
    let first = input
        .fill_buf()
        .map_err(|e| Error::input("the report", e))?;
    if matches!(first.first(), Some(0x1f | 0x0a)) {
        let mut data = Vec::new();
        input
            .read_to_end(&mut data)
            .map_err(|e| Error::input("the profile", e))?;
        if out_is_terminal {
            return Err(Error::other(
                "the named profile is binary: redirect it to a file (> named.pb.gz)",
            ));
        }
        return symbolize_profile(&data, &mut resolver, out);
    }
    // Lines as bytes: a report may hold paths or names that are not
    // UTF-8; every line but a raw frame's is copied through unchanged.
    for line in input.split(b'\n') {
        let line = line.map_err(|e| Error::input("the report", e))?;
        let frames = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.strip_prefix("\t\t"))
            .and_then(|f| f.strip_prefix(RAW_PREFIX))
            .map(|raw| resolver.frames(raw));
        let written = match frames {
            Some(frames) => frames.iter().try_for_each(|f| writeln!(out, "\t\t{f}")),
            None => out.write_all(&line).and_then(|_| out.write_all(b"\n")),
        };
        written.map_err(unnamed_output)?;
    }
    out.flush().map_err(unnamed_output)
}

/// Names a profile's locations and writes it (gzip) to `out`.
fn symbolize_profile(data: &[u8], resolver: &mut Resolver, out: &mut impl Write) -> Result<()> {
    let mut profile = Profile::from_file_bytes(data)?;
    profile.name_locations(|path, id, offset| {
        let id = match id.map(unhex) {
            Some(None) => return None, // not a build ID we can compare
            Some(Some(bytes)) => Some(bytes),
            None => None,
        };
        resolver.frames_from_symfs(offset, id.as_deref(), path)
    });
    out.write_all(&profile.to_file_bytes())
        .and_then(|()| out.flush())
        .map_err(unnamed_output)
}

/// Writing the named report or profile failed; said as the bare reason,
/// as it always was (a closed stdout is recognised by its kind in main).
fn unnamed_output(err: io::Error) -> Error {
    Error::Output { what: None, err }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// `0x1149 3fa2... /usr/bin/prog` -> (offset, build ID or None, path).
fn parse_raw(raw: &str) -> Option<(u64, Option<&str>, &str)> {
    let mut parts = raw.splitn(3, ' ');
    let offset = u64::from_str_radix(parts.next()?.strip_prefix("0x")?, 16).ok()?;
    let id = parts.next()?;
    let path = parts.next()?;
    let id = (id != "-").then_some(id);
    if id.is_some_and(|id| id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()))
        || path.is_empty()
    {
        return None;
    }
    Some((offset, id, path))
}

impl Resolver {
    pub fn new(symfs: Option<&str>, local: bool) -> Resolver {
        Resolver {
            symfs: symfs.map(PathBuf::from),
            local,
            by_build_id: None,
            objects: HashMap::new(),
        }
    }

    /// The frames of file offset `offset` of the file `path` with build ID
    /// `id`, if a copy has them: under symfs, or (offline) this machine's.
    pub fn frames_from_symfs(
        &mut self,
        offset: u64,
        id: Option<&[u8]>,
        path: &str,
    ) -> Option<Vec<symbolize::Frame>> {
        let id = id.map(hex);
        let key = (id.clone().unwrap_or_else(|| "-".into()), path.to_string());
        if !self.objects.contains_key(&key) {
            let found = self.find(id.as_deref(), path);
            self.objects.insert(key.clone(), found);
        }
        let obj = self.objects[&key].as_ref()?;
        let module = path.rsplit('/').next().unwrap_or(path).to_string();
        Some(symbolize::frames_at(
            &obj.syms,
            obj.lines.as_ref(),
            Some(module),
            offset,
        ))
    }

    fn frames(&mut self, raw: &str) -> Vec<symbolize::Frame> {
        let Some((offset, id, path)) = parse_raw(raw) else {
            // Not something --raw wrote: keep it visible as it was.
            return vec![symbolize::Frame {
                symbol: Some(format!("{RAW_PREFIX}{raw}")),
                inlined: true,
                ..Default::default()
            }];
        };
        let module = path.rsplit('/').next().unwrap_or(path).to_string();
        let key = (id.unwrap_or("-").to_string(), path.to_string());
        if !self.objects.contains_key(&key) {
            let found = self.find(id, path);
            self.objects.insert(key.clone(), found);
        }
        match &self.objects[&key] {
            Some(obj) => symbolize::frames_at(&obj.syms, obj.lines.as_ref(), Some(module), offset),
            None => vec![symbolize::Frame {
                module: Some(module),
                ..Default::default()
            }],
        }
    }

    /// The first candidate file whose build ID is `id` (any, without one).
    fn find(&mut self, id: Option<&str>, path: &str) -> Option<Object> {
        let mut candidates: Vec<(PathBuf, String)> = Vec::new();
        if let Some(dir) = &self.symfs {
            let root = dir.display().to_string();
            candidates.push((dir.join(path.trim_start_matches('/')), root.clone()));
            candidates.push((
                dir.join(path.rsplit('/').next().unwrap_or(path)),
                root.clone(),
            ));
            if let Some(found) = id.and_then(|id| self.index().get(id).cloned()) {
                candidates.push((found, root));
            }
        }
        if self.local {
            candidates.push((PathBuf::from(path), String::new()));
        }
        candidates.into_iter().find_map(|(candidate, root)| {
            let file = crate::elf::open(&candidate).ok()?;
            let syms = symbolize::symbols_under(&file, &candidate.display().to_string(), &root)?;
            if let Some(id) = id {
                if hex(syms.build_id()?) != id {
                    return None;
                }
            }
            crate::verbose!("{path}: symbols from {}", candidate.display());
            let lines =
                symbolize::source_lines_under(&file, &candidate.display().to_string(), &root);
            Some(Object { syms, lines })
        })
    }

    /// Build ID -> file, for every ELF file under symfs (walked once).
    fn index(&mut self) -> &HashMap<String, PathBuf> {
        let symfs = &self.symfs;
        self.by_build_id.get_or_insert_with(|| {
            let mut map = HashMap::new();
            if let Some(dir) = symfs {
                walk(dir, 0, &mut |path| {
                    let Ok(bytes) = std::fs::read(path) else {
                        return;
                    };
                    if bytes.starts_with(b"\x7fELF") {
                        let file = crate::elf::ElfFile::from_bytes(bytes, path);
                        if let Some(id) = file.build_id() {
                            map.entry(hex(&id)).or_insert_with(|| path.to_path_buf());
                        }
                    }
                });
            }
            map
        })
    }
}

/// Calls `visit` for each regular file under `dir`, not following symbolic
/// links, at most 16 directories deep.
fn walk(dir: &Path, depth: u32, visit: &mut impl FnMut(&Path)) {
    if depth > 16 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&entry.path(), depth + 1, visit);
        } else if kind.is_file() {
            visit(&entry.path());
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_frame_lines() {
        assert_eq!(
            parse_raw("0x1149 3fa2 /usr/bin/prog"),
            Some((0x1149, Some("3fa2"), "/usr/bin/prog"))
        );
        assert_eq!(
            parse_raw("0x10 - /opt/my app/bin"),
            Some((0x10, None, "/opt/my app/bin"))
        );
        assert_eq!(parse_raw("1149 3fa2 /p"), None, "offset without 0x");
        assert_eq!(parse_raw("0x10 zz /p"), None, "build ID not hex");
        assert_eq!(parse_raw("0x10 ab"), None, "no path");
        assert_eq!(parse_raw(""), None);
    }

    /// Lines that are not raw frames pass through; a raw frame of this
    /// test binary is named from the binary itself.
    #[test]
    fn names_frames_of_a_real_file() {
        let exe = std::fs::read_link("/proc/self/exe")
            .unwrap()
            .display()
            .to_string();
        let bytes = std::fs::read(&exe).unwrap();
        let syms = crate::elf::symbols::parse(&bytes).unwrap();
        let addr = syms.symbol_address("main").expect("main");
        let offset = syms.vaddr_to_file_offset(addr).unwrap() + 1;
        let id = syms.build_id().map(hex).unwrap_or_else(|| "-".into());
        let report = format!("[12:00:00] Top 1 stacks with outstanding allocations:\n\t16 bytes in 1 allocations from stack\n\t\t{RAW_PREFIX}{offset:#x} {id} {exe}\n\n");
        let dir = std::env::temp_dir().join(format!("memleak-offline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("report");
        std::fs::write(&input, &report).unwrap();
        let mut out = Vec::new();
        run(None, Some(input.to_str().unwrap()), &mut out, false).unwrap();
        let out = String::from_utf8(out).unwrap();
        let module = exe.rsplit('/').next().unwrap();
        assert!(out.contains(&format!("\t\tmain+0x1 [{module}]")), "{out}");
        assert!(out.starts_with("[12:00:00] Top 1 stacks"), "{out}");
        assert!(run(
            Some("/no/such/dir"),
            Some(input.to_str().unwrap()),
            &mut Vec::new(),
            false
        )
        .unwrap_err()
        .to_string()
        .contains("not a directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
