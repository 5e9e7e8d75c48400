//! The allocator of a program that has not started yet (memleak -c): predict
//! what the dynamic loader will load, in its order, and take the first
//! object defining malloc, as symbol lookup would.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use goblin::elf::header;

use super::elf::{self, ElfInfo};
use super::{base_name, io_msg, name_match, require_core, Allocator};

/// For a command about to be exec'd: the executable itself if it defines
/// malloc; else, for a musl program, its interpreter ld-musl-*.so.1 (musl's
/// libc is its loader); else the first object defining malloc among
/// LD_PRELOAD objects and the DT_NEEDED closure walked breadth-first, each
/// name resolved through DT_RPATH/DT_RUNPATH, LD_LIBRARY_PATH, ld.so.conf and
/// the default directories, skipping files of the wrong class or machine.
/// `exe_path` is the resolved path of the program (PATH search is done by
/// the caller). `obj_override` is -O OBJ: a path, or a name matched against
/// the objects the program loads ("c" meaning the C library).
pub fn for_executable(exe_path: &str, obj_override: Option<&str>) -> Result<Allocator, String> {
    let file = crate::elf::open(exe_path)
        .map_err(|e| format!("cannot read {exe_path}: {}", io_msg(&e)))?;
    let info = elf::inspect_file(&file, exe_path, "").map_err(|e| e.to_string())?;
    let search = Search::from_system(&info);
    resolve_with(exe_path, info, obj_override, search)
}

/// [`for_executable`] with an explicit search configuration (tests use it
/// to set LD_PRELOAD without touching the environment).
pub(crate) fn resolve_with(
    exe_path: &str,
    info: ElfInfo,
    obj_override: Option<&str>,
    search: Search,
) -> Result<Allocator, String> {
    let mut walk = Walk::new(exe_path, info, search);
    match obj_override {
        Some(obj) => walk.with_override(obj),
        None => walk.automatic(),
    }
}

/// Where the loader looks, apart from each object's own RPATH/RUNPATH.
#[derive(Debug, Clone, Default)]
pub(crate) struct Search {
    pub ld_library_path: Vec<String>,
    /// LD_PRELOAD, then /etc/ld.so.preload (glibc reads both).
    pub preload: Vec<String>,
    /// From ld.so.conf (glibc) or /etc/ld-musl-ARCH.path (musl).
    pub conf_dirs: Vec<String>,
    pub default_dirs: Vec<String>,
}

impl Search {
    pub(crate) fn from_system(exe: &ElfInfo) -> Search {
        let env_list = |var: &str, seps: &[char]| -> Vec<String> {
            std::env::var(var)
                .unwrap_or_default()
                .split(seps)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let mut search = Search {
            ld_library_path: env_list("LD_LIBRARY_PATH", &[':', ';']),
            preload: env_list("LD_PRELOAD", &[':', ' ']),
            ..Search::default()
        };
        if let Some(arch) = musl_arch(exe) {
            let path = format!("/etc/ld-musl-{arch}.path");
            if let Ok(text) = fs::read_to_string(&path) {
                search.conf_dirs = split_dirs(&text);
            }
            search.default_dirs = ["/lib", "/usr/local/lib", "/usr/lib"]
                .map(String::from)
                .to_vec();
        } else {
            if let Ok(text) = fs::read_to_string("/etc/ld.so.preload") {
                search
                    .preload
                    .extend(text.split_whitespace().map(str::to_string));
            }
            ld_so_conf(Path::new("/etc/ld.so.conf"), 0, &mut search.conf_dirs);
            search.default_dirs = default_dirs(exe.machine, exe.is_64);
        }
        search
    }
}

/// The ARCH of ld-musl-ARCH.so.1 when that is the program's interpreter.
fn musl_arch(exe: &ElfInfo) -> Option<&str> {
    base_name(exe.interp.as_deref()?)
        .strip_prefix("ld-musl-")?
        .strip_suffix(".so.1")
}

/// A loaded (or about to be loaded) object.
struct Obj {
    path: String,
    info: ElfInfo,
}

/// One pending DT_NEEDED or LD_PRELOAD name.
struct Pending {
    name: String,
    /// Index into `Walk::objs` of the object that needs it.
    requester: usize,
    preload: bool,
}

/// A breadth-first walk over what the loader would load.
struct Walk {
    /// objs[0] is the executable.
    objs: Vec<Obj>,
    exe_origin: String,
    search: Search,
    queue: VecDeque<Pending>,
    /// NEEDED names and sonames already satisfied: the loader loads a name once.
    names: HashSet<String>,
    /// Canonical paths already loaded, for the same file under two names.
    paths: HashSet<PathBuf>,
    /// Names that resolved to nothing, for the error message.
    missing: Vec<String>,
    musl: bool,
}

impl Walk {
    fn new(exe_path: &str, info: ElfInfo, search: Search) -> Walk {
        let canonical = fs::canonicalize(exe_path).unwrap_or_else(|_| PathBuf::from(exe_path));
        // The loader takes the main program's $ORIGIN from the real path
        // (/proc/self/exe), unlike libraries' which come from the path found.
        let exe_origin = parent_dir(&canonical.to_string_lossy());
        let musl = musl_arch(&info).is_some();
        let mut queue = VecDeque::new();
        for name in &search.preload {
            queue.push_back(Pending {
                name: name.clone(),
                requester: 0,
                preload: true,
            });
        }
        for name in &info.needed {
            queue.push_back(Pending {
                name: name.clone(),
                requester: 0,
                preload: false,
            });
        }
        let mut paths = HashSet::new();
        paths.insert(canonical);
        Walk {
            objs: vec![Obj {
                path: exe_path.to_string(),
                info,
            }],
            exe_origin,
            search,
            queue,
            names: HashSet::new(),
            paths,
            missing: Vec::new(),
            musl,
        }
    }

    /// Loads the next object in breadth-first order and returns its index,
    /// and whether it came from LD_PRELOAD.
    fn next(&mut self) -> Option<(usize, bool)> {
        while let Some(p) = self.queue.pop_front() {
            if self.names.contains(&p.name) || (self.musl && musl_builtin(&p.name)) {
                continue;
            }
            let Some((path, info)) = self.resolve(&p.name, p.requester) else {
                self.missing.push(p.name);
                continue;
            };
            self.names.insert(p.name);
            let canonical = fs::canonicalize(&path).unwrap_or_else(|_| PathBuf::from(&path));
            if !self.paths.insert(canonical) {
                continue;
            }
            if let Some(so) = &info.soname {
                self.names.insert(so.clone());
            }
            let idx = self.objs.len();
            for name in &info.needed {
                self.queue.push_back(Pending {
                    name: name.clone(),
                    requester: idx,
                    preload: false,
                });
            }
            self.objs.push(Obj { path, info });
            return Some((idx, p.preload));
        }
        None
    }

    /// Directories searched for a NEEDED `name` of objs[requester], in the
    /// loader's order.
    fn dirs_for(&self, requester: usize) -> Vec<String> {
        let req = &self.objs[requester];
        let exe = &self.objs[0];
        let origin = if requester == 0 {
            self.exe_origin.clone()
        } else {
            parent_dir(&req.path)
        };
        let mut dirs = Vec::new();
        // DT_RPATH counts only when there is no DT_RUNPATH; the executable's
        // RPATH also applies to everything it loads.
        if req.info.runpath.is_empty() {
            dirs.extend(expand_all(&req.info.rpath, &origin, &req.info));
            if requester != 0 && exe.info.runpath.is_empty() {
                dirs.extend(expand_all(&exe.info.rpath, &self.exe_origin, &exe.info));
            }
        }
        dirs.extend(self.search.ld_library_path.iter().cloned());
        dirs.extend(expand_all(&req.info.runpath, &origin, &req.info));
        dirs.extend(self.search.conf_dirs.iter().cloned());
        dirs.extend(self.search.default_dirs.iter().cloned());
        dirs
    }

    /// The file `name` resolves to, skipping anything that is not an ELF
    /// object of the executable's class and machine (as the loader does).
    fn resolve(&self, name: &str, requester: usize) -> Option<(String, ElfInfo)> {
        let candidates = if name.contains('/') {
            vec![name.to_string()]
        } else {
            self.dirs_for(requester)
                .iter()
                .map(|d| join(d, name))
                .collect()
        };
        candidates.into_iter().find_map(|path| {
            let info = self.read_compatible(&path)?;
            Some((path, info))
        })
    }

    fn read_compatible(&self, path: &str) -> Option<ElfInfo> {
        if !fs::metadata(path).ok()?.is_file() {
            return None;
        }
        let file = crate::elf::open(path).ok()?;
        let info = elf::inspect_file(&file, path, "").ok()?;
        let exe = &self.objs[0].info;
        (info.is_64 == exe.is_64 && info.machine == exe.machine).then_some(info)
    }

    fn automatic(&mut self) -> Result<Allocator, String> {
        let exe_path = self.objs[0].path.clone();
        let info = &self.objs[0].info;
        match require_core(&exe_path, info) {
            Ok(()) => {
                return Ok(self.chosen(
                    0,
                    "the executable itself defines malloc (statically linked or its own allocator)",
                ))
            }
            // A static executable loads nothing else: why it fails is the
            // whole story (stripped, or only IFUNCs).
            Err(e) if info.interp.is_none() && info.needed.is_empty() => return Err(e),
            Err(_) => {}
        }
        let mut interp_checked = false;
        loop {
            // Preloaded objects interpose even on musl, so they are checked
            // before musl's built-in libc.
            let next = self.next();
            if !interp_checked && next.is_none_or(|(_, preload)| !preload) {
                interp_checked = true;
                if let Some(a) = self.musl_interp()? {
                    return Ok(a);
                }
            }
            let Some((idx, preload)) = next else { break };
            if require_core(&self.objs[idx].path, &self.objs[idx].info).is_ok() {
                let why = if preload {
                    "preloaded (LD_PRELOAD or /etc/ld.so.preload)"
                } else {
                    "needed"
                };
                return Ok(self.chosen(
                    idx,
                    &format!("first object in load order that defines malloc; {why}"),
                ));
            }
        }
        let mut msg = format!(
            "none of the {} objects {exe_path} loads defines malloc and free",
            self.objs.len()
        );
        if !self.missing.is_empty() {
            msg.push_str(&format!(" (not found: {})", self.missing.join(", ")));
        }
        Err(msg)
    }

    /// musl's ld-musl-ARCH.so.1 is its libc, so for a musl program it is
    /// the allocator; None for other interpreters.
    fn musl_interp(&self) -> Result<Option<Allocator>, String> {
        let exe = &self.objs[0];
        let Some(interp) = exe.info.interp.as_deref().filter(|_| self.musl) else {
            return Ok(None);
        };
        let file = crate::elf::open(interp).map_err(|e| {
            format!(
                "{} needs the musl loader {interp}, which cannot be read: {}",
                exe.path,
                io_msg(&e)
            )
        })?;
        let info = elf::inspect_file(&file, interp, "").map_err(|e| e.to_string())?;
        require_core(interp, &info)?;
        Ok(Some(Allocator {
            attach_path: interp.to_string(),
            display_path: interp.to_string(),
            reason: "the program's interpreter is musl's loader, which is also its libc"
                .to_string(),
            offsets: info.traced(),
            sites: info.sites.clone(),
        }))
    }

    fn with_override(&mut self, obj: &str) -> Result<Allocator, String> {
        let reason = format!("-O {obj} override");
        if obj.contains('/') {
            let file = crate::elf::open(obj)
                .map_err(|e| format!("-O {obj}: cannot read it: {}", io_msg(&e)))?;
            let info = elf::inspect_file(&file, obj, "").map_err(|e| format!("-O {e}"))?;
            require_core(obj, &info)?;
            let abs = fs::canonicalize(obj)
                .map_or_else(|_| obj.to_string(), |p| p.to_string_lossy().into_owned());
            let path = if obj.starts_with('/') {
                obj.to_string()
            } else {
                abs
            };
            return Ok(Allocator {
                attach_path: path.clone(),
                display_path: path,
                reason,
                offsets: info.traced(),
                sites: info.sites.clone(),
            });
        }

        // What the program loads, in load order: an exact name wins at
        // once, else the first loose match.
        let rank = |path: &str| name_match(obj, base_name(path));
        let mut best: Option<(u8, usize)> = rank(&self.objs[0].path).map(|r| (r, 0));
        if best.is_none_or(|(r, _)| r > 0) && self.musl {
            // musl's loader is loaded before everything else, though not
            // through NEEDED.
            let interp = self.objs[0].info.interp.clone().unwrap_or_default();
            if rank(&interp) == Some(0) {
                if let Some(a) = self.musl_interp()? {
                    return Ok(Allocator { reason, ..a });
                }
            }
        }
        while best.is_none_or(|(r, _)| r > 0) {
            let Some((idx, _)) = self.next() else { break };
            match rank(&self.objs[idx].path) {
                Some(r) if best.is_none_or(|(b, _)| r < b) => best = Some((r, idx)),
                _ => {}
            }
        }
        if let Some((_, idx)) = best {
            require_core(&self.objs[idx].path, &self.objs[idx].info)?;
            return Ok(self.chosen(idx, &reason));
        }

        // Not loaded at start: it may be dlopen()ed later, so look it up the
        // way dlopen() from the program would.
        let wanted = if obj == "c" { "libc.so.6" } else { obj };
        let found = self.resolve(wanted, 0).or_else(|| {
            // A bare name that is a file in the current directory.
            let info = self.read_compatible(obj)?;
            let abs = fs::canonicalize(obj).ok()?.to_string_lossy().into_owned();
            Some((abs, info))
        });
        let Some((path, info)) = found else {
            return Err(format!(
                "-O {obj}: {} does not load such an object and no file {obj} exists",
                self.objs[0].path
            ));
        };
        require_core(&path, &info)?;
        Ok(Allocator {
            attach_path: path.clone(),
            display_path: path,
            reason: format!("{reason}; not loaded at startup, found in the library search path"),
            offsets: info.traced(),
            sites: info.sites.clone(),
        })
    }

    fn chosen(&self, idx: usize, reason: &str) -> Allocator {
        let obj = &self.objs[idx];
        Allocator {
            attach_path: obj.path.clone(),
            display_path: obj.path.clone(),
            reason: match &obj.info.debug_file {
                Some(debug) => format!("{reason}; symbols from {debug}"),
                None => reason.to_string(),
            },
            offsets: obj.info.traced(),
            sites: obj.info.sites.clone(),
        }
    }
}

/// Names musl's loader satisfies from itself instead of searching for them.
fn musl_builtin(name: &str) -> bool {
    ["c", "pthread", "rt", "m", "dl", "util", "xnet"]
        .iter()
        .any(|l| {
            name.strip_prefix("lib")
                .and_then(|n| n.strip_prefix(l))
                .is_some_and(|r| r.starts_with(".so"))
        })
}

/// Expands each RPATH/RUNPATH entry's dynamic string tokens.
fn expand_all(entries: &[String], origin: &str, info: &ElfInfo) -> Vec<String> {
    entries
        .iter()
        .flat_map(|e| expand(e, origin, info))
        .collect()
}

/// $ORIGIN is the object's directory; $LIB differs between distributions
/// (lib64 on Fedora, lib/<triple> on Debian), so both are tried;
/// $PLATFORM is the CPU name.
fn expand(entry: &str, origin: &str, info: &ElfInfo) -> Vec<String> {
    let with = |s: &str, token: &str, value: &str| {
        s.replace(&format!("${{{token}}}"), value)
            .replace(&format!("${token}"), value)
    };
    let e = with(entry, "ORIGIN", origin);
    let e = with(&e, "PLATFORM", platform(info.machine, info.is_64));
    if e.contains("$LIB") || e.contains("${LIB}") {
        let mut libs = vec!["lib64".to_string(), "lib".to_string()];
        if let Some(t) = triple(info.machine, info.is_64) {
            libs.insert(0, format!("lib/{t}"));
        }
        return libs.iter().map(|l| with(&e, "LIB", l)).collect();
    }
    vec![e]
}

/// Debian-style multiarch triple for the default library directories.
fn triple(machine: u16, is_64: bool) -> Option<&'static str> {
    Some(match machine {
        header::EM_X86_64 if is_64 => "x86_64-linux-gnu",
        header::EM_X86_64 => "x86_64-linux-gnux32",
        header::EM_386 => "i386-linux-gnu",
        header::EM_AARCH64 => "aarch64-linux-gnu",
        header::EM_ARM => "arm-linux-gnueabihf",
        header::EM_RISCV if is_64 => "riscv64-linux-gnu",
        header::EM_PPC64 => "powerpc64le-linux-gnu",
        header::EM_S390 => "s390x-linux-gnu",
        _ => return None,
    })
}

fn platform(machine: u16, is_64: bool) -> &'static str {
    match machine {
        header::EM_X86_64 => "x86_64",
        header::EM_386 => "i686",
        header::EM_AARCH64 => "aarch64",
        header::EM_RISCV if is_64 => "riscv64",
        _ => "",
    }
}

/// The trusted directories glibc's loader searches last.
pub(crate) fn default_dirs(machine: u16, is_64: bool) -> Vec<String> {
    let mut dirs = Vec::new();
    if let Some(t) = triple(machine, is_64) {
        dirs.push(format!("/lib/{t}"));
        dirs.push(format!("/usr/lib/{t}"));
    }
    let bits = if is_64 { "64" } else { "32" };
    dirs.push(format!("/lib{bits}"));
    dirs.push(format!("/usr/lib{bits}"));
    dirs.push("/lib".to_string());
    dirs.push("/usr/lib".to_string());
    dirs
}

/// Appends the directories an ld.so.conf-style file lists, following
/// `include` lines (relative patterns are relative to the including file's
/// directory, as ldconfig does). The loader really reads ld.so.cache, which
/// ldconfig builds from these same directories.
pub(crate) fn ld_so_conf(path: &Path, depth: u32, out: &mut Vec<String>) {
    // Bounds include cycles.
    if depth > 8 {
        return;
    }
    let Ok(text) = fs::read_to_string(path) else {
        return;
    };
    let here = path.parent().unwrap_or(Path::new("/"));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(rest) = line
            .strip_prefix("include")
            .filter(|r| r.starts_with([' ', '\t']))
        {
            for pattern in rest.split_whitespace() {
                for file in glob(&here.join(pattern)) {
                    ld_so_conf(&file, depth + 1, out);
                }
            }
        } else if line
            .strip_prefix("hwcap")
            .is_some_and(|r| r.starts_with([' ', '\t']))
        {
            continue;
        } else {
            for dir in split_dirs(line) {
                if !out.contains(&dir) {
                    out.push(dir);
                }
            }
        }
    }
}

/// Directory lists in config files: separated by ':', ',', or whitespace;
/// old ld.so.conf syntax allows a `=TYPE` suffix.
fn split_dirs(text: &str) -> Vec<String> {
    text.split([':', ',', ' ', '\t', '\n'])
        .map(|d| d.split('=').next().unwrap_or(""))
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// A simple glob: wildcards (`*`, `?`) only in the last path component,
/// results sorted like glob(3).
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let Some(name) = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
    else {
        return Vec::new();
    };
    if !name.contains(['*', '?']) {
        return if pattern.is_file() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            // Like glob(3), a leading dot must be matched explicitly.
            (name.starts_with('.') || !n.starts_with('.'))
                && wildcard(name.as_bytes(), n.as_bytes())
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn wildcard(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&pat[1..], s) || (!s.is_empty() && wildcard(pat, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&pat[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => wildcard(&pat[1..], &s[1..]),
        _ => false,
    }
}

fn parent_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => path[..i].to_string(),
        None => ".".to_string(),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard(b"*.conf", b"libc.conf"));
        assert!(wildcard(b"*", b""));
        assert!(wildcard(b"a?c*", b"abcdef"));
        assert!(!wildcard(b"*.conf", b"libc.conf.bak"));
        assert!(!wildcard(b"a?c", b"ac"));
    }

    #[test]
    fn origin_and_lib_tokens() {
        let info = ElfInfo {
            is_64: true,
            machine: header::EM_X86_64,
            interp: None,
            soname: None,
            needed: vec![],
            rpath: vec![],
            runpath: vec![],
            offsets: vec![],
            families: vec![],
            sites: vec![],
            debug_file: None,
            ifuncs: vec![],
            no_symbols: false,
            entry: 0,
            dynamic: None,
        };
        assert_eq!(
            expand("$ORIGIN/../lib", "/opt/app/bin", &info),
            ["/opt/app/bin/../lib"]
        );
        assert_eq!(expand("${ORIGIN}/x:", "/o", &info), ["/o/x:"]);
        assert_eq!(
            expand("/usr/$LIB/app", "/o", &info),
            [
                "/usr/lib/x86_64-linux-gnu/app",
                "/usr/lib64/app",
                "/usr/lib/app"
            ]
        );
        assert_eq!(parent_dir("/a/b"), "/a");
        assert_eq!(parent_dir("/b"), "/");
        assert_eq!(parent_dir("b"), ".");
    }

    #[test]
    fn musl_builtins() {
        assert!(musl_builtin("libc.so"));
        assert!(musl_builtin("libpthread.so.0"));
        assert!(musl_builtin("libm.so.6"));
        assert!(!musl_builtin("libmagic.so.1"));
        assert!(!musl_builtin("libcrypto.so.3"));
    }

    #[test]
    fn ld_so_conf_includes() {
        let dir = std::env::temp_dir().join(format!("memleak-ldconf-{}", std::process::id()));
        let sub = dir.join("conf.d");
        fs::create_dir_all(&sub).unwrap();
        fs::write(
            dir.join("ld.so.conf"),
            "# comment\n/first\ninclude conf.d/*.conf\n/last # trailing\n",
        )
        .unwrap();
        fs::write(sub.join("b.conf"), "/b1:/b2\n/first\n").unwrap();
        fs::write(
            sub.join("a.conf"),
            "hwcap 0 nosegneg\n/a=libc6\ninclude /nonexistent/*.conf\n",
        )
        .unwrap();
        fs::write(sub.join("c.conf.bak"), "/bak\n").unwrap();
        // A cycle must terminate.
        fs::write(sub.join("loop.conf"), "include ../ld.so.conf\n").unwrap();
        let mut out = Vec::new();
        ld_so_conf(&dir.join("ld.so.conf"), 0, &mut out);
        assert_eq!(out, ["/first", "/a", "/b1", "/b2", "/last"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn system_conf_has_multiarch_dir() {
        let mut out = Vec::new();
        ld_so_conf(Path::new("/etc/ld.so.conf"), 0, &mut out);
        if Path::new("/etc/ld.so.conf.d/x86_64-linux-gnu.conf").exists() {
            assert!(
                out.iter().any(|d| d == "/usr/lib/x86_64-linux-gnu"),
                "{out:?}"
            );
        }
    }
}
