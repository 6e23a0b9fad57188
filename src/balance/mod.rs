//! Spreading connections evenly over the workers (issue 17), and `--workers auto`.
//!
//! Every worker serves the one listening socket the master binds: a worker that drains
//! simply stops accepting and the connections queued on that socket go to the others,
//! so no restart resets a queued connection (per-worker SO_REUSEPORT sockets drop
//! their queue when they close). The kernel, though, hands a new connection to
//! whichever worker's loop runs first, which under load skews the spread (the busiest
//! worker held about 2x its fair share with 8 workers). So the workers share their open
//! connection counts through a small table in memory the master owns (`table`), and a
//! worker above the mean lets the others take the next connection first (`worker`).
//! docs/design.md has the measurements behind this choice.

pub mod cpus;
pub mod master;
pub mod options;
pub mod table;
pub mod worker;

pub use options::{AcceptBalance, BalanceOptions, WorkerCount};
