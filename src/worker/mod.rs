//! A worker process's Rust core, driven from `python -m ferrocorn.worker`.
//!
//! Threads: the interpreter's main thread runs the asyncio loop and the app; the
//! `ferrocorn-io` thread runs tokio and the protocols; the `ferrocorn-control` thread reads the
//! master's orders. Only the main thread ever holds the GIL for our code.

mod accept_errors;
pub mod control;
mod server;
mod signals;
mod stacks;

use crate::asgi::bridge::{self, Bridge};
use crate::asgi::dispatch::Dispatcher;
use crate::asgi::exchange::IoWakeups;
use crate::asgi::http::HttpContext;
use crate::asgi::scope::ScopeBuilder;
use crate::balance::worker::WorkerSlot;
use crate::config::{Config, HttpMode, LogLevel};
use crate::conn_shared::{ConnShared, H2Settings, HeadOptions, Limits, WsSettings};
use crate::control::{ListenerSpec, ToMaster, ToWorker};
use crate::wsgi::pool::WsgiPool;
use control::ControlChannel;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

#[pyclass(module = "ferrocorn._ferrocorn", unsendable)]
pub struct WorkerCore {
    control: Arc<ControlChannel>,
    max_requests: Option<u64>,
    config: Config,
    listeners: Vec<ListenerSpec>,
    worker_id: usize,
    bridge: Arc<Bridge>,
    health: Arc<crate::deploy::health::Health>,
    server: Option<server::ServerHandle>,
    dispatcher: Option<Dispatcher>,
    /// WSGI: the thread pool, and the callback for stop orders (the loop gets no
    /// requests, so it has no dispatcher).
    wsgi: Option<Py<WsgiPool>>,
    on_control: Option<PyObject>,
    /// WSGI with access records routed to Python logging: the emitter the loop calls.
    wsgi_access: Option<PyObject>,
    batch: Vec<bridge::Event>,
    /// This worker's slot in the shared connection table (src/balance).
    balance: Option<Arc<WorkerSlot>>,
    /// When the loop last ran the heartbeat (event-loop lag, --metrics).
    last_beat: Option<std::time::Instant>,
}

fn runtime_error(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

#[pymethods]
impl WorkerCore {
    /// Takes over the control channel and reads the boot message (blocks until it comes).
    #[new]
    fn new(control_fd: i32) -> PyResult<Self> {
        let (control, reader, boot, pending) =
            control::connect(control_fd).map_err(runtime_error)?;
        let ToWorker::Boot {
            config,
            listeners,
            worker_id,
            max_requests,
            balance,
        } = boot
        else {
            return Err(runtime_error(
                "the master's first message was not a boot message",
            ));
        };
        crate::log::set_level(config.log_level);
        crate::log::set_files(
            config.error_logfile.as_deref(),
            config.access_logfile.as_deref(),
        )
        .map_err(runtime_error)?;
        crate::log::set_colors(config.logging.colors());
        let balance = balance.and_then(|spec| match WorkerSlot::open(spec) {
            Ok(slot) => Some(slot),
            Err(e) => {
                crate::warn!(
                    "Could not map the shared connection table ({e}); this worker \
                     accepts without balancing"
                );
                None
            }
        });
        let bridge = Arc::new(Bridge::new().map_err(runtime_error)?);
        let sigterm = signals::install_sigterm().map_err(runtime_error)?;
        let health = Arc::new(crate::deploy::health::Health::new(&config.deploy));
        control::spawn_reader(reader, pending, sigterm, bridge.clone(), health.clone())
            .map_err(runtime_error)?;
        let control = Arc::new(control);
        if config.metrics.counting() {
            crate::metrics::recorder::enable(control.clone());
        }
        Ok(WorkerCore {
            control,
            last_beat: None,
            max_requests,
            config: *config,
            listeners,
            worker_id,
            bridge,
            health,
            server: None,
            dispatcher: None,
            wsgi: None,
            on_control: None,
            wsgi_access: None,
            batch: Vec::with_capacity(256),
            balance,
        })
    }

    /// The configuration as JSON, for the Python side of the boot.
    #[getter]
    fn config_json(&self) -> String {
        serde_json::to_string(&self.config).expect("config serialises")
    }

    #[getter]
    fn worker_id(&self) -> usize {
        self.worker_id
    }

    fn ready(&self) {
        self.health.set_started();
        self.control.send(&ToMaster::Ready);
    }

    #[pyo3(signature = (reason, exit_code = 3, traceback = None))]
    fn boot_failed(&self, reason: String, exit_code: i32, traceback: Option<String>) {
        self.control.send(&ToMaster::BootFailed {
            reason,
            exit_code,
            traceback,
        });
    }

    /// Tell the master the worker is alive. A WSGI worker whose app has made no
    /// progress on some request for --timeout stays silent instead, so the master
    /// dumps its stacks (that thread's included) and replaces it, as for a stuck loop.
    /// `interval`: the seconds the loop was asked to wait since the last heartbeat;
    /// whatever it took beyond that is the event loop's lag (--metrics).
    #[pyo3(signature = (interval = None))]
    fn heartbeat(&mut self, py: Python<'_>, interval: Option<f64>) {
        let now = std::time::Instant::now();
        if let (Some(last), Some(interval)) = (self.last_beat.replace(now), interval) {
            let late = now.duration_since(last).as_secs_f64() - interval;
            crate::metrics::recorder::loop_lag(std::time::Duration::from_secs_f64(late.max(0.0)));
        }
        if let Some(pool) = &self.wsgi {
            let timeout = self.config.timeout;
            let stall = pool.get().progress.longest_stall().as_secs_f64();
            if timeout > 0.0 && stall >= timeout {
                if stall < timeout + 1.5 {
                    crate::error!("A WSGI request made no progress for {stall:.0} s (--timeout)");
                }
                return;
            }
        }
        let _ = py;
        self.health.beat();
        self.control.send(&ToMaster::Heartbeat);
        crate::metrics::recorder::report();
    }

    /// Colour the error log's level names (--use-colors, or stderr is a terminal).
    #[getter]
    fn error_colors(&self) -> bool {
        crate::log::error_colors()
    }

    /// Colour access lines (--use-colors, or stdout is a terminal).
    #[getter]
    fn access_colors(&self) -> bool {
        crate::log::access_colors()
    }

    /// Write one line to the access log (stdout or --access-logfile) as it is.
    #[staticmethod]
    fn access_line(line: &str) {
        crate::log::access(line);
    }

    /// Log through the same writer as the Rust side; level is a uvicorn level name.
    #[staticmethod]
    fn log(level: &str, message: &str) {
        let level = match level {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "warning" => LogLevel::Warning,
            "error" => LogLevel::Error,
            "critical" => LogLevel::Critical,
            _ => LogLevel::Info,
        };
        crate::log::log(level, message);
    }

    /// Start serving: the I/O thread begins accepting. Returns the fd the loop must watch
    /// (`loop.add_reader(fd, core.drain)`). `access` is where access records go, as
    /// python/ferrocorn/_logging.py's `access_route` decides: `("rust", None)` (the
    /// default), `("python", emitter)` (each record is handed to `emitter`) or
    /// `("off", None)` (the app silenced its access logger).
    #[pyo3(signature = (event_loop, requests, state, on_control, access=None))]
    fn serve(
        &mut self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        requests: &Bound<'_, PyAny>,
        state: Py<PyDict>,
        on_control: PyObject,
        access: Option<(String, Option<PyObject>)>,
    ) -> PyResult<i32> {
        if self.server.is_some() {
            return Err(runtime_error("already serving"));
        }
        let wakeups = Arc::new(IoWakeups::default());
        let (route, access_logger) = access.unwrap_or_else(|| ("rust".into(), None));
        let access_log = route != "off";
        let python_access = route == "python" && access_logger.is_some();
        let access_logger = access_logger.filter(|_| python_access);
        self.dispatcher = Some(Dispatcher::new(
            requests,
            state,
            on_control,
            ScopeBuilder::new(py, &self.config.root_path, self.config.tls_enabled())?,
            HttpContext::new(py, event_loop, wakeups.clone())?,
            access_logger,
        )?);
        let shared = self.conn_shared(wakeups, true, access_log, python_access)?;
        let trim_interval = self.config.memory.malloc_trim_interval;
        let handle = py
            .allow_threads(|| {
                server::start(&self.listeners, shared, self.balance.clone(), trim_interval)
            })
            .map_err(runtime_error)?;
        self.server = Some(handle);
        Ok(self.bridge.fd())
    }

    /// Start serving a WSGI app: requests go to a pool of `threads` threads that the
    /// caller starts (`threading.Thread(target=pool.run, args=(slot,))`); the loop only
    /// gets stop orders (`on_control`) and, when `access` routes them to Python logging
    /// (as for `serve`), the access records. Returns the fd the loop watches, and the
    /// pool.
    #[pyo3(signature = (app, on_control, access=None))]
    fn serve_wsgi(
        &mut self,
        py: Python<'_>,
        app: PyObject,
        on_control: PyObject,
        access: Option<(String, Option<PyObject>)>,
    ) -> PyResult<(i32, Py<WsgiPool>)> {
        if self.server.is_some() {
            return Err(runtime_error("already serving"));
        }
        let c = &self.config;
        let pool = Py::new(
            py,
            WsgiPool::new(
                py,
                app,
                c.interface.threads,
                c.workers.count() > 1,
                &c.root_path,
                c.tls_enabled(),
                std::time::Duration::from_secs_f64(c.interface.timeout_write.max(0.001)),
            )?,
        )?;
        self.bridge.set_request_sink(pool.get().queue.clone());
        self.on_control = Some(on_control);
        self.wsgi = Some(pool.clone_ref(py));
        // Access records routed to Python logging come to this loop (the main thread,
        // idle under WSGI), never to the app's pool threads.
        let (route, access_logger) = access.unwrap_or_else(|| ("rust".into(), None));
        let access_log = route != "off";
        let python_access = route == "python" && access_logger.is_some();
        self.wsgi_access = access_logger.filter(|_| python_access);
        let shared = self.conn_shared(
            Arc::new(IoWakeups::default()),
            false,
            access_log,
            python_access,
        )?;
        let trim_interval = self.config.memory.malloc_trim_interval;
        let handle = py
            .allow_threads(|| {
                server::start(&self.listeners, shared, self.balance.clone(), trim_interval)
            })
            .map_err(runtime_error)?;
        self.server = Some(handle);
        Ok((self.bridge.fd(), pool))
    }

    /// Handle every event queued by the other threads; called by the loop when the
    /// bridge's eventfd is readable.
    fn drain(&mut self, py: Python<'_>) -> PyResult<()> {
        let mut batch = std::mem::take(&mut self.batch);
        self.bridge.take(&mut batch);
        let mut result = Ok(());
        if let Some(dispatcher) = self.dispatcher.as_mut() {
            for event in batch.drain(..) {
                dispatcher.handle(py, event);
            }
            result = dispatcher.end_of_batch(py);
        } else if let Some(on_control) = &self.on_control {
            for event in batch.drain(..) {
                let result = match event {
                    bridge::Event::Stop { graceful: true } => on_control.call1(py, ("stop",)),
                    bridge::Event::Stop { graceful: false } => on_control.call1(py, ("quit",)),
                    bridge::Event::Drained => on_control.call1(py, ("drained",)),
                    bridge::Event::Access(r) => match &self.wsgi_access {
                        Some(logger) => logger.call1(
                            py,
                            (&r.client, &r.method, &r.path, r.http_version, r.status),
                        ),
                        None => continue,
                    },
                    _ => continue,
                };
                if let Err(e) = result {
                    e.print(py);
                }
            }
        }
        batch.clear();
        self.batch = batch;
        result
    }

    /// Stop accepting and close connections as their requests finish; a "drained"
    /// notice follows once all are closed.
    fn begin_shutdown(&self) {
        if let Some(server) = &self.server {
            server.begin_shutdown();
        }
    }

    /// Close every open WebSocket with 1012 (service restart) now.
    fn close_websockets(&self) {
        if let Some(server) = &self.server {
            server.close_websockets();
        }
    }
}

impl WorkerCore {
    /// What every connection shares. `websockets`: false for WSGI, which has none.
    /// `access_log`: lines are written at all; `python_access`: as Python log records.
    fn conn_shared(
        &self,
        wakeups: Arc<IoWakeups>,
        websockets: bool,
        access_log: bool,
        python_access: bool,
    ) -> PyResult<Arc<ConnShared>> {
        let c = &self.config;
        let tls = crate::tls::server_config(c)
            .map_err(runtime_error)?
            .map(tokio_rustls::TlsAcceptor::from);
        let secs = std::time::Duration::from_secs_f64;
        let ws = (websockets && c.websockets_enabled()).then(|| WsSettings {
            max_size: c.ws_max_size,
            max_queue: c.ws_max_queue,
            ping_interval: (c.ws_ping_interval > 0.0).then(|| secs(c.ws_ping_interval)),
            ping_timeout: secs(c.ws_ping_timeout.max(0.001)),
            per_message_deflate: c.ws_per_message_deflate,
        });
        let cleartext_h2 = c.http == HttpMode::Auto && tls.is_none();
        let http2 = H2Settings {
            prior_knowledge: cleartext_h2,
            upgrade: cleartext_h2,
            only: c.http == HttpMode::Http2,
            max_concurrent_streams: c.http2_max_concurrent_streams,
            max_header_list_size: c.http2_max_header_list_size,
            max_frame_size: c.http2_max_frame_size,
        };
        Ok(Arc::new(ConnShared {
            bridge: self.bridge.clone(),
            inflight: Arc::new(AtomicUsize::new(0)),
            limits: Limits {
                request_line: self.config.limit_request_line,
                fields: self.config.limit_request_fields,
                field_size: self.config.limit_request_field_size,
                max_incomplete_head: c.cli.h11_max_incomplete_event_size,
            },
            limit_concurrency: c.limit_concurrency,
            head: head_options(c)?,
            access_log: (c.access_log_enabled() && access_log)
                .then(|| crate::access_log::AccessLog::new(&c.logging, &c.root_path, python_access))
                .transpose()
                .map_err(runtime_error)?,
            keep_alive: std::time::Duration::from_secs_f64(c.timeout_keep_alive),
            header_timeout: std::time::Duration::from_secs_f64(c.timeout_request_header),
            body_timeout: std::time::Duration::from_secs_f64(c.timeout_request_body),
            limit_request_body: c.limit_request_body,
            max_connections: c.worker_connections,
            recycle: self
                .max_requests
                .map(|limit| control::Recycle::new(limit, self.control.clone())),
            wakeups,
            ws,
            ws_close: tokio::sync::watch::channel(false).0,
            http2,
            tls,
            proxy: crate::proxy::ProxySettings::new(
                &c.proxy,
                std::time::Duration::from_secs_f64(c.timeout_request_header),
                std::time::Duration::from_secs_f64(c.timeout_keep_alive),
            ),
            health: self.health.clone(),
            bounds: crate::recycling::conn_budget::ConnBounds::new(
                &c.recycling,
                std::time::Duration::from_secs_f64(c.timeout_keep_alive),
            ),
        }))
    }
}

/// --server-header, --date-header and --header; a `--header server:...` takes the
/// place of ferrocorn's own server header, as in uvicorn.
fn head_options(c: &crate::config::Config) -> PyResult<HeadOptions> {
    let extra = c
        .cli
        .header
        .iter()
        .map(|h| crate::cli::header::parse(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(runtime_error)?;
    let custom_server = extra.iter().any(|(n, _)| n == http::header::SERVER);
    Ok(HeadOptions {
        server_header: c.server_header_enabled() && !custom_server,
        date_header: c.date_header_enabled(),
        extra,
    })
}
