//! governor: runs AI agents inside kernel-enforced sandboxes. The modules behind the
//! `governor` binary, a library so that benchmarks and tests can reach the policy engine
//! and the audit store without a kernel.

#[macro_use]
pub mod output;

pub mod agent;
pub mod aggregate;
pub mod audit;
pub mod audit_cli;
pub mod autostart;
pub mod cgroup;
pub mod client;
pub mod context;
pub mod control;
pub mod daemon;
pub mod dashboard;
pub mod engine;
pub mod explain;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod policy;
pub mod probes;
pub mod resolve;
pub mod run;
pub mod sandbox;
pub mod service;
pub mod show;
pub mod status;
pub mod supervise;
pub mod warden;

use crate::policy::Trust;

pub fn parse_trust(value: &str) -> Result<Trust, String> {
    value.parse()
}
