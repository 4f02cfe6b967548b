// SPDX-License-Identifier: GPL-2.0

//! The page table of a simulated GPU VM.
//!
//! Two levels, as a GPU's: a leaf table of [`LEAF_PAGES`] entries for each aligned block of
//! [`LEAF_SIZE`] bytes with a page mapped, found by the block's address. Binding a range writes
//! its entries in place; a leaf table goes when its last entry is zapped. The lock of the page
//! table is taken by the invalidation callback, so nothing allocates while holding it: the leaf
//! tables a bind lacks are allocated before the lock ([`PageTable::missing`], [`Leaves`]) and
//! only linked in under it.

use core::ops::Range;
use kernel::{
    drm::gpusvm::ValidPages,
    mm::hmm::HmmPfn,
    page::PAGE_SIZE,
    prelude::*,
    rbtree::{
        CursorMut,
        RBTree,
        RBTreeNodeReservation, //
    },
};

/// The entries of a leaf table.
pub(crate) const LEAF_PAGES: usize = 512;

/// The bytes a leaf table maps: 2 MiB.
pub(crate) const LEAF_SIZE: usize = LEAF_PAGES * PAGE_SIZE;

/// A page table entry: the page, where it is, and what the device may do with it. An entry maps
/// nothing unless its pfn is valid: the default entry maps nothing.
#[derive(Clone, Copy, Default)]
pub(crate) struct Pte {
    pub(crate) pfn: HmmPfn,
    /// Whether the page is in VRAM (a device-private page).
    pub(crate) vram: bool,
    pub(crate) writable: bool,
    pub(crate) atomic: bool,
    /// The size of the range the page was bound with, as a power of two.
    pub(crate) shift: u8,
}

/// A leaf table: the entries of one aligned block of [`LEAF_SIZE`] bytes.
struct Leaf {
    ptes: KVec<Pte>,
    /// The entries that map a page.
    mapped: usize,
}

/// What [`PageTable::bind`] bound.
pub(crate) struct Bound {
    /// How many of the ranges, from the first.
    pub(crate) ranges: usize,
    /// How many pages it mapped.
    pub(crate) pages: usize,
    /// The pfn of a page in VRAM among them, if there is one.
    pub(crate) in_vram: Option<usize>,
}

/// Leaf tables allocated for a bind, before the page table lock is taken.
pub(crate) struct Leaves(KVec<(RBTreeNodeReservation<usize, Leaf>, Leaf)>);

impl Leaves {
    /// `count` empty leaf tables.
    pub(crate) fn new(count: usize) -> Result<Self> {
        let mut leaves = KVec::with_capacity(count, GFP_KERNEL)?;
        for _ in 0..count {
            let mut ptes = KVec::with_capacity(LEAF_PAGES, GFP_KERNEL)?;
            ptes.resize(LEAF_PAGES, Pte::default(), GFP_KERNEL)?;
            let node = RBTreeNodeReservation::new(GFP_KERNEL)?;
            leaves.push((node, Leaf { ptes, mapped: 0 }), GFP_KERNEL)?;
        }
        Ok(Self(leaves))
    }
}

/// The start of the leaf block containing `addr`.
fn leaf_start(addr: usize) -> usize {
    addr & !(LEAF_SIZE - 1)
}

/// The leaf blocks that `span` overlaps, by their start.
fn leaf_blocks(span: &Range<usize>) -> impl Iterator<Item = usize> {
    (leaf_start(span.start)..span.end).step_by(LEAF_SIZE)
}

/// The page table: the leaf tables keyed by the start of their block.
pub(crate) struct PageTable {
    leaves: RBTree<usize, Leaf>,
    bound: usize,
}

impl PageTable {
    pub(crate) fn new() -> Self {
        Self {
            leaves: RBTree::new(),
            bound: 0,
        }
    }

    /// The number of pages mapped.
    pub(crate) fn bound(&self) -> usize {
        self.bound
    }

    /// The entry of the page at `addr`, if it is mapped.
    pub(crate) fn lookup(&self, addr: usize) -> Option<Pte> {
        let leaf = self.leaves.get(&leaf_start(addr))?;
        let pte = *leaf.ptes.get((addr % LEAF_SIZE) / PAGE_SIZE)?;
        pte.pfn.is_valid().then_some(pte)
    }

    /// How many leaf tables a bind of `span` needs that the page table lacks: to allocate as
    /// [`Leaves`] before the lock is taken for the bind.
    pub(crate) fn missing(&self, span: &Range<usize>) -> usize {
        leaf_blocks(span)
            .filter(|b| self.leaves.get(b).is_none())
            .count()
    }

    /// Binds consecutive ranges, each given by its start and its pages (one entry a page; holes
    /// are not mapped), up to the first that has no page to map. Takes the leaf tables it lacks
    /// from `leaves`, and looks each leaf table up once for all the ranges in it: a run of small
    /// ranges costs one lookup, not one a range.
    ///
    /// Fails, having bound nothing, with [`EAGAIN`] if `leaves` has too few (a zap freed a leaf
    /// table since [`PageTable::missing`] was asked) and with [`EINVAL`] if the ranges are not
    /// consecutive or would end past the address space.
    pub(crate) fn bind<'v>(
        &mut self,
        ranges: impl Iterator<Item = (usize, ValidPages<'v>)> + Clone,
        leaves: &mut Leaves,
    ) -> Result<Bound> {
        // The ranges to bind: those before the first with nothing to map, checked first.
        let ranges = ranges.take_while(|(_, valid)| valid.pfns().iter().any(|p| p.is_valid()));
        let (mut count, mut span) = (0, None::<Range<usize>>);
        for (start, valid) in ranges.clone() {
            let end = valid
                .pfns()
                .len()
                .checked_mul(PAGE_SIZE)
                .and_then(|len| start.checked_add(len))
                .ok_or(EINVAL)?;
            span = match span {
                None => Some(start..end),
                Some(s) if s.end == start => Some(s.start..end),
                Some(_) => return Err(EINVAL),
            };
            count += 1;
        }
        let mut bound = Bound {
            ranges: count,
            pages: 0,
            in_vram: None,
        };
        let Some(span) = span else {
            return Ok(bound);
        };
        if self.missing(&span) > leaves.0.len() {
            return Err(EAGAIN);
        }
        // The ranges left, the first of them from its page `i` on.
        let (mut ranges, mut i) = (ranges.peekable(), 0usize);
        for block in leaf_blocks(&span) {
            if self.leaves.get(&block).is_none() {
                let (node, leaf) = leaves.0.pop().ok_or(EAGAIN)?;
                self.leaves.insert(node.into_node(block, leaf));
            }
            let mut cursor = leaf_at(&mut self.leaves, block).ok_or(EAGAIN)?;
            let (_, leaf) = cursor.current_mut();
            let block_end = block.saturating_add(LEAF_SIZE);
            // The parts of the ranges in this leaf table.
            while let Some((start, valid)) = ranges.peek() {
                let start = *start;
                let pfns = valid.pfns();
                // `start + pfns.len() * PAGE_SIZE` was checked not to overflow.
                let base = start.wrapping_add(i.wrapping_mul(PAGE_SIZE));
                let end = ((block_end - start) / PAGE_SIZE).min(pfns.len());
                let part = pfns.get(i..end).ok_or(EINVAL)?;
                let first = (base % LEAF_SIZE) / PAGE_SIZE;
                let ptes = leaf.ptes.get_mut(first..first + part.len()).ok_or(EINVAL)?;
                let (set, cleared) = write_ptes(ptes, part, base, valid, i, &mut bound.in_vram);
                bound.pages += set;
                leaf.mapped = leaf.mapped + set - cleared;
                self.bound = self.bound + set - cleared;
                if end < pfns.len() {
                    // The range goes on in the next leaf table.
                    i = end;
                    break;
                }
                ranges.next();
                i = 0;
            }
            // Holes bound over mapped entries may have emptied it.
            if leaf.mapped == 0 {
                drop(cursor.remove_current());
            }
        }
        Ok(bound)
    }

    /// Zaps the entries of `span`; leaf tables left empty go (freeing is fine under the lock,
    /// allocating is not).
    pub(crate) fn zap(&mut self, span: &Range<usize>) {
        for block in leaf_blocks(span) {
            let Some(mut cursor) = leaf_at(&mut self.leaves, block) else {
                continue;
            };
            let (_, leaf) = cursor.current_mut();
            let first = span.start.saturating_sub(block) / PAGE_SIZE;
            let last = ((span.end - block) / PAGE_SIZE).min(LEAF_PAGES);
            for pte in leaf.ptes.get_mut(first..last).unwrap_or(&mut []) {
                if core::mem::take(pte).pfn.is_valid() {
                    leaf.mapped -= 1;
                    self.bound -= 1;
                }
            }
            if leaf.mapped == 0 {
                drop(cursor.remove_current());
            }
        }
    }
}

/// A cursor on the leaf table of the block at `block` in `leaves`, if there is one: a cursor
/// finds it in half the instructions of `get_mut()`.
fn leaf_at(leaves: &mut RBTree<usize, Leaf>, block: usize) -> Option<CursorMut<'_, usize, Leaf>> {
    leaves
        .cursor_lower_bound_mut(&block)
        .filter(|cursor| *cursor.current().0 == block)
}

/// Sets `ptes` to map `pfns`, pages `first..` of the range of `valid`, the first at `base`.
/// Notes a page in VRAM in `in_vram` if it has none yet. Returns how many entries now map a page
/// and how many did before. Always inlined: with 4K chunks it runs once a page, and as a call
/// its setup costs as much as its loop.
#[inline(always)]
fn write_ptes(
    ptes: &mut [Pte],
    pfns: &[HmmPfn],
    base: usize,
    valid: &ValidPages<'_>,
    first: usize,
    in_vram: &mut Option<usize>,
) -> (usize, usize) {
    let shift = (valid.pfns().len() * PAGE_SIZE).trailing_zeros() as u8;
    let atomic = valid.atomic();
    let (mut set, mut cleared) = (0, 0);
    // The pages of a huge mapping are one folio: all in VRAM, or none. One question a folio, the
    // only one a page asks for memory without huge pages.
    let (mut folio_left, mut vram) = (0, false);
    // As long as each other: `min()` only spares the bounds checks in the loop.
    for k in 0..pfns.len().min(ptes.len()) {
        let (pfn, pte) = (pfns[k], &mut ptes[k]);
        if folio_left == 0 {
            folio_left = match pfn.map_order() {
                // Its own folio, whatever the address.
                0 => 1,
                _ => pfn.pages_to_mapping_end(base.wrapping_add(k * PAGE_SIZE)),
            };
            vram = valid.device_private_owner(first + k).is_some();
            if vram && in_vram.is_none() {
                *in_vram = pfn.pfn();
            }
        }
        folio_left -= 1;
        cleared += usize::from(pte.pfn.is_valid());
        set += usize::from(pfn.is_valid());
        *pte = Pte {
            pfn,
            vram,
            writable: pfn.is_writable(),
            atomic,
            shift,
        };
    }
    (set, cleared)
}
