// SPDX-License-Identifier: GPL-2.0

//! Reading the pages of a range for a GPU fault, and the proof needed to bind them.

use super::{
    range::{
        DmaMappings,
        Pfns,
        RangeState, //
    },
    svm::Snapshot,
    DeviceMemory,
    Driver,
    GpuSvm,
    NotifierReadGuard,
    Range,
    ValidPages, //
};
use crate::{
    device::{
        Bound,
        Device, //
    },
    devres::Devres,
    dma::{
        mapping::PageMapping,
        DataDirection, //
    },
    mm::{
        exclusive::make_device_exclusive,
        hmm::{
            self,
            HmmPfn,
            Request, //
        },
        DeviceOwner,
        MmapReadGuard, //
    },
    page::PAGE_SIZE,
    prelude::*,
    sync::Arc,
    time::{
        Delta,
        Instant,
        Monotonic, //
    },
};
use core::{
    borrow::Borrow,
    ops, //
};

/// What [`GpuSvm::read_pages`] keeps for a range across its passes: made before the notifier
/// lock, under which nothing may allocate.
struct Room {
    /// How many invalidations of the range had reached the device before the pass.
    count: u64,
    /// Room for the pfns of the range; once they are stored, the old ones, freed after the lock.
    pfns: Pfns,
    /// Room for the DMA mappings of the range, if the fault asks for them: made under the
    /// notifier lock, and revoked when the device unbinds.
    dma: Option<Devres<DmaMappings>>,
}

/// How many invalidations of a range reached `device`; [`EINVAL`] if there is no such device.
#[inline]
fn invalidations(state: &RangeState, device: usize) -> Result<u64> {
    Ok(state.device(device).ok_or(EINVAL)?.invalidations)
}

/// How long [`GpuSvm::get_pages`] keeps starting again when invalidations race with it and no
/// page came in meanwhile.
///
/// A pass that faults pages in shows them only in the pass after it (HMM ends the walk with
/// `EBUSY` as soon as it faulted), and one such pass may take longer than this on a slow
/// machine: the limit applies once [`GET_PAGES_STALLED`] passes in a row brought nothing in.
const GET_PAGES_TIMEOUT: Delta = Delta::from_millis(hmm::DEFAULT_TIMEOUT_MS as i64);

/// How many passes in a row that brought no page in [`GpuSvm::get_pages`] makes before it may
/// give up (see [`GET_PAGES_TIMEOUT`]).
const GET_PAGES_STALLED: u32 = 8;

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

/// What a GPU fault needs of the pages of a range; see [`GpuSvm::get_pages`].
pub struct Fault<'a, T: Driver> {
    pub(super) present_only: bool,
    pub(super) write: bool,
    pub(super) atomic: Option<(AtomicPolicy, Option<&'a DeviceMemory<T>>)>,
    pub(super) dma: Option<&'a Device<Bound>>,
}

impl<'a, T: Driver> Fault<'a, T> {
    /// A read: the pages are faulted in readable.
    #[inline]
    pub fn read() -> Self {
        Self {
            present_only: false,
            write: false,
            atomic: None,
            dma: None,
        }
    }

    /// What the CPU has present, faulting nothing in: pages it does not map are holes in
    /// [`ValidPages::pfns`], and pages it maps read-only stay so. For mapping the pages around a
    /// GPU fault before the GPU asks for them, as the CPU's fault-around does; not counted as a
    /// fault in the statistics.
    #[inline]
    pub fn present() -> Self {
        Self {
            present_only: true,
            ..Self::read()
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

impl<T: Driver> GpuSvm<T> {
    /// Reads the pages of `range` from the CPU page tables for `fault` by device `device`,
    /// faulting them in, and stores them in the range for that device, valid until an
    /// invalidation overlaps the range and reaches the device.
    ///
    /// Fails with [`EFAULT`] if the process is exiting or a page cannot be faulted in, [`EPERM`]
    /// for a write to a read-only mapping, [`EBUSY`] if invalidations kept racing with it for
    /// [`hmm::DEFAULT_TIMEOUT_MS`] without a page coming in, [`ENOMEM`] if a DMA mapping fails,
    /// with `EOPNOTSUPP` for an atomic fault on pages that cannot be exclusive (not anonymous, or
    /// hugetlb), with [`EINVAL`] for a range of another GPU SVM or no such device, and with the
    /// errors of [`hmm::range_fault`].
    pub fn get_pages(&self, range: &Range<T>, device: usize, fault: &Fault<'_, T>) -> Result {
        self.read_pages(core::slice::from_ref(&range), device, fault, None)
    }

    /// Finds or inserts the ranges from `span.start` on, and reads their pages for `fault` with
    /// one walk of the CPU page tables: what [`GpuSvm::find_or_insert`] and
    /// [`GpuSvm::get_pages`] do range by range, for a run of ranges up to the end of `span`, of
    /// the CPU VMA, of the notifier or of the aligned block of [`GpuSvm::RUN_BLOCK`] bytes,
    /// whichever comes first. For a GPU that walks through memory in ranges much smaller than
    /// that, as the CPU's fault-around does.
    ///
    /// With [`Fault::present`], the run ends before the first range of which the CPU has no page
    /// present (no range is inserted over memory the process did not touch).
    ///
    /// Returns the ranges in address order, the first containing `span.start`; a range that
    /// another thread inserts meanwhile ends the run before it. The pages of the first range are
    /// stored as by [`GpuSvm::get_pages`]; those of a range that an invalidation overlapped
    /// during the walk are not (check each with [`GpuSvm::pages_valid`]).
    ///
    /// Fails as [`GpuSvm::find_or_insert`] does for `span.start` and as [`GpuSvm::get_pages`]
    /// does for the first range.
    pub fn get_pages_run(
        &self,
        span: ops::Range<usize>,
        gpuva: ops::Range<usize>,
        device: usize,
        fault: &Fault<'_, T>,
    ) -> Result<KVec<Arc<Range<T>>>> {
        let owner = self.owner(device)?;
        let mut snapshot = None;
        let run =
            self.find_or_insert_run(span, gpuva, fault.present_only, Some(owner), &mut snapshot)?;
        self.read_pages(&run, device, fault, snapshot.as_ref())?;
        Ok(run)
    }

    /// Reads the pages of `ranges`, consecutive ranges of one notifier, from the CPU page tables
    /// for `fault` by `device` with one walk, and stores those of each range that no
    /// invalidation reaching the device overlapped meanwhile; starts again until the first
    /// range's are stored. The first pass takes the pages from `snapshot` instead of walking, if
    /// it holds them all as the walk would read them.
    pub(super) fn read_pages<R: Borrow<Range<T>>>(
        &self,
        ranges: &[R],
        device: usize,
        fault: &Fault<'_, T>,
        snapshot: Option<&Snapshot<T>>,
    ) -> Result {
        let owner = self.owner(device)?;
        let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
            return Ok(());
        };
        let (first, last) = (first.borrow(), last.borrow());
        let notifier = self.notifier_of(first)?;
        for pair in ranges.windows(2) {
            let (a, b) = (pair[0].borrow(), pair[1].borrow());
            self.notifier_of(b)?;
            if a.span.end != b.span.start || !core::ptr::eq(a.notifier, b.notifier) {
                return Err(EINVAL);
            }
        }
        let start = first.span.start;
        let npages = (last.span.end - start) / PAGE_SIZE;
        for r in ranges {
            let len = r.borrow().span.end - r.borrow().span.start;
            if let Some(i) = self.chunks.sizes().iter().position(|&s| s == len) {
                if !fault.present_only {
                    self.stats.faults[i].add(1);
                }
            }
            if let Some((AtomicPolicy::Vram, Some(mem))) = fault.atomic {
                // Whatever does not move is made exclusive below.
                let _ = self.migrate_to_vram(r.borrow(), mem);
            }
        }
        let mut pfns = KVec::with_capacity(npages, GFP_KERNEL)?;
        pfns.resize(npages, HmmPfn::default(), GFP_KERNEL)?;
        // A `Room` per range; its pages are a copy of its part of `pfns`, or `pfns` itself for
        // one range of several pages.
        let whole = ranges.len() == 1 && npages > 1;
        let mut rooms = KVec::with_capacity(ranges.len(), GFP_KERNEL)?;
        for r in ranges {
            let n = r.borrow().npages();
            rooms
                .push_within_capacity(Room {
                    count: 0,
                    pfns: if whole {
                        Pfns::Many(KVec::new())
                    } else {
                        Pfns::with_capacity(n)?
                    },
                    dma: match fault.dma {
                        Some(dev) => Some(Devres::new(dev, DmaMappings::with_capacity(n)?)?),
                        None => None,
                    },
                })
                .map_err(|_| ENOMEM)?;
        }
        // Which pages are the device's own, told under the notifier lock (see `own_pages`):
        // needed to write or make pages exclusive only.
        let mut own = KVec::new();
        if fault.write {
            own.reserve(npages, GFP_KERNEL)?;
        }
        let mut request = if fault.present_only {
            Request::SNAPSHOT
        } else {
            Request::fault(fault.write)
        }
        .owner(owner);
        // A snapshot is what a walk for `fault` reads if the fault would fault nothing in (or
        // takes what is present) and asks no more of a page than to be there.
        let mut reuse = snapshot
            .and_then(|s| s.pages(notifier, &(start..last.span.end), owner))
            .filter(|(part, _)| {
                fault.present_only
                    || (!fault.write && fault.atomic.is_none() && part.iter().all(|p| p.is_valid()))
            });
        let mut progress = Instant::<Monotonic>::now();
        let (mut ready, mut stalled) = (0, 0);
        loop {
            if stalled >= GET_PAGES_STALLED && progress.elapsed() >= GET_PAGES_TIMEOUT {
                return Err(EBUSY);
            }
            {
                let _guard = self.notifier_lock.read();
                for (room, r) in rooms.iter_mut().zip(ranges) {
                    // SAFETY: The notifier lock is held for reading.
                    room.count = invalidations(unsafe { r.borrow().state.get() }, device)?;
                }
            }
            // The snapshot's pages stand until an invalidation of the notifier since its walk,
            // whose sequence number is checked below, under the lock.
            let reused = reuse.take().map(|(part, seq)| {
                // As long as `pfns` (`Snapshot::pages` covers the span or is `None`).
                for (pfn, &read) in pfns.iter_mut().zip(part) {
                    *pfn = read;
                }
                seq
            });
            let res = if reused.is_some() {
                Ok(())
            } else {
                // Taken after the counts: an invalidation of a range counted before it is over
                // (`read_begin` waits for it), one counted after it shows in the counts below.
                let seq = notifier.read_begin();
                let mm = self.mm.mmget_not_zero().ok_or(EFAULT)?;
                let mmap = mm.mmap_read_lock();
                hmm::range_fault(notifier, &mmap, &seq, start, &mut pfns, request).and_then(|()| {
                    if !fault.write {
                        return Ok(());
                    }
                    if self.own_pages(ranges, device, &rooms, &pfns, &mut own)? {
                        // HMM reports the device's own pages as they are, also read-only ones
                        // (shared copy-on-write since a fork), which no write may use. Faulted
                        // without the owner they come back to system memory, where the write
                        // fault breaks the sharing.
                        request = Request::fault(true);
                        return Err(EBUSY);
                    }
                    match fault.atomic {
                        Some(_) => self.make_exclusive(&mmap, start, &mut pfns, &own, owner),
                        None => Ok(()),
                    }
                })
            };
            match res {
                Err(e) if e == EBUSY => {
                    self.stats.retries.add(1);
                    // HMM ends a pass after the faults it takes, which invalidate: a large range
                    // takes several passes. Only passes that bring nothing in count against the
                    // time limit.
                    let now_ready = pfns
                        .iter()
                        .filter(|p| p.is_valid() && (!fault.write || p.is_writable()))
                        .count();
                    if now_ready > ready {
                        (ready, stalled) = (now_ready, 0);
                        progress = Instant::<Monotonic>::now();
                    } else {
                        stalled += 1;
                    }
                    continue;
                }
                res => res?,
            }
            let _guard = self.notifier_lock.write();
            // A snapshot was read before the ranges were counted: any invalidation of the
            // notifier since its walk makes it stale.
            let stale = reused.is_some_and(|seq| notifier.read_retry(seq));
            // Only invalidations of a range make a walk stale, not those of the other ranges of
            // the notifier, which `read_retry` would also report: threads faulting ranges of one
            // notifier would otherwise keep starting each other over. The first range's pages
            // are stored, or none: a pass stores at most once, into room made before it.
            // SAFETY: The notifier lock is held for writing.
            if stale || invalidations(unsafe { first.state.get() }, device)? != rooms[0].count {
                self.stats.retries.add(1);
                stalled += 1;
                continue;
            }
            let mut offset = 0;
            for (room, r) in rooms.iter_mut().zip(ranges) {
                let r = r.borrow();
                let part = offset..offset + r.npages();
                offset = part.end;
                // SAFETY: The notifier lock is held for writing; this is the only borrow.
                let state = unsafe { r.state.get_mut() };
                let pages = state.device_mut(device).ok_or(EINVAL)?;
                if pages.invalidations != room.count {
                    // Invalidated during the walk: left without pages.
                    continue;
                }
                if let (Some(dev), Some(mappings)) = (fault.dma, &room.dma) {
                    if let Err(e) = self.map_pages(dev, &pfns[part.clone()], mappings) {
                        // Unmapped under the lock, as below.
                        drop(room.dma.take());
                        return Err(e);
                    }
                }
                if whole {
                    room.pfns = Pfns::Many(core::mem::replace(&mut pfns, KVec::new()));
                } else {
                    // Room was made above: this does not allocate.
                    room.pfns.set(&pfns[part])?;
                }
                // The old pfns go with `rooms`, after the lock.
                core::mem::swap(&mut pages.pfns, &mut room.pfns);
                core::mem::swap(&mut pages.dma, &mut room.dma);
                // The old mappings are unmapped before the lock goes: once it does, an
                // invalidation may let their pages be freed, and an unmap after that (which
                // copies a bounce buffer back, with swiotlb) would write into a freed page. Most
                // faults have none: told here, not in a call per range.
                if let Some(old) = room.dma.take() {
                    drop(old);
                }
                pages.valid = true;
                pages.atomic = fault.atomic.is_some();
            }
            return Ok(());
        }
    }

    /// Maps the system pages of `pfns` for DMA by `dev` into `dma`, which has room for them.
    ///
    /// Called with the notifier lock held, with `pfns` read by a pass that no invalidation of the
    /// range overlapped: the pages cannot be freed before the next invalidation, which takes the
    /// lock and unmaps them, so no mapping made here outlives its page.
    fn map_pages(
        &self,
        dev: &Device<Bound>,
        pfns: &[HmmPfn],
        mappings: &Devres<DmaMappings>,
    ) -> Result {
        let mappings = mappings.access(dev)?;
        // SAFETY: The caller holds the notifier lock for writing, and this is the only borrow.
        let dma = unsafe { mappings.0.get_mut() };
        dma.clear();
        for pfn in pfns {
            dma.push_within_capacity(self.map_page(dev, *pfn)?)
                .map_err(|_| ENOMEM)?;
        }
        Ok(())
    }

    /// Tells which of `pfns`, just read for `ranges` by `device` (see [`GpuSvm::read_pages`]),
    /// are device pages of its owner, into `own` (which has room for them). Returns whether one
    /// of those is read-only. The pages of a range that an invalidation reaching the device
    /// overlapped since its count was `rooms[i].count` count as not its own: they are not stored.
    ///
    /// Telling a device page needs its pagemap: under the notifier lock, with no invalidation of
    /// the range since the read, the pages are still mapped, so the pagemap stays registered.
    fn own_pages<R: Borrow<Range<T>>>(
        &self,
        ranges: &[R],
        device: usize,
        rooms: &[Room],
        pfns: &[HmmPfn],
        own: &mut KVec<bool>,
    ) -> Result<bool> {
        let owner = self.owner(device)?;
        let _guard = self.notifier_lock.read();
        own.clear();
        let mut read_only = false;
        let mut offset = 0;
        for (r, room) in ranges.iter().zip(rooms) {
            let r = r.borrow();
            let part = &pfns[offset..offset + r.npages()];
            offset += r.npages();
            // SAFETY: The notifier lock is held for reading.
            let current = invalidations(unsafe { r.state.get() }, device)? == room.count;
            let mut i = 0;
            while i < part.len() {
                let pfn = part[i];
                // The pages of a huge mapping are one folio: one answer for all of them.
                let n = pfn
                    .pages_to_mapping_end(r.span.start + i * PAGE_SIZE)
                    .min(part.len() - i);
                // SAFETY: The page is mapped until the next invalidation of the range, which waits
                // for the lock (above).
                let ours = current && unsafe { pfn.device_private_owner() } == Some(owner);
                read_only |= ours && !pfn.is_writable();
                for _ in 0..n {
                    own.push_within_capacity(ours).map_err(|_| ENOMEM)?;
                }
                i += n;
            }
        }
        Ok(read_only)
    }

    /// Maps system page `pfn` for DMA by `dev`; device pages and holes are not mapped.
    ///
    /// Called with the notifier lock held, with `pfn` read by a pass that no invalidation of the
    /// range overlapped.
    fn map_page(&self, dev: &Device<Bound>, pfn: HmmPfn) -> Result<Option<PageMapping>> {
        // SAFETY: The page stays mapped until the next invalidation, which waits for the lock
        // (see above).
        if unsafe { pfn.device_private_owner() }.is_some() {
            return Ok(None);
        }
        // SAFETY: No invalidation of the range ran since the page was read, and the notifier lock
        // is held: it stays allocated until the next one, which unmaps it first.
        let Some(page) = (unsafe { pfn.page() }) else {
            return Ok(None);
        };
        // SAFETY: The mapping goes into the range's `DmaMappings`, dropped by the invalidation
        // that precedes the page's release (above), or when `dev` unbinds (`Devres`), whichever
        // comes first; the DMA mask is not changed meanwhile (safety requirement of
        // `Fault::dma`).
        let mapping =
            unsafe { PageMapping::new(dev, &page, 0, PAGE_SIZE, DataDirection::Bidirectional)? };
        Ok(Some(mapping))
    }

    /// Makes the system pages of `pfns`, read from `start` on, exclusive to the device of
    /// `owner`; `own` tells which are its device pages already (see [`GpuSvm::own_pages`]).
    ///
    /// This invalidates the pages for the devices of other owners, not for this one (see
    /// [`PendingSeq::skip_own_exclusive`]); a CPU touch afterwards does, so the pages need not
    /// stay locked until they are bound.
    ///
    /// [`PendingSeq::skip_own_exclusive`]: crate::mm::mmu_notifier::PendingSeq::skip_own_exclusive
    fn make_exclusive(
        &self,
        mmap: &MmapReadGuard<'_>,
        start: usize,
        pfns: &mut [HmmPfn],
        own: &[bool],
        owner: DeviceOwner,
    ) -> Result {
        for (i, (pfn, &ours)) in pfns.iter_mut().zip(own).enumerate() {
            if ours {
                continue;
            }
            let page = make_device_exclusive(mmap, start + i * PAGE_SIZE, owner)?;
            *pfn = HmmPfn::writable_page(page.pfn());
        }
        Ok(())
    }

    /// The proof that the pages device `device` read of `range` are current, if they are: read
    /// with [`GpuSvm::get_pages`], not invalidated for the device since, and the range not
    /// unmapped. Only an invalidation that overlaps the range and reaches the device takes the
    /// proof away, not one of another range of the same notifier.
    pub fn pages_valid<'a>(
        &self,
        range: &'a Range<T>,
        device: usize,
        guard: &'a NotifierReadGuard<'_>,
    ) -> Option<ValidPages<'a>> {
        if !core::ptr::eq(guard.0.sem(), &self.notifier_lock) {
            return None;
        }
        self.notifier_of(range).ok()?;
        // SAFETY: `guard` holds this GPU SVM's notifier lock for reading.
        let state = unsafe { range.state.get() };
        let pages = state.device(device)?;
        if !pages.valid || state.unmapped {
            return None;
        }
        Some(ValidPages {
            pfns: &pages.pfns,
            dma: pages.dma.as_ref(),
            atomic: pages.atomic,
        })
    }
}
