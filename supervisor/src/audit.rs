//! The audit store: SQLite (WAL) holding agents, events, incidents and actions. Every row
//! carries `prev` (the previous row's hash in its table) and `hash` = SHA-256 of `prev` and
//! the row's content, so an edit, a deletion or a reordering breaks the chain where it
//! happened (`governor audit verify`). Rows are only ever inserted.
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
pub fn default_path() -> PathBuf {
    if let Some(path) = std::env::var_os("GOVERNOR_AUDIT_DB") {
        return PathBuf::from(path);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/governor/audit.db");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    state.join("governor/audit.db")
}

/// The tables, their content columns (hashed in this order), and how to create them.
pub const TABLES: [(&str, &[&str]); 4] = [
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
        ],
    ),
    ("incidents", &["agent", "time", "rule", "severity", "action", "reason", "event"]),
    ("actions", &["agent", "time", "action", "actor", "why"]),
];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agents (seq INTEGER PRIMARY KEY, agent TEXT NOT NULL, trust TEXT NOT NULL,
  command TEXT NOT NULL, user TEXT NOT NULL, cgroup TEXT NOT NULL, backend TEXT NOT NULL, time INTEGER NOT NULL,
  prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, agent TEXT NOT NULL, time INTEGER NOT NULL,
  ktime INTEGER NOT NULL, kind TEXT NOT NULL, pid INTEGER NOT NULL, tid INTEGER NOT NULL, ppid INTEGER NOT NULL,
  uid INTEGER NOT NULL, euid INTEGER NOT NULL, egid INTEGER NOT NULL, caps TEXT NOT NULL, exe TEXT NOT NULL,
  cmdline TEXT NOT NULL, path TEXT NOT NULL, destination TEXT NOT NULL, result TEXT NOT NULL, verdict TEXT NOT NULL, source TEXT NOT NULL,
  decision TEXT NOT NULL, rule TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (seq INTEGER PRIMARY KEY, agent TEXT NOT NULL, time INTEGER NOT NULL,
  rule TEXT NOT NULL, severity TEXT NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL, event TEXT NOT NULL,
  prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS actions (seq INTEGER PRIMARY KEY, agent TEXT NOT NULL, time INTEGER NOT NULL,
  action TEXT NOT NULL, actor TEXT NOT NULL, why TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_agent_time ON events (agent, time);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind);
CREATE INDEX IF NOT EXISTS events_decision ON events (decision);
CREATE INDEX IF NOT EXISTS incidents_agent_time ON incidents (agent, time);
CREATE INDEX IF NOT EXISTS actions_agent ON actions (agent, seq);
";

/// The layout this governor writes (`PRAGMA user_version`). A store of another version is
/// refused, not migrated: rewriting rows would break their chains.
pub const SCHEMA_VERSION: i64 = 2;

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
    connection.busy_timeout(Duration::from_secs(10)).map_err(sqlite)?;
    connection.pragma_update(None, "journal_mode", "WAL").map_err(sqlite)?;
    connection.pragma_update(None, "synchronous", "NORMAL").map_err(sqlite)?;
    // 32 MiB of page cache: the events table's indices stay in memory while batches go in.
    connection.pragma_update(None, "cache_size", -32768).map_err(sqlite)?;
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(sqlite)?;
    let tables: i64 = connection
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |row| row.get(0))
        .map_err(sqlite)?;
    if tables > 0 && version != SCHEMA_VERSION {
        return Err(Error::Version { path: path.to_path_buf(), found: version });
    }
    connection.execute_batch(SCHEMA).map_err(sqlite)?;
    // Written once, for a new store: a write at every open would cost a transaction.
    if version != SCHEMA_VERSION {
        connection.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sqlite)?;
    }
    Ok(connection)
}

/// Inserts `rows` in one transaction, chaining each table from its current head.
pub fn insert(connection: &mut Connection, rows: &[Row]) -> rusqlite::Result<()> {
    let transaction = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut heads: Vec<(&str, String)> = Vec::new();
        for row in rows {
            let sql = insert_sql(row.table).ok_or(rusqlite::Error::InvalidQuery)?;
            let head = match heads.iter().position(|(table, _)| *table == row.table) {
                Some(position) => position,
                None => {
                    let head = transaction
                        .query_row(&format!("SELECT hash FROM {} ORDER BY seq DESC LIMIT 1", row.table), [], |r| {
                            r.get(0)
                        })
                        .optional()?
                        .unwrap_or_else(|| GENESIS.to_owned());
                    heads.push((row.table, head));
                    heads.len() - 1
                }
            };
            let hash = chain_hash(&heads[head].1, &row.values);
            let mut statement = transaction.prepare_cached(sql)?;
            let prev = Value::Text(std::mem::replace(&mut heads[head].1, hash));
            let hash = Value::Text(heads[head].1.clone());
            statement.execute(rusqlite::params_from_iter(row.values.iter().chain([&prev, &hash])))?;
        }
    }
    transaction.commit()
}

/// The first broken row of a chain: table, seq and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Broken {
    pub table: &'static str,
    pub seq: i64,
    pub problem: &'static str,
}

/// Walks every table's chain; returns the rows checked, or the first broken row.
pub fn verify(connection: &Connection) -> rusqlite::Result<Result<u64, Broken>> {
    let mut checked = 0;
    for (table, columns) in TABLES {
        let sql = format!("SELECT seq, {}, prev, hash FROM {table} ORDER BY seq", columns.join(", "));
        let mut statement = connection.prepare(&sql)?;
        let mut rows = statement.query([])?;
        let mut expected_prev = GENESIS.to_owned();
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
            expected_prev = hash;
            checked += 1;
        }
    }
    Ok(Ok(checked))
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
                while let Ok(row) = receiver.recv() {
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
                    shared.committed.store(written, Ordering::Release);
                    if let Ok(hook) = shared.on_commit.lock()
                        && let Some(hook) = hook.as_ref()
                    {
                        hook();
                    }
                    batch.clear();
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

/// Rows recorded when an agent's life changes (start, exit, suspend, resume, kill).
pub fn action(agent: &str, action: &str, actor: &str, why: &str) -> Row {
    Row { table: "actions", values: vec![text(agent), int(now_ns()), text(action), text(actor), text(why)] }
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
