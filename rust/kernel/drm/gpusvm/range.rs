// SPDX-License-Identifier: GPL-2.0

//! Ranges, their pages, and the index of the ranges of a notifier.

use super::{
    notifier::{
        Notifier,
        NotifierUse, //
    },
    Driver, //
};
use crate::{
    devres::Devres,
    dma::{
        mapping::PageMapping,
        DmaAddress, //
    },
    mm::{
        hmm::HmmPfn,
        mmu_notifier::IntervalNotifier,
        DeviceOwner, //
    },
    page::PAGE_SIZE,
    prelude::*,
    rbtree::{
        CursorMut,
        RBTree,
        RBTreeNode, //
    },
    sync::{
        Arc,
        Mutex, //
    },
};
use core::{
    cell::UnsafeCell,
    ops, //
};

/// State protected by the notifier lock of the [`GpuSvm`](super::GpuSvm) it belongs to.
///
/// # Invariants
///
/// The contents are only accessed with that lock held: shared for `&T`, exclusive for `&mut T`.
pub(super) struct NotifierLocked<T>(UnsafeCell<T>);

// SAFETY: Access is serialised by the notifier lock (type invariants).
unsafe impl<T: Send> Send for NotifierLocked<T> {}

// SAFETY: Shared access needs the read lock and gives `&T` (needs `T: Sync`); exclusive access
// needs the write lock (needs `T: Send`).
unsafe impl<T: Send + Sync> Sync for NotifierLocked<T> {}

impl<T> NotifierLocked<T> {
    #[inline]
    pub(super) fn new(data: T) -> Self {
        Self(UnsafeCell::new(data))
    }

    /// # Safety
    ///
    /// The caller holds the notifier lock of the `GpuSvm` this state belongs to, for reading or
    /// writing, for `'a`, and has no mutable borrow of the same state.
    #[inline]
    pub(super) unsafe fn get<'a>(&'a self) -> &'a T {
        // SAFETY: The lock is held (safety requirements).
        unsafe { &*self.0.get() }
    }

    /// # Safety
    ///
    /// The caller holds the notifier lock of the `GpuSvm` this state belongs to for writing, for
    /// `'a`, and has no other borrow of the same state.
    #[expect(clippy::mut_from_ref)]
    #[inline]
    pub(super) unsafe fn get_mut<'a>(&'a self) -> &'a mut T {
        // SAFETY: The write lock is held and the borrow is unique (safety requirements).
        unsafe { &mut *self.0.get() }
    }
}

/// The DMA mappings of the system pages of a [`Range`] for one device, one entry per page; made
/// and read under the notifier lock.
///
/// Held in a [`Devres`]: the mappings go when the device unbinds, if they did not go before. An
/// invalidation waits for that to complete before the pages can be freed.
pub(super) struct DmaMappings(pub(super) NotifierLocked<KVec<Option<PageMapping>>>);

impl DmaMappings {
    /// No mappings yet, with room for `npages`.
    pub(super) fn with_capacity(npages: usize) -> Result<Self> {
        Ok(Self(NotifierLocked::new(KVec::with_capacity(
            npages, GFP_KERNEL,
        )?)))
    }
}

/// The pfns of the pages of a [`Range`]: inline for a range of one page, which GPU SVMs of small
/// chunks have many of, allocated for larger ranges.
pub(super) enum Pfns {
    One(HmmPfn),
    Many(KVec<HmmPfn>),
}

impl Pfns {
    /// Room for the pfns of `npages` pages, to [`Pfns::set`] without allocating.
    #[inline]
    pub(super) fn with_capacity(npages: usize) -> Result<Self> {
        Ok(match npages {
            1 => Self::One(HmmPfn::default()),
            n => Self::Many(KVec::with_capacity(n, GFP_KERNEL)?),
        })
    }

    /// Sets the pfns to `pfns`, in the room made for them ([`ENOMEM`] if there is too little).
    #[inline]
    pub(super) fn set(&mut self, pfns: &[HmmPfn]) -> Result {
        match (self, pfns) {
            (Self::One(one), [pfn]) => *one = *pfn,
            // Out of line: the store of one pfn, once a range of small chunks, stays inlined.
            (Self::Many(many), _) => Self::set_many(many, pfns)?,
            _ => return Err(ENOMEM),
        }
        Ok(())
    }

    fn set_many(many: &mut KVec<HmmPfn>, pfns: &[HmmPfn]) -> Result {
        many.clear();
        many.extend_from_slice(pfns, GFP_NOWAIT)?;
        Ok(())
    }
}

impl core::ops::Deref for Pfns {
    type Target = [HmmPfn];

    #[inline]
    fn deref(&self) -> &[HmmPfn] {
        match self {
            Self::One(pfn) => core::slice::from_ref(pfn),
            Self::Many(pfns) => pfns,
        }
    }
}

/// The pages of a [`Range`] for one device, as last read from the CPU page tables.
pub(super) struct Pages {
    pub(super) pfns: Pfns,
    /// The DMA mappings of the system pages, if they were mapped for the device.
    pub(super) dma: Option<Devres<DmaMappings>>,
    /// Whether the pages are current: read by
    /// [`GpuSvm::get_pages`](super::GpuSvm::get_pages) under a notifier sequence still current
    /// when they were stored, and no invalidation of the range for this device since (the
    /// callback clears it). Invalidations of other ranges of the notifier leave it.
    pub(super) valid: bool,
    /// How many invalidations of the range reached this device: a read of the pages is stored
    /// only if none came since it began, whatever other ranges or devices saw.
    pub(super) invalidations: u64,
    /// Whether the device may do atomics on every page: each is in device memory of its owner
    /// or was made exclusive to it.
    pub(super) atomic: bool,
}

impl Pages {
    /// No pages: none read yet.
    const NONE: Self = Self {
        pfns: Pfns::Many(KVec::new()),
        dma: None,
        valid: false,
        invalidations: 0,
        atomic: false,
    };
}

/// The state of a [`Range`]: whether it was unmapped, and the pages each device read of it.
pub(super) struct RangeState {
    /// Whether part of the range was unmapped: it must be torn down.
    pub(super) unmapped: bool,
    /// The pages of the first device, inline: most GPU SVMs have one device, whose ranges then
    /// cost no allocation of their own.
    first: Pages,
    /// The pages of the other devices, in device order.
    others: KVec<Pages>,
}

impl RangeState {
    /// The state of a new range of a GPU SVM of `devices` devices (at least one).
    #[inline]
    pub(super) fn new(devices: usize) -> Result<Self> {
        let mut others = KVec::with_capacity(devices.saturating_sub(1), GFP_KERNEL)?;
        for _ in 1..devices {
            others.push(Pages::NONE, GFP_KERNEL)?;
        }
        Ok(Self {
            unmapped: false,
            first: Pages::NONE,
            others,
        })
    }

    /// The pages of device `device`, if the GPU SVM has it.
    #[inline]
    pub(super) fn device(&self, device: usize) -> Option<&Pages> {
        match device {
            0 => Some(&self.first),
            _ => self.others.get(device - 1),
        }
    }

    /// As [`RangeState::device`], mutably.
    #[inline]
    pub(super) fn device_mut(&mut self, device: usize) -> Option<&mut Pages> {
        match device {
            0 => Some(&mut self.first),
            _ => self.others.get_mut(device - 1),
        }
    }

    /// The pages of every device, in device order.
    pub(super) fn devices_mut(&mut self) -> impl Iterator<Item = &mut Pages> {
        Iterator::chain(core::iter::once(&mut self.first), self.others.iter_mut())
    }
}

/// A range of a [`GpuSvm`](super::GpuSvm): an aligned chunk of virtual addresses mirrored as
/// one unit.
///
/// # Invariants
///
/// `notifier` is the notifier of the `GpuSvm` whose id is `svm_id` and whose block contains the
/// range; `_use` is a use of it, so it stays inserted while that `GpuSvm` lives. It is only used
/// through that `GpuSvm` (checked by id).
#[pin_data]
pub struct Range<T: Driver> {
    pub(super) svm_id: u64,
    pub(super) span: ops::Range<usize>,
    pub(super) notifier: *const IntervalNotifier<Notifier<T>>,
    pub(super) _use: NotifierUse,
    pub(super) state: NotifierLocked<RangeState>,
    /// The migrate lock: serialises migrations of the range started by the driver.
    #[pin]
    pub(super) migrate: Mutex<()>,
}

// SAFETY: `notifier` is only dereferenced while the `GpuSvm` keeps it inserted (type invariants);
// the use count is atomic, the rest is protected by the notifier lock or is a lock.
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

/// Proof that the pages a device read of a range are current, obtained with
/// [`GpuSvm::pages_valid`](super::GpuSvm::pages_valid): no invalidation can run while it lives,
/// as it borrows the notifier lock. Bind that device's page table entries only with it.
#[derive(Clone, Copy)]
pub struct ValidPages<'a> {
    pub(super) pfns: &'a [HmmPfn],
    pub(super) dma: Option<&'a Devres<DmaMappings>>,
    pub(super) atomic: bool,
}

impl ValidPages<'_> {
    /// The pages, one entry per page of the range: system pages, or device-private pages of the
    /// device's owner (see [`ValidPages::device_private_owner`]).
    #[inline]
    pub fn pfns(&self) -> &[HmmPfn] {
        self.pfns
    }

    /// The owner of page `i` of the range if it is a device-private page; `None` for system
    /// pages, holes and `i` out of the range.
    #[inline]
    pub fn device_private_owner(&self, i: usize) -> Option<DeviceOwner> {
        // SAFETY: The pages are current and the proof holds the notifier lock: they stay mapped,
        // hence allocated, until the next invalidation, which waits for the lock.
        unsafe { self.pfns.get(i)?.device_private_owner() }
    }

    /// The owner of page `i` of the range if it is a device-coherent page (which the device may
    /// read as a system page); `None` for other pages, holes and `i` out of the range.
    #[inline]
    pub fn device_coherent_owner(&self, i: usize) -> Option<DeviceOwner> {
        // SAFETY: As in `device_private_owner`.
        unsafe { self.pfns.get(i)?.device_coherent_owner() }
    }

    /// The address the device uses for system page `i` of the range, if the pages were read with
    /// [`Fault::dma`](super::Fault::dma) and the device is still bound.
    #[inline]
    pub fn dma_address(&self, i: usize) -> Option<DmaAddress> {
        self.dma?.try_access_with(|mappings| {
            // SAFETY: The proof holds the notifier lock for reading.
            let mappings = unsafe { mappings.0.get() };
            mappings.get(i)?.as_ref().map(PageMapping::dma_address)
        })?
    }

    /// Whether the device may do atomics on every page, as read for a [`Fault::atomic`]: in its
    /// device memory, or system pages exclusive to it until the CPU touches them (which
    /// invalidates them).
    ///
    /// [`Fault::atomic`]: super::Fault::atomic
    #[inline]
    pub fn atomic(&self) -> bool {
        self.atomic
    }
}

/// The ranges of a notifier, keyed by their end address: the range containing `addr` is the
/// first one whose end is above it.
pub(super) type RangeTree<T> = RBTree<usize, Arc<Range<T>>>;

/// A node of a [`RangeTree`].
pub(super) type RangeNode<T> = RBTreeNode<usize, Arc<Range<T>>>;

/// The first range of `ranges` that ends above `addr`: the one containing `addr`, or else the
/// next one after it, if any.
pub(super) fn range_from<T: Driver>(ranges: &RangeTree<T>, addr: usize) -> Option<Arc<Range<T>>> {
    let cursor = ranges.cursor_lower_bound(&addr.checked_add(1)?)?;
    Some(cursor.current().1.clone())
}

/// The range of `ranges` that contains `addr`, if any.
pub(super) fn range_at<T: Driver>(ranges: &RangeTree<T>, addr: usize) -> Option<Arc<Range<T>>> {
    range_from(ranges, addr).filter(|range| range.span.contains(&addr))
}

/// Whether a range of `ranges` overlaps `span`.
pub(super) fn any_overlap<T: Driver>(ranges: &RangeTree<T>, span: &ops::Range<usize>) -> bool {
    span.start
        .checked_add(1)
        .and_then(|key| ranges.cursor_lower_bound(&key))
        .is_some_and(|cursor| cursor.current().1.overlaps(span))
}

/// Calls `f` on the ranges of `ranges` that overlap `span`, in address order.
pub(super) fn for_each_overlap<T: Driver>(
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

/// Inserts the new ranges of a run of consecutive ranges into `ranges`, which holds the other
/// ranges of the run and none else over it. `nodes` has an entry per range of `run`: its node if
/// it is new. From the last range back, a range that precedes another of the run goes in right
/// before it ([`CursorMut::insert_prev`]), not by a walk down from the root.
pub(super) fn insert_run<T: Driver>(
    ranges: &mut RangeTree<T>,
    run: &[Arc<Range<T>>],
    mut nodes: KVec<Option<RangeNode<T>>>,
) {
    // On the range after the one at hand, if it is known.
    let mut cursor: Option<CursorMut<'_, usize, Arc<Range<T>>>> = None;
    while let Some(node) = nodes.pop() {
        let Some(range) = run.get(nodes.len()) else {
            break;
        };
        let key = range.span.end;
        cursor = match (cursor.take(), node) {
            (Some(cursor), None) => cursor.move_prev().filter(|c| *c.current().0 == key),
            (None, None) => None,
            (Some(mut cursor), Some(node)) => match cursor.insert_prev(node) {
                Ok(()) => Some(cursor),
                Err(node) => {
                    ranges.insert(node);
                    ranges.cursor_lower_bound_mut(&key)
                }
            },
            (None, Some(node)) => {
                ranges.insert(node);
                ranges.cursor_lower_bound_mut(&key)
            }
        };
    }
}
