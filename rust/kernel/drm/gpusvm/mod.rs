// SPDX-License-Identifier: GPL-2.0

//! GPU shared virtual memory (SVM).
//!
//! The mid-layer a Rust DRM driver uses to let its GPU work on the virtual addresses of a
//! process: it mirrors the CPU page tables of the process into the GPU's, range by range, on GPU
//! faults, and migrates pages between system memory and device memory. It is the Rust
//! counterpart of `drm_gpusvm` and `drm_pagemap`.
//!
//! It is being built in steps. Here so far: the choice of range sizes ([`ChunkSizes`]), and
//! [`GpuSvm`] with lazily inserted notifiers, ranges, reading their pages, invalidation, and the
//! proof needed to bind device page table entries ([`ValidPages`]).
//!
//! C header: [`include/drm/drm_gpusvm.h`](srctree/include/drm/drm_gpusvm.h)

mod chunk;
#[cfg(all(CONFIG_HMM_MIRROR, CONFIG_MMU_NOTIFIER))]
mod svm;

pub use chunk::{
    ChunkSizes,
    MAX_CHUNK_SIZES, //
};
#[cfg(all(CONFIG_HMM_MIRROR, CONFIG_MMU_NOTIFIER))]
pub use svm::{
    Driver,
    GpuSvm,
    NotifierReadGuard,
    Range,
    ValidPages, //
};
