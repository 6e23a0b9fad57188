//! ferrocorn: an ASGI application server. See shared/DESIGN.md for the architecture.

pub mod asgi;
pub mod cli;
pub mod config;
pub mod conn_shared;
pub mod control;
pub mod http1;
pub mod http2;
pub mod log;
pub mod master;
pub mod proxy;
pub mod recycling;
pub mod tls;
pub mod worker;
pub mod ws;

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
    let python = master::spawn::PythonLaunch {
        executable,
        interpreter_flags,
    };
    py.allow_threads(|| master::run(config, python))
}

#[pymodule]
fn _ferrocorn(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_master, m)?)?;
    m.add_class::<worker::WorkerCore>()?;
    m.add_class::<asgi::runner::RequestQueue>()?;
    m.add(
        "ClientDisconnected",
        m.py().get_type::<asgi::http::ClientDisconnected>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
