//! WSGI (PEP 3333) on a thread pool per worker.
//!
//! The protocols (http1, http2) are the same as for ASGI and hand each request over as
//! the same `Exchange`; the bridge sends the request to this pool's queue instead of to
//! the event loop (`Bridge::set_request_sink`). Each pool thread is a plain Python
//! `threading.Thread` (python/ferrocorn/_wsgi.py), so its signal mask, name and place
//! in stack dumps are those of any Python thread; it calls `WsgiPool.run`, which takes
//! requests from the queue without the GIL and calls the app with it. Whenever a
//! thread waits for the connection (request-body bytes, socket space) it waits on the
//! exchange's condition variable with the GIL released; the I/O thread notifies it.

pub mod environ;
pub mod input;
pub mod options;
pub mod pool;
pub mod response;
