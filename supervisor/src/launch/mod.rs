//! What `governor run` starts from: its arguments, checked into a `Prepared` agent before
//! anything is created (trust level, policy files, workspace, user, kernel support), so bad
//! input leaves nothing behind; the confinement planned for it; its temp and cache
//! directories. `policy show`, `explain` and `validate` plan a ring the same way, without
//! running anything. [`child`] is the agent's side of the fork.

pub mod child;

use std::{
    ffi::{OsStr, OsString},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use nix::errno::Errno;

use crate::{
    audit, cgroup, engine, exit,
    policy::{self, Overlay, PathVars, RingSource, Trust},
    probes,
    sandbox::{
        Confinement, Inputs, Kernel, Unenforceable, carve::RealFs, landlock, privileges, privileges::Identity, seccomp,
    },
    supervise, validate_agent_id,
};

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
            Error::Audit(audit::Error::Lost { .. }) => exit::FAILURE,
            Error::Audit(_) => exit::USAGE,
            _ => exit::FAILURE,
        }
    }
}

pub fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> Error {
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
    /// A daemon decides on the agent's events, with its own engine: this process compiles
    /// the rules only to check the `--policy` files it passes on.
    #[arg(skip)]
    pub daemon_decides: bool,
    /// The agent's cache directory ($CACHE: XDG_CACHE_HOME, npm_config_cache, CARGO_HOME):
    /// in its temp dir and removed with it (ephemeral), or kept for the next run of the same
    /// --agent-id (persist).
    #[arg(long, value_enum, default_value = "ephemeral")]
    pub cache: CacheMode,
    /// The agent's command line.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

impl Request {
    /// The request `policy show` and `explain` plan a ring with: as `governor run` would, without
    /// a command to run.
    pub fn dry(rings: Option<&Path>, trust: Trust, policies: &[PathBuf], workspace: Option<PathBuf>) -> Request {
        Request {
            trust,
            workspace,
            policies: policies.to_vec(),
            agent_id: Some("policy-show".into()),
            user: None,
            rings: rings.map(Path::to_path_buf),
            audit_db: PathBuf::new(),
            best_effort: true,
            verbose: false,
            probes: crate::probes::Choice::Off,
            trace: false,
            observe: false,
            standalone: true,
            socket: None,
            daemon_decides: false,
            cache: CacheMode::Ephemeral,
            command: vec!["true".into()],
        }
    }
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
        Some(id) => validate_agent_id(id).map_err(Error::Usage)?,
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
    let (rules, engine) = if request.daemon_decides && overlays.is_empty() {
        (engine::load_rules(&source, &overlays)?.0, engine::Engine::default())
    } else {
        engine::load(&source, &overlays)?
    };
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
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh private directory for the agent, owned by its user, mode 0700.
    pub fn create(agent_id: &str, identity: &Identity) -> Result<TempDir, Error> {
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
    Confinement::plan(&inputs, &RealFs::default())
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
pub fn cache_env(cache: &Path) -> [(&'static str, PathBuf); 3] {
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
pub fn make_cache(prepared: &Prepared, cache: &Path) -> Result<bool, Error> {
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
pub fn link_cargo_config(prepared: &Prepared, cache: &Path, landlock: &landlock::Plan) -> Result<(), Error> {
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
pub fn readable(path: &Path, plan: &landlock::Plan) -> bool {
    granted(path, plan, crate::policy::Access::Read)
}

/// Whether a rule of the plan gives `access` on `path` (always, without a domain).
pub fn granted(path: &Path, plan: &landlock::Plan, access: crate::policy::Access) -> bool {
    if !plan.enforce {
        return true;
    }
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    plan.paths.iter().any(|rule| path.starts_with(&rule.path) && rule.access.contains(&access))
}

/// The terminal on governor's stdin, stdout or stderr, if one of them is a terminal: the
/// only one the agent may use (not every session's /dev/pts entry).
fn controlling_tty() -> Option<PathBuf> {
    (0..3).find_map(|fd| {
        // SAFETY: isatty only inspects the descriptor.
        (unsafe { libc::isatty(fd) } == 1).then(|| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()).flatten()
    })
}

/// The variables of governor's environment that the agent does not get, by the `[env]` of
/// `secrets.toml` and the overlays (for the launch, `run --verbose` and `policy show`).
pub fn env_withheld(prepared: &Prepared) -> Vec<crate::sandbox::env::Withheld> {
    let policies: Vec<&policy::EnvPolicy> =
        std::iter::once(&prepared.env).chain(prepared.overlays.iter().map(|overlay| &overlay.env)).collect();
    let names: Vec<OsString> = std::env::vars_os().map(|(name, _)| name).collect();
    crate::sandbox::env::withheld(names.iter().map(OsString::as_os_str), prepared.ring.trust, &policies)
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
