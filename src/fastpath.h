/*
 * fastpath.h -- the inlined malloc and free fast paths, shared by the pym_
 * entry points (alloc.c) and the malloc-family overrides (override.c) so
 * that both compile to the same straight-line code.
 *
 * malloc of a small request: one table load for the class, the thread's heap
 * from TLS, its current pool for that class, pop the pool's free list.
 * free of a small block owned by the calling thread: chunk-map lookup (two
 * loads), the pool header at the block's 4 KiB boundary, a check that the
 * pointer is a block this pool handed out, push.  Everything else -- an
 * empty free list, a pool that fills or empties, other threads' blocks,
 * medium and large blocks, invalid pointers -- goes to a slow path.
 */
#ifndef PYM_FASTPATH_H
#define PYM_FASTPATH_H

#include "internal.h"

static PYM_ALWAYS_INLINE void *pym_malloc_inline(size_t size)
{
    if (PYM_LIKELY(size <= PYM_SMALL_MAX)) {
        unsigned size_class = pym_small_class_of[(size + PYM_ALIGNMENT - 1) / PYM_ALIGNMENT];
        pym_pool_t *pool = pym_tls_heap->pools[size_class];
        pym_block_t *block = pool->free;
        if (PYM_LIKELY(block != NULL)) {
            pool->free = block->next;
            pool->used++;
            return block;
        }
        return pym_heap_malloc_slow(size, size_class);
    }
    return pym_malloc_generic(size);
}

static PYM_ALWAYS_INLINE void pym_free_inline(void *ptr)
{
    uintptr_t address = (uintptr_t)ptr;
    uintptr_t entry = pym_chunkmap_lookup(address);
#ifndef PYM_DEBUG /* debug builds check every free thoroughly in the generic path */
    if (PYM_LIKELY(entry & PYM_CHUNK_SMALL)) {
        pym_pool_t *pool = (pym_pool_t *)(address & ~(PYM_POOL_SIZE - 1));
        pym_heap_t *heap = pym_tls_heap;
        pym_block_t *block = ptr;
        /* Offset from the first block; an address inside the header wraps
         * around to a huge value and fails the range check. */
        uint32_t offset = (uint32_t)(address & (PYM_POOL_SIZE - 1)) - PYM_POOL_HEADER_SIZE;
        if (PYM_LIKELY(__atomic_load_n(&pool->owner, __ATOMIC_RELAXED) == heap
                       && pym_pool_offset_is_block(pool, offset) && block != pool->free)) {
            block->next = pool->free;
            pool->free = block;
            if (PYM_LIKELY(--pool->used != 0 && pool->state == PYM_POOL_USED))
                return;
            pym_heap_free_local_slow(heap, pool);
            return;
        }
    }
#endif
    pym_free_generic(ptr, entry);
}

#endif /* PYM_FASTPATH_H */
