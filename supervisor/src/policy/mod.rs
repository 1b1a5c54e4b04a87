//! Policy files: the rings (one TOML file per trust level), the shared secrets list and the
//! user's `--policy` overlays. Parsing only; turning a ring into kernel rules is `sandbox`'s job.
//! Every check is done while deserializing, so each error carries `file:line:col`.

pub mod rules;
mod schema;
pub mod syscalls;

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    str::FromStr,
};

pub use schema::{
    Access, EnvPattern, EnvPolicy, EnvRule, NamespaceFlag, NamespaceSyscall, Overlay, PathVars, PortRule, Reason, Ring,
    ScopeName, Secret, SecretsFile, TcpMode, UdpTarget,
};

/// The trust levels, least trusted first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    Low,
    Medium,
    High,
    Admin,
}

impl Trust {
    pub const ALL: [Trust; 4] = [Trust::Low, Trust::Medium, Trust::High, Trust::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Low => "low",
            Trust::Medium => "medium",
            Trust::High => "high",
            Trust::Admin => "admin",
        }
    }
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Trust {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Trust::ALL
            .into_iter()
            .find(|trust| trust.as_str() == s)
            .ok_or_else(|| format!("unknown trust level '{s}' (expected low, medium, high or admin)"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot read policy: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{col}: {message}")]
    Parse { path: PathBuf, line: usize, col: usize, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: declares trust '{found}' but is loaded as the '{expected}' ring")]
    WrongTrust { path: PathBuf, expected: Trust, found: Trust },
}

/// Where the ring files come from.
#[derive(Clone, Debug)]
pub enum RingSource {
    /// A directory holding `low.toml`, `medium.toml`, `high.toml`, `admin.toml` and `secrets.toml`.
    Dir(PathBuf),
    /// The copy of the repository's `policies/rings/` built into the binary.
    BuiltIn,
}

impl fmt::Display for RingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingSource::Dir(dir) => write!(f, "{}", dir.display()),
            RingSource::BuiltIn => f.write_str("built-in (policies/rings of this build)"),
        }
    }
}

/// The shipped rings, built in so that one binary is enough; an installed
/// `/etc/governor/rings` (or `--rings DIR`) takes precedence.
const BUILT_IN: [(&str, &str); 5] = [
    ("low.toml", include_str!("../../../policies/rings/low.toml")),
    ("medium.toml", include_str!("../../../policies/rings/medium.toml")),
    ("high.toml", include_str!("../../../policies/rings/high.toml")),
    ("admin.toml", include_str!("../../../policies/rings/admin.toml")),
    ("secrets.toml", include_str!("../../../policies/rings/secrets.toml")),
];

/// The directory an installed governor reads its rings from.
pub const INSTALLED_RINGS: &str = "/etc/governor/rings";

impl RingSource {
    /// `--rings DIR` or `GOVERNOR_RINGS`, else the installed directory when it exists, else
    /// the built-in copy.
    pub fn locate(explicit: Option<&Path>) -> RingSource {
        match explicit {
            Some(dir) => RingSource::Dir(dir.to_path_buf()),
            None if Path::new(INSTALLED_RINGS).is_dir() => RingSource::Dir(INSTALLED_RINGS.into()),
            None => RingSource::BuiltIn,
        }
    }

    fn read(&self, name: &str) -> Result<(PathBuf, String), Error> {
        match self {
            RingSource::Dir(dir) => {
                let path = dir.join(name);
                let text = fs::read_to_string(&path).map_err(|source| Error::Read { path: path.clone(), source })?;
                Ok((path, text))
            }
            RingSource::BuiltIn => {
                let text = BUILT_IN
                    .iter()
                    .find(|(file, _)| *file == name)
                    .map(|(_, text)| (*text).to_owned())
                    .unwrap_or_default();
                Ok((PathBuf::from(format!("policies/rings/{name}")), text))
            }
        }
    }

    pub fn ring(&self, trust: Trust) -> Result<Ring, Error> {
        let (path, text) = self.read(&format!("{trust}.toml"))?;
        let ring: Ring = parse(&path, &text)?;
        if ring.trust != trust {
            return Err(Error::WrongTrust { path, expected: trust, found: ring.trust });
        }
        Ok(ring)
    }

    pub fn secrets(&self) -> Result<Vec<Secret>, Error> {
        self.secrets_file().map(|file| file.secret)
    }

    /// `secrets.toml` whole: its secrets and its `[env]` table.
    pub fn secrets_file(&self) -> Result<SecretsFile, Error> {
        let (path, text) = self.read("secrets.toml")?;
        parse::<SecretsFile>(&path, &text)
    }
}

/// Reads a `--policy` overlay.
pub fn load_overlay(path: &Path) -> Result<Overlay, Error> {
    let text = fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
    let overlay: Overlay = parse(path, &text)?;
    let rules = rules::RulesFile { rule: overlay.rule.clone(), suspend_on_severity: None, event_budget: None };
    rules.validate().map_err(|message| Error::Invalid { path: path.to_path_buf(), message })?;
    Ok(overlay)
}

/// What `governor policy check` accepts: a ring (it has `trust = ...`) or an overlay (which
/// is also the form of `secrets.toml`). Returns which one it was.
pub fn check_file(path: &Path) -> Result<&'static str, Error> {
    let text = fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
    let table: toml::Table = parse(path, &text)?;
    if table.contains_key("trust") {
        parse::<Ring>(path, &text).map(|_| "ring")
    } else {
        load_overlay(path).map(|_| "overlay")
    }
}

/// Deserializes `text`, turning toml's byte span into `file:line:col` (both 1-based).
pub fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, Error> {
    toml::from_str(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        let (line, col) = line_col(text, offset);
        Error::Parse { path: path.to_path_buf(), line, col, message: one_line(error.message()) }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |tail| tail.chars().count()) + 1;
    (line, col)
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_ring_parses_and_matches_its_name() {
        for trust in Trust::ALL {
            let ring = RingSource::BuiltIn.ring(trust).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(ring.trust, trust);
        }
        let secrets = RingSource::BuiltIn.secrets().unwrap_or_else(|error| panic!("{error}"));
        assert!(secrets.iter().any(|secret| secret.path.to_string() == "~/.ssh"));
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let text = "[[landlock.path]]\npath = \"/opt\"\naccess = [\"read\", \"fly\"]\nreason = \"x\"\n";
        let error = parse::<Overlay>(Path::new("extra.toml"), text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.starts_with("extra.toml:3:"), "{error}");
        assert!(error.contains("fly"), "{error}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_location() {
        let text = "[[secret]]\npath = \"~/.pgpass\"\nreason = \"db password\"\ncolour = \"red\"\n";
        let error = parse::<Overlay>(Path::new("p.toml"), text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.starts_with("p.toml:4:1:"), "{error}");
        assert!(error.contains("colour"), "{error}");
    }

    #[test]
    fn trust_levels_parse_and_reject_unknown() {
        assert_eq!("medium".parse::<Trust>(), Ok(Trust::Medium));
        assert!("root".parse::<Trust>().is_err_and(|e| e.contains("'root'")));
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
