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
//!
//! Here: starting up (settings checked, probes loaded, sockets bound, agents adopted). The
//! loop and the control socket are `serve`, the service calls it answers `calls`, the
//! agents' lifecycle `agents`, policy reloads `reload`, the options and the settings
//! file `config`; [`control`] is the socket's protocol and its client side, [`http`],
//! [`mcp`] and [`dashboard`] the other doors, [`door`] what those share.

mod agents;
mod calls;
mod config;
pub mod control;
pub mod dashboard;
pub mod door;
pub mod http;
pub mod mcp;
mod reload;
mod serve;

use std::{
    collections::HashMap,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use nix::sys::{
    signal::{SigSet, SigmaskHow, Signal, sigprocmask},
    signalfd::{SfdFlags, SignalFd},
};

use crate::{
    agent::EventOutput,
    audit, cgroup,
    engine::{self, Engine, Rules},
    exit,
    metrics::Metrics,
    policy::RingSource,
    probes::{self, Probes},
    service,
};

use self::control::Registration;

pub use self::config::Options;
use self::{
    config::{Config, load_config},
    serve::Doors,
};

/// Everything `governor daemon` needs, checked before anything starts.
pub struct Settings {
    pub socket: PathBuf,
    pub audit_db: PathBuf,
    pub rings: Option<PathBuf>,
    pub options: Options,
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

type Failure = (i32, String);

fn usage(message: impl std::fmt::Display) -> Failure {
    (exit::USAGE, message.to_string())
}

fn failure(message: impl std::fmt::Display) -> Failure {
    (exit::FAILURE, message.to_string())
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
