//! The audit store: SQLite (WAL) holding agents, events, incidents and actions. Every row
//! carries `prev` (the previous row's hash in its table) and `hash` = SHA-256 of `prev` and
//! the row's content, so an edit, a deletion or a reordering breaks the chain where it
//! happened (`governor audit verify`). Rows are only inserted, except by `prune`, which
//! removes a table's oldest rows and records a checkpoint (the hash of the last row it
//! removed) that the rest of the chain continues from.
//!
//! An events row stands for `count` identical events between `time` and `last_time` (the
//! event loop aggregates repeats past a rate; see `agent::Aggregate`).
//!
//! One writer thread per process batches rows into transactions. Several governor processes
//! may share a store: each batch runs in `BEGIN IMMEDIATE` and reads the chain heads inside
//! it, so the chains stay linear.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rusqlite::{Connection, OptionalExtension as _};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("audit store {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("audit store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "audit store {path}: written by another version of governor (schema {found}, this one writes {SCHEMA_VERSION}); move it aside to start a new one"
    )]
    Version { path: PathBuf, found: i64 },
    #[error("audit store {path}: {rows} rows could not be written: {source}")]
    Lost { path: PathBuf, rows: usize, source: rusqlite::Error },
    #[error("audit store: the writer has stopped")]
    Stopped,
}

/// Where the store is: `--audit-db`, `GOVERNOR_AUDIT_DB`, `/var/lib/governor/audit.db` for
/// root, else `$XDG_STATE_HOME/governor/audit.db` (`~/.local/state/...`).
/// root's store (the daemon's, as installed).
pub const ROOT_STORE: &str = "/var/lib/governor/audit.db";

pub fn default_path() -> PathBuf {
    if let Some(path) = std::env::var_os("GOVERNOR_AUDIT_DB") {
        return PathBuf::from(path);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from(ROOT_STORE);
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    state.join("governor/audit.db")
}

/// The tables, their content columns (hashed in this order), and how to create them.
pub const TABLES: [(&str, &[&str]); 6] = [
    // First: the other tables' chains start from their latest checkpoint.
    ("checkpoints", &["chain", "through_seq", "last_hash", "rows", "time", "why"]),
    ("agents", &["agent", "trust", "command", "user", "cgroup", "backend", "time"]),
    (
        "events",
        &[
            "agent",
            "time",
            "ktime",
            "kind",
            "pid",
            "tid",
            "ppid",
            "uid",
            "euid",
            "egid",
            "caps",
            "exe",
            "cmdline",
            "path",
            "destination",
            "result",
            "verdict",
            "source",
            "decision",
            "rule",
            "count",
            "last_time",
        ],
    ),
    ("incidents", &["agent", "time", "rule", "severity", "action", "reason", "event"]),
    ("actions", &["agent", "time", "action", "actor", "why"]),
    // The `--policy` files (a registration's overlay among them) a run applied, as their
    // text was when it started: what `governor explain --agent` explains with.
    ("policies", &["agent", "time", "path", "text"]),
];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agents (seq INTEGER PRIMARY KEY, agent TEXT NOT NULL, trust TEXT NOT NULL,
  command TEXT NOT NULL, user TEXT NOT NULL, cgroup TEXT NOT NULL, backend TEXT NOT NULL, time INTEGER NOT NULL,
  prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, agent TEXT NOT NULL, time INTEGER NOT NULL,
  ktime INTEGER NOT NULL, kind TEXT NOT NULL, pid INTEGER NOT NULL, tid INTEGER NOT NULL, ppid INTEGER NOT NULL,
  uid INTEGER NOT NULL, euid INTEGER NOT NULL, egid INTEGER NOT NULL, caps TEXT NOT NULL, exe TEXT NOT NULL,
  cmdline TEXT NOT NULL, path TEXT NOT NULL, destination TEXT NOT NULL, result TEXT NOT NULL, verdict TEXT NOT NULL, source TEXT NOT NULL,
  decision TEXT NOT NULL, rule TEXT NOT NULL, count INTEGER NOT NULL, last_time INTEGER NOT NULL,
  prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (seq INTEGER PRIMARY KEY, chain TEXT NOT NULL, through_seq INTEGER NOT NULL,
  last_hash TEXT NOT NULL, rows INTEGER NOT NULL, time INTEGER NOT NULL, why TEXT NOT NULL,
  prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (seq INTEGER PRIMARY KEY, agent TEXT NOT NULL, time INTEGER NOT NULL,
  rule TEXT NOT NULL, severity TEXT NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL, event TEXT NOT NULL,
  prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS actions (seq INTEGER PRIMARY KEY, agent TEXT NOT NULL, time INTEGER NOT NULL,
  action TEXT NOT NULL, actor TEXT NOT NULL, why TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_agent_time ON events (agent, time);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
CREATE INDEX IF NOT EXISTS events_kind_time ON events (kind, time) WHERE kind != 'open';
CREATE INDEX IF NOT EXISTS events_decision_time ON events (decision, time) WHERE decision != 'allow';
CREATE INDEX IF NOT EXISTS incidents_agent_time ON incidents (agent, time);
CREATE INDEX IF NOT EXISTS actions_agent ON actions (agent, seq);
CREATE TABLE IF NOT EXISTS agent_counts (agent TEXT PRIMARY KEY, events INTEGER NOT NULL, denials INTEGER NOT NULL)
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS policies (seq INTEGER PRIMARY KEY, agent TEXT NOT NULL, time INTEGER NOT NULL,
  path TEXT NOT NULL, text TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS policies_agent_time ON policies (agent, time);
";

/// From schema 3 to 4: the per-agent counts (then filled from the events rows), and kind and
/// decision indexes that also order by time (what `governor audit query` sorts by) and hold
/// only the rows worth finding that way: most rows are allowed opens, which the time and
/// agent indexes find as well, and every index entry is work for each insert. No chained row
/// changes, so every chain verifies as before.
const MIGRATE_3_TO_4: &str = "
CREATE TABLE agent_counts (agent TEXT PRIMARY KEY, events INTEGER NOT NULL, denials INTEGER NOT NULL) WITHOUT ROWID;
DROP INDEX IF EXISTS events_kind;
DROP INDEX IF EXISTS events_decision;
CREATE INDEX events_kind_time ON events (kind, time) WHERE kind != 'open';
CREATE INDEX events_decision_time ON events (decision, time) WHERE decision != 'allow';
PRAGMA user_version = 4;
";

/// From schema 4 to 5: the table of the policy files each run applied (a new chain; earlier
/// runs have no rows in it). No row changes.
const MIGRATE_4_TO_5: &str = "
CREATE TABLE IF NOT EXISTS policies (seq INTEGER PRIMARY KEY, agent TEXT NOT NULL, time INTEGER NOT NULL,
  path TEXT NOT NULL, text TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS policies_agent_time ON policies (agent, time);
PRAGMA user_version = 5;
";

/// The layout this governor writes (`PRAGMA user_version`). A store of schema 3 or 4 is
/// migrated (`MIGRATE_3_TO_4`, `MIGRATE_4_TO_5`: tables and indexes added, no row
/// rewritten); one of another version is refused: rewriting rows would break their chains.
pub const SCHEMA_VERSION: i64 = 5;

/// `agent_counts` holds, per agent, the events rows and the denials among them (`decision =
/// 'deny'`), kept by `insert` and `prune` in the same transaction as the rows: what `governor
/// status` shows without counting millions of rows. Not chained: `verify` recounts it.
const EVENT_AGENT: usize = 0;
const EVENT_DECISION: usize = 18;

/// The hash of the first row's `prev`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A row to insert: its table and its content, in `TABLES` column order.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub table: &'static str,
    pub values: Vec<Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Value::Int(int) => ToSqlOutput::Borrowed(ValueRef::Integer(*int)),
        })
    }
}

/// The decimal digits of `number`, written into `buffer`.
fn decimal(number: i128, buffer: &mut [u8; 40]) -> &[u8] {
    let negative = number < 0;
    let mut rest = number.unsigned_abs();
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        buffer[at] = b'-';
    }
    &buffer[at..]
}

/// SHA-256 over the previous hash and the row's values, as lowercase hex. Each value is
/// `0x1f` then `t<len>:<text>` or `i<decimal>`: length-prefixed, so no two rows encode alike.
pub fn chain_hash(prev: &str, values: &[Value]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    let mut digits = [0u8; 40];
    for value in values {
        match value {
            Value::Text(text) => {
                hasher.update([0x1f, b't']);
                hasher.update(decimal(text.len() as i128, &mut digits));
                hasher.update(b":");
                hasher.update(text.as_bytes());
            }
            Value::Int(int) => {
                hasher.update([0x1f, b'i']);
                hasher.update(decimal(i128::from(*int), &mut digits));
            }
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in hasher.finalize() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

/// `INSERT INTO <table> (<columns>, prev, hash) VALUES (?1, ...)`, built once per table.
fn insert_sql(table: &str) -> Option<&'static str> {
    static SQL: std::sync::OnceLock<Vec<(&'static str, String)>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        TABLES
            .iter()
            .map(|(table, columns)| {
                let placeholders = (1..=columns.len() + 2).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
                (*table, format!("INSERT INTO {table} ({}, prev, hash) VALUES ({placeholders})", columns.join(", ")))
            })
            .collect()
    });
    all.iter().find(|(name, _)| *name == table).map(|(_, sql)| sql.as_str())
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |time| i64::try_from(time.as_nanos()).unwrap_or(i64::MAX))
}

/// How long a writer waits for another's lock before SQLite says the store is busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens (creating) the store and its schema.
pub fn open(path: &Path) -> Result<Connection, Error> {
    let sqlite = |source| Error::Sqlite { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    }
    let fresh = !path.exists();
    let connection = Connection::open(path).map_err(sqlite)?;
    if fresh {
        // What agents did is for root (or the store's owner) to read.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    }
    connection.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    connection.pragma_update(None, "journal_mode", "WAL").map_err(sqlite)?;
    connection.pragma_update(None, "synchronous", "NORMAL").map_err(sqlite)?;
    // 32 MiB of page cache: the events table's indices stay in memory while batches go in.
    connection.pragma_update(None, "cache_size", -32768).map_err(sqlite)?;
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(sqlite)?;
    let tables: i64 = connection
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |row| row.get(0))
        .map_err(sqlite)?;
    if tables > 0 && (version == 3 || version == 4) {
        migrate(&connection).map_err(sqlite)?;
    } else if tables > 0 && version != SCHEMA_VERSION {
        return Err(Error::Version { path: path.to_path_buf(), found: version });
    }
    connection.execute_batch(SCHEMA).map_err(sqlite)?;
    // Written once, for a new store: a write at every open would cost a transaction.
    if version != SCHEMA_VERSION {
        connection.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sqlite)?;
    }
    Ok(connection)
}

/// Migrates a schema-3 or schema-4 store, once: another governor opening it at the same time
/// waits for the transaction and finds it done.
fn migrate(connection: &Connection) -> rusqlite::Result<()> {
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version == 3 {
            connection.execute_batch(MIGRATE_3_TO_4)?;
            // Counted in one pass over the table, in storage order: SQLite's GROUP BY would
            // walk the agent index and look up every row's decision out of order.
            let mut counts: std::collections::HashMap<String, (i64, i64)> = std::collections::HashMap::new();
            let mut statement = connection.prepare("SELECT agent, decision = 'deny' FROM events NOT INDEXED")?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let denied: bool = row.get(1)?;
                let agent = row.get_ref(0)?.as_str()?;
                let count = match counts.get_mut(agent) {
                    Some(count) => count,
                    None => counts.entry(agent.to_owned()).or_insert((0, 0)),
                };
                count.0 += 1;
                count.1 += i64::from(denied);
            }
            let mut insert =
                connection.prepare("INSERT INTO agent_counts (agent, events, denials) VALUES (?1, ?2, ?3)")?;
            for (agent, (events, denials)) in &counts {
                insert.execute(rusqlite::params![agent, events, denials])?;
            }
        }
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version == 4 {
            connection.execute_batch(MIGRATE_4_TO_5)?;
        }
        connection.execute_batch("COMMIT")
    })();
    if result.is_err() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    result
}

/// Inserts `rows` in one transaction, chaining each table from its current head.
pub fn insert(connection: &mut Connection, rows: &[Row]) -> rusqlite::Result<()> {
    let transaction = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    insert_in(&transaction, rows)?;
    transaction.commit()
}

/// Inserts `rows` within `transaction`, chaining each table from its current head, and adds
/// the events rows to `agent_counts`.
fn insert_in(transaction: &rusqlite::Transaction<'_>, rows: &[Row]) -> rusqlite::Result<()> {
    // Per table met in the batch: its INSERT, prepared once, and its chain's head.
    let mut tables: Vec<(&str, rusqlite::CachedStatement<'_>, String)> = Vec::new();
    // Per agent: events rows and denials added.
    let mut counts: std::collections::HashMap<&str, (i64, i64)> = std::collections::HashMap::new();
    for row in rows {
        let at = match tables.iter().position(|(table, _, _)| *table == row.table) {
            Some(at) => at,
            None => {
                let sql = insert_sql(row.table).ok_or(rusqlite::Error::InvalidQuery)?;
                let head = transaction
                    .query_row(&format!("SELECT hash FROM {} ORDER BY seq DESC LIMIT 1", row.table), [], |r| r.get(0))
                    .optional()?
                    .unwrap_or_else(|| GENESIS.to_owned());
                tables.push((row.table, transaction.prepare_cached(sql)?, head));
                tables.len() - 1
            }
        };
        let (_, statement, head) = &mut tables[at];
        let hash = chain_hash(head, &row.values);
        {
            let prev = Value::Text(std::mem::take(head));
            let hash = ValueRef(&hash);
            statement.execute(rusqlite::params_from_iter(
                row.values
                    .iter()
                    .map(|value| value as &dyn rusqlite::ToSql)
                    .chain([&prev as &dyn rusqlite::ToSql, &hash]),
            ))?;
        }
        *head = hash;
        if row.table == "events"
            && let (Some(Value::Text(agent)), Some(Value::Text(decision))) =
                (row.values.get(EVENT_AGENT), row.values.get(EVENT_DECISION))
        {
            let count = counts.entry(agent.as_str()).or_insert((0, 0));
            count.0 += 1;
            count.1 += i64::from(decision == "deny");
        }
    }
    drop(tables);
    add_counts(transaction, counts.iter().map(|(agent, (events, denials))| (*agent, *events, *denials)))
}

/// A hash borrowed for binding.
struct ValueRef<'a>(&'a str);

impl rusqlite::ToSql for ValueRef<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(self.0.as_bytes())))
    }
}

/// Adds (or, negative, removes) events rows and denials to agents' counts.
fn add_counts<'a>(
    transaction: &rusqlite::Transaction<'_>,
    counts: impl Iterator<Item = (&'a str, i64, i64)>,
) -> rusqlite::Result<()> {
    let mut statement = transaction.prepare_cached(
        "INSERT INTO agent_counts (agent, events, denials) VALUES (?1, ?2, ?3)
         ON CONFLICT (agent) DO UPDATE SET events = events + excluded.events, denials = denials + excluded.denials",
    )?;
    for (agent, events, denials) in counts {
        statement.execute(rusqlite::params![agent, events, denials])?;
    }
    Ok(())
}

/// The first broken row of a chain: table, seq and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Broken {
    pub table: &'static str,
    pub seq: i64,
    pub problem: &'static str,
}

/// Walks every table's chain; returns the rows checked, or the first broken row. A pruned
/// table's chain starts from its latest checkpoint: its first row must follow the last row
/// pruned, and no row at or before the checkpoint's `through_seq` may remain.
pub fn verify(connection: &Connection) -> rusqlite::Result<Result<u64, Broken>> {
    let mut checked = 0;
    // chain -> (through_seq, last_hash) of its latest checkpoint, from the checkpoints'
    // own chain, verified first.
    let mut starts: std::collections::HashMap<String, (i64, String)> = std::collections::HashMap::new();
    // agent -> (events rows, denials), as counted along the events chain.
    let mut counted: std::collections::HashMap<String, (i64, i64)> = std::collections::HashMap::new();
    for (table, columns) in TABLES {
        let sql = format!("SELECT seq, {}, prev, hash FROM {table} ORDER BY seq", columns.join(", "));
        let mut statement = connection.prepare(&sql)?;
        let mut rows = statement.query([])?;
        let (through, mut expected_prev) = starts.get(table).cloned().unwrap_or_else(|| (0, GENESIS.to_owned()));
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let mut values = Vec::with_capacity(columns.len());
            for index in 0..columns.len() {
                values.push(match row.get_ref(index + 1)? {
                    rusqlite::types::ValueRef::Integer(int) => Value::Int(int),
                    other => Value::Text(other.as_str().map(str::to_owned).unwrap_or_default()),
                });
            }
            let prev: String = row.get(columns.len() + 1)?;
            let hash: String = row.get(columns.len() + 2)?;
            if seq <= through {
                return Ok(Err(Broken { table, seq, problem: "is older than the checkpoint that pruned its table" }));
            }
            if prev != expected_prev {
                return Ok(Err(Broken {
                    table,
                    seq,
                    problem: "does not follow the row before it (a row was removed or moved)",
                }));
            }
            if chain_hash(&prev, &values) != hash {
                return Ok(Err(Broken { table, seq, problem: "its content does not match its hash (it was changed)" }));
            }
            if table == "checkpoints"
                && let [Value::Text(chain), Value::Int(through_seq), Value::Text(last_hash), ..] = values.as_slice()
            {
                starts.insert(chain.clone(), (*through_seq, last_hash.clone()));
            }
            if table == "events"
                && let (Some(Value::Text(agent)), Some(Value::Text(decision))) =
                    (values.get(EVENT_AGENT), values.get(EVENT_DECISION))
            {
                let count = match counted.get_mut(agent.as_str()) {
                    Some(count) => count,
                    None => counted.entry(agent.clone()).or_insert((0, 0)),
                };
                count.0 += 1;
                count.1 += i64::from(decision == "deny");
            }
            expected_prev = hash;
            checked += 1;
        }
    }
    // The counts `governor status` shows must be those of the rows just verified.
    let mut statement = connection.prepare("SELECT agent, events, denials FROM agent_counts")?;
    let mut rows = statement.query([])?;
    let mut stored = std::collections::HashMap::new();
    while let Some(row) = rows.next()? {
        let (agent, events, denials): (String, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        if (events, denials) != (0, 0) {
            stored.insert(agent, (events, denials));
        }
    }
    if stored != counted {
        return Ok(Err(Broken {
            table: "agent_counts",
            seq: 0,
            problem: "the per-agent counts do not match the events rows (the summary was changed)",
        }));
    }
    Ok(Ok(checked))
}

/// Where a store's chain heads are recorded, outside the store: `<store>-anchor`, one line
/// `TABLE SEQ HASH` per table at most once a second while rows are written, and when the
/// writer ends. Deleting the newest rows, or rewriting the rows and chaining them again, leaves
/// chains that hold on their own; against a head recorded here either is found. Whoever can
/// rewrite both files is not caught by this alone: the file is where a copy for another
/// machine (or an append-only medium) is taken from.
pub fn anchor_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push("-anchor");
    PathBuf::from(name)
}

/// The newest row of each table: `(table, seq, hash)`.
pub fn heads(connection: &Connection) -> rusqlite::Result<Vec<(&'static str, i64, String)>> {
    let mut heads = Vec::new();
    for (table, _) in TABLES {
        let head: Option<(i64, String)> = connection
            .query_row(&format!("SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1"), [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        if let Some((seq, hash)) = head {
            heads.push((table, seq, hash));
        }
    }
    Ok(heads)
}

/// Appends the store's heads to its anchor file (mode 0600).
fn record_heads(connection: &Connection, anchor: &Path) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let heads = heads(connection).map_err(std::io::Error::other)?;
    let mut text = String::new();
    for (table, seq, hash) in heads {
        text.push_str(&format!("{table} {seq} {hash}\n"));
    }
    let mut file = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(anchor)?;
    file.write_all(text.as_bytes())
}

/// Checks the newest head the anchor file recorded for each table: that row must still be
/// there with that hash (a row pruned since is covered by the checkpoint that pruned it).
/// `Ok(None)` when there is no anchor file.
pub fn verify_anchor(connection: &Connection, anchor: &Path) -> rusqlite::Result<Option<Result<usize, Broken>>> {
    let Ok(text) = std::fs::read_to_string(anchor) else { return Ok(None) };
    let mut newest: std::collections::HashMap<&str, (i64, &str)> = std::collections::HashMap::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        let (Some(table), Some(Ok(seq)), Some(hash)) =
            (parts.next(), parts.next().map(str::parse::<i64>), parts.next())
        else {
            continue;
        };
        if newest.get(table).is_none_or(|(known, _)| seq > *known) {
            newest.insert(table, (seq, hash));
        }
    }
    let mut checked = 0;
    for (table, _) in TABLES {
        let Some((seq, hash)) = newest.get(table) else { continue };
        let stored: Option<String> = connection
            .query_row(&format!("SELECT hash FROM {table} WHERE seq = ?1"), [seq], |row| row.get(0))
            .optional()?;
        let pruned_through: Option<i64> = connection
            .query_row("SELECT max(through_seq) FROM checkpoints WHERE chain = ?1", [table], |row| {
                row.get::<_, Option<i64>>(0)
            })
            .optional()?
            .flatten();
        match stored {
            Some(stored) if stored == *hash => checked += 1,
            Some(_) => {
                return Ok(Some(Err(Broken {
                    table,
                    seq: *seq,
                    problem: "its hash is not the one recorded in the anchor file (the chain was rewritten)",
                })));
            }
            None if pruned_through.is_some_and(|through| *seq <= through) => {}
            None => {
                return Ok(Some(Err(Broken {
                    table,
                    seq: *seq,
                    problem: "is recorded in the anchor file and missing from the store (newest rows were removed)",
                })));
            }
        }
    }
    Ok(Some(Ok(checked)))
}

/// How much of the store `prune` keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Retention {
    /// Rows older than this go (events, incidents, actions; an agent's own row stays).
    pub max_age: Option<Duration>,
    /// Oldest events go until the store's used pages are below this many bytes.
    pub max_size: Option<u64>,
}

/// What `prune` removed, per table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub rows: Vec<(&'static str, u64)>,
}

/// Removes the oldest rows beyond `retention`, in one transaction, recording for each table
/// it prunes a checkpoint row with the hash of the last row removed: `verify` then checks
/// the rest of that chain from there, so pruning never breaks it.
pub fn prune(connection: &mut Connection, retention: &Retention) -> rusqlite::Result<Pruned> {
    let transaction = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut pruned = Pruned::default();
    let now = now_ns();
    let mut cuts: Vec<(&'static str, i64, String)> = Vec::new();
    if let Some(age) = retention.max_age {
        let cutoff = now.saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX));
        for table in ["events", "incidents", "actions"] {
            let last: Option<i64> =
                transaction
                    .query_row(&format!("SELECT max(seq) FROM {table} WHERE time < ?1"), [cutoff], |row| row.get(0))?;
            if let Some(last) = last {
                cuts.push((table, last, format!("older than {}", humantime::format_duration(age))));
            }
        }
    }
    if let Some(max) = retention.max_size {
        let page: i64 = transaction.query_row("PRAGMA page_size", [], |row| row.get(0))?;
        let pages: i64 = transaction.query_row("PRAGMA page_count", [], |row| row.get(0))?;
        let free: i64 = transaction.query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
        let used = (pages - free) * page;
        let rows: i64 = transaction.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        if used > max && rows > 0 {
            // The events table is nearly all of the store; remove the share that is over,
            // and a tenth more, so that a store at its size is not pruned at every look.
            let excess = (used - max) as f64 / used as f64;
            let remove = (((excess + 0.1).min(1.0)) * rows as f64).ceil() as i64;
            let last: Option<i64> = transaction.query_row(
                "SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?1",
                [remove.clamp(1, rows) - 1],
                |row| row.get(0),
            )?;
            if let Some(last) = last {
                let why = format!("store over {max} bytes");
                match cuts.iter_mut().find(|(table, _, _)| *table == "events") {
                    Some(cut) if cut.1 >= last => {}
                    Some(cut) => *cut = ("events", last, why),
                    None => cuts.push(("events", last, why)),
                }
            }
        }
    }
    let mut checkpoints = Vec::new();
    for (table, through, why) in cuts {
        // The newest row of a table always stays: new rows are numbered after it (seq is
        // SQLite's rowid) and chained to it.
        let newest: i64 = transaction.query_row(&format!("SELECT max(seq) FROM {table}"), [], |row| row.get(0))?;
        let through = through.min(newest - 1);
        let Some(last_hash): Option<String> = transaction
            .query_row(
                &format!("SELECT hash FROM {table} WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1"),
                [through],
                |row| row.get(0),
            )
            .optional()?
        else {
            continue;
        };
        if table == "events" {
            let mut statement = transaction
                .prepare("SELECT agent, count(*), sum(decision = 'deny') FROM events WHERE seq <= ?1 GROUP BY agent")?;
            let gone = statement
                .query_map([through], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            add_counts(&transaction, gone.iter().map(|(agent, events, denials)| (agent.as_str(), -events, -denials)))?;
        }
        let removed = transaction.execute(&format!("DELETE FROM {table} WHERE seq <= ?1"), [through])?;
        if removed == 0 {
            continue;
        }
        pruned.rows.push((table, removed as u64));
        checkpoints.push(Row {
            table: "checkpoints",
            values: vec![text(table), Value::Int(through), text(last_hash), int(removed), Value::Int(now), text(why)],
        });
    }
    insert_in(&transaction, &checkpoints)?;
    transaction.commit()?;
    Ok(pruned)
}

/// Rows queued for the writer at most.
const QUEUE: usize = 65536;

/// How long a writer that is being finished keeps retrying a failing store before it gives
/// up on the rows it still holds (and says how many).
const GIVE_UP: Duration = Duration::from_secs(10);

/// Whether the store is failing, shared by the writer thread and whoever watches it.
#[derive(Default)]
pub struct Health {
    failing: AtomicBool,
    closing: AtomicBool,
    reason: Mutex<String>,
    committed: std::sync::atomic::AtomicU64,
    /// Called by the writer thread after each commit.
    on_commit: Mutex<Option<Box<dyn Fn() + Send>>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").field("failing", &self.failing).field("committed", &self.committed).finish()
    }
}

impl Health {
    fn fail(&self, reason: String) {
        if let Ok(mut slot) = self.reason.lock() {
            *slot = reason;
        }
        self.failing.store(true, Ordering::Release);
    }

    /// Why the store is failing now; `None` while it works (again).
    pub fn failure(&self) -> Option<String> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        Some(self.reason.lock().map(|reason| reason.clone()).unwrap_or_default())
    }
}

/// How often the writer records the chain heads in the anchor file while rows come.
const ANCHOR_EVERY: Duration = Duration::from_secs(1);

/// The writer thread: rows in, batched transactions out. A batch that fails (disk full,
/// locked, read-only) is retried until it commits, and `failure()` says why meanwhile: the
/// rows wait, in order, nothing is skipped. Dropping the writer flushes what is queued.
pub struct Writer {
    sender: Option<mpsc::SyncSender<Row>>,
    thread: Option<thread::JoinHandle<Result<u64, Error>>>,
    health: Arc<Health>,
    /// Rows queued so far (this side) and committed so far (the thread's side): a row queued
    /// as number N is in the store once `committed() >= N`.
    queued: std::sync::atomic::AtomicU64,
}

/// Why `try_write` did not take a row.
#[derive(Debug)]
pub enum Busy {
    /// The queue is full; the row is handed back.
    Full(Row),
    Stopped,
}

/// An opened store whose writer has not started: opening comes first, so that a store that
/// cannot be opened refuses the run before anything starts, and the thread comes after the
/// fork, which must happen while governor has a single thread.
pub struct Opened {
    connection: Connection,
    path: PathBuf,
}

impl Opened {
    /// Commits `rows` at once, on the calling thread: what must be in the store before
    /// governor can be killed without a trace of them (an agent's start, which its warden's
    /// rows would otherwise name an unknown agent). Rows not committed (the store is locked
    /// or failing) are handed back, for the writer to retry: the agent is running, and its
    /// supervision must not wait on another writer's lock for long.
    pub fn commit_now(&mut self, rows: Vec<Row>) -> Vec<Row> {
        let _ = self.connection.busy_timeout(Duration::from_millis(200));
        let result = insert(&mut self.connection, &rows);
        let _ = self.connection.busy_timeout(BUSY_TIMEOUT);
        match result {
            Ok(()) => Vec::new(),
            Err(_) => rows,
        }
    }

    pub fn start(self) -> Result<Writer, Error> {
        Writer::spawn(self.connection, self.path)
    }
}

impl Writer {
    pub fn open(path: &Path) -> Result<Opened, Error> {
        Ok(Opened { connection: open(path)?, path: path.to_path_buf() })
    }

    /// Opens the store and starts the writer.
    #[cfg(test)]
    pub fn start(path: &Path) -> Result<Writer, Error> {
        Writer::open(path)?.start()
    }

    fn spawn(mut connection: Connection, path: PathBuf) -> Result<Writer, Error> {
        // Bounded: when the store falls behind, the event loop waits, the ring buffer fills
        // and the kernel counts what it drops; memory does not grow without limit.
        let (sender, receiver) = mpsc::sync_channel::<Row>(QUEUE);
        let health = Arc::new(Health::default());
        let shared = Arc::clone(&health);
        let thread = thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let mut written = 0u64;
                let mut batch = Vec::with_capacity(4096);
                let anchor = anchor_path(&path);
                let mut anchored: Option<std::time::Instant> = None;
                // A failure to record the heads is not a lost row: the rows are committed, and
                // `audit verify` checks what the file has.
                let anchor_now = |connection: &Connection| {
                    if let Err(error) = record_heads(connection, &anchor) {
                        crate::say!("governor: recording the audit chain heads in {}: {error}", anchor.display());
                    }
                };
                // Rows committed since the heads were last recorded: recorded within a second,
                // at the next commit or when the queue stays empty that long.
                let mut unanchored = false;
                loop {
                    let row = match receiver.recv_timeout(ANCHOR_EVERY) {
                        Ok(row) => row,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if unanchored {
                                anchor_now(&connection);
                                anchored = Some(std::time::Instant::now());
                                unanchored = false;
                            }
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    batch.push(row);
                    // Take what is already queued, up to a bounded batch.
                    while batch.len() < 8192 {
                        match receiver.try_recv() {
                            Ok(row) => batch.push(row),
                            Err(_) => break,
                        }
                    }
                    commit(&mut connection, &batch, &shared).map_err(|source| Error::Lost {
                        path: path.clone(),
                        rows: batch.len() + receiver.try_iter().count(),
                        source,
                    })?;
                    written += batch.len() as u64;
                    unanchored = true;
                    if anchored.is_none_or(|at| at.elapsed() >= ANCHOR_EVERY) {
                        anchor_now(&connection);
                        anchored = Some(std::time::Instant::now());
                        unanchored = false;
                    }
                    shared.committed.store(written, Ordering::Release);
                    if let Ok(hook) = shared.on_commit.lock()
                        && let Some(hook) = hook.as_ref()
                    {
                        hook();
                    }
                    batch.clear();
                }
                if unanchored {
                    anchor_now(&connection);
                }
                Ok(written)
            })
            .map_err(|source| Error::Io { path: PathBuf::from("audit-writer thread"), source })?;
        Ok(Writer { sender: Some(sender), thread: Some(thread), health, queued: std::sync::atomic::AtomicU64::new(0) })
    }

    /// Queues a row, waiting while the queue is full.
    pub fn write(&self, row: Row) -> Result<(), Error> {
        self.sender.as_ref().ok_or(Error::Stopped)?.send(row).map_err(|_| Error::Stopped)?;
        self.queued.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Queues a row if there is room.
    pub fn try_write(&self, row: Row) -> Result<(), Busy> {
        let sender = self.sender.as_ref().ok_or(Busy::Stopped)?;
        sender.try_send(row).map_err(|error| match error {
            mpsc::TrySendError::Full(row) => Busy::Full(row),
            mpsc::TrySendError::Disconnected(_) => Busy::Stopped,
        })?;
        self.queued.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Rows queued so far.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// Rows committed so far.
    pub fn committed(&self) -> u64 {
        self.health.committed.load(Ordering::Acquire)
    }

    /// Has `hook` called (on the writer's thread) after every commit: a loop waiting for rows
    /// to be in the store is woken instead of polling.
    pub fn on_commit(&self, hook: Box<dyn Fn() + Send>) {
        if let Ok(mut slot) = self.health.on_commit.lock() {
            *slot = Some(hook);
        }
    }

    /// Why the store is failing now, if it is.
    pub fn failure(&self) -> Option<String> {
        self.health.failure()
    }

    /// Flushes and stops; returns the rows written. A store still failing is retried for
    /// `GIVE_UP`, then the rows not written are counted in the error.
    pub fn finish(mut self) -> Result<u64, Error> {
        self.health.closing.store(true, Ordering::Release);
        drop(self.sender.take());
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) | None => Err(Error::Stopped),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Commits a batch, retrying while the store fails (with the reason in `health`), until it
/// commits or, once the writer is closing, `GIVE_UP` has passed.
fn commit(connection: &mut Connection, batch: &[Row], health: &Health) -> rusqlite::Result<()> {
    let mut wait = Duration::from_millis(10);
    let mut closing_since = None;
    loop {
        match insert(connection, batch) {
            Ok(()) => {
                health.failing.store(false, Ordering::Release);
                return Ok(());
            }
            Err(error) => {
                health.fail(error.to_string());
                if health.closing.load(Ordering::Acquire) {
                    let since = *closing_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= GIVE_UP {
                        return Err(error);
                    }
                }
                thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(250));
            }
        }
    }
}

/// Shorthands for building rows.
pub fn text(value: impl Into<String>) -> Value {
    Value::Text(value.into())
}

pub fn int(value: impl TryInto<i64>) -> Value {
    Value::Int(value.try_into().unwrap_or(i64::MAX))
}

/// The `agents` row of a run: who, in which ring and cgroup, under which probe backend.
pub fn agent_row(agent: &str, trust: &str, command: &str, user: &str, cgroup: &Path, backend: &str) -> Row {
    Row {
        table: "agents",
        values: vec![
            text(agent),
            text(trust),
            text(command),
            text(user),
            text(cgroup.display().to_string()),
            text(backend),
            int(now_ns()),
        ],
    }
}

/// Rows recorded when an agent's life changes (start, exit, suspend, resume, kill).
pub fn action(agent: &str, action: &str, actor: &str, why: &str) -> Row {
    Row { table: "actions", values: vec![text(agent), int(now_ns()), text(action), text(actor), text(why)] }
}

/// The `policies` rows of a run of `agent` that applied the policy files `files`: each
/// file's absolute path and its text as it is now, at launch (a file that cannot be read
/// any more is recorded with an empty text; the run loaded it a moment before).
pub fn policy_rows(agent: &str, files: &[PathBuf]) -> Vec<Row> {
    files
        .iter()
        .map(|file| {
            let path = file.canonicalize().unwrap_or_else(|_| file.clone());
            let content = std::fs::read_to_string(&path).unwrap_or_default();
            Row {
                table: "policies",
                values: vec![text(agent), int(now_ns()), text(path.display().to_string()), text(content)],
            }
        })
        .collect()
}

/// What the latest run of an agent applied, from the store.
#[derive(Debug, PartialEq, Eq)]
pub struct RecordedRun {
    pub trust: String,
    /// The policy files, in the order the run applied them: path and text at launch.
    pub policies: Vec<(PathBuf, String)>,
}

/// The ring and policy files of `agent`'s latest run (`None` for an agent the store never
/// saw). The policies rows of a run follow its agents row, so those at or after its time
/// are that run's.
pub fn recorded_run(connection: &Connection, agent: &str) -> rusqlite::Result<Option<RecordedRun>> {
    let latest: Option<(String, i64)> = connection
        .query_row("SELECT trust, time FROM agents WHERE agent = ?1 ORDER BY seq DESC LIMIT 1", [agent], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let Some((trust, time)) = latest else { return Ok(None) };
    let mut statement =
        connection.prepare("SELECT path, text FROM policies WHERE agent = ?1 AND time >= ?2 ORDER BY seq")?;
    let policies = statement
        .query_map(rusqlite::params![agent, time], |row| Ok((PathBuf::from(row.get::<_, String>(0)?), row.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(RecordedRun { trust, policies }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let path = dir.path().join("audit.db");
        (dir, path)
    }

    #[test]
    fn chains_verify_and_break_where_they_were_tampered_with() {
        let (_dir, path) = store();
        let writer = Writer::start(&path).unwrap_or_else(|error| panic!("{error}"));
        for index in 0..5 {
            writer
                .write(action("a1", "start", "root", &format!("row {index}")))
                .unwrap_or_else(|error| panic!("{error}"));
        }
        assert_eq!(writer.finish().ok(), Some(5));
        let connection = open(&path).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(verify(&connection).ok(), Some(Ok(5)));

        // An edit.
        connection
            .execute("UPDATE actions SET why = 'nothing happened' WHERE seq = 3", [])
            .unwrap_or_else(|e| panic!("{e}"));
        let broken = verify(&connection).ok().and_then(Result::err);
        assert_eq!(broken.map(|b| (b.table, b.seq)), Some(("actions", 3)));
    }

    fn event(time: i64, path: &str) -> Row {
        let mut values = vec![text("a"), Value::Int(time), Value::Int(time), text("open")];
        values.extend([1, 1, 0, 0, 0, 0].map(Value::Int));
        values.extend([text(""), text("/bin/x"), text("x"), text(path), text(""), text("ok")]);
        values.extend([text("observed"), text("tracepoint"), text("allow"), text(""), Value::Int(1), Value::Int(time)]);
        assert_eq!(values.len(), TABLES[2].1.len());
        Row { table: "events", values }
    }

    #[test]
    fn pruning_keeps_the_chain_verifiable_from_its_checkpoint() {
        let (_dir, path) = store();
        let mut connection = open(&path).unwrap_or_else(|error| panic!("{error}"));
        let old = now_ns() - 3_600_000_000_000;
        let mut rows: Vec<Row> = (0..50).map(|index| event(old + index, &format!("/old/{index}"))).collect();
        rows.extend((0..10).map(|index| event(now_ns(), &format!("/new/{index}"))));
        rows.push(action("a", "start", "root", "old"));
        insert(&mut connection, &rows).unwrap_or_else(|error| panic!("{error}"));
        let retention = Retention { max_age: Some(Duration::from_secs(60)), max_size: None };
        let pruned = prune(&mut connection, &retention).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(pruned.rows, [("events", 50)], "the newest row of a table stays");
        assert_eq!(verify(&connection).ok(), Some(Ok(1 + 10 + 1)), "a checkpoint, ten events and the action");
        // Rows after the prune chain on.
        insert(&mut connection, &[event(now_ns(), "/later")]).unwrap_or_else(|error| panic!("{error}"));
        assert!(verify(&connection).is_ok_and(|result| result.is_ok()));
        // Pruning again by size: a second checkpoint, still verifiable.
        let pruned = prune(&mut connection, &Retention { max_age: None, max_size: Some(1) })
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(pruned.rows, [("events", 10)]);
        assert!(verify(&connection).is_ok_and(|result| result.is_ok()));
        // Removing a row by hand still breaks the chain; so does removing the checkpoint.
        let first: i64 = connection
            .query_row("SELECT min(seq) FROM events", [], |row| row.get(0))
            .unwrap_or_else(|error| panic!("{error}"));
        insert(&mut connection, &[event(now_ns(), "/later2")]).unwrap_or_else(|error| panic!("{error}"));
        connection.execute("DELETE FROM events WHERE seq = ?1", [first]).unwrap_or_else(|e| panic!("{e}"));
        assert!(verify(&connection).is_ok_and(|result| result.is_err()), "a removed row after a checkpoint");
    }

    #[test]
    fn a_removed_checkpoint_breaks_the_pruned_chain() {
        let (_dir, path) = store();
        let mut connection = open(&path).unwrap_or_else(|error| panic!("{error}"));
        let old = now_ns() - 3_600_000_000_000;
        let rows: Vec<Row> = (0..5).map(|index| event(old + index, "/x")).collect();
        insert(&mut connection, &rows).unwrap_or_else(|error| panic!("{error}"));
        let retention = Retention { max_age: Some(Duration::from_secs(60)), max_size: None };
        prune(&mut connection, &retention).unwrap_or_else(|error| panic!("{error}"));
        connection.execute("DELETE FROM checkpoints", []).unwrap_or_else(|e| panic!("{e}"));
        let broken = verify(&connection).ok().and_then(Result::err);
        assert_eq!(broken.map(|broken| broken.table), Some("events"));
    }

    #[test]
    fn a_deleted_or_moved_row_breaks_the_next_one() {
        let (_dir, path) = store();
        let mut connection = open(&path).unwrap_or_else(|error| panic!("{error}"));
        let rows: Vec<Row> = (0..4).map(|index| action("a", "start", "root", &index.to_string())).collect();
        insert(&mut connection, &rows).unwrap_or_else(|error| panic!("{error}"));
        connection.execute("DELETE FROM actions WHERE seq = 2", []).unwrap_or_else(|e| panic!("{e}"));
        let broken = verify(&connection).ok().and_then(Result::err);
        assert_eq!(broken.map(|b| (b.seq, b.problem.contains("removed or moved"))), Some((3, true)));
    }

    #[test]
    fn two_writers_keep_one_chain() {
        let (_dir, path) = store();
        let writers: Vec<Writer> =
            (0..2).map(|_| Writer::start(&path).unwrap_or_else(|error| panic!("{error}"))).collect();
        for index in 0..200 {
            let writer = &writers[index % 2];
            writer.write(action("a", "start", "root", &index.to_string())).unwrap_or_else(|error| panic!("{error}"));
        }
        for writer in writers {
            writer.finish().unwrap_or_else(|error| panic!("{error}"));
        }
        let connection = open(&path).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(verify(&connection).ok(), Some(Ok(200)));
    }

    #[test]
    fn a_batch_chains_its_rows_as_they_would_be_chained_one_at_a_time() {
        // A run of one table's rows cut by another table's, then the first table again.
        let mut rows: Vec<Row> = (0..40).map(|i| event(i, &format!("/w/{i}"))).collect();
        rows.insert(21, action("a", "start", "root", "between"));
        rows.insert(22, action("a", "note", "root", "between"));
        rows.extend((0..17).map(|i| event(100 + i, "/w/after")));
        let hashes = |connection: &Connection| -> Vec<(String, String)> {
            let mut all = Vec::new();
            for table in ["events", "actions"] {
                let mut statement = connection
                    .prepare(&format!("SELECT prev, hash FROM {table} ORDER BY seq"))
                    .unwrap_or_else(|error| panic!("{error}"));
                let found: Vec<(String, String)> = statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                    .and_then(Iterator::collect)
                    .unwrap_or_else(|error| panic!("{error}"));
                all.extend(found);
            }
            all
        };
        let (_dir, batched) = store();
        let mut connection = open(&batched).unwrap_or_else(|error| panic!("{error}"));
        insert(&mut connection, &rows).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(verify(&connection).ok(), Some(Ok(rows.len() as u64)));
        let (_dir, singly) = store();
        let mut one_by_one = open(&singly).unwrap_or_else(|error| panic!("{error}"));
        for row in &rows {
            insert(&mut one_by_one, std::slice::from_ref(row)).unwrap_or_else(|error| panic!("{error}"));
        }
        assert_eq!(hashes(&connection).len(), rows.len());
        assert_eq!(hashes(&connection), hashes(&one_by_one));
        assert_eq!(counts(&connection), counts(&one_by_one));
    }

    /// What a store of schema 3 looked like: no `agent_counts`, kind and decision indexes
    /// without time. Its chained rows are those of schema 4.
    pub(crate) const DOWNGRADE_TO_3: &str = "
        DROP TABLE policies;
        DROP TABLE agent_counts;
        DROP INDEX events_kind_time;
        DROP INDEX events_decision_time;
        CREATE INDEX events_kind ON events (kind);
        CREATE INDEX events_decision ON events (decision);
        PRAGMA user_version = 3;";

    fn counts(connection: &Connection) -> Vec<(String, i64, i64)> {
        let mut statement = connection
            .prepare("SELECT agent, events, denials FROM agent_counts ORDER BY agent")
            .unwrap_or_else(|error| panic!("{error}"));
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .and_then(Iterator::collect)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn denial(time: i64, agent: &str) -> Row {
        let mut row = event(time, "/etc/shadow");
        row.values[EVENT_AGENT] = text(agent);
        row.values[EVENT_DECISION] = text("deny");
        row
    }

    #[test]
    fn the_counts_follow_inserts_and_prunes_and_verify_checks_them() {
        assert_eq!(TABLES[2].1[EVENT_AGENT], "agent");
        assert_eq!(TABLES[2].1[EVENT_DECISION], "decision");
        let (_dir, path) = store();
        let mut connection = open(&path).unwrap_or_else(|error| panic!("{error}"));
        let old = now_ns() - 3_600_000_000_000;
        let mut rows: Vec<Row> = (0..5).map(|index| event(old + index, "/x")).collect();
        rows.extend((0..3).map(|index| denial(old + 10 + index, "b")));
        rows.push(event(now_ns(), "/new"));
        rows.push(denial(now_ns(), "b"));
        insert(&mut connection, &rows).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(counts(&connection), [("a".into(), 6, 0), ("b".into(), 4, 4)]);
        prune(&mut connection, &Retention { max_age: Some(Duration::from_secs(60)), max_size: None })
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(counts(&connection), [("a".into(), 1, 0), ("b".into(), 1, 1)]);
        assert!(verify(&connection).is_ok_and(|result| result.is_ok()));
        // A summary changed to hide a denial is caught.
        connection
            .execute("UPDATE agent_counts SET denials = 0 WHERE agent = 'b'", [])
            .unwrap_or_else(|e| panic!("{e}"));
        let broken = verify(&connection).ok().and_then(Result::err);
        assert_eq!(broken.map(|broken| broken.table), Some("agent_counts"));
    }

    #[test]
    fn a_schema_3_store_is_migrated_and_still_verifies() {
        let (_dir, path) = store();
        let mut connection = open(&path).unwrap_or_else(|error| panic!("{error}"));
        let rows: Vec<Row> = (0..4).map(|index| event(now_ns() + index, "/x")).chain([denial(now_ns(), "b")]).collect();
        insert(&mut connection, &rows).unwrap_or_else(|error| panic!("{error}"));
        connection.execute_batch(DOWNGRADE_TO_3).unwrap_or_else(|error| panic!("{error}"));
        drop(connection);
        let mut connection = open(&path).unwrap_or_else(|error| panic!("{error}"));
        let version: i64 =
            connection.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(counts(&connection), [("a".into(), 4, 0), ("b".into(), 1, 1)]);
        assert_eq!(verify(&connection).ok(), Some(Ok(5)));
        insert(&mut connection, &[denial(now_ns(), "a")]).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(counts(&connection), [("a".into(), 5, 1), ("b".into(), 1, 1)]);
        assert_eq!(verify(&connection).ok(), Some(Ok(6)));
        // Another version is still refused.
        connection.pragma_update(None, "user_version", 2).unwrap_or_else(|error| panic!("{error}"));
        drop(connection);
        assert!(matches!(open(&path), Err(Error::Version { found: 2, .. })));
    }

    #[test]
    fn a_schema_4_store_gains_the_policies_chain_and_runs_find_their_files() {
        let (dir, path) = store();
        let mut connection = open(&path).unwrap_or_else(|error| panic!("{error}"));
        let agent_row = |time: i64| Row {
            table: "agents",
            values: vec![text("a"), text("medium"), text("sh"), text("root"), text("/cg"), text("off"), int(time)],
        };
        insert(&mut connection, &[agent_row(now_ns())]).unwrap_or_else(|error| panic!("{error}"));
        connection
            .execute_batch("DROP TABLE policies; PRAGMA user_version = 4;")
            .unwrap_or_else(|error| panic!("{error}"));
        drop(connection);
        let mut connection = open(&path).unwrap_or_else(|error| panic!("{error}"));
        let version: i64 =
            connection.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(version, SCHEMA_VERSION);
        // A run from before records no policy files.
        let run = recorded_run(&connection, "a").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(run, Some(RecordedRun { trust: "medium".into(), policies: Vec::new() }));
        // A later run's rows are its own: the earlier run's files are not.
        let old = dir.path().join("old.toml");
        let new = dir.path().join("new.toml");
        std::fs::write(&old, "# old\n").unwrap_or_else(|error| panic!("{error}"));
        std::fs::write(&new, "# new\n").unwrap_or_else(|error| panic!("{error}"));
        insert(&mut connection, &policy_rows("a", &[old])).unwrap_or_else(|error| panic!("{error}"));
        std::thread::sleep(Duration::from_millis(2));
        let mut rows = vec![agent_row(now_ns())];
        rows.extend(policy_rows("a", std::slice::from_ref(&new)));
        insert(&mut connection, &rows).unwrap_or_else(|error| panic!("{error}"));
        let run = recorded_run(&connection, "a").unwrap_or_else(|error| panic!("{error}"));
        let new = new.canonicalize().unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(run.map(|run| run.policies), Some(vec![(new, "# new\n".to_owned())]));
        assert_eq!(recorded_run(&connection, "b").ok(), Some(None));
        assert_eq!(verify(&connection).ok(), Some(Ok(4)));
    }

    #[test]
    fn hashes_do_not_confuse_values() {
        assert_ne!(chain_hash(GENESIS, &[text("ab"), text("c")]), chain_hash(GENESIS, &[text("a"), text("bc")]));
        assert_ne!(chain_hash(GENESIS, &[int(1)]), chain_hash(GENESIS, &[text("1")]));
        // The encoding is the documented one, so a store can be checked without governor:
        // sha256(prev + "\x1ft5:hello\x1fi-42\x1ft0:").
        assert_eq!(
            chain_hash(GENESIS, &[text("hello"), int(-42), text("")]),
            "eab5b01f37f1395557afda42399d609ab027af1a20a1b76dfe3c902b9c02a9b0"
        );
    }
}
