// SPDX-License-Identifier: GPL-2.0

//! The GPU SVM object: its notifiers and the ranges it finds or inserts for GPU faults.

use super::{
    chunk::Present,
    notifier::{
        Notifier,
        NotifierBox,
        NotifierUse, //
    },
    range::{
        any_overlap,
        for_each_overlap,
        insert_run,
        range_at,
        range_from,
        NotifierLocked,
        RangeNode,
        RangeState,
        RangeTree, //
    },
    ChunkSizes,
    Driver,
    Range,
    SvmStats, //
};
use crate::{
    mm::{
        hmm::{
            self,
            HmmPfn,
            Request, //
        },
        mmu_notifier::{
            IntervalNotifier,
            Seq, //
        },
        virt,
        DeviceOwner,
        Mm,
        MmWithUser,
        MmapReadGuard, //
    },
    page::PAGE_SIZE,
    prelude::*,
    rbtree::RBTree,
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
};
use core::ops;

/// The notifier lock of a [`GpuSvm`] held for reading: no invalidation runs meanwhile, so
/// device page table entries can be bound (see [`GpuSvm::pages_valid`]).
pub struct NotifierReadGuard<'a>(pub(super) ReadGuard<'a, ()>);

/// The identity of the next [`GpuSvm`]: ranges name their `GpuSvm` by it, not by its address,
/// which a new one may reuse once the old one is gone while its ranges live on.
static NEXT_ID: Atomic<u64> = Atomic::new(0);

/// GPU shared virtual memory for one GPU address space: mirrors `span` of a process address
/// space, range by range, for a [`Driver`].
///
/// # Invariants
///
/// `notifiers` hold the notifiers, keyed by start address, which are removed in [`GpuSvm`]'s
/// drop before any other field goes. `id` is unique among the `GpuSvm`s ever made.
#[pin_data(PinnedDrop)]
pub struct GpuSvm<T: Driver> {
    pub(super) id: u64,
    pub(super) mm: ARef<Mm>,
    pub(super) span: ops::Range<usize>,
    pub(super) notifier_size: usize,
    pub(super) chunks: ChunkSizes,
    /// The owner of each device's device-private pages, in device order: a device is named by
    /// its index here.
    pub(super) owners: KVec<DeviceOwner>,
    pub(super) stats: SvmStats,
    /// The number of unmapped ranges waiting for [`GpuSvm::collect_garbage`].
    pub(super) garbage: Atomic<usize>,
    #[pin]
    pub(super) notifier_lock: RwSemaphore<()>,
    #[pin]
    pub(super) notifiers: Mutex<RBTree<usize, NotifierBox<T>>>,
    #[pin]
    pub(super) driver: T,
}

/// A range of a run that [`GpuSvm::find_or_insert_run`] finds, or the span of one it inserts.
enum Slot<T: Driver> {
    Found(Arc<Range<T>>),
    New(ops::Range<usize>),
}

impl<T: Driver> Slot<T> {
    fn span(&self) -> ops::Range<usize> {
        match self {
            Slot::Found(range) => range.span.clone(),
            Slot::New(span) => span.clone(),
        }
    }
}

/// The pages of up to a block of [`GpuSvm::RUN_BLOCK`] bytes that [`GpuSvm::find_or_insert_run`]
/// read to tell which are present: stored by [`GpuSvm::get_pages_run`] in place of a second walk
/// of the CPU page tables if no invalidation of the notifier came since.
pub(super) struct Snapshot<T: Driver> {
    /// The notifier whose sequence number `seq` is: only its `read_retry` tells whether the
    /// pages are still current.
    notifier: *const IntervalNotifier<Notifier<T>>,
    start: usize,
    len: usize,
    pfns: [HmmPfn; ChunkSizes::MAX_PRESENT_ONLY_PAGES],
    /// Taken before the walk; `None` if the walk raced with an invalidation.
    seq: Option<Seq>,
    /// The device owner whose device pages the walk reported as they are.
    owner: Option<DeviceOwner>,
}

impl<T: Driver> Snapshot<T> {
    /// The pages of `span` as read under `notifier` for device pages of `owner`, and the sequence
    /// number to check them with (`notifier.read_retry()`), if the snapshot holds them all.
    pub(super) fn pages(
        &self,
        notifier: &IntervalNotifier<Notifier<T>>,
        span: &ops::Range<usize>,
        owner: DeviceOwner,
    ) -> Option<(&[HmmPfn], &Seq)> {
        if !core::ptr::eq(self.notifier, notifier) || self.owner != Some(owner) {
            return None;
        }
        let first = span.start.checked_sub(self.start)? / PAGE_SIZE;
        let end = span.end.checked_sub(self.start)?.div_ceil(PAGE_SIZE);
        let pfns = self.pfns.get(first..end.min(self.len))?;
        if pfns.len() * PAGE_SIZE != span.end - span.start {
            return None;
        }
        Some((pfns, self.seq.as_ref()?))
    }
}

impl<T: Driver> GpuSvm<T> {
    /// A run of ranges ([`GpuSvm::get_pages_run`]) lies in one aligned block of this many bytes.
    pub const RUN_BLOCK: usize = ChunkSizes::MAX_PRESENT_ONLY_PAGES * PAGE_SIZE;

    /// Mirrors `span` of `mm`, with notifiers over aligned blocks of `notifier_size` bytes (a
    /// power of two, at least the largest chunk) and ranges of `chunks`, for `driver`, to the
    /// devices whose device-private pages `owners` name, one entry per device.
    ///
    /// The address space side (notifiers, ranges, migration) exists once; what a device reads of
    /// a range (its pages, their DMA mappings, the bind proof) exists per device, which the
    /// methods name by its index in `owners`. Devices of one interconnect group share an owner.
    ///
    /// Fails with [`EINVAL`] for an empty or unaligned span, a bad notifier size or no owner.
    pub fn new<E>(
        mm: &MmWithUser,
        span: ops::Range<usize>,
        notifier_size: usize,
        chunks: ChunkSizes,
        owners: &[DeviceOwner],
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
            || owners.is_empty()
        {
            return Err(EINVAL);
        }
        let mut devices = KVec::with_capacity(owners.len(), GFP_KERNEL)?;
        devices.extend_from_slice(owners, GFP_KERNEL)?;
        let mm: ARef<Mm> = ARef::from(&**mm);
        Ok(try_pin_init!(Self {
            // INVARIANT: A 64-bit counter does not wrap.
            id: NEXT_ID.fetch_add(1, Relaxed),
            mm,
            span,
            notifier_size,
            chunks,
            owners: devices,
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

    /// The number of devices.
    #[inline]
    pub fn devices(&self) -> usize {
        self.owners.len()
    }

    /// The owner of the device-private pages of device `device`; [`EINVAL`] if there is no such
    /// device.
    #[inline]
    pub fn owner(&self, device: usize) -> Result<DeviceOwner> {
        self.owners.get(device).copied().ok_or(EINVAL)
    }

    /// Whether this GPU SVM mirrors `mm`, e.g. the address space of the task calling the driver:
    /// a driver refuses to work on behalf of any other (a child that inherited its file after
    /// `fork()`, say).
    ///
    /// The GPU SVM holds its address space (`mmgrab`), so no other one can take its place at
    /// the same address meanwhile.
    #[inline]
    pub fn mirrors(&self, mm: &Mm) -> bool {
        core::ptr::eq(self.mm.as_raw(), mm.as_raw())
    }

    /// The counters.
    #[inline]
    pub fn stats(&self) -> &SvmStats {
        &self.stats
    }

    /// Takes the notifier lock for reading, to check pages with [`GpuSvm::pages_valid`] and bind
    /// them.
    ///
    /// Hold it only for that: the other methods of the GPU SVM take the lock themselves, and
    /// taking a read lock again while a writer (an invalidation) waits deadlocks.
    #[inline]
    pub fn notifier_read(&self) -> NotifierReadGuard<'_> {
        NotifierReadGuard(self.notifier_lock.read())
    }

    /// Checks that `range` belongs to this GPU SVM, and returns its notifier.
    pub(super) fn notifier_of<'a>(
        &'a self,
        range: &Range<T>,
    ) -> Result<&'a IntervalNotifier<Notifier<T>>> {
        if range.svm_id != self.id {
            return Err(EINVAL);
        }
        // SAFETY: The range is ours (`id` is unique), and its notifier stays inserted while
        // `self` lives (type invariants of `Range`).
        Ok(unsafe { &*range.notifier })
    }

    /// The notifier whose aligned block contains `addr`, inserted if there is none yet, and a
    /// use of it that keeps it inserted.
    fn notifier_for(
        &self,
        mm: &MmWithUser,
        addr: usize,
    ) -> Result<(*const IntervalNotifier<Notifier<T>>, NotifierUse)> {
        let start = addr & !(self.notifier_size - 1);
        let mut notifiers = self.notifiers.lock();
        if let Some(n) = notifiers.get(&start) {
            return Ok((&**n, NotifierUse::new(&n.users)));
        }
        if notifiers.is_empty() {
            self.teach_lockdep();
        }
        let svm: *const Self = self;
        let users = Arc::new(Atomic::new(0), GFP_KERNEL)?;
        let used = NotifierUse::new(&users);
        let notifier = KBox::pin_init(
            IntervalNotifier::new(
                mm,
                start,
                self.notifier_size,
                Notifier {
                    svm,
                    ranges: NotifierLocked::new(RBTree::new()),
                    users,
                },
            ),
            GFP_KERNEL,
        )?;
        let ptr: *const IntervalNotifier<Notifier<T>> = &*notifier;
        notifiers.try_create_and_insert(start, notifier, GFP_KERNEL)?;
        Ok((ptr, used))
    }

    /// Tells lockdep that reclaim takes the notifier lock (through the notifier callback), before
    /// any notifier is inserted: an allocation that may reclaim under the lock is then reported
    /// at once, not only when reclaim happens to invalidate.
    fn teach_lockdep(&self) {
        #[cfg(CONFIG_LOCKDEP)]
        {
            // SAFETY: Entering and leaving a reclaim section for lockdep has no requirements.
            unsafe { crate::bindings::fs_reclaim_acquire(crate::bindings::GFP_KERNEL) };
            drop(self.notifier_lock.write());
            // SAFETY: As above; the section entered above ends here.
            unsafe { crate::bindings::fs_reclaim_release(crate::bindings::GFP_KERNEL) };
        }
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
        let mut run =
            self.find_or_insert_run(addr..addr.saturating_add(1), gpuva, false, None, &mut None)?;
        run.truncate(1);
        run.pop().ok_or(ENOENT)
    }

    /// Finds or inserts the ranges from `span.start` on, each as [`GpuSvm::find_or_insert`] would,
    /// up to the end of `span`, of the CPU VMA, of the notifier or of the aligned block of
    /// [`GpuSvm::RUN_BLOCK`] bytes, whichever comes first: one mmap lock, one notifier lookup and
    /// one insertion for all of them. Returns them in address order, the first containing
    /// `span.start`; a range that another thread inserts meanwhile ends the run before it. With
    /// `present_only`, so does the first range after the first of which the CPU has no page
    /// present. The pages read to tell which are present, device pages of `owner` reported as
    /// they are, go into `snapshot`.
    ///
    /// Fails as [`GpuSvm::find_or_insert`] does for `span.start`.
    pub(super) fn find_or_insert_run(
        &self,
        span: ops::Range<usize>,
        gpuva: ops::Range<usize>,
        present_only: bool,
        owner: Option<DeviceOwner>,
        snapshot: &mut Option<Snapshot<T>>,
    ) -> Result<KVec<Arc<Range<T>>>> {
        let addr = span.start;
        if !self.span.contains(&addr) {
            return Err(ENOENT);
        }
        let mm = self.mm.mmget_not_zero().ok_or(EFAULT)?;
        let (notifier_ptr, used) = self.notifier_for(&mm, addr)?;
        // SAFETY: The notifier stays inserted while `used` lives.
        let notifier = unsafe { &*notifier_ptr };
        // Held until the ranges are in the tree: an munmap of the VMA found here cannot come
        // before the insertion (its invalidation would not see the ranges, which would then
        // outlive the VMA unmarked and never be collected), only after it.
        let mmap = mm.mmap_read_lock();
        let vma_span = {
            let vma = mmap.vma_lookup(addr).ok_or(ENOENT)?;
            if vma.flags() & (virt::flags::IO | virt::flags::PFNMAP) != 0 {
                return Err(EIO);
            }
            vma.start()..vma.end()
        };
        // A range lies in the VMA, the notifier's block, `gpuva` and the GPU SVM: in their
        // intersection, which each chunk is checked against once, not against each of them.
        let within = [vma_span.clone(), notifier.span(), gpuva, self.span.clone()]
            .into_iter()
            .fold(0..usize::MAX, |w, b| w.start.max(b.start)..w.end.min(b.end));
        let block_end = (addr | (Self::RUN_BLOCK - 1)).saturating_add(1);
        let end = span.end.min(block_end).min(within.end);
        // Which pages the CPU has present, read only when a chunk that needs them is chosen or
        // the run is to end at the first range with none: until then, every page counts as
        // present.
        let mut read_present =
            || self.present_around(notifier, &mmap, &(addr..end), &vma_span, owner, snapshot);
        let mut present: Option<Present> = None;
        if present_only {
            present = Some(read_present()?);
        }
        // Whether chunk `c` for a fault at `at` overlaps a range, `next` being the first range
        // that ends above `at`, or lacks pages it needs present.
        let unfit = |ranges: &RangeTree<T>,
                     c: &ops::Range<usize>,
                     at: usize,
                     next: &Option<Arc<Range<T>>>,
                     present: &Option<Present>| {
            let overlaps = if c.start < at {
                any_overlap(ranges, c)
            } else {
                next.as_ref().is_some_and(|n| n.overlaps(c))
            };
            overlaps
                || (self.chunks.needs_present(c.end - c.start)
                    && present.as_ref().is_some_and(|p| !p.covers(c)))
        };
        // A slot per range, each of at least a page from `addr` on.
        let mut plan = KVec::with_capacity(
            end.saturating_sub(addr).div_ceil(PAGE_SIZE).max(1),
            GFP_KERNEL,
        )?;

        loop {
            // Choose the chunks under the read lock, allocate without the lock (an allocation
            // under it could reclaim, and invalidate, which takes it), then insert under the
            // write lock those no other range took the place of meanwhile. The mmap lock may be
            // held around allocations, as in any page fault.
            plan.clear();
            let needs_present = {
                let _guard = self.notifier_lock.read();
                // SAFETY: The notifier lock is held for reading.
                let ranges = unsafe { notifier.ranges.get() };
                let mut needs_present = false;
                let mut at = addr;
                // Looked up again only once `at` passes it, not for every range of the run.
                let mut next = range_from(ranges, at);
                while at < end || plan.is_empty() {
                    let slot = match next.take_if(|n| n.span.start <= at) {
                        Some(r) => {
                            next = range_from(ranges, r.span.end);
                            Slot::Found(r)
                        }
                        None => {
                            let Some(c) =
                                self.chunks.fit(at, core::slice::from_ref(&within), |c| {
                                    unfit(ranges, &c, at, &next, &present)
                                })
                            else {
                                break;
                            };
                            needs_present |=
                                present.is_none() && self.chunks.needs_present(c.end - c.start);
                            Slot::New(c)
                        }
                    };
                    let absent = present.as_ref().is_some_and(|p| !p.any(&slot.span()));
                    if present_only && absent && !plan.is_empty() {
                        break;
                    }
                    at = slot.span().end;
                    plan.push_within_capacity(slot).map_err(|_| ENOMEM)?;
                }
                needs_present
            };
            if plan.is_empty() {
                return Err(ENOENT);
            }
            if needs_present {
                present = Some(read_present()?);
                continue;
            }
            let mut run = KVec::with_capacity(plan.len(), GFP_KERNEL)?;
            let mut nodes = KVec::with_capacity(plan.len(), GFP_KERNEL)?;
            for slot in plan.drain_all() {
                let (range, node) = match slot {
                    Slot::Found(range) => (range, None),
                    Slot::New(c) => {
                        let (range, node) = self.new_range(c, notifier_ptr, &used)?;
                        (range, Some(node))
                    }
                };
                run.push_within_capacity(range).map_err(|_| ENOMEM)?;
                nodes.push_within_capacity(node).map_err(|_| ENOMEM)?;
            }
            if nodes.iter().any(Option::is_some) {
                let _guard = self.notifier_lock.write();
                // SAFETY: The notifier lock is held for writing; this is the only borrow.
                let ranges = unsafe { notifier.ranges.get_mut() };
                // The new ranges are checked one by one only if the ranges over the run are no
                // longer just those found: one lookup a found range, not one a new range.
                let changed = match (run.first(), run.last()) {
                    (Some(first), Some(last)) => {
                        let mut found = run.iter().zip(&nodes).filter(|(_, n)| n.is_none());
                        let mut changed = false;
                        for_each_overlap(ranges, &(first.span.start..last.span.end), |r| {
                            changed |= !found.next().is_some_and(|(f, _)| Arc::ptr_eq(f, r));
                        });
                        changed || found.next().is_some()
                    }
                    _ => true,
                };
                if changed {
                    for (i, node) in nodes.drain_all().enumerate() {
                        let Some(node) = node else {
                            continue;
                        };
                        if any_overlap(ranges, &run[i].span) {
                            // Another fault inserted a range there meanwhile: the run ends here.
                            run.truncate(i);
                            break;
                        }
                        ranges.insert(node);
                    }
                } else {
                    insert_run(ranges, &run, nodes);
                }
            }
            if !run.is_empty() {
                return Ok(run);
            }
            // The first range lost its place: look again.
        }
    }

    /// A new range over `span` of the notifier `notifier`, which `used` keeps inserted, and the
    /// node to insert it with.
    fn new_range(
        &self,
        span: ops::Range<usize>,
        notifier: *const IntervalNotifier<Notifier<T>>,
        used: &NotifierUse,
    ) -> Result<(Arc<Range<T>>, RangeNode<T>)> {
        let key = span.end;
        // No pages until `get_pages` reads them.
        let state = RangeState::new(self.owners.len())?;
        let range = Arc::pin_init(
            pin_init!(Range {
                svm_id: self.id,
                span,
                // INVARIANT: The caller passes the notifier whose block contains `span`, and a use
                // of it.
                notifier,
                _use: used.clone(),
                state: NotifierLocked::new(state),
                migrate <- new_mutex!((), "gpusvm_range_migrate"),
            }),
            GFP_KERNEL,
        )?;
        let node = RangeNode::new(key, range.clone(), GFP_KERNEL)?;
        Ok((range, node))
    }

    /// Which pages the CPU has present in the blocks of [`ChunkSizes::present_only`] bytes (or
    /// pages) that `span` overlaps, within one aligned block of [`GpuSvm::RUN_BLOCK`] bytes: for
    /// the chunk choice and the end of a run (a hint: it may change right after). The pages read,
    /// device pages of `owner` reported as they are, go into `snapshot`.
    fn present_around(
        &self,
        notifier: &IntervalNotifier<Notifier<T>>,
        mmap: &MmapReadGuard<'_>,
        span: &ops::Range<usize>,
        vma: &ops::Range<usize>,
        owner: Option<DeviceOwner>,
        snapshot: &mut Option<Snapshot<T>>,
    ) -> Result<Present> {
        let size = self.chunks.present_only().max(PAGE_SIZE);
        let start = (span.start & !(size - 1)).max(vma.start);
        let end = span
            .end
            .checked_next_multiple_of(size)
            .unwrap_or(span.end)
            .min(vma.end);
        let snapshot = snapshot.insert(Snapshot {
            notifier,
            start,
            len: 0,
            pfns: [HmmPfn::SNAPSHOT; ChunkSizes::MAX_PRESENT_ONLY_PAGES],
            seq: None,
            owner,
        });
        snapshot.len = (end.saturating_sub(start) / PAGE_SIZE).min(snapshot.pfns.len());
        let pfns = &mut snapshot.pfns[..snapshot.len];
        let request = match owner {
            Some(owner) => Request::SNAPSHOT.owner(owner),
            None => Request::SNAPSHOT,
        };
        let seq = notifier.read_begin();
        // A snapshot that races with an invalidation counts as nothing present.
        let mut mask = 0;
        if hmm::range_fault(notifier, mmap, &seq, start, pfns, request).is_ok() {
            for (i, pfn) in pfns.iter().enumerate() {
                if pfn.is_valid() {
                    mask |= 1 << i;
                }
            }
            snapshot.seq = Some(seq);
        }
        Ok(Present { start, mask })
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
        // Their ranges go with them (or live on in the driver's hands, unusable); the mm
        // reference goes last, with the fields.
        let mut notifiers = self.notifiers.lock();
        {
            // Once a notifier is removed, nothing keeps its pages from being freed: unmap them
            // while invalidations still wait for the lock.
            let _guard = self.notifier_lock.write();
            for (_, n) in notifiers.iter() {
                // SAFETY: The notifier lock is held for writing; the tree is only read.
                for (_, r) in unsafe { n.ranges.get() }.iter() {
                    // SAFETY: As above; these pages are not borrowed elsewhere.
                    for pages in unsafe { r.state.get_mut() }.devices_mut() {
                        pages.dma = None;
                        pages.valid = false;
                    }
                }
            }
        }
        while let Some(c) = notifiers.cursor_front_mut() {
            drop(c.remove_current());
        }
    }
}
