//! `governor audit query | verify | incidents`: reading the audit store.

use std::{
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use rusqlite::types::ValueRef;
use serde_json::{Map, Value, json};

use crate::{audit, exit};

#[derive(Clone, Copy, Debug, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Format {
    Table,
    Json,
    Jsonl,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    Exec,
    Execed,
    Open,
    Connect,
    Sendmsg,
    Listen,
    // Refused changes of the filesystem, by operation (`probes::events::FS_OPS`).
    Mkdir,
    Rmdir,
    Unlink,
    Rename,
    Link,
    Symlink,
    Truncate,
    Mknod,
    Chmod,
    Chown,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Decision {
    Allow,
    Deny,
    Audit,
    Suspend,
    Kill,
}

/// `--since` / `--until`: a duration back from now (`1h`, `30m`) or an RFC 3339 time.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct When(pub i64);

pub fn parse_when(text: &str) -> Result<When, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        let then = SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH);
        return Ok(When(nanos(then)));
    }
    humantime::parse_rfc3339_weak(text)
        .map(|time| When(nanos(time)))
        .map_err(|_| format!("'{text}' is neither a duration (30m, 1h) nor an RFC 3339 time (2026-11-22T10:00:00Z)"))
}

fn nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
}

#[derive(Clone, Debug, clap::Args, serde::Serialize, serde::Deserialize)]
pub struct Query {
    #[arg(long, value_name = "ID")]
    pub agent: Option<String>,
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    #[arg(long, value_enum)]
    pub decision: Option<Decision>,
    /// A duration back from now (1h) or an RFC 3339 time.
    #[arg(long, value_parser = parse_when)]
    pub since: Option<When>,
    #[arg(long, value_parser = parse_when)]
    pub until: Option<When>,
    /// A glob on the path (SQLite GLOB: * and ? and [...]).
    #[arg(long, value_name = "GLOB")]
    pub path: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    /// Only events after this event id (`seq`): the last one seen, for paging.
    #[arg(long, value_name = "ID")]
    #[serde(default)]
    pub after: Option<i64>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub type Failure = (i32, String);

pub fn connect(path: &Path) -> Result<rusqlite::Connection, Failure> {
    if !path.exists() {
        return Err((exit::USAGE, format!("audit store {}: does not exist", path.display())));
    }
    audit::open(path).map_err(|error| (exit::FAILURE, error.to_string()))
}

fn sql_error(error: rusqlite::Error) -> Failure {
    (exit::FAILURE, format!("audit store: {error}"))
}

/// Rows of a statement as JSON objects, column name -> value.
fn rows(
    statement: &mut rusqlite::Statement<'_>,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Map<String, Value>>, Failure> {
    let names: Vec<String> = statement.column_names().map(str::to_owned).collect();
    let mut rows = statement.query(params).map_err(sql_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_error)? {
        let mut object = Map::new();
        for (index, name) in names.iter().enumerate() {
            let value = match row.get_ref(index).map_err(sql_error)? {
                ValueRef::Integer(int) => json!(int),
                ValueRef::Real(real) => json!(real),
                ValueRef::Text(text) => json!(String::from_utf8_lossy(text)),
                ValueRef::Null | ValueRef::Blob(_) => Value::Null,
            };
            object.insert(name.clone(), value);
        }
        out.push(object);
    }
    Ok(out)
}

/// Prints rows to `out`; a reader that goes away (`| head`) ends the output quietly. Tables
/// escape control characters; JSON keeps the values exact (serde_json escapes C0, and
/// [`crate::output::json_text`] DEL and C1).
pub fn print(out: &mut dyn std::io::Write, rows: &[Map<String, Value>], columns: &[&str], format: Format) {
    let _ = match format {
        Format::Json => {
            writeln!(out, "{}", crate::output::json_text(serde_json::to_string_pretty(rows).unwrap_or_default()))
        }
        Format::Jsonl => rows
            .iter()
            .try_for_each(|row| writeln!(out, "{}", crate::output::json_text(Value::Object(row.clone()).to_string()))),
        Format::Table => writeln!(out, "{}", columns.join("\t")).and_then(|()| {
            rows.iter().try_for_each(|row| {
                let cells: Vec<String> = columns
                    .iter()
                    .map(|column| match row.get(*column) {
                        // Agent-chosen text (paths, command lines) must not forge rows or
                        // reach the terminal as escape sequences.
                        Some(Value::String(text)) => crate::output::escape(text).into_owned(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    })
                    .collect();
                writeln!(out, "{}", cells.join("\t"))
            })
        }),
    };
}

pub fn query(out: &mut dyn std::io::Write, path: &Path, query: &Query) -> Result<i32, Failure> {
    let connection = connect(path)?;
    if let Some(agent) = &query.agent {
        known_agent(&connection, agent)?;
    }
    let found = select(&connection, query)?;
    print(
        out,
        &found,
        &["seq", "agent", "time", "kind", "pid", "exe", "path", "destination", "result", "decision", "rule", "count"],
        query.format,
    );
    Ok(0)
}

/// An agent the store has never seen is bad input (exit 2), not an empty answer.
pub fn known_agent(connection: &rusqlite::Connection, agent: &str) -> Result<(), Failure> {
    let known: bool = connection
        .query_row("SELECT EXISTS (SELECT 1 FROM agents WHERE agent = ?1)", [agent], |row| row.get(0))
        .map_err(sql_error)?;
    if known { Ok(()) } else { Err((exit::USAGE, format!("unknown agent '{agent}': not in the audit store"))) }
}

/// The events `query` selects, oldest first (by their time; rows of the same time in the
/// order they were stored).
pub fn select(connection: &rusqlite::Connection, query: &Query) -> Result<Vec<Map<String, Value>>, Failure> {
    let mut sql = String::from(
        "SELECT seq, agent, time, ktime, kind, pid, tid, ppid, uid, euid, egid, caps, exe, cmdline, path, destination, result, verdict, source, decision, rule, count, last_time FROM events WHERE 1",
    );
    let mut params: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    let mut add = |clause: &str, value: Box<dyn rusqlite::ToSql>| {
        params.push(value);
        sql.push_str(&format!(" AND {clause} ?{}", params.len()));
    };
    if let Some(agent) = &query.agent {
        add("agent =", Box::new(agent.clone()));
    }
    // With an agent, its index (agent, time) is the one to walk: `+` keeps SQLite from
    // choosing the kind or decision index instead, which holds every agent's rows. Without,
    // the kind and decision indexes hold only the rows of other kinds than open and other
    // decisions than allow (`audit::SCHEMA`): their condition, repeated, lets SQLite use them.
    let unindexed = if query.agent.is_some() { "+" } else { "" };
    if let Some(kind) = query.kind {
        let only = if query.agent.is_none() && !matches!(kind, Kind::Open) { "kind != 'open' AND " } else { "" };
        add(&format!("{only}{unindexed}kind ="), Box::new(format!("{kind:?}").to_lowercase()));
    }
    if let Some(decision) = query.decision {
        let only =
            if query.agent.is_none() && !matches!(decision, Decision::Allow) { "decision != 'allow' AND " } else { "" };
        add(&format!("{only}{unindexed}decision ="), Box::new(format!("{decision:?}").to_lowercase()));
    }
    if let Some(When(since)) = query.since {
        add("time >=", Box::new(since));
    }
    if let Some(When(until)) = query.until {
        add("time <=", Box::new(until));
    }
    if let Some(glob) = &query.path {
        add("path GLOB", Box::new(glob.clone()));
    }
    // By time, then as stored: the order of every index on events (agent, kind, decision,
    // each then time), so that the first `limit` rows are read from the index directly. A
    // page after a row (`after`, what the doors page with) is in the order rows were stored.
    if let Some(after) = query.after {
        add("seq >", Box::new(after));
        sql.push_str(&format!(" ORDER BY seq LIMIT {}", query.limit));
    } else {
        sql.push_str(&format!(" ORDER BY time, seq LIMIT {}", query.limit));
    }
    let mut statement = connection.prepare(&sql).map_err(sql_error)?;
    let refs: Vec<&dyn rusqlite::ToSql> = params.iter().map(|param| param.as_ref()).collect();
    rows(&mut statement, &refs)
}

/// `--agent`, `--since` and `--format` of the listings.
#[derive(Clone, Debug, clap::Args, serde::Serialize, serde::Deserialize)]
pub struct Listing {
    #[arg(long, value_name = "ID")]
    pub agent: Option<String>,
    /// A duration back from now (1h) or an RFC 3339 time.
    #[arg(long, value_parser = parse_when)]
    pub since: Option<When>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// `governor audit incidents`: what the policy engine raised.
pub fn incidents(out: &mut dyn std::io::Write, path: &Path, listing: &Listing) -> Result<i32, Failure> {
    list(out, path, listing, "incidents", &["rule", "severity", "action", "reason", "event"], 4)
}

/// `governor audit actions`: starts, exits, suspensions, resumptions and kills, with who
/// did them and why.
pub fn actions(out: &mut dyn std::io::Write, path: &Path, listing: &Listing) -> Result<i32, Failure> {
    list(out, path, listing, "actions", &["action", "actor", "why"], 3)
}

/// Rows of `table` (`seq`, `agent`, `time`, then `columns`), oldest first; a table shows the
/// first `shown` of `columns`.
fn list(
    out: &mut dyn std::io::Write,
    path: &Path,
    listing: &Listing,
    table: &str,
    columns: &[&str],
    shown: usize,
) -> Result<i32, Failure> {
    let connection = connect(path)?;
    let agent = listing.agent.as_deref();
    if let Some(agent) = agent {
        known_agent(&connection, agent)?;
    }
    let sql = format!(
        "SELECT seq, agent, time, {} FROM {table} WHERE (?1 IS NULL OR agent = ?1) AND time >= ?2 ORDER BY seq",
        columns.join(", ")
    );
    let mut statement = connection.prepare(&sql).map_err(sql_error)?;
    let since = listing.since.map_or(0, |When(since)| since);
    let found = rows(&mut statement, &[&agent, &since])?;
    let header: Vec<&str> = ["seq", "agent", "time"].into_iter().chain(columns[..shown].iter().copied()).collect();
    print(out, &found, &header, listing.format);
    Ok(0)
}

/// `--max-size`: bytes, or a number with B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB
/// (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("'{text}' is not a size (e.g. 500MiB, 2GiB, 1000000)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("'{text}': unknown unit '{other}' (B, KB, MB, GB, KiB, MiB, GiB)")),
    };
    number.checked_mul(scale).filter(|size| *size > 0).ok_or_else(|| format!("'{text}': out of range"))
}

/// `governor audit prune`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Prune {
    /// Remove rows older than this (30d, 12h).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "AGE")]
    pub max_age: Option<std::time::Duration>,
    /// Remove the oldest events until the store uses less than this (2GiB, 500MB).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_size: Option<u64>,
}

/// Removes the oldest rows beyond the limits; the chains still verify (checkpoints).
pub fn prune(path: &Path, prune: &Prune) -> Result<i32, Failure> {
    if prune.max_age.is_none() && prune.max_size.is_none() {
        return Err((exit::USAGE, "audit prune: give --max-age, --max-size or both".into()));
    }
    let mut connection = connect(path)?;
    let retention = audit::Retention { max_age: prune.max_age, max_size: prune.max_size };
    let pruned = audit::prune(&mut connection, &retention).map_err(sql_error)?;
    if pruned.rows.is_empty() {
        println!("nothing to prune in {}", path.display());
    }
    for (table, rows) in pruned.rows {
        println!("pruned {rows} {table} rows from {} (checkpoint recorded)", path.display());
    }
    Ok(0)
}

/// Exit 0 when every chain holds, 1 naming the first broken row.
pub fn verify(path: &Path) -> Result<i32, Failure> {
    let connection = connect(path)?;
    let anchor = audit::anchor_path(path);
    match audit::verify(&connection).map_err(sql_error)? {
        Ok(rows) => match audit::verify_anchor(&connection, &anchor).map_err(sql_error)? {
            None => {
                println!("audit chain holds: {rows} rows in {} (no anchor file {})", path.display(), anchor.display());
                Ok(0)
            }
            Some(Ok(heads)) => {
                println!(
                    "audit chain holds: {rows} rows in {}, and {heads} heads recorded in {}",
                    path.display(),
                    anchor.display()
                );
                Ok(0)
            }
            Some(Err(broken)) => {
                say!("governor: audit chain broken at {} row {}: {}", broken.table, broken.seq, broken.problem);
                Ok(1)
            }
        },
        Err(broken) if broken.seq == 0 => {
            say!("governor: audit store {} broken: {}", broken.table, broken.problem);
            Ok(1)
        }
        Err(broken) => {
            say!("governor: audit chain broken at {} row {}: {}", broken.table, broken.seq, broken.problem);
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err_and(|error| error.contains("unknown unit")));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn every_filesystem_operation_can_be_queried() {
        use clap::ValueEnum as _;
        for op in crate::probes::events::FS_OPS {
            assert!(Kind::from_str(op, false).is_ok(), "--kind {op}");
        }
        for syscall in [76, 82, 83, 84, 86, 87, 88, 90, 92, 94, 133, 258, 259, 260, 263, 264, 265, 266, 268, 316, 452] {
            assert!(crate::probes::events::FS_OPS.contains(&crate::probes::events::fs_op_name(syscall)), "{syscall}");
        }
    }

    #[test]
    fn when_takes_durations_and_rfc3339() {
        let hour_ago = parse_when("1h").map(|When(ns)| ns).unwrap_or(0);
        let now = nanos(SystemTime::now());
        let hour = i64::try_from(Duration::from_secs(3600).as_nanos()).unwrap_or(0);
        assert!((now - hour_ago - hour).abs() < 5_000_000_000);
        assert_eq!(parse_when("2026-11-22T10:00:00Z").map(|When(ns)| ns), Ok(1_795_341_600_000_000_000));
        assert!(parse_when("yesterday-ish").is_err_and(|e| e.contains("neither a duration")));
    }
}
