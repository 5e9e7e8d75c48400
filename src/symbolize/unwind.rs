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
    BaseAddresses, CfaRule, DebugFrame, EhFrame, EndianSlice, RegisterRule, RunTimeEndian,
    UnwindContext, UnwindOffset, UnwindSection,
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

/// The CFI of one ELF file, indexed by address: its .eh_frame, and its
/// .debug_frame for code .eh_frame has no entry for (code built with
/// -fno-asynchronous-unwind-tables -g keeps its CFI there only).
#[derive(Debug)]
pub struct CfiTable {
    eh_frame: Vec<u8>,
    eh_frame_addr: u64,
    debug_frame: Vec<u8>,
    text_addr: u64,
    big_endian: bool,
    /// (start vaddr, end vaddr, offset of the FDE in .eh_frame), sorted.
    fdes: Vec<(u64, u64, usize)>,
    /// The same for .debug_frame's FDEs of code outside every .eh_frame
    /// FDE.
    debug_fdes: Vec<(u64, u64, usize)>,
    /// Mapped addresses arrive as file offsets.
    segments: Segments,
    arch: Arch,
    /// Rows already looked up: the same return addresses recur in most
    /// stacks, and interpreting CFI is the costly part of a walk.
    rules: std::cell::RefCell<std::collections::HashMap<u64, Option<Rule>>>,
}

impl CfiTable {
    /// Reads .eh_frame and .debug_frame from an ELF file's bytes; None
    /// without either.
    pub fn parse(bytes: &[u8]) -> Option<CfiTable> {
        CfiTable::of(&ElfFile::from_bytes(bytes.to_vec(), ""))
    }

    /// Reads .eh_frame and .debug_frame of an ELF file; None without
    /// either.
    pub fn of(file: &ElfFile) -> Option<CfiTable> {
        let arch = match file.machine()? {
            goblin::elf::header::EM_X86_64 => Arch::X86_64,
            goblin::elf::header::EM_AARCH64 => Arch::AARCH64,
            _ => return None,
        };
        let eh = file.section(".eh_frame");
        let debug = file.section(".debug_frame");
        if eh.is_none() && debug.is_none() {
            return None;
        }
        let mut table = CfiTable {
            eh_frame: eh.as_ref().map(|s| s.data.to_vec()).unwrap_or_default(),
            eh_frame_addr: eh.as_ref().map_or(0, |s| s.addr),
            debug_frame: debug.map(|s| s.data.to_vec()).unwrap_or_default(),
            text_addr: file.section(".text").map_or(0, |s| s.addr),
            big_endian: !file.is_little_endian(),
            fdes: Vec::new(),
            debug_fdes: Vec::new(),
            segments: file.segments().clone(),
            arch,
            rules: Default::default(),
        };
        table.index();
        Some(table)
    }

    fn endian(&self) -> RunTimeEndian {
        if self.big_endian {
            RunTimeEndian::Big
        } else {
            RunTimeEndian::Little
        }
    }

    fn section(&self) -> EhFrame<Slice<'_>> {
        let mut eh = EhFrame::new(&self.eh_frame, self.endian());
        eh.set_address_size(8);
        eh
    }

    fn debug_section(&self) -> DebugFrame<Slice<'_>> {
        let mut debug = DebugFrame::new(&self.debug_frame, self.endian());
        debug.set_address_size(8);
        debug
    }

    fn bases(&self) -> BaseAddresses {
        BaseAddresses::default()
            .set_eh_frame(self.eh_frame_addr)
            .set_text(self.text_addr)
    }

    /// Every FDE's address range, once; a damaged entry ends the index.
    /// .eh_frame's entries win over .debug_frame's for the same code.
    fn index(&mut self) {
        let bases = self.bases();
        let fdes = index_section(&self.section(), &bases);
        let covered = |addr: u64| {
            let i = fdes.partition_point(|(start, _, _)| *start <= addr);
            i > 0 && addr < fdes[i - 1].1
        };
        let debug_fdes = index_section(&self.debug_section(), &bases)
            .into_iter()
            .filter(|&(start, end, _)| start < end && !covered(start) && !covered(end - 1))
            .collect();
        self.fdes = fdes;
        self.debug_fdes = debug_fdes;
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
        let containing = |fdes: &[(u64, u64, usize)]| {
            let i = fdes
                .partition_point(|(start, _, _)| *start <= vaddr)
                .checked_sub(1)?;
            let (_, end, offset) = fdes[i];
            (vaddr < end).then_some(offset)
        };
        if let Some(offset) = containing(&self.fdes) {
            return self.rule_in(&self.section(), &self.eh_frame, offset, vaddr);
        }
        let offset = containing(&self.debug_fdes)?;
        self.rule_in(&self.debug_section(), &self.debug_frame, offset, vaddr)
    }

    /// The rule at `vaddr` of the FDE at `offset` in `section` (whose
    /// bytes are `bytes`).
    fn rule_in<'a, S: UnwindSection<Slice<'a>>>(
        &self,
        section: &S,
        bytes: &[u8],
        offset: usize,
        vaddr: u64,
    ) -> Option<Rule>
    where
        S::Offset: UnwindOffset<usize>,
    {
        let bases = self.bases();
        let fde = section
            .fde_from_offset(&bases, S::Offset::from(offset), |s, b, o| {
                s.cie_from_offset(b, o)
            })
            .ok()?;
        let mut ctx = UnwindContext::new();
        let row = fde
            .unwind_info_for_address(section, &bases, &mut ctx, vaddr)
            .ok()?;
        self.rule_of(row, bytes, vaddr)
    }

    /// A CFI row reduced to the walk's rule at `vaddr` (`bytes`: the
    /// section the row came from, where its expressions are); None for a
    /// CFA expression of another form than the PLT's.
    fn rule_of(
        &self,
        row: &gimli::UnwindTableRow<usize>,
        bytes: &[u8],
        vaddr: u64,
    ) -> Option<Rule> {
        let (cfa_register, cfa_offset) = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => (register.0, *offset),
            CfaRule::Expression(e) => {
                let expr = bytes.get(e.offset..e.offset.checked_add(e.length)?)?;
                let plt = PltCfa::parse(expr).filter(|_| self.arch == Arch::X86_64)?;
                (self.arch.sp, plt.offset_at(vaddr))
            }
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
        let mut rows = Vec::new();
        self.section_rows(&self.section(), &self.eh_frame, &self.fdes, &mut rows);
        self.section_rows(
            &self.debug_section(),
            &self.debug_frame,
            &self.debug_fdes,
            &mut rows,
        );
        rows.sort_unstable_by_key(|r| r.0);
        rows
    }

    /// The rows of the FDEs at `fdes` in `section` (whose bytes are
    /// `bytes`). A PLT row, whose CFA depends on the address within each
    /// entry, becomes two rows per entry.
    fn section_rows<'a, S: UnwindSection<Slice<'a>>>(
        &self,
        section: &S,
        bytes: &[u8],
        fdes: &[(u64, u64, usize)],
        rows: &mut Vec<(u64, u64, CompactRule)>,
    ) where
        S::Offset: UnwindOffset<usize>,
    {
        let bases = self.bases();
        let mut ctx = UnwindContext::new();
        for &(_, _, offset) in fdes {
            let Ok(fde) = section.fde_from_offset(&bases, S::Offset::from(offset), |s, b, o| {
                s.cie_from_offset(b, o)
            }) else {
                continue;
            };
            let Ok(mut table) = fde.rows(section, &bases, &mut ctx) else {
                continue;
            };
            while let Ok(Some(row)) = table.next_row() {
                let (start, end) = (row.start_address(), row.end_address());
                let compact = |at: u64| {
                    self.rule_of(row, bytes, at)
                        .map_or(CompactRule::NoCfi, |r| self.compact(r))
                };
                let plt = match row.cfa() {
                    CfaRule::Expression(e) => bytes
                        .get(e.offset..e.offset.saturating_add(e.length))
                        .and_then(PltCfa::parse),
                    _ => None,
                };
                match plt {
                    Some(plt) => {
                        for (from, to) in plt.pieces(start, end) {
                            rows.push((from, to, compact(from)));
                        }
                    }
                    None => rows.push((start, end, compact(start))),
                }
            }
        }
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

type Slice<'a> = EndianSlice<'a, RunTimeEndian>;

/// Every FDE's (start vaddr, end vaddr, offset) in `section`, sorted.
fn index_section<'a, S: UnwindSection<Slice<'a>>>(
    section: &S,
    bases: &BaseAddresses,
) -> Vec<(u64, u64, usize)>
where
    S::Offset: UnwindOffset<usize>,
{
    let mut entries = section.entries(bases);
    let mut fdes = Vec::new();
    while let Ok(Some(entry)) = entries.next() {
        if let gimli::CieOrFde::Fde(partial) = entry {
            if let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) {
                let start = fde.initial_address();
                fdes.push((start, start.saturating_add(fde.len()), fde.offset()));
            }
        }
    }
    fdes.sort_unstable();
    fdes
}

/// The CFA of x86_64 PLT entries, a DWARF expression of one form:
/// `rsp + base + (((rip & mask) >= threshold) << shift)`, which binutils'
/// ld writes as `DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and;
/// DW_OP_lit11; DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus`: 16-byte
/// entries whose last 5 bytes (the jump to the resolver) run after a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PltCfa {
    base: i64,
    mask: u64,
    threshold: u64,
    shift: u32,
}

impl PltCfa {
    fn parse(expr: &[u8]) -> Option<PltCfa> {
        // DW_OP_lit0..31 are 0x30..0x4f.
        let lit = |b: u8| (0x30..=0x4f).contains(&b).then(|| u64::from(b - 0x30));
        // breg7 with a one-byte SLEB128 offset, breg16 0.
        let &[0x77, base, 0x80, 0x00, mask, 0x1a, threshold, 0x2a, shift, 0x24, 0x22] = expr else {
            return None;
        };
        // One byte of SLEB128 (bit 7 clear): bit 6 is the sign.
        let base = match base {
            0x00..=0x3f => i64::from(base),
            0x40..=0x7f => i64::from(base) - 0x80,
            _ => return None,
        };
        let (mask, threshold, shift) = (lit(mask)?, lit(threshold)?, lit(shift)?);
        // Entries of a power-of-two size, so that pieces() can split them.
        (mask.wrapping_add(1).is_power_of_two() && threshold <= mask && shift < 8).then_some(
            PltCfa {
                base,
                mask,
                threshold,
                shift: shift as u32,
            },
        )
    }

    /// The CFA's offset from rsp at `vaddr` (entries are aligned alike in
    /// the file and in memory).
    fn offset_at(&self, vaddr: u64) -> i64 {
        self.base + ((((vaddr & self.mask) >= self.threshold) as i64) << self.shift)
    }

    /// [start, end) split where offset_at changes: two pieces per entry.
    fn pieces(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut pieces = Vec::new();
        let mut at = start;
        while at < end {
            let entry = at & !self.mask;
            let split = entry + self.threshold;
            let next = if at < split {
                split
            } else {
                entry + self.mask + 1
            };
            let next = next.min(end);
            if next > at {
                pieces.push((at, next));
            }
            at = next;
        }
        pieces
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
    #[cfg(target_arch = "x86_64")]
    use crate::test_support::{compile, TempDir};

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

    /// ld's x86_64 PLT expression, and others of its form.
    #[test]
    fn plt_cfa_expression() {
        let ld = [0x77, 8, 0x80, 0, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22];
        let plt = PltCfa::parse(&ld).expect("ld's PLT expression");
        assert_eq!(
            plt,
            PltCfa {
                base: 8,
                mask: 15,
                threshold: 11,
                shift: 3
            }
        );
        assert_eq!(plt.offset_at(0x1030), 8);
        assert_eq!(plt.offset_at(0x103a), 8);
        assert_eq!(plt.offset_at(0x103b), 16);
        assert_eq!(plt.offset_at(0x103f), 16);
        assert_eq!(plt.offset_at(0x1040), 8);
        assert_eq!(
            plt.pieces(0x1030, 0x1050),
            [
                (0x1030, 0x103b),
                (0x103b, 0x1040),
                (0x1040, 0x104b),
                (0x104b, 0x1050)
            ]
        );
        assert_eq!(
            plt.pieces(0x1035, 0x103d),
            [(0x1035, 0x103b), (0x103b, 0x103d)]
        );
        let mut negative = ld;
        negative[1] = 0x78; // SLEB128 -8
        assert_eq!(PltCfa::parse(&negative).map(|p| p.base), Some(-8));
        let mut other = ld;
        other[5] = 0x1b; // DW_OP_div
        assert_eq!(PltCfa::parse(&other), None);
        assert_eq!(PltCfa::parse(&ld[..10]), None);
    }

    #[cfg(target_arch = "x86_64")]
    /// The vaddr of function `name` in the ELF file `bytes`.
    fn symbol(bytes: &[u8], name: &str) -> u64 {
        let elf = goblin::elf::Elf::parse(bytes).unwrap();
        elf.syms
            .iter()
            .find(|s| elf.strtab.get_at(s.st_name) == Some(name))
            .map(|s| s.st_value)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[cfg(target_arch = "x86_64")]
    const CHAIN: &str = "#include <stdio.h>\n\
        #define NOINLINE __attribute__((noinline))\n\
        static volatile int sink;\n\
        NOINLINE static void leaf(void) { puts(\"x\"); sink++; }\n\
        NOINLINE static void middle(void) { leaf(); sink++; }\n\
        int main(void) { middle(); sink++; return 0; }\n";

    /// Code built with -fno-asynchronous-unwind-tables -g has its CFI in
    /// .debug_frame only (.eh_frame keeps the startup code's and the
    /// PLT's): its functions get rules and rows from there.
    // gcc here builds for the host: x86_64 CFI and PLTs.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn reads_debug_frame_where_eh_frame_has_no_entry() {
        let args = [
            "-O2",
            "-fomit-frame-pointer",
            "-fno-asynchronous-unwind-tables",
        ];
        let dir = TempDir::new("unwind");
        let exe = compile(
            "gcc",
            &dir,
            "debug-frame",
            CHAIN,
            &[&args[..], &["-g"]].concat(),
        );
        let bytes = std::fs::read(exe).unwrap();
        let table = CfiTable::parse(&bytes).expect("CFI");
        assert!(!table.debug_fdes.is_empty(), "no .debug_frame FDEs");
        let middle = symbol(&bytes, "middle");
        // middle calls leaf with its return address pushed: CFA = rsp + 16
        // after the call's setup, rsp + 8 at entry.
        let rule = table
            .rule(middle)
            .expect("a rule for middle from .debug_frame");
        assert_eq!((rule.cfa_register, rule.cfa_offset), (Arch::X86_64.sp, 8));
        assert_eq!(rule.ra, Loc::AtCfa(-8));
        let rows = table.compact_rows();
        let i = rows.partition_point(|r| r.0 <= middle) - 1;
        assert!(
            matches!(
                rows[i].2,
                CompactRule::Cfa {
                    base: CfaBase::Sp,
                    cfa_offset: 8,
                    ra_offset: -8,
                    ..
                }
            ),
            "{:?}",
            rows[i]
        );
        // The same build without -g has no rule there at all.
        let without = std::fs::read(compile("gcc", &dir, "no-debug-frame", CHAIN, &args)).unwrap();
        let table = CfiTable::parse(&without).expect("the startup code's .eh_frame");
        assert_eq!(table.rule(symbol(&without, "middle")), None);
    }

    /// The x86_64 PLT's CFA is an expression: an address in an entry gets
    /// rsp + 8 before its push and rsp + 16 after, in the walk of a copy
    /// and in BPF's rows, and a walk from a PLT entry goes on to its
    /// caller.
    // gcc here builds for the host: x86_64 CFI and PLTs.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn walks_through_a_plt_entry() {
        let dir = TempDir::new("unwind");
        let bytes =
            std::fs::read(compile("gcc", &dir, "plt", CHAIN, &["-O2", "-Wl,-z,lazy"])).unwrap();
        let elf = goblin::elf::Elf::parse(&bytes).unwrap();
        let plt = elf
            .section_headers
            .iter()
            .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".plt"))
            .expect(".plt")
            .sh_addr;
        let table = CfiTable::parse(&bytes).unwrap();
        // The first entry after PLT0, before and after its push.
        let entry = plt + 16;
        let before = table.rule(entry + 2).expect("a rule before the push");
        let after = table.rule(entry + 12).expect("a rule after the push");
        assert_eq!(
            (before.cfa_register, before.cfa_offset),
            (Arch::X86_64.sp, 8)
        );
        assert_eq!(
            (after.cfa_register, after.cfa_offset),
            (Arch::X86_64.sp, 16)
        );
        let rows = table.compact_rows();
        let at = |pc: u64| rows[rows.partition_point(|r| r.0 <= pc) - 1].2;
        let cfa = |cfa_offset| CompactRule::Cfa {
            base: CfaBase::Sp,
            cfa_offset,
            fp_offset: 0,
            ra_offset: -8,
        };
        assert_eq!(at(entry), cfa(8));
        assert_eq!(at(entry + 10), cfa(8));
        assert_eq!(at(entry + 11), cfa(16));
        assert_eq!(at(entry + 15), cfa(16));
        // In the entry's jump to PLT0, after its push: the pushed index,
        // then the caller's return address.
        let sp = 0x7ff0_0000;
        let caller = 0x40_1234u64;
        let mut stack = Vec::new();
        stack.extend_from_slice(&7u64.to_ne_bytes());
        stack.extend_from_slice(&caller.to_ne_bytes());
        let regs = Registers {
            ip: entry + 12,
            sp,
            fp: 0,
            lr: 0,
        };
        let ips = unwind(regs, &stack, 8, |ip| {
            (ip == regs.ip).then_some((&table, ip))
        });
        assert_eq!(ips, [entry + 12, caller]);
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
