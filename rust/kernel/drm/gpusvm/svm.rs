// SPDX-License-Identifier: GPL-2.0

//! The GPU SVM object: notifiers, ranges, their pages, and invalidation.

use super::ChunkSizes;
use crate::{
    mm::{
        hmm::{
            self,
            HmmPfn,
            Request, //
        },
        mmu_notifier::{
            Event,
            IntervalNotifier,
            Invalidate,
            NotifierRange,
            PendingSeq,
            Seq,
            SeqSet,
            WouldBlock, //
        },
        virt,
        DeviceOwner,
        Mm,
        MmWithUser, //
    },
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        aref::ARef,
        new_mutex,
        new_rwsem,
        rwsem::ReadGuard,
        Arc,
        Mutex,
        RwSemaphore, //
    },
};
use core::{
    cell::UnsafeCell,
    ops, //
};

/// How many times [`GpuSvm::get_pages`] starts again when invalidations keep racing with it.
const GET_PAGES_RETRIES: u32 = 64;

/// The driver side of a [`GpuSvm`].
pub trait Driver: Send + Sync + Sized {
    /// Stops all device use of `span` of `range`: zaps its device page table entries and flushes
    /// the device TLB, so that the device can no longer reach the pages.
    ///
    /// Called from the mmu notifier with the notifier lock held for writing: it must not sleep on
    /// memory allocation nor take locks that are held around allocations.
    fn invalidate(&self, range: &Range<Self>, span: ops::Range<usize>, event: Event);
}

/// The notifier lock of a [`GpuSvm`] held for reading: no invalidation runs meanwhile, so
/// device page table entries can be bound (see [`GpuSvm::pages_valid`]).
pub struct NotifierReadGuard<'a>(ReadGuard<'a, ()>);

/// State protected by the notifier lock of the [`GpuSvm`] it belongs to.
///
/// # Invariants
///
/// The contents are only accessed with that lock held: shared for `&T`, exclusive for `&mut T`.
struct NotifierLocked<T>(UnsafeCell<T>);

// SAFETY: Access is serialised by the notifier lock (type invariants).
unsafe impl<T: Send> Send for NotifierLocked<T> {}

// SAFETY: Shared access needs the read lock and gives `&T` (needs `T: Sync`); exclusive access
// needs the write lock (needs `T: Send`).
unsafe impl<T: Send + Sync> Sync for NotifierLocked<T> {}

impl<T> NotifierLocked<T> {
    fn new(data: T) -> Self {
        Self(UnsafeCell::new(data))
    }

    /// # Safety
    ///
    /// The caller holds the notifier lock of the `GpuSvm` this state belongs to, for reading or
    /// writing, for `'a`, and has no mutable borrow of the same state.
    unsafe fn get<'a>(&'a self) -> &'a T {
        // SAFETY: The lock is held (safety requirements).
        unsafe { &*self.0.get() }
    }

    /// # Safety
    ///
    /// The caller holds the notifier lock of the `GpuSvm` this state belongs to for writing, for
    /// `'a`, and has no other borrow of the same state.
    #[expect(clippy::mut_from_ref)]
    unsafe fn get_mut<'a>(&'a self) -> &'a mut T {
        // SAFETY: The write lock is held and the borrow is unique (safety requirements).
        unsafe { &mut *self.0.get() }
    }
}

/// The pages of a [`Range`], as last read from the CPU page tables.
struct Pages {
    pfns: KVec<HmmPfn>,
    /// The notifier sequence the pages were read under, if they were.
    seq: Option<Seq>,
    /// Whether part of the range was unmapped: it must be torn down.
    unmapped: bool,
}

/// A range of a [`GpuSvm`]: an aligned chunk of virtual addresses mirrored as one unit.
///
/// # Invariants
///
/// `notifier` is the notifier of the `GpuSvm` `svm` whose block contains the range; it stays
/// inserted while that `GpuSvm` lives, and is only used through it (checked by address).
pub struct Range<T: Driver> {
    svm: *const GpuSvm<T>,
    span: ops::Range<usize>,
    notifier: *const IntervalNotifier<Notifier<T>>,
    pages: NotifierLocked<Pages>,
}

// SAFETY: `notifier` is only dereferenced while the `GpuSvm` keeps it inserted (type invariants);
// the rest is protected by the notifier lock.
unsafe impl<T: Driver> Send for Range<T> {}

// SAFETY: As above.
unsafe impl<T: Driver> Sync for Range<T> {}

impl<T: Driver> Range<T> {
    /// The virtual addresses of the range.
    #[inline]
    pub fn span(&self) -> ops::Range<usize> {
        self.span.clone()
    }

    fn overlaps(&self, other: &ops::Range<usize>) -> bool {
        self.span.start < other.end && other.start < self.span.end
    }
}

/// Proof that the pages of a range are current, obtained with [`GpuSvm::pages_valid`]: no
/// invalidation can run while it lives, as it borrows the notifier lock. Bind device page table
/// entries only with it.
pub struct ValidPages<'a> {
    pfns: &'a [HmmPfn],
}

impl ValidPages<'_> {
    /// The pages, one entry per page of the range.
    #[inline]
    pub fn pfns(&self) -> &[HmmPfn] {
        self.pfns
    }
}

/// The callback data of a notifier of a [`GpuSvm`]: the ranges inside it.
///
/// # Invariants
///
/// `svm` is the `GpuSvm` that owns the notifier; it outlives it.
struct Notifier<T: Driver> {
    svm: *const GpuSvm<T>,
    ranges: NotifierLocked<KVec<Arc<Range<T>>>>,
}

// SAFETY: `svm` outlives the notifier (type invariants); the ranges are protected by the notifier
// lock.
unsafe impl<T: Driver> Send for Notifier<T> {}

// SAFETY: As above.
unsafe impl<T: Driver> Sync for Notifier<T> {}

impl<T: Driver> Invalidate for Notifier<T> {
    fn invalidate<'a>(
        &self,
        range: &NotifierRange,
        seq: PendingSeq<'a>,
    ) -> Result<SeqSet<'a>, WouldBlock> {
        range.check_blockable()?;
        // SAFETY: The `GpuSvm` outlives its notifiers (type invariants).
        let svm = unsafe { &*self.svm };
        let _guard = svm.notifier_lock.write();
        let span = range.span();
        // SAFETY: The notifier lock of `svm` is held for writing; no other borrow is live.
        let ranges = unsafe { self.ranges.get() };
        for r in ranges.iter().filter(|r| r.overlaps(&span)) {
            let hit = span.start.max(r.span.start)..span.end.min(r.span.end);
            svm.driver.invalidate(r, hit, range.event());
            if range.event() == Event::Unmap {
                // SAFETY: As above, and this is the only borrow of these pages.
                unsafe { r.pages.get_mut() }.unmapped = true;
            }
        }
        // Readers of the pages now fail `read_retry`: the pages are stale.
        Ok(seq.set())
    }
}

/// An inserted notifier of a [`GpuSvm`], removed when dropped.
type NotifierBox<T> = Pin<KBox<IntervalNotifier<Notifier<T>>>>;

/// GPU shared virtual memory for one GPU address space: mirrors `span` of a process address
/// space, range by range, for a [`Driver`].
///
/// # Invariants
///
/// `notifiers` hold the notifiers, which are removed in [`GpuSvm`]'s drop before any other field
/// goes.
#[pin_data(PinnedDrop)]
pub struct GpuSvm<T: Driver> {
    mm: ARef<Mm>,
    span: ops::Range<usize>,
    notifier_size: usize,
    chunks: ChunkSizes,
    owner: DeviceOwner,
    #[pin]
    notifier_lock: RwSemaphore<()>,
    #[pin]
    notifiers: Mutex<KVec<NotifierBox<T>>>,
    #[pin]
    driver: T,
}

// SAFETY: All fields are `Send`/`Sync` or protected by the locks.
unsafe impl<T: Driver> Send for GpuSvm<T> {}

// SAFETY: As above.
unsafe impl<T: Driver> Sync for GpuSvm<T> {}

impl<T: Driver> GpuSvm<T> {
    /// Mirrors `span` of `mm`, with notifiers over aligned blocks of `notifier_size` bytes (a
    /// power of two, at least the largest chunk) and ranges of `chunks`, for `driver`, whose
    /// device-private pages `owner` names.
    ///
    /// Fails with [`EINVAL`] for an empty or unaligned span or a bad notifier size.
    pub fn new<E>(
        mm: &MmWithUser,
        span: ops::Range<usize>,
        notifier_size: usize,
        chunks: ChunkSizes,
        owner: DeviceOwner,
        driver: impl PinInit<T, E>,
    ) -> Result<impl PinInit<Self, Error>>
    where
        Error: From<E>,
    {
        if span.start >= span.end
            || span.start % PAGE_SIZE != 0
            || span.end % PAGE_SIZE != 0
            || !notifier_size.is_power_of_two()
            || notifier_size < chunks.largest()
        {
            return Err(EINVAL);
        }
        let mm: ARef<Mm> = ARef::from(&**mm);
        Ok(try_pin_init!(Self {
            mm,
            span,
            notifier_size,
            chunks,
            owner,
            notifier_lock <- new_rwsem!((), "gpusvm_notifier_lock"),
            notifiers <- new_mutex!(KVec::new(), "gpusvm_notifiers"),
            driver <- driver,
        }? Error))
    }

    /// The driver.
    #[inline]
    pub fn driver(&self) -> &T {
        &self.driver
    }

    /// Takes the notifier lock for reading, to check pages with [`GpuSvm::pages_valid`] and bind
    /// them.
    #[inline]
    pub fn notifier_read(&self) -> NotifierReadGuard<'_> {
        NotifierReadGuard(self.notifier_lock.read())
    }

    /// The notifier whose aligned block contains `addr`, inserted if there is none yet.
    fn notifier_for(
        &self,
        mm: &MmWithUser,
        addr: usize,
    ) -> Result<*const IntervalNotifier<Notifier<T>>> {
        let start = addr & !(self.notifier_size - 1);
        let mut notifiers = self.notifiers.lock();
        if let Some(n) = notifiers.iter().find(|n| n.span().start == start) {
            return Ok(&**n);
        }
        let svm: *const Self = self;
        let notifier = KBox::pin_init(
            IntervalNotifier::new(
                mm,
                start,
                self.notifier_size,
                Notifier {
                    svm,
                    ranges: NotifierLocked::new(KVec::new()),
                },
            ),
            GFP_KERNEL,
        )?;
        let ptr: *const IntervalNotifier<Notifier<T>> = &*notifier;
        notifiers.push(notifier, GFP_KERNEL)?;
        Ok(ptr)
    }

    /// Finds the range containing `addr`, or inserts one: the largest chunk that fits in the CPU
    /// VMA, the notifier, `gpuva` and this GPU SVM's span without overlapping another range.
    ///
    /// Fails with [`EFAULT`] if the process is exiting, [`ENOENT`] if no VMA maps `addr` or it
    /// is outside the span, [`EIO`] for `VM_IO` / `VM_PFNMAP` mappings.
    pub fn find_or_insert(&self, addr: usize, gpuva: ops::Range<usize>) -> Result<Arc<Range<T>>> {
        if !self.span.contains(&addr) {
            return Err(ENOENT);
        }
        let mm = self.mm.mmget_not_zero().ok_or(EFAULT)?;
        let notifier_ptr = self.notifier_for(&mm, addr)?;
        // SAFETY: Notifiers stay inserted while `self` lives (type invariants).
        let notifier = unsafe { &*notifier_ptr };
        let vma_span = {
            let mmap = mm.mmap_read_lock();
            let vma = mmap.vma_lookup(addr).ok_or(ENOENT)?;
            if vma.flags() & (virt::flags::IO | virt::flags::PFNMAP) != 0 {
                return Err(EIO);
            }
            vma.start()..vma.end()
        };
        let bounds = [vma_span, notifier.span(), gpuva, self.span.clone()];

        loop {
            // Choose the chunk and count the ranges under the read lock, allocate without the
            // lock (an allocation under it could reclaim, and invalidate, which takes it), then
            // insert under the write lock if nothing changed meanwhile.
            let (span, len) = {
                let _guard = self.notifier_lock.read();
                // SAFETY: The notifier lock is held for reading.
                let ranges = unsafe { notifier.ranges.get() };
                if let Some(r) = ranges.iter().find(|r| r.span.contains(&addr)) {
                    return Ok(r.clone());
                }
                let span = self
                    .chunks
                    .fit(addr, &bounds, |c| ranges.iter().any(|r| r.overlaps(&c)))
                    .ok_or(ENOENT)?;
                (span, ranges.len())
            };
            let npages = (span.end - span.start) / PAGE_SIZE;
            let mut pfns = KVec::with_capacity(npages, GFP_KERNEL)?;
            pfns.resize(npages, HmmPfn::default(), GFP_KERNEL)?;
            let range = Arc::new(
                Range {
                    svm: self,
                    span: span.clone(),
                    // INVARIANT: The notifier whose block contains `addr`, hence `span`.
                    notifier: notifier_ptr,
                    pages: NotifierLocked::new(Pages {
                        pfns,
                        seq: None,
                        unmapped: false,
                    }),
                },
                GFP_KERNEL,
            )?;
            let mut grown = KVec::with_capacity(len + 1, GFP_KERNEL)?;

            let guard = self.notifier_lock.write();
            // SAFETY: The notifier lock is held for writing; this is the only borrow.
            let ranges = unsafe { notifier.ranges.get_mut() };
            if ranges.len() != len {
                // Another fault inserted a range meanwhile: look again.
                continue;
            }
            for r in ranges.iter() {
                grown.push_within_capacity(r.clone()).map_err(|_| ENOMEM)?;
            }
            grown
                .push_within_capacity(range.clone())
                .map_err(|_| ENOMEM)?;
            // The old vector is freed after the lock is released (`grown` owns it then).
            core::mem::swap(ranges, &mut grown);
            drop(guard);
            return Ok(range);
        }
    }

    /// Reads the pages of `range` from the CPU page tables, faulting them in (writable if
    /// `write`), and records them with the notifier sequence they are valid for.
    ///
    /// Fails with [`EFAULT`] if the process is exiting or a page cannot be faulted in, [`EPERM`]
    /// for a write to a read-only mapping, [`EBUSY`] if invalidations kept racing with it, and
    /// with the errors of [`hmm::range_fault`].
    pub fn get_pages(&self, range: &Range<T>, write: bool) -> Result {
        if !core::ptr::eq(range.svm, self) {
            return Err(EINVAL);
        }
        // SAFETY: The range is ours, and its notifier stays inserted while `self` lives (type
        // invariants of `Range`).
        let notifier = unsafe { &*range.notifier };
        let npages = (range.span.end - range.span.start) / PAGE_SIZE;
        let mut pfns = KVec::with_capacity(npages, GFP_KERNEL)?;
        pfns.resize(npages, HmmPfn::default(), GFP_KERNEL)?;
        let request = Request::fault(write).owner(self.owner);
        for _ in 0..GET_PAGES_RETRIES {
            let seq = notifier.read_begin();
            let mm = self.mm.mmget_not_zero().ok_or(EFAULT)?;
            let res = hmm::range_fault(
                notifier,
                &mm.mmap_read_lock(),
                &seq,
                range.span.start,
                &mut pfns,
                request,
            );
            match res {
                Err(e) if e == EBUSY => continue,
                res => res?,
            }
            let _guard = self.notifier_lock.write();
            if notifier.read_retry(&seq) {
                continue;
            }
            // SAFETY: The notifier lock is held for writing; this is the only borrow.
            let pages = unsafe { range.pages.get_mut() };
            core::mem::swap(&mut pages.pfns, &mut pfns);
            pages.seq = Some(seq);
            return Ok(());
        }
        Err(EBUSY)
    }

    /// Removes the ranges that were (partly) unmapped, after the driver stopped all device use
    /// of them, and the notifiers left without ranges. Returns how many ranges went.
    ///
    /// The surviving parts of a partly unmapped range fault in again as new ranges, which fit
    /// the VMAs that are left. The driver calls this from process context, e.g. at the start of
    /// its GPU fault handler; the notifier callback cannot, as it must not free or sleep.
    pub fn collect_garbage(&self) -> usize {
        let mut notifiers = self.notifiers.lock();
        let mut removed = 0;
        for n in notifiers.iter() {
            let _guard = self.notifier_lock.write();
            // SAFETY: The notifier lock is held for writing; this is the only borrow.
            let ranges = unsafe { n.ranges.get_mut() };
            ranges.retain(|r| {
                // SAFETY: As above; these pages are not borrowed elsewhere.
                if !unsafe { r.pages.get() }.unmapped {
                    return true;
                }
                self.driver.invalidate(r, r.span(), Event::Unmap);
                removed += 1;
                false
            });
        }
        // Notifiers without ranges go. Removal waits for running callbacks, which take the
        // notifier lock, so it is not held here.
        notifiers.retain(|n| {
            let _guard = self.notifier_lock.read();
            // SAFETY: The notifier lock is held for reading.
            !unsafe { n.ranges.get() }.is_empty()
        });
        removed
    }

    /// The number of ranges and of notifiers.
    pub fn count(&self) -> (usize, usize) {
        let notifiers = self.notifiers.lock();
        let _guard = self.notifier_lock.read();
        let ranges = notifiers
            .iter()
            .map(|n| {
                // SAFETY: The notifier lock is held for reading.
                unsafe { n.ranges.get() }.len()
            })
            .sum();
        (ranges, notifiers.len())
    }

    /// The proof that the pages of `range` are current, if they are: read with
    /// [`GpuSvm::get_pages`], not invalidated since, and the range not unmapped.
    pub fn pages_valid<'a>(
        &self,
        range: &'a Range<T>,
        guard: &'a NotifierReadGuard<'_>,
    ) -> Option<ValidPages<'a>> {
        if !core::ptr::eq(guard.0.sem(), &self.notifier_lock) || !core::ptr::eq(range.svm, self) {
            return None;
        }
        // SAFETY: The range is ours, and its notifier stays inserted while `self` lives (type
        // invariants of `Range`).
        let notifier = unsafe { &*range.notifier };
        // SAFETY: `guard` holds this GPU SVM's notifier lock for reading.
        let pages = unsafe { range.pages.get() };
        let seq = pages.seq.as_ref()?;
        if pages.unmapped || notifier.read_retry(seq) {
            return None;
        }
        Some(ValidPages { pfns: &pages.pfns })
    }
}

#[pinned_drop]
impl<T: Driver> PinnedDrop for GpuSvm<T> {
    fn drop(self: Pin<&mut Self>) {
        // Remove the notifiers first: removal waits for running callbacks, which use `self`.
        let mut notifiers = self.notifiers.lock();
        while let Some(n) = notifiers.pop() {
            drop(n);
        }
    }
}

#[cfg(CONFIG_RUST_DRM_GPUSVM_KUNIT_TEST)]
#[macros::kunit_tests(rust_drm_gpusvm)]
mod tests {
    use super::*;
    use crate::{
        mm::test_mm::UserMapping,
        sync::atomic::{
            Atomic,
            Relaxed, //
        },
    };

    const SZ_64K: usize = 64 * 1024;
    const SZ_2M: usize = 2 * 1024 * 1024;
    static OWNER: u8 = 0;
    const MAX_PTES: usize = 4096;

    /// A device whose page table maps single pages: `ptes` holds the bound addresses, up to
    /// `MAX_PTES`.
    #[pin_data]
    struct Mock {
        invalidations: Atomic<u32>,
        #[pin]
        ptes: Mutex<KVec<usize>>,
    }

    impl Driver for Mock {
        fn invalidate(&self, _range: &Range<Self>, span: ops::Range<usize>, _event: Event) {
            self.invalidations.fetch_add(1, Relaxed);
            self.ptes.lock().retain(|a| !span.contains(a));
        }
    }

    impl Mock {
        /// Binds the pages of `range`, which must be current. The page table is allocated up
        /// front: its lock is taken in `invalidate`, which reclaim can call, so neither it nor
        /// the notifier lock may be held around an allocation (lockdep reports it otherwise).
        fn bind(svm: &GpuSvm<Mock>, range: &Range<Mock>) -> Result {
            let guard = svm.notifier_read();
            let valid = svm.pages_valid(range, &guard).ok_or(EAGAIN)?;
            let mut ptes = svm.driver().ptes.lock();
            ptes.retain(|a| !range.span().contains(a));
            for (i, _) in valid
                .pfns()
                .iter()
                .enumerate()
                .filter(|(_, p)| p.is_valid())
            {
                ptes.push_within_capacity(range.span().start + i * PAGE_SIZE)
                    .map_err(|_| ENOMEM)?;
            }
            Ok(())
        }

        fn bound(&self, addr: usize) -> bool {
            self.ptes.lock().contains(&addr)
        }
    }

    fn svm(map: &UserMapping) -> Result<Pin<KBox<GpuSvm<Mock>>>> {
        let chunks = ChunkSizes::new(&[SZ_2M, SZ_64K, PAGE_SIZE])?;
        let ptes = KVec::with_capacity(MAX_PTES, GFP_KERNEL)?;
        let mock = pin_init!(Mock {
            invalidations: Atomic::new(0),
            ptes <- new_mutex!(ptes),
        });
        let owner = DeviceOwner::from_ref(&OWNER);
        KBox::pin_init(
            GpuSvm::new(map.mm(), PAGE_SIZE..1 << 47, 1 << 29, chunks, owner, mock)?,
            GFP_KERNEL,
        )
    }

    /// The index of the first 2M-aligned page of `map`.
    fn aligned_page(map: &UserMapping) -> usize {
        (((map.addr(0) + SZ_2M - 1) & !(SZ_2M - 1)) - map.addr(0)) / PAGE_SIZE
    }

    #[test]
    fn aligned_buffer_gets_one_2m_range() -> Result {
        let map = UserMapping::new(2 * SZ_2M / PAGE_SIZE)?;
        let svm = svm(&map)?;
        let first = map.addr(aligned_page(&map));
        let r = svm.find_or_insert(first + 0x1234, 0..usize::MAX)?;
        assert_eq!(r.span(), first..first + SZ_2M);
        let again = svm.find_or_insert(first + SZ_2M - 1, 0..usize::MAX)?;
        assert!(Arc::ptr_eq(&r, &again));
        Ok(())
    }

    #[test]
    fn small_vma_gets_small_ranges_that_never_overlap() -> Result {
        let map = UserMapping::new(16)?;
        let svm = svm(&map)?;
        let vma = map.addr(0)..map.addr(16);
        let mut ranges: KVec<Arc<Range<Mock>>> = KVec::new();
        for page in 0..16 {
            let r = svm.find_or_insert(map.addr(page) + 8, 0..usize::MAX)?;
            let span = r.span();
            let size = span.end - span.start;
            assert!(size == SZ_64K || size == PAGE_SIZE);
            assert_eq!(span.start % size, 0);
            assert!(span.start >= vma.start && span.end <= vma.end);
            assert!(span.contains(&map.addr(page)));
            if !ranges.iter().any(|o| Arc::ptr_eq(o, &r)) {
                assert!(!ranges.iter().any(|o| o.overlaps(&span)));
                ranges.push(r, GFP_KERNEL)?;
            }
        }
        let covered: usize = ranges.iter().map(|r| r.span().end - r.span().start).sum();
        assert_eq!(covered, 16 * PAGE_SIZE);
        Ok(())
    }

    #[test]
    fn no_vma_is_enoent() -> Result {
        let map = UserMapping::new(4)?;
        map.unmap(2, 2)?;
        let svm = svm(&map)?;
        assert_eq!(
            svm.find_or_insert(map.addr(3), 0..usize::MAX).err(),
            Some(ENOENT)
        );
        assert_eq!(svm.find_or_insert(0, 0..usize::MAX).err(), Some(ENOENT));
        Ok(())
    }

    #[test]
    fn invalidation_takes_the_bind_proof_away_until_pages_are_read_again() -> Result {
        let map = UserMapping::new(16)?;
        map.write(0, &[9u8; 16 * 4096])?;
        let svm = svm(&map)?;
        let r = svm.find_or_insert(map.addr(0), 0..usize::MAX)?;

        // Not read yet: no proof.
        assert!(svm.pages_valid(&r, &svm.notifier_read()).is_none());
        svm.get_pages(&r, true)?;
        {
            let guard = svm.notifier_read();
            let valid = svm.pages_valid(&r, &guard).ok_or(EINVAL)?;
            assert!(valid.pfns().iter().all(|p| p.is_valid() && p.is_writable()));
        }

        // The CPU mapping of a page of the range changes: the proof is gone.
        let span = r.span();
        let page = (span.start - map.addr(0)) / PAGE_SIZE;
        map.dontneed(page, 1)?;
        assert!(svm.driver().invalidations.load(Relaxed) >= 1);
        assert!(svm.pages_valid(&r, &svm.notifier_read()).is_none());

        // Reading the pages again gives it back.
        svm.get_pages(&r, false)?;
        assert!(svm.pages_valid(&r, &svm.notifier_read()).is_some());
        Ok(())
    }

    #[test]
    fn partial_munmap_leaves_no_stale_pte_and_survivors_fault_again() -> Result {
        let map = UserMapping::new(2 * SZ_2M / PAGE_SIZE)?;
        let first = aligned_page(&map);
        map.write(first * PAGE_SIZE, &[1u8; SZ_2M])?;
        let svm = svm(&map)?;
        let start = map.addr(first);
        let r = svm.find_or_insert(start, 0..usize::MAX)?;
        assert_eq!(r.span(), start..start + SZ_2M);
        svm.get_pages(&r, true)?;
        Mock::bind(&svm, &r)?;
        let middle = first + SZ_2M / PAGE_SIZE / 2;
        assert!(svm.driver().bound(map.addr(middle)));

        // Unmap the middle page: its device PTE goes at once (the core may invalidate more, e.g.
        // the whole 2M when it splits a THP mapping first), and the range cannot be bound.
        map.unmap(middle, 1)?;
        assert!(!svm.driver().bound(map.addr(middle)));
        assert!(svm.pages_valid(&r, &svm.notifier_read()).is_none());

        assert_eq!(svm.collect_garbage(), 1);
        assert!(!svm.driver().bound(start));
        assert_eq!(svm.count(), (0, 0));
        drop(r);

        // The survivors on both sides fault in again, as ranges inside the VMAs left.
        for page in [first, middle - 1, middle + 1, first + SZ_2M / PAGE_SIZE - 1] {
            let r = svm.find_or_insert(map.addr(page), 0..usize::MAX)?;
            assert!(!r.span().contains(&map.addr(middle)));
            svm.get_pages(&r, false)?;
            Mock::bind(&svm, &r)?;
            assert!(svm.driver().bound(map.addr(page)));
        }
        let mut buf = [0u8; 4];
        map.read((middle + 1) * PAGE_SIZE, &mut buf)?;
        assert_eq!(buf, [1u8; 4]);
        Ok(())
    }
}
