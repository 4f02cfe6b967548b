// SPDX-License-Identifier: GPL-2.0

//! Simulated VRAM: device-private pages, each backed by a system page that a simulated copy
//! engine reads and writes with the CPU, allocated with the GPU buddy allocator. When an
//! allocation does not fit, the least recently used allocations are evicted to system memory
//! first; the GPU fault handler marks the allocations it maps as used.

use kernel::{
    drm::gpusvm::{
        DeviceMemory,
        FreePages, //
    },
    gpu::buddy::{
        AllocatedBlocks,
        GpuBuddy,
        GpuBuddyAllocFlags,
        GpuBuddyAllocMode,
        GpuBuddyParams, //
    },
    impl_has_work, new_mutex, new_work,
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
        Mutex, //
    },
    time::{
        delay::fsleep,
        Delta,
        Instant,
        Monotonic, //
    },
    workqueue::{
        self,
        Work,
        WorkItem, //
    },
};

use crate::vm::Mirror;

/// How many times an allocation evicts older ones before it gives up.
const EVICT_ATTEMPTS: u32 = 4;

/// How long an allocation waits for evicted blocks to come back to the allocator.
const FREE_WAIT: Delta = Delta::from_millis(500);

/// An allocation, in allocation order, for eviction: its id and its pages, sorted.
struct Allocated {
    id: u64,
    pfns: KVec<usize>,
}

/// What the allocations and the work items that free them share.
#[pin_data]
struct Shared {
    /// The allocations not freed yet, least recently used first.
    #[pin]
    allocated: Mutex<KVec<Allocated>>,
    /// Frees queued and not run yet.
    pending: Atomic<u64>,
    next_id: Atomic<u64>,
}

/// Faults to inject, for tests: counts of operations to fail, and a delay.
pub(crate) struct Inject {
    pub(crate) fail_allocs: Atomic<u32>,
    pub(crate) fail_copies: Atomic<u32>,
    pub(crate) fault_delay_us: Atomic<u32>,
    pub(crate) partial_migrations: Atomic<u32>,
}

impl Inject {
    /// Takes one from `count` if it is not zero; returns whether it was.
    pub(crate) fn take(count: &Atomic<u32>) -> bool {
        let mut left = count.load(Relaxed);
        while left > 0 {
            match count.cmpxchg(left, left - 1, Relaxed) {
                Ok(_) => return true,
                Err(now) => left = now,
            }
        }
        false
    }
}

/// The VRAM of a device.
pub(crate) struct Vram {
    buddy: GpuBuddy,
    backing: KVVec<Page>,
    shared: Arc<Shared>,
    pub(crate) inject: Inject,
}

impl Vram {
    /// `size` bytes of VRAM, all free.
    pub(crate) fn new(size: usize) -> Result<Self> {
        let npages = size / PAGE_SIZE;
        let mut backing = KVVec::with_capacity(npages, GFP_KERNEL)?;
        for _ in 0..npages {
            backing.push(Page::alloc_page(GFP_KERNEL)?, GFP_KERNEL)?;
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
                pending: Atomic::new(0),
                next_id: Atomic::new(1),
            }),
            GFP_KERNEL,
        )?;
        Ok(Self {
            buddy,
            backing,
            shared,
            inject: Inject {
                fail_allocs: Atomic::new(0),
                fail_copies: Atomic::new(0),
                fault_delay_us: Atomic::new(0),
                partial_migrations: Atomic::new(0),
            },
        })
    }

    /// Marks the allocation holding device page `pfn` of `mem` as the most recently used.
    pub(crate) fn touch(mem: &DeviceMemory<Mirror>, pfn: usize) {
        let mut allocated = mem.device().shared.allocated.lock();
        let Some(i) = allocated
            .iter()
            .position(|a| a.pfns.binary_search(&pfn).is_ok())
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
    /// until their blocks are back in the allocator.
    fn evict_oldest(mem: &DeviceMemory<Mirror>, npages: usize) {
        let shared = &mem.device().shared;
        let mut victims = KVec::new();
        {
            let mut allocated = shared.allocated.lock();
            let mut pages = 0;
            while pages < npages && !allocated.is_empty() {
                let oldest = allocated.remove(0);
                let Ok(oldest) = oldest else { break };
                pages += oldest.pfns.len();
                if victims.push(oldest, GFP_KERNEL).is_err() {
                    break;
                }
            }
        }
        for victim in victims.iter() {
            // Pages that are busy stay; the next attempt evicts more.
            let _ = mem.evict(&victim.pfns);
        }
        let waited = Instant::<Monotonic>::now();
        while shared.pending.load(Relaxed) > 0 && waited.elapsed() < FREE_WAIT {
            fsleep(Delta::from_millis(1));
        }
    }

    /// The system page backing device page `pfn` of `mem`.
    pub(crate) fn backing<'a>(mem: &'a DeviceMemory<Mirror>, pfn: usize) -> Result<&'a Page> {
        let idx = pfn.checked_sub(mem.pfns().start).ok_or(EINVAL)?;
        mem.device().backing.get(idx).ok_or(EINVAL)
    }

    /// Allocates `npages` pages of `mem`.
    pub(crate) fn alloc(
        mem: &DeviceMemory<Mirror>,
        npages: usize,
    ) -> Result<(VramBlocks, FreePages)> {
        if Inject::take(&mem.device().inject.fail_allocs) {
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
        for block in blocks.iter() {
            // CAST: Offsets and sizes are below the VRAM size, which fits in `usize`.
            let first = mem.pfns().start + block.offset() as usize / PAGE_SIZE;
            for pfn in first..first + block.size() as usize / PAGE_SIZE {
                pfns.push(pfn, GFP_KERNEL)?;
            }
        }
        let shared = mem.device().shared.clone();
        let id = shared.next_id.fetch_add(1, Relaxed);
        let mut copy = KVec::with_capacity(pfns.len(), GFP_KERNEL)?;
        copy.extend_from_slice(&pfns, GFP_KERNEL)?;
        // Sorted, so that `touch` finds a page fast.
        copy.sort_unstable();
        shared
            .allocated
            .lock()
            .push(Allocated { id, pfns: copy }, GFP_KERNEL)?;
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
        Ok((VramBlocks(Some(free)), pfns))
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
        if Inject::take(&mem.device().inject.fail_copies) {
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

    /// Copies device pages `src` of `mem` to system pages.
    pub(crate) fn copy_out(
        mem: &DeviceMemory<Mirror>,
        src: &[usize],
        dst: &[BorrowedPage<'_>],
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
/// sleeps: the blocks go back from a work item, allocated with them.
pub(crate) struct VramBlocks(Option<Pin<KBox<FreeBlocks>>>);

impl Drop for VramBlocks {
    fn drop(&mut self) {
        if let Some(free) = self.0.take() {
            free.shared.pending.fetch_add(1, Relaxed);
            workqueue::system_dfl().enqueue(free);
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
        shared.pending.fetch_sub(1, Relaxed);
    }
}
