//! `governor suspend|resume|kill AGENT`: through the daemon when it supervises the agent, else
//! directly on the agent's cgroup, recorded in the audit store either way.

use std::path::PathBuf;

use crate::{audit, cgroup, daemon::control, exit, service::records};

use super::read::discover;

/// `governor suspend|resume|kill`'s arguments.
#[derive(clap::Args)]
pub struct Control {
    #[arg(value_name = "AGENT")]
    pub agent: String,
    /// Why, for the audit store.
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// `governor suspend|resume|kill AGENT`: through the daemon when it supervises the agent
/// (it records the caller it sees on the socket), else directly on the cgroup.
pub fn act(
    store: Option<PathBuf>,
    socket: Option<&std::path::Path>,
    request: &Control,
    what: control::Act,
) -> Result<i32, (i32, String)> {
    let Some((mut client, _)) = discover(socket)? else {
        return directly(store, request, what);
    };
    match client.call(&what.request(request.agent.clone(), request.reason.clone())) {
        Ok(_) => {
            println!("agent {} {}", request.agent, what.done());
            Ok(0)
        }
        // Not one of the daemon's (a standalone run): act on the cgroup directly.
        Err(control::Error::Refused(message)) if message.starts_with("unknown agent") => directly(store, request, what),
        Err(error) => Err((exit::FAILURE, error.to_string())),
    }
}

/// `governor suspend|resume|kill AGENT`: finds the running agent by its cgroup, acts on all
/// of it, and records in the audit store who did it and why. Suspend and kill act
/// even when the store cannot record them (they only take power away, and say so); resume
/// gives it back and is refused unless it is recorded.
fn directly(store: Option<PathBuf>, request: &Control, what: control::Act) -> Result<i32, (i32, String)> {
    let agent = request.agent.as_str();
    let usage = |error: cgroup::Error| (exit::USAGE, error.to_string());
    crate::validate_agent_id(agent).map_err(|error| (exit::USAGE, error))?;
    let root = cgroup::mount_point().map_err(usage)?;
    let group = cgroup::Cgroup::open(&root, agent).map_err(usage)?;
    let store = store.unwrap_or_else(audit::default_path);
    let connection = records::connect(&store);
    let name = what.name();
    let why = what.why(&request.reason);
    let recorded = connection.and_then(|mut connection| {
        audit::insert(&mut connection, &[audit::action(agent, name, &actor(), &why)])
            .map_err(|error| (exit::FAILURE, format!("audit store {}: {error}", store.display())))
    });
    if let Err((_, error)) = &recorded {
        if what == control::Act::Resume {
            return Err((exit::FAILURE, format!("{error}; not resuming an agent without a record of it")));
        }
        say!("governor: {error}; {name} goes ahead unrecorded");
    }
    what.apply(&group).map_err(|error| (exit::FAILURE, error.to_string()))?;
    println!("agent {agent} {}", what.done());
    Ok(0)
}

/// Who is acting: the user name (and uid) of the caller, and sudo's original user.
fn actor() -> String {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let name = nix::unistd::User::from_uid(uid.into()).ok().flatten().map_or_else(|| uid.to_string(), |user| user.name);
    match std::env::var("SUDO_USER") {
        Ok(sudo) if !sudo.is_empty() => format!("{name} (uid {uid}, via sudo from {sudo})"),
        _ => format!("{name} (uid {uid})"),
    }
}
