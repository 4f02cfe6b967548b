// SPDX-License-Identifier: GPL-2.0

//! A VM of the simulated GPU: its GPU SVM, its page table, and the engine that runs jobs through
//! the page table, resolving its page faults through the GPU SVM layer.

use core::{
    iter,
    ops::Range as Span, //
};
use kernel::{
    drm::gpusvm::{
        AtomicPolicy,
        ChunkSizes,
        CpuAccess,
        DeviceMemory,
        Driver,
        Fault,
        FreePages,
        GpuSvm,
        NewPage,
        Range, //
    },
    mm::{
        mmu_notifier::Event,
        Mm,
        MmWithUser, //
    },
    new_condvar,
    new_mutex,
    new_rwsem,
    page::{
        BorrowedPage,
        Page,
        PAGE_SIZE, //
    },
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        CondVar,
        Mutex,
        RwSemaphore, //
    },
    time::delay::fsleep,
    uapi, //
};

use crate::{
    driver::Queues,
    job::{
        Job,
        Op,
        Outcome, //
    },
    pt::{
        Bound,
        Leaves,
        PageTable,
        Pte,
        LEAF_SIZE, //
    },
    vram::{
        Vram,
        VramBlocks, //
    },
};

/// The notifier size: the span of process address space one mmu notifier covers.
const NOTIFIER_SIZE: usize = 1 << 29;

/// The aligned block around a GPU fault whose CPU-present pages the fault handler maps too, when
/// the faulting range is smaller and the GPU walks through memory (see [`Vm::fault_around`]): a
/// leaf table's, in runs of [`GpuSvm::RUN_BLOCK`] bytes.
const FAULT_AROUND: usize = LEAF_SIZE;

/// How many times the engine faults on one access before it gives up on it.
const MAX_FAULTS_PER_ACCESS: u32 = 16;

/// The bytes the engine moves at a time.
const BURST: usize = 256;

/// The pages an engine translates at a time, and works on before it translates more: its TLB.
/// An invalidation waits for an engine's work on no more.
const TLB_ENTRIES: usize = 32;

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

    fn fault<'a>(self, attrs: &Attrs, vram: &'a DeviceMemory<Mirror>) -> Fault<'a, Mirror> {
        match self {
            Access::Read => Fault::read(),
            Access::Write => Fault::write(),
            Access::Atomic => Fault::atomic(attrs.atomic, Some(vram)),
        }
    }
}

/// The addresses an operation works on.
fn op_span(op: &uapi::drm_vsvm_op) -> Result<Span<usize>> {
    let start = usize::try_from(op.addr)?;
    Ok(start..start.checked_add(usize::try_from(op.size)?).ok_or(EINVAL)?)
}

/// Runs `f` on the words of `page` that bytes `span` of it overlap, and the offset of the first:
/// the engine accesses memory in place, a word at a time with atomic operations, as user space
/// and the engines of other devices may access it meanwhile.
///
/// # Safety
///
/// No kernel code may access `page` other than with atomic operations until this returns: the
/// caller holds the TLB lock of the page table that maps it (see [`Vm::access_pages`]).
unsafe fn with_words<R>(
    page: &Page,
    span: &Span<usize>,
    f: impl FnOnce(&[Atomic<u64>], usize) -> R,
) -> Result<R> {
    let start = span.start & !7;
    let end = span.end.checked_next_multiple_of(8).ok_or(EINVAL)?;
    // SAFETY: The engines access the pages they map with atomic operations only, and by the
    // function's contract nothing else of the kernel does meanwhile: the layer copies a page to
    // migrate it, or frees it, only after an invalidation zapped its entry and took the TLB lock.
    unsafe { page.with_atomic_words(start, end.saturating_sub(start), |words| f(words, start)) }
}

/// The mask of the bytes of the word at byte `at` of a page that lie in `span`.
fn byte_mask(at: usize, span: &Span<usize>) -> u64 {
    // The first `n` bytes of a word in memory, as a little-endian mask.
    let first = |n: usize| match n {
        0 => 0,
        1..=7 => u64::MAX >> (64 - 8 * n),
        _ => u64::MAX,
    };
    let (from, to) = (span.start.saturating_sub(at), span.end.saturating_sub(at));
    u64::from_le(first(to) & !first(from))
}

/// Reads bytes `span` of `page` into `dst`, as long as `span`, a word at a time.
///
/// # Safety
///
/// As for [`with_words`].
unsafe fn load_bytes(page: &Page, span: Span<usize>, dst: &mut [u8]) -> Result {
    // SAFETY: The caller keeps the contract of `with_words`.
    unsafe {
        with_words(page, &span, |words, start| {
            for (at, word) in (start..).step_by(8).zip(words) {
                for (b, byte) in (at..).zip(word.load(Relaxed).to_ne_bytes()) {
                    if let Some(to) = b.checked_sub(span.start).and_then(|k| dst.get_mut(k)) {
                        *to = byte;
                    }
                }
            }
        })
    }
}

/// Writes `src`, as long as `span`, to bytes `span` of `page` (see [`store_words`]).
///
/// # Safety
///
/// As for [`with_words`].
unsafe fn store_bytes(page: &Page, span: Span<usize>, src: &[u8]) -> Result {
    let from = span.start;
    // SAFETY: The caller keeps the contract of `with_words`.
    unsafe {
        store_words(page, span, |at| {
            u64::from_ne_bytes(core::array::from_fn(|b| {
                let k = (at + b).checked_sub(from);
                k.and_then(|k| src.get(k)).copied().unwrap_or(0)
            }))
        })
    }
}

/// Writes bytes `span` of `page`, a word at a time: `word_at(at)` gives the word at byte `at`.
/// Its bytes outside `span` are left as they are.
///
/// # Safety
///
/// As for [`with_words`].
unsafe fn store_words(page: &Page, span: Span<usize>, word_at: impl Fn(usize) -> u64) -> Result {
    // Only the first and the last word can have bytes outside `span`: those keep what user space
    // or another engine writes there meanwhile.
    let merge = |word: &Atomic<u64>, at: usize| {
        let (mask, new) = (byte_mask(at, &span), word_at(at));
        let mut old = word.load(Relaxed);
        while let Err(now) = word.cmpxchg(old, (old & !mask) | (new & mask), Relaxed) {
            old = now;
        }
    };
    // SAFETY: The caller keeps the contract of `with_words`.
    unsafe {
        with_words(page, &span, |words, start| {
            let Some((first, rest)) = words.split_first() else {
                return;
            };
            merge(first, start);
            let Some((last, body)) = rest.split_last() else {
                return;
            };
            for (at, word) in (start + 8..).step_by(8).zip(body) {
                word.store(word_at(at), Relaxed);
            }
            merge(last, start + 8 * rest.len());
        })
    }
}

/// The bytes of a word as four 16-bit lanes, each the sum of two bytes.
fn lanes(w: u64) -> u64 {
    const LOW_BYTES: u64 = 0x00ff_00ff_00ff_00ff;
    (w & LOW_BYTES).wrapping_add((w >> 8) & LOW_BYTES)
}

/// The sum of the four lanes of `lanes`, which must not have carried over (below 65536).
fn lanes_sum(lanes: u64) -> u64 {
    lanes.wrapping_mul(0x0001_0001_0001_0001) >> 48
}

/// The sum of the bytes of at most a burst of `words`, eight at a time, as a GPU would add them
/// in parallel.
fn byte_sum(words: &[Atomic<u64>]) -> u64 {
    // Each lane adds up at most 2 * 32 bytes of 255: none carries over, so no addition wraps.
    // Wrapping adds only spare the overflow checks, which would double the instructions of the
    // loop; four words a round spare most of the loop's own.
    let mut quads = words.chunks_exact(4);
    let mut sum = 0u64;
    for quad in &mut quads {
        if let [a, b, c, d] = quad {
            let four = lanes(a.load(Relaxed))
                .wrapping_add(lanes(b.load(Relaxed)))
                .wrapping_add(lanes(c.load(Relaxed)).wrapping_add(lanes(d.load(Relaxed))));
            sum = sum.wrapping_add(four);
        }
    }
    for w in quads.remainder() {
        sum = sum.wrapping_add(lanes(w.load(Relaxed)));
    }
    lanes_sum(sum)
}

/// The sum of bytes `span` of `page`, read in place.
///
/// # Safety
///
/// As for [`with_words`].
unsafe fn page_sum(page: &Page, span: Span<usize>) -> Result<u64> {
    // SAFETY: The caller keeps the contract of `with_words`.
    unsafe {
        with_words(page, &span, |words, start| {
            let Some((first, rest)) = words.split_first() else {
                return 0;
            };
            // The first and the last word have their bytes outside `span` masked out.
            let (body, last) = match rest.split_last() {
                Some((last, body)) => (body, Some((last, start + 8 * rest.len()))),
                None => (rest, None),
            };
            let mut edges = lanes(first.load(Relaxed) & byte_mask(start, &span));
            if let Some((last, at)) = last {
                edges = edges.wrapping_add(lanes(last.load(Relaxed) & byte_mask(at, &span)));
            }
            lanes_sum(edges) + body.chunks(BURST / 8).map(byte_sum).sum::<u64>()
        })
    }
}

/// A GPU page fault in the fault queue: resolved by the fault handler, waited for by the engine.
#[pin_data]
struct PageFault {
    #[pin]
    result: Mutex<Option<Result>>,
    #[pin]
    resolved: CondVar,
}

/// The memory attributes of a span of a VM.
#[derive(Clone, Copy)]
pub(crate) struct Attrs {
    /// Whether GPU faults migrate the pages to VRAM.
    pub(crate) prefer_vram: bool,
    /// Where GPU atomics are done.
    pub(crate) atomic: AtomicPolicy,
}

impl Attrs {
    const DEFAULT: Self = Self {
        prefer_vram: false,
        atomic: AtomicPolicy::Exclusive,
    };
}

/// Spans with their attributes.
type AttrSpans = KVec<(Span<usize>, Attrs)>;

/// The asynchronous jobs of a VM not waited for yet, and the id the next one gets.
type Jobs = (KVec<Arc<Job>>, u64);

/// The most asynchronous jobs of a VM not waited for.
const MAX_JOBS: usize = uapi::DRM_VSVM_MAX_JOBS as usize;

/// The most attribute spans of a VM.
const MAX_ATTRS: usize = uapi::DRM_VSVM_MAX_ATTRS as usize;

/// The page table of a device, and the engines' hold on the pages they translated through it.
///
/// Two locks, so that a fault's bind never waits for another engine's work on its pages: the
/// table's is held briefly by lookups, binds and zaps; `tlb` is held for reading by each engine
/// across the pages of a batch of lookups (its TLB), and for writing by an invalidation after its
/// zap (the TLB flush), which so waits for every engine that may still work on a page it zapped.
#[pin_data]
struct DevicePageTable {
    #[pin]
    table: RwSemaphore<PageTable>,
    #[pin]
    tlb: RwSemaphore<()>,
}

impl DevicePageTable {
    fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            table <- new_rwsem!(PageTable::new(), "vsvm_page_table"),
            tlb <- new_rwsem!((), "vsvm_tlb"),
        })
    }
}

/// The GPU side of a VM's GPU SVM: a page table per device of the VM, in the VM's device order.
pub(crate) struct Mirror {
    pts: KVec<Pin<KBox<DevicePageTable>>>,
    gpu_faults: Atomic<u64>,
}

impl Mirror {
    /// The page table of the VM's device `dev`.
    fn pt(&self, dev: usize) -> Result<&DevicePageTable> {
        self.pts.get(dev).map(|pt| &**pt).ok_or(EINVAL)
    }
}

impl Driver for Mirror {
    type Device = Vram;
    type Allocation = VramBlocks;
    // The simulated engine copies with the CPU.
    type Access = CpuAccess;

    fn invalidate(&self, _range: &Range<Self>, device: usize, span: Span<usize>, _event: Event) {
        if let Ok(pt) = self.pt(device) {
            pt.table.write().zap(&span);
            // No engine translates an address of `span` any more; one may still work on a page it
            // translated before: wait for it.
            drop(pt.tlb.write());
        }
    }

    fn alloc_devmem(mem: &DeviceMemory<Self>, npages: usize) -> Result<(VramBlocks, FreePages)> {
        Vram::alloc(mem, npages)
    }

    fn copy_to_vram(
        mem: &DeviceMemory<Self>,
        dst: &[usize],
        src: &[Option<BorrowedPage<'_>>],
    ) -> Result {
        Vram::copy_in(mem, dst, src)
    }

    fn copy_to_sram(mem: &DeviceMemory<Self>, src: &[usize], dst: &[NewPage<'_>]) -> Result {
        Vram::copy_out(mem, src, dst)
    }

    fn copy_from_peer(mem: &DeviceMemory<Self>, dst: &[usize], src: &[usize]) -> Result {
        Vram::copy_from_peer(mem, dst, src)
    }
}

/// A device of a VM.
pub(crate) struct VmDevice {
    /// Its index among the vsvm devices (`vsvm<index>`), by which userspace names it.
    pub(crate) index: u32,
    /// Its memory.
    pub(crate) vram: Arc<DeviceMemory<Mirror>>,
    /// Where the fault handler's last mapping on this device ended: the next fault of a GPU
    /// walking forward through memory comes there.
    walk_end: Atomic<usize>,
}

impl VmDevice {
    pub(crate) fn new(index: u32, vram: Arc<DeviceMemory<Mirror>>) -> Self {
        Self {
            index,
            vram,
            walk_end: Atomic::new(0),
        }
    }
}

/// A VM: a GPU address space mirroring `span` of a process, on one device or several. The
/// operations name a device by its position in the VM (the file's device first).
pub(crate) struct Vm {
    id: u32,
    span: Span<usize>,
    devices: KVec<VmDevice>,
    chunks: ChunkSizes,
    /// The queues the engine's jobs and fault handling run on.
    queues: Arc<Queues>,
    /// Attribute spans; the last one containing an address applies there.
    attrs: Pin<KBox<Mutex<AttrSpans>>>,
    /// Asynchronous jobs not waited for yet, and the id the next one gets.
    jobs: Pin<KBox<Mutex<Jobs>>>,
    /// Set when the VM or its file goes: the engine stops its jobs at the next page.
    closing: Atomic<u32>,
    svm: Pin<KBox<GpuSvm<Mirror>>>,
}

impl Vm {
    /// A VM with id `id` mirroring `span` of `mm` on `devices` (at least one), running its work
    /// on `queues`.
    pub(crate) fn new(
        id: u32,
        mm: &MmWithUser,
        span: Span<usize>,
        devices: KVec<VmDevice>,
        chunks: ChunkSizes,
        queues: Arc<Queues>,
    ) -> Result<Self> {
        let mut owners = KVec::with_capacity(devices.len(), GFP_KERNEL)?;
        let mut pts = KVec::with_capacity(devices.len(), GFP_KERNEL)?;
        for device in devices.iter() {
            owners.push(device.vram.owner(), GFP_KERNEL)?;
            pts.push(
                KBox::pin_init(DevicePageTable::new(), GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        let mirror = Mirror {
            pts,
            gpu_faults: Atomic::new(0),
        };
        let svm = KBox::pin_init(
            GpuSvm::new(mm, span.clone(), NOTIFIER_SIZE, chunks, &owners, mirror)?,
            GFP_KERNEL,
        )?;
        let attrs = KBox::pin_init(
            new_mutex!(KVec::with_capacity(MAX_ATTRS, GFP_KERNEL)?, "vsvm_attrs"),
            GFP_KERNEL,
        )?;
        let jobs = KBox::pin_init(
            new_mutex!((KVec::with_capacity(MAX_JOBS, GFP_KERNEL)?, 1), "vsvm_jobs"),
            GFP_KERNEL,
        )?;
        Ok(Self {
            id,
            span,
            devices,
            chunks,
            queues,
            attrs,
            jobs,
            closing: Atomic::new(0),
            svm,
        })
    }

    /// The id of the VM in its file.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// The position in the VM of the vsvm device `index`; [`EINVAL`] if the VM does not span it.
    pub(crate) fn device_at(&self, index: u32) -> Result<usize> {
        self.devices
            .iter()
            .position(|d| d.index == index)
            .ok_or(EINVAL)
    }

    /// The VM's device `dev`.
    fn device(&self, dev: usize) -> Result<&VmDevice> {
        self.devices.get(dev).ok_or(EINVAL)
    }

    /// Whether the VM mirrors `mm`.
    pub(crate) fn mirrors(&self, mm: &Mm) -> bool {
        self.svm.mirrors(mm)
    }

    /// Resolves a GPU fault of device `dev` at `addr`: finds or inserts the range, reads its
    /// pages and binds them, with the proof that they are still valid.
    fn resolve(&self, dev: usize, addr: usize, access: Access) -> Result {
        let device = self.device(dev)?;
        if let Some(delay) = device.vram.device().faults.fault_delay() {
            fsleep(delay);
        }
        let svm = &self.svm;
        svm.collect_garbage();
        let range = svm.find_or_insert(addr, self.span.clone())?;
        let attrs = self.attrs_at(addr);
        if attrs.prefer_vram {
            // What cannot move is served from system memory.
            self.migrate(dev, &range);
        }
        let fault = access.fault(&attrs, &device.vram);
        for _ in 0..MAX_FAULTS_PER_ACCESS {
            let bound = match self.bind(dev, &range, &fault) {
                // Invalidations of the notifier (other threads faulting near) kept the read from
                // completing: fault again, as a GPU replays a fault it could not resolve.
                Err(e) if e == EBUSY => continue,
                bound => bound?,
            };
            let Some(bound) = bound else {
                // Invalidated since the pages were read: read them again.
                continue;
            };
            if let Some(pfn) = bound.in_vram {
                Vram::touch(&device.vram, pfn);
            }
            let mut end = range.span().end;
            let walking = addr == device.walk_end.load(Relaxed);
            if walking && access != Access::Atomic && !attrs.prefer_vram {
                end = self.fault_around(dev, &range);
            }
            device.walk_end.store(end, Relaxed);
            return Ok(());
        }
        Err(EAGAIN)
    }

    /// Reads the pages of `range` for `fault` by device `dev` and binds them, with the proof
    /// that they are still valid. Returns `None` if an invalidation came in between.
    fn bind(
        &self,
        dev: usize,
        range: &Range<Mirror>,
        fault: &Fault<'_, Mirror>,
    ) -> Result<Option<Bound>> {
        let svm = &self.svm;
        let pt = &svm.driver().pt(dev)?.table;
        svm.get_pages(range, dev, fault)?;
        // Allocated before the locks (and after the read lock for counting them goes): the page
        // table lock is taken in `invalidate`, which reclaim may call.
        let missing = pt.read().missing(&range.span());
        let mut leaves = Leaves::new(missing)?;
        let guard = svm.notifier_read();
        let Some(valid) = svm.pages_valid(range, dev, &guard) else {
            return Ok(None);
        };
        match pt
            .write()
            .bind(iter::once((range.span().start, valid)), &mut leaves)
        {
            // A zap freed a leaf table meanwhile: start again.
            Err(e) if e == EAGAIN => Ok(None),
            bound => Ok(Some(bound?)),
        }
    }

    /// Maps what the CPU has present of the ranges that follow `faulted` in its aligned block of
    /// [`FAULT_AROUND`] bytes, as the CPU's own fault-around does, for a fault where the last one's
    /// mapping ended (a GPU walking through memory in small ranges then faults once a block, not
    /// once a range; random accesses get nothing they did not ask for). It stops at the first
    /// range with nothing present, so that sparse accesses insert no ranges for nothing. Best
    /// effort: what fails here faults later. Returns where the mapping of device `dev` ends.
    fn fault_around(&self, dev: usize, faulted: &Range<Mirror>) -> usize {
        let block_end = (faulted.span().start | (FAULT_AROUND - 1)).saturating_add(1);
        let mut end = faulted.span().end;
        // Run by run; one that ends short of its block ended at a range with nothing present.
        while end < block_end {
            let run_end = (end | (GpuSvm::<Mirror>::RUN_BLOCK - 1)).saturating_add(1);
            let mapped = self.map_present_run(dev, end..block_end);
            if mapped != run_end {
                return mapped;
            }
            end = mapped;
        }
        end
    }

    /// Maps what the CPU has present of the ranges of one run ([`GpuSvm::get_pages_run`]) from
    /// `span.start` on; returns where the mapping ends.
    fn map_present_run(&self, dev: usize, span: Span<usize>) -> usize {
        let svm = &self.svm;
        let start = span.start;
        // One walk of the CPU page tables for the ranges of the run.
        let present = Fault::present();
        let Ok(run) = svm.get_pages_run(span, self.span.clone(), dev, &present) else {
            return start;
        };
        let (Ok(pt), Some(last)) = (svm.driver().pt(dev), run.last()) else {
            return start;
        };
        let pt = &pt.table;
        // Allocated before the locks, as in `bind`.
        let missing = pt.read().missing(&(start..last.span().end));
        let Ok(mut leaves) = Leaves::new(missing) else {
            return start;
        };
        let guard = svm.notifier_read();
        let valid = run.iter().map_while(|range| {
            let pages = svm.pages_valid(range, dev, &guard)?;
            Some((range.span().start, pages))
        });
        let bound = pt.write().bind(valid, &mut leaves);
        match bound {
            Ok(bound) => bound
                .ranges
                .checked_sub(1)
                .and_then(|last| run.get(last))
                .map_or(start, |last| last.span().end),
            Err(_) => start,
        }
    }

    /// Raises a GPU page fault of device `dev` at `addr` for `access` into the fault queue, and
    /// waits until the
    /// fault handler (a work item, as a fault interrupt's bottom half would be) resolved it. The
    /// work item runs on this CPU, as a bottom half runs on the CPU that took the interrupt: the
    /// engine sleeps meanwhile, and waking a worker on another CPU would cost an interrupt.
    fn raise_fault(self: &Arc<Self>, dev: usize, addr: usize, access: Access) -> Result {
        let fault = Arc::pin_init(
            pin_init!(PageFault {
                result <- new_mutex!(None, "vsvm_fault"),
                resolved <- new_condvar!("vsvm_fault_resolved"),
            }),
            GFP_KERNEL,
        )?;
        let (vm, raised) = (self.clone(), fault.clone());
        self.queues.faults.try_spawn(GFP_KERNEL, move || {
            let result = vm.resolve(dev, addr, access);
            *raised.result.lock() = Some(result);
            raised.resolved.notify_all();
        })?;
        let mut result = fault.result.lock();
        loop {
            if let Some(result) = result.take() {
                return result;
            }
            fault.resolved.wait(&mut result);
        }
    }

    /// Runs `f` on the page at `addr` with the access `access` by device `dev`, and the offset of
    /// `addr` in it, as [`Vm::access_pages`] does.
    fn access<R>(
        self: &Arc<Self>,
        dev: usize,
        addr: usize,
        access: Access,
        f: impl FnOnce(&Page, usize) -> Result<R>,
    ) -> Result<R> {
        let (mut f, mut result) = (Some(f), None);
        self.access_pages(dev, addr..addr.saturating_add(1), access, |page, part| {
            if let Some(f) = f.take() {
                result = Some(f(page, part.start)?);
            }
            Ok(())
        })?;
        result.ok_or(EFAULT)
    }

    /// Runs `f` on each page that `span` overlaps with the access `access` by device `dev`, and
    /// the part of `span` in it (offsets into the page), faulting pages in as needed. The engine
    /// translates up to [`TLB_ENTRIES`] pages at a time, then works on them holding the page
    /// table's TLB lock, so that no invalidation takes them away meanwhile. A fault of another
    /// engine still binds in the meantime: it takes only the table's lock.
    fn access_pages(
        self: &Arc<Self>,
        dev: usize,
        span: Span<usize>,
        access: Access,
        mut f: impl FnMut(&Page, Span<usize>) -> Result,
    ) -> Result {
        let mirror = self.svm.driver();
        let (pt, vram) = (mirror.pt(dev)?, &self.device(dev)?.vram);
        let (mut at, mut faults) = (span.start, 0);
        let mut tlb = [Pte::default(); TLB_ENTRIES];
        while at < span.end {
            if self.closing.load(Relaxed) != 0 {
                return Err(ENODEV);
            }
            let first = at & !(PAGE_SIZE - 1);
            let flush = pt.tlb.read();
            let (mut entries, mut missing) = (0, None);
            {
                let table = pt.table.read();
                for (k, entry) in tlb.iter_mut().enumerate() {
                    let page_addr = first.saturating_add(k * PAGE_SIZE);
                    if page_addr >= span.end {
                        break;
                    }
                    let Some(pte) = table.lookup(page_addr).filter(|p| access.allowed(p)) else {
                        missing = Some(page_addr);
                        break;
                    };
                    (*entry, entries) = (pte, k + 1);
                }
            }
            if entries > 0 {
                if let Some(delay) = vram.device().faults.engine_delay() {
                    fsleep(delay);
                }
            }
            for (k, pte) in tlb.iter().take(entries).enumerate() {
                let page_addr = first.saturating_add(k * PAGE_SIZE);
                let end = span.end.min(page_addr.saturating_add(PAGE_SIZE));
                let part = at - page_addr..end - page_addr;
                if pte.vram {
                    // In VRAM, its own or a peer's: the engine works on its backing page.
                    let pfn = pte.pfn.pfn().ok_or(EFAULT)?;
                    Vram::with_backing(vram, pfn, |page| f(page, part))?;
                } else {
                    // SAFETY: The entry was in the page table after `flush` was taken, and
                    // `flush` is held: an invalidation zaps the entry before the page can be
                    // freed, and then waits for `flush` to go.
                    let page = unsafe { pte.pfn.page() }.ok_or(EFAULT)?;
                    f(&page, part)?;
                }
                (at, faults) = (end, 0);
            }
            drop(flush);
            let Some(page_addr) = missing else {
                continue;
            };
            if faults == MAX_FAULTS_PER_ACCESS {
                return Err(EAGAIN);
            }
            faults += 1;
            mirror.gpu_faults.fetch_add(1, Relaxed);
            match self.raise_fault(dev, page_addr, access) {
                // No mapping there, or outside the VM: a bad address.
                Err(e) if e == ENOENT => return Err(EFAULT),
                res => res?,
            }
        }
        Ok(())
    }

    /// Stops the engine for this VM: jobs end with `ENODEV` at their next page.
    pub(crate) fn close(&self) {
        self.closing.store(1, Relaxed);
    }

    /// The engine of device `dev`: runs the operations of a job in order, up to the first that
    /// fails.
    pub(crate) fn run_all(self: &Arc<Self>, dev: usize, ops: &mut [Op]) -> Outcome {
        let mut outcome = Outcome {
            status: 0,
            ops_done: 0,
        };
        for op in ops.iter_mut() {
            match self.run(dev, &op.0) {
                Ok(result) => op.0.result = result,
                Err(e) => {
                    outcome.status = e.to_errno();
                    break;
                }
            }
            outcome.ops_done += 1;
        }
        outcome
    }

    /// Queues `ops` as a job for the engine of device `dev`, whose results go to `user_ops`.
    pub(crate) fn submit(
        self: &Arc<Self>,
        dev: usize,
        ops: KVec<Op>,
        user_ops: u64,
    ) -> Result<Arc<Job>> {
        self.device(dev)?;
        let job = {
            let mut jobs = self.jobs.lock();
            let id = jobs.1;
            let job = Job::new(id, user_ops, ops)?;
            jobs.0
                .push_within_capacity(job.clone())
                .map_err(|_| ENOSPC)?;
            jobs.1 += 1;
            job
        };
        let (vm, queued) = (self.clone(), job.clone());
        let spawned = self.queues.jobs.try_spawn(GFP_KERNEL, move || {
            queued.run(|ops| vm.run_all(dev, ops));
        });
        if spawned.is_err() {
            self.jobs.lock().0.retain(|j| !Arc::ptr_eq(j, &job));
            return Err(ENOMEM);
        }
        Ok(job)
    }

    /// The asynchronous job `id`.
    pub(crate) fn job(&self, id: u64) -> Result<Arc<Job>> {
        let jobs = self.jobs.lock();
        jobs.0.iter().find(|j| j.id() == id).cloned().ok_or(ENOENT)
    }

    /// Forgets the asynchronous job `id`.
    pub(crate) fn reap(&self, id: u64) {
        self.jobs.lock().0.retain(|j| j.id() != id);
    }

    /// The engine of device `dev`: runs one operation. Returns its result.
    fn run(self: &Arc<Self>, dev: usize, op: &uapi::drm_vsvm_op) -> Result<u64> {
        match op.kind {
            uapi::drm_vsvm_op_kind_DRM_VSVM_OP_WRITE => {
                // CAST: The low byte is the value to write.
                let word = u64::from_ne_bytes([op.value as u8; 8]);
                self.access_pages(dev, op_span(op)?, Access::Write, |page, part| {
                    // SAFETY: `access_pages` holds the TLB lock while it runs this closure.
                    unsafe { store_words(page, part, |_| word) }
                })?;
                Ok(0)
            }
            uapi::drm_vsvm_op_kind_DRM_VSVM_OP_READ => {
                let mut sum = 0u64;
                self.access_pages(dev, op_span(op)?, Access::Read, |page, part| {
                    // SAFETY: `access_pages` holds the TLB lock while it runs this closure.
                    sum += unsafe { page_sum(page, part) }?;
                    Ok(())
                })?;
                Ok(sum)
            }
            uapi::drm_vsvm_op_kind_DRM_VSVM_OP_ATOMIC_ADD => {
                let addr = usize::try_from(op.addr)?;
                self.access(dev, addr, Access::Atomic, |page, off| {
                    let add = |words: &[Atomic<u64>], _| match words {
                        [word] => Ok(word.fetch_add(op.value, Relaxed)),
                        _ => Err(EINVAL),
                    };
                    // SAFETY: `access` holds the TLB lock while it runs this closure.
                    unsafe { with_words(page, &(off..off + 8), add) }?
                })
            }
            uapi::drm_vsvm_op_kind_DRM_VSVM_OP_COPY => {
                let delta = op.src.wrapping_sub(op.addr);
                self.for_each_piece(op_span(op)?, BURST, |dst, len| {
                    // CAST: `src + size` was checked not to overflow.
                    let src = dst.wrapping_add(delta as usize);
                    let mut bytes = [0u8; BURST];
                    // The source may cross a page where the destination does not.
                    let first = len.min(PAGE_SIZE - src % PAGE_SIZE);
                    for (at, n) in [(0, first), (first, len - first)] {
                        let part = bytes.get_mut(at..at + n).ok_or(EINVAL)?;
                        if n > 0 {
                            self.access(dev, src + at, Access::Read, |page, off| {
                                // SAFETY: `access` holds the TLB lock while it runs this.
                                unsafe { load_bytes(page, off..off + n, part) }
                            })?;
                        }
                    }
                    let bytes = bytes.get(..len).ok_or(EINVAL)?;
                    self.access(dev, dst, Access::Write, |page, off| {
                        // SAFETY: `access` holds the TLB lock while it runs this closure.
                        unsafe { store_bytes(page, off..off + len, bytes) }
                    })
                })?;
                Ok(0)
            }
            _ => Err(EINVAL),
        }
    }

    /// Calls `f` on the pieces of `span` that lie in one page, `max` bytes at most each.
    fn for_each_piece(
        &self,
        span: Span<usize>,
        max: usize,
        mut f: impl FnMut(usize, usize) -> Result,
    ) -> Result {
        let mut at = span.start;
        while at < span.end {
            let len = (span.end - at).min(max).min(PAGE_SIZE - at % PAGE_SIZE);
            f(at, len)?;
            at += len;
        }
        Ok(())
    }

    /// The attributes at `addr`.
    fn attrs_at(&self, addr: usize) -> Attrs {
        let attrs = self.attrs.lock();
        attrs
            .iter()
            .rev()
            .find(|(span, _)| span.contains(&addr))
            .map_or(Attrs::DEFAULT, |(_, a)| *a)
    }

    /// Gives `span` the attributes `attrs`. Fails with [`ENOSPC`] when the VM has
    /// [`MAX_ATTRS`] spans already.
    pub(crate) fn madvise(&self, span: Span<usize>, attrs: Attrs) -> Result {
        self.attrs
            .lock()
            .push_within_capacity((span, attrs))
            .map_err(|_| ENOSPC)
    }

    /// The entries of the page table of device `dev` of the pages from `addr`, one per entry of
    /// `out`.
    pub(crate) fn snapshot(
        &self,
        dev: usize,
        addr: usize,
        out: &mut [uapi::drm_vsvm_pte],
    ) -> Result {
        let vram = &self.device(dev)?.vram;
        let pt = self.svm.driver().pt(dev)?.table.read();
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = match pt.lookup(addr + i * PAGE_SIZE) {
                None => uapi::drm_vsvm_pte::default(),
                Some(pte) => {
                    let mut flags = uapi::DRM_VSVM_PTE_VALID;
                    if pte.writable {
                        flags |= uapi::DRM_VSVM_PTE_WRITABLE;
                    }
                    if pte.vram {
                        flags |= uapi::DRM_VSVM_PTE_VRAM;
                        if pte.pfn.pfn().is_some_and(|p| !vram.pfns().contains(&p)) {
                            flags |= uapi::DRM_VSVM_PTE_PEER;
                        }
                    }
                    if pte.atomic {
                        flags |= uapi::DRM_VSVM_PTE_ATOMIC;
                    }
                    uapi::drm_vsvm_pte {
                        flags,
                        shift: pte.shift.into(),
                    }
                }
            };
        }
        Ok(())
    }

    /// Migrates `range` to the VRAM of device `dev`; what cannot move stays, which is no error.
    /// Returns how many pages moved. With a partial migration injected, the range's first page
    /// is sent back, leaving the range mixed (a huge page is split for it).
    fn migrate(&self, dev: usize, range: &Range<Mirror>) -> usize {
        let Ok(device) = self.device(dev) else {
            return 0;
        };
        let vram = &device.vram;
        let moved = self.svm.migrate_to_vram(range, vram).unwrap_or(0);
        if moved == 0 || !vram.device().faults.partial_migration.should_fail() {
            return moved;
        }
        let first = range.span().start..range.span().start + PAGE_SIZE;
        match self.svm.evict_range(range, first, vram) {
            Ok(back) => moved.saturating_sub(back),
            Err(_) => moved,
        }
    }

    /// Migrates the ranges over `span` to `region`: the VRAM of device `dev`, or system memory
    /// from the VRAM of every device of the VM. Returns how many pages moved.
    pub(crate) fn prefetch(&self, dev: usize, span: Span<usize>, region: u32) -> Result<u64> {
        self.device(dev)?;
        let svm = &self.svm;
        svm.collect_garbage();
        let mut moved = 0;
        let mut addr = span.start;
        while addr < span.end {
            let range = svm.find_or_insert(addr, self.span.clone())?;
            // Pages that cannot move stay where they are: no error.
            if region == uapi::drm_vsvm_region_DRM_VSVM_REGION_VRAM {
                moved += self.migrate(dev, &range);
            } else {
                for device in self.devices.iter() {
                    moved += svm.evict_range(&range, range.span(), &device.vram)?;
                }
            }
            addr = range.span().end;
        }
        // CAST: Page counts fit in 64 bits.
        Ok(moved as u64)
    }

    /// Fills the counters of `stats`: those of the page table and memory of the file's device
    /// (the VM's first), and the VM's.
    pub(crate) fn stats(&self, stats: &mut uapi::drm_vsvm_stats) -> Result {
        let vram = &self.device(0)?.vram;
        let s = self.svm.stats();
        stats.gpu_faults = self.svm.driver().gpu_faults.load(Relaxed);
        for (size, faults) in self.chunks.sizes().iter().zip(&s.faults) {
            match *size {
                0x1000 => stats.faults_4k = faults.get(),
                0x10000 => stats.faults_64k = faults.get(),
                0x200000 => stats.faults_2m = faults.get(),
                _ => (),
            }
        }
        stats.retries = s.retries.get();
        stats.invalidations = s.invalidations.get();
        stats.gc_runs = s.gc_runs.get();
        stats.gc_ranges = s.gc_ranges.get();
        // CAST: Counts of objects in memory fit in 64 bits.
        stats.ranges = self.svm.count().0 as u64;
        stats.bound_pages = self.svm.driver().pt(0)?.table.read().bound() as u64;
        stats.migrations_to_vram = s.migrations_to_vram.get();
        stats.bytes_to_vram = s.bytes_to_vram.get();
        stats.bytes_evicted = s.bytes_evicted.get();
        let d = vram.stats();
        stats.dev_cpu_faults = d.cpu_faults.get();
        stats.dev_evictions = d.evictions.get();
        stats.dev_bytes_evicted = d.bytes_evicted.get();
        stats.dev_huge_folios = d.huge_folios.get();
        stats.dev_bytes_cpu_faulted = d.bytes_cpu_faulted.get();
        stats.dev_bytes_from_peers = d.bytes_from_peers.get();
        // CAST: Sizes of memory fit in 64 bits.
        stats.dev_vram_used = d.pages_in_use.get() * PAGE_SIZE as u64;
        stats.dev_vram_size = ((vram.pfns().end - vram.pfns().start) * PAGE_SIZE) as u64;
        Ok(())
    }
}
