//! Source locations from DWARF debug info (.debug_info, .debug_line), with
//! inlined functions: what turns `leak+0x16 [prog]` into
//! `leak+0x16 [prog] leak.c:22`.
//!
//! The debug info is in the file itself when it was built with -g, or in
//! its separate debug file. Compressed debug sections (SHF_COMPRESSED) are
//! not read: such files give names without lines.

use std::rc::Rc;

use gimli::{EndianRcSlice, RunTimeEndian};
use goblin::elf::section_header::SHF_COMPRESSED;

use crate::elf::ElfFile;

type Reader = EndianRcSlice<RunTimeEndian>;

/// Where an address is in the source: the function (for inlined frames),
/// the file and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFrame {
    /// The function as DWARF names it (demangled by the caller).
    pub function: Option<String>,
    /// The file, as the compiler recorded it (often a full path).
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// The DWARF line and function tables of one ELF file.
pub struct SourceLines {
    ctx: addr2line::Context<Reader>,
}

impl SourceLines {
    /// None when the file's bytes have no (readable) debug info.
    pub fn parse(bytes: &[u8]) -> Option<SourceLines> {
        SourceLines::of(&ElfFile::from_bytes(bytes.to_vec(), ""))
    }

    /// None when the file has no (readable) debug info.
    pub fn of(file: &ElfFile) -> Option<SourceLines> {
        let endian = if file.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        // Sections that are compressed or absent (NOBITS) read as empty.
        let usable = |name: &str| {
            file.section(name)
                .filter(|s| s.flags & u64::from(SHF_COMPRESSED) == 0 && !s.nobits)
        };
        usable(".debug_info")?;
        let load = |id: gimli::SectionId| -> Result<Reader, ()> {
            let data = usable(id.name()).map_or(&[][..], |s| s.data);
            Ok(EndianRcSlice::new(Rc::from(data), endian))
        };
        let dwarf = gimli::Dwarf::load(load).ok()?;
        addr2line::Context::from_dwarf(dwarf)
            .ok()
            .map(|ctx| SourceLines { ctx })
    }

    /// The frames at `vaddr`, innermost first: inlined functions, then the
    /// function the code belongs to. Empty when the address has no debug
    /// info.
    pub fn lookup(&self, vaddr: u64) -> Vec<SourceFrame> {
        let Ok(mut frames) = self.ctx.find_frames(vaddr).skip_all_loads() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Ok(Some(frame)) = frames.next() {
            let function = frame
                .function
                .as_ref()
                .and_then(|f| f.raw_name().ok())
                .map(|n| n.into_owned());
            let (file, line) = match &frame.location {
                Some(loc) => (loc.file.map(str::to_string), loc.line),
                None => (None, None),
            };
            out.push(SourceFrame {
                function,
                file,
                line,
            });
            if out.len() >= 64 {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{compile, run, TempDir};
    use std::process::Command;

    /// A program built with -g here: the line of a known statement and an
    /// inlined function's frame come out of its own DWARF.
    #[test]
    fn lines_and_inlined_frames_of_a_real_program() {
        let dir = TempDir::new("source");
        let prog = compile(
            "gcc",
            &dir,
            "p",
            "static volatile int sink;\n\
             static inline __attribute__((always_inline)) int twice(int x)\n\
             {\n\
             \tsink = x;\n\
             \treturn x * 2;\n\
             }\n\
             __attribute__((noinline)) int outer(int x)\n\
             {\n\
             \treturn twice(x) + 1;\n\
             }\n\
             int main(void) { return outer(3); }\n",
            &["-g", "-O1"],
        );
        let bytes = std::fs::read(&prog).unwrap();
        let lines = SourceLines::parse(&bytes).expect("debug info");
        let syms = crate::elf::symbols::parse(&bytes).unwrap();
        let outer = syms.symbol_address("outer").unwrap();
        let frames = lines.lookup(outer);
        assert!(!frames.is_empty());
        let last = frames.last().unwrap();
        assert_eq!(last.function.as_deref(), Some("outer"));
        assert!(
            last.file.as_deref().is_some_and(|f| f.ends_with("p.c")),
            "{frames:?}"
        );
        // outer starts with twice's store, inlined at line 9.
        let size = 32;
        let inlined = (outer..outer + size)
            .map(|a| lines.lookup(a))
            .find(|f| f.len() == 2);
        let inlined = inlined.expect("an address inside the inlined twice()");
        assert_eq!(inlined[0].function.as_deref(), Some("twice"));
        assert_eq!(inlined[0].line, Some(4));
        assert_eq!(
            (inlined[1].function.as_deref(), inlined[1].line),
            (Some("outer"), Some(9))
        );
        // No debug info: nothing.
        let stripped = dir.path().join("s");
        run(Command::new("strip")
            .arg("-g")
            .arg("-o")
            .arg(&stripped)
            .arg(&prog));
        assert!(SourceLines::parse(&std::fs::read(&stripped).unwrap()).is_none());
    }
}
