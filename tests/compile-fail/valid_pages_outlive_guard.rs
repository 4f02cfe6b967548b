// SPDX-License-Identifier: GPL-2.0
//! expect: E0515
//!
//! The `ValidPages` proof borrows the notifier lock guard: it cannot outlive it, so no page table
//! entry can be bound from it once an invalidation may run.

use kernel::{
    drm::gpusvm::{
        Driver,
        GpuSvm,
        Range,
        ValidPages, //
    },
    prelude::*, //
};

/// Returns the proof after dropping the guard it borrows.
pub fn keep<'a, T: Driver>(svm: &'a GpuSvm<T>, range: &'a Range<T>) -> Option<ValidPages<'a>> {
    let guard = svm.notifier_read();
    svm.pages_valid(range, 0, &guard)
}
