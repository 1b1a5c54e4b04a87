//! `governor`: runs AI agents inside kernel-enforced sandboxes.

use std::{path::PathBuf, process::ExitCode};

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};

use governor::{
    audit,
    cli::{act, client, read, run, show},
    daemon::{self, control, mcp},
    exit, launch, parse_trust, policy,
    policy::Trust,
    say,
    service::{explain, records},
};

#[derive(Parser)]
#[command(name = "governor", version, about = "Runs AI agents inside kernel-enforced sandboxes")]
struct Cli {
    /// Directory with the ring files (low.toml ... admin.toml, secrets.toml) [default:
    /// /etc/governor/rings when it exists, else the rings built into this binary]
    #[arg(long, global = true, env = "GOVERNOR_RINGS", value_name = "DIR")]
    rings: Option<PathBuf>,
    /// The audit store [default: /var/lib/governor/audit.db for root, else
    /// $XDG_STATE_HOME/governor/audit.db]
    #[arg(long, global = true, env = "GOVERNOR_AUDIT_DB", value_name = "PATH")]
    audit_db: Option<PathBuf>,
    /// The governor daemon's control socket [default: /run/governor/governor.sock]
    #[arg(long, global = true, env = "GOVERNOR_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run CMD confined by a trust ring, in its own cgroup (supervised by the governor daemon
    /// when one runs, else by this process).
    Run(launch::Request),
    /// Supervise the agents of every `governor run` on this machine: load the probes once,
    /// own the audit store and the policy engine, listen on the control socket.
    Daemon(daemon::Options),
    /// Show and check policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Report what this kernel supports for each ring.
    Check,
    /// Say whether a ring lets an agent read, write or execute PATH, run PROGRAM or connect to
    /// HOST:PORT, which layer decides and why, and the policy lines that would allow it.
    /// Exit 0 when allowed, 1 when refused.
    Explain {
        #[arg(long, default_value = "low", value_parser = parse_trust, conflicts_with = "agent")]
        trust: Trust,
        /// Explain with this agent's ring and policy files: its latest run's (audit store)
        /// and its registration with the daemon.
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
        #[arg(long = "policy", value_name = "FILE")]
        policies: Vec<PathBuf>,
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
        /// What the agent would do [default: read for a path, exec for a program, connect for
        /// HOST:PORT].
        #[arg(long, value_enum)]
        op: Option<explain::Op>,
        /// PATH, HOST:PORT or PROGRAM.
        target: String,
    },
    /// Read the audit store.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Agents with their trust, state and counts, and a compliance summary. The compliance
    /// score is 100 × (agents active in the last hour that raised no incident in it) / (agents
    /// active in the last hour), 100 when none was.
    Status {
        /// Also list agents that ended more than an hour ago.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: records::Format,
    },
    /// Serve the Model Context Protocol on stdio (for LLM orchestrators and MCP clients):
    /// tools that validate actions, read the audit store and control agents through the
    /// governor daemon at --socket.
    Mcp,
    /// Freeze a running agent (its whole cgroup).
    Suspend(act::Control),
    /// Thaw a suspended agent.
    Resume(act::Control),
    /// Kill every process of a running agent.
    Kill(act::Control),
    /// Audit events from the daemon, as they are recorded with --follow (resumable with
    /// --after ID).
    Events(client::Events),
    /// Ask the daemon whether an agent (or a ring) may open, read, write, exec or connect to
    /// TARGET now: which layer and rule decides, and why. Exit 0 when allowed, 1 when not.
    Validate(client::Validate),
    /// The daemon's agents; register one ahead of its run.
    Agents {
        #[command(subcommand)]
        command: client::Agents,
    },
    /// Incidents reported by hand.
    Incident {
        #[command(subcommand)]
        command: IncidentCommand,
    },
    /// The process `governor run` starts beside its agent, which kills the agent if governor
    /// ends without cleaning up (not for people).
    #[command(hide = true)]
    Warden(governor::warden::Args),
}

#[derive(Subcommand)]
enum IncidentCommand {
    /// Record an incident for an agent (--auto-suspend freezes it).
    Report(client::Report),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Show the effective rules of a ring, with --policy files applied.
    Show {
        #[arg(long, default_value = "low", value_parser = parse_trust)]
        trust: Trust,
        #[arg(long = "policy", value_name = "FILE")]
        policies: Vec<PathBuf>,
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Validate ring, secrets or overlay files.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Make the governor daemon load the policy again (like SIGHUP); an invalid policy is
    /// refused and the one in force stays.
    Reload,
    /// Add FILE's [[rule]]s to the daemon's rules directory (rules.d/NAME.toml) and reload;
    /// a file that does not check is refused with its line and column, nothing applied.
    Add {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The drop-in's name [default: FILE's name].
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Events, filtered.
    Query(records::Query),
    /// Check the hash chains: exit 0 when they hold, 1 naming the first broken row.
    Verify,
    /// Remove the oldest rows beyond an age or a size; each pruned table gets a checkpoint
    /// row, so `verify` still holds (the daemon prunes by itself with audit_max_age and
    /// audit_max_size in its settings).
    Prune(records::Prune),
    /// What was done to agents (start, exit, suspend, resume, kill): when, by whom, why.
    Actions(records::Listing),
    /// Incidents the policy engine raised.
    Incidents(records::Listing),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let parsed = Cli::command().try_get_matches().and_then(|matches| {
        // A registered agent's ring is its registration's unless --trust says otherwise.
        let trust_given = matches.subcommand_matches("run").and_then(|run| run.value_source("trust"))
            == Some(clap::parser::ValueSource::CommandLine);
        Cli::from_arg_matches(&matches).map(|cli| (cli, trust_given))
    });
    let (cli, trust_given) = match parsed {
        Ok(parsed) => parsed,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            // One line naming the problem, exit 2, like every other bad input.
            let rendered = error.render().to_string();
            let mut lines = rendered.lines().map(str::trim).filter(|line| !line.is_empty());
            let mut line = lines.next().unwrap_or("invalid arguments").trim_start_matches("error: ").to_owned();
            // "the following required arguments were not provided:" names them on the next line.
            if line.ends_with(':')
                && let Some(next) = lines.next()
            {
                line = format!("{line} {next}");
            }
            say!("governor: {line}");
            return ExitCode::from(2);
        }
    };
    let code = match dispatch(cli, trust_given) {
        Ok(code) => code,
        Err((code, message)) => {
            say!("governor: {message}");
            code
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn dispatch(cli: Cli, trust_given: bool) -> Result<i32, (i32, String)> {
    match cli.command {
        Command::Warden(args) => governor::warden::main(args),
        Command::Run(mut request) => {
            request.rings = cli.rings;
            request.audit_db = cli.audit_db.unwrap_or_else(audit::default_path);
            request.socket = cli.socket;
            let failed = |error: run::Error| (error.exit_code(), error.to_string());
            let daemon = run::find_daemon(&request).map_err(failed)?;
            if let Some((_, hello)) = &daemon {
                client::apply_registration(hello, &mut request, trust_given)?;
                request.daemon_decides = true;
            }
            let prepared = launch::prepare(request).map_err(|error| failed(error.into()))?;
            run::run(prepared, daemon).map_err(failed)
        }
        Command::Daemon(options) => {
            daemon::init_logging();
            let settings = daemon::Settings {
                socket: control::socket_path(cli.socket.as_deref()),
                audit_db: cli.audit_db.unwrap_or_else(audit::default_path),
                rings: cli.rings,
                options,
            };
            daemon::daemon(settings)
        }
        Command::Policy { command: PolicyCommand::Reload } => {
            let mut client = control::Client::connect(&control::socket_path(cli.socket.as_deref()))
                .map_err(|error| (exit::USAGE, error.to_string()))?;
            let answer = client.call(&control::Request::Reload).map_err(|error| (exit::FAILURE, error.to_string()))?;
            println!("policy reloaded: {} rules", answer["rules"]);
            Ok(0)
        }
        Command::Events(events) => client::events(cli.socket.as_deref(), &events),
        Command::Validate(validate) => client::validate(cli.socket.as_deref(), &validate),
        Command::Agents { command } => client::agents(cli.socket.as_deref(), command),
        Command::Incident { command: IncidentCommand::Report(report) } => client::report(cli.socket.as_deref(), report),
        Command::Policy { command: PolicyCommand::Add { file, name } } => {
            client::policy_add(cli.socket.as_deref(), &file, name)
        }
        Command::Explain { trust, agent, policies, workspace, op, target } => {
            let mut request = launch::Request::dry(cli.rings.as_deref(), trust, &policies, workspace);
            request.audit_db = cli.audit_db.unwrap_or_else(audit::default_path);
            explain::main(request, &target, op, agent.as_deref())
        }
        Command::Policy { command: PolicyCommand::Show { trust, policies, workspace, format } } => {
            show::policy_show(cli.rings.as_deref(), trust, &policies, workspace, matches!(format, Format::Json))
        }
        Command::Policy { command: PolicyCommand::Check { files } } => {
            let mut failed = false;
            for file in &files {
                match policy::check_file(file) {
                    Ok(kind) => println!("{}: ok ({kind})", file.display()),
                    Err(error) => {
                        say!("governor: {error}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { exit::USAGE } else { 0 })
        }
        Command::Check => Ok(show::check(cli.rings.as_deref())),
        Command::Audit { command } => {
            let read = match command {
                AuditCommand::Verify => {
                    let store = cli.audit_db.unwrap_or_else(audit::default_path);
                    return records::verify(&store);
                }
                AuditCommand::Prune(prune) => {
                    let store = cli.audit_db.unwrap_or_else(audit::default_path);
                    return records::prune(&store, &prune);
                }
                AuditCommand::Query(query) => control::Read::Query(query),
                AuditCommand::Incidents(listing) => control::Read::Incidents(listing),
                AuditCommand::Actions(listing) => control::Read::Actions(listing),
            };
            let mut daemon = match cli.audit_db {
                Some(_) => None,
                None => read::discover(cli.socket.as_deref())?,
            };
            read::read_store(cli.audit_db, daemon.as_mut().map(|(client, _)| client), cli.rings.as_deref(), read)
        }
        Command::Status { all, format } => {
            // The daemon is named under the table even when --audit-db reads another store.
            let mut daemon = match cli.audit_db {
                Some(_) => control::discover(cli.socket.as_deref()).ok().flatten(),
                None => read::discover(cli.socket.as_deref())?,
            };
            let read = control::Read::Status { all, format };
            let code =
                read::read_store(cli.audit_db, daemon.as_mut().map(|(client, _)| client), cli.rings.as_deref(), read)?;
            if matches!(format, records::Format::Table)
                && let Some((client, hello)) = daemon.as_mut()
            {
                let supervised = client.call(&control::Request::Agents).ok();
                let count = supervised.as_ref().and_then(|answer| answer["agents"].as_array()).map_or(0, Vec::len);
                println!(
                    "daemon: pid {}, {} probes, {count} agents supervised, audit store {}, metrics {}",
                    hello.pid,
                    hello.backend,
                    hello.audit_db.display(),
                    hello.metrics.as_deref().unwrap_or("off")
                );
            }
            Ok(code)
        }
        Command::Mcp => mcp::main(control::socket_path(cli.socket.as_deref())),
        Command::Suspend(request) => act::act(cli.audit_db, cli.socket.as_deref(), &request, control::Act::Suspend),
        Command::Resume(request) => act::act(cli.audit_db, cli.socket.as_deref(), &request, control::Act::Resume),
        Command::Kill(request) => act::act(cli.audit_db, cli.socket.as_deref(), &request, control::Act::Kill),
    }
}
