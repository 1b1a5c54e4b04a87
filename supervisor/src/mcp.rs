//! `governor mcp`: the Model Context Protocol door. Serves MCP on stdio (the `rmcp` SDK) as
//! a client of the daemon's control socket: every tool is one daemon operation, so what an
//! LLM orchestrator is told is what `governor status`, `audit query` and `suspend` say, and
//! every state-changing call is recorded by the daemon with the caller it sees on the socket.
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

use crate::{
    audit_cli,
    control::{self, Act, Read, Request},
};

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

/// The daemon's answer to `request`, on a connection of its own (the control socket is
/// blocking; tools run on tokio's blocking pool).
async fn call(socket: &std::path::Path, request: Request) -> Result<Value, ToolError> {
    let socket = socket.to_path_buf();
    let joined = tokio::task::spawn_blocking(move || {
        let mut client = control::Client::connect(&socket)?;
        client.call(&request)
    })
    .await;
    match joined {
        Ok(Ok(mut value)) => {
            if let Value::Object(map) = &mut value {
                map.remove("ok");
            }
            Ok(value)
        }
        Ok(Err(control::Error::Refused(message))) => Err(refused(&message)),
        Ok(Err(error)) => Err(ToolError::new(error.to_string())),
        Err(error) => Err(ToolError::new(format!("governor mcp: {error}"))),
    }
}

/// A refusal of the daemon's, with the argument it names when it names one.
fn refused(message: &str) -> ToolError {
    if message.starts_with("unknown agent") || message.contains("agent id") {
        ToolError::field("agent_id", message)
    } else {
        ToolError::new(message)
    }
}

/// A read of the daemon's store, in JSON: the rows (`jsonl`) or the document (`json`).
async fn read(socket: &std::path::Path, read: Read, field_of_refusal: Option<&str>) -> Answer {
    let answer = call(socket, Request::Read(read)).await?;
    if let Some(error) = answer["error"].as_str().filter(|error| !error.is_empty()) {
        let field = if error.starts_with("unknown agent") { Some("agent_id") } else { field_of_refusal };
        return Err(ToolError { error: error.to_owned(), field: field.map(str::to_owned) });
    }
    Ok(Value::String(answer["output"].as_str().unwrap_or("").to_owned()))
}

fn lines(output: &Value) -> Result<Vec<Value>, ToolError> {
    output
        .as_str()
        .unwrap_or("")
        .lines()
        .map(|line| serde_json::from_str(line).map_err(|error| ToolError::new(format!("governor daemon: {error}"))))
        .collect()
}

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
    /// How far back: a duration (1h, 24h, 7d, 30m) [default: 24h].
    #[serde(default)]
    pub time_range: Option<String>,
    /// allowed or denied (or a decision: allow, deny, audit, suspend, kill).
    #[serde(default)]
    pub status: Option<String>,
    /// A glob on the path (* ? [...]).
    #[serde(default)]
    pub path: Option<String>,
    /// At most this many entries [default: 100].
    #[serde(default)]
    pub limit: Option<u32>,
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

fn parse_value<T: clap::ValueEnum>(field: &str, text: &str) -> Result<T, ToolError> {
    T::from_str(text, true).map_err(|_| {
        let names: Vec<String> =
            T::value_variants().iter().filter_map(|v| v.to_possible_value()).map(|v| v.get_name().to_owned()).collect();
        ToolError::field(field, format!("{field}: '{text}' is not one of {}", names.join(", ")))
    })
}

fn since(field: &str, text: &str) -> Result<audit_cli::When, ToolError> {
    audit_cli::parse_when(text).map_err(|error| ToolError::field(field, format!("{field}: {error}")))
}

/// The MCP server: stateless but for where the daemon listens.
#[derive(Clone)]
pub struct Governor {
    socket: PathBuf,
}

impl Governor {
    pub fn new(socket: PathBuf) -> Governor {
        Governor { socket }
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
            tool::<AuditLog>(
                "get_audit_log",
                "Events the kernel reported for governor's agents (opens, execs, connects, refused \
                 filesystem changes), with the decision and the rule: entries oldest first, count, \
                 filters_applied.",
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
        ]
    }

    async fn dispatch(&self, name: &str, args: Value) -> Answer {
        match name {
            "get_audit_log" => self.audit_log(arguments(args)?).await,
            "get_compliance_status" => self.compliance(arguments(args)?).await,
            "suspend_agent" => self.act(Act::Suspend, arguments(args)?).await,
            "resume_agent" => self.act(Act::Resume, arguments(args)?).await,
            "kill_agent" => self.act(Act::Kill, arguments(args)?).await,
            other => Err(ToolError::new(format!("unknown tool '{other}'"))),
        }
    }

    async fn act(&self, what: Act, args: AgentControl) -> Answer {
        let reason = args.reason.unwrap_or_else(|| format!("governor mcp {}_agent", what.name()));
        crate::run::validate_agent_id(&args.agent_id)
            .map_err(|error| ToolError::field("agent_id", format!("agent_id: {error}")))?;
        call(&self.socket, what.request(args.agent_id.clone(), reason)).await?;
        Ok(json!({ "success": true, "agent_id": args.agent_id, "state": what.done() }))
    }

    async fn audit_log(&self, args: AuditLog) -> Answer {
        let time_range = args.time_range.clone().unwrap_or_else(|| "24h".to_owned());
        let decision = match args.status.as_deref() {
            None | Some("") => None,
            Some("allowed") => Some(audit_cli::Decision::Allow),
            Some("denied") => Some(audit_cli::Decision::Deny),
            Some(other) => Some(parse_value("status", other)?),
        };
        let query = audit_cli::Query {
            agent: args.agent_id.clone(),
            kind: args.action_type.as_deref().map(|kind| parse_value("action_type", kind)).transpose()?,
            decision,
            since: Some(since("time_range", &time_range)?),
            until: None,
            path: args.path.clone(),
            limit: args.limit.unwrap_or(100),
            after: None,
            format: audit_cli::Format::Jsonl,
        };
        let entries = lines(&read(&self.socket, Read::Query(query), None).await?)?;
        Ok(json!({
            "entries": entries,
            "count": entries.len(),
            "time_range": time_range,
            "filters_applied": {
                "agent_id": args.agent_id, "action_type": args.action_type, "status": args.status,
                "path": args.path, "limit": args.limit.unwrap_or(100),
            },
        }))
    }

    async fn compliance(&self, args: Compliance) -> Answer {
        let time_range = args.time_range.unwrap_or_else(|| "24h".to_owned());
        let from = since("time_range", &time_range)?;
        let status = read(&self.socket, Read::Status { all: true, format: audit_cli::Format::Json }, None).await?;
        let status: Value = serde_json::from_str(status.as_str().unwrap_or(""))
            .map_err(|error| ToolError::new(format!("governor daemon: {error}")))?;
        let summary = &status["compliance"];
        let score = summary["compliance_score"].as_f64().unwrap_or(100.0);
        let mut answer = json!({
            "status": if score >= 90.0 { "healthy" } else if score >= 70.0 { "warning" } else { "critical" },
            "total_agents": summary["agents_total"],
            "active_agents": summary["agents_active"],
            "suspended_agents": summary["agents_suspended"],
            "total_policies": summary["rules_loaded"],
            "recent_violations": summary["violations_last_hour"],
            "compliance_score": score,
            "governor": summary,
            "time_range": time_range,
        });
        if args.include_incidents.unwrap_or(true) {
            let listing = audit_cli::Listing { agent: None, since: Some(from), format: audit_cli::Format::Jsonl };
            answer["incidents"] = Value::Array(lines(&read(&self.socket, Read::Incidents(listing), None).await?)?);
        }
        if args.include_agents.unwrap_or(true) {
            answer["agents"] = status["agents"].clone();
        }
        Ok(answer)
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
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if self.get_tool(&request.name).is_none() {
            return Err(McpError::invalid_params(format!("unknown tool '{}'", request.name), None));
        }
        let args = Value::Object(request.arguments.unwrap_or_default());
        let result = match self.dispatch(&request.name, args).await {
            Ok(value) => CallToolResult::structured(value),
            Err(error) => {
                tracing::info!(tool = %request.name, error = %error.error, "tool refused");
                CallToolResult::structured_error(error.to_json())
            }
        };
        Ok(result.into())
    }
}

/// `governor mcp`: serves until the client closes stdin. Logs go to stderr (stdout is the
/// protocol's).
pub fn main(socket: PathBuf) -> Result<i32, (i32, String)> {
    let failed = |error: String| (crate::run::exit::FAILURE, format!("mcp: {error}"));
    // The daemon must answer before the client is told there are tools to call.
    let mut client = control::Client::connect(&socket).map_err(|error| (crate::run::exit::USAGE, error.to_string()))?;
    client.hello().map_err(|error| (crate::run::exit::USAGE, error.to_string()))?;
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
