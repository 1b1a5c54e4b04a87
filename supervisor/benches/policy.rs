//! The policy engine and the audit store, measured without a kernel (`cargo xtask bench
//! policy`):
//!
//! 1. decision latency with 1, 100 and 1,000 rules: criterion's time per decision, then a
//!    separate pass timing 1,000,000 single decisions for p50/p99;
//! 2. audit insert throughput: events rows through the writer thread, and `audit::insert`
//!    in batches of 8192, into a fresh store;
//! 3. a store of 13,000,000 events rows and 700 agents over two weeks (with incidents and
//!    actions), built once at `target/bench/audit-13m.db` and reused: `governor status` and
//!    `governor audit query --since 1h` timed through the real binary, and
//!    `records::select` in process.
//!
//! A filter (`cargo bench -p governor --bench policy -- decide`) applies to the passes
//! outside criterion too: `decide`, `audit insert`, `audit store`.
#![expect(clippy::expect_used, reason = "benchmark setup")]

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant, UNIX_EPOCH},
};

use criterion::{Criterion, SamplingMode, Throughput};
use governor::{
    audit::{self, Row},
    engine::{Action, Engine, RulesFile},
    policy::Trust,
    probes::events::Event,
    service::records::{self, Format, Query, When},
};
use governor_common::{EventHeader, kind, source, verdict};

/// A small deterministic generator (xorshift64*), so every run sees the same rules and events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

// ---------------------------------------------------------------------------------------
// 1. Decisions
// ---------------------------------------------------------------------------------------

/// `n` rules as a policy file would have them: half open rules (project trees, key files),
/// execs of tools, connects to 10.x subnets; priorities from -100 to 199; some bound to a
/// trust; one rate rule per 200 (on refusals or on opens) and, from 2 rules on, the shipped
/// kind of sequence (a network tool after a secret).
fn rules_toml(n: usize) -> String {
    let mut text = String::from("suspend_on_severity = \"critical\"\n");
    for i in 0..n {
        let priority = (i * 7919 % 300) as i32 - 100;
        let action = ["deny", "audit", "deny", "allow"][i % 4];
        let severity = ["low", "medium", "high"][i % 3];
        text.push_str(&format!("\n[[rule]]\nid = \"rule-{i}\"\npriority = {priority}\n"));
        if i == 1 {
            text.push_str(
                "kind = \"exec\"\n\
                 binary = [\"**/curl\", \"**/wget\", \"**/nc\", \"**/scp\"]\n\
                 after = { kind = \"open\", path = [\"**/.ssh/**\", \"**/.aws/**\", \"**/.netrc\"], window = \"10m\" }\n\
                 action = \"suspend\"\nseverity = \"critical\"\nreason = \"a network tool after a secret\"\n",
            );
            continue;
        }
        if i % 200 == 3 {
            // Rates: refusals (like the shipped rule), or opens of a project tree.
            if i % 400 == 3 {
                text.push_str("kind = \"denied\"\ncount = 5\nwindow = \"10s\"\ntrust_below = \"high\"\n");
            } else {
                text.push_str(&format!(
                    "kind = \"open\"\npath = [\"/home/*/proj{i}/**\"]\ncount = 20\nwindow = \"1s\"\n"
                ));
            }
            text.push_str(&format!("action = \"suspend\"\nseverity = \"high\"\nreason = \"rate {i}\"\n"));
            continue;
        }
        match i % 10 {
            0 | 2 | 4 => text.push_str(&format!("kind = \"open\"\npath = [\"/home/*/proj{i}/**\"]\n")),
            1 | 3 => {
                text.push_str(&format!("kind = \"open\"\npath = [\"**/secret{i}.key\", \"**/.secret{i}/**\"]\n"));
            }
            5..=7 => text.push_str(&format!("kind = \"exec\"\nbinary = [\"/usr/bin/tool{i}\"]\n")),
            _ => text.push_str(&format!("kind = \"connect\"\ndestination = [\"10.{}.{}.*:443\"]\n", i % 256, i / 256)),
        }
        if i % 7 == 0 {
            text.push_str("trust_at_least = \"medium\"\n");
        } else if i % 7 == 6 {
            text.push_str("trust_at_least = \"high\"\n");
        }
        if i % 11 == 0 {
            text.push_str("trust_below = \"admin\"\n");
        }
        text.push_str(&format!("action = \"{action}\"\nseverity = \"{severity}\"\nreason = \"rule {i}\"\n"));
    }
    text
}

fn engine(n: usize) -> Engine {
    let file: RulesFile = toml::from_str(&rules_toml(n)).expect("the generated rules parse");
    file.validate().expect("the generated rules are valid");
    assert_eq!(file.rule.len(), n);
    Engine::new(file.rule).unwrap_or_else(|error| panic!("{error}")).suspend_on_severity(file.suspend_on_severity)
}

fn header(kind: u32, result: i32) -> EventHeader {
    EventHeader {
        kind,
        result,
        ktime_ns: 0,
        pid: 4242,
        tgid: 4242,
        uid: 1000,
        verdict: verdict::OBSERVED,
        source: source::TRACEPOINT,
        cgroup_id: 7,
    }
}

fn open(path: String, result: i32) -> Event {
    Event::Open { header: header(kind::OPEN, result), flags: 0, dirfd: -100, dev: 0, ino: 0, path, aka: Vec::new() }
}

fn exec(filename: &str) -> Event {
    let name = filename.rsplit('/').next().unwrap_or(filename).to_owned();
    // The program the kernel ran (sched_process_exec): what exec rules decide on.
    Event::Exec {
        header: header(kind::EXECED, 0),
        filename: filename.to_owned(),
        argv: vec![name, "--help".into()],
        file: None,
        aka: Vec::new(),
    }
}

fn connect(addr: Ipv4Addr) -> Event {
    Event::Net {
        header: header(kind::CONNECT, 0),
        family: libc::AF_INET as u16,
        port: 443,
        sock_type: libc::SOCK_STREAM as u16,
        addr: Some(IpAddr::V4(addr)),
        path: String::new(),
    }
}

/// Events cycled through (a power of two).
const EVENTS: usize = 4096;

/// 70 % opens (most outside every rule: libraries, sources, /proc; some in a project tree
/// or a key file a rule names; a few of ~/.ssh; 1 % refused), 20 % execs, 10 % connects.
/// The rule numbers they name are drawn from 0..1000, so more of them match as rules grow.
fn events() -> Vec<Event> {
    const USUAL: [&str; 8] = [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/home/ann/work/src/main.rs",
        "/proc/self/status",
        "/etc/ld.so.cache",
        "/usr/lib/python3.11/json/__init__.py",
        "/home/ann/work/node_modules/react/index.js",
        "/home/ann/work/Cargo.toml",
        "/dev/null",
    ];
    const PROGRAMS: [&str; 5] = ["/usr/bin/git", "/usr/bin/python3.11", "/usr/bin/ls", "/bin/sh", "/usr/bin/cargo"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..EVENTS)
        .map(|_| {
            let j = rng.below(1000);
            match rng.below(100) {
                0..70 => match rng.below(100) {
                    0..80 => open(USUAL[rng.below(USUAL.len() as u64) as usize].to_owned(), 0),
                    80..92 => open(format!("/home/ann/proj{j}/src/lib.rs"), 0),
                    92..97 => open(format!("/home/ann/.config/app/secret{j}.key"), 0),
                    97..99 => open("/home/ann/.ssh/known_hosts".into(), 0),
                    _ => open("/etc/shadow".into(), -libc::EACCES),
                },
                70..90 => match rng.below(100) {
                    0..60 => exec(PROGRAMS[rng.below(PROGRAMS.len() as u64) as usize]),
                    60..97 => exec(&format!("/usr/bin/tool{j}")),
                    _ => exec("/usr/bin/curl"),
                },
                _ => connect(if rng.below(2) == 0 {
                    Ipv4Addr::new(10, (j % 256) as u8, (j / 256) as u8, 7)
                } else {
                    Ipv4Addr::new(93, 184, 216, 34)
                }),
            }
        })
        .collect()
}

/// Nanoseconds between two events: 1 ms, so the rate windows (1 s, 10 s) fill and expire.
const STEP_NS: u64 = 1_000_000;

fn decisions(criterion: &mut Criterion, filter: &Filter) {
    let events = events();
    let mut group = criterion.benchmark_group("decide");
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    for n in [1, 100, 1000] {
        let engine = engine(n);
        group.bench_function(format!("{n} {}", rules_word(n)), |b| {
            let mut agent = engine.agent(Trust::Medium);
            let mut index = 0usize;
            let mut now = 0u64;
            b.iter(|| {
                let event = &events[index & (EVENTS - 1)];
                index += 1;
                now += STEP_NS;
                black_box(engine.decide(&mut agent, black_box(event), now).action)
            })
        });
    }
    group.finish();

    if !filter.wants("decide") {
        return;
    }
    println!();
    println!("decide, single decisions timed one by one (1,000,000 each, agent of trust medium):");
    let overhead = instant_overhead();
    println!("  Instant::now() pair, median {overhead} ns: subtracted from every sample below");
    for n in [1, 100, 1000] {
        let engine = engine(n);
        let (matched, actions) = mix(&engine, &events);
        let (p50, p99, p999, max) = latencies(&engine, &events, overhead);
        println!(
            "  {n:>5} {:<5}: p50 {:.3} µs, p99 {:.3} µs, p99.9 {:.3} µs, max {:.1} µs   ({matched:.1} % of events matched a rule: {actions})",
            rules_word(n),
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
            p999 as f64 / 1000.0,
            max as f64 / 1000.0,
        );
    }
    println!();
}

fn rules_word(n: usize) -> &'static str {
    if n == 1 { "rule" } else { "rules" }
}

/// The median cost of an empty `Instant::now()` pair, in ns.
fn instant_overhead() -> u64 {
    let mut samples = Vec::with_capacity(1_000_000);
    for _ in 0..1_000_000 {
        let start = Instant::now();
        black_box(&start);
        samples.push(start.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// p50, p99, p99.9 and max of 1,000,000 single decisions (ns, overhead subtracted).
fn latencies(engine: &Engine, events: &[Event], overhead: u64) -> (u64, u64, u64, u64) {
    const DECISIONS: usize = 1_000_000;
    let mut agent = engine.agent(Trust::Medium);
    let mut now = 0u64;
    for index in 0..100_000 {
        now += STEP_NS;
        black_box(engine.decide(&mut agent, &events[index & (EVENTS - 1)], now).action);
    }
    let mut samples = Vec::with_capacity(DECISIONS);
    for index in 0..DECISIONS {
        let event = &events[index & (EVENTS - 1)];
        now += STEP_NS;
        let start = Instant::now();
        black_box(engine.decide(&mut agent, black_box(event), now).action);
        samples.push((start.elapsed().as_nanos() as u64).saturating_sub(overhead));
    }
    samples.sort_unstable();
    let at = |permille: usize| samples[(samples.len() * permille / 1000).min(samples.len() - 1)];
    (at(500), at(990), at(999), samples[samples.len() - 1])
}

/// The share of events a rule decided over one pass of the events, and the actions taken.
fn mix(engine: &Engine, events: &[Event]) -> (f64, String) {
    let mut agent = engine.agent(Trust::Medium);
    let mut counts = [0usize; 5];
    let mut matched = 0;
    for (index, event) in events.iter().enumerate() {
        let decision = engine.decide(&mut agent, event, (index as u64 + 1) * STEP_NS);
        matched += usize::from(decision.rule.is_some());
        counts[decision.action as usize] += 1;
    }
    let names = ["allow", "deny", "audit", "suspend", "kill"];
    let actions = [Action::Allow, Action::Deny, Action::Audit, Action::Suspend, Action::Kill]
        .iter()
        .filter(|action| counts[**action as usize] > 0)
        .map(|action| format!("{} {}", names[*action as usize], counts[*action as usize]))
        .collect::<Vec<_>>()
        .join(", ");
    (matched as f64 * 100.0 / events.len() as f64, actions)
}

// ---------------------------------------------------------------------------------------
// 2. Inserts
// ---------------------------------------------------------------------------------------

/// Rows per sample.
const INSERT_ROWS: usize = 200_000;

/// What one agent's process looks like in its events rows.
struct Process {
    agent: String,
    exe: &'static str,
    cmdline: String,
    pid: i64,
}

fn processes(count: usize) -> Vec<Process> {
    const PROGRAMS: [(&str, &str, &str); 5] = [
        ("python3", "/usr/bin/python3.11", "python3 -m agent.run --task refactor --workspace"),
        ("node", "/usr/bin/node", "node /opt/agent/dist/cli.js --yes --model large --cwd"),
        ("claude", "/usr/local/bin/claude", "claude --print --output-format stream-json --cwd"),
        ("bash", "/usr/bin/bash", "bash -c make -j2 test && git diff --stat in"),
        ("cargo", "/home/ann/.cargo/bin/cargo", "cargo test --workspace --all-targets --manifest-path"),
    ];
    (0..count)
        .map(|index| {
            let (name, exe, cmdline) = PROGRAMS[index % PROGRAMS.len()];
            let pid = 20_000 + index as i64 * 37;
            Process {
                agent: format!("{name}-{pid}-{:08x}", (index as u32).wrapping_mul(0x9e37_79b9)),
                exe,
                cmdline: format!("{cmdline} /home/ann/proj{index}"),
                pid,
            }
        })
        .collect()
}

/// One events row as the event loop records it (`run.rs`), in `audit::TABLES` order.
fn event_row(process: &Process, time: i64, rng: &mut Rng) -> Row {
    let (kind, path, destination, result, decision, rule) = match rng.below(100) {
        0..70 => {
            let path = format!("/home/ann/proj/src/module_{:03}/file_{:02}.py", rng.below(500), rng.below(97));
            if rng.below(50) == 0 {
                ("open", path, String::new(), "EACCES", "deny", "rule-31")
            } else {
                ("open", path, String::new(), "ok", "allow", "")
            }
        }
        70..90 => ("exec", format!("/usr/bin/tool{}", rng.below(1000)), String::new(), "ok", "allow", ""),
        _ => ("connect", String::new(), format!("10.{}.0.7:443", rng.below(256)), "ok", "audit", "rule-8"),
    };
    let tid = process.pid + rng.below(8) as i64;
    let values = vec![
        audit::text(process.agent.as_str()),
        audit::int(time),
        audit::int(time - 1_700_000_000_000_000_000),
        audit::text(kind),
        audit::int(process.pid),
        audit::int(tid),
        audit::int(process.pid - 1),
        audit::int(1000),
        audit::int(1000),
        audit::int(1000),
        audit::text("0000000000000000"),
        audit::text(process.exe),
        audit::text(process.cmdline.as_str()),
        audit::text(path),
        audit::text(destination),
        audit::text(result),
        audit::text("observed"),
        audit::text("tracepoint"),
        audit::text(decision),
        audit::text(rule),
        audit::int(1),
        audit::int(time),
    ];
    debug_assert_eq!(values.len(), audit::TABLES[2].1.len());
    Row { table: "events", values }
}

/// `count` rows of one agent, a millisecond apart.
fn insert_rows(count: usize) -> Vec<Row> {
    let process = processes(1).remove(0);
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let start = audit::now_ns();
    (0..count).map(|index| event_row(&process, start + index as i64 * 1_000_000, &mut rng)).collect()
}

/// Stores are created next to the 13M store, on the disk a real one would be on (not /tmp,
/// which may be memory).
fn bench_dir() -> PathBuf {
    // target/<profile>/deps/policy-<hash> -> target/bench
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir).expect("creating target/bench");
    dir
}

fn inserts(criterion: &mut Criterion) {
    let dir = bench_dir();
    let mut group = criterion.benchmark_group("audit insert");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_millis(500));
    // About 2.5 s a sample here: one iteration each.
    group.measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(INSERT_ROWS as u64));
    group.bench_function(format!("writer thread, {INSERT_ROWS} events rows"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let store = tempfile::tempdir_in(&dir).expect("a temporary directory");
                let rows = insert_rows(INSERT_ROWS);
                let writer = audit::Writer::open(&store.path().join("audit.db"))
                    .expect("opening a fresh store")
                    .start()
                    .expect("starting the writer");
                let start = Instant::now();
                for row in rows {
                    writer.write(row).expect("queueing a row");
                }
                let written = writer.finish().expect("flushing the writer");
                total += start.elapsed();
                assert_eq!(written, INSERT_ROWS as u64);
            }
            total
        })
    });
    group.bench_function(format!("audit::insert, batches of 8192, {INSERT_ROWS} events rows"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let store = tempfile::tempdir_in(&dir).expect("a temporary directory");
                let rows = insert_rows(INSERT_ROWS);
                let mut connection = audit::open(&store.path().join("audit.db")).expect("opening a fresh store");
                let start = Instant::now();
                for batch in rows.chunks(8192) {
                    audit::insert(&mut connection, batch).expect("inserting a batch");
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// 3. A large store: `governor status` and `governor audit query`
// ---------------------------------------------------------------------------------------

const STORE_ROWS: i64 = 13_000_000;
const STORE_AGENTS: usize = 700;
const HOUR_NS: i64 = 3_600_000_000_000;
/// Two weeks of events, ending when the store was built.
const STORE_SPAN_NS: i64 = 14 * 24 * HOUR_NS;
/// Rows per transaction while generating.
const GENERATE_BATCH: usize = 50_000;
/// One events row in this many raises an incident.
const INCIDENT_EVERY: u64 = 5_000;

/// The 13M-row store: reused when it is complete (a store of an older schema is migrated by
/// `audit::open`, as a user's would be), else built.
fn store() -> PathBuf {
    let path = bench_dir().join("audit-13m.db");
    if complete(&path) {
        println!("audit store: reusing {}", path.display());
        return path;
    }
    let partial = path.with_extension("db.partial");
    for stale in [&path, &partial] {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = stale.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
    println!("audit store: generating {} ({STORE_ROWS} events rows, {STORE_AGENTS} agents, 14 days)", path.display());
    let started = Instant::now();
    generate(&partial);
    std::fs::rename(&partial, &path).expect("moving the generated store into place");
    let elapsed = started.elapsed();
    println!(
        "audit store: generated in {:.1} s ({:.0} rows/s, {:.2} GB)",
        elapsed.as_secs_f64(),
        STORE_ROWS as f64 / elapsed.as_secs_f64(),
        std::fs::metadata(&path).map_or(0.0, |meta| meta.len() as f64 / 1e9)
    );
    path
}

fn complete(path: &Path) -> bool {
    if !path.exists() {
        return false;
    }
    let started = Instant::now();
    let Ok(connection) = audit::open(path) else { return false };
    let opened = started.elapsed();
    if opened > Duration::from_secs(1) {
        println!("audit store: opened (and migrated) in {:.1} s", opened.as_secs_f64());
    }
    let version: Result<i64, _> = connection.pragma_query_value(None, "user_version", |row| row.get(0));
    let events: Result<i64, _> =
        connection.query_row("SELECT count(*) FROM events WHERE seq > ?1", [STORE_ROWS - 1000], |row| row.get(0));
    let agents: Result<i64, _> = connection.query_row("SELECT count(*) FROM agents", [], |row| row.get(0));
    let last: Result<Option<i64>, _> = connection.query_row("SELECT max(seq) FROM events", [], |row| row.get(0));
    matches!(
        (version, events, agents, last),
        (Ok(audit::SCHEMA_VERSION), Ok(_), Ok(agents), Ok(Some(last))) if agents == STORE_AGENTS as i64 && last >= STORE_ROWS
    )
}

/// An agent's life in the store: from `start` to `end`; `exit` says whether its exit was
/// recorded (an agent whose supervisor was killed has none).
struct Life {
    start: i64,
    end: i64,
    exit: bool,
}

/// Agents start one after another over the two weeks and live from 6 hours to 3 days (about
/// 100 at a time); one in 30 ends without a recorded exit; the last ones are still running
/// when the store ends (their exits are not recorded either).
fn lives(first: i64, last: i64, rng: &mut Rng) -> Vec<Life> {
    (0..STORE_AGENTS)
        .map(|index| {
            let start = first + (i128::from(last - first) * index as i128 / STORE_AGENTS as i128) as i64;
            let start = if index == 0 { first } else { start };
            let lifetime = 6 * HOUR_NS + rng.below(66) as i64 * HOUR_NS;
            let end = (start + lifetime).min(last);
            Life { start, end, exit: end < last && rng.below(30) != 0 }
        })
        .collect()
}

fn action_row(agent: &str, time: i64, action: &str, actor: &str, why: &str) -> Row {
    Row {
        table: "actions",
        values: vec![audit::text(agent), audit::int(time), audit::text(action), audit::text(actor), audit::text(why)],
    }
}

/// Builds the store with `audit::insert` (which chains and hashes every row) in
/// transactions of `GENERATE_BATCH` rows, the rows made on a second thread, in time order:
/// each agent's row and start action when it starts, its events (spread evenly over the
/// two weeks, each from one of the agents alive then), incidents, and its exit.
fn generate(path: &Path) {
    let processes = processes(STORE_AGENTS);
    let mut connection = audit::open(path).expect("creating the store");
    // Speed only, not layout: a larger page cache and no fsync while generating.
    connection.pragma_update(None, "cache_size", -512_000).expect("cache_size");
    connection.pragma_update(None, "synchronous", "OFF").expect("synchronous");
    let last = audit::now_ns();
    let first = last - STORE_SPAN_NS;
    let (sender, receiver) = mpsc::sync_channel::<Vec<Row>>(2);
    std::thread::scope(|scope| {
        let processes = &processes;
        scope.spawn(move || {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d);
            let lives = lives(first, last, &mut rng);
            // Agents alive now, by index; the next to start; the ends not yet recorded.
            let mut alive: Vec<usize> = Vec::new();
            let mut next = 0usize;
            let mut batch = Vec::with_capacity(GENERATE_BATCH + 16);
            for index in 0..STORE_ROWS {
                let time = first + (i128::from(index) * i128::from(STORE_SPAN_NS) / i128::from(STORE_ROWS)) as i64;
                while next < lives.len() && lives[next].start <= time {
                    let process = &processes[next];
                    batch.push(Row {
                        table: "agents",
                        values: vec![
                            audit::text(process.agent.as_str()),
                            audit::text(["low", "medium", "high"][next % 3]),
                            audit::text(process.cmdline.as_str()),
                            audit::text("ann"),
                            audit::text(format!("/sys/fs/cgroup/governor/{}", process.agent)),
                            audit::text("tracepoint"),
                            audit::int(time),
                        ],
                    });
                    batch.push(action_row(&process.agent, time, "start", "ann", "governor run --trust medium"));
                    alive.push(next);
                    next += 1;
                }
                let mut at = 0;
                while at < alive.len() {
                    let life = &lives[alive[at]];
                    // An agent's end is past once a later agent keeps the store going.
                    if life.end < time && alive.len() > 1 {
                        if life.exit {
                            batch.push(action_row(
                                &processes[alive[at]].agent,
                                life.end,
                                "exit",
                                "governor",
                                "exited with status 0",
                            ));
                        }
                        alive.swap_remove(at);
                    } else {
                        at += 1;
                    }
                }
                let agent = alive[rng.below(alive.len() as u64) as usize];
                let process = &processes[agent];
                let row = event_row(process, time, &mut rng);
                if rng.below(INCIDENT_EVERY) == 0 {
                    let suspend = rng.below(4) == 0;
                    let event = format!("{{\"kind\":\"open\",\"path\":\"/home/ann/.ssh/id_{}\"}}", rng.below(10));
                    batch.push(row);
                    batch.push(Row {
                        table: "incidents",
                        values: vec![
                            audit::text(process.agent.as_str()),
                            audit::int(time),
                            audit::text(if suspend { "network-tool-after-secret" } else { "rule-31" }),
                            audit::text(if suspend { "critical" } else { "high" }),
                            audit::text(if suspend { "suspend" } else { "deny" }),
                            audit::text("a key file outside the workspace"),
                            audit::text(event),
                        ],
                    });
                    if suspend {
                        batch.push(action_row(&process.agent, time, "suspend", "rule network-tool-after-secret", "x"));
                        batch.push(action_row(&process.agent, time + 60_000_000_000, "resume", "ann", "checked"));
                    }
                } else {
                    batch.push(row);
                }
                if batch.len() >= GENERATE_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(GENERATE_BATCH + 16));
                    if sender.send(full).is_err() {
                        return;
                    }
                }
            }
            let _ = sender.send(batch);
        });
        let started = Instant::now();
        let mut written = 0usize;
        let mut reported = 0usize;
        for batch in receiver {
            audit::insert(&mut connection, &batch).expect("inserting a batch");
            written += batch.len();
            if written - reported >= 1_000_000 {
                reported = written;
                println!(
                    "  {written} rows, {:.0} s, {:.0} rows/s",
                    started.elapsed().as_secs_f64(),
                    written as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
    });
    connection.pragma_update(None, "synchronous", "NORMAL").expect("synchronous");
    connection.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").expect("checkpointing");
    drop(connection);
}

/// The `governor` binary `cargo xtask bench` built: `GOVERNOR_BIN`, else target/release.
fn governor_bin() -> PathBuf {
    std::env::var_os("GOVERNOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| bench_dir().parent().expect("target").join("release/governor"))
}

/// The CPU time (user and system) of this process's waited-for children so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage only fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid target.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let time = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Runs a command to its end, output discarded; its wall time and its CPU time (which a
/// machine busy with other work inflates less than the wall time).
fn time_command(command: &mut std::process::Command) -> (Duration, Duration) {
    let cpu = children_cpu();
    let start = Instant::now();
    let output = command.stdin(std::process::Stdio::null()).output().expect("running governor");
    let elapsed = start.elapsed();
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    black_box(output.stdout.len());
    (elapsed, children_cpu().saturating_sub(cpu))
}

/// `governor status` and `governor audit query` through the real binary on the 13M store,
/// interleaved round by round, medians; then `records::select` in process (criterion).
fn store_queries(criterion: &mut Criterion, filter: &Filter) {
    if !filter.wants("audit store") {
        return;
    }
    let path = store();
    let connection = audit::open(&path).expect("opening the 13M store");
    let last: i64 =
        connection.query_row("SELECT max(time) FROM events", [], |row| row.get(0)).expect("the store's last time");
    let agents: i64 = connection.query_row("SELECT count(*) FROM agents", [], |row| row.get(0)).expect("agents");
    let events: i64 = connection.query_row("SELECT max(seq) FROM events", [], |row| row.get(0)).expect("events");
    // `--since 1h` of a live store: the hour before the store's last event, as an RFC 3339
    // time (the store was built earlier).
    let since = last - HOUR_NS;
    let since_text = humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(since as u64)).to_string();
    let agent = {
        // An agent alive in the store's last hour.
        connection
            .query_row("SELECT agent FROM events WHERE time >= ?1 ORDER BY time LIMIT 1", [since], |row| row.get(0))
            .expect("an agent of the last hour")
    };
    let agent: String = agent;
    drop(connection);
    println!(
        "audit store: {events} events rows, {agents} agents; --since {since_text} (an hour before its last event)"
    );
    let governor = governor_bin();
    let commands: Vec<(&str, Vec<String>)> = vec![
        ("governor status", vec!["status".into()]),
        ("governor status --all", vec!["status".into(), "--all".into()]),
        ("governor audit query --since 1h", vec!["audit".into(), "query".into(), "--since".into(), since_text.clone()]),
        (
            "governor audit query --agent ID --since 1h",
            vec!["audit".into(), "query".into(), "--agent".into(), agent.clone(), "--since".into(), since_text.clone()],
        ),
        (
            "governor audit incidents --since 1h",
            vec!["audit".into(), "incidents".into(), "--since".into(), since_text.clone()],
        ),
    ];
    let run = |arguments: &[String]| {
        let mut command = std::process::Command::new(&governor);
        command.arg("--audit-db").arg(&path).args(arguments);
        // The shipped rings (status loads them), as from a checkout.
        command.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        time_command(&mut command)
    };
    // One warm-up round (page cache), then rounds until 11 or a minute has passed (at least 3).
    for (_, arguments) in &commands {
        run(arguments);
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); commands.len()];
    let mut cpu: Vec<Vec<Duration>> = vec![Vec::new(); commands.len()];
    let started = Instant::now();
    while times[0].len() < 11 && (times[0].len() < 3 || started.elapsed() < Duration::from_secs(60)) {
        for (index, (_, arguments)) in commands.iter().enumerate() {
            let (wall, used) = run(arguments);
            times[index].push(wall);
            cpu[index].push(used);
        }
    }
    println!(
        "audit store, the real binary ({}), {} interleaved runs each, medians:",
        governor.display(),
        times[0].len()
    );
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    for (((name, _), times), cpu) in commands.iter().zip(&mut times).zip(&mut cpu) {
        times.sort_unstable();
        cpu.sort_unstable();
        println!(
            "  {name:<44} median {:>9.2} ms (min {:.2} ms, max {:.2} ms); CPU time median {:.2} ms",
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1]),
            ms(cpu[cpu.len() / 2]),
        );
    }

    let connection = audit::open(&path).expect("opening the 13M store");
    let query = |agent: Option<String>| Query {
        agent,
        kind: None,
        decision: None,
        since: Some(When(since)),
        until: None,
        path: None,
        limit: 1000,
        after: None,
        format: Format::Jsonl,
    };
    let one = query(Some(agent.clone()));
    let all = query(None);
    let count = |query: &Query| records::select(&connection, query).expect("querying").len();
    println!(
        "audit query: agent {agent}, last hour: {} rows; all agents, last hour: {} rows (limit 1000)",
        count(&one),
        count(&all)
    );
    let mut group = criterion.benchmark_group("audit store, select");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(5));
    group.bench_function("one agent, --since 1h", |b| {
        b.iter(|| records::select(&connection, black_box(&one)).expect("querying"))
    });
    group.bench_function("all agents, --since 1h", |b| {
        b.iter(|| records::select(&connection, black_box(&all)).expect("querying"))
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------

/// Whether to run the passes outside criterion (only under `cargo bench`: `cargo test
/// --benches` runs each criterion benchmark once as a test, and skips these and the 13M
/// store), and criterion's FILTER argument, applied to them as a substring.
struct Filter {
    benchmarking: bool,
    filter: Option<String>,
}

impl Filter {
    fn from_args() -> Filter {
        // Criterion's options that take a value; the first other bare word is the filter.
        const VALUED: [&str; 19] = [
            "-c",
            "--color",
            "-s",
            "--save-baseline",
            "-b",
            "--baseline",
            "--baseline-lenient",
            "--format",
            "--profile-time",
            "--load-baseline",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--plotting-backend",
            "--output-format",
        ];
        let args: Vec<String> = std::env::args().skip(1).collect();
        let benchmarking = args.iter().any(|arg| arg == "--bench") && !args.iter().any(|arg| arg == "--list");
        let mut filter = None;
        let mut skip = false;
        for arg in &args {
            if skip {
                skip = false;
            } else if arg.starts_with('-') {
                skip = VALUED.contains(&arg.as_str());
            } else {
                filter = Some(arg.clone());
                break;
            }
        }
        Filter { benchmarking, filter }
    }

    fn wants(&self, name: &str) -> bool {
        self.benchmarking
            && self.filter.as_ref().is_none_or(|filter| name.contains(filter.as_str()) || filter.contains(name))
    }
}

fn main() {
    let filter = Filter::from_args();
    let mut criterion = Criterion::default().configure_from_args();
    decisions(&mut criterion, &filter);
    inserts(&mut criterion);
    store_queries(&mut criterion, &filter);
    criterion.final_summary();
}
