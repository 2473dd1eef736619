//! Which of tract's kernels the agent lets run. tract-linalg 0.23.9's AMX int8 matrix kernel (x86_64 CPUs with
//! AMX, Sapphire Rapids and later) crashed the process with SIGSEGV in two of three benchmark runs of an int8
//! model on such a host (`avx512amx_mmm_i32_8x8`; BENCHMARKS.md, "Typed inputs and `inference.threads`"), and
//! a crash takes every model the device serves down with it. So the agent takes that kernel out of tract's
//! pool (tract then picks its AVX-512 VNNI or AVX2 int8 kernels). It is set below the environment: an operator
//! who sets `TRACT_CPU_ISA` decides for the machine.

/// Installs the agent's kernel choice. Called before tract first looks at the machine (it probes the
/// instruction set once per process); calling it again is harmless.
pub fn defaults() {
    #[cfg(target_arch = "x86_64")]
    if let Err(e) = tract_nnef::tract_core::knobs::set_config_global("TRACT_CPU_ISA", "-amx-int8") {
        tracing::warn!("cannot take tract's AMX int8 kernel out of its pool: {e:#}");
    }
}
