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

static void pym_class_set(unsigned index, uint32_t block_size, size_t area)
{
    pym_class_t *cls = &pym_classes[index];
    cls->block_size = block_size;
    cls->capacity = (uint32_t)(area / block_size);
    cls->rotate = (uint32_t)__builtin_ctz(block_size);
    cls->odd_inverse = pym_odd_inverse(block_size >> cls->rotate);
    cls->max_quotient = UINT32_MAX / block_size;
    uint32_t cache_capacity = (uint32_t)(PYM_CACHE_CLASS_BYTES / block_size);
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
    __atomic_store_n(&pym_block_grid, (uintptr_t)alignment - 1, __ATOMIC_RELAXED);
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
    info->odd_inverse = cls->odd_inverse;
    info->rotate = (uint8_t)cls->rotate;
    info->size_class = (uint8_t)size_class;
    __atomic_store_n(&info->carved, 0, __ATOMIC_RELAXED);
    pool->next = pool->prev = NULL;
    __atomic_store_n(&pool->state, PYM_POOL_USED, __ATOMIC_RELAXED);
    pym_pool_set_owner(pool, owner);
    pym_pool_set_pages(pool, pym_class_bin[size_class]);
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
