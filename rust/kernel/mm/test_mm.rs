// SPDX-License-Identifier: GPL-2.0

//! A user address space for the KUnit tests of the `mm` abstractions.
//!
//! KUnit attaches a fresh `mm` to the kthread of each test case (`kunit_attach_mm`), so the tests
//! map, touch, change and unmap real user memory as a process would.

// Each suite uses a part of it, and the suites come with the abstractions patch by patch: what the
// first ones leave unused is used later. `allow`, as `expect` would fail once all are in.
#![allow(dead_code)]

use crate::{
    bindings,
    error::to_result,
    mm::{
        mmu_notifier::{
            Event,
            IntervalNotifier,
            Invalidate,
            NotifierRange,
            PendingSeq,
            SeqSet,
            WouldBlock, //
        },
        DeviceOwner,
        MmWithUser, //
    },
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        new_mutex,
        Mutex, //
    },
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};
use core::{
    ops::Range,
    ptr::NonNull, //
};

/// Anonymous private read-write memory of the test's address space, unmapped by KUnit at the
/// end of the test case.
pub(crate) struct UserMapping {
    start: usize,
    pages: usize,
}

impl UserMapping {
    /// Maps `pages` pages of anonymous memory.
    pub(crate) fn new(pages: usize) -> Result<Self> {
        let len = pages.checked_mul(PAGE_SIZE).ok_or(EINVAL)?;
        // SAFETY: Called from a KUnit test case, so the current test is valid; a null file maps
        // anonymous memory.
        let start = unsafe {
            bindings::kunit_vm_mmap(
                bindings::kunit_get_current_test(),
                core::ptr::null_mut(),
                0,
                len,
                (bindings::PROT_READ | bindings::PROT_WRITE) as usize,
                (bindings::MAP_ANONYMOUS | bindings::MAP_PRIVATE) as usize,
                0,
            )
        };
        // `vm_mmap` returns a page-aligned address or a negative error code.
        if start == 0 || start % PAGE_SIZE != 0 {
            return Err(ENOMEM);
        }
        Ok(Self { start, pages })
    }

    /// The address space of the test case, which the mapping is part of.
    pub(crate) fn mm(&self) -> &MmWithUser {
        // SAFETY: `UserMapping::new` succeeded, so KUnit attached an mm to the test kthread
        // (`kthread_use_mm`), and the kthread holds a user reference on it until the test case
        // ends, which outlives `self`.
        unsafe { MmWithUser::from_raw((*bindings::get_current()).mm) }
    }

    /// The address of page `page` of the mapping.
    pub(crate) fn addr(&self, page: usize) -> usize {
        self.start + page * PAGE_SIZE
    }

    /// The length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    /// Writes `data` at `offset` bytes into the mapping, faulting pages in.
    pub(crate) fn write(&self, offset: usize, data: &[u8]) -> Result {
        UserSlice::new(UserPtr::from_addr(self.start + offset), data.len())
            .writer()
            .write_slice(data)
    }

    /// Reads `buf.len()` bytes at `offset` bytes into the mapping.
    pub(crate) fn read(&self, offset: usize, buf: &mut [u8]) -> Result {
        UserSlice::new(UserPtr::from_addr(self.start + offset), buf.len())
            .reader()
            .read_slice(buf)
    }

    /// Unmaps `count` pages from page `page` on.
    pub(crate) fn unmap(&self, page: usize, count: usize) -> Result {
        // SAFETY: Any range of the current address space may be unmapped.
        to_result(unsafe { bindings::vm_munmap(self.addr(page), count * PAGE_SIZE) })
    }

    /// Pins page `page` of the mapping, faulting it in writable, as a driver pins pages for DMA:
    /// it cannot migrate until the pin is dropped.
    pub(crate) fn pin(&self, page: usize) -> Result<PinnedPage> {
        let mut raw: *mut bindings::page = core::ptr::null_mut();
        // SAFETY: `raw` has room for one page pointer; the address is in the current mm.
        let ret = unsafe {
            bindings::pin_user_pages_fast(self.addr(page), 1, bindings::FOLL_WRITE, &mut raw)
        };
        to_result(ret)?;
        if ret != 1 {
            return Err(EFAULT);
        }
        // INVARIANT: `pin_user_pages_fast` pinned the page.
        NonNull::new(raw).map(PinnedPage).ok_or(EFAULT)
    }

    /// Drops the pages of `count` pages from page `page` on (`MADV_DONTNEED`).
    pub(crate) fn dontneed(&self, page: usize, count: usize) -> Result {
        self.madvise(page, count, bindings::MADV_DONTNEED)
    }

    /// Gives `advice` (`MADV_*`) for `count` pages from page `page` on.
    pub(crate) fn madvise(&self, page: usize, count: usize, advice: u32) -> Result {
        // SAFETY: The mm of the test case has a user (the test kthread).
        to_result(unsafe {
            bindings::do_madvise(
                self.mm().as_raw(),
                self.addr(page),
                count * PAGE_SIZE,
                advice as c_int,
            )
        })
    }
}

/// A page of a [`UserMapping`] pinned by [`UserMapping::pin`], unpinned when dropped.
///
/// # Invariants
///
/// The page is pinned (`FOLL_PIN`) by this object.
pub(crate) struct PinnedPage(NonNull<bindings::page>);

impl Drop for PinnedPage {
    fn drop(&mut self) {
        // SAFETY: By the type invariants the page is pinned by `self`.
        unsafe { bindings::unpin_user_page(self.0.as_ptr()) };
    }
}

/// An invalidation seen by a [`Recorder`].
#[derive(Clone, PartialEq, Debug)]
pub(crate) struct Seen {
    pub(crate) span: Range<usize>,
    pub(crate) event: Event,
    pub(crate) owner: Option<DeviceOwner>,
}

/// What the invalidations of a [`Recorder`] were: the first ones, and how many.
pub(crate) struct Log {
    pub(crate) calls: usize,
    pub(crate) seen: KVec<Seen>,
}

/// A notifier callback that records the invalidations it sees, under the lock that readers also
/// take around `read_retry`.
#[pin_data]
pub(crate) struct Recorder {
    #[pin]
    pub(crate) log: Mutex<Log>,
}

impl Invalidate for Recorder {
    fn invalidate<'a>(
        &self,
        range: &NotifierRange,
        seq: PendingSeq<'a>,
    ) -> Result<SeqSet<'a>, WouldBlock> {
        range.check_blockable()?;
        let mut log = self.log.lock();
        log.calls += 1;
        // The capacity is reserved up front: the callback must not allocate.
        let _ = log.seen.push_within_capacity(Seen {
            span: range.span(),
            event: range.event(),
            owner: range.owner(),
        });
        Ok(seq.set())
    }
}

impl Recorder {
    /// A notifier with a recorder over pages `first..first + count` of `map`.
    pub(crate) fn insert(
        map: &UserMapping,
        first: usize,
        count: usize,
    ) -> Result<Pin<KBox<IntervalNotifier<Recorder>>>> {
        let seen = KVec::with_capacity(64, GFP_KERNEL)?;
        KBox::pin_init(
            IntervalNotifier::new(
                map.mm(),
                map.addr(first),
                count * PAGE_SIZE,
                pin_init!(Recorder {
                    log <- new_mutex!(Log { calls: 0, seen }),
                }),
            ),
            GFP_KERNEL,
        )
    }

    /// The number of invalidations seen.
    pub(crate) fn calls(&self) -> usize {
        self.log.lock().calls
    }

    /// The last invalidation recorded.
    pub(crate) fn last(&self) -> Option<Seen> {
        self.log.lock().seen.last().cloned()
    }
}
