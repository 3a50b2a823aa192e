/*
 * chunkmap.c -- the chunk map: which 256 KiB chunks of the address space are
 * pymalloc's, and what each one is.
 *
 * A two-level radix table indexed by address >> 18 covers the 48-bit user
 * address space: a static root of 2^15 leaf pointers (256 KiB of BSS, only
 * touched where used) and leaves of 2^15 entries (256 KiB each, mapped on
 * first use, never freed).  An entry is the address of the chunk's
 * descriptor with the chunk kind in its two low bits.
 *
 * Readers (free, realloc, usable_size) take no lock: leaves are published
 * with a release CAS and entries with release stores.  Writers set or clear
 * only ranges they own (a new arena, a large mapping), so two writers never
 * touch the same entry; the CAS settles two writers creating the same leaf.
 */
#include "internal.h"

pym_chunkmap_leaf_t *pym_chunkmap_root[PYM_CHUNKMAP_ROOT_SIZE];

static pym_chunkmap_leaf_t *pym_chunkmap_leaf_for(uintptr_t chunk_index)
{
    pym_chunkmap_leaf_t **slot = &pym_chunkmap_root[chunk_index >> PYM_CHUNKMAP_LEAF_BITS];
    pym_chunkmap_leaf_t *leaf = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (leaf != NULL)
        return leaf;
    pym_chunkmap_leaf_t *fresh = pym_os_map(sizeof(pym_chunkmap_leaf_t));
    if (fresh == NULL)
        return NULL;
    pym_chunkmap_leaf_t *expected = NULL;
    if (__atomic_compare_exchange_n(slot, &expected, fresh, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return fresh;
    pym_os_unmap(fresh, sizeof(pym_chunkmap_leaf_t));
    return expected;
}

bool pym_chunkmap_set(uintptr_t base, size_t size, uintptr_t entry)
{
    PYM_ASSERT((base & (PYM_CHUNK_SIZE - 1)) == 0);
    uintptr_t first = base >> PYM_CHUNK_SHIFT;
    uintptr_t last = (base + size - 1) >> PYM_CHUNK_SHIFT;
    if ((base + size - 1) >> PYM_ADDRESS_BITS)
        return false; /* beyond the 48-bit space the map covers */
    for (uintptr_t index = first; index <= last; index++) {
        pym_chunkmap_leaf_t *leaf = pym_chunkmap_leaf_for(index);
        if (leaf == NULL) {
            if (index > first)
                pym_chunkmap_clear(base, (index - first) << PYM_CHUNK_SHIFT);
            return false;
        }
        __atomic_store_n(&leaf->entries[index & (PYM_CHUNKMAP_LEAF_SIZE - 1)], entry, __ATOMIC_RELEASE);
    }
    return true;
}

bool pym_chunkmap_prepare(uintptr_t base, size_t size)
{
    if ((base + size - 1) >> PYM_ADDRESS_BITS)
        return false;
    uintptr_t first_leaf = base >> (PYM_CHUNK_SHIFT + PYM_CHUNKMAP_LEAF_BITS);
    uintptr_t last_leaf = (base + size - 1) >> (PYM_CHUNK_SHIFT + PYM_CHUNKMAP_LEAF_BITS);
    for (uintptr_t leaf = first_leaf; leaf <= last_leaf; leaf++)
        if (pym_chunkmap_leaf_for(leaf << PYM_CHUNKMAP_LEAF_BITS) == NULL)
            return false;
    return true;
}

void pym_chunkmap_clear(uintptr_t base, size_t size)
{
    uintptr_t first = base >> PYM_CHUNK_SHIFT;
    uintptr_t last = (base + size - 1) >> PYM_CHUNK_SHIFT;
    for (uintptr_t index = first; index <= last; index++) {
        pym_chunkmap_leaf_t *leaf = __atomic_load_n(&pym_chunkmap_root[index >> PYM_CHUNKMAP_LEAF_BITS],
                                                    __ATOMIC_ACQUIRE);
        if (leaf != NULL)
            __atomic_store_n(&leaf->entries[index & (PYM_CHUNKMAP_LEAF_SIZE - 1)], 0, __ATOMIC_RELEASE);
    }
}

void pym_chunkmap_clear_if(uintptr_t base, size_t size, uintptr_t entry)
{
    for (uintptr_t chunk = base; chunk < base + size; chunk += PYM_CHUNK_SIZE) {
        pym_chunkmap_leaf_t *leaf = __atomic_load_n(
            &pym_chunkmap_root[chunk >> (PYM_CHUNK_SHIFT + PYM_CHUNKMAP_LEAF_BITS)], __ATOMIC_ACQUIRE);
        if (leaf == NULL)
            continue;
        uintptr_t expected = entry;
        __atomic_compare_exchange_n(&leaf->entries[(chunk >> PYM_CHUNK_SHIFT) & (PYM_CHUNKMAP_LEAF_SIZE - 1)],
                                    &expected, 0, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    }
}
