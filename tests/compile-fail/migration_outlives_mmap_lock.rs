// SPDX-License-Identifier: GPL-2.0
//! expect: E0505
//!
//! A migration of a VMA range borrows the VMA, hence the mmap lock: the lock cannot be released
//! while the migration (whose pages are unmapped and locked) lives.

use kernel::{
    mm::{
        migrate::{
            Migration,
            Select, //
        },
        DeviceOwner,
        MmWithUser, //
    },
    page::PAGE_SIZE,
    prelude::*, //
};

static OWNER: u8 = 0;

/// Drops the mmap lock under a live migration.
pub fn unlock_early(mm: &MmWithUser, addr: usize) -> Result {
    let mmap = mm.mmap_read_lock();
    let vma = mmap.vma_lookup(addr).ok_or(EFAULT)?;
    let owner = DeviceOwner::from_ref(&OWNER);
    let mig = Migration::setup(vma, addr..addr + PAGE_SIZE, Select::SYSTEM, owner)?;
    drop(mmap);
    drop(mig);
    Ok(())
}
