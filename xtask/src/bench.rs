//! Process-level benchmarks: whole commands timed side by side, interleaved so that drift in
//! the machine's load affects both alike. Figures are medians; they go into BENCHMARKS.md.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;

mod workloads;

#[derive(Subcommand)]
pub enum Which {
    /// `governor run --trust medium -- /bin/true` against bare `/bin/true`.
    Launch {
        /// Runs of each, interleaved.
        #[arg(long, default_value_t = 200)]
        runs: usize,
        #[arg(long, default_value = "medium")]
        trust: String,
        /// governor's --probes (auto loads the eBPF programs on every launch).
        #[arg(long, default_value = "off")]
        probes: String,
        /// Pass `--standalone`: the run loads its own probes rather than going through a
        /// daemon (root's default run starts one).
        #[arg(long)]
        standalone: bool,
        /// Another governor binary (an older build, to compare), timed in the same rounds.
        #[arg(long)]
        against: Option<std::path::PathBuf>,
    },
    /// With `governor daemon` running: `governor run --trust medium -- /bin/true` through it,
    /// against bare `/bin/true` and a standalone run that loads the probes itself.
    Daemon {
        /// Runs of each, interleaved.
        #[arg(long, default_value_t = 200)]
        runs: usize,
    },
    /// governor against the sandboxes people compare it with, for the same access (write a
    /// workspace, read /usr): bare `/bin/true`, Sandlock, nono, `governor run --standalone`
    /// (loads the probes) and `governor run` as a new user types it (through the daemon its
    /// first run started). The peers are installed from crates.io into
    /// target/bench-tools when missing.
    Peers {
        /// Runs of each, interleaved.
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// First runs timed (each starts a daemon, which is stopped again).
        #[arg(long, default_value_t = 5)]
        first_runs: usize,
    },
    /// Ring-buffer records decoded per second in userspace (criterion).
    Decode,
    /// Policy decisions with 1, 100 and 1,000 rules (criterion, then p50/p99 of single
    /// decisions), audit inserts per second, and `governor status` and `governor audit query`
    /// in a 13,000,000-row store of 700 agents (built once at target/bench/audit-13m.db).
    Policy,
    /// Only the large store's part of `policy`: `governor status`, `audit query --since 1h`
    /// and `audit incidents` through the release binary, medians of interleaved runs.
    Store,
    /// From the kernel timestamp of the event that breaks a critical rule to `frozen 1` in
    /// the agent's cgroup.events (the shipped network-tool-after-secret rule), p50/p99.
    Freeze {
        /// Agents suspended, one after another.
        #[arg(long, default_value_t = 100)]
        runs: usize,
    },
    /// An agent's open+close loop: bare, under governor without probes, and with probes.
    Probes {
        /// open+close iterations per run.
        #[arg(long, default_value_t = 1_000_000)]
        iterations: u64,
        /// Runs of each, interleaved.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// What a process that is not an agent pays for governor: its open+close loop with no
    /// daemon, with `governor daemon` idle, and with the daemon supervising one agent; and an
    /// agent's own loop through the daemon against `--probes off`.
    HostTax {
        /// open+close iterations per run.
        #[arg(long, default_value_t = 1_000_000)]
        iterations: u64,
        /// Rounds, each running every variant once.
        #[arg(long, default_value_t = 11)]
        runs: usize,
        /// The governor binary to measure (another build, to compare) [default:
        /// target/release/governor].
        #[arg(long)]
        governor: Option<std::path::PathBuf>,
    },
    /// The workload suite's steps (venv + pip install, pytest, npm install + require, cargo
    /// build with a registry dependency, git, gcc + make, ls /etc and ~), each in a fresh
    /// workspace: bare, `governor run --trust medium --standalone`, through a private
    /// `governor daemon`, and under Sandlock with the same access, interleaved round by round.
    /// A first, untimed round fills each variant's caches from the registries; the timed
    /// rounds install from them offline.
    Workloads {
        /// Timed rounds, each running every step in every variant once (a round takes about a
        /// minute on the reference machine).
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
}

pub fn run(root: &Path, which: Which) -> Result<()> {
    match which {
        Which::Launch { runs, trust, probes, standalone, against } => {
            launch(root, runs, &trust, &probes, standalone, against.as_deref())
        }
        Which::Probes { iterations, runs } => probes(root, iterations, runs),
        Which::HostTax { iterations, runs, governor } => {
            host_tax(root, &governor.unwrap_or_else(|| root.join("target/release/governor")), iterations, runs)
        }
        Which::Freeze { runs } => freeze(root, runs),
        Which::Daemon { runs } => daemon(root, runs),
        Which::Peers { runs, first_runs } => peers(root, runs, first_runs),
        Which::Workloads { runs } => workloads::run(root, runs),
        Which::Decode => criterion(root, "decode", &[]),
        Which::Policy => criterion(root, "policy", &[]),
        Which::Store => criterion(root, "policy", &["audit store"]),
    }
}

/// `cargo bench -p governor --bench NAME [-- FILTER]`, with the release `governor` binary
/// (built before) for the benchmarks that run it.
fn criterion(root: &Path, bench: &str, filter: &[&str]) -> Result<()> {
    let mut command = Command::new("cargo");
    command.current_dir(root).args(["bench", "-p", "governor", "--bench", bench]);
    if !filter.is_empty() {
        command.arg("--").args(filter);
    }
    let status =
        command.env("GOVERNOR_BIN", root.join("target/release/governor")).status().context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed");
    }
    Ok(())
}

fn time(command: &mut Command) -> Result<Duration> {
    let start = Instant::now();
    let status = command.stdin(Stdio::null()).stdout(Stdio::null()).status().context("spawning")?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(elapsed)
}

/// Wall time and CPU time (user + system, of the command and the children it waited for):
/// on a shared machine the CPU time is what the command itself paid, the wall time also
/// what it waited for others.
fn time_cpu(command: &mut Command) -> Result<(Duration, Duration)> {
    let start = Instant::now();
    let child = command.stdin(Stdio::null()).stdout(Stdio::null()).spawn().context("spawning")?;
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 on our own child, which is not waited for
    // elsewhere (the `Child` is dropped unwaited, which does nothing).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    if pid < 0 {
        bail!("waiting for {command:?}: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{command:?} failed: wait status {status}");
    }
    let timeval = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    Ok((elapsed, timeval(usage.ru_utime) + timeval(usage.ru_stime)))
}

fn launch(root: &Path, runs: usize, trust: &str, probes: &str, standalone: bool, against: Option<&Path>) -> Result<()> {
    if runs < 50 {
        bail!("--runs {runs}: at least 50 runs of each are needed for a stable median");
    }
    let governor = root.join("target/release/governor");
    let workspace = tempfile_dir()?;
    let bare = || {
        let mut command = Command::new("/bin/true");
        command.current_dir(&workspace);
        command
    };
    let confined = |binary: &Path| {
        let mut command = Command::new(binary);
        command.args(["run", "--trust", trust, "--probes", probes, "--best-effort"]);
        if standalone {
            command.arg("--standalone");
        }
        command.arg("--workspace").arg(&workspace).args(["--", "/bin/true"]);
        command
    };
    let mut binaries = vec![governor.as_path()];
    binaries.extend(against);
    // Warm the page cache and the dentry cache for each.
    for _ in 0..10 {
        time(&mut bare())?;
        for binary in &binaries {
            time(&mut confined(binary))?;
        }
    }
    let mut bare_times = Vec::with_capacity(runs);
    let mut times = vec![Vec::with_capacity(runs); binaries.len()];
    for _ in 0..runs {
        bare_times.push(time(&mut bare())?);
        for (binary, times) in binaries.iter().zip(&mut times) {
            times.push(time(&mut confined(binary))?);
        }
    }
    let _ = std::fs::remove_dir_all(&workspace);
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let bare_median = median(&mut bare_times);
    let mode = if standalone { ", standalone" } else { "" };
    println!("launch, {runs} interleaved runs each, trust {trust}, probes {probes}{mode}:");
    println!(
        "  bare /bin/true:                 median {:.3} ms (p90 {:.3} ms)",
        ms(bare_median),
        ms(percentile(&bare_times, 90))
    );
    for (binary, times) in binaries.iter().zip(&mut times) {
        let governor_median = median(times);
        println!("  {}:", binary.display());
        println!(
            "    governor run -- /bin/true:    median {:.3} ms (p90 {:.3} ms)",
            ms(governor_median),
            ms(percentile(times, 90))
        );
        println!(
            "    added by governor:            {:.3} ms (ratio {:.2}x)",
            ms(governor_median) - ms(bare_median),
            ms(governor_median) / ms(bare_median)
        );
    }
    Ok(())
}

fn daemon(root: &Path, runs: usize) -> Result<()> {
    if runs < 50 {
        bail!("--runs {runs}: at least 50 runs of each are needed for a stable median");
    }
    let governor = root.join("target/release/governor");
    let dir = tempfile_dir()?;
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace)?;
    let socket = std::path::PathBuf::from(format!("/run/governor/bench-{}.sock", std::process::id()));
    let store = dir.join("audit.db");
    let daemon = start_daemon(&governor, &socket, &store)?;
    let bare = || {
        let mut command = Command::new("/bin/true");
        command.current_dir(&workspace);
        command
    };
    let run = |standalone: bool| {
        let mut command = Command::new(&governor);
        command.arg("--socket").arg(&socket).arg("--audit-db").arg(&store);
        command.args(["run", "--trust", "medium", "--workspace"]).arg(&workspace);
        if standalone {
            command.args(["--standalone", "--probes", "auto"]);
        }
        command.args(["--", "/bin/true"]);
        command
    };
    let result = (|| -> Result<[Vec<Duration>; 3]> {
        for _ in 0..10 {
            time(&mut bare())?;
            time(&mut run(false))?;
            time(&mut run(true))?;
        }
        let mut times: [Vec<Duration>; 3] = Default::default();
        for _ in 0..runs {
            times[0].push(time(&mut bare())?);
            times[1].push(time(&mut run(false))?);
            times[2].push(time(&mut run(true))?);
        }
        Ok(times)
    })();
    stop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
    let mut times = result?;
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let medians: Vec<Duration> = times.iter_mut().map(|times| median(times)).collect();
    println!("launch with governor daemon running, {runs} interleaved runs each, trust medium:");
    for ((name, median), times) in
        ["bare /bin/true", "governor run (daemon)", "governor run --standalone --probes auto"]
            .iter()
            .zip(&medians)
            .zip(&times)
    {
        println!("  {name:<42} median {:.3} ms (p90 {:.3} ms)", ms(*median), ms(percentile(times, 90)));
    }
    println!(
        "  added through the daemon:                  {:.3} ms (ratio {:.2}x; target at most 1.5 ms)",
        ms(medians[1]) - ms(medians[0]),
        ms(medians[1]) / ms(medians[0])
    );
    println!("  added standalone, loading the probes:      {:.3} ms", ms(medians[2]) - ms(medians[0]));
    Ok(())
}

/// Starts `governor daemon` on its own socket and store and waits until it listens.
fn start_daemon(governor: &Path, socket: &Path, store: &Path) -> Result<Child> {
    start_daemon_with(governor, socket, store, &[])
}

fn start_daemon_with(governor: &Path, socket: &Path, store: &Path, args: &[&str]) -> Result<Child> {
    let mut daemon = Command::new(governor)
        .arg("--socket")
        .arg(socket)
        .arg("--audit-db")
        .arg(store)
        .arg("daemon")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting governor daemon")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if Instant::now() > deadline || daemon.try_wait().ok().flatten().is_some() {
            let _ = daemon.kill();
            let _ = daemon.wait();
            bail!("governor daemon did not listen on {}", socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(daemon)
}

/// SIGTERM, then waits: the daemon and `governor run` end cleanly on it.
fn stop(mut child: Child) {
    // SAFETY: kill(2) on our own child, which has not been waited for yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

/// Processes other than `except` holding a raw tracepoint link on `sys_enter` or `sys_exit`
/// (from `/proc/*/fdinfo`): while one does, every task pays the syscall tracepoints, the
/// "no daemon" runs included, and the figures say nothing.
fn syscall_tracers(except: &[u32]) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return pids };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        if except.contains(&pid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fdinfo")) else { continue };
        let traced = fds.flatten().any(|fd| {
            std::fs::read_to_string(fd.path()).is_ok_and(|info| {
                info.contains("link_type:\traw_tracepoint")
                    && info.lines().any(|line| line == "tp_name:\tsys_enter" || line == "tp_name:\tsys_exit")
            })
        });
        if traced {
            pids.push(pid);
        }
    }
    pids
}

/// The kernel's Landlock ABI (0 without Landlock).
fn probe_landlock_abi() -> i64 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a NULL attribute and size 0 only returns
    // the ABI version.
    unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<libc::c_void>(), 0usize, 1u32) }.max(0)
}

/// Waits (up to ten minutes) until no process holds the syscall tracepoints.
fn wait_for_clean_baseline() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut said = false;
    loop {
        let others = syscall_tracers(&[]);
        if others.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("processes {others:?} hold the sys_enter/sys_exit tracepoints: no baseline without them");
        }
        if !said {
            println!("  waiting for processes {others:?} to release the syscall tracepoints");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn host_tax(root: &Path, governor: &Path, iterations: u64, runs: usize) -> Result<()> {
    if runs < 3 {
        bail!("--runs {runs}: at least 3 rounds are needed for a median");
    }
    let attempt = attempt_bin(root)?;
    let dir = tempfile_dir()?;
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace).with_context(|| format!("creating {}", workspace.display()))?;
    let target = workspace.join("flood.txt");
    std::fs::write(&target, "x").with_context(|| format!("writing {}", target.display()))?;
    let helper = workspace.join("attempt");
    std::fs::copy(&attempt, &helper).with_context(|| format!("copying {}", attempt.display()))?;
    let socket = std::path::PathBuf::from(format!("/run/governor/bench-tax-{}.sock", std::process::id()));
    let store = dir.join("audit.db");
    let count = iterations.to_string();
    // The process that is not an agent: started by this benchmark, outside every agent's
    // cgroup.
    let host = || {
        let mut command = Command::new(&helper);
        command.arg("flood").arg(&target).arg(&count).stderr(Stdio::null());
        command
    };
    let agent_notify = || {
        let mut command = Command::new(governor);
        command.arg("--audit-db").arg(&store);
        command.args(["run", "--trust", "low", "--best-effort", "--probes", "notify", "--workspace"]).arg(&workspace);
        command.arg("--").arg(&helper).arg("flood").arg(&target).arg(&count).stderr(Stdio::null());
        command
    };
    // An agent's own loop: standalone without probes, or through the daemon.
    let agent = |daemon: bool| {
        let mut command = Command::new(governor);
        command.arg("--socket").arg(&socket).arg("--audit-db").arg(&store);
        command.args(["run", "--trust", "low", "--best-effort", "--workspace"]).arg(&workspace);
        if !daemon {
            command.args(["--standalone", "--probes", "off"]);
        }
        command.arg("--").arg(&helper).arg("flood").arg(&target).arg(&count).stderr(Stdio::null());
        command
    };
    let ready = workspace.join("ready");
    // An agent that sleeps, through the daemon or standalone with the notify backend; back
    // once it runs.
    let sleeper = |daemon: bool| -> Result<Child> {
        let _ = std::fs::remove_file(&ready);
        let mut command = Command::new(governor);
        command.arg("--socket").arg(&socket).arg("--audit-db").arg(&store);
        command.args(["run", "--trust", "medium", "--workspace"]).arg(&workspace);
        if !daemon {
            command.args(["--probes", "notify"]);
        }
        let child = command
            .args(["--", "sh", "-c", "echo > ready; exec sleep 600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the supervised agent")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            if Instant::now() > deadline {
                stop(child);
                bail!("the supervised agent did not start");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(child)
    };
    let notify = probe_landlock_abi() >= 7;
    let result = (|| -> Result<[Vec<(Duration, Duration)>; 9]> {
        let mut times: [Vec<(Duration, Duration)>; 9] = Default::default();
        let mut round = 0;
        while round < runs {
            wait_for_clean_baseline()?;
            let mut sample = [(Duration::ZERO, Duration::ZERO); 9];
            sample[0] = time_cpu(&mut host())?;
            sample[3] = time_cpu(&mut agent(false))?;
            if notify {
                let agent = sleeper(false)?;
                let host_time = time_cpu(&mut host());
                stop(agent);
                sample[5] = host_time?;
                sample[6] = time_cpu(&mut agent_notify())?;
            }
            // Through the running daemon: an agent's own loop, then the loop of a process that
            // is not an agent while one agent is supervised.
            let supervised = || -> Result<[(Duration, Duration); 2]> {
                let own = time_cpu(&mut agent(true))?;
                let sleeper = sleeper(true)?;
                let host_time = time_cpu(&mut host());
                stop(sleeper);
                Ok([own, host_time?])
            };
            let daemon = start_daemon(governor, &socket, &store)?;
            let mut clean = syscall_tracers(&[daemon.id()]).is_empty();
            let measured = time_cpu(&mut host()).and_then(|idle| Ok((idle, supervised()?)));
            clean &= syscall_tracers(&[daemon.id()]).is_empty();
            stop(daemon);
            let (idle, [own, host_time]) = measured?;
            (sample[1], sample[4], sample[2]) = (idle, own, host_time);
            if notify {
                // The same through a daemon on the tracepoint backend (where the kernel has
                // Landlock ABI 7 and no BPF LSM, auto's daemon is the notify backend's).
                let daemon = start_daemon_with(governor, &socket, &store, &["--probes", "tracepoint"])?;
                let measured = supervised();
                stop(daemon);
                [sample[8], sample[7]] = measured?;
            }
            if !clean {
                println!("  round {round} discarded: another process attached the syscall tracepoints meanwhile");
                continue;
            }
            for (all, one) in times.iter_mut().zip(sample) {
                all.push(one);
            }
            round += 1;
        }
        Ok(times)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let times = result?;
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let wall: Vec<f64> =
        times.iter().map(|runs| ms(median(&mut runs.iter().map(|run| run.0).collect::<Vec<_>>()))).collect();
    let cpu: Vec<f64> =
        times.iter().map(|runs| ms(median(&mut runs.iter().map(|run| run.1).collect::<Vec<_>>()))).collect();
    println!("open+close loop, {iterations} iterations, {runs} interleaved rounds, medians of CPU time (wall time):");
    let rows = [
        ("not an agent, no daemon", None),
        ("not an agent, daemon (auto) idle", Some((0, "target at most 1.010x"))),
        ("not an agent, daemon (auto) supervising one agent", Some((0, "target at most 1.010x"))),
        ("agent, --standalone --probes off", None),
        ("agent, through the daemon (auto)", Some((3, "vs probes off; target at most 1.050x"))),
        ("not an agent, one --probes notify agent running", Some((0, "target at most 1.010x"))),
        ("agent, --probes notify", Some((3, "vs probes off; target at most 1.050x"))),
        ("not an agent, tracepoint daemon supervising one agent", Some((0, "target at most 1.010x"))),
        ("agent, through a tracepoint daemon", Some((3, "vs probes off; target at most 1.050x"))),
    ];
    for (index, (name, against)) in rows.iter().enumerate() {
        if index >= 5 && !notify {
            println!("  {name:<54} not measured: needs Landlock ABI 7");
            continue;
        }
        let ratio = against.map_or(String::new(), |(base, target)| {
            format!("  {:.3}x ({:.3}x wall), {target}", cpu[index] / cpu[base], wall[index] / wall[base])
        });
        println!("  {name:<54} {:>8.1} ms ({:.1} ms){ratio}", cpu[index], wall[index]);
    }
    Ok(())
}

/// The peers, as `cargo install` names them, and the program each installs.
const PEERS: [(&str, &str); 2] = [("sandlock-cli", "sandlock"), ("nono-cli", "nono")];

/// Installs the peers into `target/bench-tools` (skipped when there).
fn bench_tools(root: &Path) -> Result<std::path::PathBuf> {
    for (krate, program) in PEERS {
        bench_tool(root, krate, program)?;
    }
    Ok(root.join("target/bench-tools/bin"))
}

/// Installs one peer into `target/bench-tools` (skipped when there); its program.
fn bench_tool(root: &Path, krate: &str, program: &str) -> Result<std::path::PathBuf> {
    let tools = root.join("target/bench-tools");
    let installed = tools.join("bin").join(program);
    if installed.is_file() {
        return Ok(installed);
    }
    println!("installing {krate} into {}", tools.display());
    let install = |locked: bool| {
        let mut command = Command::new("cargo");
        command.arg("install").args(locked.then_some("--locked")).arg("--root").arg(&tools).arg(krate);
        command.status().with_context(|| format!("running cargo install {krate}"))
    };
    // A lock file can name a version the registry no longer serves (nono-cli 0.81's
    // names webpki-roots 1.0.11): then the newest compatible versions are used.
    if !install(true)?.success() {
        println!("cargo install --locked {krate} failed; trying without its lock file");
        if !install(false)?.success() {
            bail!("cargo install {krate} failed");
        }
    }
    Ok(installed)
}

/// The default socket and store are root's and the machine's: the benchmark runs in a mount
/// namespace of its own where `/run/governor` is an empty tmpfs (as `/run` is) and
/// `/var/lib/governor` a directory of the benchmark's on disk (commits cost what they cost
/// there), so the daemon a first run starts is the benchmark's alone.
fn private_defaults(state: &Path) -> Result<()> {
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    for dir in ["/run/governor", "/var/lib/governor"] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    }
    // SAFETY: unshare(2) of the mount namespace of this single-threaded process.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        bail!("unshare(CLONE_NEWNS): {} (the benchmark needs root)", std::io::Error::last_os_error());
    }
    let mount = |args: &[&std::ffi::OsStr]| -> Result<()> {
        let status = Command::new("mount").args(args).status().context("running mount")?;
        if !status.success() {
            bail!("mount {args:?} failed");
        }
        Ok(())
    };
    mount(&["--make-rprivate".as_ref(), "/".as_ref()])?;
    mount(&[
        "-t".as_ref(),
        "tmpfs".as_ref(),
        "-o".as_ref(),
        "mode=0700".as_ref(),
        "tmpfs".as_ref(),
        "/run/governor".as_ref(),
    ])?;
    mount(&["--bind".as_ref(), state.as_os_str(), "/var/lib/governor".as_ref()])?;
    Ok(())
}

/// The pid in governor's "started the governor daemon (pid N)".
fn started_daemon(stderr: &str) -> Option<i32> {
    let (_, rest) = stderr.split_once("started the governor daemon (pid ")?;
    rest.split_once(')')?.0.parse().ok()
}

/// SIGTERM, then waits until the process is gone.
fn stop_pid(pid: i32) {
    // SAFETY: kill(2) on a daemon this benchmark started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    // SAFETY: signal 0 only checks that the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn peers(root: &Path, runs: usize, first_runs: usize) -> Result<()> {
    if runs < 50 {
        bail!("--runs {runs}: at least 50 runs of each are needed for a stable median");
    }
    let tools = bench_tools(root)?;
    let governor = root.join("target/release/governor");
    let dir = tempfile_dir()?;
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace)?;
    private_defaults(&dir.join("state"))?;
    let run = |standalone: bool| {
        let mut command = Command::new(&governor);
        command.args(["run", "--trust", "medium", "--workspace"]).arg(&workspace);
        if standalone {
            command.arg("--standalone");
        }
        command.args(["--", "/bin/true"]).env_remove("GOVERNOR_AUDIT_DB").env_remove("GOVERNOR_SOCKET");
        command
    };
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;

    // A new user's first command: no daemon runs; it starts one.
    let mut first = Vec::with_capacity(first_runs);
    let mut daemon = None;
    for index in 0..first_runs.max(1) {
        let start = Instant::now();
        let output = run(false).stdin(Stdio::null()).output().context("running governor")?;
        let elapsed = start.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let Some(pid) = started_daemon(&stderr).filter(|_| output.status.success()) else {
            bail!("the first run did not start a daemon ({}): {stderr}", output.status);
        };
        first.push(elapsed);
        if index + 1 < first_runs {
            stop_pid(pid);
        } else {
            daemon = Some(pid);
        }
    }

    let bare = || {
        let mut command = Command::new("/bin/true");
        command.current_dir(&workspace);
        command
    };
    // The same access for each: write the workspace, read and execute the system.
    let sandlock = || {
        let mut command = Command::new(tools.join("sandlock"));
        command.arg("run");
        for dir in ["/usr", "/lib", "/lib64", "/bin", "/etc"] {
            command.args(["-r", dir]);
        }
        command.arg("-w").arg(&workspace).args(["--", "/bin/true"]).current_dir(&workspace);
        command
    };
    let nono = || {
        let mut command = Command::new(tools.join("nono"));
        command.args(["run", "--silent", "--allow"]).arg(&workspace);
        for dir in ["/usr", "/lib", "/lib64", "/bin", "/etc"] {
            command.args(["--read", dir]);
        }
        command.args(["--", "/bin/true"]).current_dir(&workspace);
        command
    };
    let names = [
        "bare /bin/true",
        "sandlock run (-r system dirs, -w workspace)",
        "nono run (--read system dirs, --allow workspace)",
        "governor run --standalone (loads the probes)",
        "governor run (through the daemon)",
    ];
    let result = (|| -> Result<[Vec<Duration>; 5]> {
        let mut commands: [Box<dyn Fn() -> Command>; 5] =
            [Box::new(bare), Box::new(sandlock), Box::new(nono), Box::new(|| run(true)), Box::new(|| run(false))];
        for command in &mut commands {
            for _ in 0..5 {
                time(&mut command())?;
            }
        }
        let mut times: [Vec<Duration>; 5] = Default::default();
        for _ in 0..runs {
            for (times, command) in times.iter_mut().zip(&commands) {
                times.push(time(&mut command())?);
            }
        }
        Ok(times)
    })();
    if let Some(pid) = daemon {
        stop_pid(pid);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut times = result?;
    let medians: Vec<Duration> = times.iter_mut().map(|times| median(times)).collect();
    println!("launch against the peers, {runs} interleaved runs each, the same access (trust medium for governor):");
    for ((name, median), times) in names.iter().zip(&medians).zip(&times) {
        let added = ms(*median) - ms(medians[0]);
        println!(
            "  {name:<50} median {:>8.3} ms (p90 {:>8.3} ms)  added {added:>8.3} ms",
            ms(*median),
            ms(percentile(times, 90))
        );
    }
    let first_median = median(&mut first);
    println!(
        "  a new user's first governor run (starts the daemon), median of {}: {:.3} ms (added {:.3} ms); later runs as above",
        first.len(),
        ms(first_median),
        ms(first_median) - ms(medians[0])
    );
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("governor-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

/// `times` must be sorted.
fn percentile(times: &[Duration], pct: usize) -> Duration {
    times[(times.len() * pct / 100).min(times.len() - 1)]
}

/// The `attempt` helper of the end-to-end tests: its `flood PATH N` op is the loop.
fn attempt_bin(root: &Path) -> Result<std::path::PathBuf> {
    let status = Command::new("cargo")
        .current_dir(root)
        .args(["build", "--release", "-p", "governor-tests", "--bin", "attempt"])
        .status()
        .context("building attempt")?;
    if !status.success() {
        bail!("building attempt failed");
    }
    Ok(root.join("target/release/attempt"))
}

fn probes(root: &Path, iterations: u64, runs: usize) -> Result<()> {
    let governor = root.join("target/release/governor");
    let attempt = attempt_bin(root)?;
    let workspace = tempfile_dir()?;
    let target = workspace.join("flood.txt");
    std::fs::write(&target, "x").with_context(|| format!("writing {}", target.display()))?;
    let helper = workspace.join("attempt");
    std::fs::copy(&attempt, &helper).with_context(|| format!("copying {}", attempt.display()))?;
    let count = iterations.to_string();
    let flood = |probes: Option<&str>| {
        let mut command = match probes {
            None => Command::new(&helper),
            Some(probes) => {
                let mut command = Command::new(&governor);
                command
                    .args(["run", "--trust", "low", "--probes", probes, "--best-effort", "--workspace"])
                    .arg(&workspace)
                    .arg("--")
                    .arg(&helper);
                command
            }
        };
        command.args(["flood"]).arg(&target).arg(&count).stderr(Stdio::null());
        command
    };
    let mut bare = Vec::new();
    let mut off = Vec::new();
    let mut tracepoint = Vec::new();
    for _ in 0..runs {
        bare.push(time(&mut flood(None))?);
        off.push(time(&mut flood(Some("off")))?);
        tracepoint.push(time(&mut flood(Some("auto")))?);
    }
    let _ = std::fs::remove_dir_all(&workspace);
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let (bare, off, tracepoint) = (median(&mut bare), median(&mut off), median(&mut tracepoint));
    println!("open+close loop, {iterations} iterations, {runs} interleaved runs each (medians):");
    println!("  bare:                          {:.1} ms", ms(bare));
    println!("  governor --probes off:         {:.1} ms ({:.3}x bare)", ms(off), ms(off) / ms(bare));
    println!(
        "  governor --probes auto:        {:.1} ms ({:.3}x bare, {:.3}x probes off)",
        ms(tracepoint),
        ms(tracepoint) / ms(bare),
        ms(tracepoint) / ms(off)
    );
    println!("  events: {:.0} per second delivered", iterations as f64 / tracepoint.as_secs_f64());
    Ok(())
}

fn freeze(root: &Path, runs: usize) -> Result<()> {
    use std::io::{BufRead as _, BufReader};

    if runs < 20 {
        bail!("--runs {runs}: at least 20 runs are needed for a p99");
    }
    let governor = root.join("target/release/governor");
    let dir = tempfile_dir()?;
    let (home, workspace) = (dir.join("home"), dir.join("workspace"));
    std::fs::create_dir_all(home.join(".ssh")).context("creating the home")?;
    std::fs::create_dir_all(&workspace).context("creating the workspace")?;
    std::fs::write(home.join(".ssh/id_ed25519"), "key").context("writing the key")?;
    // A program named like a network tool; what it does does not matter.
    std::fs::copy("/bin/true", workspace.join("nc")).context("copying /bin/true")?;
    let store = dir.join("audit.db");
    let mut latencies = Vec::with_capacity(runs);
    // Runs where the kernel held the tool at its exec: it ran no instruction before the
    // freeze, however long the freeze took.
    let mut held = 0;
    for run in 0..runs {
        let id = format!("freeze-bench-{}-{run}", std::process::id());
        let mut child = Command::new(&governor)
            .arg("--audit-db")
            .arg(&store)
            .args(["run", "--trust", "medium", "--best-effort", "--agent-id", &id, "--workspace"])
            .arg(&workspace)
            .args(["--", "sh", "-c", "cat ~/.ssh/id_ed25519 2>/dev/null; ./nc; sleep 60"])
            .env("HOME", &home)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting governor")?;
        let stderr = child.stderr.take().context("governor's stderr")?;
        let mut latency = None;
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading governor's stderr")?;
            if let Some((_, rest)) = line.split_once(", frozen ") {
                latency = rest.split_once(" µs").and_then(|(us, _)| us.parse::<u64>().ok());
                held += usize::from(rest.contains("stopped in the kernel at the exec"));
                let _ = Command::new(&governor).args(["--audit-db"]).arg(&store).args(["kill", &id]).output();
            }
        }
        let status = child.wait().context("waiting for governor")?;
        match latency {
            Some(us) => latencies.push(Duration::from_micros(us)),
            None => bail!("run {run}: the agent was not suspended ({status})"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort_unstable();
    let us = |duration: Duration| duration.as_secs_f64() * 1e6;
    println!("event-to-frozen, {runs} agents suspended by network-tool-after-secret (exec of ./nc after ~/.ssh):");
    println!(
        "  p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        us(percentile(&latencies, 50)),
        us(percentile(&latencies, 90)),
        us(percentile(&latencies, 99)),
        us(latencies[latencies.len() - 1])
    );
    println!("  the tool held in the kernel at its exec (no instruction run before the freeze): {held} of {runs}");
    Ok(())
}
