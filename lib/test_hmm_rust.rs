// SPDX-License-Identifier: GPL-2.0

//! A Rust twin of `lib/test_hmm.c`, the HMM test driver, with the same devices and uapi
//! (`lib/test_hmm_uapi.h`), so that the kernel's own `hmm-tests` judge the Rust abstractions.
//!
//! Each open file of `/dev/hmm_dmirror<n>` mirrors the address space of the process that opened
//! it and acts as a device that reads, writes and migrates its pages on request. It is built on
//! the GPU SVM layer ([`kernel::drm::gpusvm`]): the mirror is a [`GpuSvm`], whose ranges hold the
//! pages the device maps (`test_hmm`'s page table), and the device memory is a
//! [`DeviceMemory`], each page backed by a system page allocated with it (the simulated memory).
//!
//! Devices 0 and 1 have device-private memory; with `spm_addr_dev0` and `spm_addr_dev1` set,
//! devices 2 and 3 have device-coherent memory there (physical memory set aside at boot, e.g.
//! with `memmap=`), which the CPU accesses directly.
//!
//! Where it differs from the C driver, and why: `Documentation/gpu/rust/gpusvm.rst`, "A second
//! user".

use core::ops::Range as Span;
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
        Range,
        ValidPages, //
    },
    fs::File,
    ioctl::_IOWR,
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    mm::{
        hmm::{
            self,
            HmmPfn,
            Request, //
        },
        migrate::{
            PMD_ORDER,
            PUD_ORDER, //
        },
        mmu_notifier::{
            Event,
            IntervalNotifier,
            Invalidate,
            NotifierRange,
            PendingSeq,
            SeqSet,
            WouldBlock, //
        },
        virt::{
            flags as vm_flags,
            VmaNew, //
        },
        DeviceOwner,
        Mm, //
    },
    new_mutex, new_spinlock,
    page::{
        BorrowedPage,
        Page,
        PAGE_SIZE, //
    },
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        Mutex,
        SpinLock, //
    },
    time::{
        Delta,
        Instant,
        Monotonic, //
    },
    transmute::{
        AsBytes,
        FromBytes, //
    },
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};

module! {
    type: TestHmm,
    name: "test_hmm_rust",
    authors: ["Rust GPU SVM developers"],
    description: "HMM (Heterogeneous Memory Management) test module, in Rust",
    license: "GPL",
    params: {
        spm_addr_dev0: u64 {
            default: 0,
            description: "SPM (special purpose memory) address of coherent device 0 (2)",
        },
        spm_addr_dev1: u64 {
            default: 0,
            description: "SPM (special purpose memory) address of coherent device 1 (3)",
        },
    },
}

/// `struct hmm_dmirror_cmd`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Cmd {
    addr: u64,
    ptr: u64,
    npages: u64,
    cpages: u64,
    faults: u64,
}

// SAFETY: `Cmd` is five `u64`s: any bytes are a valid value.
unsafe impl FromBytes for Cmd {}

// SAFETY: `Cmd` is five `u64`s, without padding.
unsafe impl AsBytes for Cmd {}

const READ: u32 = _IOWR::<Cmd>('H' as u32, 0x00);
const WRITE: u32 = _IOWR::<Cmd>('H' as u32, 0x01);
const MIGRATE_TO_DEV: u32 = _IOWR::<Cmd>('H' as u32, 0x02);
const MIGRATE_TO_SYS: u32 = _IOWR::<Cmd>('H' as u32, 0x03);
const SNAPSHOT: u32 = _IOWR::<Cmd>('H' as u32, 0x04);
const EXCLUSIVE: u32 = _IOWR::<Cmd>('H' as u32, 0x05);
const CHECK_EXCLUSIVE: u32 = _IOWR::<Cmd>('H' as u32, 0x06);
const RELEASE: u32 = _IOWR::<Cmd>('H' as u32, 0x07);
const FLAGS: u32 = _IOWR::<Cmd>('H' as u32, 0x08);

/// `HMM_DMIRROR_FLAG_FAIL_ALLOC`: the next huge allocation of device memory fails, and falls
/// back to single pages.
const FLAG_FAIL_ALLOC: u64 = 1 << 0;

/// The page states of `HMM_DMIRROR_SNAPSHOT`.
mod prot {
    pub(super) const ERROR: u8 = 0xff;
    pub(super) const NONE: u8 = 0x00;
    pub(super) const READ: u8 = 0x01;
    pub(super) const WRITE: u8 = 0x02;
    pub(super) const PMD: u8 = 0x04;
    pub(super) const PUD: u8 = 0x08;
    pub(super) const ZERO: u8 = 0x10;
    pub(super) const DEV_PRIVATE_LOCAL: u8 = 0x20;
    pub(super) const DEV_PRIVATE_REMOTE: u8 = 0x30;
    pub(super) const DEV_COHERENT_LOCAL: u8 = 0x40;
    pub(super) const DEV_COHERENT_REMOTE: u8 = 0x50;
}

/// The devices, as `test_hmm` makes them: two with device-private memory, then two with
/// device-coherent memory if both `spm_addr_dev0/1` are set.
const NAMES: [&CStr; 4] = [
    c"hmm_dmirror0",
    c"hmm_dmirror1",
    c"hmm_dmirror2",
    c"hmm_dmirror3",
];

/// The device memory of a device: as one chunk of `test_hmm` (and the least memory a coherent
/// device's `spm_addr` must name).
const DEVMEM_SIZE: usize = 256 << 20;

/// Pages in a 2M (PMD) block.
const BLOCK_PAGES: usize = 1 << PMD_ORDER;

/// The address space a file may mirror.
const MIRROR_SPAN: Span<usize> = PAGE_SIZE..1 << 47;

/// The notifiers of a mirror cover aligned blocks of this size.
const NOTIFIER_SIZE: usize = 1 << 29;

/// Snapshots read this many pages at a time, each batch under a notifier of its own.
const SNAPSHOT_BATCH: usize = 512;

/// How long a request keeps trying when invalidations race with it, as `test_hmm`.
const TIMEOUT: Delta = Delta::from_millis(hmm::DEFAULT_TIMEOUT_MS as i64);

/// The owners of the devices' memory: one address each.
static OWNERS: [u8; NAMES.len()] = [0; NAMES.len()];

/// The memory of a device: which device pages are in use, and for device-private memory the
/// system page that backs each, allocated with it (`test_hmm`'s `rpage`).
struct Pool {
    /// One bit per device page, set while it is allocated.
    used: KVVec<u64>,
    /// The backing page of each allocated device-private page.
    backing: KVVec<Option<Page>>,
}

impl Pool {
    fn is_free(&self, i: usize) -> bool {
        self.used[i / 64] & (1 << (i % 64)) == 0
    }

    fn take(&mut self, i: usize, page: Option<Page>) {
        self.used[i / 64] |= 1 << (i % 64);
        self.backing[i] = page;
    }

    /// Whether the 2M block starting at page `i` (a multiple of [`BLOCK_PAGES`]) is free.
    fn block_is_free(&self, i: usize) -> bool {
        self.used[i / 64..(i + BLOCK_PAGES) / 64]
            .iter()
            .all(|&w| w == 0)
    }

    /// Picks `n` free pages: whole free 2M blocks if `blocks`, single pages otherwise.
    fn find(&self, n: usize, blocks: bool) -> Option<KVec<usize>> {
        let mut found = KVec::with_capacity(n, GFP_ATOMIC).ok()?;
        let pages = self.backing.len();
        if blocks {
            let mut i = 0;
            while found.len() < n && i + BLOCK_PAGES <= pages {
                if self.block_is_free(i) {
                    for p in i..i + BLOCK_PAGES {
                        found.push_within_capacity(p).ok()?;
                    }
                }
                i += BLOCK_PAGES;
            }
        } else {
            for i in 0..pages {
                if found.len() == n {
                    break;
                }
                if self.is_free(i) {
                    found.push_within_capacity(i).ok()?;
                }
            }
        }
        (found.len() == n).then_some(found)
    }
}

/// The device state of a device's [`DeviceMemory`].
struct Vram {
    pool: Arc<SpinLock<Pool>>,
    /// Set by `HMM_DMIRROR_FLAGS`: the next huge allocation falls back to single pages.
    fail_alloc: Atomic<u32>,
}

impl Vram {
    fn new(npages: usize) -> Result<Self> {
        let mut used = KVVec::with_capacity(npages.div_ceil(64), GFP_KERNEL)?;
        used.resize(npages.div_ceil(64), 0, GFP_KERNEL)?;
        let mut backing = KVVec::with_capacity(npages, GFP_KERNEL)?;
        for _ in 0..npages {
            backing.push(None, GFP_KERNEL)?;
        }
        Ok(Self {
            pool: Arc::pin_init(new_spinlock!(Pool { used, backing }), GFP_KERNEL)?,
            fail_alloc: Atomic::new(0),
        })
    }

    /// Calls `f` with the page that holds the data of device page `pfn` of `mem`: its backing
    /// page, or the page itself for device-coherent memory.
    fn with_backing<R>(
        mem: &DeviceMemory<Mirror>,
        pfn: usize,
        f: impl FnOnce(&Page) -> Result<R>,
    ) -> Result<R> {
        if mem.is_coherent() {
            let page = mem.coherent_page(pfn).ok_or(EINVAL)?;
            return f(&page);
        }
        let i = pfn.checked_sub(mem.pfns().start).ok_or(EINVAL)?;
        let pool = mem.device().pool.lock();
        let page = pool.backing.get(i).and_then(Option::as_ref).ok_or(EINVAL)?;
        f(page)
    }
}

/// An allocation of device memory: its pages, as runs of consecutive pfn offsets.
struct VramAlloc {
    pool: Arc<SpinLock<Pool>>,
    runs: KVec<Span<usize>>,
}

impl Drop for VramAlloc {
    fn drop(&mut self) {
        // Possibly in atomic context: the lock is a spinlock, freeing a page does not sleep.
        let mut pool = self.pool.lock();
        for i in self.runs.iter().flat_map(Clone::clone) {
            pool.used[i / 64] &= !(1 << (i % 64));
            pool.backing[i] = None;
        }
    }
}

/// The device side of a file's mirror.
///
/// The device reaches the pages of its ranges only with the proof that they are valid
/// ([`ValidPages`]), which holds the notifier lock: once an invalidation has the lock, the device
/// no longer uses the pages it covers, and there is no device page table or TLB to flush.
struct Mirror;

impl Driver for Mirror {
    type Device = Vram;
    type Allocation = VramAlloc;
    // The simulated device copies with the CPU.
    type Access = CpuAccess;

    fn invalidate(&self, _range: &Range<Self>, _device: usize, _span: Span<usize>, _event: Event) {}

    fn alloc_devmem(mem: &DeviceMemory<Self>, npages: usize) -> Result<(VramAlloc, FreePages)> {
        let vram = mem.device();
        // Device-coherent memory: no backing pages, and single pages only (as `test_hmm`).
        let coherent = mem.is_coherent();
        let huge = !coherent && npages % BLOCK_PAGES == 0 && vram.fail_alloc.xchg(0, Relaxed) == 0;
        // The backing pages, allocated before the pool is locked.
        let mut pages = KVVec::with_capacity(npages, GFP_KERNEL)?;
        for _ in 0..npages {
            let page = if coherent {
                None
            } else {
                Some(Page::alloc_page(GFP_KERNEL)?)
            };
            pages.push(page, GFP_KERNEL)?;
        }
        let mut pool = vram.pool.lock();
        let found = if huge {
            pool.find(npages, true).or_else(|| pool.find(npages, false))
        } else {
            pool.find(npages, false)
        };
        let mut found = found.ok_or(ENOMEM)?;
        if !huge {
            // Single pages, even where they happen to be consecutive: a huge page moves page by
            // page, as after `test_hmm` failed to allocate a huge device page.
            found.reverse();
        }
        let mut runs: KVec<Span<usize>> = KVec::new();
        for &i in found.iter() {
            match runs.last_mut() {
                Some(run) if run.end == i => run.end += 1,
                Some(run) if run.start == i + 1 => run.start = i,
                // On failure nothing is taken yet: the pages stay free.
                _ => runs.push(i..i + 1, GFP_ATOMIC)?,
            }
        }
        for (&i, page) in found.iter().zip(pages.drain_all()) {
            pool.take(i, page);
        }
        drop(pool);
        let first = mem.pfns().start;
        for i in found.iter_mut() {
            *i += first;
        }
        let alloc = VramAlloc {
            pool: vram.pool.clone(),
            runs,
        };
        // SAFETY: The pages were free in the pool, which gives them to this allocation alone
        // until it is dropped.
        Ok((alloc, unsafe { FreePages::new(found) }))
    }

    fn copy_to_vram(
        mem: &DeviceMemory<Self>,
        dst: &[usize],
        src: &[Option<BorrowedPage<'_>>],
    ) -> Result {
        for (&pfn, page) in dst.iter().zip(src) {
            Vram::with_backing(mem, pfn, |vram| match page {
                Some(page) => {
                    // SAFETY: The backing page of a device page being filled is used by no one
                    // else; the source page is locked and unmapped for the migration.
                    unsafe { vram.copy_from(page) };
                    Ok(())
                }
                // SAFETY: As above.
                None => unsafe { vram.fill_zero_raw(0, PAGE_SIZE) },
            })?;
        }
        Ok(())
    }

    fn copy_to_sram(mem: &DeviceMemory<Self>, src: &[usize], dst: &[NewPage<'_>]) -> Result {
        for (&pfn, page) in src.iter().zip(dst) {
            Vram::with_backing(mem, pfn, |vram| {
                // SAFETY: The device page is locked and unmapped for the migration, which
                // invalidated every range mapping it first: no one writes its backing page.
                unsafe { page.copy_from(vram) };
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// An open file: a device mirroring the address space of the process that opened it.
struct Dmirror {
    mem: Arc<DeviceMemory<Mirror>>,
    mm: ARef<Mm>,
    svm: Pin<KBox<GpuSvm<Mirror>>>,
}

/// The bounce buffer of a request: the data of its pages, in the kernel. It is not zeroed first:
/// the device fills it page by page, or the user's data does.
struct Bounce {
    data: KVVec<u8>,
}

impl Bounce {
    /// An empty buffer for `npages` pages, which [`Bounce::read_page`] fills.
    fn new(npages: usize) -> Result<Self> {
        let len = npages.checked_mul(PAGE_SIZE).ok_or(EINVAL)?;
        Ok(Self {
            data: KVVec::with_capacity(len, GFP_KERNEL)?,
        })
    }

    /// A buffer of `npages` pages with the data at `user`.
    fn from_user(user: UserPtr, npages: usize) -> Result<Self> {
        let mut bounce = Self::new(npages)?;
        let len = bounce.data.capacity();
        UserSlice::new(user, len)
            .reader()
            .read_all(&mut bounce.data, GFP_KERNEL)?;
        Ok(bounce)
    }

    /// Copies page `i` of the buffer, the next one to fill, from `page`.
    fn read_page(&mut self, i: usize, page: &Page) -> Result {
        if i * PAGE_SIZE != self.data.len() {
            return Err(EINVAL);
        }
        let dst = self
            .data
            .spare_capacity_mut()
            .get_mut(..PAGE_SIZE)
            .ok_or(EINVAL)?;
        // SAFETY: `dst` is valid for writes of `PAGE_SIZE` bytes. The page is mapped by the
        // process, which may write it meanwhile: what the device reads then is undefined, as on
        // real hardware, but the copy is of bytes.
        unsafe { page.read_raw(dst.as_mut_ptr().cast(), 0, PAGE_SIZE)? };
        // SAFETY: The page after the filled ones, within the capacity, was just written.
        unsafe { self.data.inc_len(PAGE_SIZE) };
        Ok(())
    }

    /// Copies page `i` of the buffer to `page`.
    fn write_page(&self, i: usize, page: &Page) -> Result {
        let src = self
            .data
            .get(i * PAGE_SIZE..(i + 1) * PAGE_SIZE)
            .ok_or(EINVAL)?;
        // SAFETY: `src` is valid for reads of `PAGE_SIZE` bytes. See `read_page` for the
        // process's concurrent accesses.
        unsafe { page.write_raw(src.as_ptr(), 0, PAGE_SIZE) }
    }
}

/// What a request needs of the pages it uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// The pages in the device's memory, faulting nothing in: another page is [`ENOENT`].
    Moved,
    Read,
    Write,
    Exclusive,
}

impl Need {
    fn fault(self) -> Fault<'static, Mirror> {
        match self {
            Need::Moved => Fault::present(),
            Need::Read => Fault::read(),
            Need::Write => Fault::write(),
            Need::Exclusive => Fault::atomic(AtomicPolicy::Exclusive, None),
        }
    }

    /// Whether pages `pages` of a range, valid as `valid`, meet the need.
    fn met(self, valid: &ValidPages<'_>, pages: Span<usize>) -> bool {
        let Some(pfns) = valid.pfns().get(pages) else {
            return false;
        };
        let mut pfns = pfns.iter();
        match self {
            Need::Moved => true,
            Need::Read => pfns.all(|p| p.is_valid()),
            Need::Write => pfns.all(|p| p.is_valid() && p.is_writable()),
            Need::Exclusive => valid.atomic(),
        }
    }
}

impl Dmirror {
    /// The pages of `cmd`, checked as `test_hmm` does.
    fn span(cmd: &Cmd) -> Result<Span<usize>> {
        let start = usize::try_from(cmd.addr)?;
        let len = usize::try_from(cmd.npages)?
            .checked_mul(PAGE_SIZE)
            .ok_or(EINVAL)?;
        let end = start.checked_add(len).ok_or(EINVAL)?;
        if start % PAGE_SIZE != 0 || len == 0 {
            return Err(EINVAL);
        }
        Ok(start..end)
    }

    /// The range of the mirror holding `addr`, inserted inside `span` if there is none; `unmapped`
    /// if no VMA maps `addr`.
    fn range(
        &self,
        addr: usize,
        span: &Span<usize>,
        unmapped: Error,
    ) -> Result<Arc<Range<Mirror>>> {
        self.svm
            .find_or_insert(addr, span.clone())
            .map_err(|e| if e == ENOENT { unmapped } else { e })
    }

    /// Calls `f(i, page)` for each page `i` of `span` with the page the device maps there (a
    /// system page, or the backing page of one of its device pages), faulting in what does not
    /// meet `need` first. Returns whether anything had to be faulted in.
    fn with_pages(
        &self,
        span: &Span<usize>,
        need: Need,
        mut f: impl FnMut(usize, &Page) -> Result,
    ) -> Result<bool> {
        self.svm.collect_garbage();
        let own = self.mem.owner();
        let mut faulted = false;
        let mut addr = span.start;
        while addr < span.end {
            // HMM's error for an address without a VMA.
            let range = self.range(addr, span, EFAULT)?;
            let start = range.span().start;
            let part = addr..span.end.min(range.span().end);
            let pages = (part.start - start) / PAGE_SIZE..(part.end - start) / PAGE_SIZE;
            let begin = Instant::<Monotonic>::now();
            loop {
                {
                    let guard = self.svm.notifier_read();
                    if let Some(valid) = self
                        .svm
                        .pages_valid(&range, 0, &guard)
                        .filter(|v| need.met(v, pages.clone()))
                    {
                        for p in pages.clone() {
                            let i = (start + p * PAGE_SIZE - span.start) / PAGE_SIZE;
                            let pfn = *valid.pfns().get(p).ok_or(EINVAL)?;
                            let moved = valid.device_private_owner(p) == Some(own)
                                || valid.device_coherent_owner(p) == Some(own);
                            if !pfn.is_valid() || (need == Need::Moved && !moved) {
                                return Err(ENOENT);
                            }
                            if valid.device_private_owner(p) == Some(own) {
                                let pfn = pfn.pfn().ok_or(EFAULT)?;
                                Vram::with_backing(&self.mem, pfn, |page| f(i, page))?;
                            } else {
                                // SAFETY: The proof holds the notifier lock: the page stays
                                // mapped, hence allocated, until an invalidation, which waits
                                // for the lock.
                                let page = unsafe { pfn.page() }.ok_or(EFAULT)?;
                                f(i, &page)?;
                            }
                        }
                        break;
                    }
                }
                if begin.elapsed() > TIMEOUT {
                    return Err(EBUSY);
                }
                self.svm.get_pages(&range, 0, &need.fault())?;
                faulted = true;
            }
            addr = part.end;
        }
        Ok(faulted)
    }

    /// `HMM_DMIRROR_READ` (and the read back of a migration or an exclusive access): the device
    /// reads the pages into the buffer at `cmd.ptr`.
    fn read(&self, cmd: &mut Cmd, need: Need, count_faults: bool) -> Result {
        let span = Self::span(cmd)?;
        let npages = (span.end - span.start) / PAGE_SIZE;
        let mut bounce = Bounce::new(npages)?;
        // The pages come in order, each once.
        let faulted = self.with_pages(&span, need, |i, page| bounce.read_page(i, page))?;
        if bounce.data.len() != span.end - span.start {
            return Err(EINVAL);
        }
        let user = UserPtr::from_addr(usize::try_from(cmd.ptr)?);
        UserSlice::new(user, bounce.data.len())
            .writer()
            .write_slice(&bounce.data)?;
        cmd.cpages = npages as u64;
        if count_faults {
            cmd.faults = u64::from(faulted);
        }
        Ok(())
    }

    /// `HMM_DMIRROR_WRITE`: the device writes the buffer at `cmd.ptr` to the pages.
    fn write(&self, cmd: &mut Cmd) -> Result {
        let span = Self::span(cmd)?;
        let npages = (span.end - span.start) / PAGE_SIZE;
        let user = UserPtr::from_addr(usize::try_from(cmd.ptr)?);
        let bounce = Bounce::from_user(user, npages)?;
        let faulted = self.with_pages(&span, Need::Write, |i, page| bounce.write_page(i, page))?;
        cmd.cpages = npages as u64;
        cmd.faults = u64::from(faulted);
        Ok(())
    }

    /// [`EINVAL`] unless readable VMAs cover `span`, which a migration needs.
    fn check_readable(&self, span: &Span<usize>) -> Result {
        let mm = self.mm.mmget_not_zero().ok_or(EINVAL)?;
        let mmap = mm.mmap_read_lock();
        let mut addr = span.start;
        while addr < span.end {
            let vma = mmap.vma_lookup(addr).ok_or(EINVAL)?;
            if vma.flags() & vm_flags::READ == 0 {
                return Err(EINVAL);
            }
            addr = vma.end();
        }
        Ok(())
    }

    /// `HMM_DMIRROR_MIGRATE_TO_DEV`: migrates the pages to the device's memory, then reads them
    /// back from there ([`ENOENT`] if a page could not move).
    fn migrate_to_dev(&self, cmd: &mut Cmd) -> Result {
        let span = Self::span(cmd)?;
        self.check_readable(&span)?;
        self.svm.collect_garbage();
        let mut addr = span.start;
        while addr < span.end {
            let range = self.range(addr, &span, EINVAL)?;
            self.svm.migrate_to_vram(&range, &self.mem)?;
            addr = span.end.min(range.span().end);
        }
        self.read(cmd, Need::Moved, false)
    }

    /// `HMM_DMIRROR_MIGRATE_TO_SYS`: migrates the pages in the device's memory back to system
    /// memory.
    fn migrate_to_sys(&self, cmd: &mut Cmd) -> Result {
        let span = Self::span(cmd)?;
        self.check_readable(&span)?;
        self.svm.collect_garbage();
        let mut moved = 0;
        let mut addr = span.start;
        while addr < span.end {
            let range = self.range(addr, &span, EINVAL)?;
            moved += self.svm.evict_range(&range, span.clone(), &self.mem)?;
            addr = span.end.min(range.span().end);
        }
        cmd.cpages = moved as u64;
        Ok(())
    }

    /// `HMM_DMIRROR_CHECK_EXCLUSIVE`: [`EPERM`] if the device still has exclusive access to any
    /// range of the pages, which a CPU access would have revoked.
    fn check_exclusive(&self, cmd: &Cmd) -> Result {
        let span = Self::span(cmd)?;
        let ranges = self.svm.ranges_in(span)?;
        let guard = self.svm.notifier_read();
        for range in ranges.iter() {
            if self
                .svm
                .pages_valid(range, 0, &guard)
                .is_some_and(|v| v.atomic())
            {
                return Err(EPERM);
            }
        }
        Ok(())
    }

    /// `HMM_DMIRROR_SNAPSHOT`: reports how the CPU maps each page, faulting nothing in.
    ///
    /// Below the layer: a range of the mirror holds pages that are all valid for the device,
    /// while a snapshot reports holes, errors and page table levels as HMM sees them.
    fn snapshot(&self, cmd: &mut Cmd) -> Result {
        let span = Self::span(cmd)?;
        let mm = self.mm.mmget_not_zero().ok_or(EINVAL)?;
        let mut user = UserSlice::new(
            UserPtr::from_addr(usize::try_from(cmd.ptr)?),
            (span.end - span.start) / PAGE_SIZE,
        )
        .writer();
        let mut pfns = KVec::with_capacity(SNAPSHOT_BATCH, GFP_KERNEL)?;
        let mut perms = KVec::with_capacity(SNAPSHOT_BATCH, GFP_KERNEL)?;
        let mut addr = span.start;
        while addr < span.end {
            let n = ((span.end - addr) / PAGE_SIZE).min(SNAPSHOT_BATCH);
            // A notifier of its own, to learn of any invalidation of these pages.
            let notifier = KBox::pin_init(
                IntervalNotifier::new(
                    &mm,
                    addr,
                    n * PAGE_SIZE,
                    pin_init!(Snapshot {
                        lock <- new_mutex!(()),
                    }),
                ),
                GFP_KERNEL,
            )?;
            pfns.clear();
            pfns.resize(n, HmmPfn::SNAPSHOT, GFP_KERNEL)?;
            perms.clear();
            let begin = Instant::<Monotonic>::now();
            loop {
                if begin.elapsed() > TIMEOUT {
                    return Err(EBUSY);
                }
                let seq = notifier.read_begin();
                let res = {
                    let mmap = mm.mmap_read_lock();
                    let request = Request::SNAPSHOT.owner(self.mem.owner());
                    hmm::range_fault(&notifier, &mmap, &seq, addr, &mut pfns, request)
                };
                match res {
                    Err(e) if e == EBUSY => continue,
                    res => res?,
                }
                let _guard = notifier.lock.lock();
                if notifier.read_retry(&seq) {
                    continue;
                }
                for &pfn in pfns.iter() {
                    perms.push(self.prot(pfn), GFP_KERNEL)?;
                }
                break;
            }
            drop(notifier);
            user.write_slice(&perms)?;
            cmd.cpages += n as u64;
            addr += n * PAGE_SIZE;
        }
        Ok(())
    }

    /// The `HMM_DMIRROR_PROT_*` state of a page as [`hmm::range_fault`] reported it.
    ///
    /// Called under the lock of a notifier whose read section is still valid: the page is
    /// mapped, hence allocated.
    fn prot(&self, pfn: HmmPfn) -> u8 {
        if pfn.is_error() {
            return prot::ERROR;
        }
        if !pfn.is_valid() {
            return prot::NONE;
        }
        let own = self.mem.owner();
        // SAFETY: The page is mapped and cannot be freed meanwhile (see above).
        let (private, coherent) =
            unsafe { (pfn.device_private_owner(), pfn.device_coherent_owner()) };
        let kind = match (private, coherent) {
            (Some(owner), _) if owner == own => prot::DEV_PRIVATE_LOCAL,
            (Some(_), _) => prot::DEV_PRIVATE_REMOTE,
            (_, Some(owner)) if owner == own => prot::DEV_COHERENT_LOCAL,
            (_, Some(_)) => prot::DEV_COHERENT_REMOTE,
            _ if pfn.is_zero_page() => prot::ZERO,
            _ => prot::NONE,
        };
        let access = if pfn.is_writable() {
            prot::WRITE
        } else {
            prot::READ
        };
        let level = match pfn.map_order() {
            PMD_ORDER => prot::PMD,
            PUD_ORDER => prot::PUD,
            _ => 0,
        };
        kind | access | level
    }
}

/// The notifier of a snapshot: any invalidation of its pages makes the snapshot stale.
#[pin_data]
struct Snapshot {
    #[pin]
    lock: Mutex<()>,
}

impl Invalidate for Snapshot {
    fn invalidate<'a>(
        &self,
        range: &NotifierRange,
        seq: PendingSeq<'a>,
    ) -> Result<SeqSet<'a>, WouldBlock> {
        range.check_blockable()?;
        let _guard = self.lock.lock();
        Ok(seq.set())
    }
}

#[vtable]
impl MiscDevice for Dmirror {
    type Ptr = Pin<KBox<Self>>;
    type RegistrationData = Arc<DeviceMemory<Mirror>>;
    const MODULE: &'static ThisModule = &THIS_MODULE;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        let mem = misc.data().clone();
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let chunks = ChunkSizes::new(&[BLOCK_PAGES * PAGE_SIZE, 16 * PAGE_SIZE, PAGE_SIZE])?;
        let svm = KBox::pin_init(
            GpuSvm::new(
                mm,
                MIRROR_SPAN,
                NOTIFIER_SIZE,
                chunks,
                &[mem.owner()],
                Mirror,
            )?,
            GFP_KERNEL,
        )?;
        let mm = ARef::from(&**mm);
        Ok(KBox::pin(Self { mem, mm, svm }, GFP_KERNEL)?)
    }

    fn release(device: Pin<KBox<Self>>, _file: &File) {
        let mem = device.mem.clone();
        drop(device);
        // As `test_hmm`: closing a file moves all the device's memory back to system memory.
        mem.evict_all();
    }

    fn mmap(_device: Pin<&Self>, _file: &File, vma: &VmaNew) -> Result {
        // Zeroed pages, as `test_hmm` inserts: a mapping HMM sees as mixed.
        let vma = vma.set_mixedmap();
        let mut addr = vma.start();
        while addr < vma.end() {
            let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
            vma.vm_insert_page(addr, &page)?;
            addr += PAGE_SIZE;
        }
        Ok(())
    }

    fn ioctl(device: Pin<&Self>, _file: &File, command: u32, arg: usize) -> Result<isize> {
        let user = UserSlice::new(UserPtr::from_addr(arg), size_of::<Cmd>());
        let (mut reader, mut writer) = user.reader_writer();
        let mut cmd: Cmd = reader.read()?;
        Dmirror::span(&cmd)?;
        cmd.cpages = 0;
        cmd.faults = 0;
        let vram = device.mem.device();
        match command {
            READ => device.read(&mut cmd, Need::Read, true)?,
            WRITE => device.write(&mut cmd)?,
            MIGRATE_TO_DEV => device.migrate_to_dev(&mut cmd)?,
            MIGRATE_TO_SYS => device.migrate_to_sys(&mut cmd)?,
            SNAPSHOT => device.snapshot(&mut cmd)?,
            EXCLUSIVE => device.read(&mut cmd, Need::Exclusive, false)?,
            CHECK_EXCLUSIVE => device.check_exclusive(&cmd)?,
            RELEASE => {
                device.mem.evict_all();
            }
            FLAGS => vram
                .fail_alloc
                .store(u32::from(cmd.npages & FLAG_FAIL_ALLOC != 0), Relaxed),
            _ => return Err(EINVAL),
        }
        writer.write(&cmd)?;
        Ok(0)
    }
}

/// The module: the devices.
struct TestHmm {
    _devices: KVec<Pin<KBox<MiscDeviceRegistration<Dmirror>>>>,
}

impl kernel::Module for TestHmm {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let spm = [
            *module_parameters::spm_addr_dev0.value(),
            *module_parameters::spm_addr_dev1.value(),
        ];
        // As `test_hmm`: the coherent devices need both.
        let ndevices = if spm.iter().all(|&a| a != 0) { 4 } else { 2 };
        let mut devices = KVec::with_capacity(ndevices, GFP_KERNEL)?;
        for (id, (name, owner)) in NAMES.iter().zip(OWNERS.iter()).enumerate().take(ndevices) {
            let owner = DeviceOwner::from_ref(owner);
            let npages = DEVMEM_SIZE / PAGE_SIZE;
            let mem = if id < 2 {
                let vram = Vram::new(npages)?;
                let mem = DeviceMemory::new(DEVMEM_SIZE, owner, c"hmm_dmirror", vram, CpuAccess)?;
                Arc::pin_init(mem, GFP_KERNEL)?
            } else {
                let vram = Vram::new(npages)?;
                // SAFETY: The parameter names memory set aside for this device at boot (e.g.
                // with `memmap=`), as `test_hmm` requires of it: nothing else uses it.
                let mem = unsafe {
                    DeviceMemory::new_coherent(spm[id - 2], DEVMEM_SIZE, owner, vram, CpuAccess)?
                };
                Arc::pin_init(mem, GFP_KERNEL)?
            };
            let options = MiscDeviceOptions { name };
            devices.push(
                KBox::pin_init(MiscDeviceRegistration::register(options, mem), GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        pr_info!("HMM test module loaded. This is only for testing HMM.\n");
        Ok(Self { _devices: devices })
    }
}
