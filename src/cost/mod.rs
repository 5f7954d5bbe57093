//! What a run costs. FLOPs are counted analytically from the architecture;
//! the hardware's peak comes from the CPU's features, core count and clock.

pub mod flops;
pub mod peak;
