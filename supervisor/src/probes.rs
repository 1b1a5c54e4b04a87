//! The eBPF programs built from `ebpf/` by `build.rs`, embedded in the binary.

/// The object file, aligned for aya's ELF parser.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/governor"));

/// Whether BPF LSM programs can be attached: `bpf` must be an active LSM
/// (`/sys/kernel/security/lsm`, which needs securityfs mounted).
pub fn bpf_lsm_active() -> Option<bool> {
    std::fs::read_to_string("/sys/kernel/security/lsm").ok().map(|lsms| lsms.trim().split(',').any(|lsm| lsm == "bpf"))
}
