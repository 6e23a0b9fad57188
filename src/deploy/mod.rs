//! Running under an orchestrator: Kubernetes (probes, `--shutdown-delay`, PID 1 orphan
//! reaping), systemd (socket activation, `sd_notify`), and the startup advice about
//! keep-alive timeouts behind balancers. See docs/deployment.md.
//!
//! `health` runs in workers; everything else is master-side state, taken out of the
//! environment before the first worker starts so the app never sees it.

pub mod activation;
pub mod advice;
pub mod health;
pub mod notify;
pub mod options;
pub mod reaper;
