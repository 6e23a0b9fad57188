//! Running behind proxies and load balancers (docs/proxies.md).
//!
//! - `protocol` and `accept`: the PROXY protocol (v1 and v2), read right after accept
//!   and before TLS or HTTP; its source address becomes the connection's peer.
//! - `forwarded`: X-Forwarded-* and RFC 7239 `Forwarded`, resolved per request when
//!   the peer (the PROXY address if there was one) is in --forwarded-allow-ips.
//! - `trust`: the address lists both are checked against.

pub mod accept;
pub mod forwarded;
pub mod options;
pub mod protocol;
pub mod trust;

use crate::asgi::exchange::ConnInfo;
use bytes::Bytes;
use http::HeaderName;
use std::time::Duration;

pub use forwarded::{Client, Forwarded};

/// The proxy settings of a worker, from `ProxyOptions`.
#[derive(Debug, Default)]
pub struct ProxySettings {
    /// None with --no-proxy-headers.
    pub forwarded: Option<forwarded::ForwardedSettings>,
    /// None with --proxy-protocol off.
    pub protocol: Option<accept::ProxyProtocol>,
}

impl ProxySettings {
    pub fn new(
        options: &options::ProxyOptions,
        header_timeout: Duration,
        keep_alive: Duration,
    ) -> ProxySettings {
        // The master's clap already checked both lists.
        let list = |text: &str| trust::TrustList::parse(text).unwrap_or_default();
        ProxySettings {
            forwarded: options
                .proxy_headers_enabled()
                .then(|| forwarded::ForwardedSettings {
                    trust: list(&options.forwarded_allow_ips),
                    host: options.forwarded_host,
                }),
            protocol: (options.proxy_protocol != options::ProxyProtocolMode::Off).then(|| {
                accept::ProxyProtocol {
                    mode: options.proxy_protocol,
                    allow: list(&options.proxy_allow_from),
                    timeout: header_timeout,
                    idle: keep_alive,
                }
            }),
        }
    }

    /// Whether forwarded headers are read on a connection from this peer; decided once
    /// per connection.
    pub fn trusts_forwarded_from(&self, conn: &ConnInfo) -> bool {
        self.forwarded
            .as_ref()
            .is_some_and(|f| f.trust.trusts_peer(conn.client, conn.unix_path.as_deref()))
    }

    /// The forwarded headers of one request on `conn`; None (no allocation) when the
    /// peer isn't trusted or the request carries none.
    pub fn resolve(
        &self,
        conn: &ConnInfo,
        headers: &mut Vec<(HeaderName, Bytes)>,
    ) -> Option<Box<Forwarded>> {
        if !conn.forwarded_trusted {
            return None;
        }
        forwarded::resolve(self.forwarded.as_ref()?, headers)
    }
}

/// The client the app and the access log see: the one trusted forwarded headers
/// named, else the peer.
pub fn client(forwarded: Option<&Forwarded>, conn: &ConnInfo) -> Option<Client> {
    match forwarded.and_then(|f| f.client.as_ref()) {
        Some(client) => Some(client.clone()),
        None => conn.client.map(Client::Ip),
    }
}
