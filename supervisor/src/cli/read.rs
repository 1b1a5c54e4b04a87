//! Where `governor audit` and `governor status` read: the store named, or the running
//! daemon's through its control socket (its store is root's; a member of the control group
//! reads it this way), or the default store.

use std::path::PathBuf;

use crate::{audit, daemon::control, exit};

/// The daemon at `--socket` (or the default socket), if one answers; one that cannot be
/// asked is bad input.
pub fn discover(socket: Option<&std::path::Path>) -> Result<Option<(control::Client, control::Hello)>, (i32, String)> {
    control::discover(socket).map_err(|error| (exit::USAGE, error.to_string()))
}

/// Reads an audit store: `--audit-db` (or `GOVERNOR_AUDIT_DB`) directly; else the running
/// daemon's, through `daemon` (its store is root's; a control-group member reads it this
/// way); else the default store directly.
pub fn read_store(
    explicit: Option<PathBuf>,
    daemon: Option<&mut control::Client>,
    rings: Option<&std::path::Path>,
    read: control::Read,
) -> Result<i32, (i32, String)> {
    use std::io::Write as _;
    let client = match (explicit, daemon) {
        (Some(store), _) => return read.run(&mut std::io::stdout().lock(), &store, rings),
        (None, None) => return read.run(&mut std::io::stdout().lock(), &audit::default_path(), rings),
        (None, Some(client)) => client,
    };
    let answer = client.call(&control::Request::Read(read)).map_err(|error| (exit::FAILURE, error.to_string()))?;
    let _ = std::io::stdout().lock().write_all(answer["output"].as_str().unwrap_or("").as_bytes());
    let code = answer["code"].as_i64().and_then(|code| i32::try_from(code).ok()).unwrap_or(exit::FAILURE);
    match answer["error"].as_str().filter(|error| !error.is_empty()) {
        Some(error) => Err((code, error.to_owned())),
        None => Ok(code),
    }
}
