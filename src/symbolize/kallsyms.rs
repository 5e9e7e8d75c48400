//! /proc/kallsyms: kernel text symbols, for kernel stacks.
//!
//! The file has ~100k–200k lines, so names live in one arena and each
//! symbol costs 16 bytes.

/// A resolved kernel address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSymbol<'a> {
    pub name: &'a str,
    /// `addr - symbol start`.
    pub offset: u64,
    /// `None` for the core kernel, the module name otherwise.
    pub module: Option<&'a str>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: u64,
    name_start: u32,
    name_len: u16,
    /// 0 for the core kernel, else index + 1 into `modules`.
    module: u16,
}

/// Text symbols of the kernel and its modules, sorted by address.
#[derive(Debug, Default)]
pub struct Kallsyms {
    entries: Vec<Entry>,
    names: String,
    modules: Vec<String>,
    hidden: bool,
}

impl Kallsyms {
    /// Parses the text of /proc/kallsyms. Lines that do not parse are
    /// skipped; data symbols are dropped since stacks only hold code
    /// addresses.
    pub fn parse(text: &str) -> Kallsyms {
        struct Raw<'t> {
            addr: u64,
            rank: u8,
            name: &'t str,
            module: u16,
        }
        let mut modules: Vec<String> = Vec::new();
        let mut raw: Vec<Raw> = Vec::new();
        let mut any = false;
        let mut all_zero = true;
        for line in text.lines() {
            let Some((addr, rest)) = line.split_once(' ') else {
                continue;
            };
            let Some((kind, rest)) = rest.split_once(' ') else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            // Uppercase (global) names win over local ones at the same address.
            let rank = match kind {
                "T" => 0,
                "t" => 1,
                "W" => 2,
                "w" => 3,
                _ => continue,
            };
            let (name, module) = match rest.split_once('\t') {
                Some((name, m)) => (name, m.trim().trim_start_matches('[').trim_end_matches(']')),
                None => (rest, ""),
            };
            if name.is_empty() || name.len() > usize::from(u16::MAX) {
                continue;
            }
            any = true;
            all_zero &= addr == 0;
            let module = if module.is_empty() {
                0
            } else if modules.last().is_some_and(|m| m == module) {
                // Module lines come in runs, so checking the last one is enough
                // almost always; a linear search covers the rest.
                modules.len()
            } else if let Some(i) = modules.iter().position(|m| m == module) {
                i + 1
            } else {
                modules.push(module.to_string());
                modules.len()
            };
            let Ok(module) = u16::try_from(module) else {
                continue;
            };
            raw.push(Raw {
                addr,
                rank,
                name,
                module,
            });
        }
        // Same address: keep the best-ranked name, deterministically.
        raw.sort_unstable_by(|a, b| {
            (a.addr, a.rank, a.name.len(), a.name).cmp(&(b.addr, b.rank, b.name.len(), b.name))
        });
        raw.dedup_by_key(|r| r.addr);
        let mut names = String::with_capacity(raw.iter().map(|r| r.name.len()).sum());
        let mut entries = Vec::with_capacity(raw.len());
        for r in &raw {
            let Ok(name_start) = u32::try_from(names.len()) else {
                break;
            };
            names.push_str(r.name);
            entries.push(Entry {
                addr: r.addr,
                name_start,
                // Checked above.
                name_len: r.name.len() as u16,
                module: r.module,
            });
        }
        Kallsyms {
            entries,
            names,
            modules,
            hidden: any && all_zero,
        }
    }

    /// True when the kernel printed every address as zero (kptr_restrict, or
    /// not enough privilege): nothing can be resolved then.
    pub fn addresses_hidden(&self) -> bool {
        self.hidden
    }

    #[cfg(test)]
    #[allow(clippy::len_without_is_empty)] // a count for tests only
    /// Number of distinct text addresses known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The lowest and highest text symbol address (None when hidden).
    pub fn text_range(&self) -> Option<(u64, u64)> {
        match (self.hidden, self.entries.first(), self.entries.last()) {
            (false, Some(first), Some(last)) => Some((first.addr, last.addr)),
            _ => None,
        }
    }

    /// The symbol at or nearest below `addr`. Kallsyms has no sizes, so an
    /// address past the end of the last function still resolves to it.
    pub fn lookup(&self, addr: u64) -> Option<KernelSymbol<'_>> {
        if self.hidden {
            return None;
        }
        let i = self.entries.partition_point(|e| e.addr <= addr);
        let e = self.entries.get(i.checked_sub(1)?)?;
        let start = e.name_start as usize;
        let name = self.names.get(start..start + usize::from(e.name_len))?;
        let module = match e.module {
            0 => None,
            m => Some(self.modules.get(usize::from(m) - 1)?.as_str()),
        };
        Some(KernelSymbol {
            name,
            offset: addr - e.addr,
            module,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81000000 t a_local_alias
ffffffff81000100 T kfunc
ffffffff81000200 D some_data
ffffffff81000300 W weak_fn
ffffffffc0a01000 t foo_bar\t[modname]
ffffffffc0a01100 T foo_baz\t[modname]
ffffffffc0b00000 t other\t[other_mod]
";

    #[test]
    fn hand_made() {
        let k = Kallsyms::parse(SAMPLE);
        assert!(!k.addresses_hidden());
        assert_eq!(k.len(), 6);
        let s = k.lookup(0xffffffff81000000).unwrap();
        assert_eq!((s.name, s.offset, s.module), ("_stext", 0, None));
        let s = k.lookup(0xffffffff81000110).unwrap();
        assert_eq!((s.name, s.offset, s.module), ("kfunc", 0x10, None));
        // Data symbols are not kept: the address resolves to the text before.
        assert_eq!(k.lookup(0xffffffff81000200).unwrap().name, "kfunc");
        assert_eq!(k.lookup(0xffffffff81000301).unwrap().name, "weak_fn");
        let s = k.lookup(0xffffffffc0a01004).unwrap();
        assert_eq!(
            (s.name, s.offset, s.module),
            ("foo_bar", 4, Some("modname"))
        );
        assert_eq!(
            k.lookup(0xffffffffc0a01100).unwrap().module,
            Some("modname")
        );
        assert_eq!(
            k.lookup(0xffffffffc0b00010).unwrap().module,
            Some("other_mod")
        );
        assert_eq!(k.lookup(0xffffffff80ffffff), None);
        assert_eq!(k.lookup(0), None);
    }

    #[test]
    fn hidden_and_garbage() {
        let k = Kallsyms::parse("0000000000000000 T _stext\n0000000000000000 t foo\t[m]\n");
        assert!(k.addresses_hidden());
        assert_eq!(k.lookup(0xffffffff81000000), None);

        for text in [
            "",
            "\n\n",
            "garbage",
            "zzzz T foo",
            "ffffffff81000000 T",
            "ffffffff81000000 T ",
            "ffffffff81000000",
            "ffffffffffffffffff T too_long_addr",
            "ffffffff81000000 T foo\t",
            "ffffffff81000000 T foo\t[",
            "\u{1F600} \u{1F600} \u{1F600}",
        ] {
            let k = Kallsyms::parse(text);
            assert!(!k.addresses_hidden(), "{text:?}");
            let _ = k.lookup(0xffffffff81000010);
        }
        let k = Kallsyms::parse("ffffffff81000000 T foo\t");
        assert_eq!(k.lookup(0xffffffff81000000).unwrap().module, None);
    }

    #[test]
    #[ignore = "needs root; make test runs it (make check cannot)"]
    fn real_kallsyms() {
        let text = match std::fs::read_to_string("/proc/kallsyms") {
            Ok(t) => t,
            Err(e) => {
                eprintln!("skipping: /proc/kallsyms: {e}");
                return;
            }
        };
        let t0 = std::time::Instant::now();
        let k = Kallsyms::parse(&text);
        eprintln!(
            "parsed {} kallsyms lines into {} symbols in {:?}",
            text.lines().count(),
            k.len(),
            t0.elapsed()
        );
        assert!(k.len() > 1000);
        if k.addresses_hidden() {
            eprintln!("kallsyms addresses are hidden; skipping address checks");
            return;
        }
        // The allocator entry point's name changed across kernel versions.
        let fields = |l: &'static str| -> Option<(u64, &'static str, &'static str)> {
            let mut it = l.split_whitespace();
            let addr = u64::from_str_radix(it.next()?, 16).ok()?;
            Some((addr, it.next()?, it.next()?))
        };
        let text: &'static str = Box::leak(text.into_boxed_str());
        let (addr, _, name) = text
            .lines()
            .filter_map(fields)
            .find(|(_, kind, name)| {
                matches!(*kind, "T" | "t")
                    && ["kmalloc", "__kmalloc", "__kmalloc_noprof"].contains(name)
            })
            .expect("kmalloc in kallsyms");
        let aliases: Vec<&str> = text
            .lines()
            .filter_map(fields)
            .filter(|(a, kind, _)| *a == addr && matches!(*kind, "T" | "t" | "W" | "w"))
            .map(|(_, _, n)| n)
            .collect();
        let s = k.lookup(addr).unwrap();
        assert!(
            aliases.contains(&s.name),
            "{name} at {addr:x} resolved to {s:?}"
        );
        assert_eq!((s.offset, s.module), (0, None));
        assert_eq!(k.lookup(addr + 3).unwrap().offset, 3);

        // A module's text symbol, if any module is loaded.
        let module_line = text.lines().find(|l| {
            let mut it = l.split_whitespace();
            it.nth(1).is_some_and(|t| matches!(t, "t" | "T")) && l.contains("\t[")
        });
        match module_line {
            Some(line) => {
                let addr = u64::from_str_radix(&line[..line.find(' ').unwrap()], 16).unwrap();
                let module = line
                    .rsplit_once('\t')
                    .unwrap()
                    .1
                    .trim_matches(|c| c == '[' || c == ']');
                let s = k.lookup(addr).unwrap();
                assert_eq!((s.offset, s.module), (0, Some(module)), "{line}");
            }
            None => eprintln!("no module loaded; skipping module check"),
        }
    }
}
