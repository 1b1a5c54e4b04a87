//! A run's side of the daemon: finding one (or starting it on first use), the link that
//! notices it going away and reaches a restarted one while the agent runs, and the exit
//! reported to it.

use std::{path::PathBuf, time::Duration};

use crate::{
    cgroup::Cgroup,
    daemon::control::{self, Client, Hello},
    launch::{self, Request},
    probes, supervise,
};

use super::{Error, autostart};

/// The daemon that supervises the agent, unless it runs standalone: `--standalone`, `--trace`
/// and `--probes off` ask for standalone; otherwise a daemon that answers is used.
pub fn find_daemon(request: &Request) -> Result<Option<(Client, Hello)>, Error> {
    if request.standalone
        || request.trace
        || request.probes == probes::Choice::Off
        || request.probes == probes::Choice::Notify
    {
        return Ok(None);
    }
    let found = match control::discover(request.socket.as_deref()) {
        Ok(None) if autostart::allowed(request) => start_daemon(request),
        // A daemon that stopped (idle) as this run connected: one is started again.
        Err(control::Error::Io(_) | control::Error::Refused(_)) if autostart::allowed(request) => start_daemon(request),
        found => found?,
    };
    let Some((client, hello)) = found else {
        return Ok(None);
    };
    if !request.probes.accepts(hello.backend) {
        let wanted = clap::ValueEnum::to_possible_value(&request.probes);
        return Err(launch::Error::Usage(format!(
            "--probes {}: the governor daemon at {} runs the {} probes (pass --standalone to load your own)",
            wanted.as_ref().map_or("?", clap::builder::PossibleValue::get_name),
            client.path.display(),
            hello.backend
        ))
        .into());
    }
    Ok(Some((client, hello)))
}

/// The daemon started on first use ([`autostart`]); when it cannot be started, this
/// run supervises its agent itself, as before there was a daemon.
pub(super) fn start_daemon(request: &Request) -> Option<(Client, Hello)> {
    match autostart::start(request) {
        Ok((client, hello)) => {
            say!(
                "governor: started the governor daemon (pid {}) for this and later runs; it stops after {} minutes without agents (log: {})",
                hello.pid,
                autostart::IDLE_EXIT.as_secs() / 60,
                autostart::log_path(request).display()
            );
            Some((client, hello))
        }
        // Another run's daemon may have won the race for the socket.
        Err(error) => control::discover(None).ok().flatten().or_else(|| {
            say!("governor: {error}; supervising the agent in this process");
            None
        }),
    }
}

/// Tells the daemon the agent has exited, over a new connection if the daemon restarted
/// meanwhile. A daemon that cannot be told records the end itself when it finds the
/// cgroup gone, without the status.
pub(super) fn report_exit(link: DaemonLink, hello: &Hello, agent: &str, code: i32) {
    let request = control::Request::Exited { agent: agent.to_owned(), code };
    let path = link.path.clone();
    let mut result = match link.client {
        Some(mut client) => client.call(&request),
        None => Err(control::Error::Refused("gone".into())),
    };
    if result.is_err() {
        // A daemon restarting (re-adopting its agents) gets a moment.
        for _ in 0..20 {
            if let Ok(mut again) = Client::connect(&path) {
                result = again.call(&request);
                if result.is_ok() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if let Err(error) = result {
        say!(
            "governor: {error}; the exit of agent {agent} is recorded without its status when a daemon (pid was {}) finds it gone",
            hello.pid
        );
    }
}

/// A `governor run`'s side of the daemon's supervision: notices the daemon going away, tries
/// to reach a restarted one (which watches the agent again) and, when the daemon's settings
/// say `on_supervisor_loss = "kill"`, kills the agent once it has been alone longer than the
/// grace period.
pub(super) struct DaemonLink {
    client: Option<Client>,
    path: PathBuf,
    agent: String,
    /// `kill`: the grace period.
    kill_after: Option<Duration>,
    /// The agent's cgroup, to kill it.
    control: Cgroup,
    lost_since: Option<std::time::Instant>,
    last_try: std::time::Instant,
    watched: bool,
    killed: bool,
}

impl DaemonLink {
    pub(super) fn new(client: Client, hello: &Hello, agent: &str, control: Cgroup) -> DaemonLink {
        DaemonLink {
            path: client.path.clone(),
            client: Some(client),
            agent: agent.to_owned(),
            kill_after: (hello.on_supervisor_loss == control::Loss::Kill)
                .then(|| Duration::from_millis(hello.grace_ms)),
            control,
            lost_since: None,
            last_try: std::time::Instant::now(),
            watched: false,
            killed: false,
        }
    }
}

/// How often a `governor run` whose daemon went away tries to reach one again.
const RECONNECT: Duration = Duration::from_millis(250);

impl supervise::Link for DaemonLink {
    fn watch(&mut self) -> Option<std::os::fd::OwnedFd> {
        if self.watched {
            return None;
        }
        let fd = self.client.as_ref()?.stream().try_clone().ok()?;
        self.watched = true;
        Some(fd.into())
    }

    fn lost(&mut self) {
        self.client = None;
        self.watched = false;
        self.lost_since = Some(std::time::Instant::now());
        let then = match self.kill_after {
            Some(grace) => format!("it is killed if none is back within {grace:?} (on_supervisor_loss = kill)"),
            None => "it runs on, confined, until one is back (on_supervisor_loss = keep)".to_owned(),
        };
        say!("governor: the governor daemon went away; agent {} is not watched; {then}", self.agent);
    }

    fn tick(&mut self) {
        let Some(since) = self.lost_since else { return };
        if self.last_try.elapsed() >= RECONNECT {
            self.last_try = std::time::Instant::now();
            if let Ok(mut client) = Client::connect(&self.path)
                && client.call(&control::Request::Attach { agent: self.agent.clone() }).is_ok()
            {
                say!(
                    "governor: a governor daemon is back after {:.1} s and watches agent {} again",
                    since.elapsed().as_secs_f64(),
                    self.agent
                );
                self.client = Some(client);
                self.lost_since = None;
                return;
            }
        }
        if let Some(grace) = self.kill_after
            && !self.killed
            && since.elapsed() >= grace
        {
            self.killed = true;
            let killed = self.control.kill();
            say!(
                "governor: agent {} {} after {:.1} s without a supervisor (on_supervisor_loss = kill)",
                self.agent,
                if killed.is_ok() { "killed" } else { "could not be killed" },
                since.elapsed().as_secs_f64()
            );
        }
    }
}
