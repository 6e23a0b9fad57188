//! The command line, as the master reads it: clap parses the options of src/config.rs,
//! with three layers under the command line (see `layers`):
//!
//!   command line  >  FERROCORN_* environment variables  >  --config file  >  defaults
//!
//! plus gunicorn's short names (`-w`, `-b`, `-t`, `-p`, `-k`, `-c`, `-e`) and the checks
//! and startup notes of the drop-in options (src/cli/options.rs). Every problem found
//! here is one line on stderr and exit code 2, before a socket is bound or a worker
//! started.

pub mod bind;
mod ciphers;
pub mod envfile;
pub mod header;
mod layers;
pub mod options;
mod review;

pub use bind::BindSpec;
pub use ciphers::tls12_suites;
pub use options::DropinOptions;

use crate::config::Config;
use clap::{Command, CommandFactory, FromArgMatches};

/// Exit code for bad input (as clap's usage errors).
pub const EXIT_USAGE: i32 = 2;

/// The `ferrocorn` command: src/config.rs's options with gunicorn's short names and
/// aliases, and each option's environment variable named in its help.
pub fn command() -> Command {
    let cmd = Config::command()
        .mut_arg("workers", |a| a.short('w'))
        .mut_arg("timeout", |a| a.short('t'))
        .mut_arg("pid", |a| a.short('p'))
        // gunicorn's --keep-alive is uvicorn's --timeout-keep-alive.
        .mut_arg("timeout_keep_alive", |a| a.alias("keep-alive"))
        // gunicorn's spellings of the log files and TLS options.
        .mut_arg("error_logfile", |a| a.alias("log-file"))
        .mut_arg("ssl_certfile", |a| a.alias("certfile"))
        .mut_arg("ssl_keyfile", |a| a.alias("keyfile"))
        .mut_arg("ssl_ca_certs", |a| a.alias("ca-certs"))
        .mut_arg("ssl_cert_reqs", |a| a.alias("cert-reqs"))
        .mut_arg("ssl_ciphers", |a| a.alias("ciphers"))
        // gunicorn spells this one with an underscore.
        .mut_arg("limit_request_field_size", |a| {
            a.alias("limit-request-field_size")
        });
    layers::name_env_vars(cmd)
}

/// Parse `argv` (argv[0] is the program name) into the configuration, or the exit code
/// after printing help, the version or one line about what is wrong.
pub fn parse(argv: &[String]) -> Result<Config, i32> {
    let cmd = command();
    let (tokens, sources) = layers::resolve(&cmd, argv).map_err(|e| e.report())?;
    let matches = match cmd.try_get_matches_from(&tokens) {
        Ok(m) => m,
        Err(e) => return Err(layers::report_clap_error(e, &sources)),
    };
    let mut config = match Config::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return Err(layers::report_clap_error(e, &sources)),
    };
    if let Err(message) = review::review(&mut config, &matches) {
        // "--env ...: why" names the variable or file the value came from, if not typed.
        let long = message
            .strip_prefix("--")
            .and_then(|rest| rest.split([' ', ':']).next())
            .unwrap_or_default();
        match sources.get(long) {
            Some(source) => eprintln!("error: {source}: {message}"),
            None => eprintln!("error: {message}"),
        }
        return Err(EXIT_USAGE);
    }
    if config.workers == crate::balance::WorkerCount::Auto {
        // Resolved once, here in the master: workers always see a number.
        let (count, source) = crate::balance::cpus::auto_workers();
        config.workers = crate::balance::WorkerCount::Fixed(count);
        config
            .cli
            .notes
            .push(format!("--workers auto: {count} worker(s), as {source}"));
    }
    Ok(config)
}
