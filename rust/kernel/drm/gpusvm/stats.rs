// SPDX-License-Identifier: GPL-2.0

//! Counters of what GPU SVM did, for the driver to report (e.g. in debugfs or an ioctl).

use super::MAX_CHUNK_SIZES;
use crate::sync::atomic::{
    Atomic,
    Relaxed, //
};

/// An event counter (or, for [`DeviceStats::pages_in_use`], a level), updated without ordering:
/// a reader sees each update eventually, not in a consistent snapshot with the others.
pub struct Counter(Atomic<u64>);

impl Counter {
    const fn new() -> Self {
        Self(Atomic::new(0))
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Adds `n`.
    #[inline]
    pub(super) fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// Subtracts `n`, for levels.
    #[inline]
    pub(super) fn sub(&self, n: u64) {
        self.0.fetch_add(n.wrapping_neg(), Relaxed);
    }
}

/// Counters of a [`GpuSvm`](super::GpuSvm).
pub struct SvmStats {
    /// GPU faults served ([`GpuSvm::get_pages`](super::GpuSvm::get_pages)), by the index of the
    /// range's size in the [`ChunkSizes`](super::ChunkSizes).
    pub faults: [Counter; MAX_CHUNK_SIZES],
    /// Times reading the pages of a range started again because an invalidation raced with it.
    pub retries: Counter,
    /// Invalidations of ranges (one per range an mmu notifier event touched).
    pub invalidations: Counter,
    /// Garbage collections that removed ranges, and the ranges they removed.
    pub gc_runs: Counter,
    /// Ranges removed by the garbage collector.
    pub gc_ranges: Counter,
    /// Migrations of ranges to device memory that moved pages, and the bytes they moved.
    pub migrations_to_vram: Counter,
    /// Bytes moved to device memory.
    pub bytes_to_vram: Counter,
    /// Ranges evicted from device memory, and the bytes that moved back to system memory.
    pub range_evictions: Counter,
    /// Bytes moved back to system memory by range evictions.
    pub bytes_evicted: Counter,
}

impl SvmStats {
    pub(super) const fn new() -> Self {
        Self {
            faults: [const { Counter::new() }; MAX_CHUNK_SIZES],
            retries: Counter::new(),
            invalidations: Counter::new(),
            gc_runs: Counter::new(),
            gc_ranges: Counter::new(),
            migrations_to_vram: Counter::new(),
            bytes_to_vram: Counter::new(),
            range_evictions: Counter::new(),
            bytes_evicted: Counter::new(),
        }
    }
}

/// Counters of a [`DeviceMemory`](super::DeviceMemory).
pub struct DeviceStats {
    /// Device memory allocations made.
    pub allocations: Counter,
    /// Device memory allocations released (their last page was freed, or none was used).
    pub releases: Counter,
    /// Device pages holding data of a process now (a level, not a count of events).
    pub pages_in_use: Counter,
    /// CPU faults on device pages.
    pub cpu_faults: Counter,
    /// Bytes moved back to system memory by CPU faults.
    pub bytes_cpu_faulted: Counter,
    /// Evictions by physical page, and the bytes they moved back to system memory.
    pub evictions: Counter,
    /// Bytes moved back to system memory by evictions by physical page.
    pub bytes_evicted: Counter,
    /// Huge pages (PMD size) that moved whole, as one folio, in either direction.
    pub huge_folios: Counter,
    /// Bytes moved in from the device memory of peers, device to device.
    pub bytes_from_peers: Counter,
}

impl DeviceStats {
    pub(super) const fn new() -> Self {
        Self {
            allocations: Counter::new(),
            releases: Counter::new(),
            pages_in_use: Counter::new(),
            cpu_faults: Counter::new(),
            bytes_cpu_faulted: Counter::new(),
            evictions: Counter::new(),
            bytes_evicted: Counter::new(),
            huge_folios: Counter::new(),
            bytes_from_peers: Counter::new(),
        }
    }
}
