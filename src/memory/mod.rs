//! Keeping a worker's resident memory flat under sustained load.
//!
//! Why: a worker's request buffers are allocated by the I/O thread and often freed on
//! the Python thread (or the other way round). glibc gives every thread its own
//! arena and returns a freed chunk to the arena it came from; the freed memory stays
//! in those arenas' free lists, spread over pages that also hold live chunks, and
//! glibc only gives back the free space at the very top of a heap. Measured on a
//! hello-world worker, RSS kept rising by 0.5-0.9 MB per million requests (the
//! 2026-11-25 and 2026-12-01 tables in bench/RESULTS.md), while `malloc_trim(0)`, which
//! also releases the free pages in the middle of every arena, brought it back to its
//! size after warm-up. So the worker itself trims its heap every few seconds, from
//! the I/O thread: nothing in the environment (MALLOC_ARENA_MAX and the like would be
//! inherited by the app's children, breaking the plain-python contract), and no
//! allocator swap (mimalloc as the global allocator cost +12 MB of idle RSS per
//! process, docs/design.md).

pub mod options;
pub mod trim;

pub use options::MemoryOptions;
