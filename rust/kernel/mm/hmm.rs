// SPDX-License-Identifier: GPL-2.0

//! Heterogeneous memory management: reading (and faulting in) the CPU page tables of a range.
//!
//! A device that mirrors a process address space asks [`range_fault`] for the pages behind a
//! range of virtual addresses, within a read section of an [`IntervalNotifier`] covering it. The
//! result is only valid if [`IntervalNotifier::read_retry`] (under the notifier's lock) says no
//! invalidation ran meanwhile; otherwise the caller starts again.
//!
//! C header: [`include/linux/hmm.h`](srctree/include/linux/hmm.h)

use crate::{
    bindings,
    error::to_result,
    mm::{
        mmu_notifier::{
            IntervalNotifier,
            Invalidate,
            Seq, //
        },
        DeviceOwner,
        MmapReadGuard, //
    },
    page::{
        BorrowedPage,
        PAGE_SIZE, //
    },
    prelude::*,
};
use core::ptr::NonNull;

/// How long a caller should keep retrying [`range_fault`] on [`EBUSY`], in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u32 = bindings::HMM_RANGE_DEFAULT_TIMEOUT;

// CAST: The flags are `unsigned long` bit masks; the enum only names them.
const PFN_VALID: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_VALID as c_ulong;
const PFN_WRITE: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_WRITE as c_ulong;
const PFN_ERROR: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_ERROR as c_ulong;
const PFN_FLAGS: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_FLAGS as c_ulong;
const PFN_ORDER_SHIFT: u32 = bindings::hmm_pfn_flags_HMM_PFN_ORDER_SHIFT as u32;
const PFN_REQ_FAULT: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_REQ_FAULT as c_ulong;
const PFN_REQ_WRITE: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_REQ_WRITE as c_ulong;

/// One page of a [`range_fault`]: a request on input, what the CPU maps there on output.
///
/// Wraps the `unsigned long` entries of `hmm_range::hmm_pfns`.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct HmmPfn(c_ulong);

impl HmmPfn {
    /// A request to report the page without faulting it in.
    pub const SNAPSHOT: Self = Self(0);

    /// A request to fault the page in, readable, or writable if `write`.
    #[inline]
    pub const fn request(write: bool) -> Self {
        if write {
            Self(PFN_REQ_FAULT | PFN_REQ_WRITE)
        } else {
            Self(PFN_REQ_FAULT)
        }
    }

    /// The entry of page `pfn` mapped writable, for a page the caller knows that of, which HMM
    /// does not report: a page made exclusive to the device (see
    /// [`make_device_exclusive`](crate::mm::exclusive::make_device_exclusive)).
    #[inline]
    pub const fn writable_page(pfn: usize) -> Self {
        Self((pfn & !PFN_FLAGS) | PFN_VALID | PFN_WRITE)
    }

    /// Whether a page is mapped there (and [`Self::pfn`] is meaningful).
    #[inline]
    pub const fn is_valid(self) -> bool {
        self.0 & PFN_VALID != 0
    }

    /// Whether the CPU may write the page.
    #[inline]
    pub const fn is_writable(self) -> bool {
        self.0 & PFN_WRITE != 0
    }

    /// Whether the address cannot be accessed (e.g. `PROT_NONE`); such a page never faults in.
    #[inline]
    pub const fn is_error(self) -> bool {
        self.0 & PFN_ERROR != 0
    }

    /// The order of the CPU mapping the page is part of: 0 for a 4K PTE, 9 for a 2M PMD on x86.
    ///
    /// The whole naturally aligned block of `1 << order` pages is mapped the same way, so a device
    /// may map it with one large entry.
    #[inline]
    pub const fn map_order(self) -> u32 {
        ((self.0 >> PFN_ORDER_SHIFT) & 0x1f) as u32
    }

    /// How many pages there are from `addr`, where this entry maps a page, to the end of the CPU
    /// mapping of the page: a mapping of order [`Self::map_order`] covers the naturally aligned
    /// block of `1 << order` pages of one folio, every page of it mapped the same way. 1 for a
    /// page mapped by a PTE.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::mm::hmm::HmmPfn;
    ///
    /// assert_eq!(HmmPfn::writable_page(42).pages_to_mapping_end(0x7f00_0000_5000), 1);
    /// ```
    #[inline]
    pub const fn pages_to_mapping_end(self, addr: usize) -> usize {
        let block = 1usize << self.map_order();
        block - (addr / PAGE_SIZE) % block
    }

    /// Whether the page mapped there is the shared zero page (of a private mapping read before it
    /// was written).
    #[inline]
    pub fn is_zero_page(self) -> bool {
        let Some(pfn) = self.pfn() else {
            return false;
        };
        // SAFETY: `is_zero_pfn` compares numbers.
        unsafe { bindings::is_zero_pfn(pfn) }
    }

    /// The page frame number, if a page is mapped.
    #[inline]
    pub const fn pfn(self) -> Option<usize> {
        if self.is_valid() {
            Some(self.0 & !PFN_FLAGS)
        } else {
            None
        }
    }

    /// The page mapped there, if any.
    ///
    /// # Safety
    ///
    /// HMM does not take a reference on the page. The caller must make sure that it stays
    /// allocated for `'a`: for instance by holding the notifier lock under which
    /// [`IntervalNotifier::read_retry`] reported the result still valid, or a page reference.
    #[inline]
    pub unsafe fn page<'a>(self) -> Option<BorrowedPage<'a>> {
        if !self.is_valid() {
            return None;
        }
        // SAFETY: A valid entry holds the pfn of a page with a `struct page`.
        let page = unsafe { bindings::hmm_pfn_to_page(self.0) };
        // SAFETY: The page is valid for `'a` by the safety requirements.
        NonNull::new(page).map(|p| unsafe { BorrowedPage::from_raw(p) })
    }

    /// The owner of the device-private page mapped there, if it is one.
    ///
    /// With [`Request::owner`], the device's own pages are reported as they are instead of being
    /// migrated back to system memory, and this tells them apart.
    ///
    /// # Safety
    ///
    /// As for [`HmmPfn::page`]: the page stays allocated during the call, so that a
    /// device-private page's pagemap stays registered (its `struct page`s go with it).
    #[inline]
    pub unsafe fn device_private_owner(self) -> Option<DeviceOwner> {
        // SAFETY: As for this function; `is_device_private_page` takes a valid page.
        unsafe { self.device_owner(|page| bindings::is_device_private_page(page)) }
    }

    /// The owner of the device-coherent page mapped there, if it is one: device memory the CPU
    /// accesses directly, mapped like system memory.
    ///
    /// # Safety
    ///
    /// As for [`HmmPfn::device_private_owner`].
    #[inline]
    pub unsafe fn device_coherent_owner(self) -> Option<DeviceOwner> {
        // SAFETY: As for this function; `is_device_coherent_page` takes a valid page.
        unsafe { self.device_owner(|page| bindings::is_device_coherent_page(page)) }
    }

    /// The owner of the page mapped there if `is_kind` says it is a device page of that kind.
    ///
    /// # Safety
    ///
    /// As for [`HmmPfn::device_private_owner`]; `is_kind` may be called with a valid page and
    /// returns true only for pages of a pagemap.
    #[inline]
    unsafe fn device_owner(
        self,
        is_kind: impl FnOnce(*const bindings::page) -> bool,
    ) -> Option<DeviceOwner> {
        if !self.is_valid() {
            return None;
        }
        // SAFETY: A valid entry holds the pfn of a page with a `struct page`.
        let page = unsafe { bindings::hmm_pfn_to_page(self.0) };
        // Whether a page is a device page, and of which kind, is fixed at hotplug time.
        if !is_kind(page) {
            return None;
        }
        // SAFETY: The page is a device page, so it has a pagemap, registered while the page is
        // allocated (safety requirements); its owner is set at registration.
        let owner = unsafe { (*bindings::page_pgmap(page)).owner };
        NonNull::new(owner).map(DeviceOwner::from_raw)
    }
}

/// What a [`range_fault`] asks for, for all pages: `(entry & mask) | default` per page.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    default: c_ulong,
    mask: c_ulong,
    owner: Option<DeviceOwner>,
}

impl Request {
    /// Reports what is mapped without faulting anything in.
    pub const SNAPSHOT: Self = Self {
        default: 0,
        mask: 0,
        owner: None,
    };

    /// Faults every page in, readable, or writable if `write`.
    #[inline]
    pub const fn fault(write: bool) -> Self {
        Self {
            default: HmmPfn::request(write).0,
            mask: 0,
            owner: None,
        }
    }

    /// Uses each entry of the pfn array as the request of its page (see [`HmmPfn::request`]).
    pub const PER_PAGE: Self = Self {
        default: 0,
        mask: PFN_REQ_FAULT | PFN_REQ_WRITE,
        owner: None,
    };

    /// Reports the device-private pages of `owner` as they are, instead of faulting them back to
    /// system memory like the pages of other owners.
    #[inline]
    pub const fn owner(mut self, owner: DeviceOwner) -> Self {
        self.owner = Some(owner);
        self
    }
}

/// Reads the CPU page table entries of `pfns.len()` pages from `start`, faulting pages in as
/// `request` asks, into `pfns`.
///
/// The caller holds the mmap read lock of the notifier's address space (`mmap`) and has begun a
/// read section with [`IntervalNotifier::read_begin`] (`seq`); the range must lie in the
/// notifier's span. Only the result of a call that returned `Ok` and whose read section is still
/// valid ([`IntervalNotifier::read_retry`] under the notifier lock) may be used.
///
/// # Errors
///
/// - [`EBUSY`]: an invalidation ran or is running. Release the mmap lock, begin a new read
///   section and try again, up to [`DEFAULT_TIMEOUT_MS`].
/// - [`EFAULT`]: a page asked to fault in has no VMA, or its VMA cannot be accessed (e.g.
///   `PROT_NONE`, or `VM_IO` / `VM_PFNMAP` mappings); or a page fault failed.
/// - [`EPERM`]: a write was asked for a page that is read-only.
/// - [`ENOMEM`]: no memory to fault a page in.
/// - [`EINVAL`]: `start` is not page-aligned, `pfns` is empty, the range is not in the notifier's
///   span, or `mmap` is not the lock of the notifier's address space.
///
/// # Examples
///
/// ```
/// use kernel::mm::{
///     hmm::{
///         self,
///         HmmPfn,
///         Request, //
///     },
///     mmu_notifier::{
///         IntervalNotifier,
///         Invalidate, //
///     },
///     MmWithUser, //
/// };
/// use kernel::sync::Mutex;
///
/// /// Looks up the writable pages behind `pfns.len()` pages from `start`.
/// fn mirror<T: Invalidate>(
///     mm: &MmWithUser,
///     notifier: &IntervalNotifier<T>,
///     lock: &Mutex<()>,
///     start: usize,
///     pfns: &mut [HmmPfn],
/// ) -> Result {
///     loop {
///         let seq = notifier.read_begin();
///         let res = hmm::range_fault(notifier, &mm.mmap_read_lock(), &seq, start, pfns,
///                                    Request::fault(true));
///         match res {
///             Err(e) if e == EBUSY => continue,
///             res => res?,
///         }
///         let _guard = lock.lock();
///         if notifier.read_retry(&seq) {
///             continue;
///         }
///         // Program the device with `pfns` here, under the lock.
///         return Ok(());
///     }
/// }
/// ```
pub fn range_fault<T: Invalidate>(
    notifier: &IntervalNotifier<T>,
    mmap: &MmapReadGuard<'_>,
    seq: &Seq,
    start: usize,
    pfns: &mut [HmmPfn],
    request: Request,
) -> Result {
    let end = pfns
        .len()
        .checked_mul(PAGE_SIZE)
        .and_then(|len| start.checked_add(len))
        .ok_or(EINVAL)?;
    let span = notifier.span();
    if pfns.is_empty() || start % PAGE_SIZE != 0 || start < span.start || end > span.end {
        return Err(EINVAL);
    }
    if !core::ptr::eq(mmap.mm.as_raw(), notifier.mm().as_raw()) {
        return Err(EINVAL);
    }
    let mut range = bindings::hmm_range {
        notifier: notifier.as_raw(),
        notifier_seq: seq.0,
        start,
        end,
        // CAST: `HmmPfn` is a transparent wrapper of `unsigned long`.
        hmm_pfns: pfns.as_mut_ptr().cast::<c_ulong>(),
        default_flags: request.default,
        pfn_flags_mask: request.mask,
        dev_private_owner: request
            .owner
            .map_or(core::ptr::null_mut(), DeviceOwner::as_ptr),
    };
    // SAFETY: `range` describes `pfns.len()` pages, all of which have an entry in `pfns`; the
    // notifier is inserted into the address space whose mmap lock `mmap` holds for reading.
    to_result(unsafe { bindings::hmm_range_fault(&mut range) })
}

#[cfg(CONFIG_RUST_MM_KUNIT_TEST)]
#[macros::kunit_tests(rust_mm_hmm)]
mod tests {
    use super::*;
    use crate::mm::test_mm::{
        Recorder,
        UserMapping, //
    };

    fn mirror(map: &UserMapping) -> Result<Pin<KBox<IntervalNotifier<Recorder>>>> {
        Recorder::insert(map, 0, map.len() / PAGE_SIZE)
    }

    /// Faults `pfns.len()` pages from page `first` of `map`, retrying on `EBUSY` as the callers
    /// are told to, and checks the result is still valid.
    fn fault(
        map: &UserMapping,
        n: &IntervalNotifier<Recorder>,
        first: usize,
        pfns: &mut [HmmPfn],
        request: Request,
    ) -> Result {
        for _ in 0..100 {
            let seq = n.read_begin();
            let res = range_fault(
                n,
                &map.mm().mmap_read_lock(),
                &seq,
                map.addr(first),
                pfns,
                request,
            );
            if res == Err(EBUSY) {
                continue;
            }
            res?;
            let _guard = n.log.lock();
            if !n.read_retry(&seq) {
                return Ok(());
            }
        }
        Err(ETIMEDOUT)
    }

    #[test]
    fn touched_pages_are_valid() -> Result {
        let map = UserMapping::new(4)?;
        map.write(0, &[7u8; 2 * 4096])?;
        let n = mirror(&map)?;

        let mut pfns = [HmmPfn::default(); 4];
        fault(&map, &n, 0, &mut pfns, Request::SNAPSHOT)?;
        for pfn in &pfns[..2] {
            assert!(pfn.is_valid());
            assert!(pfn.is_writable());
            assert!(pfn.pfn().is_some());
            // SAFETY: The test's pages stay mapped: nothing unmaps or migrates them.
            assert_eq!(unsafe { pfn.device_private_owner() }, None);
        }
        // Untouched pages are not faulted in by a snapshot.
        for pfn in &pfns[2..] {
            assert!(!pfn.is_valid());
            assert_eq!(pfn.pfn(), None);
        }
        assert_ne!(pfns[0].pfn(), pfns[1].pfn());

        // The page seen by HMM holds what the CPU wrote.
        // SAFETY: The mapping is not changed during the test, so the page stays allocated.
        let page = unsafe { pfns[0].page() }.ok_or(EINVAL)?;
        let mut byte = [0u8; 1];
        // SAFETY: `byte` is valid for writes of one byte.
        unsafe { page.read_raw(byte.as_mut_ptr(), 100, 1)? };
        assert_eq!(byte[0], 7);
        Ok(())
    }

    #[test]
    fn faults_in_untouched_pages() -> Result {
        let map = UserMapping::new(4)?;
        let n = mirror(&map)?;

        let mut pfns = [HmmPfn::default(); 4];
        fault(&map, &n, 0, &mut pfns, Request::fault(true))?;
        assert!(pfns.iter().all(|p| p.is_valid() && p.is_writable()));

        // Per-page requests: only the second page is asked for.
        let map2 = UserMapping::new(2)?;
        let n2 = mirror(&map2)?;
        let mut pfns = [HmmPfn::SNAPSHOT, HmmPfn::request(false)];
        fault(&map2, &n2, 0, &mut pfns, Request::PER_PAGE)?;
        assert!(!pfns[0].is_valid());
        assert!(pfns[1].is_valid());
        Ok(())
    }

    #[test]
    fn a_huge_mapping_is_one_block_of_pages() -> Result {
        let order = bindings::PMD_SHIFT - crate::page::PAGE_SHIFT as u32;
        let block = 1usize << order;
        let map = UserMapping::new(2 * block)?;
        let first = (map.addr(0).next_multiple_of(block * PAGE_SIZE) - map.addr(0)) / PAGE_SIZE;
        map.madvise(0, 2 * block, bindings::MADV_HUGEPAGE)?;
        // One write fault maps the whole aligned block with a huge page.
        map.write(first * PAGE_SIZE, &[1u8])?;
        let n = mirror(&map)?;
        let mut pfns = KVec::from_elem(HmmPfn::SNAPSHOT, block, GFP_KERNEL)?;
        fault(&map, &n, first, &mut pfns, Request::SNAPSHOT)?;
        assert!(pfns.iter().all(|p| p.is_valid() && p.map_order() == order));
        assert_eq!(pfns[0].pages_to_mapping_end(map.addr(first)), block);
        assert_eq!(pfns[5].pages_to_mapping_end(map.addr(first + 5)), block - 5);
        Ok(())
    }

    #[test]
    fn read_of_untouched_page_is_the_zero_page() -> Result {
        let map = UserMapping::new(2)?;
        map.write(PAGE_SIZE, &[1u8])?;
        let n = mirror(&map)?;

        // A read fault of a private anonymous page never written maps the shared zero page.
        let mut pfns = [HmmPfn::default(); 2];
        fault(&map, &n, 0, &mut pfns, Request::fault(false))?;
        assert!(pfns[0].is_valid() && pfns[0].is_zero_page());
        assert!(pfns[1].is_valid() && !pfns[1].is_zero_page());
        // Nothing mapped is no zero page.
        assert!(!HmmPfn::SNAPSHOT.is_zero_page());
        Ok(())
    }

    #[test]
    fn hole_is_efault() -> Result {
        let map = UserMapping::new(4)?;
        let n = mirror(&map)?;
        map.unmap(2, 1)?;

        let mut pfns = [HmmPfn::default(); 4];
        assert_eq!(
            fault(&map, &n, 0, &mut pfns, Request::fault(false)),
            Err(EFAULT)
        );
        // A snapshot of the hole reports it as an error entry, without failing.
        let mut pfns = [HmmPfn::default(); 1];
        let res = fault(&map, &n, 2, &mut pfns, Request::SNAPSHOT);
        assert!(res == Err(EFAULT) || (res.is_ok() && !pfns[0].is_valid()));
        Ok(())
    }

    #[test]
    fn rejects_bad_ranges() -> Result {
        let map = UserMapping::new(4)?;
        let n = mirror(&map)?;
        let seq = n.read_begin();
        let mmap = map.mm().mmap_read_lock();
        let mut pfns = [HmmPfn::default(); 4];
        let req = Request::SNAPSHOT;
        // Beyond the notifier's span, misaligned, empty.
        assert_eq!(
            range_fault(&n, &mmap, &seq, map.addr(1), &mut pfns, req),
            Err(EINVAL)
        );
        assert_eq!(
            range_fault(&n, &mmap, &seq, map.addr(0) + 1, &mut pfns[..1], req),
            Err(EINVAL)
        );
        assert_eq!(
            range_fault(&n, &mmap, &seq, map.addr(0), &mut pfns[..0], req),
            Err(EINVAL)
        );
        Ok(())
    }
}
