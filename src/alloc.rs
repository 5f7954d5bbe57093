//! The `headstart` binary's global allocator: mimalloc (the default
//! `mimalloc` feature).
//!
//! burn's CPU backend allocates a fresh output of up to tens of megabytes for
//! every op. glibc's malloc returns such buffers to the kernel and faults them
//! in again on the next op; mimalloc reuses them, but by default still
//! purges (decommits) memory that has stayed free for a second, which cost a
//! `full` MiniLM step ~15,000 page faults. With purging off a step takes ~30
//! (BENCHMARKS.md, "Allocator and peak"); the process keeps its peak memory
//! instead, which a training run reaches every step anyway.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 3's `mi_option_purge_delay`: its place in `mi_option_t`
/// (mimalloc.h of the pinned libmimalloc-sys 0.1.49, whose bindings name
/// no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Turns mimalloc's purging of freed memory off, unless the environment
/// sets `MIMALLOC_PURGE_DELAY` (mimalloc's own variable; it wins).
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options; any value is valid for it.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

#[cfg(test)]
mod tests {
    /// This process's resident memory, bytes.
    fn rss() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    #[test]
    fn freed_memory_stays_with_the_process() {
        super::keep_freed_memory();
        let size = 64 << 20;
        let v = vec![1u8; size];
        let held = rss();
        drop(std::hint::black_box(v));
        // Past mimalloc's default purge delay (1,000 ms in mimalloc 3.3),
        // with allocations after it that would run a pending purge.
        std::thread::sleep(std::time::Duration::from_millis(1300));
        for _ in 0..100 {
            std::hint::black_box(vec![0u8; 1 << 20]);
        }
        let after = rss();
        assert!(
            after + size as u64 / 2 > held,
            "resident {held} with 64 MiB held, {after} after freeing it"
        );
    }
}
