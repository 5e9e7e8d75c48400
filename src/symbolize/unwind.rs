//! Unwinding a copied user stack with the call frame information (CFI) in
//! each object's .eh_frame, for code built without frame pointers
//! (--unwind=dwarf).
//!
//! BPF hands over the registers at an allocator's return (the caller's
//! context) and a copy of the stack above the stack pointer. Each step
//! looks up the frame's CFI row, computes the canonical frame address
//! (CFA) from a register, and reads the return address (and the frame
//! pointer, which later rows may need) from the copied stack. The walk
//! ends where the CFI says the return address is undefined (the
//! outermost frame), where an object has no CFI, or where the copy ends.

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameOffset, RegisterRule, RunTimeEndian, UnwindContext,
    UnwindSection,
};

use crate::elf::{ElfFile, Segments};

/// The registers an unwind starts from and tracks: what BPF copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Registers {
    pub ip: u64,
    pub sp: u64,
    /// rbp on x86_64, x29 on arm64.
    pub fp: u64,
    /// x30 on arm64 (0 on x86_64, where the return address is on the stack).
    pub lr: u64,
}

/// The architecture's DWARF register numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    sp: u16,
    fp: u16,
    ra: u16,
}

impl Arch {
    pub const X86_64: Arch = Arch {
        sp: 7,
        fp: 6,
        ra: 16,
    };
    pub const AARCH64: Arch = Arch {
        sp: 31,
        fp: 29,
        ra: 30,
    };

    #[cfg(test)]
    pub fn native() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::AARCH64
        } else {
            Arch::X86_64
        }
    }
}

/// Where the caller's value of a register is, per the CFI row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    /// Not recoverable: for the return address, the outermost frame.
    Undefined,
    /// Unchanged in the caller.
    Same,
    /// Saved on the stack at CFA + offset.
    AtCfa(i64),
    /// Equal to CFA + offset.
    CfaPlus(i64),
    /// In another register.
    Register(u16),
    /// A DWARF expression: not evaluated.
    Unsupported,
}

/// One CFI row, reduced to what the walk uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    cfa_register: u16,
    cfa_offset: i64,
    ra: Loc,
    fp: Loc,
}

/// The .eh_frame of one ELF file, indexed by address.
#[derive(Debug)]
pub struct CfiTable {
    eh_frame: Vec<u8>,
    eh_frame_addr: u64,
    text_addr: u64,
    big_endian: bool,
    /// (start vaddr, end vaddr, offset of the FDE in .eh_frame), sorted.
    fdes: Vec<(u64, u64, usize)>,
    /// Mapped addresses arrive as file offsets.
    segments: Segments,
    arch: Arch,
    /// Rows already looked up: the same return addresses recur in most
    /// stacks, and interpreting CFI is the costly part of a walk.
    rules: std::cell::RefCell<std::collections::HashMap<u64, Option<Rule>>>,
}

impl CfiTable {
    /// Reads .eh_frame from an ELF file's bytes; None without one.
    pub fn parse(bytes: &[u8]) -> Option<CfiTable> {
        CfiTable::of(&ElfFile::from_bytes(bytes.to_vec(), ""))
    }

    /// Reads .eh_frame of an ELF file; None without one.
    pub fn of(file: &ElfFile) -> Option<CfiTable> {
        let arch = match file.machine()? {
            goblin::elf::header::EM_X86_64 => Arch::X86_64,
            goblin::elf::header::EM_AARCH64 => Arch::AARCH64,
            _ => return None,
        };
        let eh = file.section(".eh_frame")?;
        let mut table = CfiTable {
            eh_frame: eh.data.to_vec(),
            eh_frame_addr: eh.addr,
            text_addr: file.section(".text").map_or(0, |s| s.addr),
            big_endian: !file.is_little_endian(),
            fdes: Vec::new(),
            segments: file.segments().clone(),
            arch,
            rules: Default::default(),
        };
        table.index();
        Some(table)
    }

    fn section(&self) -> EhFrame<gimli::EndianSlice<'_, RunTimeEndian>> {
        let endian = if self.big_endian {
            RunTimeEndian::Big
        } else {
            RunTimeEndian::Little
        };
        let mut eh = EhFrame::new(&self.eh_frame, endian);
        eh.set_address_size(8);
        eh
    }

    fn bases(&self) -> BaseAddresses {
        BaseAddresses::default()
            .set_eh_frame(self.eh_frame_addr)
            .set_text(self.text_addr)
    }

    /// Every FDE's address range, once; a damaged entry ends the index.
    fn index(&mut self) {
        let eh = self.section();
        let bases = self.bases();
        let mut entries = eh.entries(&bases);
        let mut fdes = Vec::new();
        while let Ok(Some(entry)) = entries.next() {
            if let gimli::CieOrFde::Fde(partial) = entry {
                if let Ok(fde) = partial.parse(EhFrame::cie_from_offset) {
                    let start = fde.initial_address();
                    fdes.push((start, start.saturating_add(fde.len()), fde.offset()));
                }
            }
        }
        fdes.sort_unstable();
        self.fdes = fdes;
    }

    /// The vaddr of a file offset, through the PT_LOAD that maps it.
    pub fn vaddr_of(&self, file_offset: u64) -> Option<u64> {
        self.segments.offset_to_vaddr(file_offset)
    }

    fn rule(&self, vaddr: u64) -> Option<Rule> {
        if let Some(rule) = self.rules.borrow().get(&vaddr) {
            return *rule;
        }
        let rule = self.find_rule(vaddr);
        self.rules.borrow_mut().insert(vaddr, rule);
        rule
    }

    fn find_rule(&self, vaddr: u64) -> Option<Rule> {
        let i = self
            .fdes
            .partition_point(|(start, _, _)| *start <= vaddr)
            .checked_sub(1)?;
        let (_, end, offset) = self.fdes[i];
        if vaddr >= end {
            return None;
        }
        let eh = self.section();
        let bases = self.bases();
        let fde = eh
            .fde_from_offset(&bases, EhFrameOffset(offset), EhFrame::cie_from_offset)
            .ok()?;
        let mut ctx = UnwindContext::new();
        let row = fde
            .unwind_info_for_address(&eh, &bases, &mut ctx, vaddr)
            .ok()?;
        self.rule_of(row)
    }

    /// A CFI row reduced to the walk's rule; None for a CFA expression.
    fn rule_of(&self, row: &gimli::UnwindTableRow<usize>) -> Option<Rule> {
        let (cfa_register, cfa_offset) = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => (register.0, *offset),
            CfaRule::Expression(_) => return None,
        };
        let loc = |r: u16| match row.register(gimli::Register(r)) {
            RegisterRule::Undefined => Loc::Undefined,
            RegisterRule::SameValue => Loc::Same,
            RegisterRule::Offset(n) => Loc::AtCfa(n),
            RegisterRule::ValOffset(n) => Loc::CfaPlus(n),
            RegisterRule::Register(reg) => Loc::Register(reg.0),
            _ => Loc::Unsupported,
        };
        // A rule the CIE leaves unset means "same value" on both
        // architectures for the frame pointer; for the return address an
        // unset rule is the psABI's default: x86_64 keeps it at CFA - 8
        // only by explicit rule, so unset there means the end.
        let ra = match row.register(gimli::Register(self.arch.ra)) {
            RegisterRule::Undefined if self.arch == Arch::AARCH64 => Loc::Same,
            _ => loc(self.arch.ra),
        };
        let fp = match row.register(gimli::Register(self.arch.fp)) {
            RegisterRule::Undefined => Loc::Same,
            _ => loc(self.arch.fp),
        };
        Some(Rule {
            cfa_register,
            cfa_offset,
            ra,
            fp,
        })
    }

    /// Every row of every FDE, as (first vaddr, end vaddr, what BPF's
    /// walk does there), sorted by address. For --unwind cfi, which walks
    /// in BPF and needs the whole table up front.
    pub fn compact_rows(&self) -> Vec<(u64, u64, CompactRule)> {
        let eh = self.section();
        let bases = self.bases();
        let mut ctx = UnwindContext::new();
        let mut rows = Vec::new();
        for &(_, _, offset) in &self.fdes {
            let Ok(fde) =
                eh.fde_from_offset(&bases, EhFrameOffset(offset), EhFrame::cie_from_offset)
            else {
                continue;
            };
            let Ok(mut table) = fde.rows(&eh, &bases, &mut ctx) else {
                continue;
            };
            while let Ok(Some(row)) = table.next_row() {
                let rule = self
                    .rule_of(row)
                    .map_or(CompactRule::NoCfi, |r| self.compact(r));
                rows.push((row.start_address(), row.end_address(), rule));
            }
        }
        rows.sort_unstable_by_key(|r| r.0);
        rows
    }

    /// What BPF can do with a rule: registers other than the stack and
    /// frame pointer, and values kept in registers, it does not track.
    fn compact(&self, r: Rule) -> CompactRule {
        let small = |n: i64| i16::try_from(n).ok().filter(|&n| n != 0);
        let base = match r.cfa_register {
            n if n == self.arch.sp => CfaBase::Sp,
            n if n == self.arch.fp => CfaBase::Fp,
            _ => return CompactRule::NoCfi,
        };
        // BPF packs it in 30 bits.
        let Some(cfa_offset) = i32::try_from(r.cfa_offset)
            .ok()
            .filter(|n| n.unsigned_abs() < 1 << 29)
        else {
            return CompactRule::NoCfi;
        };
        let ra_offset = match r.ra {
            Loc::Undefined => return CompactRule::End,
            Loc::AtCfa(n) => match small(n) {
                Some(n) => n,
                None => return CompactRule::NoCfi,
            },
            // In the link register: only the innermost arm64 frame.
            Loc::Same if self.arch == Arch::AARCH64 => 0,
            _ => return CompactRule::NoCfi,
        };
        let fp_offset = match r.fp {
            Loc::Same => 0,
            Loc::AtCfa(n) => match small(n) {
                Some(n) => n,
                None => return CompactRule::NoCfi,
            },
            _ => return CompactRule::NoCfi,
        };
        CompactRule::Cfa {
            base,
            cfa_offset,
            fp_offset,
            ra_offset,
        }
    }

    /// The file's PT_LOADs.
    pub fn segments(&self) -> &Segments {
        &self.segments
    }
}

/// The register a CFA is computed from, in BPF's walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfaBase {
    Sp,
    Fp,
}

/// A CFI row as BPF's walk uses it (struct cfi_row without its address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactRule {
    /// No usable CFI: the walk steps by the frame pointer.
    NoCfi,
    /// The outermost frame.
    End,
    Cfa {
        base: CfaBase,
        cfa_offset: i32,
        /// Caller's frame pointer at CFA + this; 0: unchanged.
        fp_offset: i16,
        /// Return address at CFA + this; 0: in the link register.
        ra_offset: i16,
    },
}

/// Reads a little- or big-endian u64 from the copied stack.
struct StackCopy<'a> {
    base: u64,
    bytes: &'a [u8],
}

impl StackCopy<'_> {
    fn read(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let word: [u8; 8] = self.bytes.get(off..off.checked_add(8)?)?.try_into().ok()?;
        Some(u64::from_ne_bytes(word))
    }
}

/// Walks a stack copied at `regs.sp`. `table_for(ip)` gives the CFI of the
/// object mapped at ip and ip's vaddr in it. Returns the return addresses,
/// the caller's first (`regs.ip`), at most `max` of them.
pub fn unwind<'t>(
    regs: Registers,
    stack: &[u8],
    max: usize,
    mut table_for: impl FnMut(u64) -> Option<(&'t CfiTable, u64)>,
) -> Vec<u64> {
    let copy = StackCopy {
        base: regs.sp,
        bytes: stack,
    };
    let mut r = regs;
    let mut ips = Vec::new();
    while ips.len() < max && r.ip != 0 {
        ips.push(r.ip);
        let Some((table, vaddr)) = table_for(r.ip) else {
            break;
        };
        // Every address here is a return address: the call is the
        // instruction before it, which may end the function.
        let Some(rule) = table.rule(vaddr.wrapping_sub(1)) else {
            break;
        };
        let arch = table.arch;
        let reg = |n: u16, r: &Registers| -> Option<u64> {
            match n {
                n if n == arch.sp => Some(r.sp),
                n if n == arch.fp => Some(r.fp),
                n if n == arch.ra && arch == Arch::AARCH64 => Some(r.lr),
                _ => None,
            }
        };
        let Some(base) = reg(rule.cfa_register, &r) else {
            break;
        };
        let cfa = base.wrapping_add_signed(rule.cfa_offset);
        let fetch = |loc: Loc, current: u64, r: &Registers| -> Option<u64> {
            match loc {
                Loc::Same => Some(current),
                Loc::AtCfa(n) => copy.read(cfa.wrapping_add_signed(n)),
                Loc::CfaPlus(n) => Some(cfa.wrapping_add_signed(n)),
                Loc::Register(n) => reg(n, r),
                Loc::Undefined | Loc::Unsupported => None,
            }
        };
        let Some(ra) = fetch(rule.ra, r.lr, &r) else {
            break;
        };
        let fp = fetch(rule.fp, r.fp, &r).unwrap_or(r.fp);
        // The stack grows down: a caller's frame lies above. Anything else
        // is a bad rule or a corrupt stack, and would loop.
        if cfa <= r.sp {
            break;
        }
        r = Registers {
            ip: ra,
            sp: cfa,
            fp,
            lr: r.lr,
        };
    }
    ips
}

/// A stack's id: a 64-bit hash of its addresses, as the BPF side computes
/// for frame-pointer stacks (FNV-1a over the words, then a final mix), so
/// both kinds share one table. Never 0 (0 marks a lost stack), top bit
/// clear (it marks a stack copy still to unwind).
pub fn stack_hash(ips: &[u64]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &ip in ips {
        hash = (hash ^ ip).wrapping_mul(0x100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    (hash & !(1 << 63)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary's own .eh_frame (Rust keeps unwind tables) is
    /// indexed, sorted, and has a rule for a function of it.
    #[test]
    fn indexes_a_real_eh_frame() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let table = CfiTable::parse(&exe).expect("the test binary has .eh_frame");
        assert!(table.fdes.len() > 100, "{} FDEs", table.fdes.len());
        assert!(table.fdes.windows(2).all(|w| w[0].0 <= w[1].0));
        let (start, _, _) = table.fdes[table.fdes.len() / 2];
        let rule = table.rule(start).expect("a row at a function's start");
        // At entry the CFA is the stack pointer plus the return address.
        assert_eq!(rule.cfa_register, Arch::native().sp);
    }

    #[test]
    fn hash_is_stable_and_never_zero() {
        assert_eq!(stack_hash(&[1, 2, 3]), stack_hash(&[1, 2, 3]));
        assert_ne!(stack_hash(&[1, 2, 3]), stack_hash(&[3, 2, 1]));
        assert_ne!(stack_hash(&[]), 0);
        assert!(
            (0..1000u64).all(|i| stack_hash(&[i]) >> 63 == 0),
            "the top bit is the unwind-sample mark"
        );
    }

    #[test]
    fn stack_copy_reads_inside_only() {
        let bytes: Vec<u8> = (0u8..16).collect();
        let copy = StackCopy {
            base: 0x1000,
            bytes: &bytes,
        };
        assert_eq!(
            copy.read(0x1000),
            Some(u64::from_ne_bytes([0, 1, 2, 3, 4, 5, 6, 7]))
        );
        assert_eq!(
            copy.read(0x1008),
            Some(u64::from_ne_bytes([8, 9, 10, 11, 12, 13, 14, 15]))
        );
        assert_eq!(copy.read(0x1009), None);
        assert_eq!(copy.read(0xfff), None);
    }
}
