// SPDX-License-Identifier: GPL-2.0
//! expect: E0133
//!
//! A pfn is a plain value that may be stale: reading the owner of its device-private page reads
//! the page's pagemap, so it takes `unsafe` (or the `ValidPages` proof) and safe code cannot.

use kernel::{
    mm::hmm::HmmPfn,
    prelude::*, //
};

/// Reads the owner of a pfn that may be stale.
pub fn owner_is_set(pfn: HmmPfn) -> bool {
    pfn.device_private_owner().is_some()
}
