/*
 * meta.c -- memory for pymalloc's own descriptors: chunk descriptors and
 * large mapping descriptors.  (Thread heaps, 50 KiB with their caches, are
 * mapped on their own by heap.c and, like these, never unmapped.)
 *
 * Descriptors never live in the pools they describe (an arena keeps all 64
 * pools for blocks), and must be available before anything else works, so
 * they come from their own regions: 256 KiB mappings carved by a bump
 * pointer in 64-byte units, with one free list per size.  Pages are touched
 * only when carved.  Regions are never unmapped: descriptors are few and
 * reused, and a heap must stay readable after its thread exits (a late remote
 * free may still push onto it).
 */
#include <string.h>

#include "internal.h"

#define PYM_META_UNIT 64           /* allocation granule and alignment */
#define PYM_META_BUCKETS 32        /* sizes up to 32 units (2 KiB) */

pthread_mutex_t pym_meta_lock = PTHREAD_MUTEX_INITIALIZER;
static char *pym_meta_bump;        /* next free byte of the current region */
static char *pym_meta_end;         /* end of the current region */
static void *pym_meta_free_lists[PYM_META_BUCKETS + 1]; /* per size in units: freed descriptors */

_Static_assert(sizeof(pym_arena_t) <= PYM_META_UNIT * PYM_META_BUCKETS, "a chunk descriptor must fit a bucket");

void *pym_meta_alloc(size_t size)
{
    size_t units = (size + PYM_META_UNIT - 1) / PYM_META_UNIT;
    if (units == 0 || units > PYM_META_BUCKETS)
        pym_fatal("pymalloc: metadata request of %zu bytes is out of range", size);
    void *result = NULL;
    pthread_mutex_lock(&pym_meta_lock);
    if (pym_meta_free_lists[units] != NULL) {
        result = pym_meta_free_lists[units];
        pym_meta_free_lists[units] = *(void **)result;
    } else {
        size_t bytes = units * PYM_META_UNIT;
        if (pym_meta_bump == NULL || (size_t)(pym_meta_end - pym_meta_bump) < bytes) {
            char *region = pym_os_map(PYM_META_REGION_SIZE);
            if (region != NULL) {
                pym_meta_bump = region;
                pym_meta_end = region + PYM_META_REGION_SIZE;
            }
        }
        if (pym_meta_bump != NULL && (size_t)(pym_meta_end - pym_meta_bump) >= bytes) {
            result = pym_meta_bump;
            pym_meta_bump += bytes;
        }
    }
    pthread_mutex_unlock(&pym_meta_lock);
    if (result != NULL)
        memset(result, 0, units * PYM_META_UNIT);
    return result;
}

void pym_meta_free(void *ptr, size_t size)
{
    size_t units = (size + PYM_META_UNIT - 1) / PYM_META_UNIT;
    pthread_mutex_lock(&pym_meta_lock);
    *(void **)ptr = pym_meta_free_lists[units];
    pym_meta_free_lists[units] = ptr;
    pthread_mutex_unlock(&pym_meta_lock);
}
