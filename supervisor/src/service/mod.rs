//! The daemon's operations, each defined once: a typed request (`Call`), its typed answer,
//! its checks and its audit row. Every door (the control socket's JSON lines, the HTTP/JSON
//! door, the CLI through the socket) parses into a `Call`, names its `Caller`, and renders
//! what `daemon::Daemon::call` answers; none decides anything by itself.
//!
//! Its parts that the CLI also calls directly, where it may read the store itself: [`records`]
//! (the audit store's reads), [`status`] (agents and the compliance summary) and
//! [`explain`] (the dry run of one action against a ring).
//!
//! Errors are typed (`ApiError`: a message, the request field at fault, and a status that
//! maps onto HTTP's 400/401/403/404/409), so every door reports bad input the same way.

pub mod explain;
pub mod records;
pub mod status;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    engine,
    policy::{self, RingSource, Trust},
};

use self::records::When;

/// Rows an audit read returns unless told otherwise, and at most.
pub const DEFAULT_LIMIT: u32 = 1000;
pub const MAX_LIMIT: u32 = 10_000;

/// One operation of the daemon, as every door asks it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "kebab-case")]
pub enum Call {
    /// `{"status": "ok", "version": ...}`.
    Health,
    /// The compliance summary and the daemon's own state.
    Status,
    /// Every agent the store knows, with its state now.
    Agents,
    /// One agent: ring, state, counts, process tree, its registration.
    Agent { id: String },
    /// Registers an agent ahead of its run: `governor run --agent-id ID` then applies the
    /// registration on top of the ring.
    Register(AgentSpec),
    /// Audit events, filtered like `governor audit query`.
    Audit(AuditFilter),
    /// One agent's events, oldest first.
    Trace { agent: String, after: Option<i64>, limit: Option<u32> },
    /// Incidents, oldest first.
    Incidents(IncidentFilter),
    /// An incident reported by hand; `auto_suspend` freezes the agent.
    Report(IncidentReport),
    /// Suspend, resume or kill a supervised agent.
    Act { agent: String, action: Action, reason: Option<String> },
    /// A dry run: would this agent (or ring) be allowed to do this now, and which layer and
    /// rule decides.
    Validate(Validate),
    /// The policy engine's rules in force.
    Policies,
    /// One rule by id.
    Policy { id: String },
    /// Adds `[[rule]]`s as a drop-in file of the rules directory, applied by a reload.
    CreatePolicy(PolicyDraft),
    /// Audit events as they are recorded (a stream: one answer per event).
    Events(EventFilter),
}

impl Call {
    /// Whether the call changes anything (those are refused to callers who may only read,
    /// and audited with the caller).
    pub fn changes_state(&self) -> bool {
        matches!(self, Call::Register(_) | Call::Report(_) | Call::Act { .. } | Call::CreatePolicy(_))
    }
}

/// Who asks: recorded in the audit store's actor column for every change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A peer of the control socket (or of the HTTP door on it), from `SO_PEERCRED`.
    Peer { uid: u32, pid: i32, name: String },
    /// A client of the HTTP door on TCP that presented the bearer token.
    Token,
    /// The dashboard in a browser, whose session was opened with the bearer token (the
    /// first characters of the session's nonce tell sessions apart in the audit store).
    Dashboard { session: String },
}

impl Caller {
    pub fn describe(&self) -> String {
        match self {
            Caller::Peer { uid, pid, name } => format!("{name} (uid {uid}, pid {pid})"),
            Caller::Token => "token".to_owned(),
            Caller::Dashboard { session } => format!("token (dashboard session {session})"),
        }
    }
}

/// What can be done to a running agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Suspend,
    Resume,
    Kill,
}

/// An agent registered ahead of its run. What it lists is added on top of its ring as a
/// `--policy` file would be: allowed paths are readable, allowed programs readable and
/// executable, allowed destinations' ports open for TCP connect; denied paths are carved out
/// of every tree as secrets are (Landlock refuses them), a denied program kills the agent
/// that runs it (an engine rule), denied destinations are refused by the probes' socket
/// hooks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    pub agent_id: String,
    /// The ring the agent runs in [default: low].
    #[serde(default)]
    pub trust: Option<Trust>,
    #[serde(default)]
    pub allowed_programs: Vec<String>,
    #[serde(default)]
    pub denied_programs: Vec<String>,
    #[serde(default)]
    pub allowed_paths: Vec<String>,
    #[serde(default)]
    pub denied_paths: Vec<String>,
    /// `HOST:PORT`: the port is opened for TCP connect.
    #[serde(default)]
    pub allowed_destinations: Vec<String>,
    /// `ADDR[/PREFIX][:PORT]`: refused whatever the ring allows.
    #[serde(default)]
    pub denied_destinations: Vec<String>,
    /// Why, for the audit store and the rules' reasons.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `GET /api/v1/audit`'s query parameters: the names of `governor audit query`'s options.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    pub agent: Option<String>,
    pub kind: Option<String>,
    pub decision: Option<String>,
    /// A glob on the path (SQLite GLOB: `*`, `?`, `[...]`).
    pub path: Option<String>,
    /// A duration back from now (`1h`) or an RFC 3339 time.
    pub since: Option<String>,
    pub until: Option<String>,
    /// At most this many rows [default 1000, at most 10000].
    pub limit: Option<u32>,
    /// Only events after this event id (for paging: the last `id` seen).
    pub after: Option<i64>,
}

/// The live stream's filters, and where it resumes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    pub agent: Option<String>,
    pub kind: Option<String>,
    pub decision: Option<String>,
    pub path: Option<String>,
    /// Events after this id first (those already recorded), then new ones. Without it the
    /// stream starts with the next event recorded.
    pub after: Option<i64>,
}

impl EventFilter {
    pub fn audit(&self, after: i64, limit: u32) -> AuditFilter {
        AuditFilter {
            agent: self.agent.clone(),
            kind: self.kind.clone(),
            decision: self.decision.clone(),
            path: self.path.clone(),
            since: None,
            until: None,
            limit: Some(limit),
            after: Some(after),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentFilter {
    pub agent: Option<String>,
    pub since: Option<String>,
    pub limit: Option<u32>,
}

/// An incident reported by a person or a program watching the agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentReport {
    pub agent: String,
    /// What kind of incident (`prompt-injection`, `data-exfiltration`, ...): the rule column.
    #[serde(rename = "type")]
    pub kind: String,
    pub severity: engine::Severity,
    pub description: String,
    /// Freeze the agent's cgroup as well.
    #[serde(default)]
    pub auto_suspend: bool,
}

/// What `validate` is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionType {
    /// Open for reading (as `read`).
    Open,
    Read,
    Write,
    Exec,
    Connect,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validate {
    /// The agent whose ring (and registration) decide: a supervised agent, a registered
    /// one, or one the store knows. An unknown id is decided at `trust` (default low).
    pub agent_id: Option<String>,
    /// The ring, when no agent is named (or the agent is unknown).
    pub trust: Option<Trust>,
    pub action_type: ActionType,
    /// A path, a program (looked up along PATH) or `HOST:PORT`.
    pub target: String,
    /// The agent's workspace, which its ring lets it write [default: none: nothing is
    /// granted as the workspace].
    #[serde(default)]
    pub workspace: Option<PathBuf>,
    /// Free text from the caller (recorded nowhere; echoed back).
    #[serde(default)]
    pub context: Option<serde_json::Value>,
}

/// `[[rule]]`s to add, as TOML (the form `governor policy check` validates).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDraft {
    /// The drop-in's name: `rules.d/NAME.toml` (letters, digits, `-`, `_`).
    pub name: String,
    pub toml: String,
}

// Answers.

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// The compliance summary. `compliance_score` is 100 × (agents active in the last hour that
/// raised no incident in it) / (agents active in the last hour), 100 when none was:
/// `governor status`'s score.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub total_agents: i64,
    /// Running or suspended now.
    pub active_agents: i64,
    pub suspended_agents: i64,
    /// Engine rules in force.
    pub total_policies: usize,
    /// Incidents in the last hour.
    pub recent_violations: i64,
    pub compliance_score: f64,
    pub score_formula: String,
    pub agents_active_last_hour: i64,
    pub agents_clean_last_hour: i64,
    pub rings_loaded: usize,
    /// Agents this daemon supervises now.
    pub supervised_agents: usize,
    pub registered_agents: usize,
    pub daemon: DaemonInfo,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    pub backend: String,
    pub audit_db: PathBuf,
    pub metrics: Option<String>,
    pub http: Option<String>,
    /// Events the kernel had no ring-buffer room for since the daemon started.
    pub events_dropped: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Agent {
    pub agent: String,
    pub trust: String,
    /// running, suspended, exited, lost, or registered (not started yet).
    pub state: String,
    pub supervised: bool,
    pub cgroup_id: Option<u64>,
    pub command: String,
    pub started: Option<i64>,
    pub ended: Option<i64>,
    pub events: i64,
    pub denials: i64,
    pub incidents: i64,
    /// The processes in its cgroup now (`show` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<AgentSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    pub command: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Agents {
    pub agents: Vec<Agent>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Registered {
    pub agent_id: String,
    pub trust: Trust,
    /// The `--policy` file `governor run --agent-id` adds (the daemon's, root's).
    pub overlay: PathBuf,
}

/// One audit event (a row of the `events` table).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    /// The event id: `after` pages from it, the stream resumes from it.
    pub id: i64,
    pub agent: String,
    /// Nanoseconds since the epoch.
    pub time: i64,
    pub kind: String,
    pub pid: i64,
    pub exe: String,
    pub cmdline: String,
    pub path: String,
    pub destination: String,
    pub result: String,
    pub decision: String,
    pub rule: String,
    pub source: String,
    pub count: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<Event>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Incident {
    pub id: i64,
    pub agent: String,
    pub time: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub severity: String,
    pub action: String,
    pub description: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Incidents {
    pub incidents: Vec<Incident>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reported {
    pub agent: String,
    pub suspended: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Acted {
    pub agent: String,
    pub action: Action,
    /// running, suspended or killed.
    pub state: String,
}

/// `validate`'s answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Validation {
    pub allowed: bool,
    pub reason: String,
    /// landlock, seccomp, kernel deny map, secret, rule engine, or none.
    pub layer: String,
    /// The rule that decides, when one does: an engine rule's id, the policy line of a
    /// Landlock or deny rule.
    pub rule: Option<String>,
    pub trust: Trust,
    pub agent_id: Option<String>,
    /// Other things worth knowing (engine rules that watch it, ...).
    pub notes: Vec<String>,
    /// `--policy` lines that would allow it.
    pub to_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
}

/// One engine rule.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyRule {
    pub id: String,
    pub kind: String,
    pub action: String,
    pub severity: String,
    pub reason: String,
    pub trust_at_least: Option<Trust>,
    pub trust_below: Option<Trust>,
    /// The drop-in file it came from; none for the rules file itself.
    pub file: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Policies {
    pub policies: Vec<PolicyRule>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyCreated {
    pub file: PathBuf,
    /// The ids of the rules added.
    pub rules: Vec<String>,
    /// Rules in force after the reload.
    pub total_policies: usize,
}

/// How an error maps onto HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// 400: bad input, `field` names it.
    BadRequest,
    /// 401: no or a wrong token.
    Unauthorized,
    /// 403: the caller may not.
    Forbidden,
    /// 404: no such agent or rule.
    NotFound,
    /// 409: the state forbids it now (already registered, not supervised, ...).
    Conflict,
    /// 500: governor failed.
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Internal => 500,
        }
    }
}

/// `{"error": ..., "field": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error}")]
pub struct ApiError {
    pub error: String,
    pub field: Option<String>,
    #[serde(default = "internal")]
    pub kind: ErrorKind,
}

fn internal() -> ErrorKind {
    ErrorKind::Internal
}

impl ApiError {
    pub fn new(kind: ErrorKind, error: impl Into<String>) -> ApiError {
        ApiError { error: error.into(), field: None, kind }
    }

    pub fn bad(field: &str, error: impl Into<String>) -> ApiError {
        ApiError { error: error.into(), field: Some(field.to_owned()), kind: ErrorKind::BadRequest }
    }

    pub fn not_found(field: &str, error: impl Into<String>) -> ApiError {
        ApiError { error: error.into(), field: Some(field.to_owned()), kind: ErrorKind::NotFound }
    }

    pub fn conflict(error: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Conflict, error)
    }

    pub fn internal(error: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Internal, error)
    }

    /// An audit CLI failure: exit 2 is the caller's input, anything else governor's.
    fn from_cli(field: &str, (code, message): records::Failure) -> ApiError {
        if code == crate::exit::USAGE {
            if message.starts_with("unknown agent") {
                ApiError::not_found("agent", message)
            } else {
                ApiError::bad(field, message)
            }
        } else {
            ApiError::internal(message)
        }
    }
}

pub type Answer = Result<serde_json::Value, ApiError>;

pub fn to_value<T: Serialize>(value: &T) -> Answer {
    serde_json::to_value(value).map_err(|error| ApiError::internal(error.to_string()))
}

pub fn health() -> Health {
    Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() }
}

// Checks of the input, shared by every door.

fn parse_value<T: clap::ValueEnum>(field: &str, text: &str) -> Result<T, ApiError> {
    T::from_str(text, true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|value| value.to_possible_value().map(|value| value.get_name().to_owned()))
            .collect();
        ApiError::bad(field, format!("{field} '{text}' is not one of {}", names.join(", ")))
    })
}

fn parse_time(field: &str, text: &Option<String>) -> Result<Option<When>, ApiError> {
    text.as_deref().map(|text| records::parse_when(text).map_err(|error| ApiError::bad(field, error))).transpose()
}

fn limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        0 => Err(ApiError::bad("limit", "limit must be at least 1")),
        limit if limit > MAX_LIMIT => Err(ApiError::bad("limit", format!("limit must be at most {MAX_LIMIT}"))),
        limit => Ok(limit),
    }
}

fn agent_field(field: &str, agent: &str) -> Result<String, ApiError> {
    crate::validate_agent_id(agent).map_err(|error| ApiError::bad(field, error))
}

impl AuditFilter {
    /// The `governor audit query` this filter is, checked.
    pub fn query(&self) -> Result<records::Query, ApiError> {
        if let Some(agent) = &self.agent {
            agent_field("agent", agent)?;
        }
        if self.after.is_some_and(|after| after < 0) {
            return Err(ApiError::bad("after", "after must be an event id (0 or more)"));
        }
        Ok(records::Query {
            agent: self.agent.clone(),
            kind: self.kind.as_deref().map(|kind| parse_value("kind", kind)).transpose()?,
            decision: self.decision.as_deref().map(|decision| parse_value("decision", decision)).transpose()?,
            since: parse_time("since", &self.since)?,
            until: parse_time("until", &self.until)?,
            path: self.path.clone(),
            limit: limit(self.limit)?,
            after: self.after,
            format: records::Format::Json,
        })
    }
}

// Reads of the store (blocking: the daemon runs them off its loop).

fn text(row: &serde_json::Map<String, serde_json::Value>, name: &str) -> String {
    row.get(name).and_then(|value| value.as_str()).unwrap_or_default().to_owned()
}

fn int(row: &serde_json::Map<String, serde_json::Value>, name: &str) -> i64 {
    row.get(name).and_then(serde_json::Value::as_i64).unwrap_or_default()
}

fn event_of(row: &serde_json::Map<String, serde_json::Value>) -> Event {
    Event {
        id: int(row, "seq"),
        agent: text(row, "agent"),
        time: int(row, "time"),
        kind: text(row, "kind"),
        pid: int(row, "pid"),
        exe: text(row, "exe"),
        cmdline: text(row, "cmdline"),
        path: text(row, "path"),
        destination: text(row, "destination"),
        result: text(row, "result"),
        decision: text(row, "decision"),
        rule: text(row, "rule"),
        source: text(row, "source"),
        count: int(row, "count"),
    }
}

/// Audit events that match `filter`, oldest first. A filter on an agent the store has never
/// seen is 404, not an empty answer.
pub fn audit(store: &Path, filter: &AuditFilter) -> Result<Events, ApiError> {
    select(store, filter, true)
}

fn select(store: &Path, filter: &AuditFilter, known: bool) -> Result<Events, ApiError> {
    let query = filter.query()?;
    let connection = records::connect(store).map_err(|failure| ApiError::from_cli("audit_db", failure))?;
    if let Some(agent) = query.agent.as_ref().filter(|_| known) {
        records::known_agent(&connection, agent).map_err(|failure| ApiError::from_cli("agent", failure))?;
    }
    let rows = records::select(&connection, &query).map_err(|failure| ApiError::from_cli("path", failure))?;
    Ok(Events { events: rows.iter().map(event_of).collect() })
}

/// The newest event id in the store (where a stream without `after` starts).
pub fn last_event(store: &Path) -> Result<i64, ApiError> {
    let connection = records::connect(store).map_err(|failure| ApiError::from_cli("audit_db", failure))?;
    connection
        .query_row("SELECT coalesce(max(seq), 0) FROM events", [], |row| row.get(0))
        .map_err(|error| ApiError::internal(format!("audit store: {error}")))
}

/// Events in a stream are read this many at a time.
const STREAM_BATCH: u32 = 500;

/// The live stream: events after `filter.after` (or from the next one recorded) that match
/// the filter, sent to `out` in id order as the writer commits them; ends when `out` is
/// closed or the daemon stops. Read from the store, so a stream that falls behind or
/// resumes loses nothing; an agent that has not run yet may be followed.
pub async fn stream(
    store: PathBuf,
    filter: EventFilter,
    mut commits: tokio::sync::watch::Receiver<u64>,
    out: tokio::sync::mpsc::Sender<Result<Event, ApiError>>,
) {
    if let Err(error) = filter.audit(0, STREAM_BATCH).query() {
        let _ = out.send(Err(error)).await;
        return;
    }
    let mut after = match filter.after {
        Some(after) => after,
        None => {
            let path = store.clone();
            match tokio::task::spawn_blocking(move || last_event(&path)).await {
                Ok(Ok(last)) => last,
                Ok(Err(error)) => {
                    let _ = out.send(Err(error)).await;
                    return;
                }
                Err(error) => {
                    let _ = out.send(Err(ApiError::internal(error.to_string()))).await;
                    return;
                }
            }
        }
    };
    loop {
        commits.borrow_and_update();
        let (path, query) = (store.clone(), filter.audit(after, STREAM_BATCH));
        let batch = match tokio::task::spawn_blocking(move || select(&path, &query, false)).await {
            Ok(batch) => batch,
            Err(error) => Err(ApiError::internal(error.to_string())),
        };
        let events = match batch {
            Ok(batch) => batch.events,
            Err(error) => {
                let _ = out.send(Err(error)).await;
                return;
            }
        };
        let full = events.len() as u32 == STREAM_BATCH;
        for event in events {
            after = event.id;
            if out.send(Ok(event)).await.is_err() {
                return;
            }
        }
        if !full {
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                () = out.closed() => return,
            }
        }
    }
}

pub fn incidents(store: &Path, filter: &IncidentFilter) -> Result<Incidents, ApiError> {
    let since = parse_time("since", &filter.since)?.map_or(0, |When(since)| since);
    let limit = limit(filter.limit)?;
    let connection = records::connect(store).map_err(|failure| ApiError::from_cli("audit_db", failure))?;
    if let Some(agent) = &filter.agent {
        agent_field("agent", agent)?;
        records::known_agent(&connection, agent).map_err(|failure| ApiError::from_cli("agent", failure))?;
    }
    let sql = "SELECT seq, agent, time, rule, severity, action, reason FROM incidents
               WHERE (?1 IS NULL OR agent = ?1) AND time >= ?2 ORDER BY seq LIMIT ?3";
    let sql_error = |error: rusqlite::Error| ApiError::internal(format!("audit store: {error}"));
    let mut statement = connection.prepare(sql).map_err(sql_error)?;
    let rows = statement
        .query_map(rusqlite::params![filter.agent, since, limit], |row| {
            Ok(Incident {
                id: row.get(0)?,
                agent: row.get(1)?,
                time: row.get(2)?,
                kind: row.get(3)?,
                severity: row.get(4)?,
                action: row.get(5)?,
                description: row.get(6)?,
            })
        })
        .map_err(sql_error)?;
    let incidents = rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)?;
    Ok(Incidents { incidents })
}

/// What the daemon knows that the store does not: its supervised agents and registrations.
#[derive(Clone, Debug, Default)]
pub struct Live {
    /// Agent id → cgroup id, of the agents supervised now.
    pub supervised: Vec<(String, u64)>,
    pub registered: Vec<AgentSpec>,
}

fn agent_of(agent: &crate::service::status::Agent, live: &Live) -> Agent {
    let cgroup_id = live.supervised.iter().find(|(id, _)| *id == agent.agent).map(|(_, cgroup)| *cgroup);
    Agent {
        agent: agent.agent.clone(),
        trust: agent.trust.clone(),
        state: agent.state.as_str().to_owned(),
        supervised: cgroup_id.is_some(),
        cgroup_id,
        command: agent.command.clone(),
        started: Some(agent.started),
        ended: agent.ended,
        events: agent.events,
        denials: agent.denials,
        incidents: agent.incidents,
        processes: Vec::new(),
        registration: live.registered.iter().find(|spec| spec.agent_id == agent.agent).cloned(),
    }
}

fn registered_only(spec: &AgentSpec) -> Agent {
    Agent {
        agent: spec.agent_id.clone(),
        trust: spec.trust.unwrap_or(Trust::Low).to_string(),
        state: "registered".into(),
        supervised: false,
        cgroup_id: None,
        command: String::new(),
        started: None,
        ended: None,
        events: 0,
        denials: 0,
        incidents: 0,
        processes: Vec::new(),
        registration: Some(spec.clone()),
    }
}

fn store_agents(store: &Path) -> Result<Vec<crate::service::status::Agent>, ApiError> {
    let connection = records::connect(store).map_err(|failure| ApiError::from_cli("audit_db", failure))?;
    let root = crate::cgroup::mount_point().ok();
    crate::service::status::agents(&connection, root.as_deref(), crate::audit::now_ns())
        .map_err(|failure| ApiError::from_cli("audit_db", failure))
}

/// Every agent: the store's (the latest run of each id), then those registered that have
/// not run yet.
pub fn agents(store: &Path, live: &Live) -> Result<Agents, ApiError> {
    let mut latest: Vec<crate::service::status::Agent> = Vec::new();
    for agent in store_agents(store)? {
        match latest.iter_mut().find(|known| known.agent == agent.agent) {
            Some(known) => *known = agent,
            None => latest.push(agent),
        }
    }
    let mut agents: Vec<Agent> = latest.iter().map(|agent| agent_of(agent, live)).collect();
    for spec in &live.registered {
        if !agents.iter().any(|agent| agent.agent == spec.agent_id) {
            agents.push(registered_only(spec));
        }
    }
    Ok(Agents { agents })
}

/// One agent, with the processes of its cgroup.
pub fn agent(store: &Path, live: &Live, id: &str) -> Result<Agent, ApiError> {
    agent_field("id", id)?;
    let found = agents(store, live)?.agents.into_iter().find(|agent| agent.agent == id);
    let mut agent = found.ok_or_else(|| ApiError::not_found("id", format!("unknown agent '{id}'")))?;
    if let Ok(root) = crate::cgroup::mount_point()
        && let Ok(group) = crate::cgroup::Cgroup::open(&root, id)
    {
        agent.processes = processes(group.path());
    }
    Ok(agent)
}

fn processes(cgroup: &Path) -> Vec<Process> {
    let mut found = Vec::new();
    let mut dirs = vec![cgroup.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|line| line.trim().parse::<i32>().ok()) {
            let stat = procfs::process::Process::new(pid).and_then(|process| process.stat());
            let (ppid, command) = stat.map_or((0, String::new()), |stat| (stat.ppid, stat.comm));
            found.push(Process { pid, ppid, command });
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            dirs.extend(entries.flatten().map(|entry| entry.path()).filter(|path| path.is_dir()));
        }
    }
    found.sort_by_key(|process| process.pid);
    found
}

/// The compliance summary from the store, with the daemon's own fields.
pub fn status(store: &Path, rings: Option<&Path>, live: &Live, daemon: DaemonInfo) -> Result<Status, ApiError> {
    let agents = store_agents(store)?;
    let (rules, _) = load_rules(rings).map_err(|error| ApiError::internal(error.to_string()))?;
    let now = crate::audit::now_ns();
    let summary = crate::service::status::summarize(&agents, Trust::ALL.len(), rules.rules.len(), now);
    Ok(Status {
        total_agents: summary.agents_total,
        active_agents: summary.active,
        suspended_agents: summary.suspended,
        total_policies: summary.rules,
        recent_violations: summary.violations_last_hour,
        compliance_score: summary.score,
        score_formula: "100 * agents_clean_last_hour / agents_active_last_hour (100 when none was active)".into(),
        agents_active_last_hour: summary.recent,
        agents_clean_last_hour: summary.clean,
        rings_loaded: summary.rings,
        supervised_agents: live.supervised.len(),
        registered_agents: live.registered.len(),
        daemon,
    })
}

// Policies: the rules file, and its drop-ins in `rules.d/` beside it.

/// The drop-in directory of a ring directory.
pub fn drop_in_dir(rings: &Path) -> PathBuf {
    rings.join("rules.d")
}

/// The engine's rules and engine for `rings` (drop-ins included).
pub fn load_rules(rings: Option<&Path>) -> Result<(engine::Rules, engine::Engine), policy::Error> {
    engine::load(&RingSource::locate(rings), &[])
}

/// The rules in force, each with the drop-in it came from.
pub fn policies(rules: &engine::Rules, rings: Option<&Path>) -> Policies {
    let drop_ins = match RingSource::locate(rings) {
        RingSource::Dir(dir) => engine::drop_ins(&dir).unwrap_or_default(),
        RingSource::BuiltIn => Vec::new(),
    };
    let policies = rules
        .rules
        .iter()
        .map(|rule| PolicyRule {
            id: rule.id.clone(),
            kind: serde_plain(&rule.kind),
            action: serde_plain(&rule.action),
            severity: serde_plain(&rule.severity),
            reason: rule.reason.to_string(),
            trust_at_least: rule.trust_at_least,
            trust_below: rule.trust_below,
            file: drop_ins
                .iter()
                .find(|(_, file)| file.rule.iter().any(|other| other.id == rule.id))
                .map(|(path, _)| path.clone()),
        })
        .collect();
    Policies { policies }
}

fn serde_plain<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|value| value.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Checks a draft as `governor policy check` would and against the rules in force (ids are
/// unique); returns the file it goes to and the ids it adds. Nothing is written.
pub fn check_draft(draft: &PolicyDraft, rings: Option<&Path>) -> Result<(PathBuf, Vec<String>), ApiError> {
    let valid_name = !draft.name.is_empty()
        && draft.name.len() <= 64
        && draft.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name {
        return Err(ApiError::bad("name", format!("name '{}': letters, digits, '-' and '_' only", draft.name)));
    }
    let RingSource::Dir(dir) = RingSource::locate(rings) else {
        return Err(ApiError::conflict(
            "the daemon runs on the rings built into governor: no rules directory to add to (start it with --rings DIR)",
        ));
    };
    let file = drop_in_dir(&dir).join(format!("{}.toml", draft.name));
    if file.exists() {
        return Err(ApiError::conflict(format!("{} exists: choose another name", file.display())));
    }
    let parsed: engine::RulesFile =
        policy::parse(&file, &draft.toml).map_err(|error| ApiError::bad("toml", error.to_string()))?;
    if parsed.rule.is_empty() {
        return Err(ApiError::bad("toml", format!("{}: no [[rule]] in it", file.display())));
    }
    if parsed.suspend_on_severity.is_some() || parsed.event_budget.is_some() {
        return Err(ApiError::bad(
            "toml",
            format!(
                "{}: a drop-in adds [[rule]]s only (suspend_on_severity and event_budget belong to rules.toml)",
                file.display()
            ),
        ));
    }
    parsed.validate().map_err(|message| ApiError::bad("toml", format!("{}: {message}", file.display())))?;
    let (rules, _) = load_rules(rings).map_err(|error| ApiError::internal(error.to_string()))?;
    for rule in &parsed.rule {
        if rules.rules.iter().any(|other| other.id == rule.id) {
            return Err(ApiError::conflict(format!("{}: rule id '{}' is already in force", file.display(), rule.id)));
        }
    }
    engine::Engine::from_rules(&engine::Rules {
        rules: rules.rules.iter().cloned().chain(parsed.rule.iter().cloned()).collect(),
        suspend_on_severity: rules.suspend_on_severity,
        event_budget: rules.event_budget,
    })
    .map_err(|message| ApiError::bad("toml", format!("{}: {message}", file.display())))?;
    Ok((file, parsed.rule.iter().map(|rule| rule.id.clone()).collect()))
}

/// Writes the drop-in whole (a temporary file renamed into place, 0644 like the rings).
pub fn write_draft(file: &Path, draft: &PolicyDraft) -> Result<(), ApiError> {
    let failed = |error: std::io::Error| ApiError::internal(format!("{}: {error}", file.display()));
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let temporary = file.with_extension("toml.new");
    std::fs::write(&temporary, &draft.toml).map_err(failed)?;
    std::fs::rename(&temporary, file).map_err(failed)
}

// Registration: a spec becomes an overlay, the form every run already applies.

/// The overlay TOML for `spec`; checked by loading it as `governor run --policy` would.
pub fn overlay_of(spec: &AgentSpec) -> Result<String, ApiError> {
    let reason = spec.reason.clone().unwrap_or_else(|| format!("registered for agent {}", spec.agent_id));
    let quoted = |text: &str| toml::Value::String(text.to_owned()).to_string();
    let mut out = String::new();
    let absolute = |field: &str, path: &str| -> Result<(), ApiError> {
        if path.starts_with('/') || path.starts_with('$') {
            Ok(())
        } else {
            Err(ApiError::bad(field, format!("{field}: '{path}' is not an absolute path")))
        }
    };
    let program = |field: &str, name: &str| -> Result<String, ApiError> {
        if name.starts_with('/') {
            return Ok(name.to_owned());
        }
        lookup(name)
            .map(|path| path.display().to_string())
            .ok_or_else(|| ApiError::bad(field, format!("{field}: '{name}' is not found on PATH")))
    };
    for path in &spec.allowed_paths {
        absolute("allowed_paths", path)?;
        out.push_str(&format!(
            "[[landlock.path]]\npath = {}\naccess = [\"read\"]\nreason = {}\n\n",
            quoted(path),
            quoted(&reason)
        ));
    }
    for name in &spec.allowed_programs {
        let path = program("allowed_programs", name)?;
        out.push_str(&format!(
            "[[landlock.path]]\npath = {}\naccess = [\"read\", \"exec\"]\nreason = {}\n\n",
            quoted(&path),
            quoted(&reason)
        ));
    }
    // Denied paths and programs are carved out of every tree the ring grants (Landlock),
    // as secrets are.
    for path in &spec.denied_paths {
        absolute("denied_paths", path)?;
        out.push_str(&format!("[[secret]]\npath = {}\nreason = {}\n\n", quoted(path), quoted(&reason)));
    }
    // A denied program kills the agent that runs it: the engine sees every exec on every
    // probe backend (a Landlock carve out of /usr/bin would also take the directory off the
    // agent's PATH).
    for (index, name) in spec.denied_programs.iter().enumerate() {
        let path = program("denied_programs", name)?;
        let real = std::fs::canonicalize(&path).map_or(path.clone(), |real| real.display().to_string());
        let names: Vec<String> = if real == path { vec![quoted(&path)] } else { vec![quoted(&path), quoted(&real)] };
        out.push_str(&format!(
            "[[rule]]\nid = {}\nkind = \"exec\"\nbinary = [{}]\naction = \"kill\"\nseverity = \"high\"\nreason = {}\n\n",
            quoted(&format!("registered-{}-program-{}", spec.agent_id, index + 1)),
            names.join(", "),
            quoted(&format!("{reason}: a denied program"))
        ));
    }
    for destination in &spec.allowed_destinations {
        let port = destination
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .filter(|port| *port > 0)
            .ok_or_else(|| {
                ApiError::bad("allowed_destinations", format!("allowed_destinations: '{destination}' is not HOST:PORT"))
            })?;
        out.push_str(&format!("[[network.connect]]\nport = {port}\nreason = {}\n\n", quoted(&reason)));
    }
    for destination in &spec.denied_destinations {
        let (to, port) = deny_target(destination).ok_or_else(|| {
            ApiError::bad(
                "denied_destinations",
                format!("denied_destinations: '{destination}' is not ADDR[/PREFIX][:PORT]"),
            )
        })?;
        out.push_str(&format!("[[network.deny]]\nto = {}\n", quoted(&to)));
        if let Some(port) = port {
            out.push_str(&format!("port = {port}\n"));
        }
        out.push_str(&format!("reason = {}\n\n", quoted(&reason)));
    }
    Ok(out)
}

/// `ADDR[/PREFIX][:PORT]` (an IPv6 address in brackets when a port follows).
fn deny_target(text: &str) -> Option<(String, Option<u16>)> {
    let (net, port) = if let Some(rest) = text.strip_prefix('[') {
        let (net, port) = rest.split_once("]:")?;
        (net, Some(port.parse::<u16>().ok()?))
    } else if text.matches(':').count() == 1 {
        let (net, port) = text.split_once(':')?;
        (net, Some(port.parse::<u16>().ok()?))
    } else {
        (text, None)
    };
    let addr = net.split_once('/').map_or(net, |(addr, _)| addr);
    addr.parse::<IpAddr>().ok()?;
    Some((net.to_owned(), port))
}

fn lookup(name: &str) -> Option<PathBuf> {
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// Checks a spec and writes its overlay into `dir` (`ID.toml`, root's, 0600): the file is
/// loaded as a `--policy` file before it is kept.
pub fn register(spec: &AgentSpec, dir: &Path) -> Result<Registered, ApiError> {
    let agent_id = agent_field("agent_id", &spec.agent_id)?;
    let text = overlay_of(spec)?;
    let failed = |path: &Path, error: std::io::Error| ApiError::internal(format!("{}: {error}", path.display()));
    std::fs::create_dir_all(dir).map_err(|error| failed(dir, error))?;
    let file = dir.join(format!("{agent_id}.toml"));
    let temporary = dir.join(format!("{agent_id}.toml.new"));
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|error| failed(&temporary, error))?;
        std::io::Write::write_all(&mut written, text.as_bytes()).map_err(|error| failed(&temporary, error))?;
    }
    if let Err(error) = policy::load_overlay(&temporary) {
        let _ = std::fs::remove_file(&temporary);
        return Err(ApiError::bad("agent_id", error.to_string()));
    }
    std::fs::rename(&temporary, &file).map_err(|error| failed(&file, error))?;
    let spec_file = dir.join(format!("{agent_id}.json"));
    let json = serde_json::to_vec(spec).map_err(|error| ApiError::internal(error.to_string()))?;
    std::fs::write(&spec_file, json).map_err(|error| failed(&spec_file, error))?;
    Ok(Registered { agent_id, trust: spec.trust.unwrap_or(Trust::Low), overlay: file })
}

/// Where a daemon keeps registrations: `registered/` beside its audit store.
pub fn registered_dir(audit_db: &Path) -> PathBuf {
    audit_db.parent().unwrap_or(Path::new(".")).join("registered")
}

/// The registrations kept in `dir`.
pub fn registrations(dir: &Path) -> Vec<AgentSpec> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut specs: Vec<AgentSpec> = entries
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "json"))
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    specs.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    specs
}

// Validate: `governor explain`'s answer for one agent's ring, as data.

/// Whether `trust` (with `overlays`) lets an agent do `request`, which layer decides and
/// why. The same plan `governor run` applies, then the engine rules that would act on it.
pub fn validate(
    rings: Option<&Path>,
    trust: Trust,
    overlays: &[PathBuf],
    request: &Validate,
) -> Result<Validation, ApiError> {
    let target = request.target.trim();
    if target.is_empty() {
        return Err(ApiError::bad("target", "target is empty"));
    }
    let op = match request.action_type {
        ActionType::Open | ActionType::Read => explain::Op::Read,
        ActionType::Write => explain::Op::Write,
        ActionType::Exec => explain::Op::Exec,
        ActionType::Connect => explain::Op::Connect,
    };
    let parsed = explain::Target::parse(target);
    match (&parsed, op) {
        (explain::Target::Destination { .. }, explain::Op::Connect) => {}
        (_, explain::Op::Connect) => {
            return Err(ApiError::bad("target", format!("action_type connect needs HOST:PORT, not '{target}'")));
        }
        (explain::Target::Destination { .. }, _) => {
            return Err(ApiError::bad("action_type", format!("'{target}' is a destination: action_type connect")));
        }
        (explain::Target::Program(_), explain::Op::Read | explain::Op::Write) => {
            return Err(ApiError::bad(
                "target",
                format!("action_type {op:?} needs an absolute path, not '{target}'").to_lowercase(),
            ));
        }
        _ => {}
    }
    let workspace = match &request.workspace {
        Some(dir) if !dir.is_absolute() => {
            return Err(ApiError::bad("workspace", format!("workspace {} is not an absolute path", dir.display())));
        }
        Some(dir) if !dir.is_dir() => {
            return Err(ApiError::bad("workspace", format!("workspace {} is not a directory", dir.display())));
        }
        Some(dir) => dir.clone(),
        // An empty directory of governor's own: no path the caller asks about is in it.
        None => {
            let empty = std::env::temp_dir().join("governor-validate-no-workspace");
            std::fs::create_dir_all(&empty)
                .map_err(|error| ApiError::internal(format!("{}: {error}", empty.display())))?;
            empty
        }
    };
    let run = crate::launch::Request::dry(rings, trust, overlays, Some(workspace));
    let answer = explain::answer(run, &parsed, Some(op)).map_err(|(code, message)| {
        if code == crate::exit::USAGE { ApiError::bad("target", message) } else { ApiError::internal(message) }
    })?;
    Ok(validation_of(answer, trust, request))
}

fn validation_of(answer: explain::Answer, trust: Trust, request: &Validate) -> Validation {
    // An engine rule that denies, suspends or kills on it decides after the kernel allows.
    let engine_rule = answer.notes.iter().find_map(|note| {
        let rest = note.strip_prefix("engine rule ")?;
        let (id, rest) = rest.split_once(" (")?;
        let (action, reason) = rest.split_once("): ")?;
        // A counted or sequenced rule does not decide one action by itself.
        (!matches!(action, "Allow" | "Audit") && !action.contains(','))
            .then(|| (id.to_owned(), action.to_lowercase(), reason.to_owned()))
    });
    let (layer, rule) = match answer.layer.as_str() {
        "Landlock rule" => ("landlock", answer.rule.clone()),
        "secret" => ("landlock", Some(format!("secret: {}", answer.reason))),
        "seccomp" => ("seccomp", Some("network.socket_families".to_owned())),
        "kernel deny rule" => ("kernel deny map", answer.rule.clone()),
        "no Landlock domain" => ("none", None),
        other => (other, answer.rule.clone()),
    };
    let mut validation = Validation {
        allowed: answer.allowed,
        reason: answer.reason.clone(),
        layer: layer.to_owned(),
        rule,
        trust,
        agent_id: request.agent_id.clone(),
        notes: answer.notes.clone(),
        to_allow: answer.to_allow.clone(),
        context: request.context.clone(),
    };
    if answer.allowed
        && let Some((id, action, reason)) = engine_rule
    {
        validation.allowed = false;
        validation.layer = "rule engine".into();
        validation.reason = format!("{reason} (the kernel allows it; the engine then would {action})");
        validation.rule = Some(id);
    }
    validation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_tagged_and_unknown_fields_refused() {
        let call: Call = serde_json::from_str(r#"{"call":"act","agent":"a","action":"suspend","reason":null}"#)
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(matches!(call, Call::Act { action: Action::Suspend, .. }));
        assert!(call.changes_state());
        assert!(serde_json::from_str::<Call>(r#"{"call":"register","agent_id":"a","colour":"red"}"#).is_err());
    }

    #[test]
    fn audit_filters_name_the_bad_field() {
        let bad = AuditFilter { kind: Some("teleport".into()), ..AuditFilter::default() }.query();
        assert_eq!(bad.map(|_| ()).map_err(|error| error.field), Err(Some("kind".into())));
        let bad = AuditFilter { since: Some("yesterday-ish".into()), ..AuditFilter::default() }.query();
        assert_eq!(bad.map(|_| ()).map_err(|error| error.field), Err(Some("since".into())));
        let bad = AuditFilter { limit: Some(0), ..AuditFilter::default() }.query();
        assert_eq!(bad.map(|_| ()).map_err(|error| error.field), Err(Some("limit".into())));
        let good = AuditFilter { decision: Some("deny".into()), after: Some(5), ..AuditFilter::default() }.query();
        assert!(good.is_ok_and(|query| query.after == Some(5) && query.limit == DEFAULT_LIMIT));
    }

    #[test]
    fn a_spec_becomes_an_overlay_that_loads() {
        let spec = AgentSpec {
            agent_id: "a".into(),
            trust: Some(Trust::Medium),
            allowed_paths: vec!["/srv/data".into()],
            denied_paths: vec!["/etc/hostname".into()],
            denied_programs: vec!["/usr/bin/env".into()],
            allowed_destinations: vec!["example.org:8443".into()],
            denied_destinations: vec!["192.0.2.0/24:443".into(), "198.51.100.7".into()],
            ..AgentSpec::default()
        };
        let text = overlay_of(&spec).unwrap_or_else(|error| panic!("{error}"));
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let path = dir.path().join("a.toml");
        std::fs::write(&path, &text).unwrap_or_else(|error| panic!("{error}"));
        let overlay = policy::load_overlay(&path).unwrap_or_else(|error| panic!("{error}\n{text}"));
        assert_eq!(overlay.secret.len(), 1);
        assert_eq!(overlay.rule.len(), 1);
        assert_eq!(overlay.network.as_ref().map(|network| network.deny.len()), Some(2));
        let bad = AgentSpec { agent_id: "a".into(), allowed_paths: vec!["relative".into()], ..AgentSpec::default() };
        assert_eq!(overlay_of(&bad).map_err(|error| error.field), Err(Some("allowed_paths".into())));
        let bad =
            AgentSpec { agent_id: "a".into(), denied_destinations: vec!["nowhere".into()], ..AgentSpec::default() };
        assert_eq!(overlay_of(&bad).map_err(|error| error.field), Err(Some("denied_destinations".into())));
    }

    #[test]
    fn deny_targets_parse() {
        assert_eq!(deny_target("192.0.2.1:22"), Some(("192.0.2.1".into(), Some(22))));
        assert_eq!(deny_target("10.0.0.0/8"), Some(("10.0.0.0/8".into(), None)));
        assert_eq!(deny_target("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(deny_target("::1"), Some(("::1".into(), None)));
        assert_eq!(deny_target("example.org:80"), None);
    }

    #[test]
    fn errors_map_to_http_statuses() {
        assert_eq!(ApiError::bad("x", "y").kind.status(), 400);
        assert_eq!(ApiError::not_found("id", "y").kind.status(), 404);
        assert_eq!(ApiError::conflict("y").kind.status(), 409);
        let json = serde_json::to_value(ApiError::bad("limit", "too many")).unwrap_or_default();
        assert_eq!(json["error"], "too many");
        assert_eq!(json["field"], "limit");
    }
}
