//! The daemon's control socket: one JSON object per line each way, a request and its answer.
//! The client side (`governor run`, `suspend`, `policy reload` ... finding and asking the
//! daemon) and the checks the daemon makes of every peer.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use crate::{policy::Trust, probes::ProbePlan};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/governor/governor.sock";

/// What a client asks.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Who the daemon is: its pid, probe backend, audit store, loss policy.
    Hello,
    /// A `governor run` about to start an agent in the cgroup it made: watch it.
    Register(Registration),
    /// A `governor run` whose daemon restarted: this connection speaks for `agent` again.
    Attach {
        agent: String,
    },
    /// The notify backend: the agent registered has started as process `pid`, the creator
    /// of its Landlock domain, by which its audit records are known.
    Started {
        agent: String,
        pid: u32,
        /// Its audit session (`landlock_audit::Session`), when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<u32>,
    },
    /// The agent has exited and its cgroup is gone.
    Exited {
        agent: String,
        code: i32,
    },
    Suspend {
        agent: String,
        reason: String,
    },
    Resume {
        agent: String,
        reason: String,
    },
    Kill {
        agent: String,
        reason: String,
    },
    /// Load the policy again; the old one stays if the new one is invalid.
    Reload,
    /// The agents the daemon supervises now.
    Agents,
    /// Read the daemon's audit store: for callers who may control agents but not read the
    /// store's file (members of the control group).
    Read(Read),
    /// One operation of the service layer (`service::Call`), as every door asks it; a
    /// refusal carries `error`, `field` and `kind`. `events` answers with one line per event
    /// until the connection closes.
    Api(crate::service::Call),
}

/// What `Request::Read` reads: the answer is the text the same command prints locally, with
/// its exit code (`{"code": N, "output": "...", "error": "..."}`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "what", rename_all = "kebab-case")]
pub enum Read {
    Query(crate::service::records::Query),
    Incidents(crate::service::records::Listing),
    Actions(crate::service::records::Listing),
    Status { all: bool, format: crate::service::records::Format },
}

impl Read {
    /// Runs the read against `store`, writing what it prints into `out`.
    pub fn run(&self, out: &mut dyn std::io::Write, store: &Path, rings: Option<&Path>) -> Result<i32, (i32, String)> {
        match self {
            Read::Query(query) => crate::service::records::query(out, store, query),
            Read::Incidents(listing) => crate::service::records::incidents(out, store, listing),
            Read::Actions(listing) => crate::service::records::actions(out, store, listing),
            Read::Status { all, format } => crate::service::status::status(out, store, rings, *all, *format),
        }
    }
}

/// `governor suspend|resume|kill`: what is done to an agent's cgroup, directly or by the
/// daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Suspend,
    Resume,
    Kill,
}

impl Act {
    /// The action's name in the audit store.
    pub fn name(self) -> &'static str {
        match self {
            Act::Suspend => "suspend",
            Act::Resume => "resume",
            Act::Kill => "kill",
        }
    }

    pub fn done(self) -> &'static str {
        match self {
            Act::Suspend => "suspended",
            Act::Resume => "resumed",
            Act::Kill => "killed",
        }
    }

    /// The reason recorded: the caller's, or the command's name.
    pub fn why(self, reason: &str) -> String {
        if reason.is_empty() { format!("governor {}", self.name()) } else { reason.to_owned() }
    }

    /// Freezes, thaws (waiting for `cgroup.events` to confirm) or kills the whole cgroup.
    pub fn apply(self, group: &crate::cgroup::Cgroup) -> Result<(), crate::cgroup::Error> {
        let timeout = std::time::Duration::from_secs(5);
        match self {
            Act::Suspend => group.set_frozen(true, timeout),
            Act::Resume => group.set_frozen(false, timeout),
            Act::Kill => group.kill(),
        }
    }

    /// The request that asks the daemon for it.
    pub fn request(self, agent: String, reason: String) -> Request {
        match self {
            Act::Suspend => Request::Suspend { agent, reason },
            Act::Resume => Request::Resume { agent, reason },
            Act::Kill => Request::Kill { agent, reason },
        }
    }
}

impl From<crate::service::Action> for Act {
    fn from(action: crate::service::Action) -> Act {
        match action {
            crate::service::Action::Suspend => Act::Suspend,
            crate::service::Action::Resume => Act::Resume,
            crate::service::Action::Kill => Act::Kill,
        }
    }
}

/// An agent as `governor run` hands it to the daemon (and as the daemon keeps it in its
/// state directory, to watch it again after a restart).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Registration {
    pub agent: String,
    pub trust: Trust,
    pub command: Vec<String>,
    pub user: String,
    /// `--observe`: probe rules report instead of denying.
    pub observe: bool,
    /// `--policy` files, whose `[[rule]]`s the daemon adds for this agent.
    pub overlays: Vec<PathBuf>,
    pub plan: ProbePlan,
    /// The notify backend: the descriptor, in the registering process, of the fanotify
    /// group the agent's mounts are marked in (the daemon takes a duplicate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanotify: Option<i32>,
    /// The agent's first process, which creates its Landlock domain (`Request::Started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_pid: Option<u32>,
    /// The agent's audit session (`Request::Started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u32>,
}

/// What becomes of an agent whose supervisor is gone longer than the grace period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// It runs on, still confined by Landlock and seccomp; a new daemon watches it again.
    #[default]
    Keep,
    /// It is killed.
    Kill,
}

/// The daemon's answer to `Hello`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    pub pid: u32,
    pub backend: crate::probes::Backend,
    pub audit_db: PathBuf,
    pub on_supervisor_loss: Loss,
    /// How long an agent may be without a supervisor before `kill` applies.
    pub grace_ms: u64,
    /// The metrics address, when served.
    pub metrics: Option<String>,
    /// The HTTP door's TCP address, when served.
    #[serde(default)]
    pub http: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("governor daemon at {path}: {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("governor daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("governor daemon: {0}")]
    Refused(String),
    #[error("governor daemon: malformed answer: {0}")]
    Malformed(String),
}

/// Why a service call failed: the daemon's typed refusal, or no answer at all.
#[derive(Debug)]
pub enum ApiFailure {
    Refused(crate::service::ApiError),
    Other(Error),
}

/// A connection to the daemon.
pub struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    pub path: PathBuf,
    /// Why the last request could not be sent, reported if no answer comes.
    unsent: Option<std::io::Error>,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, Error> {
        let stream = UnixStream::connect(path).map_err(|source| Error::Connect { path: path.to_path_buf(), source })?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Client { writer: stream, reader, path: path.to_path_buf(), unsent: None })
    }

    /// Sends `request` and waits for the answer: its fields, or the daemon's refusal.
    pub fn call(&mut self, request: &Request) -> Result<serde_json::Value, Error> {
        self.send(request)?;
        self.answer()
    }

    /// Sends `request` without waiting: the caller goes on with its own work while the
    /// daemon does the request's, then reads the answer with [`Client::answer`].
    pub fn send(&mut self, request: &Request) -> Result<(), Error> {
        let mut line = serde_json::to_vec(request).map_err(|error| Error::Malformed(error.to_string()))?;
        line.push(b'\n');
        // A daemon that refuses the peer answers at once and closes: its answer is read even
        // when the request could not be sent.
        self.unsent = self.writer.write_all(&line).err();
        Ok(())
    }

    /// The answer to the request sent last: its fields, or the daemon's refusal.
    pub fn answer(&mut self) -> Result<serde_json::Value, Error> {
        let mut answer = String::new();
        let read = self.reader.read_line(&mut answer);
        if answer.is_empty() {
            if let Some(error) = self.unsent.take() {
                return Err(error.into());
            }
            read?;
            return Err(Error::Refused("closed the connection without an answer".into()));
        }
        self.unsent = None;
        let value: serde_json::Value =
            serde_json::from_str(&answer).map_err(|error| Error::Malformed(error.to_string()))?;
        if value["ok"] == serde_json::Value::Bool(true) {
            Ok(value)
        } else {
            Err(Error::Refused(value["error"].as_str().unwrap_or("refused").to_owned()))
        }
    }

    /// Asks the daemon one service call: its answer, or its refusal (a failure to reach it
    /// is an internal error).
    pub fn ask(&mut self, call: crate::service::Call) -> Result<serde_json::Value, crate::service::ApiError> {
        match self.call_api(&Request::Api(call)) {
            Ok(value) => Ok(value),
            Err(ApiFailure::Refused(error)) => Err(error),
            Err(ApiFailure::Other(error)) => Err(crate::service::ApiError::internal(error.to_string())),
        }
    }

    /// Sends a service call: its answer, or the daemon's typed refusal.
    pub fn call_api(&mut self, request: &Request) -> Result<serde_json::Value, ApiFailure> {
        let mut line =
            serde_json::to_vec(request).map_err(|error| ApiFailure::Other(Error::Malformed(error.to_string())))?;
        line.push(b'\n');
        let sent = self.writer.write_all(&line);
        let answer = self.next_line().map_err(ApiFailure::Other)?;
        match answer {
            None => {
                sent.map_err(|error| ApiFailure::Other(error.into()))?;
                Err(ApiFailure::Other(Error::Refused("closed the connection without an answer".into())))
            }
            Some(value) => Self::api_answer(value),
        }
    }

    fn api_answer(value: serde_json::Value) -> Result<serde_json::Value, ApiFailure> {
        if value["ok"] == serde_json::Value::Bool(true) {
            return Ok(value);
        }
        let error = serde_json::from_value::<crate::service::ApiError>(value.clone()).unwrap_or_else(|_| {
            crate::service::ApiError::internal(value["error"].as_str().unwrap_or("refused").to_owned())
        });
        Err(ApiFailure::Refused(error))
    }

    /// The next line the daemon sends on this connection (a streamed answer), `None` at
    /// the end.
    pub fn next_line(&mut self) -> Result<Option<serde_json::Value>, Error> {
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Ok(None);
        }
        serde_json::from_str(&answer).map(Some).map_err(|error| Error::Malformed(error.to_string()))
    }

    /// The next line of a streamed service answer.
    pub fn next_api(&mut self) -> Result<Option<serde_json::Value>, ApiFailure> {
        match self.next_line().map_err(ApiFailure::Other)? {
            None => Ok(None),
            Some(value) => Self::api_answer(value).map(Some),
        }
    }

    pub fn hello(&mut self) -> Result<Hello, Error> {
        let value = self.call(&Request::Hello)?;
        serde_json::from_value(value).map_err(|error| Error::Malformed(error.to_string()))
    }

    /// The connection, for a caller that waits for the daemon to go away (EOF).
    pub fn stream(&self) -> &UnixStream {
        &self.writer
    }
}

/// The socket path: `--socket`/`GOVERNOR_SOCKET`, else the default.
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    explicit.map_or_else(|| PathBuf::from(DEFAULT_SOCKET), Path::to_path_buf)
}

/// The daemon, if one answers. An explicit socket that does not answer is an error; the
/// default one missing (or nobody listening on it) means no daemon runs.
pub fn discover(explicit: Option<&Path>) -> Result<Option<(Client, Hello)>, Error> {
    let path = socket_path(explicit);
    match Client::connect(&path) {
        Ok(mut client) => {
            let hello = client.hello()?;
            Ok(Some((client, hello)))
        }
        Err(Error::Connect { source, .. })
            if explicit.is_none()
                && matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// A peer of the control socket, from `SO_PEERCRED`.
#[derive(Clone, Debug)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

impl Peer {
    /// `user (uid N, pid P)`, for the audit store's actor column.
    pub fn describe(&self) -> String {
        let name = nix::unistd::User::from_uid(self.uid.into())
            .ok()
            .flatten()
            .map_or_else(|| self.uid.to_string(), |user| user.name);
        format!("{name} (uid {}, pid {})", self.uid, self.pid)
    }
    /// The peer as the service layer records who asks, named as the audit store's actor
    /// column names it.
    pub fn caller(&self) -> crate::service::Caller {
        let name = nix::unistd::User::from_uid(self.uid.into())
            .ok()
            .flatten()
            .map_or_else(|| self.uid.to_string(), |user| user.name);
        crate::service::Caller::Peer { uid: self.uid, pid: self.pid, name }
    }
}

/// Whether `peer` may control agents: root or a member of `group`, and not itself inside an
/// agent's cgroup (an agent running as uid 0 still may not reach its supervisor).
pub fn admit(peer: &Peer, group: Option<u32>) -> Result<(), String> {
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", peer.pid)).unwrap_or_default();
    if let Some(agent) = agent_of(&cgroup) {
        return Err(format!("pid {} is inside agent {agent}'s cgroup; agents may not control governor", peer.pid));
    }
    if peer.uid == 0 {
        return Ok(());
    }
    if let Some(group) = group
        && (peer.gid == group || supplementary_groups(peer.pid).contains(&group))
    {
        return Ok(());
    }
    Err(format!("uid {} is not root{}", peer.uid, if group.is_some() { " nor in the control group" } else { "" }))
}

/// The agent whose cgroup a `/proc/PID/cgroup` text names (the v2 line, `0::/governor/ID...`).
pub fn agent_of(cgroup: &str) -> Option<String> {
    let path = cgroup.lines().find_map(|line| line.strip_prefix("0::"))?;
    let rest = path.strip_prefix(&format!("/{}/", crate::cgroup::BASE))?;
    let agent = rest.split('/').next().filter(|agent| !agent.is_empty())?;
    Some(agent.to_owned())
}

fn supplementary_groups(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| groups.split_whitespace().filter_map(|gid| gid.parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_lines() {
        let line = serde_json::to_string(&Request::Kill { agent: "a".into(), reason: "why".into() })
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(line, r#"{"op":"kill","agent":"a","reason":"why"}"#);
        let parsed: Request =
            serde_json::from_str(r#"{"op":"exited","agent":"b","code":3}"#).unwrap_or_else(|error| panic!("{error}"));
        assert!(matches!(parsed, Request::Exited { code: 3, .. }));
        assert!(serde_json::from_str::<Request>(r#"{"op":"format-disk"}"#).is_err());
    }

    #[test]
    fn agent_cgroups_are_recognised() {
        assert_eq!(agent_of("0::/governor/build-1\n"), Some("build-1".into()));
        assert_eq!(agent_of("12:pids:/x\n0::/governor/a/b\n"), Some("a".into()));
        assert_eq!(agent_of("0::/user.slice/session-1.scope\n"), None);
        assert_eq!(agent_of("0::/governor/\n"), None);
        assert_eq!(agent_of("0::/governorx/a\n"), None);
    }
}
