//! `--reload`: the master watches the source tree (inotify, through the `notify` crate)
//! and, once changes settle, the arbiter restarts every worker. The master itself never
//! restarts, so the listening sockets stay bound and clients wait in the backlog while
//! the new workers boot instead of being refused.
//!
//! Threads and signals: `notify` runs one thread that reads the inotify fd. It installs
//! no signal handler and doesn't touch the signal mask; it inherits the mask of the
//! master's main thread, which the spawner clears in every worker anyway
//! (spawn.rs), and the inotify fd is close-on-exec, so nothing of it reaches a worker.

mod filter;

use crate::{info, warn};
use clap::Args;
use filter::WatchPlan;
use notify::{EventKind, RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Changes keep being collected for at most this long after the first one, so a tool
/// that writes without pause (a build, a long copy) still gets a reload (the longest a
/// batch is held by watchfiles, which uvicorn uses).
const LONGEST_BATCH: Duration = Duration::from_millis(1600);

/// uvicorn's reload options, with uvicorn's meaning (see filter.rs).
#[derive(Args, Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReloadOptions {
    /// Restart the workers when a watched file changes (for development). The master
    /// and its sockets stay up; a new version that fails to import is reported once
    /// and retried on the next change.
    #[arg(long)]
    pub reload: bool,

    /// Watch this directory, recursively (repeatable). Default: the current directory
    /// (and --app-dir when it lies outside it).
    #[arg(long = "reload-dir", value_name = "DIR")]
    pub reload_dirs: Vec<String>,

    /// Also reload on changes to files matching this glob (repeatable), besides the
    /// default "*.py"; a directory given here is watched as well.
    #[arg(long = "reload-include", value_name = "GLOB")]
    pub reload_includes: Vec<String>,

    /// Don't reload on files matching this glob (repeatable), besides the defaults ".*",
    /// ".py[cod]", ".sw.*", "~*"; a directory given here is left out entirely.
    #[arg(long = "reload-exclude", value_name = "GLOB")]
    pub reload_excludes: Vec<String>,

    /// Seconds without further changes before reloading, so one save that touches
    /// several files (or an editor's write-then-rename) reloads once.
    #[arg(long, default_value_t = 0.25)]
    pub reload_delay: f64,
}

impl ReloadOptions {
    /// Whether reload-only options were given without --reload (uvicorn warns then).
    pub fn unused_options(&self) -> bool {
        let any_given = !self.reload_dirs.is_empty()
            || !self.reload_includes.is_empty()
            || !self.reload_excludes.is_empty();
        any_given && !self.reload
    }
}

/// A running file watcher; dropping it stops the watching.
pub struct Reloader {
    _watcher: notify::RecommendedWatcher,
}

/// Start watching as `options` say; the receiver yields one batch of changed files
/// (sorted, deduplicated) per reload. Must be called inside the tokio runtime.
pub fn start(
    options: &ReloadOptions,
    app_dir: &str,
) -> std::io::Result<(Reloader, mpsc::UnboundedReceiver<Vec<PathBuf>>)> {
    let cwd = std::env::current_dir()?;
    let plan = WatchPlan::new(options, &cwd, Path::new(app_dir));
    if plan.fell_back_to_cwd {
        warn!(
            "Provided reload directories {} did not contain valid directories, \
             watching current working directory.",
            filter::python_list(&options.reload_dirs)
        );
    } else if !plan.ignored_dirs.is_empty() {
        warn!(
            "Ignoring reload directories that are not directories: {}",
            filter::python_list(&plan.ignored_dirs)
        );
    }
    info!(
        "Will watch for changes in these directories: {}",
        plan.dirs_for_log()
    );

    let (raw_tx, raw_rx) = mpsc::unbounded_channel::<PathBuf>();
    let filter = plan.filter;
    // Runs on notify's thread: only the paths that matter cross over, so unrelated
    // churn (bytecode caches, editor swap files) never delays a reload.
    let on_event = move |event: notify::Result<notify::Event>| match event {
        Ok(event) => {
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            for path in event.paths {
                if filter.wants(&path) {
                    let _ = raw_tx.send(path);
                }
            }
        }
        Err(e) => warn!("File watcher: {e}"),
    };
    let mut watcher =
        notify::recommended_watcher(on_event).map_err(|e| std::io::Error::other(e.to_string()))?;
    for dir in &plan.dirs {
        if let Err(e) = watcher.watch(dir, RecursiveMode::Recursive) {
            // Typically the inotify watch limit (fs.inotify.max_user_watches).
            warn!("Could not watch {}: {e}", dir.display());
        }
    }

    let (batch_tx, batch_rx) = mpsc::unbounded_channel();
    let quiet = Duration::from_secs_f64(options.reload_delay.max(0.0));
    tokio::spawn(batch_changes(raw_rx, batch_tx, quiet));
    Ok((Reloader { _watcher: watcher }, batch_rx))
}

/// Debounce: a batch closes once `quiet` passes without a new change, or
/// `LONGEST_BATCH` (at least `quiet`) after its first change.
async fn batch_changes(
    mut raw: mpsc::UnboundedReceiver<PathBuf>,
    batches: mpsc::UnboundedSender<Vec<PathBuf>>,
    quiet: Duration,
) {
    let longest = LONGEST_BATCH.max(quiet);
    while let Some(first) = raw.recv().await {
        let started = Instant::now();
        let mut batch = BTreeSet::from([first]);
        let mut last = started;
        loop {
            let deadline = (last + quiet).min(started + longest);
            match tokio::time::timeout_at(deadline, raw.recv()).await {
                Ok(Some(path)) => {
                    batch.insert(path);
                    last = Instant::now();
                }
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if batches.send(batch.into_iter().collect()).is_err() {
            return;
        }
    }
}

/// The changed files as uvicorn's "detected changes" line names them: relative to the
/// current directory when inside it, each quoted.
pub fn describe_changes(paths: &[PathBuf]) -> String {
    let cwd = std::env::current_dir()
        .ok()
        .map(|c| std::fs::canonicalize(&c).unwrap_or(c));
    paths
        .iter()
        .map(|p| {
            let shown = cwd
                .as_deref()
                .and_then(|c| p.strip_prefix(c).ok())
                .unwrap_or(p);
            format!("'{}'", shown.display())
        })
        .collect::<Vec<_>>()
        .join(", ")
}
