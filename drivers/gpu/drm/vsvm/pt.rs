// SPDX-License-Identifier: GPL-2.0

//! The page table of a simulated GPU VM.
//!
//! It maps the pages of GPU SVM ranges: one mapping per bound range, with an entry per page.
//! Its lock is taken by the invalidation callback, so nothing allocates while holding it: a
//! mapping is allocated before the lock and only filled under it.

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

/// A page table entry: the page, where it is, and what the device may do with it.
#[derive(Clone, Copy)]
pub(crate) struct Pte {
    pub(crate) pfn: HmmPfn,
    /// Whether the page is in VRAM (a device-private page).
    pub(crate) vram: bool,
    pub(crate) writable: bool,
    pub(crate) atomic: bool,
}

/// The entries of one bound range.
pub(crate) struct Mapping {
    start: usize,
    ptes: KVec<Option<Pte>>,
    /// The entries that map a page.
    mapped: usize,
}

impl Mapping {
    /// An empty mapping of `npages` pages from `start`, to fill under the page table lock.
    pub(crate) fn new(start: usize, npages: usize) -> Result<Self> {
        Ok(Self {
            start,
            ptes: KVec::with_capacity(npages, GFP_KERNEL)?,
            mapped: 0,
        })
    }

    /// Sets the entries from the pages of `valid`, one per page; fails if there are more than
    /// were reserved. Returns how many pages it maps (holes are not mapped), and the pfn of one
    /// in VRAM if there is one.
    pub(crate) fn fill(&mut self, valid: &ValidPages<'_>) -> Result<(usize, Option<usize>)> {
        self.ptes.clear();
        self.mapped = 0;
        let mut in_vram = None;
        let pfns = valid.pfns();
        let mut i = 0;
        while i < pfns.len() {
            // The pages of a huge mapping are one folio: all in VRAM, or none.
            let n = pfns[i]
                .pages_to_mapping_end(self.start + i * PAGE_SIZE)
                .min(pfns.len() - i);
            let vram = valid.device_private_owner(i).is_some();
            for pfn in &pfns[i..i + n] {
                if !pfn.is_valid() {
                    self.ptes.push_within_capacity(None).map_err(|_| ENOMEM)?;
                    continue;
                }
                let pte = Pte {
                    pfn: *pfn,
                    vram,
                    writable: pfn.is_writable(),
                    atomic: valid.atomic(),
                };
                self.mapped += 1;
                if vram && in_vram.is_none() {
                    in_vram = pfn.pfn();
                }
                self.ptes
                    .push_within_capacity(Some(pte))
                    .map_err(|_| ENOMEM)?;
            }
            i += n;
        }
        Ok((self.mapped, in_vram))
    }

    fn span(&self) -> Range<usize> {
        self.start..self.start + self.ptes.len() * PAGE_SIZE
    }
}

/// Removes the mapping under `cursor`; returns a cursor on the next one, if any.
fn remove_and_next(cursor: CursorMut<'_, usize, Mapping>) -> Option<CursorMut<'_, usize, Mapping>> {
    let removed = *cursor.current().0;
    // The cursor returned points to the previous mapping when the removed one was the last.
    cursor
        .remove_current()
        .0
        .filter(|next| *next.current().0 > removed)
}

/// The page table: the mappings keyed by their end address.
pub(crate) struct PageTable {
    maps: RBTree<usize, Mapping>,
    bound: usize,
}

impl PageTable {
    pub(crate) fn new() -> Self {
        Self {
            maps: RBTree::new(),
            bound: 0,
        }
    }

    /// The number of pages mapped.
    pub(crate) fn bound(&self) -> usize {
        self.bound
    }

    /// The entry of the page at `addr`, if it is mapped.
    pub(crate) fn lookup(&self, addr: usize) -> Option<Pte> {
        self.lookup_entry(addr).map(|(pte, _)| pte)
    }

    /// The entry of the page at `addr` and the size of the mapping it is part of, if it is
    /// mapped.
    pub(crate) fn lookup_entry(&self, addr: usize) -> Option<(Pte, usize)> {
        let cursor = self.maps.cursor_lower_bound(&addr.checked_add(1)?)?;
        let (_, map) = cursor.current();
        if addr < map.start {
            return None;
        }
        let pte = (*map.ptes.get((addr - map.start) / PAGE_SIZE)?)?;
        Some((pte, map.ptes.len() * PAGE_SIZE))
    }

    /// Maps `mapping` with the node `node`, replacing the mappings it overlaps.
    pub(crate) fn bind(&mut self, mapping: Mapping, node: RBTreeNodeReservation<usize, Mapping>) {
        let span = mapping.span();
        self.remove(&span);
        self.bound += mapping.mapped;
        self.maps.insert(node.into_node(span.end, mapping));
    }

    /// Zaps the entries of `span`; mappings left empty go.
    pub(crate) fn zap(&mut self, span: &Range<usize>) {
        let mut cursor = span
            .start
            .checked_add(1)
            .and_then(|key| self.maps.cursor_lower_bound_mut(&key));
        while let Some(mut c) = cursor {
            let (_, map) = c.current_mut();
            if map.start >= span.end {
                break;
            }
            let first = span.start.saturating_sub(map.start) / PAGE_SIZE;
            let last = ((span.end - map.start) / PAGE_SIZE).min(map.ptes.len());
            for pte in &mut map.ptes[first..last] {
                if pte.take().is_some() {
                    map.mapped -= 1;
                    self.bound -= 1;
                }
            }
            cursor = if map.mapped == 0 {
                // Freeing is fine under the lock; allocating is not.
                remove_and_next(c)
            } else {
                c.move_next()
            };
        }
    }

    /// Removes the mappings that overlap `span`.
    fn remove(&mut self, span: &Range<usize>) {
        let mut cursor = span
            .start
            .checked_add(1)
            .and_then(|key| self.maps.cursor_lower_bound_mut(&key));
        while let Some(c) = cursor {
            let (_, map) = c.current();
            if map.start >= span.end {
                break;
            }
            self.bound -= map.mapped;
            cursor = remove_and_next(c);
        }
    }
}
