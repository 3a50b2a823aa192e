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
 * never unmapped (a free may be reading one).
 *
 * Writers: the owner of a pool or span sets its pages when the pool starts
 * serving a class and clears them when it empties or is released.  Readers
 * take no lock: leaves are published with a release CAS, entries are
 * relaxed 32-bit stores and loads (a stale entry only sends a free to the
 * slow path, or, for a block that is not live -- a double free --, into a
 * bin where the proof made when it leaves the bin finds it).
 *
 * While allocation hooks are installed free reads an all-NULL root instead
 * (pym_pagemap_view), so every free reaches its slow path without a flag
 * test on the fast path.
 */
#include "internal.h"

static pym_bin_offset_t *pym_pagemap_root[PYM_PAGEMAP_ROOT_SIZE];
static pym_bin_offset_t *pym_pagemap_hooked_root[PYM_PAGEMAP_ROOT_SIZE]; /* always NULL */
pym_bin_offset_t **pym_pagemap_view = pym_pagemap_root;
uintptr_t pym_block_grid = 15;

#define PYM_PAGEMAP_LEAF_BYTES (PYM_PAGEMAP_LEAF_SIZE * sizeof(pym_bin_offset_t))

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
        pym_bin_offset_t *fresh = pym_os_map(PYM_PAGEMAP_LEAF_BYTES);
        if (fresh == NULL)
            return false;
        pym_bin_offset_t *expected = NULL;
        if (!__atomic_compare_exchange_n(&pym_pagemap_root[index], &expected, fresh, false, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            pym_os_unmap(fresh, PYM_PAGEMAP_LEAF_BYTES); /* another thread made it first */
    }
    return true;
}

void pym_pagemap_set(uintptr_t base, size_t size, pym_bin_offset_t bin)
{
    for (uintptr_t page = base; page < base + size; page += PYM_POOL_SIZE) {
        pym_bin_offset_t *leaf = __atomic_load_n(&pym_pagemap_root[page >> PYM_PAGEMAP_LEAF_SHIFT], __ATOMIC_ACQUIRE);
        if (PYM_UNLIKELY(leaf == NULL))
            pym_fatal("pymalloc: page map leaf of %p missing (not prepared)", (void *)page);
        __atomic_store_n(&leaf[(uint32_t)page >> PYM_POOL_SHIFT], bin, __ATOMIC_RELAXED);
    }
}

void pym_pagemap_route(bool hooked)
{
    __atomic_store_n(&pym_pagemap_view, hooked ? pym_pagemap_hooked_root : pym_pagemap_root, __ATOMIC_RELEASE);
}
