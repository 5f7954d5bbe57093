//! The CPU's sustained f32 peak as the FMA loop measures it, on 1 thread
//! and on every core, next to the microarchitecture table's figure; the
//! cache is neither read nor written. `cargo run --release --example cpu_peak`.

use headstart::cost::peak::{CpuInfo, cpu_table_peak, measure};

fn main() {
    let cpu = CpuInfo::read();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "build: {}",
        if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        }
    );
    println!("{}", cpu_table_peak(&cpu, threads).how);
    for t in [1, threads] {
        for _ in 0..3 {
            let m = measure::measure(t, headstart::cost::peak::MEASURE_SECONDS);
            println!(
                "{t} thread(s): {:.1} GFLOP/s ({}, {:.2} s)",
                m.flops_per_s / 1e9,
                m.kernel,
                m.seconds
            );
        }
    }
}
