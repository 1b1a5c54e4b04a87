//! The daemon's counters and histograms, served in the OpenMetrics text format (which
//! Prometheus scrapes) by `governor daemon --metrics ADDR` and the HTTP door under
//! `/metrics`. The registry and the encoding are prometheus-client's.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// The content type of `render`'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the decision latency histogram: 250 ns to 1 ms.
const DECISION: &[f64] = &[0.000_000_25, 0.000_000_5, 0.000_001, 0.000_002_5, 0.000_005, 0.000_01, 0.000_1, 0.001];
/// Upper bounds of the event-to-frozen histogram: 100 µs to 1 s.
const FREEZE: &[f64] = &[0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1, 1.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    kind: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeverityLabels {
    severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

pub struct Metrics {
    registry: Registry,
    /// Events by kind and recorded decision.
    events: Family<EventLabels, Counter>,
    incidents: Family<SeverityLabels, Counter>,
    /// Events the kernel had no ring-buffer room for.
    pub dropped: Counter,
    /// Events from a cgroup no agent of this daemon is registered for (counted, not lost
    /// silently: an agent that exited with events still in flight, say).
    pub unattributed: Counter,
    pub undecodable: Counter,
    reloads: Family<ResultLabels, Counter>,
    agents: Family<StateLabels, Gauge>,
    decision: Histogram,
    freeze: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let metrics = Metrics {
            registry: Registry::default(),
            events: Family::default(),
            incidents: Family::default(),
            dropped: Counter::default(),
            unattributed: Counter::default(),
            undecodable: Counter::default(),
            reloads: Family::default(),
            agents: Family::default(),
            decision: Histogram::new(DECISION.iter().copied()),
            freeze: Histogram::new(FREEZE.iter().copied()),
        };
        let mut registry = Registry::default();
        registry.register("governor_events", "Kernel events of agents, by kind and decision", metrics.events.clone());
        registry.register(
            "governor_events_dropped",
            "Events the kernel dropped (ring buffer full)",
            metrics.dropped.clone(),
        );
        registry.register(
            "governor_events_unattributed",
            "Events from a cgroup with no registered agent",
            metrics.unattributed.clone(),
        );
        registry.register(
            "governor_events_undecodable",
            "Events that could not be decoded",
            metrics.undecodable.clone(),
        );
        registry.register("governor_incidents", "Incidents raised, by severity", metrics.incidents.clone());
        registry.register("governor_policy_reloads", "Policy reloads, by result", metrics.reloads.clone());
        registry.register("governor_agents", "Agents supervised now, by state", metrics.agents.clone());
        registry.register(
            "governor_decision_seconds",
            "Time the policy engine took per event",
            metrics.decision.clone(),
        );
        registry.register(
            "governor_freeze_seconds",
            "From the kernel's timestamp of an event to its agent's cgroup confirmed frozen",
            metrics.freeze.clone(),
        );
        Metrics { registry, ..metrics }
    }
}

impl Metrics {
    pub fn event(&self, kind: &'static str, decision: &'static str) {
        self.events.get_or_create(&EventLabels { kind: kind.into(), decision: decision.into() }).inc();
    }

    pub fn incident(&self, severity: &str) {
        self.incidents.get_or_create(&SeverityLabels { severity: severity.into() }).inc();
    }

    pub fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&ResultLabels { result: if ok { "ok" } else { "refused" }.into() }).inc();
    }

    pub fn decided(&self, took: Duration) {
        self.decision.observe(took.as_secs_f64());
    }

    pub fn frozen(&self, took: Duration) {
        self.freeze.observe(took.as_secs_f64());
    }

    /// The exposition text; `agents` are the current agents by state.
    pub fn render(&self, agents: &[(&str, u64)]) -> String {
        for (state, count) in agents {
            self.agents.get_or_create(&StateLabels { state: (*state).into() }).set(*count as i64);
        }
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %error, "metrics not encoded");
        }
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
        metrics.event("open", "deny");
        let text = metrics.render(&[("running", 2)]);
        assert!(text.contains("governor_freeze_seconds_bucket{le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("governor_freeze_seconds_bucket{le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("governor_freeze_seconds_bucket{le=\"1.0\"} 2\n"), "{text}");
        assert!(text.contains("governor_freeze_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("governor_freeze_seconds_count 3\n"), "{text}");
        assert!(text.contains("governor_agents{state=\"running\"} 2\n"), "{text}");
        assert!(text.contains("governor_events_total{kind=\"open\",decision=\"deny\"} 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
