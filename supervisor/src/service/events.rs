//! The audit store's events and incidents as the service answers them: a page of events,
//! the live stream, incidents. Blocking reads: the daemon runs them off its loop.

use std::path::{Path, PathBuf};

use super::{
    ApiError, AuditFilter, Event, EventFilter, Events, Incident, IncidentFilter, Incidents, agent_field, limit,
    parse_time, records, records::When,
};

fn text(row: &serde_json::Map<String, serde_json::Value>, name: &str) -> String {
    row.get(name).and_then(|value| value.as_str()).unwrap_or_default().to_owned()
}

fn int(row: &serde_json::Map<String, serde_json::Value>, name: &str) -> i64 {
    row.get(name).and_then(serde_json::Value::as_i64).unwrap_or_default()
}

fn event_of(row: &serde_json::Map<String, serde_json::Value>) -> Event {
    Event {
        id: int(row, "seq"),
        agent: text(row, "agent"),
        time: int(row, "time"),
        kind: text(row, "kind"),
        pid: int(row, "pid"),
        exe: text(row, "exe"),
        cmdline: text(row, "cmdline"),
        path: text(row, "path"),
        destination: text(row, "destination"),
        result: text(row, "result"),
        decision: text(row, "decision"),
        rule: text(row, "rule"),
        source: text(row, "source"),
        count: int(row, "count"),
    }
}

/// Audit events that match `filter`, oldest first. A filter on an agent the store has never
/// seen is 404, not an empty answer.
pub fn audit(store: &Path, filter: &AuditFilter) -> Result<Events, ApiError> {
    select(store, filter, true)
}

fn select(store: &Path, filter: &AuditFilter, known: bool) -> Result<Events, ApiError> {
    let query = filter.query()?;
    let connection = records::connect(store).map_err(|failure| ApiError::from_cli("audit_db", failure))?;
    if let Some(agent) = query.agent.as_ref().filter(|_| known) {
        records::known_agent(&connection, agent).map_err(|failure| ApiError::from_cli("agent", failure))?;
    }
    let rows = records::select(&connection, &query).map_err(|failure| ApiError::from_cli("path", failure))?;
    Ok(Events { events: rows.iter().map(event_of).collect() })
}

/// The newest event id in the store (where a stream without `after` starts).
pub fn last_event(store: &Path) -> Result<i64, ApiError> {
    let connection = records::connect(store).map_err(|failure| ApiError::from_cli("audit_db", failure))?;
    connection
        .query_row("SELECT coalesce(max(seq), 0) FROM events", [], |row| row.get(0))
        .map_err(|error| ApiError::internal(format!("audit store: {error}")))
}

/// Events in a stream are read this many at a time.
const STREAM_BATCH: u32 = 500;

/// The live stream: events after `filter.after` (or from the next one recorded) that match
/// the filter, sent to `out` in id order as the writer commits them; ends when `out` is
/// closed or the daemon stops. Read from the store, so a stream that falls behind or
/// resumes loses nothing; an agent that has not run yet may be followed.
pub async fn stream(
    store: PathBuf,
    filter: EventFilter,
    mut commits: tokio::sync::watch::Receiver<u64>,
    out: tokio::sync::mpsc::Sender<Result<Event, ApiError>>,
) {
    if let Err(error) = filter.audit(0, STREAM_BATCH).query() {
        let _ = out.send(Err(error)).await;
        return;
    }
    let mut after = match filter.after {
        Some(after) => after,
        None => {
            let path = store.clone();
            match tokio::task::spawn_blocking(move || last_event(&path)).await {
                Ok(Ok(last)) => last,
                Ok(Err(error)) => {
                    let _ = out.send(Err(error)).await;
                    return;
                }
                Err(error) => {
                    let _ = out.send(Err(ApiError::internal(error.to_string()))).await;
                    return;
                }
            }
        }
    };
    loop {
        commits.borrow_and_update();
        let (path, query) = (store.clone(), filter.audit(after, STREAM_BATCH));
        let batch = match tokio::task::spawn_blocking(move || select(&path, &query, false)).await {
            Ok(batch) => batch,
            Err(error) => Err(ApiError::internal(error.to_string())),
        };
        let events = match batch {
            Ok(batch) => batch.events,
            Err(error) => {
                let _ = out.send(Err(error)).await;
                return;
            }
        };
        let full = events.len() as u32 == STREAM_BATCH;
        for event in events {
            after = event.id;
            if out.send(Ok(event)).await.is_err() {
                return;
            }
        }
        if !full {
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                () = out.closed() => return,
            }
        }
    }
}

pub fn incidents(store: &Path, filter: &IncidentFilter) -> Result<Incidents, ApiError> {
    let since = parse_time("since", &filter.since)?.map_or(0, |When(since)| since);
    let limit = limit(filter.limit)?;
    let connection = records::connect(store).map_err(|failure| ApiError::from_cli("audit_db", failure))?;
    if let Some(agent) = &filter.agent {
        agent_field("agent", agent)?;
        records::known_agent(&connection, agent).map_err(|failure| ApiError::from_cli("agent", failure))?;
    }
    let sql = "SELECT seq, agent, time, rule, severity, action, reason FROM incidents
               WHERE (?1 IS NULL OR agent = ?1) AND time >= ?2 ORDER BY seq LIMIT ?3";
    let sql_error = |error: rusqlite::Error| ApiError::internal(format!("audit store: {error}"));
    let mut statement = connection.prepare(sql).map_err(sql_error)?;
    let rows = statement
        .query_map(rusqlite::params![filter.agent, since, limit], |row| {
            Ok(Incident {
                id: row.get(0)?,
                agent: row.get(1)?,
                time: row.get(2)?,
                kind: row.get(3)?,
                severity: row.get(4)?,
                action: row.get(5)?,
                description: row.get(6)?,
            })
        })
        .map_err(sql_error)?;
    let incidents = rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)?;
    Ok(Incidents { incidents })
}
