//! The control channel between master and worker: one Unix stream socket per worker,
//! carrying one JSON message per line. Master and worker never signal each other;
//! whatever they need to say goes here (see shared/DESIGN.md, "Processes").

use crate::config::Config;
use serde::{Deserialize, Serialize};

/// A listening socket handed to a worker as an inherited file descriptor.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ListenerSpec {
    pub fd: i32,
    pub unix: bool,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToWorker {
    /// First message: everything the worker needs to boot.
    Boot {
        config: Box<Config>,
        listeners: Vec<ListenerSpec>,
        worker_id: usize,
        /// This worker's --max-requests with its jitter applied.
        max_requests: Option<u64>,
        /// Its slot in the shared connection table (src/balance); None: accept
        /// without balancing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        balance: Option<crate::balance::worker::SlotSpec>,
    },
    /// Stop accepting, finish in-flight requests, run lifespan shutdown, exit.
    Stop,
    /// Exit as soon as possible.
    Quit,
    /// The master got SIGTERM and drains after --shutdown-delay: keep serving, but
    /// fail the readiness probe from now on.
    Leaving,
    /// Write the Python stacks of every thread to the error log (the loop is stuck).
    DumpStacks,
    /// Reopen the log files (SIGUSR1 to the master, after logrotate).
    ReopenLogs,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToMaster {
    /// App imported, lifespan startup done, accepting connections.
    Ready,
    /// The app could not be loaded or its lifespan startup failed; the reason is one line.
    /// `exit_code` is the master's, as uvicorn's would be: 3 (STARTUP_FAILURE), or 1 for
    /// an exception the app's import raised (uvicorn lets it end the process).
    /// `traceback`, when the worker has one, is logged by the master: once, however many
    /// workers fail the same way.
    BootFailed {
        reason: String,
        exit_code: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceback: Option<String>,
    },
    /// Sent from the worker's event-loop thread, so a blocked loop stops sending it.
    Heartbeat,
    /// The worker served its --max-requests: replace it the rolling way.
    Recycle,
    /// --metrics: the worker's counters now (with each heartbeat, and once drained).
    Metrics {
        snapshot: Box<crate::metrics::snapshot::Snapshot>,
    },
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).expect("control messages always serialise");
    line.push(b'\n');
    line
}
