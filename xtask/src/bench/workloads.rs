//! `cargo xtask bench workloads`: the workload suite's steps (tests/tests/workloads.rs) timed
//! bare, under `governor run --trust medium` standalone and through a private daemon, and
//! under Sandlock with the same access. Every run gets a fresh workspace; in each round every
//! step runs in each variant in turn (bare, standalone, daemon, Sandlock), so the machine's
//! drifting load falls on all of them alike.
//!
//! Registries: a first round, not timed, runs every step in every variant online and so
//! fills each variant's own caches (npm's cache, cargo's registry; pip installs from a wheel
//! directory downloaded once before it). The timed rounds then install offline from those
//! caches (`npm install --offline`, `cargo build --offline`, `pip install --no-index
//! --find-links`): what is measured is the work on this machine, not the registries'
//! latency, and each variant does the same work.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{median, start_daemon, stop, syscall_tracers, tempfile_dir};

/// One step: its name, what it does (for the table), and its script. `$NPM_MODE` and
/// `$CARGO_MODE` are empty in the round that fills the caches and the offline flags after.
struct Step {
    name: &'static str,
    what: &'static str,
    script: &'static str,
}

const STEPS: [Step; 7] = [
    Step {
        name: "pip",
        what: "python3 -m venv + pip install six (local wheel, pip's cache on)",
        script: "python3 -m venv v\nv/bin/pip install -q --no-index --find-links wheels six\nv/bin/python -c 'import six'",
    },
    Step { name: "pytest", what: "pytest on one test file", script: "pytest -q test_sum.py >/dev/null" },
    Step {
        name: "npm",
        what: "npm init + npm install is-number + node -e require",
        script: "npm init -y >/dev/null\nnpm install -s --no-audit --no-fund $NPM_MODE is-number\nnode -e 'require(\"is-number\")(5) || process.exit(1)'",
    },
    Step {
        name: "cargo",
        what: "cargo new + itoa dependency + cargo build",
        script: "cargo new -q --vcs none hello\ncd hello\nprintf 'itoa = \"1\"\\n' >> Cargo.toml\nprintf 'fn main() { println!(\"{}\", itoa::Buffer::new().format(42)); }\\n' > src/main.rs\ncargo build -q $CARGO_MODE\n./target/debug/hello >/dev/null",
    },
    Step {
        name: "git",
        what: "git init, add, commit, log",
        script: "git init -q repo\ncd repo\necho hello > a.txt\ngit add a.txt\ngit -c user.name=agent -c user.email=agent@example.com commit -q -m first\ngit log --oneline | grep -q first",
    },
    Step {
        name: "make",
        what: "gcc + make of a C file",
        script: "printf '#include <stdio.h>\\nint main(void) { puts(\"ok\"); return 0; }\\n' > hello.c\nprintf 'hello: hello.c\\n\\tgcc -O2 -o hello hello.c\\n' > Makefile\nmake -s\n./hello >/dev/null",
    },
    Step { name: "ls", what: "ls /etc and ls ~", script: "ls /etc >/dev/null\nls ~ >/dev/null" },
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Bare,
    Standalone,
    Daemon,
    Sandlock,
}

const VARIANTS: [Variant; 4] = [Variant::Bare, Variant::Standalone, Variant::Daemon, Variant::Sandlock];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::Standalone => "standalone",
            Variant::Daemon => "daemon",
            Variant::Sandlock => "sandlock",
        }
    }
}

/// Where everything of one benchmark run lives.
struct Bench {
    dir: PathBuf,
    governor: PathBuf,
    sandlock: PathBuf,
    socket: PathBuf,
    home: PathBuf,
    /// The machine's environment, without what cargo and rustup added to run this xtask.
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl Bench {
    /// The store (and, beside it, governor's persistent caches) of a governor variant.
    fn store(&self, variant: Variant) -> PathBuf {
        self.dir.join(variant.name()).join("audit.db")
    }

    /// The caches of bare and Sandlock runs, laid out as governor lays out an agent's
    /// (`XDG_CACHE_HOME`, `npm_config_cache` and `CARGO_HOME` in one directory).
    fn cache(&self, variant: Variant) -> PathBuf {
        self.dir.join(variant.name()).join("cache")
    }

    /// The command for `step` in `variant`, in `workspace`.
    fn command(&self, variant: Variant, step: &Step, workspace: &Path, online: bool) -> Command {
        let script = format!("set -e\n{}\n", step.script);
        let mut command = match variant {
            Variant::Bare => Command::new("bash"),
            Variant::Standalone | Variant::Daemon => {
                let mut command = Command::new(&self.governor);
                if variant == Variant::Daemon {
                    command.arg("--socket").arg(&self.socket);
                }
                command.arg("--audit-db").arg(self.store(variant));
                command.args(["run", "--trust", "medium", "--cache", "persist", "--agent-id"]);
                command.arg(format!("wl-bench-{}-{}", variant.name(), step.name));
                command.arg("--workspace").arg(workspace);
                if variant == Variant::Standalone {
                    command.args(["--standalone", "--probes", "auto"]);
                }
                command.args(["--", "bash"]);
                command
            }
            Variant::Sandlock => {
                let mut command = Command::new(&self.sandlock);
                command.arg("run");
                for dir in sandlock_reads(&self.home, step) {
                    command.arg("-r").arg(dir);
                }
                command.arg("-w").arg(workspace).arg("-w").arg(self.cache(variant)).args(["-w", "/dev/null"]);
                if online {
                    // What ring medium allows: HTTPS and the resolvers.
                    command.args(["--net-allow", ":443", "--net-allow", ":53", "--net-allow", "udp://*:53"]);
                }
                command.args(["--", "bash"]);
                command
            }
        };
        command.args(["-c", &script]).current_dir(workspace).env_clear().envs(self.env.iter().cloned());
        command.env("HOME", &self.home);
        command.env("NPM_MODE", if online { "--prefer-online" } else { "--offline" });
        command.env("CARGO_MODE", if online { "" } else { "--offline" });
        if matches!(variant, Variant::Bare | Variant::Sandlock) {
            let cache = self.cache(variant);
            command.env("XDG_CACHE_HOME", cache.join("xdg"));
            command.env("npm_config_cache", cache.join("npm"));
            command.env("CARGO_HOME", cache.join("cargo"));
            command.env("TMPDIR", cache.join("tmp"));
        }
        command
    }
}

/// What Sandlock may read for the same access as ring medium: the system, the user's
/// toolchains (rustup, pyenv, `~/.cargo/bin`), and for `ls ~` all of the home: Sandlock
/// cannot grant listing a directory without reading all of it, so that step runs with more
/// access than governor gives (the secrets in it readable).
fn sandlock_reads(home: &Path, step: &Step) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/opt", "/proc", "/dev", "/sys/devices/system/cpu"]
            .iter()
            .map(PathBuf::from)
            .collect();
    if step.name == "ls" {
        dirs.push(home.to_path_buf());
    } else {
        dirs.extend([".rustup", ".cargo/bin", ".pyenv", ".local/bin", ".gitconfig"].iter().map(|part| home.join(part)));
    }
    dirs.retain(|dir| dir.exists());
    dirs
}

/// Makes the fresh workspace of one run (not timed): what the step starts from.
fn workspace(bench: &Bench, index: usize, step: &Step) -> Result<PathBuf> {
    let workspace = bench.dir.join("workspaces").join(format!("{index}-{}", step.name));
    std::fs::create_dir_all(&workspace).with_context(|| format!("creating {}", workspace.display()))?;
    match step.name {
        "pip" => {
            let wheels = workspace.join("wheels");
            std::fs::create_dir_all(&wheels)?;
            for entry in std::fs::read_dir(bench.dir.join("wheels"))? {
                let entry = entry?;
                std::fs::copy(entry.path(), wheels.join(entry.file_name()))?;
            }
        }
        "pytest" => std::fs::write(workspace.join("test_sum.py"), "def test_sum():\n    assert sum([1, 2]) == 3\n")?,
        _ => {}
    }
    Ok(workspace)
}

/// Wall time and CPU time (user + system of the command and the children it waited for).
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

/// Runs `command`; its times, or the end of what it wrote on stderr when it failed.
fn timed(mut command: Command, log: &Path) -> Result<std::result::Result<Sample, String>> {
    let stderr = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let start = Instant::now();
    let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn().context("spawning")?;
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 on our own child, which is not waited for
    // elsewhere (the `Child` is dropped unwaited, which does nothing).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    if pid < 0 {
        bail!("waiting for {command:?}: {}", std::io::Error::last_os_error());
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        let timeval = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
        return Ok(Ok(Sample { wall, cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime) }));
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
    let tail = tail[tail.len().saturating_sub(3)..].join(" / ");
    Ok(Err(format!("wait status {status}: {tail}")))
}

/// The environment the steps run with: the machine's, as the workload suite uses it.
fn machine_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(name, _)| {
            let name = name.to_string_lossy();
            !(name.starts_with("CARGO")
                || name.starts_with("GOVERNOR_")
                || ["RUSTUP_TOOLCHAIN", "RUST_RECURSION_COUNT", "LD_LIBRARY_PATH"].contains(&&*name))
        })
        .collect()
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub fn run(root: &Path, runs: usize) -> Result<()> {
    if runs < 3 {
        bail!("--runs {runs}: at least 3 rounds are needed for a median");
    }
    let sandlock = super::bench_tool(root, "sandlock-cli", "sandlock")?;
    let dir = tempfile_dir()?;
    let home = std::env::var_os("HOME").map(PathBuf::from).context("HOME is not set")?;
    let bench = Bench {
        governor: root.join("target/release/governor"),
        sandlock,
        socket: PathBuf::from(format!("/run/governor/bench-workloads-{}.sock", std::process::id())),
        home,
        env: machine_env(),
        dir,
    };
    for variant in [Variant::Bare, Variant::Sandlock] {
        for part in ["xdg", "npm", "cargo", "tmp"] {
            std::fs::create_dir_all(bench.cache(variant).join(part))?;
        }
    }
    println!("machine: {} cores, load {}", command_output("nproc", &[]), command_output("cat", &["/proc/loadavg"]));
    println!(
        "kernel {}; {}",
        command_output("uname", &["-r"]),
        command_output(&bench.sandlock.to_string_lossy(), &["--version"])
    );
    let tracers = syscall_tracers(&[]);
    if !tracers.is_empty() {
        println!("note: processes {tracers:?} hold the syscall tracepoints: every variant pays them");
    }
    // The wheel every pip run installs from, downloaded once.
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "-q", "--no-deps", "-d"])
        .arg(bench.dir.join("wheels"))
        .arg("six")
        .envs(bench.env.iter().cloned())
        .status()
        .context("running pip download")?;
    if !status.success() {
        bail!("pip download six failed");
    }
    let result = rounds(&bench, runs);
    let _ = std::fs::remove_dir_all(&bench.dir);
    let (times, taxed) = result?;
    report(&times, runs, taxed);
    Ok(())
}

/// `times[step][variant]`: the samples, or why the step failed in that variant.
type Times = Vec<Vec<std::result::Result<Vec<Sample>, String>>>;

/// Round 0 fills the caches and is not timed. In each round every step runs in every
/// variant, one after the other, so that a step's variants are timed close together. The
/// daemon runs throughout, as it does on a machine governor is installed on: idle, it holds
/// no syscall tracepoint (they come with the first agent it watches and go with the last),
/// so the other variants do not pay for it.
fn rounds(bench: &Bench, runs: usize) -> Result<(Times, usize)> {
    let mut times: Times = STEPS.iter().map(|_| VARIANTS.iter().map(|_| Ok(Vec::new())).collect()).collect();
    std::fs::create_dir_all(bench.dir.join("daemon"))?;
    let daemon = start_daemon(&bench.governor, &bench.socket, &bench.store(Variant::Daemon))?;
    let own = [daemon.id()];
    let mut index = 0;
    // Timed runs that started while another process held the syscall tracepoints.
    let mut taxed = 0;
    let result = (|| -> Result<()> {
        for round in 0..=runs {
            let online = round == 0;
            print!("{} ", if online { "filling the caches:".to_owned() } else { format!("round {round}:") });
            for (row, step) in STEPS.iter().enumerate() {
                for (column, variant) in VARIANTS.into_iter().enumerate() {
                    if times[row][column].is_err() {
                        continue;
                    }
                    index += 1;
                    let workspace = workspace(bench, index, step)?;
                    let log = bench.dir.join("workspaces").join(format!("{index}-{}.log", step.name));
                    if !online && !syscall_tracers(&own).is_empty() {
                        taxed += 1;
                    }
                    let outcome = timed(bench.command(variant, step, &workspace, online), &log)?;
                    let _ = std::fs::remove_dir_all(&workspace);
                    match (outcome, &mut times[row][column]) {
                        (Ok(sample), Ok(list)) if !online => list.push(sample),
                        (Ok(_), _) => {}
                        (Err(why), slot) => *slot = Err(why),
                    }
                }
                print!("{} ", step.name);
                let _ = std::io::Write::flush(&mut std::io::stdout());
            }
            println!();
        }
        Ok(())
    })();
    stop(daemon);
    result.map(|()| (times, taxed))
}

fn report(times: &Times, runs: usize, taxed: usize) {
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let medians = |cell: &std::result::Result<Vec<Sample>, String>| match cell {
        Ok(list) if !list.is_empty() => {
            let mut wall: Vec<Duration> = list.iter().map(|sample| sample.wall).collect();
            let mut cpu: Vec<Duration> = list.iter().map(|sample| sample.cpu).collect();
            Ok((median(&mut wall), median(&mut cpu)))
        }
        Ok(_) => Err("not measured".to_owned()),
        Err(why) => Err(format!("failed: {}", why.replace('|', "/"))),
    };
    println!();
    println!(
        "workload steps, {runs} interleaved rounds: medians of wall time (ratio to bare), then of CPU time (ratio to bare):"
    );
    println!();
    println!("| step | bare | governor standalone | governor through the daemon | Sandlock |");
    println!("|---|---:|---:|---:|---:|");
    for (step, row) in STEPS.iter().zip(times) {
        let cells: Vec<_> = row.iter().map(medians).collect();
        let mark = if step.name == "ls" { "¹" } else { "" };
        let mut line = format!("| {}{mark} ({}) |", step.name, step.what);
        for (column, cell) in cells.iter().enumerate() {
            match (cell, &cells[0]) {
                (Ok((wall, cpu)), Ok((bare_wall, bare_cpu))) if column > 0 => line.push_str(&format!(
                    " {:.1} ms ({:.3}x); CPU {:.1} ms ({:.3}x) |",
                    ms(*wall),
                    wall.as_secs_f64() / bare_wall.as_secs_f64(),
                    ms(*cpu),
                    cpu.as_secs_f64() / bare_cpu.as_secs_f64()
                )),
                (Ok((wall, cpu)), _) => line.push_str(&format!(" {:.1} ms; CPU {:.1} ms |", ms(*wall), ms(*cpu))),
                (Err(why), _) => line.push_str(&format!(" {why} |")),
            }
        }
        println!("{line}");
    }
    println!();
    println!(
        "¹ Sandlock cannot let ~ be listed without letting all of it be read: its `ls` run reads the whole home (secrets included), more access than ring medium gives."
    );
    println!(
        "CPU time is the command's and its waited-for children's: a standalone run's includes its supervisor, a run through the daemon's does not include the daemon's work on its events."
    );
    println!(
        "{taxed} of the timed runs started while a process other than this benchmark's daemon held the syscall tracepoints (their cost falls on every variant alike)."
    );
}
