//! Which of governor's environment variables an agent below admin does not get: names that
//! look like secrets (`[env]` of `secrets.toml`, plus the overlays'), unless a `pass` entry
//! lets them through. Pure, so the matcher is tested without root.

use std::ffi::OsStr;

use crate::policy::{EnvPolicy, Trust};

/// A variable kept from the agent, with the reason of the rule that withheld it (never its
/// value).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Withheld {
    pub name: String,
    pub reason: String,
}

/// The reason `name` is withheld, or `None` when it is passed. admin gets everything.
pub fn withheld_reason<'a>(name: &[u8], trust: Trust, policies: &[&'a EnvPolicy]) -> Option<&'a str> {
    if trust == Trust::Admin {
        return None;
    }
    let passed = policies
        .iter()
        .flat_map(|policy| &policy.pass)
        .any(|rule| rule.names.iter().any(|pattern| pattern.matches(name)));
    if passed {
        return None;
    }
    policies
        .iter()
        .flat_map(|policy| &policy.withhold)
        .find(|rule| rule.names.iter().any(|pattern| pattern.matches(name)))
        .map(|rule| rule.reason.0.as_str())
}

/// The names of `names` that are withheld, sorted.
pub fn withheld<'a>(names: impl Iterator<Item = &'a OsStr>, trust: Trust, policies: &[&EnvPolicy]) -> Vec<Withheld> {
    let mut out: Vec<Withheld> = names
        .filter_map(|name| {
            let reason = withheld_reason(name.as_encoded_bytes(), trust, policies)?;
            Some(Withheld { name: name.to_string_lossy().into_owned(), reason: reason.to_owned() })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{EnvPattern, RingSource};

    fn shipped() -> EnvPolicy {
        RingSource::BuiltIn.secrets_file().map(|file| file.env).unwrap_or_else(|error| panic!("{error}"))
    }

    fn pattern(raw: &str) -> EnvPattern {
        EnvPattern::new(raw).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn patterns_match_with_stars_and_without_case() {
        assert!(pattern("*_TOKEN").matches(b"GITHUB_TOKEN"));
        assert!(pattern("*_TOKEN").matches(b"github_token"));
        assert!(!pattern("*_TOKEN").matches(b"GITHUB_TOKEN_FILE"));
        assert!(!pattern("*_TOKEN").matches(b"TOKEN"));
        assert!(pattern("*_SECRET*").matches(b"AWS_SECRET_ACCESS_KEY"));
        assert!(pattern("*PASSWORD*").matches(b"PASSWORD"));
        assert!(pattern("*PASSWORD*").matches(b"PGPASSWORD"));
        assert!(pattern("A*B*C").matches(b"AXXBYYC"));
        assert!(!pattern("A*B*C").matches(b"AXXCYYB"));
        assert!(!pattern("AB*BA").matches(b"ABA"), "the prefix and suffix must not overlap");
        assert!(pattern("HOME").matches(b"HOME"));
        assert!(!pattern("HOME").matches(b"HOMER"));
        assert!(EnvPattern::new("**").is_err_and(|error| error.contains("every variable")));
        assert!(EnvPattern::new("A=B").is_err());
    }

    #[test]
    fn secret_looking_names_are_withheld_below_admin() {
        let policy = shipped();
        let policies = [&policy];
        for name in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_ACCESS_KEY_ID",
            "GITHUB_TOKEN",
            "GH_TOKEN",
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "HF_TOKEN",
            "PGPASSWORD",
            "MYSQL_PWD",
            "TWINE_PASSWORD",
            "CARGO_REGISTRY_TOKEN",
            "AZURE_CLIENT_SECRET",
            "VAULT_TOKEN",
            "npm_config_//registry.npmjs.org/:_authToken",
            "DJANGO_SECRET_KEY",
        ] {
            assert!(withheld_reason(name.as_bytes(), Trust::Medium, &policies).is_some(), "{name} passed");
            assert!(withheld_reason(name.as_bytes(), Trust::Admin, &policies).is_none(), "{name} withheld in admin");
        }
    }

    #[test]
    fn what_ordinary_tools_need_is_passed() {
        let policy = shipped();
        let policies = [&policy];
        for name in [
            "PATH",
            "HOME",
            "TERM",
            "LANG",
            "USER",
            "PIP_FIND_LINKS",
            "PIP_CERT",
            "PIP_DEFAULT_TIMEOUT",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "AWS_CA_BUNDLE",
            "AWS_REGION",
            "AWS_PROFILE",
            "CARGO_HOME",
            "RUSTUP_HOME",
            "PYENV_ROOT",
            "TOKENIZERS_PARALLELISM",
            "GITHUB_TOKEN_FILE",
            "POSTGRES_PASSWORD_FILE",
            "PASSWORD_STORE_DIR",
            "GIT_ASKPASS",
            "KEYTIMEOUT",
            "TF_CLI_CONFIG_FILE",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ] {
            assert_eq!(withheld_reason(name.as_bytes(), Trust::Low, &policies), None, "{name} withheld");
        }
    }

    #[test]
    fn an_overlay_passes_a_named_variable_through() {
        let shipped = shipped();
        let overlay: crate::policy::Overlay =
            toml::from_str("[[env.pass]]\nnames = [\"GITHUB_TOKEN\"]\nreason = \"the agent opens pull requests\"\n")
                .unwrap_or_else(|error| panic!("{error}"));
        let policies = [&shipped, &overlay.env];
        assert_eq!(withheld_reason(b"GITHUB_TOKEN", Trust::High, &policies), None);
        assert!(withheld_reason(b"GH_TOKEN", Trust::High, &policies).is_some());
        let names = [OsStr::new("GITHUB_TOKEN"), OsStr::new("PATH"), OsStr::new("OPENAI_API_KEY")];
        let listed = withheld(names.into_iter(), Trust::High, &policies);
        assert_eq!(listed.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["OPENAI_API_KEY"]);
    }

    #[test]
    fn env_errors_name_file_line_and_column() {
        let text = "[[env.pass]]\nnames = [\"OK\", \"A=B\"]\nreason = \"x\"\n";
        let error = crate::policy::parse::<crate::policy::Overlay>(std::path::Path::new("p.toml"), text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.starts_with("p.toml:2:"), "{error}");
        let text = "[[env.pass]]\nnames = [\"OK\"]\n";
        let error = crate::policy::parse::<crate::policy::Overlay>(std::path::Path::new("p.toml"), text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("reason"), "{error}");
    }
}
