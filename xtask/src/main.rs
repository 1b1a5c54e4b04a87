//! `cargo xtask`: set up a machine, build, run, test and benchmark governor.
//!
//! Every command first installs what is missing (idempotently): the nightly toolchain's
//! `rust-src` and `bpf-linker` 0.10.1 for the eBPF programs, and the Debian packages the
//! tests use. Nothing is downloaded outside the package registries.

mod bench;
mod setup;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
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
    let status = Command::new("cargo")
        .current_dir(root)
        .args(["test", "--no-fail-fast"])
        .env("GOVERNOR_BIN", &governor)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
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
