//! `governor daemon`: loads the probes once, owns the audit writer and the policy engine, and
//! supervises every agent that a `governor run` registers over the control socket. The agent
//! stays the child of its `governor run` (exit code, signals and terminal as standalone);
//! the daemon decides on its events, freezes and kills it, and records it.
//!
//! One thread runs the loop (a current-thread tokio runtime): signals, the ring buffer, the
//! control socket's lines (read by small tasks that hand them over), the metrics endpoint and
//! a tick. Agents are found by the cgroup id every event carries.
//!
//! State that outlives the process: the audit store, and per agent its registration in
//! `<state>/agents/<agent>.json` (`<state>` is the audit store's directory), so that a
//! daemon started after one was killed watches the agents that still run again.

use std::{
    collections::HashMap,
    io::Write as _,
    os::{fd::AsRawFd as _, unix::fs::PermissionsExt as _},
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use nix::sys::{
    signal::{SigSet, SigmaskHow, Signal, sigprocmask},
    signalfd::{SfdFlags, SignalFd},
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, Interest, unix::AsyncFd},
    net::{TcpListener, UnixListener, UnixStream},
    sync::mpsc,
};

use crate::{
    agent::{EventOutput, monotonic_ns},
    audit, audit_cli,
    cgroup::{self, Cgroup},
    control::{self, Act, Peer, Registration, Request},
    engine::{self, Engine, Rules},
    http,
    metrics::Metrics,
    policy::{self, RingSource},
    probes::{
        self, Probes,
        events::{DecodeError, Event, Sink},
    },
    run::exit,
    service::{self, ApiError, Call, Caller},
};

/// `governor daemon`'s own options (the socket and the store are global options).
#[derive(Debug, clap::Args)]
pub struct Options {
    /// The daemon's settings (TOML: control_group, on_supervisor_loss, loss_grace)
    /// [default: /etc/governor/governor.toml when it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve Prometheus metrics at ADDR (e.g. 127.0.0.1:9464) under /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Kernel event probes: BPF LSM where the kernel has it, else tracepoints.
    #[arg(long, value_enum, default_value = "auto")]
    pub probes: probes::Choice,
    /// Serve the HTTP/JSON door on TCP at ADDR (loopback unless --http-allow-remote); it
    /// needs --http-token-file. The door is always served on a Unix socket beside the
    /// control socket (NAME.http.sock), admitted as the control socket admits.
    #[arg(long, value_name = "ADDR", requires = "http_token_file")]
    pub http: Option<std::net::SocketAddr>,
    /// The bearer token of --http: a file of mode 0600 owned by root.
    #[arg(long, value_name = "FILE", requires = "http")]
    pub http_token_file: Option<PathBuf>,
    /// Let --http listen on an address other than loopback.
    #[arg(long, requires = "http")]
    pub http_allow_remote: bool,
    /// Stop after SECONDS with no agent to supervise and no control connection (the daemon
    /// that `governor run` starts on first use stops after 600) [default: never].
    #[arg(long, value_name = "SECONDS")]
    pub idle_exit: Option<u64>,
    /// What becomes of an agent whose daemon is gone past the grace period; overrides the
    /// settings file (the daemon `governor run` starts on first use says kill: a standalone
    /// run's agent never outlives its supervisor either).
    #[arg(long, value_enum, value_name = "keep|kill")]
    pub on_supervisor_loss: Option<Loss>,
}

/// The settings file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// A group whose members may control agents besides root.
    control_group: Option<String>,
    #[serde(default)]
    on_supervisor_loss: Loss,
    /// How long an agent may be without a supervisor before `on_supervisor_loss = "kill"`
    /// kills it.
    #[serde(default = "default_grace")]
    loss_grace: engine::Window,
    /// Audit rows older than this are pruned (events, incidents, actions), at start and
    /// every ten minutes; checkpoints keep the chains verifiable.
    #[serde(default, deserialize_with = "age")]
    audit_max_age: Option<Duration>,
    /// The oldest events are pruned while the store uses more than this (`2GiB`).
    #[serde(default, deserialize_with = "size")]
    audit_max_size: Option<u64>,
}

fn age<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    use serde::Deserialize as _;
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|error| serde::de::Error::custom(format!("'{text}' is not a duration (90d, 12h): {error}")))
}

fn size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    use serde::Deserialize as _;
    let text = String::deserialize(deserializer)?;
    crate::audit_cli::parse_size(&text).map(Some).map_err(serde::de::Error::custom)
}

impl Default for Config {
    fn default() -> Config {
        Config {
            control_group: None,
            on_supervisor_loss: Loss::Keep,
            loss_grace: default_grace(),
            audit_max_age: None,
            audit_max_size: None,
        }
    }
}

/// The daemon's ring buffer: every agent's bursts at once. 128 MiB holds about 400,000
/// open events (a standalone run's 16 MiB, 50,000): forty agents each opening 5,000 files
/// at once fit with room to spare while the loop catches up.
const DAEMON_RING_BYTES: u32 = 128 << 20;

/// How often the daemon prunes its store when retention is set.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Prunes the store at `path` every `PRUNE_EVERY`, on a thread of its own with its own
/// connection (a prune takes the store's write lock for a moment; the event loop never
/// waits for it).
fn start_pruning(path: PathBuf, retention: audit::Retention) {
    let spawned = std::thread::Builder::new().name("audit-prune".into()).spawn(move || {
        loop {
            match audit::open(&path).map(|mut connection| audit::prune(&mut connection, &retention)) {
                Ok(Ok(pruned)) => {
                    for (table, rows) in pruned.rows {
                        tracing::info!(table = table, rows = rows, "audit store pruned (checkpoint recorded)");
                    }
                }
                Ok(Err(error)) => tracing::error!(error = %error, "pruning the audit store failed"),
                Err(error) => tracing::error!(error = %error, "pruning the audit store failed"),
            }
            std::thread::sleep(PRUNE_EVERY);
        }
    });
    if let Err(error) = spawned {
        tracing::error!(error = %error, "no pruning thread: the audit store is not pruned");
    }
}

fn default_grace() -> engine::Window {
    engine::Window(Duration::from_secs(30))
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

/// Everything `governor daemon` needs, checked before anything starts.
pub struct Settings {
    pub socket: PathBuf,
    pub audit_db: PathBuf,
    pub rings: Option<PathBuf>,
    pub options: Options,
}

type Failure = (i32, String);

fn usage(message: impl std::fmt::Display) -> Failure {
    (exit::USAGE, message.to_string())
}

fn failure(message: impl std::fmt::Display) -> Failure {
    (exit::FAILURE, message.to_string())
}

fn load_config(explicit: Option<&Path>) -> Result<Config, Failure> {
    let default = Path::new("/etc/governor/governor.toml");
    let path = match explicit {
        Some(path) => path,
        None if default.exists() => default,
        None => return Ok(Config::default()),
    };
    let text = std::fs::read_to_string(path).map_err(|error| usage(format!("{}: {error}", path.display())))?;
    policy::parse::<Config>(path, &text).map_err(usage)
}

fn group_id(name: &str) -> Result<u32, Failure> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        _ => Err(usage(format!("control_group '{name}': no such group"))),
    }
}

/// An agent the daemon supervises.
struct Supervised<'w> {
    output: EventOutput<'w>,
    registration: Registration,
    cgroup_id: u64,
    /// The engine built for its `--policy` rules, when it has any (else the daemon's).
    own_rules: Option<Rules>,
    /// The connection of its `governor run`, while there is one.
    connection: Option<u64>,
    /// Since when no `governor run` speaks for it.
    orphaned_since: Option<Instant>,
}

struct Daemon<'w> {
    writer: &'w audit::Writer,
    probes: Probes,
    cgroup_root: PathBuf,
    rings: Option<PathBuf>,
    rules: Rules,
    engine: Rc<Engine>,
    agents: HashMap<u64, Supervised<'w>>,
    names: HashMap<String, u64>,
    metrics: Rc<Metrics>,
    config: Config,
    control_group: Option<u32>,
    state_dir: PathBuf,
    hello: control::Hello,
    reported_drops: u64,
    reported_by_agent: HashMap<u64, u64>,
    /// Where registrations ahead of a run are kept (`<state>/registered`).
    registered_dir: PathBuf,
    /// `--idle-exit`.
    idle_exit: Option<Duration>,
}

/// Runs the daemon until SIGTERM or SIGINT. Agents keep running when it stops (their
/// confinement is the kernel's); the next daemon watches them again.
pub fn daemon(settings: Settings) -> Result<i32, Failure> {
    let mut config = load_config(settings.options.config.as_deref())?;
    if let Some(loss) = settings.options.on_supervisor_loss {
        config.on_supervisor_loss = loss;
    }
    let control_group = config.control_group.as_deref().map(group_id).transpose()?;
    if settings.options.probes == probes::Choice::Notify {
        return Err(usage("--probes notify: standalone runs only (governor run --probes notify)"));
    }
    if settings.options.probes == probes::Choice::Off {
        return Err(usage("--probes off: the daemon exists to watch agents; run agents standalone instead"));
    }
    if let Some(addr) = settings.options.http {
        http::check_addr(addr, settings.options.http_allow_remote).map_err(usage)?;
    }
    if let Some(file) = &settings.options.http_token_file {
        http::read_token(file).map_err(usage)?;
    }
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Err(usage("governor daemon must run as root (probes, cgroups)"));
    }
    let source = RingSource::locate(settings.rings.as_deref());
    let (rules, engine) = engine::load(&source, &[]).map_err(usage)?;
    let cgroup_root = cgroup::mount_point().map_err(usage)?;
    let store = audit::Writer::open(&settings.audit_db).map_err(|error| usage(format!("{error}")))?;
    let state_dir = settings.audit_db.parent().unwrap_or(Path::new(".")).join("agents");
    std::fs::create_dir_all(&state_dir).map_err(|error| usage(format!("{}: {error}", state_dir.display())))?;
    let _ = std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700));
    let listener = bind(&settings.socket, control_group)?;
    // Pinned: the rules the probes enforce hold while no daemon runs.
    let probes = Probes::load_pinned(settings.options.probes, Path::new(probes::PIN_DIR), DAEMON_RING_BYTES)
        .map_err(|error| (exit::USAGE, error.to_string()))?
        .ok_or_else(|| usage("no probes"))?;
    if let Some(reason) = &probes.cwd_walk {
        tracing::info!(reason = %reason, "no working-directory walk in the kernel");
    }
    if let Some(reason) = &probes.fallback {
        tracing::info!(reason = %reason, "BPF LSM not used");
    }
    if let Some(reason) = &probes.no_fentry {
        tracing::info!(reason = %reason, "fentry not used; events from the raw syscall tracepoints");
    }
    let metrics_listener = match settings.options.metrics {
        Some(addr) => {
            let listener =
                std::net::TcpListener::bind(addr).map_err(|error| usage(format!("--metrics {addr}: {error}")))?;
            listener.set_nonblocking(true).map_err(failure)?;
            Some(listener)
        }
        None => None,
    };
    let http_listener = match (settings.options.http, &settings.options.http_token_file) {
        (Some(addr), Some(file)) => {
            let listener =
                std::net::TcpListener::bind(addr).map_err(|error| usage(format!("--http {addr}: {error}")))?;
            listener.set_nonblocking(true).map_err(failure)?;
            Some((listener, http::read_token(file).map_err(usage)?))
        }
        _ => None,
    };
    let http_socket = http::unix_path(&settings.socket);
    let http_unix = bind(&http_socket, control_group)?;
    http::set_control_group(control_group);

    // Signals are taken before the writer's thread starts, so that thread inherits the mask.
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(signal);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|errno| failure(format!("blocking signals: {errno}")))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|errno| failure(format!("signalfd: {errno}")))?;
    let writer = store.start().map_err(failure)?;
    if config.audit_max_age.is_some() || config.audit_max_size.is_some() {
        let retention = audit::Retention { max_age: config.audit_max_age, max_size: config.audit_max_size };
        start_pruning(settings.audit_db.clone(), retention);
    }
    let hello = control::Hello {
        pid: std::process::id(),
        backend: probes.backend,
        audit_db: settings.audit_db.clone(),
        on_supervisor_loss: config.on_supervisor_loss,
        grace_ms: config.loss_grace.0.as_millis() as u64,
        metrics: metrics_listener.as_ref().and_then(|listener| listener.local_addr().ok()).map(|addr| addr.to_string()),
        http: http_listener.as_ref().and_then(|(listener, _)| listener.local_addr().ok()).map(|addr| addr.to_string()),
    };
    let registered_dir = service::registered_dir(&settings.audit_db);
    let mut daemon = Daemon {
        writer: &writer,
        probes,
        cgroup_root,
        rings: settings.rings.clone(),
        engine: Rc::new(engine),
        rules,
        agents: HashMap::new(),
        names: HashMap::new(),
        metrics: Rc::new(Metrics::default()),
        config,
        control_group,
        state_dir,
        hello,
        reported_drops: 0,
        reported_by_agent: HashMap::new(),
        registered_dir,
        idle_exit: settings.options.idle_exit.map(Duration::from_secs),
    };
    daemon.adopt();
    // Predecessors' LSM links (this daemon's are attached), and the pins of agents that
    // ended while no daemon ran.
    let adopted: Vec<String> = daemon.names.keys().cloned().collect();
    daemon.probes.sweep_pins(&daemon.cgroup_root, &adopted);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|error| failure(format!("starting the event loop: {error}")))?;
    let doors = Doors { metrics: metrics_listener, http: http_listener, unix: http_unix };
    let result = runtime.block_on(daemon.serve(listener, doors, signals));
    drop(daemon);
    drop(runtime);
    let _ = std::fs::remove_file(&settings.socket);
    let _ = std::fs::remove_file(&http_socket);
    writer.finish().map_err(failure)?;
    result.map(|()| 0)
}

/// Binds the control socket: its directory 0700 when governor makes it, the socket 0600
/// (0660 with the control group). A socket nobody answers on is stale and replaced; one
/// that answers means another daemon runs.
fn bind(path: &Path, group: Option<u32>) -> Result<std::os::unix::net::UnixListener, Failure> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|error| usage(format!("{}: {error}", dir.display())))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(usage(format!("{}: a governor daemon is already running", path.display())));
        }
        std::fs::remove_file(path).map_err(|error| usage(format!("{}: {error}", path.display())))?;
    }
    // Created with no permission at all, then opened up: never reachable by others between.
    // SAFETY: umask only changes this process's file mode mask.
    let old = unsafe { libc::umask(0o177) };
    let listener = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = listener.map_err(|error| usage(format!("{}: {error}", path.display())))?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(gid.into()))
            .map_err(|errno| failure(format!("{}: chown: {errno}", path.display())))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(failure)?;
    }
    listener.set_nonblocking(true).map_err(failure)?;
    Ok(listener)
}

/// What the connection tasks hand to the loop.
enum Message {
    Line(u64, String),
    /// The writer committed rows.
    Committed,
    /// The answer of a read done on another thread.
    Reply(u64, String),
    Closed(u64),
}

/// Where a service call's answer goes.
enum Reply {
    /// A line on a control connection.
    Socket(mpsc::UnboundedSender<String>),
    /// An HTTP handler waiting for it.
    Http(tokio::sync::oneshot::Sender<service::Answer>),
}

/// How far a service call got on the loop.
enum Step {
    Done(service::Answer),
    /// Reads of the store, done off the loop (a query over millions of rows must not stop
    /// the loop from freezing agents).
    Blocking(Box<dyn FnOnce() -> service::Answer + Send>),
    /// The live stream of events.
    Stream(service::EventFilter),
}

/// The HTTP listeners, bound before the loop starts.
struct Doors {
    metrics: Option<std::net::TcpListener>,
    http: Option<(std::net::TcpListener, String)>,
    unix: std::os::unix::net::UnixListener,
}

/// A service answer as a control socket line.
fn answer_line(answer: service::Answer) -> String {
    let mut line = match answer {
        Ok(mut value) => {
            if let serde_json::Value::Object(map) = &mut value {
                map.insert("ok".into(), true.into());
            } else {
                value = serde_json::json!({ "ok": true, "value": value });
            }
            value.to_string()
        }
        Err(error) => {
            serde_json::json!({ "ok": false, "error": error.error, "field": error.field, "kind": error.kind })
                .to_string()
        }
    };
    line.push('\n');
    line
}

/// How often the loop drains the ring buffer, reads the drop counter, checks orphaned
/// agents and the store.
const TICK: Duration = Duration::from_millis(10);
/// How often the daemon says it is alive (state file, systemd watchdog).
const HEARTBEAT: Duration = Duration::from_secs(1);

impl<'w> Daemon<'w> {
    async fn serve(
        &mut self,
        listener: std::os::unix::net::UnixListener,
        doors: Doors,
        signals: SignalFd,
    ) -> Result<(), Failure> {
        let listener = UnixListener::from_std(listener).map_err(failure)?;
        let ring = self.probes.take_events().map_err(failure)?;
        // SAFETY (both): the AsyncFd owns the signalfd and the ring buffer map, whose
        // descriptors stay open and unchanged until it is dropped.
        let signals = unsafe { AsyncFd::register_with_interest(signals, Interest::READABLE) }
            .map_err(|error| failure(format!("watching signals: {error:?}")))?;
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|error| failure(format!("watching the ring buffer: {error:?}")))?;
        let (sender, mut messages) = mpsc::unbounded_channel::<Message>();
        let committed = sender.clone();
        self.writer.on_commit(Box::new(move || {
            let _ = committed.send(Message::Committed);
        }));
        let (commits, commits_seen) = tokio::sync::watch::channel(0u64);
        let (asked, mut asks) = mpsc::unbounded_channel::<http::Asked>();
        let door = http::Door { asked, commits: commits_seen.clone(), store: self.hello.audit_db.clone(), token: None };
        if let Some(listener) = doors.metrics {
            let listener = TcpListener::from_std(listener).map_err(failure)?;
            tokio::spawn(http::serve_tcp(listener, http::metrics_router(door.clone())));
        }
        if let Some((listener, token)) = doors.http {
            let listener = TcpListener::from_std(listener).map_err(failure)?;
            let door = http::Door { token: Some(token.into()), ..door.clone() };
            tokio::spawn(http::serve_tcp(listener, http::router(door)));
        }
        let unix = UnixListener::from_std(doors.unix).map_err(failure)?;
        tokio::spawn(http::serve_unix(unix, http::router(door)));
        let mut replies: HashMap<u64, (mpsc::UnboundedSender<String>, Peer)> = HashMap::new();
        let mut streams: HashMap<u64, Vec<tokio::task::AbortHandle>> = HashMap::new();
        let mut next_connection = 0u64;
        let mut deferred: Vec<(mpsc::UnboundedSender<String>, String, u64)> = Vec::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heartbeat = Instant::now() - HEARTBEAT;
        let idle_exit = self.idle_exit;
        let mut idle_since = Instant::now();
        let watchdog = watchdog_interval();
        self.heartbeat();
        notify(&[sd_notify::NotifyState::Ready]);
        tracing::info!(
            socket = %listener.local_addr().ok().and_then(|addr| addr.as_pathname().map(|p| p.display().to_string())).unwrap_or_default(),
            backend = %self.probes.backend,
            metrics = self.hello.metrics.as_deref().unwrap_or("off"),
            http = self.hello.http.as_deref().unwrap_or("off"),
            agents = self.agents.len(),
            "governor daemon ready"
        );
        loop {
            tokio::select! {
                guard = signals.readable() => {
                    let mut guard = guard.map_err(failure)?;
                    let mut stop = false;
                    while let Ok(Some(info)) = guard.get_inner().read_signal() {
                        match Signal::try_from(info.ssi_signo as i32) {
                            Ok(Signal::SIGHUP) => {
                                notify(&[sd_notify::NotifyState::Reloading, sd_notify::NotifyState::monotonic_usec_now().unwrap_or(sd_notify::NotifyState::Ready)]);
                                let _ = self.reload(ring.get_mut());
                                notify(&[sd_notify::NotifyState::Ready]);
                            }
                            Ok(_) => stop = true,
                            Err(_) => {}
                        }
                    }
                    guard.clear_ready();
                    if stop {
                        tracing::info!(agents = self.agents.len(), "stopping; agents keep running and are watched again by the next daemon");
                        notify(&[sd_notify::NotifyState::Stopping]);
                        self.stop(ring.get_mut());
                        return Ok(());
                    }
                }
                guard = ring.readable_mut() => {
                    let mut guard = guard.map_err(failure)?;
                    crate::supervise::drain(guard.get_inner_mut(), &mut Dispatch { daemon: self });
                    guard.clear_ready();
                }
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let Some(peer) = peer_of(&stream) else { continue };
                    next_connection += 1;
                    let id = next_connection;
                    let (reply, outgoing) = mpsc::unbounded_channel::<String>();
                    // The pid is checked against /proc/PID/cgroup; with a pidfd of the peer
                    // (Linux 6.5+) it is known not to have been reused meanwhile.
                    let pidfd = peer_pidfd(&stream);
                    let admitted = control::admit(&peer, self.control_group).and_then(|()| match &pidfd {
                        Some(pidfd) if !alive(pidfd) => Err(format!("pid {} exited before it could be checked", peer.pid)),
                        _ => Ok(()),
                    });
                    if let Err(why) = admitted {
                        tracing::warn!(pid = peer.pid, uid = peer.uid, why = %why, "control connection refused");
                        let _ = reply.send(refusal(&format!("refused: {why}")));
                        drop(reply);
                        let (_, write) = stream.into_split();
                        tokio::spawn(write_lines(write, outgoing));
                        continue;
                    }
                    replies.insert(id, (reply, peer));
                    let (read, write) = stream.into_split();
                    tokio::spawn(write_lines(write, outgoing));
                    tokio::spawn(read_lines(id, read, sender.clone()));
                }
                Some(asked) = asks.recv() => match asked {
                    http::Asked::Call { caller, call, reply } => {
                        self.dispatch(*call, &caller, Reply::Http(reply), ring.get_mut(), &commits_seen);
                    }
                    http::Asked::Metrics(reply) => {
                        let _ = reply.send(self.metrics.render(&self.agent_states()));
                    }
                },
                Some(message) = messages.recv() => match message {
                    Message::Line(id, line) => {
                        let Some((reply, peer)) = replies.get(&id) else { continue };
                        let request = match serde_json::from_str::<Request>(&line) {
                            Ok(request) => request,
                            Err(error) => {
                                let _ = reply.send(refusal(&format!("malformed request: {error}")));
                                continue;
                            }
                        };
                        if let Request::Api(call) = request {
                            let caller = Caller::peer(peer);
                            let reply = Reply::Socket(reply.clone());
                            if let Some(stream) = self.dispatch(call, &caller, reply, ring.get_mut(), &commits_seen) {
                                streams.entry(id).or_default().push(stream);
                            }
                            continue;
                        }
                        if let Request::Read(read) = request {
                            // Reads of the store can be long (a query over millions of rows):
                            // off the loop, which must stay free to freeze agents.
                            let store = self.hello.audit_db.clone();
                            let rings = self.rings.clone();
                            let sender = sender.clone();
                            let spawned = std::thread::Builder::new().name("audit-read".into()).spawn(move || {
                                let mut output = Vec::new();
                                let result = read.run(&mut output, &store, rings.as_deref());
                                let (code, error) = match result {
                                    Ok(code) => (code, String::new()),
                                    Err((code, error)) => (code, error),
                                };
                                let output = String::from_utf8_lossy(&output).into_owned();
                                let mut line = serde_json::json!({ "ok": true, "code": code, "output": output, "error": error }).to_string();
                                line.push('\n');
                                let _ = sender.send(Message::Reply(id, line));
                            });
                            if spawned.is_err() {
                                let _ = reply.send(refusal("cannot start a reader thread"));
                            }
                            continue;
                        }
                        let peer = peer.clone();
                        let durable = matches!(request, Request::Exited { .. });
                        let answer = self.handle(id, &peer, request, ring.get_mut());
                        if durable && self.writer.committed() < self.writer.queued() {
                            // `governor run` returns once the agent's last rows are in the
                            // store, as standalone: answered when the writer has committed them.
                            deferred.push((reply.clone(), answer, self.writer.queued()));
                        } else {
                            let _ = reply.send(answer);
                        }
                    }
                    Message::Committed => {
                        let committed = self.writer.committed();
                        commits.send_replace(committed);
                        deferred.retain(|(reply, answer, target)| {
                            let done = committed >= *target;
                            if done {
                                let _ = reply.send(answer.clone());
                            }
                            !done
                        });
                    }
                    Message::Reply(id, line) => {
                        if let Some((reply, _)) = replies.get(&id) {
                            let _ = reply.send(line);
                        }
                    }
                    Message::Closed(id) => {
                        replies.remove(&id);
                        // Its event streams end with it.
                        for stream in streams.remove(&id).unwrap_or_default() {
                            stream.abort();
                        }
                        self.connection_closed(id);
                    }
                },

                _ = tick.tick() => {
                    crate::supervise::drain(ring.get_mut(), &mut Dispatch { daemon: self });
                    self.report_drops();
                    for supervised in self.agents.values_mut() {
                        supervised.output.tick();
                    }
                    self.check_orphans(ring.get_mut());
                    if !self.agents.is_empty() || !replies.is_empty() {
                        idle_since = Instant::now();
                    } else if idle_exit.is_some_and(|idle| idle_since.elapsed() >= idle) {
                        tracing::info!(idle = ?idle_since.elapsed(), "stopping: no agent and no connection (--idle-exit)");
                        notify(&[sd_notify::NotifyState::Stopping]);
                        self.stop(ring.get_mut());
                        return Ok(());
                    }
                    if last_heartbeat.elapsed() >= HEARTBEAT.min(watchdog.unwrap_or(HEARTBEAT)) {
                        last_heartbeat = Instant::now();
                        self.heartbeat();
                        if watchdog.is_some() {
                            notify(&[sd_notify::NotifyState::Watchdog]);
                        }
                    }
                }
            }
        }
    }

    /// Answers one request (reads are answered by reader threads, in the loop).
    fn handle(&mut self, connection: u64, peer: &Peer, request: Request, ring: &mut RingBuf<MapData>) -> String {
        let result = match request {
            Request::Hello => serde_json::to_value(&self.hello).map_err(|error| error.to_string()),
            // Launching is root's: the daemon reads the agent's --policy files as root, and a
            // group member must not get other files' lines back in a parse error.
            Request::Register(_) if peer.uid != 0 => Err("only root may launch agents through the daemon".into()),
            Request::Register(registration) => self.register(connection, registration),
            Request::Attach { agent } => match self.names.get(&agent).copied() {
                Some(id) => {
                    if let Some(supervised) = self.agents.get_mut(&id) {
                        supervised.connection = Some(connection);
                        supervised.orphaned_since = None;
                        tracing::info!(agent = %agent, "its governor run is attached again");
                    }
                    Ok(serde_json::json!({}))
                }
                None => Err(format!("unknown agent '{agent}'")),
            },
            Request::Exited { agent, code } => self.exited(&agent, Some(code), ring),
            Request::Suspend { agent, reason } => self.act(&agent, Act::Suspend, &peer.describe(), &reason),
            Request::Resume { agent, reason } => self.act(&agent, Act::Resume, &peer.describe(), &reason),
            Request::Kill { agent, reason } => self.act(&agent, Act::Kill, &peer.describe(), &reason),
            Request::Reload => self.reload(ring).map(|rules| serde_json::json!({ "rules": rules })),
            Request::Read(_) => Err("reads are answered by the loop's reader threads".into()),
            Request::Api(_) => Err("service calls are answered by dispatch".into()),
            Request::Agents => Ok(serde_json::Value::Array(
                self.agents
                    .values()
                    .map(|supervised| {
                        serde_json::json!({
                            "agent": supervised.output.agent_id,
                            "trust": supervised.registration.trust,
                            "state": state_of(supervised),
                            "cgroup_id": supervised.cgroup_id,
                        })
                    })
                    .collect(),
            ))
            .map(|agents| serde_json::json!({ "agents": agents })),
        };
        match result {
            Ok(mut value) => {
                if let serde_json::Value::Object(map) = &mut value {
                    map.insert("ok".into(), true.into());
                }
                let mut line = value.to_string();
                line.push('\n');
                line
            }
            Err(error) => refusal(&error),
        }
    }

    /// Runs one service call and sends its answer to `reply`: at once, from a reader
    /// thread, or (the event stream) from a task of its own, whose handle is returned so
    /// that the stream ends with its connection.
    fn dispatch(
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
    fn live(&self) -> service::Live {
        service::Live {
            supervised: self.agents.values().map(|s| (s.output.agent_id.clone(), s.cgroup_id)).collect(),
            registered: service::registrations(&self.registered_dir),
        }
    }

    fn daemon_info(&self) -> service::DaemonInfo {
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
    fn call(&mut self, call: Call, caller: &Caller, ring: &mut RingBuf<MapData>) -> Step {
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
                Ok((trust, overlays)) => Step::Blocking(Box::new(move || {
                    service::validate(rings.as_deref(), trust, &overlays, &request).and_then(|v| service::to_value(&v))
                })),
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
    fn configure(&self, caller: &Caller) -> Result<(), ApiError> {
        match caller {
            Caller::Token | Caller::Dashboard { .. } | Caller::Peer { uid: 0, .. } => Ok(()),
            Caller::Peer { uid, .. } => Err(ApiError::new(
                service::ErrorKind::Forbidden,
                format!("uid {uid} may control agents, not change the policy: only root may"),
            )),
        }
    }

    fn act_call(
        &mut self,
        agent: &str,
        action: service::Action,
        caller: &Caller,
        reason: Option<String>,
    ) -> service::Answer {
        crate::run::validate_agent_id(agent).map_err(|error| ApiError::bad("agent", error.to_string()))?;
        if !self.names.contains_key(agent) {
            return Err(ApiError::not_found(
                "agent",
                format!("unknown agent '{agent}': not supervised by this daemon"),
            ));
        }
        let what = action.act();
        self.act(agent, what, &caller.describe(), reason.as_deref().unwrap_or("")).map_err(ApiError::conflict)?;
        let state = match action {
            service::Action::Suspend => "suspended",
            service::Action::Resume => "running",
            service::Action::Kill => "killed",
        };
        service::to_value(&service::Acted { agent: agent.to_owned(), action, state: state.into() })
    }

    fn register_call(&mut self, spec: &service::AgentSpec, caller: &Caller) -> service::Answer {
        self.configure(caller)?;
        crate::run::validate_agent_id(&spec.agent_id).map_err(|error| ApiError::bad("agent_id", error.to_string()))?;
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

    fn report_call(&mut self, report: &service::IncidentReport, caller: &Caller) -> service::Answer {
        crate::run::validate_agent_id(&report.agent).map_err(|error| ApiError::bad("agent", error.to_string()))?;
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
                let known = audit_cli::connect(&self.hello.audit_db)
                    .and_then(|connection| audit_cli::known_agent(&connection, &report.agent));
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

    fn create_policy(
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
    /// registered one's, the store's record of it, else the request's `trust` (low).
    fn validate_plan(&self, request: &service::Validate) -> Result<(crate::policy::Trust, Vec<PathBuf>), ApiError> {
        let fallback = request.trust.unwrap_or(crate::policy::Trust::Low);
        let Some(agent) = &request.agent_id else { return Ok((fallback, Vec::new())) };
        crate::run::validate_agent_id(agent).map_err(|error| ApiError::bad("agent_id", error.to_string()))?;
        if let Some(supervised) = self.names.get(agent).and_then(|id| self.agents.get(id)) {
            return Ok((supervised.registration.trust, supervised.registration.overlays.clone()));
        }
        if let Some(spec) =
            service::registrations(&self.registered_dir).into_iter().find(|spec| spec.agent_id == *agent)
        {
            let overlay = self.registered_dir.join(format!("{agent}.toml"));
            return Ok((spec.trust.unwrap_or(crate::policy::Trust::Low), vec![overlay]));
        }
        let stored = audit::open(&self.hello.audit_db).ok().and_then(|connection| {
            connection
                .query_row("SELECT trust FROM agents WHERE agent = ?1 ORDER BY seq DESC LIMIT 1", [agent], |row| {
                    row.get::<_, String>(0)
                })
                .ok()
        });
        Ok((stored.and_then(|trust| trust.parse().ok()).unwrap_or(fallback), Vec::new()))
    }

    /// The rules for an agent with `overlays` (the daemon's, plus theirs) and their engine;
    /// `None` for an agent without overlays, which the daemon's rules decide.
    fn rules_for(&self, overlays: &[PathBuf]) -> Result<Option<(Rules, Engine)>, String> {
        if overlays.is_empty() {
            return Ok(None);
        }
        let overlays = overlays
            .iter()
            .map(|path| policy::load_overlay(path))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let source = RingSource::locate(self.rings.as_deref());
        engine::load(&source, &overlays).map(Some).map_err(|error| error.to_string())
    }

    /// Starts supervising an agent whose cgroup `governor run` has made (the agent has not
    /// started yet): watch its cgroup, put its deny rules into the kernel, record it.
    fn register(&mut self, connection: u64, registration: Registration) -> Result<serde_json::Value, String> {
        let agent = crate::run::validate_agent_id(&registration.agent).map_err(|error| error.to_string())?;
        // Fail closed, and never wait on a failing store here: the loop would stop deciding
        // (and freezing) for every other agent.
        if let Some(failure) = self.writer.failure() {
            return Err(format!("audit store failing ({failure}); governor does not run an agent it cannot audit"));
        }
        if self.names.contains_key(&agent) {
            return Err(format!("an agent with id '{agent}' is already supervised"));
        }
        let cgroup = Cgroup::open(&self.cgroup_root, &agent).map_err(|error| error.to_string())?;
        let (own_rules, own_engine) = self.rules_for(&registration.overlays)?.unzip();
        let (cgroup_id, enforced, userspace_only) = self.watch(&registration, &cgroup, own_rules.as_ref())?;
        let output = self.output_for(&agent, &registration, cgroup, own_engine);
        let row = audit::Row {
            table: "agents",
            values: vec![
                audit::text(&agent),
                audit::text(registration.trust.as_str()),
                audit::text(registration.command.join(" ")),
                audit::text(&registration.user),
                audit::text(output.control().path().display().to_string()),
                audit::text(self.probes.backend.to_string()),
                audit::int(audit::now_ns()),
            ],
        };
        let start = audit::action(
            &agent,
            "start",
            &registration.user,
            &format!("governor run --trust {} (via governor daemon)", registration.trust),
        );
        for row in [row, start].into_iter().chain(audit::policy_rows(&agent, &registration.overlays)) {
            if let Err(busy) = self.writer.try_write(row) {
                self.probes.unwatch(cgroup_id);
                return Err(format!(
                    "audit store {}; governor does not run an agent it cannot audit",
                    match busy {
                        audit::Busy::Full(_) => "queue full",
                        audit::Busy::Stopped => "writer stopped",
                    }
                ));
            }
        }
        self.save(&registration);
        tracing::info!(agent = %agent, trust = %registration.trust, cgroup_id, "agent registered");
        self.supervise(Supervised {
            output,
            registration,
            cgroup_id,
            own_rules,
            connection: Some(connection),
            orphaned_since: None,
        });
        Ok(serde_json::json!({ "cgroup_id": cgroup_id, "enforced": enforced, "userspace_only": userspace_only }))
    }

    /// An agent's event output: decided by its own rules' engine, or the daemon's.
    fn output_for(
        &self,
        agent: &str,
        registration: &Registration,
        cgroup: Cgroup,
        own_engine: Option<Engine>,
    ) -> EventOutput<'w> {
        let engine = own_engine.map_or_else(|| Rc::clone(&self.engine), Rc::new);
        let metrics = Some(Rc::clone(&self.metrics));
        EventOutput::new(self.writer, engine, registration.trust, agent, cgroup, false, metrics)
    }

    fn supervise(&mut self, supervised: Supervised<'w>) {
        self.names.insert(supervised.output.agent_id.clone(), supervised.cgroup_id);
        self.agents.insert(supervised.cgroup_id, supervised);
    }

    /// Watches the agent's cgroup with its probe plan and deny rules.
    fn watch(
        &mut self,
        registration: &Registration,
        cgroup: &Cgroup,
        own_rules: Option<&Rules>,
    ) -> Result<(u64, String, Vec<String>), String> {
        let cgroup_id = cgroup.id().map_err(|error| error.to_string())?;
        let dir = cgroup.dir().map_err(|error| error.to_string())?;
        let mode = if registration.observe { governor_common::mode::OBSERVE } else { governor_common::mode::ENFORCE };
        let slot = governor_common::AgentSlot { slot: 0, mode };
        self.probes
            .watch(cgroup_id, &registration.agent, &dir, slot, &registration.plan)
            .map_err(|error| error.to_string())?;
        let by_inode = self.probes.backend == probes::Backend::Lsm;
        let denies = own_rules.unwrap_or(&self.rules).kernel_denies(registration.trust, by_inode);
        let enforced = match self.probes.deny(cgroup_id, &denies) {
            Ok(enforced) => enforced,
            Err(error) => {
                self.probes.unwatch(cgroup_id);
                return Err(error.to_string());
            }
        };
        Ok((cgroup_id, enforced, denies.userspace_only))
    }

    /// The agent's `governor run` says it exited (or, `code` None, the daemon found its cgroup
    /// empty with nobody to say so): its last events are decided and recorded, then the exit.
    fn exited(
        &mut self,
        agent: &str,
        code: Option<i32>,
        ring: &mut RingBuf<MapData>,
    ) -> Result<serde_json::Value, String> {
        let Some(cgroup_id) = self.names.get(agent).copied() else {
            return Err(format!("unknown agent '{agent}'"));
        };
        // Supervision ends when the agent has, not when someone says so.
        let running = self.agents.get(&cgroup_id).is_some_and(|s| s.output.control().populated().unwrap_or(false));
        if running {
            return Err(format!("agent '{agent}' still has processes in its cgroup"));
        }
        // Events still in the ring buffer belong before the exit.
        crate::supervise::drain(ring, &mut Dispatch { daemon: self });
        self.names.remove(agent);
        let Some(mut supervised) = self.agents.remove(&cgroup_id) else {
            return Err(format!("unknown agent '{agent}'"));
        };
        self.probes.unwatch(cgroup_id);
        while supervised.output.write_pending(usize::MAX) {}
        supervised.output.finish();
        let why = match code {
            Some(code @ 0..=127) => format!("exit status {code}"),
            Some(code) => format!("exit status {code} (signal {})", code - 128),
            None => "ended with no governor run to report its exit status".to_owned(),
        };
        supervised.output.record_action("exit", if code.is_some() { "kernel" } else { "governor daemon" }, &why);
        let _ = std::fs::remove_file(self.state_file(agent));
        tracing::info!(agent = %agent, why = %why, events = supervised.output.tally.events, "agent exited");
        Ok(serde_json::json!({}))
    }

    /// `governor suspend|resume|kill` through the daemon: acts on the agent's cgroup, keeps
    /// the engine's view in step, records who and why.
    fn act(&mut self, agent: &str, what: Act, actor: &str, reason: &str) -> Result<serde_json::Value, String> {
        let Some(supervised) = self.names.get(agent).and_then(|id| self.agents.get_mut(id)) else {
            return Err(format!("unknown agent '{agent}': not supervised by this daemon"));
        };
        let why = what.why(reason);
        if what == Act::Resume
            && let Some(failure) = self.writer.failure()
        {
            return Err(format!("audit store failing ({failure}); not resuming an agent without a record of it"));
        }
        what.apply(supervised.output.control()).map_err(|error| error.to_string())?;
        match what {
            Act::Suspend => {
                supervised.output.agent.suspended = true;
                supervised.output.agent.suspended_since = monotonic_ns();
            }
            Act::Resume => supervised.output.agent.suspended = false,
            Act::Kill => {}
        }
        supervised.output.record_action(what.name(), actor, &why);
        tracing::info!(agent = %agent, action = what.name(), by = %actor, why = %why, "agent control");
        Ok(serde_json::json!({}))
    }

    /// Loads the policy again and puts it in force for every agent, or keeps the old one.
    fn reload(&mut self, ring: &mut RingBuf<MapData>) -> Result<usize, String> {
        let result = self.try_reload(ring);
        self.metrics.reload(result.is_ok());
        match &result {
            Ok(rules) => tracing::info!(rules, agents = self.agents.len(), "policy reloaded"),
            Err(error) => tracing::error!(error = %error, "policy reload refused; the policy in force stays"),
        }
        result
    }

    fn try_reload(&mut self, ring: &mut RingBuf<MapData>) -> Result<usize, String> {
        let source = RingSource::locate(self.rings.as_deref());
        let (rules, engine) = engine::load(&source, &[]).map_err(|error| error.to_string())?;
        // Every agent's rules are built before any is put in force. An agent whose own
        // `--policy` files no longer load (removed, edited badly) keeps the rules it has.
        let mut own = HashMap::new();
        let mut kept = Vec::new();
        for (id, supervised) in &self.agents {
            match self.rules_for(&supervised.registration.overlays) {
                Ok(Some(own_policy)) => {
                    own.insert(*id, own_policy);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(agent = %supervised.output.agent_id, error = %error, "its --policy files do not load; it keeps the rules in force");
                    kept.push(*id);
                }
            }
        }
        let count = rules.rules.len();
        self.engine = Rc::new(engine);
        self.rules = rules;
        // Events decided until now were decided under the old rules.
        crate::supervise::drain(ring, &mut Dispatch { daemon: self });
        let ids: Vec<u64> = self.agents.keys().copied().collect();
        let by_inode = self.probes.backend == probes::Backend::Lsm;
        for id in ids.into_iter().filter(|id| !kept.contains(id)) {
            let (own_rules, own_engine) = own.remove(&id).unzip();
            let Some(supervised) = self.agents.get_mut(&id) else { continue };
            supervised.output.swap_engine(own_engine.map_or_else(|| Rc::clone(&self.engine), Rc::new));
            let denies =
                own_rules.as_ref().unwrap_or(&self.rules).kernel_denies(supervised.registration.trust, by_inode);
            supervised.own_rules = own_rules;
            if let Err(error) = self.probes.deny(id, &denies) {
                tracing::error!(agent = %supervised.output.agent_id, error = %error, "kernel deny rules not replaced");
            }
        }
        Ok(count)
    }

    /// A control connection closed: an agent whose `governor run` it was is orphaned until
    /// one attaches again or its cgroup empties.
    fn connection_closed(&mut self, connection: u64) {
        for supervised in self.agents.values_mut() {
            if supervised.connection == Some(connection) {
                supervised.connection = None;
                supervised.orphaned_since = Some(Instant::now());
                tracing::warn!(agent = %supervised.output.agent_id, "its governor run went away");
            }
        }
    }

    /// Orphaned agents whose cgroup has emptied have ended; their exit is recorded without a
    /// status.
    fn check_orphans(&mut self, ring: &mut RingBuf<MapData>) {
        let ended: Vec<String> = self
            .agents
            .values()
            .filter(|supervised| {
                supervised.orphaned_since.is_some_and(|since| since.elapsed() >= Duration::from_millis(100))
            })
            .filter(|supervised| !supervised.output.control().populated().unwrap_or(false))
            .map(|supervised| supervised.output.agent_id.clone())
            .collect();
        for agent in ended {
            let path = self.cgroup_root.join(cgroup::BASE).join(&agent);
            let _ = std::fs::remove_dir(&path);
            let _ = self.exited(&agent, None, ring);
        }
    }

    /// Watches again the agents a previous daemon supervised that still run; records the end
    /// of those that ended meanwhile. The time without a supervisor is an incident.
    fn adopt(&mut self) {
        let alive_at = std::fs::read_to_string(self.state_dir.join("daemon.alive"))
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok());
        let gap_ns = alive_at.map(|at| audit::now_ns() - at);
        let Ok(entries) = std::fs::read_dir(&self.state_dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let registration =
                std::fs::read(&path).ok().and_then(|bytes| serde_json::from_slice::<Registration>(&bytes).ok());
            let Some(registration) = registration else {
                tracing::error!(file = %path.display(), "unreadable agent state; left in place");
                continue;
            };
            if let Err(error) = self.adopt_one(registration, gap_ns) {
                tracing::error!(file = %path.display(), error = %error, "agent not adopted");
            }
        }
    }

    fn adopt_one(&mut self, registration: Registration, gap_ns: Option<i64>) -> Result<(), String> {
        let agent = registration.agent.clone();
        let gap = gap_ns.map_or_else(|| "an unknown time".to_owned(), |ns| format!("{:.1} s", ns as f64 / 1e9));
        let live = Cgroup::open(&self.cgroup_root, &agent).ok().filter(|group| group.populated().unwrap_or(false));
        let Some(cgroup) = live else {
            let path = self.cgroup_root.join(cgroup::BASE).join(&agent);
            let _ = std::fs::remove_dir(&path);
            self.writer
                .write(audit::action(
                    &agent,
                    "exit",
                    "governor daemon",
                    "ended while no governor daemon ran; exit status unknown",
                ))
                .map_err(|error| error.to_string())?;
            let _ = std::fs::remove_file(self.state_file(&agent));
            tracing::info!(agent = %agent, "agent ended while no daemon ran");
            return Ok(());
        };
        let (own_rules, own_engine) = self.rules_for(&registration.overlays)?.unzip();
        let frozen = cgroup.frozen().unwrap_or(false);
        let (cgroup_id, _, _) = self.watch(&registration, &cgroup, own_rules.as_ref())?;
        let mut output = self.output_for(&agent, &registration, cgroup, own_engine);
        output.agent.suspended = frozen;
        let reason = format!(
            "no supervisor for {gap}: the agent ran confined by Landlock and seccomp, but its events in that time were not seen and probe rules (UDP narrowing, kernel deny rules) lapsed"
        );
        output.record_incident(
            "supervisor-gap",
            "high",
            "audit",
            &reason,
            serde_json::json!({ "gap_ns": gap_ns, "previous_heartbeat_ns": gap_ns.map(|ns| audit::now_ns() - ns) }),
        );
        let expired = gap_ns.is_none_or(|ns| ns as u128 > self.config.loss_grace.0.as_nanos());
        if self.config.on_supervisor_loss == Loss::Kill && expired {
            let killed = output.control().kill();
            output.record_action(
                "kill",
                "governor daemon",
                &format!("supervisor gone for {gap}, longer than loss_grace (on_supervisor_loss = kill)"),
            );
            tracing::warn!(agent = %agent, gap = %gap, ok = killed.is_ok(), "agent killed: on_supervisor_loss = kill");
        } else {
            output.record_action(
                "adopt",
                "governor daemon",
                &format!("watched again after {gap} without a supervisor"),
            );
            tracing::info!(agent = %agent, gap = %gap, suspended = frozen, "agent adopted");
        }
        self.supervise(Supervised {
            output,
            registration,
            cgroup_id,
            own_rules,
            connection: None,
            orphaned_since: Some(Instant::now()),
        });
        Ok(())
    }

    fn state_file(&self, agent: &str) -> PathBuf {
        self.state_dir.join(format!("{agent}.json"))
    }

    /// Keeps the registration where the next daemon finds it (written whole, then renamed).
    fn save(&self, registration: &Registration) {
        let path = self.state_file(&registration.agent);
        let temporary = path.with_extension("json.new");
        let written = serde_json::to_vec(registration)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temporary, bytes))
            .and_then(|()| std::fs::rename(&temporary, &path));
        if let Err(error) = written {
            tracing::error!(file = %path.display(), error = %error, "agent state not saved: a restarted daemon will not adopt it");
        }
    }

    /// The time the daemon was last alive, for the next one to measure the gap.
    fn heartbeat(&self) {
        let path = self.state_dir.join("daemon.alive");
        let _ = std::fs::write(&path, audit::now_ns().to_string());
    }

    fn report_drops(&mut self) {
        let Ok(counters) = self.probes.counters() else { return };
        if counters.dropped > self.reported_drops {
            let count = counters.dropped - self.reported_drops;
            self.reported_drops = counters.dropped;
            Dispatch { daemon: self }.lost(count);
            // Each agent answers for its own drops.
            let Ok(fresh) = crate::supervise::new_drops(&mut self.probes, &mut self.reported_by_agent) else { return };
            for (cgroup_id, count) in fresh {
                Dispatch { daemon: self }.lost_in(cgroup_id, count);
            }
        }
    }

    /// Agents by state, for the metrics gauge.
    fn agent_states(&self) -> Vec<(&'static str, u64)> {
        let mut running = 0;
        let mut suspended = 0;
        for supervised in self.agents.values() {
            if state_of(supervised) == "suspended" {
                suspended += 1;
            } else {
                running += 1;
            }
        }
        vec![("running", running), ("suspended", suspended)]
    }

    /// On the way out: what was decided is recorded; agents stay as they are.
    fn stop(&mut self, ring: &mut RingBuf<MapData>) {
        crate::supervise::drain(ring, &mut Dispatch { daemon: self });
        for supervised in self.agents.values_mut() {
            while supervised.output.write_pending(usize::MAX) {}
            supervised.output.finish();
            supervised.output.record_action("unwatched", "governor daemon", "the daemon stopped; the agent runs on");
        }
        self.heartbeat();
    }
}

fn state_of(supervised: &Supervised<'_>) -> &'static str {
    if supervised.output.control().frozen().unwrap_or(false) { "suspended" } else { "running" }
}

/// Sends a service answer to its door.
fn send(reply: Reply, answer: service::Answer) {
    match reply {
        Reply::Socket(line) => {
            let _ = line.send(answer_line(answer));
        }
        Reply::Http(reply) => {
            let _ = reply.send(answer);
        }
    }
}

/// The daemon as the ring buffer's sink: each event goes to its agent by cgroup id.
struct Dispatch<'d, 'w> {
    daemon: &'d mut Daemon<'w>,
}

impl Sink for Dispatch<'_, '_> {
    fn event(&mut self, event: &Event) {
        self.events(vec![event.clone()]);
        while self.write_pending(usize::MAX) {}
    }

    fn events(&mut self, batch: Vec<Event>) {
        let mut by_agent: Vec<(u64, Vec<Event>)> = Vec::new();
        for event in batch {
            let id = event.header().cgroup_id;
            if !self.daemon.agents.contains_key(&id) {
                self.daemon.metrics.unattributed.inc();
                continue;
            }
            match by_agent.iter_mut().find(|(agent, _)| *agent == id) {
                Some((_, events)) => events.push(event),
                None => by_agent.push((id, vec![event])),
            }
        }
        for (id, events) in by_agent {
            if let Some(supervised) = self.daemon.agents.get_mut(&id) {
                supervised.output.events(events);
            }
        }
    }

    fn write_pending(&mut self, max: usize) -> bool {
        let mut more = false;
        for supervised in self.daemon.agents.values_mut() {
            more |= supervised.output.write_pending(max);
        }
        more
    }

    /// The ring buffer is shared: a drop cannot be pinned on one agent, so every agent
    /// running when it happened gets the record.
    fn lost(&mut self, count: u64) {
        let metrics = &self.daemon.metrics;
        metrics.dropped.inc_by(count);
        tracing::error!(count, "events dropped: ring buffer full");
    }

    /// The agent whose events they were answers for them (an incident, paused until the
    /// backlog is read); a process in no agent's cgroup makes no events.
    fn lost_in(&mut self, cgroup_id: u64, count: u64) {
        match self.daemon.agents.get_mut(&cgroup_id) {
            Some(supervised) => {
                supervised.output.tally.lost += count;
                supervised.output.events_lost(count);
            }
            None => tracing::error!(cgroup_id, count, "events dropped for an agent no longer watched"),
        }
    }

    fn undecodable(&mut self, error: &DecodeError) {
        let metrics = &self.daemon.metrics;
        metrics.undecodable.inc();
        tracing::error!(error = %error, "undecodable event");
    }
}

fn refusal(error: &str) -> String {
    let mut line = serde_json::json!({ "ok": false, "error": error }).to_string();
    line.push('\n');
    line
}

fn peer_of(stream: &UnixStream) -> Option<Peer> {
    let fd = stream.as_raw_fd();
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let credentials = nix::sys::socket::getsockopt(&borrowed, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    Some(Peer { pid: credentials.pid(), uid: credentials.uid(), gid: credentials.gid() })
}

/// `SO_PEERPIDFD` (Linux 6.5): a pidfd of the process that connected.
const SO_PEERPIDFD: libc::c_int = 77;

fn peer_pidfd(stream: &impl std::os::fd::AsRawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    let mut pidfd: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(2) into a c_int of the size given, on the stream's descriptor.
    let ret = unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, SO_PEERPIDFD, (&raw mut pidfd).cast(), &raw mut len)
    };
    // SAFETY: on success the kernel returned a new descriptor that this process now owns.
    (ret == 0 && pidfd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd) })
}

/// Whether the process of `pidfd` is still running (pidfd_send_signal with signal 0).
fn alive(pidfd: &std::os::fd::OwnedFd) -> bool {
    // SAFETY: pidfd_send_signal(2) with signal 0 only checks; the descriptor is a pidfd.
    let ret = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), 0, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    ret == 0
}

/// Longest request line accepted.
const MAX_LINE: u64 = 1 << 20;

async fn read_lines(id: u64, read: tokio::net::unix::OwnedReadHalf, sender: mpsc::UnboundedSender<Message>) {
    let mut reader = tokio::io::BufReader::new(read.take(u64::MAX));
    loop {
        let mut line = String::new();
        reader.get_mut().set_limit(MAX_LINE);
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) if !line.ends_with('\n') => break,
            Ok(_) => {
                if sender.send(Message::Line(id, line)).is_err() {
                    break;
                }
            }
        }
    }
    let _ = sender.send(Message::Closed(id));
}

async fn write_lines(mut write: tokio::net::unix::OwnedWriteHalf, mut lines: mpsc::UnboundedReceiver<String>) {
    while let Some(line) = lines.recv().await {
        if write.write_all(line.as_bytes()).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

/// Tells systemd (`Type=notify`) about the daemon's state, when it started the daemon, or
/// the `governor run` that started it on first use. sd_notify(3) allows a socket in the
/// abstract namespace (`@NAME`, what `governor run` gives): the sd-notify crate sends to
/// pathnames only, so that one is sent to here, in the same format.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    let result = match std::env::var("NOTIFY_SOCKET") {
        Ok(name) if name.starts_with('@') => notify_abstract(&name[1..], states),
        _ => sd_notify::notify(states),
    };
    if let Err(error) = result {
        tracing::warn!(error = %error, "sd_notify failed");
    }
}

fn notify_abstract(name: &str, states: &[sd_notify::NotifyState<'_>]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt as _;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let message: String = states.iter().map(|state| format!("{state}\n")).collect();
    std::os::unix::net::UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &address).map(|_| ())
}

/// Half of systemd's `WATCHDOG_USEC`, when the watchdog is on for this process.
fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|interval| interval / 2)
}

/// Logs go to stderr, one event per line, without colour; without timestamps under
/// journald, which adds its own. A line stderr refuses is dropped: tracing-subscriber would
/// otherwise report the failure with `eprintln!`, which panics when stderr fails.
pub fn init_logging() {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .log_internal_errors(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GOVERNOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    let _ = if journald { builder.without_time().try_init() } else { builder.try_init() };
    let _ = std::io::stderr().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_settings_parse_and_bad_ones_name_the_line() {
        let config: Config =
            policy::parse(Path::new("governor.toml"), "audit_max_age = \"90d\"\naudit_max_size = \"2GiB\"\n")
                .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.audit_max_age, Some(Duration::from_secs(90 * 86400)));
        assert_eq!(config.audit_max_size, Some(2 << 30));
        let bad =
            policy::parse::<Config>(Path::new("governor.toml"), "loss_grace = \"1s\"\naudit_max_size = \"huge\"\n");
        assert!(bad.is_err_and(|error| error.to_string().starts_with("governor.toml:2:")));
    }

    #[test]
    fn service_answers_become_lines_with_ok_and_refusals_keep_their_field() {
        let line = answer_line(Ok(serde_json::json!({ "agent": "a" })));
        assert_eq!(line, "{\"agent\":\"a\",\"ok\":true}\n");
        let line = answer_line(Err(ApiError::bad("limit", "limit must be at least 1")));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(value["ok"], false);
        assert_eq!(value["field"], "limit");
        assert_eq!(value["kind"], "bad-request");
        let parsed: ApiError = serde_json::from_value(value).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(parsed.kind.status(), 400);
    }

    #[test]
    fn a_peer_pidfd_tells_a_live_peer_from_one_that_has_exited() {
        // Our own end's peer is this process: alive.
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap_or_else(|error| panic!("{error}"));
        match peer_pidfd(&ours) {
            Some(pidfd) => assert!(alive(&pidfd)),
            None => println!("no SO_PEERPIDFD on this kernel (before 6.5): the pid-reuse check is skipped"),
        }
        // A child that has exited and been reaped: its pidfd says so.
        let mut child = std::process::Command::new("true").spawn().unwrap_or_else(|error| panic!("{error}"));
        // SAFETY: pidfd_open(2) on our own child, which is not reaped yet.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        assert!(raw >= 0, "pidfd_open");
        // SAFETY: a new descriptor this process owns.
        let pidfd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw as i32) };
        let _ = child.wait();
        assert!(!alive(&pidfd));
    }
}
