// SPDX-License-Identifier: GPL-2.0

//! The garbage collector of unmapped ranges.

use super::{
    Driver,
    GpuSvm, //
};
use crate::{
    mm::mmu_notifier::Event,
    sync::atomic::Relaxed, //
};

impl<T: Driver> GpuSvm<T> {
    /// Removes the ranges that were (partly) unmapped, after the driver stopped the use of them
    /// by each device, and the notifiers left without ranges. Returns how many ranges went.
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
                if !unsafe { r.state.get() }.unmapped {
                    cursor = c.move_next();
                    continue;
                }
                for device in 0..self.owners.len() {
                    self.driver.invalidate(r, device, r.span(), Event::Unmap);
                }
                removed += 1;
                // Freeing is fine under the lock; allocating is not. After the last range the
                // cursor comes back to the previous one, which stays: the walk then ends.
                let (next, _node) = c.remove_current();
                cursor = next;
            }
        }
        // Notifiers that no range uses go (nor a fault about to insert one: a range removed
        // above may still be in a fault's hands). Removal waits for running callbacks, which
        // take the notifier lock, so it is not held here.
        let mut cursor = notifiers.cursor_front_mut();
        while let Some(c) = cursor {
            let unused = c.current().1.unused();
            cursor = if unused {
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
}
