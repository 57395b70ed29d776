//! peerd's global allocator: mimalloc, asked the way its plain `mi_malloc`
//! is fastest for the alignments Rust nearly always asks for.
//!
//! The `mimalloc` crate passes every request to `mi_malloc_aligned`. In
//! mimalloc 3 that path takes a block at once only while the size class's
//! free list has one; when the list is empty it does not refill it (plain
//! `mi_malloc` does) but over-allocates from a larger class instead, so a
//! size class that is not a power of two can stay on that slow path for
//! good. At full speed the sending daemon's per-message allocations (the
//! text's 80-byte `Arc<str>`, a receipt's ids) cost ~150 instructions
//! each there instead of ~20 (callgrind). Every mimalloc block is aligned
//! to at least a word, so an alignment up to a word goes to `mi_malloc`,
//! and only larger ones (rare: cache-padded runtime structures) to
//! `mi_malloc_aligned`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc as the global allocator (see the module).
#[derive(Debug, Clone, Copy)]
pub struct MiMalloc;

// SAFETY: each method returns a block from mimalloc of at least
// `layout.size()` bytes aligned to `layout.align()` (by `WORD` alignment of
// every block, or by the aligned call), or null; `dealloc` and `realloc`
// get only pointers this allocator returned, and `mi_free` and
// `mi_realloc` accept any block however it was allocated.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions have no preconditions.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the
        // caller's contract); the new block keeps the alignment as above.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size class up to the large ones, at every alignment the fast
    /// path takes and a few it does not: the blocks are aligned, usable,
    /// and survive growing and shrinking.
    #[test]
    fn blocks_are_aligned_and_usable_at_every_size() {
        let a = MiMalloc;
        for align in [1, 2, 4, 8, 16, 64, 4096] {
            for size in (1..=2048).chain([4095, 4096, 65_537, 1 << 20]) {
                let layout = Layout::from_size_align(size, align).expect("layout");
                for zeroed in [false, true] {
                    // SAFETY: a non-zero size; the block is freed below
                    // with the layout it was allocated with.
                    unsafe {
                        let p = if zeroed { a.alloc_zeroed(layout) } else { a.alloc(layout) };
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        if zeroed {
                            assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                        }
                        p.write_bytes(0xa5, size);
                        let bigger = size * 3 + 1;
                        let q = a.realloc(p, layout, bigger);
                        assert!(!q.is_null());
                        assert_eq!(q as usize % align, 0, "realloc to {bigger} align {align}");
                        assert!(std::slice::from_raw_parts(q, size).iter().all(|&b| b == 0xa5));
                        let grown = Layout::from_size_align(bigger, align).expect("layout");
                        let r = a.realloc(q, grown, size);
                        assert!(!r.is_null());
                        assert_eq!(r as usize % align, 0);
                        a.dealloc(r, layout);
                    }
                }
            }
        }
    }
}
