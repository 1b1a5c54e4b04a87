//! `governor explain`: whether a ring lets an agent read, write or execute a path, run a
//! program or connect to a destination; which layer decides (a secret, a Landlock rule,
//! seccomp, a kernel deny rule, an engine rule) with its reason; and the policy lines that
//! would allow it. The answer comes from the same plan `governor run` applies.

use std::{
    net::{IpAddr, ToSocketAddrs as _},
    path::{Path, PathBuf},
};

use crate::{
    engine::{self, Kind},
    launch,
    policy::{Access, Trust},
    sandbox::{Confinement, carve},
    service,
};

/// What is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    Read,
    Write,
    Exec,
    Connect,
}

/// The thing asked about, as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Path(PathBuf),
    Destination {
        host: String,
        port: u16,
    },
    /// A program name, looked up along PATH as the agent would.
    Program(String),
}

impl Target {
    pub fn parse(text: &str) -> Target {
        if text.starts_with('/') || text.starts_with('.') || text.starts_with('~') {
            return Target::Path(PathBuf::from(text));
        }
        if let Some((host, port)) = text.rsplit_once(':')
            && let Ok(port) = port.parse::<u16>()
        {
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            return Target::Destination { host, port };
        }
        Target::Program(text.to_owned())
    }
}

/// The answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub allowed: bool,
    /// The layer that decides, and its reason.
    pub layer: String,
    pub reason: String,
    /// Policy lines (a `--policy` file) that would allow it; empty when none can.
    pub to_allow: Vec<String>,
    /// Further things worth knowing (engine rules that watch it, ...).
    pub notes: Vec<String>,
    /// The policy line that decides, when one does (a Landlock path, a deny rule).
    pub rule: Option<String>,
}

/// The access word an operation needs.
fn access_of(op: Op) -> Access {
    match op {
        Op::Read => Access::Read,
        Op::Write => Access::Write,
        Op::Exec | Op::Connect => Access::Exec,
    }
}

/// Whether `path` is one of the confinement's secrets (or inside one).
fn secret_of<'a>(confinement: &'a Confinement, path: &Path) -> Option<&'a carve::Carve> {
    confinement.secrets.iter().find(|carve| {
        let name = carve.path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        if name.contains(['*', '?', '[']) {
            let Some(parent) = carve.path.parent() else { return false };
            let Ok(rest) = path.strip_prefix(parent) else { return false };
            let first = rest.components().next().map(|first| first.as_os_str().to_string_lossy().into_owned());
            let (Ok(pattern), Some(Ok(first))) = (std::ffi::CString::new(name), first.map(std::ffi::CString::new))
            else {
                return false;
            };
            // SAFETY: two NUL-terminated strings; fnmatch only reads them.
            unsafe { libc::fnmatch(pattern.as_ptr(), first.as_ptr(), libc::FNM_PERIOD) == 0 }
        } else {
            path.starts_with(&carve.path)
        }
    })
}

/// A path: secrets first (nothing below admin grants them), then the Landlock rules.
pub fn path(confinement: &Confinement, trust: Trust, path: &Path, op: Op, rules: &engine::Rules) -> Answer {
    let real = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut answer = Answer::default();
    if !confinement.landlock.enforce {
        answer.allowed = true;
        answer.layer = "no Landlock domain".into();
        answer.reason = format!("ring {trust} does not restrict the filesystem");
    } else if let Some(secret) = secret_of(confinement, &real).or_else(|| secret_of(confinement, path)) {
        answer.layer = "secret".into();
        answer.reason = secret.label.clone();
        answer.notes.push(
            "secrets are never readable below admin: no --policy line grants one (run the agent in admin, or move the file out of the secret's path)"
                .into(),
        );
    } else {
        let access = access_of(op);
        let covering: Vec<&crate::sandbox::landlock::PathRule> =
            confinement.landlock.paths.iter().filter(|rule| real.starts_with(&rule.path)).collect();
        if let Some(rule) = covering.iter().find(|rule| rule.access.contains(&access)) {
            answer.allowed = true;
            answer.layer = "Landlock rule".into();
            answer.reason = format!("{} grants {:?} from {}", rule.path.display(), rule.access, rule.origin);
            answer.rule = Some(rule.origin.clone());
        } else {
            answer.layer = "Landlock rule".into();
            let listing = covering.iter().find(|rule| rule.access.contains(&Access::List));
            let granting: Vec<&&crate::sandbox::landlock::PathRule> =
                covering.iter().filter(|rule| !rule.access.contains(&Access::List)).collect();
            answer.reason = match listing.filter(|_| granting.is_empty() || (op == Op::Read && real.is_dir())) {
                Some(rule) if op == Op::Read && real.is_dir() => {
                    answer.allowed = true;
                    format!(
                        "{} may be listed ({}); its files are read through their own rules",
                        rule.path.display(),
                        rule.origin
                    )
                }
                Some(rule) => format!(
                    "only listing is granted here ({}): the tree has secrets carved out of it and this entry was created after launch or is not granted {}",
                    rule.origin,
                    word(access)
                ),
                None if covering.is_empty() => format!("no rule of ring {trust} covers {}", real.display()),
                None => format!(
                    "the rules covering it ({}) do not grant {}",
                    granting.iter().map(|rule| rule.origin.as_str()).collect::<Vec<_>>().join("; "),
                    word(access)
                ),
            };
            if !answer.allowed {
                let mut words = vec!["read"];
                match op {
                    Op::Write => words.extend(["write", "create"]),
                    Op::Exec => words.push("exec"),
                    Op::Read | Op::Connect => {}
                }
                answer.to_allow = vec![
                    "[[landlock.path]]".into(),
                    format!("path = {:?}", real.display().to_string()),
                    format!("access = {words:?}"),
                    "reason = \"why the agent needs it\"".into(),
                ];
            }
        }
    }
    for rule in rules.rules.iter().filter(|rule| rule.applies_to(trust)) {
        let globs = match rule.kind {
            Kind::Exec if op == Op::Exec => rule.binary.as_ref().or(rule.path.as_ref()),
            Kind::Open if op != Op::Exec => rule.path.as_ref(),
            Kind::Fs if op == Op::Write => rule.path.as_ref(),
            _ => None,
        };
        if globs.is_some_and(|globs| globs.is_match(&real.to_string_lossy())) {
            answer.notes.push(rule_note(rule));
        }
    }
    answer
}

/// What an engine rule that matches says, as a note of the answer.
fn rule_note(rule: &engine::Rule) -> String {
    format!("engine rule {} ({:?}{}): {}", rule.id, rule.action, condition(rule), rule.reason)
}

/// `, counted` or `, in a sequence` for a rule that does not act on one event alone.
fn condition(rule: &engine::Rule) -> &'static str {
    match (rule.count, &rule.after) {
        (_, Some(_)) => ", after an earlier event",
        (Some(_), None) => ", when repeated",
        (None, None) => "",
    }
}

fn word(access: Access) -> &'static str {
    match access {
        Access::Read => "read",
        Access::Write => "write",
        Access::Exec => "exec",
        Access::Create => "create",
        Access::Ioctl => "ioctl",
        Access::List => "list",
    }
}

/// A TCP destination: the socket families (seccomp), the denied destinations (the probes'
/// socket hooks), then Landlock's ports.
pub fn destination(
    confinement: &Confinement,
    ring: &crate::policy::Ring,
    addrs: &[IpAddr],
    port: u16,
    rules: &engine::Rules,
) -> Answer {
    let trust = ring.trust;
    let mut answer = Answer::default();
    let inet = ring
        .network
        .socket_families
        .iter()
        .any(|family| family.number().is_none_or(|number| number == libc::AF_INET || number == libc::AF_INET6));
    let denied = addrs.iter().find_map(|addr| {
        confinement.net_deny.iter().find(|rule| {
            (rule.port == 0 || rule.port == port) && in_network(rule.addr, rule.prefix, addr.to_canonical())
        })
    });
    if !inet {
        answer.layer = "seccomp".into();
        answer.reason = format!("ring {trust} refuses IP sockets: {}", ring.network.socket_families_reason);
        answer.notes.push(
            "no --policy line gives a ring new socket families: run the agent in a ring with a network (medium)".into(),
        );
    } else if let Some(rule) = denied {
        answer.layer = "kernel deny rule".into();
        let why = ring
            .network
            .deny
            .iter()
            .find(|deny| deny.port.is_none_or(|p| p.0 == rule.port || rule.port == 0))
            .map(|deny| deny.reason.to_string())
            .unwrap_or_default();
        answer.reason = format!("[[network.deny]] {}/{} port {}: {why}", rule.addr, rule.prefix, rule.port);
        answer.rule = Some(format!("[[network.deny]] {}/{} port {}", rule.addr, rule.prefix, rule.port));
        answer.notes.push("a denied destination is refused whatever a --policy file adds".into());
    } else if let Some(ports) = &confinement.landlock.connect_ports
        && !ports.contains(&port)
    {
        answer.layer = "Landlock rule".into();
        answer.reason = format!("ring {trust} connects over TCP to ports {ports:?} only");
        answer.to_allow =
            vec!["[[network.connect]]".into(), format!("port = {port}"), "reason = \"why the agent needs it\"".into()];
    } else {
        answer.allowed = true;
        answer.layer = "Landlock rule".into();
        answer.reason = match &confinement.landlock.connect_ports {
            Some(_) => format!("ring {trust} connects over TCP to port {port}"),
            None => format!("ring {trust} does not restrict TCP connect"),
        };
    }
    for rule in rules.rules.iter().filter(|rule| rule.applies_to(trust) && rule.kind == Kind::Connect) {
        if addrs.iter().any(|addr| {
            rule.destination.as_ref().is_some_and(|globs| globs.is_match(&format!("{}:{port}", addr.to_canonical())))
        }) {
            answer.notes.push(rule_note(rule));
        }
    }
    answer
}

/// Whether `addr` is in the network `net/prefix` (an IPv4-mapped address is its IPv4 one).
fn in_network(net: IpAddr, prefix: u8, addr: IpAddr) -> bool {
    match (net.to_canonical(), addr) {
        (IpAddr::V4(net), IpAddr::V4(addr)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            u32::from(net) & mask == u32::from(addr) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(addr)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            u128::from(net) & mask == u128::from(addr) & mask
        }
        _ => false,
    }
}

/// The program `name` would be, looked up along the PATH the agent gets.
fn lookup(name: &str) -> Option<PathBuf> {
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// `governor explain`: prints the answer; exit 0 when allowed, 1 when refused.
pub fn main(request: launch::Request, target: &str, op: Option<Op>, agent: Option<&str>) -> Result<i32, (i32, String)> {
    let mut request = request;
    // Held while the answer is computed: policy files whose recorded text is written out.
    let mut plan = None;
    if let Some(agent) = agent {
        let applied = agent_plan(&request.audit_db, agent).map_err(|message| (crate::exit::USAGE, message))?;
        request.trust = applied.trust;
        // What the agent ran with first, then what the user adds.
        let added = std::mem::take(&mut request.policies);
        request.policies = applied.files().into_iter().chain(added).collect();
        plan = Some(applied);
    }
    let trust = request.trust;
    let target = Target::parse(target);
    let (what, answer) = decide(request, &target, op)?;
    println!("{what} in ring {trust}: {}", if answer.allowed { "allow" } else { "deny" });
    if let Some(plan) = &plan {
        let files: Vec<String> = plan.files.iter().map(|(label, _)| label.clone()).collect();
        let files = if files.is_empty() { "no policy files".to_owned() } else { files.join(", ") };
        println!("  agent {}: ring {trust}, {files}", crate::output::escape(&plan.agent));
        for note in &plan.notes {
            println!("  note: {}", crate::output::escape(note));
        }
    }
    println!("  decided by: {}: {}", answer.layer, answer.reason);
    for note in &answer.notes {
        println!("  note: {note}");
    }
    if !answer.to_allow.is_empty() {
        println!("  to allow it, pass a --policy file with:");
        for line in &answer.to_allow {
            println!("    {line}");
        }
    }
    Ok(if answer.allowed { 0 } else { 1 })
}

/// The answer for `target` in the ring (and `--policy` files) of `request`, as data.
pub fn answer(request: launch::Request, target: &Target, op: Option<Op>) -> Result<Answer, (i32, String)> {
    decide(request, target, op).map(|(_, answer)| answer)
}

/// What is asked (`exec /usr/bin/curl (curl)`), and the answer.
fn decide(request: launch::Request, target: &Target, op: Option<Op>) -> Result<(String, Answer), (i32, String)> {
    let usage = |message: String| (crate::exit::USAGE, message);
    let prepared = launch::prepare(request).map_err(|error| (error.exit_code(), error.to_string()))?;
    // The agent's own temp dir is made at launch, for it alone: a stand-in that does not
    // exist, so that nothing else under /tmp looks granted.
    let tmpdir = std::env::temp_dir().join("governor-explain-no-such-tmpdir");
    let confinement = launch::confinement(&prepared, &tmpdir);
    let trust = prepared.ring.trust;
    Ok(match target {
        Target::Path(path) => {
            let path = match path.strip_prefix("~") {
                Ok(rest) => prepared.identity.home.join(rest),
                Err(_) => path.clone(),
            };
            let op = op.unwrap_or(Op::Read);
            if op == Op::Connect {
                return Err(usage(format!("--op connect needs HOST:PORT, not the path {}", path.display())));
            }
            (
                format!("{} {}", word(access_of(op)), path.display()),
                self::path(&confinement, trust, &path, op, &prepared.rules),
            )
        }
        Target::Program(name) => {
            let found = lookup(name).ok_or_else(|| usage(format!("{name}: not found on PATH")))?;
            (
                format!("exec {} ({name})", found.display()),
                self::path(&confinement, trust, &found, Op::Exec, &prepared.rules),
            )
        }
        Target::Destination { host, port } => {
            let addrs: Vec<IpAddr> = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|error| usage(format!("{host}: {error}")))?
                .map(|addr| addr.ip())
                .collect();
            (
                format!("connect {host}:{port}"),
                destination(&confinement, &prepared.ring, &addrs, *port, &prepared.rules),
            )
        }
    })
}

/// What an agent runs with, for `explain --agent`.
pub struct AgentPlan {
    agent: String,
    pub trust: Trust,
    /// How each policy file is named to the user, and the file that is loaded.
    files: Vec<(String, PathBuf)>,
    notes: Vec<String>,
    /// Where recorded policy text that no longer matches its file is written out.
    _recorded: Option<tempfile::TempDir>,
}

impl AgentPlan {
    /// The policy files to load, in order (valid while the plan is held).
    pub fn files(&self) -> Vec<PathBuf> {
        self.files.iter().map(|(_, file)| file.clone()).collect()
    }
}

/// The ring and policy files of `agent`: those of its latest run in the audit store (the
/// text each file had when the run started), and the overlay of its registration with the
/// daemon when it has one, which its next run applies; for an agent registered but never
/// run, the registration's ring.
pub fn agent_plan(store: &Path, agent: &str) -> Result<AgentPlan, String> {
    let agent = crate::validate_agent_id(agent).map_err(|error| error.to_string())?;
    // Opening creates a store: a store that is not there has no agents.
    let recorded = if store.exists() {
        let connection = crate::audit::open(store).map_err(|error| error.to_string())?;
        crate::audit::recorded_run(&connection, &agent).map_err(|error| format!("{}: {error}", store.display()))?
    } else {
        None
    };
    let registration = service::registrations(&service::registered_dir(store))
        .into_iter()
        .find(|spec| spec.agent_id == agent)
        .map(|spec| {
            let overlay = service::registered_overlay(store, &agent);
            (spec, overlay.canonicalize().unwrap_or(overlay))
        })
        .filter(|(_, overlay)| overlay.is_file());
    let trust = match (&recorded, &registration) {
        (Some(run), _) => run.trust.parse()?,
        (None, Some((spec, _))) => spec.trust.unwrap_or(Trust::Low),
        (None, None) => {
            return Err(format!(
                "unknown agent '{agent}': no run of it in {} and no registration with the daemon",
                store.display()
            ));
        }
    };
    let mut plan = AgentPlan { agent: agent.clone(), trust, files: Vec::new(), notes: Vec::new(), _recorded: None };
    for (index, (path, text)) in recorded.iter().flat_map(|run| &run.policies).enumerate() {
        let label = format!("--policy {}", path.display());
        if std::fs::read_to_string(path).is_ok_and(|now| now == *text) {
            plan.files.push((label, path.clone()));
            continue;
        }
        // The file changed or is gone since the run: the text the agent ran with decides.
        if plan._recorded.is_none() {
            plan._recorded = Some(tempfile::tempdir().map_err(|error| format!("a temporary directory: {error}"))?);
        }
        let dir = plan._recorded.as_ref().map(|dir| dir.path().to_path_buf()).unwrap_or_default();
        let copy = dir.join(format!("{index}.toml"));
        std::fs::write(&copy, text).map_err(|error| format!("{}: {error}", copy.display()))?;
        plan.notes.push(format!(
            "{} changed or is gone since the agent's run: explained with the text it ran with",
            path.display()
        ));
        plan.files.push((format!("{label} (as recorded)"), copy));
    }
    if let Some((_, overlay)) = registration {
        let known = recorded.iter().flat_map(|run| &run.policies).any(|(path, _)| *path == overlay);
        if !known {
            plan.files.push((format!("registration overlay {}", overlay.display()), overlay));
            if recorded.is_some() {
                plan.notes.push(
                    "registered with the daemon since its last run: its next run applies the registration".into(),
                );
            }
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PathVars, RingSource};

    fn plan(trust: Trust, home: &Path) -> (Confinement, crate::policy::Ring) {
        let ring = RingSource::BuiltIn.ring(trust).unwrap_or_else(|error| panic!("{error}"));
        let secrets = RingSource::BuiltIn.secrets().unwrap_or_else(|error| panic!("{error}"));
        let vars = PathVars {
            home: home.to_path_buf(),
            workspace: home.join("ws"),
            tmpdir: home.join("tmp"),
            tty: None,
            cache: home.join("cache"),
        };
        let homes = [crate::sandbox::Home { path: home.to_path_buf(), may_gain_secrets: true }];
        let inputs =
            crate::sandbox::Inputs { ring: &ring, secrets: &secrets, overlays: &[], vars: &vars, homes: &homes };
        (Confinement::plan(&inputs, &carve::RealFs::default()), ring)
    }

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("/etc/shadow"), Target::Path("/etc/shadow".into()));
        assert_eq!(Target::parse("pypi.org:443"), Target::Destination { host: "pypi.org".into(), port: 443 });
        assert_eq!(Target::parse("[::1]:22"), Target::Destination { host: "::1".into(), port: 22 });
        assert_eq!(Target::parse("curl"), Target::Program("curl".into()));
    }

    #[test]
    fn secrets_landlock_and_ports_are_named_with_what_would_allow_them() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let home = dir.path().canonicalize().unwrap_or_else(|error| panic!("{error}"));
        for sub in [".ssh", "ws", "tmp", "cache"] {
            std::fs::create_dir_all(home.join(sub)).unwrap_or_else(|error| panic!("{error}"));
        }
        std::fs::write(home.join(".ssh/id_ed25519"), "k").unwrap_or_else(|error| panic!("{error}"));
        let rules = engine::Rules::default();
        let (medium, ring) = plan(Trust::Medium, &home);
        let key = path(&medium, Trust::Medium, &home.join(".ssh/id_ed25519"), Op::Read, &rules);
        assert!(!key.allowed && key.layer == "secret" && key.reason.contains("SSH private keys"), "{key:?}");
        assert!(key.to_allow.is_empty());
        let shadow = path(&medium, Trust::Medium, Path::new("/etc/shadow"), Op::Read, &rules);
        assert!(!shadow.allowed && shadow.layer == "secret", "{shadow:?}");
        let passwd = path(&medium, Trust::Medium, Path::new("/etc/passwd"), Op::Read, &rules);
        assert!(passwd.allowed, "{passwd:?}");
        let write = path(&medium, Trust::Medium, Path::new("/etc/passwd"), Op::Write, &rules);
        assert!(!write.allowed && write.layer == "Landlock rule", "{write:?}");
        assert!(write.to_allow.iter().any(|line| line.contains("\"write\"")), "{write:?}");
        let etc = path(&medium, Trust::Medium, Path::new("/etc"), Op::Read, &rules);
        assert!(etc.allowed, "/etc is listable: {etc:?}");
        let ssh = destination(&medium, &ring, &["192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))], 22, &rules);
        assert!(!ssh.allowed && ssh.to_allow.iter().any(|line| line == "port = 22"), "{ssh:?}");
        let metadata =
            destination(&medium, &ring, &["169.254.169.254".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))], 80, &rules);
        assert!(!metadata.allowed && metadata.layer == "kernel deny rule", "{metadata:?}");
        let (low, low_ring) = plan(Trust::Low, &home);
        let web =
            destination(&low, &low_ring, &["192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))], 443, &rules);
        assert!(!web.allowed && web.layer == "seccomp", "{web:?}");
    }
}
