//! The agents' lifecycle in the daemon: registered by a `governor run`, watched by the
//! probes, decided and recorded, acted on, ended; saved in the state directory and adopted
//! again by a daemon started after one was killed.

use std::{
    path::PathBuf,
    rc::Rc,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};

use crate::{
    agent::{EventOutput, monotonic_ns},
    audit,
    cgroup::{self, Cgroup},
    engine::{self, Engine, Rules},
    policy::{self, RingSource},
    probes::{
        self,
        events::{DecodeError, Event, Sink},
        landlock_audit::{AuditLog, Marker},
    },
};

use super::{
    Daemon, Supervised,
    control::{Act, Loss, Registration},
};

/// How long an exit waits for its audit marker to come back (it takes well under a
/// millisecond; kauditd may be starved on a loaded machine). The daemon's loop waits with
/// it, so not long: past it, records still to come are not the agent's rows.
const MARKER_WAIT: Duration = Duration::from_millis(20);

impl<'w> Daemon<'w> {
    /// The rules for an agent with `overlays` (the daemon's, plus theirs) and their engine;
    /// `None` for an agent without overlays, which the daemon's rules decide.
    pub(super) fn rules_for(&self, overlays: &[PathBuf]) -> Result<Option<(Rules, Engine)>, String> {
        if overlays.is_empty() {
            return Ok(None);
        }
        let overlays = overlays
            .iter()
            .map(|path| policy::load_overlay(path))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let source = RingSource::locate(self.rings.as_deref());
        engine::load(&source, &overlays).map(Some).map_err(|error| error.to_string())
    }

    /// Starts supervising an agent whose cgroup `governor run` has made (the agent has not
    /// started yet): watch its cgroup, put its deny rules into the kernel, record it.
    pub(super) fn register(
        &mut self,
        connection: u64,
        peer_pid: u32,
        registration: Registration,
    ) -> Result<serde_json::Value, String> {
        let agent = crate::validate_agent_id(&registration.agent)?;
        // Fail closed, and never wait on a failing store here: the loop would stop deciding
        // (and freezing) for every other agent.
        if let Some(failure) = self.writer.failure() {
            return Err(format!("audit store failing ({failure}); governor does not run an agent it cannot audit"));
        }
        if self.names.contains_key(&agent) {
            return Err(format!("an agent with id '{agent}' is already supervised"));
        }
        let cgroup = Cgroup::open(&self.cgroup_root, &agent).map_err(|error| error.to_string())?;
        let (own_rules, own_engine) = self.rules_for(&registration.overlays)?.unzip();
        let (cgroup_id, enforced, userspace_only) = self.watch(&registration, &cgroup, own_rules.as_ref())?;
        if let Err(error) = self.take_group(cgroup_id, peer_pid, &registration) {
            self.probes.unwatch(cgroup_id);
            return Err(error);
        }
        if let Some(audit) = self.probes.audit.as_mut() {
            audit.watch_agent(None, registration.session, cgroup_id);
        }
        let output = self.output_for(&agent, &registration, cgroup, cgroup_id, own_engine);
        let row = audit::agent_row(
            &agent,
            registration.trust.as_str(),
            &registration.command.join(" "),
            &registration.user,
            output.control().path(),
            &self.probes.backend.to_string(),
        );
        let start = audit::action(
            &agent,
            "start",
            &registration.user,
            &format!("governor run --trust {} (via governor daemon)", registration.trust),
        );
        for row in [row, start].into_iter().chain(audit::policy_rows(&agent, &registration.overlays)) {
            if let Err(busy) = self.writer.try_write(row) {
                self.probes.unwatch(cgroup_id);
                return Err(format!(
                    "audit store {}; governor does not run an agent it cannot audit",
                    match busy {
                        audit::Busy::Full(_) => "queue full",
                        audit::Busy::Stopped => "writer stopped",
                    }
                ));
            }
        }
        self.save(&registration);
        tracing::info!(agent = %agent, trust = %registration.trust, cgroup_id, "agent registered");
        self.supervise(Supervised {
            output,
            registration,
            cgroup_id,
            own_rules,
            connection: Some(connection),
            orphaned_since: None,
        });
        Ok(serde_json::json!({ "cgroup_id": cgroup_id, "enforced": enforced, "userspace_only": userspace_only }))
    }

    /// An agent's event output: decided by its own rules' engine, or the daemon's.
    pub(super) fn output_for(
        &self,
        agent: &str,
        registration: &Registration,
        cgroup: Cgroup,
        cgroup_id: u64,
        own_engine: Option<Engine>,
    ) -> EventOutput<'w> {
        let engine = own_engine.map_or_else(|| Rc::clone(&self.engine), Rc::new);
        let metrics = Some(Rc::clone(&self.metrics));
        let names = engine.stop_names(registration.trust);
        // Listed now (once for the daemon's engine while the directories are unchanged),
        // not while the agent's first exec waits for its decision.
        crate::resolve::list_programs(&engine);
        let mut output = EventOutput::new(self.writer, engine, registration.trust, agent, cgroup, false, metrics);
        match self.probes.stops().and_then(|mut stops| stops.hold(cgroup_id, &names).map(|()| stops)) {
            Ok(stops) => output.stop_in_kernel(stops, cgroup_id),
            Err(error) => {
                tracing::warn!(%agent, %error, "programs that rules suspend or kill for are not held at their exec")
            }
        }
        output
    }

    pub(super) fn supervise(&mut self, supervised: Supervised<'w>) {
        self.names.insert(supervised.output.agent_id.clone(), supervised.cgroup_id);
        self.agents.insert(supervised.cgroup_id, supervised);
    }

    /// Watches the agent's cgroup with its probe plan and deny rules.
    pub(super) fn watch(
        &mut self,
        registration: &Registration,
        cgroup: &Cgroup,
        own_rules: Option<&Rules>,
    ) -> Result<(u64, String, Vec<String>), String> {
        let cgroup_id = cgroup.id().map_err(|error| error.to_string())?;
        let dir = cgroup.dir().map_err(|error| error.to_string())?;
        let mode = if registration.observe { governor_common::mode::OBSERVE } else { governor_common::mode::ENFORCE };
        let slot = governor_common::AgentSlot { slot: 0, mode };
        self.probes
            .watch(cgroup_id, &registration.agent, &dir, slot, &registration.plan)
            .map_err(|error| error.to_string())?;
        let by_inode = self.probes.backend == probes::Backend::Lsm;
        let denies = own_rules.unwrap_or(&self.rules).kernel_denies(registration.trust, by_inode);
        let enforced = match self.probes.deny(cgroup_id, &denies) {
            Ok(enforced) => enforced,
            Err(error) => {
                self.probes.unwatch(cgroup_id);
                return Err(error.to_string());
            }
        };
        Ok((cgroup_id, enforced, denies.userspace_only))
    }

    /// The notify backend: takes the fanotify group the agent's `governor run` (process
    /// `pid`) made and the agent's mounts are marked in, to read its opens.
    fn take_group(&mut self, cgroup_id: u64, pid: u32, registration: &Registration) -> Result<(), String> {
        let Some(fd) = registration.fanotify else { return Ok(()) };
        self.take_group_fd(cgroup_id, pid, fd, &registration.agent)
    }

    fn take_group_fd(&mut self, cgroup_id: u64, pid: u32, fd: i32, agent: &str) -> Result<(), String> {
        if self.probes.backend != probes::Backend::Notify {
            return Ok(());
        }
        let group = probes::fanotify::take_from(pid, fd)
            .map_err(|error| format!("taking the agent's fanotify group from governor run (pid {pid}): {error}"))?;
        self.probes.opens.retain(|opens| opens.cgroup_id() != cgroup_id);
        let dir = self.cgroup_root.join(cgroup::BASE).join(agent);
        self.probes.opens.push(probes::fanotify::Opens::new(group, cgroup_id, &dir, &self.cgroup_root));
        Ok(())
    }

    /// A `governor run` attached again after a restart: its agent's fanotify group is taken
    /// again (the previous daemon's copy went with it).
    pub(super) fn take_opens(&mut self, cgroup_id: u64, pid: u32) -> Result<serde_json::Value, String> {
        let taken = self.agents.get(&cgroup_id).and_then(|supervised| {
            let registration = &supervised.registration;
            registration.fanotify.map(|fd| (fd, registration.agent.clone()))
        });
        if let Some((fd, agent)) = taken {
            self.take_group_fd(cgroup_id, pid, fd, &agent)?;
        }
        Ok(serde_json::json!({}))
    }

    /// `Request::Started`: the agent's Landlock audit records are known by its first pid.
    pub(super) fn started(&mut self, agent: &str, pid: u32, session: Option<u32>) -> Result<serde_json::Value, String> {
        let Some(cgroup_id) = self.names.get(agent).copied() else {
            return Err(format!("unknown agent '{agent}'"));
        };
        if let Some(audit) = self.probes.audit.as_mut() {
            audit.watch_agent(Some(pid), session, cgroup_id);
        }
        if let Some(supervised) = self.agents.get_mut(&cgroup_id) {
            supervised.registration.first_pid = Some(pid);
            supervised.registration.session = session;
            let registration = supervised.registration.clone();
            self.save(&registration);
        }
        Ok(serde_json::json!({}))
    }

    /// The agent's `governor run` says it exited (or, `code` None, the daemon found its cgroup
    /// empty with nobody to say so): its last events are decided and recorded, then the exit.
    pub(super) fn exited(
        &mut self,
        agent: &str,
        code: Option<i32>,
        ring: &mut RingBuf<MapData>,
    ) -> Result<serde_json::Value, String> {
        let Some(cgroup_id) = self.names.get(agent).copied() else {
            return Err(format!("unknown agent '{agent}'"));
        };
        // Supervision ends when the agent has, not when someone says so.
        let running = self.agents.get(&cgroup_id).is_some_and(|s| s.output.control().populated().unwrap_or(false));
        if running {
            return Err(format!("agent '{agent}' still has processes in its cgroup"));
        }
        // Events still in the ring buffer belong before the exit. kauditd hands audit
        // records on from its own thread: the agent's last ones may still be on their way
        // (notify backend). A marker logged now comes back behind them; where the kernel
        // refuses one, a few milliseconds of quiet stand for it.
        let mark = self.probes.audit.as_mut().and_then(AuditLog::mark);
        let deadline = Instant::now() + MARKER_WAIT;
        for round in 0.. {
            let read = self.probes.read_userspace();
            let quiet = read.events.is_empty();
            crate::supervise::deliver(read, &mut Dispatch { daemon: self });
            let Some(audit) = self.probes.audit.as_mut() else { break };
            match mark.map(|mark| audit.wait_for(mark, deadline)) {
                Some(Marker::Back) => {
                    let read = self.probes.read_userspace();
                    crate::supervise::deliver(read, &mut Dispatch { daemon: self });
                    break;
                }
                Some(Marker::Awaited) => {}
                None if round < 5 && !(quiet && round > 0) => std::thread::sleep(Duration::from_millis(2)),
                Some(Marker::Overdue) | None => break,
            }
        }
        crate::supervise::drain(ring, &mut Dispatch { daemon: self });
        self.names.remove(agent);
        let Some(mut supervised) = self.agents.remove(&cgroup_id) else {
            return Err(format!("unknown agent '{agent}'"));
        };
        self.probes.unwatch(cgroup_id);
        while supervised.output.write_pending(usize::MAX) {}
        supervised.output.finish();
        let why = match code {
            Some(code @ 0..=127) => format!("exit status {code}"),
            Some(code) => format!("exit status {code} (signal {})", code - 128),
            None => "ended with no governor run to report its exit status".to_owned(),
        };
        supervised.output.record_action("exit", if code.is_some() { "kernel" } else { "governor daemon" }, &why);
        let _ = std::fs::remove_file(self.state_file(agent));
        tracing::info!(agent = %agent, why = %why, events = supervised.output.tally.events, "agent exited");
        Ok(serde_json::json!({}))
    }

    /// `governor suspend|resume|kill` through the daemon: acts on the agent's cgroup, keeps
    /// the engine's view in step, records who and why.
    pub(super) fn act(
        &mut self,
        agent: &str,
        what: Act,
        actor: &str,
        reason: &str,
    ) -> Result<serde_json::Value, String> {
        let Some(supervised) = self.names.get(agent).and_then(|id| self.agents.get_mut(id)) else {
            return Err(format!("unknown agent '{agent}': not supervised by this daemon"));
        };
        let why = what.why(reason);
        if what == Act::Resume
            && let Some(failure) = self.writer.failure()
        {
            return Err(format!("audit store failing ({failure}); not resuming an agent without a record of it"));
        }
        what.apply(supervised.output.control()).map_err(|error| error.to_string())?;
        match what {
            Act::Suspend => {
                supervised.output.agent.suspended = true;
                supervised.output.agent.suspended_since = monotonic_ns();
            }
            Act::Resume => supervised.output.agent.suspended = false,
            Act::Kill => {}
        }
        supervised.output.record_action(what.name(), actor, &why);
        tracing::info!(agent = %agent, action = what.name(), by = %actor, why = %why, "agent control");
        Ok(serde_json::json!({}))
    }

    /// A control connection closed: an agent whose `governor run` it was is orphaned until
    /// one attaches again or its cgroup empties.
    pub(super) fn connection_closed(&mut self, connection: u64) {
        for supervised in self.agents.values_mut() {
            if supervised.connection == Some(connection) {
                supervised.connection = None;
                supervised.orphaned_since = Some(Instant::now());
                tracing::warn!(agent = %supervised.output.agent_id, "its governor run went away");
            }
        }
    }

    /// Orphaned agents whose cgroup has emptied have ended; their exit is recorded without a
    /// status.
    pub(super) fn check_orphans(&mut self, ring: &mut RingBuf<MapData>) {
        let ended: Vec<String> = self
            .agents
            .values()
            .filter(|supervised| {
                supervised.orphaned_since.is_some_and(|since| since.elapsed() >= Duration::from_millis(100))
            })
            .filter(|supervised| !supervised.output.control().populated().unwrap_or(false))
            .map(|supervised| supervised.output.agent_id.clone())
            .collect();
        for agent in ended {
            let path = self.cgroup_root.join(cgroup::BASE).join(&agent);
            let _ = std::fs::remove_dir(&path);
            let _ = self.exited(&agent, None, ring);
        }
    }

    /// Watches again the agents a previous daemon supervised that still run; records the end
    /// of those that ended meanwhile. The time without a supervisor is an incident.
    pub(super) fn adopt(&mut self) {
        let alive_at = std::fs::read_to_string(self.state_dir.join("daemon.alive"))
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok());
        let gap_ns = alive_at.map(|at| audit::now_ns() - at);
        let Ok(entries) = std::fs::read_dir(&self.state_dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let registration =
                std::fs::read(&path).ok().and_then(|bytes| serde_json::from_slice::<Registration>(&bytes).ok());
            let Some(registration) = registration else {
                tracing::error!(file = %path.display(), "unreadable agent state; left in place");
                continue;
            };
            if let Err(error) = self.adopt_one(registration, gap_ns) {
                tracing::error!(file = %path.display(), error = %error, "agent not adopted");
            }
        }
    }

    pub(super) fn adopt_one(&mut self, registration: Registration, gap_ns: Option<i64>) -> Result<(), String> {
        let agent = registration.agent.clone();
        let gap = gap_ns.map_or_else(|| "an unknown time".to_owned(), |ns| format!("{:.1} s", ns as f64 / 1e9));
        let live = Cgroup::open(&self.cgroup_root, &agent).ok().filter(|group| group.populated().unwrap_or(false));
        let Some(cgroup) = live else {
            let path = self.cgroup_root.join(cgroup::BASE).join(&agent);
            let _ = std::fs::remove_dir(&path);
            self.writer
                .write(audit::action(
                    &agent,
                    "exit",
                    "governor daemon",
                    "ended while no governor daemon ran; exit status unknown",
                ))
                .map_err(|error| error.to_string())?;
            let _ = std::fs::remove_file(self.state_file(&agent));
            tracing::info!(agent = %agent, "agent ended while no daemon ran");
            return Ok(());
        };
        let (own_rules, own_engine) = self.rules_for(&registration.overlays)?.unzip();
        let frozen = cgroup.frozen().unwrap_or(false);
        let (cgroup_id, _, _) = self.watch(&registration, &cgroup, own_rules.as_ref())?;
        if let Some(audit) = self.probes.audit.as_mut() {
            audit.watch_agent(registration.first_pid, registration.session, cgroup_id);
        }
        let mut output = self.output_for(&agent, &registration, cgroup, cgroup_id, own_engine);
        output.agent.suspended = frozen;
        // Execs held while no daemon ran were never decided; they go on (the gap is an
        // incident below). A frozen agent's stay held until it is resumed.
        if !frozen {
            output.release_held();
        }
        let reason = format!(
            "no supervisor for {gap}: the agent ran confined by Landlock and seccomp, but its events in that time were not seen and probe rules (UDP narrowing, kernel deny rules) lapsed"
        );
        output.record_incident(
            "supervisor-gap",
            "high",
            "audit",
            &reason,
            serde_json::json!({ "gap_ns": gap_ns, "previous_heartbeat_ns": gap_ns.map(|ns| audit::now_ns() - ns) }),
        );
        let expired = gap_ns.is_none_or(|ns| ns as u128 > self.config.loss_grace.0.as_nanos());
        if self.config.on_supervisor_loss == Loss::Kill && expired {
            let killed = output.control().kill();
            output.record_action(
                "kill",
                "governor daemon",
                &format!("supervisor gone for {gap}, longer than loss_grace (on_supervisor_loss = kill)"),
            );
            tracing::warn!(agent = %agent, gap = %gap, ok = killed.is_ok(), "agent killed: on_supervisor_loss = kill");
        } else {
            output.record_action(
                "adopt",
                "governor daemon",
                &format!("watched again after {gap} without a supervisor"),
            );
            tracing::info!(agent = %agent, gap = %gap, suspended = frozen, "agent adopted");
        }
        self.supervise(Supervised {
            output,
            registration,
            cgroup_id,
            own_rules,
            connection: None,
            orphaned_since: Some(Instant::now()),
        });
        Ok(())
    }

    pub(super) fn state_file(&self, agent: &str) -> PathBuf {
        self.state_dir.join(format!("{agent}.json"))
    }

    /// Keeps the registration where the next daemon finds it (written whole, then renamed).
    pub(super) fn save(&self, registration: &Registration) {
        let path = self.state_file(&registration.agent);
        let temporary = path.with_extension("json.new");
        let written = serde_json::to_vec(registration)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temporary, bytes))
            .and_then(|()| std::fs::rename(&temporary, &path));
        if let Err(error) = written {
            tracing::error!(file = %path.display(), error = %error, "agent state not saved: a restarted daemon will not adopt it");
        }
    }

    pub(super) fn report_drops(&mut self) {
        let Ok(counters) = self.probes.counters() else { return };
        if counters.dropped > self.reported_drops {
            let count = counters.dropped - self.reported_drops;
            self.reported_drops = counters.dropped;
            Dispatch { daemon: self }.lost(count);
            // Each agent answers for its own drops.
            let Ok(fresh) = crate::supervise::new_drops(&mut self.probes, &mut self.reported_by_agent) else { return };
            for (cgroup_id, count) in fresh {
                Dispatch { daemon: self }.lost_in(cgroup_id, count);
            }
        }
    }

    /// Agents by state, for the metrics gauge.
    pub(super) fn agent_states(&self) -> Vec<(&'static str, u64)> {
        let mut running = 0;
        let mut suspended = 0;
        for supervised in self.agents.values() {
            if state_of(supervised) == "suspended" {
                suspended += 1;
            } else {
                running += 1;
            }
        }
        vec![("running", running), ("suspended", suspended)]
    }
}

pub(super) fn state_of(supervised: &Supervised<'_>) -> &'static str {
    if supervised.output.control().frozen().unwrap_or(false) { "suspended" } else { "running" }
}

/// The daemon as the ring buffer's sink: each event goes to its agent by cgroup id.
pub(super) struct Dispatch<'d, 'w> {
    pub(super) daemon: &'d mut Daemon<'w>,
}

impl Sink for Dispatch<'_, '_> {
    fn event(&mut self, event: &Event) {
        self.events(vec![event.clone()]);
        while self.write_pending(usize::MAX) {}
    }

    fn events(&mut self, batch: Vec<Event>) {
        let mut by_agent: Vec<(u64, Vec<Event>)> = Vec::new();
        for event in batch {
            let id = event.header().cgroup_id;
            if !self.daemon.agents.contains_key(&id) {
                self.daemon.metrics.unattributed.inc();
                continue;
            }
            match by_agent.iter_mut().find(|(agent, _)| *agent == id) {
                Some((_, events)) => events.push(event),
                None => by_agent.push((id, vec![event])),
            }
        }
        for (id, events) in by_agent {
            if let Some(supervised) = self.daemon.agents.get_mut(&id) {
                supervised.output.events(events);
            }
        }
    }

    fn catch_up(&mut self) {
        if self.daemon.probes.backend == probes::Backend::Notify {
            crate::supervise::catch_up(|| {
                let read = self.daemon.probes.read_userspace();
                crate::supervise::deliver(read, self)
            });
        }
    }

    fn write_pending(&mut self, max: usize) -> bool {
        let mut more = false;
        for supervised in self.daemon.agents.values_mut() {
            more |= supervised.output.write_pending(max);
        }
        more
    }

    /// The ring buffer is shared: a drop cannot be pinned on one agent, so every agent
    /// running when it happened gets the record.
    fn lost(&mut self, count: u64) {
        let metrics = &self.daemon.metrics;
        metrics.dropped.inc_by(count);
        tracing::error!(count, "events dropped: ring buffer full");
    }

    /// The agent whose events they were answers for them (an incident, paused until the
    /// backlog is read); a process in no agent's cgroup makes no events.
    fn lost_in(&mut self, cgroup_id: u64, count: u64) {
        match self.daemon.agents.get_mut(&cgroup_id) {
            Some(supervised) => {
                supervised.output.tally.lost += count;
                supervised.output.events_lost(count);
            }
            None => tracing::error!(cgroup_id, count, "events dropped for an agent no longer watched"),
        }
    }

    fn undecodable(&mut self, error: &DecodeError) {
        let metrics = &self.daemon.metrics;
        metrics.undecodable.inc();
        tracing::error!(error = %error, "undecodable event");
    }
}
