// SPDX-License-Identifier: GPL-2.0

//! MMU interval notifiers.
//!
//! An [`IntervalNotifier`] tells a driver that mirrors part of a process address space (a device
//! page table, a cache of page lookups) that the CPU mapping of its span is about to change, so
//! that it can drop its copy first. Readers pair [`IntervalNotifier::read_begin`] with
//! [`IntervalNotifier::read_retry`] to find out whether an invalidation ran meanwhile.
//!
//! C header: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h)

use crate::{
    bindings,
    error::to_result,
    mm::{
        DeviceOwner,
        Mm,
        MmWithUser, //
    },
    prelude::*,
    types::Opaque,
};
use core::{
    marker::PhantomData,
    ops::{
        Deref,
        Range, //
    },
    ptr::NonNull,
};

/// Why the CPU mapping of a span changes.
///
/// The kinds of `enum mmu_notifier_event`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Event {
    /// The mapping is going away (munmap, mremap moving it, a new mapping over it).
    Unmap,
    /// Pages are unmapped but the mapping stays (`MADV_DONTNEED`, reclaim, page migration by the
    /// core, THP split).
    Clear,
    /// The protection of the whole VMA changes (mprotect).
    ProtectionVma,
    /// The protection of pages changes (write-protect for COW after fork, KSM).
    ProtectionPage,
    /// Soft-dirty tracking is being reset.
    SoftDirty,
    /// The address space is being torn down (process exit).
    Release,
    /// Device migration is replacing pages; see [`NotifierRange::owner`].
    Migrate,
    /// A device takes exclusive access to a page; see [`NotifierRange::owner`].
    Exclusive,
}

impl Event {
    fn from_raw(event: bindings::mmu_notifier_event) -> Self {
        match event {
            bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP => Self::Unmap,
            bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_VMA => Self::ProtectionVma,
            bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_PAGE => Self::ProtectionPage,
            bindings::mmu_notifier_event_MMU_NOTIFY_SOFT_DIRTY => Self::SoftDirty,
            bindings::mmu_notifier_event_MMU_NOTIFY_RELEASE => Self::Release,
            bindings::mmu_notifier_event_MMU_NOTIFY_MIGRATE => Self::Migrate,
            bindings::mmu_notifier_event_MMU_NOTIFY_EXCLUSIVE => Self::Exclusive,
            // `MMU_NOTIFY_CLEAR`, and the safe reading of an event this enum does not know yet:
            // the pages go, the mapping stays.
            _ => Self::Clear,
        }
    }
}

/// The span and the cause of an invalidation, as given to [`Invalidate::invalidate`].
///
/// Wraps `struct mmu_notifier_range`.
#[repr(transparent)]
pub struct NotifierRange(Opaque<bindings::mmu_notifier_range>);

impl NotifierRange {
    fn raw(&self) -> &bindings::mmu_notifier_range {
        // SAFETY: The core passes a valid range and does not change it during the callback.
        unsafe { &*self.0.get() }
    }

    /// The first address of the change.
    #[inline]
    pub fn start(&self) -> usize {
        self.raw().start
    }

    /// The address after the last one of the change.
    #[inline]
    pub fn end(&self) -> usize {
        self.raw().end
    }

    /// The span of the change, `start..end`.
    #[inline]
    pub fn span(&self) -> Range<usize> {
        self.start()..self.end()
    }

    /// Why the mapping changes.
    #[inline]
    pub fn event(&self) -> Event {
        Event::from_raw(self.raw().event)
    }

    /// The device that caused a [`Event::Migrate`] or [`Event::Exclusive`] change, if any.
    ///
    /// A driver can skip invalidations it caused itself, as they keep its own pages valid.
    #[inline]
    pub fn owner(&self) -> Option<DeviceOwner> {
        NonNull::new(self.raw().owner).map(DeviceOwner::from_raw)
    }

    /// Whether the callback may sleep.
    ///
    /// False when the invalidation comes from a context that cannot wait, such as the OOM reaper.
    #[inline]
    pub fn is_blockable(&self) -> bool {
        // SAFETY: `self.0` is a valid range.
        unsafe { bindings::mmu_notifier_range_blockable(self.0.get()) }
    }

    /// Fails with [`WouldBlock`] if the callback must not sleep.
    ///
    /// A callback that needs to sleep (to take a sleeping lock, or wait for the device) calls this
    /// first and returns its error: only a non-blockable invalidation may be refused.
    #[inline]
    pub fn check_blockable(&self) -> Result<(), WouldBlock> {
        if self.is_blockable() {
            Ok(())
        } else {
            Err(WouldBlock(()))
        }
    }
}

/// Proof that an invalidation is not blockable, returned by [`NotifierRange::check_blockable`].
///
/// Returning it from [`Invalidate::invalidate`] makes the core retry the operation later (the
/// OOM reaper skips the address space).
pub struct WouldBlock(());

/// A read-side sequence number of an [`IntervalNotifier`], from [`IntervalNotifier::read_begin`].
#[derive(Debug)]
pub struct Seq(pub(crate) c_ulong);

/// The pending sequence number of an invalidation, handed to [`Invalidate::invalidate`].
///
/// The callback must [`set`](Self::set) it under the lock that readers hold around
/// [`IntervalNotifier::read_retry`], after it has stopped using the old pages. The callback can
/// only return successfully with the [`SeqSet`] that `set` gives back.
///
/// # Invariants
///
/// `notifier` points to the notifier being invalidated; `cur_seq` is the sequence number that the
/// core passed for this invalidation.
pub struct PendingSeq<'a> {
    notifier: NonNull<bindings::mmu_interval_notifier>,
    cur_seq: c_ulong,
    // Invariant in `'a`, so that tokens of different invalidations cannot be mixed up.
    _invariant: PhantomData<fn(&'a ()) -> &'a ()>,
}

impl<'a> PendingSeq<'a> {
    /// Publishes the invalidation to readers: their next [`IntervalNotifier::read_retry`] fails.
    #[inline]
    pub fn set(self) -> SeqSet<'a> {
        // SAFETY: By the type invariants `notifier` is the notifier under invalidation.
        unsafe { bindings::mmu_interval_set_seq(self.notifier.as_ptr(), self.cur_seq) };
        SeqSet(PhantomData)
    }

    /// Leaves the sequence number alone for an invalidation that only makes pages exclusive to
    /// the device `owner` ([`Event::Exclusive`] from `owner`'s own
    /// [`make_device_exclusive`](crate::mm::exclusive::make_device_exclusive)): that device keeps
    /// access to the same pages, so its readers' pages stay valid, and a reader that makes pages
    /// exclusive does not invalidate itself. Any other invalidation gets the token back, to
    /// [`set`](Self::set) it.
    #[inline]
    pub fn skip_own_exclusive(
        self,
        range: &NotifierRange,
        owner: DeviceOwner,
    ) -> Result<SeqSet<'a>, Self> {
        if range.event() == Event::Exclusive && range.owner() == Some(owner) {
            Ok(SeqSet(PhantomData))
        } else {
            Err(self)
        }
    }
}

/// Proof that an invalidation published its sequence number, or needed none; see
/// [`PendingSeq::set`] and [`PendingSeq::skip_own_exclusive`].
pub struct SeqSet<'a>(PhantomData<fn(&'a ()) -> &'a ()>);

/// The callback of an [`IntervalNotifier`].
pub trait Invalidate: Send + Sync {
    /// Called before the CPU mapping of part of the span changes.
    ///
    /// The implementation stops all use of the pages of `range` that the notifier covers (zaps
    /// device page table entries, flushes device TLBs), and publishes the invalidation with
    /// `seq.set()` under the lock that readers use. It must not allocate memory with reclaim nor
    /// free objects the core may still use; deferring work to a worker is the usual answer.
    ///
    /// It may return [`WouldBlock`] only when `range` is not blockable, using
    /// [`NotifierRange::check_blockable`].
    fn invalidate<'a>(
        &self,
        range: &NotifierRange,
        seq: PendingSeq<'a>,
    ) -> Result<SeqSet<'a>, WouldBlock>;
}

/// A notifier of the changes to the CPU mapping of `[start, start + length)` of an address space.
///
/// It is inserted into the address space when initialised and removed when dropped. Its data `T`
/// gets the [`Invalidate::invalidate`] callbacks; `IntervalNotifier<T>` dereferences to `T`.
///
/// Dropping it sleeps: `mmu_interval_notifier_remove` waits for running callbacks to return.
///
/// # Invariants
///
/// `inner` is an `mmu_interval_notifier` inserted into an address space with the callbacks of
/// `T`, until the notifier is dropped.
///
/// # Examples
///
/// Count the invalidations of a span, and detect that a lookup raced with one:
///
/// ```
/// use kernel::mm::{
///     mmu_notifier::{
///         IntervalNotifier,
///         Invalidate,
///         NotifierRange,
///         PendingSeq,
///         SeqSet,
///         WouldBlock, //
///     },
///     MmWithUser, //
/// };
/// use kernel::sync::{
///     atomic::{
///         Atomic,
///         Relaxed, //
///     },
///     new_mutex,
///     Mutex, //
/// };
///
/// #[pin_data]
/// struct Mirror {
///     #[pin]
///     lock: Mutex<()>,
///     invalidations: Atomic<u32>,
/// }
///
/// impl Invalidate for Mirror {
///     fn invalidate<'a>(
///         &self,
///         range: &NotifierRange,
///         seq: PendingSeq<'a>,
///     ) -> Result<SeqSet<'a>, WouldBlock> {
///         range.check_blockable()?;
///         let _guard = self.lock.lock();
///         self.invalidations.fetch_add(1, Relaxed);
///         Ok(seq.set())
///     }
/// }
///
/// fn mirror(mm: &MmWithUser, addr: usize, len: usize) -> Result<bool> {
///     let notifier = KBox::pin_init(
///         IntervalNotifier::new(
///             mm,
///             addr,
///             len,
///             pin_init!(Mirror {
///                 lock <- new_mutex!(()),
///                 invalidations: Atomic::new(0),
///             }),
///         ),
///         GFP_KERNEL,
///     )?;
///     let seq = notifier.read_begin();
///     // ... look up the pages of the span ...
///     let _guard = notifier.lock.lock();
///     // Stale if an invalidation ran since `read_begin`.
///     Ok(!notifier.read_retry(&seq))
/// }
/// ```
#[pin_data(PinnedDrop)]
pub struct IntervalNotifier<T: Invalidate> {
    #[pin]
    data: T,
    #[pin]
    inner: Opaque<bindings::mmu_interval_notifier>,
}

// SAFETY: The notifier can be dropped (removed) from any thread; `T` is `Send`.
unsafe impl<T: Invalidate> Send for IntervalNotifier<T> {}

// SAFETY: The methods taking `&self` are safe to call concurrently; `T` is `Sync`.
unsafe impl<T: Invalidate> Sync for IntervalNotifier<T> {}

impl<T: Invalidate> IntervalNotifier<T> {
    const OPS: bindings::mmu_interval_notifier_ops = bindings::mmu_interval_notifier_ops {
        invalidate: Some(Self::invalidate_callback),
        // SAFETY: All-zero is a valid value for the other (optional) callbacks.
        ..unsafe { core::mem::zeroed() }
    };

    /// Initialises `data`, then inserts a notifier for `[start, start + length)` of `mm`.
    ///
    /// The callbacks can run as soon as the notifier is inserted, so it is inserted only after
    /// `data` is initialised. Fails with [`EINVAL`] if the span wraps around, and with the
    /// errors of `mmu_interval_notifier_insert` otherwise.
    pub fn new<E>(
        mm: &MmWithUser,
        start: usize,
        length: usize,
        data: impl PinInit<T, E>,
    ) -> impl PinInit<Self, Error>
    where
        Error: From<E>,
    {
        let mm = mm.as_raw();
        try_pin_init!(Self {
            data <- data,
            inner <- Opaque::try_ffi_init(move |slot: *mut bindings::mmu_interval_notifier| {
                if length == 0 || start.checked_add(length).is_none() {
                    return Err(EINVAL);
                }
                // SAFETY: `slot` is valid for writes and stays pinned; `mm` has a user for the
                // duration of the call (the caller holds an `MmWithUser`); `OPS` is static.
                to_result(unsafe {
                    bindings::mmu_interval_notifier_insert(
                        slot,
                        mm,
                        start,
                        length,
                        const { &Self::OPS },
                    )
                })
            }),
        })
    }

    /// Begins a read-side critical section over the span and returns its sequence number.
    ///
    /// May sleep, waiting for an invalidation that is running to finish.
    #[inline]
    pub fn read_begin(&self) -> Seq {
        // SAFETY: By the type invariants `inner` is an inserted notifier.
        Seq(unsafe { bindings::mmu_interval_read_begin(self.inner.get()) })
    }

    /// Ends a read-side critical section: true if an invalidation ran since `seq` was taken, in
    /// which case whatever was read must be thrown away and read again.
    ///
    /// Must be called under the lock that [`Invalidate::invalidate`] holds while it sets the
    /// sequence number, and the result is only meaningful while that lock is held.
    #[inline]
    pub fn read_retry(&self, seq: &Seq) -> bool {
        // SAFETY: By the type invariants `inner` is an inserted notifier.
        unsafe { bindings::mmu_interval_read_retry(self.inner.get(), seq.0) }
    }

    /// Tells early, without the lock, that [`Self::read_retry`] will fail.
    ///
    /// `false` is not reliable: an invalidation may be just starting.
    #[inline]
    pub fn check_retry(&self, seq: &Seq) -> bool {
        // SAFETY: By the type invariants `inner` is an inserted notifier.
        unsafe { bindings::mmu_interval_check_retry(self.inner.get(), seq.0) }
    }

    /// The C notifier, for the other mm abstractions.
    // Unused until `kernel::mm::hmm` comes (a later patch of the series): `allow`, not `expect`.
    #[allow(dead_code)]
    #[inline]
    pub(crate) fn as_raw(&self) -> *mut bindings::mmu_interval_notifier {
        self.inner.get()
    }

    /// The address space the notifier is inserted into.
    #[inline]
    pub fn mm(&self) -> &Mm {
        // SAFETY: The notifier holds an `mmgrab` reference on its mm until it is removed, which
        // happens when `self` is dropped.
        unsafe { Mm::from_raw((*self.inner.get()).mm) }
    }

    /// The span the notifier covers.
    #[inline]
    pub fn span(&self) -> Range<usize> {
        // SAFETY: `interval_tree` is set at insertion and not changed afterwards.
        let node = unsafe { &(*self.inner.get()).interval_tree };
        // The interval tree stores the last address, inclusive.
        node.start..node.last + 1
    }

    /// # Safety
    ///
    /// `notifier` and `range` are the valid pointers the core passes to the callback.
    unsafe extern "C" fn invalidate_callback(
        notifier: *mut bindings::mmu_interval_notifier,
        range: *const bindings::mmu_notifier_range,
        cur_seq: c_ulong,
    ) -> bool {
        // SAFETY: Only notifiers inserted by `new` have these callbacks, and they are embedded in
        // an `IntervalNotifier<T>`, which lives until it is removed; removal waits for running
        // callbacks.
        let this = unsafe { &*crate::container_of!(Opaque::cast_from(notifier), Self, inner) };
        // SAFETY: `range` is valid for the duration of the callback; `NotifierRange` is a
        // transparent wrapper of it.
        let range = unsafe { &*range.cast::<NotifierRange>() };
        // INVARIANT: `notifier` is under invalidation with `cur_seq`.
        let seq = PendingSeq {
            // SAFETY: `notifier` is not null, the core passes a valid pointer.
            notifier: unsafe { NonNull::new_unchecked(notifier) },
            cur_seq,
            _invariant: PhantomData,
        };
        this.data.invalidate(range, seq).is_ok()
    }
}

impl<T: Invalidate> Deref for IntervalNotifier<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.data
    }
}

#[pinned_drop]
impl<T: Invalidate> PinnedDrop for IntervalNotifier<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariants the notifier is inserted; this removes it and waits for
        // running callbacks, after which `data` is no longer used by the core.
        unsafe { bindings::mmu_interval_notifier_remove(self.inner.get()) };
    }
}

#[cfg(CONFIG_RUST_MM_KUNIT_TEST)]
#[macros::kunit_tests(rust_mm_interval_notifier)]
mod tests {
    use super::*;
    use crate::mm::test_mm::{
        Recorder,
        UserMapping, //
    };

    fn last(n: &IntervalNotifier<Recorder>) -> Option<(Range<usize>, Event)> {
        n.last().map(|seen| (seen.span, seen.event))
    }

    #[test]
    fn span_and_mm() -> Result {
        let map = UserMapping::new(4)?;
        let n = Recorder::insert(&map, 1, 2)?;
        assert_eq!(n.span(), map.addr(1)..map.addr(3));
        assert!(core::ptr::eq(n.mm().as_raw(), map.mm().as_raw()));
        assert_eq!(n.calls(), 0);
        Ok(())
    }

    #[test]
    fn rejects_wrapping_span() -> Result {
        let map = UserMapping::new(1)?;
        let r = KBox::pin_init(
            IntervalNotifier::new(
                map.mm(),
                usize::MAX - 4095,
                8192,
                pin_init!(Recorder {
                    log <- crate::sync::new_mutex!(crate::mm::test_mm::Log {
                        calls: 0,
                        seen: KVec::new(),
                    }),
                }),
            ),
            GFP_KERNEL,
        );
        assert_eq!(r.err(), Some(EINVAL));
        Ok(())
    }

    #[test]
    fn munmap_fires_unmap() -> Result {
        let map = UserMapping::new(4)?;
        map.write(0, &[1u8; 4 * 4096])?;
        let n = Recorder::insert(&map, 1, 2)?;

        // Outside the span: no callback.
        map.unmap(0, 1)?;
        map.unmap(3, 1)?;
        assert_eq!(n.calls(), 0);

        map.unmap(1, 2)?;
        assert!(n.calls() >= 1);
        let (span, event) = last(&n).ok_or(EINVAL)?;
        assert_eq!(event, Event::Unmap);
        assert!(span.start <= map.addr(1) && span.end >= map.addr(3));
        Ok(())
    }

    #[test]
    fn dontneed_fires_clear() -> Result {
        let map = UserMapping::new(4)?;
        map.write(0, &[2u8; 4 * 4096])?;
        let n = Recorder::insert(&map, 2, 1)?;

        map.dontneed(0, 2)?;
        assert_eq!(n.calls(), 0);

        map.dontneed(2, 1)?;
        assert_eq!(n.calls(), 1);
        assert_eq!(last(&n), Some((map.addr(2)..map.addr(3), Event::Clear)));

        // The data is gone: anonymous memory reads back as zeroes.
        let mut buf = [0xffu8; 8];
        map.read(2 * 4096, &mut buf)?;
        assert_eq!(buf, [0u8; 8]);
        Ok(())
    }

    #[test]
    fn read_retry_sees_invalidation() -> Result {
        let map = UserMapping::new(4)?;
        map.write(0, &[3u8; 4 * 4096])?;
        let n = Recorder::insert(&map, 0, 2)?;

        let seq = n.read_begin();
        // A change outside the span leaves the read section valid.
        map.dontneed(2, 2)?;
        {
            let _lock = n.log.lock();
            assert!(!n.read_retry(&seq));
        }
        assert!(!n.check_retry(&seq));

        map.dontneed(1, 1)?;
        assert!(n.check_retry(&seq));
        {
            let _lock = n.log.lock();
            assert!(n.read_retry(&seq));
        }

        // A new section starts clean.
        let seq = n.read_begin();
        let _lock = n.log.lock();
        assert!(!n.read_retry(&seq));
        Ok(())
    }
}
