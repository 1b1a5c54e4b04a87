//! Bounding what one agent writes to the audit store. An agent that repeats one operation
//! in a loop (a million opens of one file) would otherwise add a row per event: hundreds of
//! megabytes a second on the root filesystem. Past a rate, identical events are counted
//! instead: within each second, the first `FIRST` of a kind are written one by one, the rest
//! become one row with their `count` and the times of the first and the last. And every
//! agent has a budget of rows per window; past it an incident is raised once per window and,
//! until the window ends, events are aggregated by a coarser key (kind, process, result,
//! decision and rule, without the path or destination: the row keeps the first one's).
//!
//! Events a rule matched are never aggregated (the caller writes them as they are), so an
//! agent cannot hide a decided operation in a flood of others.
//!
//! Pure bookkeeping: the caller builds rows, this says which to write, which to fold and
//! which aggregates are due.

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, Hash},
    time::Duration,
};

use crate::audit;

/// Events of one kind written one by one per window, before the rest are counted.
pub const FIRST: u32 = 8;
/// The aggregation window.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Aggregates held at most; past that, all are written and the table starts over.
const CAPACITY: usize = 4096;

/// Where the event's count and last time are in an events row (`audit::TABLES`).
const COUNT: usize = 20;
const LAST_TIME: usize = 21;

/// A budget of rows per window for one agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub rows: u64,
    pub window: Duration,
}

/// What to do with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write its row.
    Write,
    /// The first to be counted in this window: give its row to `fold` (it becomes the
    /// aggregate row).
    FoldFirst,
    /// Counted in the aggregate already held: no row to build.
    Folded,
}

#[derive(Debug)]
struct Slot {
    start_ns: u64,
    seen: u32,
    /// The aggregate row, its count and the last event's time.
    held: Option<(audit::Row, i64, i64)>,
}

/// One agent's aggregation.
#[derive(Debug)]
pub struct Aggregator {
    slots: HashMap<u64, Slot>,
    hasher: std::hash::RandomState,
    budget: Option<Budget>,
    budget_start_ns: u64,
    budget_rows: u64,
    over_budget: bool,
    /// Aggregates whose window ended, to write.
    due: Vec<audit::Row>,
    /// Events folded so far (for the summary).
    pub folded: u64,
}

impl Aggregator {
    pub fn new(budget: Option<Budget>) -> Aggregator {
        Aggregator {
            slots: HashMap::new(),
            hasher: std::hash::RandomState::new(),
            budget,
            budget_start_ns: 0,
            budget_rows: 0,
            over_budget: false,
            due: Vec::new(),
            folded: 0,
        }
    }

    /// The key of an event from what makes two events the same: `fine` (every field a row
    /// shows) and `coarse` (without path or destination).
    pub fn key<F: Hash, C: Hash>(&self, fine: F, coarse: C) -> (u64, u64) {
        (self.hasher.hash_one(fine), self.hasher.hash_one(coarse))
    }

    /// Decides on one event at `now_ns` (monotonic). Returns the verdict and, once per
    /// budget window when the budget is first exceeded, the rows written in it.
    pub fn offer(&mut self, (fine, coarse): (u64, u64), now_ns: u64) -> (Verdict, Option<u64>) {
        let mut exceeded = None;
        if let Some(budget) = self.budget {
            let window = u64::try_from(budget.window.as_nanos()).unwrap_or(u64::MAX);
            if now_ns.saturating_sub(self.budget_start_ns) >= window {
                self.budget_start_ns = now_ns;
                self.budget_rows = 0;
                self.over_budget = false;
            }
            if !self.over_budget && self.budget_rows >= budget.rows {
                self.over_budget = true;
                exceeded = Some(self.budget_rows);
            }
        }
        let key = if self.over_budget { coarse ^ 0x9e37_79b9_7f4a_7c15 } else { fine };
        if self.slots.len() >= CAPACITY && !self.slots.contains_key(&key) {
            self.flush_all();
        }
        let window = u64::try_from(WINDOW.as_nanos()).unwrap_or(u64::MAX);
        let slot = self.slots.entry(key).or_insert(Slot { start_ns: now_ns, seen: 0, held: None });
        if now_ns.saturating_sub(slot.start_ns) >= window {
            if let Some(row) = take_aggregate(slot) {
                self.due.push(row);
            }
            slot.start_ns = now_ns;
            slot.seen = 0;
        }
        slot.seen = slot.seen.saturating_add(1);
        let verdict = if slot.seen <= FIRST {
            Verdict::Write
        } else if let Some((_, count, last)) = slot.held.as_mut() {
            *count += 1;
            *last = audit::now_ns();
            Verdict::Folded
        } else {
            Verdict::FoldFirst
        };
        match verdict {
            Verdict::Write => self.budget_rows += 1,
            Verdict::FoldFirst | Verdict::Folded => self.folded += 1,
        }
        (verdict, exceeded)
    }

    /// Holds `row` as the aggregate of the event `offer` said `FoldFirst` for.
    pub fn fold(&mut self, (fine, coarse): (u64, u64), row: audit::Row) {
        let key = if self.over_budget { coarse ^ 0x9e37_79b9_7f4a_7c15 } else { fine };
        if let Some(slot) = self.slots.get_mut(&key) {
            let time = match row.values.get(1) {
                Some(audit::Value::Int(time)) => *time,
                _ => audit::now_ns(),
            };
            slot.held = Some((row, 1, time));
        }
    }

    /// Aggregates whose window has ended by `now_ns`, to write now.
    pub fn due(&mut self, now_ns: u64) -> Vec<audit::Row> {
        let window = u64::try_from(WINDOW.as_nanos()).unwrap_or(u64::MAX);
        let mut due = std::mem::take(&mut self.due);
        self.slots.retain(|_, slot| {
            if now_ns.saturating_sub(slot.start_ns) < window {
                return true;
            }
            if let Some(row) = take_aggregate(slot) {
                due.push(row);
            }
            false
        });
        self.budget_rows += due.len() as u64;
        due
    }

    /// Every aggregate held, to write now (the agent has ended).
    pub fn drain(&mut self) -> Vec<audit::Row> {
        self.flush_all();
        std::mem::take(&mut self.due)
    }

    fn flush_all(&mut self) {
        for (_, mut slot) in self.slots.drain() {
            if let Some(row) = take_aggregate(&mut slot) {
                self.due.push(row);
            }
        }
    }
}

/// The slot's aggregate row with its count and last time filled in.
fn take_aggregate(slot: &mut Slot) -> Option<audit::Row> {
    let (mut row, count, last) = slot.held.take()?;
    if let Some(value) = row.values.get_mut(COUNT) {
        *value = audit::Value::Int(count);
    }
    if let Some(value) = row.values.get_mut(LAST_TIME) {
        *value = audit::Value::Int(last);
    }
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(time: i64) -> audit::Row {
        let mut values = vec![audit::text("agent"), audit::int(time)];
        values.resize(LAST_TIME + 1, audit::int(0));
        values[COUNT] = audit::int(1);
        values[LAST_TIME] = audit::int(time);
        audit::Row { table: "events", values }
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn repeats_past_the_first_few_become_one_row_per_window() {
        let mut aggregator = Aggregator::new(None);
        let key = aggregator.key(("open", 7, "/etc/hostname"), ("open", 7));
        let mut written = 0;
        for index in 0..1000u64 {
            match aggregator.offer(key, index * MS / 2).0 {
                Verdict::Write => written += 1,
                Verdict::FoldFirst => aggregator.fold(key, row(1)),
                Verdict::Folded => {}
            }
        }
        assert_eq!(written, FIRST);
        assert!(aggregator.due(100 * MS).is_empty(), "the window is still open");
        let due = aggregator.due(1500 * MS);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].values[COUNT], audit::Value::Int(1000 - i64::from(FIRST)));
        // A new window writes the first few again.
        assert_eq!(aggregator.offer(key, 2000 * MS).0, Verdict::Write);
        // Another event is not folded into this one.
        let other = aggregator.key(("open", 7, "/etc/passwd"), ("open", 7));
        assert_eq!(aggregator.offer(other, 2000 * MS).0, Verdict::Write);
        assert!(aggregator.drain().is_empty(), "nothing was held");
    }

    #[test]
    fn over_budget_an_incident_once_and_coarser_aggregation() {
        let mut aggregator = Aggregator::new(Some(Budget { rows: 100, window: Duration::from_secs(60) }));
        let mut exceeded = Vec::new();
        let mut written = 0;
        for index in 0..10_000u64 {
            // Distinct paths: only the budget bounds them.
            let key = aggregator.key(("open", 7, index), ("open", 7));
            let (verdict, over) = aggregator.offer(key, index * MS / 10);
            exceeded.extend(over);
            match verdict {
                Verdict::Write => written += 1,
                Verdict::FoldFirst => aggregator.fold(key, row(1)),
                Verdict::Folded => {}
            }
        }
        assert_eq!(exceeded, [100], "one incident in the window");
        assert_eq!(written, 100 + u64::from(FIRST));
        let held = aggregator.drain();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].values[COUNT], audit::Value::Int(10_000 - 100 - i64::from(FIRST)));
        // The next window starts afresh.
        let key = aggregator.key(("open", 7, "x"), ("open", 7));
        assert_eq!(aggregator.offer(key, 61_000 * MS), (Verdict::Write, None));
    }
}
