//! The arbiter: the master's whole process model in one place.
//!
//! It keeps `target` workers alive, waits only on the pids it spawned (never
//! `waitpid(-1)`), talks to workers over their control channels, and turns process
//! signals into orders on those channels:
//!
//! | signal    | effect                                                                |
//! |-----------|-----------------------------------------------------------------------|
//! | TERM      | graceful stop: workers drain, run lifespan shutdown, exit; then master |
//! | INT, QUIT | quick stop                                                            |
//! | HUP       | rolling restart: for each worker, start a new one, wait until it is    |
//! |           | ready, then drain the old one; no request fails                        |
//! | TTIN/TTOU | one worker more / less                                                 |
//! | USR1      | reopen the log files (after logrotate moved them)                     |
//!
//! A worker that reaches --max-requests, --workers-lifetime or --workers-max-rss is
//! replaced the same rolling way, one at a time, and the log names each replacement's
//! cause (crash, timeout, max-requests, lifetime, rss, hup). A worker
//! whose event loop stops sending heartbeats for --timeout seconds has its Python
//! stacks logged, is killed and replaced. A worker that fails to boot stops the whole
//! server with its reason and uvicorn's exit code (3, or 1 for an exception raised by
//! the app's import) instead of being respawned forever (during a
//! rolling restart it only aborts the restart: the old workers keep serving).
//!
//! With --reload, a batch of changed files stops every worker and, once they are all
//! gone, starts a fresh set: stop-then-start rather than rolling, so after a save every
//! answer comes from the new code and the app's startup never runs beside the old
//! version's (two generations fighting over a port, a lock or a database file), as
//! under uvicorn. The master keeps the sockets, so clients wait in the backlog meanwhile.
//! A boot failure then doesn't stop the server: its traceback is logged once and the
//! master waits for the next change.

use super::listeners::{self, Listener};
use super::reload;
use super::spawn::{spawn_worker, PythonLaunch};
use crate::balance::master::SlotTable;
use crate::balance::AcceptBalance;
use crate::config::Config;
use crate::control::{encode, ToMaster, ToWorker};
use crate::deploy::{activation, advice, health::LOOP_STALLED, notify, reaper};
use crate::metrics::fleet::Fleet;
use crate::{error, info, warn};
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Exit status when the app can't boot or the sockets can't be bound.
const EXIT_FAILURE: i32 = 1;
/// The app could not boot (module or attribute not found, lifespan startup failed):
/// uvicorn's STARTUP_FAILURE, so scripts that check for it keep working.
const EXIT_BOOT_FAILURE: i32 = 3;
/// How long a quick stop waits before killing workers that haven't exited.
const QUICK_STOP_GRACE: Duration = Duration::from_secs(5);
/// Added to --timeout-graceful-shutdown before the master kills a draining worker,
/// for the worker's own cancellation and lifespan shutdown.
const DRAIN_KILL_MARGIN: Duration = Duration::from_secs(5);
/// Time a hung worker gets to write its stacks before it is killed.
const DUMP_GRACE: Duration = Duration::from_secs(1);
const STOP_TOO_SLOW: &str = "it did not stop in time";
const NOT_READY_IN_TIME: &str = "it was not ready within --timeout-worker-healthcheck";
const BOOTING_OUTDATED: &str = "it was still booting code that has changed since";
const SAME_CODE_FAILED: &str = "another worker failed to boot the same code";
/// How often the arbiter looks at heartbeats and deadlines.
const TICK: Duration = Duration::from_millis(500);
/// How long the master waits, once a worker has exited, for the rest of what it wrote.
const LAST_MESSAGES_WAIT: Duration = Duration::from_millis(200);
/// --reload: time a worker still booting the outdated code gets to exit when told to.
const ABANDON_GRACE: Duration = Duration::from_secs(1);
/// --reload: how long old workers may drain when no --graceful-timeout or
/// --timeout-graceful-shutdown says otherwise, so an open event stream can't hold a
/// reload back forever.
const RELOAD_DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// Workers that can't stay up: this many unexpected exits of ready workers within
/// `CRASH_WINDOW` stop the master with a non-zero exit (a container then restarts,
/// instead of a pod that looks alive while its workers die in a loop).
const CRASH_LIMIT: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);

/// Why a worker is replaced; written in the log line of each replacement.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cause {
    Crash,
    Timeout,
    MaxRequests,
    Lifetime,
    Rss,
    Hup,
}

impl Cause {
    fn name(self) -> &'static str {
        match self {
            Cause::Crash => "crash",
            Cause::Timeout => "timeout",
            Cause::MaxRequests => "max-requests",
            Cause::Lifetime => "lifetime",
            Cause::Rss => "rss",
            Cause::Hup => "hup",
        }
    }
}

/// Something that happened to one worker, reported to the arbiter's loop.
enum WorkerEvent {
    Message(u64, ToMaster),
    Exited(u64, ExitStatus),
}

struct Worker {
    pid: u32,
    control: OwnedWriteHalf,
    ready: bool,
    /// Told to stop (replaced, scaled down, or the server is stopping); its exit is
    /// expected and it no longer counts towards `target`.
    retiring: bool,
    last_heartbeat: Instant,
    /// Killed with SIGKILL at this time if still alive, and why.
    kill_at: Option<(Instant, &'static str)>,
    /// Given up while booting (--reload): its failure is already reported or its code
    /// outdated, so neither its boot failure nor its exit needs a line of its own.
    quiet_exit: bool,
    /// Killed because its event loop was blocked (its exit is a "timeout", not a crash).
    timed_out: bool,
    /// --workers-lifetime (with this worker's jitter) ends here.
    lifetime_ends: Option<Instant>,
    /// Consecutive RSS samples over --workers-max-rss.
    rss_over: u32,
    /// Its slot in the shared connection table, freed when it is reaped.
    balance_slot: Option<usize>,
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
    /// Workers wanted (changes with TTIN/TTOU).
    target: usize,
    next_key: u64,
    events_tx: mpsc::UnboundedSender<WorkerEvent>,
    phase: Phase,
    exit_code: i32,
    /// Old workers waiting to be replaced, one at a time (HUP, --max-requests).
    to_replace: VecDeque<u64>,
    /// The replacement being booted, and the worker it replaces (None once that one
    /// died on its own while its replacement booted).
    replacing: Option<(u64, Option<u64>)>,
    /// Variables every new worker gets (--env-file, --env); the file is read again on
    /// HUP.
    worker_env: Vec<(String, String)>,
    /// --reload: keeps the file watcher alive.
    reloader: Option<reload::Reloader>,
    /// --reload: a fresh set of workers starts as soon as the last old one has exited.
    start_when_idle: bool,
    /// systemd's NOTIFY_SOCKET, when run as a Type=notify service.
    notifier: Option<notify::Notifier>,
    /// SIGTERM arrived with --shutdown-delay: the drain starts at this time.
    drain_at: Option<Instant>,
    /// A HUP's rolling restart is under way (systemd is told RELOADING=1).
    reloading: bool,
    /// systemd has been told STOPPING=1.
    told_stopping: bool,
    /// When ready workers died unexpectedly, within the last CRASH_WINDOW.
    crashes: VecDeque<Instant>,
    /// This master is PID 1 and reaps the orphans the kernel hands it.
    init: bool,
    /// When the workers' RSS was last sampled (--workers-max-rss).
    rss_sampled: Instant,
    /// The connection table workers balance their accepts with (None: --accept-balance
    /// off, or it could not be created).
    balance: Option<SlotTable>,
    /// --metrics: what the metrics listener serves, kept up to date here.
    fleet: Option<Arc<Mutex<Fleet>>>,
}

/// Entry point of the master: bind, spawn, supervise; returns the process exit code.
pub fn run(config: Config, python: PythonLaunch) -> i32 {
    crate::log::set_level(config.log_level);
    if let Err(e) = crate::log::set_files(
        config.error_logfile.as_deref(),
        config.access_logfile.as_deref(),
    ) {
        eprintln!("ERROR:    Could not open a log file: {e}");
        return EXIT_FAILURE;
    }
    // systemd's variables are the master's alone: read and removed before any thread
    // or worker exists, so neither the workers nor the app's subprocesses see them.
    let notifier = notify::Notifier::from_env();
    let activated = activation::take_from_env();
    crate::log::set_colors(config.logging.colors());
    for note in &config.cli.notes {
        info!("{note}");
    }
    if let Some(path) = &config.cli.env_file {
        info!("Loading environment from '{path}'");
    }
    let worker_env = match crate::cli::envfile::worker_environment(
        config.cli.env_file.as_deref(),
        &config.cli.env,
    ) {
        Ok(env) => env,
        Err(e) => {
            error!("{e}");
            return EXIT_FAILURE;
        }
    };
    // Load the TLS material once here, so a wrong key or password is one line at
    // startup instead of a boot failure in every worker.
    if let Err(e) = crate::tls::server_config(&config) {
        error!("{e}");
        return EXIT_FAILURE;
    }
    let bound = match activated {
        Some(sockets) if config.fd.is_none() => {
            activation::select(sockets, &config.deploy.systemd_socket_names())
                .map_err(std::io::Error::other)
                .and_then(listeners::adopt_activated)
        }
        Some(sockets) => {
            // --fd wins, and may name one of systemd's fds: leave them all open (they
            // are close-on-exec now, so nothing inherits the others).
            for socket in sockets {
                let _ = std::os::fd::IntoRawFd::into_raw_fd(socket.fd);
            }
            listeners::bind(&config)
        }
        None => listeners::bind(&config),
    };
    let mut listeners = match bound {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return EXIT_FAILURE;
        }
    };
    if config.tls_enabled() {
        for l in &mut listeners {
            if let Some(rest) = l.display.strip_prefix("http://") {
                l.display = format!("https://{rest}");
            }
        }
    }
    if let Some(advice) = advice::keep_alive_warning(&config) {
        warn!("{advice}");
    }
    if let Some(path) = &config.pid {
        if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
            error!("Could not write the pid file {path}: {e}");
            return EXIT_FAILURE;
        }
    }
    let metrics_listener = if config.metrics.metrics {
        match crate::metrics::endpoint::bind(&config.metrics) {
            Ok(listener) => Some(listener),
            Err(e) => {
                error!("{e}");
                return EXIT_FAILURE;
            }
        }
    } else {
        None
    };
    let statsd = match crate::metrics::statsd::Sender::open(&config.metrics) {
        Ok(statsd) => statsd,
        Err(e) => {
            error!("{e}");
            return EXIT_FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let pid_file = config.pid.clone();
    let code = runtime.block_on(async move {
        // One fleet view feeds both consumers of the workers' counts.
        let counting = metrics_listener.is_some() || statsd.is_some();
        let fleet = counting.then(|| Arc::new(Mutex::new(Fleet::default())));
        if let (Some(listener), Some(fleet)) = (metrics_listener, &fleet) {
            if let Ok(addr) = listener.local_addr() {
                info!("Metrics on http://{addr}/metrics");
            }
            tokio::spawn(crate::metrics::endpoint::serve(listener, fleet.clone()));
        }
        if let (Some(statsd), Some(fleet)) = (statsd, &fleet) {
            statsd.spawn(fleet.clone());
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut arbiter = Arbiter {
            target: config.workers.count().max(1),
            balance: connection_table(&config),
            config,
            python,
            listeners,
            workers: HashMap::new(),
            next_key: 0,
            events_tx,
            phase: Phase::Booting,
            exit_code: 0,
            to_replace: VecDeque::new(),
            replacing: None,
            worker_env,
            reloader: None,
            start_when_idle: false,
            notifier,
            drain_at: None,
            reloading: false,
            told_stopping: false,
            crashes: VecDeque::new(),
            init: reaper::is_init(),
            rss_sampled: Instant::now(),
            fleet,
        };
        arbiter.main_loop(events_rx).await
    });
    if let Some(path) = pid_file {
        let _ = std::fs::remove_file(path);
    }
    code
}

/// The table of open connections per worker (src/balance), unless turned off. Without
/// it workers accept as the kernel wakes them: one line says so.
fn connection_table(config: &Config) -> Option<SlotTable> {
    if config.balance.accept_balance == AcceptBalance::Off {
        return None;
    }
    match SlotTable::create() {
        Ok(table) => Some(table),
        Err(e) => {
            warn!(
                "Could not create the shared connection table ({e}); workers accept \
                 without balancing, so connections may spread unevenly"
            );
            None
        }
    }
}

impl Arbiter {
    async fn main_loop(&mut self, mut events: mpsc::UnboundedReceiver<WorkerEvent>) -> i32 {
        let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut sigquit = signal(SignalKind::quit()).expect("SIGQUIT handler");
        let mut sighup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        let mut sigttin = signal(SignalKind::from_raw(libc::SIGTTIN)).expect("SIGTTIN handler");
        let mut sigttou = signal(SignalKind::from_raw(libc::SIGTTOU)).expect("SIGTTOU handler");
        let mut sigusr1 = signal(SignalKind::user_defined1()).expect("SIGUSR1 handler");
        let mut tick = tokio::time::interval(TICK);
        // Only PID 1 reaps orphans; elsewhere the stream is never polled.
        let mut sigchld = signal(SignalKind::child()).expect("SIGCHLD handler");
        let watchdog_every = self.notifier.as_ref().and_then(|n| n.watchdog_every());
        let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(TICK));
        if self.init {
            info!("Running as PID 1: reaping orphaned processes");
        }

        info!("Started master process [{}]", std::process::id());
        if self.config.reload.unused_options() {
            warn!(
                "Current configuration will not reload as not all conditions are met, \
                 please refer to documentation."
            );
        }
        let mut changes = None;
        if self.config.reload.reload {
            match reload::start(&self.config.reload, &self.config.app_dir) {
                Ok((reloader, rx)) => {
                    self.reloader = Some(reloader);
                    changes = Some(rx);
                }
                Err(e) => {
                    error!("Could not start the file watcher for --reload: {e}");
                    return EXIT_FAILURE;
                }
            }
        }
        for l in &self.listeners {
            info!("ferrocorn running on {} (Press CTRL+C to quit)", l.display);
        }
        info!("Starting {} worker(s)", self.target);
        for _ in 0..self.target {
            if self.spawn().await.is_none() {
                return EXIT_FAILURE;
            }
        }

        loop {
            if self.phase == Phase::Stopping && self.workers.is_empty() {
                info!("Stopping master process [{}]", std::process::id());
                return self.exit_code;
            }
            tokio::select! {
                biased;
                _ = sigterm.recv() => self.on_sigterm().await,
                _ = sigint.recv() => self.stop(false).await,
                _ = sigquit.recv() => self.stop(false).await,
                _ = sighup.recv() => self.rolling_restart().await,
                _ = sigttin.recv() => self.scale(1).await,
                _ = sigttou.recv() => self.scale(-1).await,
                _ = sigusr1.recv() => self.reopen_logs().await,
                Some(event) = events.recv() => self.on_event(event).await,
                Some(changed) = next_changes(&mut changes) => self.reload(changed).await,
                _ = tick.tick() => {
                    self.check_deadlines().await;
                    self.reap_orphans();
                    self.sync_fleet();
                }
                _ = sigchld.recv(), if self.init => self.reap_orphans(),
                _ = watchdog.tick(), if watchdog_every.is_some() => self.feed_watchdog(),
                _ = sleep_until_some(self.drain_at) => {
                    self.drain_at = None;
                    self.stop(true).await;
                }
            }
        }
    }

    async fn on_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Message(key, ToMaster::Ready) => self.on_ready(key).await,
            WorkerEvent::Message(
                key,
                ToMaster::BootFailed {
                    reason,
                    exit_code,
                    traceback,
                },
            ) => {
                self.boot_failed(key, &reason, exit_code, traceback.as_deref())
                    .await;
            }
            WorkerEvent::Message(key, ToMaster::Heartbeat) => {
                if let Some(w) = self.workers.get_mut(&key) {
                    w.last_heartbeat = Instant::now();
                }
            }
            WorkerEvent::Message(key, ToMaster::Metrics { snapshot }) => {
                if let Some(fleet) = &self.fleet {
                    fleet.lock().unwrap().report(key, *snapshot);
                }
            }
            WorkerEvent::Message(key, ToMaster::Recycle) => {
                self.recycle(key, Cause::MaxRequests, "reached --max-requests")
                    .await;
            }
            WorkerEvent::Exited(key, status) => self.on_exit(key, status).await,
        }
    }

    async fn on_ready(&mut self, key: u64) {
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        w.ready = true;
        w.last_heartbeat = Instant::now();
        if w.kill_at.is_some_and(|(_, why)| why == NOT_READY_IN_TIME) {
            w.kill_at = None;
        }
        if w.retiring {
            return; // Told to go while it booted (--reload saw another change).
        }
        info!("Worker ready [{}]", w.pid);
        self.sync_fleet();
        let mut serving = self.workers.values().filter(|w| !w.retiring);
        if self.phase == Phase::Booting && serving.all(|w| w.ready) {
            self.phase = Phase::Running;
            let pids: Vec<String> = self
                .workers
                .values()
                .filter(|w| !w.retiring)
                .map(|w| w.pid.to_string())
                .collect();
            info!(
                "ferrocorn ready: {} worker(s) [{}]",
                pids.len(),
                pids.join(", ")
            );
            self.notify(&format!("READY=1\nSTATUS={}", self.status_line()));
        } else if self.phase == Phase::Running && !self.reloading {
            self.notify(&format!("STATUS={}", self.status_line()));
        }
        if let Some((new, old)) = self.replacing {
            if new == key {
                // The replacement serves now: drain the worker it replaces.
                self.replacing = None;
                if let Some(old) = old {
                    self.retire(old).await;
                }
                self.replace_next().await;
            }
        }
    }

    async fn on_exit(&mut self, key: u64, status: ExitStatus) {
        let Some(worker) = self.workers.remove(&key) else {
            return;
        };
        if let (Some(table), Some(slot)) = (self.balance.as_mut(), worker.balance_slot) {
            table.release(slot);
        }
        if let Some(fleet) = &self.fleet {
            fleet.lock().unwrap().worker_exited(key);
        }
        self.to_replace.retain(|k| *k != key);
        if worker.retiring || self.phase == Phase::Stopping {
            if !status.success() && !worker.quiet_exit {
                warn!("Worker [{}] {}", worker.pid, describe(status));
            }
            self.start_if_idle().await;
            return;
        }
        if !worker.ready {
            // It died before it could report why (e.g. the interpreter itself failed).
            let reason = format!(
                "Worker [{}] {} before it was ready",
                worker.pid,
                describe(status)
            );
            self.boot_failed(key, &reason, EXIT_BOOT_FAILURE, None)
                .await;
            return;
        }
        if self.crash_loop() {
            error!(
                "Worker [{}] {}; workers keep dying ({CRASH_LIMIT} times within {:?}): \
                 stopping",
                worker.pid,
                describe(status),
                CRASH_WINDOW
            );
            self.exit_code = EXIT_FAILURE;
            self.stop(false).await;
            return;
        }
        let cause = if worker.timed_out {
            Cause::Timeout
        } else {
            Cause::Crash
        };
        error!(
            "Worker [{}] {}; starting a new one (cause: {})",
            worker.pid,
            describe(status),
            cause.name()
        );
        self.count_restart(cause);
        if let Some((new, Some(old))) = self.replacing {
            if old == key {
                // The worker being replaced died: its replacement simply takes over.
                self.replacing = Some((new, None));
                return;
            }
        }
        self.spawn().await;
    }

    async fn boot_failed(
        &mut self,
        key: u64,
        reason: &str,
        exit_code: i32,
        traceback: Option<&str>,
    ) {
        if self.phase == Phase::Stopping {
            return; // Already reported: one clear message, not one per worker.
        }
        if self.workers.get(&key).is_some_and(|w| w.quiet_exit) {
            return; // Given up by --reload: already reported, or booting outdated code.
        }
        if let Some(traceback) = traceback {
            error!("{traceback}");
        }
        if self.phase == Phase::Running {
            if let Some((new, _)) = self.replacing {
                if new == key {
                    // A new version that doesn't boot must not take the old one down.
                    error!("{reason}");
                    error!("The new worker failed to boot; the running workers keep serving");
                    self.replacing = None;
                    self.to_replace.clear();
                    if let Some(w) = self.workers.get_mut(&key) {
                        w.retiring = true;
                    }
                    self.reload_settled("restart failed: the new worker did not boot");
                    return;
                }
            }
        }
        error!("{reason}");
        if self.config.reload.reload {
            self.wait_for_fix().await;
            return;
        }
        error!("Application failed to boot; stopping");
        self.exit_code = exit_code;
        self.stop(false).await;
    }

    /// --reload and the new code doesn't boot: give up on every worker still booting
    /// (they'd only fail the same way, and log it again) and wait for the next change.
    /// Workers that did get ready keep serving.
    async fn wait_for_fix(&mut self) {
        warn!("Application failed to boot; waiting for a file change to reload");
        let booting: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.ready && !w.retiring)
            .map(|(k, _)| *k)
            .collect();
        for key in booting {
            self.abandon(key, SAME_CODE_FAILED).await;
        }
        if self.active_count() > 0 {
            self.phase = Phase::Running;
        }
    }

    /// --reload: files changed. Stop every worker gracefully (in-flight requests are
    /// answered), and start a fresh set once they are all gone.
    async fn reload(&mut self, changed: Vec<PathBuf>) {
        if self.phase == Phase::Stopping {
            return;
        }
        warn!(
            "WatchFiles detected changes in {}. Reloading...",
            reload::describe_changes(&changed)
        );
        self.to_replace.clear();
        self.replacing = None;
        self.phase = Phase::Booting;
        self.start_when_idle = true;
        let current: Vec<(u64, bool)> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.retiring)
            .map(|(k, w)| (*k, w.ready))
            .collect();
        for (key, ready) in current {
            if ready {
                self.retire(key).await;
                if let Some(w) = self.workers.get_mut(&key) {
                    w.kill_at = w
                        .kill_at
                        .or(Some((Instant::now() + RELOAD_DRAIN_LIMIT, STOP_TOO_SLOW)));
                }
            } else {
                self.abandon(key, BOOTING_OUTDATED).await;
            }
        }
        self.start_if_idle().await;
    }

    /// --reload: once no worker is left, start the new set.
    async fn start_if_idle(&mut self) {
        if !self.start_when_idle || !self.workers.is_empty() || self.phase == Phase::Stopping {
            return;
        }
        self.start_when_idle = false;
        info!("Starting {} worker(s)", self.target);
        for _ in 0..self.target {
            if self.spawn().await.is_none() {
                return;
            }
        }
    }

    /// Tell a worker that hasn't got ready to exit now, quietly; killed if it lingers.
    async fn abandon(&mut self, key: u64, why: &'static str) {
        if let Some(w) = self.workers.get_mut(&key) {
            w.retiring = true;
            w.quiet_exit = true;
            w.kill_at = Some((Instant::now() + ABANDON_GRACE, why));
            let _ = w.control.write_all(&encode(&ToWorker::Quit)).await;
        }
    }

    /// HUP: replace every current worker, one at a time.
    /// HUP reads --env-file again. A file that no longer parses stops the restart
    /// (false): the workers keep the environment they were started with rather than
    /// half of a new one.
    fn reread_env_file(&mut self) -> bool {
        let Some(path) = &self.config.cli.env_file else {
            return true;
        };
        match crate::cli::envfile::worker_environment(Some(path), &self.config.cli.env) {
            Ok(env) => {
                info!("Reloaded environment from '{path}'");
                self.worker_env = env;
                true
            }
            Err(e) => {
                error!("{e}; not restarting (the workers keep their environment)");
                false
            }
        }
    }

    async fn rolling_restart(&mut self) {
        if self.config.reload.reload && self.phase == Phase::Booting && self.workers.is_empty() {
            // --reload after a failed boot: try again without waiting for a change (the
            // fix may be outside the watched files, a `pip install` say).
            info!("Trying to boot the application again (HUP)");
            if !self.reread_env_file() {
                return;
            }
            self.start_when_idle = true;
            self.start_if_idle().await;
            return;
        }
        if self.phase != Phase::Running || self.drain_at.is_some() || !self.reread_env_file() {
            return;
        }
        info!("Rolling restart of {} worker(s)", self.active_count());
        self.reloading = true;
        self.notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=Rolling restart of {} worker(s)",
            notify::monotonic_usec(),
            self.active_count()
        ));
        for (key, w) in &self.workers {
            if !w.retiring && !self.to_replace.contains(key) {
                info!(
                    "Replacing worker [{}] (cause: {})",
                    w.pid,
                    Cause::Hup.name()
                );
                if let Some(fleet) = &self.fleet {
                    fleet.lock().unwrap().restart(Cause::Hup.name());
                }
                self.to_replace.push_back(*key);
            }
        }
        self.replace_next().await;
    }

    /// Queue one worker for a rolling replacement (--max-requests, --workers-lifetime,
    /// --workers-max-rss); `why` completes "Worker [pid] ...".
    async fn recycle(&mut self, key: u64, cause: Cause, why: &str) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(w) = self.workers.get(&key) {
            if !w.retiring && !self.to_replace.contains(&key) {
                info!(
                    "Worker [{}] {why}; replacing it (cause: {})",
                    w.pid,
                    cause.name()
                );
                self.count_restart(cause);
                self.to_replace.push_back(key);
                self.replace_next().await;
            }
        }
    }

    /// Start the replacement of the next queued worker, unless one is in progress.
    async fn replace_next(&mut self) {
        if self.replacing.is_some() || self.phase != Phase::Running {
            return;
        }
        while let Some(old) = self.to_replace.pop_front() {
            if self.workers.get(&old).is_none_or(|w| w.retiring) {
                continue;
            }
            if let Some(new) = self.spawn().await {
                self.replacing = Some((new, Some(old)));
                // uvicorn's --timeout-worker-healthcheck: a replacement that isn't ready
                // in time is killed, and the old worker keeps serving (boot_failed).
                if let Some(limit) = self.config.cli.timeout_worker_healthcheck {
                    if let Some(w) = self.workers.get_mut(&new) {
                        let at = Instant::now() + Duration::from_secs_f64(limit);
                        w.kill_at = Some((at, NOT_READY_IN_TIME));
                    }
                }
            }
            return;
        }
        self.reload_settled("");
    }

    /// The rolling restart is over (every worker replaced, or a replacement failed to
    /// boot): systemd hears READY=1 again.
    fn reload_settled(&mut self, problem: &str) {
        if !std::mem::take(&mut self.reloading) {
            return;
        }
        let status = if problem.is_empty() {
            self.status_line()
        } else {
            format!("{}; {problem}", self.status_line())
        };
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    /// SIGTERM: with --shutdown-delay, fail readiness and keep serving for that long,
    /// then drain; a second SIGTERM (or none configured) drains at once.
    async fn on_sigterm(&mut self) {
        let delay = self.config.deploy.shutdown_delay;
        if delay <= 0.0 || self.drain_at.is_some() || self.phase == Phase::Stopping {
            self.drain_at = None;
            self.stop(true).await;
            return;
        }
        info!("Shutting down in {delay} s (--shutdown-delay); readiness now fails");
        self.drain_at = Some(Instant::now() + Duration::from_secs_f64(delay));
        self.notify("STOPPING=1\nSTATUS=Stopping: waiting --shutdown-delay");
        self.told_stopping = true;
        let line = encode(&ToWorker::Leaving);
        for w in self.workers.values_mut() {
            let _ = w.control.write_all(&line).await;
        }
    }

    fn notify(&self, message: &str) {
        if let Some(n) = &self.notifier {
            n.send(message);
        }
    }

    fn status_line(&self) -> String {
        let ready = self
            .workers
            .values()
            .filter(|w| w.ready && !w.retiring)
            .count();
        format!("{ready} of {} worker(s) ready", self.target)
    }

    /// WATCHDOG=1 only while the master's loop runs (this is called from it) and every
    /// ready worker's event loop has sent a heartbeat lately.
    fn feed_watchdog(&self) {
        let now = Instant::now();
        let stalled = self
            .workers
            .values()
            .any(|w| w.ready && !w.retiring && now.duration_since(w.last_heartbeat) > LOOP_STALLED);
        if !stalled {
            self.notify("WATCHDOG=1");
        }
    }

    /// PID 1 only: reap exited processes that aren't workers.
    fn reap_orphans(&self) {
        if !self.init {
            return;
        }
        let reaped = reaper::reap_orphans(|pid| self.workers.values().any(|w| w.pid == pid));
        if reaped > 0 {
            crate::debug!("Reaped {reaped} orphaned process(es)");
        }
    }

    /// Records an unexpected exit of a ready worker; true when they come too often.
    fn crash_loop(&mut self) -> bool {
        let now = Instant::now();
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            self.crashes.pop_front();
        }
        self.crashes.len() >= CRASH_LIMIT
    }

    /// TTIN / TTOU.
    async fn scale(&mut self, delta: isize) {
        if self.phase == Phase::Stopping {
            return;
        }
        if delta > 0 {
            self.target += 1;
            info!("Adding a worker ({} wanted)", self.target);
            self.spawn().await;
            return;
        }
        if self.target <= 1 {
            info!("Keeping the last worker");
            return;
        }
        self.target -= 1;
        info!("Removing a worker ({} wanted)", self.target);
        let newest = self
            .workers
            .iter()
            .filter(|(_, w)| !w.retiring)
            .map(|(k, _)| *k)
            .max();
        if let Some(key) = newest {
            self.retire(key).await;
        }
    }

    /// USR1: reopen the master's log files and tell every worker to do the same.
    async fn reopen_logs(&mut self) {
        match crate::log::reopen() {
            Ok(()) => info!("Reopened log files"),
            Err(e) => error!("Could not reopen the log files: {e}"),
        }
        let line = encode(&ToWorker::ReopenLogs);
        for w in self.workers.values_mut() {
            let _ = w.control.write_all(&line).await;
        }
    }

    /// --metrics: one more replacement for `cause`.
    fn count_restart(&self, cause: Cause) {
        if let Some(fleet) = &self.fleet {
            fleet.lock().unwrap().restart(cause.name());
        }
    }

    /// --metrics: which workers serve (ready, not draining), for the workers gauge.
    fn sync_fleet(&self) {
        if let Some(fleet) = &self.fleet {
            let mut fleet = fleet.lock().unwrap();
            for (key, w) in &self.workers {
                fleet.set_serving(*key, w.ready && !w.retiring);
            }
        }
    }

    fn active_count(&self) -> usize {
        self.workers.values().filter(|w| !w.retiring).count()
    }

    /// Drain one worker; it is killed if it hasn't exited by the graceful deadline.
    async fn retire(&mut self, key: u64) {
        let deadline = self.drain_deadline();
        if let Some(w) = self.workers.get_mut(&key) {
            w.retiring = true;
            w.kill_at = deadline.map(|d| (d, STOP_TOO_SLOW));
            let _ = w.control.write_all(&encode(&ToWorker::Stop)).await;
        }
    }

    fn drain_deadline(&self) -> Option<Instant> {
        let wait = match self.config.graceful_timeout {
            Some(t) => Some(Duration::from_secs_f64(t)),
            None => self
                .config
                .timeout_graceful_shutdown
                .map(|t| Duration::from_secs_f64(t) + DRAIN_KILL_MARGIN),
        };
        wait.map(|w| Instant::now() + w)
    }

    /// Kill workers past their deadline, and dump and kill those whose loop is stuck;
    /// queue the replacement of those past --workers-lifetime or --workers-max-rss.
    async fn check_deadlines(&mut self) {
        self.check_recycling().await;
        let now = Instant::now();
        let timeout = Duration::from_secs_f64(self.config.timeout.max(0.0));
        for w in self.workers.values_mut() {
            if let Some((at, why)) = w.kill_at {
                if now >= at {
                    warn!("Killing worker [{}]: {why}", w.pid);
                    unsafe { libc::kill(w.pid as i32, libc::SIGKILL) };
                    w.kill_at = None;
                }
                continue;
            }
            let stuck = !timeout.is_zero()
                && w.ready
                && !w.retiring
                && now.duration_since(w.last_heartbeat) > timeout;
            if stuck {
                error!(
                    "Worker [{}] timed out: its event loop has been blocked for over {:?}; \
                     its Python stacks follow",
                    w.pid, timeout
                );
                if is_stopped(w.pid) {
                    // SIGSTOP (a debugger, a `kill -STOP`, a frozen cgroup) stops the
                    // worker's control thread too: let it run so it can write its stacks
                    // before the kill; its loop was not serving for --timeout anyway.
                    warn!(
                        "Worker [{}] is stopped; resuming it to dump its stacks",
                        w.pid
                    );
                    unsafe { libc::kill(w.pid as i32, libc::SIGCONT) };
                }
                let _ = w.control.write_all(&encode(&ToWorker::DumpStacks)).await;
                w.kill_at = Some((now + DUMP_GRACE, "its event loop is blocked"));
                w.timed_out = true;
            }
        }
    }

    /// --workers-lifetime and --workers-max-rss: find the serving workers due for a
    /// replacement. Only ready workers count: one still booting is no candidate, and a
    /// replacement is never replaced before it has served.
    async fn check_recycling(&mut self) {
        let now = Instant::now();
        let mut due: Vec<(u64, Cause, String)> = Vec::new();
        for (key, w) in &self.workers {
            if w.ready && !w.retiring && w.lifetime_ends.is_some_and(|at| now >= at) {
                due.push((*key, Cause::Lifetime, "reached --workers-lifetime".into()));
            }
        }
        let rss_limit = self.config.recycling.workers_max_rss;
        if let Some(limit_mib) = rss_limit {
            let every = Duration::from_secs_f64(self.config.recycling.workers_max_rss_interval);
            if now.duration_since(self.rss_sampled) >= every {
                self.rss_sampled = now;
                let samples = self.config.recycling.workers_max_rss_samples;
                let limit = limit_mib * 1024 * 1024;
                for (key, w) in self.workers.iter_mut() {
                    if !w.ready || w.retiring {
                        continue;
                    }
                    let Some(rss) = crate::recycling::rss::resident_bytes(w.pid) else {
                        continue;
                    };
                    w.rss_over = if rss > limit { w.rss_over + 1 } else { 0 };
                    if w.rss_over >= samples && !due.iter().any(|(k, _, _)| k == key) {
                        let why = format!(
                            "uses {} MiB, over --workers-max-rss {limit_mib} MiB in {} \
                             sample(s) in a row",
                            rss / (1024 * 1024),
                            w.rss_over
                        );
                        due.push((*key, Cause::Rss, why));
                    }
                }
            }
        }
        for (key, cause, why) in due {
            self.recycle(key, cause, &why).await;
        }
    }

    /// This worker's --workers-lifetime plus its share of the jitter, from now.
    fn lifetime_for_one(&self) -> Option<Instant> {
        let options = &self.config.recycling;
        let base = options.workers_lifetime?;
        let jitter =
            options.workers_lifetime_jitter * crate::recycling::options::spread(self.next_key);
        Some(Instant::now() + Duration::from_secs_f64(base + jitter))
    }

    /// Start one worker and hand it its boot message. None if the interpreter itself
    /// can't be started (then the master stops).
    async fn spawn(&mut self) -> Option<u64> {
        let mut fds: Vec<i32> = self
            .listeners
            .iter()
            .map(|l| l.socket.as_raw_fd())
            .collect();
        let balance_slot = self.balance.as_mut().and_then(SlotTable::claim);
        if let Some(slot) = &balance_slot {
            fds.push(slot.fd);
        }
        let spawned = match spawn_worker(&self.python, &fds, &self.worker_env) {
            Ok(s) => s,
            Err(e) => {
                if let (Some(table), Some(slot)) = (self.balance.as_mut(), balance_slot) {
                    table.release(slot.index);
                }
                error!(
                    "Could not start a worker with {}: {e}",
                    self.python.executable
                );
                self.exit_code = EXIT_FAILURE;
                self.stop(false).await;
                return None;
            }
        };
        let lifetime_ends = self.lifetime_for_one();
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
            max_requests: self.max_requests_for_one(),
            balance: balance_slot,
        };
        // A failed write means the worker already died; its exit is reported below.
        let _ = write_half.write_all(&encode(&boot)).await;
        if self.drain_at.is_some() {
            // Started during --shutdown-delay (it replaces one that died): it serves,
            // but its readiness probe fails like the others'.
            let _ = write_half.write_all(&encode(&ToWorker::Leaving)).await;
        }

        let tx = self.events_tx.clone();
        let reader = tokio::spawn(async move {
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
                // Its last messages (a boot failure and its traceback) before its exit,
                // so the exit is never taken for an unexplained one. Bounded: a child the
                // app forked may still hold the channel open.
                let _ = tokio::time::timeout(LAST_MESSAGES_WAIT, reader).await;
                let _ = tx.send(WorkerEvent::Exited(key, status));
            }
        });
        self.workers.insert(
            key,
            Worker {
                pid,
                control: write_half,
                ready: false,
                retiring: false,
                last_heartbeat: Instant::now(),
                kill_at: None,
                quiet_exit: false,
                timed_out: false,
                lifetime_ends,
                rss_over: 0,
                balance_slot: balance_slot.map(|s| s.index),
            },
        );
        if let Some(fleet) = &self.fleet {
            fleet.lock().unwrap().worker_started(key, pid);
        }
        info!("Booting worker [{pid}]");
        Some(key)
    }

    /// --max-requests plus this worker's share of the jitter.
    fn max_requests_for_one(&self) -> Option<u64> {
        let base = self.config.max_requests?;
        let jitter = self.config.max_requests_jitter;
        if jitter == 0 {
            return Some(base);
        }
        // Any spread will do; it only keeps workers from restarting in lockstep.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64)
            ^ (self.next_key.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Some(base + seed % (jitter + 1))
    }

    /// Order every worker to stop; `graceful` lets in-flight requests finish.
    async fn stop(&mut self, graceful: bool) {
        let already = self.phase == Phase::Stopping;
        if !std::mem::replace(&mut self.told_stopping, true) {
            self.notify("STOPPING=1\nSTATUS=Stopping");
        }
        self.drain_at = None;
        self.reloading = false;
        self.phase = Phase::Stopping;
        self.to_replace.clear();
        self.replacing = None;
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
        let deadline = if graceful {
            self.drain_deadline()
        } else {
            Some(Instant::now() + QUICK_STOP_GRACE)
        };
        let line = encode(&order);
        for w in self.workers.values_mut() {
            w.retiring = true;
            let ours = deadline.map(|d| (d, STOP_TOO_SLOW));
            w.kill_at = match (w.kill_at, ours) {
                (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
                (a, b) => a.or(b),
            };
            let _ = w.control.write_all(&line).await;
        }
    }
}

/// The next batch of changed files under --reload; never resolves without it.
async fn next_changes(
    changes: &mut Option<mpsc::UnboundedReceiver<Vec<PathBuf>>>,
) -> Option<Vec<PathBuf>> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves at `at`, or never when there is no such time.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether the process is stopped by a signal (state T in /proc/<pid>/stat).
fn is_stopped(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/stat")).is_ok_and(|stat| stat_says_stopped(&stat))
}

/// The state follows the command name, which is in parentheses and may itself hold any
/// byte (a `)` or ` T ` included), so it is read after the last `)`.
fn stat_says_stopped(stat: &[u8]) -> bool {
    let after_name = stat.iter().rposition(|&b| b == b')').map_or(0, |i| i + 1);
    stat[after_name..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'T')
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "exited".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_state_is_read_after_the_command_name() {
        assert!(stat_says_stopped(b"42 (python3) T 1 42 42 0 -1"));
        assert!(!stat_says_stopped(b"42 (python3) S 1 42 42 0 -1"));
        // A name that looks like a stopped state must not fool it.
        assert!(!stat_says_stopped(b"42 (a) T (b) R 1 42 42 0 -1"));
        assert!(!is_stopped(std::process::id()));
    }
}
