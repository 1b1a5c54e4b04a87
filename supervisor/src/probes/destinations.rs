//! Destination rules as the cgroup socket hooks must hold them: the hooks compare the address
//! the agent passed to connect/sendmsg, before the kernel resolves it, so a rule is turned once,
//! at load, into every network that reaches what it names.
//!
//! Why here and not in the hook: the kernel turns `0.0.0.0` and `::` into the loopback only
//! after the hook has run (route lookup: `ip_route_output_key_hash_rcu` in net/ipv4/route.c,
//! `tcp_v6_connect` and `udpv6_sendmsg` in net/ipv6/), and a listener bound to the wildcard
//! address answers on all of 127.0.0.0/8 and `::1`. Expanding the rule is a few lines that unit
//! tests check without root; special-casing address classes in the hook would be per-family
//! branches in a program the verifier bounds, for every connect of every agent. The IPv4-mapped
//! form (`::ffff:a.b.c.d`) is the one normalisation left to the hook (`unmap` in
//! ebpf/src/maps.rs): it holds for every rule, and it is the address the kernel really uses
//! (`ipv6_addr_v4mapped` sends such a destination over IPv4).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::NetRule;

/// The networks whose every address reaches the local host's own listeners: 127.0.0.0/8, `::1`
/// and the unspecified addresses, which connect(2) and sendmsg(2) send to the loopback.
pub const LOCAL: [(IpAddr, u8); 4] = [
    (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
    (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 32),
    (IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
    (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128),
];

/// Whether two networks share an address (for prefixes, one then contains the other).
fn overlap((a, a_prefix): (IpAddr, u8), (b, b_prefix): (IpAddr, u8)) -> bool {
    let prefix = u32::from(a_prefix.min(b_prefix));
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The rule as the hook looks it up: a network inside `::ffff:0.0.0.0/96` is the IPv4 network
/// it maps, since the hook looks a mapped destination up as IPv4 (a rule left in the mapped
/// form would never match anything).
pub fn canonical(rule: NetRule) -> NetRule {
    match rule.addr {
        IpAddr::V6(v6) if rule.prefix >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => NetRule { addr: IpAddr::V4(v4), prefix: rule.prefix - 96, port: rule.port },
            None => rule,
        },
        _ => rule,
    }
}

/// The kernel entries for deny rules: each rule in its canonical form and, when its network
/// holds an address of [`LOCAL`], every network of [`LOCAL`] on the same port, so that
/// `127.0.0.1:443` denied is also `127.0.0.2:443`, `0.0.0.0:443`, `[::1]:443` and `[::]:443`
/// denied (and their mapped forms, through the hook). No duplicates.
pub fn deny_entries(rules: &[NetRule]) -> Vec<NetRule> {
    let mut out: Vec<NetRule> = Vec::with_capacity(rules.len());
    let mut push = |rule: NetRule| {
        if !out.contains(&rule) {
            out.push(rule);
        }
    };
    for rule in rules.iter().copied().map(canonical) {
        push(rule);
        if LOCAL.iter().any(|local| overlap(*local, (rule.addr, rule.prefix))) {
            for (addr, prefix) in LOCAL {
                push(NetRule { addr, prefix, port: rule.port });
            }
        }
    }
    out
}

/// The kernel entries for allow rules (UDP): each rule in its canonical form. An allow list
/// is not widened: a datagram the hook lets through goes where the rule said.
pub fn allow_entries(rules: &[NetRule]) -> Vec<NetRule> {
    rules.iter().copied().map(canonical).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str, port: u16) -> NetRule {
        let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
        let addr: IpAddr = addr.parse().unwrap_or_else(|error| panic!("{text}: {error}"));
        let prefix = prefix.parse().unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        NetRule { addr, prefix, port }
    }

    fn shown(rules: &[NetRule]) -> Vec<String> {
        rules.iter().map(|rule| format!("{}/{}:{}", rule.addr, rule.prefix, rule.port)).collect()
    }

    const LOCAL_443: [&str; 4] = ["127.0.0.0/8:443", "0.0.0.0/32:443", "::1/128:443", "::/128:443"];

    #[test]
    fn a_rule_on_any_local_address_covers_every_local_address() {
        for written in ["127.0.0.1", "127.0.0.2", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1", "::ffff:0.0.0.0"] {
            let entries = shown(&deny_entries(&[rule(written, 443)]));
            for local in LOCAL_443 {
                assert!(entries.iter().any(|entry| entry == local), "{written}: {entries:?}");
            }
        }
        // A network that holds the loopback, too; the port stays the rule's.
        let entries = shown(&deny_entries(&[rule("0.0.0.0/0", 0)]));
        assert_eq!(entries, ["0.0.0.0/0:0", "127.0.0.0/8:0", "0.0.0.0/32:0", "::1/128:0", "::/128:0"]);
        // Written as the loopback network itself: no duplicate entry.
        let entries = shown(&deny_entries(&[rule("127.0.0.0/8", 443)]));
        assert_eq!(entries, LOCAL_443);
    }

    #[test]
    fn other_rules_are_left_as_written_or_unmapped() {
        let written = [rule("169.254.169.254", 0), rule("fd00:ec2::254", 80), rule("10.0.0.0/8", 0)];
        assert_eq!(deny_entries(&written), written);
        // A mapped address or network is the IPv4 one the hook looks up.
        let mapped = [rule("::ffff:169.254.169.254", 0), rule("::ffff:10.0.0.0/104", 53)];
        assert_eq!(shown(&deny_entries(&mapped)), ["169.254.169.254/32:0", "10.0.0.0/8:53"]);
        assert_eq!(shown(&allow_entries(&mapped)), ["169.254.169.254/32:0", "10.0.0.0/8:53"]);
        // Wider IPv6 networks stay IPv6: a mapped destination is IPv4 traffic.
        assert_eq!(shown(&deny_entries(&[rule("fd00::/8", 0)])), ["fd00::/8:0"]);
        // Allow lists are not widened to the other local addresses.
        assert_eq!(shown(&allow_entries(&[rule("127.0.0.1", 53)])), ["127.0.0.1/32:53"]);
    }
}
