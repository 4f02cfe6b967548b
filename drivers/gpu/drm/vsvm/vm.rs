// SPDX-License-Identifier: GPL-2.0

//! A VM of the simulated GPU: its GPU SVM, its page table, and the engine that runs jobs through
//! the page table, resolving its page faults through the GPU SVM layer.

use core::ops::Range as Span;
use kernel::{
    drm::gpusvm::{
        AtomicPolicy,
        ChunkSizes,
        DeviceMemory,
        Driver,
        Fault,
        FreePages,
        GpuSvm,
        Range, //
    },
    mm::{
        mmu_notifier::Event,
        DeviceOwner,
        MmWithUser, //
    },
    new_mutex,
    page::{
        BorrowedPage,
        PAGE_SIZE, //
    },
    prelude::*,
    rbtree::RBTreeNodeReservation,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Mutex,
    },
    uapi,
};

use crate::pt::{
    Mapping,
    PageTable,
    Pte, //
};

const SZ_64K: usize = 64 * 1024;
const SZ_2M: usize = 2 * 1024 * 1024;

/// The notifier size: the span of process address space one mmu notifier covers.
const NOTIFIER_SIZE: usize = 1 << 29;

/// How many times the engine faults on one access before it gives up on it.
const MAX_FAULTS_PER_ACCESS: u32 = 16;

/// The bytes the engine moves at a time.
const BURST: usize = 256;

/// What the engine needs of a page.
#[derive(Clone, Copy, PartialEq)]
enum Access {
    Read,
    Write,
    Atomic,
}

impl Access {
    fn allowed(self, pte: &Pte) -> bool {
        match self {
            Access::Read => true,
            Access::Write => pte.writable,
            Access::Atomic => pte.writable && pte.atomic,
        }
    }

    fn fault<'a>(self) -> Fault<'a, Mirror> {
        match self {
            Access::Read => Fault::read(),
            Access::Write => Fault::write(),
            Access::Atomic => Fault::atomic(AtomicPolicy::Exclusive, None),
        }
    }
}

/// The GPU side of a VM's GPU SVM: the page table.
#[pin_data]
pub(crate) struct Mirror {
    #[pin]
    pt: Mutex<PageTable>,
    gpu_faults: Atomic<u64>,
}

impl Driver for Mirror {
    // No device memory yet: ranges stay in system memory.
    type Device = ();
    type Allocation = ();

    fn invalidate(&self, _range: &Range<Self>, span: Span<usize>, _event: Event) {
        // The engine accesses memory with the page table locked: once this returns, it cannot
        // reach the pages of `span` any more (the simulated TLB flush).
        self.pt.lock().zap(&span);
    }

    fn alloc_devmem(_mem: &DeviceMemory<Self>, _npages: usize) -> Result<((), FreePages)> {
        Err(ENOSPC)
    }

    fn copy_to_vram(
        _mem: &DeviceMemory<Self>,
        _dst: &[usize],
        _src: &[Option<BorrowedPage<'_>>],
    ) -> Result {
        Err(ENODEV)
    }

    fn copy_to_sram(
        _mem: &DeviceMemory<Self>,
        _src: &[usize],
        _dst: &[BorrowedPage<'_>],
    ) -> Result {
        Err(ENODEV)
    }
}

/// A VM: a GPU address space mirroring `span` of a process.
pub(crate) struct Vm {
    id: u32,
    span: Span<usize>,
    svm: Pin<KBox<GpuSvm<Mirror>>>,
}

impl Vm {
    /// A VM with id `id` mirroring `span` of `mm`, whose device pages `owner` names.
    pub(crate) fn new(
        id: u32,
        mm: &MmWithUser,
        span: Span<usize>,
        owner: DeviceOwner,
    ) -> Result<Self> {
        let chunks = ChunkSizes::new(&[SZ_2M, SZ_64K, PAGE_SIZE])?.present_only_up_to(SZ_64K)?;
        let mirror = pin_init!(Mirror {
            pt <- new_mutex!(PageTable::new(), "vsvm_page_table"),
            gpu_faults: Atomic::new(0),
        });
        let svm = KBox::pin_init(
            GpuSvm::new(mm, span.clone(), NOTIFIER_SIZE, chunks, owner, mirror)?,
            GFP_KERNEL,
        )?;
        Ok(Self { id, span, svm })
    }

    /// The id of the VM in its file.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Resolves a GPU fault at `addr`: finds or inserts the range, reads its pages and binds
    /// them, with the proof that they are still valid.
    fn resolve(&self, addr: usize, access: Access) -> Result {
        let svm = &self.svm;
        svm.collect_garbage();
        let range = svm.find_or_insert(addr, self.span.clone())?;
        let fault = access.fault();
        for _ in 0..MAX_FAULTS_PER_ACCESS {
            svm.get_pages(&range, &fault)?;
            // Allocated before the locks: the page table lock is taken in `invalidate`.
            let mut mapping = Mapping::new(range.span().start, range.npages())?;
            let node = RBTreeNodeReservation::new(GFP_KERNEL)?;
            let guard = svm.notifier_read();
            let Some(valid) = svm.pages_valid(&range, &guard) else {
                // Invalidated since the pages were read: read them again.
                continue;
            };
            mapping.fill(valid.pfns(), valid.atomic())?;
            svm.driver().pt.lock().bind(mapping, node);
            return Ok(());
        }
        Err(EAGAIN)
    }

    /// Runs `f` on the page at `addr` with the access `access`, faulting it in as needed. `f`
    /// runs with the page table locked, so no invalidation can take the page away meanwhile.
    fn access<R>(
        &self,
        addr: usize,
        access: Access,
        f: impl FnOnce(&BorrowedPage<'_>, usize) -> Result<R>,
    ) -> Result<R> {
        let mirror = self.svm.driver();
        let page_addr = addr & !(PAGE_SIZE - 1);
        for _ in 0..MAX_FAULTS_PER_ACCESS {
            {
                let pt = mirror.pt.lock();
                if let Some(pte) = pt.lookup(page_addr).filter(|p| access.allowed(p)) {
                    // SAFETY: The entry is in the page table, whose lock is held: the page cannot
                    // be freed before an invalidation zaps the entry, which needs the lock.
                    let page = unsafe { pte.pfn.page() }.ok_or(EFAULT)?;
                    return f(&page, addr - page_addr);
                }
            }
            mirror.gpu_faults.fetch_add(1, Relaxed);
            match self.resolve(page_addr, access) {
                // No mapping there, or outside the VM: a bad address.
                Err(e) if e == ENOENT => return Err(EFAULT),
                res => res?,
            }
        }
        Err(EAGAIN)
    }

    /// The engine: runs one operation. Returns its result.
    pub(crate) fn run(&self, op: &uapi::drm_vsvm_op) -> Result<u64> {
        match op.kind {
            uapi::drm_vsvm_op_kind_DRM_VSVM_OP_WRITE => {
                // CAST: The low byte is the value to write.
                let bytes = [op.value as u8; BURST];
                self.for_each_burst(op.addr, op.size, |addr, len| {
                    self.access(addr, Access::Write, |page, off| {
                        // SAFETY: `bytes` is valid for reads of `len <= BURST` bytes.
                        unsafe { page.write_raw(bytes.as_ptr(), off, len) }
                    })
                })?;
                Ok(0)
            }
            uapi::drm_vsvm_op_kind_DRM_VSVM_OP_READ => {
                let mut sum = 0u64;
                self.for_each_burst(op.addr, op.size, |addr, len| {
                    let mut bytes = [0u8; BURST];
                    self.access(addr, Access::Read, |page, off| {
                        // SAFETY: `bytes` is valid for writes of `len <= BURST` bytes.
                        unsafe { page.read_raw(bytes.as_mut_ptr(), off, len) }
                    })?;
                    sum += bytes[..len].iter().map(|&b| u64::from(b)).sum::<u64>();
                    Ok(())
                })?;
                Ok(sum)
            }
            uapi::drm_vsvm_op_kind_DRM_VSVM_OP_ATOMIC_ADD => {
                let addr = usize::try_from(op.addr)?;
                self.access(addr, Access::Atomic, |page, off| {
                    let mut word = [0u8; 8];
                    // SAFETY: `word` is valid for 8 bytes; the word lies in the page (aligned).
                    unsafe { page.read_raw(word.as_mut_ptr(), off, 8)? };
                    let old = u64::from_ne_bytes(word);
                    let new = old.wrapping_add(op.value).to_ne_bytes();
                    // SAFETY: As above.
                    unsafe { page.write_raw(new.as_ptr(), off, 8)? };
                    Ok(old)
                })
            }
            uapi::drm_vsvm_op_kind_DRM_VSVM_OP_COPY => {
                let delta = op.src.wrapping_sub(op.addr);
                self.for_each_burst(op.addr, op.size, |dst, len| {
                    // CAST: `src + size` was checked not to overflow.
                    let src = dst.wrapping_add(delta as usize);
                    let mut bytes = [0u8; BURST];
                    // The source may cross a page where the destination does not.
                    let first = len.min(PAGE_SIZE - src % PAGE_SIZE);
                    for (at, n) in [(0, first), (first, len - first)] {
                        if n > 0 {
                            self.access(src + at, Access::Read, |page, off| {
                                // SAFETY: `bytes[at..]` is valid for writes of `n` bytes.
                                unsafe { page.read_raw(bytes[at..].as_mut_ptr(), off, n) }
                            })?;
                        }
                    }
                    self.access(dst, Access::Write, |page, off| {
                        // SAFETY: `bytes` is valid for reads of `len <= BURST` bytes.
                        unsafe { page.write_raw(bytes.as_ptr(), off, len) }
                    })
                })?;
                Ok(0)
            }
            _ => Err(EINVAL),
        }
    }

    /// Calls `f` on the pieces of `[addr, addr + size)` that lie in one page and fit a burst.
    fn for_each_burst(
        &self,
        addr: u64,
        size: u64,
        mut f: impl FnMut(usize, usize) -> Result,
    ) -> Result {
        let mut at = usize::try_from(addr)?;
        let end = at.checked_add(usize::try_from(size)?).ok_or(EINVAL)?;
        while at < end {
            let len = (end - at).min(BURST).min(PAGE_SIZE - at % PAGE_SIZE);
            f(at, len)?;
            at += len;
        }
        Ok(())
    }

    /// Fills the counters of `stats`.
    pub(crate) fn stats(&self, stats: &mut uapi::drm_vsvm_stats) {
        let s = self.svm.stats();
        stats.gpu_faults = self.svm.driver().gpu_faults.load(Relaxed);
        stats.faults_2m = s.faults[0].get();
        stats.faults_64k = s.faults[1].get();
        stats.faults_4k = s.faults[2].get();
        stats.retries = s.retries.get();
        stats.invalidations = s.invalidations.get();
        stats.gc_runs = s.gc_runs.get();
        stats.gc_ranges = s.gc_ranges.get();
        // CAST: Counts of objects in memory fit in 64 bits.
        stats.ranges = self.svm.count().0 as u64;
        stats.bound_pages = self.svm.driver().pt.lock().bound() as u64;
    }
}
