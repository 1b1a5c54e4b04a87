#![no_std]
// This file exists so the eBPF crate can be a build-dependency of the supervisor, which
// makes cargo rebuild the supervisor (and so re-embed the object) when the programs change.
