//! What a run costs. FLOPs are counted analytically from the architecture;
//! the hardware's peak is measured on the CPU (an FMA loop on all cores,
//! cached; a per-microarchitecture table as the fallback) or read from a GPU
//! table; energy is measured (RAPL, NVML) where the machine
//! allows and estimated otherwise; CO2 and money follow from the energy.

pub mod carbon;
mod data;
pub mod energy;
pub mod flops;
pub mod peak;
pub mod run;
