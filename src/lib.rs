//! ferrocorn: an ASGI application server. See shared/DESIGN.md for the architecture.

pub mod access_log;
pub mod asgi;
pub mod balance;
pub mod cli;
pub mod config;
pub mod conn_shared;
pub mod control;
pub mod deploy;
pub mod fields;
pub mod http1;
pub mod http2;
pub mod log;
pub mod logging_options;
pub mod master;
pub mod memory;
pub mod metrics;
pub mod proxy;
pub mod recycling;
pub mod tls;
pub mod worker;
pub mod ws;
pub mod wsgi;

use pyo3::prelude::*;

/// Parse the command line and run the master until it stops; returns the exit code.
/// `argv[0]` is the program name. Help, version and usage errors print as clap does.
#[pyfunction]
fn run_master(
    py: Python<'_>,
    argv: Vec<String>,
    executable: String,
    interpreter_flags: Vec<String>,
) -> i32 {
    let config = match cli::parse(&argv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = check_logging(py, &config) {
        eprintln!("error: {e}");
        return 2;
    }
    let python = master::spawn::PythonLaunch {
        executable,
        interpreter_flags,
        inherited_ignored: master::spawn::ignored_at_start(),
    };
    py.allow_threads(|| master::run(config, python))
}

/// Bad logging options stop the master before any worker starts, with one line naming
/// the option: an access-log format that doesn't compile, a --log-config that Python's
/// logging can't load or apply (checked by python/ferrocorn/_logging.py).
fn check_logging(py: Python<'_>, config: &config::Config) -> Result<(), String> {
    if let Some(format) = &config.logging.access_log_format {
        access_log::compile(format, &mut Vec::new(), &mut Vec::new())
            .map_err(|e| format!("--access-log-format: {e}"))?;
    }
    if let Some(path) = &config.logging.log_config {
        let problem = py
            .import("ferrocorn._logging")
            .and_then(|m| m.call_method1("check_log_config", (path, &config.app_dir)))
            .and_then(|r| r.extract::<Option<String>>())
            .map_err(|e| e.to_string())?;
        if let Some(problem) = problem {
            return Err(format!("--log-config {path}: {problem}"));
        }
    }
    Ok(())
}

#[pymodule]
fn _ferrocorn(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_master, m)?)?;
    m.add_class::<worker::WorkerCore>()?;
    m.add_class::<asgi::runner::RequestQueue>()?;
    m.add_class::<wsgi::pool::WsgiPool>()?;
    m.add_class::<wsgi::response::FileWrapper>()?;
    m.add(
        "ClientDisconnected",
        m.py().get_type::<asgi::http::ClientDisconnected>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
