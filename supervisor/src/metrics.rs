//! The daemon's counters and histograms, served as Prometheus text (exposition format
//! 0.0.4) by `governor daemon --metrics ADDR`. Single-threaded like the daemon's loop.

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    fmt::Write as _,
    time::Duration,
};

/// A histogram with fixed upper bounds, in seconds.
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bound: observations at or below it (not cumulative; summed when rendered).
    counts: RefCell<Vec<u64>>,
    sum: Cell<f64>,
    count: Cell<u64>,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: RefCell::new(vec![0; bounds.len()]), sum: Cell::new(0.0), count: Cell::new(0) }
    }

    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(index) = self.bounds.iter().position(|bound| seconds <= *bound) {
            self.counts.borrow_mut()[index] += 1;
        }
        self.sum.set(self.sum.get() + seconds);
        self.count.set(self.count.get() + 1);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(self.counts.borrow().iter()) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count.get());
        let _ = writeln!(out, "{name}_sum {}", self.sum.get());
        let _ = writeln!(out, "{name}_count {}", self.count.get());
    }
}

/// Upper bounds of the decision latency histogram: 250 ns to 1 ms.
const DECISION: &[f64] = &[0.000_000_25, 0.000_000_5, 0.000_001, 0.000_002_5, 0.000_005, 0.000_01, 0.000_1, 0.001];
/// Upper bounds of the event-to-frozen histogram: 100 µs to 1 s.
const FREEZE: &[f64] = &[0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1, 1.0];

pub struct Metrics {
    /// Events by kind and recorded decision.
    events: RefCell<BTreeMap<(&'static str, &'static str), u64>>,
    incidents: RefCell<BTreeMap<String, u64>>,
    /// Events the kernel had no ring-buffer room for.
    pub dropped: Cell<u64>,
    /// Events from a cgroup no agent of this daemon is registered for (counted, not lost
    /// silently: an agent that exited with events still in flight, say).
    pub unattributed: Cell<u64>,
    pub undecodable: Cell<u64>,
    reloads: RefCell<BTreeMap<&'static str, u64>>,
    pub decision: Histogram,
    pub freeze: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            events: RefCell::default(),
            incidents: RefCell::default(),
            dropped: Cell::new(0),
            unattributed: Cell::new(0),
            undecodable: Cell::new(0),
            reloads: RefCell::default(),
            decision: Histogram::new(DECISION),
            freeze: Histogram::new(FREEZE),
        }
    }
}

impl Metrics {
    pub fn event(&self, kind: &'static str, decision: &'static str) {
        *self.events.borrow_mut().entry((kind, decision)).or_default() += 1;
    }

    pub fn incident(&self, severity: &str) {
        *self.incidents.borrow_mut().entry(severity.to_owned()).or_default() += 1;
    }

    pub fn reload(&self, ok: bool) {
        *self.reloads.borrow_mut().entry(if ok { "ok" } else { "refused" }).or_default() += 1;
    }

    pub fn decided(&self, took: Duration) {
        self.decision.observe(took);
    }

    pub fn frozen(&self, took: Duration) {
        self.freeze.observe(took);
    }

    /// The exposition text; `agents` are the current agents by state.
    pub fn render(&self, agents: &[(&str, u64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP governor_events_total Kernel events of agents, by kind and decision.\n");
        out.push_str("# TYPE governor_events_total counter\n");
        for ((kind, decision), count) in self.events.borrow().iter() {
            let _ = writeln!(out, "governor_events_total{{kind=\"{kind}\",decision=\"{decision}\"}} {count}");
        }
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter(
            &mut out,
            "governor_events_dropped_total",
            "Events the kernel dropped (ring buffer full).",
            self.dropped.get(),
        );
        counter(
            &mut out,
            "governor_events_unattributed_total",
            "Events from a cgroup with no registered agent.",
            self.unattributed.get(),
        );
        counter(
            &mut out,
            "governor_events_undecodable_total",
            "Events that could not be decoded.",
            self.undecodable.get(),
        );
        out.push_str("# HELP governor_incidents_total Incidents raised, by severity.\n");
        out.push_str("# TYPE governor_incidents_total counter\n");
        for (severity, count) in self.incidents.borrow().iter() {
            let _ = writeln!(out, "governor_incidents_total{{severity=\"{severity}\"}} {count}");
        }
        out.push_str("# HELP governor_policy_reloads_total Policy reloads, by result.\n");
        out.push_str("# TYPE governor_policy_reloads_total counter\n");
        for (result, count) in self.reloads.borrow().iter() {
            let _ = writeln!(out, "governor_policy_reloads_total{{result=\"{result}\"}} {count}");
        }
        out.push_str("# HELP governor_agents Agents supervised now, by state.\n");
        out.push_str("# TYPE governor_agents gauge\n");
        for (state, count) in agents {
            let _ = writeln!(out, "governor_agents{{state=\"{state}\"}} {count}");
        }
        self.decision.render(&mut out, "governor_decision_seconds", "Time the policy engine took per event.");
        self.freeze.render(
            &mut out,
            "governor_freeze_seconds",
            "From the kernel's timestamp of an event to its agent's cgroup confirmed frozen.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let metrics = Metrics::default();
        metrics.frozen(Duration::from_micros(300));
        metrics.frozen(Duration::from_millis(3));
        metrics.frozen(Duration::from_secs(5));
        let text = metrics.render(&[("running", 2)]);
        assert!(text.contains("governor_freeze_seconds_bucket{le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("governor_freeze_seconds_bucket{le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("governor_freeze_seconds_bucket{le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("governor_freeze_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("governor_freeze_seconds_count 3\n"), "{text}");
        assert!(text.contains("governor_agents{state=\"running\"} 2\n"), "{text}");
    }
}
