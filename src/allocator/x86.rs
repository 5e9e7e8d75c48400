//! Where in an x86-64 allocator function to place a uprobe so that the
//! kernel emulates the probed instruction instead of single-stepping it out
//! of line (a second trap: 15 us more per call on the dev VM).
//!
//! arch/x86/kernel/uprobes.c emulates jcc/jmp/call with a relative
//! displacement, `nop`, and `push r64`; most other instructions are
//! single-stepped. glibc 2.36's free starts with `test %rdi,%rdi; je ...`:
//! a probe on the `je` sees the same argument registers, is reached on
//! every call, and is emulated. That needs an instruction length decoder,
//! which is `insn_len` (and `decode`, which also classifies).

/// Operand shape of each opcode, one letter per opcode, 16 per row:
/// `.` nothing, `m` ModRM, `b` imm8, `w` imm16, `z` imm16/32 (66 prefix),
/// `v` imm16/32/64 (mov r, imm), `o` moffs (address size), `e` enter's
/// imm16+imm8, `B` ModRM+imm8, `Z` ModRM+imm16/32, `g` group 3 (imm only
/// for test), `r` rel8, `R` rel32, `p` prefix (legal only before the opcode),
/// `s` escape decoded in code, `x` invalid in 64-bit mode.
const MAP1: &[u8; 256] = b"\
    mmmmbzxxmmmmbzxs\
    mmmmbzxxmmmmbzxx\
    mmmmbzpxmmmmbzpx\
    mmmmbzpxmmmmbzpx\
    pppppppppppppppp\
    ................\
    xxsmppppzZbB....\
    rrrrrrrrrrrrrrrr\
    BZxBmmmmmmmmmmmm\
    ..........x.....\
    oooo....bz......\
    bbbbbbbbvvvvvvvv\
    BBw.ssBZe.w..bx.\
    mmmmxxx.mmmmmmmm\
    rrrrbbbbRRxr....\
    p.pp..gg......mm";

/// The 0f map, same letters. 0f 0f (3DNow) is left out as invalid; 0f 38
/// and 0f 3a are the three-byte maps (all ModRM; 0f 3a adds imm8).
const MAP2: &[u8; 256] = b"\
    mmmmx.....x.xm.x\
    mmmmmmmmmmmmmmmm\
    mmmmxxxxmmmmmmmm\
    ......x.sxsxxxxx\
    mmmmmmmmmmmmmmmm\
    mmmmmmmmmmmmmmmm\
    mmmmmmmmmmmmmmmm\
    BBBBmmm.mmxxmmmm\
    RRRRRRRRRRRRRRRR\
    mmmmmmmmmmmmmmmm\
    ...mBmxx...mBmmm\
    mmmmmmmmmmBmmmmm\
    mmBmBBBm........\
    mmmmmmmmmmmmmmmm\
    mmmmmmmmmmmmmmmm\
    mmmmmmmmmmmmmmmm";

/// The architectural limit; longer encodings raise #GP.
const MAX_LEN: usize = 15;

/// At most this many harmless instructions before the probe site.
const MAX_PREFIX: usize = 4;

/// One decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    len: usize,
    kind: Kind,
}

/// What [`probe_site`] needs to know about an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A relative jump or call; `disp` counts from the instruction's end.
    /// `emulated`: jcc/jmp/call without any prefix (the kernel refuses 66
    /// and we do not bet on the others); loop/jrcxz/xbegin never are.
    Branch {
        disp: i64,
        emulated: bool,
    },
    /// `push r64` (50-57, 41 50-57), which the kernel emulates.
    Push,
    /// `90` (emulated) or `66 90`, `0f 1f /0` (harmless, not relied on).
    Nop {
        emulated: bool,
    },
    /// `f3 0f 1e fa`.
    Endbr64,
    /// test/cmp of registers or a register and an immediate: writes only
    /// flags, reads no memory.
    FlagsOnly,
    Other,
}

/// Legacy prefixes seen before the opcode.
#[derive(Default)]
struct Prefixes {
    count: usize,
    p66: bool,
    p67: bool,
    /// f0, f2, f3: lock and rep forms.
    lock_rep: bool,
    /// Any segment override.
    seg: bool,
}

/// Bounds-checked reading through an instruction.
struct Reader<'a> {
    code: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.code.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// A little-endian, sign-extended immediate of `n` bytes (1, 2, 4, 8).
    fn imm(&mut self, n: usize) -> Option<i64> {
        let bytes = self.code.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(match *bytes {
            [a] => i64::from(a as i8),
            [a, b] => i64::from(i16::from_le_bytes([a, b])),
            [a, b, c, d] => i64::from(i32::from_le_bytes([a, b, c, d])),
            _ => i64::from_le_bytes(bytes.try_into().ok()?),
        })
    }

    /// ModRM, SIB and displacement; returns the ModRM byte. 64-bit mode has
    /// no 16-bit addressing, so 67 does not change this layout.
    fn modrm(&mut self) -> Option<u8> {
        let m = self.byte()?;
        let (md, rm) = (m >> 6, m & 7);
        if md != 3 && rm == 4 {
            let sib = self.byte()?;
            // Base 101 with mod 00: no base register, a disp32 instead.
            if md == 0 && sib & 7 == 5 {
                self.imm(4)?;
            }
        }
        match md {
            // rip-relative.
            0 if rm == 5 => self.imm(4)?,
            1 => self.imm(1)?,
            2 => self.imm(4)?,
            _ => 0,
        };
        Some(m)
    }
}

/// Length in bytes of the x86-64 (64-bit mode) instruction at the start of `code`,
/// or None if it cannot be decoded (unknown/invalid opcode, truncated input).
#[cfg(test)]
pub(crate) fn insn_len(code: &[u8]) -> Option<usize> {
    decode(code).map(|insn| insn.len)
}

/// Offset from the function's entry at which to place the uprobe: the first
/// instruction the kernel emulates, if everything before it is a harmless prefix;
/// 0 when unsure. `code` is the whole function (symbol st_size bytes).
pub fn probe_site(code: &[u8]) -> usize {
    choose_site(code).unwrap_or(0)
}

fn choose_site(code: &[u8]) -> Option<usize> {
    // Decode everything first: an undecodable stretch could hide a branch
    // into the prefix.
    let mut insns = Vec::new();
    let mut pos = 0;
    while pos < code.len() {
        let insn = decode(&code[pos..])?;
        insns.push((pos, insn));
        pos += insn.len;
    }

    // The prefix may only write flags: registers and (%rsp) at the site must
    // be those at entry, for arguments and for a uretprobe's return address.
    let mut site = None;
    for &(pos, insn) in insns.iter().take(MAX_PREFIX + 1) {
        match insn.kind {
            Kind::Branch { emulated: true, .. } | Kind::Push | Kind::Nop { emulated: true } => {
                site = Some(pos);
                break;
            }
            Kind::Endbr64 | Kind::FlagsOnly | Kind::Nop { emulated: false } => {}
            _ => return None,
        }
    }
    // An entry instruction that is emulated already is the best site.
    let site = site.filter(|&s| s > 0)?;

    // A branch into (0, site] reaches the site again within one call: a
    // second hit whose registers are no longer the arguments. A branch to 0
    // is a proper re-entry. Indirect jumps (switch tables) are ignored:
    // compilers do not aim them into a function's first few instructions.
    for &(pos, insn) in &insns {
        if let Kind::Branch { disp, .. } = insn.kind {
            let target = (pos + insn.len) as i64 + disp;
            if target > 0 && target <= site as i64 {
                return None;
            }
        }
    }
    Some(site)
}

/// Decodes the instruction at the start of `code`.
fn decode(code: &[u8]) -> Option<Insn> {
    let mut r = Reader { code, pos: 0 };
    let mut p = Prefixes::default();
    let mut op = loop {
        let b = r.byte()?;
        match b {
            0x66 => p.p66 = true,
            0x67 => p.p67 = true,
            0xf0 | 0xf2 | 0xf3 => p.lock_rep = true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => p.seg = true,
            _ => break b,
        }
        p.count += 1;
    };
    // REX must come last; a prefix after it (REX ignored) is left undecoded.
    let rex = if op & 0xf0 == 0x40 {
        let rex = op;
        op = r.byte()?;
        rex
    } else {
        0
    };
    let w = rex & 8 != 0;
    let z = if p.p66 && !w { 2 } else { 4 };
    let mut modrm = None;
    let mut imm = 0;

    match op {
        0x0f => return decode_0f(r, &p, rex),
        0x62 | 0xc4 | 0xc5 => {
            // VEX and EVEX carry their own REX/66/f2/f3 bits.
            if rex != 0 || p.p66 || p.lock_rep {
                return None;
            }
            return decode_vex(r, op);
        }
        _ => {}
    }
    match MAP1[op as usize] {
        b'.' => {}
        b'm' => modrm = Some(r.modrm()?),
        b'b' => imm = r.imm(1)?,
        b'w' => imm = r.imm(2)?,
        b'z' => imm = r.imm(z)?,
        b'v' => imm = r.imm(if w { 8 } else { z })?,
        b'o' => imm = r.imm(if p.p67 { 4 } else { 8 })?,
        b'e' => imm = r.imm(2)? + r.imm(1)?,
        b'B' => {
            modrm = Some(r.modrm()?);
            imm = r.imm(1)?;
        }
        b'Z' => {
            modrm = Some(r.modrm()?);
            imm = r.imm(z)?;
        }
        b'g' => {
            let m = r.modrm()?;
            modrm = Some(m);
            if m >> 3 & 7 < 2 {
                imm = r.imm(if op == 0xf6 { 1 } else { z })?;
            }
        }
        b'r' => imm = r.imm(1)?,
        // With 66 alone Intel ignores it and AMD takes rel16: ambiguous.
        // REX.W overrides 66 (the TLS call `66 66 48 e8`).
        b'R' if !p.p66 || w => imm = r.imm(4)?,
        _ => return None,
    }

    let (md, reg) = match modrm {
        Some(m) => (m >> 6, m >> 3 & 7),
        None => (0, 0),
    };
    // Undefined group members (8f /1-7 is AMD's XOP).
    let undefined = match op {
        0x8f => reg != 0,
        0xfe => reg > 1,
        0xff => reg == 7,
        0xc6 | 0xc7 => reg != 0 && modrm != Some(0xf8),
        _ => false,
    };
    if undefined || r.pos > MAX_LEN {
        return None;
    }

    let plain = p.count == 0 && rex == 0;
    // 66 and REX change only operand size for test/cmp; anything else is odd.
    let only_size = !p.p67 && !p.lock_rep && !p.seg;
    let kind = match op {
        0x70..=0x7f | 0xe8 | 0xe9 | 0xeb => Kind::Branch {
            disp: imm,
            emulated: plain,
        },
        0xe0..=0xe3 => Kind::Branch {
            disp: imm,
            emulated: false,
        },
        // xbegin's abort target.
        0xc7 if modrm == Some(0xf8) => Kind::Branch {
            disp: imm,
            emulated: false,
        },
        0x50..=0x57 if p.count == 0 && (rex == 0 || rex == 0x41) => Kind::Push,
        0x90 if plain => Kind::Nop { emulated: true },
        0x90 if rex == 0 && p.count == 1 && p.p66 => Kind::Nop { emulated: false },
        0x38..=0x3b | 0x84 | 0x85 if md == 3 && only_size => Kind::FlagsOnly,
        0x80 | 0x81 | 0x83 if md == 3 && reg == 7 && only_size => Kind::FlagsOnly,
        0xf6 | 0xf7 if md == 3 && reg == 0 && only_size => Kind::FlagsOnly,
        0x3c | 0x3d | 0xa8 | 0xa9 if only_size => Kind::FlagsOnly,
        _ => Kind::Other,
    };
    Some(Insn { len: r.pos, kind })
}

/// The 0f, 0f 38 and 0f 3a maps; `r` is just past the 0f.
fn decode_0f(mut r: Reader, p: &Prefixes, rex: u8) -> Option<Insn> {
    let op = r.byte()?;
    let mut modrm = None;
    let mut imm = 0;
    match op {
        0x38 => {
            r.byte()?;
            r.modrm()?;
        }
        0x3a => {
            r.byte()?;
            r.modrm()?;
            r.imm(1)?;
        }
        _ => match MAP2[op as usize] {
            b'.' => {}
            b'm' => modrm = Some(r.modrm()?),
            b'B' => {
                modrm = Some(r.modrm()?);
                r.imm(1)?;
            }
            // Same 66 ambiguity as e8/e9.
            b'R' if !p.p66 || rex & 8 != 0 => imm = r.imm(4)?,
            _ => return None,
        },
    }
    if r.pos > MAX_LEN {
        return None;
    }
    let start = p.count + usize::from(rex != 0);
    let kind = match op {
        0x80..=0x8f => Kind::Branch {
            disp: imm,
            emulated: start == 0,
        },
        0x1e if start == 1 && rex == 0 && r.code.first() == Some(&0xf3) && modrm == Some(0xfa) => {
            Kind::Endbr64
        }
        0x1f if modrm.is_some_and(|m| m >> 3 & 7 == 0) && !p.p67 && !p.lock_rep && !p.seg => {
            Kind::Nop { emulated: false }
        }
        _ => Kind::Other,
    };
    Some(Insn { len: r.pos, kind })
}

/// VEX (c4, c5) and EVEX (62); `r` is just past that first byte. Always a
/// ModRM except VEX vzeroupper/vzeroall; imm8 in map 3 and where the legacy
/// 0f opcode has one (vpshufd, vcmpps, ...).
fn decode_vex(mut r: Reader, first: u8) -> Option<Insn> {
    let map = match first {
        0xc5 => {
            r.byte()?;
            1
        }
        0xc4 => {
            let map = r.byte()? & 0x1f;
            r.byte()?;
            map
        }
        _ => {
            let p0 = r.byte()?;
            let p1 = r.byte()?;
            r.byte()?;
            // Bit 3 of P0 must be 0 and bit 2 of P1 must be 1 (else APX or
            // invalid); maps 5 and 6 are AVX512-FP16.
            if p0 & 8 != 0 || p1 & 4 == 0 || !matches!(p0 & 7, 1..=3 | 5 | 6) {
                return None;
            }
            p0 & 7
        }
    };
    if !(1..=3).contains(&map) && first != 0x62 {
        return None;
    }
    let op = r.byte()?;
    let legacy = MAP2[op as usize];
    if map == 1 && op == 0x77 && first != 0x62 {
        // vzeroupper / vzeroall.
    } else if map == 1 && !matches!(legacy, b'm' | b'B') {
        return None;
    } else {
        r.modrm()?;
        if map == 3 || (map == 1 && legacy == b'B') {
            r.imm(1)?;
        }
    }
    if r.pos > MAX_LEN {
        return None;
    }
    Some(Insn {
        len: r.pos,
        kind: Kind::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use goblin::elf::Elf;
    use std::process::Command;

    fn len(hex: &str) -> Option<usize> {
        insn_len(&bytes(hex))
    }

    fn bytes(hex: &str) -> Vec<u8> {
        hex.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    fn site(hex: &str) -> usize {
        probe_site(&bytes(hex))
    }

    #[test]
    fn lengths_one_byte_map() {
        assert_eq!(len("90"), Some(1));
        assert_eq!(len("c3"), Some(1));
        assert_eq!(len("55"), Some(1));
        assert_eq!(len("41 54"), Some(2));
        assert_eq!(len("48 89 e5"), Some(3));
        assert_eq!(len("48 83 ec 18"), Some(4));
        assert_eq!(len("48 81 ec 00 01 00 00"), Some(7));
        assert_eq!(len("04 01"), Some(2));
        assert_eq!(len("05 01 00 00 00"), Some(5));
        assert_eq!(len("66 05 01 00"), Some(4));
        assert_eq!(len("68 01 00 00 00"), Some(5));
        assert_eq!(len("6a 01"), Some(2));
        assert_eq!(len("69 c0 01 00 00 00"), Some(6));
        assert_eq!(len("6b c0 01"), Some(3));
        assert_eq!(len("c1 e8 03"), Some(3));
        assert_eq!(len("c6 07 00"), Some(3));
        assert_eq!(len("c7 07 00 00 00 00"), Some(6));
        assert_eq!(len("48 c7 07 00 00 00 00"), Some(7));
        assert_eq!(len("66 c7 07 00 00"), Some(5));
        assert_eq!(len("c6 f8 ff"), Some(3)); // xabort
        assert_eq!(len("c7 f8 00 00 00 00"), Some(6)); // xbegin
        assert_eq!(len("f0 48 0f b1 17"), Some(5)); // lock cmpxchg
        assert_eq!(len("f3 48 ab"), Some(3)); // rep stos
        assert_eq!(len("64 48 8b 04 25 28 00 00 00"), Some(9)); // fs:0x28
        assert_eq!(len("d9 ee"), Some(2)); // fldz
        assert_eq!(len("dd 44 24 08"), Some(4));
    }

    #[test]
    fn lengths_immediates() {
        assert_eq!(len("b8 01 00 00 00"), Some(5));
        assert_eq!(len("66 b8 01 00"), Some(4));
        assert_eq!(len("48 b8 01 02 03 04 05 06 07 08"), Some(10)); // movabs
        assert_eq!(len("49 bb 01 02 03 04 05 06 07 08"), Some(10));
        assert_eq!(len("66 48 b8 01 02 03 04 05 06 07 08"), Some(11)); // REX.W wins
        assert_eq!(len("a1 01 02 03 04 05 06 07 08"), Some(9)); // moffs64
        assert_eq!(len("48 a3 01 02 03 04 05 06 07 08"), Some(10));
        assert_eq!(len("67 a1 01 02 03 04"), Some(6)); // moffs32
        assert_eq!(len("f6 c1 01"), Some(3)); // test $1,%cl
        assert_eq!(len("f7 c7 00 00 01 00"), Some(6));
        assert_eq!(len("66 f7 c7 34 12"), Some(5));
        assert_eq!(len("48 f7 c7 00 00 01 00"), Some(7));
        assert_eq!(len("f7 d8"), Some(2)); // neg: no immediate
        assert_eq!(len("48 f7 f1"), Some(3)); // div
        assert_eq!(len("f6 07 01"), Some(3)); // testb $1,(%rdi)
        assert_eq!(len("c8 10 00 01"), Some(4)); // enter
        assert_eq!(len("c2 08 00"), Some(3));
        assert_eq!(len("ca 08 00"), Some(3));
        assert_eq!(len("cd 80"), Some(2));
        assert_eq!(len("e8 00 00 00 00"), Some(5));
        assert_eq!(len("e9 00 00 00 00"), Some(5));
        assert_eq!(len("eb fe"), Some(2));
        assert_eq!(len("e3 a9"), Some(2)); // jrcxz
        assert_eq!(len("0f 84 bf 00 00 00"), Some(6));
        assert_eq!(len("f2 e9 00 00 00 00"), Some(6)); // bnd jmp
        assert_eq!(len("66 66 48 e8 00 00 00 00"), Some(8)); // TLS __tls_get_addr call
        assert_eq!(len("3e ff e0"), Some(3)); // notrack jmp *%rax
    }

    #[test]
    fn lengths_addressing() {
        assert_eq!(len("48 8b 05 10 20 30 40"), Some(7)); // rip-relative
        assert_eq!(len("48 8d 3d 10 20 30 40"), Some(7));
        assert_eq!(len("c7 05 10 20 30 40 01 00 00 00"), Some(10)); // rip + imm32
        assert_eq!(len("8b 04 25 00 00 00 00"), Some(7)); // SIB, no base: disp32
        assert_eq!(len("8b 04 cd 00 00 00 00"), Some(7)); // index*8 + disp32
        assert_eq!(len("8b 04 24"), Some(3)); // (%rsp)
        assert_eq!(len("8b 44 24 08"), Some(4));
        assert_eq!(len("8b 84 24 00 01 00 00"), Some(7));
        assert_eq!(len("8b 45 08"), Some(3)); // mod 01 rm 101: disp8(%rbp)
        assert_eq!(len("41 8b 45 00"), Some(4)); // 0(%r13)
        assert_eq!(len("42 8b 04 2d 00 00 00 00"), Some(8)); // SIB base 101, mod 00
        assert_eq!(len("42 8b 44 2d 00"), Some(5)); // SIB base 101, mod 01
        assert_eq!(len("67 8d 51 ff"), Some(4));
    }

    #[test]
    fn lengths_0f_maps() {
        assert_eq!(len("0f 05"), Some(2)); // syscall
        assert_eq!(len("0f 0b"), Some(2)); // ud2
        assert_eq!(len("0f a2"), Some(2)); // cpuid
        assert_eq!(len("0f b6 07"), Some(3)); // movzbl
        assert_eq!(len("48 0f af c2"), Some(4)); // imul
        assert_eq!(len("0f ba e0 05"), Some(4)); // bt imm8
        assert_eq!(len("48 0f a4 c2 03"), Some(5)); // shld imm8
        assert_eq!(len("66 0f 70 c0 00"), Some(5)); // pshufd
        assert_eq!(len("66 0f 73 d9 08"), Some(5)); // psrldq
        assert_eq!(len("66 0f c6 c1 00"), Some(5)); // shufpd
        assert_eq!(len("0f ae e8"), Some(3)); // lfence
        assert_eq!(len("0f 01 ee"), Some(3)); // rdpkru
        assert_eq!(len("48 0f c7 0f"), Some(4)); // cmpxchg16b
        assert_eq!(len("0f c8"), Some(2)); // bswap
        assert_eq!(len("66 0f 38 00 c1"), Some(5)); // pshufb
        assert_eq!(len("66 0f 38 17 47 10"), Some(6)); // ptest
        assert_eq!(len("66 0f 3a 0f c1 08"), Some(6)); // palignr
        assert_eq!(len("66 0f 3a 63 07 1a"), Some(6)); // pcmpistri
        assert_eq!(len("f3 0f 1e fa"), Some(4)); // endbr64
        assert_eq!(len("0f 1f 00"), Some(3));
        assert_eq!(len("0f 1f 40 00"), Some(4));
        assert_eq!(len("0f 1f 44 00 00"), Some(5));
        assert_eq!(len("66 0f 1f 44 00 00"), Some(6));
        assert_eq!(len("0f 1f 80 00 00 00 00"), Some(7));
        assert_eq!(len("66 2e 0f 1f 84 00 00 00 00 00"), Some(10));
        assert_eq!(len("66 66 2e 0f 1f 84 00 00 00 00 00"), Some(11));
    }

    #[test]
    fn lengths_vex_evex() {
        assert_eq!(len("c5 f8 77"), Some(3)); // vzeroupper
        assert_eq!(len("c5 fd 74 0f"), Some(4)); // vpcmpeqb (%rdi)
        assert_eq!(len("c5 fd d7 c1"), Some(4)); // vpmovmskb
        assert_eq!(len("c5 fe 6f 4c 17 e0"), Some(6)); // vmovdqu disp8(SIB)
        assert_eq!(len("c5 f9 70 c0 00"), Some(5)); // vpshufd imm8
        assert_eq!(len("c4 e2 7d 78 07"), Some(5)); // vpbroadcastb
        assert_eq!(len("c4 e2 a0 f5 da"), Some(5)); // bzhi
        assert_eq!(len("c4 e3 7d 18 c1 01"), Some(6)); // vinsertf128: map 3 imm8
        assert_eq!(len("c4 e1 f9 6e c7"), Some(5)); // vmovq, map 1 via c4
        assert_eq!(len("62 e1 fd 28 7f 07"), Some(6)); // vmovdqa64
        assert_eq!(len("62 e1 fd 48 7f 47 04"), Some(7)); // disp8*N
        assert_eq!(len("62 e1 fe 28 6f 54 16 fd"), Some(8)); // SIB + disp8
        assert_eq!(len("62 f2 7d 48 78 14 0f"), Some(7)); // map 2
        assert_eq!(len("62 f3 7d 48 3f c2 00"), Some(7)); // map 3 imm8
        assert_eq!(len("62 f1 7d 48 72 e0 05"), Some(7)); // map 1 group imm8
        assert_eq!(len("62 f1 7c 48 29 97 00 01 00 00"), Some(10)); // disp32
    }

    #[test]
    fn truncated_is_none() {
        for hex in [
            "",
            "48",
            "66",
            "0f",
            "0f 38",
            "0f 3a 0f c1",
            "e8 00 00",
            "0f 84 00 00 00",
            "8b",
            "8b 04",
            "8b 44 24",
            "48 8b 05 10 20 30",
            "48 b8 01 02 03 04 05 06 07",
            "f7 c7 00 00 01",
            "c4 e2",
            "c4 e2 7d 78",
            "c5 f8",
            "62 f1 fe 28",
            "62 f3 7d 48 3f c2",
        ] {
            assert_eq!(len(hex), None, "{hex}");
        }
    }

    #[test]
    fn invalid_is_none() {
        // One-byte opcodes that do not exist in 64-bit mode.
        for op in [
            0x06, 0x07, 0x0e, 0x16, 0x17, 0x1e, 0x1f, 0x27, 0x2f, 0x37, 0x3f, 0x60, 0x61, 0x82,
            0x9a, 0xce, 0xd4, 0xd5, 0xd6, 0xea,
        ] {
            assert_eq!(insn_len(&[op, 0xc0, 0, 0, 0, 0, 0, 0]), None, "{op:02x}");
        }
        for hex in [
            "0f 04 00",
            "0f 0f c1 b4", // 3DNow
            "0f 24 c0",    // mov tr
            "0f 39 00",
            "8f c8 00 00",       // XOP, not pop
            "fe d0",             // fe /2
            "ff f8",             // ff /7
            "c6 c8 00",          // c6 /1
            "48 66 90",          // legacy prefix after REX
            "48 48 90",          // two REX
            "66 e8 00 00 00 00", // rel16 or rel32 by vendor
            "66 0f 84 00 00 00 00",
            "66 c5 f8 77",                                     // VEX after 66
            "48 c5 f8 77",                                     // VEX after REX
            "c4 e0 7d 78 07",                                  // VEX map 0
            "c4 e4 7d 78 07",                                  // VEX map 4
            "c5 fd 80 00",                                     // no VEX jcc
            "62 f0 7d 48 78 07",                               // EVEX map 0
            "62 f1 79 48 72 e0 05",                            // EVEX P1 bit 2 clear
            "66 66 66 66 66 66 66 66 66 66 66 66 66 66 66 90", // 16 bytes
        ] {
            assert_eq!(len(hex), None, "{hex}");
        }
        assert_eq!(
            len("66 66 66 66 66 66 66 66 66 66 66 66 66 66 90"),
            Some(15)
        );
    }

    #[test]
    fn decode_kinds() {
        let kind = |hex: &str| decode(&bytes(hex)).unwrap().kind;
        assert_eq!(kind("f3 0f 1e fa"), Kind::Endbr64);
        assert_eq!(kind("f3 0f 1e fb"), Kind::Other); // endbr32
        assert_eq!(kind("90"), Kind::Nop { emulated: true });
        assert_eq!(kind("41 90"), Kind::Other); // xchg %eax,%r8d
        assert_eq!(kind("f3 90"), Kind::Other); // pause
        assert_eq!(kind("66 90"), Kind::Nop { emulated: false });
        assert_eq!(kind("0f 1f 44 00 00"), Kind::Nop { emulated: false });
        assert_eq!(kind("55"), Kind::Push);
        assert_eq!(kind("41 57"), Kind::Push);
        assert_eq!(kind("48 55"), Kind::Other);
        assert_eq!(kind("66 55"), Kind::Other);
        assert_eq!(
            kind("74 05"),
            Kind::Branch {
                disp: 5,
                emulated: true
            }
        );
        assert_eq!(
            kind("eb fe"),
            Kind::Branch {
                disp: -2,
                emulated: true
            }
        );
        assert_eq!(
            kind("0f 84 bf 00 00 00"),
            Kind::Branch {
                disp: 0xbf,
                emulated: true
            }
        );
        assert_eq!(
            kind("e8 fb ff ff ff"),
            Kind::Branch {
                disp: -5,
                emulated: true
            }
        );
        assert_eq!(
            kind("3e 74 05"),
            Kind::Branch {
                disp: 5,
                emulated: false
            }
        );
        assert_eq!(
            kind("f2 e9 00 01 00 00"),
            Kind::Branch {
                disp: 256,
                emulated: false
            }
        );
        assert_eq!(
            kind("e2 f0"),
            Kind::Branch {
                disp: -16,
                emulated: false
            }
        );
        assert_eq!(
            kind("c7 f8 10 00 00 00"),
            Kind::Branch {
                disp: 16,
                emulated: false
            }
        );
        assert_eq!(kind("48 85 ff"), Kind::FlagsOnly);
        assert_eq!(kind("45 84 c0"), Kind::FlagsOnly);
        assert_eq!(kind("66 85 c0"), Kind::FlagsOnly);
        assert_eq!(kind("48 39 f7"), Kind::FlagsOnly);
        assert_eq!(kind("3b 7e 08"), Kind::Other); // cmp with memory
        assert_eq!(kind("48 83 ff 10"), Kind::FlagsOnly);
        assert_eq!(kind("48 81 fe 00 00 01 00"), Kind::FlagsOnly);
        assert_eq!(kind("48 83 ef 10"), Kind::Other); // sub
        assert_eq!(kind("40 f6 c7 07"), Kind::FlagsOnly);
        assert_eq!(kind("f6 07 01"), Kind::Other); // testb $1,(%rdi)
        assert_eq!(kind("f7 df"), Kind::Other); // neg
        assert_eq!(kind("3d 00 10 00 00"), Kind::FlagsOnly);
        assert_eq!(kind("a8 01"), Kind::FlagsOnly);
        assert_eq!(kind("64 48 85 c0"), Kind::Other);
    }

    const FREE_236: &str = "48 85 ff 0f 84 bf 00 00 00 55 48 8d 77 f0 53 48 83 ec 18 c3";

    #[test]
    fn sites() {
        assert_eq!(site(FREE_236), 3);
        assert_eq!(site("41 54 55 53 48 83 ec 10 c3"), 0); // malloc
        assert_eq!(site(""), 0);
        assert_eq!(site("e9 00 00 00 00"), 0);
        assert_eq!(site("74 02 31 c0 c3"), 0);
        assert_eq!(site("f3 0f 1e fa 48 85 ff 74 05 c3"), 7);
        assert_eq!(site("f3 0f 1e fa 55 48 89 e5 c3"), 4);
        assert_eq!(site("f3 0f 1e fa 90 c3"), 4);
        assert_eq!(site("f3 0f 1e fa 41 56 c3"), 4);
        assert_eq!(site("48 83 ff 10 77 05 c3"), 4);
        assert_eq!(site("48 39 f7 74 01 c3"), 3);
        assert_eq!(site("3d 00 10 00 00 74 02 c3"), 5);
        assert_eq!(site("40 f6 c7 07 75 01 c3"), 4);
        assert_eq!(site("66 90 e9 00 00 00 00"), 2);
        assert_eq!(site("0f 1f 44 00 00 55 c3"), 5);
        assert_eq!(site("48 85 ff e8 00 00 00 00 c3"), 3);
        // Four prefix instructions at most.
        assert_eq!(site("48 85 ff 48 85 f6 48 85 d2 48 85 c9 74 01 c3"), 12);
        assert_eq!(
            site("48 85 ff 48 85 f6 48 85 d2 48 85 c9 4d 85 c0 74 01 c3"),
            0
        );
        // The first non-prefix instruction is not emulated.
        assert_eq!(site("48 85 ff 48 89 f8 74 01 c3"), 0);
        assert_eq!(site("f6 07 01 74 01 c3"), 0);
        assert_eq!(site("48 83 ef 10 74 01 c3"), 0);
        assert_eq!(site("48 85 ff 3e 74 05 c3"), 0);
        assert_eq!(site("48 85 ff f2 e9 00 00 00 00"), 0);
        assert_eq!(site("48 85 ff 48 55 c3"), 0);
        assert_eq!(site("48 85 ff 66 55 c3"), 0);
        assert_eq!(site("48 85 ff e3 01 c3"), 0); // jrcxz
        assert_eq!(site("48 85 ff f3 90 c3"), 0); // pause
    }

    #[test]
    fn sites_rejected_by_the_rest_of_the_function() {
        // A later branch into the prefix (je at 3 + 6, jmp at 9, ends at 11).
        let into = |target: i64| {
            let disp = target - 11;
            format!("48 85 ff 0f 84 00 00 00 00 eb {:02x} c3", disp as u8)
        };
        assert_eq!(site(&into(0)), 3); // re-entering at the entry is fine
        assert_eq!(site(&into(1)), 0);
        assert_eq!(site(&into(3)), 0); // onto the site itself
        assert_eq!(site(&into(4)), 3);
        assert_eq!(site("48 85 ff 0f 84 00 00 00 00 e2 f8 c3"), 0); // loop to 3
        assert_eq!(site("48 85 ff 0f 84 00 00 00 00 c7 f8 f4 ff ff ff c3"), 0); // xbegin to 3
                                                                                // An undecodable byte later: nothing can be ruled out.
        assert_eq!(site(&format!("{FREE_236} 06")), 0);
        assert_eq!(site(&format!("{FREE_236} e8 00 00")), 0);
    }

    /// The file range of .text and its address.
    fn text(elf: &Elf) -> (usize, u64, usize) {
        let sh = elf
            .section_headers
            .iter()
            .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(".text"))
            .expect(".text");
        (sh.sh_offset as usize, sh.sh_addr, sh.sh_size as usize)
    }

    /// Decodes every instruction objdump finds in `path`'s .text from
    /// objdump's boundaries and compares lengths; returns how many were
    /// checked.
    fn against_objdump(path: &str) -> usize {
        let data = std::fs::read(path).unwrap();
        let elf = Elf::parse(&data).unwrap();
        let (off, addr, size) = text(&elf);
        let text = &data[off..off + size];
        let out = Command::new("objdump")
            .args(["-d", "--no-show-raw-insn", "-w", "-j", ".text", path])
            .output()
            .expect("objdump runs");
        assert!(out.status.success());
        let out = String::from_utf8_lossy(&out.stdout);

        // Runs of instruction addresses: a symbol starts one, and so does a
        // skipped run of zeros ("..."). A symbol with "(bad)", ".byte" or a
        // lone REX is dropped whole.
        let mut runs: Vec<Vec<u64>> = Vec::new();
        let mut symbol: Vec<Vec<u64>> = Vec::new();
        let mut bad = false;
        for line in out.lines() {
            if line.ends_with(">:") && !line.starts_with(' ') {
                if !bad {
                    runs.append(&mut symbol);
                }
                symbol.clear();
                symbol.push(Vec::new());
                bad = false;
            } else if line.trim() == "..." {
                symbol.push(Vec::new());
            } else if let Some((a, rest)) = line.split_once(":\t") {
                let Ok(a) = u64::from_str_radix(a.trim(), 16) else {
                    continue;
                };
                // objdump prints a prefix it cannot attach (a REX before
                // another prefix, in data such as strings) as a line of its own.
                let lone = rest.trim().starts_with("rex") && !rest.trim().contains(' ');
                bad |= lone || rest.contains("(bad)") || rest.contains(".byte");
                if let Some(run) = symbol.last_mut() {
                    run.push(a);
                }
            }
        }
        if !bad {
            runs.append(&mut symbol);
        }

        let mut checked = 0;
        let mut wrong = Vec::new();
        for pair in runs.iter().flat_map(|run| run.windows(2)) {
            let i = (pair[0] - addr) as usize;
            let mut got = insn_len(&text[i..]);
            // objdump folds fwait into a following x87 op (fstsw is 9b df e0);
            // to the CPU, and to us, 9b is an instruction of its own.
            if text[i] == 0x9b && pair[1] - pair[0] > 1 {
                got = insn_len(&text[i + 1..]).map(|l| l + 1);
            }
            if got.map(|l| pair[0] + l as u64) != Some(pair[1]) {
                let n = ((pair[1] - pair[0]) as usize).min(15);
                wrong.push(format!(
                    "{:x}: {:02x?} ours {got:?}",
                    pair[0],
                    &text[i..i + n]
                ));
            }
            checked += 1;
        }
        assert!(
            wrong.is_empty(),
            "{path}: {} mismatches: {:#?}",
            wrong.len(),
            &wrong[..wrong.len().min(20)]
        );
        checked
    }

    #[test]
    fn lengths_match_objdump_libc() {
        let n = against_objdump("/lib/x86_64-linux-gnu/libc.so.6");
        eprintln!("libc: {n} instructions checked");
        assert!(n > 100_000, "{n}");
    }

    #[test]
    fn lengths_match_objdump_libstdcxx() {
        let path = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6";
        if !std::path::Path::new(path).exists() {
            return;
        }
        let n = against_objdump(path);
        eprintln!("libstdc++: {n} instructions checked");
        assert!(n > 50_000, "{n}");
    }

    #[test]
    fn host_libc_free_and_malloc() {
        let data = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let elf = Elf::parse(&data).unwrap();
        let (off, addr, size) = text(&elf);
        let mut asserted = 0;
        for name in ["free", "malloc"] {
            let sym = elf
                .dynsyms
                .iter()
                .find(|s| {
                    s.is_function()
                        && s.st_size > 0
                        && elf.dynstrtab.get_at(s.st_name) == Some(name)
                })
                .unwrap_or_else(|| panic!("{name} in dynsym"));
            assert!(sym.st_value >= addr && sym.st_value + sym.st_size <= addr + size as u64);
            let start = off + (sym.st_value - addr) as usize;
            let code = &data[start..start + sym.st_size as usize];
            let site = probe_site(code);
            eprintln!("{name}: {:02x?} -> {site}", &code[..8]);
            if code.starts_with(&[0x48, 0x85, 0xff, 0x0f, 0x84]) {
                assert_eq!(site, 3, "{name}");
                asserted += 1;
            } else if matches!(code, [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..]) {
                assert_eq!(site, 0, "{name}");
                asserted += 1;
            }
        }
        assert!(
            asserted > 0,
            "this libc's free and malloc start differently"
        );
    }
}
