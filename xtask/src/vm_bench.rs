//! `cargo xtask vm-test --kernel K --bench host-tax`: what the probes cost a process that is
//! not an agent, on a VM kernel (which runs BPF trampolines, unlike this machine's). Inside
//! the VM, a process outside any agent times an open+close loop with no daemon, and with a
//! daemon of each `--probes` choice running, idle and with one agent, and the same with the
//! daemon (and the agent's `governor run`) stopped by SIGSTOP, which leaves the probes
//! attached: what the kernel's programs cost apart from the daemon's own use of the one CPU.
//! The states are interleaved round by round (every other round in reverse order) and the
//! medians compared on the host. Under software emulation every figure is slower than on
//! hardware; the ratios are what the benchmark is for.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, Result, bail};

use crate::vm;

/// Prefix of the lines the VM prints: `HOST-TAX <state> <nanoseconds>`.
const MARKER: &str = "HOST-TAX";

/// The shell script run in the VM.
fn script(rounds: usize, opens: u64, choices: &[String]) -> String {
    let mut script = format!(
        "A=/bin/attempt; F=/etc/hostname; N={opens}
mkdir -p /run/governor /var/lib/governor
measure() {{ echo \"{MARKER} $1 $($A time-flood $F $N)\"; }}
start_daemon() {{
  governor --audit-db /tmp/bench.db daemon --probes $1 >/tmp/daemon.log 2>&1 & D=$!
  i=0; until grep -q 'governor daemon ready' /tmp/daemon.log; do
    sleep 1; i=$((i+1)); [ $i -lt 600 ] || {{ cat /tmp/daemon.log; exit 1; }}
  done
  echo \"{MARKER}-BACKEND $1 $(grep -o 'backend=[^ ]*' /tmp/daemon.log | head -1)\"
}}
stop_daemon() {{ kill $D; wait $D; }}
start_agent() {{
  governor run --trust low --workspace /tmp -- sleep 100000 & G=$!
  i=0; until [ -n \"$(cat /sys/fs/cgroup/governor/*/cgroup.procs 2>/dev/null)\" ]; do
    sleep 1; i=$((i+1)); [ $i -lt 600 ] || exit 1
  done
}}
stop_agent() {{ kill $G; wait $G; }}
paused() {{ kill -STOP $D $2; measure $1; kill -CONT $D $2; }}
with() {{
  start_daemon $1; measure idle:$1; paused paused-idle:$1
  start_agent; measure agent:$1; paused paused-agent:$1 $G; stop_agent; stop_daemon
}}
with_reversed() {{
  start_daemon $1; start_agent; paused paused-agent:$1 $G; measure agent:$1; stop_agent
  paused paused-idle:$1; measure idle:$1; stop_daemon
}}
$A time-flood $F $N >/dev/null
"
    );
    let forward = choices.join(" ");
    let backward: Vec<&str> = choices.iter().rev().map(String::as_str).collect();
    let backward = backward.join(" ");
    script.push_str(&format!(
        "r=0; while [ $r -lt {rounds} ]; do
  if [ $((r % 2)) = 0 ]; then
    measure stopped; for c in {forward}; do with $c; done
  else
    for c in {backward}; do with_reversed $c; done; measure stopped
  fi
  r=$((r+1))
done
"
    ));
    script
}

/// Runs the benchmark in the VM and prints medians and ratios.
pub fn host_tax(root: &Path, boot: &vm::Boot, rounds: usize, opens: u64, choices: &[String]) -> Result<()> {
    if rounds < 3 {
        bail!("--rounds {rounds}: at least 3 rounds are needed for a median");
    }
    crate::cargo(root, &["build", "--release", "-p", "governor", "-p", "governor-tests", "--bins"])?;
    let mut guest = vm::Guest::default();
    guest.binary(&root.join("target/release/governor"), "/bin/governor")?;
    guest.binary(&root.join("target/release/attempt"), "/bin/attempt")?;
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut backends: Vec<String> = Vec::new();
    let code = vm::run_in_vm(root, boot, guest, &script(rounds, opens, choices), |line| {
        println!("vm: {line}");
        if let Some(rest) = line.strip_prefix(&format!("{MARKER}-BACKEND ")) {
            backends.push(rest.to_owned());
        } else if let Some(rest) = line.strip_prefix(&format!("{MARKER} "))
            && let Some((state, nanos)) = rest.split_once(' ')
            && let Ok(nanos) = nanos.trim().parse::<f64>()
        {
            times.entry(state.to_owned()).or_default().push(nanos);
        }
    })?;
    if code != 0 {
        bail!("the benchmark failed in the {} VM (exit {code})", boot.kernel.name());
    }
    let median = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let stopped = median(times.get("stopped").context("the VM printed no time with the daemon stopped")?);
    backends.sort();
    backends.dedup();
    println!(
        "host tax in the {} VM: a process outside any agent, {opens} open+close, {rounds} interleaved rounds, medians",
        boot.kernel.name()
    );
    for backend in &backends {
        println!("  daemon --probes {backend}");
    }
    println!("  {:<28} {:>10} {:>8}", "state", "ms", "tax");
    for (state, values) in &times {
        let value = median(values);
        println!(
            "  {:<28} {:>10.1} {:>+7.1}%  ({} runs)",
            state,
            value / 1e6,
            (value / stopped - 1.0) * 100.0,
            values.len()
        );
    }
    Ok(())
}
