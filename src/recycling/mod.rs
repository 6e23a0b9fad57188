//! Bounded lifetimes and drains that lose nothing (issue 13).
//!
//! - `options`: the command-line options (how long a drain keeps idle keep-alive
//!   connections, per-connection request and age bounds, worker lifetime and RSS).
//! - `conn_budget`: the per-connection bounds, as each protocol asks them ("is this
//!   the connection's last request?").
//! - `rss`: reading a worker's resident set size from /proc, for the master.

pub mod conn_budget;
pub mod options;
pub mod rss;

pub use conn_budget::ConnBudget;
pub use options::RecyclingOptions;
