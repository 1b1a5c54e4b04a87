//! The command line's own commands: `governor run` (and starting the daemon on first use),
//! the commands that ask the daemon over its control socket, `suspend|resume|kill`, where
//! `audit` and `status` read, `policy show` and `check`. The
//! commands that read the audit store or plan a ring are the service layer's
//! ([`crate::service`]), which the daemon answers with too.

pub mod act;
pub mod client;
pub mod read;
pub mod run;
pub mod show;
