//! `--accept-balance` and the `--workers` value (a number or "auto").

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

#[derive(Args, Debug, Clone, Default, Serialize, Deserialize)]
pub struct BalanceOptions {
    /// How workers share new connections on the listening socket: "connections" (a
    /// worker holding more open connections than the mean of the others lets them take
    /// the next one first; spreads evenly under load), or "off" (whichever worker the
    /// kernel wakes first takes it, as gunicorn and uvicorn do).
    #[arg(long, value_enum, default_value = "connections")]
    pub accept_balance: AcceptBalance,
}

#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceptBalance {
    #[default]
    Connections,
    Off,
}

/// `--workers N` or `--workers auto` (as many as the CPUs this process may use: the
/// cgroup quota and the affinity mask, see `cpus`). The master resolves "auto" before
/// anything starts, so workers always see a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCount {
    Fixed(usize),
    Auto,
}

impl WorkerCount {
    /// The number of workers ("auto" must have been resolved; 1 if it was not).
    pub fn count(self) -> usize {
        match self {
            WorkerCount::Fixed(n) => n,
            WorkerCount::Auto => 1,
        }
    }

    pub fn parse(text: &str) -> Result<WorkerCount, String> {
        if text.trim().eq_ignore_ascii_case("auto") {
            return Ok(WorkerCount::Auto);
        }
        text.trim()
            .parse()
            .map(WorkerCount::Fixed)
            .map_err(|_| format!("'{text}' is not a number of workers or \"auto\""))
    }
}

impl std::fmt::Display for WorkerCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerCount::Fixed(n) => write!(f, "{n}"),
            WorkerCount::Auto => f.write_str("auto"),
        }
    }
}

/// As a number in the JSON the workers receive (or "auto", never sent once resolved).
impl Serialize for WorkerCount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WorkerCount::Fixed(n) => s.serialize_u64(*n as u64),
            WorkerCount::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for WorkerCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(usize),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(WorkerCount::Fixed(n)),
            Raw::Text(t) => WorkerCount::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}
