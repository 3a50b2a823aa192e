/*
 * alloc.c -- the public pym_ entry points and the paths off the fast path:
 * medium requests, aligned requests, realloc, and the free of anything that
 * is not a small block of the calling thread.
 *
 * Request sizes:
 *   0..512 bytes        small classes, 4 KiB pools (fastpath.h, heap.c)
 *   513 B..128 KiB      medium classes, 256 KiB spans, same heap machinery
 *   above 128 KiB       large mappings (large.c): reused from a cache below
 *                       PYM_DIRECT_THRESHOLD (1 MiB), mapped and unmapped
 *                       directly from there on, grown with mremap.
 * Requests above PTRDIFF_MAX fail with ENOMEM before anything is tried, as
 * glibc does: no object may be larger than the largest pointer difference.
 *
 * Invalid pointers (README, "Invalid frees"):
 *   - a pointer in no chunk of pymalloc's (stack, static data, memory of
 *     another allocator) is ignored by free, counted, and reported once with
 *     PYMALLOC_VERBOSE=1: pymalloc cannot know what it is, and leaving it
 *     alone is the only safe action;
 *   - a pointer inside pymalloc's memory that is not a live block (interior
 *     pointer, block never handed out, block already free when detectable)
 *     is a heap corruption in the making: pymalloc prints what it found and
 *     aborts, like glibc's "free(): invalid pointer".
 */
#include <errno.h>
#include <string.h>

#include "fastpath.h"

size_t pym_invalid_free_count;

/* ---- block validation ----------------------------------------------------------- */
/* Why `ptr` is not a live block of `pool`, or NULL when it may be one.  Reads
 * of a foreign thread's pool are racy but monotone: a live block stays below
 * the carved area and its pool stays in use while the block lives. */
static const char *pym_pool_block_problem(pym_pool_t *pool, const void *ptr)
{
    uint8_t state = __atomic_load_n(&pool->state, __ATOMIC_RELAXED);
    if (state != PYM_POOL_USED && state != PYM_POOL_FULL && state != PYM_POOL_ABANDONED)
        return "not in a pool in use";
    uintptr_t offset = (uintptr_t)ptr - (uintptr_t)pym_pool_first_block(pool); /* wraps if ptr < first */
    if (offset >= __atomic_load_n(&pool->carved, __ATOMIC_RELAXED))
        return "not a block handed out";
    if (!pym_offset_is_multiple((uint32_t)offset, pool->odd_inverse, pool->rotate, pool->max_quotient))
        return "not the start of a block";
    return NULL;
}

void pym_pool_check_block(pym_pool_t *pool, void *ptr, const char *caller)
{
    const char *problem = pym_pool_block_problem(pool, ptr);
    if (PYM_UNLIKELY(problem != NULL)) {
        const pym_class_t *cls = &pym_classes[pool->size_class];
        char *first = pym_pool_first_block(pool);
        uintptr_t offset = (uintptr_t)((char *)ptr - first);
        pym_fatal("pymalloc: %s(): invalid pointer %p: %s (pool %p, %u-byte blocks, nearest block %p)", caller, ptr,
                  problem, (void *)pool, cls->block_size,
                  (void *)(first + (offset / cls->block_size) * cls->block_size));
    }
}

uint32_t pym_pool_push_block(pym_pool_t *pool, pym_block_t *block)
{
    if (PYM_UNLIKELY(block == pool->free))
        pym_fatal("pymalloc: free(): double free of block %p (%u-byte class)", (void *)block,
                  pym_classes[pool->size_class].block_size);
#ifdef PYM_DEBUG
    for (pym_block_t *scan = pool->free; scan != NULL; scan = scan->next)
        if (scan == block)
            pym_fatal("pymalloc: free(): double free of block %p (%u-byte class)", (void *)block,
                      pym_classes[pool->size_class].block_size);
#endif
    block->next = pool->free;
    pool->free = block;
    return --pool->used;
}

void pym_pool_free_block(pym_heap_t *heap, pym_pool_t *pool, pym_block_t *block)
{
    if (pym_pool_push_block(pool, block) == 0 || pool->state != PYM_POOL_USED)
        pym_heap_free_local_slow(heap, pool);
}

/* ---- generic paths ---------------------------------------------------------------- */
static void *pym_alloc_class(unsigned size_class, size_t size)
{
    pym_pool_t *pool = pym_tls_heap->pools[size_class];
    pym_block_t *block = pool->free;
    if (PYM_LIKELY(block != NULL)) {
        pool->free = block->next;
        pool->used++;
        return block;
    }
    return pym_heap_malloc_slow(size, size_class);
}

void *pym_malloc_generic(size_t size)
{
    if (size <= PYM_MEDIUM_MAX)
        return pym_alloc_class(pym_medium_class_of(size), size);
    if (PYM_UNLIKELY(size > PTRDIFF_MAX)) {
        errno = ENOMEM;
        return NULL;
    }
    pym_ensure_init();
    return pym_large_alloc(size, 0, false);
}

void pym_free_generic(void *ptr, uintptr_t entry)
{
    switch (entry & PYM_CHUNK_KIND_MASK) {
    case PYM_CHUNK_NONE:
        if (ptr != NULL)
            pym_invalid_free(ptr, "free");
        return;
    case PYM_CHUNK_LARGE:
        pym_large_free((pym_large_t *)(entry & ~PYM_CHUNK_KIND_MASK), ptr);
        return;
    default:
        break;
    }
    pym_pool_t *pool = pym_pool_of((uintptr_t)ptr, entry);
    pym_pool_check_block(pool, ptr, "free");
    pym_heap_t *heap = pym_tls_heap;
    if (__atomic_load_n(&pool->owner, __ATOMIC_RELAXED) == heap)
        pym_pool_free_block(heap, pool, ptr);
    else
        pym_heap_free_remote(pool, ptr);
}

/* `alignment` is a power of two. */
void *pym_aligned_generic(size_t alignment, size_t size)
{
    if (PYM_UNLIKELY(size > PTRDIFF_MAX || alignment > PTRDIFF_MAX)) {
        errno = ENOMEM;
        return NULL;
    }
    pym_ensure_init();
    if (alignment <= PYM_ALIGNMENT)
        return pym_malloc_inline(size);
    /* Small class whose block size is a multiple of the alignment: blocks of
     * such a class are aligned because pools start 64 bytes (a multiple of
     * any alignment up to 64) before their first block. */
    if (alignment <= PYM_POOL_HEADER_SIZE && size <= PYM_SMALL_MAX) {
        size_t rounded = pym_align_up(size ? size : 1, alignment);
        if (rounded <= PYM_SMALL_MAX)
            return pym_alloc_class(pym_small_class_of[rounded / PYM_ALIGNMENT], rounded);
    }
    /* Medium class whose block size is a multiple of the alignment: spans
     * start on a chunk boundary. */
    if (alignment <= PYM_MEDIUM_MAX && size <= PYM_MEDIUM_MAX) {
        size_t wanted = size > alignment ? size : alignment;
        if (wanted <= PYM_SMALL_MAX)
            wanted = PYM_SMALL_MAX + 1;
        for (unsigned size_class = pym_medium_class_of(wanted); size_class < PYM_CLASS_COUNT; size_class++)
            if (pym_classes[size_class].block_size % alignment == 0)
                return pym_alloc_class(size_class, pym_classes[size_class].block_size);
    }
    return pym_large_alloc(size ? size : 1, alignment, false);
}

static bool pym_is_power_of_two(size_t value)
{
    return value != 0 && (value & (value - 1)) == 0;
}

/* ---- public entry points ------------------------------------------------------------- */
void *pym_malloc(size_t size)
{
    return pym_malloc_inline(size);
}

void pym_free(void *ptr)
{
    pym_free_inline(ptr);
}

void *pym_calloc(size_t count, size_t size)
{
    size_t total;
    if (PYM_UNLIKELY(__builtin_mul_overflow(count, size, &total) || total > PTRDIFF_MAX)) {
        errno = ENOMEM;
        return NULL;
    }
    if (total > PYM_MEDIUM_MAX) {
        pym_ensure_init();
        return pym_large_alloc(total, 0, true); /* fresh mappings are already zero */
    }
    void *block = pym_malloc_inline(total);
    if (PYM_LIKELY(block != NULL))
        memset(block, 0, total);
    return block;
}

void *pym_realloc(void *ptr, size_t size)
{
    if (ptr == NULL)
        return pym_malloc_inline(size);
    if (size == 0) { /* glibc: realloc(p, 0) frees p and returns NULL */
        pym_free_inline(ptr);
        return NULL;
    }
    if (PYM_UNLIKELY(size > PTRDIFF_MAX)) {
        errno = ENOMEM;
        return NULL;
    }
    uintptr_t entry = pym_chunkmap_lookup((uintptr_t)ptr);
    size_t old_size;
    switch (entry & PYM_CHUNK_KIND_MASK) {
    case PYM_CHUNK_NONE:
        pym_fatal("pymalloc: realloc(): invalid pointer %p: not allocated by pymalloc (its size is unknown)", ptr);
    case PYM_CHUNK_LARGE:
        return pym_large_realloc((pym_large_t *)(entry & ~PYM_CHUNK_KIND_MASK), ptr, size);
    default: {
        pym_pool_t *pool = pym_pool_of((uintptr_t)ptr, entry);
        pym_pool_check_block(pool, ptr, "realloc");
        if (size <= PYM_MEDIUM_MAX) {
            unsigned new_class = size <= PYM_SMALL_MAX ? pym_small_class_of[(size + PYM_ALIGNMENT - 1) / PYM_ALIGNMENT]
                                                       : pym_medium_class_of(size);
            if (new_class == pool->size_class)
                return ptr;
        }
        old_size = pym_classes[pool->size_class].block_size;
        break;
    }
    }
    void *moved = pym_malloc_inline(size);
    if (moved == NULL)
        return NULL; /* errno is ENOMEM; the old block is untouched */
    memcpy(moved, ptr, old_size < size ? old_size : size);
    pym_free_inline(ptr);
    return moved;
}

void *pym_reallocarray(void *ptr, size_t count, size_t size)
{
    size_t total;
    if (PYM_UNLIKELY(__builtin_mul_overflow(count, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    return pym_realloc(ptr, total);
}

int pym_posix_memalign(void **out, size_t alignment, size_t size)
{
    if (alignment % sizeof(void *) != 0 || !pym_is_power_of_two(alignment))
        return EINVAL;
    int saved_errno = errno;
    void *block = pym_aligned_generic(alignment, size);
    errno = saved_errno; /* POSIX: the result is returned, errno is left alone */
    if (block == NULL)
        return ENOMEM;
    *out = block;
    return 0;
}

void *pym_aligned_alloc(size_t alignment, size_t size)
{
    if (!pym_is_power_of_two(alignment)) {
        errno = EINVAL;
        return NULL;
    }
    return pym_aligned_generic(alignment, size);
}

void *pym_memalign(size_t alignment, size_t size)
{
    if (alignment == 0) /* glibc serves memalign(0, n) as malloc(n); so do we */
        alignment = 1;
    return pym_aligned_alloc(alignment, size);
}

void *pym_valloc(size_t size)
{
    return pym_aligned_generic(pym_os_page_size(), size);
}

void *pym_pvalloc(size_t size)
{
    size_t page = pym_os_page_size();
    if (size > PTRDIFF_MAX) {
        errno = ENOMEM;
        return NULL;
    }
    return pym_aligned_generic(page, size ? pym_align_up(size, page) : page);
}

size_t pym_usable_size(const void *ptr)
{
    uintptr_t entry = pym_chunkmap_lookup((uintptr_t)ptr);
    switch (entry & PYM_CHUNK_KIND_MASK) {
    case PYM_CHUNK_NONE:
        return 0;
    case PYM_CHUNK_LARGE: {
        pym_large_t *large = (pym_large_t *)(entry & ~PYM_CHUNK_KIND_MASK);
        return large->base == (uintptr_t)ptr && large->state == PYM_LARGE_LIVE ? large->size : 0;
    }
    default: {
        pym_pool_t *pool = pym_pool_of((uintptr_t)ptr, entry);
        return pym_pool_block_problem(pool, ptr) == NULL ? pym_classes[pool->size_class].block_size : 0;
    }
    }
}

int pym_owns(const void *ptr)
{
    return ptr != NULL && pym_usable_size(ptr) != 0;
}
