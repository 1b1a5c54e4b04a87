//! The Model Context Protocol door (the `rmcp` SDK): `governor mcp` serves it on stdio as a
//! client of the daemon's control socket, and the HTTP door serves it at `/mcp` (streamable
//! HTTP) inside the daemon. Every tool is one call of the service layer, so what an LLM
//! orchestrator is told is what `governor status`, `audit query` and `suspend` say, and every
//! state-changing call is recorded by the daemon with the caller its door admitted.
//!
//! Tools carry PolicyGuard's names and argument shapes (`validate_action`, `register_agent`,
//! `create_policy`, `get_audit_log`, `get_compliance_status`, `report_incident`) plus
//! `suspend_agent`, `resume_agent`, `kill_agent` and `get_events`. Bad arguments and refusals
//! are tool errors (`isError`, `{"error": ..., "field": ...}`) that a model can read and
//! correct, not protocol errors that clients hide.

use std::{path::PathBuf, sync::Arc};

use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler, ServiceExt as _,
    handler::server::common::schema_for_type,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
    },
    service::RequestContext,
};
use schemars::JsonSchema;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::control;
use crate::service::{self, Call};

/// A tool's failure as the caller sees it: what went wrong and, when an argument is to
/// blame, which one.
#[derive(Debug, PartialEq, Eq)]
pub struct ToolError {
    pub error: String,
    pub field: Option<String>,
}

impl ToolError {
    fn new(error: impl Into<String>) -> ToolError {
        ToolError { error: error.into(), field: None }
    }

    fn field(field: &str, error: impl Into<String>) -> ToolError {
        ToolError { error: error.into(), field: Some(field.to_owned()) }
    }

    fn to_json(&self) -> Value {
        json!({ "error": self.error, "field": self.field })
    }
}

type Answer = Result<Value, ToolError>;

impl ToolError {
    /// The service's refusal, with its field renamed to the tool's argument (`renames`:
    /// service field, argument).
    fn from_service(error: service::ApiError, renames: &[(&str, &str)]) -> ToolError {
        let field = error
            .field
            .map(|field| renames.iter().find(|(from, _)| *from == field).map_or(field, |(_, to)| (*to).to_owned()));
        ToolError { error: error.error, field }
    }
}

/// Deserializes a tool's arguments, naming the argument that is missing, unknown or of the
/// wrong type.
pub fn arguments<T: DeserializeOwned>(arguments: Value) -> Result<T, ToolError> {
    serde_path_to_error::deserialize(arguments).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        // serde names a missing or unknown field in its message, at the object's own path.
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|prefix| message.strip_prefix(prefix))
            .and_then(|rest| rest.split('`').next());
        let field = match named {
            Some(name) => name.to_owned(),
            None => path.clone(),
        };
        let field = if field == "." { None } else { Some(field) };
        let error = match &field {
            Some(field) if !message.contains(field.as_str()) => format!("{field}: {message}"),
            _ => message,
        };
        ToolError { error, field }
    })
}

/// The daemon's answer to `call`, on a connection of its own (the control socket is
/// blocking; tools run on tokio's blocking pool). `renames` maps the service's field names
/// onto the tool's.
async fn ask_socket(socket: &std::path::Path, call: Call, renames: &'static [(&'static str, &'static str)]) -> Answer {
    let socket = socket.to_path_buf();
    let joined = tokio::task::spawn_blocking(move || {
        let mut client =
            control::Client::connect(&socket).map_err(|error| service::ApiError::internal(error.to_string()))?;
        client.ask(call)
    })
    .await;
    match joined {
        Ok(Ok(mut value)) => {
            if let Value::Object(map) = &mut value {
                map.remove("ok");
            }
            Ok(value)
        }
        Ok(Err(error)) => Err(ToolError::from_service(error, renames)),
        Err(error) => Err(ToolError::new(format!("governor mcp: {error}"))),
    }
}

/// The service's names for what PolicyGuard calls `agent_id`.
const AGENT: &[(&str, &str)] = &[("agent", "agent_id")];
/// `get_audit_log`'s and `get_events`' arguments, by the service's names.
const AUDIT: &[(&str, &str)] =
    &[("agent", "agent_id"), ("kind", "action_type"), ("decision", "status"), ("since", "time_range")];

/// `suspend_agent`, `resume_agent`, `kill_agent`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentControl {
    /// The agent, as `governor run --agent-id` named it.
    pub agent_id: String,
    /// Why, for the audit store (default: the tool's name).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A ring, as the tools name it.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    Low,
    Medium,
    High,
    Admin,
}

impl From<Trust> for crate::policy::Trust {
    fn from(trust: Trust) -> crate::policy::Trust {
        match trust {
            Trust::Low => crate::policy::Trust::Low,
            Trust::Medium => crate::policy::Trust::Medium,
            Trust::High => crate::policy::Trust::High,
            Trust::Admin => crate::policy::Trust::Admin,
        }
    }
}

/// An incident's severity.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl From<Severity> for crate::engine::Severity {
    fn from(severity: Severity) -> crate::engine::Severity {
        match severity {
            Severity::Low => crate::engine::Severity::Low,
            Severity::Medium => crate::engine::Severity::Medium,
            Severity::High => crate::engine::Severity::High,
            Severity::Critical => crate::engine::Severity::Critical,
        }
    }
}

/// `validate_action`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateAction {
    /// The agent that asks: its ring and registration decide. An agent governor does not
    /// know is decided at `trust` (default low).
    pub agent_id: String,
    pub action_type: service::ActionType,
    /// A path (open, read, write, exec), a program (exec) or HOST:PORT (connect).
    pub target: String,
    /// The ring to decide in for an agent governor does not know [default: low].
    #[serde(default)]
    pub trust: Option<Trust>,
    /// The agent's workspace, which its ring lets it write [default: none is granted].
    #[serde(default)]
    pub workspace: Option<PathBuf>,
    /// Action-specific parameters (echoed back, not used to decide).
    #[serde(default)]
    pub parameters: Option<Value>,
    /// Why the agent wants to do it (echoed back, not used to decide).
    #[serde(default)]
    pub context: Option<Value>,
}

/// `register_agent`: PolicyGuard's fields, and governor's lists applied on top of the ring.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    pub agent_id: String,
    /// A name for people (recorded as the registration's reason with the description).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// low, medium, high or admin [default: low].
    #[serde(default)]
    pub trust_level: Option<Trust>,
    /// Programs (paths or names on PATH) the agent may run beyond its ring.
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    /// Programs the agent may not run (nor read) whatever its ring allows.
    #[serde(default)]
    pub denied_tools: Vec<String>,
    /// Absolute paths the agent may read beyond its ring.
    #[serde(default)]
    pub allowed_paths: Vec<String>,
    /// Absolute paths the agent may not read whatever its ring allows.
    #[serde(default)]
    pub denied_paths: Vec<String>,
    /// HOST:PORT: the port is opened for TCP connect.
    #[serde(default)]
    pub allowed_destinations: Vec<String>,
    /// ADDR[/PREFIX][:PORT], refused by the kernel whatever the ring allows.
    #[serde(default)]
    pub denied_destinations: Vec<String>,
}

/// `create_policy`: engine rules (`[[rule]]` of rules.toml), as TOML or as JSON objects.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    /// The drop-in's name (`rules.d/ID.toml`: letters, digits, -, _).
    pub policy_id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// The reason of every rule that gives none.
    #[serde(default)]
    pub description: Option<String>,
    /// `[[rule]]` tables as TOML text, or an array of rule objects with the same keys (id,
    /// kind, action, severity, reason, path, binary, destination, count, window, ...).
    pub rules: Value,
    /// The priority of every rule that gives none.
    #[serde(default)]
    pub priority: Option<i64>,
}

/// `report_incident`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportIncident {
    /// What happened: policy_violation, suspicious_activity, data_exfiltration, ... (the
    /// incident's rule column).
    pub incident_type: String,
    /// low, medium, high or critical.
    pub severity: Severity,
    pub description: String,
    /// The agent it concerns (one governor knows).
    pub agent_id: String,
    /// Supporting data, recorded with the description.
    #[serde(default)]
    pub evidence: Option<Value>,
    #[serde(default)]
    pub recommended_action: Option<String>,
    /// Freeze the agent's cgroup as well.
    #[serde(default)]
    pub auto_suspend: bool,
}

/// `get_audit_log`: PolicyGuard's filters, plus `governor audit query`'s.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLog {
    /// Only this agent's events.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The event kind: exec, execed, open, connect, sendmsg, mkdir, rmdir, unlink, rename,
    /// link, symlink, truncate, mknod, chmod, chown.
    #[serde(default)]
    pub action_type: Option<String>,
    /// How far back: a duration (1h, 24h, 7d, 30m) or an RFC 3339 time [default: 24h].
    #[serde(default)]
    pub time_range: Option<String>,
    /// allowed or denied (or a decision: allow, deny, audit, suspend, kill).
    #[serde(default)]
    pub status: Option<String>,
    /// A glob on the path (* ? [...]).
    #[serde(default)]
    pub path: Option<String>,
    /// At most this many entries [default: 100, at most 10000].
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only events after this event id (paging: the last id seen).
    #[serde(default)]
    pub after: Option<i64>,
}

/// `get_events`: what happened since an event id, waiting for something to happen.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetEvents {
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub action_type: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    /// Events after this id (the `last_id` of the previous call); without it, the events
    /// recorded from now on.
    #[serde(default)]
    pub after: Option<i64>,
    /// At most this many events [default: 100, at most 10000].
    #[serde(default)]
    pub limit: Option<u32>,
    /// How long to wait for a first event when there is none yet [default: 5, at most 60].
    #[serde(default)]
    pub wait_seconds: Option<f64>,
}

/// `get_compliance_status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Compliance {
    /// Incidents of this period are listed [default: 24h]; the score is over the last hour.
    #[serde(default)]
    pub time_range: Option<String>,
    /// List the incidents of `time_range` [default: true].
    #[serde(default)]
    pub include_incidents: Option<bool>,
    /// List the agents with their ring, state and counts [default: true].
    #[serde(default)]
    pub include_agents: Option<bool>,
}

/// The decision PolicyGuard's `status` names.
fn decision(status: Option<&str>) -> Option<String> {
    match status {
        None | Some("") => None,
        Some("allowed") => Some("allow".to_owned()),
        Some("denied") => Some("deny".to_owned()),
        Some(other) => Some(other.to_owned()),
    }
}

/// A rules argument as the TOML of `[[rule]]` tables.
fn rules_toml(args: &CreatePolicy) -> Result<String, ToolError> {
    let bad = |message: String| ToolError::field("rules", format!("rules: {message}"));
    let mut rules: Vec<toml::Table> = match &args.rules {
        Value::String(text) => {
            let parsed: toml::Table = text.parse().map_err(|error: toml::de::Error| bad(error.to_string()))?;
            match parsed.get("rule") {
                Some(toml::Value::Array(rules)) => rules
                    .iter()
                    .map(|rule| rule.as_table().cloned().ok_or_else(|| bad("a [[rule]] is not a table".into())))
                    .collect::<Result<_, _>>()?,
                _ => return Err(bad("no [[rule]] tables".into())),
            }
        }
        Value::Array(rules) => rules
            .iter()
            .map(|rule| match toml::Value::try_from(rule) {
                Ok(toml::Value::Table(table)) => Ok(table),
                Ok(_) => Err(bad("every rule is an object".into())),
                Err(error) => Err(bad(error.to_string())),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("a TOML string of [[rule]] tables or an array of rule objects".into())),
    };
    if rules.is_empty() {
        return Err(bad("no rules".into()));
    }
    for rule in &mut rules {
        if let Some(priority) = args.priority {
            rule.entry("priority").or_insert(toml::Value::Integer(priority));
        }
        if let Some(reason) = args.description.as_ref().or(args.name.as_ref()) {
            rule.entry("reason").or_insert_with(|| toml::Value::String(reason.clone()));
        }
    }
    let mut document = toml::Table::new();
    document.insert("rule".into(), toml::Value::Array(rules.into_iter().map(toml::Value::Table).collect()));
    toml::to_string(&document).map_err(|error| bad(error.to_string()))
}

/// Where the tools' calls go.
#[derive(Clone)]
pub enum Backend {
    /// `governor mcp`: the daemon's control socket, which names the caller by its peer.
    Socket(PathBuf),
    /// MCP on the HTTP door, inside the daemon: its loop, with the caller the door admitted.
    Door(super::door::Door),
}

/// The MCP server: stateless but for where its calls go (and, for one call on the HTTP
/// door, who makes it).
#[derive(Clone)]
pub struct Governor {
    backend: Backend,
    caller: Option<service::Caller>,
}

impl Governor {
    pub fn new(socket: PathBuf) -> Governor {
        Governor { backend: Backend::Socket(socket), caller: None }
    }

    /// The tools on the HTTP door; each request's caller comes from the door's admission.
    pub fn on_door(door: super::door::Door) -> Governor {
        Governor { backend: Backend::Door(door), caller: None }
    }

    async fn ask(&self, call: Call, renames: &'static [(&'static str, &'static str)]) -> Answer {
        let door = match &self.backend {
            Backend::Socket(socket) => return ask_socket(socket, call, renames).await,
            Backend::Door(door) => door,
        };
        let Some(caller) = self.caller.clone() else {
            return Err(ToolError::new("the HTTP door did not name the caller"));
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let asked = super::door::Asked::Call { caller, call: Box::new(call), reply };
        if door.asked.send(asked).is_err() {
            return Err(ToolError::new("the daemon is stopping"));
        }
        match answer.await {
            Ok(Ok(mut value)) => {
                if let Value::Object(map) = &mut value {
                    map.remove("ok");
                }
                Ok(value)
            }
            Ok(Err(error)) => Err(ToolError::from_service(error, renames)),
            Err(_) => Err(ToolError::new("the daemon did not answer")),
        }
    }

    /// Every tool, with its input schema.
    pub fn tools() -> Vec<Tool> {
        fn tool<T: JsonSchema + 'static>(name: &'static str, description: &'static str, read_only: bool) -> Tool {
            let mut annotations = ToolAnnotations::default();
            annotations.read_only_hint = Some(read_only);
            annotations.destructive_hint = Some(name == "kill_agent");
            Tool::new(name, description, schema_for_type::<T>()).annotate(annotations)
        }
        vec![
            tool::<ValidateAction>(
                "validate_action",
                "Ask before acting: would this agent be allowed to open, read, write or exec a path, \
                 or connect to HOST:PORT, now? Answers allowed, reason, the layer that decides \
                 (landlock, seccomp, kernel deny map, rule engine) and its rule, from the plan the \
                 kernel enforces for the agent's ring and registration.",
                true,
            ),
            tool::<RegisterAgent>(
                "register_agent",
                "Register an agent ahead of its run: its trust level and the programs, paths and \
                 destinations it is allowed or denied on top of its ring; `governor run --agent-id \
                 ID` applies them. Unregistered agents run at the ring they are given (low by default).",
                false,
            ),
            tool::<CreatePolicy>(
                "create_policy",
                "Add policy-engine rules ([[rule]] of rules.toml: kind, path/binary/destination \
                 globs, rate or sequence, action allow/deny/audit/suspend/kill, severity, reason). \
                 Checked as `governor policy check` does and applied to every agent by a reload; \
                 refused whole, naming the problem, if any rule is invalid.",
                false,
            ),
            tool::<AuditLog>(
                "get_audit_log",
                "Events the kernel reported for governor's agents (opens, execs, connects, refused \
                 filesystem changes), with the result the agent saw, the decision and the rule: \
                 entries oldest first, count, filters_applied.",
                true,
            ),
            tool::<Compliance>(
                "get_compliance_status",
                "The compliance summary: total_agents, active_agents, suspended_agents, \
                 total_policies, recent_violations, compliance_score (100 x agents active in the \
                 last hour without an incident / agents active in the last hour), status \
                 (healthy, warning, critical), and optionally the incidents and agents.",
                true,
            ),
            tool::<ReportIncident>(
                "report_incident",
                "Record an incident against an agent (type, severity, description, evidence); \
                 auto_suspend also freezes the agent. Recorded with the caller.",
                false,
            ),
            tool::<AgentControl>(
                "suspend_agent",
                "Freeze every process of a running agent (its cgroup); recorded with the caller.",
                false,
            ),
            tool::<AgentControl>(
                "resume_agent",
                "Thaw a suspended agent; recorded with the caller (refused while the audit store fails).",
                false,
            ),
            tool::<AgentControl>(
                "kill_agent",
                "Kill every process of a running agent; recorded with the caller.",
                false,
            ),
            tool::<GetEvents>(
                "get_events",
                "The audit events recorded after an event id (or from now on), waiting up to \
                 wait_seconds for the first: events and last_id, the `after` of the next call. \
                 Nothing is skipped between calls.",
                true,
            ),
        ]
    }

    async fn dispatch(&self, name: &str, args: Value) -> Answer {
        match name {
            "validate_action" => self.validate(arguments(args)?).await,
            "register_agent" => self.register(arguments(args)?).await,
            "create_policy" => self.create_policy(arguments(args)?).await,
            "get_audit_log" => self.audit_log(arguments(args)?).await,
            "get_compliance_status" => self.compliance(arguments(args)?).await,
            "report_incident" => self.report(arguments(args)?).await,
            "suspend_agent" => self.act(service::Action::Suspend, arguments(args)?).await,
            "resume_agent" => self.act(service::Action::Resume, arguments(args)?).await,
            "kill_agent" => self.act(service::Action::Kill, arguments(args)?).await,
            "get_events" => self.events(arguments(args)?).await,
            other => Err(ToolError::new(format!("unknown tool '{other}'"))),
        }
    }

    async fn act(&self, action: service::Action, args: AgentControl) -> Answer {
        let name = match action {
            service::Action::Suspend => "suspend_agent",
            service::Action::Resume => "resume_agent",
            service::Action::Kill => "kill_agent",
        };
        let reason = args.reason.unwrap_or_else(|| format!("governor mcp {name}"));
        let call = Call::Act { agent: args.agent_id.clone(), action, reason: Some(reason) };
        let mut answer = self.ask(call, AGENT).await?;
        answer["success"] = Value::Bool(true);
        answer["agent_id"] = Value::String(args.agent_id);
        Ok(answer)
    }

    async fn validate(&self, args: ValidateAction) -> Answer {
        let call = Call::Validate(service::Validate {
            agent_id: Some(args.agent_id),
            trust: args.trust.map(Into::into),
            action_type: args.action_type,
            target: args.target,
            workspace: args.workspace,
            context: args.context,
        });
        let mut answer = self.ask(call, AGENT).await?;
        if let Some(parameters) = args.parameters {
            answer["parameters"] = parameters;
        }
        Ok(answer)
    }

    async fn register(&self, args: RegisterAgent) -> Answer {
        let reason = match (args.name, args.description) {
            (Some(name), Some(description)) => Some(format!("{name}: {description}")),
            (name, description) => name.or(description),
        };
        let spec = service::AgentSpec {
            agent_id: args.agent_id,
            trust: args.trust_level.map(Into::into),
            allowed_programs: args.allowed_tools,
            denied_programs: args.denied_tools,
            allowed_paths: args.allowed_paths,
            denied_paths: args.denied_paths,
            allowed_destinations: args.allowed_destinations,
            denied_destinations: args.denied_destinations,
            reason,
        };
        const NAMES: &[(&str, &str)] =
            &[("trust", "trust_level"), ("allowed_programs", "allowed_tools"), ("denied_programs", "denied_tools")];
        let mut answer = self.ask(Call::Register(spec), NAMES).await?;
        answer["success"] = Value::Bool(true);
        Ok(answer)
    }

    async fn create_policy(&self, args: CreatePolicy) -> Answer {
        let toml = rules_toml(&args)?;
        let draft = service::PolicyDraft { name: args.policy_id.clone(), toml };
        const NAMES: &[(&str, &str)] = &[("name", "policy_id"), ("toml", "rules")];
        let mut answer = self.ask(Call::CreatePolicy(draft), NAMES).await?;
        answer["success"] = Value::Bool(true);
        answer["policy_id"] = Value::String(args.policy_id);
        Ok(answer)
    }

    async fn report(&self, args: ReportIncident) -> Answer {
        let mut description = args.description;
        if let Some(evidence) = &args.evidence {
            description.push_str(&format!(" (evidence: {evidence})"));
        }
        if let Some(action) = &args.recommended_action {
            description.push_str(&format!(" (recommended: {action})"));
        }
        let report = service::IncidentReport {
            agent: args.agent_id.clone(),
            kind: args.incident_type,
            severity: args.severity.into(),
            description,
            auto_suspend: args.auto_suspend,
        };
        const NAMES: &[(&str, &str)] = &[("agent", "agent_id"), ("type", "incident_type")];
        let answer = self.ask(Call::Report(report), NAMES).await?;
        Ok(json!({
            "success": true,
            "agent_id": args.agent_id,
            "agent_suspended": answer["suspended"],
            "governor": answer,
        }))
    }

    async fn audit_log(&self, args: AuditLog) -> Answer {
        let time_range = args.time_range.clone().unwrap_or_else(|| "24h".to_owned());
        let filter = service::AuditFilter {
            agent: args.agent_id.clone(),
            kind: args.action_type.clone(),
            decision: decision(args.status.as_deref()),
            path: args.path.clone(),
            since: Some(time_range.clone()),
            until: None,
            limit: Some(args.limit.unwrap_or(100)),
            after: args.after,
        };
        let answer = self.ask(Call::Audit(filter), AUDIT).await?;
        let entries = answer["events"].clone();
        Ok(json!({
            "entries": entries,
            "count": entries.as_array().map_or(0, Vec::len),
            "time_range": time_range,
            "filters_applied": {
                "agent_id": args.agent_id, "action_type": args.action_type, "status": args.status,
                "path": args.path, "limit": args.limit.unwrap_or(100), "after": args.after,
            },
        }))
    }

    async fn compliance(&self, args: Compliance) -> Answer {
        let time_range = args.time_range.unwrap_or_else(|| "24h".to_owned());
        let mut answer = self.ask(Call::Status, &[]).await?;
        let score = answer["compliance_score"].as_f64().unwrap_or(100.0);
        answer["status"] = json!(if score >= 90.0 {
            "healthy"
        } else if score >= 70.0 {
            "warning"
        } else {
            "critical"
        });
        answer["time_range"] = json!(time_range);
        if args.include_incidents.unwrap_or(true) {
            let filter = service::IncidentFilter { agent: None, since: Some(time_range), limit: None };
            let incidents = self.ask(Call::Incidents(filter), &[("since", "time_range")]).await?;
            answer["incidents"] = incidents["incidents"].clone();
        }
        if args.include_agents.unwrap_or(true) {
            answer["agents"] = self.ask(Call::Agents, &[]).await?["agents"].clone();
        }
        Ok(answer)
    }

    /// The event stream, read until `limit` events, or until it has been idle for a moment
    /// once it has given some, or until `wait_seconds` pass without any.
    async fn events(&self, args: GetEvents) -> Answer {
        let limit = args.limit.unwrap_or(100);
        if limit == 0 || limit > service::MAX_LIMIT {
            return Err(ToolError::field("limit", format!("limit must be 1 to {}", service::MAX_LIMIT)));
        }
        let wait = args.wait_seconds.unwrap_or(5.0);
        if !(0.0..=60.0).contains(&wait) {
            return Err(ToolError::field("wait_seconds", "wait_seconds must be 0 to 60"));
        }
        let filter = service::EventFilter {
            agent: args.agent_id,
            kind: args.action_type,
            decision: decision(args.status.as_deref()),
            path: args.path,
            after: args.after,
        };
        let read = match &self.backend {
            Backend::Door(door) => Ok(door_events(door, filter, limit, wait).await),
            Backend::Socket(socket) => socket_events(socket.clone(), filter, limit, wait).await,
        };
        let (events, last) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => return Err(ToolError::from_service(error, AUDIT)),
            Err(error) => return Err(ToolError::new(format!("governor mcp: {error}"))),
        };
        let last_id = last.or(args.after);
        Ok(json!({ "events": events, "count": events.len(), "last_id": last_id }))
    }
}

type Read = Result<(Vec<Value>, Option<i64>), service::ApiError>;

/// `get_events` on the HTTP door: the service's stream, read here.
async fn door_events(door: &super::door::Door, filter: service::EventFilter, limit: u32, wait: f64) -> Read {
    let (sender, mut received) = tokio::sync::mpsc::channel(256);
    tokio::spawn(service::stream(door.store.clone(), filter, door.commits.clone(), sender));
    let mut events = Vec::new();
    let mut left = std::time::Duration::from_secs_f64(wait);
    while events.len() < limit as usize {
        match tokio::time::timeout(left, received.recv()).await {
            Ok(Some(Ok(event))) => events.push(service::to_value(&event)?),
            Ok(Some(Err(error))) => return Err(error),
            Ok(None) | Err(_) => break,
        }
        left = std::time::Duration::from_millis(200);
    }
    let last = events.last().and_then(|event| event["id"].as_i64());
    Ok((events, last))
}

/// `get_events` through the control socket: its streamed answer, read with timeouts.
async fn socket_events(
    socket: PathBuf,
    filter: service::EventFilter,
    limit: u32,
    wait: f64,
) -> Result<Read, tokio::task::JoinError> {
    {
        tokio::task::spawn_blocking(move || -> Read {
            let internal = |error: control::Error| service::ApiError::internal(error.to_string());
            let mut stream = control::Client::connect(&socket).map_err(internal)?;
            let timed_out = |error: &control::Error| {
                matches!(error, control::Error::Io(error)
                    if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
            };
            let timeout = |stream: &control::Client, wait: std::time::Duration| {
                stream.stream().set_read_timeout(Some(wait.max(std::time::Duration::from_millis(1))))
            };
            timeout(&stream, std::time::Duration::from_secs_f64(wait)).map_err(|error| internal(error.into()))?;
            // The first answer is the first event (or the refusal of the filter); then the
            // stream goes on until it has been idle for a moment.
            let mut events = Vec::new();
            let mut next = stream.call_api(&control::Request::Api(Call::Events(filter)));
            timeout(&stream, std::time::Duration::from_millis(200)).map_err(|error| internal(error.into()))?;
            loop {
                match next {
                    Ok(mut event) => {
                        if let Value::Object(map) = &mut event {
                            map.remove("ok");
                        }
                        events.push(event);
                    }
                    Err(control::ApiFailure::Refused(error)) => return Err(error),
                    Err(control::ApiFailure::Other(error)) if timed_out(&error) => break,
                    Err(control::ApiFailure::Other(error)) => return Err(internal(error)),
                }
                if events.len() >= limit as usize {
                    break;
                }
                next = match stream.next_api() {
                    Ok(Some(event)) => Ok(event),
                    Ok(None) => break,
                    Err(error) => Err(error),
                };
            }
            let last = events.last().and_then(|event| event["id"].as_i64());
            Ok((events, last))
        })
        .await
    }
}

impl ServerHandler for Governor {
    fn get_info(&self) -> ServerConfig {
        let mut config = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        config.server_info = Implementation::new("governor", env!("CARGO_PKG_VERSION"));
        config.instructions = Some(
            "governor runs AI agents in kernel-enforced sandboxes. Ask validate_action before acting; \
             read get_audit_log and get_compliance_status; suspend, resume or kill an agent by its id."
                .to_owned(),
        );
        config
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(Governor::tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        Governor::tools().into_iter().find(|tool| tool.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        // On the HTTP door, the caller the door admitted rides in the request's extensions.
        let caller = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<service::Caller>())
            .cloned();
        let this = Governor { caller, ..self.clone() };
        if self.get_tool(&request.name).is_none() {
            return Err(McpError::invalid_params(format!("unknown tool '{}'", request.name), None));
        }
        let args = Value::Object(request.arguments.unwrap_or_default());
        let result = match this.dispatch(&request.name, args).await {
            Ok(value) => CallToolResult::structured(value),
            Err(error) => {
                tracing::info!(tool = %request.name, error = %error.error, "tool refused");
                CallToolResult::structured_error(error.to_json())
            }
        };
        Ok(result.into())
    }
}

/// MCP's streamable HTTP transport for the HTTP door (mounted at `/mcp` behind the door's
/// admission, which puts the caller in each request's extensions).
pub fn http_service(
    door: super::door::Door,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    Governor,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    let config = rmcp::transport::streamable_http_server::StreamableHttpServerConfig::default();
    rmcp::transport::streamable_http_server::StreamableHttpService::new(
        move || Ok(Governor::on_door(door.clone())),
        Arc::default(),
        config,
    )
}

/// `governor mcp`: serves until the client closes stdin. Logs go to stderr (stdout is the
/// protocol's).
pub fn main(socket: PathBuf) -> Result<i32, (i32, String)> {
    let failed = |error: String| (crate::exit::FAILURE, format!("mcp: {error}"));
    // The daemon must answer before the client is told there are tools to call.
    let mut client = control::Client::connect(&socket).map_err(|error| (crate::exit::USAGE, error.to_string()))?;
    client.hello().map_err(|error| (crate::exit::USAGE, error.to_string()))?;
    drop(client);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| failed(error.to_string()))?;
    runtime.block_on(async {
        let server = Arc::new(Governor::new(socket));
        let running =
            (*server).clone().serve(rmcp::transport::stdio()).await.map_err(|error| failed(error.to_string()))?;
        running.waiting().await.map_err(|error| failed(error.to_string()))?;
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_name_their_field() {
        let missing = arguments::<AgentControl>(json!({})).err();
        assert_eq!(missing.and_then(|error| error.field), Some("agent_id".into()));
        let wrong = arguments::<AgentControl>(json!({ "agent_id": 3 })).err();
        let wrong = wrong.unwrap_or_else(|| panic!("a number is not an agent id"));
        assert_eq!(wrong.field.as_deref(), Some("agent_id"));
        assert!(wrong.error.starts_with("agent_id: invalid type"), "{}", wrong.error);
        let unknown = arguments::<AgentControl>(json!({ "agent_id": "a", "agnet": 1 })).err();
        assert_eq!(unknown.and_then(|error| error.field), Some("agnet".into()));
        let limit = arguments::<AuditLog>(json!({ "limit": "ten" })).err();
        assert_eq!(limit.and_then(|error| error.field), Some("limit".into()));
    }

    #[test]
    fn every_tool_has_an_object_schema() {
        let tools = Governor::tools();
        assert!(tools.iter().all(|tool| tool.input_schema.get("type") == Some(&json!("object"))));
        let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
        assert!(names.contains(&"get_audit_log") && names.contains(&"kill_agent"), "{names:?}");
    }
}
