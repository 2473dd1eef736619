//! `inference.threads`: how many threads tract's matrix products use inside one model run. tract keeps one
//! process-wide executor; above 1 thread it is a rayon pool of that size, shared by every worker (feature
//! `multithread`, off in the 8 MB device build, where config validation refuses threads above 1).

/// Sets tract's executor for `threads` (1: single-threaded, tract's default). Called once when the runtime
/// starts; a later runtime in the same process (tests) sets it again.
pub fn apply(threads: usize) {
    #[cfg(feature = "multithread")]
    {
        use tract_nnef::tract_core::tract_linalg::multithread::{Executor, set_default_executor};
        let executor =
            if threads > 1 { Executor::multithread_with_name(threads, "outpost-mm") } else { Executor::SingleThread };
        set_default_executor(executor);
    }
    #[cfg(not(feature = "multithread"))]
    debug_assert!(threads <= 1, "config validation refuses threads > 1 without the multithread feature");
}
