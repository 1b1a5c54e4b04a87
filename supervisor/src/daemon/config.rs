//! `governor daemon`'s options and its configuration file (`governor.toml`): retention,
//! the loss policy and its grace period, the control group.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{engine, policy, probes};

use super::{Failure, control::Loss, usage};

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
pub(super) struct Config {
    /// A group whose members may control agents besides root.
    pub(super) control_group: Option<String>,
    #[serde(default)]
    pub(super) on_supervisor_loss: Loss,
    /// How long an agent may be without a supervisor before `on_supervisor_loss = "kill"`
    /// kills it.
    #[serde(default = "default_grace")]
    pub(super) loss_grace: engine::Window,
    /// Audit rows older than this are pruned (events, incidents, actions), at start and
    /// every ten minutes; checkpoints keep the chains verifiable.
    #[serde(default, deserialize_with = "age")]
    pub(super) audit_max_age: Option<Duration>,
    /// The oldest events are pruned while the store uses more than this (`2GiB`).
    #[serde(default, deserialize_with = "size")]
    pub(super) audit_max_size: Option<u64>,
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
    crate::service::records::parse_size(&text).map(Some).map_err(serde::de::Error::custom)
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

pub(super) fn default_grace() -> engine::Window {
    engine::Window(Duration::from_secs(30))
}

pub(super) fn load_config(explicit: Option<&Path>) -> Result<Config, Failure> {
    let default = Path::new("/etc/governor/governor.toml");
    let path = match explicit {
        Some(path) => path,
        None if default.exists() => default,
        None => return Ok(Config::default()),
    };
    let text = std::fs::read_to_string(path).map_err(|error| usage(format!("{}: {error}", path.display())))?;
    policy::parse::<Config>(path, &text).map_err(usage)
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
}
