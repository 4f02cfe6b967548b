// SPDX-License-Identifier: GPL-2.0

//! The GPU SVM object: notifiers, ranges, their pages, and invalidation.

use super::{
    ChunkSizes,
    DeviceMemory,
    Driver,
    SvmStats, //
};
use crate::{
    device::{
        Bound,
        Device, //
    },
    dma::{
        mapping::PageMapping,
        DataDirection,
        DmaAddress, //
    },
    mm::{
        exclusive::make_device_exclusive,
        hmm::{
            self,
            HmmPfn,
            Request, //
        },
        migrate::{
            Migration,
            Select, //
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
        MmWithUser,
        MmapReadGuard, //
    },
    page::PAGE_SIZE,
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNode, //
    },
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        new_mutex,
        new_rwsem,
        rwsem::ReadGuard,
        Arc,
        Mutex,
        RwSemaphore, //
    },
    time::{
        Delta,
        Instant,
        Monotonic, //
    },
};
use core::{
    cell::UnsafeCell,
    ops, //
};

/// How long [`GpuSvm::get_pages`] keeps starting again when invalidations race with it.
const GET_PAGES_TIMEOUT: Delta = Delta::from_millis(hmm::DEFAULT_TIMEOUT_MS as i64);

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
    /// The DMA mappings of the system pages, if they were mapped for the device.
    dma: KVec<Option<PageMapping>>,
    /// The notifier sequence the pages were read under, if they were.
    seq: Option<Seq>,
    /// Whether part of the range was unmapped: it must be torn down.
    unmapped: bool,
    /// Whether the device may do atomics on every page: each is in device memory of the owner
    /// or was made exclusive to the device.
    atomic: bool,
}

/// A range of a [`GpuSvm`]: an aligned chunk of virtual addresses mirrored as one unit.
///
/// # Invariants
///
/// `notifier` is the notifier of the `GpuSvm` `svm` whose block contains the range; it stays
/// inserted while that `GpuSvm` lives, and is only used through it (checked by address).
#[pin_data]
pub struct Range<T: Driver> {
    svm: *const GpuSvm<T>,
    span: ops::Range<usize>,
    notifier: *const IntervalNotifier<Notifier<T>>,
    pages: NotifierLocked<Pages>,
    /// The migrate lock: serialises migrations of the range started by the driver.
    #[pin]
    pub(super) migrate: Mutex<()>,
}

// SAFETY: `notifier` is only dereferenced while the `GpuSvm` keeps it inserted (type invariants);
// the rest is protected by the notifier lock or is a lock.
unsafe impl<T: Driver> Send for Range<T> {}

// SAFETY: As above.
unsafe impl<T: Driver> Sync for Range<T> {}

impl<T: Driver> Range<T> {
    /// The virtual addresses of the range.
    #[inline]
    pub fn span(&self) -> ops::Range<usize> {
        self.span.clone()
    }

    /// The number of pages of the range.
    #[inline]
    pub fn npages(&self) -> usize {
        (self.span.end - self.span.start) / PAGE_SIZE
    }

    pub(super) fn overlaps(&self, other: &ops::Range<usize>) -> bool {
        self.span.start < other.end && other.start < self.span.end
    }
}

/// Proof that the pages of a range are current, obtained with [`GpuSvm::pages_valid`]: no
/// invalidation can run while it lives, as it borrows the notifier lock. Bind device page table
/// entries only with it.
pub struct ValidPages<'a> {
    pfns: &'a [HmmPfn],
    dma: &'a [Option<PageMapping>],
    atomic: bool,
}

impl ValidPages<'_> {
    /// The pages, one entry per page of the range: system pages, or device-private pages of the
    /// GPU SVM's owner (see [`HmmPfn::device_private_owner`]).
    #[inline]
    pub fn pfns(&self) -> &[HmmPfn] {
        self.pfns
    }

    /// The address the device uses for system page `i` of the range, if the pages were read with
    /// [`Fault::dma`].
    #[inline]
    pub fn dma_address(&self, i: usize) -> Option<DmaAddress> {
        self.dma.get(i)?.as_ref().map(PageMapping::dma_address)
    }

    /// Whether the device may do atomics on every page, as read for a [`Fault::atomic`]: in its
    /// device memory, or system pages exclusive to it until
    /// the CPU touches them (which invalidates them).
    #[inline]
    pub fn atomic(&self) -> bool {
        self.atomic
    }
}

/// Where a GPU atomic access to a range is done; see [`Fault::atomic`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AtomicPolicy {
    /// On system memory made exclusive to the device: the CPU takes a page back on its next
    /// touch. For devices that cannot do atomics on system memory over their bus.
    Exclusive,
    /// In device memory: the range migrates there first; pages that cannot move are made
    /// exclusive.
    Vram,
}

/// The CPU-present pages of a block from `start`: bit `i` for page `i`.
#[derive(Default)]
struct Present {
    start: usize,
    mask: u64,
}

impl Present {
    /// Whether every page of `span` is present.
    fn covers(&self, span: &ops::Range<usize>) -> bool {
        let Some(first) = span.start.checked_sub(self.start).map(|o| o / PAGE_SIZE) else {
            return false;
        };
        let count = (span.end - span.start) / PAGE_SIZE;
        if count == 0 || first + count > 64 {
            return false;
        }
        let bits = if count == 64 {
            u64::MAX
        } else {
            (1 << count) - 1
        };
        self.mask >> first & bits == bits
    }
}

/// What a GPU fault needs of the pages of a range; see [`GpuSvm::get_pages`].
pub struct Fault<'a, T: Driver> {
    write: bool,
    atomic: Option<(AtomicPolicy, Option<&'a DeviceMemory<T>>)>,
    dma: Option<&'a Device<Bound>>,
}

impl<'a, T: Driver> Fault<'a, T> {
    /// A read: the pages are faulted in readable.
    #[inline]
    pub fn read() -> Self {
        Self {
            write: false,
            atomic: None,
            dma: None,
        }
    }

    /// A write: the pages are faulted in writable ([`EPERM`] for a read-only mapping).
    #[inline]
    pub fn write() -> Self {
        Self {
            write: true,
            ..Self::read()
        }
    }

    /// An atomic access (a write) under `policy`: every page not in device memory of the owner
    /// is made exclusive to the device, so that [`ValidPages::atomic`] holds. With
    /// [`AtomicPolicy::Vram`] the range first migrates to `vram`; a failed or partial migration
    /// is no error (the pages left behind are made exclusive).
    #[inline]
    pub fn atomic(policy: AtomicPolicy, vram: Option<&'a DeviceMemory<T>>) -> Self {
        Self {
            atomic: Some((policy, vram)),
            ..Self::write()
        }
    }

    /// Also maps the system pages for DMA by `dev` ([`ValidPages::dma_address`]), until they are
    /// invalidated or read again. Device pages are not mapped: the driver knows where they are.
    ///
    /// # Safety
    ///
    /// The DMA mask of `dev` is not changed while the range lives.
    #[inline]
    pub unsafe fn dma(self, dev: &'a Device<Bound>) -> Self {
        Self {
            dma: Some(dev),
            ..self
        }
    }
}

/// The ranges of a notifier, keyed by their end address: the range containing `addr` is the
/// first one whose end is above it.
type RangeTree<T> = RBTree<usize, Arc<Range<T>>>;

/// The range of `ranges` that contains `addr`, if any.
fn range_at<T: Driver>(ranges: &RangeTree<T>, addr: usize) -> Option<Arc<Range<T>>> {
    let cursor = ranges.cursor_lower_bound(&addr.checked_add(1)?)?;
    let (_, range) = cursor.current();
    range.span.contains(&addr).then(|| range.clone())
}

/// Whether a range of `ranges` overlaps `span`.
fn any_overlap<T: Driver>(ranges: &RangeTree<T>, span: &ops::Range<usize>) -> bool {
    span.start
        .checked_add(1)
        .and_then(|key| ranges.cursor_lower_bound(&key))
        .is_some_and(|cursor| cursor.current().1.overlaps(span))
}

/// Calls `f` on the ranges of `ranges` that overlap `span`, in address order.
fn for_each_overlap<T: Driver>(
    ranges: &RangeTree<T>,
    span: &ops::Range<usize>,
    mut f: impl FnMut(&Arc<Range<T>>),
) {
    let mut key = span.start.checked_add(1);
    while let Some(cursor) = key.and_then(|k| ranges.cursor_lower_bound(&k)) {
        let (end, range) = cursor.current();
        if !range.overlaps(span) {
            break;
        }
        f(range);
        key = end.checked_add(1);
    }
}

/// The callback data of a notifier of a [`GpuSvm`]: the ranges inside it.
///
/// # Invariants
///
/// `svm` is the `GpuSvm` that owns the notifier; it outlives it.
struct Notifier<T: Driver> {
    svm: *const GpuSvm<T>,
    ranges: NotifierLocked<RangeTree<T>>,
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
        // Making pages exclusive for our own atomics leaves our pages valid.
        let seq = match seq.skip_own_exclusive(range, svm.owner) {
            Ok(done) => return Ok(done),
            Err(seq) => seq,
        };
        let _guard = svm.notifier_lock.write();
        let span = range.span();
        // SAFETY: The notifier lock of `svm` is held for writing; no other borrow is live.
        let ranges = unsafe { self.ranges.get_mut() };
        let mut cursor = span
            .start
            .checked_add(1)
            .and_then(|key| ranges.cursor_lower_bound_mut(&key));
        while let Some(c) = cursor {
            let r = c.current().1;
            if !r.overlaps(&span) {
                break;
            }
            let hit = span.start.max(r.span.start)..span.end.min(r.span.end);
            svm.driver.invalidate(r, hit, range.event());
            svm.stats.invalidations.add(1);
            // SAFETY: As above, and this is the only borrow of these pages.
            let pages = unsafe { r.pages.get_mut() };
            // The pages may be freed once this returns: unmap them now (this frees nothing).
            pages.dma.clear();
            if range.event() == Event::Unmap && !pages.unmapped {
                pages.unmapped = true;
                svm.garbage.fetch_add(1, Relaxed);
            }
            cursor = c.move_next();
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
/// `notifiers` hold the notifiers, keyed by start address, which are removed in [`GpuSvm`]'s
/// drop before any other field goes.
#[pin_data(PinnedDrop)]
pub struct GpuSvm<T: Driver> {
    mm: ARef<Mm>,
    span: ops::Range<usize>,
    notifier_size: usize,
    chunks: ChunkSizes,
    owner: DeviceOwner,
    stats: SvmStats,
    /// The number of unmapped ranges waiting for [`GpuSvm::collect_garbage`].
    garbage: Atomic<usize>,
    #[pin]
    notifier_lock: RwSemaphore<()>,
    #[pin]
    notifiers: Mutex<RBTree<usize, NotifierBox<T>>>,
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
            stats: SvmStats::new(),
            garbage: Atomic::new(0),
            notifier_lock <- new_rwsem!((), "gpusvm_notifier_lock"),
            notifiers <- new_mutex!(RBTree::new(), "gpusvm_notifiers"),
            driver <- driver,
        }? Error))
    }

    /// The driver.
    #[inline]
    pub fn driver(&self) -> &T {
        &self.driver
    }

    /// The counters.
    #[inline]
    pub fn stats(&self) -> &SvmStats {
        &self.stats
    }

    /// Takes the notifier lock for reading, to check pages with [`GpuSvm::pages_valid`] and bind
    /// them.
    #[inline]
    pub fn notifier_read(&self) -> NotifierReadGuard<'_> {
        NotifierReadGuard(self.notifier_lock.read())
    }

    /// Checks that `range` belongs to this GPU SVM, and returns its notifier.
    fn notifier_of<'a>(&'a self, range: &Range<T>) -> Result<&'a IntervalNotifier<Notifier<T>>> {
        if !core::ptr::eq(range.svm, self) {
            return Err(EINVAL);
        }
        // SAFETY: The range is ours, and its notifier stays inserted while `self` lives (type
        // invariants of `Range`).
        Ok(unsafe { &*range.notifier })
    }

    /// The notifier whose aligned block contains `addr`, inserted if there is none yet.
    fn notifier_for(
        &self,
        mm: &MmWithUser,
        addr: usize,
    ) -> Result<*const IntervalNotifier<Notifier<T>>> {
        let start = addr & !(self.notifier_size - 1);
        let mut notifiers = self.notifiers.lock();
        if let Some(n) = notifiers.get(&start) {
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
                    ranges: NotifierLocked::new(RBTree::new()),
                },
            ),
            GFP_KERNEL,
        )?;
        let ptr: *const IntervalNotifier<Notifier<T>> = &*notifier;
        notifiers.try_create_and_insert(start, notifier, GFP_KERNEL)?;
        Ok(ptr)
    }

    /// The range containing `addr`, if there is one.
    pub fn find(&self, addr: usize) -> Option<Arc<Range<T>>> {
        let start = addr & !(self.notifier_size - 1);
        let notifiers = self.notifiers.lock();
        let notifier = notifiers.get(&start)?;
        let _guard = self.notifier_lock.read();
        // SAFETY: The notifier lock is held for reading.
        range_at(unsafe { notifier.ranges.get() }, addr)
    }

    /// The ranges that overlap `span`, in address order, e.g. to prefetch or evict a span.
    pub fn ranges_in(&self, span: ops::Range<usize>) -> Result<KVec<Arc<Range<T>>>> {
        let notifiers = self.notifiers.lock();
        let blocks = (span.start & !(self.notifier_size - 1))..span.end;
        let visit = |f: &mut dyn FnMut(&Arc<Range<T>>)| {
            for (start, n) in notifiers.iter() {
                if blocks.contains(start) {
                    // SAFETY: The caller holds the notifier lock for reading.
                    for_each_overlap(unsafe { n.ranges.get() }, &span, &mut *f);
                }
            }
        };
        loop {
            let mut count = 0;
            {
                let _guard = self.notifier_lock.read();
                visit(&mut |_| count += 1);
            }
            // Allocated without the notifier lock; ranges inserted meanwhile make it start over.
            let mut found = KVec::with_capacity(count, GFP_KERNEL)?;
            let mut full = false;
            {
                let _guard = self.notifier_lock.read();
                visit(&mut |r| full |= found.push_within_capacity(r.clone()).is_err());
            }
            if !full {
                return Ok(found);
            }
        }
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
        let (vma_span, present) = {
            let mmap = mm.mmap_read_lock();
            let vma = mmap.vma_lookup(addr).ok_or(ENOENT)?;
            if vma.flags() & (virt::flags::IO | virt::flags::PFNMAP) != 0 {
                return Err(EIO);
            }
            let vma_span = vma.start()..vma.end();
            let present = self.present_around(notifier, &mmap, addr, &vma_span)?;
            (vma_span, present)
        };
        let bounds = [vma_span, notifier.span(), gpuva, self.span.clone()];
        let unfit = |ranges: &RangeTree<T>, c: &ops::Range<usize>| {
            any_overlap(ranges, c)
                || (self.chunks.needs_present(c.end - c.start) && !present.covers(c))
        };

        loop {
            // Choose the chunk under the read lock, allocate without the lock (an allocation
            // under it could reclaim, and invalidate, which takes it), then insert under the
            // write lock if no other range took the place meanwhile.
            let span = {
                let _guard = self.notifier_lock.read();
                // SAFETY: The notifier lock is held for reading.
                let ranges = unsafe { notifier.ranges.get() };
                if let Some(r) = range_at(ranges, addr) {
                    return Ok(r);
                }
                self.chunks
                    .fit(addr, &bounds, |c| unfit(ranges, &c))
                    .ok_or(ENOENT)?
            };
            let npages = (span.end - span.start) / PAGE_SIZE;
            let mut pfns = KVec::with_capacity(npages, GFP_KERNEL)?;
            pfns.resize(npages, HmmPfn::default(), GFP_KERNEL)?;
            let (key, wanted) = (span.end, span.clone());
            let range = Arc::pin_init(
                pin_init!(Range {
                    svm: self,
                    span: span.clone(),
                    // INVARIANT: The notifier whose block contains `addr`, hence `span`.
                    notifier: notifier_ptr,
                    pages: NotifierLocked::new(Pages {
                        pfns,
                        dma: KVec::new(),
                        seq: None,
                        unmapped: false,
                        atomic: false,
                    }),
                    migrate <- new_mutex!((), "gpusvm_range_migrate"),
                }),
                GFP_KERNEL,
            )?;
            let node = RBTreeNode::new(key, range.clone(), GFP_KERNEL)?;

            let guard = self.notifier_lock.write();
            // SAFETY: The notifier lock is held for writing; this is the only borrow.
            let ranges = unsafe { notifier.ranges.get_mut() };
            if any_overlap(ranges, &wanted) {
                // Another fault inserted a range there meanwhile: look again.
                drop(guard);
                continue;
            }
            ranges.insert(node);
            return Ok(range);
        }
    }

    /// Which pages of the block of [`ChunkSizes::present_only`] bytes around `addr` the CPU has
    /// present, for the chunk choice (a hint: it may change right after).
    fn present_around(
        &self,
        notifier: &IntervalNotifier<Notifier<T>>,
        mmap: &MmapReadGuard<'_>,
        addr: usize,
        vma: &ops::Range<usize>,
    ) -> Result<Present> {
        let size = self.chunks.present_only();
        if size == 0 {
            return Ok(Present::default());
        }
        let block = addr & !(size - 1);
        let span = block.max(vma.start)..(block + size).min(vma.end);
        let mut pfns = [HmmPfn::SNAPSHOT; ChunkSizes::MAX_PRESENT_ONLY_PAGES];
        let pfns = &mut pfns[..(span.end - span.start) / PAGE_SIZE];
        let seq = notifier.read_begin();
        // A snapshot that races with an invalidation counts as nothing present.
        let mut mask = 0;
        if hmm::range_fault(notifier, mmap, &seq, span.start, pfns, Request::SNAPSHOT).is_ok() {
            for (i, pfn) in pfns.iter().enumerate() {
                if pfn.is_valid() {
                    mask |= 1 << i;
                }
            }
        }
        Ok(Present {
            start: span.start,
            mask,
        })
    }

    /// Reads the pages of `range` from the CPU page tables for `fault`, faulting them in, and
    /// records them with the notifier sequence they are valid for.
    ///
    /// Fails with [`EFAULT`] if the process is exiting or a page cannot be faulted in, [`EPERM`]
    /// for a write to a read-only mapping, [`EBUSY`] if invalidations kept racing with it for
    /// [`hmm::DEFAULT_TIMEOUT_MS`], [`ENOMEM`] if a DMA mapping fails, with `EOPNOTSUPP` for an
    /// atomic fault on pages that cannot be exclusive (not anonymous, or hugetlb), and with the
    /// errors of [`hmm::range_fault`].
    pub fn get_pages(&self, range: &Range<T>, fault: &Fault<'_, T>) -> Result {
        let notifier = self.notifier_of(range)?;
        let len = range.span.end - range.span.start;
        if let Some(i) = self.chunks.sizes().iter().position(|&s| s == len) {
            self.stats.faults[i].add(1);
        }
        if let Some((AtomicPolicy::Vram, Some(mem))) = fault.atomic {
            // Whatever does not move is made exclusive below.
            let _ = self.migrate_to_vram(range, mem);
        }
        let npages = range.npages();
        let mut pfns = KVec::with_capacity(npages, GFP_KERNEL)?;
        pfns.resize(npages, HmmPfn::default(), GFP_KERNEL)?;
        // Room for the mappings, made under the notifier lock where nothing may allocate.
        let mut dma = KVec::with_capacity(fault.dma.map_or(0, |_| npages), GFP_KERNEL)?;
        let request = Request::fault(fault.write).owner(self.owner);
        let start = Instant::<Monotonic>::now();
        while start.elapsed() < GET_PAGES_TIMEOUT {
            let seq = notifier.read_begin();
            let mm = self.mm.mmget_not_zero().ok_or(EFAULT)?;
            let mmap = mm.mmap_read_lock();
            let res = hmm::range_fault(notifier, &mmap, &seq, range.span.start, &mut pfns, request)
                .and_then(|()| match fault.atomic {
                    Some(_) => self.make_exclusive(&mmap, range.span.start, &mut pfns),
                    None => Ok(()),
                });
            match res {
                Err(e) if e == EBUSY => {
                    self.stats.retries.add(1);
                    continue;
                }
                res => res?,
            }
            let _guard = self.notifier_lock.write();
            if notifier.read_retry(&seq) {
                self.stats.retries.add(1);
                continue;
            }
            if let Some(dev) = fault.dma {
                // The pages cannot be freed before the next invalidation, which takes the lock
                // and unmaps them: map them now, under it, so that no mapping outlives its page.
                dma.clear();
                for pfn in pfns.iter() {
                    dma.push_within_capacity(self.map_page(dev, *pfn)?)
                        .map_err(|_| ENOMEM)?;
                }
            }
            // SAFETY: The notifier lock is held for writing; this is the only borrow.
            let pages = unsafe { range.pages.get_mut() };
            core::mem::swap(&mut pages.pfns, &mut pfns);
            // The old mappings are unmapped with `dma` when it goes, after the lock.
            core::mem::swap(&mut pages.dma, &mut dma);
            pages.seq = Some(seq);
            pages.atomic = fault.atomic.is_some();
            return Ok(());
        }
        Err(EBUSY)
    }

    /// Maps system page `pfn` for DMA by `dev`; device pages and holes are not mapped.
    ///
    /// Called with the notifier lock held, with `pfn` read under a notifier sequence that is
    /// still current.
    fn map_page(&self, dev: &Device<Bound>, pfn: HmmPfn) -> Result<Option<PageMapping>> {
        if pfn.device_private_owner().is_some() {
            return Ok(None);
        }
        // SAFETY: The page was read under a sequence still current, with the notifier lock held:
        // it stays allocated until an invalidation, which unmaps it first.
        let Some(page) = (unsafe { pfn.page() }) else {
            return Ok(None);
        };
        // SAFETY: The mapping is dropped by the invalidation that precedes the page's release
        // (above); the DMA mask is not changed meanwhile (safety requirement of `Fault::dma`).
        let mapping =
            unsafe { PageMapping::new(dev, &page, 0, PAGE_SIZE, DataDirection::Bidirectional)? };
        Ok(Some(mapping))
    }

    /// Makes the system pages of `pfns`, read from `start` on, exclusive to the device.
    ///
    /// This invalidates nothing for us (see [`PendingSeq::skip_own_exclusive`]); a CPU touch
    /// afterwards does, so the pages need not stay locked until they are bound.
    fn make_exclusive(
        &self,
        mmap: &MmapReadGuard<'_>,
        start: usize,
        pfns: &mut [HmmPfn],
    ) -> Result {
        for (i, pfn) in pfns.iter_mut().enumerate() {
            if pfn.device_private_owner() == Some(self.owner) {
                continue;
            }
            let page = make_device_exclusive(mmap, start + i * PAGE_SIZE, self.owner)?;
            *pfn = HmmPfn::writable_page(page.pfn());
        }
        Ok(())
    }

    /// The proof that the pages of `range` are current, if they are: read with
    /// [`GpuSvm::get_pages`], not invalidated since, and the range not unmapped.
    pub fn pages_valid<'a>(
        &self,
        range: &'a Range<T>,
        guard: &'a NotifierReadGuard<'_>,
    ) -> Option<ValidPages<'a>> {
        if !core::ptr::eq(guard.0.sem(), &self.notifier_lock) {
            return None;
        }
        let notifier = self.notifier_of(range).ok()?;
        // SAFETY: `guard` holds this GPU SVM's notifier lock for reading.
        let pages = unsafe { range.pages.get() };
        let seq = pages.seq.as_ref()?;
        if pages.unmapped || notifier.read_retry(seq) {
            return None;
        }
        Some(ValidPages {
            pfns: &pages.pfns,
            dma: &pages.dma,
            atomic: pages.atomic,
        })
    }

    /// Migrates the system pages of `range` to device memory `mem`, whose owner must be this GPU
    /// SVM's. Returns how many pages moved: fewer than the range's when some pages cannot move
    /// now (pinned, locked, or already in device memory), which is no error; read the pages
    /// again to bind what the range is made of now.
    ///
    /// Takes the range's migrate lock: two GPU faults on one range migrate it once. Fails with
    /// [`EFAULT`] if the process is exiting, [`EINVAL`] if the range is no longer inside a VMA,
    /// and with the errors of [`Driver::alloc_devmem`] and [`Driver::copy_to_vram`]; the range is
    /// then left in system memory.
    pub fn migrate_to_vram(&self, range: &Range<T>, mem: &DeviceMemory<T>) -> Result<usize> {
        self.notifier_of(range)?;
        if mem.owner() != self.owner {
            return Err(EINVAL);
        }
        let _migrate = range.migrate.lock();
        let mm = self.mm.mmget_not_zero().ok_or(EFAULT)?;
        // Allocated before the mmap lock is taken: the driver may evict to make room.
        let alloc = mem.alloc(range.npages())?;
        let mmap = mm.mmap_read_lock();
        let vma = mmap.vma_lookup(range.span.start).ok_or(EINVAL)?;
        let mig = Migration::setup(vma, range.span(), Select::SYSTEM, self.owner)?;
        let moved = mem.to_vram(mig, &alloc)?;
        if moved > 0 {
            self.stats.migrations_to_vram.add(1);
            self.stats.bytes_to_vram.add((moved * PAGE_SIZE) as u64);
        }
        Ok(moved)
    }

    /// Migrates the pages of `range` that are in device memory `mem` back to system memory.
    /// Returns how many pages moved.
    ///
    /// Takes the range's migrate lock. Fails with [`EFAULT`] if the process is exiting, and with
    /// the errors of [`Driver::copy_to_sram`].
    pub fn evict_range(&self, range: &Range<T>, mem: &DeviceMemory<T>) -> Result<usize> {
        self.notifier_of(range)?;
        if mem.owner() != self.owner {
            return Err(EINVAL);
        }
        let _migrate = range.migrate.lock();
        let mm = self.mm.mmget_not_zero().ok_or(EFAULT)?;
        let mmap = mm.mmap_read_lock();
        let mut moved = 0;
        let mut addr = range.span.start;
        // The range may have lost pages to munmap since it was inserted: evict each VMA part.
        while addr < range.span.end {
            let Some(vma) = mmap.vma_lookup(addr) else {
                addr += PAGE_SIZE;
                continue;
            };
            let part = addr..range.span.end.min(vma.end());
            let mig = Migration::setup(vma, part.clone(), Select::DEVICE_PRIVATE, self.owner)?;
            moved += mem.to_sram(mig)?;
            addr = part.end;
        }
        self.stats.range_evictions.add(1);
        self.stats.bytes_evicted.add((moved * PAGE_SIZE) as u64);
        Ok(moved)
    }

    /// Removes the ranges that were (partly) unmapped, after the driver stopped all device use
    /// of them, and the notifiers left without ranges. Returns how many ranges went.
    ///
    /// The surviving parts of a partly unmapped range fault in again as new ranges, which fit
    /// the VMAs that are left; the device pages of the unmapped part were freed by the unmap.
    /// The driver calls this from process context: at the start of its GPU fault handler (it
    /// costs one atomic read when there is no garbage), and from a work item of its own that it
    /// queues when [`Driver::invalidate`] sees [`Event::Unmap`]. The notifier callback cannot, as
    /// it must not free or sleep. Dropping the [`GpuSvm`] removes what is left.
    pub fn collect_garbage(&self) -> usize {
        if self.garbage.load(Relaxed) == 0 {
            return 0;
        }
        let mut notifiers = self.notifiers.lock();
        let mut removed = 0;
        for (_, n) in notifiers.iter() {
            let _guard = self.notifier_lock.write();
            // SAFETY: The notifier lock is held for writing; this is the only borrow.
            let ranges = unsafe { n.ranges.get_mut() };
            let mut cursor = ranges.cursor_front_mut();
            while let Some(c) = cursor {
                let r = c.current().1;
                // SAFETY: As above; these pages are not borrowed elsewhere.
                if !unsafe { r.pages.get() }.unmapped {
                    cursor = c.move_next();
                    continue;
                }
                self.driver.invalidate(r, r.span(), Event::Unmap);
                removed += 1;
                // Freeing is fine under the lock; allocating is not.
                let (next, _node) = c.remove_current();
                cursor = next;
            }
        }
        // Notifiers without ranges go. Removal waits for running callbacks, which take the
        // notifier lock, so it is not held here.
        let mut cursor = notifiers.cursor_front_mut();
        while let Some(c) = cursor {
            let empty = {
                let _guard = self.notifier_lock.read();
                // SAFETY: The notifier lock is held for reading.
                unsafe { c.current().1.ranges.get() }.is_empty()
            };
            cursor = if empty {
                c.remove_current().0
            } else {
                c.move_next()
            };
        }
        if removed > 0 {
            self.garbage.fetch_sub(removed, Relaxed);
            self.stats.gc_runs.add(1);
            self.stats.gc_ranges.add(removed as u64);
        }
        removed
    }

    /// The number of ranges and of notifiers.
    pub fn count(&self) -> (usize, usize) {
        let notifiers = self.notifiers.lock();
        let _guard = self.notifier_lock.read();
        let (mut ranges, mut count) = (0, 0);
        // Plain loops: iterator adapters over these types make symbol names longer than
        // modpost takes.
        for (_, n) in notifiers.iter() {
            count += 1;
            // SAFETY: The notifier lock is held for reading.
            for _ in unsafe { n.ranges.get() }.iter() {
                ranges += 1;
            }
        }
        (ranges, count)
    }
}

#[pinned_drop]
impl<T: Driver> PinnedDrop for GpuSvm<T> {
    fn drop(self: Pin<&mut Self>) {
        // Remove the notifiers first: removal waits for running callbacks, which use `self`.
        // Their ranges go with them; the mm reference goes last, with the fields.
        let mut notifiers = self.notifiers.lock();
        while let Some(c) = notifiers.cursor_front_mut() {
            drop(c.remove_current());
        }
    }
}
