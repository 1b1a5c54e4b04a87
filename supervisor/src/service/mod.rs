//! The daemon's operations, each defined once: a typed request (`Call`), its typed answer,
//! its checks and its audit row. Every door (the control socket's JSON lines, the HTTP/JSON
//! door, the CLI through the socket) parses into a `Call`, names its `Caller`, and renders
//! what `daemon::Daemon::call` answers; none decides anything by itself.
//!
//! Here: the calls, their requests and answers, and the checks of the input every door
//! shares. The operations, by area: `events` (the audit store's events, the live stream,
//! incidents), `agents` (agents and the daemon's status), `policies` (the rules and their
//! drop-ins), `register` (agents registered ahead of their run), `validate` (the dry run);
//! each is re-exported here. Its parts that the CLI also calls directly, where it may read
//! the store itself: [`records`] (the audit store's reads), [`status`] (agents and the
//! compliance summary) and [`explain`] (the dry run of one action against a ring).
//!
//! Errors are typed (`ApiError`: a message, the request field at fault, and a status that
//! maps onto HTTP's 400/401/403/404/409), so every door reports bad input the same way.

mod agents;
mod events;
pub mod explain;
mod policies;
pub mod records;
mod register;
pub mod status;
mod validate;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{engine, policy::Trust};

use self::records::When;
pub use self::{
    agents::{Live, agent, agents, status},
    events::{audit, incidents, last_event, stream},
    explain::{AgentPlan, agent_plan as recorded_plan},
    policies::{check_draft, drop_in_dir, load_rules, policies, write_draft},
    register::{overlay_in, overlay_of, register, registered_dir, registered_overlay, registrations},
    validate::validate,
};

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

/// What `validate` is asked about: one type for every door (the CLI's value, the MCP
/// tool's argument schema, the JSON of HTTP and the socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActionType {
    /// Open a file for reading (as read).
    Open,
    Read,
    Write,
    /// Run a program (a path, or a name looked up along PATH).
    Exec,
    /// A TCP connection to HOST:PORT.
    Connect,
}

impl ActionType {
    /// The name the doors use for it.
    pub fn name(self) -> &'static str {
        match self {
            ActionType::Open => "open",
            ActionType::Read => "read",
            ActionType::Write => "write",
            ActionType::Exec => "exec",
            ActionType::Connect => "connect",
        }
    }
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
    fn errors_map_to_http_statuses() {
        assert_eq!(ApiError::bad("x", "y").kind.status(), 400);
        assert_eq!(ApiError::not_found("id", "y").kind.status(), 404);
        assert_eq!(ApiError::conflict("y").kind.status(), 409);
        let json = serde_json::to_value(ApiError::bad("limit", "too many")).unwrap_or_default();
        assert_eq!(json["error"], "too many");
        assert_eq!(json["field"], "limit");
    }
}
