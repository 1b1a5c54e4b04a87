//! `governor status`: the agents the audit store knows, each with its trust, its state now
//! (from its cgroup: running, suspended; from the store: exited, or lost when its supervisor
//! died without recording an exit), its event, denial and incident counts, and a compliance
//! summary.
//!
//! The compliance score is the share of agents active in the last hour (running, suspended,
//! or ended within it) that raised no incident in that hour, in percent: 100 × clean / active,
//! and 100 when none was active. An incident is any rule whose action was not `allow`.

use std::{path::Path, time::Duration};

use serde_json::{Map, Value, json};

use crate::{cgroup::Cgroup, engine, exit, policy};

use super::records::{self, Failure, Format};

/// How far back "recent" reaches: ended agents listed without `--all`, violations counted.
const HOUR: Duration = Duration::from_secs(3600);

/// One agent's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub agent: String,
    pub trust: String,
    pub state: State,
    pub started: i64,
    pub ended: Option<i64>,
    pub command: String,
    pub events: i64,
    pub denials: i64,
    pub incidents: i64,
    pub incidents_last_hour: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Suspended,
    Exited,
    /// No cgroup and no recorded exit: its supervisor was killed.
    Lost,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Suspended => "suspended",
            State::Exited => "exited",
            State::Lost => "lost",
        }
    }

    fn active(self) -> bool {
        matches!(self, State::Running | State::Suspended)
    }
}

/// The compliance summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub agents_total: i64,
    pub active: i64,
    pub suspended: i64,
    pub rings: usize,
    pub rules: usize,
    pub violations_last_hour: i64,
    /// Agents active in the last hour, and those of them without an incident in it.
    pub recent: i64,
    pub clean: i64,
    pub score: f64,
}

/// 100 × clean / recent; 100 when no agent was active.
pub fn score(recent: i64, clean: i64) -> f64 {
    if recent == 0 { 100.0 } else { (100.0 * clean as f64 / recent as f64 * 10.0).round() / 10.0 }
}

fn sql_error(error: rusqlite::Error) -> Failure {
    (exit::FAILURE, format!("audit store: {error}"))
}

/// Reads every agent of the store and its state now. The event and denial counts come from
/// `agent_counts`, which the writer keeps (`audit`), not from counting the events rows.
pub fn agents(connection: &rusqlite::Connection, cgroup_root: Option<&Path>, now: i64) -> Result<Vec<Agent>, Failure> {
    let hour_ago = now - HOUR.as_nanos() as i64;
    let mut statement = connection
        .prepare(
            "SELECT a.agent, a.trust, a.time, a.command,
               (SELECT time FROM actions WHERE agent = a.agent AND action = 'exit' ORDER BY seq DESC LIMIT 1),
               coalesce(c.events, 0),
               coalesce(c.denials, 0),
               (SELECT count(*) FROM incidents WHERE agent = a.agent),
               (SELECT count(*) FROM incidents WHERE agent = a.agent AND time >= ?1)
             FROM agents a LEFT JOIN agent_counts c ON c.agent = a.agent ORDER BY a.seq",
        )
        .map_err(sql_error)?;
    let mut rows = statement.query([hour_ago]).map_err(sql_error)?;
    let mut agents = Vec::new();
    while let Some(row) = rows.next().map_err(sql_error)? {
        let agent: String = row.get(0).map_err(sql_error)?;
        let ended: Option<i64> = row.get(4).map_err(sql_error)?;
        let live = cgroup_root.and_then(|root| Cgroup::open(root, &agent).ok());
        let state = match (&live, ended) {
            (Some(group), _) if group.frozen().unwrap_or(false) => State::Suspended,
            (Some(_), _) => State::Running,
            (None, Some(_)) => State::Exited,
            (None, None) => State::Lost,
        };
        agents.push(Agent {
            trust: row.get(1).map_err(sql_error)?,
            started: row.get(2).map_err(sql_error)?,
            command: row.get(3).map_err(sql_error)?,
            ended,
            events: row.get(5).map_err(sql_error)?,
            denials: row.get(6).map_err(sql_error)?,
            incidents: row.get(7).map_err(sql_error)?,
            incidents_last_hour: row.get(8).map_err(sql_error)?,
            state,
            agent,
        });
    }
    Ok(agents)
}

pub fn summarize(agents: &[Agent], rings: usize, rules: usize, now: i64) -> Summary {
    let hour_ago = now - HOUR.as_nanos() as i64;
    let recent: Vec<&Agent> = agents
        .iter()
        .filter(|agent| agent.state.active() || agent.ended.is_some_and(|ended| ended >= hour_ago))
        .collect();
    let clean = recent.iter().filter(|agent| agent.incidents_last_hour == 0).count() as i64;
    Summary {
        agents_total: agents.len() as i64,
        active: agents.iter().filter(|agent| agent.state.active()).count() as i64,
        suspended: agents.iter().filter(|agent| agent.state == State::Suspended).count() as i64,
        rings,
        rules,
        violations_last_hour: agents.iter().map(|agent| agent.incidents_last_hour).sum(),
        recent: recent.len() as i64,
        clean,
        score: score(recent.len() as i64, clean),
    }
}

fn agent_json(agent: &Agent) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("agent".into(), json!(agent.agent));
    object.insert("trust".into(), json!(agent.trust));
    object.insert("state".into(), json!(agent.state.as_str()));
    object.insert("events".into(), json!(agent.events));
    object.insert("denials".into(), json!(agent.denials));
    object.insert("incidents".into(), json!(agent.incidents));
    object.insert("started".into(), json!(agent.started));
    object.insert("ended".into(), json!(agent.ended));
    object.insert("command".into(), json!(agent.command));
    object
}

/// `governor status`.
pub fn status(
    out: &mut dyn std::io::Write,
    store: &Path,
    rings: Option<&Path>,
    all: bool,
    format: Format,
) -> Result<i32, Failure> {
    let connection = records::connect(store)?;
    let source = policy::RingSource::locate(rings);
    let (rules, _) = engine::load(&source, &[]).map_err(|error| (exit::USAGE, error.to_string()))?;
    let ring_count = policy::Trust::ALL.len();
    let root = crate::cgroup::mount_point().ok();
    let now = crate::audit::now_ns();
    let agents = agents(&connection, root.as_deref(), now)?;
    let summary = summarize(&agents, ring_count, rules.rules.len(), now);
    let hour_ago = now - HOUR.as_nanos() as i64;
    let shown: Vec<Map<String, Value>> = agents
        .iter()
        .filter(|agent| all || agent.state.active() || agent.ended.is_none_or(|ended| ended >= hour_ago))
        .map(agent_json)
        .collect();
    let compliance = json!({
        "agents_total": summary.agents_total,
        "agents_active": summary.active,
        "agents_suspended": summary.suspended,
        "rings_loaded": summary.rings,
        "rules_loaded": summary.rules,
        "violations_last_hour": summary.violations_last_hour,
        "agents_active_last_hour": summary.recent,
        "agents_clean_last_hour": summary.clean,
        "compliance_score": summary.score,
        "score_formula": "100 * agents_clean_last_hour / agents_active_last_hour (100 when none was active)",
    });
    match format {
        Format::Json => {
            let document = json!({ "agents": shown, "compliance": compliance });
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(&document).unwrap_or_default());
        }
        Format::Jsonl => {
            let mut compliance = compliance;
            compliance["kind"] = json!("compliance");
            let mut rows = shown;
            for row in &mut rows {
                row.insert("kind".into(), json!("agent"));
            }
            if let Value::Object(object) = compliance {
                rows.push(object);
            }
            records::print(out, &rows, &[], Format::Jsonl);
        }
        Format::Table => {
            records::print(
                out,
                &shown,
                &["agent", "trust", "state", "events", "denials", "incidents", "command"],
                Format::Table,
            );
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "agents: {} total, {} active, {} suspended; policies: {} rings, {} rules; violations in the last hour: {}",
                summary.agents_total,
                summary.active,
                summary.suspended,
                summary.rings,
                summary.rules,
                summary.violations_last_hour
            );
            let _ = writeln!(
                out,
                "compliance score: {} ({} of {} agents active in the last hour raised no incident)",
                summary.score, summary.clean, summary.recent
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, state: State, ended: Option<i64>, incidents_last_hour: i64) -> Agent {
        Agent {
            agent: name.into(),
            trust: "low".into(),
            state,
            started: 0,
            ended,
            command: String::new(),
            events: 0,
            denials: 0,
            incidents: incidents_last_hour,
            incidents_last_hour,
        }
    }

    #[test]
    fn the_score_counts_agents_active_in_the_last_hour_without_an_incident() {
        let now = 10 * HOUR.as_nanos() as i64;
        let agents = [
            agent("running-clean", State::Running, None, 0),
            agent("suspended", State::Suspended, None, 1),
            agent("ended-recently-clean", State::Exited, Some(now - 60_000_000_000), 0),
            agent("ended-long-ago", State::Exited, Some(now - 2 * HOUR.as_nanos() as i64), 0),
            agent("lost", State::Lost, None, 0),
        ];
        let summary = summarize(&agents, 4, 3, now);
        assert_eq!((summary.agents_total, summary.active, summary.suspended), (5, 2, 1));
        assert_eq!((summary.recent, summary.clean, summary.violations_last_hour), (3, 2, 1));
        assert!((summary.score - 66.7).abs() < 1e-9, "{}", summary.score);
        assert!((score(0, 0) - 100.0).abs() < f64::EPSILON);
    }
}
