// SPDX-License-Identifier: GPL-2.0

//! The mmu notifiers of a GPU SVM and their invalidation callback.

use super::{
    range::{
        NotifierLocked,
        RangeTree, //
    },
    Driver,
    GpuSvm, //
};
use crate::{
    mm::{
        mmu_notifier::{
            Event,
            IntervalNotifier,
            Invalidate,
            NotifierRange,
            PendingSeq,
            SeqSet,
            WouldBlock, //
        },
        DeviceOwner, //
    },
    prelude::*,
    sync::{
        atomic::{
            Acquire,
            Atomic,
            Relaxed,
            Release, //
        },
        Arc,
    },
};

/// The callback data of a notifier of a [`GpuSvm`]: the ranges inside it.
///
/// # Invariants
///
/// `svm` is the `GpuSvm` that owns the notifier; it outlives it.
pub(super) struct Notifier<T: Driver> {
    pub(super) svm: *const GpuSvm<T>,
    pub(super) ranges: NotifierLocked<RangeTree<T>>,
    /// The number of [`NotifierUse`]s of the notifier.
    pub(super) users: Arc<Atomic<usize>>,
}

impl<T: Driver> Notifier<T> {
    /// Whether the garbage collector may remove the notifier: no range uses it, and no fault
    /// that is about to insert one. Called with the notifiers lock of the [`GpuSvm`] held,
    /// under which alone uses begin, so that none can begin before the removal.
    pub(super) fn unused(&self) -> bool {
        self.users.load(Acquire) == 0
    }
}

/// A use of a notifier by a [`Range`](super::Range), or by a fault about to insert one: while
/// one lives, the garbage collector leaves the notifier inserted, so that the range may use it
/// without holding a lock. It holds only the count, which it keeps alive by itself.
pub(super) struct NotifierUse(Arc<Atomic<usize>>);

impl NotifierUse {
    /// A use of the notifier whose count is `users`. The caller holds the notifiers lock of its
    /// [`GpuSvm`] (see [`Notifier::unused`]).
    pub(super) fn new(users: &Arc<Atomic<usize>>) -> Self {
        users.fetch_add(1, Relaxed);
        Self(users.clone())
    }
}

impl Clone for NotifierUse {
    /// Another use of the same notifier. It is in use already, so it cannot be removed
    /// meanwhile: no lock is needed.
    #[inline]
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Relaxed);
        Self(self.0.clone())
    }
}

impl Drop for NotifierUse {
    #[inline]
    fn drop(&mut self) {
        // Release: what the user did with the notifier happens before its removal, which reads
        // the count with `Acquire`.
        self.0.fetch_sub(1, Release);
    }
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
        // Making pages exclusive for a device's atomics leaves its pages valid, and those of
        // the devices that share its owner (its interconnect group).
        let spared = |owner: &DeviceOwner| {
            range.event() == Event::Exclusive && range.owner() == Some(*owner)
        };
        let mut seq = seq;
        if svm.owners.iter().all(spared) {
            seq = match seq.skip_own_exclusive(range, svm.owners[0]) {
                Ok(done) => return Ok(done),
                Err(seq) => seq,
            };
        }
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
            svm.stats.invalidations.add(1);
            // SAFETY: As above, and this is the only borrow of this state.
            let state = unsafe { r.state.get_mut() };
            for (device, (pages, owner)) in state.devices_mut().zip(&svm.owners).enumerate() {
                if spared(owner) {
                    continue;
                }
                svm.driver.invalidate(r, device, hit.clone(), range.event());
                // The pages may be freed once this returns: unmap them now (this frees
                // nothing), and take the bind proof away until they are read again.
                pages.dma = None;
                pages.valid = false;
                pages.invalidations = pages.invalidations.wrapping_add(1);
            }
            if range.event() == Event::Unmap && !state.unmapped {
                state.unmapped = true;
                svm.garbage.fetch_add(1, Relaxed);
            }
            cursor = c.move_next();
        }
        // Read sections begun before this end in `EBUSY` from HMM, and `read_begin` waits until
        // the event is over.
        Ok(seq.set())
    }
}

/// An inserted notifier of a [`GpuSvm`], removed when dropped.
pub(super) type NotifierBox<T> = Pin<KBox<IntervalNotifier<Notifier<T>>>>;
