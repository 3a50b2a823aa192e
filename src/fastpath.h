/*
 * fastpath.h -- the inlined malloc and free fast paths, shared by the pym_
 * entry points (alloc.c) and the malloc-family overrides (override.c) so
 * that both compile to the same straight-line code.
 *
 * malloc of up to 128 KiB: one table load gives the bin of the request's
 * class (pym_size_bin, or pym_medium_bin past 4 KiB), as an offset from
 * the thread pointer; pop the bin's top block (an %fs-relative load and
 * compare, a store, a load).  Eleven instructions on x86-64.  Before
 * start-up and while hooks are installed the tables' limits are 0 and
 * every request goes to a slow path.
 *
 * free: the page map gives the bin of the page holding the pointer (two
 * dependent loads, bounds and NULL checks), or 0 when the page holds no
 * block of a pool or span in use -- a pointer of another allocator, of a
 * large block, of a pool not in use.  A pointer off the alignment grid
 * (every block start is 16-aligned in the default mode) cannot be a block
 * start.  Then push onto the bin unless it is full or its top is the same
 * pointer (the common double free).  The block, its pool header and the
 * pool's descriptor are not touched, and it does not matter which thread
 * owns the pool.  Whether the pointer is exactly a block start the pool
 * has handed out is proven when the block leaves the bin for its pool
 * (heap.c) and on every slow path (alloc.c); the README says what that
 * means for invalid frees.
 *
 * Everything else -- an empty or full bin, large blocks, hooks, invalid
 * pointers, a thread without a heap -- goes to a slow path function.
 */
#ifndef PYM_FASTPATH_H
#define PYM_FASTPATH_H

#include "internal.h"

static PYM_ALWAYS_INLINE void *pym_bin_pop(pym_bin_offset_t offset, size_t size)
{
    pym_fast_bin_t bin = pym_bin_at(offset);
    void **cursor = bin->cursor;
    if (PYM_LIKELY(cursor != bin->base)) {
        cursor--;
        pym_fast_bin_set_cursor(bin, cursor);
        return *cursor;
    }
    return pym_malloc_slow(size);
}

/* size < *limit, with the limit compared in memory (one `cmp`; GCC would
 * load it into a register first). */
static PYM_ALWAYS_INLINE bool pym_below_limit(size_t size, const size_t *limit)
{
#if defined(__x86_64__) && !defined(PYM_BIN_GENERIC)
    bool below;
    __asm__("cmpq %2, %1" : "=@ccb"(below) : "r"(size), "m"(*limit));
    return below;
#else
    return size < __atomic_load_n(limit, __ATOMIC_RELAXED);
#endif
}

static PYM_ALWAYS_INLINE void *pym_malloc_inline(size_t size)
{
    if (PYM_LIKELY(pym_below_limit(size, &pym_size_bin_limit)))
        return pym_bin_pop(pym_size_bin[size], size);
    if (PYM_LIKELY(pym_below_limit(size, &pym_medium_bin_limit)))
        return pym_bin_pop(pym_medium_bin[(size + (1u << PYM_MEDIUM_TABLE_SHIFT) - 1) >> PYM_MEDIUM_TABLE_SHIFT],
                           size);
    return pym_malloc_large_entry(size);
}

static PYM_ALWAYS_INLINE void pym_free_inline(void *ptr)
{
#ifndef PYM_DEBUG /* debug builds check every free thoroughly in the slow path */
    uintptr_t address = (uintptr_t)ptr;
    pym_bin_offset_t offset = pym_pagemap_lookup(address);
    if (PYM_LIKELY(offset != 0 && pym_on_block_grid(address))) {
        pym_fast_bin_t bin = pym_bin_at(offset);
        void **cursor = bin->cursor;
        if (PYM_LIKELY(cursor != bin->limit && cursor[-1] != ptr)) {
            *cursor = ptr;
            pym_fast_bin_set_cursor(bin, cursor + 1);
            return;
        }
    }
#endif
    pym_free_slow(ptr);
}

#endif /* PYM_FASTPATH_H */
