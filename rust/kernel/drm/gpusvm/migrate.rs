// SPDX-License-Identifier: GPL-2.0

//! Migration of ranges to device memory and back.

use super::{
    notifier::Notifier,
    DeviceMemory,
    Driver,
    GpuSvm,
    Range, //
};
use crate::{
    mm::{
        hmm::{
            self,
            HmmPfn,
            Request, //
        },
        migrate::{
            Migration,
            Select, //
        },
        mmu_notifier::IntervalNotifier,
        DeviceOwner,
        MmWithUser, //
    },
    page::PAGE_SIZE,
    prelude::*,
};
use core::ops;

impl<T: Driver> GpuSvm<T> {
    /// Migrates the pages of `range` to device memory `mem`, whose owner must be that of a device
    /// of this GPU SVM: system pages, and device pages of peers of `mem` (which share its owner)
    /// directly, device to device. Returns how many pages moved: fewer than the range's when
    /// some pages cannot move now (pinned, locked, in `mem` already, or in device memory of
    /// another owner, which comes back to system memory when the device faults on it), which is
    /// no error; read the pages again to bind what the range is made of now.
    ///
    /// Takes the range's migrate lock: two GPU faults on one range migrate it once. Fails with
    /// [`EFAULT`] if the process is exiting, [`EINVAL`] if the range is no longer inside a VMA,
    /// and with the errors of [`Driver::alloc_devmem`] and [`Driver::copy_to_vram`]; the range is
    /// then left in system memory.
    pub fn migrate_to_vram(&self, range: &Range<T>, mem: &DeviceMemory<T>) -> Result<usize> {
        let notifier = self.notifier_of(range)?;
        let owner = self.device_owner(mem)?;
        let _migrate = range.migrate.lock();
        let mm = self.mm.mmget_not_zero().ok_or(EFAULT)?;
        // A range in device memory already must not take device memory (or evict other ranges,
        // or its own, to make room) to move nothing.
        if self.in_device_memory(notifier, &mm, range, mem)? {
            return Ok(0);
        }
        // Allocated before the mmap lock is taken: the driver may evict to make room.
        let alloc = mem.alloc(range.npages())?;
        let mmap = mm.mmap_read_lock();
        let vma = mmap.vma_lookup(range.span.start).ok_or(EINVAL)?;
        // Huge pages and aligned 2M holes come as one entry each, to move as one folio. Device
        // pages of the owner are those of `mem` (which stay) and of its peers.
        let select = Select::SYSTEM | Select::DEVICE_PRIVATE | Select::COMPOUND;
        let mig = Migration::setup(vma, range.span(), select, owner)?;
        // SAFETY: `alloc` was just allocated.
        let moved = unsafe { mem.to_vram(mig, &alloc)? };
        if moved > 0 {
            self.stats.migrations_to_vram.add(1);
            self.stats.bytes_to_vram.add((moved * PAGE_SIZE) as u64);
        }
        Ok(moved)
    }

    /// The owner of `mem`, if it is the owner of a device of this GPU SVM ([`EINVAL`] if not).
    fn device_owner(&self, mem: &DeviceMemory<T>) -> Result<DeviceOwner> {
        let owner = mem.owner();
        if !self.owners.contains(&owner) {
            return Err(EINVAL);
        }
        Ok(owner)
    }

    /// Whether every page of `range` is in device memory `mem`, as the CPU page tables show it
    /// now (it may change right after). An invalidation racing with the look counts as no.
    fn in_device_memory(
        &self,
        notifier: &IntervalNotifier<Notifier<T>>,
        mm: &MmWithUser,
        range: &Range<T>,
        mem: &DeviceMemory<T>,
    ) -> Result<bool> {
        let mut pfns = KVec::with_capacity(range.npages(), GFP_KERNEL)?;
        pfns.resize(range.npages(), HmmPfn::SNAPSHOT, GFP_KERNEL)?;
        let seq = notifier.read_begin();
        let mmap = mm.mmap_read_lock();
        let request = Request::SNAPSHOT.owner(mem.owner());
        if hmm::range_fault(notifier, &mmap, &seq, range.span.start, &mut pfns, request).is_err() {
            return Ok(false);
        }
        let _guard = self.notifier_lock.read();
        if notifier.read_retry(&seq) {
            return Ok(false);
        }
        for pfn in pfns.iter() {
            // SAFETY: No invalidation ran since the read, and none can while the notifier lock
            // is held: the page is still mapped, hence allocated.
            let owner = unsafe { pfn.device_private_owner() };
            // SAFETY: As above.
            let owner = owner.or_else(|| unsafe { pfn.device_coherent_owner() });
            if owner != Some(mem.owner()) || pfn.pfn().is_none_or(|p| !mem.pfns().contains(&p)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Migrates the pages of `span` of `range` (the part of it inside the range) that are in
    /// device memory `mem` back to system memory. Returns how many pages moved.
    ///
    /// A huge device page partly inside `span` is split, and only its pages inside move. Takes the
    /// range's migrate lock. Fails with [`EFAULT`] if the process is exiting, and with the errors
    /// of [`Driver::copy_to_sram`].
    pub fn evict_range(
        &self,
        range: &Range<T>,
        span: ops::Range<usize>,
        mem: &DeviceMemory<T>,
    ) -> Result<usize> {
        self.notifier_of(range)?;
        let owner = self.device_owner(mem)?;
        let span = span.start.max(range.span.start)..span.end.min(range.span.end);
        if span.start % PAGE_SIZE != 0 || span.end % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        let _migrate = range.migrate.lock();
        let mm = self.mm.mmget_not_zero().ok_or(EFAULT)?;
        let mmap = mm.mmap_read_lock();
        let mut moved = 0;
        let mut addr = span.start;
        // The range may have lost pages to munmap since it was inserted: evict each VMA part.
        while addr < span.end {
            let Some(vma) = mmap.vma_lookup(addr) else {
                addr += PAGE_SIZE;
                continue;
            };
            let part = addr..span.end.min(vma.end());
            // Device-coherent pages too: they come back by eviction only.
            let select = Select::DEVICE_PRIVATE | Select::DEVICE_COHERENT | Select::COMPOUND;
            let mig = Migration::setup(vma, part.clone(), select, owner)?;
            moved += mem.to_sram(mig)?;
            addr = part.end;
        }
        self.stats.range_evictions.add(1);
        self.stats.bytes_evicted.add((moved * PAGE_SIZE) as u64);
        Ok(moved)
    }
}
