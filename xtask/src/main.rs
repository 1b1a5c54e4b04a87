//! `cargo xtask`: set up a machine, build, run, test and benchmark governor.
//!
//! Every command first installs what is missing (idempotently): the nightly toolchain's
//! `rust-src` and `bpf-linker` 0.10.1 for the eBPF programs, and the Debian packages the
//! tests use. Nothing is downloaded outside the package registries.

mod bench;
mod install;
mod setup;
mod vm;
mod vm_bench;

use std::{
    ffi::OsString,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run, test and benchmark governor")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent).
    Setup,
    /// Set up, build the release binary and run it: `cargo xtask run -- run --trust medium -- CMD`.
    Run {
        #[arg(last = true, required = true)]
        args: Vec<OsString>,
    },
    /// Set up, then run clippy, the unit tests and the end-to-end tests.
    Test,
    /// Run tests on one of Debian's kernels under QEMU: 6.1 runs the LSM tests, 6.12 (BPF LSM
    /// and Landlock ABI 6) the escape suite with `--probes lsm` and the end-to-end suites.
    VmTest {
        /// Which kernel.
        #[arg(long, value_enum, default_value = "6.1")]
        kernel: vm::Kernel,
        /// Seconds before the VM is given up on.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Virtual CPUs (each one a host thread under TCG).
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// Run only these suites (test file names), e.g. `--suite escape`.
        #[arg(long)]
        suite: Vec<String>,
        /// Run a benchmark in the VM instead of the suites: `host-tax` times an open+close
        /// loop of a process outside any agent, with the daemon stopped and running.
        #[arg(long, value_enum)]
        bench: Option<VmBench>,
        /// host-tax: rounds of interleaved runs.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// host-tax: open+close iterations per run.
        #[arg(long, default_value_t = 50_000)]
        opens: u64,
        /// host-tax: the daemons' `--probes`, each timed idle and with one agent.
        #[arg(long, value_delimiter = ',', default_value = "auto,fentry")]
        probes: Vec<String>,
    },
    /// Build the release binary and install it, the systemd unit and the policies.
    Install {
        /// Where the binary goes (PREFIX/bin/governor).
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// Stage everything under this directory instead of /.
        #[arg(long, default_value = "/")]
        destdir: PathBuf,
    },
    /// Remove the binary, the systemd unit and the daemon's pinned probe links (policies,
    /// settings and the audit store stay unless --purge).
    Uninstall {
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        #[arg(long, default_value = "/")]
        destdir: PathBuf,
        /// Also remove /etc/governor and /var/lib/governor (the audit store).
        #[arg(long)]
        purge: bool,
    },
    /// Benchmarks; figures go into BENCHMARKS.md.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

/// A benchmark run in the VM (`vm-test --bench`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum VmBench {
    HostTax,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let root = workspace_root();
    match cli.command {
        Task::Setup => {
            setup::all()?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Run { args } => {
            setup::all()?;
            cargo(&root, &["build", "--release", "-p", "governor"])?;
            let status = Command::new(root.join("target/release/governor"))
                .args(&args)
                .status()
                .context("starting target/release/governor")?;
            Ok(ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)))
        }
        Task::Test => {
            setup::all()?;
            test(&root)?;
            Ok(ExitCode::SUCCESS)
        }
        Task::VmTest { kernel, timeout, cpus, bench: Some(VmBench::HostTax), rounds, opens, probes, .. } => {
            setup::all()?;
            let boot = vm::Boot { kernel, cpus, timeout: Duration::from_secs(timeout) };
            vm_bench::host_tax(&root, &boot, rounds, opens, &probes)?;
            Ok(ExitCode::SUCCESS)
        }
        Task::VmTest { kernel, timeout, cpus, suite, bench: None, .. } => {
            setup::all()?;
            let mut tally = Tally::default();
            let boot = vm::Boot { kernel, cpus, timeout: Duration::from_secs(timeout) };
            let result = vm_test(&root, &boot, &suite, &mut tally);
            tally.report_failures();
            println!(
                "tests: {} passed, {} failed, {} skipped",
                tally.passed.saturating_sub(tally.skips.len()),
                tally.failed,
                tally.skips.len()
            );
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Install { prefix, destdir } => {
            setup::all()?;
            cargo(&root, &["build", "--release", "-p", "governor"])?;
            install::install(&root, &root.join("target/release/governor"), &prefix, &destdir)?;
            println!("xtask: `systemctl daemon-reload && systemctl enable --now governor` starts the daemon");
            Ok(ExitCode::SUCCESS)
        }
        Task::Uninstall { prefix, destdir, purge } => {
            install::uninstall(&prefix, &destdir, purge)?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Bench { which } => {
            setup::all()?;
            cargo(&root, &["build", "--release", "-p", "governor"])?;
            bench::run(&root, which)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn test(root: &Path) -> Result<()> {
    cargo(root, &["clippy", "--all-targets", "--quiet", "--", "-D", "warnings"])?;
    cargo(root, &["build", "-p", "governor", "-p", "governor-tests", "--bins"])?;
    let governor = root.join("target/debug/governor");
    let test_store = root.join("target/test-audit.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", test_store.display()));
    }
    // --show-output prints what passing tests printed, so a kernel-dependent test that
    // skipped says so, and the skip is counted as a skip below, not as a pass.
    let mut child = Command::new("cargo")
        .current_dir(root)
        .args(["test", "--no-fail-fast", "--", "--show-output"])
        .env("GOVERNOR_BIN", &governor)
        // The tests' agents are audited in a store of their own, not the machine's.
        .env("GOVERNOR_AUDIT_DB", &test_store)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let mut tally = Tally::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            tally.add(&line);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    // The BPF LSM backend on 6.1, and every layer at once on 6.12; one VM at a time.
    let mut vm = Ok(());
    for kernel in [vm::Kernel::V6_1, vm::Kernel::V6_12] {
        let boot = vm::Boot { kernel, cpus: 1, timeout: Duration::from_secs(3600) };
        if let Err(error) = vm_test(root, &boot, &[], &mut tally) {
            println!("xtask: the {} VM failed: {error:#}", kernel.name());
            vm = Err(error);
        }
    }
    for skip in &tally.skips {
        println!("skipped: {skip}");
    }
    tally.report_failures();
    let skipped = tally.skips.len();
    println!("tests: {} passed, {} failed, {skipped} skipped", tally.passed.saturating_sub(skipped), tally.failed);
    if !status.success() || tally.failed > 0 {
        bail!("cargo test failed ({status})");
    }
    vm?;
    if tally.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// A test file of `tests/tests/` run in the VM, with what its command line adds.
struct Suite {
    test: &'static str,
    /// Environment for the test binary.
    env: &'static str,
    /// libtest options.
    args: &'static str,
}

/// 6.1 has BPF LSM but Landlock ABI 2: the tests of what the LSM hooks add, with
/// `--best-effort`. One thread: a test there waits for any agent to be running.
const ON_6_1: &[Suite] =
    &[Suite { test: "lsm", env: "", args: "--test-threads=1" }, Suite { test: "fentry", env: "", args: "" }];

/// 6.12 enforces every ring fully with BPF LSM: the escape suite with `--probes lsm`
/// (`GOVERNOR_PROBES`, read by the tests' harness), then the end-to-end suites, whose
/// `--probes auto` picks the LSM backend there, and the LSM tests.
const ON_6_12: &[Suite] = &[
    Suite { test: "escape", env: "GOVERNOR_PROBES=lsm", args: "" },
    Suite { test: "run", env: "", args: "" },
    Suite { test: "probes", env: "", args: "" },
    Suite { test: "engine", env: "", args: "" },
    Suite { test: "audit", env: "", args: "" },
    Suite { test: "daemon", env: "", args: "" },
    Suite { test: "lsm", env: "", args: "--test-threads=1" },
    Suite { test: "fentry", env: "", args: "" },
];

/// Host tools the suites run that busybox lacks or has in a form they cannot use (busybox's
/// `timeout` execs the command in its own process and watches from a child: a test that
/// finds governor as timeout's grandchild needs coreutils').
const VM_TOOLS: [&str; 7] = ["setpriv", "unshare", "ipcmk", "ipcrm", "sqlite3", "git", "timeout"];

/// Marks the start and end (with the exit status) of a suite in the VM's output.
const SUITE_MARKER: &str = "GOVERNOR-VM-SUITE";

/// Builds the kernel's suites (or `only` of them) and runs them in one boot of the VM;
/// their result lines are counted with the host's. Prints each suite's time, what
/// `governor check` said there, and a summary naming the kernel, Landlock ABI and backend.
fn vm_test(root: &Path, boot: &vm::Boot, only: &[String], tally: &mut Tally) -> Result<()> {
    let suites: Vec<&Suite> = match boot.kernel {
        vm::Kernel::V6_1 => ON_6_1,
        vm::Kernel::V6_12 => ON_6_12,
    }
    .iter()
    .filter(|suite| only.is_empty() || only.iter().any(|name| name == suite.test))
    .collect();
    if suites.is_empty() {
        bail!("no such suite for {}: {}", boot.kernel.name(), only.join(", "));
    }
    cargo(root, &["build", "--release", "-p", "governor", "-p", "governor-tests", "--bins"])?;
    let mut args = vec!["test", "--release", "-p", "governor-tests", "--no-run", "--message-format=json"];
    for suite in &suites {
        args.extend(["--test", suite.test]);
    }
    let output = Command::new("cargo")
        .current_dir(root)
        .args(&args)
        .stderr(Stdio::inherit())
        .output()
        .context("building the VM's tests")?;
    if !output.status.success() {
        bail!("building the VM's tests failed");
    }
    let messages: Vec<serde_json::Value> =
        String::from_utf8_lossy(&output.stdout).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let mut guest = vm::Guest::default();
    guest.binary(&root.join("target/release/governor"), "/bin/governor")?;
    guest.binary(&root.join("target/release/attempt"), "/bin/attempt")?;
    let mut command = String::from("echo 'governor check:'; governor check; failed=0\n");
    for suite in &suites {
        let executable = messages
            .iter()
            .filter(|message| message["target"]["name"] == suite.test)
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .with_context(|| format!("cargo did not say where the {} test binary is", suite.test))?;
        guest.binary(&executable, &format!("/bin/test-{}", suite.test))?;
        let name = suite.test;
        command.push_str(&format!(
            "echo '{SUITE_MARKER} {name}'; {env} /bin/test-{name} {args} --show-output; rc=$?; \
             echo \"{SUITE_MARKER}-END {name} $rc\"; [ $rc = 0 ] || failed=1\n",
            env = suite.env,
            args = suite.args,
        ));
    }
    command.push_str("[ $failed = 0 ]");
    if boot.kernel == vm::Kernel::V6_12 {
        for tool in VM_TOOLS {
            guest.tool(tool)?;
        }
        // The host's /bin/sh (dash on Debian), as on the machines governor runs on: busybox's
        // shell runs its applets as /proc/self/exe, so an agent's `cat` would be recorded as
        // that rather than as the program on PATH.
        guest.binary(&fs::canonicalize("/bin/sh").context("/bin/sh")?, "/bin/sh")?;
        guest.python()?;
        // What the tests read from the repository, at the paths they were built with
        // (`tests/../policies`: the tests directory must exist for `..` to resolve).
        guest.directory(&root.join("tests"));
        for tree in ["policies", "dist"] {
            guest.tree(&root.join(tree))?;
        }
        let templates = Path::new("/usr/share/git-core/templates");
        if templates.exists() {
            guest.tree(templates)?;
        }
    }
    println!("xtask: booting Debian's {} kernel under QEMU for: {}", boot.kernel.name(), {
        let names: Vec<&str> = suites.iter().map(|suite| suite.test).collect();
        names.join(", ")
    });
    let mut summary = VmSummary::default();
    let code = vm::run_in_vm(root, boot, guest, &command, |line| {
        println!("vm: {line}");
        tally.add(line);
        summary.add(line);
    })?;
    println!("xtask: {}", summary.report(boot.kernel));
    if code != 0 {
        bail!("tests failed in the {} VM (exit {code})", boot.kernel.name());
    }
    // The VM's kernel is there for BPF LSM: a test that skips because the LSM programs do
    // not load is a failure here (a program the verifier refuses would otherwise pass as
    // seven skips), not a skip.
    if let Some(reason) = summary.lsm_missing {
        bail!("the BPF LSM or fentry programs did not load in the {} VM: {reason}", boot.kernel.name());
    }
    Ok(())
}

/// What the VM said about itself, and how long each suite took (timed here, on the host).
#[derive(Default)]
struct VmSummary {
    kernel: Option<String>,
    landlock: Option<String>,
    backend: Option<String>,
    current: Option<(String, std::time::Instant)>,
    times: Vec<(String, f64, String)>,
    total: Option<String>,
    /// A test skipped because `--probes lsm` or `--probes fentry` did not load: why.
    lsm_missing: Option<String>,
}

impl VmSummary {
    fn add(&mut self, line: &str) {
        if let Some(skip) = line.trim().strip_prefix("skipping ")
            && let Some((_, reason)) = skip.split_once("--probes lsm:").or_else(|| skip.split_once("--probes fentry:"))
            && self.lsm_missing.is_none()
        {
            let reason: String = reason.trim().chars().take(300).collect();
            self.lsm_missing = Some(reason);
        }
        if let Some(rest) = line.strip_prefix("kernel ").filter(|_| self.kernel.is_none()) {
            self.kernel = rest.split(',').next().map(str::to_owned);
        } else if let Some(abi) = line.strip_prefix("Landlock ABI: ") {
            self.landlock = Some(abi.trim().to_owned());
        } else if let Some(backend) = line.strip_prefix("probes: ").and_then(|rest| rest.strip_suffix(" backend loads"))
        {
            // check prints the backend `auto` picks first.
            self.backend.get_or_insert_with(|| backend.to_owned());
        } else if let Some(rest) = line.strip_prefix(&format!("{SUITE_MARKER}-END ")) {
            let (name, code) = rest.split_once(' ').unwrap_or((rest, "?"));
            if let Some((_, started)) = self.current.take() {
                self.times.push((name.to_owned(), started.elapsed().as_secs_f64(), code.to_owned()));
            }
        } else if let Some(name) = line.strip_prefix(&format!("{SUITE_MARKER} ")) {
            self.current = Some((name.to_owned(), std::time::Instant::now()));
        } else if let Some(total) = line.strip_prefix("xtask: VM ran ") {
            self.total = Some(total.to_owned());
        }
    }

    fn report(&self, kernel: vm::Kernel) -> String {
        let unknown = || "?".to_owned();
        let times: Vec<String> = self
            .times
            .iter()
            .map(|(name, seconds, code)| {
                format!("{name} {seconds:.0} s{}", if code == "0" { String::new() } else { format!(" (exit {code})") })
            })
            .collect();
        format!(
            "VM {}: kernel {}, Landlock ABI {}, probe backend {}; {}; VM ran {}",
            kernel.name(),
            self.kernel.clone().unwrap_or_else(unknown),
            self.landlock.clone().unwrap_or_else(unknown),
            self.backend.clone().unwrap_or_else(unknown),
            times.join(", "),
            self.total.clone().unwrap_or_else(unknown),
        )
    }
}

/// Sums cargo test's `test result:` lines and collects `skipping <test>: <reason>` lines.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skips: Vec<String>,
    /// Each failed test, with the first lines of what it printed: the end of a long log
    /// says which test failed and why.
    failures: Vec<(String, Vec<String>)>,
    /// Inside libtest's `failures:` report, the test whose output is being read.
    reading: Option<String>,
}

impl Tally {
    fn add(&mut self, line: &str) {
        if let Some(result) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                result
                    .split(';')
                    .find_map(|part| {
                        part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ").strip_suffix(word)
                    })
                    .and_then(|number| number.trim().parse::<usize>().ok())
                    .unwrap_or(0)
            };
            self.passed += count(" passed");
            self.failed += count(" failed");
            self.reading = None;
        } else if let Some(skip) = line.trim().strip_prefix("skipping ") {
            self.skips.push(skip.to_owned());
        } else if let Some(name) = line.strip_prefix("test ").and_then(|rest| rest.strip_suffix(" ... FAILED")) {
            self.failures.push((name.to_owned(), Vec::new()));
        } else if let Some(name) = line.strip_prefix("---- ").and_then(|rest| rest.strip_suffix(" stdout ----")) {
            // Passing tests' output is printed too (--show-output): only a failed one's is kept.
            self.reading = self.failures.iter().any(|(failed, _)| failed == name).then(|| name.to_owned());
        } else if line == "successes:" {
            self.reading = None;
        } else if let Some(name) = &self.reading
            && let Some((_, lines)) = self.failures.iter_mut().rev().find(|(failed, _)| failed == name)
            && lines.len() < Self::KEPT
            && !line.trim().is_empty()
        {
            lines.push(line.to_owned());
        }
    }

    /// How many lines of a failed test's output the summary repeats.
    const KEPT: usize = 12;

    fn report_failures(&self) {
        for (name, lines) in &self.failures {
            println!("failed: {name}");
            for line in lines {
                println!("    {line}");
            }
        }
    }
}

/// Runs cargo in the workspace; fails with the command line when it fails.
fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new("cargo").current_dir(root).args(args).status().context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The repository root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn tally_counts_results_and_skips() {
        let mut tally = Tally::default();
        for line in [
            "test result: ok. 28 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.9s",
            "skipping raw_disks_are_unreadable_in_high: no /dev/vda here",
            "test result: FAILED. 12 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s",
        ] {
            tally.add(line);
        }
        assert_eq!((tally.passed, tally.failed), (40, 1));
        assert_eq!(tally.skips, ["raw_disks_are_unreadable_in_high: no /dev/vda here"]);
    }

    #[test]
    fn a_failed_tests_name_and_panic_are_kept_and_a_passing_ones_output_is_not() {
        let mut tally = Tally::default();
        for line in [
            "test quiet ... ok",
            "test loud ... FAILED",
            "failures:",
            "",
            "---- loud stdout ----",
            "thread 'loud' panicked at tests/tests/x.rs:3:5:",
            "the agent ran",
            "",
            "successes:",
            "---- quiet stdout ----",
            "skipping nothing",
            "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s",
        ] {
            tally.add(line);
        }
        assert_eq!(tally.failures.len(), 1);
        assert_eq!(tally.failures[0].0, "loud");
        assert_eq!(tally.failures[0].1, ["thread 'loud' panicked at tests/tests/x.rs:3:5:", "the agent ran"]);
    }
}
