//! `cargo xtask`: set up a machine, build, run, test and benchmark governor.
//!
//! Every command first installs what is missing (idempotently): the nightly toolchain's
//! `rust-src` and `bpf-linker` 0.10.1 for the eBPF programs, and the Debian packages the
//! tests use. Nothing is downloaded outside the package registries.

mod bench;
mod install;
mod setup;
mod vm;

use std::{
    ffi::OsString,
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
    /// Run the BPF LSM tests on Debian's 6.1 kernel under QEMU (this kernel cannot load
    /// LSM programs).
    VmTest {
        /// Seconds before the VM is given up on.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
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
        Task::VmTest { timeout } => {
            setup::all()?;
            let mut tally = Tally::default();
            let result = vm_test(&root, Duration::from_secs(timeout), &mut tally);
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
    // The BPF LSM backend, on a kernel that has it.
    let vm = vm_test(root, Duration::from_secs(1800), &mut tally);
    for skip in &tally.skips {
        println!("skipped: {skip}");
    }
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

/// Builds the LSM tests and runs them in the VM, one at a time; their result lines are
/// counted with the host's.
fn vm_test(root: &Path, timeout: Duration, tally: &mut Tally) -> Result<()> {
    cargo(root, &["build", "--release", "-p", "governor", "-p", "governor-tests", "--bins"])?;
    let output = Command::new("cargo")
        .current_dir(root)
        .args(["test", "--release", "-p", "governor-tests", "--test", "lsm", "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("building the LSM tests")?;
    if !output.status.success() {
        bail!("building the LSM tests failed");
    }
    let lsm = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "lsm")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .context("cargo did not say where the LSM test binary is")?;
    let name = lsm.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let bins = [root.join("target/release/governor"), root.join("target/release/attempt"), lsm];
    println!("xtask: booting Debian's 6.1 kernel (BPF LSM) under QEMU for the LSM tests");
    let command = format!("/bin/{name} --test-threads=1 --show-output");
    let code = vm::run_in_vm(root, &bins, &command, timeout, |line| {
        println!("vm: {line}");
        tally.add(line.trim_start_matches("vm: "));
    })?;
    if code != 0 {
        bail!("the LSM tests failed in the VM (exit {code})");
    }
    Ok(())
}

/// Sums cargo test's `test result:` lines and collects `skipping <test>: <reason>` lines.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skips: Vec<String>,
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
        } else if let Some(skip) = line.trim().strip_prefix("skipping ") {
            self.skips.push(skip.to_owned());
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
fn workspace_root() -> PathBuf {
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
}
