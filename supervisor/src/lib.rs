//! governor: runs AI agents inside kernel-enforced sandboxes. The modules behind the
//! `governor` binary, a library so that benchmarks and tests can reach the policy engine
//! and the audit store without a kernel.

#[macro_use]
pub mod output;

pub mod agent;
pub mod aggregate;
pub mod audit;
pub mod cgroup;
pub mod cli;
pub mod context;
pub mod daemon;
pub mod engine;
pub mod launch;
pub mod metrics;
pub mod policy;
pub mod probes;
pub mod resolve;
pub mod sandbox;
pub mod service;
pub mod supervise;
pub mod warden;

use crate::policy::Trust;

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

pub fn parse_trust(value: &str) -> Result<Trust, String> {
    value.parse()
}

/// An agent id names its cgroup, its audit rows and its files: 1 to 64 of `[A-Za-z0-9._-]`,
/// not starting with `.`.
pub fn validate_agent_id(id: &str) -> Result<String, String> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte));
    if valid {
        Ok(id.to_owned())
    } else {
        Err(format!("agent id '{id}' must be 1 to 64 of [A-Za-z0-9._-], not starting with '.'"))
    }
}
