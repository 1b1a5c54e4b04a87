//! What confines an agent: its ring plus `--policy` overlays, turned into a Landlock plan and a
//! seccomp plan, and checked against what the running kernel can enforce.

pub mod carve;
pub mod env;
pub mod landlock;
pub mod privileges;
pub mod seccomp;
pub mod unix;

use std::path::PathBuf;

use serde::Serialize;

use crate::policy::{Overlay, PathVars, Ring, Secret, TcpMode, Trust};

/// Everything the child applies before `exec`.
#[derive(Debug)]
pub struct Confinement {
    pub trust: Trust,
    pub landlock: landlock::Plan,
    pub seccomp: seccomp::Plan,
    /// UDP destinations (enforced by the probes' cgroup socket hooks); `None`: any.
    pub udp: Option<Vec<crate::probes::NetRule>>,
    /// Destinations no connect or datagram may reach (cgroup socket hooks, BPF LSM).
    pub net_deny: Vec<crate::probes::NetRule>,
    /// The secrets, for the inode deny list (see [`Confinement::secret_paths`]).
    pub secrets: Vec<carve::Carve>,
    /// Programs denied by inode (BPF LSM only).
    pub deny_exec: Vec<PathBuf>,
    /// Pathname UNIX sockets the agent may connect to (patterns), when the ring masks the
    /// others (`[unix]`); `None`: file permissions alone decide.
    pub unix_allow: Option<Vec<PathBuf>>,
    /// Below admin the agent keeps no capability.
    pub drop_capabilities: bool,
    /// What a user should know about how the policy was applied.
    pub notes: Vec<String>,
}

/// What the ring is built from.
pub struct Inputs<'a> {
    pub ring: &'a Ring,
    pub secrets: &'a [Secret],
    pub overlays: &'a [Overlay],
    pub vars: &'a PathVars,
    /// Every home directory that `~` in a secret stands for.
    pub homes: &'a [Home],
}

/// A home directory that `~` in a secret stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Home {
    pub path: PathBuf,
    /// Whether a secret may be created in it after launch (see [`privileges::all_homes`]): its
    /// secrets are then carved whether or not they exist yet.
    pub may_gain_secrets: bool,
}

impl Confinement {
    pub fn plan(inputs: &Inputs<'_>, fs: &dyn carve::FsView) -> Confinement {
        let Inputs { ring, secrets, overlays, vars, homes } = *inputs;
        let mut notes = Vec::new();

        let rules: Vec<_> = ring
            .landlock
            .path
            .iter()
            .chain(overlays.iter().flat_map(|overlay| overlay.landlock.iter().flat_map(|landlock| &landlock.path)))
            .collect();
        let grants: Vec<carve::Grant<usize>> = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| carve::Grant { path: rule.path.expand(vars), access: index, origin: index })
            .collect();

        // Other users' homes matter only where a grant covers them (/bin is the home of
        // user bin, and /bin is granted); checking the rest would cost a stat per secret.
        let expanded: Vec<PathBuf> = grants.iter().map(|grant| grant.path.clone()).collect();
        let homes: Vec<&Home> = homes
            .iter()
            .filter(|home| home.path == vars.home || expanded.iter().any(|grant| home.path.starts_with(grant)))
            .collect();
        let all_secrets = secrets.iter().chain(overlays.iter().flat_map(|overlay| &overlay.secret));
        let mut carves = Vec::new();
        for secret in all_secrets {
            let label = format!("{}: {}", secret.path, secret.reason);
            if secret.path.is_home_relative() {
                // A secret is carved even when it does not exist yet in the agent's home and in
                // every home a secret may be created in later (a user's own, 0755). The other
                // homes of the passwd file (/bin, /usr/sbin: only root writes there) are carved
                // only where the secret's first component exists, or each such system directory
                // would be expanded entry by entry for nothing.
                for home in &homes {
                    let path = secret.path.expand_home(vars, &home.path);
                    let first = path.strip_prefix(&home.path).ok().and_then(|rest| rest.components().next());
                    let exists = first.is_some_and(|first| fs.kind(&home.path.join(first)) != carve::Kind::Missing);
                    if home.path == vars.home || home.may_gain_secrets || exists {
                        carves.push(carve::Carve { path, hard: true, label: label.clone() });
                    }
                }
            } else {
                carves.push(carve::Carve { path: secret.path.expand(vars), hard: true, label });
            }
        }
        for exclusion in &ring.landlock.except {
            let label = format!("{}: {}", exclusion.path, exclusion.reason);
            carves.push(carve::Carve { path: exclusion.path.expand(vars), hard: false, label });
        }

        let mut landlock = landlock::Plan { enforce: ring.landlock.enforce, ..landlock::Plan::default() };
        if ring.landlock.enforce {
            let expansion = carve::expand(&grants, &carves, fs);
            notes.extend(expansion.notes);
            landlock.paths = expansion
                .rules
                .into_iter()
                .filter_map(|rule| {
                    let source = rules.get(rule.origin)?;
                    let access = if rule.listing {
                        // Listing only, and only where the grant let the agent read.
                        if !source.access.contains(&crate::policy::Access::Read) {
                            return None;
                        }
                        vec![crate::policy::Access::List]
                    } else {
                        source.access.clone()
                    };
                    Some(landlock::PathRule {
                        path: rule.path,
                        is_dir: rule.is_dir,
                        access,
                        origin: format!("{} ({})", source.path, source.reason),
                    })
                })
                .collect();
            let ports = |mode: TcpMode, ring_ports: &[crate::policy::PortRule], overlay_ports: Vec<u16>| match mode {
                TcpMode::Any => None,
                TcpMode::Allowlist => {
                    let mut ports: Vec<u16> = ring_ports.iter().map(|rule| rule.port.0).chain(overlay_ports).collect();
                    ports.sort_unstable();
                    ports.dedup();
                    Some(ports)
                }
            };
            let overlay_connect =
                overlays.iter().flat_map(|o| o.network.iter().flat_map(|n| &n.connect)).map(|r| r.port.0).collect();
            let overlay_bind =
                overlays.iter().flat_map(|o| o.network.iter().flat_map(|n| &n.bind)).map(|r| r.port.0).collect();
            landlock.connect_ports = ports(ring.network.tcp_connect, &ring.network.connect, overlay_connect);
            landlock.bind_ports = ports(ring.network.tcp_bind, &ring.network.bind, overlay_bind);
            landlock.scopes = ring.landlock.scopes.clone();
        } else if !overlays.is_empty() {
            notes.push(format!(
                "ring {} has no Landlock domain: --policy paths, ports and secrets do not restrict it",
                ring.trust
            ));
        }
        let families_refused = !ring.network.socket_families.iter().any(|family| family.number().is_none());
        let no_ip = !ring
            .network
            .socket_families
            .iter()
            .any(|family| family.number() == Some(libc::AF_INET) || family.number() == Some(libc::AF_INET6));
        if families_refused && no_ip && landlock.connect_ports.as_ref().is_some_and(|ports| !ports.is_empty()) {
            notes.push(format!("ring {} refuses IP sockets: the TCP ports granted have no effect", ring.trust));
        }

        let secrets = if ring.landlock.enforce {
            carves.iter().filter(|carve| carve.hard).cloned().collect()
        } else {
            Vec::new()
        };
        let deny_exec = ring
            .deny_exec
            .iter()
            .chain(overlays.iter().flat_map(|overlay| &overlay.deny_exec))
            .map(|rule| rule.path.expand(vars))
            .collect();
        Confinement {
            trust: ring.trust,
            landlock,
            seccomp: seccomp::Plan::from_ring(ring),
            udp: udp_plan(ring, overlays, &crate::probes::resolv_conf(), &mut notes),
            net_deny: net_deny_plan(ring, overlays, &crate::probes::resolv_conf()),
            secrets,
            deny_exec,
            unix_allow: ring.unix.as_ref().map(|unix| {
                unix.connect
                    .iter()
                    .chain(overlays.iter().flat_map(|overlay| overlay.unix.iter().flat_map(|unix| &unix.connect)))
                    .map(|rule| rule.path.expand(vars))
                    .collect()
            }),
            drop_capabilities: ring.trust != Trust::Admin,
            notes,
        }
    }

    /// Checks the plan against the kernel and the probes that were loaded. A missing required
    /// feature refuses the ring unless `best_effort`.
    pub fn check(
        &self,
        kernel: &Kernel,
        probes: Option<crate::probes::Backend>,
        best_effort: bool,
    ) -> Result<Enforcement, Unenforceable> {
        let mut missing = Vec::new();
        let mut partial = Vec::new();
        if probes.is_none() {
            if self.udp.is_some() {
                missing.push(format!(
                    "ring {} restricts UDP destinations, which needs the probes' cgroup socket hooks (not loaded: --probes off)",
                    self.trust
                ));
            }
            if !self.net_deny.is_empty() {
                missing.push(format!(
                    "ring {} denies network destinations, which needs the probes' cgroup socket hooks (not loaded: --probes off)",
                    self.trust
                ));
            }
        }
        if !probes.is_some_and(crate::probes::Backend::lsm) {
            if !self.deny_exec.is_empty() {
                missing.push(format!(
                    "ring {} denies programs by inode, which needs BPF LSM (probes: {})",
                    self.trust,
                    probes.map_or("off".into(), |backend| backend.to_string())
                ));
            }
            if !self.secrets.is_empty() {
                partial.push(format!(
                    "ring {}: secrets are denied by path only; a hard link or bind mount of one inside an allowed tree is not refused without BPF LSM",
                    self.trust
                ));
            }
        }
        if !kernel.seccomp_filter {
            missing.push(format!(
                "ring {} needs seccomp filters (CONFIG_SECCOMP_FILTER); this kernel has none",
                self.trust
            ));
        }
        for feature in self.landlock.features() {
            if kernel.landlock_abi >= feature.abi {
                continue;
            }
            let have = match kernel.landlock_abi {
                0 => "Landlock is not enabled on this kernel (it must be in the lsm= boot parameter)".to_owned(),
                abi => format!("this kernel has Landlock ABI {abi}"),
            };
            let line = format!("ring {} needs Landlock {} (ABI {}); {have}", self.trust, feature.what, feature.abi);
            if feature.required { missing.push(line) } else { partial.push(line) }
        }
        if !missing.is_empty() && !best_effort {
            return Err(Unenforceable(missing));
        }
        Ok(Enforcement { missing, partial })
    }
}

/// What of a ring is not enforced: `missing` are required parts (only with --best-effort),
/// `partial` are hardening a newer kernel or BPF LSM would add.
#[derive(Debug, Default)]
pub struct Enforcement {
    pub missing: Vec<String>,
    pub partial: Vec<String>,
}

impl Enforcement {
    pub fn all(&self) -> Vec<String> {
        self.missing.iter().chain(&self.partial).cloned().collect()
    }
}

impl Confinement {
    /// The part the probes enforce, for `backend`: the secrets' files are walked only where
    /// BPF LSM can refuse them by inode (a walk of up to 16,384 entries on every launch
    /// otherwise).
    pub fn probe_plan(&self, backend: crate::probes::Backend) -> crate::probes::ProbePlan {
        crate::probes::ProbePlan {
            udp: self.udp.clone(),
            net_deny: self.net_deny.clone(),
            deny_open: if backend.lsm() { self.secret_paths(&carve::RealFs::default()) } else { Vec::new() },
            deny_exec: self.deny_exec.clone(),
            bind_restricted: self.landlock.enforce && self.landlock.bind_ports.is_some(),
            bind_ports: self.landlock.bind_ports.clone().unwrap_or_default(),
            // The sockets bound at launch are listed by `governor run` (`unix_reachable`).
            unix: None,
        }
    }

    /// The secrets that exist now, and what is inside them (up to a bound), for the inode
    /// deny list: exact paths, where their symlinks lead, and glob matches. Only the LSM
    /// backend uses it, so it is walked only then.
    pub fn secret_paths(&self, fs: &dyn carve::FsView) -> Vec<PathBuf> {
        secret_paths(&self.secrets, fs)
    }
}

fn secret_paths(carves: &[carve::Carve], fs: &dyn carve::FsView) -> Vec<PathBuf> {
    const MAX: usize = 16384;
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = Vec::new();
    for carve in carves.iter().filter(|carve| carve.hard) {
        let name = carve.path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        if name.contains(['*', '?', '[']) {
            let Some(parent) = carve.path.parent() else { continue };
            let Ok(pattern) = std::ffi::CString::new(name) else { continue };
            for (child, _) in fs.children(parent) {
                let Ok(child_c) = std::ffi::CString::new(child.as_encoded_bytes()) else { continue };
                // SAFETY: two NUL-terminated strings; fnmatch only reads them.
                if unsafe { libc::fnmatch(pattern.as_ptr(), child_c.as_ptr(), libc::FNM_PERIOD) } == 0 {
                    stack.push(parent.join(child));
                }
            }
        } else if let Some(real) = fs.canonical(&carve.path) {
            stack.push(real);
        }
    }
    while let Some(path) = stack.pop() {
        if out.len() >= MAX {
            break;
        }
        if fs.kind(&path) == carve::Kind::Dir {
            stack.extend(
                fs.children(&path)
                    .into_iter()
                    .filter(|(_, kind)| *kind != carve::Kind::Symlink)
                    .map(|(name, _)| path.join(name)),
            );
        }
        out.push(path);
    }
    out.sort();
    out.dedup();
    out
}

/// The denied destinations of a ring and its overlays.
fn net_deny_plan(ring: &Ring, overlays: &[Overlay], resolv_conf: &std::path::Path) -> Vec<crate::probes::NetRule> {
    let rules = ring.network.deny.iter().chain(overlays.iter().flat_map(|o| o.network.iter().flat_map(|n| &n.deny)));
    rules
        .flat_map(|rule| {
            let port = rule.port.map_or(0, |port| port.0);
            targets(rule.to, resolv_conf).into_iter().map(move |(addr, prefix)| crate::probes::NetRule {
                addr,
                prefix,
                port,
            })
        })
        .collect()
}

/// The networks a rule's `to` stands for.
fn targets(to: crate::policy::UdpTarget, resolv_conf: &std::path::Path) -> Vec<(std::net::IpAddr, u8)> {
    match to {
        crate::policy::UdpTarget::Resolvers => crate::probes::resolvers(resolv_conf)
            .into_iter()
            .map(|addr| (addr, if addr.is_ipv4() { 32 } else { 128 }))
            .collect(),
        crate::policy::UdpTarget::Net { addr, prefix } => vec![(addr, prefix)],
    }
}

/// The UDP destinations of a ring and its overlays; `None` when the ring allows any.
fn udp_plan(
    ring: &Ring,
    overlays: &[Overlay],
    resolv_conf: &std::path::Path,
    notes: &mut Vec<String>,
) -> Option<Vec<crate::probes::NetRule>> {
    use crate::probes::NetRule;
    if ring.network.udp == TcpMode::Any {
        return None;
    }
    let rules =
        ring.network.udp_allow.iter().chain(overlays.iter().flat_map(|o| o.network.iter().flat_map(|n| &n.udp_allow)));
    let mut allow = Vec::new();
    for rule in rules {
        let found = targets(rule.to, resolv_conf);
        if found.is_empty() && rule.to == crate::policy::UdpTarget::Resolvers {
            notes.push(format!("{} lists no nameserver: UDP to resolvers allows nothing", resolv_conf.display()));
        }
        allow.extend(found.into_iter().map(|(addr, prefix)| NetRule { addr, prefix, port: rule.port.0 }));
    }
    Some(allow)
}

/// A ring the kernel cannot enforce: one line per missing feature.
#[derive(Debug, thiserror::Error)]
#[error("{}; pass --best-effort to run without it", .0.join("; "))]
pub struct Unenforceable(pub Vec<String>);

/// What the running kernel offers.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Kernel {
    pub landlock_abi: i32,
    pub seccomp_filter: bool,
}

impl Kernel {
    pub fn probe() -> Kernel {
        // SAFETY: PR_GET_SECCOMP only reads the caller's mode; it fails with EINVAL when the
        // kernel has no seccomp. Filter mode needs CONFIG_SECCOMP_FILTER, which publishes the
        // actions it supports in /proc/sys/kernel/seccomp/actions_avail.
        let seccomp = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } >= 0;
        let filter = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
            .is_ok_and(|actions| actions.split_whitespace().any(|action| action == "errno"));
        Kernel { landlock_abi: landlock::kernel_abi(), seccomp_filter: seccomp && filter }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RingSource;

    fn confinement(trust: Trust) -> Confinement {
        let ring = RingSource::BuiltIn.ring(trust).unwrap_or_else(|error| panic!("{error}"));
        let vars = PathVars {
            home: "/nonexistent/home".into(),
            workspace: "/nonexistent/ws".into(),
            tmpdir: "/nonexistent/tmp".into(),
            tty: None,
            cache: "/nonexistent/cache".into(),
        };
        let inputs = Inputs { ring: &ring, secrets: &[], overlays: &[], vars: &vars, homes: &[] };
        Confinement::plan(&inputs, &carve::RealFs::default())
    }

    #[test]
    fn a_ring_needing_tcp_rules_is_refused_on_landlock_abi_2() {
        let kernel = Kernel { landlock_abi: 2, seccomp_filter: true };
        let error = confinement(Trust::Medium)
            .check(&kernel, Some(crate::probes::Backend::Lsm), false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("ring medium needs Landlock TCP bind/connect rules (ABI 4); this kernel has Landlock ABI 2"),
            "{error}"
        );
        assert!(error.contains("signal scoping (ABI 6)"), "{error}");
        assert!(error.ends_with("pass --best-effort to run without it"), "{error}");
        // With --best-effort it runs and says what is not enforced, required features first.
        let lines = confinement(Trust::Medium)
            .check(&kernel, Some(crate::probes::Backend::Lsm), true)
            .map(|e| e.all())
            .unwrap_or_default();
        assert!(lines[0].contains("TCP bind/connect rules"), "{lines:?}");
        assert!(lines.iter().any(|line| line.contains("truncate(2) control (ABI 3)")), "{lines:?}");
    }

    #[test]
    fn missing_landlock_or_seccomp_is_named() {
        let none = Kernel { landlock_abi: 0, seccomp_filter: false };
        let error = confinement(Trust::Low)
            .check(&none, Some(crate::probes::Backend::Lsm), false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("needs seccomp filters"), "{error}");
        assert!(error.contains("Landlock is not enabled on this kernel"), "{error}");
        // admin needs no Landlock, but still seccomp.
        let admin = confinement(Trust::Admin).check(&Kernel { landlock_abi: 0, seccomp_filter: true }, None, false);
        assert!(admin.is_ok_and(|e| e.all().is_empty()));
    }

    #[test]
    fn udp_narrowing_needs_the_probes() {
        let kernel = Kernel { landlock_abi: 7, seccomp_filter: true };
        let error =
            confinement(Trust::Medium).check(&kernel, None, false).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("ring medium restricts UDP destinations"), "{error}");
        assert!(error.contains("ring medium denies network destinations"), "{error}");
        assert!(confinement(Trust::Admin).check(&kernel, None, false).is_ok(), "admin restricts no network");
        // On the tracepoint backend secrets are denied by path only: said, not refused.
        let tracepoint = confinement(Trust::Low).check(&kernel, Some(crate::probes::Backend::Tracepoint), false);
        assert!(tracepoint.is_ok_and(|e| e.missing.is_empty()));
    }

    #[test]
    fn medium_sends_udp_to_the_resolvers_only() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 192.0.2.53\n").unwrap_or_else(|error| panic!("{error}"));
        let ring = RingSource::BuiltIn.ring(Trust::Medium).unwrap_or_else(|error| panic!("{error}"));
        let mut notes = Vec::new();
        let allow = udp_plan(&ring, &[], &resolv, &mut notes);
        assert_eq!(allow, Some(vec![crate::probes::NetRule { addr: [192, 0, 2, 53].into(), prefix: 32, port: 53 }]));
        let high = RingSource::BuiltIn.ring(Trust::High).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(udp_plan(&high, &[], &resolv, &mut notes), None);
    }

    #[test]
    fn the_rings_are_fully_enforceable_on_abi_7() {
        let kernel = Kernel { landlock_abi: 7, seccomp_filter: true };
        for trust in Trust::ALL {
            let enforcement = confinement(trust).check(&kernel, Some(crate::probes::Backend::Lsm), false);
            assert!(enforcement.is_ok_and(|e| e.all().is_empty()), "{trust}");
        }
    }

    #[test]
    fn medium_grants_home_entry_by_entry_and_never_a_secret() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let home = dir.path().canonicalize().unwrap_or_else(|error| panic!("{error}"));
        for sub in [".ssh", ".config/gh", ".config/git", "src"] {
            std::fs::create_dir_all(home.join(sub)).unwrap_or_else(|error| panic!("{error}"));
        }
        std::fs::write(home.join(".config/git/config"), "[user]\n").unwrap_or_else(|error| panic!("{error}"));
        let ring = RingSource::BuiltIn.ring(Trust::Medium).unwrap_or_else(|error| panic!("{error}"));
        let secrets = RingSource::BuiltIn.secrets().unwrap_or_else(|error| panic!("{error}"));
        let vars = PathVars {
            home: home.clone(),
            workspace: home.join("src"),
            tmpdir: home.join("src"),
            tty: None,
            cache: home.join("src"),
        };
        let inputs = Inputs {
            ring: &ring,
            secrets: &secrets,
            overlays: &[],
            vars: &vars,
            homes: &[Home { path: home.clone(), may_gain_secrets: false }],
        };
        let plan = Confinement::plan(&inputs, &carve::RealFs::default());
        let under_home: Vec<&std::path::Path> = plan
            .landlock
            .paths
            .iter()
            .filter(|rule| rule.access != [crate::policy::Access::List])
            .map(|rule| rule.path.as_path())
            .filter(|path| path.starts_with(&home))
            .collect();
        // $HOME itself may only be listed.
        assert!(
            plan.landlock.paths.iter().any(|rule| rule.path == home && rule.access == [crate::policy::Access::List]),
            "$HOME is listable"
        );
        // ~/.config/git holds a secret too (credentials): its other entries are granted.
        assert!(under_home.contains(&home.join(".config/git/config").as_path()), "{under_home:?}");
        assert!(under_home.contains(&home.join("src").as_path()), "{under_home:?}");
        assert!(!under_home.contains(&home.as_path()), "$HOME itself must not be granted whole");
        for secret in [".ssh", ".config/gh", ".config", ".config/git"] {
            assert!(!under_home.contains(&home.join(secret).as_path()), "{secret} granted: {under_home:?}");
        }
        // The workspace keeps its own read-write rule.
        assert!(
            plan.landlock
                .paths
                .iter()
                .any(|rule| rule.path == home.join("src") && rule.access.contains(&crate::policy::Access::Write))
        );
    }

    #[test]
    fn another_users_home_is_carved_before_its_secrets_exist() {
        // In high, / is granted; a user's home holds no secret at launch. Granted whole, a
        // ~/.aws/credentials written into it later would be readable.
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let root = dir.path().canonicalize().unwrap_or_else(|error| panic!("{error}"));
        let (own, other, system) = (root.join("own"), root.join("other"), root.join("system"));
        for sub in [own.join("src"), other.join("projects"), system.join("bin")] {
            std::fs::create_dir_all(sub).unwrap_or_else(|error| panic!("{error}"));
        }
        let ring = RingSource::BuiltIn.ring(Trust::High).unwrap_or_else(|error| panic!("{error}"));
        let secrets = RingSource::BuiltIn.secrets().unwrap_or_else(|error| panic!("{error}"));
        let vars = PathVars {
            home: own.clone(),
            workspace: own.join("src"),
            tmpdir: own.join("src"),
            tty: None,
            cache: own.join("src"),
        };
        let homes = [
            Home { path: own.clone(), may_gain_secrets: true },
            Home { path: other.clone(), may_gain_secrets: true },
            Home { path: system.clone(), may_gain_secrets: false },
        ];
        let inputs = Inputs { ring: &ring, secrets: &secrets, overlays: &[], vars: &vars, homes: &homes };
        let plan = Confinement::plan(&inputs, &carve::RealFs::default());
        let granted: Vec<&std::path::Path> = plan
            .landlock
            .paths
            .iter()
            .filter(|rule| rule.access != [crate::policy::Access::List])
            .map(|rule| rule.path.as_path())
            .collect();
        assert!(!granted.contains(&other.as_path()), "{granted:?}");
        assert!(granted.contains(&other.join("projects").as_path()), "{granted:?}");
        // A home only root writes to (/bin, /usr/sbin) stays one rule.
        assert!(granted.contains(&system.as_path()), "{granted:?}");
    }

    #[test]
    fn medium_grants_dns_and_web_ports_and_high_any() {
        assert_eq!(confinement(Trust::Low).landlock.connect_ports, Some(vec![]));
        assert_eq!(confinement(Trust::Medium).landlock.connect_ports, Some(vec![53, 80, 443]));
        assert_eq!(confinement(Trust::High).landlock.connect_ports, None);
        assert_eq!(confinement(Trust::High).landlock.bind_ports, Some(vec![]));
        assert!(!confinement(Trust::Admin).landlock.enforce);
        assert!(!confinement(Trust::Admin).drop_capabilities);
    }
}
