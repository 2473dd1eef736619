//! The agent keeps tract's AMX int8 kernel out of its pool (`runtime/kernels.rs`: it crashed an int8 model's
//! runs on an AMX host). Its own process, so the runtime started here is the first thing to reach tract, as in
//! an agent. On a CPU without AMX the kernel is never in the pool and this holds either way.

mod support;

use outpost_agent::runtime::Runtime;
use support::*;
use tract_nnef::tract_core::tract_linalg::isa::{Isa, native};

#[test]
fn the_agents_runtime_keeps_tracts_amx_int8_kernel_out() {
    let dir = tempdir("kernels");
    let cfg = config(&dir, "");
    let _rt = Runtime::start(outpost_agent::serve::runtime_config(&cfg));
    let isa = native();
    if std::env::var_os("TRACT_CPU_ISA").is_none() {
        assert!(!isa.has(Isa::X86_64AmxInt8), "tract may pick its AMX int8 kernel: {isa:?}");
    }
}
