/*
 * fastpath.h -- the inlined malloc and free fast paths, shared by the pym_
 * entry points (alloc.c) and the malloc-family overrides (override.c) so
 * that both compile to the same straight-line code.
 *
 * malloc of a small request: one table load for the class, the thread's heap
 * from TLS, pop the top block of the class's thread cache bin.
 * free of a small block: chunk-map lookup (two loads), the pool's directory
 * entry in the chunk descriptor (class, divisibility constants, carved
 * bound), a multiply and a rotate that prove the pointer is a block the pool
 * handed out, a check against the block pushed last (the common double
 * free), push onto the bin.  The block and its pool header are not touched,
 * and it does not matter which thread owns the pool.  Everything else -- an
 * empty or full bin, large blocks, invalid pointers, a thread without a
 * heap -- goes to a slow path.  Medium blocks take the same path, with the
 * class computed from the size's top bits and the whole span as one pool.
 */
#ifndef PYM_FASTPATH_H
#define PYM_FASTPATH_H

#include "internal.h"

static PYM_ALWAYS_INLINE void *pym_cache_pop(unsigned size_class, size_t size)
{
    pym_cache_bin_t *bin = &pym_tls_heap->bins[size_class];
    void **cursor = bin->cursor;
    if (PYM_LIKELY(cursor != bin->base)) {
        cursor--;
        pym_bin_set_cursor(bin, cursor);
        return *cursor;
    }
    return pym_heap_malloc_slow(size, size_class);
}

/* Hooks: a small malloc reaches its slow path through pym_fast_class_of
 * (see internal.h); medium and large ones test the flag, as free does. */
static PYM_ALWAYS_INLINE void *pym_malloc_inline(size_t size)
{
    if (PYM_LIKELY(size <= PYM_SMALL_MAX))
        return pym_cache_pop(pym_fast_class_of[(size + PYM_ALIGNMENT - 1) / PYM_ALIGNMENT], size);
    if (pym_hooks_on())
        return pym_malloc_hooked(size);
    if (PYM_LIKELY(size <= PYM_MEDIUM_MAX))
        return pym_cache_pop(pym_medium_class_of(size), size);
    return pym_malloc_generic(size);
}

/* Push a block onto its bin if it is a block of the pool whose directory
 * entry is `info` (at `offset` from the pool's first block), the bin has
 * room and the block is not the one pushed last; false otherwise. */
static PYM_ALWAYS_INLINE bool pym_cache_push(void *ptr, const pym_pool_info_t *info, uint32_t offset)
{
    if (PYM_LIKELY(pym_pool_info_has_block(info, offset))) {
        pym_cache_bin_t *bin = &pym_tls_heap->bins[info->size_class];
        void **cursor = bin->cursor;
        if (PYM_LIKELY(cursor != bin->limit && cursor[-1] != ptr)) {
            *cursor = ptr;
            pym_bin_set_cursor(bin, cursor + 1);
            return true;
        }
    }
    return false;
}

static PYM_ALWAYS_INLINE void pym_free_unhooked_inline(void *ptr)
{
    uintptr_t address = (uintptr_t)ptr;
    uintptr_t entry = pym_chunkmap_lookup(address);
#ifndef PYM_DEBUG /* debug builds check every free thoroughly in the generic path */
    pym_arena_t *arena = (pym_arena_t *)(entry & ~PYM_CHUNK_KIND_MASK);
    if (PYM_LIKELY(entry & PYM_CHUNK_SMALL)) {
        uint32_t offset = (uint32_t)(address & (PYM_POOL_SIZE - 1)) - PYM_POOL_HEADER_SIZE;
        if (PYM_LIKELY(pym_cache_push(ptr, &arena->pools[(address >> PYM_POOL_SHIFT) & (PYM_POOLS_PER_ARENA - 1)],
                                      offset)))
            return;
    } else if (PYM_LIKELY(entry & PYM_CHUNK_MEDIUM)) {
        if (PYM_LIKELY(pym_cache_push(ptr, &arena->pools[0], (uint32_t)(address & (PYM_CHUNK_SIZE - 1)))))
            return;
    }
#endif
    pym_free_generic(ptr, entry);
}

static PYM_ALWAYS_INLINE void pym_free_inline(void *ptr)
{
    if (pym_hooks_on()) {
        pym_free_hooked(ptr);
        return;
    }
    pym_free_unhooked_inline(ptr);
}

#endif /* PYM_FASTPATH_H */
