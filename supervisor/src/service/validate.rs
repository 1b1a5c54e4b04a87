//! Validate: `governor explain`'s answer for one agent's ring, as data.

use std::path::{Path, PathBuf};

use crate::policy::Trust;

use super::{ActionType, ApiError, Validate, Validation, explain};

/// Whether `trust` (with `overlays`) lets an agent do `request`, which layer decides and
/// why. The same plan `governor run` applies, then the engine rules that would act on it.
pub fn validate(
    rings: Option<&Path>,
    trust: Trust,
    overlays: &[PathBuf],
    request: &Validate,
) -> Result<Validation, ApiError> {
    let target = request.target.trim();
    if target.is_empty() {
        return Err(ApiError::bad("target", "target is empty"));
    }
    let op = match request.action_type {
        ActionType::Open | ActionType::Read => explain::Op::Read,
        ActionType::Write => explain::Op::Write,
        ActionType::Exec => explain::Op::Exec,
        ActionType::Connect => explain::Op::Connect,
    };
    let parsed = explain::Target::parse(target);
    match (&parsed, op) {
        (explain::Target::Destination { .. }, explain::Op::Connect) => {}
        (_, explain::Op::Connect) => {
            return Err(ApiError::bad("target", format!("action_type connect needs HOST:PORT, not '{target}'")));
        }
        (explain::Target::Destination { .. }, _) => {
            return Err(ApiError::bad("action_type", format!("'{target}' is a destination: action_type connect")));
        }
        (explain::Target::Program(_), explain::Op::Read | explain::Op::Write) => {
            return Err(ApiError::bad(
                "target",
                format!("action_type {op:?} needs an absolute path, not '{target}'").to_lowercase(),
            ));
        }
        _ => {}
    }
    let workspace = match &request.workspace {
        Some(dir) if !dir.is_absolute() => {
            return Err(ApiError::bad("workspace", format!("workspace {} is not an absolute path", dir.display())));
        }
        Some(dir) if !dir.is_dir() => {
            return Err(ApiError::bad("workspace", format!("workspace {} is not a directory", dir.display())));
        }
        Some(dir) => dir.clone(),
        // An empty directory of governor's own: no path the caller asks about is in it.
        None => {
            let empty = std::env::temp_dir().join("governor-validate-no-workspace");
            std::fs::create_dir_all(&empty)
                .map_err(|error| ApiError::internal(format!("{}: {error}", empty.display())))?;
            empty
        }
    };
    let run = crate::launch::Request::dry(rings, trust, overlays, Some(workspace));
    let answer = explain::answer(run, &parsed, Some(op)).map_err(|(code, message)| {
        if code == crate::exit::USAGE { ApiError::bad("target", message) } else { ApiError::internal(message) }
    })?;
    Ok(validation_of(answer, trust, request))
}

fn validation_of(answer: explain::Answer, trust: Trust, request: &Validate) -> Validation {
    // An engine rule that denies, suspends or kills on it decides after the kernel allows.
    let engine_rule = answer.notes.iter().find_map(|note| {
        let rest = note.strip_prefix("engine rule ")?;
        let (id, rest) = rest.split_once(" (")?;
        let (action, reason) = rest.split_once("): ")?;
        // A counted or sequenced rule does not decide one action by itself.
        (!matches!(action, "Allow" | "Audit") && !action.contains(','))
            .then(|| (id.to_owned(), action.to_lowercase(), reason.to_owned()))
    });
    let (layer, rule) = match answer.layer.as_str() {
        "Landlock rule" => ("landlock", answer.rule.clone()),
        "secret" => ("landlock", Some(format!("secret: {}", answer.reason))),
        "seccomp" => ("seccomp", Some("network.socket_families".to_owned())),
        "kernel deny rule" => ("kernel deny map", answer.rule.clone()),
        "no Landlock domain" => ("none", None),
        other => (other, answer.rule.clone()),
    };
    let mut validation = Validation {
        allowed: answer.allowed,
        reason: answer.reason.clone(),
        layer: layer.to_owned(),
        rule,
        trust,
        agent_id: request.agent_id.clone(),
        notes: answer.notes.clone(),
        to_allow: answer.to_allow.clone(),
        context: request.context.clone(),
    };
    if answer.allowed
        && let Some((id, action, reason)) = engine_rule
    {
        validation.allowed = false;
        validation.layer = "rule engine".into();
        validation.reason = format!("{reason} (the kernel allows it; the engine then would {action})");
        validation.rule = Some(id);
    }
    validation
}
