//! HTTP/1.1 on hyper: request checks, the service, connection activity.

pub mod io;
pub mod limits;
pub mod service;
