//! The TOML schema of rings, secrets lists and overlays. Unknown keys are errors, and every
//! value is checked here so that the error points at it.

use std::{
    fmt,
    path::{Component, Path, PathBuf},
};

use serde::{Deserialize, Deserializer, de};

use super::{Trust, syscalls};

/// One ring: what an agent at this trust level may do.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ring {
    pub trust: Trust,
    pub summary: String,
    pub landlock: Landlock,
    pub network: Network,
    pub seccomp: Seccomp,
    /// Programs the agent may not run, denied by inode (BPF LSM).
    #[serde(default)]
    pub deny_exec: Vec<Secret>,
    /// Pathname UNIX sockets: present, only the listed ones (and the agent's own) can be
    /// connected to.
    #[serde(default)]
    pub unix: Option<Unix>,
}

/// `[unix]`: the sockets bound when the agent starts are masked in its mount namespace
/// (an empty mode-000 file mounted over each), but for those listed in `connect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unix {
    pub reason: Reason,
    #[serde(default)]
    pub connect: Vec<UnixRule>,
}

/// A socket (an absolute path; its last component may be a glob) the agent may connect to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixRule {
    pub path: PathSpec,
    pub reason: Reason,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Landlock {
    /// `false` only for admin: no Landlock domain at all.
    pub enforce: bool,
    #[serde(default)]
    pub scopes: Vec<ScopeName>,
    #[serde(default)]
    pub scopes_reason: Option<Reason>,
    /// What the agent may reach in the filesystem. Everything else is denied.
    #[serde(default)]
    pub path: Vec<FsRule>,
    /// Carved out of broader `path` rules of this ring (a narrower rule may grant part back).
    #[serde(default)]
    pub except: Vec<Secret>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsRule {
    pub path: PathSpec,
    pub access: Vec<Access>,
    pub reason: Reason,
}

/// Coarse access words, each a set of Landlock rights (see `sandbox::landlock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Open files for reading, list directories.
    Read,
    /// Execute files.
    Exec,
    /// Open files for writing, truncate them.
    Write,
    /// Create, remove, rename and link entries (files, directories, symlinks, sockets, fifos).
    Create,
    /// ioctl on device files opened here.
    Ioctl,
    /// List directories only (their entries' names, not what the files hold): what a tree
    /// with secrets carved out of it keeps, so `ls /etc` and `ls ~` work.
    List,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScopeName {
    /// Abstract UNIX sockets bound outside the sandbox cannot be connected to.
    AbstractUnixSocket,
    /// Processes outside the sandbox cannot be signalled.
    Signal,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Address families `socket()` accepts; `["any"]` for no restriction. Landlock covers TCP
    /// only, so UDP and raw sockets are kept out by refusing their families in seccomp.
    pub socket_families: Vec<Family>,
    pub socket_families_reason: Reason,
    pub tcp_connect: TcpMode,
    pub tcp_bind: TcpMode,
    #[serde(default)]
    pub connect: Vec<PortRule>,
    #[serde(default)]
    pub bind: Vec<PortRule>,
    /// UDP destinations (connect and sendmsg), enforced by the probes' cgroup socket hooks.
    pub udp: TcpMode,
    #[serde(default)]
    pub udp_allow: Vec<UdpRule>,
    /// Destinations no connect or datagram may reach (cgroup socket hooks, BPF LSM).
    #[serde(default)]
    pub deny: Vec<DenyRule>,
}

/// A destination to refuse; without `port`, every port.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRule {
    pub to: UdpTarget,
    #[serde(default)]
    pub port: Option<Port>,
    pub reason: Reason,
}

/// A UDP destination: `to` is `resolvers` (the nameservers of /etc/resolv.conf), an address
/// or a CIDR.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpRule {
    pub to: UdpTarget,
    pub port: Port,
    pub reason: Reason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum UdpTarget {
    Resolvers,
    Net { addr: std::net::IpAddr, prefix: u8 },
}

impl<'de> Deserialize<'de> for UdpTarget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "resolvers" {
            return Ok(UdpTarget::Resolvers);
        }
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.as_str(), None),
        };
        let addr: std::net::IpAddr =
            addr.parse().map_err(|_| de::Error::custom(format!("'{text}' is not resolvers, an address or a CIDR")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= max)
                .ok_or_else(|| de::Error::custom(format!("'{text}': prefix must be 0..={max}")))?,
        };
        Ok(UdpTarget::Net { addr, prefix })
    }
}

/// Whether a kind of traffic is restricted to a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpMode {
    /// Not restricted by Landlock.
    Any,
    /// Only the listed ports (none when the list is empty).
    Allowlist,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Any,
    Unix,
    Inet,
    Inet6,
    Netlink,
    Packet,
    Vsock,
}

impl Family {
    /// The `AF_*` number, `None` for `any`.
    pub fn number(self) -> Option<i32> {
        match self {
            Family::Any => None,
            Family::Unix => Some(libc::AF_UNIX),
            Family::Inet => Some(libc::AF_INET),
            Family::Inet6 => Some(libc::AF_INET6),
            Family::Netlink => Some(libc::AF_NETLINK),
            Family::Packet => Some(libc::AF_PACKET),
            Family::Vsock => Some(libc::AF_VSOCK),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRule {
    pub port: Port,
    pub reason: Reason,
}

/// A TCP port, 1..=65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        match u16::try_from(value) {
            Ok(port) if port > 0 => Ok(Port(port)),
            _ => Err(de::Error::custom(format!("port {value} is not in 1..=65535"))),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seccomp {
    /// The filter is always installed; `deny` lists what it refuses.
    #[serde(default)]
    pub deny: Vec<SeccompDeny>,
    /// `clone`/`unshare` calls asking for a new namespace (any `CLONE_NEW*` flag).
    #[serde(default)]
    pub deny_namespaces: Option<NamespaceDeny>,
    /// ioctl(2) requests refused on every descriptor (the descriptors an agent inherits, its
    /// terminal above all, are beyond Landlock's reach).
    #[serde(default)]
    pub deny_ioctl: Vec<IoctlDeny>,
    /// Refusals that depend on one argument (32-bit compare): `not_in` a set of values, or
    /// with `any_bit` of a mask set.
    #[serde(default)]
    pub deny_when: Vec<DenyWhen>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyWhen {
    pub syscalls: Vec<Syscall>,
    pub arg: ArgIndex,
    #[serde(default)]
    pub not_in: Option<Vec<u64>>,
    #[serde(default)]
    pub any_bit: Option<Vec<u64>>,
    pub reason: Reason,
}

/// A syscall argument index, 0..=5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ArgIndex(pub u8);

impl<'de> Deserialize<'de> for ArgIndex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u8::deserialize(deserializer)?;
        if value > 5 {
            return Err(de::Error::custom(format!("argument {value} does not exist (syscalls take 0..=5)")));
        }
        Ok(ArgIndex(value))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoctlDeny {
    pub requests: Vec<IoctlRequest>,
    pub reason: Reason,
}

/// An ioctl request by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IoctlRequest {
    pub name: &'static str,
    pub number: u64,
}

impl IoctlRequest {
    /// The requests a policy may name, from <asm-generic/ioctls.h>.
    const KNOWN: [(&'static str, u64); 2] = [
        // Pushes bytes into the terminal's input queue: typed into the shell that started
        // the agent once it exits.
        ("TIOCSTI", 0x5412),
        // Console operations, one of which (TIOCL_PASTESEL) also injects input.
        ("TIOCLINUX", 0x541C),
    ];
}

impl<'de> Deserialize<'de> for IoctlRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        IoctlRequest::KNOWN
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(name, number)| IoctlRequest { name, number: *number })
            .ok_or_else(|| de::Error::custom(format!("unknown ioctl request '{text}' (known: TIOCSTI, TIOCLINUX)")))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeccompDeny {
    pub syscalls: Vec<Syscall>,
    #[serde(default)]
    pub errno: SeccompErrno,
    pub reason: Reason,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceDeny {
    pub syscalls: Vec<NamespaceSyscall>,
    pub reason: Reason,
}

/// The errno a refused syscall returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[expect(clippy::upper_case_acronyms, reason = "spelled as errno(3) and the policy files spell them")]
pub enum SeccompErrno {
    #[default]
    EPERM,
    EACCES,
    /// "Not implemented": what `clone3` gets, so that libc falls back to `clone`, whose
    /// flags seccomp can read.
    ENOSYS,
}

impl SeccompErrno {
    pub fn number(self) -> u32 {
        match self {
            SeccompErrno::EPERM => libc::EPERM as u32,
            SeccompErrno::EACCES => libc::EACCES as u32,
            SeccompErrno::ENOSYS => libc::ENOSYS as u32,
        }
    }
}

/// A syscall known on this architecture.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Syscall {
    pub name: String,
    #[serde(skip)]
    pub number: i64,
}

impl<'de> Deserialize<'de> for Syscall {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match syscalls::number(&name) {
            Some(number) => Ok(Syscall { name, number }),
            None => Err(de::Error::custom(format!("unknown syscall '{name}'"))),
        }
    }
}

/// A syscall whose first argument is a `CLONE_*` flag word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceSyscall {
    Clone,
    Unshare,
}

/// The `CLONE_NEW*` flags: asking for any of them creates a namespace.
pub struct NamespaceFlag;

impl NamespaceFlag {
    pub const ALL: [(&'static str, u64); 8] = [
        ("CLONE_NEWNS", libc::CLONE_NEWNS as u64),
        ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP as u64),
        ("CLONE_NEWUTS", libc::CLONE_NEWUTS as u64),
        ("CLONE_NEWIPC", libc::CLONE_NEWIPC as u64),
        ("CLONE_NEWUSER", libc::CLONE_NEWUSER as u64),
        ("CLONE_NEWPID", libc::CLONE_NEWPID as u64),
        ("CLONE_NEWNET", libc::CLONE_NEWNET as u64),
        // Not in libc 0.2 for every target; the value is from <linux/sched.h>.
        ("CLONE_NEWTIME", 0x80),
    ];
}

/// The `[[secret]]` entries of `secrets.toml`, and its `[env]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsFile {
    #[serde(default)]
    pub secret: Vec<Secret>,
    #[serde(default)]
    pub env: EnvPolicy,
}

/// `[env]`: which of governor's environment variables an agent below admin does not get.
/// A name that a `pass` entry matches is passed, whatever `withhold` says.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvPolicy {
    #[serde(default)]
    pub withhold: Vec<EnvRule>,
    #[serde(default)]
    pub pass: Vec<EnvRule>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvRule {
    pub names: Vec<EnvPattern>,
    pub reason: Reason,
}

/// An environment variable name, or a pattern where `*` stands for any run of characters;
/// compared without regard to ASCII case (`github_token` is as secret as `GITHUB_TOKEN`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct EnvPattern(String);

impl EnvPattern {
    pub fn new(raw: &str) -> Result<EnvPattern, String> {
        if raw.is_empty() || raw.contains(['=', '\0']) {
            return Err(format!("environment variable name '{raw}' must be non-empty, without '=' or NUL"));
        }
        if raw.chars().all(|c| c == '*') {
            return Err(format!("environment pattern '{raw}' matches every variable: name them"));
        }
        Ok(EnvPattern(raw.to_ascii_uppercase()))
    }

    /// Whether `name` matches (a `*` matches any run of characters, also none). Leftmost
    /// matching of each fixed part is enough when `*` is the only wildcard.
    pub fn matches(&self, name: &[u8]) -> bool {
        let name = name.to_ascii_uppercase();
        let mut parts = self.0.as_bytes().split(|byte| *byte == b'*');
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = name.as_slice().strip_prefix(first) else {
            return false;
        };
        let mut parts: Vec<&[u8]> = parts.collect();
        let Some(last) = parts.pop() else {
            // No `*`: the whole name.
            return rest.is_empty();
        };
        for part in parts.into_iter().filter(|part| !part.is_empty()) {
            match rest.windows(part.len()).position(|window| window == part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.ends_with(last)
    }
}

impl<'de> Deserialize<'de> for EnvPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        EnvPattern::new(&raw).map_err(de::Error::custom)
    }
}

impl fmt::Display for EnvPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path with the reason it is listed: a secret no ring below admin may read (the last
/// component may be a glob, `/etc/ssh/*_key`), an exclusion, or a program to deny.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub path: PathSpec,
    pub reason: Reason,
}

/// A `--policy` file: additions on top of a ring.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    #[serde(default)]
    pub landlock: Option<OverlayLandlock>,
    #[serde(default)]
    pub network: Option<OverlayNetwork>,
    #[serde(default)]
    pub secret: Vec<Secret>,
    /// Programs the agent may not run, denied by inode (BPF LSM).
    #[serde(default)]
    pub deny_exec: Vec<Secret>,
    /// Policy engine rules added to the shipped ones.
    #[serde(default)]
    pub rule: Vec<super::rules::Rule>,
    /// Environment variables to pass through (or withhold too).
    #[serde(default)]
    pub env: EnvPolicy,
    /// UNIX sockets the agent may connect to besides the ring's.
    #[serde(default)]
    pub unix: Option<OverlayUnix>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayUnix {
    #[serde(default)]
    pub connect: Vec<UnixRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayLandlock {
    #[serde(default)]
    pub path: Vec<FsRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayNetwork {
    #[serde(default)]
    pub connect: Vec<PortRule>,
    #[serde(default)]
    pub bind: Vec<PortRule>,
    #[serde(default)]
    pub udp_allow: Vec<UdpRule>,
    #[serde(default)]
    pub deny: Vec<DenyRule>,
}

/// Why a rule exists. Required and non-empty: it ends up in what the user reads.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Reason(pub String);

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().is_empty() {
            return Err(de::Error::custom("reason must not be empty"));
        }
        Ok(Reason(text))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An absolute path, or one starting with `~/`, `$HOME`, `$WORKSPACE` or `$TMPDIR`, which are
/// filled in per agent. `..` is refused so that a rule means what it says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct PathSpec(String);

/// The values of the variables a `PathSpec` may start with.
#[derive(Clone, Debug)]
pub struct PathVars {
    pub home: PathBuf,
    pub workspace: PathBuf,
    pub tmpdir: PathBuf,
    /// The terminal governor was started on (its stdin, stdout or stderr), if any.
    pub tty: Option<PathBuf>,
    /// The agent's cache directory (`$CACHE`): in its temp dir, or kept per agent id.
    pub cache: PathBuf,
}

/// What `$TTY` stands for when governor has no terminal: a path that never exists, so the
/// rule grants nothing.
const NO_TTY: &str = "/nonexistent/governor-no-tty";

impl PathSpec {
    const VARS: [&'static str; 5] = ["$HOME", "$WORKSPACE", "$TMPDIR", "$TTY", "$CACHE"];

    pub fn new(raw: &str) -> Result<PathSpec, String> {
        let rest = if raw == "~" || raw.starts_with("~/") {
            &raw[1..]
        } else if let Some(var) = Self::VARS.iter().find(|var| raw.starts_with(*var)) {
            &raw[var.len()..]
        } else if raw.starts_with('/') {
            raw
        } else if let Some(var) = raw.strip_prefix('$') {
            return Err(format!(
                "unknown variable in path '${var}' (known: $HOME, $WORKSPACE, $TMPDIR, $TTY, $CACHE, ~)"
            ));
        } else {
            return Err(format!("path '{raw}' must be absolute or start with ~/, $HOME, $WORKSPACE or $TMPDIR"));
        };
        if !rest.is_empty() && !rest.starts_with('/') {
            return Err(format!("path '{raw}': a variable must be followed by '/'"));
        }
        if Path::new(rest).components().any(|c| c == Component::ParentDir) {
            return Err(format!("path '{raw}' must not contain '..'"));
        }
        Ok(PathSpec(raw.to_owned()))
    }

    /// Whether the path is relative to the home directory (`~` or `$HOME`).
    pub fn is_home_relative(&self) -> bool {
        self.0 == "~" || self.0.starts_with("~/") || self.0.starts_with("$HOME")
    }

    /// The path with its variable replaced.
    pub fn expand(&self, vars: &PathVars) -> PathBuf {
        self.expand_home(vars, &vars.home)
    }

    /// The path with `~`/`$HOME` standing for `home` (secrets apply to every user's home).
    pub fn expand_home(&self, vars: &PathVars, home: &Path) -> PathBuf {
        let raw = self.0.as_str();
        let (base, rest) = if raw == "~" || raw.starts_with("~/") {
            (home, &raw[1..])
        } else if let Some(rest) = raw.strip_prefix("$HOME") {
            (home, rest)
        } else if let Some(rest) = raw.strip_prefix("$WORKSPACE") {
            (vars.workspace.as_path(), rest)
        } else if let Some(rest) = raw.strip_prefix("$TMPDIR") {
            (vars.tmpdir.as_path(), rest)
        } else if let Some(rest) = raw.strip_prefix("$TTY") {
            (vars.tty.as_deref().unwrap_or(Path::new(NO_TTY)), rest)
        } else if let Some(rest) = raw.strip_prefix("$CACHE") {
            (vars.cache.as_path(), rest)
        } else {
            return PathBuf::from(raw);
        };
        let rest = rest.trim_start_matches('/');
        if rest.is_empty() { base.to_path_buf() } else { base.join(rest) }
    }
}

impl<'de> Deserialize<'de> for PathSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        PathSpec::new(&raw).map_err(de::Error::custom)
    }
}

impl fmt::Display for PathSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> PathVars {
        PathVars {
            home: "/home/ann".into(),
            workspace: "/src/w".into(),
            tmpdir: "/tmp/g".into(),
            tty: Some("/dev/pts/3".into()),
            cache: "/var/lib/governor/cache/a".into(),
        }
    }

    #[test]
    fn path_specs_expand_their_variables() {
        let expand = |raw: &str| PathSpec::new(raw).map(|spec| spec.expand(&vars()));
        assert_eq!(expand("~/.ssh"), Ok(PathBuf::from("/home/ann/.ssh")));
        assert_eq!(expand("~"), Ok(PathBuf::from("/home/ann")));
        assert_eq!(expand("$HOME/.aws"), Ok(PathBuf::from("/home/ann/.aws")));
        assert_eq!(expand("$WORKSPACE"), Ok(PathBuf::from("/src/w")));
        assert_eq!(expand("$TMPDIR/x"), Ok(PathBuf::from("/tmp/g/x")));
        assert_eq!(expand("$CACHE/npm"), Ok(PathBuf::from("/var/lib/governor/cache/a/npm")));
        assert_eq!(expand("/usr"), Ok(PathBuf::from("/usr")));
        assert_eq!(expand("$TTY"), Ok(PathBuf::from("/dev/pts/3")));
    }

    #[test]
    fn bad_path_specs_say_why() {
        assert!(PathSpec::new("usr/bin").is_err_and(|e| e.contains("absolute")));
        assert!(PathSpec::new("$HOMEX").is_err_and(|e| e.contains("followed by '/'")));
        assert!(PathSpec::new("$USER/x").is_err_and(|e| e.contains("unknown variable")));
        assert!(PathSpec::new("/usr/../etc/shadow").is_err_and(|e| e.contains("..")));
    }

    #[test]
    fn udp_targets_parse() {
        let rule =
            |to: &str| toml::from_str::<UdpRule>(&format!("to = \"{to}\"\nport = 53\nreason = \"dns\"")).map(|r| r.to);
        assert_eq!(rule("resolvers").ok(), Some(UdpTarget::Resolvers));
        assert_eq!(rule("10.0.0.0/8").ok(), Some(UdpTarget::Net { addr: [10, 0, 0, 0].into(), prefix: 8 }));
        assert_eq!(rule("::1").ok(), Some(UdpTarget::Net { addr: std::net::Ipv6Addr::LOCALHOST.into(), prefix: 128 }));
        assert!(rule("10.0.0.0/33").is_err_and(|e| e.to_string().contains("prefix must be 0..=32")));
        assert!(rule("dns").is_err_and(|e| e.to_string().contains("not resolvers")));
    }

    #[test]
    fn ports_and_syscalls_are_checked() {
        let port: Result<PortRule, _> = toml::from_str("port = 70000\nreason = \"x\"");
        assert!(port.is_err_and(|e| e.to_string().contains("70000")));
        let deny: Result<SeccompDeny, _> = toml::from_str("syscalls = [\"ptrace\", \"warp\"]\nreason = \"x\"");
        assert!(deny.is_err_and(|e| e.to_string().contains("unknown syscall 'warp'")));
        let empty: Result<PortRule, _> = toml::from_str("port = 80\nreason = \" \"");
        assert!(empty.is_err_and(|e| e.to_string().contains("reason must not be empty")));
    }
}
