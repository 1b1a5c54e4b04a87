//! Registration ahead of a run: a spec becomes an overlay, the form every run already
//! applies, kept in the registrations directory beside the audit store.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use crate::policy::{self, Trust};

use super::{AgentSpec, ApiError, Registered, agent_field};

/// The overlay TOML for `spec`; checked by loading it as `governor run --policy` would.
pub fn overlay_of(spec: &AgentSpec) -> Result<String, ApiError> {
    let reason = spec.reason.clone().unwrap_or_else(|| format!("registered for agent {}", spec.agent_id));
    let quoted = |text: &str| toml::Value::String(text.to_owned()).to_string();
    let mut out = String::new();
    let absolute = |field: &str, path: &str| -> Result<(), ApiError> {
        if path.starts_with('/') || path.starts_with('$') {
            Ok(())
        } else {
            Err(ApiError::bad(field, format!("{field}: '{path}' is not an absolute path")))
        }
    };
    let program = |field: &str, name: &str| -> Result<String, ApiError> {
        if name.starts_with('/') {
            return Ok(name.to_owned());
        }
        lookup(name)
            .map(|path| path.display().to_string())
            .ok_or_else(|| ApiError::bad(field, format!("{field}: '{name}' is not found on PATH")))
    };
    for path in &spec.allowed_paths {
        absolute("allowed_paths", path)?;
        out.push_str(&format!(
            "[[landlock.path]]\npath = {}\naccess = [\"read\"]\nreason = {}\n\n",
            quoted(path),
            quoted(&reason)
        ));
    }
    for name in &spec.allowed_programs {
        let path = program("allowed_programs", name)?;
        out.push_str(&format!(
            "[[landlock.path]]\npath = {}\naccess = [\"read\", \"exec\"]\nreason = {}\n\n",
            quoted(&path),
            quoted(&reason)
        ));
    }
    // Denied paths and programs are carved out of every tree the ring grants (Landlock),
    // as secrets are.
    for path in &spec.denied_paths {
        absolute("denied_paths", path)?;
        out.push_str(&format!("[[secret]]\npath = {}\nreason = {}\n\n", quoted(path), quoted(&reason)));
    }
    // A denied program kills the agent that runs it: the engine sees every exec on every
    // probe backend (a Landlock carve out of /usr/bin would also take the directory off the
    // agent's PATH).
    for (index, name) in spec.denied_programs.iter().enumerate() {
        let path = program("denied_programs", name)?;
        let real = std::fs::canonicalize(&path).map_or(path.clone(), |real| real.display().to_string());
        let names: Vec<String> = if real == path { vec![quoted(&path)] } else { vec![quoted(&path), quoted(&real)] };
        out.push_str(&format!(
            "[[rule]]\nid = {}\nkind = \"exec\"\nbinary = [{}]\naction = \"kill\"\nseverity = \"high\"\nreason = {}\n\n",
            quoted(&format!("registered-{}-program-{}", spec.agent_id, index + 1)),
            names.join(", "),
            quoted(&format!("{reason}: a denied program"))
        ));
    }
    for destination in &spec.allowed_destinations {
        let port = destination
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .filter(|port| *port > 0)
            .ok_or_else(|| {
                ApiError::bad("allowed_destinations", format!("allowed_destinations: '{destination}' is not HOST:PORT"))
            })?;
        out.push_str(&format!("[[network.connect]]\nport = {port}\nreason = {}\n\n", quoted(&reason)));
    }
    for destination in &spec.denied_destinations {
        let (to, port) = deny_target(destination).ok_or_else(|| {
            ApiError::bad(
                "denied_destinations",
                format!("denied_destinations: '{destination}' is not ADDR[/PREFIX][:PORT]"),
            )
        })?;
        out.push_str(&format!("[[network.deny]]\nto = {}\n", quoted(&to)));
        if let Some(port) = port {
            out.push_str(&format!("port = {port}\n"));
        }
        out.push_str(&format!("reason = {}\n\n", quoted(&reason)));
    }
    Ok(out)
}

/// `ADDR[/PREFIX][:PORT]` (an IPv6 address in brackets when a port follows).
fn deny_target(text: &str) -> Option<(String, Option<u16>)> {
    let (net, port) = if let Some(rest) = text.strip_prefix('[') {
        let (net, port) = rest.split_once("]:")?;
        (net, Some(port.parse::<u16>().ok()?))
    } else if text.matches(':').count() == 1 {
        let (net, port) = text.split_once(':')?;
        (net, Some(port.parse::<u16>().ok()?))
    } else {
        (text, None)
    };
    let addr = net.split_once('/').map_or(net, |(addr, _)| addr);
    addr.parse::<IpAddr>().ok()?;
    Some((net.to_owned(), port))
}

fn lookup(name: &str) -> Option<PathBuf> {
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// Checks a spec and writes its overlay into `dir` (`ID.toml`, root's, 0600): the file is
/// loaded as a `--policy` file before it is kept.
pub fn register(spec: &AgentSpec, dir: &Path) -> Result<Registered, ApiError> {
    let agent_id = agent_field("agent_id", &spec.agent_id)?;
    let text = overlay_of(spec)?;
    let failed = |path: &Path, error: std::io::Error| ApiError::internal(format!("{}: {error}", path.display()));
    std::fs::create_dir_all(dir).map_err(|error| failed(dir, error))?;
    let file = overlay_in(dir, &agent_id);
    let temporary = dir.join(format!("{agent_id}.toml.new"));
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|error| failed(&temporary, error))?;
        std::io::Write::write_all(&mut written, text.as_bytes()).map_err(|error| failed(&temporary, error))?;
    }
    if let Err(error) = policy::load_overlay(&temporary) {
        let _ = std::fs::remove_file(&temporary);
        return Err(ApiError::bad("agent_id", error.to_string()));
    }
    std::fs::rename(&temporary, &file).map_err(|error| failed(&file, error))?;
    let spec_file = dir.join(format!("{agent_id}.json"));
    let json = serde_json::to_vec(spec).map_err(|error| ApiError::internal(error.to_string()))?;
    std::fs::write(&spec_file, json).map_err(|error| failed(&spec_file, error))?;
    Ok(Registered { agent_id, trust: spec.trust.unwrap_or(Trust::Low), overlay: file })
}

/// Where a daemon keeps registrations: `registered/` beside its audit store.
pub fn registered_dir(audit_db: &Path) -> PathBuf {
    audit_db.parent().unwrap_or(Path::new(".")).join("registered")
}

/// A registration's overlay in the registrations directory `dir`.
pub fn overlay_in(dir: &Path, agent: &str) -> PathBuf {
    dir.join(format!("{agent}.toml"))
}

/// Where the daemon of the store `audit_db` keeps a registration's overlay.
pub fn registered_overlay(audit_db: &Path, agent: &str) -> PathBuf {
    overlay_in(&registered_dir(audit_db), agent)
}

/// The registrations kept in `dir`.
pub fn registrations(dir: &Path) -> Vec<AgentSpec> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut specs: Vec<AgentSpec> = entries
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "json"))
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    specs.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_becomes_an_overlay_that_loads() {
        let spec = AgentSpec {
            agent_id: "a".into(),
            trust: Some(Trust::Medium),
            allowed_paths: vec!["/srv/data".into()],
            denied_paths: vec!["/etc/hostname".into()],
            denied_programs: vec!["/usr/bin/env".into()],
            allowed_destinations: vec!["example.org:8443".into()],
            denied_destinations: vec!["192.0.2.0/24:443".into(), "198.51.100.7".into()],
            ..AgentSpec::default()
        };
        let text = overlay_of(&spec).unwrap_or_else(|error| panic!("{error}"));
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let path = dir.path().join("a.toml");
        std::fs::write(&path, &text).unwrap_or_else(|error| panic!("{error}"));
        let overlay = policy::load_overlay(&path).unwrap_or_else(|error| panic!("{error}\n{text}"));
        assert_eq!(overlay.secret.len(), 1);
        assert_eq!(overlay.rule.len(), 1);
        assert_eq!(overlay.network.as_ref().map(|network| network.deny.len()), Some(2));
        let bad = AgentSpec { agent_id: "a".into(), allowed_paths: vec!["relative".into()], ..AgentSpec::default() };
        assert_eq!(overlay_of(&bad).map_err(|error| error.field), Err(Some("allowed_paths".into())));
        let bad =
            AgentSpec { agent_id: "a".into(), denied_destinations: vec!["nowhere".into()], ..AgentSpec::default() };
        assert_eq!(overlay_of(&bad).map_err(|error| error.field), Err(Some("denied_destinations".into())));
    }

    #[test]
    fn deny_targets_parse() {
        assert_eq!(deny_target("192.0.2.1:22"), Some(("192.0.2.1".into(), Some(22))));
        assert_eq!(deny_target("10.0.0.0/8"), Some(("10.0.0.0/8".into(), None)));
        assert_eq!(deny_target("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(deny_target("::1"), Some(("::1".into(), None)));
        assert_eq!(deny_target("example.org:80"), None);
    }
}
