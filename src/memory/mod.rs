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
//! like would be inherited by the app's children, breaking the plain-python contract).
//!
//! Since 2026-12-03 the extension's own allocations (everything Rust allocates: request
//! and response buffers, exchanges, connections) go to mimalloc instead (`ALLOCATOR`),
//! and Python's stay with the C library. mimalloc frees a block allocated by another
//! thread without a lock (it is pushed on its page's list of remote frees), where glibc
//! takes the owning arena's lock, which the two threads of a busy worker contend for:
//! hello world on 3.11, 4-7% more requests per second at 7-10% less CPU per request
//! (bench/RESULTS.md, 2026-12-03 13:15). Its idle RSS cost, +8-11 MB per process when
//! first tried, came from the MADV_HUGEPAGE it asks for its arenas (every touched page
//! then made 2 MiB resident): built without it (`no_thp`) the cost is +0.7 MB for the
//! master and +0.1 MB for a worker. Not mimalloc's run-time `allow_thp=0` instead: it
//! calls prctl(PR_SET_THP_DISABLE), which every process the app starts would inherit.
//! The periodic trim also asks mimalloc to give its free pages back (trim.rs).

pub mod options;
pub mod trim;

pub use options::MemoryOptions;

/// The extension's allocator (see above). Only what Rust code allocates comes here: the
/// interpreter, the app and any library it loads keep the C library's malloc, and
/// nothing in the process environment changes. Fuzz builds (`--cfg fuzzing`, fuzz/) keep
/// the system allocator, which the address sanitizer watches.
#[cfg(not(fuzzing))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
