//! WebSockets (RFC 6455) on the I/O thread: the opening handshake, frames, the
//! permessage-deflate extension (RFC 7692) and the connection driver.

pub mod conn;
pub mod deflate;
pub mod frame;
pub mod handshake;
