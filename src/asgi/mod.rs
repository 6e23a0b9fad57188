//! The ASGI side of a worker: exchanges shared with the I/O thread, the bridge that
//! carries their events to the event loop, the scope, the http and WebSocket
//! receive/send callables (and `message`, which reads what the app sends them), and the
//! dispatcher that runs on the event loop. Below the protocol modules (http1, http2,
//! ws), which use it; it uses none of them.

pub mod bridge;
pub mod dispatch;
pub mod exchange;
pub mod http;
pub mod message;
pub mod pathsend;
pub mod runner;
pub mod scope;
pub mod websocket;
pub mod ws_session;
