//! Property tests of the engine, in the crate: generated rule sets and event streams are
//! decided by the engine and by a plain model written here, and the two must agree.
//! Priority order and first match wins, trust bounds, rate windows, sequences, suspended
//! agents and escalation by severity.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::{
    tests::{exec, open},
    *,
};

const SECOND: u64 = 1_000_000_000;

const PATTERNS: [&str; 5] = ["/etc/**", "/etc/passwd", "/home/*/.ssh/**", "**/*.key", "/tmp/*"];
const PATHS: [&str; 8] = [
    "/etc/passwd",
    "/etc/hosts",
    "/etc/ssl/private/site.key",
    "/home/ann/.ssh/id_rsa",
    "/srv/tls/server.key",
    "/tmp/x",
    "/tmp/a/b",
    "/usr/lib/libc.so",
];
const ACTIONS: [(&str, Action); 5] = [
    ("allow", Action::Allow),
    ("deny", Action::Deny),
    ("audit", Action::Audit),
    ("suspend", Action::Suspend),
    ("kill", Action::Kill),
];
const SEVERITIES: [(&str, Severity); 4] =
    [("low", Severity::Low), ("medium", Severity::Medium), ("high", Severity::High), ("critical", Severity::Critical)];

fn parse(text: &str) -> RulesFile {
    let file: RulesFile = toml::from_str(text).unwrap_or_else(|error| panic!("{error}\n{text}"));
    file.validate().unwrap_or_else(|error| panic!("{error}\n{text}"));
    file
}

/// `PATTERNS`, compiled once by the reference glob implementation (the properties are about
/// selection, not globbing).
static MATCHERS: std::sync::LazyLock<Vec<globset::GlobMatcher>> = std::sync::LazyLock::new(|| {
    PATTERNS
        .iter()
        .map(|pattern| globset::Glob::new(pattern).unwrap_or_else(|error| panic!("{error}")).compile_matcher())
        .collect()
});

/// One generated rule: its kind (`open` or, as noise that must never decide an open, `exec`),
/// priority, pattern, action, severity and trust bounds (indices into `Trust::ALL`).
#[derive(Clone, Debug)]
struct GenRule {
    exec: bool,
    priority: i32,
    pattern: usize,
    action: usize,
    severity: usize,
    at_least: Option<usize>,
    below: Option<usize>,
}

/// Trust bounds the engine accepts: `at_least < below` when both are set.
fn bounds() -> impl Strategy<Value = (Option<usize>, Option<usize>)> {
    (proptest::option::of(0usize..4), proptest::option::of(0usize..4))
        .prop_map(|(at_least, below)| (at_least, below.filter(|&below| at_least.is_none_or(|least| least < below))))
}

/// Mostly open rules; one in five an exec rule. Priorities from a narrow range now and then,
/// so that ties are common.
fn gen_rule() -> impl Strategy<Value = GenRule> {
    (
        prop::bool::weighted(0.2),
        prop_oneof![-100i32..100, -2i32..2],
        0..PATTERNS.len(),
        0..ACTIONS.len(),
        0..SEVERITIES.len(),
        bounds(),
    )
        .prop_map(|(exec, priority, pattern, action, severity, (at_least, below))| GenRule {
            exec,
            priority,
            pattern,
            action,
            severity,
            at_least,
            below,
        })
}

fn toml_of(rules: &[GenRule]) -> String {
    let mut text = String::new();
    for (index, rule) in rules.iter().enumerate() {
        // An exec rule's `path` is the program's: only the kind keeps it from deciding opens.
        let kind = if rule.exec { "exec" } else { "open" };
        text.push_str(&format!(
            "[[rule]]\nid = \"r{index}\"\npriority = {}\nkind = \"{kind}\"\npath = [\"{}\"]\naction = \"{}\"\n\
             severity = \"{}\"\nreason = \"r\"\n",
            rule.priority, PATTERNS[rule.pattern], ACTIONS[rule.action].0, SEVERITIES[rule.severity].0,
        ));
        if let Some(least) = rule.at_least {
            text.push_str(&format!("trust_at_least = \"{}\"\n", Trust::ALL[least]));
        }
        if let Some(below) = rule.below {
            text.push_str(&format!("trust_below = \"{}\"\n", Trust::ALL[below]));
        }
    }
    text
}

/// The model of an open (that the kernel allowed) by an agent of `trust`: of the open rules
/// that match, the one of highest priority, the earliest in the file among equals.
fn model_open(rules: &[GenRule], path: &str, trust: usize) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (index, rule) in rules.iter().enumerate() {
        let matches = !rule.exec
            && MATCHERS[rule.pattern].is_match(path)
            && rule.at_least.is_none_or(|least| trust >= least)
            && rule.below.is_none_or(|below| trust < below);
        // Strictly greater: a later rule of equal priority does not displace an earlier one.
        if matches && best.is_none_or(|best| rule.priority > rules[best].priority) {
            best = Some(index);
        }
    }
    best
}

/// What the engine decided: the action and the id of the rule.
fn outcome(decision: Decision<'_>) -> (Action, Option<String>) {
    (decision.action, decision.rule.map(|rule| rule.id.clone()))
}

/// What the model expects, without escalation.
fn expected(rules: &[GenRule], matched: Option<usize>) -> (Action, Option<String>) {
    match matched {
        Some(index) => (ACTIONS[rules[index].action].1, Some(format!("r{index}"))),
        None => (Action::Allow, None),
    }
}

proptest! {
    /// 1. The highest-priority matching rule decides, file order breaking ties; no match
    /// allows. Several opens in a row on one agent: rules without a rate or sequence keep no
    /// state, and exec rules never decide an open.
    #[test]
    fn the_highest_priority_matching_rule_decides(
        rules in prop::collection::vec(gen_rule(), 1..20),
        paths in prop::collection::vec(0..PATHS.len(), 1..8),
        trust in 0usize..4,
    ) {
        let engine = Engine::new(parse(&toml_of(&rules)).rule).unwrap_or_else(|error| panic!("{error}"));
        let mut agent = engine.agent(Trust::ALL[trust]);
        for (step, path) in paths.into_iter().enumerate() {
            let decided = outcome(engine.decide(&mut agent, &open(PATHS[path], 0), step as u64));
            prop_assert_eq!(decided, expected(&rules, model_open(&rules, PATHS[path], trust)), "{}", PATHS[path]);
        }
    }

    /// 2. A rule's trust bounds: the engine refuses bounds that leave no level, and a rule it
    /// accepts matches an agent exactly when `at_least <= trust < below`, at every level.
    #[test]
    fn trust_bounds_select_the_agents_a_rule_applies_to(
        at_least in proptest::option::of(0usize..4),
        below in proptest::option::of(0usize..4),
    ) {
        let mut text = String::from(
            "[[rule]]\nid = \"bounded\"\nkind = \"exec\"\nbinary = [\"**/curl\"]\naction = \"audit\"\n\
             severity = \"low\"\nreason = \"r\"\n",
        );
        if let Some(least) = at_least {
            text.push_str(&format!("trust_at_least = \"{}\"\n", Trust::ALL[least]));
        }
        if let Some(below) = below {
            text.push_str(&format!("trust_below = \"{}\"\n", Trust::ALL[below]));
        }
        let file: RulesFile = toml::from_str(&text).unwrap_or_else(|error| panic!("{error}"));
        let possible = match (at_least, below) {
            (Some(least), Some(below)) => least < below,
            _ => true,
        };
        prop_assert_eq!(file.validate().is_ok(), possible);
        if possible {
            let engine = Engine::new(file.rule).unwrap_or_else(|error| panic!("{error}"));
            for (level, trust) in Trust::ALL.into_iter().enumerate() {
                let within = at_least.is_none_or(|least| least <= level) && below.is_none_or(|below| level < below);
                let mut agent = engine.agent(trust);
                let decided = outcome(engine.decide(&mut agent, &exec("/usr/bin/curl"), 0));
                let want = if within { (Action::Audit, Some("bounded".to_owned())) } else { (Action::Allow, None) };
                prop_assert_eq!(decided, want, "{}", trust);
            }
        }
    }

    /// 3. A rate (`count` within `window`) on refusals fires exactly when the last `count`
    /// refusals since its last firing fall within the window, and firing starts the count
    /// again. Allowed opens and failures that are not refusals (ENOENT) do not count.
    #[test]
    fn a_rate_fires_exactly_when_count_refusals_fall_within_the_window(
        count in 1usize..6,
        window in 1u64..8,
        // Quarter seconds, so that refusals land exactly on the window's edge too; the event:
        // 0 EACCES, 1 EPERM (both refusals), 2 allowed, 3 ENOENT.
        steps in prop::collection::vec((0u64..16, 0u8..4), 1..60),
    ) {
        let text = format!(
            "[[rule]]\nid = \"rate\"\nkind = \"denied\"\ncount = {count}\nwindow = \"{window}s\"\n\
             action = \"suspend\"\nseverity = \"high\"\nreason = \"r\"\n"
        );
        let engine = Engine::new(parse(&text).rule).unwrap_or_else(|error| panic!("{error}"));
        let mut agent = engine.agent(Trust::Low);
        let mut refusals: VecDeque<u64> = VecDeque::new();
        let mut now = 0;
        for (gap, event) in steps {
            now += gap * SECOND / 4;
            let result = [-libc::EACCES, -libc::EPERM, 0, -libc::ENOENT][usize::from(event)];
            let decided = outcome(engine.decide(&mut agent, &open("/etc/shadow", result), now));
            let mut fires = false;
            if event < 2 {
                refusals.push_back(now);
                if refusals.len() > count {
                    refusals.pop_front();
                }
                fires = refusals.len() == count && refusals.front().is_some_and(|&oldest| now - oldest <= window * SECOND);
                if fires {
                    refusals.clear();
                }
            }
            let want = if fires { (Action::Suspend, Some("rate".to_owned())) } else { (Action::Allow, None) };
            prop_assert_eq!(decided, want, "event {} at {} ns", event, now);
        }
    }

    /// 4. A sequence rule (curl `after` an open under `.ssh` within a window) fires on an
    /// exec of curl exactly when the most recent such open was at most the window before it.
    /// Other opens, execs of other programs, and an exec of a path under `.ssh` (an exec, not
    /// an open) neither fire it nor arm it.
    #[test]
    fn a_sequence_fires_only_within_its_window_after_the_earlier_event(
        window in 1u64..30,
        // Whole seconds, so that an exec lands exactly on the window's edge too.
        steps in prop::collection::vec((0u64..20, 0u8..6), 1..40),
    ) {
        let text = format!(
            "[[rule]]\nid = \"exfil\"\nkind = \"exec\"\nbinary = [\"**/curl\"]\naction = \"suspend\"\n\
             severity = \"critical\"\nreason = \"r\"\n\
             after = {{ kind = \"open\", path = [\"**/.ssh/**\"], window = \"{window}s\" }}\n"
        );
        let engine = Engine::new(parse(&text).rule).unwrap_or_else(|error| panic!("{error}"));
        let mut agent = engine.agent(Trust::Medium);
        let mut secret_read: Option<u64> = None;
        let mut now = 0;
        for (gap, step) in steps {
            now += gap * SECOND;
            let (event, secret, curl) = match step {
                0 => (open("/home/ann/.ssh/id_rsa", 0), true, false),
                1 => (open("/root/.ssh/config", -libc::EACCES), true, false),
                2 => (open("/home/ann/notes.txt", 0), false, false),
                3 => (exec("/usr/bin/curl"), false, true),
                4 => (exec("/usr/bin/ls"), false, false),
                _ => (exec("/home/ann/.ssh/bin/curl"), false, true),
            };
            let decided = outcome(engine.decide(&mut agent, &event, now));
            if secret {
                secret_read = Some(now);
            }
            let fires = curl && secret_read.is_some_and(|seen| now - seen <= window * SECOND);
            let want = if fires { (Action::Suspend, Some("exfil".to_owned())) } else { (Action::Allow, None) };
            prop_assert_eq!(decided, want, "step {} at {} ns", step, now);
        }
    }

    /// 5. A suspended agent is denied every event from its suspension on, by no rule, whatever
    /// the rules; an event from before (still in flight, arriving in any order) is decided as
    /// usual.
    #[test]
    fn a_suspended_agent_is_denied_from_its_suspension_on(
        rules in prop::collection::vec(gen_rule(), 0..12),
        trust in 0usize..4,
        since in 0u64..1000,
        // Times relative to the suspension, often right at its edge.
        events in prop::collection::vec((0..PATHS.len(), prop_oneof![-2i64..=2, -1000i64..1000]), 1..10),
    ) {
        let engine = Engine::new(parse(&toml_of(&rules)).rule).unwrap_or_else(|error| panic!("{error}"));
        let mut agent = engine.agent(Trust::ALL[trust]);
        agent.suspended = true;
        agent.suspended_since = since;
        for (path, offset) in events {
            let at = since.saturating_add_signed(offset);
            let decided = outcome(engine.decide(&mut agent, &open(PATHS[path], 0), at));
            let want =
                if at >= since { (Action::Deny, None) } else { expected(&rules, model_open(&rules, PATHS[path], trust)) };
            prop_assert_eq!(decided, want, "{} at {}", PATHS[path], at);
        }
    }

    /// 6. `suspend_on_severity`: the same rule is chosen, and a deny or audit rule of that
    /// severity or worse suspends instead; allow, suspend and kill keep their action, and
    /// without a threshold nothing changes.
    #[test]
    fn severe_enough_deny_and_audit_rules_suspend(
        rules in prop::collection::vec(gen_rule(), 1..12),
        threshold in proptest::option::of(0..SEVERITIES.len()),
        path in 0..PATHS.len(),
        trust in 0usize..4,
    ) {
        let engine = Engine::new(parse(&toml_of(&rules)).rule).unwrap_or_else(|error| panic!("{error}"))
            .suspend_on_severity(threshold.map(|threshold| SEVERITIES[threshold].1));
        let mut agent = engine.agent(Trust::ALL[trust]);
        let decided = outcome(engine.decide(&mut agent, &open(PATHS[path], 0), 0));
        let matched = model_open(&rules, PATHS[path], trust);
        let (own, id) = expected(&rules, matched);
        let escalates = matched.is_some_and(|index| {
            matches!(own, Action::Deny | Action::Audit) && threshold.is_some_and(|threshold| rules[index].severity >= threshold)
        });
        prop_assert_eq!(decided, (if escalates { Action::Suspend } else { own }, id));
    }
}
