// SPDX-License-Identifier: GPL-2.0

//! Device memory migration.
//!
//! Moves the pages of a range of a VMA between system memory and device-private memory
//! (`migrate_vma_*`), or the device-private pages of a device back to system memory without going
//! through an address space (`migrate_device_*`, used for eviction).
//!
//! A [`Migration`] goes through the C protocol in order: setup collects, unmaps and locks the
//! source pages; the driver gives each source it wants to move a destination page, with the data
//! copied; [`Migration::pages`] moves the mappings to the destinations; dropping the migration
//! (or its [`Migrated`] result) finalizes it, restoring the sources that did not move and
//! releasing the pages. A migration cannot be finalized before setup nor left unfinalized.
//!
//! C header: [`include/linux/migrate.h`](srctree/include/linux/migrate.h)

use crate::{
    alloc::{
        flags::GFP_KERNEL,
        KVec, //
    },
    bindings,
    error::to_result,
    mm::{
        virt::{
            self,
            VmaRef, //
        },
        DeviceOwner,
    },
    page::{
        BorrowedPage,
        PAGE_SIZE, //
    },
    prelude::*,
};
use core::{
    marker::PhantomData,
    ops::Range,
    ptr::NonNull, //
};

// CAST: The C flags are small `unsigned long` bit masks.
const MPFN_VALID: c_ulong = bindings::MIGRATE_PFN_VALID as c_ulong;
const MPFN_MIGRATE: c_ulong = bindings::MIGRATE_PFN_MIGRATE as c_ulong;
const MPFN_WRITE: c_ulong = bindings::MIGRATE_PFN_WRITE as c_ulong;
const MPFN_COMPOUND: c_ulong = bindings::MIGRATE_PFN_COMPOUND as c_ulong;
const MPFN_SHIFT: u32 = bindings::MIGRATE_PFN_SHIFT;

/// Which pages of a VMA range [`Migration::setup`] collects.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Select(c_ulong);

impl Select {
    /// System memory pages (and holes, which can be filled with device pages).
    pub const SYSTEM: Self =
        Self(bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_SYSTEM as c_ulong);
    /// Device-private pages of the migration's owner.
    pub const DEVICE_PRIVATE: Self =
        Self(bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_DEVICE_PRIVATE as c_ulong);
    /// Device-coherent pages of the migration's owner.
    pub const DEVICE_COHERENT: Self =
        Self(bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_DEVICE_COHERENT as c_ulong);
    /// Collects a PMD-mapped large folio (or an aligned PMD-sized hole) as one entry covering
    /// [`PMD_ORDER`] pages, which can move to a destination folio of that order; without it,
    /// large folios are split first.
    pub const COMPOUND: Self =
        Self(bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_COMPOUND as c_ulong);
}

/// The order of a PMD-sized folio, the size of a [`Select::COMPOUND`] entry.
pub const PMD_ORDER: u32 = bindings::PMD_SHIFT - crate::page::PAGE_SHIFT as u32;

/// The order of a PUD-sized mapping (1G on x86), as [`HmmPfn::map_order`] reports it.
///
/// [`HmmPfn::map_order`]: crate::mm::hmm::HmmPfn::map_order
pub const PUD_ORDER: u32 = bindings::PUD_SHIFT - crate::page::PAGE_SHIFT as u32;

impl core::ops::BitOr for Select {
    type Output = Self;

    #[inline]
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// A source entry of a [`Migration`]: the page found there and whether it can move.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MigratePfn(c_ulong);

impl MigratePfn {
    /// Whether a page is there; a hole (never touched, or unmapped) has none.
    #[inline]
    pub const fn has_page(self) -> bool {
        self.0 & MPFN_VALID != 0
    }

    /// Whether the entry was collected and can be given a destination.
    ///
    /// A hole of an anonymous VMA can migrate too: its destination is mapped fresh.
    #[inline]
    pub const fn can_migrate(self) -> bool {
        self.0 & MPFN_MIGRATE != 0
    }

    /// Whether the source was mapped writable.
    #[inline]
    pub const fn is_writable(self) -> bool {
        self.0 & MPFN_WRITE != 0
    }

    /// Whether the source is the head of a large folio.
    #[inline]
    pub const fn is_compound(self) -> bool {
        self.0 & MPFN_COMPOUND != 0
    }

    /// The page frame number of the source page, if there is one.
    #[inline]
    pub const fn pfn(self) -> Option<usize> {
        if self.has_page() {
            Some(self.0 >> MPFN_SHIFT)
        } else {
            None
        }
    }
}

/// A destination of a [`Migration`]: a locked folio, with one reference that the migration takes.
///
/// Implemented by [`SystemFolio`] and by the new device-private folios of
/// [`Pagemap`](crate::mm::pagemap::Pagemap).
///
/// # Safety
///
/// [`Destination::into_locked_folio`] returns the first page of a valid folio of order
/// [`Destination::order`] that is locked and unmapped, and gives up one reference to it to the
/// caller.
pub unsafe trait Destination {
    /// The order of the folio.
    fn order(&self) -> u32;

    /// The first page and the order of the locked folio whose reference moves into the
    /// migration.
    fn into_locked_folio(self) -> (NonNull<bindings::page>, u32);
}

/// A new system memory folio, locked, for a migration back to system memory: a single page, or
/// a PMD-sized folio for a compound entry ([`SystemFolio::alloc_huge`]).
///
/// Dropping it unused unlocks and frees it.
///
/// # Invariants
///
/// `page` is the first page of a locked folio of `1 << order` pages that this object holds one
/// reference to.
pub struct SystemFolio {
    page: NonNull<bindings::page>,
    order: u32,
}

impl SystemFolio {
    /// Allocates and locks a zeroed, movable system memory page.
    ///
    /// Zeroed so that no stale kernel data reaches the process whatever the caller copies into
    /// it before giving it to a migration.
    pub fn alloc() -> Result<Self> {
        // SAFETY: `__GFP_ZERO` writes all of the page.
        unsafe { Self::alloc_order(0, bindings::__GFP_ZERO) }
    }

    /// Allocates and locks a zeroed, movable folio of [`PMD_ORDER`], to take a compound entry
    /// whole.
    ///
    /// It may reclaim or compact memory to find one, and fails with [`ENOMEM`] without a warning:
    /// a caller that can falls back to single pages then.
    pub fn alloc_huge() -> Result<Self> {
        // SAFETY: `__GFP_ZERO` writes all of the folio.
        unsafe { Self::alloc_order(PMD_ORDER, bindings::__GFP_ZERO) }
    }

    /// Allocates and locks a movable system memory page as [`SystemFolio::alloc`] does, but not
    /// zeroed: for a copy that writes all of it, which would otherwise write it twice.
    ///
    /// # Safety
    ///
    /// The caller writes all of the page before giving the folio to a migration: until then it
    /// holds stale kernel data, which the process would see.
    pub unsafe fn alloc_unzeroed() -> Result<Self> {
        // SAFETY: The safety requirements.
        unsafe { Self::alloc_order(0, 0) }
    }

    /// Allocates and locks a folio as [`SystemFolio::alloc_huge`] does, but not zeroed.
    ///
    /// # Safety
    ///
    /// As for [`SystemFolio::alloc_unzeroed`], for every page of the folio.
    pub unsafe fn alloc_huge_unzeroed() -> Result<Self> {
        // SAFETY: The safety requirements.
        unsafe { Self::alloc_order(PMD_ORDER, 0) }
    }

    /// Allocates and locks a folio of `order`, a single page or one of [`PMD_ORDER`], with
    /// `zero` (`__GFP_ZERO` or nothing) added to the allocation flags.
    ///
    /// # Safety
    ///
    /// Unless `zero` is `__GFP_ZERO`, the requirements of [`SystemFolio::alloc_unzeroed`].
    unsafe fn alloc_order(order: u32, zero: bindings::gfp_t) -> Result<Self> {
        let gfp = bindings::GFP_HIGHUSER_MOVABLE | zero;
        if order == 0 {
            // SAFETY: Allocating an order-0 page has no requirements.
            let page = unsafe { bindings::alloc_pages(gfp, 0) };
            // SAFETY: The page is new: nobody else can hold its lock.
            return unsafe { Self::lock(page, 0) };
        }
        // SAFETY: Allocating a folio has no requirements.
        let folio = unsafe { bindings::folio_alloc(gfp | bindings::__GFP_NOWARN, order) };
        if folio.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `folio` is a valid folio.
        let page = unsafe { bindings::folio_page(folio, 0) };
        // SAFETY: The folio is new: nobody else can hold its lock.
        unsafe { Self::lock(page, order) }
    }

    /// # Safety
    ///
    /// `page` is null or the first page of a new folio of `1 << order` pages, whose one reference
    /// the caller gives up.
    unsafe fn lock(page: *mut bindings::page, order: u32) -> Result<Self> {
        let page = NonNull::new(page).ok_or(ENOMEM)?;
        // SAFETY: The folio is new (safety requirements); locking its first page locks it.
        unsafe { bindings::lock_page(page.as_ptr()) };
        // INVARIANT: The folio is locked and its only reference is ours.
        Ok(Self { page, order })
    }

    /// The number of pages of the folio.
    #[inline]
    pub fn pages(&self) -> usize {
        1 << self.order
    }

    /// Page `n` of the folio, to copy the data into; `None` if `n` is out of the folio.
    #[inline]
    pub fn page(&self, n: usize) -> Option<BorrowedPage<'_>> {
        if n >= self.pages() {
            return None;
        }
        // SAFETY: By the type invariants the folio is allocated while `self` lives, and its pages
        // are consecutive `struct page`s (`folio_page`).
        Some(unsafe { BorrowedPage::from_raw(NonNull::new_unchecked(self.page.as_ptr().add(n))) })
    }
}

// SAFETY: By the type invariants the folio is locked and referenced; `forget` gives the reference
// up.
unsafe impl Destination for SystemFolio {
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

impl Drop for SystemFolio {
    fn drop(&mut self) {
        // SAFETY: By the type invariants the folio is locked and we hold a reference; dropping
        // the reference of the first page drops the folio's.
        unsafe {
            bindings::unlock_page(self.page.as_ptr());
            bindings::put_page(self.page.as_ptr());
        }
    }
}

/// What the source pages are collected from.
enum Source<'a> {
    /// A range of a VMA, under the mmap lock of its address space.
    Vma(bindings::migrate_vma, PhantomData<&'a VmaRef>),
    /// Device pages by pfn, without an address space.
    Device,
}

/// A migration whose source pages are collected (unmapped and locked); see the [module
/// documentation](self).
///
/// # Invariants
///
/// The migration was set up with `src` and `dst` (`npages` entries each) and is not finalized:
/// it is finalized exactly once, when dropped. `dst` entries are 0 or hold a locked page whose
/// reference the migration owns. `moved` tells whether the mappings were moved
/// ([`Migration::pages`]).
pub struct Migration<'a> {
    source: Source<'a>,
    src: KVec<c_ulong>,
    dst: KVec<c_ulong>,
    moved: bool,
}

impl<'a> Migration<'a> {
    fn zeroed_pfns(npages: usize) -> Result<KVec<c_ulong>> {
        let mut v = KVec::with_capacity(npages, GFP_KERNEL)?;
        v.resize(npages, 0, GFP_KERNEL)?;
        Ok(v)
    }

    /// Collects the pages of `range` of `vma` that `select` names, as the device `owner`.
    ///
    /// `vma` borrows the mmap read lock of its address space, which must stay held until the
    /// migration is dropped. `range` must be page-aligned, non-empty and inside `vma`
    /// ([`EINVAL`] otherwise).
    pub fn setup(
        vma: &'a VmaRef,
        range: Range<usize>,
        select: Select,
        owner: DeviceOwner,
    ) -> Result<Self> {
        if range.start >= range.end
            || range.start % PAGE_SIZE != 0
            || range.end % PAGE_SIZE != 0
            || range.start < vma.start()
            || range.end > vma.end()
        {
            return Err(EINVAL);
        }
        // SAFETY: `vma` is valid under the mmap lock that its borrow holds.
        unsafe { Self::setup_raw(vma.as_ptr(), range, select, owner, core::ptr::null_mut()) }
    }

    /// Sets up a VMA migration.
    ///
    /// # Safety
    ///
    /// `vma` is valid and its address space's mmap lock (or the VMA lock, in a fault) is held for
    /// `'a`; `range` is page-aligned and inside it; `fault_page` is null or the locked page of the
    /// CPU fault being handled.
    pub(crate) unsafe fn setup_raw(
        vma: *mut bindings::vm_area_struct,
        range: Range<usize>,
        select: Select,
        owner: DeviceOwner,
        fault_page: *mut bindings::page,
    ) -> Result<Self> {
        let npages = (range.end - range.start) / PAGE_SIZE;
        let mut src = Self::zeroed_pfns(npages)?;
        let mut dst = Self::zeroed_pfns(npages)?;
        let mut args = bindings::migrate_vma {
            vma,
            dst: dst.as_mut_ptr(),
            src: src.as_mut_ptr(),
            cpages: 0,
            npages: 0,
            start: range.start,
            end: range.end,
            pgmap_owner: owner.as_ptr(),
            flags: select.0,
            fault_page,
        };
        // SAFETY: `args` describes `npages` entries in both arrays, and the safety requirements
        // cover the VMA, the lock and the fault page.
        to_result(unsafe { bindings::migrate_vma_setup(&mut args) })?;
        // INVARIANT: Setup succeeded; the arrays are heap buffers that do not move with `self`.
        Ok(Self {
            source: Source::Vma(args, PhantomData),
            src,
            dst,
            moved: false,
        })
    }

    /// Collects the device pages `pfns` for migration, without an address space.
    ///
    /// # Safety
    ///
    /// Each pfn is a page of a device-private pagemap that stays registered until the migration
    /// is dropped.
    pub(crate) unsafe fn setup_device(pfns: Range<usize>) -> Result<Migration<'static>> {
        let npages = pfns.end.checked_sub(pfns.start).ok_or(EINVAL)?;
        if npages == 0 {
            return Err(EINVAL);
        }
        let mut src = Self::zeroed_pfns(npages)?;
        let dst = Self::zeroed_pfns(npages)?;
        // SAFETY: `src` has `npages` entries; the pfns are device pages by the safety
        // requirements.
        to_result(unsafe { bindings::migrate_device_range(src.as_mut_ptr(), pfns.start, npages) })?;
        // INVARIANT: Setup succeeded.
        Ok(Migration {
            source: Source::Device,
            src,
            dst,
            moved: false,
        })
    }

    /// Collects the device pages `pfns` (in any order, not necessarily contiguous) for migration,
    /// without an address space.
    ///
    /// # Safety
    ///
    /// As for [`Migration::setup_device`].
    pub(crate) unsafe fn setup_device_pfns(pfns: &[usize]) -> Result<Migration<'static>> {
        if pfns.is_empty() {
            return Err(EINVAL);
        }
        let mut src = KVec::with_capacity(pfns.len(), GFP_KERNEL)?;
        src.extend_from_slice(pfns, GFP_KERNEL)?;
        let dst = Self::zeroed_pfns(pfns.len())?;
        // SAFETY: `src` holds `pfns.len()` device pfns, as `migrate_device_pfns` expects.
        to_result(unsafe { bindings::migrate_device_pfns(src.as_mut_ptr(), pfns.len()) })?;
        // INVARIANT: Setup succeeded.
        Ok(Migration {
            source: Source::Device,
            src,
            dst,
            moved: false,
        })
    }

    /// The number of pages of the migration.
    #[inline]
    pub fn npages(&self) -> usize {
        self.src.len()
    }

    /// The number of source entries collected, which can be given a destination.
    pub fn cpages(&self) -> usize {
        self.src
            .iter()
            .filter(|&&s| MigratePfn(s).can_migrate())
            .count()
    }

    /// Source entry `i`; a default (empty) entry if `i` is out of range.
    #[inline]
    pub fn src(&self, i: usize) -> MigratePfn {
        MigratePfn(self.src.get(i).copied().unwrap_or(0))
    }

    /// The number of pages that entry `i` covers: `1 << PMD_ORDER` for a compound entry (the
    /// entries it covers after the first are empty), 1 otherwise.
    #[inline]
    pub fn entry_pages(&self, i: usize) -> usize {
        if self.src(i).is_compound() {
            1 << PMD_ORDER
        } else {
            1
        }
    }

    /// Page `n` of the system memory source of entry `i` (`n` is 0 unless the entry is
    /// compound), to copy its data from.
    ///
    /// `None` for holes, entries that cannot migrate, `n` out of the entry, and device pages
    /// (which have no kernel mapping: the driver reads those from its own memory, by pfn).
    #[inline]
    pub fn system_page(&self, i: usize, n: usize) -> Option<BorrowedPage<'_>> {
        let src = self.src(i);
        if !src.can_migrate() || n >= self.entry_pages(i) {
            return None;
        }
        // SAFETY: The entry holds the valid pfn of a folio of `entry_pages(i)` pages.
        let page = unsafe { bindings::pfn_to_page(src.pfn()? + n) };
        // SAFETY: `page` is a valid `struct page`.
        if unsafe { bindings::is_zone_device_page(page) } {
            return None;
        }
        // SAFETY: A collected source page is locked and referenced by the migration until it is
        // finalized, which happens after the borrow of `self` ends.
        NonNull::new(page).map(|p| unsafe { BorrowedPage::from_raw(p) })
    }

    /// The pfn of page `n` of entry `i` if its source is a device page (of the migration's owner,
    /// e.g. in the memory of a peer device), to copy its data from device to device.
    ///
    /// `None` for holes, entries that cannot migrate, `n` out of the entry, and system pages. The
    /// page stays locked, and its device memory registered, while the migration lives.
    #[inline]
    pub fn device_pfn(&self, i: usize, n: usize) -> Option<usize> {
        let src = self.src(i);
        if !src.can_migrate() || n >= self.entry_pages(i) {
            return None;
        }
        let pfn = src.pfn()? + n;
        // SAFETY: The entry holds the valid pfn of a folio of `entry_pages(i)` pages.
        let page = unsafe { bindings::pfn_to_page(pfn) };
        // SAFETY: `page` is a valid `struct page`.
        unsafe { bindings::is_zone_device_page(page) }.then_some(pfn)
    }

    /// Gives source entry `i` its destination, with the data copied into it.
    ///
    /// A compound entry can take a folio of [`PMD_ORDER`]. In a migration that
    /// [splits](Migration::can_split), it can take a single page instead, as can each entry it
    /// covers (up to `i + entry_pages(i)`): the source is then split and each page moves to its
    /// own destination. Every other entry takes a single page.
    ///
    /// Fails with [`EINVAL`] if `i` is out of range, for a folio whose order does not fit the
    /// entry, and for a single page on a compound entry of a migration that cannot split it;
    /// with [`EBUSY`] if the entry already has a destination or is covered by a compound entry
    /// given a whole folio (or, for such a folio, if an entry it covers has one). `dst` is
    /// released then. A destination given to an entry that cannot migrate is released at
    /// finalization.
    ///
    /// # Examples
    ///
    /// A huge folio fits only a compound entry:
    ///
    /// ```
    /// use kernel::mm::migrate::{
    ///     Migration,
    ///     SystemFolio, //
    /// };
    ///
    /// fn one_page(mig: &mut Migration<'_>) -> Result {
    ///     if mig.entry_pages(0) == 1 {
    ///         assert_eq!(mig.set_dst(0, SystemFolio::alloc_huge()?), Err(EINVAL));
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn set_dst(&mut self, i: usize, dst: impl Destination) -> Result {
        let src = self.src(i);
        self.check_dst(i, dst.order())?;
        let (page, order) = dst.into_locked_folio();
        // SAFETY: `page` is a valid page.
        let pfn = unsafe { bindings::page_to_pfn(page.as_ptr()) };
        let mut entry = (pfn << MPFN_SHIFT) | MPFN_VALID;
        if order > 0 {
            entry |= MPFN_COMPOUND;
        }
        if let Source::Vma(args, _) = &self.source {
            // The destination is mapped writable where the source was, or, for a hole, where the
            // VMA allows writes.
            // SAFETY: The VMA is valid, under the mmap lock, while the migration lives.
            let vma_flags = unsafe { VmaRef::from_raw(args.vma) }.flags();
            if src.is_writable() || (!src.has_page() && vma_flags & virt::flags::WRITE != 0) {
                entry |= MPFN_WRITE;
            }
        }
        // INVARIANT: The entry holds a locked page whose reference is the migration's, of an
        // order that `check_dst` found to fit it.
        self.dst[i] = entry;
        Ok(())
    }

    /// Checks that entry `i` can take a destination folio of `order`; see
    /// [`Migration::set_dst`].
    ///
    /// The C side trusts the order it is given: a folio of [`PMD_ORDER`] on an entry that is not
    /// compound would be mapped by a PMD over whatever follows, or past the end of the arrays.
    fn check_dst(&self, i: usize, order: u32) -> Result {
        if *self.dst.get(i).ok_or(EINVAL)? != 0 {
            return Err(EBUSY);
        }
        let pages = self.entry_pages(i);
        if order > 0 {
            if order != PMD_ORDER || pages != 1 << PMD_ORDER || i + pages > self.npages() {
                return Err(EINVAL);
            }
            if self.dst[i + 1..i + pages].iter().any(|&d| d != 0) {
                return Err(EBUSY);
            }
            return Ok(());
        }
        if pages > 1 && !self.can_split() {
            return Err(EINVAL);
        }
        // An entry covered by a compound entry has no source of its own; it moves only when the
        // compound one is split, not when that one takes a whole folio.
        if !self.src(i).has_page() {
            let first = i.saturating_sub((1 << PMD_ORDER) - 1);
            if let Some(head) = (first..i).rev().find(|&h| self.src(h).is_compound()) {
                if head + self.entry_pages(head) > i && MigratePfn(self.dst[head]).is_compound() {
                    return Err(EBUSY);
                }
            }
        }
        Ok(())
    }

    /// Whether a compound entry can move to single pages, its source being split: only in a
    /// migration of a VMA range. Without an address space, a compound entry moves only to a
    /// folio of its size.
    #[inline]
    pub fn can_split(&self) -> bool {
        matches!(self.source, Source::Vma(..))
    }

    /// Moves the mappings of the entries that have a destination; see [`Migrated`].
    pub fn pages(mut self) -> Migrated<'a> {
        let npages = self.npages();
        match &mut self.source {
            // SAFETY: The migration is set up and not finalized (type invariants).
            Source::Vma(args, _) => unsafe { bindings::migrate_vma_pages(args) },
            // SAFETY: As above; both arrays have `npages` entries.
            Source::Device => unsafe {
                bindings::migrate_device_pages(self.src.as_mut_ptr(), self.dst.as_mut_ptr(), npages)
            },
        }
        // INVARIANT: The mappings moved.
        self.moved = true;
        Migrated(self)
    }
}

impl Drop for Migration<'_> {
    fn drop(&mut self) {
        if !self.moved {
            // Finalization would map the destinations, which never got the sources' state:
            // release them, so that every source is restored.
            for dst in self.dst.iter_mut() {
                if let Some(pfn) = MigratePfn(*dst).pfn() {
                    // SAFETY: By the type invariants a set entry holds a locked page whose
                    // reference is ours; releasing the first page of a folio releases the folio.
                    unsafe {
                        let page = bindings::pfn_to_page(pfn);
                        bindings::unlock_page(page);
                        bindings::put_page(page);
                    }
                    *dst = 0;
                }
            }
        }
        let npages = self.npages();
        match &mut self.source {
            // SAFETY: The migration is set up and not finalized yet (type invariants); this is
            // the only place that finalizes it.
            Source::Vma(args, _) => unsafe { bindings::migrate_vma_finalize(args) },
            // SAFETY: As above; both arrays have `npages` entries.
            Source::Device => unsafe {
                bindings::migrate_device_finalize(
                    self.src.as_mut_ptr(),
                    self.dst.as_mut_ptr(),
                    npages,
                )
            },
        }
    }
}

/// A migration after [`Migration::pages`]: tells which entries moved, finalizes when dropped.
pub struct Migrated<'a>(Migration<'a>);

impl Migrated<'_> {
    /// Whether entry `i` now maps its destination.
    #[inline]
    pub fn migrated(&self, i: usize) -> bool {
        // `migrate_*_pages` clears the flag of every entry that did not move.
        self.0.src(i).can_migrate()
    }

    /// The number of compound entries that moved whole, to a folio of their size.
    pub fn whole_compound(&self) -> usize {
        // A compound entry given single pages is split: it loses the flag.
        self.entries()
            .filter(|&i| self.migrated(i) && self.0.src(i).is_compound())
            .count()
    }

    /// The number of pages that moved (a compound entry counts all its pages).
    pub fn pages(&self) -> usize {
        self.entries()
            .filter(|&i| self.migrated(i))
            .map(|i| self.0.entry_pages(i))
            .sum()
    }

    /// The index of each entry that is not covered by a compound entry before it (those are
    /// empty): one step a folio, not one a page.
    fn entries(&self) -> impl Iterator<Item = usize> + '_ {
        let npages = self.0.npages();
        core::iter::successors(Some(0), move |&i| Some(i + self.0.entry_pages(i)))
            .take_while(move |&i| i < npages)
    }
}
