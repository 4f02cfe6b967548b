// SPDX-License-Identifier: GPL-2.0

//! vsvm: a sample DRM driver for a simulated GPU with shared virtual memory.
//!
//! A VM of the GPU mirrors a span of the address space of the process that created it, through
//! [`kernel::drm::gpusvm`]: jobs of GPU operations run on the process's own pointers, the
//! simulated engine faults on pages its page table does not map, and the fault handler resolves
//! them through the GPU SVM layer.

mod driver;
mod file;
mod gem;
mod job;
mod pt;
mod vm;
mod vram;

use kernel::prelude::*;

module! {
    type: driver::VsvmModule,
    name: "vsvm",
    authors: ["The vsvm authors"],
    description: "Sample driver for GPU shared virtual memory",
    license: "GPL",
    params: {
        vram_mb: u64 {
            default: 256,
            description: "Size of the simulated VRAM of each device in MiB",
        },
        devices: u32 {
            default: 1,
            description: "Number of simulated GPUs (1 to 4)",
        },
        p2p_groups: u32 {
            default: 0,
            description: "Interconnect group of each device, a hex digit each (0: alone)",
        },
        max_chunk_kb: u64 {
            default: 2048,
            description: "Largest GPU SVM range in KiB: 2048, 64 or 4",
        },
    },
}
