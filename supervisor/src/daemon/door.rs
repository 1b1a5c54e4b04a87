//! What the daemon's asynchronous doors (HTTP, and MCP on the HTTP door) share: the handle
//! each handler holds, and what it hands the daemon's loop, which alone owns the agents.

use std::{path::PathBuf, sync::Arc};

use tokio::sync::{mpsc, oneshot, watch};

use crate::service::{self, Call, Caller};

/// What a handler hands to the daemon's loop.
pub enum Asked {
    Call {
        caller: Caller,
        call: Box<Call>,
        reply: oneshot::Sender<service::Answer>,
    },
    /// The metrics text (the loop owns the counters).
    Metrics(oneshot::Sender<String>),
}

/// What every handler sees: the way to the loop, the audit store's commits (for the event
/// stream), the store itself, and the TCP listener's bearer token.
#[derive(Clone)]
pub struct Door {
    pub asked: mpsc::UnboundedSender<Asked>,
    pub commits: watch::Receiver<u64>,
    pub store: PathBuf,
    /// The bearer token of the TCP listener.
    pub token: Option<Arc<str>>,
}
