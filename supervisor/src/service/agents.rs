//! The agents and the daemon's status as the service answers them: what the store knows of
//! each agent, joined with what the daemon supervises now and its registrations.

use std::path::Path;

use crate::policy::Trust;

use super::{
    Agent, AgentSpec, Agents, ApiError, DaemonInfo, Process, Status, agent_field, policies::load_rules, records,
};

/// What the daemon knows that the store does not: its supervised agents and registrations.
#[derive(Clone, Debug, Default)]
pub struct Live {
    /// Agent id → cgroup id, of the agents supervised now.
    pub supervised: Vec<(String, u64)>,
    pub registered: Vec<AgentSpec>,
}

fn agent_of(agent: &super::status::Agent, live: &Live) -> Agent {
    let cgroup_id = live.supervised.iter().find(|(id, _)| *id == agent.agent).map(|(_, cgroup)| *cgroup);
    Agent {
        agent: agent.agent.clone(),
        trust: agent.trust.clone(),
        state: agent.state.as_str().to_owned(),
        supervised: cgroup_id.is_some(),
        cgroup_id,
        command: agent.command.clone(),
        started: Some(agent.started),
        ended: agent.ended,
        events: agent.events,
        denials: agent.denials,
        incidents: agent.incidents,
        processes: Vec::new(),
        registration: live.registered.iter().find(|spec| spec.agent_id == agent.agent).cloned(),
    }
}

fn registered_only(spec: &AgentSpec) -> Agent {
    Agent {
        agent: spec.agent_id.clone(),
        trust: spec.trust.unwrap_or(Trust::Low).to_string(),
        state: "registered".into(),
        supervised: false,
        cgroup_id: None,
        command: String::new(),
        started: None,
        ended: None,
        events: 0,
        denials: 0,
        incidents: 0,
        processes: Vec::new(),
        registration: Some(spec.clone()),
    }
}

fn store_agents(store: &Path) -> Result<Vec<super::status::Agent>, ApiError> {
    let connection = records::connect(store).map_err(|failure| ApiError::from_cli("audit_db", failure))?;
    let root = crate::cgroup::mount_point().ok();
    super::status::agents(&connection, root.as_deref(), crate::audit::now_ns())
        .map_err(|failure| ApiError::from_cli("audit_db", failure))
}

/// Every agent: the store's (the latest run of each id), then those registered that have
/// not run yet.
pub fn agents(store: &Path, live: &Live) -> Result<Agents, ApiError> {
    let mut latest: Vec<super::status::Agent> = Vec::new();
    for agent in store_agents(store)? {
        match latest.iter_mut().find(|known| known.agent == agent.agent) {
            Some(known) => *known = agent,
            None => latest.push(agent),
        }
    }
    let mut agents: Vec<Agent> = latest.iter().map(|agent| agent_of(agent, live)).collect();
    for spec in &live.registered {
        if !agents.iter().any(|agent| agent.agent == spec.agent_id) {
            agents.push(registered_only(spec));
        }
    }
    Ok(Agents { agents })
}

/// One agent, with the processes of its cgroup.
pub fn agent(store: &Path, live: &Live, id: &str) -> Result<Agent, ApiError> {
    agent_field("id", id)?;
    let found = agents(store, live)?.agents.into_iter().find(|agent| agent.agent == id);
    let mut agent = found.ok_or_else(|| ApiError::not_found("id", format!("unknown agent '{id}'")))?;
    if let Ok(root) = crate::cgroup::mount_point()
        && let Ok(group) = crate::cgroup::Cgroup::open(&root, id)
    {
        agent.processes = processes(group.path());
    }
    Ok(agent)
}

fn processes(cgroup: &Path) -> Vec<Process> {
    let mut found = Vec::new();
    let mut dirs = vec![cgroup.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|line| line.trim().parse::<i32>().ok()) {
            let stat = procfs::process::Process::new(pid).and_then(|process| process.stat());
            let (ppid, command) = stat.map_or((0, String::new()), |stat| (stat.ppid, stat.comm));
            found.push(Process { pid, ppid, command });
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            dirs.extend(entries.flatten().map(|entry| entry.path()).filter(|path| path.is_dir()));
        }
    }
    found.sort_by_key(|process| process.pid);
    found
}

/// The compliance summary from the store, with the daemon's own fields.
pub fn status(store: &Path, rings: Option<&Path>, live: &Live, daemon: DaemonInfo) -> Result<Status, ApiError> {
    let agents = store_agents(store)?;
    let (rules, _) = load_rules(rings).map_err(|error| ApiError::internal(error.to_string()))?;
    let now = crate::audit::now_ns();
    let summary = super::status::summarize(&agents, Trust::ALL.len(), rules.rules.len(), now);
    Ok(Status {
        total_agents: summary.agents_total,
        active_agents: summary.active,
        suspended_agents: summary.suspended,
        total_policies: summary.rules,
        recent_violations: summary.violations_last_hour,
        compliance_score: summary.score,
        score_formula: "100 * agents_clean_last_hour / agents_active_last_hour (100 when none was active)".into(),
        agents_active_last_hour: summary.recent,
        agents_clean_last_hour: summary.clean,
        rings_loaded: summary.rings,
        supervised_agents: live.supervised.len(),
        registered_agents: live.registered.len(),
        daemon,
    })
}
