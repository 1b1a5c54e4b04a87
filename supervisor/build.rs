//! Builds the eBPF programs (crate `governor-ebpf`) for the BPF target with the nightly
//! toolchain and bpf-linker, so that `src/probes` can embed the object.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let package = metadata
        .packages
        .into_iter()
        .find(|package| package.name.as_str() == "governor-ebpf")
        .ok_or_else(|| anyhow!("package governor-ebpf is not in the workspace"))?;
    let root_dir =
        package.manifest_path.parent().ok_or_else(|| anyhow!("{} has no parent directory", package.manifest_path))?;
    let ebpf = aya_build::Package { name: package.name.as_str(), root_dir: root_dir.as_str(), ..Default::default() };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default())
        .context("building the eBPF programs needs the nightly toolchain with rust-src and bpf-linker 0.10.1: run `cargo xtask setup`")
}
