// SPDX-License-Identifier: GPL-2.0

//! Simulated VRAM: device-private pages, each backed by a system page that a simulated copy
//! engine reads and writes with the CPU, allocated with the GPU buddy allocator. When an
//! allocation does not fit, the least recently used allocations are evicted to system memory
//! first; the GPU fault handler marks the allocations it maps as used. The devices of an
//! interconnect group reach each other's VRAM directly.

use core::ops::Range;
use kernel::{
    debugfs,
    drm::gpusvm::{
        DeviceMemory,
        FreePages,
        NewPage, //
    },
    fault_inject::FaultAttr,
    gpu::buddy::{
        AllocatedBlocks,
        GpuBuddy,
        GpuBuddyAllocFlags,
        GpuBuddyAllocMode,
        GpuBuddyParams, //
    },
    impl_has_work,
    mm::DeviceOwner,
    new_condvar, new_mutex, new_spinlock, new_work,
    page::{
        BorrowedPage,
        Page,
        PAGE_SIZE, //
    },
    prelude::*,
    ptr::Alignment,
    sizes::SZ_2M,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        CondVar,
        CondVarTimeoutResult,
        Mutex,
        SpinLock, //
    },
    time::{
        msecs_to_jiffies,
        Delta, //
    },
    workqueue::{
        Work,
        WorkItem, //
    },
};

use crate::{
    driver::Queues,
    vm::Mirror, //
};

/// How many times an allocation evicts older ones before it gives up.
const EVICT_ATTEMPTS: u32 = 4;

/// How long an allocation waits for evicted blocks to come back to the allocator.
const FREE_WAIT: Delta = Delta::from_millis(500);

/// An allocation, in allocation order, for eviction: its id and its pages, as the pfn ranges of
/// its blocks (a few).
struct Allocated {
    id: u64,
    blocks: KVec<Range<usize>>,
}

impl Allocated {
    fn pages(&self) -> usize {
        self.blocks.iter().map(|b| b.end - b.start).sum()
    }
}

/// What the allocations and the work items that free them share.
#[pin_data]
struct Shared {
    /// The allocations not freed yet, least recently used first.
    #[pin]
    allocated: Mutex<KVec<Allocated>>,
    /// Signalled, under `allocated`, when the last pending free ran.
    #[pin]
    freed: CondVar,
    /// Frees queued and not run yet.
    pending: Atomic<u64>,
    next_id: Atomic<u64>,
}

/// The longest delay that can be injected, in microseconds.
const MAX_FAULT_DELAY_US: u32 = 100_000;

/// Faults to inject, for tests of the error paths: fault-injection attributes whose knobs root
/// sets in debugfs, in `vsvm/<device>/<name>/` (Documentation/fault-injection/), device-wide.
pub(crate) struct Faults {
    /// VRAM allocations fail with `ENOSPC`.
    pub(crate) fail_alloc: Pin<KBox<debugfs::File<FaultAttr>>>,
    /// Copies to VRAM fail with `EIO`.
    pub(crate) fail_copy: Pin<KBox<debugfs::File<FaultAttr>>>,
    /// Migrations to VRAM end partial: the first page that moved goes back to system memory.
    pub(crate) partial_migration: Pin<KBox<debugfs::File<FaultAttr>>>,
    /// GPU faults are handled late, by `fault_delay_us`.
    delay_fault: Pin<KBox<debugfs::File<FaultAttr>>>,
    /// The engine works late, by `fault_delay_us`, on the pages it translated: an invalidation
    /// meanwhile waits for it.
    delay_engine: Pin<KBox<debugfs::File<FaultAttr>>>,
    /// The delay of `delay_fault` and `delay_engine` in microseconds, up to
    /// `MAX_FAULT_DELAY_US`.
    fault_delay_us: Pin<KBox<debugfs::File<Atomic<u32>>>>,
}

impl Faults {
    /// The faults of a device, with their knobs in `dir`.
    fn new(dir: &debugfs::Dir) -> Result<Self> {
        let attr = |name| KBox::pin_init(dir.fault_attr(name, FaultAttr::new()), GFP_KERNEL);
        Ok(Self {
            fail_alloc: attr(c"fail_alloc")?,
            fail_copy: attr(c"fail_copy")?,
            partial_migration: attr(c"partial_migration")?,
            delay_fault: attr(c"delay_fault")?,
            delay_engine: attr(c"delay_engine")?,
            fault_delay_us: KBox::pin_init(
                dir.read_write_file(c"fault_delay_us", Atomic::new(0u32)),
                GFP_KERNEL,
            )?,
        })
    }

    /// How late the GPU fault at hand is to be handled, if at all.
    pub(crate) fn fault_delay(&self) -> Option<Delta> {
        self.delay(&self.delay_fault)
    }

    /// How late the engine is to work on the pages it just translated, if at all.
    pub(crate) fn engine_delay(&self) -> Option<Delta> {
        self.delay(&self.delay_engine)
    }

    fn delay(&self, attr: &FaultAttr) -> Option<Delta> {
        if !attr.should_fail() {
            return None;
        }
        let us = self.fault_delay_us.load(Relaxed).min(MAX_FAULT_DELAY_US);
        Some(Delta::from_micros(us.into()))
    }
}

/// The backing pages of the VRAM of a device, page `i` backing its `i`-th device page.
type Backing = KVVec<Page>;

/// The devices of an interconnect group: their VRAM has one owner (the group, by address), and
/// each device reaches the VRAM of the others directly.
#[pin_data]
pub(crate) struct Group {
    /// The VRAM of each device of the group: its pfns and its backing pages. Looked up by the
    /// engines under their page tables' TLB locks, which invalidations take: nothing allocates
    /// under it (room for every device is made up front).
    #[pin]
    members: SpinLock<KVec<(Range<usize>, Arc<Backing>)>>,
}

impl Group {
    /// A group with no device yet, with room for `devices`.
    pub(crate) fn new(devices: usize) -> Result<Arc<Self>> {
        let members = KVec::with_capacity(devices, GFP_KERNEL)?;
        Arc::pin_init(
            pin_init!(Self {
                members <- new_spinlock!(members, "vsvm_group"),
            }),
            GFP_KERNEL,
        )
    }

    /// The owner of the VRAM of the group's devices. The VRAM holds the group: no other owner
    /// can take its address while a page of theirs is in use.
    pub(crate) fn owner(&self) -> DeviceOwner {
        DeviceOwner::from_ref(self)
    }

    /// Adds the VRAM `mem` of a device to the group. Fails with [`ENOSPC`] if the group has no
    /// room for another device.
    pub(crate) fn join(&self, mem: &DeviceMemory<Mirror>) -> Result {
        let backing = mem.device().backing.clone();
        self.members
            .lock()
            .push_within_capacity((mem.pfns(), backing))
            .map_err(|_| ENOSPC)
    }

    /// The VRAM of the group holding device page `pfn`: its pfns and its backing pages.
    fn member_of(&self, pfn: usize) -> Result<(Range<usize>, Arc<Backing>)> {
        let members = self.members.lock();
        let (pfns, backing) = members
            .iter()
            .find(|(pfns, _)| pfns.contains(&pfn))
            .ok_or(EINVAL)?;
        Ok((pfns.clone(), backing.clone()))
    }
}

/// The VRAM of a device.
pub(crate) struct Vram {
    buddy: GpuBuddy,
    backing: Arc<Backing>,
    group: Arc<Group>,
    shared: Arc<Shared>,
    queues: Arc<Queues>,
    pub(crate) faults: Faults,
}

impl Vram {
    /// `size` bytes of VRAM of a device of `group`, all free, zeroed: no stale kernel data can
    /// reach a process through it. Freed blocks go back to the allocator from `queues`; the knobs
    /// of its faults are in `dir`.
    pub(crate) fn new(
        size: usize,
        group: Arc<Group>,
        queues: Arc<Queues>,
        dir: &debugfs::Dir,
    ) -> Result<Self> {
        let npages = size / PAGE_SIZE;
        let mut backing = KVVec::with_capacity(npages, GFP_KERNEL)?;
        for _ in 0..npages {
            backing.push(Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?, GFP_KERNEL)?;
        }
        let buddy = GpuBuddy::new(GpuBuddyParams {
            base_offset: 0,
            // CAST: Memory sizes fit in 64 bits.
            size: size as u64,
            chunk_size: Alignment::new::<PAGE_SIZE>(),
        })?;
        let shared = Arc::pin_init(
            pin_init!(Shared {
                allocated <- new_mutex!(KVec::new(), "vsvm_vram_allocated"),
                freed <- new_condvar!("vsvm_vram_freed"),
                pending: Atomic::new(0),
                next_id: Atomic::new(1),
            }),
            GFP_KERNEL,
        )?;
        Ok(Self {
            buddy,
            backing: Arc::new(backing, GFP_KERNEL)?,
            group,
            shared,
            queues,
            faults: Faults::new(dir)?,
        })
    }

    /// Marks the allocation holding device page `pfn` of `mem` as the most recently used.
    pub(crate) fn touch(mem: &DeviceMemory<Mirror>, pfn: usize) {
        let mut allocated = mem.device().shared.allocated.lock();
        let Some(i) = allocated
            .iter()
            .position(|a| a.blocks.iter().any(|b| b.contains(&pfn)))
        else {
            return;
        };
        if i + 1 < allocated.len() {
            if let Ok(used) = allocated.remove(i) {
                // The room it left is reused: no allocation.
                let _ = allocated.push_within_capacity(used);
            }
        }
    }

    /// Evicts the least recently used allocations, at least `npages` pages of them, and waits
    /// until their blocks are back in the allocator. An allocation whose pages could not all
    /// move (busy) becomes the most recently used: the next attempt evicts others.
    fn evict_oldest(mem: &DeviceMemory<Mirror>, npages: usize) {
        let shared = &mem.device().shared;
        // The victims' blocks, taken out of their entries: an entry without blocks is being
        // evicted, and its free removes it from the list.
        let mut victims: KVec<(u64, KVec<Range<usize>>)> = KVec::new();
        {
            let mut allocated = shared.allocated.lock();
            let mut pages = 0;
            for a in allocated.iter_mut() {
                if pages >= npages {
                    break;
                }
                if a.blocks.is_empty() {
                    continue;
                }
                if victims.push((a.id, KVec::new()), GFP_KERNEL).is_err() {
                    break;
                }
                pages += a.pages();
                if let Some(victim) = victims.last_mut() {
                    core::mem::swap(&mut victim.1, &mut a.blocks);
                }
            }
        }
        for (_, blocks) in victims.iter() {
            let pages = blocks.iter().map(|b| b.end - b.start).sum();
            let Ok(mut pfns) = KVec::with_capacity(pages, GFP_KERNEL) else {
                continue;
            };
            for pfn in blocks.iter().flat_map(|b| b.clone()) {
                let _ = pfns.push_within_capacity(pfn);
            }
            // Pages that are busy stay.
            let _ = mem.evict(&pfns);
        }
        let mut allocated = shared.allocated.lock();
        // CAST: The wait is a fraction of a second.
        let mut left = msecs_to_jiffies(FREE_WAIT.as_millis() as u32);
        while shared.pending.load(Relaxed) > 0 {
            match shared
                .freed
                .wait_interruptible_timeout(&mut allocated, left)
            {
                CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
                _ => break,
            }
        }
        for (id, blocks) in victims {
            let Some(i) = allocated.iter().position(|a| a.id == id) else {
                // Freed.
                continue;
            };
            if let Ok(mut busy) = allocated.remove(i) {
                busy.blocks = blocks;
                // The room it left is reused: no allocation.
                let _ = allocated.push_within_capacity(busy);
            }
        }
    }

    /// The system page backing device page `pfn` of `mem`.
    pub(crate) fn backing<'a>(mem: &'a DeviceMemory<Mirror>, pfn: usize) -> Result<&'a Page> {
        let idx = pfn.checked_sub(mem.pfns().start).ok_or(EINVAL)?;
        mem.device().backing.get(idx).ok_or(EINVAL)
    }

    /// Runs `f` on the system page backing device page `pfn`, of `mem` or of a peer of its
    /// group.
    pub(crate) fn with_backing<R>(
        mem: &DeviceMemory<Mirror>,
        pfn: usize,
        f: impl FnOnce(&Page) -> Result<R>,
    ) -> Result<R> {
        if let Ok(page) = Self::backing(mem, pfn) {
            return f(page);
        }
        let (pfns, backing) = mem.device().group.member_of(pfn)?;
        f(backing.get(pfn - pfns.start).ok_or(EINVAL)?)
    }

    /// Allocates `npages` pages of `mem`.
    pub(crate) fn alloc(
        mem: &DeviceMemory<Mirror>,
        npages: usize,
    ) -> Result<(VramBlocks, FreePages)> {
        if mem.device().faults.fail_alloc.should_fail() {
            return Err(ENOSPC);
        }
        // CAST: Memory sizes fit in 64 bits.
        let size = (npages * PAGE_SIZE) as u64;
        // Whole 2M blocks where the size allows, for huge pages to move as one folio; smaller
        // blocks when no such block is free.
        let huge = npages % (SZ_2M / PAGE_SIZE) == 0;
        let mut attempt = 0;
        let blocks = loop {
            let blocks = match Self::alloc_blocks(mem, size, huge) {
                Err(_) if huge => Self::alloc_blocks(mem, size, false),
                blocks => blocks,
            };
            match blocks {
                Ok(blocks) => break blocks,
                Err(_) if attempt < EVICT_ATTEMPTS => {
                    attempt += 1;
                    Self::evict_oldest(mem, npages);
                }
                Err(_) => return Err(ENOSPC),
            }
        };
        let mut pfns = KVec::with_capacity(npages, GFP_KERNEL)?;
        let mut ranges = KVec::new();
        for block in blocks.iter() {
            // CAST: Offsets and sizes are below the VRAM size, which fits in `usize`.
            let first = mem.pfns().start + block.offset() as usize / PAGE_SIZE;
            let range = first..first + block.size() as usize / PAGE_SIZE;
            // Room checked once a block, not once a page.
            pfns.reserve(range.len(), GFP_KERNEL)?;
            for pfn in range.clone() {
                pfns.push_within_capacity(pfn).map_err(|_| ENOMEM)?;
            }
            ranges.push(range, GFP_KERNEL)?;
        }
        let shared = mem.device().shared.clone();
        let id = shared.next_id.fetch_add(1, Relaxed);
        shared
            .allocated
            .lock()
            .push(Allocated { id, blocks: ranges }, GFP_KERNEL)?;
        let free = KBox::pin_init(
            pin_init!(FreeBlocks {
                work <- new_work!("vsvm_free_vram"),
                blocks,
                id,
                shared,
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: The buddy allocator gave these pages of `mem` to this allocation alone; they go
        // back to it only after the `VramBlocks` returned with them is dropped.
        let pfns = unsafe { FreePages::new(pfns) };
        let blocks = VramBlocks {
            free: Some(free),
            queues: mem.device().queues.clone(),
        };
        Ok((blocks, pfns))
    }

    /// Allocates `size` bytes of `mem` from the buddy allocator, in blocks of 2M or more if
    /// `huge`.
    fn alloc_blocks(
        mem: &DeviceMemory<Mirror>,
        size: u64,
        huge: bool,
    ) -> Result<Pin<KBox<AllocatedBlocks>>> {
        let block = if huge {
            Alignment::new::<SZ_2M>()
        } else {
            Alignment::new::<PAGE_SIZE>()
        };
        KBox::pin_init(
            mem.device().buddy.alloc_blocks(
                GpuBuddyAllocMode::Simple,
                size,
                block,
                GpuBuddyAllocFlags::default(),
            ),
            GFP_KERNEL,
        )
    }

    /// Copies system pages (or zeroes, for holes) to device pages `dst` of `mem`.
    pub(crate) fn copy_in(
        mem: &DeviceMemory<Mirror>,
        dst: &[usize],
        src: &[Option<BorrowedPage<'_>>],
    ) -> Result {
        if mem.device().faults.fail_copy.should_fail() {
            return Err(EIO);
        }
        for (&pfn, page) in dst.iter().zip(src) {
            let vram = Self::backing(mem, pfn)?;
            match page {
                // SAFETY: The backing page of a device page being filled is not used elsewhere;
                // the source page is locked and unmapped for the migration.
                Some(page) => unsafe { vram.copy_from(page) },
                // SAFETY: As above.
                None => unsafe { vram.fill_zero_raw(0, PAGE_SIZE)? },
            }
        }
        Ok(())
    }

    /// Copies device pages `src` of peers of `mem` to its device pages `dst`, over the
    /// simulated interconnect.
    pub(crate) fn copy_from_peer(
        mem: &DeviceMemory<Mirror>,
        dst: &[usize],
        src: &[usize],
    ) -> Result {
        if mem.device().faults.fail_copy.should_fail() {
            return Err(EIO);
        }
        // The pages of a migration mostly come from one peer: looked up again only on a change.
        let mut peer: Option<(Range<usize>, Arc<Backing>)> = None;
        for (&to, &from) in dst.iter().zip(src) {
            let vram = Self::backing(mem, to)?;
            if !peer.as_ref().is_some_and(|(pfns, _)| pfns.contains(&from)) {
                peer = Some(mem.device().group.member_of(from)?);
            }
            let (pfns, backing) = peer.as_ref().ok_or(EINVAL)?;
            let page = backing.get(from - pfns.start).ok_or(EINVAL)?;
            // SAFETY: The backing page of a device page being filled is not used elsewhere; the
            // source device page is locked and unmapped for the migration: nobody writes it.
            unsafe { vram.copy_from(page) };
        }
        Ok(())
    }

    /// Copies device pages `src` of `mem` to system pages.
    pub(crate) fn copy_out(
        mem: &DeviceMemory<Mirror>,
        src: &[usize],
        dst: &[NewPage<'_>],
    ) -> Result {
        for (&pfn, page) in src.iter().zip(dst) {
            let vram = Self::backing(mem, pfn)?;
            // SAFETY: The pages of a migration are locked and unmapped: nobody else reads or
            // writes the new system page, nor writes the device page, meanwhile.
            unsafe { page.copy_from(vram) };
        }
        Ok(())
    }
}

/// An allocation of VRAM. Its last page may be freed in atomic context, and the buddy allocator
/// sleeps: the blocks go back from a work item, allocated with them, on the driver's queue of
/// frees (which the work item itself does not hold: it may outlive the module's reference).
pub(crate) struct VramBlocks {
    free: Option<Pin<KBox<FreeBlocks>>>,
    queues: Arc<Queues>,
}

impl Drop for VramBlocks {
    fn drop(&mut self) {
        if let Some(free) = self.free.take() {
            free.shared.pending.fetch_add(1, Relaxed);
            self.queues.frees.enqueue(free);
        }
    }
}

/// Blocks to give back to the buddy allocator from process context.
#[pin_data]
pub(crate) struct FreeBlocks {
    #[pin]
    work: Work<FreeBlocks>,
    blocks: Pin<KBox<AllocatedBlocks>>,
    id: u64,
    shared: Arc<Shared>,
}

impl_has_work! {
    impl HasWork<Self> for FreeBlocks { self.work }
}

impl WorkItem for FreeBlocks {
    type Pointer = Pin<KBox<Self>>;

    fn run(this: Pin<KBox<Self>>) {
        let shared = this.shared.clone();
        shared.allocated.lock().retain(|a| a.id != this.id);
        // The blocks go back to the allocator here.
        drop(this);
        if shared.pending.fetch_sub(1, Relaxed) == 1 {
            // Under the lock, which a waiter holds from its check of `pending` until it sleeps.
            let _guard = shared.allocated.lock();
            shared.freed.notify_all();
        }
    }
}
