//! The master process: binds the listeners, starts workers as fresh interpreters,
//! supervises them and owns the process signals. It never imports the app.

mod arbiter;
mod listeners;
pub mod reload;
pub mod spawn;

pub use arbiter::run;
