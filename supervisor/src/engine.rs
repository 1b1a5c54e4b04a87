//! The policy engine: decides on every kernel event of an agent. Rules (`[[rule]]` in
//! `policies/rules.toml` and `--policy` files) match an event's kind, globs on its path,
//! binary or destination, the agent's trust, and optionally a rate (`count` within `window`)
//! or a sequence (`after` an earlier matching event of the same agent within a window).
//! Highest priority first, first match wins; a suspended agent's events are denied; without
//! a match the ring's default (allow) stands. Rules are compiled once, bucketed by kind; the
//! per-event path allocates nothing. The file format of the rules is [`crate::policy::rules`].

use globset::{Glob, GlobSet, GlobSetBuilder};

pub use crate::policy::rules::{
    Action, After, EventBudget, Globs, Kind, OpenAccess, Rule, RulesFile, Severity, Unless, Window,
};
use crate::probes::KernelDenies;
use crate::{
    policy::{self, Trust},
    probes::events::Event,
};

const KINDS: usize = 6;

impl Kind {
    fn index(self) -> usize {
        self as usize
    }
}

/// The rules an agent is decided by, and the severity that suspends it.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub rules: Vec<Rule>,
    pub suspend_on_severity: Option<Severity>,
    pub event_budget: Option<EventBudget>,
}

/// The engine's answer for one event.
#[derive(Clone, Copy, Debug)]
pub struct Decision<'a> {
    pub action: Action,
    /// The rule that matched; `None` for the default or a suspended agent.
    pub rule: Option<&'a Rule>,
    /// Its index in `Engine::rules`.
    pub index: Option<usize>,
}

/// The per-agent state the engine keeps: rate windows and sequence memory, sized once.
#[derive(Debug)]
pub struct AgentState {
    pub trust: Trust,
    pub suspended: bool,
    /// Kernel time (CLOCK_MONOTONIC, like the events') at which it was suspended: events
    /// from before that were still in flight and are decided as usual.
    pub suspended_since: u64,
    /// Per rule: timestamps (ns) of recent matches, a ring of `count` entries.
    rates: Vec<Vec<u64>>,
    rate_next: Vec<usize>,
    /// Per `distinct` rule: (time, hash of the target) of the distinct targets counted.
    targets: Vec<Vec<(u64, u64)>>,
    /// Per rule with `after`: when its earlier event was last seen (ns).
    seen: Vec<Option<u64>>,
    /// Scratch space for glob matching, sized once so that deciding allocates nothing:
    /// which fields matched, per rule of a bucket (zero between decisions), the positions
    /// marked, the pattern indices a glob set returned, and the candidate rules.
    hits: Vec<u8>,
    touched: Vec<usize>,
    matched: Vec<usize>,
    candidates: Vec<usize>,
}

/// The fields a rule can put globs on, as bit flags.
const PATH: u8 = 1;
const BINARY: u8 = 2;
const DESTINATION: u8 = 4;

/// All the patterns of one field of a bucket's rules, in one glob set: one match per event
/// and field finds every rule whose patterns match, however many rules there are.
#[derive(Debug, Default)]
struct FieldIndex {
    set: GlobSet,
    /// Pattern index -> position of its rule in the bucket.
    owner: Vec<usize>,
}

impl FieldIndex {
    /// Fails when the patterns together are too much for one glob set (the regex engine's
    /// size limit): an engine without them would never match those rules, so the policy is
    /// refused instead.
    ///
    /// `equivalents` gives the patterns a pattern stands for besides itself (destinations:
    /// see [`equivalent_destinations`]).
    fn build(
        rules: &[Rule],
        bucket: &[usize],
        field: impl Fn(&Rule) -> Option<&Globs>,
        equivalents: impl Fn(&str) -> Vec<Glob>,
    ) -> Result<FieldIndex, String> {
        let mut builder = GlobSetBuilder::new();
        let mut owner = Vec::new();
        for (position, &index) in bucket.iter().enumerate() {
            for glob in field(&rules[index]).map_or(&[][..], |globs| globs.globs.as_slice()) {
                for glob in std::iter::once(glob.clone()).chain(equivalents(glob.glob())) {
                    builder.add(glob);
                    owner.push(position);
                }
            }
        }
        let set = builder.build().map_err(|error| {
            let mut ids: Vec<&str> = Vec::new();
            for &position in &owner {
                let id = rules[bucket[position]].id.as_str();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            format!("the patterns of rules {} cannot be compiled together: {error}", ids.join(", "))
        })?;
        Ok(FieldIndex { set, owner })
    }
}

/// The rules of one event kind, in priority order, with their glob sets.
#[derive(Debug, Default)]
struct Bucket {
    /// Indices into `Engine::rules`.
    rules: Vec<usize>,
    /// Per rule: the fields it has globs on.
    needs: Vec<u8>,
    /// The rules without globs (indices into `Engine::rules`): candidates for every event.
    always: Vec<usize>,
    path: FieldIndex,
    binary: FieldIndex,
    destination: FieldIndex,
}

/// Adds to `candidates` the rules of `bucket` whose globs all match the event: one glob set
/// match per field marks the rules a pattern of theirs matched (`hits`, by position, which
/// is left zeroed again), so the cost follows the rules that match, not the rules there are.
fn candidates(
    bucket: &Bucket,
    facts: &Facts<'_>,
    hits: &mut [u8],
    touched: &mut Vec<usize>,
    matched: &mut Vec<usize>,
    candidates: &mut Vec<usize>,
) {
    candidates.extend_from_slice(&bucket.always);
    let destination = facts.destination.as_ref().map(Destination::as_str);
    touched.clear();
    for (flag, index, value) in [
        (PATH, &bucket.path, facts.path),
        (BINARY, &bucket.binary, facts.binary),
        (DESTINATION, &bucket.destination, destination),
    ] {
        let Some(value) = value.filter(|_| !index.owner.is_empty()) else { continue };
        let names = if flag == DESTINATION { &[][..] } else { facts.aka };
        for value in std::iter::once(value).chain(names.iter().map(String::as_str)) {
            index.set.matches_into(value, matched);
            for &pattern in matched.iter() {
                let position = index.owner[pattern];
                if hits[position] == 0 {
                    touched.push(position);
                }
                hits[position] |= flag;
            }
        }
    }
    for &position in touched.iter() {
        let needs = bucket.needs[position];
        if hits[position] & needs == needs {
            candidates.push(bucket.rules[position]);
        }
        hits[position] = 0;
    }
}

/// Compiled rules.
#[derive(Debug, Default)]
pub struct Engine {
    /// Sorted by priority, highest first (stable: file order breaks ties).
    rules: Vec<Rule>,
    /// Per event kind: its rules in priority order.
    buckets: [Bucket; KINDS],
    /// Rules with `after`, for the sequence memory.
    sequences: Vec<usize>,
    /// Incidents this severe or worse suspend.
    suspend_on_severity: Option<Severity>,
    event_budget: Option<EventBudget>,
    /// The secrets as path patterns, for `unless` entries with `secret = false`.
    secrets: GlobSet,
}

impl Engine {
    pub fn new(mut rules: Vec<Rule>) -> Result<Engine, String> {
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.priority));
        let mut members: [Vec<usize>; KINDS] = Default::default();
        for (index, rule) in rules.iter().enumerate() {
            members[rule.kind.index()].push(index);
        }
        let mut buckets: [Bucket; KINDS] = Default::default();
        for (bucket, members) in buckets.iter_mut().zip(members) {
            let needs: Vec<u8> = members
                .iter()
                .map(|&index| {
                    let rule = &rules[index];
                    (if rule.path.is_some() { PATH } else { 0 })
                        | (if rule.binary.is_some() { BINARY } else { 0 })
                        | (if rule.destination.is_some() { DESTINATION } else { 0 })
                })
                .collect();
            *bucket = Bucket {
                always: members.iter().zip(&needs).filter(|(_, needs)| **needs == 0).map(|(index, _)| *index).collect(),
                needs,
                path: FieldIndex::build(&rules, &members, |rule| rule.path.as_ref(), |_| Vec::new())?,
                binary: FieldIndex::build(&rules, &members, |rule| rule.binary.as_ref(), |_| Vec::new())?,
                destination: FieldIndex::build(
                    &rules,
                    &members,
                    |rule| rule.destination.as_ref(),
                    equivalent_destinations,
                )?,
                rules: members,
            };
        }
        let sequences =
            rules.iter().enumerate().filter(|(_, rule)| rule.after.is_some()).map(|(index, _)| index).collect();
        Ok(Engine {
            rules,
            buckets,
            sequences,
            suspend_on_severity: None,
            event_budget: None,
            secrets: GlobSet::empty(),
        })
    }

    /// The engine for a loaded policy: its rules, its `suspend_on_severity` and its
    /// `event_budget`.
    pub fn from_rules(rules: &Rules) -> Result<Engine, String> {
        let mut engine = Engine::new(rules.rules.clone())?.suspend_on_severity(rules.suspend_on_severity);
        engine.event_budget = rules.event_budget;
        Ok(engine)
    }

    /// The secrets `unless = [{ secret = false }]` compares paths with: `~/X` stands for `X`
    /// in any home (`**/X`), and a directory for everything in it.
    pub fn with_secrets<'s>(mut self, secrets: impl IntoIterator<Item = &'s policy::Secret>) -> Engine {
        let mut builder = GlobSetBuilder::new();
        for secret in secrets {
            let raw = secret.path.to_string();
            let base = match raw.strip_prefix("~/").or_else(|| raw.strip_prefix("$HOME/")) {
                Some(rest) => format!("**/{rest}"),
                None => raw,
            };
            for pattern in [base.clone(), format!("{base}/**")] {
                // A secret's path was checked when it was parsed; a glob that still does not
                // compile cannot match a path either.
                if let Ok(glob) = Glob::new(&pattern) {
                    builder.add(glob);
                }
            }
        }
        self.secrets = builder.build().unwrap_or_else(|_| GlobSet::empty());
        self
    }

    /// Whether `path` is (inside) one of the secrets.
    pub fn is_secret(&self, path: &str) -> bool {
        self.secrets.is_match(path)
    }

    /// Rows an agent may write per window (`event_budget` in the rules).
    pub fn event_budget(&self) -> Option<crate::aggregate::Budget> {
        self.event_budget.map(|budget| crate::aggregate::Budget { rows: budget.rows, window: budget.window.0 })
    }

    /// Any deny or audit rule of `severity` or worse suspends instead.
    pub fn suspend_on_severity(mut self, severity: Option<Severity>) -> Engine {
        self.suspend_on_severity = severity;
        self
    }

    /// The rules, highest priority first.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether an exec rule names the program at `path` (by its `binary` or `path` globs),
    /// so that copies of it are recognised by content (`resolve`).
    pub fn names_program(&self, path: &str) -> bool {
        self.rules.iter().filter(|rule| rule.kind == Kind::Exec).any(|rule| {
            rule.binary.as_ref().is_some_and(|globs| globs.is_match(path))
                || rule.path.as_ref().is_some_and(|globs| globs.is_match(path))
        })
    }

    pub fn agent(&self, trust: Trust) -> AgentState {
        AgentState {
            trust,
            suspended: false,
            suspended_since: 0,
            rates: self.rules.iter().map(|rule| Vec::with_capacity(rule.count.unwrap_or(0) as usize)).collect(),
            rate_next: vec![0; self.rules.len()],
            targets: self
                .rules
                .iter()
                .map(|rule| Vec::with_capacity(if rule.distinct { rule.count.unwrap_or(0) as usize } else { 0 }))
                .collect(),
            seen: vec![None; self.rules.len()],
            hits: vec![0; self.rules.len()],
            touched: Vec::with_capacity(self.rules.len()),
            matched: Vec::with_capacity(self.rules.len()),
            candidates: Vec::with_capacity(self.rules.len()),
        }
    }

    /// The programs the kernel holds at their exec for an agent of `trust` until the engine
    /// has decided (`probes::Stops`): the names that exec rules which suspend or kill (or
    /// escalate to a suspension) end their patterns in, where that last component is a plain
    /// name (`**/curl`, `/usr/bin/nc`). A glob there (`**/py*`), or another name of the same
    /// file, is decided after the exec as before.
    pub fn stop_names(&self, trust: Trust) -> Vec<String> {
        let mut names: Vec<String> = self
            .rules
            .iter()
            .filter(|rule| rule.kind == Kind::Exec && rule.applies_to(trust))
            .filter(|rule| {
                matches!(rule.action, Action::Suspend | Action::Kill)
                    || (matches!(rule.action, Action::Deny | Action::Audit)
                        && self.suspend_on_severity.is_some_and(|severity| rule.severity >= severity))
            })
            .flat_map(|rule| [rule.binary.as_ref(), rule.path.as_ref()].into_iter().flatten())
            .flat_map(|globs| globs.patterns())
            .filter_map(|pattern| pattern.rsplit('/').next())
            .filter(|name| !name.is_empty() && !name.contains(['*', '?', '[', ']', '{', '}', '\\']))
            .map(str::to_owned)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Decides on `event` for `agent` at `now_ns` (the event's kernel time).
    pub fn decide(&self, agent: &mut AgentState, event: &Event, now_ns: u64) -> Decision<'_> {
        if agent.suspended && now_ns >= agent.suspended_since {
            return Decision { action: Action::Deny, rule: None, index: None };
        }
        // Rules about programs decide on the program the kernel ran (sched_process_exec,
        // from the kernel's own copy of the path), never only on the syscall's argument,
        // which the agent controls and a probe may fail to read. The syscall's exit repeats
        // a successful exec and is only recorded; a refused exec has no other event.
        let header = event.header();
        // Where a thread is, not something it did.
        if matches!(event, Event::Cwd { .. }) {
            return Decision { action: Action::Allow, rule: None, index: None };
        }
        // (Unless it names a program of its own: a dynamic loader's, found by `resolve`
        // from the arguments only this event carries.)
        if header.kind == governor_common::kind::EXEC
            && header.result == 0
            && matches!(header.source, governor_common::source::TRACEPOINT | governor_common::source::FENTRY)
            && matches!(event, Event::Exec { aka, .. } if aka.is_empty())
        {
            return Decision { action: Action::Allow, rule: None, index: None };
        }
        let facts = Facts::of(event);
        // Sequence memory first: this event may be the earlier half of a sequence.
        for &index in &self.sequences {
            if let Some(after) = &self.rules[index].after
                && facts.is(after.kind)
                && after.path.as_ref().is_none_or(|globs| {
                    facts.path.is_some_and(|path| globs.is_match(path))
                        || facts.aka.iter().any(|name| globs.is_match(name))
                })
            {
                agent.seen[index] = Some(now_ns);
            }
        }
        // The event's kind and, for a refusal, `denied`: the rules of both whose globs match,
        // in priority order (an index into `rules` is a rank); the first whose other
        // conditions hold decides.
        let mut candidates = std::mem::take(&mut agent.candidates);
        candidates.clear();
        for bucket in
            [Some(&self.buckets[facts.kind.index()]), facts.denied.then(|| &self.buckets[Kind::Denied.index()])]
                .into_iter()
                .flatten()
        {
            self::candidates(bucket, &facts, &mut agent.hits, &mut agent.touched, &mut agent.matched, &mut candidates);
        }
        candidates.sort_unstable();
        let mut decision = Decision { action: Action::Allow, rule: None, index: None };
        for &index in &candidates {
            let rule = &self.rules[index];
            if self.matches(rule, index, agent, &facts, now_ns) {
                let escalate = matches!(rule.action, Action::Deny | Action::Audit)
                    && self.suspend_on_severity.is_some_and(|severity| rule.severity >= severity);
                let action = if escalate { Action::Suspend } else { rule.action };
                decision = Decision { action, rule: Some(rule), index: Some(index) };
                break;
            }
        }
        agent.candidates = candidates;
        decision
    }

    /// The rule's conditions beyond its globs (already matched): trust, sequence, rate.
    fn matches(&self, rule: &Rule, index: usize, agent: &mut AgentState, facts: &Facts<'_>, now_ns: u64) -> bool {
        if !rule.applies_to(agent.trust) {
            return false;
        }
        if rule.unless.iter().any(|unless| self.exempts(unless, facts)) {
            return false;
        }
        if let Some(after) = &rule.after {
            let window = after.window.0.as_nanos() as u64;
            if agent.seen[index].is_none_or(|seen| now_ns.saturating_sub(seen) > window) {
                return false;
            }
        }
        if let (Some(count), Some(window), true) = (rule.count, rule.window, rule.distinct) {
            let window = window.0.as_nanos() as u64;
            let target = facts.target_hash();
            let seen = &mut agent.targets[index];
            seen.retain(|(time, _)| now_ns.saturating_sub(*time) <= window);
            if seen.iter().any(|(_, hash)| *hash == target) {
                return false;
            }
            seen.push((now_ns, target));
            if seen.len() < count as usize {
                return false;
            }
            seen.clear();
        } else if let (Some(count), Some(window)) = (rule.count, rule.window) {
            let window = window.0.as_nanos() as u64;
            let times = &mut agent.rates[index];
            // A ring of the last `count` match times: full and its oldest within the window
            // means `count` matches within the window.
            if times.len() < count as usize {
                times.push(now_ns);
                if times.len() < count as usize {
                    return false;
                }
            } else {
                let next = agent.rate_next[index];
                times[next] = now_ns;
                agent.rate_next[index] = (next + 1) % count as usize;
            }
            let oldest = times[agent.rate_next[index] % count as usize];
            if now_ns.saturating_sub(oldest) > window {
                return false;
            }
            // Fired: the next firing needs `count` new matches.
            times.clear();
            agent.rate_next[index] = 0;
        }
        true
    }
}

impl Engine {
    /// Whether `unless` leaves the event alone: every field it gives matches.
    fn exempts(&self, unless: &Unless, facts: &Facts<'_>) -> bool {
        let names = || facts.path.into_iter().chain(facts.aka.iter().map(String::as_str));
        unless.kind.as_ref().is_none_or(|kinds| kinds.contains(&facts.kind))
            && unless.access.is_none_or(|access| facts.access == Some(access))
            && unless.path.as_ref().is_none_or(|globs| names().any(|name| globs.is_match(name)))
            && unless.not_path.as_ref().is_none_or(|globs| !names().any(|name| globs.is_match(name)))
            && unless.secret.is_none_or(|secret| names().any(|name| self.secrets.is_match(name)) == secret)
    }
}

/// What rules look at, taken from an event once.
struct Facts<'a> {
    kind: Kind,
    /// For open and fs events: whether it only reads.
    access: Option<OpenAccess>,
    denied: bool,
    path: Option<&'a str>,
    binary: Option<&'a str>,
    /// Other names of the path or program (resolved, identified): matched like them.
    aka: &'a [String],
    destination: Option<Destination>,
}

/// `ADDR:PORT` formatted on the stack: deciding allocates nothing.
struct Destination {
    bytes: [u8; 64],
    len: usize,
}

impl Destination {
    fn new(addr: std::net::IpAddr, port: u16) -> Destination {
        use std::io::Write as _;
        let mut bytes = [0u8; 64];
        let mut cursor = std::io::Cursor::new(&mut bytes[..]);
        // The longest, an IPv6 address and a port, is 45 + 6 bytes: it always fits.
        let _ = write!(cursor, "{addr}:{port}");
        let len = usize::try_from(cursor.position()).unwrap_or(0);
        Destination { bytes, len }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl<'a> Facts<'a> {
    fn of(event: &'a Event) -> Facts<'a> {
        use governor_common::kind;
        let denied = crate::probes::events::refused(event.header());
        match event {
            Event::Exec { filename, aka, .. } => Facts {
                kind: Kind::Exec,
                access: None,
                denied,
                path: Some(filename),
                binary: Some(filename),
                aka,
                destination: None,
            },
            Event::Open { path, aka, flags, .. } => {
                // open(2): the access mode is the low two bits; O_CREAT, O_TRUNC and O_TMPFILE
                // change the filesystem whatever the mode. O_TMPFILE includes O_DIRECTORY's
                // bit, so it is compared whole.
                let flags = *flags as i32;
                let writes = flags & libc::O_ACCMODE != libc::O_RDONLY
                    || flags & (libc::O_CREAT | libc::O_TRUNC) != 0
                    || flags & libc::O_TMPFILE == libc::O_TMPFILE;
                let access = Some(if writes { OpenAccess::Write } else { OpenAccess::Read });
                Facts { kind: Kind::Open, access, denied, path: Some(path), binary: None, aka, destination: None }
            }
            Event::Fs { path, aka, .. } => Facts {
                kind: Kind::Fs,
                access: Some(OpenAccess::Write),
                denied,
                path: Some(path),
                binary: None,
                aka,
                destination: None,
            },
            // Never decided (`decide` returns first); no rule kind has it.
            Event::Cwd { .. } => Facts {
                kind: Kind::Denied,
                access: None,
                denied: false,
                path: None,
                binary: None,
                aka: &[],
                destination: None,
            },
            Event::Net { header, addr, port, .. } => Facts {
                // A refused listen has no destination: only rules on refusals see it.
                kind: match header.kind {
                    kind::SENDMSG => Kind::Sendmsg,
                    kind::LISTEN => Kind::Denied,
                    _ => Kind::Connect,
                },
                access: None,
                denied,
                path: None,
                binary: None,
                aka: &[],
                // An IPv4-mapped destination is the IPv4 one, as the socket hooks see it
                // (the tracepoint reports what the agent passed).
                destination: addr.map(|addr| Destination::new(addr.to_canonical(), *port)),
            },
        }
    }

    fn is(&self, kind: Kind) -> bool {
        self.kind == kind || (kind == Kind::Denied && self.denied)
    }

    /// A hash of what the event was aimed at (its path, or its destination), for rules that
    /// count distinct targets.
    fn target_hash(&self) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.path.hash(&mut hasher);
        self.destination.as_ref().map(Destination::as_str).hash(&mut hasher);
        hasher.finish()
    }
}

/// Files a path pattern may expand to before it is left to the engine.
const EXPAND_MAX: usize = 20_000;

impl Rules {
    /// The kernel's share of the `deny` rules that apply to an agent of `trust`: rules with
    /// no rate or sequence (those need the engine's memory), on exec, open, connect or
    /// sendmsg. Path patterns expand to the files that exist now (walked from their literal
    /// directory, at most `EXPAND_MAX`); destinations must be an address (IPv4 may end in
    /// `.*` octets) and a port or `*`. Without `by_inode` (no BPF LSM to refuse a file or a
    /// program by inode) path rules are not walked: the engine alone decides them, and a walk
    /// of every file a pattern covers (thousands under `/usr/bin`) would be paid on every
    /// launch for nothing.
    pub fn kernel_denies(&self, trust: Trust, by_inode: bool) -> KernelDenies {
        let mut out = KernelDenies::default();
        for rule in &self.rules {
            if rule.action != Action::Deny || rule.count.is_some() || rule.after.is_some() || !rule.applies_to(trust) {
                continue;
            }
            let mut userspace = |why: String| out.userspace_only.push(format!("rule '{}': {why}", rule.id));
            match rule.kind {
                Kind::Open | Kind::Exec if !by_inode => userspace("no BPF LSM to refuse it by inode".into()),
                Kind::Open | Kind::Exec => {
                    let globs = match (&rule.path, &rule.binary) {
                        (Some(globs), None) | (None, Some(globs)) => globs,
                        (None, None) => {
                            userspace("matches every path".into());
                            continue;
                        }
                        (Some(_), Some(_)) => {
                            userspace("has both path and binary".into());
                            continue;
                        }
                    };
                    match expand(globs) {
                        Ok(paths) => {
                            let target = if rule.kind == Kind::Open { &mut out.open } else { &mut out.exec };
                            target.extend(paths);
                        }
                        Err(why) => userspace(why),
                    }
                }
                Kind::Connect | Kind::Sendmsg => match &rule.destination {
                    Some(globs) => {
                        for pattern in globs.patterns() {
                            match destination(pattern) {
                                Some(net) => out.net.push(net),
                                None => userspace(format!("destination '{pattern}' is not an address and port")),
                            }
                        }
                    }
                    None => userspace("matches every destination".into()),
                },
                // Already refused by the kernel: nothing to add there.
                Kind::Denied | Kind::Fs => {}
            }
        }
        out
    }
}

/// The files (and directories) that exist now and match `globs`, walking each pattern from
/// its literal leading directory without following symlinks.
fn expand(globs: &Globs) -> Result<Vec<std::path::PathBuf>, String> {
    let mut found = Vec::new();
    let mut visited = 0usize;
    for pattern in globs.patterns() {
        if !pattern.starts_with('/') {
            return Err(format!("pattern '{pattern}' is not an absolute path"));
        }
        let literal: Vec<&str> =
            pattern.split('/').take_while(|part| !part.contains(['*', '?', '[', '{', '\\'])).collect();
        let root = std::path::PathBuf::from(if literal.len() <= 1 { "/".to_owned() } else { literal.join("/") });
        if root == std::path::Path::new("/") && pattern != "/" {
            return Err(format!("pattern '{pattern}' would walk the whole file system"));
        }
        let mut stack = vec![root];
        while let Some(path) = stack.pop() {
            visited += 1;
            if visited > EXPAND_MAX {
                return Err(format!("pattern '{pattern}' covers more than {EXPAND_MAX} files"));
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if globs.is_match(&path.to_string_lossy()) && !meta.file_type().is_symlink() {
                found.push(path.clone());
            }
            if meta.is_dir()
                && let Ok(entries) = std::fs::read_dir(&path)
            {
                stack.extend(entries.flatten().map(|entry| entry.path()));
            }
        }
    }
    Ok(found)
}

/// `ADDR:PORT` as a network rule: a literal address, or IPv4 ending in `.*` octets; a port
/// or `*`.
fn destination(pattern: &str) -> Option<crate::probes::NetRule> {
    let (addr, port) = pattern.rsplit_once(':')?;
    let port = if port == "*" { 0 } else { port.parse().ok().filter(|port| *port != 0)? };
    if let Ok(addr) = addr.parse::<std::net::IpAddr>() {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        return Some(crate::probes::NetRule { addr, prefix, port });
    }
    let fixed: Vec<&str> = addr.split('.').take_while(|octet| *octet != "*").collect();
    let wild = addr.split('.').count() - fixed.len();
    if wild == 0 || fixed.len() + wild != 4 || addr.split('.').skip(fixed.len()).any(|octet| octet != "*") {
        return None;
    }
    let mut octets = [0u8; 4];
    for (slot, octet) in octets.iter_mut().zip(&fixed) {
        *slot = octet.parse().ok()?;
    }
    Some(crate::probes::NetRule {
        addr: std::net::IpAddr::from(octets),
        prefix: u8::try_from(fixed.len() * 8).ok()?,
        port,
    })
}

/// The patterns that a destination pattern stands for besides itself, so that the engine
/// matches what the kernel denies for it: the other forms of the networks
/// `probes::destinations::deny_entries` puts into the socket hooks' map (every local address
/// for a local one; the IPv4 form of a mapped one). Empty for a pattern the kernel does not
/// take (see [`destination`]).
fn equivalent_destinations(pattern: &str) -> Vec<Glob> {
    let Some(rule) = destination(pattern) else { return Vec::new() };
    let port = pattern.rsplit_once(':').map_or("*", |(_, port)| port);
    crate::probes::destinations::deny_entries(&[rule])
        .into_iter()
        .filter(|entry| *entry != rule)
        .filter_map(|entry| address_glob(entry.addr, entry.prefix))
        .filter_map(|addr| Glob::new(&format!("{addr}:{port}")).ok())
        .collect()
}

/// A network as the address part of a destination glob: IPv4 on octet boundaries (`127.*.*.*`)
/// or a single address; `None` for any other network (no glob says it).
fn address_glob(addr: std::net::IpAddr, prefix: u8) -> Option<String> {
    match addr {
        std::net::IpAddr::V4(v4) if prefix.is_multiple_of(8) && prefix <= 32 => {
            let fixed = usize::from(prefix / 8);
            let octets: Vec<String> = v4
                .octets()
                .iter()
                .enumerate()
                .map(|(index, octet)| if index < fixed { octet.to_string() } else { "*".into() })
                .collect();
            Some(octets.join("."))
        }
        std::net::IpAddr::V6(v6) if prefix == 128 => Some(v6.to_string()),
        _ => None,
    }
}

/// The shipped rules (`policies/rules.toml`), built in like the rings.
pub const BUILT_IN_RULES: &str = include_str!("../../policies/rules.toml");

/// The rules: `rules.toml` of the ring directory when it has one, else the shipped rules,
/// then the `[[rule]]`s of the `--policy` overlays; and the engine compiled from them (a
/// policy the engine cannot hold is refused here, when loaded).
pub fn load(source: &policy::RingSource, overlays: &[policy::Overlay]) -> Result<(Rules, Engine), policy::Error> {
    let (rules, path) = load_rules(source, overlays)?;
    let secrets = source.secrets()?;
    let engine = Engine::from_rules(&rules)
        .map_err(|message| policy::Error::Invalid { path, message })?
        .with_secrets(secrets.iter().chain(overlays.iter().flat_map(|overlay| &overlay.secret)));
    Ok((rules, engine))
}

/// The rules `load` compiles, parsed and validated, and the file they came from.
pub fn load_rules(
    source: &policy::RingSource,
    overlays: &[policy::Overlay],
) -> Result<(Rules, std::path::PathBuf), policy::Error> {
    let installed = match source {
        policy::RingSource::Dir(dir) => Some(dir.join("rules.toml")).filter(|path| path.exists()),
        policy::RingSource::BuiltIn => None,
    };
    let (path, text) = match installed {
        Some(path) => {
            let text =
                std::fs::read_to_string(&path).map_err(|source| policy::Error::Read { path: path.clone(), source })?;
            (path, text)
        }
        None => (std::path::PathBuf::from("policies/rules.toml"), BUILT_IN_RULES.to_owned()),
    };
    let file: RulesFile = policy::parse(&path, &text)?;
    file.validate().map_err(|message| policy::Error::Invalid { path: path.clone(), message })?;
    let mut rules = file.rule;
    if let policy::RingSource::Dir(dir) = source {
        for (_, drop_in) in drop_ins(dir)? {
            rules.extend(drop_in.rule);
        }
    }
    rules.extend(overlays.iter().flat_map(|overlay| overlay.rule.iter().cloned()));
    Ok((Rules { rules, suspend_on_severity: file.suspend_on_severity, event_budget: file.event_budget }, path))
}

/// The drop-ins of a ring directory, `rules.d/*.toml` in name order: `[[rule]]`s added to
/// `rules.toml`'s (what `governor policy add` writes). Each is validated as `rules.toml` is.
pub fn drop_ins(dir: &std::path::Path) -> Result<Vec<(std::path::PathBuf, RulesFile)>, policy::Error> {
    let drop_in_dir = dir.join("rules.d");
    let Ok(entries) = std::fs::read_dir(&drop_in_dir) else { return Ok(Vec::new()) };
    let mut paths: Vec<std::path::PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(&path).map_err(|source| policy::Error::Read { path: path.clone(), source })?;
        let file: RulesFile = policy::parse(&path, &text)?;
        file.validate().map_err(|message| policy::Error::Invalid { path: path.clone(), message })?;
        files.push((path, file));
    }
    Ok(files)
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use governor_common::{EventHeader, source, verdict};

    use super::*;

    fn rules(text: &str) -> Engine {
        let file: RulesFile = toml::from_str(text).unwrap_or_else(|error| panic!("{error}"));
        file.validate().unwrap_or_else(|error| panic!("{error}"));
        Engine::new(file.rule).unwrap_or_else(|error| panic!("{error}"))
    }

    /// An open of `path` with `result`, as the probes would report it (also for the
    /// property tests).
    pub(super) fn open(path: &str, result: i32) -> Event {
        let header = EventHeader {
            kind: governor_common::kind::OPEN,
            result,
            ktime_ns: 0,
            pid: 1,
            tgid: 1,
            uid: 0,
            verdict: verdict::OBSERVED,
            source: source::TRACEPOINT,
            cgroup_id: 1,
        };
        Event::Open { header, flags: 0, dirfd: -100, dev: 0, ino: 0, path: path.into(), aka: Vec::new() }
    }

    /// A completed exec of `path`, as `sched_process_exec` reports it.
    pub(super) fn exec(path: &str) -> Event {
        let Event::Open { mut header, .. } = open(path, 0) else { unreachable!() };
        header.kind = governor_common::kind::EXECED;
        Event::Exec { header, filename: path.into(), argv: vec![], file: None, aka: vec![] }
    }

    /// The execve syscall's own event, with its result.
    fn exec_syscall(path: &str, result: i32) -> Event {
        let Event::Open { mut header, .. } = open(path, result) else { unreachable!() };
        header.kind = governor_common::kind::EXEC;
        Event::Exec { header, filename: path.into(), argv: vec![], file: None, aka: vec![] }
    }

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn highest_priority_first_and_first_match_wins() {
        let engine = rules(
            r#"
            [[rule]]
            id = "audit-etc"
            priority = 1
            kind = "open"
            path = ["/etc/**"]
            action = "audit"
            severity = "low"
            reason = "config"

            [[rule]]
            id = "deny-passwd"
            priority = 10
            kind = "open"
            path = ["/etc/passwd"]
            action = "deny"
            severity = "medium"
            reason = "accounts"
            "#,
        );
        let mut agent = engine.agent(Trust::Low);
        let decide = |agent: &mut AgentState, path| {
            let decision = engine.decide(agent, &open(path, 0), 0);
            (decision.action, decision.rule.map(|rule| rule.id.clone()))
        };
        assert_eq!(decide(&mut agent, "/etc/passwd"), (Action::Deny, Some("deny-passwd".into())));
        assert_eq!(decide(&mut agent, "/etc/hosts"), (Action::Audit, Some("audit-etc".into())));
        assert_eq!(decide(&mut agent, "/usr/lib/libc.so"), (Action::Allow, None));
    }

    #[test]
    fn a_denied_rule_outranks_a_lower_priority_rule_of_the_events_own_kind() {
        let engine = rules(
            r#"
            [[rule]]
            id = "any-open"
            priority = -100
            kind = "open"
            action = "audit"
            severity = "low"
            reason = "r"

            [[rule]]
            id = "refusals"
            priority = 100
            kind = "denied"
            action = "kill"
            severity = "high"
            reason = "r"
            "#,
        );
        let mut agent = engine.agent(Trust::Low);
        let rule = |decision: Decision<'_>| decision.rule.map(|rule| rule.id.clone());
        assert_eq!(rule(engine.decide(&mut agent, &open("/etc/shadow", -13), 0)).as_deref(), Some("refusals"));
        assert_eq!(rule(engine.decide(&mut agent, &open("/etc/hosts", 0), 0)).as_deref(), Some("any-open"));
    }

    #[test]
    fn trust_conditions_bound_a_rule() {
        let engine = rules(
            r#"
            [[rule]]
            id = "mid"
            kind = "exec"
            binary = ["**/curl"]
            trust_at_least = "medium"
            trust_below = "admin"
            action = "audit"
            severity = "low"
            reason = "downloads"
            "#,
        );
        for (trust, expected) in [
            (Trust::Low, Action::Allow),
            (Trust::Medium, Action::Audit),
            (Trust::High, Action::Audit),
            (Trust::Admin, Action::Allow),
        ] {
            let mut agent = engine.agent(trust);
            assert_eq!(engine.decide(&mut agent, &exec("/usr/bin/curl"), 0).action, expected, "{trust}");
        }
    }

    #[test]
    fn a_rate_fires_on_the_count_th_match_within_the_window_and_then_resets() {
        let engine = rules(
            r#"
            [[rule]]
            id = "repeated-denials"
            kind = "denied"
            count = 5
            window = "10s"
            action = "suspend"
            severity = "high"
            reason = "probing"
            "#,
        );
        let mut agent = engine.agent(Trust::Low);
        let denied = open("/etc/shadow", -13);
        let actions: Vec<Action> = (0..5).map(|i| engine.decide(&mut agent, &denied, i * SECOND).action).collect();
        assert_eq!(actions, [Action::Allow, Action::Allow, Action::Allow, Action::Allow, Action::Suspend]);
        // After firing, five new denials are needed.
        assert_eq!(engine.decide(&mut agent, &denied, 5 * SECOND).action, Action::Allow);
        // Spread wider than the window: never fires.
        let mut slow = engine.agent(Trust::Low);
        let slow_actions: Vec<Action> =
            (0..10).map(|i| engine.decide(&mut slow, &denied, i * 3 * SECOND).action).collect();
        assert!(slow_actions.iter().all(|action| *action == Action::Allow), "{slow_actions:?}");
        // Allowed opens, and failures that are not refusals, are not denials.
        let mut quiet = engine.agent(Trust::Low);
        assert!((0..10).all(|i| engine.decide(&mut quiet, &open("/etc/hosts", 0), i).action == Action::Allow));
        assert!((0..10).all(|i| engine.decide(&mut quiet, &open("/nope", -libc::ENOENT), i).action == Action::Allow));
    }

    #[test]
    fn a_sequence_needs_its_earlier_event_within_the_window() {
        let engine = rules(
            r#"
            [[rule]]
            id = "exfiltration"
            kind = "exec"
            binary = ["**/curl", "**/nc"]
            action = "suspend"
            severity = "critical"
            reason = "a network tool after a secret was read"
            after = { kind = "open", path = ["**/.ssh/**"], window = "60s" }
            "#,
        );
        let mut agent = engine.agent(Trust::Medium);
        assert_eq!(engine.decide(&mut agent, &exec("/usr/bin/curl"), 0).action, Action::Allow);
        engine.decide(&mut agent, &open("/home/ann/.ssh/id_ed25519", -13), SECOND);
        assert_eq!(engine.decide(&mut agent, &exec("/usr/bin/curl"), 30 * SECOND).action, Action::Suspend);
        assert_eq!(engine.decide(&mut agent, &exec("/usr/bin/curl"), 120 * SECOND).action, Action::Allow);
    }

    #[test]
    fn a_completed_exec_is_not_decided_twice() {
        let engine = rules(
            r#"
            [[rule]]
            id = "no-curl"
            kind = "exec"
            binary = ["**/curl"]
            action = "kill"
            severity = "high"
            reason = "r"
            "#,
        );
        let mut agent = engine.agent(Trust::Low);
        // The kernel's view decides; the syscall's exit of the same exec repeats it.
        assert_eq!(engine.decide(&mut agent, &exec("/usr/bin/curl"), 0).action, Action::Kill);
        assert_eq!(engine.decide(&mut agent, &exec_syscall("/usr/bin/curl", 0), 0).action, Action::Allow);
        // A refused exec has no sched_process_exec: its syscall event is decided.
        let refused = exec_syscall("/usr/bin/curl", -libc::EACCES);
        assert_eq!(engine.decide(&mut agent, &refused, 0).action, Action::Kill);
        // A program known by another name (a symlink, a copy) matches by that name.
        let Event::Exec { header, argv, .. } = exec("/tmp/x/renamed") else { unreachable!() };
        let copy = Event::Exec {
            header,
            filename: "/tmp/x/renamed".into(),
            argv,
            file: None,
            aka: vec!["/usr/bin/curl".into()],
        };
        assert_eq!(engine.decide(&mut agent, &copy, 0).action, Action::Kill);
        assert_eq!(engine.decide(&mut agent, &exec("/usr/bin/true"), 0).action, Action::Allow);
    }

    #[test]
    fn a_suspended_agent_is_denied_everything() {
        let engine = rules("");
        let mut agent = engine.agent(Trust::Admin);
        agent.suspended = true;
        agent.suspended_since = 10;
        let decision = engine.decide(&mut agent, &open("/tmp/x", 0), 10);
        assert_eq!((decision.action, decision.rule.map(|rule| rule.id.as_str())), (Action::Deny, None));
        // An event from before the suspension, still in flight, is decided as usual.
        assert_eq!(engine.decide(&mut agent, &open("/tmp/x", 0), 9).action, Action::Allow);
    }

    #[test]
    fn impossible_and_malformed_rules_are_refused() {
        let parse = |text: &str| {
            toml::from_str::<RulesFile>(text).map_err(|e| e.to_string()).and_then(|file| file.validate().map(|()| file))
        };
        let base = "id = \"x\"\nkind = \"open\"\naction = \"deny\"\nseverity = \"low\"\nreason = \"r\"\n";
        assert!(
            parse(&format!("[[rule]]\n{base}trust_at_least = \"high\"\ntrust_below = \"medium\"\n"))
                .is_err_and(|e| e.contains("match no trust level"))
        );
        assert!(
            parse(&format!("[[rule]]\n{base}count = 3\n")).is_err_and(|e| e.contains("count and window go together"))
        );
        assert!(parse(&format!("[[rule]]\n{base}path = [\"a[\"]\n")).is_err_and(|e| e.contains("invalid glob")));
        assert!(
            parse(&format!("[[rule]]\n{base}window = \"10 parsecs\"\ncount = 2\n"))
                .is_err_and(|e| e.contains("not a duration") || e.contains("unit"))
        );
        assert!(
            parse(&format!("[[rule]]\n{base}destination = [\"1.2.3.4:*\"]\n"))
                .is_err_and(|e| e.contains("no destination"))
        );
        assert!(
            parse("[[rule]]\nid = \"x\"\nkind = \"teleport\"\naction = \"deny\"\nseverity = \"low\"\nreason = \"r\"\n")
                .is_err_and(|e| e.contains("teleport"))
        );
    }

    #[test]
    fn deny_rules_the_kernel_can_enforce_are_derived_for_the_agents_trust() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let base = dir.path().display();
        for file in ["data/a.key", "data/sub/b.key", "data/c.txt"] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap_or(dir.path())).unwrap_or_else(|error| panic!("{error}"));
            std::fs::write(&path, "x").unwrap_or_else(|error| panic!("{error}"));
        }
        let text = format!(
            r#"
            [[rule]]
            id = "keys"
            kind = "open"
            path = ["{base}/data/**/*.key"]
            action = "deny"
            severity = "high"
            reason = "r"

            [[rule]]
            id = "metadata"
            kind = "connect"
            destination = ["169.254.169.254:*", "10.1.*.*:443", "fd00::1:22", "*.example.com:443"]
            action = "deny"
            severity = "high"
            reason = "r"

            [[rule]]
            id = "only-low"
            kind = "exec"
            binary = ["{base}/data/c.txt"]
            trust_below = "medium"
            action = "deny"
            severity = "low"
            reason = "r"

            [[rule]]
            id = "rate"
            kind = "open"
            path = ["{base}/data/c.txt"]
            count = 2
            window = "1s"
            action = "deny"
            severity = "low"
            reason = "r"

            [[rule]]
            id = "everywhere"
            kind = "exec"
            binary = ["**/curl"]
            action = "deny"
            severity = "low"
            reason = "r"
            "#
        );
        let file: RulesFile = toml::from_str(&text).unwrap_or_else(|error| panic!("{error}"));
        let rules = Rules { rules: file.rule, suspend_on_severity: None, event_budget: None };
        let medium = rules.kernel_denies(Trust::Medium, true);
        let mut open = medium.open.clone();
        open.sort();
        assert_eq!(open, [dir.path().join("data/a.key"), dir.path().join("data/sub/b.key")]);
        assert!(medium.exec.is_empty(), "{:?}", medium.exec);
        let net: Vec<String> =
            medium.net.iter().map(|rule| format!("{}/{}:{}", rule.addr, rule.prefix, rule.port)).collect();
        assert_eq!(net, ["169.254.169.254/32:0", "10.1.0.0/16:443", "fd00::1/128:22"]);
        assert_eq!(
            medium.userspace_only,
            [
                "rule 'metadata': destination '*.example.com:443' is not an address and port",
                "rule 'everywhere': pattern '**/curl' is not an absolute path",
            ]
        );
        assert_eq!(rules.kernel_denies(Trust::Low, true).exec, [dir.path().join("data/c.txt")]);
        // Without BPF LSM nothing is walked: the engine decides path rules alone.
        let tracepoint = rules.kernel_denies(Trust::Medium, false);
        assert!(tracepoint.open.is_empty() && tracepoint.exec.is_empty(), "{tracepoint:?}");
        assert_eq!(tracepoint.net, medium.net);
        assert!(tracepoint.userspace_only.iter().any(|line| line.ends_with("no BPF LSM to refuse it by inode")));
    }

    /// A connect to `addr:port`, as the tracepoint reports it (the agent's own address).
    fn connect(addr: &str, port: u16) -> Event {
        let Event::Open { mut header, .. } = open("", 0) else { unreachable!() };
        header.kind = governor_common::kind::CONNECT;
        let addr: std::net::IpAddr = addr.parse().unwrap_or_else(|error| panic!("{addr}: {error}"));
        let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 } as u16;
        Event::Net { header, family, port, sock_type: libc::SOCK_STREAM as u16, addr: Some(addr), path: String::new() }
    }

    #[test]
    fn a_destination_rule_matches_what_the_kernel_denies_for_it() {
        let engine = rules(
            r#"
            [[rule]]
            id = "local"
            kind = "connect"
            destination = ["127.0.0.1:443"]
            action = "deny"
            severity = "low"
            reason = "r"

            [[rule]]
            id = "metadata"
            kind = "connect"
            destination = ["169.254.169.254:*", "::ffff:100.100.100.200:80"]
            action = "deny"
            severity = "low"
            reason = "r"
            "#,
        );
        let mut agent = engine.agent(Trust::High);
        let mut rule = |addr: &str, port: u16| {
            engine.decide(&mut agent, &connect(addr, port), 0).rule.map(|rule| rule.id.clone()).unwrap_or_default()
        };
        // Every address that reaches the local host's listeners, in every form.
        for addr in
            ["127.0.0.1", "127.0.0.2", "127.255.255.254", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1", "::ffff:0.0.0.0"]
        {
            assert_eq!(rule(addr, 443), "local", "{addr}");
        }
        assert_eq!(rule("127.0.0.1", 444), "");
        assert_eq!(rule("128.0.0.1", 443), "");
        // A mapped destination is the IPv4 one; a rule written mapped is the IPv4 one too.
        assert_eq!(rule("::ffff:169.254.169.254", 80), "metadata");
        assert_eq!(rule("100.100.100.200", 80), "metadata");
        assert_eq!(rule("::ffff:100.100.100.200", 80), "metadata");
        assert_eq!(rule("100.100.100.200", 81), "");
    }

    #[test]
    fn the_shipped_rules_parse() {
        let (loaded, _) = load(&policy::RingSource::BuiltIn, &[]).unwrap_or_else(|error| panic!("{error}"));
        assert!(loaded.rules.iter().any(|rule| rule.id == "repeated-kernel-denials"));
        assert!(loaded.rules.iter().any(|rule| rule.id == "network-tool-after-secret"));
        assert_eq!(loaded.suspend_on_severity, Some(Severity::Critical));
    }

    /// A refused open of `path` with open(2) `flags`.
    fn open_with(path: &str, flags: i32) -> Event {
        let Event::Open { header, dirfd, dev, ino, .. } = open(path, -libc::EACCES) else { unreachable!() };
        Event::Open { header, flags: flags as u32, dirfd, dev, ino, path: path.into(), aka: Vec::new() }
    }

    /// The action of the shipped rules on each event in turn, 100 ms apart, in ring `trust`.
    fn shipped(trust: Trust, events: &[Event]) -> Vec<(Action, Option<String>)> {
        let (_, engine) = load(&policy::RingSource::BuiltIn, &[]).unwrap_or_else(|error| panic!("{error}"));
        let mut agent = engine.agent(trust);
        events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                let decision = engine.decide(&mut agent, event, i as u64 * SECOND / 10);
                (decision.action, decision.rule.map(|rule| rule.id.clone()))
            })
            .collect()
    }

    fn suspended(decisions: &[(Action, Option<String>)]) -> Option<String> {
        decisions.iter().find(|(action, _)| *action == Action::Suspend).and_then(|(_, rule)| rule.clone())
    }

    #[test]
    fn the_shipped_rules_leave_benign_refusals_alone() {
        // pip, as issue reports had it: rustc looked up along PATH, /etc and the home
        // listed, PIP_FIND_LINKS unreadable, bytecode and cache writes refused.
        let mut benign = Vec::new();
        for _ in 0..4 {
            benign.push(exec_syscall("/root/.cargo/bin/rustc", -libc::EACCES));
            benign.push(open_with("/etc", libc::O_RDONLY | libc::O_DIRECTORY));
            benign.push(open_with("/root", libc::O_RDONLY | libc::O_DIRECTORY));
            benign.push(open_with("/opt/wheels", libc::O_RDONLY | libc::O_DIRECTORY));
            benign.push(open_with("/home/ann/.config/pip/pip.conf", libc::O_RDONLY));
            benign.push(open_with(
                "/usr/lib/python3/six/__pycache__/six.cpython-311.pyc",
                libc::O_WRONLY | libc::O_CREAT,
            ));
            let mut mkdir = open_with("/home/ann/.cache/pip", 0);
            if let Event::Open { header, path, aka, .. } = mkdir {
                mkdir = Event::Fs { header, syscall: 83, dirfd: -100, path, dirfd2: -100, path2: String::new(), aka };
            }
            benign.push(mkdir);
        }
        for event in &benign[..7] {
            let one: Vec<Event> = (0..5).map(|_| event.clone()).collect();
            assert_eq!(suspended(&shipped(Trust::Medium, &one)), None, "{event:?}");
        }
        assert_eq!(suspended(&shipped(Trust::Medium, &benign)), None);
    }

    #[test]
    fn the_shipped_rules_still_suspend_probing() {
        // The same secret, five times.
        let secret: Vec<Event> = (0..5).map(|_| open_with("/home/ann/.ssh/id_ed25519", libc::O_RDONLY)).collect();
        assert_eq!(suspended(&shipped(Trust::Low, &secret)).as_deref(), Some("repeated-kernel-denials"));
        let shadow: Vec<Event> = (0..5).map(|_| open_with("/etc/shadow", libc::O_RDONLY)).collect();
        assert_eq!(suspended(&shipped(Trust::Medium, &shadow)).as_deref(), Some("repeated-kernel-denials"));
        // Writes outside the sandbox.
        let writes: Vec<Event> =
            (0..5).map(|i| open_with(&format!("/srv/out{i}"), libc::O_WRONLY | libc::O_CREAT)).collect();
        assert_eq!(suspended(&shipped(Trust::Low, &writes)).as_deref(), Some("repeated-kernel-denials"));
        // Other processes.
        let procs: Vec<Event> = (0..5).map(|i| open_with(&format!("/proc/{}/environ", 100 + i), 0)).collect();
        assert_eq!(suspended(&shipped(Trust::Medium, &procs)).as_deref(), Some("repeated-kernel-denials"));
        // A scan: twenty distinct unreadable files that are no secret; the same one twenty
        // times is a tool retrying, not a scan.
        let scan: Vec<Event> = (0..20).map(|i| open_with(&format!("/srv/data/{i}"), libc::O_RDONLY)).collect();
        assert_eq!(suspended(&shipped(Trust::Medium, &scan)).as_deref(), Some("scanning-unreadable-paths"));
        let retry: Vec<Event> = (0..20).map(|_| open_with("/srv/data/0", libc::O_RDONLY)).collect();
        assert_eq!(suspended(&shipped(Trust::Medium, &retry)), None);
        // high is trusted with its refusals.
        assert_eq!(suspended(&shipped(Trust::High, &shadow)), None);
    }

    #[test]
    fn a_severe_enough_incident_suspends_whatever_its_action() {
        let text = r#"
            [[rule]]
            id = "critical-audit"
            kind = "open"
            path = ["/etc/shadow"]
            action = "audit"
            severity = "critical"
            reason = "r"

            [[rule]]
            id = "high-deny"
            kind = "open"
            path = ["/etc/gshadow"]
            action = "deny"
            severity = "high"
            reason = "r"

            [[rule]]
            id = "critical-kill"
            kind = "exec"
            binary = ["**/nc"]
            action = "kill"
            severity = "critical"
            reason = "r"
            "#;
        let file: RulesFile = toml::from_str(text).unwrap_or_else(|error| panic!("{error}"));
        let engine = Engine::new(file.rule)
            .unwrap_or_else(|error| panic!("{error}"))
            .suspend_on_severity(Some(Severity::Critical));
        let mut agent = engine.agent(Trust::Low);
        assert_eq!(engine.decide(&mut agent, &open("/etc/shadow", 0), 0).action, Action::Suspend);
        assert_eq!(engine.decide(&mut agent, &open("/etc/gshadow", 0), 0).action, Action::Deny);
        assert_eq!(engine.decide(&mut agent, &exec("/usr/bin/nc"), 0).action, Action::Kill);
        // Without the setting each rule's own action stands.
        let plain = rules(text);
        let mut agent = plain.agent(Trust::Low);
        assert_eq!(plain.decide(&mut agent, &open("/etc/shadow", 0), 0).action, Action::Audit);
    }
}
