// SPDX-License-Identifier: GPL-2.0

//! Device-private memory.
//!
//! A [`Pagemap`] gives a range of device memory (VRAM the CPU cannot access directly) `struct
//! page`s, so that it can back user mappings: a page of a process can be migrated there
//! ([`Migration`]), and a CPU access to it faults into the driver's
//! [`DevicePrivate::migrate_to_ram`], which migrates it back. The driver owns the allocation of
//! device pages; each allocated page carries its data ([`DevicePrivate::PageData`]), which comes
//! back to the driver in [`DevicePrivate::folio_free`] when the page is freed.
//!
//! C header: [`include/linux/memremap.h`](srctree/include/linux/memremap.h)

use crate::{
    bindings,
    error::from_err_ptr,
    mm::{
        migrate::{
            Destination,
            Migration,
            Select,
            PMD_ORDER, //
        },
        DeviceOwner,
    },
    page::{
        BorrowedPage,
        PAGE_SIZE, //
    },
    prelude::*,
    str::CStr,
    types::{
        ForeignOwnable,
        Opaque, //
    },
};
use core::{
    marker::PhantomData,
    ops::Range,
    ptr::NonNull, //
};

/// The driver side of a [`Pagemap`].
pub trait DevicePrivate: Send + Sync + Sized {
    /// The data attached to each allocated device page, e.g. a reference to the allocation the
    /// page belongs to. It is how callbacks that only have the page find their way back.
    type PageData: ForeignOwnable + Send + Sync;

    /// The CPU accessed a device page of this pagemap: migrate it (and, at the driver's choice,
    /// neighbouring ones) back to system memory.
    ///
    /// Runs in the page fault handler, with the mmap or VMA lock held. It may migrate less than
    /// asked, or nothing: the CPU then faults again. An error makes the access fail with
    /// `SIGBUS` ([`ENOMEM`]: the fault handler's out-of-memory path).
    fn migrate_to_ram(pagemap: &Pagemap<Self>, fault: &CpuFault<'_, Self>) -> Result;

    /// The last reference to the device folio of `1 << order` pages at `pfn` was dropped: the
    /// pages are free again, and the folio's data comes back.
    ///
    /// May run in any context that drops a page reference, including atomic context.
    fn folio_free(pagemap: &Pagemap<Self>, pfn: usize, order: u32, data: Self::PageData);

    /// A large device folio is being split (e.g. part of it was unmapped): the new folio of
    /// `1 << order` pages at `pfn`, cut from the folio at `head_pfn` whose data is `head`, needs
    /// data of its own. The head keeps its data and is freed with the order it is left with.
    ///
    /// Runs with the folio frozen, possibly under a page table lock: it can neither sleep nor
    /// fail. Page data is typically a reference to the allocation the pages belong to, and this
    /// takes another one (e.g. clones an `Arc`).
    fn folio_split(
        pagemap: &Pagemap<Self>,
        head_pfn: usize,
        head: <Self::PageData as ForeignOwnable>::Borrowed<'_>,
        pfn: usize,
        order: u32,
    ) -> Self::PageData;
}

/// A range of device memory with `struct page`s.
///
/// Device-private memory ([`Pagemap::new`]) is registered (`memremap_pages`,
/// `MEMORY_DEVICE_PRIVATE`) at initialisation on a free range of physical address space
/// (`request_free_mem_region`); device-coherent memory ([`Pagemap::new_coherent`],
/// `MEMORY_DEVICE_COHERENT`) on the range the caller gives. It is unregistered on drop.
///
/// Dropping it waits until all its pages are free: evict the pages still in use first
/// ([`Pagemap::evict`]).
///
/// # Invariants
///
/// `inner.pgmap` is a registered `struct dev_pagemap` of type `MEMORY_DEVICE_PRIVATE` or
/// `MEMORY_DEVICE_COHERENT` with the callbacks of `T` and the owner `owner`. For device-private
/// memory its range is at the start of `inner.region`, a region of `iomem_resource` that the
/// pagemap reserved; for device-coherent memory `inner.region` is null.
#[pin_data(PinnedDrop)]
pub struct Pagemap<T: DevicePrivate> {
    #[pin]
    data: T,
    #[pin]
    inner: Opaque<Registration>,
    owner: DeviceOwner,
}

/// The C side of a [`Pagemap`]. The region is reserved in section-sized steps
/// (`request_free_mem_region` rounds up), while only the requested size gets pages.
#[repr(C)]
struct Registration {
    pgmap: bindings::dev_pagemap,
    region: *mut bindings::resource,
}

// SAFETY: The pagemap can be unregistered from any thread; `T` is `Send`.
unsafe impl<T: DevicePrivate> Send for Pagemap<T> {}

// SAFETY: The methods taking `&self` are safe to call concurrently; `T` is `Sync`.
unsafe impl<T: DevicePrivate> Sync for Pagemap<T> {}

impl<T: DevicePrivate> Pagemap<T> {
    const OPS: bindings::dev_pagemap_ops = bindings::dev_pagemap_ops {
        folio_free: Some(Self::folio_free_callback),
        migrate_to_ram: Some(Self::migrate_to_ram_callback),
        folio_split: Some(Self::folio_split_callback),
        // SAFETY: All-zero is a valid value for the other (optional) callbacks.
        ..unsafe { core::mem::zeroed() }
    };

    /// Initialises `data`, then registers `size` bytes of device-private memory owned by `owner`.
    ///
    /// `size` must be a non-zero multiple of the page size ([`EINVAL`]); `name` shows in
    /// `/proc/iomem`. Fails with the errors of `request_free_mem_region` and `memremap_pages`
    /// ([`ENOMEM`], [`ERANGE`] when no free physical range is large enough, ...).
    pub fn new<E>(
        size: usize,
        owner: DeviceOwner,
        name: &'static CStr,
        data: impl PinInit<T, E>,
    ) -> impl PinInit<Self, Error>
    where
        Error: From<E>,
    {
        let register = move |inner: *mut Registration| {
            if size == 0 || size % PAGE_SIZE != 0 {
                return Err(EINVAL);
            }
            // SAFETY: `iomem_resource` is the root of the physical address space; `name` lives
            // forever.
            let res = from_err_ptr(unsafe {
                bindings::request_free_mem_region(
                    &raw mut bindings::iomem_resource,
                    size,
                    name.as_char_ptr(),
                )
            })?;
            // SAFETY: `res` is the region just reserved; it is at least `size` bytes.
            let start = unsafe { (*res).start };
            let kind = bindings::memory_type_MEMORY_DEVICE_PRIVATE;
            // SAFETY: `inner` is valid for writes and stays pinned; the range is reserved for the
            // pagemap in `res`.
            let registered = unsafe { Self::register(inner, kind, start, size, owner, res) };
            if registered.is_err() {
                // SAFETY: The region was reserved above and nothing uses it.
                unsafe { release_region(res) };
            }
            registered
        };
        // SAFETY: `register` registers the pagemap when it returns `Ok`.
        unsafe { Self::init(data, owner, register) }
    }

    /// Initialises `data`, then registers `size` bytes of device-coherent memory at physical
    /// address `start`, owned by `owner`: device memory the CPU accesses directly, which user
    /// mappings map like system memory (no CPU fault migrates it back).
    ///
    /// `start` and `size` must be non-zero multiples of the page size ([`EINVAL`]). Fails with
    /// the errors of `memremap_pages`.
    ///
    /// # Safety
    ///
    /// `[start, start + size)` is memory that nothing else uses, such as memory set aside for the
    /// device at boot (`memmap=`), until the pagemap is dropped.
    pub unsafe fn new_coherent<E>(
        start: u64,
        size: usize,
        owner: DeviceOwner,
        data: impl PinInit<T, E>,
    ) -> impl PinInit<Self, Error>
    where
        Error: From<E>,
    {
        let register = move |inner: *mut Registration| {
            if start == 0 || start % PAGE_SIZE as u64 != 0 {
                return Err(EINVAL);
            }
            let kind = bindings::memory_type_MEMORY_DEVICE_COHERENT;
            // SAFETY: `inner` is valid for writes and stays pinned; the range is the caller's to
            // give (safety requirements).
            unsafe { Self::register(inner, kind, start, size, owner, core::ptr::null_mut()) }
        };
        // SAFETY: `register` registers the pagemap when it returns `Ok`.
        unsafe { Self::init(data, owner, register) }
    }

    /// Initialises `data`, then the registration with `register`, which gets its slot.
    ///
    /// # Safety
    ///
    /// `register` registers the pagemap in the slot when it returns `Ok` (the type invariants).
    unsafe fn init<E>(
        data: impl PinInit<T, E>,
        owner: DeviceOwner,
        register: impl FnOnce(*mut Registration) -> Result,
    ) -> impl PinInit<Self, Error>
    where
        Error: From<E>,
    {
        try_pin_init!(Self {
            data <- data,
            inner <- Opaque::try_ffi_init(register),
            owner,
        }? Error)
    }

    /// Registers a pagemap of type `kind` for `size` bytes from physical address `start`, in
    /// `inner`, with `region` the region it reserved, if any.
    ///
    /// # Safety
    ///
    /// `inner` is valid for writes and stays pinned until the pagemap is unregistered; the
    /// physical range is for this pagemap alone.
    unsafe fn register(
        inner: *mut Registration,
        kind: bindings::memory_type,
        start: bindings::resource_size_t,
        size: usize,
        owner: DeviceOwner,
        region: *mut bindings::resource,
    ) -> Result {
        if size == 0 || size % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        // CAST: `usize` fits in `resource_size_t` on the 64-bit architectures with ZONE_DEVICE.
        let end = start
            .checked_add(size as bindings::resource_size_t - 1)
            .ok_or(EINVAL)?;
        // SAFETY: `inner` is valid for writes (safety requirements).
        let slot = unsafe {
            (&raw mut (*inner).region).write(region);
            &raw mut (*inner).pgmap
        };
        // SAFETY: `slot` is valid for writes; all-zero is a valid `dev_pagemap`.
        unsafe {
            slot.write(core::mem::zeroed());
            (*slot).type_ = kind;
            *(*slot).__bindgen_anon_1.range.as_mut() = bindings::range { start, end };
            (*slot).nr_range = 1;
            (*slot).ops = const { &Self::OPS };
            (*slot).owner = owner.as_ptr();
        }
        // SAFETY: `slot` is a filled-in pagemap that stays pinned while registered.
        let mapped = unsafe { bindings::memremap_pages(slot, bindings::numa_node_id()) };
        from_err_ptr(mapped).map(|_| ())
    }

    /// Whether the pages are device-coherent memory ([`Pagemap::new_coherent`]).
    #[inline]
    pub fn is_coherent(&self) -> bool {
        // SAFETY: The type is set before registration and not changed afterwards.
        unsafe { (*self.pgmap()).type_ == bindings::memory_type_MEMORY_DEVICE_COHERENT }
    }

    /// Device page `pfn` of device-coherent memory, which the CPU can read and write, if it is
    /// one of this pagemap.
    pub fn coherent_page(&self, pfn: usize) -> Option<BorrowedPage<'_>> {
        if !self.is_coherent() || !self.pfns().contains(&pfn) {
            return None;
        }
        // SAFETY: `pfn` is a page of this pagemap, whose `struct page`s live while it is
        // registered, which `'_` covers.
        let page = unsafe { bindings::pfn_to_page(pfn) };
        // SAFETY: As above.
        NonNull::new(page).map(|p| unsafe { BorrowedPage::from_raw(p) })
    }

    /// The pfns of the device pages, for the driver's allocator.
    #[inline]
    pub fn pfns(&self) -> Range<usize> {
        let range = self.range();
        // CAST: Physical addresses fit in `usize` on the 64-bit architectures with ZONE_DEVICE.
        (range.start as usize / PAGE_SIZE)..((range.end as usize + 1) / PAGE_SIZE)
    }

    /// The physical address range of the device memory, `end` inclusive.
    fn range(&self) -> bindings::range {
        // SAFETY: The pagemap has one range, set before registration and not changed afterwards.
        unsafe { *(*self.pgmap()).__bindgen_anon_1.range.as_ref() }
    }

    fn pgmap(&self) -> *mut bindings::dev_pagemap {
        // SAFETY: `inner` is initialised; this only computes a field address.
        unsafe { &raw mut (*self.inner.get()).pgmap }
    }

    /// The owner of the device pages, as given to HMM and migrations to find them.
    #[inline]
    pub fn owner(&self) -> DeviceOwner {
        self.owner
    }

    /// Makes the free device pages from `pfn` a new folio of `1 << order` pages carrying `data`,
    /// to be the destination of a migration ([`Migration::set_dst`]).
    ///
    /// A folio is a single page or PMD-sized ([`PMD_ORDER`]): a migration takes a folio of
    /// another order for one of PMD size, and would move it by the wrong number of pages.
    ///
    /// Fails with [`EINVAL`] for another order, if the pages are not in this pagemap or `pfn` is
    /// not aligned to the folio size.
    ///
    /// # Safety
    ///
    /// The pages are free: never used since the pagemap was registered, or returned by
    /// [`folio_free`]; and no other thread makes them a new folio at the same time. (The driver's
    /// allocator of device pages guarantees this.)
    ///
    /// [`folio_free`]: DevicePrivate::folio_free
    pub unsafe fn new_folio(
        &self,
        pfn: usize,
        order: u32,
        data: T::PageData,
    ) -> Result<NewDeviceFolio<'_, T>> {
        if order != 0 && order != PMD_ORDER {
            return Err(EINVAL);
        }
        let own = self.pfns();
        let end = 1usize
            .checked_shl(order)
            .and_then(|n| pfn.checked_add(n))
            .ok_or(EINVAL)?;
        if pfn < own.start || end > own.end || pfn % (1 << order) != 0 {
            return Err(EINVAL);
        }
        // SAFETY: `pfn` is a page of this pagemap, so it has a `struct page`.
        let page = unsafe { bindings::pfn_to_page(pfn) };
        // CAST: The page becomes the head of the new folio. (`page_folio()` would follow the
        // stale compound head of a freed larger folio the page was a tail of.)
        let folio = page.cast::<bindings::folio>();
        // SAFETY: The pages are free (safety requirements) and the pagemap registered: this makes
        // them one folio with one reference, locked.
        unsafe { bindings::zone_device_folio_init(folio, self.pgmap(), order) };
        // SAFETY: The folio was just initialised as a device-private folio of ours.
        unsafe { bindings::page_set_zone_device_data(page, data.into_foreign()) };
        // INVARIANT: The folio is locked, referenced once and carries `data`.
        Ok(NewDeviceFolio {
            // SAFETY: `pfn_to_page` does not return null for a valid pfn.
            page: unsafe { NonNull::new_unchecked(page) },
            order,
            _pagemap: PhantomData,
        })
    }

    /// Borrows the data of device page `pfn`, if it is an allocated page of this pagemap.
    ///
    /// # Safety
    ///
    /// The page stays allocated (not freed through [`DevicePrivate::folio_free`]) for `'a`, for
    /// instance because the caller holds it locked or referenced.
    pub unsafe fn page_data<'a>(
        &'a self,
        pfn: usize,
    ) -> Option<<T::PageData as ForeignOwnable>::Borrowed<'a>> {
        if !self.pfns().contains(&pfn) {
            return None;
        }
        // SAFETY: `pfn` is a page of this pagemap.
        let data = unsafe { bindings::page_zone_device_data(bindings::pfn_to_page(pfn)) };
        // SAFETY: An allocated page carries data from `into_foreign`, valid while it is
        // allocated (safety requirements).
        (!data.is_null()).then(|| unsafe { T::PageData::borrow(data) })
    }

    /// Collects the device pages `pfns` for migration back to system memory, without going
    /// through the address spaces that map them (eviction).
    ///
    /// Fails with [`EINVAL`] if the pfns are not pages of this pagemap.
    pub fn evict(&self, pfns: Range<usize>) -> Result<Migration<'_>> {
        let own = self.pfns();
        if pfns.start < own.start || pfns.end > own.end {
            return Err(EINVAL);
        }
        // SAFETY: The pfns are pages of this pagemap, which stays registered while the returned
        // migration borrows it.
        unsafe { Migration::setup_device(pfns) }
    }

    /// Like [`Pagemap::evict`], for any set of pages of this pagemap, such as the pages of one
    /// allocation.
    pub fn evict_pfns(&self, pfns: &[usize]) -> Result<Migration<'_>> {
        let own = self.pfns();
        if !pfns.iter().all(|pfn| own.contains(pfn)) {
            return Err(EINVAL);
        }
        // SAFETY: The pfns are pages of this pagemap, which stays registered while the returned
        // migration borrows it.
        unsafe { Migration::setup_device_pfns(pfns) }
    }

    /// # Safety
    ///
    /// `page` is a page of a pagemap registered by [`Pagemap::new`].
    unsafe fn from_page<'a>(page: *const bindings::page) -> &'a Self {
        // SAFETY: The page is a device page, so it has a pagemap.
        let pgmap = unsafe { bindings::page_pgmap(page) };
        // CAST: `pgmap` is the first field of the `#[repr(C)]` `Registration`.
        let inner = pgmap.cast::<Registration>();
        // SAFETY: Pagemaps with these callbacks are embedded in a `Pagemap<T>`, which outlives
        // its pages.
        unsafe { &*crate::container_of!(Opaque::cast_from(inner), Self, inner) }
    }

    /// # Safety
    ///
    /// Called by the core with a freed folio of a pagemap registered by [`Pagemap::new`].
    unsafe extern "C" fn folio_free_callback(folio: *mut bindings::folio) {
        // SAFETY: `folio` is a valid folio.
        let (page, order) =
            unsafe { (bindings::folio_page(folio, 0), bindings::folio_order(folio)) };
        // SAFETY: The folio belongs to a pagemap of ours.
        let this = unsafe { Self::from_page(page) };
        // SAFETY: `page` is valid.
        let pfn = unsafe { bindings::page_to_pfn(page) };
        // SAFETY: Allocated pages carry data from `into_foreign` (`new_folio`); it is taken back
        // exactly once, here, and cleared.
        let data = unsafe {
            let data = bindings::page_zone_device_data(page);
            bindings::page_set_zone_device_data(page, core::ptr::null_mut());
            T::PageData::from_foreign(data)
        };
        T::folio_free(this, pfn, order, data);
    }

    /// # Safety
    ///
    /// Called by the core while splitting a large folio of a pagemap registered by
    /// [`Pagemap::new`]: `head` is the folio being split, `tail` null or a new folio cut from it.
    unsafe extern "C" fn folio_split_callback(
        head: *mut bindings::folio,
        tail: *mut bindings::folio,
    ) {
        if tail.is_null() {
            // The head is done: it keeps its data, at its new order.
            return;
        }
        // SAFETY: `head` is a valid folio of ours.
        let head_page = unsafe { bindings::folio_page(head, 0) };
        // SAFETY: The folio belongs to a pagemap of ours.
        let this = unsafe { Self::from_page(head_page) };
        // SAFETY: `head` and `tail` are valid folios; the tail belongs to the head's pagemap.
        let (tail_page, order) = unsafe {
            bindings::zone_device_folio_split_init(head, tail);
            (bindings::folio_page(tail, 0), bindings::folio_order(tail))
        };
        // SAFETY: The head carries data from `into_foreign`, valid while it is allocated, which
        // lasts through the split.
        let head_data = unsafe { T::PageData::borrow(bindings::page_zone_device_data(head_page)) };
        // SAFETY: `head_page` and `tail_page` are valid pages.
        let (head_pfn, pfn) = unsafe {
            (
                bindings::page_to_pfn(head_page),
                bindings::page_to_pfn(tail_page),
            )
        };
        let data = T::folio_split(this, head_pfn, head_data, pfn, order);
        // SAFETY: The tail is a device-private folio of ours with no data yet.
        unsafe { bindings::page_set_zone_device_data(tail_page, data.into_foreign()) };
    }

    /// # Safety
    ///
    /// Called by the core with a CPU fault on a page of a pagemap registered by [`Pagemap::new`].
    unsafe extern "C" fn migrate_to_ram_callback(
        vmf: *mut bindings::vm_fault,
    ) -> bindings::vm_fault_t {
        // SAFETY: `vmf` is valid and its page is the faulting device page.
        let page = unsafe { (*vmf).page };
        // SAFETY: The page belongs to a pagemap of ours.
        let this = unsafe { Self::from_page(page) };
        // INVARIANT: `vmf` is the fault being handled.
        let fault = CpuFault {
            vmf,
            _pagemap: PhantomData,
        };
        match T::migrate_to_ram(this, &fault) {
            Ok(()) => 0,
            // CAST: The `VM_FAULT_*` codes fit in `vm_fault_t`.
            Err(e) if e == ENOMEM => bindings::vm_fault_reason_VM_FAULT_OOM as bindings::vm_fault_t,
            Err(_) => bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t,
        }
    }
}

impl<T: DevicePrivate> core::ops::Deref for Pagemap<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.data
    }
}

#[pinned_drop]
impl<T: DevicePrivate> PinnedDrop for Pagemap<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariants the pagemap is registered; this waits for its pages to
        // be freed and unregisters it. Then the region it reserved, if any, is released.
        unsafe {
            bindings::memunmap_pages(self.pgmap());
            let region = (*self.inner.get()).region;
            if !region.is_null() {
                release_region(region);
            }
        }
    }
}

/// Releases a region reserved with `request_free_mem_region`.
///
/// # Safety
///
/// `res` is a region of `iomem_resource` that the caller reserved and nothing uses any more.
unsafe fn release_region(res: *mut bindings::resource) {
    // SAFETY: `res` is a reserved region (safety requirements).
    unsafe {
        bindings::__release_region(
            &raw mut bindings::iomem_resource,
            (*res).start,
            (*res).end - (*res).start + 1,
        )
    };
}

/// Free device pages made a new folio by [`Pagemap::new_folio`], for a migration destination.
///
/// Dropping it unused frees it again, through [`DevicePrivate::folio_free`].
///
/// # Invariants
///
/// `page` is the first page of a locked device-private folio of `1 << order` pages of a
/// `Pagemap<T>`, that this object holds the only reference to, carrying page data.
pub struct NewDeviceFolio<'a, T: DevicePrivate> {
    page: NonNull<bindings::page>,
    order: u32,
    _pagemap: PhantomData<&'a Pagemap<T>>,
}

impl<T: DevicePrivate> NewDeviceFolio<'_, T> {
    /// The pfn of the first page.
    #[inline]
    pub fn pfn(&self) -> usize {
        // SAFETY: By the type invariants the page is valid.
        unsafe { bindings::page_to_pfn(self.page.as_ptr()) }
    }

    /// The order of the folio.
    #[inline]
    pub fn order(&self) -> u32 {
        self.order
    }
}

// SAFETY: By the type invariants the folio is locked and referenced; `forget` gives the
// reference up.
unsafe impl<T: DevicePrivate> Destination for NewDeviceFolio<'_, T> {
    #[inline]
    fn order(&self) -> u32 {
        self.order
    }

    fn into_locked_folio(self) -> (NonNull<bindings::page>, u32) {
        let folio = (self.page, self.order);
        core::mem::forget(self);
        folio
    }
}

impl<T: DevicePrivate> Drop for NewDeviceFolio<'_, T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariants the folio is locked and we hold its only reference:
        // dropping it frees the folio through `folio_free`.
        unsafe {
            bindings::unlock_page(self.page.as_ptr());
            bindings::put_page(self.page.as_ptr());
        }
    }
}

/// A CPU fault on a device page, given to [`DevicePrivate::migrate_to_ram`].
///
/// # Invariants
///
/// `vmf` is the fault being handled: its VMA is valid under the mmap or VMA lock, and its page is
/// a locked, referenced device page of a `Pagemap<T>`.
pub struct CpuFault<'a, T: DevicePrivate> {
    vmf: *mut bindings::vm_fault,
    _pagemap: PhantomData<&'a Pagemap<T>>,
}

impl<'a, T: DevicePrivate> CpuFault<'a, T> {
    /// The faulting address, page-aligned.
    #[inline]
    pub fn address(&self) -> usize {
        // SAFETY: By the type invariants `vmf` is valid.
        unsafe { (*self.vmf).__bindgen_anon_1.address }
    }

    /// The span of the faulting VMA.
    #[inline]
    pub fn vma_span(&self) -> Range<usize> {
        // SAFETY: By the type invariants the VMA is valid under the lock held by the fault.
        let vma = unsafe { crate::mm::virt::VmaRef::from_raw((*self.vmf).__bindgen_anon_1.vma) };
        vma.start()..vma.end()
    }

    /// The pfn of the faulting device page; the first page of the folio for a fault on a
    /// PMD-mapped device folio.
    #[inline]
    pub fn pfn(&self) -> usize {
        // SAFETY: By the type invariants the page is valid.
        unsafe { bindings::page_to_pfn((*self.vmf).page) }
    }

    /// The order of the faulting mapping: 0 for a page table entry, the folio order when a large
    /// device folio is mapped by a PMD.
    #[inline]
    pub fn order(&self) -> u32 {
        // SAFETY: By the type invariants `vmf` and its page are valid; `pte` is only set for a
        // page table entry fault.
        unsafe {
            if (*self.vmf).pte.is_null() {
                bindings::folio_order(bindings::page_folio((*self.vmf).page))
            } else {
                0
            }
        }
    }

    /// The least that [`CpuFault::migrate`] must collect: the faulting page, or the whole
    /// PMD-mapped folio.
    #[inline]
    pub fn span(&self) -> Range<usize> {
        let size = PAGE_SIZE << self.order();
        let start = self.address() & !(size - 1);
        start..start + size
    }

    /// The data of the faulting device page.
    #[inline]
    pub fn page_data(
        &self,
        pagemap: &'a Pagemap<T>,
    ) -> Option<<T::PageData as ForeignOwnable>::Borrowed<'a>> {
        // SAFETY: The faulting page is locked and referenced for the duration of the fault.
        unsafe { pagemap.page_data(self.pfn()) }
    }

    /// Collects the device pages of `pagemap` in `range` for migration back to system memory.
    ///
    /// `range` must contain [`CpuFault::span`] and lie in the VMA ([`EINVAL`] otherwise). A
    /// PMD-mapped folio is collected as one compound entry; giving it a single page as destination
    /// splits it, and only its first page moves (the CPU then faults on the others one by one).
    pub fn migrate(&self, pagemap: &Pagemap<T>, range: Range<usize>) -> Result<Migration<'_>> {
        let fault = self.span();
        let vma = self.vma_span();
        if range.start > fault.start
            || range.end < fault.end
            || range.start % PAGE_SIZE != 0
            || range.end % PAGE_SIZE != 0
            || range.start < vma.start
            || range.end > vma.end
        {
            return Err(EINVAL);
        }
        let select = if self.order() > 0 {
            Select::DEVICE_PRIVATE | Select::COMPOUND
        } else {
            Select::DEVICE_PRIVATE
        };
        // SAFETY: By the type invariants the VMA is valid under the fault's lock for the borrow
        // of `self`, and the page is the locked faulting page.
        unsafe {
            Migration::setup_raw(
                (*self.vmf).__bindgen_anon_1.vma,
                range,
                select,
                pagemap.owner(),
                (*self.vmf).page,
            )
        }
    }
}

#[cfg(CONFIG_RUST_MM_KUNIT_TEST)]
#[macros::kunit_tests(rust_mm_device_private)]
mod tests {
    use super::*;
    use crate::{
        c_str,
        mm::{
            migrate::{
                SystemFolio,
                PMD_ORDER, //
            },
            test_mm::UserMapping,
        },
        page::Page,
        sync::{
            atomic::{
                Atomic,
                Relaxed, //
            },
            new_spinlock,
            Arc,
            ArcBorrow,
            SpinLock, //
        },
    };

    /// 2 MiB of simulated device memory.
    const NPAGES: usize = 512;

    static OWNER: u8 = 0;

    /// Simulated VRAM: each device page is backed by a system page, and counts its callbacks.
    #[pin_data]
    struct Vram {
        backing: KVec<Page>,
        #[pin]
        used: SpinLock<KVec<bool>>,
        cpu_faults: Atomic<u32>,
        pmd_faults: Atomic<u32>,
        /// CPU faults that moved nothing (the CPU faults again).
        empty_faults: Atomic<u32>,
        /// Pages freed (a folio of order `n` counts `1 << n`).
        frees: Atomic<u32>,
        splits: Atomic<u32>,
        bad_data: Atomic<u32>,
    }

    impl Vram {
        fn new() -> Result<impl PinInit<Self, Error>> {
            let mut backing = KVec::with_capacity(NPAGES, GFP_KERNEL)?;
            let mut used = KVec::with_capacity(NPAGES, GFP_KERNEL)?;
            for _ in 0..NPAGES {
                backing.push(Page::alloc_page(GFP_KERNEL)?, GFP_KERNEL)?;
                used.push(false, GFP_KERNEL)?;
            }
            Ok(try_pin_init!(Vram {
                backing,
                used <- new_spinlock!(used),
                cpu_faults: Atomic::new(0),
                pmd_faults: Atomic::new(0),
                empty_faults: Atomic::new(0),
                frees: Atomic::new(0),
                splits: Atomic::new(0),
                bad_data: Atomic::new(0),
            }? Error))
        }

        /// Allocates `1 << order` free, aligned pages; returns the index of the first.
        fn alloc(&self, order: u32) -> Option<usize> {
            let n = 1 << order;
            let mut used = self.used.lock();
            let idx = (0..NPAGES)
                .step_by(n)
                .find(|&i| used[i..i + n].iter().all(|u| !u))?;
            used[idx..idx + n].fill(true);
            Some(idx)
        }
    }

    impl DevicePrivate for Vram {
        /// The index of the first page of the folio the page was allocated in.
        type PageData = Arc<usize>;

        fn migrate_to_ram(pm: &Pagemap<Self>, fault: &CpuFault<'_, Self>) -> Result {
            pm.cpu_faults.fetch_add(1, Relaxed);
            let idx = fault.pfn() - pm.pfns().start;
            match fault.page_data(pm) {
                Some(first) if *first <= idx && idx < *first + NPAGES => (),
                _ => {
                    pm.bad_data.fetch_add(1, Relaxed);
                }
            }
            if fault.order() > 0 {
                pm.pmd_faults.fetch_add(1, Relaxed);
            }
            let mut mig = fault.migrate(pm, fault.span())?;
            for i in 0..mig.npages() {
                let src = mig.src(i);
                let Some(pfn) = src.pfn().filter(|_| src.can_migrate()) else {
                    continue;
                };
                let dst = SystemFolio::alloc()?;
                let page = dst.page(0).ok_or(EINVAL)?;
                copy(&page, &pm.backing[pfn - pm.pfns().start])?;
                mig.set_dst(i, dst)?;
            }
            let moved = mig.pages().pages();
            if moved == 0 {
                pm.empty_faults.fetch_add(1, Relaxed);
            }
            Ok(())
        }

        fn folio_free(pm: &Pagemap<Self>, pfn: usize, order: u32, data: Arc<usize>) {
            let idx = pfn - pm.pfns().start;
            // Split folios share the data of the folio they were cut from.
            if idx < *data || idx + (1 << order) > *data + NPAGES {
                pm.bad_data.fetch_add(1, Relaxed);
            }
            pm.used.lock()[idx..idx + (1 << order)].fill(false);
            pm.frees.fetch_add(1 << order, Relaxed);
        }

        fn folio_split(
            pm: &Pagemap<Self>,
            head_pfn: usize,
            head: ArcBorrow<'_, usize>,
            _pfn: usize,
            _order: u32,
        ) -> Arc<usize> {
            if *head != head_pfn - pm.pfns().start {
                pm.bad_data.fetch_add(1, Relaxed);
            }
            pm.splits.fetch_add(1, Relaxed);
            head.into()
        }
    }

    /// Copies `src` to `dst`, pages of a migration: locked and unmapped, nobody else uses them.
    fn copy(dst: &Page, src: &Page) -> Result {
        // SAFETY: Pages of a migration are not read or written by anyone else meanwhile.
        unsafe { dst.copy_from(src) };
        Ok(())
    }

    fn vram() -> Result<Pin<KBox<Pagemap<Vram>>>> {
        KBox::pin_init(
            Pagemap::new(
                NPAGES * PAGE_SIZE,
                DeviceOwner::from_ref(&OWNER),
                c_str!("rust_mm_test_vram"),
                Vram::new()?,
            ),
            GFP_KERNEL,
        )
    }

    /// Migrates `count` pages from page `first` of `map` to device memory, returning how many
    /// moved.
    fn to_device(
        pm: &Pagemap<Vram>,
        map: &UserMapping,
        first: usize,
        count: usize,
        select: Select,
    ) -> Result<usize> {
        let mmap = map.mm().mmap_read_lock();
        let vma = mmap.vma_lookup(map.addr(first)).ok_or(EFAULT)?;
        let range = map.addr(first)..map.addr(first + count);
        let mut mig = Migration::setup(vma, range, select, pm.owner())?;
        for i in 0..mig.npages() {
            if !mig.src(i).can_migrate() {
                continue;
            }
            let pages = mig.entry_pages(i);
            let order = pages.trailing_zeros();
            let idx = pm.alloc(order).ok_or(ENOMEM)?;
            for n in 0..pages {
                match mig.system_page(i, n) {
                    Some(src) => copy(&pm.backing[idx + n], &src)?,
                    // SAFETY: The backing page of a free device page is not used by anyone.
                    None => unsafe { pm.backing[idx + n].fill_zero_raw(0, PAGE_SIZE)? },
                }
            }
            let data = Arc::new(idx, GFP_KERNEL)?;
            // SAFETY: The pages from `idx` were just taken from the free pages.
            let folio = unsafe { pm.new_folio(pm.pfns().start + idx, order, data)? };
            mig.set_dst(i, folio)?;
        }
        let done = mig.pages();
        Ok(done.pages())
    }

    /// Migrates the device pages of `mig` back to system memory.
    fn evict(pm: &Pagemap<Vram>, mut mig: Migration<'_>) -> Result<usize> {
        for i in 0..mig.npages() {
            let src = mig.src(i);
            if !src.can_migrate() {
                continue;
            }
            let idx = src.pfn().ok_or(EINVAL)? - pm.pfns().start;
            let dst = SystemFolio::alloc()?;
            let page = dst.page(0).ok_or(EINVAL)?;
            copy(&page, &pm.backing[idx])?;
            mig.set_dst(i, dst)?;
        }
        let done = mig.pages();
        Ok(done.pages())
    }

    /// A buffer of `pages` pages, filled by `fill`, migrated to device memory.
    fn on_device(pm: &Pagemap<Vram>, pages: usize) -> Result<UserMapping> {
        let map = UserMapping::new(pages)?;
        fill(&map, pages)?;
        assert_eq!(to_device(pm, &map, 0, pages, Select::SYSTEM)?, pages);
        Ok(map)
    }

    /// Fills page `i` of `map` with the byte `i + 1`.
    fn fill(map: &UserMapping, pages: usize) -> Result {
        for i in 0..pages {
            map.write(i * PAGE_SIZE, &[i as u8 + 1; PAGE_SIZE])?;
        }
        Ok(())
    }

    /// Counts the bytes of `map` that differ from what `fill` wrote.
    fn bad_bytes(map: &UserMapping, pages: usize) -> Result<usize> {
        let mut bad = 0;
        let mut buf = [0u8; 512];
        for i in 0..pages {
            for off in (0..PAGE_SIZE).step_by(buf.len()) {
                map.read(i * PAGE_SIZE + off, &mut buf)?;
                bad += buf.iter().filter(|&&b| b != i as u8 + 1).count();
            }
        }
        Ok(bad)
    }

    #[test]
    fn registers_device_memory() -> Result {
        let pm = vram()?;
        assert_eq!(pm.pfns().end - pm.pfns().start, NPAGES);
        assert_eq!(pm.owner(), DeviceOwner::from_ref(&OWNER));
        // A page outside the pagemap is refused.
        // Pages outside the pagemap and misaligned folios are refused.
        let start = pm.pfns().start;
        for (pfn, order) in [
            (pm.pfns().end, 0),
            (start + 1, 1),
            (start, 3),
            (start, 10),
            (start, 64),
        ] {
            // SAFETY: The pages are rejected before they are used.
            assert!(unsafe { pm.new_folio(pfn, order, Arc::new(0, GFP_KERNEL)?) }.is_err());
        }
        assert!(pm.evict(pm.pfns().start..pm.pfns().end + 1).is_err());
        assert!(pm.evict_pfns(&[pm.pfns().start, pm.pfns().end]).is_err());
        assert!(pm.evict_pfns(&[]).is_err());
        Ok(())
    }

    #[test]
    fn unused_new_page_is_freed() -> Result {
        let pm = vram()?;
        let idx = pm.alloc(PMD_ORDER).ok_or(ENOMEM)?;
        let data = Arc::new(idx, GFP_KERNEL)?;
        // SAFETY: The pages from `idx` were just taken from the free pages.
        let folio = unsafe { pm.new_folio(pm.pfns().start + idx, PMD_ORDER, data)? };
        assert_eq!(folio.pfn(), pm.pfns().start + idx);
        assert_eq!(folio.order(), PMD_ORDER);
        drop(folio);
        assert_eq!(pm.frees.load(Relaxed), 1 << PMD_ORDER);
        assert_eq!(pm.bad_data.load(Relaxed), 0);
        Ok(())
    }

    #[test]
    fn round_trip_through_cpu_faults() -> Result {
        let pm = vram()?;
        let map = on_device(&pm, 16)?;
        assert_eq!(pm.frees.load(Relaxed), 0);
        // The CPU reads every page back through `migrate_to_ram`.
        assert_eq!(bad_bytes(&map, 16)?, 0);
        assert_eq!(pm.cpu_faults.load(Relaxed), 16);
        // Each device page was freed once, with its own data.
        assert_eq!(pm.frees.load(Relaxed), 16);
        assert_eq!(pm.bad_data.load(Relaxed), 0);
        // Back in system memory: no more faults.
        assert_eq!(bad_bytes(&map, 16)?, 0);
        assert_eq!(pm.cpu_faults.load(Relaxed), 16);
        Ok(())
    }

    #[test]
    fn holes_and_partial_ranges() -> Result {
        let pm = vram()?;
        let map = UserMapping::new(8)?;
        // Pages 0..4 touched, 4..8 never: holes migrate as zeroed device pages.
        fill(&map, 4)?;
        assert_eq!(to_device(&pm, &map, 2, 4, Select::SYSTEM)?, 4);
        let mut buf = [0xffu8; 16];
        map.read(5 * PAGE_SIZE, &mut buf)?;
        assert_eq!(buf, [0u8; 16]);
        assert_eq!(bad_bytes(&map, 4)?, 0);
        assert_eq!(pm.cpu_faults.load(Relaxed), 3);
        map.unmap(0, 8)?;
        assert_eq!(pm.frees.load(Relaxed), 4);
        Ok(())
    }

    #[test]
    fn thp_to_a_device_folio_and_back_page_by_page() -> Result {
        let pm = vram()?;
        let pmd_pages = 1usize << PMD_ORDER;
        let pmd_size = pmd_pages * PAGE_SIZE;
        // A PMD-aligned run of pages inside a larger mapping, backed by a THP.
        let map = UserMapping::new(2 * pmd_pages)?;
        let first = ((map.addr(0) + pmd_size - 1) & !(pmd_size - 1)) - map.addr(0);
        let first = first / PAGE_SIZE;
        map.madvise(first, pmd_pages, bindings::MADV_HUGEPAGE)?;
        for i in 0..pmd_pages {
            map.write((first + i) * PAGE_SIZE, &[(i as u8).wrapping_add(1); 64])?;
        }

        let select = Select::SYSTEM | Select::COMPOUND;
        assert_eq!(to_device(&pm, &map, first, pmd_pages, select)?, pmd_pages);
        // The whole THP went to one device folio, the whole device memory.
        assert_eq!(pm.alloc(0), None);
        assert_eq!(pm.frees.load(Relaxed), 0);

        // The CPU touches every page: the device folio is split, then each page comes back.
        let mut buf = [0u8; 64];
        let mut bad = 0;
        for i in 0..pmd_pages {
            map.read((first + i) * PAGE_SIZE, &mut buf)?;
            bad += buf
                .iter()
                .filter(|&&b| b != (i as u8).wrapping_add(1))
                .count();
        }
        assert_eq!(bad, 0);
        // One fault on the PMD, which splits the device folio (a single page is its
        // destination); then the CPU faults on each page, which moves it. Measured on 7.2: the
        // PMD fault itself moves nothing (the core splits the folio and leaves the first page in
        // place), so the first page takes a second fault.
        let faults = pm.cpu_faults.load(Relaxed) as usize;
        let empty = pm.empty_faults.load(Relaxed) as usize;
        assert_eq!(pm.pmd_faults.load(Relaxed), 1);
        assert_eq!(pm.splits.load(Relaxed) as usize, pmd_pages - 1);
        assert!(empty <= 1);
        assert_eq!(faults - empty, pmd_pages);
        assert_eq!(pm.frees.load(Relaxed) as usize, pmd_pages);
        assert_eq!(pm.bad_data.load(Relaxed), 0);
        Ok(())
    }

    #[test]
    fn set_dst_checks_the_order_against_the_entry() -> Result {
        let pm = vram()?;
        let map = UserMapping::new(4)?;
        fill(&map, 1)?;
        let mmap = map.mm().mmap_read_lock();
        let vma = mmap.vma_lookup(map.addr(0)).ok_or(EFAULT)?;
        let select = Select::SYSTEM | Select::COMPOUND;
        let mut mig = Migration::setup(vma, map.addr(0)..map.addr(4), select, pm.owner())?;
        // Page 0 is present, pages 1..4 are holes of a span too short for a huge entry: none
        // can take a huge folio, which C would map by a PMD over the pages after them.
        for i in [0, 1, 3] {
            assert_eq!(mig.entry_pages(i), 1);
            assert_eq!(mig.set_dst(i, SystemFolio::alloc_huge()?), Err(EINVAL));
        }
        // Nor a device folio of PMD size, nor an entry out of range.
        let idx = pm.alloc(PMD_ORDER).ok_or(ENOMEM)?;
        let data = Arc::new(idx, GFP_KERNEL)?;
        // SAFETY: The pages from `idx` were just taken from the free pages.
        let folio = unsafe { pm.new_folio(pm.pfns().start + idx, PMD_ORDER, data)? };
        assert_eq!(mig.set_dst(1, folio), Err(EINVAL));
        assert_eq!(mig.set_dst(4, SystemFolio::alloc()?), Err(EINVAL));
        // The refused folios were released, not leaked into the migration.
        assert_eq!(pm.frees.load(Relaxed), 1 << PMD_ORDER);
        // A single page per entry fits; a second one is refused.
        mig.set_dst(1, SystemFolio::alloc()?)?;
        assert_eq!(mig.set_dst(1, SystemFolio::alloc()?), Err(EBUSY));
        assert_eq!(mig.pages().pages(), 1);
        drop(mmap);
        assert_eq!(bad_bytes(&map, 1)?, 0);
        Ok(())
    }

    #[test]
    fn system_folios_are_zeroed() -> Result {
        // Freed pages are reused first: without zeroing, what one folio held shows in the next.
        for _ in 0..16 {
            let folio = SystemFolio::alloc()?;
            let page = folio.page(0).ok_or(EINVAL)?;
            let mut buf = [0xffu8; 64];
            for off in (0..PAGE_SIZE).step_by(buf.len()) {
                // SAFETY: The folio is new and ours alone; `buf` has room for the bytes.
                unsafe { page.read_raw(buf.as_mut_ptr(), off, buf.len())? };
                assert_eq!(buf, [0u8; 64]);
            }
            // SAFETY: As above.
            unsafe { page.write_raw([0x5au8; 64].as_ptr(), 0, 64)? };
        }
        let huge = SystemFolio::alloc_huge()?;
        let last = huge.page(huge.pages() - 1).ok_or(EINVAL)?;
        let mut buf = [0xffu8; 64];
        // SAFETY: As above.
        unsafe { last.read_raw(buf.as_mut_ptr(), PAGE_SIZE - 64, 64)? };
        assert_eq!(buf, [0u8; 64]);
        Ok(())
    }

    #[test]
    fn evict_without_the_mm() -> Result {
        let pm = vram()?;
        let map = on_device(&pm, 8)?;

        // Two scattered pages by pfn first, then the whole pagemap by range.
        let start = pm.pfns().start;
        assert_eq!(evict(&pm, pm.evict_pfns(&[start + 5, start + 1])?)?, 2);
        assert_eq!(pm.frees.load(Relaxed), 2);
        assert_eq!(evict(&pm, pm.evict(pm.pfns())?)?, 6);
        assert_eq!(pm.frees.load(Relaxed), 8);
        // The data is back in system memory without any CPU fault.
        assert_eq!(bad_bytes(&map, 8)?, 0);
        assert_eq!(pm.cpu_faults.load(Relaxed), 0);
        assert_eq!(pm.bad_data.load(Relaxed), 0);
        Ok(())
    }

    #[test]
    fn munmap_frees_device_pages() -> Result {
        let pm = vram()?;
        let map = on_device(&pm, 8)?;
        map.unmap(0, 8)?;
        assert_eq!(pm.frees.load(Relaxed), 8);
        assert_eq!(pm.cpu_faults.load(Relaxed), 0);
        assert_eq!(pm.bad_data.load(Relaxed), 0);
        Ok(())
    }
}
