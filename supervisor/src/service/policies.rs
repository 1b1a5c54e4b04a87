//! Policies: the rules file, and its drop-ins in `rules.d/` beside it; a drafted rule
//! checked as `policy check` checks it and written as a drop-in.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{
    engine,
    policy::{self, RingSource},
};

use super::{ApiError, Policies, PolicyDraft, PolicyRule};

/// The drop-in directory of a ring directory.
pub fn drop_in_dir(rings: &Path) -> PathBuf {
    rings.join("rules.d")
}

/// The engine's rules and engine for `rings` (drop-ins included).
pub fn load_rules(rings: Option<&Path>) -> Result<(engine::Rules, engine::Engine), policy::Error> {
    engine::load(&RingSource::locate(rings), &[])
}

/// The rules in force, each with the drop-in it came from.
pub fn policies(rules: &engine::Rules, rings: Option<&Path>) -> Policies {
    let drop_ins = match RingSource::locate(rings) {
        RingSource::Dir(dir) => engine::drop_ins(&dir).unwrap_or_default(),
        RingSource::BuiltIn => Vec::new(),
    };
    let policies = rules
        .rules
        .iter()
        .map(|rule| PolicyRule {
            id: rule.id.clone(),
            kind: serde_plain(&rule.kind),
            action: serde_plain(&rule.action),
            severity: serde_plain(&rule.severity),
            reason: rule.reason.to_string(),
            trust_at_least: rule.trust_at_least,
            trust_below: rule.trust_below,
            file: drop_ins
                .iter()
                .find(|(_, file)| file.rule.iter().any(|other| other.id == rule.id))
                .map(|(path, _)| path.clone()),
        })
        .collect();
    Policies { policies }
}

fn serde_plain<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|value| value.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Checks a draft as `governor policy check` would and against the rules in force (ids are
/// unique); returns the file it goes to and the ids it adds. Nothing is written.
pub fn check_draft(draft: &PolicyDraft, rings: Option<&Path>) -> Result<(PathBuf, Vec<String>), ApiError> {
    let valid_name = !draft.name.is_empty()
        && draft.name.len() <= 64
        && draft.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name {
        return Err(ApiError::bad("name", format!("name '{}': letters, digits, '-' and '_' only", draft.name)));
    }
    let RingSource::Dir(dir) = RingSource::locate(rings) else {
        return Err(ApiError::conflict(
            "the daemon runs on the rings built into governor: no rules directory to add to (start it with --rings DIR)",
        ));
    };
    let file = drop_in_dir(&dir).join(format!("{}.toml", draft.name));
    if file.exists() {
        return Err(ApiError::conflict(format!("{} exists: choose another name", file.display())));
    }
    let parsed: engine::RulesFile =
        policy::parse(&file, &draft.toml).map_err(|error| ApiError::bad("toml", error.to_string()))?;
    if parsed.rule.is_empty() {
        return Err(ApiError::bad("toml", format!("{}: no [[rule]] in it", file.display())));
    }
    if parsed.suspend_on_severity.is_some() || parsed.event_budget.is_some() {
        return Err(ApiError::bad(
            "toml",
            format!(
                "{}: a drop-in adds [[rule]]s only (suspend_on_severity and event_budget belong to rules.toml)",
                file.display()
            ),
        ));
    }
    parsed.validate().map_err(|message| ApiError::bad("toml", format!("{}: {message}", file.display())))?;
    let (rules, _) = load_rules(rings).map_err(|error| ApiError::internal(error.to_string()))?;
    for rule in &parsed.rule {
        if rules.rules.iter().any(|other| other.id == rule.id) {
            return Err(ApiError::conflict(format!("{}: rule id '{}' is already in force", file.display(), rule.id)));
        }
    }
    engine::Engine::from_rules(&engine::Rules {
        rules: rules.rules.iter().cloned().chain(parsed.rule.iter().cloned()).collect(),
        suspend_on_severity: rules.suspend_on_severity,
        event_budget: rules.event_budget,
    })
    .map_err(|message| ApiError::bad("toml", format!("{}: {message}", file.display())))?;
    Ok((file, parsed.rule.iter().map(|rule| rule.id.clone()).collect()))
}

/// Writes the drop-in whole (a temporary file renamed into place, 0644 like the rings).
pub fn write_draft(file: &Path, draft: &PolicyDraft) -> Result<(), ApiError> {
    let failed = |error: std::io::Error| ApiError::internal(format!("{}: {error}", file.display()));
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let temporary = file.with_extension("toml.new");
    std::fs::write(&temporary, &draft.toml).map_err(failed)?;
    std::fs::rename(&temporary, file).map_err(failed)
}
