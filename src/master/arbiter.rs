//! The arbiter: the master's whole process model in one place.
//!
//! It keeps `config.workers` workers alive, waits only on the pids it spawned (never
//! `waitpid(-1)`), talks to workers over their control channels, and turns process
//! signals into orders on those channels:
//!
//! | signal      | effect                                                        |
//! |-------------|---------------------------------------------------------------|
//! | TERM        | graceful stop: workers drain, run lifespan shutdown, exit     |
//! | INT, QUIT   | quick stop                                                    |
//!
//! A worker that fails to boot stops the whole server with its reason and exit code 1,
//! instead of being respawned forever.

use super::listeners::{self, Listener};
use super::spawn::{spawn_worker, PythonLaunch};
use crate::config::Config;
use crate::control::{encode, ToMaster, ToWorker};
use crate::{error, info, warn};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Exit status when the app can't boot or the sockets can't be bound.
const EXIT_FAILURE: i32 = 1;
/// How long a quick stop waits before killing workers that haven't exited.
const QUICK_STOP_GRACE: Duration = Duration::from_secs(5);
/// Added to --timeout-graceful-shutdown before the master kills a draining worker,
/// for the worker's own cancellation and lifespan shutdown.
const DRAIN_KILL_MARGIN: Duration = Duration::from_secs(5);

/// Something that happened to one worker, reported to the arbiter's loop.
enum WorkerEvent {
    Message(u64, ToMaster),
    Exited(u64, ExitStatus),
}

struct Worker {
    pid: u32,
    control: OwnedWriteHalf,
    ready: bool,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Phase {
    Booting,
    Running,
    Stopping,
}

struct Arbiter {
    config: Config,
    python: PythonLaunch,
    listeners: Vec<Listener>,
    workers: HashMap<u64, Worker>,
    next_key: u64,
    events_tx: mpsc::UnboundedSender<WorkerEvent>,
    phase: Phase,
    exit_code: i32,
    kill_deadline: Option<Instant>,
}

/// Entry point of the master: bind, spawn, supervise; returns the process exit code.
pub fn run(config: Config, python: PythonLaunch) -> i32 {
    crate::log::set_level(config.log_level);
    let listeners = match listeners::bind(&config) {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return EXIT_FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut arbiter = Arbiter {
            config,
            python,
            listeners,
            workers: HashMap::new(),
            next_key: 0,
            events_tx,
            phase: Phase::Booting,
            exit_code: 0,
            kill_deadline: None,
        };
        arbiter.main_loop(events_rx).await
    })
}

impl Arbiter {
    async fn main_loop(&mut self, mut events: mpsc::UnboundedReceiver<WorkerEvent>) -> i32 {
        let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut sigquit = signal(SignalKind::quit()).expect("SIGQUIT handler");

        info!("Started master process [{}]", std::process::id());
        for l in &self.listeners {
            info!("ferrocorn running on {} (Press CTRL+C to quit)", l.display);
        }
        for _ in 0..self.config.workers.max(1) {
            if !self.spawn().await {
                return EXIT_FAILURE;
            }
        }

        loop {
            if self.phase == Phase::Stopping && self.workers.is_empty() {
                info!("Stopping master process [{}]", std::process::id());
                return self.exit_code;
            }
            let deadline = self.kill_deadline;
            tokio::select! {
                biased;
                _ = sigterm.recv() => self.stop(true).await,
                _ = sigint.recv() => self.stop(false).await,
                _ = sigquit.recv() => self.stop(false).await,
                Some(event) = events.recv() => self.on_event(event).await,
                _ = sleep_until(deadline) => self.kill_all("did not stop in time"),
            }
        }
    }

    async fn on_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Message(key, ToMaster::Ready) => {
                if let Some(w) = self.workers.get_mut(&key) {
                    w.ready = true;
                    info!("Worker ready [{}]", w.pid);
                }
                if self.phase == Phase::Booting && self.workers.values().all(|w| w.ready) {
                    self.phase = Phase::Running;
                    let pids: Vec<String> =
                        self.workers.values().map(|w| w.pid.to_string()).collect();
                    info!(
                        "ferrocorn ready: {} worker(s) [{}]",
                        pids.len(),
                        pids.join(", ")
                    );
                }
            }
            WorkerEvent::Message(_, ToMaster::BootFailed { reason }) => {
                self.boot_failed(&reason).await;
            }
            WorkerEvent::Message(_, ToMaster::Heartbeat) => {}
            WorkerEvent::Exited(key, status) => self.on_exit(key, status).await,
        }
    }

    async fn on_exit(&mut self, key: u64, status: ExitStatus) {
        let Some(worker) = self.workers.remove(&key) else {
            return;
        };
        if self.phase == Phase::Stopping {
            if !status.success() {
                warn!("Worker [{}] {}", worker.pid, describe(status));
            }
            return;
        }
        if !worker.ready {
            // It died before it could report why (e.g. the interpreter itself failed).
            self.boot_failed(&format!(
                "Worker [{}] {} before it was ready",
                worker.pid,
                describe(status)
            ))
            .await;
            return;
        }
        error!(
            "Worker [{}] {}; starting a new one",
            worker.pid,
            describe(status)
        );
        self.spawn().await;
    }

    async fn boot_failed(&mut self, reason: &str) {
        if self.phase == Phase::Stopping {
            return; // Already reported: one clear message, not one per worker.
        }
        error!("{reason}");
        error!("Application failed to boot; stopping");
        self.exit_code = EXIT_FAILURE;
        self.stop(false).await;
    }

    /// Start one worker and hand it its boot message. Returns false if the interpreter
    /// itself can't be started (then the master stops).
    async fn spawn(&mut self) -> bool {
        let fds: Vec<i32> = self
            .listeners
            .iter()
            .map(|l| l.socket.as_raw_fd())
            .collect();
        let spawned = match spawn_worker(&self.python, &fds) {
            Ok(s) => s,
            Err(e) => {
                error!(
                    "Could not start a worker with {}: {e}",
                    self.python.executable
                );
                self.exit_code = EXIT_FAILURE;
                self.stop(false).await;
                return false;
            }
        };
        let key = self.next_key;
        self.next_key += 1;
        let mut child = spawned.child;
        let pid = child.id().unwrap_or(0);
        spawned
            .control
            .set_nonblocking(true)
            .expect("control socket non-blocking");
        let stream = UnixStream::from_std(spawned.control).expect("control socket");
        let (read_half, mut write_half) = stream.into_split();

        let boot = ToWorker::Boot {
            config: Box::new(self.config.clone()),
            listeners: self.listeners.iter().map(Listener::spec).collect(),
            worker_id: key as usize,
        };
        // A failed write means the worker already died; its exit is reported below.
        let _ = write_half.write_all(&encode(&boot)).await;

        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(read_half).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<ToMaster>(&line) {
                    Ok(msg) => {
                        let _ = tx.send(WorkerEvent::Message(key, msg));
                    }
                    Err(e) => warn!("Worker [{pid}] sent an unreadable message: {e}"),
                }
            }
        });
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            // Waits on this one pid only: the app's own children are never reaped here.
            if let Ok(status) = child.wait().await {
                let _ = tx.send(WorkerEvent::Exited(key, status));
            }
        });
        self.workers.insert(
            key,
            Worker {
                pid,
                control: write_half,
                ready: false,
            },
        );
        crate::debug!("Started worker [{pid}]");
        true
    }

    /// Order every worker to stop; `graceful` lets in-flight requests finish.
    async fn stop(&mut self, graceful: bool) {
        let already = self.phase == Phase::Stopping;
        self.phase = Phase::Stopping;
        // A second TERM/INT while draining means "now".
        let graceful = graceful && !already;
        let order = if graceful {
            info!("Shutting down gracefully");
            ToWorker::Stop
        } else {
            if self.exit_code == 0 {
                info!("Shutting down");
            }
            ToWorker::Quit
        };
        let wait = if graceful {
            self.config
                .timeout_graceful_shutdown
                .map(|t| Duration::from_secs_f64(t) + DRAIN_KILL_MARGIN)
        } else {
            Some(QUICK_STOP_GRACE)
        };
        let deadline = wait.map(|w| Instant::now() + w);
        self.kill_deadline = match (self.kill_deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let line = encode(&order);
        for w in self.workers.values_mut() {
            let _ = w.control.write_all(&line).await;
        }
    }

    fn kill_all(&mut self, why: &str) {
        for w in self.workers.values() {
            warn!("Killing worker [{}]: {why}", w.pid);
            unsafe { libc::kill(w.pid as i32, libc::SIGKILL) };
        }
        self.kill_deadline = None;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "exited".to_string(),
    }
}
