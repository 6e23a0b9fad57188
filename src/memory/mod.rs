//! Keeping a worker's resident memory flat under sustained load.
//!
//! Why: a worker's request buffers are allocated by the I/O thread and often freed on
//! the Python thread (or the other way round). glibc gives every thread its own
//! arena and returns a freed chunk to the arena it came from; the freed memory stays
//! in those arenas' free lists, spread over pages that also hold live chunks, and
//! glibc only gives back the free space at the very top of a heap. Measured on a
//! hello-world worker (bench/RESULTS.md, 2026-12-01), the I/O thread's arena held ~6 MB
//! of system memory for ~0.1 MB in use, and the worker kept +1.2 MB per million
//! requests; `malloc_trim(0)`, which also releases the free pages in the middle of
//! every arena, took that to +0.12. So the worker itself trims its heap every few
//! seconds, from the I/O thread: nothing in the environment (MALLOC_ARENA_MAX and the
//! like would be inherited by the app's children, breaking the plain-python contract),
//! and no allocator swap (mimalloc as the global allocator cost +12 MB of idle RSS per
//! process, docs/design.md).

pub mod options;
pub mod trim;

pub use options::MemoryOptions;
