// SPDX-License-Identifier: GPL-2.0

//! KUnit tests of GPU SVM against a real user address space, with a mock driver: a device page
//! table of single pages, and simulated device memory backed by system pages.

#[macros::kunit_tests(rust_drm_gpusvm)]
mod tests {
    use super::super::*;
    use crate::{
        bindings, c_str,
        dma::{
            DmaAddress,
            DmaMask, //
        },
        faux,
        mm::{
            migrate::SystemFolio,
            mmu_notifier::Event,
            test_mm::UserMapping,
            DeviceOwner, //
        },
        page::{
            BorrowedPage,
            Page,
            PAGE_SHIFT,
            PAGE_SIZE, //
        },
        prelude::*,
        sync::{
            atomic::{
                Atomic,
                Relaxed, //
            },
            new_mutex,
            new_spinlock,
            Arc,
            Completion,
            Mutex,
            SpinLock, //
        },
        workqueue,
    };
    use core::{
        ops,
        ptr::NonNull, //
    };

    const SZ_64K: usize = 64 * 1024;
    const SZ_2M: usize = 2 * 1024 * 1024;
    static OWNER: u8 = 0;
    /// The owner of a second device, not a peer of the first.
    static OTHER_OWNER: u8 = 1;
    const MAX_PTES: usize = 4096;
    /// Simulated device memory: two 2M ranges.
    const VRAM_PAGES: usize = 1024;

    /// A device page table entry: the device, the address it maps, and whether it points to
    /// device memory.
    #[derive(Clone, Copy, PartialEq)]
    struct Pte {
        device: usize,
        addr: usize,
        vram: bool,
    }

    /// Devices whose page tables map single pages: `ptes` holds the bound entries of all of
    /// them, up to `MAX_PTES`.
    #[pin_data]
    struct Mock {
        invalidations: Atomic<u32>,
        #[pin]
        ptes: Mutex<KVec<Pte>>,
    }

    /// The pfns of a memory that another one reaches, and the pages backing them.
    type Peer = (ops::Range<usize>, Arc<KVec<Page>>);

    /// Simulated device memory: page `i` is backed by system page `backing[i]`.
    #[pin_data]
    struct MockVram {
        backing: Arc<KVec<Page>>,
        /// The memories of the same owner that it reaches (`connect`): their pfns and backing.
        #[pin]
        peers: SpinLock<KVec<Peer>>,
        free: Arc<SpinLock<KVec<bool>>>,
        /// Copies to device memory to fail, for fault injection.
        fail_copies: Atomic<u32>,
        /// A span of the test's address space that the next copy to system memory unmaps (its
        /// start, 0 for none, and length), for an munmap racing a migration.
        unmap_in_copy: Atomic<usize>,
        unmap_len: Atomic<usize>,
        /// Set for the next copy to system memory to copy nothing and succeed, as a broken copy
        /// engine would.
        skip_copy_out: Atomic<u32>,
    }

    /// An allocation of simulated device memory: its pages go back to the free list on drop.
    struct MockAlloc {
        pages: KVec<usize>,
        free: Arc<SpinLock<KVec<bool>>>,
    }

    impl Drop for MockAlloc {
        fn drop(&mut self) {
            let mut free = self.free.lock();
            for &i in self.pages.iter() {
                free[i] = true;
            }
        }
    }

    impl MockVram {
        /// Takes `npages` free pages of the memory whose first pfn is `first`.
        fn alloc(&self, first: usize, npages: usize) -> Result<(MockAlloc, FreePages)> {
            let mut pages = KVec::with_capacity(npages, GFP_KERNEL)?;
            let mut pfns = KVec::with_capacity(npages, GFP_KERNEL)?;
            let free = self.free.clone();
            {
                let mut list = free.lock();
                for (i, f) in list
                    .iter_mut()
                    .enumerate()
                    .filter(|(_, f)| **f)
                    .take(npages)
                {
                    *f = false;
                    pages.push_within_capacity(i).map_err(|_| ENOMEM)?;
                    pfns.push_within_capacity(first + i).map_err(|_| ENOMEM)?;
                }
            }
            // Pages taken so far go back to the free list if there are not enough.
            let alloc = MockAlloc { pages, free };
            if alloc.pages.len() < npages {
                return Err(ENOSPC);
            }
            // SAFETY: The pages were just taken from the free list of the memory, once each, and
            // go back to it only when `alloc` is dropped.
            Ok((alloc, unsafe { FreePages::new(pfns) }))
        }
    }

    impl Driver for Mock {
        type Device = MockVram;
        type Allocation = MockAlloc;
        type Access = CpuAccess;

        fn invalidate(
            &self,
            _range: &Range<Self>,
            device: usize,
            span: ops::Range<usize>,
            _event: Event,
        ) {
            self.invalidations.fetch_add(1, Relaxed);
            self.ptes
                .lock()
                .retain(|p| p.device != device || !span.contains(&p.addr));
        }

        fn alloc_devmem(mem: &DeviceMemory<Self>, npages: usize) -> Result<(MockAlloc, FreePages)> {
            mem.device().alloc(mem.pfns().start, npages)
        }

        fn copy_to_vram(
            mem: &DeviceMemory<Self>,
            dst: &[usize],
            src: &[Option<BorrowedPage<'_>>],
        ) -> Result {
            let fail = &mem.device().fail_copies;
            if fail.load(Relaxed) > 0 {
                fail.fetch_sub(1, Relaxed);
                return Err(EIO);
            }
            for (&pfn, page) in dst.iter().zip(src) {
                let vram = &mem.device().backing[pfn - mem.pfns().start];
                match page {
                    // SAFETY: The backing page of a free device page is not used by anyone; the
                    // source is not written by anyone else during a migration.
                    Some(page) => unsafe { vram.copy_from(page) },
                    // SAFETY: As above.
                    None => unsafe { vram.fill_zero_raw(0, PAGE_SIZE)? },
                }
            }
            Ok(())
        }

        fn copy_from_peer(mem: &DeviceMemory<Self>, dst: &[usize], src: &[usize]) -> Result {
            let peers = mem.device().peers.lock();
            for (&to, &from) in dst.iter().zip(src) {
                let (pfns, backing) = peers
                    .iter()
                    .find(|(pfns, _)| pfns.contains(&from))
                    .ok_or(EINVAL)?;
                let vram = &mem.device().backing[to - mem.pfns().start];
                // SAFETY: The backing page of a free device page is not used by anyone; the
                // source is not written by anyone else during a migration.
                unsafe { vram.copy_from(&backing[from - pfns.start]) };
            }
            Ok(())
        }

        fn copy_to_sram(mem: &DeviceMemory<Self>, src: &[usize], dst: &[NewPage<'_>]) -> Result {
            if mem.device().skip_copy_out.xchg(0, Relaxed) != 0 {
                return Ok(());
            }
            for (&pfn, page) in src.iter().zip(dst) {
                // SAFETY: The pages are not read or written by anyone else during a migration.
                unsafe { page.copy_from(&mem.device().backing[pfn - mem.pfns().start]) };
            }
            let start = mem.device().unmap_in_copy.xchg(0, Relaxed);
            if start != 0 {
                // SAFETY: Any span of the current address space (the test's) may be unmapped.
                unsafe { bindings::vm_munmap(start, mem.device().unmap_len.load(Relaxed)) };
                // Let the freeing of what the unmap released (its anon_vma) complete, so that
                // KASAN catches a later use.
                // SAFETY: Waiting for RCU callbacks has no requirements; no lock is held.
                unsafe { bindings::rcu_barrier() };
            }
            Ok(())
        }
    }

    /// A device whose copy engine reaches system memory by DMA, on simulated device memory. It
    /// maps nothing itself.
    struct DmaMock;

    /// The system page at DMA address `addr` of the test's faux device, which has no IOMMU: the
    /// address is physical (of the page, or of its bounce buffer).
    fn page_at(addr: DmaAddress) -> Result<BorrowedPage<'static>> {
        // SAFETY: The address is of a page mapped for the device (above), hence a valid pfn.
        let page = unsafe { bindings::pfn_to_page((addr >> PAGE_SHIFT) as usize) };
        // SAFETY: The page, or its bounce buffer, stays mapped until the copy returns, longer
        // than the tests use it.
        Ok(unsafe { BorrowedPage::from_raw(NonNull::new(page).ok_or(EINVAL)?) })
    }

    impl Driver for DmaMock {
        type Device = MockVram;
        type Allocation = MockAlloc;
        type Access = DmaAccess;

        fn invalidate(
            &self,
            _range: &Range<Self>,
            _device: usize,
            _span: ops::Range<usize>,
            _event: Event,
        ) {
        }

        fn alloc_devmem(mem: &DeviceMemory<Self>, npages: usize) -> Result<(MockAlloc, FreePages)> {
            mem.device().alloc(mem.pfns().start, npages)
        }

        fn copy_to_vram(
            mem: &DeviceMemory<Self>,
            dst: &[usize],
            src: &[Option<DmaAddress>],
        ) -> Result {
            for (&pfn, addr) in dst.iter().zip(src) {
                let vram = &mem.device().backing[pfn - mem.pfns().start];
                match addr {
                    // SAFETY: The backing page of a free device page is not used by anyone; the
                    // source is not written by anyone else during a migration.
                    Some(addr) => unsafe { vram.copy_from(&*page_at(*addr)?) },
                    // SAFETY: As above.
                    None => unsafe { vram.fill_zero_raw(0, PAGE_SIZE)? },
                }
            }
            Ok(())
        }

        fn copy_to_sram(mem: &DeviceMemory<Self>, src: &[usize], dst: &[DmaAddress]) -> Result {
            for (&pfn, &addr) in src.iter().zip(dst) {
                let page = page_at(addr)?;
                // SAFETY: The pages are not read or written by anyone else during a migration.
                unsafe { page.copy_from(&mem.device().backing[pfn - mem.pfns().start]) };
            }
            Ok(())
        }
    }

    impl Mock {
        /// Binds the pages of `range` on the first device; see [`Mock::bind_on`].
        fn bind(svm: &GpuSvm<Mock>, range: &Range<Mock>) -> Result {
            Self::bind_on(svm, range, 0)
        }

        /// Binds the pages `device` read of `range`, which must be current. The page table is
        /// allocated up front: its lock is taken in `invalidate`, which reclaim can call, so
        /// neither it nor the notifier lock may be held around an allocation (lockdep reports
        /// it otherwise).
        fn bind_on(svm: &GpuSvm<Mock>, range: &Range<Mock>, device: usize) -> Result {
            let guard = svm.notifier_read();
            let valid = svm.pages_valid(range, device, &guard).ok_or(EAGAIN)?;
            let mut ptes = svm.driver().ptes.lock();
            ptes.retain(|p| p.device != device || !range.span().contains(&p.addr));
            for (i, pfn) in valid.pfns().iter().enumerate() {
                if !pfn.is_valid() {
                    continue;
                }
                let pte = Pte {
                    device,
                    addr: range.span().start + i * PAGE_SIZE,
                    vram: valid.device_private_owner(i) == Some(owner()),
                };
                ptes.push_within_capacity(pte).map_err(|_| ENOMEM)?;
            }
            Ok(())
        }

        /// Whether `addr` is bound on the first device, and to device memory.
        fn bound(&self, addr: usize) -> Option<bool> {
            self.bound_on(0, addr)
        }

        /// Whether `addr` is bound on `device`, and to device memory.
        fn bound_on(&self, device: usize, addr: usize) -> Option<bool> {
            let ptes = self.ptes.lock();
            ptes.iter()
                .find(|p| p.device == device && p.addr == addr)
                .map(|p| p.vram)
        }

        /// The number of entries bound to device memory.
        fn bound_in_vram(&self) -> usize {
            self.ptes.lock().iter().filter(|p| p.vram).count()
        }
    }

    fn owner() -> DeviceOwner {
        DeviceOwner::from_ref(&OWNER)
    }

    fn new_svm(map: &UserMapping) -> Result<impl PinInit<GpuSvm<Mock>, Error>> {
        let chunks = ChunkSizes::new(&[SZ_2M, SZ_64K, PAGE_SIZE])?.present_only_up_to(SZ_64K)?;
        new_svm_of(map, chunks)
    }

    fn new_svm_of(
        map: &UserMapping,
        chunks: ChunkSizes,
    ) -> Result<impl PinInit<GpuSvm<Mock>, Error>> {
        new_svm_on(map, chunks, &[owner()])
    }

    /// A GPU SVM of the address space of `map` for a device of each of `owners`.
    fn new_svm_on(
        map: &UserMapping,
        chunks: ChunkSizes,
        owners: &[DeviceOwner],
    ) -> Result<impl PinInit<GpuSvm<Mock>, Error>> {
        let ptes = KVec::with_capacity(MAX_PTES, GFP_KERNEL)?;
        let mock = pin_init!(Mock {
            invalidations: Atomic::new(0),
            ptes <- new_mutex!(ptes),
        });
        GpuSvm::new(map.mm(), PAGE_SIZE..1 << 47, 1 << 29, chunks, owners, mock)
    }

    /// A buffer of 16 pages filled by `fill`, a GPU SVM of its address space for two devices of
    /// owners `owners` (with ranges of at most 64K), and the range of its first page.
    fn filled_on_two(owners: [DeviceOwner; 2]) -> Result<(UserMapping, MockSvm, Arc<Range<Mock>>)> {
        let map = UserMapping::new(16)?;
        fill(&map, 16)?;
        let chunks = ChunkSizes::new(&[SZ_64K, PAGE_SIZE])?;
        let svm = Arc::pin_init(new_svm_on(&map, chunks, &owners)?, GFP_KERNEL)?;
        let r = svm.find_or_insert(map.addr(0), 0..usize::MAX)?;
        Ok((map, svm, r))
    }

    fn other_owner() -> DeviceOwner {
        DeviceOwner::from_ref(&OTHER_OWNER)
    }

    fn svm(map: &UserMapping) -> Result<Arc<GpuSvm<Mock>>> {
        Arc::pin_init(new_svm(map)?, GFP_KERNEL)
    }

    fn vram() -> Result<Arc<DeviceMemory<Mock>>> {
        mock_vram(CpuAccess)
    }

    /// Simulated device memory for driver `T`, whose copies reach system memory with `access`.
    fn mock_vram<T: Driver<Device = MockVram>>(access: T::Access) -> Result<Arc<DeviceMemory<T>>> {
        let mut backing = KVec::with_capacity(VRAM_PAGES, GFP_KERNEL)?;
        let mut free = KVec::with_capacity(VRAM_PAGES, GFP_KERNEL)?;
        for _ in 0..VRAM_PAGES {
            backing.push(Page::alloc_page(GFP_KERNEL)?, GFP_KERNEL)?;
            free.push(true, GFP_KERNEL)?;
        }
        let free = Arc::pin_init(new_spinlock!(free), GFP_KERNEL)?;
        let backing = Arc::new(backing, GFP_KERNEL)?;
        let device = pin_init!(MockVram {
            backing,
            peers <- new_spinlock!(KVec::new()),
            free,
            fail_copies: Atomic::new(0),
            unmap_in_copy: Atomic::new(0),
            unmap_len: Atomic::new(0),
            skip_copy_out: Atomic::new(0),
        });
        Arc::pin_init(
            DeviceMemory::new(
                VRAM_PAGES * PAGE_SIZE,
                owner(),
                c_str!("rust_gpusvm_test_vram"),
                device,
                access,
            )?,
            GFP_KERNEL,
        )
    }

    /// Lets memories `a` and `b`, of one owner, copy from each other (an interconnect).
    fn connect(a: &DeviceMemory<Mock>, b: &DeviceMemory<Mock>) -> Result {
        let (a_backing, b_backing) = (a.device().backing.clone(), b.device().backing.clone());
        a.device()
            .peers
            .lock()
            .push((b.pfns(), b_backing), GFP_ATOMIC)?;
        b.device()
            .peers
            .lock()
            .push((a.pfns(), a_backing), GFP_ATOMIC)?;
        Ok(())
    }

    /// Checks that device memory `mem` has nothing in use and released every allocation.
    fn assert_nothing_leaked(mem: &DeviceMemory<Mock>) {
        let stats = mem.stats();
        assert_eq!(stats.pages_in_use.get(), 0);
        assert_eq!(stats.allocations.get(), stats.releases.get());
        assert!(mem.device().free.lock().iter().all(|&f| f));
    }

    /// The index of the first 2M-aligned page of `map`.
    fn aligned_page(map: &UserMapping) -> usize {
        (((map.addr(0) + SZ_2M - 1) & !(SZ_2M - 1)) - map.addr(0)) / PAGE_SIZE
    }

    /// The byte `fill` writes to page `i`: never 0, and different on neighbouring pages.
    fn byte(i: usize) -> u8 {
        // CAST: The value is below 252.
        (i % 251) as u8 + 1
    }

    /// Fills page `i` of `map` with `byte(i)`.
    fn fill(map: &UserMapping, pages: usize) -> Result {
        for i in 0..pages {
            map.write(i * PAGE_SIZE, &[byte(i); PAGE_SIZE])?;
        }
        Ok(())
    }

    /// Counts the bytes of pages `pages` of `map` that differ from what `fill` wrote.
    fn bad_bytes(map: &UserMapping, pages: ops::Range<usize>) -> Result<usize> {
        let mut bad = 0;
        let mut buf = [0u8; 512];
        for i in pages {
            for off in (0..PAGE_SIZE).step_by(buf.len()) {
                map.read(i * PAGE_SIZE + off, &mut buf)?;
                bad += buf.iter().filter(|&&b| b != byte(i)).count();
            }
        }
        Ok(bad)
    }

    type MockSvm = Arc<GpuSvm<Mock>>;

    /// Simulated device memory, a 4M buffer (which contains an aligned 2M) filled by `fill`, and
    /// a GPU SVM of its address space.
    fn filled_with_vram() -> Result<(Arc<DeviceMemory<Mock>>, UserMapping, MockSvm)> {
        let mem = vram()?;
        let map = UserMapping::new(2 * SZ_2M / PAGE_SIZE)?;
        fill(&map, map.len() / PAGE_SIZE)?;
        let svm = svm(&map)?;
        Ok((mem, map, svm))
    }

    /// A 2M buffer filled by `fill`, its range migrated to `mem` (every page moved) and bound.
    /// Returns the mapping (4M, to contain an aligned 2M) and the index of the range's first page.
    fn migrated(
        svm: &GpuSvm<Mock>,
        mem: &DeviceMemory<Mock>,
        map: &UserMapping,
    ) -> Result<(Arc<Range<Mock>>, usize)> {
        let first = aligned_page(map);
        let r = svm.find_or_insert(map.addr(first), 0..usize::MAX)?;
        assert_eq!(r.npages(), SZ_2M / PAGE_SIZE);
        assert_eq!(svm.migrate_to_vram(&r, mem)?, r.npages());
        svm.get_pages(&r, 0, &Fault::write())?;
        Mock::bind(svm, &r)?;
        assert_eq!(svm.driver().bound_in_vram(), r.npages());
        Ok((r, first))
    }

    #[test]
    fn aligned_buffer_gets_one_2m_range() -> Result {
        let map = UserMapping::new(2 * SZ_2M / PAGE_SIZE)?;
        let svm = svm(&map)?;
        let first = map.addr(aligned_page(&map));
        let r = svm.find_or_insert(first + 0x1234, 0..usize::MAX)?;
        assert_eq!(r.span(), first..first + SZ_2M);
        let again = svm.find_or_insert(first + SZ_2M - 1, 0..usize::MAX)?;
        assert!(Arc::ptr_eq(&r, &again));
        assert!(svm.find(first).is_some_and(|f| Arc::ptr_eq(&f, &r)));
        assert!(svm.find(first + SZ_2M).is_none());
        Ok(())
    }

    #[test]
    fn small_vma_gets_small_ranges_that_never_overlap() -> Result {
        let map = UserMapping::new(16)?;
        let svm = svm(&map)?;
        let vma = map.addr(0)..map.addr(16);
        let mut ranges: KVec<Arc<Range<Mock>>> = KVec::new();
        for page in 0..16 {
            let r = svm.find_or_insert(map.addr(page) + 8, 0..usize::MAX)?;
            let span = r.span();
            let size = span.end - span.start;
            assert!(size == SZ_64K || size == PAGE_SIZE);
            assert_eq!(span.start % size, 0);
            assert!(span.start >= vma.start && span.end <= vma.end);
            assert!(span.contains(&map.addr(page)));
            if !ranges.iter().any(|o| Arc::ptr_eq(o, &r)) {
                assert!(!ranges.iter().any(|o| o.overlaps(&span)));
                ranges.push(r, GFP_KERNEL)?;
            }
        }
        let covered: usize = ranges.iter().map(|r| r.span().end - r.span().start).sum();
        assert_eq!(covered, 16 * PAGE_SIZE);
        assert_eq!(svm.count(), (ranges.len(), 1));

        // Iterating over the VMA finds each range once, in address order; a span inside one
        // range finds just it.
        let found = svm.ranges_in(vma.clone())?;
        assert_eq!(found.len(), ranges.len());
        assert!(found
            .windows(2)
            .all(|w| w[0].span().end <= w[1].span().start));
        assert!(found
            .iter()
            .all(|f| ranges.iter().any(|r| Arc::ptr_eq(f, r))));
        let inner = svm.ranges_in(vma.start + 8..vma.start + 16)?;
        assert_eq!(inner.len(), 1);
        assert!(inner[0].span().contains(&vma.start));
        assert_eq!(svm.ranges_in(0..vma.start)?.len(), 0);
        Ok(())
    }

    #[test]
    fn small_chunks_only_cover_memory_the_cpu_touched() -> Result {
        let map = UserMapping::new(64)?;
        let svm = svm(&map)?;
        // The first two 64K-aligned blocks inside the mapping.
        let block = (map.addr(0) + SZ_64K - 1) & !(SZ_64K - 1);
        let page = (block - map.addr(0)) / PAGE_SIZE;
        let per_block = SZ_64K / PAGE_SIZE;

        // One page touched in the first block: a fault there gets a page, not 64K.
        map.write(page * PAGE_SIZE, &[1])?;
        let r = svm.find_or_insert(block, 0..usize::MAX)?;
        assert_eq!(r.span(), block..block + PAGE_SIZE);

        // Every page touched in the second: it gets 64K.
        fill(&map, page + 2 * per_block)?;
        let r = svm.find_or_insert(block + SZ_64K + 5, 0..usize::MAX)?;
        assert_eq!(r.span(), block + SZ_64K..block + 2 * SZ_64K);
        Ok(())
    }

    /// A GPU SVM of `map` whose ranges are one page each, as a run makes many.
    fn page_svm(map: &UserMapping) -> Result<Arc<GpuSvm<Mock>>> {
        Arc::pin_init(new_svm_of(map, ChunkSizes::new(&[PAGE_SIZE])?)?, GFP_KERNEL)
    }

    /// The first page of `map` at the start of a block of `GpuSvm::RUN_BLOCK` bytes; `map` has
    /// room for two blocks from there.
    fn run_block_page(map: &UserMapping) -> usize {
        let block = GpuSvm::<Mock>::RUN_BLOCK;
        (((map.addr(0) + block - 1) & !(block - 1)) - map.addr(0)) / PAGE_SIZE
    }

    #[test]
    fn a_run_reads_the_pages_of_many_ranges_in_one_walk() -> Result {
        let per_block = GpuSvm::<Mock>::RUN_BLOCK / PAGE_SIZE;
        let map = UserMapping::new(3 * per_block)?;
        fill(&map, map.len() / PAGE_SIZE)?;
        let svm = page_svm(&map)?;
        let first = run_block_page(&map);
        // From the second page of a block: the run ends with the block, not with the span.
        let span = map.addr(first + 1)..map.addr(first + 2 * per_block);
        let run = svm.get_pages_run(span.clone(), 0..usize::MAX, 0, &Fault::read())?;
        assert_eq!(run.len(), per_block - 1);
        assert_eq!(svm.count().0, per_block - 1);
        assert_eq!(svm.stats().faults[0].get(), u64::try_from(per_block - 1)?);
        {
            let guard = svm.notifier_read();
            for (i, r) in run.iter().enumerate() {
                assert_eq!(r.span().start, map.addr(first + 1 + i));
                assert_eq!(r.npages(), 1);
                let valid = svm.pages_valid(r, 0, &guard).ok_or(EINVAL)?;
                assert!(valid.pfns()[0].is_valid());
            }
        }
        // One page dropped: only its range loses the proof; the next run finds the same ranges
        // and reads it again.
        map.dontneed(first + 3, 1)?;
        {
            let guard = svm.notifier_read();
            for (i, r) in run.iter().enumerate() {
                assert_eq!(svm.pages_valid(r, 0, &guard).is_some(), i != 2);
            }
        }
        let again = svm.get_pages_run(span, 0..usize::MAX, 0, &Fault::read())?;
        assert_eq!(again.len(), run.len());
        assert!(again.iter().zip(&run).all(|(a, r)| Arc::ptr_eq(a, r)));
        let guard = svm.notifier_read();
        assert!(run.iter().all(|r| svm.pages_valid(r, 0, &guard).is_some()));
        Ok(())
    }

    #[test]
    fn a_run_inserts_between_the_ranges_it_finds() -> Result {
        let per_block = GpuSvm::<Mock>::RUN_BLOCK / PAGE_SIZE;
        let map = UserMapping::new(2 * per_block)?;
        fill(&map, map.len() / PAGE_SIZE)?;
        let svm = page_svm(&map)?;
        let first = run_block_page(&map);
        // Ranges before, inside and right after the run, inserted one by one.
        let mut found = KVec::new();
        for page in [0, 2, 3, 6, 9] {
            found.push(
                svm.find_or_insert(map.addr(first + page), 0..usize::MAX)?,
                GFP_KERNEL,
            )?;
        }
        let run = svm.get_pages_run(
            map.addr(first)..map.addr(first + 9),
            0..usize::MAX,
            0,
            &Fault::read(),
        )?;
        assert_eq!(run.len(), 9);
        for (i, r) in run.iter().enumerate() {
            assert_eq!(r.span(), map.addr(first + i)..map.addr(first + i + 1));
            // The ranges found are those inserted before, and the tree finds every range.
            for f in &found {
                assert_eq!(Arc::ptr_eq(f, r), f.span() == r.span());
            }
            assert!(Arc::ptr_eq(
                &svm.find(map.addr(first + i)).ok_or(EINVAL)?,
                r
            ));
        }
        assert_eq!(svm.count().0, 10);
        // In address order in the tree. (Plain loops: iterator adapters over these types make
        // symbol names longer than modpost takes.)
        let all = svm.ranges_in(map.addr(first)..map.addr(first + 10))?;
        assert_eq!(all.len(), 10);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.span().start, map.addr(first + i));
        }
        Ok(())
    }

    #[test]
    fn a_present_run_ends_at_the_first_range_the_cpu_did_not_touch() -> Result {
        let per_block = GpuSvm::<Mock>::RUN_BLOCK / PAGE_SIZE;
        let map = UserMapping::new(2 * per_block)?;
        let svm = page_svm(&map)?;
        let first = run_block_page(&map);
        // Pages 0 to 3 and 5 touched; the run from page 1 maps 1 to 3, and inserts nothing more.
        for i in [0, 1, 2, 3, 5] {
            map.write((first + i) * PAGE_SIZE, &[1])?;
        }
        let span = map.addr(first + 1)..map.addr(first + per_block);
        let run = svm.get_pages_run(span, 0..usize::MAX, 0, &Fault::present())?;
        assert_eq!(run.len(), 3);
        assert_eq!(svm.count().0, 3);
        assert_eq!(svm.stats().faults[0].get(), 0);
        // A run from a page the CPU did not touch still gets that page's range, with a hole.
        let run = svm.get_pages_run(
            map.addr(first + 4)..map.addr(first + 5),
            0..usize::MAX,
            0,
            &Fault::present(),
        )?;
        assert_eq!(run.len(), 1);
        let guard = svm.notifier_read();
        let valid = svm.pages_valid(&run[0], 0, &guard).ok_or(EINVAL)?;
        assert!(!valid.pfns()[0].is_valid());
        Ok(())
    }

    #[test]
    fn a_run_reads_no_page_again_but_a_snapshot_gone_stale_is_not_stored() -> Result {
        let per_block = GpuSvm::<Mock>::RUN_BLOCK / PAGE_SIZE;
        let map = UserMapping::new(2 * per_block)?;
        fill(&map, map.len() / PAGE_SIZE)?;
        let svm = page_svm(&map)?;
        let owner = svm.owner(0)?;
        let first = run_block_page(&map);
        let span = map.addr(first)..map.addr(first + per_block);
        // The pages a present run reads to find its end are those it stores.
        let mut snapshot = None;
        let run = svm.find_or_insert_run(
            span.clone(),
            0..usize::MAX,
            true,
            Some(owner),
            &mut snapshot,
        )?;
        assert_eq!(run.len(), per_block);
        let snap = snapshot.as_ref().ok_or(EINVAL)?;
        let notifier = svm.notifier_of(&run[0])?;
        let (pfns, _) = snap.pages(notifier, &span, owner).ok_or(EINVAL)?;
        assert!(pfns.iter().all(|p| p.is_valid()));
        // Only under the notifier and for the device pages of the owner it read them for, and only
        // as many as it holds.
        let other = page_svm(&map)?;
        let other_run = other.get_pages_run(span.clone(), 0..usize::MAX, 0, &Fault::present())?;
        assert!(snap
            .pages(other.notifier_of(&other_run[0])?, &span, owner)
            .is_none());
        assert!(snap.pages(notifier, &span, other_owner()).is_none());
        assert!(snap
            .pages(notifier, &(span.start..span.end + PAGE_SIZE), owner)
            .is_none());
        // A page dropped after the snapshot: the run reads it again, a hole now.
        map.dontneed(first + 2, 1)?;
        svm.read_pages(&run, 0, &Fault::present(), snapshot.as_ref())?;
        let guard = svm.notifier_read();
        for (i, r) in run.iter().enumerate() {
            let valid = svm.pages_valid(r, 0, &guard).ok_or(EINVAL)?;
            assert_eq!(valid.pfns()[0].is_valid(), i != 2);
        }
        Ok(())
    }

    #[test]
    fn a_run_chooses_each_chunk_as_a_fault_would() -> Result {
        let per_block = GpuSvm::<Mock>::RUN_BLOCK / PAGE_SIZE;
        let map = UserMapping::new(2 * per_block)?;
        let svm = svm(&map)?;
        // Two 64K blocks: the first with one page touched (4K ranges), the second whole (64K).
        let first = run_block_page(&map);
        let per_64k = SZ_64K / PAGE_SIZE;
        map.write(first * PAGE_SIZE, &[1])?;
        for i in per_64k..2 * per_64k {
            map.write((first + i) * PAGE_SIZE, &[1])?;
        }
        let span = map.addr(first)..map.addr(first + 2 * per_64k);
        let run = svm.get_pages_run(span.clone(), 0..usize::MAX, 0, &Fault::read())?;
        assert_eq!(run.len(), per_64k + 1);
        assert!(run[..per_64k].iter().all(|r| r.npages() == 1));
        assert_eq!(run[per_64k].span(), map.addr(first + per_64k)..span.end);
        // Read faults: every page is there now, holes included.
        let guard = svm.notifier_read();
        for r in &run {
            let valid = svm.pages_valid(r, 0, &guard).ok_or(EINVAL)?;
            assert!(valid.pfns().iter().all(|p| p.is_valid()));
        }
        Ok(())
    }

    #[test]
    fn a_range_is_refused_by_a_new_gpu_svm_at_the_address_of_its_own() -> Result {
        let map = UserMapping::new(16)?;
        fill(&map, 16)?;
        // Two GPU SVMs one after the other at the same address, as the allocator may place them.
        let mut slot = KBox::<GpuSvm<Mock>>::new_uninit(GFP_KERNEL)?;
        let place = slot.as_mut_ptr();
        // SAFETY: `place` is valid for writes and the GPU SVM stays there until dropped in place
        // below.
        unsafe { new_svm(&map)?.__pinned_init(place)? };
        // SAFETY: Initialized above.
        let old = unsafe { &*place };
        let r = old.find_or_insert(map.addr(0), 0..usize::MAX)?;
        old.get_pages(&r, 0, &Fault::read())?;
        // SAFETY: Initialized above, and no borrow of it is used after this.
        unsafe { core::ptr::drop_in_place(place) };
        // SAFETY: As for the first one.
        unsafe { new_svm(&map)?.__pinned_init(place)? };
        // SAFETY: Initialized above.
        let new = unsafe { &*place };
        // The range outlived its GPU SVM and its notifier: the new one must not take it for its
        // own (it would use the old notifier, freed).
        assert_eq!(new.get_pages(&r, 0, &Fault::read()).err(), Some(EINVAL));
        assert!(new.pages_valid(&r, 0, &new.notifier_read()).is_none());
        let mem = vram()?;
        assert_eq!(new.migrate_to_vram(&r, &mem).err(), Some(EINVAL));
        drop(r);
        // SAFETY: Initialized above, and not used after this.
        unsafe { core::ptr::drop_in_place(place) };
        assert_nothing_leaked(&mem);
        Ok(())
    }

    #[test]
    fn a_range_in_device_memory_takes_no_more_of_it() -> Result {
        let (mem, map, svm) = filled_with_vram()?;
        let (r, _) = migrated(&svm, &mem, &map)?;
        let allocations = mem.stats().allocations.get();
        // Nothing to move: no allocation, which could evict other ranges (or this one).
        assert_eq!(svm.migrate_to_vram(&r, &mem)?, 0);
        assert_eq!(mem.stats().allocations.get(), allocations);
        assert_eq!(mem.stats().pages_in_use.get(), r.npages() as u64);
        drop(svm);
        map.unmap(0, map.len() / PAGE_SIZE)?;
        assert_nothing_leaked(&mem);
        Ok(())
    }

    #[test]
    fn no_vma_is_enoent() -> Result {
        let map = UserMapping::new(4)?;
        map.unmap(2, 2)?;
        let svm = svm(&map)?;
        assert_eq!(
            svm.find_or_insert(map.addr(3), 0..usize::MAX).err(),
            Some(ENOENT)
        );
        assert_eq!(svm.find_or_insert(0, 0..usize::MAX).err(), Some(ENOENT));
        Ok(())
    }

    #[test]
    fn invalidation_takes_the_bind_proof_away_until_pages_are_read_again() -> Result {
        let map = UserMapping::new(16)?;
        map.write(0, &[9u8; 16 * 4096])?;
        let svm = svm(&map)?;
        let r = svm.find_or_insert(map.addr(0), 0..usize::MAX)?;

        // Not read yet: no proof.
        assert!(svm.pages_valid(&r, 0, &svm.notifier_read()).is_none());
        svm.get_pages(&r, 0, &Fault::write())?;
        {
            let guard = svm.notifier_read();
            let valid = svm.pages_valid(&r, 0, &guard).ok_or(EINVAL)?;
            assert!(valid.pfns().iter().all(|p| p.is_valid() && p.is_writable()));
        }

        // The CPU mapping of a page of the range changes: the proof is gone.
        let span = r.span();
        let page = (span.start - map.addr(0)) / PAGE_SIZE;
        map.dontneed(page, 1)?;
        assert!(svm.driver().invalidations.load(Relaxed) >= 1);
        assert!(svm.stats().invalidations.get() >= 1);
        assert!(svm.pages_valid(&r, 0, &svm.notifier_read()).is_none());

        // Reading the pages again gives it back.
        svm.get_pages(&r, 0, &Fault::read())?;
        assert!(svm.pages_valid(&r, 0, &svm.notifier_read()).is_some());
        Ok(())
    }

    #[test]
    fn an_invalidation_takes_only_the_proof_of_the_ranges_it_hits() -> Result {
        let map = UserMapping::new(16)?;
        // Two pages touched: two 4K ranges (no 64K chunk over absent pages).
        map.write(0, &[1])?;
        map.write(15 * PAGE_SIZE, &[1])?;
        let svm = svm(&map)?;
        let a = svm.find_or_insert(map.addr(0), 0..usize::MAX)?;
        let b = svm.find_or_insert(map.addr(15), 0..usize::MAX)?;
        assert!(!a.span().contains(&map.addr(15)));
        svm.get_pages(&a, 0, &Fault::read())?;
        svm.get_pages(&b, 0, &Fault::read())?;
        // Same notifier, one page of `a` dropped: `b` keeps its proof.
        map.dontneed(0, 1)?;
        let guard = svm.notifier_read();
        assert!(svm.pages_valid(&a, 0, &guard).is_none());
        assert!(svm.pages_valid(&b, 0, &guard).is_some());
        Ok(())
    }

    #[test]
    fn partial_munmap_leaves_no_stale_pte_and_survivors_fault_again() -> Result {
        let map = UserMapping::new(2 * SZ_2M / PAGE_SIZE)?;
        let first = aligned_page(&map);
        map.write(first * PAGE_SIZE, &[1u8; SZ_2M])?;
        let svm = svm(&map)?;
        let start = map.addr(first);
        let r = svm.find_or_insert(start, 0..usize::MAX)?;
        assert_eq!(r.span(), start..start + SZ_2M);
        svm.get_pages(&r, 0, &Fault::write())?;
        Mock::bind(&svm, &r)?;
        let middle = first + SZ_2M / PAGE_SIZE / 2;
        assert_eq!(svm.driver().bound(map.addr(middle)), Some(false));

        // Unmap the middle page: its device PTE goes at once (the core may invalidate more, e.g.
        // the whole 2M when it splits a THP mapping first), and the range cannot be bound.
        map.unmap(middle, 1)?;
        assert_eq!(svm.driver().bound(map.addr(middle)), None);
        assert!(svm.pages_valid(&r, 0, &svm.notifier_read()).is_none());

        drop(r);
        assert_eq!(svm.collect_garbage(), 1);
        assert_eq!(svm.driver().bound(start), None);
        assert_eq!(svm.count(), (0, 0));
        assert_eq!(svm.stats().gc_runs.get(), 1);

        // The survivors on both sides fault in again, as ranges inside the VMAs left.
        for page in [first, middle - 1, middle + 1, first + SZ_2M / PAGE_SIZE - 1] {
            let r = svm.find_or_insert(map.addr(page), 0..usize::MAX)?;
            assert!(!r.span().contains(&map.addr(middle)));
            svm.get_pages(&r, 0, &Fault::read())?;
            Mock::bind(&svm, &r)?;
            assert_eq!(svm.driver().bound(map.addr(page)), Some(false));
        }
        let mut buf = [0u8; 4];
        map.read((middle + 1) * PAGE_SIZE, &mut buf)?;
        assert_eq!(buf, [1u8; 4]);
        Ok(())
    }

    #[test]
    fn cpu_access_migrates_back_without_the_migrate_lock() -> Result {
        let (mem, map, svm) = filled_with_vram()?;
        let (r, first) = migrated(&svm, &mem, &map)?;
        assert_eq!(svm.stats().migrations_to_vram.get(), 1);
        assert_eq!(svm.stats().bytes_to_vram.get(), SZ_2M as u64);
        assert_eq!(mem.stats().pages_in_use.get(), r.npages() as u64);

        // The CPU reads and writes while the range's migrate lock is held: `migrate_to_ram`
        // must not take it (the test would hang, and lockdep report it).
        {
            let _migrate = r.migrate.lock();
            assert_eq!(bad_bytes(&map, first..first + r.npages())?, 0);
            map.write(first * PAGE_SIZE, &[0xaa; 16])?;
        }
        assert!(mem.stats().cpu_faults.get() >= 1);
        assert_eq!(mem.stats().bytes_cpu_faulted.get(), SZ_2M as u64);
        assert_eq!(mem.stats().pages_in_use.get(), 0);
        assert_eq!(svm.driver().bound_in_vram(), 0);

        // The GPU faults again: system pages now, with the CPU's write.
        svm.get_pages(&r, 0, &Fault::read())?;
        Mock::bind(&svm, &r)?;
        assert_eq!(svm.driver().bound(r.span().start), Some(false));
        let mut buf = [0u8; 17];
        map.read(first * PAGE_SIZE, &mut buf)?;
        assert_eq!(buf[..16], [0xaa; 16]);
        assert_eq!(buf[16], byte(first));
        drop(svm);
        assert_nothing_leaked(&mem);
        Ok(())
    }

    #[test]
    fn two_threads_faulting_one_range_migrate_it_once() -> Result {
        let (mem, map, svm) = filled_with_vram()?;
        let first = aligned_page(&map);
        let r = svm.find_or_insert(map.addr(first), 0..usize::MAX)?;
        let done = Arc::pin_init(Completion::new(), GFP_KERNEL)?;
        let other = Arc::pin_init(new_spinlock!(None), GFP_KERNEL)?;
        {
            let (svm, mem, r, done, other) = (
                svm.clone(),
                mem.clone(),
                r.clone(),
                done.clone(),
                other.clone(),
            );
            workqueue::system_percpu().try_spawn(GFP_KERNEL, move || {
                *other.lock() = Some(svm.migrate_to_vram(&r, &mem));
                done.complete_all();
            })?;
        }
        let mine = svm.migrate_to_vram(&r, &mem)?;
        done.wait_for_completion();
        let theirs = other.lock().take().ok_or(EINVAL)??;

        // One of them moved every page, the other found nothing left to move.
        assert_eq!(mine + theirs, r.npages());
        assert!(mine == 0 || theirs == 0);
        assert_eq!(svm.stats().migrations_to_vram.get(), 1);
        assert_eq!(mem.stats().pages_in_use.get(), r.npages() as u64);
        assert_eq!(bad_bytes(&map, first..first + r.npages())?, 0);
        Ok(())
    }

    #[test]
    fn a_pinned_page_makes_migration_partial_and_the_gpu_still_gets_every_page() -> Result {
        let (mem, map, svm) = filled_with_vram()?;
        let first = aligned_page(&map);
        let pinned = map.pin(first + 3)?;
        let r = svm.find_or_insert(map.addr(first), 0..usize::MAX)?;
        assert_eq!(svm.migrate_to_vram(&r, &mem)?, r.npages() - 1);

        svm.get_pages(&r, 0, &Fault::write())?;
        Mock::bind(&svm, &r)?;
        assert_eq!(svm.driver().bound_in_vram(), r.npages() - 1);
        assert_eq!(svm.driver().bound(map.addr(first + 3)), Some(false));
        assert_eq!(svm.driver().bound(map.addr(first + 4)), Some(true));
        drop(pinned);
        assert_eq!(bad_bytes(&map, first..first + r.npages())?, 0);
        Ok(())
    }

    #[test]
    fn a_failed_copy_leaves_the_range_in_system_memory() -> Result {
        let (mem, map, svm) = filled_with_vram()?;
        let first = aligned_page(&map);
        let r = svm.find_or_insert(map.addr(first), 0..usize::MAX)?;
        mem.device().fail_copies.store(1, Relaxed);
        assert_eq!(svm.migrate_to_vram(&r, &mem).err(), Some(EIO));
        svm.get_pages(&r, 0, &Fault::read())?;
        Mock::bind(&svm, &r)?;
        assert_eq!(svm.driver().bound_in_vram(), 0);
        assert_eq!(bad_bytes(&map, first..first + r.npages())?, 0);
        assert_nothing_leaked(&mem);
        Ok(())
    }

    #[test]
    fn munmap_in_a_migrated_range_frees_its_device_pages() -> Result {
        let (mem, map, svm) = filled_with_vram()?;
        let (r, first) = migrated(&svm, &mem, &map)?;
        let middle = first + r.npages() / 2;
        map.unmap(middle, 1)?;
        assert_eq!(svm.driver().bound(map.addr(middle)), None);
        assert_eq!(mem.stats().pages_in_use.get(), r.npages() as u64 - 1);
        assert_eq!(svm.collect_garbage(), 1);
        drop(r);

        // The survivors fault in again, from device memory.
        for page in [first, middle - 1, middle + 1] {
            let r = svm.find_or_insert(map.addr(page), 0..usize::MAX)?;
            svm.get_pages(&r, 0, &Fault::read())?;
            Mock::bind(&svm, &r)?;
            assert_eq!(svm.driver().bound(map.addr(page)), Some(true));
        }
        assert_eq!(bad_bytes(&map, first..middle)?, 0);
        assert_eq!(bad_bytes(&map, middle + 1..first + SZ_2M / PAGE_SIZE)?, 0);
        map.unmap(0, map.len() / PAGE_SIZE)?;
        drop(svm);
        assert_nothing_leaked(&mem);
        Ok(())
    }

    /// Writes a pattern over free memory, single pages and 2M folios freed again, which the
    /// next allocations are likely to get back.
    fn dirty_free_memory() -> Result {
        let pattern = [0xa5u8; PAGE_SIZE];
        for _ in 0..2 {
            // SAFETY: The folio is freed unused, without going to a migration.
            let huge = unsafe { SystemFolio::alloc_huge_unzeroed()? };
            for n in 0..huge.pages() {
                let page = huge.page(n).ok_or(EINVAL)?;
                // SAFETY: The folio is new and ours alone; `pattern` has a page of bytes.
                unsafe { page.write_raw(pattern.as_ptr(), 0, PAGE_SIZE)? };
            }
        }
        let mut pages = KVec::with_capacity(VRAM_PAGES, GFP_KERNEL)?;
        for _ in 0..VRAM_PAGES {
            let page = Page::alloc_page(GFP_KERNEL)?;
            // SAFETY: As above.
            unsafe { page.write_raw(pattern.as_ptr(), 0, PAGE_SIZE)? };
            pages.push(page, GFP_KERNEL)?;
        }
        Ok(())
    }

    #[test]
    fn pages_a_copy_to_system_memory_leaves_out_read_zero() -> Result {
        let (mem, map, svm) = filled_with_vram()?;
        let (r, first) = migrated(&svm, &mem, &map)?;
        // The new system pages are not zeroed when allocated: they would show the pattern.
        dirty_free_memory()?;
        mem.device().skip_copy_out.store(1, Relaxed);
        assert_eq!(svm.evict_range(&r, r.span(), &mem)?, r.npages());
        assert_eq!(mem.device().skip_copy_out.load(Relaxed), 0);
        let mut nonzero = 0;
        let mut buf = [0u8; 512];
        for i in first..first + r.npages() {
            for off in (0..PAGE_SIZE).step_by(buf.len()) {
                map.read(i * PAGE_SIZE + off, &mut buf)?;
                nonzero += buf.iter().filter(|&&b| b != 0).count();
            }
        }
        assert_eq!(nonzero, 0);
        assert_nothing_leaked(&mem);
        Ok(())
    }

    #[test]
    fn a_range_moves_between_peers_device_to_device() -> Result {
        let (a, map, svm) = filled_with_vram()?;
        let b = vram()?;
        connect(&a, &b)?;
        let (r, first) = migrated(&svm, &a, &map)?;
        // Half of it goes back to system memory: the move takes both kinds of page.
        let half = r.span().start + SZ_2M / 2;
        assert_eq!(svm.evict_range(&r, half..r.span().end, &a)?, r.npages() / 2);
        assert_eq!(svm.migrate_to_vram(&r, &b)?, r.npages());
        assert_eq!(a.stats().pages_in_use.get(), 0);
        assert_eq!(b.stats().pages_in_use.get(), r.npages() as u64);
        assert_eq!(b.stats().bytes_from_peers.get(), SZ_2M as u64 / 2);
        // Nothing more to move, and back again, all of it from the peer.
        assert_eq!(svm.migrate_to_vram(&r, &b)?, 0);
        assert_eq!(svm.migrate_to_vram(&r, &a)?, r.npages());
        assert_eq!(a.stats().bytes_from_peers.get(), SZ_2M as u64);
        svm.get_pages(&r, 0, &Fault::write())?;
        Mock::bind(&svm, &r)?;
        assert_eq!(svm.driver().bound_in_vram(), r.npages());
        // No CPU fault took the pages through system memory on the way.
        assert_eq!(a.stats().cpu_faults.get() + b.stats().cpu_faults.get(), 0);
        assert_eq!(bad_bytes(&map, first..first + r.npages())?, 0);
        drop(svm);
        map.unmap(0, map.len() / PAGE_SIZE)?;
        assert_nothing_leaked(&a);
        assert_nothing_leaked(&b);
        Ok(())
    }

    #[test]
    fn each_device_reads_binds_and_loses_its_own_pages() -> Result {
        let (map, svm, r) = filled_on_two([owner(), other_owner()])?;
        assert_eq!(svm.devices(), 2);
        let first = (r.span().start - map.addr(0)) / PAGE_SIZE;
        // One range, read by each device on its own.
        svm.get_pages(&r, 1, &Fault::read())?;
        assert!(svm.pages_valid(&r, 0, &svm.notifier_read()).is_none());
        Mock::bind_on(&svm, &r, 1)?;
        svm.get_pages(&r, 0, &Fault::write())?;
        Mock::bind_on(&svm, &r, 0)?;
        for device in 0..2 {
            assert_eq!(svm.driver().bound_on(device, r.span().start), Some(false));
            assert!(svm.pages_valid(&r, device, &svm.notifier_read()).is_some());
        }
        // No third device.
        assert_eq!(svm.get_pages(&r, 2, &Fault::read()).err(), Some(EINVAL));
        assert!(svm.pages_valid(&r, 2, &svm.notifier_read()).is_none());
        assert_eq!(svm.owner(2).err(), Some(EINVAL));

        // The CPU drops the first page and writes a new one: the invalidation reaches both
        // devices, a call for each.
        let calls = svm.driver().invalidations.load(Relaxed);
        let seen = svm.stats().invalidations.get();
        map.dontneed(first, 1)?;
        map.write(first * PAGE_SIZE, &[0x5a])?;
        assert!(svm.stats().invalidations.get() > seen);
        assert!(svm.driver().invalidations.load(Relaxed) >= calls + 2);
        for device in 0..2 {
            assert_eq!(svm.driver().bound_on(device, r.span().start), None);
            assert!(svm.pages_valid(&r, device, &svm.notifier_read()).is_none());
        }
        // The second device reads again; the first stays without pages until it does.
        svm.get_pages(&r, 1, &Fault::read())?;
        let guard = svm.notifier_read();
        assert!(svm.pages_valid(&r, 0, &guard).is_none());
        let valid = svm.pages_valid(&r, 1, &guard).ok_or(EINVAL)?;
        // SAFETY: The pages are valid under the notifier lock: they cannot be freed.
        let page = unsafe { valid.pfns()[0].page() }.ok_or(EINVAL)?;
        let mut b = [0u8];
        // SAFETY: `b` is valid for one byte.
        unsafe { page.read_raw(b.as_mut_ptr(), 0, 1)? };
        assert_eq!(b[0], 0x5a);
        Ok(())
    }

    #[test]
    fn exclusive_atomics_invalidate_the_devices_of_other_owners_only() -> Result {
        // Two devices of other owners, then two peers (one owner).
        let cases = [
            ([owner(), other_owner()], false),
            ([owner(), owner()], true),
        ];
        for (owners, second_keeps) in cases {
            let (_map, svm, r) = filled_on_two(owners)?;
            for device in 0..2 {
                svm.get_pages(&r, device, &Fault::write())?;
                Mock::bind_on(&svm, &r, device)?;
            }
            svm.get_pages(&r, 0, &Fault::atomic(AtomicPolicy::Exclusive, None))?;
            let guard = svm.notifier_read();
            let valid = svm.pages_valid(&r, 0, &guard).ok_or(EINVAL)?;
            assert!(valid.atomic());
            assert_eq!(svm.pages_valid(&r, 1, &guard).is_some(), second_keeps);
            drop(guard);
            assert_eq!(svm.driver().bound_on(0, r.span().start), Some(false));
            let kept = svm.driver().bound_on(1, r.span().start).is_some();
            assert_eq!(kept, second_keeps);
        }
        Ok(())
    }

    #[test]
    fn the_collector_tears_a_range_down_on_every_device() -> Result {
        let (map, svm, r) = filled_on_two([owner(), other_owner()])?;
        for device in 0..2 {
            svm.get_pages(&r, device, &Fault::read())?;
            Mock::bind_on(&svm, &r, device)?;
        }
        map.unmap(0, 16)?;
        for device in 0..2 {
            assert_eq!(svm.driver().bound_on(device, r.span().start), None);
        }
        drop(r);
        let calls = svm.driver().invalidations.load(Relaxed);
        assert_eq!(svm.collect_garbage(), 1);
        assert_eq!(svm.driver().invalidations.load(Relaxed), calls + 2);
        assert_eq!(svm.count(), (0, 0));
        Ok(())
    }

    #[test]
    fn device_memory_of_no_device_of_the_svm_is_refused() -> Result {
        // `vram()` is of `owner()`, which neither device of the GPU SVM has.
        let (map, svm, r) = filled_on_two([other_owner(), other_owner()])?;
        let mem = vram()?;
        let chunks = ChunkSizes::new(&[SZ_64K, PAGE_SIZE])?;
        assert_eq!(new_svm_on(&map, chunks, &[]).err(), Some(EINVAL));
        assert_eq!(svm.migrate_to_vram(&r, &mem).err(), Some(EINVAL));
        assert_eq!(svm.evict_range(&r, r.span(), &mem).err(), Some(EINVAL));
        assert_nothing_leaked(&mem);
        Ok(())
    }

    #[test]
    fn range_eviction_brings_the_pages_back() -> Result {
        let (mem, map, svm) = filled_with_vram()?;
        let (r, first) = migrated(&svm, &mem, &map)?;
        assert_eq!(svm.evict_range(&r, r.span(), &mem)?, r.npages());
        assert_eq!(svm.driver().bound_in_vram(), 0);
        assert_eq!(svm.stats().bytes_evicted.get(), SZ_2M as u64);
        assert_eq!(mem.stats().cpu_faults.get(), 0);
        assert_nothing_leaked(&mem);
        assert_eq!(bad_bytes(&map, first..first + r.npages())?, 0);
        Ok(())
    }

    #[test]
    fn atomics_on_system_memory_hold_until_the_cpu_touches_the_page() -> Result {
        let map = UserMapping::new(16)?;
        fill(&map, 16)?;
        let svm = svm(&map)?;
        let r = svm.find_or_insert(map.addr(0), 0..usize::MAX)?;
        let first = (r.span().start - map.addr(0)) / PAGE_SIZE;
        svm.get_pages(&r, 0, &Fault::write())?;
        Mock::bind(&svm, &r)?;

        // Making the pages exclusive does not invalidate our own entries.
        let seen = svm.stats().invalidations.get();
        svm.get_pages(&r, 0, &Fault::atomic(AtomicPolicy::Exclusive, None))?;
        assert_eq!(svm.stats().invalidations.get(), seen);
        assert_eq!(svm.driver().bound(r.span().start), Some(false));
        {
            let guard = svm.notifier_read();
            let valid = svm.pages_valid(&r, 0, &guard).ok_or(EINVAL)?;
            assert!(valid.atomic());
            // The device increments the first byte of the range.
            // SAFETY: The pages are valid under the notifier lock: they cannot be freed.
            let page = unsafe { valid.pfns()[0].page() }.ok_or(EINVAL)?;
            let mut b = [0u8];
            // SAFETY: `b` is valid for one byte; the CPU cannot access the page meanwhile.
            unsafe {
                page.read_raw(b.as_mut_ptr(), 0, 1)?;
                b[0] += 1;
                page.write_raw(b.as_ptr(), 0, 1)?;
            }
        }

        // The CPU reads the page: it takes it back, which invalidates the range.
        let mut b = [0u8];
        map.read(first * PAGE_SIZE, &mut b)?;
        assert_eq!(b[0], byte(first) + 1);
        assert!(svm.stats().invalidations.get() > seen);
        assert_eq!(svm.driver().bound(r.span().start), None);
        assert!(svm.pages_valid(&r, 0, &svm.notifier_read()).is_none());
        Ok(())
    }

    #[test]
    fn atomics_under_the_vram_policy_migrate_the_range() -> Result {
        let (mem, map, svm) = filled_with_vram()?;
        let first = aligned_page(&map);
        let r = svm.find_or_insert(map.addr(first), 0..usize::MAX)?;
        svm.get_pages(&r, 0, &Fault::atomic(AtomicPolicy::Vram, Some(&mem)))?;
        assert_eq!(svm.stats().migrations_to_vram.get(), 1);
        {
            let guard = svm.notifier_read();
            let valid = svm.pages_valid(&r, 0, &guard).ok_or(EINVAL)?;
            assert!(valid.atomic());
            assert!((0..r.npages()).all(|i| valid.device_private_owner(i) == Some(owner())));
        }
        assert_eq!(bad_bytes(&map, first..first + r.npages())?, 0);
        Ok(())
    }

    #[test]
    fn system_pages_are_dma_mapped_for_the_device_and_device_pages_are_not() -> Result {
        let reg = faux::Registration::new(c_str!("rust-gpusvm-test"), None)?;
        // SAFETY: Nothing maps or allocates DMA memory for the device yet.
        unsafe { reg.dma_coerce_mask_and_coherent(DmaMask::new::<64>())? };
        let (mem, map, svm) = filled_with_vram()?;
        let first = aligned_page(&map);
        let pinned = map.pin(first + 1)?;
        let r = svm.find_or_insert(map.addr(first), 0..usize::MAX)?;
        assert_eq!(svm.migrate_to_vram(&r, &mem)?, r.npages() - 1);
        // SAFETY: The DMA mask of the device does not change.
        let fault = unsafe { Fault::read().dma(reg.bound()) };
        svm.get_pages(&r, 0, &fault)?;
        {
            let guard = svm.notifier_read();
            let valid = svm.pages_valid(&r, 0, &guard).ok_or(EINVAL)?;
            // The pinned page stayed in system memory: it is mapped (at an address that depends
            // on the platform: an IOMMU, bounce buffers); the others are in VRAM.
            assert!(valid.dma_address(1).is_some());
            assert_eq!(valid.dma_address(0), None);
            assert_eq!(valid.dma_address(2), None);
        }
        drop(pinned);
        // Reading the pages without mapping them drops the mappings.
        svm.get_pages(&r, 0, &Fault::read())?;
        let guard = svm.notifier_read();
        let valid = svm.pages_valid(&r, 0, &guard).ok_or(EINVAL)?;
        assert_eq!(valid.dma_address(1), None);
        Ok(())
    }

    #[test]
    fn dma_mappings_go_when_the_device_unbinds() -> Result {
        let reg = faux::Registration::new(c_str!("rust-gpusvm-unbind"), None)?;
        // SAFETY: Nothing maps or allocates DMA memory for the device yet.
        unsafe { reg.dma_coerce_mask_and_coherent(DmaMask::new::<64>())? };
        let map = UserMapping::new(4)?;
        fill(&map, 4)?;
        let svm = svm(&map)?;
        let r = svm.find_or_insert(map.addr(0), 0..usize::MAX)?;
        // SAFETY: The DMA mask of the device does not change.
        let fault = unsafe { Fault::read().dma(reg.bound()) };
        svm.get_pages(&r, 0, &fault)?;
        let mapped = |svm: &GpuSvm<Mock>| -> Result<usize> {
            let guard = svm.notifier_read();
            let valid = svm.pages_valid(&r, 0, &guard).ok_or(EINVAL)?;
            Ok((0..r.npages())
                .filter(|&i| valid.dma_address(i).is_some())
                .count())
        };
        assert_eq!(mapped(&svm)?, r.npages());
        // The device goes while the range lives: its mappings go with its binding, not later.
        drop(reg);
        assert_eq!(mapped(&svm)?, 0);
        // An invalidation afterwards has nothing left to unmap.
        map.unmap(0, 4)?;
        assert!(svm.pages_valid(&r, 0, &svm.notifier_read()).is_none());
        Ok(())
    }

    #[test]
    fn dma_copies_get_device_addresses_and_stop_when_the_device_unbinds() -> Result {
        let reg = faux::Registration::new(c_str!("rust-gpusvm-dma-copy"), None)?;
        // SAFETY: Nothing maps or allocates DMA memory for the device yet.
        unsafe { reg.dma_coerce_mask_and_coherent(DmaMask::new::<64>())? };
        // SAFETY: The DMA mask of the device does not change.
        let mem = mock_vram::<DmaMock>(unsafe { DmaAccess::new(reg.bound())? })?;
        let map = UserMapping::new(32)?;
        // A 64K range: 8 pages written, 8 holes.
        let first = (map.addr(0).next_multiple_of(SZ_64K) - map.addr(0)) / PAGE_SIZE;
        for i in first..first + 8 {
            map.write(i * PAGE_SIZE, &[byte(i); PAGE_SIZE])?;
        }
        let svm = Arc::pin_init(
            GpuSvm::new(
                map.mm(),
                PAGE_SIZE..1 << 47,
                1 << 29,
                ChunkSizes::new(&[SZ_64K, PAGE_SIZE])?,
                &[owner()],
                DmaMock,
            )?,
            GFP_KERNEL,
        )?;
        let r = svm.find_or_insert(map.addr(first), 0..usize::MAX)?;
        assert_eq!(r.npages(), 16);
        // The holes are zeroed in device memory, with nothing to map.
        assert_eq!(svm.migrate_to_vram(&r, &mem)?, 16);
        assert_eq!(mem.stats().pages_in_use.get(), 16);
        // A CPU read brings the pages back through their device addresses (with bounce buffers
        // under `swiotlb=force`, copied back when the layer unmaps them).
        assert_eq!(bad_bytes(&map, first..first + 8)?, 0);
        let mut zero = [1u8; 64];
        map.read((first + 12) * PAGE_SIZE, &mut zero)?;
        assert!(zero.iter().all(|&b| b == 0));
        assert_eq!(mem.stats().pages_in_use.get(), 0);
        assert_eq!(svm.migrate_to_vram(&r, &mem)?, 16);
        // Once the device unbinds, copies fail and the pages stay in device memory.
        drop(reg);
        assert_eq!(svm.evict_range(&r, r.span(), &mem).err(), Some(ENODEV));
        assert!(map.read(first * PAGE_SIZE, &mut zero).is_err());
        assert_eq!(mem.stats().pages_in_use.get(), 16);
        // Unmapping frees them without a copy; the memory then goes with nothing in use.
        map.unmap(first, 16)?;
        assert_eq!(mem.stats().pages_in_use.get(), 0);
        drop(svm);
        assert!(mem.evict_all());
        Ok(())
    }

    #[test]
    fn a_range_collected_while_a_fault_holds_it_keeps_its_notifier() -> Result {
        let map = UserMapping::new(4)?;
        fill(&map, 4)?;
        let svm = svm(&map)?;
        let r = svm.find_or_insert(map.addr(0), 0..usize::MAX)?;
        map.unmap(0, 1)?;
        assert_eq!(svm.collect_garbage(), 1);
        // A fault still holds the range: its notifier stays, and the fault can use it.
        assert_eq!(svm.count(), (0, 1));
        assert_eq!(svm.get_pages(&r, 0, &Fault::read()).err(), Some(EFAULT));
        drop(r);
        // Once nothing uses it, the next collection removes it.
        let r = svm.find_or_insert(map.addr(1), 0..usize::MAX)?;
        map.unmap(1, 1)?;
        drop(r);
        assert_eq!(svm.collect_garbage(), 1);
        assert_eq!(svm.count(), (0, 0));
        Ok(())
    }

    #[test]
    fn present_pages_are_read_and_nothing_is_faulted_in() -> Result {
        let map = UserMapping::new(2 * SZ_2M / PAGE_SIZE)?;
        let first = aligned_page(&map);
        let half = SZ_2M / PAGE_SIZE / 2;
        for i in first..first + half {
            map.write(i * PAGE_SIZE, &[1])?;
        }
        let svm = svm(&map)?;
        let r = svm.find_or_insert(map.addr(first), 0..usize::MAX)?;
        // Twice: the second look finds the untouched half still absent.
        for _ in 0..2 {
            svm.get_pages(&r, 0, &Fault::present())?;
            let guard = svm.notifier_read();
            let valid = svm.pages_valid(&r, 0, &guard).ok_or(EINVAL)?;
            let (touched, untouched) = valid.pfns().split_at(half);
            assert!(touched.iter().all(|p| p.is_valid() && p.is_writable()));
            assert!(untouched.iter().all(|p| !p.is_valid()));
        }
        assert_eq!(svm.stats().faults[0].get(), 0);
        svm.get_pages(&r, 0, &Fault::read())?;
        let guard = svm.notifier_read();
        let valid = svm.pages_valid(&r, 0, &guard).ok_or(EINVAL)?;
        assert!(valid.pfns().iter().all(|p| p.is_valid()));
        assert_eq!(svm.stats().faults[0].get(), 1);
        Ok(())
    }

    #[test]
    fn munmap_while_an_eviction_by_physical_page_copies_frees_nothing_it_uses() -> Result {
        let (mem, map, svm) = filled_with_vram()?;
        let (r, _) = migrated(&svm, &mem, &map)?;
        drop(r);
        drop(svm);
        // The eviction replaces the mappings with migration entries; while it copies, the process
        // unmaps the buffer, which frees its anon_vma unless the migration holds it; removing
        // the entries then walks that anon_vma (KASAN reports the use after free).
        mem.device().unmap_len.store(map.len(), Relaxed);
        mem.device().unmap_in_copy.store(map.addr(0), Relaxed);
        assert!(mem.evict_all());
        assert_eq!(mem.device().unmap_in_copy.load(Relaxed), 0);
        assert_nothing_leaked(&mem);
        Ok(())
    }

    #[test]
    fn teardown_with_ranges_in_device_memory_frees_everything() -> Result {
        let (mem, map, svm) = filled_with_vram()?;
        let (r, first) = migrated(&svm, &mem, &map)?;
        drop(r);
        drop(svm);

        // The process still maps the device pages; evicting them (as dropping the device memory
        // does) gives them back without a CPU fault.
        assert!(mem.evict_all());
        assert_eq!(mem.stats().cpu_faults.get(), 0);
        assert_eq!(mem.stats().bytes_evicted.get(), SZ_2M as u64);
        assert_nothing_leaked(&mem);
        assert_eq!(bad_bytes(&map, first..first + SZ_2M / PAGE_SIZE)?, 0);
        Ok(())
    }

    /// Simulated device memory, a 4M buffer whose aligned 2M is a huge page, filled by `fill`, a
    /// GPU SVM of its address space and the range of the huge page.
    type HugePageRange = (
        Arc<DeviceMemory<Mock>>,
        UserMapping,
        MockSvm,
        Arc<Range<Mock>>,
    );

    /// A [`HugePageRange`] whose huge page moved to device memory whole.
    fn huge_page_range() -> Result<HugePageRange> {
        let mem = vram()?;
        let map = UserMapping::new(2 * SZ_2M / PAGE_SIZE)?;
        let first = aligned_page(&map);
        map.madvise(first, SZ_2M / PAGE_SIZE, bindings::MADV_HUGEPAGE)?;
        fill(&map, map.len() / PAGE_SIZE)?;
        let svm = svm(&map)?;
        let r = svm.find_or_insert(map.addr(first), 0..usize::MAX)?;
        assert_eq!(r.npages(), SZ_2M / PAGE_SIZE);
        assert_eq!(svm.migrate_to_vram(&r, &mem)?, r.npages());
        // The huge page moved as one device folio.
        assert_eq!(mem.stats().huge_folios.get(), 1);
        Ok((mem, map, svm, r))
    }

    #[test]
    fn a_huge_page_moves_as_one_folio_and_one_cpu_fault_brings_it_back() -> Result {
        let (mem, map, svm, r) = huge_page_range()?;
        let first = aligned_page(&map);
        svm.get_pages(&r, 0, &Fault::read())?;
        Mock::bind(&svm, &r)?;
        assert_eq!(svm.driver().bound_in_vram(), r.npages());
        assert_eq!(bad_bytes(&map, 0..map.len() / PAGE_SIZE)?, 0);
        assert_eq!(mem.stats().cpu_faults.get(), 1);
        assert_eq!(mem.stats().huge_folios.get(), 2);
        assert_eq!(mem.stats().bytes_cpu_faulted.get(), SZ_2M as u64);
        drop(r);
        drop(svm);
        assert_nothing_leaked(&mem);
        assert_eq!(bad_bytes(&map, first..first + SZ_2M / PAGE_SIZE)?, 0);
        Ok(())
    }

    #[test]
    fn evicting_part_of_a_huge_device_page_splits_it() -> Result {
        let (mem, map, svm, r) = huge_page_range()?;
        let page = aligned_page(&map) + 5;
        let one = map.addr(page)..map.addr(page + 1);
        assert_eq!(svm.evict_range(&r, one, &mem)?, 1);
        assert_eq!(mem.stats().pages_in_use.get(), r.npages() as u64 - 1);
        assert_eq!(mem.stats().huge_folios.get(), 1);
        // The GPU reads the mixed range in whole; the CPU reads the data back.
        svm.get_pages(&r, 0, &Fault::read())?;
        Mock::bind(&svm, &r)?;
        assert_eq!(svm.driver().bound_in_vram(), r.npages() - 1);
        assert_eq!(svm.driver().bound(map.addr(page)), Some(false));
        assert_eq!(bad_bytes(&map, 0..map.len() / PAGE_SIZE)?, 0);
        drop(r);
        drop(svm);
        map.unmap(0, map.len() / PAGE_SIZE)?;
        assert_nothing_leaked(&mem);
        Ok(())
    }

    #[test]
    fn eviction_by_physical_page_moves_a_huge_device_page_whole() -> Result {
        let (mem, map, huge_svm, r) = huge_page_range()?;
        drop(r);
        drop(huge_svm);
        assert!(mem.evict_all());
        assert_eq!(mem.stats().huge_folios.get(), 2);
        assert_eq!(mem.stats().cpu_faults.get(), 0);
        assert_eq!(mem.stats().bytes_evicted.get(), SZ_2M as u64);
        assert_nothing_leaked(&mem);
        assert_eq!(bad_bytes(&map, 0..map.len() / PAGE_SIZE)?, 0);

        // The pages of the freed huge folio serve as single pages next.
        let small = UserMapping::new(2 * SZ_2M / PAGE_SIZE)?;
        fill(&small, small.len() / PAGE_SIZE)?;
        let svm = svm(&small)?;
        let (r, _) = migrated(&svm, &mem, &small)?;
        assert_eq!(mem.stats().huge_folios.get(), 2);
        assert_eq!(bad_bytes(&small, 0..small.len() / PAGE_SIZE)?, 0);
        drop(r);
        drop(svm);
        assert_nothing_leaked(&mem);
        Ok(())
    }

    #[test]
    fn an_untouched_2m_range_moves_as_one_zeroed_folio() -> Result {
        let mem = vram()?;
        let map = UserMapping::new(2 * SZ_2M / PAGE_SIZE)?;
        let first = aligned_page(&map);
        let svm = svm(&map)?;
        let r = svm.find_or_insert(map.addr(first), 0..usize::MAX)?;
        assert_eq!(svm.migrate_to_vram(&r, &mem)?, r.npages());
        assert_eq!(mem.stats().huge_folios.get(), 1);
        let mut buf = [0xffu8; 512];
        let mut nonzero = 0;
        for off in (0..SZ_2M).step_by(buf.len()) {
            map.read(first * PAGE_SIZE + off, &mut buf)?;
            nonzero += buf.iter().filter(|&&b| b != 0).count();
        }
        assert_eq!(nonzero, 0);
        assert_eq!(mem.stats().cpu_faults.get(), 1);
        assert_eq!(mem.stats().huge_folios.get(), 2);
        drop(r);
        drop(svm);
        assert_nothing_leaked(&mem);
        Ok(())
    }
}
