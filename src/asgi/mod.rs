//! The ASGI side of a worker: exchanges shared with the I/O thread, the scope, the
//! http receive/send callables, and the dispatcher that runs on the event loop.

pub mod dispatch;
pub mod exchange;
pub mod http;
pub mod pathsend;
pub mod runner;
pub mod scope;
pub mod websocket;
pub mod ws_session;
