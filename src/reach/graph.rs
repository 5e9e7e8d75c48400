//! The flood fill of the reachability scan, on any memory that can be read
//! by ranges: from root ranges and register values, mark every block a
//! word points into (interior pointers too), scan those blocks in turn,
//! then tell the unreachable blocks that another unreachable block points
//! to (indirect) from the rest (direct), as LeakSanitizer does.

/// Reads memory by ranges, as process_vm_readv does: returns how many bytes
/// were read into `buf` (the ranges one after the other), stopping at the
/// first range that cannot be read.
pub trait Memory {
    fn read(&mut self, ranges: &[(u64, usize)], buf: &mut [u8]) -> usize;
}

/// What the scan found out about one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Reachable,
    /// Unreachable, and no other unreachable block points to it.
    Direct,
    /// Unreachable, but pointed to by another unreachable block.
    Indirect,
}

/// Blocks sorted by address, with a page table per dense span of them so
/// that finding the block a word points into costs a few cache lines, not
/// a binary search over a million blocks.
pub struct Index {
    /// (start, end) sorted by start; ends clipped so blocks do not overlap
    /// (a stale record of a missed free can overlap a newer block).
    ranges: Vec<(u64, u64)>,
    /// (start, end, first entry in `pages`) of runs of blocks less than
    /// SPAN_GAP apart.
    spans: Vec<(u64, u64, usize)>,
    /// For each page of each span: the first block that ends after the
    /// page's start.
    pages: Vec<u32>,
    shift: u32,
}

const SPAN_GAP: u64 = 1 << 20;
/// The page table's size is kept under this many entries (16 MB).
const MAX_PAGES: u64 = 1 << 22;

impl Index {
    /// `blocks` must be sorted by address.
    pub fn new(blocks: &[(u64, u64)]) -> Index {
        let mut ranges = Vec::with_capacity(blocks.len());
        let mut prev_end = 0;
        for &(addr, size) in blocks {
            // A block of size 0 still has its unique address.
            let end = addr.saturating_add(size.max(1));
            let start = addr.max(prev_end);
            let start = start.min(end);
            ranges.push((start, end));
            prev_end = prev_end.max(end);
        }
        let mut spans: Vec<(u64, u64, usize)> = Vec::new();
        for &(start, end) in &ranges {
            match spans.last_mut() {
                Some(last) if start.saturating_sub(last.1) < SPAN_GAP => last.1 = last.1.max(end),
                _ => spans.push((start, end, 0)),
            }
        }
        let covered: u64 = spans.iter().map(|s| s.1 - s.0).sum();
        let mut shift = 12;
        while (covered >> shift) + spans.len() as u64 > MAX_PAGES {
            shift += 1;
        }
        let mut pages = Vec::new();
        let mut next_block = 0usize;
        for span in &mut spans {
            span.2 = pages.len();
            let count = ((span.1 - span.0) >> shift) + 1;
            for page in 0..count {
                let page_start = span.0 + (page << shift);
                while next_block < ranges.len() && ranges[next_block].1 <= page_start {
                    next_block += 1;
                }
                pages.push(next_block as u32);
            }
        }
        Index {
            ranges,
            spans,
            pages,
            shift,
        }
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Some block starts in `start..end`.
    fn any_within(&self, start: u64, end: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.0 < start);
        self.ranges.get(i).is_some_and(|r| r.0 < end)
    }

    /// The block `word` points into, if any.
    #[inline]
    pub fn find(&self, word: u64) -> Option<usize> {
        let first = self.spans.first()?;
        let last = self.spans.last()?;
        if word < first.0 || word >= last.1 {
            return None;
        }
        let span = if self.spans.len() == 1 {
            first
        } else {
            let i = self.spans.partition_point(|s| s.0 <= word);
            &self.spans[i.checked_sub(1)?]
        };
        if word >= span.1 {
            return None;
        }
        let page = span.2 + ((word - span.0) >> self.shift) as usize;
        let lo = self.pages[page] as usize;
        let hi = self.pages.get(page + 1).map_or(self.ranges.len(), |&p| {
            (p as usize + 1).min(self.ranges.len())
        });
        if lo >= hi {
            return None;
        }
        let k = lo + self.ranges[lo..hi].partition_point(|r| r.0 <= word);
        let i = k.checked_sub(1)?;
        let (start, end) = self.ranges[i];
        (start <= word && word < end).then_some(i)
    }
}

/// What a flood fill read.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cost {
    pub bytes_scanned: u64,
    /// Ranges (or blocks) that could not be read, and their bytes.
    pub unreadable: u64,
    pub unreadable_bytes: u64,
}

/// Reads up to this much at once: small enough to stay in the cache
/// between the copy and the scan.
const CHUNK: usize = 512 << 10;
/// Blocks closer than this are read in one range.
const MERGE_GAP: u64 = 512;

/// A range of memory whose words are roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    pub start: u64,
    pub end: u64,
    /// Skip the blocks in it (a heap mapping); else every word counts (a
    /// thread's live stack, even inside a block).
    pub skip_blocks: bool,
}

/// Classifies every block of `index`, the roots being `roots` and
/// `registers` (values). A block holding one of `stacks` (a thread's stack
/// pointer: a thread stack the C library mmap'd) is never scanned as a
/// block: the live part of the stack is a root, the rest dead frames.
pub fn classify(
    mem: &mut impl Memory,
    index: &Index,
    roots: &[Root],
    registers: &[u64],
    stacks: &[u64],
) -> (Vec<Class>, Cost) {
    let mut cost = Cost::default();
    let mut fill = Fill {
        index,
        reached: vec![false; index.len()],
        scanned: vec![false; index.len()],
        frontier: Vec::new(),
    };
    let mut buf = vec![0u8; CHUNK];
    for i in stacks.iter().filter_map(|&sp| index.find(sp)) {
        fill.scanned[i] = true;
    }
    for &r in registers {
        fill.mark(r);
    }
    // Roots without blocks first: the blocks they reach are then scanned
    // straight from the chunk of the heap that holds them, as it is read
    // for its own roots, instead of being read again.
    let (plain, with_blocks): (Vec<&Root>, Vec<&Root>) = roots
        .iter()
        .partition(|r| !r.skip_blocks || !index.any_within(r.start, r.end));
    for root in plain {
        let mut visit = |_, word| fill.mark(word);
        scan_range(
            mem,
            usize::MAX,
            root.start,
            root.end,
            None,
            &mut buf,
            &mut cost,
            &mut visit,
        );
    }
    for root in with_blocks {
        scan_heap(mem, &mut fill, root, &mut buf, &mut cost);
    }
    // Breadth first, a round at a time, each round read in address order.
    while !fill.frontier.is_empty() {
        let mut round = std::mem::take(&mut fill.frontier);
        round.retain(|&i| !fill.scanned[i]);
        round.sort_unstable();
        for &i in &round {
            fill.scanned[i] = true;
        }
        scan_blocks(mem, index, &round, &mut buf, &mut cost, |_, word| {
            fill.mark(word)
        });
    }
    let reached = fill.reached;
    // What the unreachable blocks point to (not themselves) is indirect.
    let unreachable: Vec<usize> = (0..index.len()).filter(|&i| !reached[i]).collect();
    let mut indirect = vec![false; index.len()];
    scan_blocks(
        mem,
        index,
        &unreachable,
        &mut buf,
        &mut cost,
        |from, word| {
            if let Some(i) = index.find(word) {
                if i != from && !reached[i] {
                    indirect[i] = true;
                }
            }
        },
    );
    let classes = (0..index.len())
        .map(|i| match (reached[i], indirect[i]) {
            (true, _) => Class::Reachable,
            (false, true) => Class::Indirect,
            (false, false) => Class::Direct,
        })
        .collect();
    (classes, cost)
}

/// The state of the flood fill.
struct Fill<'a> {
    index: &'a Index,
    reached: Vec<bool>,
    /// Read for pointers already (a block is scanned once).
    scanned: Vec<bool>,
    /// Reached, maybe not yet scanned.
    frontier: Vec<usize>,
}

impl Fill<'_> {
    #[inline]
    fn mark(&mut self, word: u64) {
        if let Some(i) = self.index.find(word) {
            if !self.reached[i] {
                self.reached[i] = true;
                self.frontier.push(i);
            }
        }
    }
}

/// Scans a mapping that holds blocks: its words outside blocks are roots;
/// each block lying whole in a chunk read, once reached (before or while
/// the chunk is scanned), is scanned from the same chunk.
fn scan_heap(
    mem: &mut impl Memory,
    fill: &mut Fill<'_>,
    root: &Root,
    buf: &mut [u8],
    cost: &mut Cost,
) {
    let ranges = &fill.index.ranges;
    let mut at = root.start;
    let mut local: Vec<usize> = Vec::new();
    while at < root.end {
        let len = ((root.end - at) as usize).min(buf.len());
        let n = mem.read(&[(at, len)], &mut buf[..len]);
        cost.bytes_scanned += n as u64;
        let data = &buf[..n];
        let chunk_end = at + n as u64;
        // The blocks whole in this chunk: lo..hi.
        let lo = ranges.partition_point(|r| r.0 < at);
        let hi = lo + ranges[lo..].partition_point(|r| r.1 <= chunk_end);
        let take_local = |fill: &mut Fill<'_>, mark_from: usize, local: &mut Vec<usize>| {
            for &i in &fill.frontier[mark_from..] {
                if (lo..hi).contains(&i) {
                    local.push(i);
                }
            }
        };
        let before = fill.frontier.len();
        scan_gaps(fill.index, at, data, &mut |w| fill.mark(w));
        // Reached from these roots, or earlier.
        take_local(fill, before, &mut local);
        local.extend((lo..hi).filter(|&i| fill.reached[i] && !fill.scanned[i]));
        while let Some(i) = local.pop() {
            if fill.scanned[i] {
                continue;
            }
            fill.scanned[i] = true;
            let (s, e) = ranges[i];
            let before = fill.frontier.len();
            scan_words(s, &data[(s - at) as usize..(e - at) as usize], &mut |w| {
                fill.mark(w)
            });
            take_local(fill, before, &mut local);
        }
        if n < len {
            let bad = at + n as u64;
            let next = (((bad >> 12) + 1) << 12).min(root.end);
            cost.unreadable += 1;
            cost.unreadable_bytes += next - bad;
            at = next;
        } else {
            at += len as u64;
        }
    }
}

/// Reads the blocks `sorted` (indexes in address order), neighbours in one
/// range, and hands each word of each block to `visit(block, word)`.
fn scan_blocks(
    mem: &mut impl Memory,
    index: &Index,
    sorted: &[usize],
    buf: &mut [u8],
    cost: &mut Cost,
    mut visit: impl FnMut(usize, u64),
) {
    let mut i = 0;
    while i < sorted.len() {
        // One batch: up to 1024 ranges, CHUNK bytes.
        let mut ranges: Vec<(u64, usize)> = Vec::new();
        // (block, offset in buf) of each block in this batch.
        let mut placed: Vec<(usize, usize)> = Vec::new();
        let mut total = 0usize;
        while i < sorted.len() {
            let (start, end) = index.ranges[sorted[i]];
            let len = (end - start) as usize;
            if len > CHUNK {
                // A huge block is read alone, in pieces.
                if ranges.is_empty() {
                    scan_range(mem, sorted[i], start, end, None, buf, cost, &mut visit);
                    i += 1;
                }
                break;
            }
            let merged = ranges.last().and_then(|&(at, l)| {
                let last_end = at + l as u64;
                (start >= last_end && start - last_end <= MERGE_GAP).then_some(start - last_end)
            });
            let extra = merged.map_or(len, |gap| gap as usize + len);
            if total + extra > buf.len() || (merged.is_none() && ranges.len() == 1024) {
                break;
            }
            match (merged, ranges.last_mut()) {
                (Some(_), Some(last)) => last.1 += extra,
                _ => ranges.push((start, len)),
            }
            placed.push((sorted[i], total + extra - len));
            total += extra;
            i += 1;
        }
        if ranges.is_empty() {
            continue;
        }
        let n = mem.read(&ranges, &mut buf[..total]);
        cost.bytes_scanned += n as u64;
        for &(block, offset) in &placed {
            let (start, end) = index.ranges[block];
            let len = (end - start) as usize;
            if offset + len > n {
                // Not read: read alone, page by page past what fails (an
                // mmap'd thread stack starts with a guard page).
                let mut own = vec![0u8; len];
                scan_range(mem, block, start, end, None, &mut own, cost, &mut visit);
                continue;
            }
            // The block's own address may not be word-aligned in the buffer
            // when merged after an odd gap: align by address.
            let skip = ((8 - (start % 8)) % 8) as usize;
            if skip < len {
                for word in words(&buf[offset + skip..offset + len]) {
                    visit(block, word);
                }
            }
        }
    }
}

/// Reads `start..end` in pieces of `buf`'s size and hands each word to
/// `visit(block, word)`, but none inside the blocks of `skip`; a page that
/// cannot be read is skipped and counted, and reading goes on after it.
#[allow(clippy::too_many_arguments)]
fn scan_range(
    mem: &mut impl Memory,
    block: usize,
    start: u64,
    end: u64,
    skip: Option<&Index>,
    buf: &mut [u8],
    cost: &mut Cost,
    visit: &mut impl FnMut(usize, u64),
) {
    let mut at = start;
    let mut failing = false;
    while at < end {
        let len = ((end - at) as usize).min(buf.len());
        let n = mem.read(&[(at, len)], &mut buf[..len]);
        match skip {
            Some(index) => scan_gaps(index, at, &buf[..n], &mut |w| visit(block, w)),
            None => scan_words(at, &buf[..n], &mut |w| visit(block, w)),
        }
        cost.bytes_scanned += n as u64;
        if n < len {
            let bad = at + n as u64;
            let next = (((bad >> 12) + 1) << 12).min(end);
            // One count per run of unreadable pages.
            if !failing || n > 0 {
                cost.unreadable += 1;
            }
            failing = true;
            cost.unreadable_bytes += next - bad;
            at = next;
        } else {
            failing = false;
            at += len as u64;
        }
    }
}

/// The aligned words of `data`, read from address `base`.
#[inline]
fn scan_words(base: u64, data: &[u8], visit: &mut impl FnMut(u64)) {
    let skip = (((8 - (base % 8)) % 8) as usize).min(data.len());
    for word in words(&data[skip..]) {
        visit(word);
    }
}

/// The aligned words of `data`, read from address `base`, that lie outside
/// every block of `index`.
fn scan_gaps(index: &Index, base: u64, data: &[u8], visit: &mut impl FnMut(u64)) {
    let end = base + data.len() as u64;
    let mut i = index.ranges.partition_point(|r| r.1 <= base);
    let mut at = base;
    while at < end {
        let (gap_end, next) = match index.ranges.get(i) {
            Some(&(s, e)) if s < end => (s.max(at), e),
            _ => (end, end),
        };
        if gap_end > at {
            let from = (at - base) as usize;
            let to = (gap_end - base) as usize;
            scan_words(at, &data[from..to], visit);
        }
        at = at.max(next);
        i += 1;
    }
}

/// The whole native-endian 64-bit words of `bytes`.
#[inline]
fn words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes
        .chunks_exact(8)
        .map(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Memory as a map of word addresses to values; everything else reads
    /// as zero except `holes`, which cannot be read.
    struct Fake {
        words: BTreeMap<u64, u64>,
        holes: Vec<(u64, u64)>,
    }

    impl Memory for Fake {
        fn read(&mut self, ranges: &[(u64, usize)], buf: &mut [u8]) -> usize {
            let mut n = 0;
            for &(addr, len) in ranges {
                for k in 0..len as u64 {
                    let a = addr + k;
                    if self.holes.iter().any(|h| h.0 <= a && a < h.1) {
                        return n;
                    }
                    let word = self.words.get(&(a & !7)).copied().unwrap_or(0);
                    buf[n] = word.to_ne_bytes()[(a % 8) as usize];
                    n += 1;
                }
            }
            n
        }
    }

    #[test]
    fn finds_blocks_by_interior_pointers() {
        let blocks = [
            (0x1000, 32),
            (0x1040, 16),
            (0x5000_0000, 0),
            (0x5000_0100, 4096),
        ];
        let index = Index::new(&blocks);
        assert_eq!(index.find(0x1000), Some(0));
        assert_eq!(index.find(0x101f), Some(0));
        assert_eq!(index.find(0x1020), None);
        assert_eq!(index.find(0x1048), Some(1));
        assert_eq!(index.find(0x1050), None);
        assert_eq!(index.find(0x5000_0000), Some(2));
        assert_eq!(index.find(0x5000_0001), None);
        assert_eq!(index.find(0x5000_10ff), Some(3));
        assert_eq!(index.find(0x5000_1100), None);
        assert_eq!(index.find(0), None);
        assert_eq!(index.find(u64::MAX), None);
        // Many small blocks on one page, and across pages.
        let many: Vec<(u64, u64)> = (0..10_000u64).map(|i| (0x10_0000 + i * 48, 40)).collect();
        let index = Index::new(&many);
        for (i, &(a, _)) in many.iter().enumerate() {
            assert_eq!(index.find(a + 39), Some(i));
            assert_eq!(index.find(a + 40), None);
        }
    }

    #[test]
    fn classifies_like_leak_sanitizer() {
        // Blocks: 0 from a root; 1 through an interior pointer from 0;
        // 2 from a register; 3 unreferenced; 4 -> 5 -> 6 a list whose head
        // is lost; 7 points to itself only.
        let blocks: Vec<(u64, u64)> = (0..8u64).map(|i| (0x10000 + i * 0x100, 64)).collect();
        let mut words = BTreeMap::new();
        words.insert(0x500, 0x10000 + 8); // root -> 0 (interior)
        words.insert(0x10000 + 16, 0x10100 + 40); // 0 -> 1 (interior)
        words.insert(0x10400, 0x10500); // 4 -> 5
        words.insert(0x10500 + 8, 0x10600); // 5 -> 6
        words.insert(0x10700, 0x10700); // 7 -> 7
        let mut mem = Fake {
            words,
            holes: vec![],
        };
        let index = Index::new(&blocks);
        let root = |start, end| Root {
            start,
            end,
            skip_blocks: true,
        };
        // The root range covers the blocks too: they are skipped.
        let (classes, cost) = classify(&mut mem, &index, &[root(0x400, 0x20000)], &[0x10200], &[]);
        use Class::*;
        assert_eq!(
            classes,
            [Reachable, Reachable, Reachable, Direct, Direct, Indirect, Indirect, Direct]
        );
        assert_eq!(cost.unreadable, 0);
        assert!(cost.bytes_scanned >= 0x200 + 8 * 64);
        // A live stack inside block 3 is a root whole: its pointer to 6
        // counts, though block 3 itself is not reached.
        mem.words.insert(0x10310, 0x10600);
        let stack = Root {
            start: 0x10300,
            end: 0x10340,
            skip_blocks: false,
        };
        let (classes, _) = classify(&mut mem, &index, &[stack], &[], &[]);
        assert_eq!(classes[3..7], [Direct, Direct, Indirect, Reachable]);
        // Reached, a thread's stack block is not scanned whole: what lies
        // below its stack pointer is dead frames.
        mem.words.insert(0x10308, 0x10300);
        mem.words.insert(0x10300, 0x10200);
        let live = Root {
            start: 0x10308,
            ..stack
        };
        let (classes, _) = classify(&mut mem, &index, &[live], &[], &[0x10308]);
        assert_eq!(classes[2..4], [Direct, Reachable]);
    }

    #[test]
    fn skips_what_cannot_be_read() {
        let blocks = [(0x20000u64, 64u64)];
        let mut words = BTreeMap::new();
        words.insert(0x3000, 0x20000);
        let mut mem = Fake {
            words,
            holes: vec![(0x1000, 0x2000)],
        };
        let index = Index::new(&blocks);
        let root = Root {
            start: 0x800,
            end: 0x4000,
            skip_blocks: true,
        };
        let (classes, cost) = classify(&mut mem, &index, &[root], &[], &[]);
        assert_eq!(classes, [Class::Reachable]);
        assert_eq!((cost.unreadable, cost.unreadable_bytes), (1, 0x1000));
    }
}
