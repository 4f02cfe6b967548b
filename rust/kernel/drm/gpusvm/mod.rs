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
//! # Examples
//!
//! A driver whose device page table maps system pages, resolving a GPU fault the way every
//! driver does: collect garbage, find or insert the range, read its pages, bind them with the
//! proof that they are still valid, and read them again if an invalidation came in between.
//!
//! ```
//! use core::ops;
//! use kernel::{
//!     drm::gpusvm::{
//!         ChunkSizes,
//!         CpuAccess,
//!         DeviceMemory,
//!         Driver,
//!         Fault,
//!         FreePages,
//!         GpuSvm,
//!         NewPage,
//!         Range, //
//!     },
//!     mm::{
//!         mmu_notifier::Event,
//!         DeviceOwner, //
//!     },
//!     new_mutex,
//!     page::{
//!         BorrowedPage,
//!         PAGE_SIZE, //
//!     },
//!     prelude::*,
//!     sync::Mutex,
//! };
//!
//! /// One GPU address space. Its page table (the bound addresses) has a fixed capacity: its lock
//! /// is taken in `invalidate`, so nothing may allocate while holding it.
//! #[pin_data]
//! struct Vm {
//!     #[pin]
//!     ptes: Mutex<KVec<usize>>,
//! }
//!
//! impl Driver for Vm {
//!     // No device memory: ranges stay in system memory.
//!     type Device = ();
//!     type Allocation = ();
//!     type Access = CpuAccess;
//!
//!     fn invalidate(
//!         &self,
//!         _range: &Range<Self>,
//!         _device: usize,
//!         span: ops::Range<usize>,
//!         _event: Event,
//!     ) {
//!         // Zap the entries (and flush the TLB of a real device).
//!         self.ptes.lock().retain(|addr| !span.contains(addr));
//!     }
//!
//!     fn alloc_devmem(_mem: &DeviceMemory<Self>, _npages: usize) -> Result<((), FreePages)> {
//!         Err(ENOSPC)
//!     }
//!
//!     fn copy_to_vram(
//!         _mem: &DeviceMemory<Self>,
//!         _dst: &[usize],
//!         _src: &[Option<BorrowedPage<'_>>],
//!     ) -> Result {
//!         Err(ENODEV)
//!     }
//!
//!     fn copy_to_sram(
//!         _mem: &DeviceMemory<Self>,
//!         _src: &[usize],
//!         _dst: &[NewPage<'_>],
//!     ) -> Result {
//!         Err(ENODEV)
//!     }
//! }
//!
//! /// Resolves a GPU fault at `addr`.
//! fn handle_fault(svm: &GpuSvm<Vm>, addr: usize, write: bool) -> Result {
//!     svm.collect_garbage();
//!     let range = svm.find_or_insert(addr, 0..usize::MAX)?;
//!     let fault = if write { Fault::write() } else { Fault::read() };
//!     for _ in 0..8 {
//!         svm.get_pages(&range, 0, &fault)?;
//!         let guard = svm.notifier_read();
//!         let Some(valid) = svm.pages_valid(&range, 0, &guard) else {
//!             // Invalidated since the pages were read.
//!             continue;
//!         };
//!         let mut ptes = svm.driver().ptes.lock();
//!         ptes.retain(|addr| !range.span().contains(addr));
//!         for (i, pfn) in valid.pfns().iter().enumerate() {
//!             if pfn.is_valid() {
//!                 let addr = range.span().start + i * PAGE_SIZE;
//!                 ptes.push_within_capacity(addr).map_err(|_| ENOMEM)?;
//!             }
//!         }
//!         return Ok(());
//!     }
//!     Err(EBUSY)
//! }
//!
//! # fn user_buffer(len: usize) -> Result<usize> {
//! #     // SAFETY: Called from a KUnit test, which gets an address space of its own.
//! #     let addr = unsafe {
//! #         kernel::bindings::kunit_vm_mmap(
//! #             kernel::bindings::kunit_get_current_test(),
//! #             core::ptr::null_mut(),
//! #             0,
//! #             len,
//! #             (kernel::bindings::PROT_READ | kernel::bindings::PROT_WRITE) as usize,
//! #             (kernel::bindings::MAP_ANONYMOUS | kernel::bindings::MAP_PRIVATE) as usize,
//! #             0,
//! #         )
//! #     };
//! #     if addr % PAGE_SIZE != 0 { Err(ENOMEM) } else { Ok(addr) }
//! # }
//! // A process's buffer of 16 pages, which the GPU writes to.
//! let buffer = user_buffer(16 * PAGE_SIZE)?;
//! let task = current!();
//! let mm = task.mm().ok_or(EINVAL)?;
//! static OWNER: u8 = 0;
//! let ptes = KVec::with_capacity(64, GFP_KERNEL)?;
//! let vm = pin_init!(Vm {
//!     ptes <- new_mutex!(ptes),
//! });
//! let svm = KBox::pin_init(
//!     GpuSvm::new(
//!         mm,
//!         PAGE_SIZE..1 << 47,
//!         1 << 29,
//!         ChunkSizes::new(&[2 << 20, 64 << 10, PAGE_SIZE])?,
//!         &[DeviceOwner::from_ref(&OWNER)],
//!         vm,
//!     )?,
//!     GFP_KERNEL,
//! )?;
//! handle_fault(&svm, buffer + 5 * PAGE_SIZE, true)?;
//! assert!(svm.driver().ptes.lock().contains(&(buffer + 5 * PAGE_SIZE)));
//! # Ok::<(), Error>(())
//! ```
//!
//! C header: [`include/drm/drm_gpusvm.h`](srctree/include/drm/drm_gpusvm.h)

mod access;
mod chunk;
mod devmem;
mod driver;
mod gc;
#[cfg(CONFIG_RUST_DRM_GPUSVM_KUNIT_TEST)]
mod kunit;
mod migrate;
mod notifier;
mod pages;
mod range;
mod stats;
mod svm;

pub use access::{
    CpuAccess,
    DmaAccess,
    NewPage,
    NewSystemPage,
    SystemAccess,
    SystemPage, //
};
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
pub use pages::{
    AtomicPolicy,
    Fault, //
};
pub use range::{
    Range,
    ValidPages, //
};
pub use stats::{
    Counter,
    DeviceStats,
    SvmStats, //
};
pub use svm::{
    GpuSvm,
    NotifierReadGuard, //
};
