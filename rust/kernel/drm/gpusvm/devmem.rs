// SPDX-License-Identifier: GPL-2.0

//! Device memory: the device-private pages ranges migrate to, and the way back.

use super::{
    DeviceStats,
    Driver, //
};
use crate::{
    mm::{
        migrate::{
            Migration,
            SystemPage, //
        },
        pagemap::{
            CpuFault,
            DevicePrivate,
            NewDeviceFolio,
            Pagemap, //
        },
        DeviceOwner,
    },
    page::{
        PAGE_SIZE, //
    },
    prelude::*,
    sync::{
        Arc,
        ArcBorrow, //
    },
};
use core::ops;

/// How many device pages an eviction of a whole [`DeviceMemory`] collects at a time.
const EVICT_BATCH: usize = 512;

/// How many times dropping a [`DeviceMemory`] goes over its pages to evict those still in use.
const EVICT_PASSES: u32 = 8;

/// Free device pages, returned by [`Driver::alloc_devmem`].
///
/// # Invariants
///
/// Each pfn is a free page of the [`DeviceMemory`] it was allocated from, listed once, and
/// belongs to the allocation it was returned with until that allocation is dropped.
pub struct FreePages(KVec<usize>);

impl FreePages {
    /// Free pages `pfns` of a [`DeviceMemory`].
    ///
    /// # Safety
    ///
    /// Each pfn is a page of the [`DeviceMemory`] passed to [`Driver::alloc_devmem`], listed once,
    /// free (never used since the memory was registered, or freed since with the allocation that
    /// used it), and not given out again until the allocation returned with these pages is
    /// dropped.
    pub unsafe fn new(pfns: KVec<usize>) -> Self {
        // INVARIANT: The safety requirements.
        Self(pfns)
    }
}

/// An allocation of device memory: the driver's allocation and its pages.
///
/// Each device page that holds data of a process keeps a reference; the driver's allocation is
/// dropped with the last one.
pub struct Allocation<T: Driver> {
    data: T::Allocation,
    pfns: FreePages,
    stats: Arc<DeviceStats>,
}

impl<T: Driver> Allocation<T> {
    /// The driver's allocation.
    #[inline]
    pub fn data(&self) -> &T::Allocation {
        &self.data
    }

    /// The device pages of the allocation.
    #[inline]
    pub fn pfns(&self) -> &[usize] {
        &self.pfns.0
    }
}

impl<T: Driver> Drop for Allocation<T> {
    fn drop(&mut self) {
        self.stats.releases.add(1);
    }
}

/// The callbacks of the pagemap of a [`DeviceMemory`].
#[pin_data]
pub(super) struct Backend<T: Driver> {
    #[pin]
    device: T::Device,
    stats: Arc<DeviceStats>,
}

impl<T: Driver> DevicePrivate for Backend<T> {
    type PageData = Arc<Allocation<T>>;

    fn migrate_to_ram(pagemap: &Pagemap<Self>, fault: &CpuFault<'_, Self>) -> Result {
        let mem = DeviceMemory::from_pagemap(pagemap);
        mem.stats().cpu_faults.add(1);
        let pages = fault.page_data(pagemap).ok_or(EFAULT)?.pfns().len();
        // The neighbours the allocation backs are likely to be touched next: take the block of
        // the allocation's size around the fault, inside the VMA. Its pages may have moved
        // elsewhere since (mremap) or belong to other allocations; that is fine, they are pages
        // of this memory.
        let size = pages.max(1).next_power_of_two() * PAGE_SIZE;
        let vma = fault.vma_span();
        let own = fault.span();
        let block = fault.address() & !(size - 1);
        let window = block.max(vma.start).min(own.start)..(block + size).min(vma.end).max(own.end);
        let moved = mem.to_sram(fault.migrate(pagemap, window)?)?;
        mem.stats()
            .bytes_cpu_faulted
            .add((moved * PAGE_SIZE) as u64);
        Ok(())
    }

    fn folio_free(pagemap: &Pagemap<Self>, _pfn: usize, order: u32, data: Arc<Allocation<T>>) {
        pagemap.stats.pages_in_use.sub(1 << order);
        drop(data);
    }

    fn folio_split(
        _pagemap: &Pagemap<Self>,
        _head_pfn: usize,
        head: ArcBorrow<'_, Allocation<T>>,
        _pfn: usize,
        _order: u32,
    ) -> Arc<Allocation<T>> {
        head.into()
    }
}

/// The device memory of a GPU (its VRAM) as device-private pages that the ranges of
/// [`GpuSvm`](super::GpuSvm)s migrate to.
///
/// A CPU access to one of its pages migrates that page and its neighbours back to system memory
/// ([`Driver::copy_to_sram`]), finding the allocation through the page, with no GPU SVM lock.
/// Dropping it evicts the pages still in use.
#[pin_data(PinnedDrop)]
pub struct DeviceMemory<T: Driver> {
    #[pin]
    pagemap: Pagemap<Backend<T>>,
}

impl<T: Driver> DeviceMemory<T> {
    /// Registers `size` bytes of device memory owned by `owner` (unique to this memory), with
    /// the device state `device`; `name` shows in `/proc/iomem`.
    ///
    /// Fails with the errors of [`Pagemap::new`].
    pub fn new<E>(
        size: usize,
        owner: DeviceOwner,
        name: &'static CStr,
        device: impl PinInit<T::Device, E>,
    ) -> Result<impl PinInit<Self, Error>>
    where
        Error: From<E>,
    {
        let stats = Arc::new(DeviceStats::new(), GFP_KERNEL)?;
        let backend = try_pin_init!(Backend::<T> {
            device <- device,
            stats,
        }? E);
        Ok(try_pin_init!(Self {
            pagemap <- Pagemap::new(size, owner, name, backend),
        }? Error))
    }

    fn from_pagemap(pagemap: &Pagemap<Backend<T>>) -> &Self {
        let ptr: *const Pagemap<Backend<T>> = pagemap;
        // SAFETY: Every `Pagemap<Backend<T>>` is the `pagemap` field of a `DeviceMemory<T>`
        // (`Backend` is private to this module), which lives as long as the pagemap.
        unsafe { &*crate::container_of!(ptr, Self, pagemap) }
    }

    /// The driver's device state.
    #[inline]
    pub fn device(&self) -> &T::Device {
        &self.pagemap.device
    }

    /// The pfns of the device pages, for the driver's allocator.
    #[inline]
    pub fn pfns(&self) -> ops::Range<usize> {
        self.pagemap.pfns()
    }

    /// The owner of the device pages.
    #[inline]
    pub fn owner(&self) -> DeviceOwner {
        self.pagemap.owner()
    }

    /// The counters.
    #[inline]
    pub fn stats(&self) -> &DeviceStats {
        &self.pagemap.stats
    }

    /// Allocates `npages` pages through the driver.
    pub(super) fn alloc(&self, npages: usize) -> Result<Arc<Allocation<T>>> {
        let (data, pfns) = T::alloc_devmem(self, npages)?;
        let alloc = Arc::new(
            Allocation {
                data,
                pfns,
                stats: self.pagemap.stats.clone(),
            },
            GFP_KERNEL,
        )?;
        self.stats().allocations.add(1);
        if alloc.pfns().len() != npages {
            return Err(EINVAL);
        }
        Ok(alloc)
    }

    /// Makes page `i` of `alloc` a device folio carrying a reference to `alloc`.
    fn new_folio(
        &self,
        alloc: &Arc<Allocation<T>>,
        i: usize,
    ) -> Result<NewDeviceFolio<'_, Backend<T>>> {
        let pfn = *alloc.pfns().get(i).ok_or(EINVAL)?;
        // SAFETY: The pages of an allocation are free pages of this memory that belong to it
        // (type invariants of `FreePages`), and each is made a folio at most once: only by the
        // single migration that fills the allocation, for its own entry `i`.
        let folio = unsafe { self.pagemap.new_folio(pfn, 0, alloc.clone())? };
        self.stats().pages_in_use.add(1);
        Ok(folio)
    }

    /// Copies the system pages (and holes) collected by `mig` to the pages of `alloc`, entry `i`
    /// to page `i`, and moves them there. Returns how many pages moved.
    pub(super) fn to_vram(
        &self,
        mut mig: Migration<'_>,
        alloc: &Arc<Allocation<T>>,
    ) -> Result<usize> {
        if alloc.pfns().len() < mig.npages() {
            return Err(EINVAL);
        }
        let mut entries = KVec::new();
        {
            let mut dst = KVec::new();
            let mut src = KVec::new();
            for i in (0..mig.npages()).filter(|&i| mig.src(i).can_migrate()) {
                entries.push(i, GFP_KERNEL)?;
                dst.push(alloc.pfns()[i], GFP_KERNEL)?;
                src.push(mig.system_page(i, 0), GFP_KERNEL)?;
            }
            if entries.is_empty() {
                return Ok(0);
            }
            T::copy_to_vram(self, &dst, &src)?;
        }
        for i in entries {
            let folio = self.new_folio(alloc, i)?;
            mig.set_dst(i, folio)?;
        }
        Ok(mig.pages().pages())
    }

    /// Copies the device pages collected by `mig` to new system pages and moves them there.
    /// Returns how many pages moved.
    pub(super) fn to_sram(&self, mut mig: Migration<'_>) -> Result<usize> {
        let own = self.pfns();
        let mut entries = KVec::new();
        let mut src = KVec::new();
        let mut dst = KVec::new();
        for i in 0..mig.npages() {
            let entry = mig.src(i);
            let Some(pfn) = entry
                .pfn()
                .filter(|p| entry.can_migrate() && own.contains(p))
            else {
                continue;
            };
            entries.push(i, GFP_KERNEL)?;
            src.push(pfn, GFP_KERNEL)?;
            dst.push(SystemPage::alloc()?, GFP_KERNEL)?;
        }
        if entries.is_empty() {
            return Ok(0);
        }
        let mut pages = KVec::with_capacity(dst.len(), GFP_KERNEL)?;
        for page in dst.iter() {
            pages.push(page.page(), GFP_KERNEL)?;
        }
        T::copy_to_sram(self, &src, &pages)?;
        drop(pages);
        for (i, page) in entries.into_iter().zip(dst) {
            mig.set_dst(i, page)?;
        }
        Ok(mig.pages().pages())
    }

    /// Evicts device pages `pfns` (of this memory) to system memory, wherever they are mapped,
    /// e.g. the least recently used blocks of the driver's allocator when an allocation does not
    /// fit. Pages that are free or busy are left. Returns how many pages moved.
    pub fn evict(&self, pfns: &[usize]) -> Result<usize> {
        let moved = self.to_sram(self.pagemap.evict_pfns(pfns)?)?;
        self.stats().evictions.add(1);
        self.stats().bytes_evicted.add((moved * PAGE_SIZE) as u64);
        Ok(moved)
    }

    /// Evicts every page in use to system memory. Returns whether none is left in use.
    pub fn evict_all(&self) -> bool {
        let own = self.pfns();
        for _ in 0..EVICT_PASSES {
            if self.stats().pages_in_use.get() == 0 {
                return true;
            }
            let mut start = own.start;
            while start < own.end {
                let end = (start + EVICT_BATCH).min(own.end);
                if let Ok(mig) = self.pagemap.evict(start..end) {
                    // A failed copy leaves pages in use: the next pass tries them again.
                    if let Ok(moved) = self.to_sram(mig) {
                        self.stats().bytes_evicted.add((moved * PAGE_SIZE) as u64);
                    }
                }
                start = end;
            }
            self.stats().evictions.add(1);
        }
        self.stats().pages_in_use.get() == 0
    }
}

#[pinned_drop]
impl<T: Driver> PinnedDrop for DeviceMemory<T> {
    fn drop(self: Pin<&mut Self>) {
        // Unregistering waits until every page is free: give the data back to the processes.
        if !self.evict_all() {
            pr_warn!("gpusvm: device pages still in use after eviction\n");
        }
    }
}
