// SPDX-License-Identifier: GPL-2.0

//! Device memory: the device-private pages ranges migrate to, and the way back.

use super::{
    access::private::Sealed,
    DeviceStats,
    Driver, //
};
use crate::{
    mm::{
        migrate::{
            Migration,
            SystemFolio,
            PMD_ORDER, //
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
        BorrowedPage,
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

    /// Whether pages `i..i + (1 << order)` of the allocation are consecutive device pages from
    /// a multiple of `1 << order`: a block that can back a folio of that order.
    fn is_block(&self, i: usize, order: u32) -> bool {
        let n = 1usize << order;
        match i.checked_add(n).and_then(|end| self.pfns().get(i..end)) {
            Some(block) => block[0] % n == 0 && block.windows(2).all(|w| w[1] == w[0] + 1),
            None => false,
        }
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
    access: T::Access,
    stats: Arc<DeviceStats>,
}

impl<T: Driver> Backend<T> {
    fn new<E>(
        device: impl PinInit<T::Device, E>,
        access: T::Access,
    ) -> Result<impl PinInit<Self, E>> {
        let stats = Arc::new(DeviceStats::new(), GFP_KERNEL)?;
        Ok(try_pin_init!(Self {
            device <- device,
            access,
            stats,
        }? E))
    }
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
/// Dropping it evicts the pages still in use. Pages that cannot move back (the copy keeps
/// failing, or a page stays locked or pinned) keep the drop waiting until their processes free
/// them (munmap, exit): the device's pages must not be unregistered while mapped.
#[pin_data(PinnedDrop)]
pub struct DeviceMemory<T: Driver> {
    #[pin]
    pagemap: Pagemap<Backend<T>>,
}

impl<T: Driver> DeviceMemory<T> {
    /// Registers `size` bytes of device memory owned by `owner`, with the device state `device`,
    /// whose copies reach system memory through `access`; `name` shows in `/proc/iomem`.
    ///
    /// Memories of one driver whose devices reach each other's memory (an interconnect group)
    /// share one owner: the devices then map each other's pages as they are, and a range moves
    /// between their memories directly ([`Driver::copy_from_peer`]). Any other memory has an
    /// owner of its own.
    ///
    /// Fails with the errors of [`Pagemap::new`].
    pub fn new<E>(
        size: usize,
        owner: DeviceOwner,
        name: &'static CStr,
        device: impl PinInit<T::Device, E>,
        access: T::Access,
    ) -> Result<impl PinInit<Self, Error>>
    where
        Error: From<E>,
    {
        let backend = Backend::new(device, access)?;
        Ok(try_pin_init!(Self {
            pagemap <- Pagemap::new(size, owner, name, backend),
        }? Error))
    }

    /// Like [`DeviceMemory::new`], for `size` bytes of device-coherent memory at physical address
    /// `start`: memory the CPU accesses directly ([`DeviceMemory::coherent_page`]), so that a
    /// range there is never faulted back; it moves back by eviction only.
    ///
    /// # Safety
    ///
    /// As for [`Pagemap::new_coherent`]: the physical range is for this memory alone.
    pub unsafe fn new_coherent<E>(
        start: u64,
        size: usize,
        owner: DeviceOwner,
        device: impl PinInit<T::Device, E>,
        access: T::Access,
    ) -> Result<impl PinInit<Self, Error>>
    where
        Error: From<E>,
    {
        let backend = Backend::new(device, access)?;
        // SAFETY: The safety requirements.
        let pagemap = unsafe { Pagemap::new_coherent(start, size, owner, backend) };
        Ok(try_pin_init!(Self {
            pagemap <- pagemap,
        }? Error))
    }

    /// Whether this is device-coherent memory ([`DeviceMemory::new_coherent`]).
    #[inline]
    pub fn is_coherent(&self) -> bool {
        self.pagemap.is_coherent()
    }

    /// Page `pfn` of device-coherent memory, for the CPU copies of the driver; `None` for
    /// device-private memory or a page of another memory.
    #[inline]
    pub fn coherent_page(&self, pfn: usize) -> Option<BorrowedPage<'_>> {
        self.pagemap.coherent_page(pfn)
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

    /// Makes pages `i..i + (1 << order)` of `alloc`, a block ([`Allocation::is_block`]), a device
    /// folio carrying a reference to `alloc`.
    ///
    /// # Safety
    ///
    /// No page of the block was made a folio before.
    unsafe fn new_folio(
        &self,
        alloc: &Arc<Allocation<T>>,
        i: usize,
        order: u32,
    ) -> Result<NewDeviceFolio<'_, Backend<T>>> {
        if !alloc.is_block(i, order) {
            return Err(EINVAL);
        }
        let pfn = alloc.pfns()[i];
        // SAFETY: The pages of an allocation are free pages of this memory that belong to it
        // (type invariants of `FreePages`), and none of the block was made a folio before (safety
        // requirements).
        let folio = unsafe { self.pagemap.new_folio(pfn, order, alloc.clone())? };
        self.stats().pages_in_use.add(1 << order);
        Ok(folio)
    }

    /// Copies the system pages (and holes) and the device pages of peers collected by `mig` to the
    /// pages of `alloc`, entry `i` to page `i`, and moves them there; pages of this memory stay.
    /// Returns how many pages moved.
    ///
    /// A compound entry (a PMD-mapped huge page, or an aligned 2M hole) moves as one device folio
    /// where the allocation has a block for it; elsewhere its source is split and moves page by
    /// page.
    ///
    /// # Safety
    ///
    /// `alloc` is fresh from [`DeviceMemory::alloc`]: none of its pages was made a folio before.
    pub(super) unsafe fn to_vram(
        &self,
        mut mig: Migration<'_>,
        alloc: &Arc<Allocation<T>>,
    ) -> Result<usize> {
        if alloc.pfns().len() < mig.npages() {
            return Err(EINVAL);
        }
        let own = self.pfns();
        let npages = mig.npages();
        // The entries to give a folio, with its order; room for one a page, made once (a push
        // that grows a vector costs more than the bookkeeping of a page).
        let mut folios = KVec::with_capacity(npages, GFP_KERNEL)?;
        {
            // From system memory (and holes), and from peers' device memory.
            let mut dst = KVec::with_capacity(npages, GFP_KERNEL)?;
            let mut src = KVec::with_capacity(npages, GFP_KERNEL)?;
            let (mut peer_dst, mut peer_src) = (KVec::new(), KVec::new());
            let mut i = 0;
            while i < npages {
                let pages = mig.entry_pages(i);
                let first = i;
                i += pages;
                if !mig.src(first).can_migrate() {
                    continue;
                }
                // The pages of an entry are one folio's: all system pages (or a hole), or all
                // device pages.
                let device = mig.device_pfn(first, 0);
                if device.is_some_and(|pfn| own.contains(&pfn)) {
                    // Here already.
                    continue;
                }
                let to = alloc.pfns().get(first..i).ok_or(EINVAL)?;
                if pages > 1 && alloc.is_block(first, PMD_ORDER) {
                    folios
                        .push_within_capacity((first, PMD_ORDER))
                        .map_err(|_| ENOMEM)?;
                } else {
                    for n in first..i {
                        folios.push_within_capacity((n, 0)).map_err(|_| ENOMEM)?;
                    }
                }
                if device.is_some() {
                    // A peer's: this memory's were left above.
                    for (n, &to) in to.iter().enumerate() {
                        peer_dst.push(to, GFP_KERNEL)?;
                        peer_src.push(mig.device_pfn(first, n).ok_or(EINVAL)?, GFP_KERNEL)?;
                    }
                } else {
                    for (n, &to) in to.iter().enumerate() {
                        dst.push_within_capacity(to).map_err(|_| ENOMEM)?;
                        src.push_within_capacity(mig.system_page(first, n))
                            .map_err(|_| ENOMEM)?;
                    }
                }
            }
            if folios.is_empty() {
                return Ok(0);
            }
            if !dst.is_empty() {
                self.pagemap.access.to_vram(self, &dst, &src)?;
            }
            if !peer_dst.is_empty() {
                T::copy_from_peer(self, &peer_dst, &peer_src)?;
                self.stats()
                    .bytes_from_peers
                    .add((peer_dst.len() * PAGE_SIZE) as u64);
            }
        }
        for (i, order) in folios {
            // SAFETY: `alloc` is fresh (safety requirements), and the entries of `folios` cover
            // disjoint pages of it: each is made a folio once.
            let folio = unsafe { self.new_folio(alloc, i, order)? };
            mig.set_dst(i, folio)?;
        }
        let done = mig.pages();
        self.stats().huge_folios.add(done.whole_compound() as u64);
        Ok(done.pages())
    }

    /// Copies the device pages collected by `mig` to new system pages and moves them there.
    /// Returns how many pages moved.
    ///
    /// A device folio of [`PMD_ORDER`] moves to a huge page. When none is free it is split and
    /// moves page by page; an eviction by physical page cannot split it, and leaves it in device
    /// memory.
    pub(super) fn to_sram(&self, mut mig: Migration<'_>) -> Result<usize> {
        let own = self.pfns();
        // Not zeroed: the copy below writes every page of the folios whole before they go to the
        // migration (`SystemAccess::to_sram`), or they are dropped unused.
        let page = || {
            // SAFETY: See above.
            unsafe { SystemFolio::alloc_unzeroed() }
        };
        let huge = || {
            // SAFETY: See above.
            unsafe { SystemFolio::alloc_huge_unzeroed() }
        };
        let npages = mig.npages();
        // The entries to give a folio, with it; room for one a page, made once, as in `to_vram`.
        let mut folios = KVec::with_capacity(npages, GFP_KERNEL)?;
        let mut src = KVec::with_capacity(npages, GFP_KERNEL)?;
        let mut i = 0;
        while i < npages {
            let entry = mig.src(i);
            let pages = mig.entry_pages(i);
            let first = i;
            i += pages;
            let Some(pfn) = entry
                .pfn()
                .filter(|p| entry.can_migrate() && own.contains(p))
            else {
                continue;
            };
            if pages == 1 {
                folios
                    .push_within_capacity((first, page()?))
                    .map_err(|_| ENOMEM)?;
            } else if let Ok(huge) = huge() {
                folios
                    .push_within_capacity((first, huge))
                    .map_err(|_| ENOMEM)?;
            } else if mig.can_split() {
                for n in first..i {
                    folios
                        .push_within_capacity((n, page()?))
                        .map_err(|_| ENOMEM)?;
                }
            } else {
                continue;
            }
            for n in 0..pages {
                src.push_within_capacity(pfn + n).map_err(|_| ENOMEM)?;
            }
        }
        if folios.is_empty() {
            return Ok(0);
        }
        let mut pages = KVec::with_capacity(src.len(), GFP_KERNEL)?;
        for (_, folio) in folios.iter() {
            for n in 0..folio.pages() {
                pages
                    .push_within_capacity(folio.page(n).ok_or(EINVAL)?)
                    .map_err(|_| ENOMEM)?;
            }
        }
        // Every page of the folios, written whole before `Ok`.
        self.pagemap.access.to_sram(self, &src, pages)?;
        for (i, folio) in folios {
            mig.set_dst(i, folio)?;
        }
        let done = mig.pages();
        self.stats().huge_folios.add(done.whole_compound() as u64);
        Ok(done.pages())
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
