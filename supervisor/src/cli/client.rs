//! The CLI's commands that ask the daemon's service layer over the control socket:
//! `governor events`, `validate`, `agents`, `incident report`, `policy add`, and the
//! registration `governor run --agent-id` applies. Each parses its arguments into a
//! `service::Call` and renders the answer; the daemon decides.

use std::path::{Path, PathBuf};

use crate::{
    daemon::control,
    exit,
    output::escape,
    policy::Trust,
    service::{self, ApiError, Call, ErrorKind},
};

type Failure = (i32, String);

/// A refusal as the CLI reports it: bad input (and an unknown agent or rule) exit 2.
fn failed(error: ApiError) -> Failure {
    let code = match error.kind {
        ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::Conflict => exit::USAGE,
        _ => exit::FAILURE,
    };
    let message = match &error.field {
        Some(field) if !error.error.contains(field.as_str()) => format!("{field}: {}", error.error),
        _ => error.error,
    };
    (code, message)
}

fn connect(socket: Option<&Path>) -> Result<control::Client, Failure> {
    control::Client::connect(&control::socket_path(socket)).map_err(|error| (exit::USAGE, error.to_string()))
}

fn ask(socket: Option<&Path>, call: Call) -> Result<serde_json::Value, Failure> {
    let mut client = connect(socket)?;
    client.ask(call).map_err(failed)
}

fn print_json(value: &serde_json::Value) {
    let mut value = value.clone();
    if let serde_json::Value::Object(map) = &mut value {
        map.remove("ok");
    }
    println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
}

/// How `governor events` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    /// One line per event: id, time, agent, kind, decision, target, rule.
    Compact,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Events {
    /// Keep printing events as they are recorded.
    #[arg(long)]
    pub follow: bool,
    #[arg(long, value_name = "ID")]
    pub agent: Option<String>,
    /// exec, open, connect, ... (as `governor audit query --kind`).
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    #[arg(long, value_name = "DECISION")]
    pub decision: Option<String>,
    /// A glob on the path.
    #[arg(long, value_name = "GLOB")]
    pub path: Option<String>,
    /// Start after this event id [default: with --follow, the next event recorded; else
    /// the first].
    #[arg(long, value_name = "ID")]
    pub after: Option<i64>,
    #[arg(long, value_enum, default_value = "compact")]
    pub format: EventFormat,
}

fn print_event(event: &service::Event, format: EventFormat) -> bool {
    use std::io::Write as _;
    let line = match format {
        EventFormat::Json => crate::output::json_text(serde_json::to_string(event).unwrap_or_default()),
        EventFormat::Compact => {
            let target = if event.destination.is_empty() { &event.path } else { &event.destination };
            let time = humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_nanos(u64::try_from(event.time).unwrap_or(0)),
            );
            format!(
                "{} {time} {} {} {} {}{}",
                event.id,
                escape(&event.agent),
                event.kind,
                event.decision,
                escape(target),
                if event.rule.is_empty() { String::new() } else { format!(" rule={}", escape(&event.rule)) }
            )
        }
    };
    // A reader that goes away (`| head`) ends the output quietly.
    writeln!(std::io::stdout().lock(), "{line}").is_ok()
}

/// `governor events [--follow]`.
pub fn events(socket: Option<&Path>, args: &Events) -> Result<i32, Failure> {
    let filter = service::EventFilter {
        agent: args.agent.clone(),
        kind: args.kind.clone(),
        decision: args.decision.clone(),
        path: args.path.clone(),
        after: args.after,
    };
    if !args.follow {
        let mut after = args.after.unwrap_or(0);
        loop {
            let audit = filter.audit(after, service::MAX_LIMIT);
            let value = ask(socket, Call::Audit(audit))?;
            let events: service::Events =
                serde_json::from_value(value).map_err(|error| (exit::FAILURE, error.to_string()))?;
            let count = events.events.len();
            for event in &events.events {
                after = event.id;
                if !print_event(event, args.format) {
                    return Ok(0);
                }
            }
            if count < service::MAX_LIMIT as usize {
                return Ok(0);
            }
        }
    }
    let mut client = connect(socket)?;
    let request = control::Request::Api(Call::Events(filter));
    let first = client.call_api(&request);
    let mut next = Some(first);
    loop {
        let value = match next.take() {
            Some(answer) => answer.map(Some),
            None => client.next_api(),
        };
        let value = match value {
            Ok(Some(value)) => value,
            Ok(None) => return Err((exit::FAILURE, "governor daemon: the stream ended (the daemon stopped)".into())),
            Err(control::ApiFailure::Refused(error)) => return Err(failed(error)),
            Err(control::ApiFailure::Other(error)) => return Err((exit::FAILURE, error.to_string())),
        };
        let event: service::Event =
            serde_json::from_value(value).map_err(|error| (exit::FAILURE, format!("malformed event: {error}")))?;
        if !print_event(&event, args.format) {
            return Ok(0);
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Validate {
    /// The agent whose ring decides (supervised, registered or in the store).
    #[arg(long, value_name = "ID")]
    pub agent_id: Option<String>,
    /// The ring, when no agent is named (or it is unknown) [default: low].
    #[arg(long, value_parser = crate::parse_trust)]
    pub trust: Option<Trust>,
    /// open, read, write, exec or connect.
    #[arg(value_enum)]
    pub action_type: service::ActionType,
    /// A path, a program or HOST:PORT.
    pub target: String,
    /// The agent's workspace [default: none].
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: TextOrJson,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TextOrJson {
    Text,
    Json,
}

/// `governor validate`: exit 0 when allowed, 1 when refused.
pub fn validate(socket: Option<&Path>, args: &Validate) -> Result<i32, Failure> {
    let call = Call::Validate(service::Validate {
        agent_id: args.agent_id.clone(),
        trust: args.trust,
        action_type: args.action_type,
        target: args.target.clone(),
        workspace: args.workspace.as_ref().map(|dir| std::path::absolute(dir).unwrap_or_else(|_| dir.clone())),
        context: None,
    });
    let value = ask(socket, call)?;
    let answer: service::Validation =
        serde_json::from_value(value.clone()).map_err(|error| (exit::FAILURE, error.to_string()))?;
    match args.format {
        TextOrJson::Json => print_json(&value),
        TextOrJson::Text => {
            println!(
                "{} {} in ring {}: {}",
                service::ActionType::name(args.action_type),
                escape(&args.target),
                answer.trust,
                if answer.allowed { "allow" } else { "deny" }
            );
            println!(
                "  decided by: {}{}: {}",
                answer.layer,
                answer.rule.as_deref().map(|rule| format!(" ({})", escape(rule))).unwrap_or_default(),
                escape(&answer.reason)
            );
            for note in &answer.notes {
                println!("  note: {}", escape(note));
            }
        }
    }
    Ok(if answer.allowed { 0 } else { 1 })
}

#[derive(Debug, clap::Subcommand)]
pub enum Agents {
    /// Every agent the daemon knows (JSON).
    List,
    /// One agent: ring, state, counts, processes, registration (JSON).
    Show {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Register an agent ahead of its run: `governor run --agent-id ID` then runs it in
    /// this ring with these additions (through the daemon; root only).
    Register(Register),
}

#[derive(Debug, clap::Args)]
pub struct Register {
    #[arg(value_name = "ID")]
    pub id: String,
    #[arg(long, default_value = "low", value_parser = crate::parse_trust)]
    pub trust: Trust,
    /// A program it may run (repeatable).
    #[arg(long = "allow-program", value_name = "PROGRAM")]
    pub allowed_programs: Vec<String>,
    /// A program it may not run, whatever its ring allows (repeatable).
    #[arg(long = "deny-program", value_name = "PROGRAM")]
    pub denied_programs: Vec<String>,
    /// A path it may read (repeatable).
    #[arg(long = "allow-path", value_name = "PATH")]
    pub allowed_paths: Vec<String>,
    /// A path it may not read (repeatable).
    #[arg(long = "deny-path", value_name = "PATH")]
    pub denied_paths: Vec<String>,
    /// HOST:PORT it may connect to over TCP (repeatable).
    #[arg(long = "allow-destination", value_name = "HOST:PORT")]
    pub allowed_destinations: Vec<String>,
    /// ADDR[/PREFIX][:PORT] it may not reach (repeatable).
    #[arg(long = "deny-destination", value_name = "ADDR")]
    pub denied_destinations: Vec<String>,
    #[arg(long)]
    pub reason: Option<String>,
}

pub fn agents(socket: Option<&Path>, command: Agents) -> Result<i32, Failure> {
    let call = match command {
        Agents::List => Call::Agents,
        Agents::Show { id } => Call::Agent { id },
        Agents::Register(register) => Call::Register(service::AgentSpec {
            agent_id: register.id,
            trust: Some(register.trust),
            allowed_programs: register.allowed_programs,
            denied_programs: register.denied_programs,
            allowed_paths: register.allowed_paths,
            denied_paths: register.denied_paths,
            allowed_destinations: register.allowed_destinations,
            denied_destinations: register.denied_destinations,
            reason: register.reason,
        }),
    };
    print_json(&ask(socket, call)?);
    Ok(0)
}

#[derive(Debug, clap::Args)]
pub struct Report {
    #[arg(long, value_name = "ID")]
    pub agent: String,
    /// What kind of incident (prompt-injection, data-exfiltration, ...).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: String,
    #[arg(long, value_enum)]
    pub severity: Severity,
    #[arg(long)]
    pub description: String,
    /// Freeze the agent as well.
    #[arg(long)]
    pub auto_suspend: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// `governor incident report`.
pub fn report(socket: Option<&Path>, args: Report) -> Result<i32, Failure> {
    let severity = match args.severity {
        Severity::Low => crate::engine::Severity::Low,
        Severity::Medium => crate::engine::Severity::Medium,
        Severity::High => crate::engine::Severity::High,
        Severity::Critical => crate::engine::Severity::Critical,
    };
    let call = Call::Report(service::IncidentReport {
        agent: args.agent.clone(),
        kind: args.kind,
        severity,
        description: args.description,
        auto_suspend: args.auto_suspend,
    });
    let reported: service::Reported =
        serde_json::from_value(ask(socket, call)?).map_err(|error| (exit::FAILURE, error.to_string()))?;
    println!(
        "incident recorded for {}{}",
        escape(&args.agent),
        if reported.suspended { "; agent suspended" } else { "" }
    );
    Ok(0)
}

/// `governor policy add FILE [--name NAME]`: the daemon checks it, writes it to its rules
/// directory and reloads; a refusal names the file, line and column.
pub fn policy_add(socket: Option<&Path>, file: &Path, name: Option<String>) -> Result<i32, Failure> {
    let toml = std::fs::read_to_string(file).map_err(|error| (exit::USAGE, format!("{}: {error}", file.display())))?;
    let name =
        name.unwrap_or_else(|| file.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default());
    let value = ask(socket, Call::CreatePolicy(service::PolicyDraft { name, toml: toml.clone() }));
    // The daemon names its own copy; the user's file is the one to fix.
    let value = value.map_err(|(code, message)| (code, relocate(&message, file)))?;
    let created: service::PolicyCreated =
        serde_json::from_value(value).map_err(|error| (exit::FAILURE, error.to_string()))?;
    println!(
        "policy added: {} ({}); {} rules in force",
        created.file.display(),
        created.rules.join(", "),
        created.total_policies
    );
    Ok(0)
}

/// A refusal naming `rules.d/NAME.toml:L:C` names the user's FILE:L:C instead.
fn relocate(message: &str, file: &Path) -> String {
    let Some(at) = message.find("rules.d/") else { return message.to_owned() };
    let rest = &message[at..];
    let Some(end) = rest.find(".toml") else { return message.to_owned() };
    let start = message[..at].rfind(|c: char| c.is_whitespace()).map_or(0, |space| space + 1);
    format!("{}{}{}", &message[..start], file.display(), &rest[end + ".toml".len()..])
}

/// `governor run --agent-id ID` through a daemon that has ID registered: the registration's
/// overlay is added to the run's `--policy` files and its trust is the run's (a `--trust`
/// given that disagrees is refused). An unknown id runs as asked. The registration is read
/// where the daemon keeps it (launching through the daemon is root's, as is that file): a
/// launch does not wait for a read of the whole store.
pub fn apply_registration(
    hello: &control::Hello,
    request: &mut crate::launch::Request,
    trust_given: bool,
) -> Result<(), Failure> {
    let Some(agent) = request.agent_id.clone() else { return Ok(()) };
    let dir = service::registered_dir(&hello.audit_db);
    let Some(spec) = service::registrations(&dir).into_iter().find(|spec| spec.agent_id == agent) else {
        return Ok(());
    };
    let trust = spec.trust.unwrap_or(Trust::Low);
    if trust_given && request.trust != trust {
        return Err((
            exit::USAGE,
            format!("agent '{agent}' is registered at trust {trust}; --trust {} disagrees", request.trust),
        ));
    }
    request.trust = trust;
    request.policies.push(service::registered_overlay(&hello.audit_db, &agent));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_users_file() {
        let message = "/etc/governor/rings/rules.d/extra.toml:3:9: invalid type";
        assert_eq!(relocate(message, Path::new("mine.toml")), "mine.toml:3:9: invalid type");
        assert_eq!(relocate("other problem", Path::new("mine.toml")), "other problem");
    }
}
