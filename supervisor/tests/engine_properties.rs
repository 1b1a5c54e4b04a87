//! Property tests of the policy engine: for generated rule sets and event streams, its
//! decisions agree with a plain model written here (priority order, first match wins, trust
//! bounds, rate windows, sequences, suspended agents, escalation by severity).

use std::collections::VecDeque;

use governor::{
    engine::{Action, Engine, Rule, RulesFile, Severity},
    policy::Trust,
    probes::events::Event,
};
use governor_common::{EventHeader, kind, source, verdict};
use proptest::prelude::*;

const SECOND: u64 = 1_000_000_000;

const PATTERNS: [&str; 5] = ["/etc/**", "/etc/passwd", "/home/*/.ssh/**", "**/*.key", "/tmp/*"];
const PATHS: [&str; 7] =
    ["/etc/passwd", "/etc/hosts", "/home/ann/.ssh/id_rsa", "/srv/tls/server.key", "/tmp/x", "/usr/lib/libc.so", "/tmp/a/b"];
const ACTIONS: [&str; 4] = ["allow", "deny", "audit", "kill"];
const TRUSTS: [Trust; 4] = Trust::ALL;

fn header(event_kind: u32, result: i32) -> EventHeader {
    EventHeader {
        kind: event_kind,
        result,
        ktime_ns: 0,
        pid: 1,
        tgid: 1,
        uid: 0,
        verdict: verdict::OBSERVED,
        source: source::TRACEPOINT,
        cgroup_id: 1,
    }
}

fn open(path: &str, result: i32) -> Event {
    Event::Open { header: header(kind::OPEN, result), flags: 0, dev: 0, ino: 0, path: path.into() }
}

fn exec(path: &str) -> Event {
    Event::Exec { header: header(kind::EXEC, 0), filename: path.into(), argv: vec![] }
}

fn parse(text: &str) -> Vec<Rule> {
    let file: RulesFile = toml::from_str(text).unwrap_or_else(|error| panic!("{error}\n{text}"));
    file.validate().unwrap_or_else(|error| panic!("{error}"));
    file.rule
}

fn trust_name(trust: Trust) -> &'static str {
    trust.as_str()
}

/// One generated open rule: priority, pattern, action, trust bounds (indices into TRUSTS,
/// `at_least < below` when both are set).
#[derive(Clone, Debug)]
struct OpenRule {
    priority: i32,
    pattern: usize,
    action: usize,
    at_least: Option<usize>,
    below: Option<usize>,
}

fn open_rule() -> impl Strategy<Value = OpenRule> {
    (-100i32..100, 0..PATTERNS.len(), 0..ACTIONS.len(), proptest::option::of(0usize..4), proptest::option::of(1usize..5))
        .prop_map(|(priority, pattern, action, at_least, below)| {
            // Keep only bounds that leave some trust level (the engine refuses the others).
            let below = below.filter(|&below| below < 4 && at_least.is_none_or(|least| least < below));
            OpenRule { priority, pattern, action, at_least, below }
        })
}

fn toml_of(rules: &[OpenRule]) -> String {
    let mut text = String::new();
    for (index, rule) in rules.iter().enumerate() {
        text.push_str(&format!(
            "[[rule]]\nid = \"r{index}\"\npriority = {}\nkind = \"open\"\npath = [\"{}\"]\naction = \"{}\"\nseverity = \"low\"\nreason = \"r\"\n",
            rule.priority, PATTERNS[rule.pattern], ACTIONS[rule.action]
        ));
        if let Some(least) = rule.at_least {
            text.push_str(&format!("trust_at_least = \"{}\"\n", trust_name(TRUSTS[least])));
        }
        if let Some(below) = rule.below {
            text.push_str(&format!("trust_below = \"{}\"\n", trust_name(TRUSTS[below])));
        }
    }
    text
}

/// The model: the matching rule of highest priority, file order breaking ties.
fn model_decision(rules: &[OpenRule], path: &str, trust: usize) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (index, rule) in rules.iter().enumerate() {
        let glob = globset::Glob::new(PATTERNS[rule.pattern]).map(|glob| glob.compile_matcher());
        let matches = glob.is_ok_and(|glob| glob.is_match(path))
            && rule.at_least.is_none_or(|least| trust >= least)
            && rule.below.is_none_or(|below| trust < below);
        if matches && best.is_none_or(|best| rule.priority > rules[best].priority) {
            best = Some(index);
        }
    }
    best
}

fn action_of(name: &str) -> Action {
    match name {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        "audit" => Action::Audit,
        "kill" => Action::Kill,
        _ => Action::Suspend,
    }
}

proptest! {
    #[test]
    fn the_highest_priority_matching_rule_decides(
        rules in proptest::collection::vec(open_rule(), 1..20),
        path in 0..PATHS.len(),
        trust in 0usize..4,
    ) {
        let engine = Engine::new(parse(&toml_of(&rules)));
        let mut agent = engine.agent(TRUSTS[trust]);
        let decision = engine.decide(&mut agent, &open(PATHS[path], 0), 0);
        let expected = model_decision(&rules, PATHS[path], trust);
        prop_assert_eq!(decision.rule.map(|rule| rule.id.clone()), expected.map(|index| format!("r{index}")));
        let action = expected.map_or(Action::Allow, |index| action_of(ACTIONS[rules[index].action]));
        prop_assert_eq!(decision.action, action);
    }

    #[test]
    fn a_rate_fires_exactly_when_count_matches_fall_within_the_window(
        count in 1u32..6,
        window in 1u64..10,
        // Quarter seconds, so that matches land exactly on the window's edge too.
        gaps in proptest::collection::vec(0u64..16, 1..60),
    ) {
        let text = format!(
            "[[rule]]\nid = \"rate\"\nkind = \"denied\"\ncount = {count}\nwindow = \"{window}s\"\naction = \"suspend\"\nseverity = \"high\"\nreason = \"r\"\n"
        );
        let engine = Engine::new(parse(&text));
        let mut agent = engine.agent(Trust::Low);
        let mut model: VecDeque<u64> = VecDeque::new();
        let mut now = 0;
        for gap in gaps {
            now += gap * SECOND / 4;
            let fired = engine.decide(&mut agent, &open("/etc/shadow", -libc::EACCES), now).action == Action::Suspend;
            // The model: the match times since the last firing; the last `count` of them
            // within the window fire, and firing starts the count again.
            model.push_back(now);
            while model.len() > count as usize {
                model.pop_front();
            }
            let expected = model.len() == count as usize && model.front().is_some_and(|oldest| now - oldest <= window * SECOND);
            if expected {
                model.clear();
            }
            prop_assert_eq!(fired, expected, "at {} ns", now);
        }
    }

    #[test]
    fn a_sequence_fires_only_within_its_window_after_the_earlier_event(
        // Whole seconds, so that an exec lands exactly on the window's edge too.
        steps in proptest::collection::vec((0u8..4, 0u64..30), 1..40),
        window in 1u64..60,
    ) {
        let text = format!(
            "[[rule]]\nid = \"exfil\"\nkind = \"exec\"\nbinary = [\"**/curl\"]\naction = \"suspend\"\nseverity = \"critical\"\nreason = \"r\"\nafter = {{ kind = \"open\", path = [\"**/.ssh/**\"], window = \"{window}s\" }}\n"
        );
        let engine = Engine::new(parse(&text));
        let mut agent = engine.agent(Trust::Medium);
        let mut last_secret: Option<u64> = None;
        let mut now = 0;
        for (step, gap) in steps {
            now += gap * SECOND;
            let event = match step {
                0 => open("/home/ann/.ssh/id_rsa", -libc::EACCES),
                1 => open("/home/ann/notes.txt", 0),
                2 => exec("/usr/bin/curl"),
                _ => exec("/usr/bin/ls"),
            };
            let action = engine.decide(&mut agent, &event, now).action;
            if step == 0 {
                last_secret = Some(now);
            }
            let expected = step == 2 && last_secret.is_some_and(|seen| now - seen <= window * SECOND);
            prop_assert_eq!(action == Action::Suspend, expected, "step {} at {} ns", step, now);
        }
    }

    #[test]
    fn a_suspended_agent_is_denied_from_its_suspension_on(
        rules in proptest::collection::vec(open_rule(), 0..10),
        path in 0..PATHS.len(),
        since in 1u64..1000,
        at in 0u64..2000,
    ) {
        let engine = Engine::new(parse(&toml_of(&rules)));
        let mut agent = engine.agent(Trust::Low);
        agent.suspended = true;
        agent.suspended_since = since;
        let decision = engine.decide(&mut agent, &open(PATHS[path], 0), at);
        if at >= since {
            prop_assert_eq!(decision.action, Action::Deny);
            prop_assert!(decision.rule.is_none());
        } else {
            let expected = model_decision(&rules, PATHS[path], 0);
            prop_assert_eq!(decision.rule.map(|rule| rule.id.clone()), expected.map(|index| format!("r{index}")));
        }
    }

    #[test]
    fn severe_enough_deny_and_audit_rules_suspend(
        action in 0..ACTIONS.len(),
        severity in 0usize..4,
        threshold in 0usize..4,
    ) {
        let severities = ["low", "medium", "high", "critical"];
        let text = format!(
            "[[rule]]\nid = \"r\"\nkind = \"open\"\npath = [\"/etc/**\"]\naction = \"{}\"\nseverity = \"{}\"\nreason = \"r\"\n",
            ACTIONS[action], severities[severity]
        );
        let levels = [Severity::Low, Severity::Medium, Severity::High, Severity::Critical];
        let engine = Engine::new(parse(&text)).suspend_on_severity(Some(levels[threshold]));
        let mut agent = engine.agent(Trust::Low);
        let decided = engine.decide(&mut agent, &open("/etc/passwd", 0), 0).action;
        let own = action_of(ACTIONS[action]);
        let escalates = matches!(own, Action::Deny | Action::Audit) && severity >= threshold;
        prop_assert_eq!(decided, if escalates { Action::Suspend } else { own });
    }
}
