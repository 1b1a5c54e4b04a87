//! Installs what governor's build and tests need, skipping what is already there.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// The bpf-linker that loads rustc's own LLVM (newer ones need a system LLVM 22+).
const BPF_LINKER: &str = "0.10.1";

/// Commands the end-to-end tests run, and the Debian package of each. The workload suite
/// (tests/tests/workloads.rs) runs real tools: a missing one is installed, never skipped.
const TOOLS: [(&str, &str); 12] = [
    ("cc", "gcc"),
    ("busybox", "busybox-static"),
    ("git", "git"),
    ("python3", "python3"),
    ("unshare", "util-linux"),
    ("setpriv", "util-linux"),
    ("sleep", "coreutils"),
    ("sqlite3", "sqlite3"),
    ("make", "make"),
    ("node", "nodejs"),
    ("npm", "npm"),
    ("pytest", "python3-pytest"),
];

/// Checks by /usr/bin/python3 itself, which the tests run by path, and the package that
/// passes each: `python3 -m venv` needs ensurepip, which Debian ships apart.
const PYTHON_MODULES: [(&str, &str); 2] = [("ensurepip", "python3-venv"), ("pytest", "python3-pytest")];

/// The OpenAPI checker the HTTP door's tests run against the server.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

pub fn all() -> Result<()> {
    nightly_rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    let target = crate::workspace_root().join("target");
    mcp_client(&target)?;
    browser(&target)?;
    schemathesis()?;
    Ok(())
}

/// The MCP door is tested with the protocol's official Python SDK as the client
/// (tests/tests/mcp.rs), in a virtual environment of its own under `target/`.
pub const MCP_SDK: &str = "mcp>=2.3,<3";

fn mcp_client(target: &std::path::Path) -> Result<()> {
    let venv = target.join("mcp-venv");
    let python = venv.join("bin/python");
    let python = python.to_string_lossy();
    if quiet(&python, &["-c", "import mcp.client.stdio"]).is_some() {
        return Ok(());
    }
    std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    run("/usr/bin/python3", &["-m", "venv", &venv.to_string_lossy()])?;
    run(&python, &["-m", "pip", "install", "-q", MCP_SDK])
}

/// The dashboard is tested in Debian's Chromium, driven by Playwright's library alone
/// (`playwright-core`: its own browser download is not used), installed under `target/`.
pub const PLAYWRIGHT: &str = "playwright-core@1.65";

fn browser(target: &std::path::Path) -> Result<()> {
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        apt_install(&["chromium"])?;
    }
    let prefix = target.join("dashboard-node");
    if prefix.join("node_modules/playwright-core/package.json").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&prefix).with_context(|| format!("creating {}", prefix.display()))?;
    run("npm", &["install", "--silent", "--no-audit", "--no-fund", "--prefix", &prefix.to_string_lossy(), PLAYWRIGHT])
}

/// schemathesis in a venv of its own under target/ (the tests run `target/schemathesis/bin/st`),
/// from the Python package registry; pip reads the machine's PIP_* settings.
fn schemathesis() -> Result<()> {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis");
    let st = venv.join("bin/st");
    let version = SCHEMATHESIS.rsplit('=').next().unwrap_or_default();
    if quiet(&st.to_string_lossy(), &["--version"]).is_some_and(|out| out.contains(version)) {
        return Ok(());
    }
    let venv_text = venv.to_string_lossy().into_owned();
    run("/usr/bin/python3", &["-m", "venv", &venv_text])?;
    let pip = venv.join("bin/pip").to_string_lossy().into_owned();
    run(&pip, &["install", "--quiet", SCHEMATHESIS])
        .context("installing schemathesis (for the HTTP door's OpenAPI check) failed")
}

fn quiet(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).stderr(Stdio::null()).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask: {program} {}", args.join(" "));
    let status = Command::new(program).args(args).status().with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("{program} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The eBPF programs build with nightly's `-Z build-std=core`, which needs `rust-src`.
fn nightly_rust_src() -> Result<()> {
    let toolchains = quiet("rustup", &["toolchain", "list"]).context("rustup is needed to build the eBPF programs")?;
    if !toolchains.lines().any(|line| line.starts_with("nightly")) {
        return run("rustup", &["toolchain", "install", "nightly", "--profile", "minimal", "--component", "rust-src"])
            .context("installing the nightly toolchain (for the eBPF programs) failed");
    }
    let installed =
        quiet("rustup", &["component", "list", "--installed", "--toolchain", "nightly"]).unwrap_or_default();
    if !installed.lines().any(|line| line.starts_with("rust-src")) {
        run("rustup", &["component", "add", "rust-src", "--toolchain", "nightly"])?;
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let version = quiet("bpf-linker", &["--version"]).unwrap_or_default();
    if version.split_whitespace().any(|word| word == BPF_LINKER) {
        return Ok(());
    }
    run("cargo", &["install", &format!("bpf-linker@{BPF_LINKER}"), "--locked"])
}

fn debian_packages() -> Result<()> {
    let mut missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(tool, _)| quiet("sh", &["-c", &format!("command -v {tool}")]).is_none())
        .map(|(_, package)| *package)
        .collect();
    // The tests run /usr/bin/python3 by path: a python3 on PATH elsewhere is not enough.
    if !std::path::Path::new("/usr/bin/python3").exists() {
        missing.push("python3");
    }
    for (module, package) in PYTHON_MODULES {
        if quiet("/usr/bin/python3", &["-c", &format!("import {module}")]).is_none() {
            missing.push(package);
        }
    }
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)
}

/// `apt-get update`, once per xtask run.
pub fn apt_update() -> Result<()> {
    static UPDATED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if UPDATED.get().is_some() {
        return Ok(());
    }
    run("apt-get", &["update", "-q"])?;
    let _ = UPDATED.set(());
    Ok(())
}

/// Installs Debian packages (as root; otherwise says what to install).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("missing Debian packages: install them as root (apt-get install {})", packages.join(" "));
    }
    apt_update()?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(packages.iter().copied());
    run("apt-get", &args)
}
