/*
 * pool.c -- size classes and pool initialisation.
 *
 * Small classes (requests of 1..512 bytes) are spaced 8 bytes apart, as in
 * CPython's obmalloc: class i holds blocks of 8 * (i + 1) bytes, carved from
 * 4 KiB pools whose first 64 bytes are the pool header, so a pool of class i
 * holds (4096 - 64) / (8 * (i + 1)) blocks.
 *
 * Two mappings from request size to small class exist, chosen once at
 * start-up by PYMALLOC_ALIGN and stored in the same 65-entry table, so the
 * fast path is one table load either way:
 *   16 (default): every request goes to a class whose block size is a
 *                 multiple of 16 (1..16 -> 16, 24 -> 32, 40 -> 48, ...),
 *                 the 16-byte alignment the x86-64 ABI promises for
 *                 max_align_t and glibc gives every block.  Every block
 *                 start is then on the 16-byte grid, which free's fast path
 *                 checks (a pointer off it is no block start); the 8-byte
 *                 class is not used in this mode;
 *   8:            every request goes to its exact 8-byte class, the compact
 *                 layout of the original design (grid of 8 bytes).
 * Blocks start 64 bytes into the pool, so in both modes a class whose size is
 * a multiple of 16 (or 32, or 64) has every block aligned to 16 (32, 64).
 *
 * Medium classes (513 B .. 128 KiB) grow in four steps per doubling (640,
 * 768, 896, 1024, 1280, ...), bounding internal waste to 25%.  Each medium
 * span is one 256 KiB chunk of a single class; blocks start at the chunk
 * base, so a block whose size is a multiple of 2^k is 2^k-aligned.
 *
 * Free blocks.  A small pool links its free blocks through their first
 * word, as CPython does (4 KiB: the pool is one page, given back whole or
 * not at all).  A medium span keeps a bitmap of its free blocks in its
 * descriptor instead: nothing of the span's own memory records what is
 * free, so the pages that hold no block in use can be given back (madvise)
 * while the span lives on -- what lets a thread that went quiet with a few
 * blocks of a span in its cache pin those blocks' pages, not the whole
 * 256 KiB -- and a double free into the span is always caught.
 */
#include <string.h>

#include "internal.h"

pym_class_t pym_classes[PYM_CLASS_COUNT];
uint8_t pym_small_class_of[PYM_SMALL_CLASSES + 1];
pym_bin_offset_t pym_class_bin[PYM_CLASS_COUNT];
pym_bin_offset_t pym_no_bin;
pym_bin_offset_t pym_size_bin[PYM_SIZE_TABLE_MAX + 1];
pym_bin_offset_t pym_medium_bin[(PYM_MEDIUM_MAX >> PYM_MEDIUM_TABLE_SHIFT) + 1];
size_t pym_size_bin_limit;
size_t pym_medium_bin_limit;

/* Inverse of an odd number modulo 2^32 by Newton's iteration: each step
 * doubles the number of correct low bits (x0 = d is right to 3 bits). */
static uint32_t pym_odd_inverse(uint32_t odd)
{
    uint32_t inverse = odd;
    for (int step = 0; step < 4; step++)
        inverse *= 2 - odd * inverse;
    return inverse;
}

/* Bins: every small class caches PYM_CACHE_SLOTS blocks (at most 32 KiB);
 * a medium class PYM_CACHE_CLASS_BYTES worth, at least one block: what a
 * thread's cache may keep of a span when the thread goes quiet (its pages
 * stay resident; the rest of the span can be given back). */
static void pym_class_set(unsigned index, uint32_t block_size, size_t area)
{
    pym_class_t *cls = &pym_classes[index];
    cls->block_size = block_size;
    cls->capacity = (uint32_t)(area / block_size);
    cls->rotate = (uint32_t)__builtin_ctz(block_size);
    cls->odd_inverse = pym_odd_inverse(block_size >> cls->rotate);
    cls->max_quotient = UINT32_MAX / block_size;
    uint32_t cache_capacity = block_size <= PYM_SMALL_MAX ? PYM_CACHE_SLOTS : (uint32_t)(PYM_CACHE_CLASS_BYTES / block_size);
    cls->cache_capacity = cache_capacity > PYM_CACHE_SLOTS ? PYM_CACHE_SLOTS : cache_capacity ? cache_capacity : 1;
}

void pym_classes_init(unsigned alignment)
{
    for (unsigned i = 0; i < PYM_SMALL_CLASSES; i++)
        pym_class_set(i, (uint32_t)(PYM_ALIGNMENT * (i + 1)), PYM_POOL_SIZE - PYM_POOL_HEADER_SIZE);
    for (unsigned i = 0; i < PYM_MEDIUM_CLASSES; i++) {
        unsigned doubling = i / PYM_MEDIUM_STEPS, step = i % PYM_MEDIUM_STEPS;
        uint32_t block_size = (uint32_t)((PYM_MEDIUM_STEPS + 1 + step) * (PYM_SMALL_MAX / PYM_MEDIUM_STEPS))
                              << doubling;
        pym_class_set(PYM_SMALL_CLASSES + i, block_size, PYM_CHUNK_SIZE);
    }
    /* units = (size + 7) / 8; units 0 and 1 -> class 0. */
    for (unsigned units = 0; units <= PYM_SMALL_CLASSES; units++) {
        unsigned size_class = units == 0 ? 0 : units - 1;
        if (alignment == 16 && (units & 1 || units == 0))
            size_class++; /* 1..8 -> 16-byte class, 17..24 -> 32, 33..40 -> 48, ... */
        pym_small_class_of[units] = (uint8_t)size_class;
    }
    pym_pagemap_set_grid((uintptr_t)alignment);
}

/* The bin offsets of this library's static TLS block: the same in every
 * thread, so any thread may compute them. */
static pym_bin_offset_t pym_bin_offset(unsigned bin)
{
    return (pym_bin_offset_t)((char *)&pym_tls_bins[bin] - (char *)__builtin_thread_pointer());
}

void pym_bin_tables_init(void)
{
    pym_no_bin = pym_bin_offset(0);
    for (unsigned size_class = 0; size_class < PYM_CLASS_COUNT; size_class++)
        pym_class_bin[size_class] = pym_bin_offset(size_class + 1);
    for (size_t size = 0; size <= PYM_SIZE_TABLE_MAX; size++)
        pym_size_bin[size] = pym_class_bin[size <= PYM_SMALL_MAX
                                               ? pym_small_class_of[(size + PYM_ALIGNMENT - 1) / PYM_ALIGNMENT]
                                               : pym_medium_class_of(size)];
    for (size_t index = 0; index <= PYM_MEDIUM_MAX >> PYM_MEDIUM_TABLE_SHIFT; index++) {
        size_t size = index << PYM_MEDIUM_TABLE_SHIFT; /* the largest size of the index */
        pym_medium_bin[index] = size <= PYM_SIZE_TABLE_MAX ? pym_no_bin : pym_class_bin[pym_medium_class_of(size)];
    }
}

void pym_bin_tables_route(bool hooked)
{
    __atomic_store_n(&pym_size_bin_limit, hooked ? 0 : PYM_SIZE_TABLE_MAX + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&pym_medium_bin_limit, hooked ? 0 : PYM_MEDIUM_MAX + 1, __ATOMIC_RELEASE);
}

void pym_pool_init(pym_pool_t *pool, unsigned size_class, pym_heap_t *owner)
{
    const pym_class_t *cls = &pym_classes[size_class];
    pym_pool_info_t *info = pym_pool_info(pool);
    /* Debug mode reads a freed block's old header when the block is handed
     * out again (debug.c); a pool changing class would show it headers and
     * free-list links of the other layout, so its old contents go. */
    char *first = size_class < PYM_SMALL_CLASSES ? (char *)pool + PYM_POOL_HEADER_SIZE : (char *)pool->arena->base;
    if (PYM_UNLIKELY(pym_options.debug) && pool->size_class != size_class)
        memset(first, 0, (size_t)cls->capacity * cls->block_size);
    /* Under memcheck the blocks of the pool's previous life are marked
     * freed except their first word; the new layout links elsewhere. */
    if (PYM_UNLIKELY(pym_under_valgrind))
        pym_valgrind_reclaim(first, (size_t)cls->capacity * cls->block_size);
    pool->size_class = (uint8_t)size_class;
    pool->free = NULL;
    pool->used = 0;
    if (size_class >= PYM_SMALL_CLASSES) {
        memset(pool->arena->span_free, 0, sizeof(pool->arena->span_free));
        pool->arena->span_purged = 0;
    }
    info->odd_inverse = cls->odd_inverse;
    info->rotate = (uint8_t)cls->rotate;
    info->size_class = (uint8_t)size_class;
    __atomic_store_n(&info->carved, 0, __ATOMIC_RELAXED);
    pool->next = pool->prev = NULL;
    __atomic_store_n(&pool->state, PYM_POOL_USED, __ATOMIC_RELAXED);
    pym_pool_set_owner(pool, owner);
    pym_pool_set_pages(pool, pym_class_bin[size_class]);
}

/* ---- taking and giving back blocks ----------------------------------------- */
static unsigned pym_pool_carve(pym_pool_t *pool, void **out, unsigned want)
{
    const pym_class_t *cls = &pym_classes[pool->size_class];
    pym_pool_info_t *info = pym_pool_info(pool);
    uint32_t carved = info->carved;
    uint32_t carve = cls->capacity - carved;
    if (carve > want)
        carve = want;
    char *first = pym_pool_first_block(pool) + (size_t)carved * cls->block_size;
    for (uint32_t i = carve; i-- > 0;)
        out[carve - 1 - i] = first + (size_t)i * cls->block_size; /* highest first: the bin pops the lowest */
    __atomic_store_n(&info->carved, (uint16_t)(carved + carve), __ATOMIC_RELAXED);
    return carve;
}

/* The pages (bits of a 64-bit mask, one per 4 KiB of the span) that the
 * span's block `index` overlaps. */
static uint64_t pym_span_block_pages(uint32_t index, uint32_t block_size)
{
    size_t start = (size_t)index * block_size, end = start + block_size - 1;
    unsigned first = (unsigned)(start >> PYM_POOL_SHIFT), last = (unsigned)(end >> PYM_POOL_SHIFT);
    uint64_t upto_last = last >= 63 ? ~(uint64_t)0 : ((uint64_t)2 << last) - 1;
    return upto_last & ~(((uint64_t)1 << first) - 1);
}

static unsigned pym_span_take(pym_pool_t *span, void **out, unsigned want)
{
    pym_arena_t *arena = span->arena;
    uint32_t block_size = pym_classes[span->size_class].block_size;
    /* Free blocks (all below the carved bound), lowest first. */
    uint32_t free_index[PYM_CACHE_SLOTS];
    unsigned limit = want < PYM_CACHE_SLOTS ? want : PYM_CACHE_SLOTS, from_bitmap = 0;
    for (unsigned word = 0; word < PYM_SPAN_FREE_WORDS && from_bitmap < limit; word++) {
        uint64_t bits = arena->span_free[word];
        while (bits != 0 && from_bitmap < limit) {
            free_index[from_bitmap++] = word * 64 + (uint32_t)__builtin_ctzll(bits);
            bits &= bits - 1;
        }
        arena->span_free[word] = bits;
    }
    /* Never-used blocks above them, highest first, then the free blocks,
     * highest first: the bin pops the last, so the lowest goes out first. */
    uint32_t carved = pym_pool_info(span)->carved;
    unsigned carve = from_bitmap < want ? pym_pool_carve(span, out, want - from_bitmap) : 0;
    uint64_t touched = 0;
    for (unsigned i = 0; i < carve; i++)
        touched |= pym_span_block_pages(carved + i, block_size);
    for (unsigned i = 0; i < from_bitmap; i++) {
        uint32_t index = free_index[from_bitmap - 1 - i];
        out[carve + i] = (char *)arena->base + (size_t)index * block_size;
        touched |= pym_span_block_pages(index, block_size);
    }
    arena->span_purged &= ~touched; /* those pages are wanted again */
    return carve + from_bitmap;
}

unsigned pym_pool_take(pym_pool_t *pool, void **out, unsigned want)
{
    unsigned got;
    if (pool->size_class >= PYM_SMALL_CLASSES) {
        got = pym_span_take(pool, out, want);
    } else {
        /* The free list first (its order: most recently freed first), then
         * never-used blocks. */
        void *listed[PYM_CACHE_SLOTS];
        unsigned from_list = 0;
        pym_block_t *block = pool->free;
        /* The free list is a chain of dependent loads through blocks that
         * may have left the cache long ago (a heap of a million blocks): a
         * miss per block, one after the other.  When several blocks are to
         * be taken, ask for every line of the pool's carved part at once
         * instead: the misses overlap, and the walk then hits. */
        uint32_t carved = pym_pool_info(pool)->carved;
        if (block != NULL && want >= PYM_POOL_PREFETCH_MIN && carved - pool->used >= PYM_POOL_PREFETCH_MIN) {
            const char *line = (const char *)((uintptr_t)pym_pool_first_block(pool) & ~(uintptr_t)63);
            const char *end = pym_pool_first_block(pool) + (size_t)carved * pym_classes[pool->size_class].block_size;
            for (; line < end; line += 64)
                __builtin_prefetch(line, 1);
        }
        while (block != NULL && from_list < want && from_list < PYM_CACHE_SLOTS) {
            listed[from_list++] = block;
            block = block->next;
        }
        pool->free = block;
        unsigned carve = from_list < want ? pym_pool_carve(pool, out, want - from_list) : 0;
        /* The bin pops the last first: the listed blocks go on top. */
        for (unsigned i = 0; i < from_list; i++)
            out[carve + i] = listed[from_list - 1 - i];
        got = carve + from_list;
    }
    pool->used += got;
    return got;
}

uint32_t pym_pool_push_block(pym_pool_t *pool, pym_block_t *block)
{
    if (PYM_UNLIKELY(pool->used == 0))
        pym_double_free(block, pool->size_class);
    if (pool->size_class >= PYM_SMALL_CLASSES) {
        const pym_pool_info_t *info = pym_pool_info(pool);
        uint32_t index = pym_block_index((uint32_t)((uintptr_t)block - pool->arena->base), info->odd_inverse,
                                         info->rotate);
        uint64_t bit = (uint64_t)1 << (index % 64);
        if (PYM_UNLIKELY(pool->arena->span_free[index / 64] & bit))
            pym_double_free(block, pool->size_class);
        pool->arena->span_free[index / 64] |= bit;
        return --pool->used;
    }
    if (PYM_UNLIKELY(block == pool->free))
        pym_double_free(block, pool->size_class);
#ifdef PYM_DEBUG
    for (pym_block_t *scan = pool->free; scan != NULL; scan = scan->next)
        if (scan == block)
            pym_double_free(block, pool->size_class);
#endif
    block->next = pool->free;
    pool->free = block;
    return --pool->used;
}

size_t pym_span_decommit_free(pym_pool_t *span)
{
    pym_arena_t *arena = span->arena;
    const pym_class_t *cls = &pym_classes[span->size_class];
    uint32_t carved = pym_pool_info(span)->carved;
    uint64_t busy = 0;
    for (uint32_t index = 0; index < carved; index++)
        if (!(arena->span_free[index / 64] & ((uint64_t)1 << (index % 64))))
            busy |= pym_span_block_pages(index, cls->block_size);
    uint64_t purge = ~busy & ~arena->span_purged;
    size_t released = 0;
    while (purge != 0) {
        unsigned first = (unsigned)__builtin_ctzll(purge);
        uint64_t run = purge >> first;
        unsigned length = run == ~(uint64_t)0 ? 64 : (unsigned)__builtin_ctzll(~run);
        pym_os_decommit((void *)(arena->base + ((uintptr_t)first << PYM_POOL_SHIFT)), (size_t)length << PYM_POOL_SHIFT);
        released += (size_t)length << PYM_POOL_SHIFT;
        uint64_t run_mask = length == 64 ? ~(uint64_t)0 : (((uint64_t)1 << length) - 1) << first;
        purge &= ~run_mask;
        arena->span_purged |= run_mask;
    }
    return released;
}

void pym_pool_set_pages(const pym_pool_t *pool, pym_bin_offset_t bin)
{
    if (pool->arena->kind == PYM_CHUNK_MEDIUM)
        pym_pagemap_set(pool->arena->base, PYM_CHUNK_SIZE, bin);
    else
        pym_pagemap_set((uintptr_t)pool, PYM_POOL_SIZE, bin);
}

int pym_size_class(size_t size)
{
    pym_ensure_init();
    if (size <= PYM_SMALL_MAX)
        return pym_small_class_of[(size + PYM_ALIGNMENT - 1) / PYM_ALIGNMENT];
    if (size <= PYM_MEDIUM_MAX)
        return (int)pym_medium_class_of(size);
    return -1;
}

size_t pym_class_block_size(int size_class)
{
    pym_ensure_init();
    if (size_class < 0 || size_class >= PYM_CLASS_COUNT)
        return 0;
    return pym_classes[size_class].block_size;
}
