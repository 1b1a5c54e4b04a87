//! `governor run`: confine one agent and supervise it until it and its descendants are gone.
//!
//! Everything that can fail for a user's reason (trust level, policy files, workspace, user,
//! kernel support) is checked before anything is created, so bad input leaves nothing behind.
//! Then, in order: private temp dir, Landlock ruleset and seccomp BPF (built in the parent),
//! cgroup, fork. The child joins the cgroup, drops privileges, sets `no_new_privs`, enters the
//! Landlock domain, installs seccomp last and `exec`s. The parent is single-threaded up to the
//! fork, so the child may allocate.

use std::{
    ffi::{CString, OsStr, OsString},
    fs::File,
    io::{Read as _, Write as _},
    os::unix::{
        ffi::{OsStrExt as _, OsStringExt as _},
        fs::PermissionsExt as _,
    },
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nix::{
    errno::Errno,
    sys::{
        signal::{SigSet, SigmaskHow, Signal, sigprocmask},
        signalfd::{SfdFlags, SignalFd},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::{ForkResult, Pid, fork},
};

use crate::{
    agent::EventOutput,
    audit,
    cgroup::{self, Cgroup},
    control::{Client, Hello},
    engine,
    policy::{self, Overlay, PathVars, RingSource, Trust},
    probes::{self, Probes},
    sandbox::{
        Confinement, Inputs, Kernel, Unenforceable, carve::RealFs, landlock, privileges, privileges::Identity, seccomp,
    },
    supervise,
};

/// Exit codes of governor itself (the agent's own are passed through).
pub mod exit {
    /// Bad input, or a ring this kernel cannot enforce: nothing was started.
    pub const USAGE: i32 = 2;
    /// governor failed to set up or confine the agent; the agent did not run.
    pub const FAILURE: i32 = 125;
    /// The ring forbids executing the command (or it is not executable).
    pub const CANNOT_EXECUTE: i32 = 126;
    /// The command was not found.
    pub const NOT_FOUND: i32 = 127;
}

/// Signals passed on to the agent.
const FORWARDED: [Signal; 6] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Policy(#[from] policy::Error),
    #[error(transparent)]
    Unenforceable(#[from] Unenforceable),
    #[error(transparent)]
    User(#[from] privileges::Error),
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error(transparent)]
    Landlock(#[from] landlock::Error),
    #[error(transparent)]
    Seccomp(#[from] seccomp::Error),
    #[error(transparent)]
    Probes(#[from] probes::Error),
    #[error(transparent)]
    Supervise(#[from] supervise::Error),
    #[error("{0}; governor does not run an agent it cannot audit")]
    Audit(#[from] audit::Error),
    #[error(transparent)]
    Daemon(#[from] crate::control::Error),
    #[error(transparent)]
    Warden(#[from] crate::warden::Error),
    #[error("{what}: {errno}")]
    Sys { what: String, errno: Errno },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Policy(_) | Error::Unenforceable(_) | Error::User(_) => exit::USAGE,
            Error::Cgroup(cgroup::Error::NoCgroup2 | cgroup::Error::Exists { .. }) => exit::USAGE,
            Error::Probes(probes::Error::NoLsm(_) | probes::Error::NoFentry(_) | probes::Error::NoNotify(_)) => {
                exit::USAGE
            }
            // --socket names no daemon: nothing was started.
            Error::Daemon(crate::control::Error::Connect { .. }) => exit::USAGE,
            Error::Audit(audit::Error::Lost { .. }) => exit::FAILURE,
            Error::Audit(_) => exit::USAGE,
            _ => exit::FAILURE,
        }
    }
}

fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> Error {
    let what = what.into();
    move |errno| Error::Sys { what, errno }
}

/// What the user asked for: `governor run`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Request {
    /// Trust level: low, medium, high or admin.
    #[arg(long, default_value = "low", value_parser = crate::parse_trust)]
    pub trust: Trust,
    /// The directory the agent may write [default: the current directory].
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Extra paths, ports and secrets on top of the ring (repeatable).
    #[arg(long = "policy", value_name = "FILE")]
    pub policies: Vec<PathBuf>,
    /// A name for the agent [default: generated from the command].
    #[arg(long, value_name = "ID")]
    pub agent_id: Option<String>,
    /// Run the agent as this user [default: the invoking user under sudo, else unchanged].
    #[arg(long, value_name = "NAME|UID")]
    pub user: Option<String>,
    /// The ring directory (the global --rings).
    #[arg(skip)]
    pub rings: Option<PathBuf>,
    /// The audit store (the global --audit-db).
    #[arg(skip)]
    pub audit_db: PathBuf,
    /// Run even if the kernel cannot enforce all of the ring, and say what is not enforced.
    #[arg(long)]
    pub best_effort: bool,
    /// Say how the agent is confined.
    #[arg(long, short)]
    pub verbose: bool,
    /// Kernel event probes: BPF LSM where the kernel has it, else tracepoints (auto).
    #[arg(long, value_enum, default_value = "auto")]
    pub probes: probes::Choice,
    /// Print every kernel event of the agent as a JSON line on stderr.
    #[arg(long)]
    pub trace: bool,
    /// Probe rules (socket hooks, LSM) report what they would deny instead of denying.
    /// Landlock and seccomp still enforce the ring.
    #[arg(long)]
    pub observe: bool,
    /// Supervise the agent in this process even when a governor daemon runs (--trace and
    /// --probes off imply it).
    #[arg(long)]
    pub standalone: bool,
    /// The daemon's socket (the global --socket).
    #[arg(skip)]
    pub socket: Option<PathBuf>,
    /// The agent's cache directory ($CACHE: XDG_CACHE_HOME, npm_config_cache, CARGO_HOME):
    /// in its temp dir and removed with it (ephemeral), or kept for the next run of the same
    /// --agent-id (persist).
    #[arg(long, value_enum, default_value = "ephemeral")]
    pub cache: CacheMode,
    /// The agent's command line.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Where an agent's caches live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheMode {
    /// `$TMPDIR/cache`, removed when the agent ends.
    Ephemeral,
    /// `cache/<agent-id>` beside the audit store, kept across runs of the same agent id.
    Persist,
}

/// Everything loaded and checked before anything is created.
pub struct Prepared {
    pub request: Request,
    pub agent_id: String,
    pub workspace: PathBuf,
    pub identity: Identity,
    pub ring: policy::Ring,
    pub secrets: Vec<policy::Secret>,
    /// The `[env]` table of `secrets.toml`: which variables the agent does not get.
    pub env: policy::EnvPolicy,
    pub overlays: Vec<Overlay>,
    /// The policy engine's rules: shipped, then the overlays'.
    pub rules: engine::Rules,
    /// Compiled from `rules` (taken by a standalone run; a run through the daemon has no use
    /// for it beyond the policy having compiled).
    pub engine: engine::Engine,
    pub kernel: Kernel,
    pub cgroup_root: PathBuf,
}

/// Checks the request; no side effects.
pub fn prepare(request: Request) -> Result<Prepared, Error> {
    if request.command.is_empty() {
        return Err(Error::Usage("no command given: governor run [OPTIONS] -- CMD [ARGS...]".into()));
    }
    let agent_id = match &request.agent_id {
        Some(id) => validate_agent_id(id)?,
        None => generate_agent_id(&request.command[0]),
    };
    let workspace = match &request.workspace {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().map_err(|source| Error::Io { path: ".".into(), source })?,
    };
    let workspace = workspace.canonicalize().ok().filter(|dir| dir.is_dir()).ok_or_else(|| {
        Error::Usage(format!("workspace {} does not exist or is not a directory", workspace.display()))
    })?;
    if workspace == Path::new("/") {
        return Err(Error::Usage("workspace / would give the agent the whole filesystem; pass --workspace DIR".into()));
    }
    let source = RingSource::locate(request.rings.as_deref());
    let ring = source.ring(request.trust)?;
    let policy::SecretsFile { secret: secrets, env } = source.secrets_file()?;
    let overlays = request.policies.iter().map(|path| policy::load_overlay(path)).collect::<Result<Vec<_>, _>>()?;
    let (rules, engine) = engine::load(&source, &overlays)?;
    let identity = Identity::resolve(request.user.as_deref())?;
    let kernel = Kernel::probe();
    let cgroup_root = cgroup::mount_point()?;
    Ok(Prepared {
        agent_id,
        workspace,
        identity,
        ring,
        secrets,
        env,
        overlays,
        rules,
        engine,
        kernel,
        cgroup_root,
        request,
    })
}

pub fn validate_agent_id(id: &str) -> Result<String, Error> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte));
    if valid {
        Ok(id.to_owned())
    } else {
        Err(Error::Usage(format!("agent id '{id}' must be 1 to 64 of [A-Za-z0-9._-], not starting with '.'")))
    }
}

/// `<command>-<pid>-<nanoseconds>`: unique on this machine, and says what the agent is.
fn generate_agent_id(command: &OsStr) -> String {
    let base: String = Path::new(command)
        .file_name()
        .map(|name| {
            name.to_string_lossy()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .take(24)
                .collect()
        })
        .filter(|name: &String| !name.is_empty())
        .unwrap_or_else(|| "agent".into());
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|time| time.subsec_nanos()).unwrap_or(0);
    format!("{base}-{}-{nanos:08x}", std::process::id())
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    /// A fresh private directory for the agent, owned by its user, mode 0700.
    fn create(agent_id: &str, identity: &Identity) -> Result<TempDir, Error> {
        let base = std::env::temp_dir();
        let template = base.join(format!("governor-{agent_id}-XXXXXX"));
        let path =
            nix::unistd::mkdtemp(&template).map_err(sys(format!("creating a temp dir in {}", base.display())))?;
        let dir = TempDir(path);
        if identity.switch {
            nix::unistd::chown(&dir.0, Some(identity.uid.into()), Some(identity.gid.into()))
                .map_err(sys(format!("chown {}", dir.0.display())))?;
        }
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700))
            .map_err(|source| Error::Io { path: dir.0.clone(), source })?;
        Ok(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ring as it applies to this agent (for `run --verbose` and `policy show`).
pub fn confinement(prepared: &Prepared, tmpdir: &Path) -> Confinement {
    let vars = PathVars {
        home: prepared.identity.home.clone(),
        workspace: prepared.workspace.clone(),
        tmpdir: tmpdir.to_path_buf(),
        tty: controlling_tty(),
        cache: cache_dir(prepared, tmpdir),
    };
    // The agent's own home is carved whatever the passwd file says of it.
    let mut homes = privileges::all_homes();
    homes.push(crate::sandbox::Home { path: prepared.identity.home.clone(), may_gain_secrets: true });
    let inputs = Inputs {
        ring: &prepared.ring,
        secrets: &prepared.secrets,
        overlays: &prepared.overlays,
        vars: &vars,
        homes: &homes,
    };
    Confinement::plan(&inputs, &RealFs)
}

/// The agent's cache directory (`$CACHE`): see [`CacheMode`].
pub fn cache_dir(prepared: &Prepared, tmpdir: &Path) -> PathBuf {
    match prepared.request.cache {
        CacheMode::Ephemeral => tmpdir.join("cache"),
        CacheMode::Persist => {
            prepared.request.audit_db.parent().unwrap_or(Path::new(".")).join("cache").join(&prepared.agent_id)
        }
    }
}

/// The environment that points tools' caches into `$CACHE`, and where each goes: tools
/// write caches under `$HOME` (`~/.cache`, `~/.npm`, `~/.cargo/registry`), which no ring
/// below admin lets them write.
fn cache_env(cache: &Path) -> [(&'static str, PathBuf); 3] {
    [
        ("XDG_CACHE_HOME", cache.join("xdg")),
        ("npm_config_cache", cache.join("npm")),
        ("CARGO_HOME", cache.join("cargo")),
    ]
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { path, source }
}

/// Makes the cache directory and its parts, owned by the agent's user, before the ring is
/// planned: a rule on a path that does not exist is left out, and a persistent cache is new
/// on an agent id's first run. Returns whether it made the cache directory itself.
///
/// A persistent cache is the agent's own from its last run: governor, as root, never follows
/// a symbolic link there (each part is made and opened relative to its parent's descriptor,
/// `O_NOFOLLOW`), replaces a link or file where a part goes, and hands over only what it made
/// or what the agent's user already owns.
fn make_cache(prepared: &Prepared, cache: &Path) -> Result<bool, Error> {
    use std::os::unix::fs::DirBuilderExt as _;
    let fresh = cache.symlink_metadata().is_err();
    let (Some(parent), Some(name)) = (cache.parent(), cache.file_name()) else {
        return Err(Error::Usage(format!("{}: not a directory for a cache", cache.display())));
    };
    // Beside the audit store, the directory of every agent's cache (root's): others may pass
    // through to their own (--user), not list it.
    if prepared.request.cache == CacheMode::Persist {
        std::fs::DirBuilder::new().recursive(true).mode(0o711).create(parent).map_err(io_error(parent))?;
    }
    let parent = nix::fcntl::open(parent, cache_dir_flags(), nix::sys::stat::Mode::empty())
        .map_err(sys(format!("opening {}", parent.display())))?;
    let root = cache_part(&parent, Path::new(name), cache, &prepared.identity)?;
    for part in cache_env(cache).iter().map(|(_, dir)| dir.clone()).chain([cache.join("home")]) {
        if let Some(name) = part.file_name() {
            cache_part(&root, Path::new(name), &part, &prepared.identity)?;
        }
    }
    Ok(fresh)
}

fn cache_dir_flags() -> nix::fcntl::OFlag {
    use nix::fcntl::OFlag;
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// The directory `name` in `parent` (`path` for messages), made if missing, opened without
/// following a link, owned by the agent's user.
fn cache_part(
    parent: &std::os::fd::OwnedFd,
    name: &Path,
    path: &Path,
    identity: &Identity,
) -> Result<std::os::fd::OwnedFd, Error> {
    use nix::{fcntl::openat, sys::stat, unistd};
    let mode = stat::Mode::from_bits_truncate(0o700);
    let mkdir = || match stat::mkdirat(parent, name, mode) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(errno) => Err(sys(format!("mkdir {}", path.display()))(errno)),
    };
    let mut made = mkdir()?;
    let directory = match openat(parent, name, cache_dir_flags(), stat::Mode::empty()) {
        Ok(directory) => directory,
        // A link or a file where a part of the cache goes: put there by an earlier run of the
        // agent. It is removed, never followed.
        Err(Errno::ELOOP | Errno::ENOTDIR) if !made => {
            unistd::unlinkat(parent, name, unistd::UnlinkatFlags::NoRemoveDir)
                .map_err(sys(format!("removing {}", path.display())))?;
            made = mkdir()?;
            openat(parent, name, cache_dir_flags(), stat::Mode::empty())
                .map_err(sys(format!("opening {}", path.display())))?
        }
        Err(errno) => return Err(sys(format!("opening {}", path.display()))(errno)),
    };
    if identity.switch {
        let owner = stat::fstat(&directory).map_err(sys(format!("stat {}", path.display())))?.st_uid;
        if !made && owner != identity.uid {
            return Err(Error::Usage(format!(
                "{}: owned by uid {owner}, not by the agent's user (uid {}): governor does not hand it over",
                path.display(),
                identity.uid
            )));
        }
        unistd::fchown(&directory, Some(identity.uid.into()), Some(identity.gid.into()))
            .map_err(sys(format!("chown {}", path.display())))?;
    }
    Ok(directory)
}

/// CARGO_HOME moves into the cache, so the user's cargo configuration and installed programs
/// are linked there where the ring can read them: what is read-only stays readable. The links
/// are made in the directory opened without following a link, and never replace an entry.
fn link_cargo_config(prepared: &Prepared, cache: &Path, landlock: &landlock::Plan) -> Result<(), Error> {
    let user_cargo =
        std::env::var_os("CARGO_HOME").map_or_else(|| prepared.identity.home.join(".cargo"), PathBuf::from);
    let cargo = cache.join("cargo");
    let directory = nix::fcntl::open(&cargo, cache_dir_flags(), nix::sys::stat::Mode::empty())
        .map_err(sys(format!("opening {}", cargo.display())))?;
    for name in ["config.toml", "config", "bin", "env"] {
        let target = user_cargo.join(name);
        if !target.exists() || !readable(&target, landlock) {
            continue;
        }
        match nix::unistd::symlinkat(&target, &directory, name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(errno) => return Err(sys(format!("linking {}", cargo.join(name).display()))(errno)),
        }
    }
    Ok(())
}

/// Whether the Landlock plan lets the agent read `path` (always, without a domain).
fn readable(path: &Path, plan: &landlock::Plan) -> bool {
    granted(path, plan, crate::policy::Access::Read)
}

/// Whether a rule of the plan gives `access` on `path` (always, without a domain).
fn granted(path: &Path, plan: &landlock::Plan, access: crate::policy::Access) -> bool {
    if !plan.enforce {
        return true;
    }
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    plan.paths.iter().any(|rule| path.starts_with(&rule.path) && rule.access.contains(&access))
}

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
    let found = match crate::control::discover(request.socket.as_deref()) {
        Ok(None) if crate::autostart::allowed(request) => start_daemon(request),
        // A daemon that stopped (idle) as this run connected: one is started again.
        Err(crate::control::Error::Io(_) | crate::control::Error::Refused(_)) if crate::autostart::allowed(request) => {
            start_daemon(request)
        }
        found => found?,
    };
    let Some((client, hello)) = found else {
        return Ok(None);
    };
    if !request.probes.accepts(hello.backend) {
        let wanted = clap::ValueEnum::to_possible_value(&request.probes);
        return Err(Error::Usage(format!(
            "--probes {}: the governor daemon at {} runs the {} probes (pass --standalone to load your own)",
            wanted.as_ref().map_or("?", clap::builder::PossibleValue::get_name),
            client.path.display(),
            hello.backend
        )));
    }
    Ok(Some((client, hello)))
}

/// The daemon started on first use ([`crate::autostart`]); when it cannot be started, this
/// run supervises its agent itself, as before there was a daemon.
fn start_daemon(request: &Request) -> Option<(Client, Hello)> {
    match crate::autostart::start(request) {
        Ok((client, hello)) => {
            say!(
                "governor: started the governor daemon (pid {}) for this and later runs; it stops after {} minutes without agents (log: {})",
                hello.pid,
                crate::autostart::IDLE_EXIT.as_secs() / 60,
                crate::autostart::log_path(request).display()
            );
            Some((client, hello))
        }
        // Another run's daemon may have won the race for the socket.
        Err(error) => crate::control::discover(None).ok().flatten().or_else(|| {
            say!("governor: {error}; supervising the agent in this process");
            None
        }),
    }
}

/// Runs the agent; returns governor's exit code. With a daemon, the daemon watches the
/// agent, decides on its events and records them; this process still starts, waits for and
/// cleans up after the agent, as standalone.
pub fn run(mut prepared: Prepared, mut daemon: Option<(Client, Hello)>) -> Result<i32, Error> {
    let verbose = prepared.request.verbose;
    // Fail closed: no store, no agent (the daemon has its own, opened when it started).
    let store = match daemon {
        Some(_) => None,
        None => Some(audit::Writer::open(&prepared.request.audit_db)?),
    };
    let mut probes = match daemon {
        Some(_) => None,
        None => Probes::load(prepared.request.probes)?,
    };
    let backend = match &daemon {
        Some((_, hello)) => Some(hello.backend),
        None => probes.as_ref().map(|p| p.backend),
    };
    // The temp dir must exist to be planned; it is removed again (drop) if the kernel cannot
    // enforce the ring, so a refusal leaves nothing behind.
    let tmpdir = TempDir::create(&prepared.agent_id, &prepared.identity)?;
    let cache = cache_dir(&prepared, &tmpdir.0);
    let cached = prepared.ring.trust != Trust::Admin;
    let fresh_cache = cached && make_cache(&prepared, &cache)?;
    let confinement = confinement(&prepared, &tmpdir.0);
    let enforcement = match confinement.check(&prepared.kernel, backend, prepared.request.best_effort) {
        Ok(enforcement) => enforcement,
        Err(error) => {
            // A refused ring leaves nothing behind: not a persistent cache made for it.
            if fresh_cache {
                let _ = std::fs::remove_dir_all(&cache);
            }
            return Err(error.into());
        }
    };
    for line in &enforcement.missing {
        say!("governor: not enforced: {line}");
    }
    if verbose {
        for line in &enforcement.partial {
            say!("governor: not enforced here: {line}");
        }
    }
    if cached {
        link_cargo_config(&prepared, &cache, &confinement.landlock)?;
    }
    let cgroup = Cgroup::create(&prepared.cgroup_root, &prepared.agent_id)?;
    // The daemon attaches the agent's hooks and records it while this process builds the
    // Landlock ruleset and the seccomp filters: the answer is read just before the fork.
    if let Some((client, hello)) = daemon.as_mut() {
        let registration = crate::control::Registration {
            agent: prepared.agent_id.clone(),
            trust: prepared.ring.trust,
            command: prepared.request.command.iter().map(|arg| arg.to_string_lossy().into_owned()).collect(),
            user: prepared.identity.name.clone(),
            observe: prepared.request.observe,
            overlays: prepared
                .request
                .policies
                .iter()
                .map(|path| path.canonicalize().unwrap_or_else(|_| path.clone()))
                .collect(),
            plan: probes::ProbePlan::of(&confinement, hello.backend),
        };
        client.send(&crate::control::Request::Register(registration))?;
    }
    let ruleset = confinement.landlock.build(prepared.kernel.landlock_abi, backend == Some(probes::Backend::Notify))?;
    let filters = confinement.seccomp.compile()?;
    if verbose {
        report(&prepared, &confinement, &tmpdir.0);
        match &probes {
            None if let Some((client, hello)) = &daemon => say!(
                "governor: probes: {} backend of the governor daemon (pid {}, {})",
                hello.backend,
                hello.pid,
                client.path.display()
            ),
            Some(probes) => {
                say!("governor: probes: {} backend", probes.backend);
                if let Some(reason) = &probes.fallback {
                    say!("governor: probes: BPF LSM not used: {reason}");
                }
                if let Some(reason) = &probes.no_fentry {
                    say!("governor: probes: events from the raw syscall tracepoints, fentry does not load: {reason}");
                }
                if let Some(reason) = &probes.cwd_walk {
                    say!("governor: probes: {reason}");
                }
            }
            None => say!("governor: probes: off"),
        }
    }

    let mut command = Command::new(&prepared, &tmpdir.0, &confinement.landlock)?;
    if confinement.drop_capabilities && confinement.landlock.enforce {
        command.masks = secret_masks(&confinement);
        if verbose {
            say!("governor: {} secrets masked in the agent's mount namespace", command.masks.len());
        }
    }
    if let Some(allow) = &confinement.unix_allow {
        use crate::sandbox::unix;
        let bound = unix::bound_sockets(&std::fs::read_to_string("/proc/net/unix").unwrap_or_default());
        let masks = unix::masks(&bound, &unix::allowed(allow), &[&prepared.workspace, &tmpdir.0]);
        if verbose {
            say!(
                "governor: UNIX sockets: {} of the {} bound now are masked (the ring's [[unix.connect]] and --policy list the rest)",
                masks.len(),
                bound.len()
            );
        }
        command.unix_masks = masks.iter().filter_map(|path| CString::new(path.as_os_str().as_bytes()).ok()).collect();
    }
    if confinement.drop_capabilities {
        // Made now if missing, so that the agent's mask covers a control socket created
        // while it runs too.
        use std::os::unix::fs::DirBuilderExt as _;
        let _ = std::fs::DirBuilder::new().mode(0o700).create(OsStr::from_bytes(CONTROL_DIR.to_bytes()));
    }
    let cgroup_dir = cgroup.dir()?;
    let mut procs = cgroup.procs_for_join()?;
    let cgroup_id = cgroup.id()?;
    if verbose {
        say!("governor: cgroup {} (id {cgroup_id})", cgroup.path().display());
    }
    if let Some((client, _)) = daemon.as_mut() {
        let answer = client.answer()?;
        if verbose {
            say!("governor: deny rules enforced in the kernel: {}", answer["enforced"].as_str().unwrap_or(""));
            for line in answer["userspace_only"].as_array().into_iter().flatten() {
                say!("governor: decided in userspace only: {}", line.as_str().unwrap_or(""));
            }
        }
    } else if let Some(probes) = probes.as_mut() {
        let mode =
            if prepared.request.observe { governor_common::mode::OBSERVE } else { governor_common::mode::ENFORCE };
        let slot = governor_common::AgentSlot { slot: 0, mode };
        probes.watch(
            cgroup_id,
            &prepared.agent_id,
            &cgroup_dir,
            slot,
            &probes::ProbePlan::of(&confinement, probes.backend),
        )?;
        let denies = prepared.rules.kernel_denies(prepared.ring.trust, probes.backend == probes::Backend::Lsm);
        let enforced = probes.deny(cgroup_id, &denies)?;
        if verbose {
            say!("governor: deny rules enforced in the kernel: {enforced}");
            for line in &denies.userspace_only {
                say!("governor: decided in userspace only: {line}");
            }
        }
    }

    // Standalone, governor is the agent's only supervisor: the warden kills the agent if
    // governor ends without cleaning up, and keeps the socket hooks attached until then.
    let mut warden = match daemon {
        Some(_) => None,
        None => Some(crate::warden::Warden::spawn(cgroup.path(), &prepared.agent_id, &prepared.request.audit_db)?),
    };

    // Block the forwarded signals and SIGCHLD before the fork, so none is lost between the
    // fork and the read loop; the child restores the mask before exec.
    let mut mask = SigSet::empty();
    for signal in FORWARDED {
        mask.add(signal);
    }
    mask.add(Signal::SIGCHLD);
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old_mask)).map_err(sys("blocking signals"))?;
    let signals =
        SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(sys("signalfd"))?;
    // Orphaned descendants are reparented to us (and not to init), so every one is reaped.
    // SAFETY: prctl with integer arguments on the calling process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(Error::Sys { what: "PR_SET_CHILD_SUBREAPER".into(), errno: Errno::last() });
    }
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;

    let (forked, in_cgroup) = fork_into(&cgroup_dir)?;
    let child = match forked {
        ForkResult::Child => {
            drop(report_read);
            let join = if in_cgroup { None } else { Some(&mut procs) };
            let failure = child_main(&prepared, &confinement, ruleset, &filters, &command, join, &old_mask);
            let mut report = File::from(report_write);
            let _ = report.write_all(&failure.encode());
            // SAFETY: leave the child without running the parent's destructors (they would
            // remove the cgroup and the temp dir).
            unsafe { libc::_exit(failure.exit_code()) }
        }
        ForkResult::Parent { child } => child,
    };
    // The child creates its Landlock domain: its records are the agent's.
    if let Some(audit) = probes.as_mut().and_then(|probes| probes.audit.as_mut()) {
        audit.watch(child.as_raw() as u32, cgroup_id);
    }
    drop(report_write);
    drop(procs);
    drop(cgroup_dir);
    if let Some(warden) = warden.as_mut() {
        warden.started();
    }

    if let Some((client, hello)) = daemon {
        let control = Cgroup::open(&prepared.cgroup_root, &prepared.agent_id)?;
        let mut link = DaemonLink::new(client, &hello, &prepared.agent_id, control);
        let status = supervise::run(child, signals, &FORWARDED, None, Some(&mut link), || cleanup(cgroup, verbose))?;
        let code = child_result(report_read, status, &prepared.request.command[0], prepared.ring.trust);
        report_exit(link, &hello, &prepared.agent_id, code);
        drop(tmpdir);
        return Ok(code);
    }
    let store = store.ok_or_else(|| Error::Usage("no audit store".into()))?;
    // The supervisor decides and freezes ahead of the agent it watches: a higher scheduling
    // priority (root only; the agent, already forked, keeps its own).
    // SAFETY: setpriority on the calling process.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) };
    let writer = store.start()?;
    let command_line: Vec<String> =
        prepared.request.command.iter().map(|arg| arg.to_string_lossy().into_owned()).collect();
    writer.write(audit::Row {
        table: "agents",
        values: vec![
            audit::text(&prepared.agent_id),
            audit::text(prepared.ring.trust.as_str()),
            audit::text(command_line.join(" ")),
            audit::text(&prepared.identity.name),
            audit::text(cgroup.path().display().to_string()),
            audit::text(probes.as_ref().map_or("off".to_owned(), |probes| probes.backend.to_string())),
            audit::int(audit::now_ns()),
        ],
    })?;
    for row in audit::policy_rows(&prepared.agent_id, &prepared.request.policies) {
        writer.write(row)?;
    }
    writer.write(audit::action(
        &prepared.agent_id,
        "start",
        &prepared.identity.name,
        &format!("governor run --trust {}", prepared.ring.trust),
    ))?;

    let engine = std::rc::Rc::new(std::mem::take(&mut prepared.engine));
    let mut output = EventOutput::new(
        &writer,
        engine,
        prepared.ring.trust,
        &prepared.agent_id,
        Cgroup::open(&prepared.cgroup_root, &prepared.agent_id)?,
        prepared.request.trace,
        None,
    );
    let events = probes.as_mut().map(|probes| supervise::Events::new(probes, &mut output));
    let status = supervise::run(child, signals, &FORWARDED, events, None, || cleanup(cgroup, verbose))?;
    let code = child_result(report_read, status, &prepared.request.command[0], prepared.ring.trust);
    output.finish();
    let exit_why = match code {
        0..=127 => format!("exit status {code}"),
        _ => format!("exit status {code} (signal {})", code - 128),
    };
    writer.write(audit::action(&prepared.agent_id, "exit", "kernel", &exit_why))?;
    if output.tally.lost > 0 {
        writer.write(audit::action(
            &prepared.agent_id,
            "events-lost",
            "probes",
            &format!("{} events dropped (ring buffer full)", output.tally.lost),
        ))?;
    }
    let unwritten = crate::output::dropped();
    if unwritten > 0 {
        // The reader went away or the terminal refused: the lines are gone, the count is not.
        writer.write(audit::action(
            &prepared.agent_id,
            "output-dropped",
            "governor",
            &format!("{unwritten} lines of governor's own stderr could not be written (EPIPE or EAGAIN)"),
        ))?;
    }
    let tally = std::mem::take(&mut output.tally);
    drop(output);
    // The writer thread ends before the probes are released (that forks).
    writer.finish()?;
    if let Some(probes) = probes.as_mut() {
        let counters = probes.counters()?;
        if verbose || prepared.request.trace || counters.dropped > 0 || tally.undecodable > 0 {
            say!(
                "governor: probes ({}): {} events produced, {} delivered, {} dropped (ring buffer full), {} undecodable, {} probe read errors",
                probes.backend,
                counters.produced,
                tally.events,
                counters.dropped,
                tally.undecodable,
                counters.errors
            );
        }
    }
    drop(tmpdir);
    if let Some(warden) = warden {
        warden.done();
    }
    Ok(code)
}

/// The agent's exit code, or governor's when the child failed before or at exec (it said
/// why through the report pipe, which exec closed otherwise).
fn child_result(report: std::os::fd::OwnedFd, status: i32, command: &OsStr, trust: Trust) -> i32 {
    let mut bytes = Vec::new();
    let _ = File::from(report).read_to_end(&mut bytes);
    match ChildFailure::decode(&bytes) {
        Some(failure) => {
            say!("governor: {}", failure.describe(command));
            if let ChildFailure::Exec(code) = failure
                && (code == libc::EACCES || code == libc::EPERM)
            {
                say!(
                    "governor: `governor explain --trust {trust} {}` says which rule refuses it and what would allow it",
                    command.to_string_lossy()
                );
            }
            failure.exit_code()
        }
        None => status,
    }
}

/// Tells the daemon the agent has exited, over a new connection if the daemon restarted
/// meanwhile. A daemon that cannot be told records the end itself when it finds the
/// cgroup gone, without the status.
fn report_exit(link: DaemonLink, hello: &Hello, agent: &str, code: i32) {
    let request = crate::control::Request::Exited { agent: agent.to_owned(), code };
    let path = link.path.clone();
    let mut result = match link.client {
        Some(mut client) => client.call(&request),
        None => Err(crate::control::Error::Refused("gone".into())),
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
struct DaemonLink {
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
    fn new(client: Client, hello: &Hello, agent: &str, control: Cgroup) -> DaemonLink {
        DaemonLink {
            path: client.path.clone(),
            client: Some(client),
            agent: agent.to_owned(),
            kill_after: (hello.on_supervisor_loss == crate::daemon::Loss::Kill)
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
                && client.call(&crate::control::Request::Attach { agent: self.agent.clone() }).is_ok()
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

/// The terminal on governor's stdin, stdout or stderr, if one of them is a terminal: the
/// only one the agent may use (not every session's /dev/pts entry).
fn controlling_tty() -> Option<PathBuf> {
    (0..3).find_map(|fd| {
        // SAFETY: isatty only inspects the descriptor.
        (unsafe { libc::isatty(fd) } == 1).then(|| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()).flatten()
    })
}

/// Where governor's control socket lives (the daemon's; `/run/governor/governor.sock`).
pub const CONTROL_DIR: &std::ffi::CStr = c"/run/governor";

/// Below admin, the agent's view of `CONTROL_DIR` is an empty, read-only tmpfs of mode 000,
/// in a mount namespace of its own (mounts from the host still propagate in): a path walk
/// into it is EACCES even for an agent running as uid 0, which has no capability to override
/// the mode. Landlock cannot keep an agent from connecting to a pathname socket before ABI 9,
/// and the socket's owner check would let a uid-0 agent in. Needs CAP_SYS_ADMIN, still held
/// here; without it (governor not root) the directory's own mode 0700 keeps others out.
///
/// The secrets that exist at launch are masked the same way: an empty read-only tmpfs of
/// mode 000 over each secret directory, an empty mode-000 file bound read-only over each
/// secret file. Landlock already refuses to read them (no rule grants them); the mask keeps
/// the names inside a secret directory out of sight too, now that the trees they sit in may
/// be listed (`ls ~`, `ls /etc`). Landlock stays the guarantee: a mask is lost when someone
/// outside replaces the file (the kernel detaches mounts from an unlinked mountpoint), and a
/// secret created later has nothing to mount on.
///
/// Each socket of `unix_masks` (see `sandbox::unix`) gets a mode-000 FIFO, made in that
/// tmpfs before it is made read-only, bind-mounted over it, so a connect is EACCES. A socket
/// gone meanwhile is skipped.
fn private_mounts(masks: &[(CString, bool)], unix_masks: &[CString]) {
    const FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let options = c"mode=000,size=4k";
    // SAFETY: unshare(2), mount(2), open(2) and mkfifo(3) on the calling single-threaded
    // process, with valid NUL-terminated strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return;
        }
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ) != 0
        {
            return;
        }
        let tmpfs = c"tmpfs".as_ptr();
        if libc::mount(tmpfs, CONTROL_DIR.as_ptr(), tmpfs, FLAGS, options.as_ptr().cast()) != 0 {
            return;
        }
        // The empty file bound over secret files lives in the masked directory itself.
        let empty = c"/run/governor/.empty";
        let fd = libc::open(empty.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0);
        if fd >= 0 {
            libc::close(fd);
        }
        for (path, is_dir) in masks {
            if *is_dir {
                libc::mount(tmpfs, path.as_ptr(), tmpfs, FLAGS | libc::MS_RDONLY, options.as_ptr().cast());
            } else if fd >= 0
                && libc::mount(empty.as_ptr(), path.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) == 0
            {
                // A bind mount takes its flags only on a remount.
                libc::mount(
                    std::ptr::null(),
                    path.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | FLAGS,
                    std::ptr::null(),
                );
            }
        }
        if !unix_masks.is_empty() {
            // A FIFO, not a regular file: the write permission check of a connect meets the
            // mode (EACCES, a refusal the engine counts), where on a read-only mount a
            // regular file would answer EROFS first (inode_permission's sb_permission).
            let fifo = c"/run/governor/.masked";
            if libc::mkfifo(fifo.as_ptr(), 0) == 0 {
                for socket in unix_masks {
                    libc::mount(fifo.as_ptr(), socket.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null());
                }
            }
        }
        // Read-only from here: the mask files and the directory alike.
        libc::mount(
            std::ptr::null(),
            CONTROL_DIR.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_RDONLY | FLAGS,
            options.as_ptr().cast(),
        );
    }
}

/// The secrets that exist now, to mask in the agent's mount namespace: each secret's own
/// path (where symlinks lead), or the entries a glob matches; with whether it is a
/// directory. Nothing inside another mask (it is hidden already).
fn secret_masks(confinement: &Confinement) -> Vec<(CString, bool)> {
    use crate::sandbox::carve::{FsView as _, Kind};
    let fs = RealFs;
    let mut found: Vec<(PathBuf, bool)> = Vec::new();
    for carve in &confinement.secrets {
        let name = carve.path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let candidates: Vec<PathBuf> = if name.contains(['*', '?', '[']) {
            let Some(parent) = carve.path.parent().and_then(|parent| fs.canonical(parent)) else { continue };
            let Ok(pattern) = CString::new(name) else { continue };
            fs.children(&parent)
                .into_iter()
                .filter(|(child, _)| {
                    CString::new(child.as_bytes()).is_ok_and(|child| {
                        // SAFETY: two NUL-terminated strings; fnmatch only reads them.
                        unsafe { libc::fnmatch(pattern.as_ptr(), child.as_ptr(), libc::FNM_PERIOD) == 0 }
                    })
                })
                .map(|(child, _)| parent.join(child))
                .collect()
        } else {
            fs.canonical(&carve.path).into_iter().collect()
        };
        for path in candidates {
            match fs.kind(&path) {
                Kind::Dir => found.push((path, true)),
                Kind::File => found.push((path, false)),
                Kind::Missing | Kind::Symlink => {}
            }
        }
    }
    found.sort();
    found.dedup();
    let mut masks: Vec<(PathBuf, bool)> = Vec::new();
    for (path, is_dir) in found {
        if masks.iter().any(|(mask, _)| path.starts_with(mask)) {
            continue;
        }
        masks.push((path, is_dir));
    }
    masks
        .into_iter()
        .filter_map(|(path, is_dir)| Some((CString::new(path.into_os_string().into_vec()).ok()?, is_dir)))
        .collect()
}

/// The kernel's `struct sigaction` (x86-64) for rt_sigaction(2).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7), from <linux/sched.h>.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks a child that starts life in the agent's cgroup (clone3 with `CLONE_INTO_CGROUP`):
/// moving a running process by writing `cgroup.procs` takes the cgroup threadgroup lock for
/// writing, which waits for an RCU grace period and cost about 1.3 ms per launch here. Falls
/// back to fork (and the child joining by itself) on kernels without it; the second value
/// says whether the child is already in the cgroup.
///
/// A raw clone3 skips glibc's fork bookkeeping, so the child must not rely on glibc's cached
/// thread id: it only makes plain syscalls up to exec, as crun's child does after clone3.
fn fork_into(cgroup_dir: &File) -> Result<(ForkResult, bool), Error> {
    use std::os::fd::AsRawFd as _;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_dir.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 with a valid clone_args of the size passed; no stack, so the child
    // continues on a copy of this stack like fork(2). governor has one thread here.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, &raw const args, size_of::<CloneArgs>()) };
    match ret {
        0 => Ok((ForkResult::Child, true)),
        pid if pid > 0 => Ok((ForkResult::Parent { child: Pid::from_raw(pid as i32) }, true)),
        _ => match Errno::last() {
            Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::EPERM => {
                // SAFETY: governor has one thread here, so the child may run any code before exec.
                let forked = unsafe { fork() }.map_err(sys("fork"))?;
                Ok((forked, false))
            }
            errno => Err(Error::Sys { what: "clone3 into the agent's cgroup".into(), errno }),
        },
    }
}

/// The process's argv and environment, built before the fork.
struct Command {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    workspace: CString,
    /// Secrets to mask in the agent's mount namespace, and whether each is a directory.
    masks: Vec<(CString, bool)>,
    /// Pathname UNIX sockets masked in the agent's mount namespace.
    unix_masks: Vec<CString>,
}

impl Command {
    fn new(prepared: &Prepared, tmpdir: &Path, landlock: &landlock::Plan) -> Result<Command, Error> {
        let cstring =
            |bytes: &[u8]| CString::new(bytes).map_err(|_| Error::Usage("an argument contains a NUL byte".into()));
        let argv = prepared.request.command.iter().map(|arg| cstring(arg.as_bytes())).collect::<Result<Vec<_>, _>>()?;
        let program = argv.first().cloned().ok_or_else(|| Error::Usage("no command given".into()))?;
        let identity = &prepared.identity;
        let mut overrides: Vec<(&str, OsString)> = vec![
            ("TMPDIR", tmpdir.as_os_str().to_owned()),
            ("GOVERNOR_AGENT_ID", prepared.agent_id.clone().into()),
            ("GOVERNOR_TRUST", prepared.ring.trust.as_str().into()),
        ];
        // Library search paths the ring cannot read would only make the loader collect a
        // refusal per directory on every exec (and trip the repeated-denials rule).
        if let Some(search) = std::env::var_os("LD_LIBRARY_PATH") {
            let kept = readable_search_path(&search, landlock);
            if kept != search && prepared.request.verbose {
                say!("governor: LD_LIBRARY_PATH: entries the ring cannot read were left out");
            }
            overrides.push(("LD_LIBRARY_PATH", kept));
        }
        // Programs along PATH the ring may not run would be refused one directory after
        // another (and a shell that hashes the first one it finds fails with 126 instead of
        // trying the next): the agent's PATH keeps the directories it may execute from.
        if let Some(search) = std::env::var_os("PATH") {
            let kept = executable_search_path(&search, landlock);
            if kept != search && prepared.request.verbose {
                say!("governor: PATH: directories the ring cannot execute from were left out");
            }
            overrides.push(("PATH", kept));
        }
        let below_admin = prepared.ring.trust != Trust::Admin;
        let cache = cache_dir(prepared, tmpdir);
        if below_admin {
            for (name, dir) in cache_env(&cache) {
                overrides.push((name, dir.into_os_string()));
            }
        }
        // A ring that cannot read the user's home (low) gets a home of its own in $CACHE:
        // git, pip and the rest refuse to run when their configuration is unreadable, and
        // treat a missing one as empty.
        // A home with secrets carved out of it keeps a listing rule at its root.
        let home_readable = readable(&identity.home, landlock)
            || landlock
                .paths
                .iter()
                .any(|rule| rule.path == identity.home && rule.access.contains(&crate::policy::Access::List));
        let home = if below_admin && !home_readable { cache.join("home") } else { identity.home.clone() };
        if identity.switch || home != identity.home {
            overrides.push(("HOME", home.into_os_string()));
        }
        if identity.switch {
            overrides.push(("USER", identity.name.clone().into()));
            overrides.push(("LOGNAME", identity.name.clone().into()));
        }
        // Handles to the operator's key agents: Landlock (before ABI 9) does not cover
        // pathname sockets, so below admin the agent is not told where they are.
        let withheld: &[&str] = if prepared.ring.trust == Trust::Admin {
            &[]
        } else {
            &["SSH_AUTH_SOCK", "SSH_AGENT_PID", "GPG_AGENT_INFO"]
        };
        // Secret-looking variables (GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY): an agent would hand
        // them on with every request it makes. Said by name only, never by value.
        let secret_env = env_withheld(prepared);
        if prepared.request.verbose && !secret_env.is_empty() {
            let names: Vec<&str> = secret_env.iter().map(|withheld| withheld.name.as_str()).collect();
            say!(
                "governor: environment withheld (secret-looking names, see [env] of secrets.toml): {}",
                names.join(" ")
            );
        }
        let mut envp = Vec::new();
        for (key, value) in std::env::vars_os() {
            if overrides.iter().any(|(name, _)| OsStr::new(name) == key)
                || withheld.iter().any(|name| OsStr::new(name) == key)
                || secret_env.iter().any(|withheld| OsStr::new(&withheld.name) == key)
                || key.as_bytes().contains(&b'=')
            {
                continue;
            }
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            envp.push(cstring(&entry)?);
        }
        for (key, value) in overrides {
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            envp.push(cstring(&entry)?);
        }
        Ok(Command {
            program,
            argv,
            envp,
            workspace: cstring(prepared.workspace.as_os_str().as_bytes())?,
            masks: Vec::new(),
            unix_masks: Vec::new(),
        })
    }
}

/// The variables of governor's environment that the agent does not get, by the `[env]` of
/// `secrets.toml` and the overlays (for the launch, `run --verbose` and `policy show`).
pub fn env_withheld(prepared: &Prepared) -> Vec<crate::sandbox::env::Withheld> {
    let policies: Vec<&policy::EnvPolicy> =
        std::iter::once(&prepared.env).chain(prepared.overlays.iter().map(|overlay| &overlay.env)).collect();
    let names: Vec<OsString> = std::env::vars_os().map(|(name, _)| name).collect();
    crate::sandbox::env::withheld(names.iter().map(OsString::as_os_str), prepared.ring.trust, &policies)
}

/// The entries of a `:`-separated search path that the Landlock plan lets the agent read
/// (all of them when there is no Landlock domain).
fn readable_search_path(search: &OsStr, plan: &landlock::Plan) -> OsString {
    if !plan.enforce {
        return search.to_owned();
    }
    let readable = |dir: &Path| {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        plan.paths.iter().any(|rule| dir.starts_with(&rule.path) && rule.access.contains(&crate::policy::Access::Read))
    };
    let kept: Vec<&[u8]> = search
        .as_bytes()
        .split(|byte| *byte == b':')
        .filter(|entry| !entry.is_empty() && readable(Path::new(OsStr::from_bytes(entry))))
        .collect();
    OsString::from_vec(kept.join(&b':'))
}

/// The entries of PATH the Landlock plan lets the agent execute from (all of them when there
/// is no Landlock domain); relative and empty entries (the current directory) are left out.
fn executable_search_path(search: &OsStr, plan: &landlock::Plan) -> OsString {
    if !plan.enforce {
        return search.to_owned();
    }
    let kept: Vec<&[u8]> = search
        .as_bytes()
        .split(|byte| *byte == b':')
        .filter(|entry| entry.starts_with(b"/"))
        .filter(|entry| granted(Path::new(OsStr::from_bytes(entry)), plan, crate::policy::Access::Exec))
        .collect();
    OsString::from_vec(kept.join(&b':'))
}

/// What went wrong in the child before or at `exec`, sent to the parent through a pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChildFailure {
    Cgroup(i32),
    Privileges(privileges::Step, i32),
    NoNewPrivs(i32),
    Landlock(i32),
    Seccomp(i32),
    Chdir(i32),
    Exec(i32),
}

impl ChildFailure {
    fn encode(self) -> [u8; 6] {
        let (stage, detail, errno) = match self {
            ChildFailure::Cgroup(errno) => (1, 0, errno),
            ChildFailure::Privileges(step, errno) => (2, step as u8, errno),
            ChildFailure::NoNewPrivs(errno) => (3, 0, errno),
            ChildFailure::Landlock(errno) => (4, 0, errno),
            ChildFailure::Seccomp(errno) => (5, 0, errno),
            ChildFailure::Chdir(errno) => (6, 0, errno),
            ChildFailure::Exec(errno) => (7, 0, errno),
        };
        let errno = errno.to_le_bytes();
        [stage, detail, errno[0], errno[1], errno[2], errno[3]]
    }

    fn decode(bytes: &[u8]) -> Option<ChildFailure> {
        let [stage, detail, a, b, c, d] = *bytes else {
            return None;
        };
        let errno = i32::from_le_bytes([a, b, c, d]);
        let step = [
            privileges::Step::Bounding,
            privileges::Step::Securebits,
            privileges::Step::Groups,
            privileges::Step::Gid,
            privileges::Step::Uid,
            privileges::Step::Capabilities,
        ]
        .into_iter()
        .find(|step| *step as u8 == detail)?;
        Some(match stage {
            1 => ChildFailure::Cgroup(errno),
            2 => ChildFailure::Privileges(step, errno),
            3 => ChildFailure::NoNewPrivs(errno),
            4 => ChildFailure::Landlock(errno),
            5 => ChildFailure::Seccomp(errno),
            6 => ChildFailure::Chdir(errno),
            7 => ChildFailure::Exec(errno),
            _ => return None,
        })
    }

    fn exit_code(self) -> i32 {
        match self {
            ChildFailure::Exec(errno) if errno == libc::ENOENT => exit::NOT_FOUND,
            ChildFailure::Exec(_) => exit::CANNOT_EXECUTE,
            _ => exit::FAILURE,
        }
    }

    fn describe(self, command: &OsStr) -> String {
        let errno = |errno: i32| Errno::from_raw(errno).desc();
        let command = command.to_string_lossy();
        match self {
            ChildFailure::Exec(code) if code == libc::ENOENT => format!("{command}: command not found"),
            ChildFailure::Exec(code) if code == libc::EACCES || code == libc::EPERM => {
                format!("{command}: cannot execute: {} (the ring may forbid it)", errno(code))
            }
            ChildFailure::Exec(code) => format!("{command}: cannot execute: {}", errno(code)),
            ChildFailure::Cgroup(code) => {
                format!("joining the agent's cgroup failed: {}; the agent did not run", errno(code))
            }
            ChildFailure::Privileges(step, code) => {
                format!("{} failed: {}; the agent did not run", step.describe(), errno(code))
            }
            ChildFailure::NoNewPrivs(code) => {
                format!("setting no_new_privs failed: {}; the agent did not run", errno(code))
            }
            ChildFailure::Landlock(code) => {
                format!("entering the Landlock domain failed: {}; the agent did not run", errno(code))
            }
            ChildFailure::Seccomp(code) => {
                format!("installing the seccomp filter failed: {}; the agent did not run", errno(code))
            }
            ChildFailure::Chdir(code) => {
                format!("entering the workspace failed: {}; the agent did not run", errno(code))
            }
        }
    }
}

/// The child, between fork and exec. Returns only on failure.
fn child_main(
    prepared: &Prepared,
    confinement: &Confinement,
    ruleset: Option<::landlock::RulesetCreated>,
    filters: &[seccompiler::BpfProgram],
    command: &Command,
    join: Option<&mut File>,
    old_mask: &SigSet,
) -> ChildFailure {
    // Signals: every disposition back to default, the mask back to what governor was started
    // with. An ignored signal stays ignored across exec: the Rust runtime ignores SIGPIPE
    // (`yes | head -1` would then complain of a broken pipe instead of ending quietly), and
    // a shell starting governor in the background ignores SIGINT.
    // The raw system call: glibc refuses signals 32 and 33, which it keeps for itself.
    let default = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
    for signal in 1..=64 {
        // SAFETY: rt_sigaction(2) with a valid kernel sigaction; SIGKILL and SIGSTOP refuse
        // with EINVAL, which changes nothing.
        unsafe {
            libc::syscall(libc::SYS_rt_sigaction, signal, &raw const default, std::ptr::null_mut::<u8>(), 8usize)
        };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None);

    // Descriptors governor was started with stay out of the agent: an open file is beyond
    // Landlock's reach. Marked close-on-exec (not closed) so the report pipe works until exec.
    // SAFETY: close_range(2) on descriptors >= 3 of the calling process.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if let Some(procs) = join
        && let Err(error) = cgroup::join(procs)
    {
        return ChildFailure::Cgroup(error.raw_os_error().unwrap_or(libc::EIO));
    }
    // A System V IPC namespace of its own (shared memory, semaphores, message queues): those
    // are keyed by numbers, not paths, and Landlock does not see them. Needs CAP_SYS_ADMIN,
    // which is still held here; without it (governor not root) the host's stay visible.
    if confinement.drop_capabilities {
        // SAFETY: unshare(2) on the calling single-threaded process.
        let _ = unsafe { libc::unshare(libc::CLONE_NEWIPC) };
        private_mounts(&command.masks, &command.unix_masks);
    }
    if let Err((step, errno)) = privileges::drop_in_child(&prepared.identity, confinement.drop_capabilities) {
        return ChildFailure::Privileges(step, errno);
    }
    // SAFETY: prctl with integer arguments on the calling thread.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return ChildFailure::NoNewPrivs(Errno::last_raw());
    }
    // The workspace is entered before Landlock, while the path is still reachable.
    // SAFETY: chdir with a NUL-terminated path.
    if unsafe { libc::chdir(command.workspace.as_ptr()) } != 0 {
        return ChildFailure::Chdir(Errno::last_raw());
    }
    if let Some(ruleset) = ruleset
        && let Err(error) = ruleset.restrict_self()
    {
        let errno = std::error::Error::source(&error)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error)
            .unwrap_or(libc::EPERM);
        return ChildFailure::Landlock(errno);
    }
    if let Err(error) = seccomp::install(filters) {
        let errno = match error {
            seccomp::Error::Build(seccompiler::Error::Prctl(io)) => io.raw_os_error().unwrap_or(libc::EPERM),
            _ => libc::EINVAL,
        };
        return ChildFailure::Seccomp(errno);
    }
    // execvpe searches PATH like a shell: ENOENT when no candidate exists, EACCES when one
    // exists but may not be executed (Landlock denies exec with EACCES).
    let errno = match nix::unistd::execvpe(&command.program, &command.argv, &command.envp) {
        Err(errno) => errno as i32,
        Ok(never) => match never {},
    };
    ChildFailure::Exec(errno)
}

/// After the agent exits: kill what it left behind in its cgroup, reap it, remove the cgroup.
fn cleanup(cgroup: Cgroup, verbose: bool) {
    // If the state cannot be read (the agent may have lowered our descriptor limit), assume
    // something is left and kill.
    if cgroup.populated().unwrap_or(true) {
        if verbose {
            say!("governor: killing what the agent left running: {:?}", cgroup.pids().unwrap_or_default());
        }
        if let Err(error) = cgroup.kill() {
            say!("governor: {error}");
        }
    }
    // Leftovers were reparented to us (subreaper): reap them as they die.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cgroup.populated().unwrap_or(true) && std::time::Instant::now() < deadline {
        let _ = cgroup.wait_empty(Duration::from_millis(50));
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
    let path = cgroup.path().to_path_buf();
    if let Err(error) = cgroup.remove() {
        say!("governor: cannot remove {}: {error}", path.display());
    }
}

fn report(prepared: &Prepared, confinement: &Confinement, tmpdir: &Path) {
    let identity = &prepared.identity;
    say!(
        "governor: agent {} ring {} as {} (uid {}) workspace {} tmpdir {}",
        prepared.agent_id,
        confinement.trust,
        identity.name,
        identity.uid,
        prepared.workspace.display(),
        tmpdir.display()
    );
    say!(
        "governor: Landlock ABI {} ({} path rules, connect {}, bind {}), seccomp {} refusals, capabilities {}",
        prepared.kernel.landlock_abi,
        confinement.landlock.paths.len(),
        ports(confinement.landlock.connect_ports.as_deref()),
        ports(confinement.landlock.bind_ports.as_deref()),
        confinement.seccomp.refusals.len(),
        if confinement.drop_capabilities { "dropped" } else { "kept" }
    );
    for note in &confinement.notes {
        say!("governor: note: {note}");
    }
}

pub fn ports(ports: Option<&[u16]>) -> String {
    match ports {
        None => "any port".into(),
        Some([]) => "no port".into(),
        Some(ports) => ports.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_failures_round_trip_through_the_pipe() {
        for failure in [
            ChildFailure::Exec(libc::ENOENT),
            ChildFailure::Privileges(privileges::Step::Uid, libc::EPERM),
            ChildFailure::Landlock(libc::E2BIG),
        ] {
            assert_eq!(ChildFailure::decode(&failure.encode()), Some(failure));
        }
        assert_eq!(ChildFailure::decode(&[]), None);
    }

    #[test]
    fn exec_errors_map_to_shell_exit_codes() {
        assert_eq!(ChildFailure::Exec(libc::ENOENT).exit_code(), 127);
        assert_eq!(ChildFailure::Exec(libc::EACCES).exit_code(), 126);
        assert_eq!(ChildFailure::Seccomp(libc::EINVAL).exit_code(), 125);
    }

    #[test]
    fn library_search_paths_keep_what_the_ring_can_read() {
        let rule = |path: &str, access: Vec<crate::policy::Access>| landlock::PathRule {
            path: path.into(),
            is_dir: true,
            access,
            origin: String::new(),
        };
        let plan = landlock::Plan {
            enforce: true,
            paths: vec![
                rule("/usr", vec![crate::policy::Access::Read]),
                rule("/srv/w", vec![crate::policy::Access::Exec]),
            ],
            ..landlock::Plan::default()
        };
        let kept = readable_search_path(OsStr::new("/root/.rustup/lib:/usr/lib::/srv/w/lib"), &plan);
        assert_eq!(kept, OsString::from("/usr/lib"));
        let open = landlock::Plan::default();
        assert_eq!(readable_search_path(OsStr::new("/root/lib"), &open), OsString::from("/root/lib"));
    }

    #[test]
    fn path_keeps_the_directories_the_ring_may_execute_from() {
        use crate::policy::Access;
        let rule = |path: &str, access: Vec<Access>| landlock::PathRule {
            path: path.into(),
            is_dir: true,
            access,
            origin: String::new(),
        };
        let plan = landlock::Plan {
            enforce: true,
            paths: vec![
                rule("/usr", vec![Access::Read, Access::Exec]),
                rule("/nonexistent/home", vec![Access::List]),
                rule("/nonexistent/home/.cargo/bin", vec![Access::Read, Access::Exec]),
                rule("/nonexistent/home/notes", vec![Access::Read]),
            ],
            ..landlock::Plan::default()
        };
        // A shim directory the ring cannot execute from, an empty and a relative entry go;
        // the toolchain directory granted exec stays, in order.
        let path = "/nonexistent/other/.pyenv/shims:/nonexistent/home/.cargo/bin::bin:/nonexistent/home/notes:/usr/bin";
        let kept = executable_search_path(OsStr::new(path), &plan);
        assert_eq!(kept, OsString::from("/nonexistent/home/.cargo/bin:/usr/bin"));
        let open = landlock::Plan::default();
        assert_eq!(executable_search_path(OsStr::new("/root/bin"), &open), OsString::from("/root/bin"));
    }

    #[test]
    fn agent_ids_are_checked() {
        assert!(validate_agent_id("build-42").is_ok());
        for bad in ["", ".hidden", "a/b", "x".repeat(65).as_str()] {
            assert!(validate_agent_id(bad).is_err(), "{bad}");
        }
        let generated = generate_agent_id(OsStr::new("/usr/bin/python3"));
        assert!(generated.starts_with("python3-"));
        assert!(validate_agent_id(&generated).is_ok());
    }
}
