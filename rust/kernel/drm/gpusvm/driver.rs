// SPDX-License-Identifier: GPL-2.0

//! The operations a driver supplies to GPU SVM.

use super::{
    DeviceMemory,
    FreePages,
    NewSystemPage,
    Range,
    SystemAccess,
    SystemPage, //
};
use crate::{
    mm::mmu_notifier::Event,
    prelude::*, //
};
use core::ops;

/// The driver side of GPU SVM: what only the device can do.
///
/// It is implemented by the driver's per-address-space object, which [`GpuSvm`] holds. The
/// device memory operations take the [`DeviceMemory`] instead of `self`: a CPU fault on a device
/// page reaches them through the page, with no GPU address space in sight (the page may be
/// mapped at another address, or in another process after a fork).
///
/// [`GpuSvm`]: super::GpuSvm
pub trait Driver: Send + Sync + Sized + 'static {
    /// The per-device state the device memory operations use (allocator, copy engine), held by
    /// the [`DeviceMemory`].
    type Device: Send + Sync;

    /// One allocation of device memory (e.g. the allocator's blocks). The layer drops it when
    /// the last of its pages is freed, which may be in atomic context: its `Drop` must not sleep
    /// (defer the release to a work item if the allocator sleeps).
    type Allocation: Send + Sync;

    /// How the copy operations reach system memory: [`DmaAccess`] (the layer maps the pages for
    /// the device and hands over their device addresses) or [`CpuAccess`] (the pages
    /// themselves, for copies the CPU does).
    ///
    /// [`DmaAccess`]: super::DmaAccess
    /// [`CpuAccess`]: super::CpuAccess
    type Access: SystemAccess;

    /// Stops the use of `span` of `range` by device `device` (its index in the owners of the
    /// [`GpuSvm`]): zaps its device page table entries and flushes its TLB, so that it can no
    /// longer reach the pages. An invalidation calls it for each device it reaches: all of them,
    /// but those that made the pages exclusive for their own atomics and those that share their
    /// owner.
    ///
    /// Called from the mmu notifier with the notifier lock held for writing: it must not sleep on
    /// memory allocation nor take locks that are held around allocations. Also called by
    /// [`GpuSvm::collect_garbage`] with [`Event::Unmap`] for each range it removes and each
    /// device: a driver that queues the collector on [`Event::Unmap`] must not queue it again
    /// from there.
    ///
    /// [`GpuSvm`]: super::GpuSvm
    /// [`GpuSvm::collect_garbage`]: super::GpuSvm::collect_garbage
    fn invalidate(&self, range: &Range<Self>, device: usize, span: ops::Range<usize>, event: Event);

    /// Allocates `npages` pages of device memory, returning the allocation and its free pages
    /// (exactly `npages`), in the order they are to back the pages of the range.
    ///
    /// A huge page of the range (2M, PMD-mapped) moves as one device folio where the pages that
    /// back it are consecutive from a multiple of 512 pfns (a 2M block); elsewhere it is split
    /// and moves page by page. Allocate whole blocks where `npages` allows.
    ///
    /// Fails with [`ENOMEM`] (or [`ENOSPC`]) when device memory is exhausted: the layer then
    /// leaves the range in system memory.
    ///
    /// It is called with the migrate lock of the range being migrated held: to make room it may
    /// evict device pages by pfn ([`DeviceMemory::evict`]), which takes no migrate lock, but not
    /// ranges ([`GpuSvm::evict_range`]), whose migrate locks two such calls would take in
    /// opposite orders.
    ///
    /// [`GpuSvm::evict_range`]: super::GpuSvm::evict_range
    fn alloc_devmem(
        mem: &DeviceMemory<Self>,
        npages: usize,
    ) -> Result<(Self::Allocation, FreePages)>;

    /// Copies system memory to device memory: page `src[i]` to device page `dst[i]` (a pfn of
    /// `mem`); a `None` source is a hole of the range, whose device page is to be zeroed. The
    /// system pages are mapped for the device (direction to the device) with [`DmaAccess`].
    ///
    /// Returns when the copies are done. On failure the layer leaves the range in system memory.
    ///
    /// [`DmaAccess`]: super::DmaAccess
    fn copy_to_vram(
        mem: &DeviceMemory<Self>,
        dst: &[usize],
        src: &[Option<SystemPage<'_, Self>>],
    ) -> Result;

    /// Copies device memory to system memory: device page `src[i]` (a pfn of `mem`) to new page
    /// `dst[i]`, all of it. The new pages are not zeroed: with [`CpuAccess`] the layer zeroes
    /// those the copy did not fill ([`NewPage`]); with [`DmaAccess`] it zeroes them before and
    /// maps them for the device (direction from the device).
    ///
    /// Called on CPU faults and evictions, with no GPU SVM lock held. Returns when the copies are
    /// done; on failure the pages stay in device memory (a CPU access then gets `SIGBUS`).
    ///
    /// [`CpuAccess`]: super::CpuAccess
    /// [`DmaAccess`]: super::DmaAccess
    /// [`NewPage`]: super::NewPage
    fn copy_to_sram(
        mem: &DeviceMemory<Self>,
        src: &[usize],
        dst: &[NewSystemPage<'_, Self>],
    ) -> Result;

    /// Copies device memory of a peer to device memory `mem`, over the interconnect: device page
    /// `src[i]` to device page `dst[i]` (a pfn of `mem`).
    ///
    /// The sources are device pages of the owner of `mem` that are not pages of `mem`: pages of
    /// another [`DeviceMemory`] of the same interconnect group (see [`DeviceMemory::new`]),
    /// locked for the migration. A driver finds their memory by pfn among the memories of the
    /// group; a pfn it does not know fails the copy ([`EINVAL`]). Only drivers that let memories
    /// share an owner are called; the default fails with [`ENODEV`].
    ///
    /// Returns when the copies are done. On failure the layer leaves the range where it was.
    fn copy_from_peer(mem: &DeviceMemory<Self>, dst: &[usize], src: &[usize]) -> Result {
        let _ = (mem, dst, src);
        Err(ENODEV)
    }
}
