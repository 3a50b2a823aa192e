/*
 * pagemap.c -- the page map: for every 4 KiB page, the thread-cache bin of
 * the blocks it holds (internal.h explains how free uses it).
 *
 * Two levels over the 48-bit address space: a static root of 2^16 leaf
 * pointers (512 KiB of BSS, only the few lines in use are ever touched) and
 * leaves of 2^20 four-byte entries, one leaf per 4 GiB.  A leaf is mapped
 * (4 MiB of address space, zero-filled by the kernel, pages faulted in only
 * where entries are written) when the first chunk in its range is mapped, by
 * pym_pagemap_prepare, so that setting entries later never fails; leaves are
 * never unmapped (a free may be reading one).  A page of a leaf describes
 * 4 MiB of address space; a bitmap after the leaf records which leaf pages
 * were written, and the scavenger gives back those whose 16 chunks hold no
 * pool any more (pym_pagemap_decay_locked): the map of a heap of gigabytes
 * that was freed does not stay resident either.
 *
 * Writers: the owner of a pool or span sets its pages when the pool starts
 * serving a class and clears them when it empties or is released.  Readers
 * take no lock: leaves are published with a release CAS, entries are
 * relaxed 32-bit stores and loads (a stale entry only sends a free to the
 * slow path, or, for a block that is not live -- a double free --, into a
 * bin where the proof made when it leaves the bin finds it).
 *
 * While allocation hooks are installed the block grid is all ones
 * (pym_pagemap_route), so every free reaches its slow path without a flag
 * test of its own on the fast path.
 */
#include "internal.h"

pym_bin_offset_t *pym_pagemap_root[PYM_PAGEMAP_ROOT_SIZE];
uintptr_t pym_block_grid = 15;
static uintptr_t pym_block_grid_unhooked = 15; /* the alignment mode's grid (pym_pagemap_set_grid) */

#define PYM_PAGEMAP_LEAF_BYTES (PYM_PAGEMAP_LEAF_SIZE * sizeof(pym_bin_offset_t))
#define PYM_PAGEMAP_LEAF_PAGES (PYM_PAGEMAP_LEAF_BYTES / PYM_POOL_SIZE) /* 1024 pages of entries per leaf */
#define PYM_PAGEMAP_WRITTEN_WORDS (PYM_PAGEMAP_LEAF_PAGES / 64)       /* bitmap of written leaf pages */
#define PYM_PAGEMAP_MAPPING (PYM_PAGEMAP_LEAF_BYTES + PYM_POOL_SIZE)    /* a leaf and its bitmap */
#define PYM_PAGEMAP_TRACKED 64 /* leaves whose pages the scavenger gives back (256 GiB of address space) */

static uintptr_t pym_pagemap_leaves[PYM_PAGEMAP_TRACKED]; /* root indices of the leaves made, in order */
static unsigned pym_pagemap_leaf_count;                   /* under the arena lock */

/* Bit per leaf page that entries were written to (atomic). */
static uint64_t *pym_pagemap_written(pym_bin_offset_t *leaf)
{
    return (uint64_t *)((char *)leaf + PYM_PAGEMAP_LEAF_BYTES);
}

bool pym_pagemap_prepare(uintptr_t base, size_t size)
{
    if (size == 0)
        return true;
    if ((base + size - 1) >> PYM_ADDRESS_BITS)
        return false;
    for (uintptr_t index = base >> PYM_PAGEMAP_LEAF_SHIFT; index <= (base + size - 1) >> PYM_PAGEMAP_LEAF_SHIFT;
         index++) {
        if (__atomic_load_n(&pym_pagemap_root[index], __ATOMIC_ACQUIRE) != NULL)
            continue;
        pym_bin_offset_t *fresh = pym_os_map(PYM_PAGEMAP_MAPPING);
        if (fresh == NULL)
            return false;
        pym_bin_offset_t *expected = NULL;
        if (!__atomic_compare_exchange_n(&pym_pagemap_root[index], &expected, fresh, false, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE)) {
            pym_os_unmap(fresh, PYM_PAGEMAP_MAPPING); /* another thread made it first */
            continue;
        }
        if (pym_pagemap_leaf_count < PYM_PAGEMAP_TRACKED) /* callers hold the arena lock */
            pym_pagemap_leaves[pym_pagemap_leaf_count++] = index;
    }
    return true;
}

void pym_pagemap_set(uintptr_t base, size_t size, pym_bin_offset_t bin)
{
    for (uintptr_t page = base; page < base + size; page += PYM_POOL_SIZE) {
        pym_bin_offset_t *leaf = __atomic_load_n(&pym_pagemap_root[page >> PYM_PAGEMAP_LEAF_SHIFT], __ATOMIC_ACQUIRE);
        if (PYM_UNLIKELY(leaf == NULL))
            pym_fatal("pymalloc: page map leaf of %p missing (not prepared)", (void *)page);
        uint32_t entry = (uint32_t)page >> PYM_POOL_SHIFT;
        __atomic_store_n(&leaf[entry], bin, __ATOMIC_RELAXED);
        if (bin != 0) {
            uint32_t leaf_page = entry / (PYM_POOL_SIZE / sizeof(pym_bin_offset_t));
            uint64_t *word = &pym_pagemap_written(leaf)[leaf_page / 64], bit = (uint64_t)1 << (leaf_page % 64);
            if (!(__atomic_load_n(word, __ATOMIC_RELAXED) & bit))
                __atomic_fetch_or(word, bit, __ATOMIC_RELAXED);
        }
    }
}

size_t pym_pagemap_decay_locked(void)
{
    size_t released = 0;
    const uintptr_t span = (uintptr_t)(PYM_POOL_SIZE / sizeof(pym_bin_offset_t)) << PYM_POOL_SHIFT; /* 4 MiB */
    for (unsigned i = 0; i < pym_pagemap_leaf_count; i++) {
        uintptr_t index = pym_pagemap_leaves[i];
        pym_bin_offset_t *leaf = __atomic_load_n(&pym_pagemap_root[index], __ATOMIC_ACQUIRE);
        uint64_t *written = pym_pagemap_written(leaf);
        for (unsigned word = 0; word < PYM_PAGEMAP_WRITTEN_WORDS; word++) {
            uint64_t bits = __atomic_load_n(&written[word], __ATOMIC_RELAXED);
            while (bits != 0) {
                unsigned leaf_page = word * 64 + (unsigned)__builtin_ctzll(bits);
                bits &= bits - 1;
                /* Under the arena lock no chunk can become a pool's: if none of
                 * the 16 chunks this page describes is one now, its entries
                 * are all 0 and stay so until a chunk is acquired. */
                uintptr_t base = (index << PYM_PAGEMAP_LEAF_SHIFT) + (uintptr_t)leaf_page * span;
                bool in_use = false;
                for (uintptr_t chunk = base; chunk < base + span && !in_use; chunk += PYM_CHUNK_SIZE)
                    in_use = (pym_chunkmap_lookup(chunk) & (PYM_CHUNK_SMALL | PYM_CHUNK_MEDIUM)) != 0;
                if (in_use)
                    continue;
                pym_os_decommit((char *)leaf + (size_t)leaf_page * PYM_POOL_SIZE, PYM_POOL_SIZE);
                __atomic_fetch_and(&written[word], ~((uint64_t)1 << (leaf_page % 64)), __ATOMIC_RELAXED);
                released += PYM_POOL_SIZE;
            }
        }
    }
    return released;
}

void pym_pagemap_set_grid(uintptr_t alignment)
{
    pym_block_grid_unhooked = alignment - 1;
    __atomic_store_n(&pym_block_grid, alignment - 1, __ATOMIC_RELAXED);
}

void pym_pagemap_route(bool hooked)
{
    __atomic_store_n(&pym_block_grid, hooked ? ~(uintptr_t)0 : pym_block_grid_unhooked, __ATOMIC_RELEASE);
}
