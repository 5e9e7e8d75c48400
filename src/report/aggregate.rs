//! Aggregation: outstanding allocations grouped by stack, the top N, and
//! each stack's growth from report to report.

use std::collections::{HashMap, HashSet};

use super::Unreachable;
use crate::cli::{Options, SortKey};
use crate::reach;
use crate::records::{Allocation, StackTotal};

/// Groups allocations by stack in one pass as they are read, skipping those
/// younger than `min_age_ns` at `now_ns` (BCC's -o, applied at report
/// time). Nothing per allocation is kept, so a million outstanding blocks
/// cost a hash map entry per stack, not per block.
pub struct Aggregator {
    by_stack: HashMap<(u32, u64), StackTotal>,
    now_ns: u64,
    min_age_ns: u64,
}

impl Aggregator {
    pub fn new(now_ns: u64, min_age_ns: u64) -> Aggregator {
        Aggregator {
            by_stack: HashMap::new(),
            now_ns,
            min_age_ns,
        }
    }

    /// Old enough to be reported.
    pub fn is_old_enough(&self, a: &Allocation) -> bool {
        self.now_ns.saturating_sub(a.timestamp_ns) >= self.min_age_ns
    }

    pub fn add(&mut self, a: &Allocation) {
        if !self.is_old_enough(a) {
            return;
        }
        let (stack_id, tgid) = (a.stack_id, a.tgid);
        let total = self
            .by_stack
            .entry((tgid, stack_id))
            .or_insert_with(|| StackTotal {
                stack_id,
                tgid,
                ..Default::default()
            });
        total.bytes = total.bytes.saturating_add(a.size);
        total.count += 1;
    }

    pub fn finish(self) -> Vec<StackTotal> {
        self.by_stack.into_values().collect()
    }
}

/// The `top` largest stacks by `sort`, in BCC's printing order: ascending,
/// so the largest is printed last, nearest the prompt. Ties are broken by
/// the other measure, then by stack id, so output is stable.
pub fn top(mut stacks: Vec<StackTotal>, sort: &SortKey, top: usize) -> Vec<StackTotal> {
    let key = |s: &StackTotal| match sort {
        SortKey::Size => (s.bytes, s.count, s.stack_id, s.tgid),
        SortKey::Count => (s.count, s.bytes, s.stack_id, s.tgid),
    };
    stacks.retain(|s| s.count > 0);
    stacks.sort_unstable_by_key(|s| std::cmp::Reverse(key(s)));
    stacks.truncate(top);
    stacks.reverse();
    stacks
}

/// --estimate: each sampled allocation stands for `weight` allocations.
pub fn scale(stacks: &mut [StackTotal], weight: u64) {
    for s in stacks {
        s.bytes = s.bytes.saturating_mul(weight);
        s.count = s.count.saturating_mul(weight);
    }
}

/// A stack's outstanding bytes compared with the last report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Growth {
    /// Bytes now minus bytes at the last report (0 before the first).
    pub delta_bytes: i64,
    /// For how many reports in a row its bytes grew (this one included).
    pub grew_reports: u64,
}

/// Remembers each stack's bytes from report to report. The first report
/// compares with the moment tracing began, when nothing was outstanding,
/// so a stack that grew in every interval has grown in as many reports as
/// there were.
#[derive(Debug, Default)]
pub struct GrowthTracker {
    last: HashMap<(u32, u64), (u64, u64)>,
    reports: u64,
}

impl GrowthTracker {
    /// Records a report's totals (every stack, before top N) and returns
    /// each stack's growth.
    pub fn update(&mut self, totals: &[StackTotal]) -> HashMap<(u32, u64), Growth> {
        self.reports += 1;
        let mut now = HashMap::with_capacity(totals.len());
        let mut growth = HashMap::with_capacity(totals.len());
        for t in totals.iter().filter(|t| t.count > 0) {
            let key = (t.tgid, t.stack_id);
            let (bytes, streak) = self.last.get(&key).copied().unwrap_or((0, 0));
            let grew = t.bytes > bytes;
            let streak = if grew { streak + 1 } else { 0 };
            now.insert(key, (t.bytes, streak));
            growth.insert(
                key,
                Growth {
                    delta_bytes: t.bytes as i64 - bytes as i64,
                    grew_reports: streak,
                },
            );
        }
        self.last = now;
        growth
    }

    /// Reports so far: the intervals since tracing began.
    pub fn reports(&self) -> u64 {
        self.reports
    }
}

/// --unreachable: each stack's unreachable blocks, for the processes that
/// could be scanned.
#[derive(Debug, Default)]
pub struct UnreachableByStack {
    stacks: HashMap<(u32, u64), Unreachable>,
    scanned: HashSet<u32>,
}

impl UnreachableByStack {
    /// Process `pid` was scanned: its stacks say what is unreachable, if
    /// only that nothing is.
    pub fn scanned(&mut self, pid: u32) {
        self.scanned.insert(pid);
    }

    /// Counts block `a`, of the scan's class `class`.
    pub fn add(&mut self, a: &Allocation, class: Option<reach::Class>) {
        let u = self.stacks.entry((a.tgid, a.stack_id)).or_default();
        match class {
            Some(reach::Class::Direct) => {
                u.direct_bytes += a.size;
                u.direct_count += 1;
            }
            Some(reach::Class::Indirect) => {
                u.indirect_bytes += a.size;
                u.indirect_count += 1;
            }
            _ => {}
        }
    }

    /// What of stack `s` its process can no longer reach; None when the
    /// process was not scanned.
    pub fn of(&self, s: &StackTotal) -> Option<Unreachable> {
        self.scanned.contains(&s.tgid).then(|| {
            self.stacks
                .get(&(s.tgid, s.stack_id))
                .copied()
                .unwrap_or_default()
        })
    }
}

/// The stacks one report shows, chosen from every stack's totals.
#[derive(Debug)]
pub struct Selection {
    /// The -T largest (by -z), in printing order, largest last.
    pub top: Vec<StackTotal>,
    /// --pprof: every stack (pprof tools make their own top N).
    pub every_stack: Option<Vec<StackTotal>>,
    /// The final report's summary (--growth): the stacks that grew in every
    /// interval.
    pub grew_always: Option<Vec<StackTotal>>,
    /// Each stack's change since the last report.
    pub growth: HashMap<(u32, u64), Growth>,
    /// Reports so far, this one included.
    pub intervals: u64,
    /// --estimate: the weight every total above was multiplied by.
    pub estimate_weight: Option<u64>,
}

/// Chooses what a report shows from `totals` (every stack): records each
/// stack's growth in `growth`; keeps the stacks --unreachable-only and
/// --grew ask for; the top N; in the `last` report the stacks that grew in
/// every interval (--growth); with `every_stack`, all of them too; and
/// scales every total for --estimate.
pub fn select(
    totals: Vec<StackTotal>,
    opts: &Options,
    growth: &mut GrowthTracker,
    unreachable: &UnreachableByStack,
    last: bool,
    every_stack: bool,
) -> Selection {
    let mut every_stack = every_stack.then(|| top(totals.clone(), &opts.sort, usize::MAX));
    let changes = growth.update(&totals);
    let mut totals = totals;
    if opts.unreachable_only {
        totals.retain(|s| unreachable.of(s).is_some_and(|u| u.count() > 0));
    }
    if let Some(n) = opts.grew {
        totals.retain(|s| {
            changes
                .get(&(s.tgid, s.stack_id))
                .is_some_and(|g| g.grew_reports >= n)
        });
    }
    // The final report names the stacks that grew in every interval.
    let intervals = growth.reports();
    let mut grew_always = (opts.growth && last).then(|| {
        let always: Vec<StackTotal> = totals
            .iter()
            .filter(|s| {
                changes
                    .get(&(s.tgid, s.stack_id))
                    .is_some_and(|g| g.grew_reports == intervals)
            })
            .cloned()
            .collect();
        top(always, &opts.sort, usize::MAX)
    });
    let mut shown = top(totals, &opts.sort, opts.top);
    // --estimate: every output reads estimated totals.
    let estimate_weight = opts.estimate.then_some(opts.sample_rate);
    if let Some(weight) = estimate_weight {
        scale(&mut shown, weight);
        for stacks in [&mut every_stack, &mut grew_always].into_iter().flatten() {
            scale(stacks, weight);
        }
    }
    Selection {
        top: shown,
        every_stack,
        grew_always,
        growth: changes,
        intervals,
        estimate_weight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(addr: u64, size: u64, ts: u64, stack_id: u64) -> Allocation {
        Allocation {
            addr,
            size,
            timestamp_ns: ts,
            stack_id,
            tgid: 7,
        }
    }

    #[test]
    fn aggregates_per_stack_and_filters_by_age() {
        let allocs = vec![
            alloc(0x10, 16, 0, 1),
            alloc(0x20, 16, 0, 1),
            alloc(0x30, 100, 0, 2),
            alloc(0x40, 5, 950, 2),
            alloc(0x50, 7, 0, 0),
        ];
        let mut agg = Aggregator::new(1000, 100);
        for a in &allocs {
            agg.add(a);
        }
        let mut totals = agg.finish();
        totals.sort_by_key(|t| t.stack_id);
        assert_eq!(totals.len(), 3);
        assert_eq!(
            (totals[0].stack_id, totals[0].bytes, totals[0].count),
            (0, 7, 1),
            "lost stacks"
        );
        assert_eq!((totals[1].bytes, totals[1].count), (32, 2));
        assert_eq!(
            (totals[2].bytes, totals[2].count),
            (100, 1),
            "the young allocation is skipped"
        );
    }

    #[test]
    fn top_is_ascending_and_truncated() {
        let t = |id, bytes, count| StackTotal {
            stack_id: id,
            bytes,
            count,
            ..Default::default()
        };
        let stacks = vec![t(1, 10, 5), t(2, 30, 1), t(3, 20, 9), t(4, 0, 0)];
        let by_size: Vec<u64> = top(stacks.clone(), &SortKey::Size, 2)
            .iter()
            .map(|s| s.stack_id)
            .collect();
        assert_eq!(by_size, vec![3, 2]);
        let by_count: Vec<u64> = top(stacks, &SortKey::Count, 10)
            .iter()
            .map(|s| s.stack_id)
            .collect();
        assert_eq!(by_count, vec![2, 1, 3], "empty stacks are dropped");
    }

    #[test]
    fn select_filters_by_growth_and_scales_estimates() {
        let t = |id, bytes| StackTotal {
            stack_id: id,
            tgid: 7,
            bytes,
            count: 1,
            ..Default::default()
        };
        let opts = Options {
            top: 1,
            grew: Some(2),
            growth: true,
            estimate: true,
            sample_rate: 10,
            ..Options::default()
        };
        let mut growth = GrowthTracker::default();
        let none = UnreachableByStack::default();
        let first = select(
            vec![t(1, 10), t(2, 50)],
            &opts,
            &mut growth,
            &none,
            false,
            true,
        );
        assert!(first.top.is_empty(), "nothing grew in two reports yet");
        assert_eq!(first.every_stack.map(|s| s.len()), Some(2));
        assert!(first.grew_always.is_none(), "only the last report");
        // Stack 1 grows again, stack 2 does not.
        let last = select(
            vec![t(1, 20), t(2, 50)],
            &opts,
            &mut growth,
            &none,
            true,
            false,
        );
        assert_eq!(last.intervals, 2);
        assert_eq!(last.estimate_weight, Some(10));
        assert_eq!(
            last.top
                .iter()
                .map(|s| (s.stack_id, s.bytes))
                .collect::<Vec<_>>(),
            [(1, 200)]
        );
        let always: Vec<u64> = last
            .grew_always
            .unwrap()
            .iter()
            .map(|s| s.stack_id)
            .collect();
        assert_eq!(always, [1]);
        assert_eq!(last.growth[&(7, 2)].delta_bytes, 0);
        assert!(last.every_stack.is_none());
    }

    #[test]
    fn unreachable_only_for_scanned_processes() {
        let mut u = UnreachableByStack::default();
        let a = alloc(0x10, 16, 0, 1);
        u.scanned(7);
        u.add(&a, Some(reach::Class::Direct));
        u.add(&alloc(0x20, 8, 0, 1), Some(reach::Class::Reachable));
        let total = |tgid| StackTotal {
            stack_id: 1,
            tgid,
            ..Default::default()
        };
        assert_eq!(
            u.of(&total(7)).map(|u| (u.bytes(), u.count())),
            Some((16, 1))
        );
        assert_eq!(u.of(&total(8)), None, "not scanned");
    }
}
