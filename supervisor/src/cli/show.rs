//! `governor policy show` and `governor check`: what a ring means on this machine.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::{
    launch::{self, Prepared},
    policy::{RingSource, Trust},
    sandbox::{Confinement, Kernel},
};

/// Prints the effective rules of a ring. The agent's temp directory does not exist yet, so
/// it is shown as `$TMPDIR`.
pub fn policy_show(
    rings: Option<&Path>,
    trust: Trust,
    policies: &[PathBuf],
    workspace: Option<PathBuf>,
    json: bool,
) -> Result<i32, (i32, String)> {
    let request = launch::Request::dry(rings, trust, policies, workspace);
    let prepared = launch::prepare(request).map_err(|error| (error.exit_code(), error.to_string()))?;
    policy_show_prepared(prepared, rings, trust, json)
}

fn policy_show_prepared(
    prepared: Prepared,
    rings: Option<&Path>,
    trust: Trust,
    json: bool,
) -> Result<i32, (i32, String)> {
    let tmpdir = tempdir_stand_in();
    let confinement = launch::confinement(&prepared, &tmpdir);
    let source = RingSource::locate(rings);
    // What `run --probes auto` would get here (loading the probes needs root).
    let probes = crate::probes::Probes::load(crate::probes::Choice::Auto).ok().flatten();
    let backend = probes.as_ref().map(|probes| probes.backend);
    drop(probes);
    let support = confinement.check(&prepared.kernel, backend, true).map(|e| e.all()).unwrap_or_default();
    let display = |path: &Path| {
        path.strip_prefix(&tmpdir)
            .map_or_else(|_| path.display().to_string(), |rest| Path::new("$TMPDIR").join(rest).display().to_string())
    };
    if json {
        let value = json!({
            "trust": trust,
            "summary": prepared.ring.summary,
            "rings": source.to_string(),
            "workspace": prepared.workspace,
            "landlock": {
                "enforce": confinement.landlock.enforce,
                "paths": confinement.landlock.paths.iter().map(|rule| json!({
                    "path": display(&rule.path),
                    "access": rule.access,
                    "directory": rule.is_dir,
                    "from": rule.origin,
                })).collect::<Vec<_>>(),
                "tcp_connect": confinement.landlock.connect_ports,
                "tcp_bind": confinement.landlock.bind_ports,
                "udp_allow": confinement.udp.as_ref().map(|allowed| allowed.iter().map(|a| json!({
                    "addr": a.addr.to_string(), "prefix": a.prefix, "port": a.port,
                })).collect::<Vec<_>>()),
                "scopes": confinement.landlock.scopes,
            },
            "seccomp": confinement.seccomp.refusals.iter().map(|refusal| json!({
                "syscall": refusal.syscall,
                "when": condition(&refusal.condition),
                "errno": nix::errno::Errno::from_raw(refusal.errno as i32).to_string(),
                "reason": refusal.reason,
            })).collect::<Vec<_>>(),
            "secrets": prepared.secrets.iter().chain(prepared.overlays.iter().flat_map(|o| &o.secret)).map(|secret| json!({
                "path": secret.path.to_string(),
                "reason": secret.reason.to_string(),
            })).collect::<Vec<_>>(),
            "env_withheld": launch::env_withheld(&prepared),
            "unix_connect": confinement.unix_allow,
            "capabilities": if confinement.drop_capabilities { "none" } else { "kept" },
            "notes": confinement.notes,
            "kernel": prepared.kernel,
            "not_enforced_here": support,
        });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        print_text(&prepared, &confinement, &source, &support, &display);
    }
    Ok(0)
}

fn print_text(
    prepared: &Prepared,
    confinement: &Confinement,
    source: &RingSource,
    support: &[String],
    display: &dyn Fn(&Path) -> String,
) {
    println!("ring {}: {}", confinement.trust, prepared.ring.summary);
    println!("rings from {source}; workspace {}", prepared.workspace.display());
    if confinement.landlock.enforce {
        println!("\nfilesystem (Landlock; everything not listed is denied):");
        for rule in &confinement.landlock.paths {
            let access: Vec<String> = rule.access.iter().map(|a| format!("{a:?}").to_lowercase()).collect();
            println!("  {:<44} {:<32} from {}", display(&rule.path), access.join(","), rule.origin);
        }
        println!(
            "\nnetwork: TCP connect {}, TCP bind {}",
            launch::ports(confinement.landlock.connect_ports.as_deref()),
            launch::ports(confinement.landlock.bind_ports.as_deref())
        );
        let network = &prepared.ring.network;
        let overlay_network = prepared.overlays.iter().flat_map(|overlay| overlay.network.iter());
        let connect = network.connect.iter().chain(overlay_network.clone().flat_map(|n| &n.connect));
        let bind = network.bind.iter().chain(overlay_network.flat_map(|n| &n.bind));
        for (what, rules) in [("connect", connect.collect::<Vec<_>>()), ("bind", bind.collect())] {
            for rule in rules {
                println!("  TCP {what} port {:<6} {}", rule.port.0, rule.reason);
            }
        }
        let udp_rules = network
            .udp_allow
            .iter()
            .chain(prepared.overlays.iter().flat_map(|o| o.network.iter().flat_map(|n| &n.udp_allow)));
        match &confinement.udp {
            None => println!("  UDP to any destination"),
            Some(allowed) => {
                for rule in udp_rules {
                    println!("  UDP to {:?} port {:<6} {}", rule.to, rule.port.0, rule.reason);
                }
                let resolved: Vec<String> =
                    allowed.iter().map(|a| format!("{}/{}:{}", a.addr, a.prefix, a.port)).collect();
                println!(
                    "  UDP allowed (cgroup socket hooks): {}",
                    if resolved.is_empty() { "nothing".into() } else { resolved.join(", ") }
                );
            }
        }
        let deny_rules =
            network.deny.iter().chain(prepared.overlays.iter().flat_map(|o| o.network.iter().flat_map(|n| &n.deny)));
        for rule in deny_rules {
            let port = rule.port.map_or("any port".to_owned(), |port| format!("port {}", port.0));
            println!("  denied: {:?} {port}  {} (cgroup socket hooks; BPF LSM)", rule.to, rule.reason);
        }
        println!("socket families: {:?} ({})", network.socket_families, network.socket_families_reason);
        match &confinement.unix_allow {
            Some(allowed) => {
                println!("UNIX sockets bound at launch are masked, but the agent's own and:");
                for path in allowed {
                    println!("  {}", path.display());
                }
            }
            None => println!("UNIX sockets: file permissions alone decide"),
        }
        for rule in prepared.ring.deny_exec.iter().chain(prepared.overlays.iter().flat_map(|o| &o.deny_exec)) {
            println!("exec denied by inode (BPF LSM): {}  {}", rule.path, rule.reason);
        }
        let scopes: Vec<String> = confinement.landlock.scopes.iter().map(|s| format!("{s:?}")).collect();
        let reason =
            prepared.ring.landlock.scopes_reason.as_ref().map(|reason| format!(" ({reason})")).unwrap_or_default();
        println!(
            "scoped (the agent reaches nothing outside its sandbox through them): {}{reason}",
            if scopes.is_empty() { "nothing".into() } else { scopes.join(", ") }
        );
    } else {
        println!("\nfilesystem and TCP: not restricted (no Landlock domain)");
    }
    println!("\nsecrets (never readable below admin):");
    for secret in prepared.secrets.iter().chain(prepared.overlays.iter().flat_map(|o| &o.secret)) {
        println!("  {:<24} {}", secret.path.to_string(), secret.reason);
    }
    // Of this shell's environment: the names a `governor run` from here would withhold.
    let withheld = launch::env_withheld(prepared);
    if withheld.is_empty() {
        println!("\nenvironment withheld (names of this environment, never values): none");
    } else {
        println!("\nenvironment withheld (names of this environment, never values):");
        for variable in &withheld {
            println!("  {:<24} {}", variable.name, variable.reason);
        }
    }
    println!("\nseccomp refuses:");
    for refusal in &confinement.seccomp.refusals {
        let errno = nix::errno::Errno::from_raw(refusal.errno as i32);
        println!(
            "  {:<18} {:<28} {:<7} {}",
            refusal.syscall,
            condition(&refusal.condition),
            format!("{errno:?}"),
            refusal.reason
        );
    }
    println!("\ncapabilities: {}", if confinement.drop_capabilities { "none (all sets cleared)" } else { "kept" });
    if !confinement.notes.is_empty() {
        println!("\nnotes:");
        for note in &confinement.notes {
            println!("  {note}");
        }
    }
    if !support.is_empty() {
        println!("\nnot enforceable on this kernel:");
        for line in support {
            println!("  {line}");
        }
    }
}

fn condition(condition: &crate::sandbox::seccomp::Condition) -> String {
    use crate::sandbox::seccomp::Condition;
    match condition {
        Condition::Always => "always".into(),
        Condition::AnyFlag { arg, .. } => format!("arg{arg} has a CLONE_NEW* flag"),
        Condition::OneOf { arg, values, .. } => {
            format!("arg{arg} is {}", values.iter().map(|v| format!("{v:#x}")).collect::<Vec<_>>().join("|"))
        }
        Condition::NotIn { arg, values, .. } => {
            let names: Vec<String> = values.iter().map(|v| family_name(*v)).collect();
            format!("arg{arg} not in {}", names.join("|"))
        }
        Condition::SocketType { families, types } => {
            let families: Vec<String> = families.iter().map(|v| family_name(*v)).collect();
            let types: Vec<&str> = types
                .iter()
                .map(|kind| match i32::try_from(*kind).unwrap_or(-1) {
                    libc::SOCK_STREAM => "SOCK_STREAM",
                    libc::SOCK_DGRAM => "SOCK_DGRAM",
                    _ => "other",
                })
                .collect();
            format!("arg0 is {} and arg1 not {}", families.join("|"), types.join("|"))
        }
    }
}

fn family_name(value: u64) -> String {
    match i32::try_from(value).unwrap_or(-1) {
        libc::AF_UNIX => "AF_UNIX".into(),
        libc::AF_INET => "AF_INET".into(),
        libc::AF_INET6 => "AF_INET6".into(),
        libc::AF_NETLINK => "AF_NETLINK".into(),
        libc::AF_PACKET => "AF_PACKET".into(),
        libc::AF_VSOCK => "AF_VSOCK".into(),
        other => other.to_string(),
    }
}

/// A path that stands for the agent's temp directory in `policy show`; it must exist so
/// that the rule is shown as it would be applied.
fn tempdir_stand_in() -> PathBuf {
    std::env::temp_dir()
}

/// `governor check`: the kernel features each ring relies on, and whether this kernel has them.
pub fn check(rings: Option<&Path>) -> i32 {
    let kernel = Kernel::probe();
    println!(
        "Landlock ABI: {}",
        match kernel.landlock_abi {
            0 => "not enabled".to_string(),
            abi => abi.to_string(),
        }
    );
    println!("seccomp filters: {}", if kernel.seccomp_filter { "yes" } else { "no" });
    match crate::cgroup::mount_point() {
        Ok(mount) => println!("cgroup v2: {}", mount.display()),
        Err(error) => println!("cgroup v2: {error}"),
    }
    match crate::probes::bpf_lsm_active() {
        Some(active) => println!("BPF LSM active: {}", if active { "yes" } else { "no" }),
        None => println!("BPF LSM active: unknown (securityfs is not mounted at /sys/kernel/security)"),
    }
    println!("eBPF object: {} bytes embedded", crate::probes::OBJECT.len());
    let backend = match crate::probes::Probes::load(crate::probes::Choice::Auto) {
        Ok(Some(probes)) => {
            println!("probes: {} backend loads", probes.backend);
            if let Some(reason) = &probes.cwd_walk {
                println!("probes: {reason}");
            }
            if let Some(reason) = &probes.fallback {
                println!("probes: BPF LSM programs do not load here: {reason}");
            }
            Some(probes.backend)
        }
        Ok(None) => None,
        Err(error) => {
            println!("probes: do not load: {error}");
            None
        }
    };
    // The backend without syscall tracepoints: a daemon's auto choice where BPF LSM does not
    // load (standalone runs keep the tracepoints unless --probes notify).
    match crate::sandbox::landlock::kernel_abi() {
        abi if abi >= 7 && backend == Some(crate::probes::Backend::Tracepoint) => println!(
            "probes: governor daemon (auto): notify backend (no syscall tracepoint: the host pays nothing while agents run); standalone runs: tracepoint, or --probes notify"
        ),
        abi if abi >= 7 => println!("probes: notify backend (no syscall tracepoint) available with --probes notify"),
        abi => println!("probes: notify backend unavailable: Landlock ABI {abi}, its audit records need ABI 7"),
    }
    // What the notify backend keeps in the kernel: the exit rules of the agents' login uid,
    // and any agent session's rules an earlier governor left (removed at the next run).
    if let Ok(installed) = crate::probes::landlock_audit::agent_rules_installed() {
        let sessions = crate::probes::landlock_audit::session_rules().unwrap_or_default();
        let ended: Vec<String> =
            sessions.iter().filter(|(_, live)| !live).map(|(session, _)| session.to_string()).collect();
        let all: Vec<String> = sessions.iter().map(|(session, _)| session.to_string()).collect();
        let agents = if installed {
            format!("exit rules for agents (login uid {}) in", crate::probes::landlock_audit::AGENT_AUID)
        } else {
            "no exit rules for agents yet (the first notify run puts them in)".to_owned()
        };
        match (all.is_empty(), ended.is_empty()) {
            (true, _) => println!("audit: {agents}; no agent session rules"),
            (false, true) => println!("audit: {agents}; agent session rules for sessions {}", all.join(" ")),
            (false, false) => println!(
                "audit: {agents}; agent session rules for sessions {} (ended, removed at the next run: {})",
                all.join(" "),
                ended.join(" ")
            ),
        }
    }
    // Not auto's choice yet; whether it would load here.
    match crate::probes::Probes::load(crate::probes::Choice::Fentry) {
        Ok(Some(probes)) => println!(
            "probes: --probes fentry: {} backend loads (events from fentry/fexit on the syscall functions, not the syscall tracepoints)",
            probes.backend
        ),
        Ok(None) => {}
        Err(error) => println!("probes: {error}"),
    }
    let source = RingSource::locate(rings);
    let mut code = 0;
    for trust in Trust::ALL {
        let ring = match source.ring(trust) {
            Ok(ring) => ring,
            Err(error) => {
                println!("ring {trust}: {error}");
                code = crate::exit::USAGE;
                continue;
            }
        };
        let plan = crate::sandbox::landlock::Plan {
            enforce: ring.landlock.enforce,
            connect_ports: (ring.network.tcp_connect == crate::policy::TcpMode::Allowlist).then(Vec::new),
            bind_ports: (ring.network.tcp_bind == crate::policy::TcpMode::Allowlist).then(Vec::new),
            scopes: ring.landlock.scopes.clone(),
            paths: Vec::new(),
        };
        let confinement = Confinement {
            trust,
            landlock: plan,
            seccomp: crate::sandbox::seccomp::Plan::from_ring(&ring),
            udp: None,
            net_deny: Vec::new(),
            secrets: Vec::new(),
            deny_exec: ring
                .deny_exec
                .iter()
                .map(|rule| {
                    rule.path.expand(&crate::policy::PathVars {
                        home: "/".into(),
                        workspace: "/".into(),
                        tmpdir: "/".into(),
                        tty: None,
                        cache: "/".into(),
                    })
                })
                .collect(),
            unix_allow: None,
            drop_capabilities: trust != Trust::Admin,
            notes: Vec::new(),
        };
        match confinement.check(&kernel, backend, false).map(|e| e.all()) {
            Ok(lines) if lines.is_empty() => println!("ring {trust}: fully enforceable"),
            Ok(lines) => println!("ring {trust}: enforceable; not enforced: {}", lines.join("; ")),
            Err(error) => println!("ring {trust}: refused: {error}"),
        }
    }
    code
}
