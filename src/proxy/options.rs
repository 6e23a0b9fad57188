//! The proxy options: uvicorn's `--proxy-headers`, `--forwarded-allow-ips`, ours
//! `--forwarded-host`, and gunicorn's `--proxy-protocol` and `--proxy-allow-from`.
//! Trust lists are checked by clap when the command line is parsed, so a malformed
//! network is one error line naming the option (exit code 2) before any worker starts.

use super::trust::TrustList;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

/// `--proxy-protocol`: whether connections open with a PROXY protocol header.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocolMode {
    /// No PROXY headers: a connection that sends one gets a 400 from the HTTP parser.
    Off,
    /// Peers in --proxy-allow-from must send a v1 (text) header.
    V1,
    /// Peers in --proxy-allow-from must send a v2 (binary) header.
    V2,
    /// Peers in --proxy-allow-from may send a v1 or v2 header, or none.
    Auto,
}

#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct ProxyOptions {
    /// Use X-Forwarded-For, X-Forwarded-Proto and Forwarded from trusted peers for the
    /// client address and scheme (on by default).
    #[arg(long, overrides_with = "no_proxy_headers")]
    pub proxy_headers: bool,
    /// Ignore forwarded headers.
    #[arg(long)]
    pub no_proxy_headers: bool,

    /// Peers trusted with forwarded headers: comma-separated IPs, networks (10.0.0.0/8,
    /// fd00::/8), "unix:" for Unix-socket peers, or "*" for all.
    #[arg(long, env = "FORWARDED_ALLOW_IPS", default_value = "127.0.0.1,::1",
          value_parser = trust_list)]
    pub forwarded_allow_ips: String,

    /// Let X-Forwarded-Host (or Forwarded host=) from trusted peers replace the Host
    /// header the app sees. Off by default.
    #[arg(long)]
    pub forwarded_host: bool,

    /// Expect a PROXY protocol header on each connection from --proxy-allow-from
    /// peers; "--proxy-protocol" alone means "auto" (v1 or v2, or none).
    #[arg(long, value_enum, default_value = "off", num_args = 0..=1,
          default_missing_value = "auto", value_name = "MODE")]
    pub proxy_protocol: ProxyProtocolMode,

    /// Peers allowed to send a PROXY header: comma-separated IPs, networks, "unix:" or
    /// "*". A PROXY header from any other peer closes the connection.
    #[arg(long, default_value = "127.0.0.1,::1", value_parser = trust_list)]
    pub proxy_allow_from: String,
}

impl ProxyOptions {
    pub fn proxy_headers_enabled(&self) -> bool {
        !self.no_proxy_headers
    }
}

/// clap's check of a trust list: the text is kept (the workers receive the options
/// as JSON and parse it again, which can no longer fail).
fn trust_list(text: &str) -> Result<String, String> {
    TrustList::parse(text).map(|_| text.to_string())
}
