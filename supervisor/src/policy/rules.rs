//! The `[[rule]]` file format of the policy engine (`policies/rules.toml`, the rules
//! directory's drop-ins, and the `[[rule]]`s of `--policy` overlays): what a rule matches,
//! what it does, and the checks serde cannot make. [`crate::engine`] compiles and applies
//! them.

use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Deserializer, de};

use super::Trust;
use crate::policy;

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
    /// Record it as notable, change nothing.
    Audit,
    /// Freeze the agent's whole cgroup.
    Suspend,
    /// Kill everything in the agent's cgroup.
    Kill,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// Event kinds a rule can match. `denied` is any event the kernel or a probe refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Exec,
    Open,
    Connect,
    Sendmsg,
    Denied,
    /// A refused change of the filesystem (mkdir, unlink, rename, link, symlink, truncate,
    /// mknod, chmod, chown): matched by `path` against both of its paths.
    Fs,
}

/// A duration in a policy: `250ms`, `10s`, `5m`, `1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window(pub Duration);

impl Window {
    pub fn parse(text: &str) -> Result<Window, String> {
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 =
            number.parse().map_err(|_| format!("'{text}' is not a duration (e.g. 500ms, 10s, 5m, 1h)"))?;
        let duration = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number * 60),
            "h" => Duration::from_secs(number * 3600),
            _ => return Err(format!("'{text}': unit must be ms, s, m or h")),
        };
        if duration.is_zero() {
            return Err(format!("'{text}': a window must be longer than zero"));
        }
        Ok(Window(duration))
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Window::parse(&String::deserialize(deserializer)?).map_err(de::Error::custom)
    }
}

/// Glob patterns, checked when the file is read (an invalid one is an error at its line).
#[derive(Clone, Debug)]
pub struct Globs {
    set: GlobSet,
    /// The same globs one by one, for the engine's per-kind sets and the kernel's share.
    pub(crate) globs: Vec<Glob>,
}

impl Globs {
    pub fn is_match(&self, text: &str) -> bool {
        self.set.is_match(text)
    }

    /// The patterns, as written.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.globs.iter().map(Glob::glob)
    }
}

impl<'de> Deserialize<'de> for Globs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let patterns = Vec::<String>::deserialize(deserializer)?;
        if patterns.is_empty() {
            return Err(de::Error::custom("a glob list must not be empty"));
        }
        let mut builder = GlobSetBuilder::new();
        let mut globs = Vec::with_capacity(patterns.len());
        for pattern in &patterns {
            let glob =
                Glob::new(pattern).map_err(|error| de::Error::custom(format!("invalid glob '{pattern}': {error}")))?;
            builder.add(glob.clone());
            globs.push(glob);
        }
        let set = builder.build().map_err(|error| de::Error::custom(error.to_string()))?;
        Ok(Globs { set, globs })
    }
}

/// The earlier event a sequence rule needs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct After {
    pub kind: Kind,
    #[serde(default)]
    pub path: Option<Globs>,
    pub window: Window,
}

/// What a refusal was trying to do to a file, for [`Unless::access`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpenAccess {
    /// An open for reading only (no write mode, no O_CREAT, O_TRUNC or O_TMPFILE).
    Read,
    /// Anything else: an open for writing or creating, or a change of the filesystem.
    Write,
}

/// Events a rule leaves alone (`unless = [...]`): an event matching every field given in
/// one entry is not matched, nor counted towards the rule's rate. Each entry says why.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unless {
    /// The event's own kind (exec, open, fs, connect, sendmsg).
    #[serde(default)]
    pub kind: Option<Vec<Kind>>,
    /// For open and fs events: reading only, or writing.
    #[serde(default)]
    pub access: Option<OpenAccess>,
    /// The path (or one of its other names) matches one of these.
    #[serde(default)]
    pub path: Option<Globs>,
    /// ... and neither the path nor its other names match any of these.
    #[serde(default)]
    pub not_path: Option<Globs>,
    /// `false`: the path is none of the secrets (secrets.toml and the overlays' `[[secret]]`).
    #[serde(default)]
    pub secret: Option<bool>,
    pub reason: policy::Reason,
}

/// One `[[rule]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    #[serde(default)]
    pub priority: i32,
    pub kind: Kind,
    /// The opened file, or the exec'd program's path.
    #[serde(default)]
    pub path: Option<Globs>,
    /// The program, matched against an exec's path (alias of `path` for exec rules).
    #[serde(default)]
    pub binary: Option<Globs>,
    /// `ADDR:PORT` of a connect or sendmsg.
    #[serde(default)]
    pub destination: Option<Globs>,
    #[serde(default)]
    pub trust_at_least: Option<Trust>,
    #[serde(default)]
    pub trust_below: Option<Trust>,
    /// Match only when this is the `count`th matching event within `window`.
    #[serde(default)]
    pub count: Option<u32>,
    #[serde(default)]
    pub window: Option<Window>,
    #[serde(default)]
    pub after: Option<After>,
    /// With a rate: count distinct paths or destinations only (the same target refused
    /// again within the window is not counted again).
    #[serde(default)]
    pub distinct: bool,
    /// Events this rule does not match or count, each with its reason.
    #[serde(default)]
    pub unless: Vec<Unless>,
    pub action: Action,
    pub severity: Severity,
    pub reason: policy::Reason,
}

impl Rule {
    /// Whether the rule's trust bounds include `trust`.
    pub fn applies_to(&self, trust: Trust) -> bool {
        self.trust_at_least.is_none_or(|least| trust >= least) && self.trust_below.is_none_or(|below| trust < below)
    }
}

/// A file of `[[rule]]`s.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// Any incident this severe or worse suspends the agent, whatever its rule's action
    /// (deny and audit become suspend; kill stays kill).
    #[serde(default)]
    pub suspend_on_severity: Option<Severity>,
    /// Rows an agent may add to the audit store per window before an incident says so
    /// (and its events are aggregated more coarsely until the window ends).
    #[serde(default)]
    pub event_budget: Option<EventBudget>,
    #[serde(default)]
    pub rule: Vec<Rule>,
}

/// `event_budget = { rows = N, window = "1m" }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBudget {
    pub rows: u64,
    pub window: Window,
}

impl RulesFile {
    /// Checks what serde cannot: a rate needs both `count` and `window`; a rule that can
    /// never match is an error. Returns the rule id and the problem.
    pub fn validate(&self) -> Result<(), String> {
        for rule in &self.rule {
            match (rule.count, rule.window) {
                (Some(0), _) => return Err(format!("rule '{}': count must be at least 1", rule.id)),
                (Some(_), None) | (None, Some(_)) => {
                    return Err(format!("rule '{}': count and window go together", rule.id));
                }
                _ => {}
            }
            if let (Some(least), Some(below)) = (rule.trust_at_least, rule.trust_below)
                && least >= below
            {
                return Err(format!(
                    "rule '{}': trust_at_least {least} and trust_below {below} match no trust level",
                    rule.id
                ));
            }
            if rule.distinct && rule.count.is_none() {
                return Err(format!("rule '{}': distinct needs a rate (count and window)", rule.id));
            }
            let path_kind = matches!(rule.kind, Kind::Open | Kind::Exec | Kind::Denied | Kind::Fs);
            if rule.path.is_some() && !path_kind {
                return Err(format!("rule '{}': a {:?} event has no path", rule.id, rule.kind));
            }
            if rule.destination.is_some() && !matches!(rule.kind, Kind::Connect | Kind::Sendmsg | Kind::Denied) {
                return Err(format!("rule '{}': a {:?} event has no destination", rule.id, rule.kind));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse() {
        assert_eq!(Window::parse("250ms"), Ok(Window(Duration::from_millis(250))));
        assert_eq!(Window::parse("10s"), Ok(Window(Duration::from_secs(10))));
        assert_eq!(Window::parse("5m"), Ok(Window(Duration::from_secs(300))));
        assert!(Window::parse("0s").is_err());
        assert!(Window::parse("s").is_err());
        assert!(Window::parse("3d").is_err());
    }
}
