//! The service layer's calls as the daemon's loop answers them: the operations that need
//! the live agents (act, register, report, create a policy, validate) and the reads it hands
//! to another thread.

use std::path::PathBuf;

use aya::maps::{MapData, RingBuf};

use crate::{
    audit,
    service::{self, ApiError, Call, Caller, records},
};

use super::{
    Daemon,
    control::Act,
    serve::{Reply, answer_line, send},
};

/// How far a service call got on the loop.
pub(super) enum Step {
    Done(service::Answer),
    /// Reads of the store, done off the loop (a query over millions of rows must not stop
    /// the loop from freezing agents).
    Blocking(Box<dyn FnOnce() -> service::Answer + Send>),
    /// The live stream of events.
    Stream(service::EventFilter),
}

impl<'w> Daemon<'w> {
    /// Runs one service call and sends its answer to `reply`: at once, from a reader
    /// thread, or (the event stream) from a task of its own, whose handle is returned so
    /// that the stream ends with its connection.
    pub(super) fn dispatch(
        &mut self,
        call: Call,
        caller: &Caller,
        reply: Reply,
        ring: &mut RingBuf<MapData>,
        commits: &tokio::sync::watch::Receiver<u64>,
    ) -> Option<tokio::task::AbortHandle> {
        let changes = call.changes_state();
        let step = self.call(call, caller, ring);
        if changes && let Step::Done(Err(error)) = &step {
            tracing::info!(by = %caller.describe(), error = %error, "service call refused");
        }
        match step {
            Step::Done(answer) => send(reply, answer),
            Step::Blocking(work) => {
                let spawned =
                    std::thread::Builder::new().name("service-read".into()).spawn(move || send(reply, work()));
                if let Err(error) = spawned {
                    tracing::error!(error = %error, "no reader thread");
                }
            }
            Step::Stream(filter) => {
                let Reply::Socket(line) = reply else {
                    send(reply, Err(ApiError::bad("call", "the event stream is served by GET /api/v1/events")));
                    return None;
                };
                let (events, mut received) = tokio::sync::mpsc::channel(256);
                let stream =
                    tokio::spawn(service::stream(self.hello.audit_db.clone(), filter, commits.clone(), events));
                let forward = tokio::spawn(async move {
                    while let Some(item) = received.recv().await {
                        let answer = item.and_then(|event| service::to_value(&event));
                        if line.send(answer_line(answer)).is_err() {
                            break;
                        }
                    }
                    stream.abort();
                });
                return Some(forward.abort_handle());
            }
        }
        None
    }

    /// What the service layer needs of the loop's state for a read.
    pub(super) fn live(&self) -> service::Live {
        service::Live {
            supervised: self.agents.values().map(|s| (s.output.agent_id.clone(), s.cgroup_id)).collect(),
            registered: service::registrations(&self.registered_dir),
        }
    }

    pub(super) fn daemon_info(&self) -> service::DaemonInfo {
        service::DaemonInfo {
            pid: self.hello.pid,
            version: env!("CARGO_PKG_VERSION").into(),
            backend: self.probes.backend.to_string(),
            audit_db: self.hello.audit_db.clone(),
            metrics: self.hello.metrics.clone(),
            http: self.hello.http.clone(),
            events_dropped: self.metrics.dropped.get(),
        }
    }

    /// One operation of the service layer: checked, done (or handed off the loop) and, when
    /// it changes anything, recorded with its caller.
    pub(super) fn call(&mut self, call: Call, caller: &Caller, ring: &mut RingBuf<MapData>) -> Step {
        let store = self.hello.audit_db.clone();
        let rings = self.rings.clone();
        match call {
            Call::Health => Step::Done(service::to_value(&service::health())),
            Call::Status => {
                let (live, info) = (self.live(), self.daemon_info());
                Step::Blocking(Box::new(move || {
                    service::status(&store, rings.as_deref(), &live, info).and_then(|status| service::to_value(&status))
                }))
            }
            Call::Agents => {
                let live = self.live();
                Step::Blocking(Box::new(move || service::agents(&store, &live).and_then(|a| service::to_value(&a))))
            }
            Call::Agent { id } => {
                let live = self.live();
                Step::Blocking(Box::new(move || service::agent(&store, &live, &id).and_then(|a| service::to_value(&a))))
            }
            Call::Audit(filter) => {
                Step::Blocking(Box::new(move || service::audit(&store, &filter).and_then(|e| service::to_value(&e))))
            }
            Call::Trace { agent, after, limit } => {
                let filter =
                    service::AuditFilter { agent: Some(agent), after, limit, ..service::AuditFilter::default() };
                Step::Blocking(Box::new(move || service::audit(&store, &filter).and_then(|e| service::to_value(&e))))
            }
            Call::Incidents(filter) => Step::Blocking(Box::new(move || {
                service::incidents(&store, &filter).and_then(|incidents| service::to_value(&incidents))
            })),
            Call::Events(filter) => Step::Stream(filter),
            Call::Policies => Step::Done(service::to_value(&service::policies(&self.rules, rings.as_deref()))),
            Call::Policy { id } => {
                let found =
                    service::policies(&self.rules, rings.as_deref()).policies.into_iter().find(|rule| rule.id == id);
                Step::Done(match found {
                    Some(rule) => service::to_value(&rule),
                    None => Err(ApiError::not_found("id", format!("no rule '{id}' in force"))),
                })
            }
            Call::Validate(request) => match self.validate_plan(&request) {
                Ok(Some((trust, overlays))) => Step::Blocking(Box::new(move || {
                    service::validate(rings.as_deref(), trust, &overlays, &request).and_then(|v| service::to_value(&v))
                })),
                // Neither supervised nor registered: what its last run applied, read from
                // the store off the loop (as `governor explain --agent` does).
                Ok(None) => {
                    let store = self.hello.audit_db.clone();
                    Step::Blocking(Box::new(move || {
                        let agent = request.agent_id.as_deref().unwrap_or_default();
                        let recorded = service::recorded_plan(&store, agent).ok();
                        let (trust, overlays) = match &recorded {
                            Some(plan) => (plan.trust, plan.files()),
                            None => (request.trust.unwrap_or(crate::policy::Trust::Low), Vec::new()),
                        };
                        service::validate(rings.as_deref(), trust, &overlays, &request)
                            .and_then(|v| service::to_value(&v))
                    }))
                }
                Err(error) => Step::Done(Err(error)),
            },
            Call::Act { agent, action, reason } => Step::Done(self.act_call(&agent, action, caller, reason)),
            Call::Register(spec) => Step::Done(self.register_call(&spec, caller)),
            Call::Report(report) => Step::Done(self.report_call(&report, caller)),
            Call::CreatePolicy(draft) => Step::Done(self.create_policy(&draft, caller, ring)),
        }
    }

    /// Changes of configuration (registrations, rules) are root's (or the token's): a
    /// member of the control group controls agents but may not widen a ring.
    pub(super) fn configure(&self, caller: &Caller) -> Result<(), ApiError> {
        match caller {
            Caller::Token | Caller::Dashboard { .. } | Caller::Peer { uid: 0, .. } => Ok(()),
            Caller::Peer { uid, .. } => Err(ApiError::new(
                service::ErrorKind::Forbidden,
                format!("uid {uid} may control agents, not change the policy: only root may"),
            )),
        }
    }

    pub(super) fn act_call(
        &mut self,
        agent: &str,
        action: service::Action,
        caller: &Caller,
        reason: Option<String>,
    ) -> service::Answer {
        crate::validate_agent_id(agent).map_err(|error| ApiError::bad("agent", error))?;
        if !self.names.contains_key(agent) {
            return Err(ApiError::not_found(
                "agent",
                format!("unknown agent '{agent}': not supervised by this daemon"),
            ));
        }
        let what = Act::from(action);
        self.act(agent, what, &caller.describe(), reason.as_deref().unwrap_or("")).map_err(ApiError::conflict)?;
        let state = match action {
            service::Action::Suspend => "suspended",
            service::Action::Resume => "running",
            service::Action::Kill => "killed",
        };
        service::to_value(&service::Acted { agent: agent.to_owned(), action, state: state.into() })
    }

    pub(super) fn register_call(&mut self, spec: &service::AgentSpec, caller: &Caller) -> service::Answer {
        self.configure(caller)?;
        crate::validate_agent_id(&spec.agent_id).map_err(|error| ApiError::bad("agent_id", error))?;
        if self.names.contains_key(&spec.agent_id) {
            return Err(ApiError::conflict(format!(
                "agent '{}' is running: register it before its run",
                spec.agent_id
            )));
        }
        if let Some(failure) = self.writer.failure() {
            return Err(ApiError::internal(format!("audit store failing ({failure}); nothing registered")));
        }
        let registered = service::register(spec, &self.registered_dir)?;
        let why = format!(
            "registered at trust {}{}",
            registered.trust,
            spec.reason.as_deref().map(|reason| format!(": {reason}")).unwrap_or_default()
        );
        self.writer
            .write(audit::action(&spec.agent_id, "register", &caller.describe(), &why))
            .map_err(|error| ApiError::internal(error.to_string()))?;
        tracing::info!(agent = %spec.agent_id, trust = %registered.trust, by = %caller.describe(), "agent registered ahead of its run");
        service::to_value(&registered)
    }

    pub(super) fn report_call(&mut self, report: &service::IncidentReport, caller: &Caller) -> service::Answer {
        crate::validate_agent_id(&report.agent).map_err(|error| ApiError::bad("agent", error))?;
        if report.kind.trim().is_empty() {
            return Err(ApiError::bad("type", "type is empty"));
        }
        if report.description.trim().is_empty() {
            return Err(ApiError::bad("description", "description is empty"));
        }
        let severity = format!("{:?}", report.severity).to_lowercase();
        let action = if report.auto_suspend { "suspend" } else { "audit" };
        let detail = serde_json::json!({ "reported_by": caller.describe() });
        let supervised = self.names.get(&report.agent).copied();
        match supervised.and_then(|id| self.agents.get_mut(&id)) {
            Some(supervised) => {
                supervised.output.record_incident(&report.kind, &severity, action, &report.description, detail);
            }
            None if report.auto_suspend => {
                return Err(ApiError::not_found(
                    "agent",
                    format!("unknown agent '{}': auto_suspend needs an agent this daemon supervises", report.agent),
                ));
            }
            None => {
                let known = records::connect(&self.hello.audit_db)
                    .and_then(|connection| records::known_agent(&connection, &report.agent));
                if known.is_err() {
                    return Err(ApiError::not_found("agent", format!("unknown agent '{}'", report.agent)));
                }
                let row = audit::Row {
                    table: "incidents",
                    values: vec![
                        audit::text(&report.agent),
                        audit::int(audit::now_ns()),
                        audit::text(&report.kind),
                        audit::text(&severity),
                        audit::text(action),
                        audit::text(&report.description),
                        audit::text(detail.to_string()),
                    ],
                };
                self.writer.write(row).map_err(|error| ApiError::internal(error.to_string()))?;
                self.metrics.incident(&severity);
            }
        }
        let why = format!("reported {} incident: {}", report.kind, report.description);
        let mut suspended = false;
        if report.auto_suspend {
            self.act(&report.agent, Act::Suspend, &caller.describe(), &why).map_err(ApiError::conflict)?;
            suspended = true;
        } else {
            self.writer
                .write(audit::action(&report.agent, "report", &caller.describe(), &why))
                .map_err(|error| ApiError::internal(error.to_string()))?;
        }
        service::to_value(&service::Reported { agent: report.agent.clone(), suspended })
    }

    pub(super) fn create_policy(
        &mut self,
        draft: &service::PolicyDraft,
        caller: &Caller,
        ring: &mut RingBuf<MapData>,
    ) -> service::Answer {
        self.configure(caller)?;
        let (file, ids) = service::check_draft(draft, self.rings.as_deref())?;
        service::write_draft(&file, draft)?;
        if let Err(error) = self.reload(ring) {
            // Nothing half-applied: the file goes, the rules in force stay.
            let _ = std::fs::remove_file(&file);
            return Err(ApiError::bad("toml", error));
        }
        let why = format!("added {} ({})", file.display(), ids.join(", "));
        self.writer
            .write(audit::action("-", "policy-add", &caller.describe(), &why))
            .map_err(|error| ApiError::internal(error.to_string()))?;
        service::to_value(&service::PolicyCreated { file, rules: ids, total_policies: self.rules.rules.len() })
    }

    /// The ring and `--policy` files that decide for `validate`: a supervised agent's, a
    /// registered one's, the request's `trust` (low) without an agent; `None` for an agent
    /// to look up in the store (its last run's, else the request's `trust`).
    pub(super) fn validate_plan(
        &self,
        request: &service::Validate,
    ) -> Result<Option<(crate::policy::Trust, Vec<PathBuf>)>, ApiError> {
        let fallback = request.trust.unwrap_or(crate::policy::Trust::Low);
        let Some(agent) = &request.agent_id else { return Ok(Some((fallback, Vec::new()))) };
        crate::validate_agent_id(agent).map_err(|error| ApiError::bad("agent_id", error))?;
        if let Some(supervised) = self.names.get(agent).and_then(|id| self.agents.get(id)) {
            return Ok(Some((supervised.registration.trust, supervised.registration.overlays.clone())));
        }
        if let Some(spec) =
            service::registrations(&self.registered_dir).into_iter().find(|spec| spec.agent_id == *agent)
        {
            let overlay = service::overlay_in(&self.registered_dir, agent);
            return Ok(Some((spec.trust.unwrap_or(crate::policy::Trust::Low), vec![overlay])));
        }
        Ok(None)
    }
}
