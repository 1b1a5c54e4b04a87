//! Re-run the eBPF build when the linker changes: a different bpf-linker produces a
//! different object, and cargo would not otherwise notice.
use which::which;

fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
