//! One agent's events after the probes: decided by the policy engine, acted on (freeze,
//! kill), then written to the audit store as events, incidents and actions. Used by a
//! standalone `governor run` for its one agent and by `governor daemon` for each of its.

use std::{rc::Rc, time::Duration};

use crate::{
    audit,
    cgroup::Cgroup,
    engine,
    metrics::Metrics,
    probes::{self, events::Sink},
};

/// Where events go until the policy engine takes them: `--trace` prints them, and every
/// event and loss is counted for the closing summary.
pub struct EventOutput<'w> {
    writer: &'w audit::Writer,
    trace: bool,
    pub tally: probes::events::Tally,
    engine: Rc<engine::Engine>,
    pub agent: engine::AgentState,
    pub agent_id: String,
    /// The agent's cgroup, to suspend or kill it.
    control: Cgroup,
    contexts: crate::context::Cache,
    /// Rows waiting while the store fails.
    backlog: std::collections::VecDeque<audit::Row>,
    /// Set while the agent is frozen because the store fails: why, and since when.
    store_hold: Option<(String, i64)>,
    /// Decided events whose records are still to be written.
    pending: std::collections::VecDeque<Pending>,
    /// The daemon's counters and histograms.
    metrics: Option<Rc<Metrics>>,
    /// Resolves paths and identifies programs for the engine.
    resolver: crate::resolve::Resolver,
    /// Counts repeats instead of writing them, and keeps the agent's row budget.
    aggregator: crate::aggregate::Aggregator,
    /// Paused after a drop, at this tick.
    throttled: Option<u64>,
    /// Ticks of the event loop so far.
    ticks: u64,
    /// The kernel's programs-to-stop map and the agent's cgroup id, where the probes run.
    stops: Option<(probes::Stops, u64)>,
}

/// An event decided and acted on, its record not yet written.
type Pending = (probes::events::Event, engine::Action, Option<usize>, Option<Result<(), crate::cgroup::Error>>);

impl<'w> EventOutput<'w> {
    pub fn new(
        writer: &'w audit::Writer,
        engine: Rc<engine::Engine>,
        trust: crate::policy::Trust,
        agent_id: &str,
        control: Cgroup,
        trace: bool,
        metrics: Option<Rc<Metrics>>,
    ) -> EventOutput<'w> {
        let resolver = crate::resolve::Resolver::new(&engine);
        let aggregator = crate::aggregate::Aggregator::new(engine.event_budget());
        EventOutput {
            writer,
            trace,
            tally: probes::events::Tally::default(),
            agent: engine.agent(trust),
            engine,
            agent_id: agent_id.to_owned(),
            control,
            contexts: crate::context::Cache::default(),
            backlog: std::collections::VecDeque::new(),
            store_hold: None,
            pending: std::collections::VecDeque::new(),
            metrics,
            resolver,
            aggregator,
            throttled: None,
            ticks: 0,
            stops: None,
        }
    }

    /// Keeps the kernel's programs-to-stop map for the agent in cgroup `cgroup_id`, whose
    /// engine's names the caller has held there before the agent ran (`Stops::hold` of
    /// `Engine::stop_names`): a reload holds the new engine's.
    pub fn stop_in_kernel(&mut self, stops: probes::Stops, cgroup_id: u64) {
        self.stops = Some((stops, cgroup_id));
    }

    /// The agent's cgroup.
    pub fn control(&self) -> &Cgroup {
        &self.control
    }

    /// Decides from now on with `engine` (a policy reload). The records of events decided
    /// with the old one are written first (they name its rules); rate windows and sequence
    /// memory start afresh, a suspension stays.
    pub fn swap_engine(&mut self, engine: Rc<engine::Engine>) {
        while self.write_pending(usize::MAX) {}
        let mut agent = engine.agent(self.agent.trust);
        agent.suspended = self.agent.suspended;
        agent.suspended_since = self.agent.suspended_since;
        self.agent = agent;
        crate::resolve::list_programs(&engine);
        self.resolver = crate::resolve::Resolver::new(&engine);
        self.engine = engine;
        let names = self.engine.stop_names(self.agent.trust);
        if let Some((stops, cgroup_id)) = self.stops.as_mut()
            && let Err(error) = stops.hold(*cgroup_id, &names)
        {
            say!("governor: agent {}: holding {} at their exec: {error}", self.agent_id, names.join(", "));
        }
    }

    /// `count` of this agent's events found no room in the ring buffer: they are not in the
    /// audit trail. That is an incident, and the agent is paused (its cgroup frozen) until
    /// the loop has read the backlog, so that it cannot go on acting unaudited while the
    /// buffer is full: a flood meant to hide an action in the drops stops itself.
    pub fn events_lost(&mut self, count: u64) {
        let reason = format!(
            "{count} events of this agent found the ring buffer full and are not in the audit trail; the agent is paused until the backlog is read"
        );
        self.record_incident("events-lost", "high", "audit", &reason, serde_json::json!({ "lost": count }));
        if self.throttled.is_none() && !self.agent.suspended && self.store_hold.is_none() {
            // Asked, not waited for: the loop that reads the backlog must not stall on it.
            let paused = self.control.request_frozen(true).is_ok();
            say!(
                "governor: agent {}: {count} events dropped (ring buffer full); {}",
                self.agent_id,
                if paused { "paused until the backlog is read" } else { "could not be paused" }
            );
            if paused {
                self.throttled = Some(self.ticks);
            }
        }
    }

    /// Thaws an agent paused for drops once a whole tick (a drain of the ring buffer) has
    /// passed, unless a rule suspended it meanwhile.
    fn end_throttle(&mut self) {
        self.ticks += 1;
        let Some(since) = self.throttled else { return };
        if self.ticks <= since + 1 {
            return;
        }
        self.throttled = None;
        if !self.agent.suspended && self.store_hold.is_none() {
            let _ = self.control.request_frozen(false);
            // An exec held by the kernel whose event was among the drops is never decided:
            // it goes on, as the agent does.
            self.release_held();
        }
    }

    /// Lets go on (SIGCONT) every process of the agent that the kernel holds at its exec
    /// (stopped, and named as a held program), for those whose event will not be decided:
    /// it was dropped, or came while no supervisor read them.
    pub fn release_held(&self) {
        let held = self.engine.stop_names(self.agent.trust);
        if held.is_empty() || self.stops.is_none() {
            return;
        }
        for pid in self.control.pids().unwrap_or_default() {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            // `pid (comm) state ...`; comm may hold spaces and parentheses: up to the last ')'.
            let Some((head, tail)) = stat.rsplit_once(") ") else { continue };
            let comm = head.split_once(" (").map_or("", |(_, comm)| comm);
            let stopped = tail.starts_with('T');
            if stopped && held.iter().any(|name| name.get(..name.len().min(15)) == Some(comm)) {
                // SAFETY: kill(2) with a pid of the agent's cgroup and a signal.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
        }
    }

    /// The agent wrote more rows than its budget allows in this window: an incident, once.
    fn over_budget(&mut self, rows: u64) {
        let Some(budget) = self.engine.event_budget() else { return };
        let reason = format!(
            "{rows} audit rows within {}: over the agent's event budget; until the window ends its events are aggregated without path or destination",
            humantime::format_duration(budget.window)
        );
        say!("governor: agent {}: {reason}", self.agent_id);
        self.record_incident(
            "event-budget",
            "medium",
            "audit",
            &reason,
            serde_json::json!({ "rows": rows, "window_s": budget.window.as_secs() }),
        );
    }

    /// Records an action on this agent (through the backlog when the store fails).
    pub fn record_action(&mut self, action: &str, actor: &str, why: &str) {
        self.record(audit::action(&self.agent_id, action, actor, why));
    }

    /// Records an incident that no rule raised (a supervisor gap, say).
    pub fn record_incident(
        &mut self,
        rule: &str,
        severity: &str,
        action: &str,
        reason: &str,
        detail: serde_json::Value,
    ) {
        if let Some(metrics) = &self.metrics {
            metrics.incident(severity);
        }
        self.record(audit::Row {
            table: "incidents",
            values: vec![
                audit::text(&self.agent_id),
                audit::int(audit::now_ns()),
                audit::text(rule),
                audit::text(severity),
                audit::text(action),
                audit::text(reason),
                audit::text(detail.to_string()),
            ],
        });
    }

    /// Queues a row for the store. While the store works and its queue is full, waits (the
    /// kernel's ring buffer takes up the slack and counts what it drops). While the store
    /// fails, the agent is frozen and rows wait here, in order, until it recovers.
    fn record(&mut self, row: audit::Row) {
        self.flush_backlog();
        if !self.backlog.is_empty() {
            self.backlog.push_back(row);
            return;
        }
        let mut row = row;
        loop {
            match self.writer.try_write(row) {
                Ok(()) => return,
                Err(audit::Busy::Stopped) => {
                    say!("governor: audit store: the writer has stopped; a row was not recorded");
                    return;
                }
                Err(audit::Busy::Full(back)) => {
                    if self.writer.failure().is_some() {
                        self.check_store();
                        self.backlog.push_back(back);
                        return;
                    }
                    row = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// The paperwork of one decided event: trace line, audit row, incident, messages.
    fn record_event(
        &mut self,
        event: &probes::events::Event,
        decision: engine::Decision<'_>,
        acted: Option<Result<(), crate::cgroup::Error>>,
    ) {
        if self.trace {
            let mut line = event.to_json();
            line["decision"] = serde_json::json!(decision.action);
            if let Some(rule) = decision.rule {
                line["rule"] = serde_json::json!(rule.id);
            }
            say!("{}", crate::output::json_text(line.to_string()));
        }
        let header = event.header();
        let recorded = recorded_decision(header, decision.action);
        let (path, destination) = match event {
            probes::events::Event::Exec { filename, .. } => (filename.clone(), String::new()),
            probes::events::Event::Open { path, .. } => (path.clone(), String::new()),
            // A rename's, link's or symlink's new name is where the operation goes.
            probes::events::Event::Fs { path, path2, .. } => (path.clone(), path2.clone()),
            probes::events::Event::Cwd { path, .. } => (path.clone(), String::new()),
            probes::events::Event::Net { addr, port, path, .. } => {
                (path.clone(), addr.map(|addr| format!("{addr}:{port}")).unwrap_or_default())
            }
        };
        if let Some(metrics) = &self.metrics {
            metrics.event(event.name(), recorded);
        }
        // Repeats are counted, not written one by one (aggregate.rs); what a rule decided
        // is always written whole.
        let key = self.aggregator.key(
            (event.name(), header.tgid, &path, &destination, header.result, recorded),
            (event.name(), header.tgid, header.result, recorded),
        );
        let verdict = if decision.rule.is_some() {
            crate::aggregate::Verdict::Write
        } else {
            // Windows of the loop's own clock: a consumer behind its events still writes an
            // aggregate every second.
            let (verdict, exceeded) = self.aggregator.offer(key, monotonic_ns());
            if let Some(rows) = exceeded {
                self.over_budget(rows);
            }
            verdict
        };
        if verdict == crate::aggregate::Verdict::Folded {
            return;
        }
        let context = match event {
            probes::events::Event::Exec { filename, argv, .. }
                if header.kind == governor_common::kind::EXECED || header.result == 0 =>
            {
                Some(self.contexts.exec(header.tgid, filename, argv))
            }
            _ => self.contexts.get(header.tgid),
        };
        let status = context.as_ref().and_then(|context| context.status);
        let time = audit::now_ns();
        let record = audit::Row {
            table: "events",
            values: vec![
                audit::text(&self.agent_id),
                audit::int(time),
                audit::int(header.ktime_ns),
                audit::text(event.name()),
                audit::int(header.tgid),
                audit::int(header.pid),
                audit::int(status.map_or(0, |status| status.ppid)),
                audit::int(header.uid),
                audit::int(status.map_or(-1, |status| i64::from(status.euid))),
                audit::int(status.map_or(-1, |status| i64::from(status.egid))),
                audit::text(status.map_or(String::new(), |status| format!("{:016x}", status.cap_eff))),
                audit::text(context.as_ref().map_or("", |context| context.exe.as_str())),
                audit::text(context.as_ref().map_or("", |context| context.cmdline.as_str())),
                audit::text(path),
                audit::text(destination),
                audit::text(probes::events::errno_name(header.result)),
                audit::text(probes::events::verdict_name(header.verdict)),
                audit::text(probes::events::source_name(header.source)),
                audit::text(recorded),
                audit::text(decision.rule.map_or("", |rule| rule.id.as_str())),
                audit::int(1),
                audit::int(time),
            ],
        };
        if verdict == crate::aggregate::Verdict::FoldFirst {
            self.aggregator.fold(key, record);
            return;
        }
        self.record(record);

        let Some(rule) = decision.rule.filter(|_| decision.action != engine::Action::Allow) else {
            return;
        };
        let json = event.to_json();
        self.record(audit::Row {
            table: "incidents",
            values: vec![
                audit::text(&self.agent_id),
                audit::int(audit::now_ns()),
                audit::text(&rule.id),
                audit::text(format!("{:?}", rule.severity).to_lowercase()),
                audit::text(decision_name(rule.action)),
                audit::text(rule.reason.to_string()),
                audit::text(json.to_string()),
            ],
        });
        if let Some(metrics) = &self.metrics {
            metrics.incident(&format!("{:?}", rule.severity).to_lowercase());
        }
        let incident = serde_json::json!({
            "kind": "incident",
            "agent": self.agent_id,
            "rule": rule.id,
            "severity": rule.severity,
            "action": rule.action,
            "reason": rule.reason.to_string(),
            "event": json,
        });
        say!("{incident}");
        match (decision.action, acted) {
            (engine::Action::Suspend, Some(Ok(()))) => {
                // From the kernel's timestamp of the event to `frozen 1` in cgroup.events.
                let latency_ns = self.agent.suspended_since.saturating_sub(header.ktime_ns);
                if let Some(metrics) = &self.metrics {
                    metrics.frozen(Duration::from_nanos(latency_ns));
                }
                let latency_us = latency_ns / 1000;
                // Stopped by the probe before the program's first instruction: it never ran.
                let stopped = if header.verdict == governor_common::verdict::STOPPED {
                    ", stopped in the kernel at the exec"
                } else {
                    ""
                };
                self.record(audit::action(
                    &self.agent_id,
                    "suspend",
                    &format!("rule {}", rule.id),
                    &format!("{} (frozen {latency_us} µs after the event{stopped})", rule.reason),
                ));
                say!(
                    "governor: agent {} suspended by rule {} ({}), frozen {latency_us} µs after the event{stopped}; `governor resume {}` thaws it",
                    self.agent_id,
                    rule.id,
                    rule.reason,
                    self.agent_id
                );
            }
            (engine::Action::Kill, Some(Ok(()))) => {
                self.record(audit::action(
                    &self.agent_id,
                    "kill",
                    &format!("rule {}", rule.id),
                    &rule.reason.to_string(),
                ));
            }
            (action, Some(Err(error))) => {
                say!("governor: {} agent {} failed: {error}", decision_name(action), self.agent_id);
            }
            _ => {}
        }
    }

    fn flush_backlog(&mut self) {
        while let Some(row) = self.backlog.pop_front() {
            if let Err(audit::Busy::Full(row)) = self.writer.try_write(row) {
                self.backlog.push_front(row);
                return;
            }
        }
    }

    /// Rows still waiting, queued for good (the agent has exited).
    pub fn finish(&mut self) {
        for row in self.aggregator.drain() {
            self.record(row);
        }
        while let Some(row) = self.backlog.pop_front() {
            let _ = self.writer.write(row);
        }
    }

    /// Fail closed: an agent whose actions cannot be recorded does not run. Frozen when the
    /// store starts failing; when it recovers, the gap is recorded and the agent thawed
    /// (unless a rule suspended it meanwhile).
    fn check_store(&mut self) {
        match (self.writer.failure(), self.store_hold.take()) {
            (Some(reason), None) => {
                let frozen = self.control.set_frozen(true, Duration::from_secs(1));
                say!(
                    "governor: audit store failing ({reason}): agent {} {} until it recovers",
                    self.agent_id,
                    if frozen.is_ok() { "frozen" } else { "could not be frozen" }
                );
                self.store_hold = Some((reason, audit::now_ns()));
            }
            (None, Some((reason, since))) => {
                let why = format!("audit store failed: {reason}");
                let seconds = (audit::now_ns() - since) as f64 / 1e9;
                self.record(audit::action(&self.agent_id, "suspend", "governor", &why));
                let thaw = !self.agent.suspended;
                if thaw {
                    let _ = self.control.set_frozen(false, Duration::from_secs(1));
                    self.record(audit::action(
                        &self.agent_id,
                        "resume",
                        "governor",
                        &format!("audit store recovered after {seconds:.1} s"),
                    ));
                }
                say!(
                    "governor: audit store recovered after {seconds:.1} s ({reason}); agent {} {}",
                    self.agent_id,
                    if thaw { "thawed" } else { "stays suspended by its rule" }
                );
            }
            (_, hold) => self.store_hold = hold,
        }
    }
}

impl Sink for EventOutput<'_> {
    fn tick(&mut self) {
        self.check_store();
        self.flush_backlog();
        self.end_throttle();
        for row in self.aggregator.due(monotonic_ns()) {
            self.record(row);
        }
    }

    fn event(&mut self, event: &probes::events::Event) {
        self.events(vec![event.clone()]);
        while self.write_pending(usize::MAX) {}
    }

    /// Decides and acts on every event of the batch at once; the paperwork waits for
    /// `write_pending`, so a freeze is not kept waiting by the events before it.
    fn events(&mut self, batch: Vec<probes::events::Event>) {
        self.check_store();
        // The engine is shared (an Rc), so decisions borrow it and not `self`.
        let engine = Rc::clone(&self.engine);
        for mut event in batch {
            self.tally.event(&event);
            // The other names of its path or program, so that no rule is dodged by naming
            // the same file another way.
            self.resolver.resolve(&mut event);
            // A working directory is the resolver's to know, not an act to decide or record;
            // the trace shows it, so that it shows every event the kernel delivered.
            if matches!(event, probes::events::Event::Cwd { .. }) {
                if self.trace {
                    say!("{}", crate::output::json_text(event.to_json().to_string()));
                }
                continue;
            }
            // A frozen agent makes no events: one arriving means it was resumed from outside.
            if self.agent.suspended && !self.control.freeze_requested() {
                self.agent.suspended = false;
            }
            let started = self.metrics.as_ref().map(|_| std::time::Instant::now());
            let decision = engine.decide(&mut self.agent, &event, event.header().ktime_ns);
            if let (Some(metrics), Some(started)) = (&self.metrics, started) {
                metrics.decided(started.elapsed());
            }
            let acted = match decision.action {
                engine::Action::Suspend => Some(self.control.set_frozen(true, Duration::from_secs(1)).map(|()| {
                    self.agent.suspended = true;
                    self.agent.suspended_since = monotonic_ns();
                })),
                engine::Action::Kill => Some(self.control.kill()),
                engine::Action::Allow | engine::Action::Deny | engine::Action::Audit => None,
            };
            // A process the probe stopped at its exec goes on: at once, or (suspended) once
            // its cgroup is frozen, so that it runs when the agent is thawed. Not when the
            // freeze failed: stopped is then the closest to frozen there is.
            if event.header().verdict == governor_common::verdict::STOPPED
                && !matches!(acted, Some(Err(_)))
                && decision.action != engine::Action::Kill
            {
                // SAFETY: kill(2) with a pid and a signal; the process cannot exit while
                // stopped (but for SIGKILL), so the pid is still its.
                unsafe { libc::kill(event.header().tgid as i32, libc::SIGCONT) };
            }
            self.pending.push_back((event, decision.action, decision.index, acted));
        }
    }

    fn write_pending(&mut self, max: usize) -> bool {
        let engine = Rc::clone(&self.engine);
        for _ in 0..max {
            let Some((event, action, index, acted)) = self.pending.pop_front() else { return false };
            let rule = index.and_then(|index| engine.rules().get(index));
            self.record_event(&event, engine::Decision { action, rule, index }, acted);
        }
        !self.pending.is_empty()
    }

    fn lost(&mut self, count: u64) {
        self.tally.lost(count);
        // Always said: events are never lost silently.
        probes::events::TraceSink.lost(count);
    }

    fn lost_in(&mut self, _cgroup_id: u64, count: u64) {
        self.events_lost(count);
    }

    fn undecodable(&mut self, error: &probes::events::DecodeError) {
        self.tally.undecodable(error);
        probes::events::TraceSink.undecodable(error);
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |time| time.tv_sec() as u64 * 1_000_000_000 + time.tv_nsec() as u64)
}

/// What the audit row says happened to the operation: `deny` when the kernel (Landlock,
/// seccomp, a probe) refused it, whatever the engine then did about it (that is in the
/// incident); otherwise the engine's decision.
pub fn recorded_decision(header: &governor_common::EventHeader, action: engine::Action) -> &'static str {
    if probes::events::refused(header) { "deny" } else { decision_name(action) }
}

/// The name a decision is recorded under (`allow`, `deny`, `audit`, `suspend`, `kill`).
pub fn decision_name(action: engine::Action) -> &'static str {
    match action {
        engine::Action::Allow => "allow",
        engine::Action::Deny => "deny",
        engine::Action::Audit => "audit",
        engine::Action::Suspend => "suspend",
        engine::Action::Kill => "kill",
    }
}
