// SPDX-License-Identifier: GPL-2.0

//! A kernel read-write semaphore.
//!
//! This module allows Rust code to use the kernel's [`struct rw_semaphore`]: any number of readers
//! or one writer, sleeping while they wait.
//!
//! C header: [`include/linux/rwsem.h`](srctree/include/linux/rwsem.h)
//!
//! [`struct rw_semaphore`]: srctree/include/linux/rwsem.h

use crate::{
    error::to_result,
    prelude::*,
    str::CStr,
    sync::LockClassKey,
    types::{
        NotThreadSafe,
        Opaque, //
    },
};
use core::{
    cell::UnsafeCell,
    marker::PhantomPinned,
    ops::{
        Deref,
        DerefMut, //
    },
};

/// Creates a [`RwSemaphore`] initialiser with the given name and a newly-created lock class.
///
/// It uses the name if one is given, otherwise it generates one based on the file name and line
/// number.
#[macro_export]
macro_rules! new_rwsem {
    ($inner:expr $(, $name:literal)? $(,)?) => {
        $crate::sync::RwSemaphore::new(
            $inner, $crate::optional_name!($($name)?), $crate::static_lock_class!())
    };
}
pub use new_rwsem;

/// A read-write semaphore.
///
/// Exposes the kernel's [`struct rw_semaphore`]. Any number of readers may hold it at once, each
/// getting a shared reference to the protected data; a writer holds it alone and gets a mutable
/// reference. Waiters sleep, so it must not be taken in atomic context.
///
/// Instances need a lock class and to be pinned; create them with [`new_rwsem!`].
///
/// # Invariants
///
/// `sem` is an initialised `struct rw_semaphore`, and `data` is only accessed through a guard
/// that holds `sem` (shared for reading, exclusive for writing).
///
/// # Examples
///
/// ```
/// use kernel::sync::{new_rwsem, RwSemaphore};
///
/// #[pin_data]
/// struct PageTable {
///     #[pin]
///     entries: RwSemaphore<KVec<u64>>,
/// }
///
/// let pt = KBox::pin_init(
///     pin_init!(PageTable { entries <- new_rwsem!(KVec::new()) }),
///     GFP_KERNEL,
/// )?;
///
/// pt.entries.write().push(0x1000, GFP_KERNEL)?;
///
/// // Readers share the semaphore.
/// let r1 = pt.entries.read();
/// let r2 = pt.entries.try_read().ok_or(EBUSY)?;
/// assert_eq!(r1[0], r2[0]);
///
/// // A writer is excluded while readers hold it.
/// assert!(pt.entries.try_write().is_none());
/// drop((r1, r2));
/// assert!(pt.entries.try_write().is_some());
/// # Ok::<(), Error>(())
/// ```
///
/// [`struct rw_semaphore`]: srctree/include/linux/rwsem.h
#[pin_data]
pub struct RwSemaphore<T: ?Sized> {
    #[pin]
    sem: Opaque<bindings::rw_semaphore>,
    // The semaphore is self-referential (its wait list).
    #[pin]
    _pin: PhantomPinned,
    data: UnsafeCell<T>,
}

// SAFETY: A `RwSemaphore` can be moved to another thread when the data it protects can.
unsafe impl<T: ?Sized + Send> Send for RwSemaphore<T> {}

// SAFETY: Writers get `&mut T` from any thread (needs `T: Send`) and readers share `&T` across
// threads at the same time (needs `T: Sync`).
unsafe impl<T: ?Sized + Send + Sync> Sync for RwSemaphore<T> {}

impl<T> RwSemaphore<T> {
    /// Constructs a new read-write semaphore initialiser; see [`new_rwsem!`].
    pub fn new(t: T, name: &'static CStr, key: Pin<&'static LockClassKey>) -> impl PinInit<Self> {
        pin_init!(Self {
            data: UnsafeCell::new(t),
            _pin: PhantomPinned,
            // SAFETY: `slot` is valid for writes while the closure runs, and `name` and `key`
            // live forever.
            sem <- Opaque::ffi_init(|slot| unsafe {
                bindings::__init_rwsem(slot, name.as_char_ptr(), key.as_ptr())
            }),
        })
    }
}

impl<T: ?Sized> RwSemaphore<T> {
    /// Acquires the semaphore for reading, sleeping until no writer holds it.
    #[inline]
    pub fn read(&self) -> ReadGuard<'_, T> {
        // SAFETY: By the type invariants `sem` is initialised.
        unsafe { bindings::down_read(self.sem.get()) };
        // INVARIANT: The semaphore was just acquired for reading.
        ReadGuard {
            sem: self,
            _not_send: NotThreadSafe,
        }
    }

    /// Acquires the semaphore for reading unless the wait is interrupted by a fatal signal.
    ///
    /// Returns [`EINTR`] when the task was killed while waiting.
    #[inline]
    pub fn read_killable(&self) -> Result<ReadGuard<'_, T>> {
        // SAFETY: By the type invariants `sem` is initialised.
        to_result(unsafe { bindings::down_read_killable(self.sem.get()) })?;
        // INVARIANT: The semaphore was just acquired for reading.
        Ok(ReadGuard {
            sem: self,
            _not_send: NotThreadSafe,
        })
    }

    /// Tries to acquire the semaphore for reading without sleeping.
    #[must_use = "if unused, the semaphore is released immediately"]
    #[inline]
    pub fn try_read(&self) -> Option<ReadGuard<'_, T>> {
        // SAFETY: By the type invariants `sem` is initialised.
        if unsafe { bindings::down_read_trylock(self.sem.get()) } == 0 {
            return None;
        }
        // INVARIANT: The semaphore was just acquired for reading.
        Some(ReadGuard {
            sem: self,
            _not_send: NotThreadSafe,
        })
    }

    /// Acquires the semaphore for writing, sleeping until no reader or writer holds it.
    #[inline]
    pub fn write(&self) -> WriteGuard<'_, T> {
        // SAFETY: By the type invariants `sem` is initialised.
        unsafe { bindings::down_write(self.sem.get()) };
        // INVARIANT: The semaphore was just acquired for writing.
        WriteGuard {
            sem: self,
            _not_send: NotThreadSafe,
        }
    }

    /// Acquires the semaphore for writing unless the wait is interrupted by a fatal signal.
    ///
    /// Returns [`EINTR`] when the task was killed while waiting.
    #[inline]
    pub fn write_killable(&self) -> Result<WriteGuard<'_, T>> {
        // SAFETY: By the type invariants `sem` is initialised.
        to_result(unsafe { bindings::down_write_killable(self.sem.get()) })?;
        // INVARIANT: The semaphore was just acquired for writing.
        Ok(WriteGuard {
            sem: self,
            _not_send: NotThreadSafe,
        })
    }

    /// Tries to acquire the semaphore for writing without sleeping.
    #[must_use = "if unused, the semaphore is released immediately"]
    #[inline]
    pub fn try_write(&self) -> Option<WriteGuard<'_, T>> {
        // SAFETY: By the type invariants `sem` is initialised.
        if unsafe { bindings::down_write_trylock(self.sem.get()) } == 0 {
            return None;
        }
        // INVARIANT: The semaphore was just acquired for writing.
        Some(WriteGuard {
            sem: self,
            _not_send: NotThreadSafe,
        })
    }

    /// Asserts (with lockdep) that the current task holds the semaphore, for reading or writing.
    ///
    /// For code that relies on a caller holding the semaphore without having its guard, such as
    /// a callback run from a path that took it. A no-op without `CONFIG_LOCKDEP`.
    #[inline]
    pub fn assert_held(&self) {
        // SAFETY: By the type invariants `sem` is initialised.
        unsafe { bindings::rwsem_assert_held(self.sem.get()) };
    }

    /// Asserts (with lockdep) that the current task holds the semaphore for writing.
    #[inline]
    pub fn assert_held_write(&self) {
        // SAFETY: By the type invariants `sem` is initialised.
        unsafe { bindings::rwsem_assert_held_write(self.sem.get()) };
    }

    /// Returns a mutable reference to the data, which needs no locking as `self` is unique.
    #[inline]
    pub fn get_mut(self: Pin<&mut Self>) -> &mut T {
        // SAFETY: The data is not structurally pinned, and `self` is not moved.
        let this = unsafe { self.get_unchecked_mut() };
        this.data.get_mut()
    }
}

/// A guard of a [`RwSemaphore`] held for reading; releases it when dropped.
///
/// # Invariants
///
/// The current task holds `sem` for reading.
#[must_use = "the semaphore is released immediately when the guard is unused"]
pub struct ReadGuard<'a, T: ?Sized> {
    sem: &'a RwSemaphore<T>,
    _not_send: NotThreadSafe,
}

impl<'a, T: ?Sized> ReadGuard<'a, T> {
    /// Returns the semaphore this guard holds.
    #[inline]
    pub fn sem(&self) -> &'a RwSemaphore<T> {
        self.sem
    }
}

impl<T: ?Sized> Deref for ReadGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: By the type invariants readers hold the semaphore, so no writer has `&mut T`.
        unsafe { &*self.sem.data.get() }
    }
}

impl<T: ?Sized> Drop for ReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: By the type invariants the current task holds the semaphore for reading.
        unsafe { bindings::up_read(self.sem.sem.get()) };
    }
}

/// A guard of a [`RwSemaphore`] held for writing; releases it when dropped.
///
/// # Invariants
///
/// The current task holds `sem` for writing.
#[must_use = "the semaphore is released immediately when the guard is unused"]
pub struct WriteGuard<'a, T: ?Sized> {
    sem: &'a RwSemaphore<T>,
    _not_send: NotThreadSafe,
}

impl<'a, T: ?Sized> WriteGuard<'a, T> {
    /// Returns the semaphore this guard holds.
    #[inline]
    pub fn sem(&self) -> &'a RwSemaphore<T> {
        self.sem
    }

    /// Turns the write hold into a read hold without letting another writer in between.
    #[inline]
    pub fn downgrade(self) -> ReadGuard<'a, T> {
        let sem = self.sem;
        core::mem::forget(self);
        // SAFETY: By the type invariants the current task holds `sem` for writing; `self` was
        // forgotten so it will not be released for writing.
        unsafe { bindings::downgrade_write(sem.sem.get()) };
        // INVARIANT: `downgrade_write` left the current task holding `sem` for reading.
        ReadGuard {
            sem,
            _not_send: NotThreadSafe,
        }
    }
}

impl<T: ?Sized> Deref for WriteGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: By the type invariants the writer holds the semaphore alone.
        unsafe { &*self.sem.data.get() }
    }
}

impl<T: ?Sized> DerefMut for WriteGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: By the type invariants the writer holds the semaphore alone.
        unsafe { &mut *self.sem.data.get() }
    }
}

impl<T: ?Sized> Drop for WriteGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: By the type invariants the current task holds the semaphore for writing.
        unsafe { bindings::up_write(self.sem.sem.get()) };
    }
}

#[cfg(CONFIG_RUST_RWSEM_KUNIT_TEST)]
#[macros::kunit_tests(rust_sync_rwsem)]
mod tests {
    use super::*;
    use crate::{
        sync::{
            atomic::{
                Atomic,
                Relaxed, //
            },
            Arc,
            Completion, //
        },
        workqueue,
    };

    /// What another thread could take while the test thread holds the semaphore.
    struct Probe {
        sem: Arc<RwSemaphore<u32>>,
        done: Arc<Completion>,
        could_read: Arc<Atomic<u32>>,
        could_write: Arc<Atomic<u32>>,
    }

    /// Tries to take `sem` for reading and for writing from a worker thread.
    fn probe(sem: &Arc<RwSemaphore<u32>>) -> Result<(bool, bool)> {
        let p = Probe {
            sem: sem.clone(),
            done: Arc::pin_init(Completion::new(), GFP_KERNEL)?,
            could_read: Arc::new(Atomic::new(0), GFP_KERNEL)?,
            could_write: Arc::new(Atomic::new(0), GFP_KERNEL)?,
        };
        let (done, could_read, could_write) =
            (p.done.clone(), p.could_read.clone(), p.could_write.clone());
        workqueue::system_percpu().try_spawn(GFP_KERNEL, move || {
            if p.sem.try_read().is_some() {
                p.could_read.store(1, Relaxed);
            }
            if p.sem.try_write().is_some() {
                p.could_write.store(1, Relaxed);
            }
            p.done.complete_all();
        })?;
        done.wait_for_completion();
        Ok((
            could_read.load(Relaxed) == 1,
            could_write.load(Relaxed) == 1,
        ))
    }

    fn sem() -> Result<Arc<RwSemaphore<u32>>> {
        Arc::pin_init(new_rwsem!(0, "rust_rwsem_test"), GFP_KERNEL)
    }

    #[test]
    fn readers_share() -> Result {
        let sem = sem()?;
        let _r = sem.read();
        assert_eq!(probe(&sem)?, (true, false));
        Ok(())
    }

    #[test]
    fn writer_excludes() -> Result {
        let sem = sem()?;
        {
            let mut w = sem.write();
            *w = 42;
            assert_eq!(probe(&sem)?, (false, false));
        }
        assert_eq!(probe(&sem)?, (true, true));
        assert_eq!(*sem.read(), 42);
        Ok(())
    }

    #[test]
    fn downgrade_keeps_writers_out() -> Result {
        let sem = sem()?;
        let mut w = sem.write();
        *w = 7;
        let r = w.downgrade();
        assert_eq!(*r, 7);
        assert_eq!(probe(&sem)?, (true, false));
        r.sem().assert_held();
        Ok(())
    }

    #[test]
    fn killable_variants() -> Result {
        let sem = sem()?;
        {
            let w = sem.write_killable()?;
            w.sem().assert_held_write();
        }
        let r = sem.read_killable()?;
        r.sem().assert_held();
        Ok(())
    }

    /// Lockdep tracks the semaphore under the class and name it was created with.
    #[cfg(CONFIG_LOCKDEP)]
    #[test]
    fn lockdep_sees_the_class() -> Result {
        let sem = sem()?;
        // SAFETY: `sem` is initialised; `dep_map` is only read.
        let dep_map = unsafe { &raw mut (*sem.sem.get()).dep_map };
        // SAFETY: `dep_map` is valid; lockdep reads it.
        let held = || unsafe { bindings::lock_is_held_type(dep_map, -1) } != 0;
        assert!(!held());
        {
            let _r = sem.read();
            assert!(held());
        }
        assert!(!held());
        {
            let _w = sem.write();
            assert!(held());
        }
        // SAFETY: `dep_map` is valid, and its name was set by `__init_rwsem`.
        let name = unsafe { CStr::from_char_ptr((*dep_map).name) };
        assert_eq!(name.to_bytes(), b"rust_rwsem_test");
        Ok(())
    }
}
