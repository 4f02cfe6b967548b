// SPDX-License-Identifier: GPL-2.0

//! GPU shared virtual memory (SVM).
//!
//! The mid-layer a Rust DRM driver uses to let its GPU work on the virtual addresses of a
//! process: it mirrors the CPU page tables of the process into the GPU's, range by range, on GPU
//! faults, and migrates pages between system memory and device memory. It is the Rust
//! counterpart of `drm_gpusvm` and `drm_pagemap`.
//!
//! - [`GpuSvm`]: one per GPU address space. Notifiers are inserted lazily over aligned blocks of
//!   the process address space; [`Range`]s are found or inserted for fault addresses, sized by
//!   [`ChunkSizes`]; their pages are read from the CPU page tables and bound to the device only
//!   with the proof that they are still valid ([`ValidPages`]); unmapped ranges go through the
//!   garbage collector.
//! - [`DeviceMemory`]: one per GPU with VRAM. Ranges migrate there and come back on CPU faults
//!   and evictions, through the [`Driver`]'s copy operations.
//!
//! C header: [`include/drm/drm_gpusvm.h`](srctree/include/drm/drm_gpusvm.h)

mod chunk;
mod devmem;
mod driver;
#[cfg(CONFIG_RUST_DRM_GPUSVM_KUNIT_TEST)]
mod kunit;
mod stats;
mod svm;

pub use chunk::{
    ChunkSizes,
    MAX_CHUNK_SIZES, //
};
pub use devmem::{
    Allocation,
    DeviceMemory,
    FreePages, //
};
pub use driver::Driver;
pub use stats::{
    Counter,
    DeviceStats,
    SvmStats, //
};
pub use svm::{
    GpuSvm,
    NotifierReadGuard,
    Range,
    ValidPages, //
};
