// SPDX-License-Identifier: GPL-2.0

//! The sizes of GPU SVM ranges, and the choice of a range for a GPU fault.

use crate::{
    page::PAGE_SIZE,
    prelude::*, //
};
use core::ops::Range;

/// The most chunk sizes a [`ChunkSizes`] holds.
pub const MAX_CHUNK_SIZES: usize = 8;

/// The sizes of the ranges a GPU SVM creates, largest first, e.g. 2 MiB, 64 KiB and 4 KiB.
///
/// A GPU fault gets the largest chunk, aligned to its size, that fits around the fault address
/// in every bound (the CPU VMA, the notifier, the GPU VA space) and that the caller does not
/// reject (because it overlaps an existing range, say); the smallest size, one page, always fits.
///
/// # Invariants
///
/// `sizes[..len]` are powers of two, strictly decreasing, and the last is `PAGE_SIZE`.
///
/// # Examples
///
/// ```
/// use kernel::drm::gpusvm::ChunkSizes;
/// use kernel::page::PAGE_SIZE;
///
/// const SZ_64K: usize = 64 * 1024;
/// const SZ_2M: usize = 2 * 1024 * 1024;
/// let chunks = ChunkSizes::new(&[SZ_2M, SZ_64K, PAGE_SIZE])?;
///
/// // A fault in a 2 MiB-aligned 4 MiB VMA gets a 2 MiB range.
/// let vma = 0x4000_0000..0x4040_0000;
/// assert_eq!(chunks.fit(0x4012_3456, &[vma.clone()], |_| false), Some(0x4000_0000..0x4020_0000));
///
/// // If that would overlap an existing range, the next size down is tried.
/// let fit = chunks.fit(0x4012_3456, &[vma], |r| r.end - r.start == SZ_2M);
/// assert_eq!(fit, Some(0x4012_0000..0x4013_0000));
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSizes {
    sizes: [usize; MAX_CHUNK_SIZES],
    len: usize,
    present_only: usize,
}

impl ChunkSizes {
    /// Makes the chunk sizes `sizes`, largest first.
    ///
    /// Fails with [`EINVAL`] unless there are 1 to [`MAX_CHUNK_SIZES`] sizes, all powers of two,
    /// strictly decreasing, ending with `PAGE_SIZE`.
    pub fn new(sizes: &[usize]) -> Result<Self> {
        if sizes.is_empty() || sizes.len() > MAX_CHUNK_SIZES || sizes.last() != Some(&PAGE_SIZE) {
            return Err(EINVAL);
        }
        if !sizes.iter().all(|s| s.is_power_of_two()) || sizes.windows(2).any(|w| w[0] <= w[1]) {
            return Err(EINVAL);
        }
        let mut this = Self {
            sizes: [0; MAX_CHUNK_SIZES],
            len: sizes.len(),
            present_only: 0,
        };
        // INVARIANT: Checked above.
        this.sizes[..sizes.len()].copy_from_slice(sizes);
        Ok(this)
    }

    /// The sizes of at most `max` bytes, e.g. for a GPU VM that wants smaller ranges than its
    /// device supports.
    ///
    /// Fails with [`EINVAL`] if `max` is less than `PAGE_SIZE`.
    pub fn at_most(self, max: usize) -> Result<Self> {
        let skip = self.sizes().iter().take_while(|&&s| s > max).count();
        if skip == self.len {
            return Err(EINVAL);
        }
        let mut this = self;
        // INVARIANT: A suffix of valid sizes is valid; it still ends with `PAGE_SIZE`.
        this.sizes = [0; MAX_CHUNK_SIZES];
        this.sizes[..self.len - skip].copy_from_slice(&self.sizes()[skip..]);
        this.len = self.len - skip;
        Ok(this)
    }

    /// The most pages [`ChunkSizes::present_only_up_to`] takes.
    pub const MAX_PRESENT_ONLY_PAGES: usize = 64;

    /// Uses chunks larger than a page and at most `size` only where the CPU has every page of
    /// the chunk present; elsewhere a smaller chunk is used. The C layer calls this the check
    /// pages threshold: small ranges over sparse memory migrate badly (a small `malloc` in a
    /// larger VMA would get a range over memory the process never touched).
    ///
    /// Fails with [`EINVAL`] if `size` is more than [`Self::MAX_PRESENT_ONLY_PAGES`] pages.
    pub fn present_only_up_to(mut self, size: usize) -> Result<Self> {
        if size > Self::MAX_PRESENT_ONLY_PAGES * PAGE_SIZE {
            return Err(EINVAL);
        }
        self.present_only = size;
        Ok(self)
    }

    /// Whether a chunk of `size` bytes needs every CPU page present.
    #[inline]
    pub fn needs_present(&self, size: usize) -> bool {
        size > PAGE_SIZE && size <= self.present_only
    }

    /// The largest chunk size that needs every CPU page present, or 0.
    #[inline]
    pub fn present_only(&self) -> usize {
        // Largest first: the first found is the largest.
        self.sizes()
            .iter()
            .copied()
            .find(|&s| self.needs_present(s))
            .unwrap_or(0)
    }

    /// The sizes, largest first.
    #[inline]
    pub fn sizes(&self) -> &[usize] {
        &self.sizes[..self.len]
    }

    /// The largest size.
    #[inline]
    pub fn largest(&self) -> usize {
        self.sizes[0]
    }

    /// Chooses the range for a fault at `addr`: the largest chunk, aligned to its size, that
    /// contains `addr`, lies in every one of `bounds`, and that `reject` does not refuse.
    ///
    /// `reject` is only asked about chunks larger than a page: a single page always fits if it
    /// lies in the bounds. Returns `None` when not even that page does.
    pub fn fit(
        &self,
        addr: usize,
        bounds: &[Range<usize>],
        mut reject: impl FnMut(Range<usize>) -> bool,
    ) -> Option<Range<usize>> {
        for &size in self.sizes() {
            let start = addr & !(size - 1);
            let Some(end) = start.checked_add(size) else {
                continue;
            };
            if !bounds.iter().all(|b| b.start <= start && end <= b.end) {
                continue;
            }
            if size > PAGE_SIZE && reject(start..end) {
                continue;
            }
            return Some(start..end);
        }
        None
    }
}

/// The CPU-present pages of a block from `start`: bit `i` for page `i`.
pub(super) struct Present {
    pub(super) start: usize,
    pub(super) mask: u64,
}

impl Present {
    /// Whether a page of `span` is present.
    #[inline]
    pub(super) fn any(&self, span: &Range<usize>) -> bool {
        let first = span.start.saturating_sub(self.start) / PAGE_SIZE;
        let end = span
            .end
            .saturating_sub(self.start)
            .div_ceil(PAGE_SIZE)
            .min(64);
        first < end && self.mask >> first & low_bits(end - first) != 0
    }

    /// Whether every page of `span` is present.
    #[inline]
    pub(super) fn covers(&self, span: &Range<usize>) -> bool {
        let Some(first) = span.start.checked_sub(self.start).map(|o| o / PAGE_SIZE) else {
            return false;
        };
        let count = (span.end - span.start) / PAGE_SIZE;
        if count == 0 || first + count > 64 {
            return false;
        }
        let bits = low_bits(count);
        self.mask >> first & bits == bits
    }
}

/// A mask of the `count` low bits: none for 0, all 64 from 64 on.
#[inline]
fn low_bits(count: usize) -> u64 {
    u64::MAX
        .checked_shr(64usize.saturating_sub(count) as u32)
        .unwrap_or(0)
}

#[cfg(CONFIG_RUST_DRM_GPUSVM_KUNIT_TEST)]
#[macros::kunit_tests(rust_drm_gpusvm_chunk)]
mod tests {
    use super::*;

    const SZ_64K: usize = 64 * 1024;
    const SZ_2M: usize = 2 * 1024 * 1024;
    const BASE: usize = 0x7f00_0000_0000;

    fn chunks() -> Result<ChunkSizes> {
        ChunkSizes::new(&[SZ_2M, SZ_64K, PAGE_SIZE])
    }

    #[test]
    fn at_most_keeps_the_smaller_sizes() -> Result {
        let c = chunks()?.present_only_up_to(SZ_64K)?;
        assert_eq!(c.at_most(SZ_2M)?.sizes(), &[SZ_2M, SZ_64K, PAGE_SIZE]);
        assert_eq!(c.at_most(SZ_2M - 1)?.sizes(), &[SZ_64K, PAGE_SIZE]);
        assert_eq!(c.at_most(PAGE_SIZE)?.sizes(), &[PAGE_SIZE]);
        assert!(c.at_most(SZ_64K)?.needs_present(SZ_64K));
        assert_eq!(c.at_most(PAGE_SIZE - 1), Err(EINVAL));
        // Only chunks that are left can need present pages.
        assert_eq!(c.present_only(), SZ_64K);
        assert_eq!(c.at_most(PAGE_SIZE)?.present_only(), 0);
        let no_64k = ChunkSizes::new(&[SZ_2M, PAGE_SIZE])?.present_only_up_to(SZ_64K)?;
        assert_eq!(no_64k.present_only(), 0);
        Ok(())
    }

    #[test]
    fn validates_sizes() -> Result {
        assert!(chunks().is_ok());
        assert!(ChunkSizes::new(&[PAGE_SIZE]).is_ok());
        assert_eq!(ChunkSizes::new(&[]), Err(EINVAL));
        // Not ending with a page, not decreasing, not a power of two, too many.
        assert_eq!(ChunkSizes::new(&[SZ_2M, SZ_64K]), Err(EINVAL));
        assert_eq!(ChunkSizes::new(&[SZ_64K, SZ_2M, PAGE_SIZE]), Err(EINVAL));
        assert_eq!(ChunkSizes::new(&[SZ_64K, SZ_64K, PAGE_SIZE]), Err(EINVAL));
        assert_eq!(ChunkSizes::new(&[3 * PAGE_SIZE, PAGE_SIZE]), Err(EINVAL));
        // At most eight sizes.
        let mut sizes = KVec::new();
        for shift in (0..9).rev() {
            sizes.push(PAGE_SIZE << shift, GFP_KERNEL)?;
        }
        assert_eq!(ChunkSizes::new(&sizes), Err(EINVAL));
        assert_eq!(ChunkSizes::new(&sizes[1..]).map(|c| c.sizes().len()), Ok(8));
        // The present-pages threshold covers at most 64 pages.
        let c = chunks()?.present_only_up_to(SZ_64K)?;
        assert!(c.needs_present(SZ_64K) && !c.needs_present(SZ_2M) && !c.needs_present(PAGE_SIZE));
        assert!(!chunks()?.needs_present(SZ_64K));
        assert_eq!(chunks()?.present_only_up_to(SZ_2M), Err(EINVAL));
        assert_eq!(
            ChunkSizes::new(&sizes[1..]).map(|c| c.largest()),
            Ok(PAGE_SIZE << 7)
        );
        Ok(())
    }

    #[test]
    fn aligned_buffer_gets_one_large_chunk() -> Result {
        let c = chunks()?;
        let vma = BASE..BASE + 2 * SZ_2M;
        let notifier = BASE..BASE + 512 * SZ_2M;
        for addr in [BASE, BASE + 4096, BASE + SZ_2M - 1] {
            assert_eq!(
                c.fit(addr, &[vma.clone(), notifier.clone()], |_| false),
                Some(BASE..BASE + SZ_2M)
            );
        }
        Ok(())
    }

    #[test]
    fn small_vma_gets_small_chunks() -> Result {
        let c = chunks()?;
        // A 64K-aligned 64K VMA: one 64K chunk.
        let vma = BASE + SZ_64K..BASE + 2 * SZ_64K;
        assert_eq!(
            c.fit(BASE + SZ_64K + 100, &[vma], |_| false),
            Some(BASE + SZ_64K..BASE + 2 * SZ_64K)
        );
        // A 64K VMA that is not 64K-aligned: pages.
        let vma = BASE + PAGE_SIZE..BASE + PAGE_SIZE + SZ_64K;
        let fit = c.fit(BASE + 3 * PAGE_SIZE + 5, &[vma], |_| false);
        assert_eq!(fit, Some(BASE + 3 * PAGE_SIZE..BASE + 4 * PAGE_SIZE));
        Ok(())
    }

    #[test]
    fn every_bound_limits_the_chunk() -> Result {
        let c = chunks()?;
        let vma = BASE..BASE + 4 * SZ_2M;
        // The GPU VA space ends in the middle of the 2M chunk.
        let gpuva = 0..BASE + SZ_64K * 3;
        assert_eq!(
            c.fit(BASE + SZ_64K, &[vma.clone(), gpuva], |_| false),
            Some(BASE + SZ_64K..BASE + 2 * SZ_64K)
        );
        // The notifier starts after the fault address: nothing fits.
        let notifier = BASE + SZ_2M..BASE + 2 * SZ_2M;
        assert_eq!(c.fit(BASE, &[vma, notifier], |_| false), None);
        Ok(())
    }

    #[test]
    fn rejected_chunks_fall_back_and_a_page_always_fits() -> Result {
        let c = chunks()?;
        let vma = BASE..BASE + SZ_2M;
        let mut asked = KVec::new();
        let fit = c.fit(BASE + 5 * PAGE_SIZE, &[vma], |r| {
            let _ = asked.push(r.end - r.start, GFP_KERNEL);
            true
        });
        assert_eq!(fit, Some(BASE + 5 * PAGE_SIZE..BASE + 6 * PAGE_SIZE));
        // Asked about 2M then 64K, never about the page.
        assert_eq!(&asked[..], &[SZ_2M, SZ_64K]);
        Ok(())
    }

    #[test]
    fn present_tells_what_each_page_tells() {
        let start = BASE;
        for mask in [
            0,
            1,
            1 << 63,
            0x8000_0000_0000_0001,
            0x00f0_0000_0000_0f00,
            u64::MAX,
        ] {
            let present = Present { start, mask };
            // Page `i` of the block; none outside its 64 pages.
            let page = |i: usize| i < 64 && mask >> i & 1 != 0;
            // Spans from two pages before the block to two past it, of up to 70 pages.
            let from = start - 2 * PAGE_SIZE;
            for a in 0..70 {
                for n in 0..70 {
                    let span = from + a * PAGE_SIZE..from + (a + n) * PAGE_SIZE;
                    let pages = || (a..a + n).filter(|&i| i >= 2).map(|i| i - 2);
                    let inside = a >= 2 && a + n <= 66;
                    assert_eq!(present.any(&span), pages().any(page));
                    assert_eq!(present.covers(&span), n > 0 && inside && pages().all(page));
                }
            }
        }
    }

    #[test]
    fn top_of_the_address_space_does_not_overflow() -> Result {
        let c = chunks()?;
        let top = usize::MAX - PAGE_SIZE + 1;
        // The last page cannot be represented as a range: nothing fits, nothing overflows.
        let last = top..usize::MAX;
        assert_eq!(c.fit(top + 10, &[last], |_| false), None);
        let below = top - PAGE_SIZE..top;
        assert_eq!(
            c.fit(top - PAGE_SIZE, &[below.clone()], |_| false),
            Some(below)
        );
        Ok(())
    }
}
