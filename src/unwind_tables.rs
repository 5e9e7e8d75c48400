//! --unwind cfi: the unwind rows BPF walks user stacks with (walk_cfi in
//! bpf/memleak.bpf.c), built from the .eh_frame of every object a process
//! maps executable, at the addresses where it maps them.
//!
//! A row holds from its address to the next row's. Each FDE's rows are
//! followed by a row without CFI at its end, so that an address between
//! functions (or in an object without CFI) is never taken for part of the
//! function before it; there BPF steps by the frame pointer. Neighbouring
//! rows with the same rule are merged: the table keeps only the places
//! where the rule changes.

use std::collections::HashMap;

use crate::bpf::abi::{self, CfiRow};
use crate::process::maps::{self as proc_maps, MapEntry};
use crate::symbolize::unwind::{CfaBase, CfiTable, CompactRule};

/// Builds processes' rows, keeping each object's CFI rows between builds
/// (a library's rows are the same in every process and after every
/// dlopen), and notices when a process's executable mappings changed.
#[derive(Default)]
pub struct Builder {
    objects: HashMap<(u32, u32, u64), Option<Object>>,
    /// Each process's executable file mappings at its last build.
    seen: HashMap<u32, Vec<(u64, u64, u64)>>,
}

impl Builder {
    /// The rows of each of `pids` when the executable mappings of any
    /// changed since the last call (a command's exec and its loader, a
    /// dlopen); None when nothing changed.
    pub fn rebuild_if_changed(&mut self, pids: &[u32]) -> Option<Vec<(u32, Vec<CfiRow>)>> {
        let mut changed = false;
        let mut maps_of = Vec::new();
        for &pid in pids {
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
                .map(|text| proc_maps::parse(&text))
                .unwrap_or_default();
            let executable: Vec<(u64, u64, u64)> = maps
                .iter()
                .filter(|e| e.is_executable() && e.is_file())
                .map(|e| (e.start, e.end, e.inode))
                .collect();
            // A process that is gone keeps the rows it had.
            if !executable.is_empty() && self.seen.get(&pid) != Some(&executable) {
                changed = true;
                self.seen.insert(pid, executable);
            }
            maps_of.push((pid, maps));
        }
        if !changed {
            return None;
        }
        Some(
            maps_of
                .iter()
                .map(|(pid, maps)| (*pid, self.rows(*pid, maps)))
                .collect(),
        )
    }

    /// The rows for process `pid` with memory map `maps`, sorted by address.
    pub fn rows(&mut self, pid: u32, maps: &[MapEntry]) -> Vec<CfiRow> {
        let mut rows = Vec::new();
        for entry in maps.iter().filter(|e| e.is_executable() && e.is_file()) {
            let key = (entry.dev_major, entry.dev_minor, entry.inode);
            let object = self.objects.entry(key).or_insert_with(|| {
                let table =
                    crate::process::open_mapped(pid, entry).and_then(|file| CfiTable::of(&file))?;
                let loads = table
                    .segments()
                    .loads()
                    .iter()
                    .map(|l| (l.offset, l.vaddr))
                    .collect();
                Some((loads, table.compact_rows()))
            });
            if let Some((loads, object_rows)) = object {
                place(entry, loads, object_rows, &mut rows);
            }
        }
        compact(rows)
    }
}

/// The rows for process `pid`, sorted by address; empty when its maps
/// cannot be read.
#[cfg(test)]
pub fn rows_of_process(pid: u32) -> Vec<CfiRow> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|text| proc_maps::parse(&text))
        .unwrap_or_default();
    Builder::default().rows(pid, &maps)
}

type Row = (u64, u64, CompactRule);

/// An object's PT_LOADs as (file offset, vaddr), and its CFI rows.
type Object = (Vec<(u64, u64)>, Vec<Row>);

/// Adds the rows of an object's CFI that fall in `entry`'s mapping, at
/// their addresses there, each FDE row followed by a no-CFI row at its
/// end. `loads`: (file offset, vaddr) of each PT_LOAD, in file order.
fn place(entry: &MapEntry, loads: &[(u64, u64)], object_rows: &[Row], out: &mut Vec<Placed>) {
    let len = entry.end - entry.start;
    // The address a vaddr of the file is mapped at by this mapping, if any.
    let absolute = |vaddr: u64| -> Option<u64> {
        let &(off, load_vaddr) = loads.iter().rev().find(|(_, v)| *v <= vaddr)?;
        let file_offset = vaddr - load_vaddr + off;
        let in_map = file_offset.checked_sub(entry.offset)?;
        (in_map < len).then(|| entry.start + in_map)
    };
    for &(start, end, rule) in object_rows {
        let (Some(first), Some(last)) = (absolute(start), absolute(end.saturating_sub(1))) else {
            continue;
        };
        out.push(Placed {
            pc: first,
            fde_row: true,
            rule,
        });
        out.push(Placed {
            pc: last + 1,
            fde_row: false,
            rule: CompactRule::NoCfi,
        });
    }
}

struct Placed {
    pc: u64,
    /// A row of an FDE wins over an end-of-FDE row at the same address
    /// (the next function starting where the last one ended).
    fde_row: bool,
    rule: CompactRule,
}

/// Sorted, one row per address, neighbours with the same rule merged.
fn compact(mut placed: Vec<Placed>) -> Vec<CfiRow> {
    placed.sort_unstable_by_key(|p| (p.pc, !p.fde_row));
    placed.dedup_by_key(|p| p.pc);
    let mut rows: Vec<CfiRow> = Vec::with_capacity(placed.len());
    for p in placed {
        let row = encode(p.pc, p.rule);
        if rows.last().is_some_and(|last| same_rule(last, &row)) {
            continue;
        }
        rows.push(row);
    }
    rows
}

fn same_rule(a: &CfiRow, b: &CfiRow) -> bool {
    (a.kind, a.cfa_offset, a.fp_offset, a.ra_offset)
        == (b.kind, b.cfa_offset, b.fp_offset, b.ra_offset)
}

fn encode(pc: u64, rule: CompactRule) -> CfiRow {
    let mut row = CfiRow {
        pc,
        ..Default::default()
    };
    match rule {
        CompactRule::NoCfi => row.kind = abi::CFI_NONE,
        CompactRule::End => row.kind = abi::CFI_END,
        CompactRule::Cfa {
            base,
            cfa_offset,
            fp_offset,
            ra_offset,
        } => {
            row.kind = match base {
                CfaBase::Sp => abi::CFI_SP,
                CfaBase::Fp => abi::CFI_FP,
            };
            row.cfa_offset = cfa_offset;
            row.fp_offset = fp_offset;
            row.ra_offset = ra_offset;
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test process's own rows: sorted, distinct addresses, merged,
    /// and a function of it found with a rule from its CFI.
    #[test]
    fn rows_of_this_process() {
        let rows = rows_of_process(std::process::id());
        assert!(rows.len() > 1000, "{} rows", rows.len());
        assert!(rows.windows(2).all(|w| w[0].pc < w[1].pc));
        assert!(rows.windows(2).all(|w| !same_rule(&w[0], &w[1])));
        let here = rows_of_this_process as *const () as u64;
        let i = rows.partition_point(|r| r.pc <= here) - 1;
        assert_ne!(rows[i].kind, abi::CFI_NONE, "{:?}", rows[i]);
    }

    #[test]
    fn gaps_between_functions_have_no_cfi() {
        let rule = CompactRule::Cfa {
            base: CfaBase::Sp,
            cfa_offset: 8,
            fp_offset: 0,
            ra_offset: -8,
        };
        let entry = MapEntry {
            start: 0x7000_1000,
            end: 0x7000_3000,
            offset: 0x1000,
            ..proc_maps::parse_line("7000-8000 r-xp 00001000 08:01 12 /x").unwrap()
        };
        let mut placed = Vec::new();
        // Two functions back to back, one after a gap, one outside the map.
        let object_rows = [
            (0x1100, 0x1110, rule),
            (0x1110, 0x1120, rule),
            (0x1200, 0x1210, rule),
            (0x5000, 0x5010, rule),
        ];
        place(&entry, &[(0, 0)], &object_rows, &mut placed);
        let rows = compact(placed);
        let summary: Vec<(u64, u8)> = rows.iter().map(|r| (r.pc, r.kind)).collect();
        assert_eq!(
            summary,
            [
                (0x7000_1100, abi::CFI_SP),
                (0x7000_1120, abi::CFI_NONE),
                (0x7000_1200, abi::CFI_SP),
                (0x7000_1210, abi::CFI_NONE),
            ]
        );
    }
}
