/*
 * meta.c -- memory for pymalloc's own descriptors: chunk descriptors and
 * large extent descriptors.  (Thread heaps, 50 KiB with their cache slots,
 * are mapped on their own by heap.c and never unmapped.)
 *
 * Descriptors never live in the pools they describe (an arena keeps all 64
 * pools for blocks), and must be available before anything else works, so
 * they come from regions of their own: 1 MiB mappings, 1 MiB aligned, cut
 * into 16 slabs of 64 KiB.  Slab 0 holds the region's header (only its first
 * page is ever touched); each other slab serves one descriptor size (in
 * 64-byte units), carved by a bump pointer, with a free list.  A descriptor
 * finds its slab by masking its address.  Which slots of a slab are in use
 * is a bitmap in the slab's header, not a list through the free slots: no
 * free descriptor's memory is needed, so every page of a slab that holds no
 * live descriptor can be given back, and allocation takes the lowest free
 * slot (live descriptors gather at the start of their slabs).
 *
 * A slab whose descriptors are all free returns to the pool of empty slabs
 * and can serve another size.  The scavenger gives back, with madvise, the
 * pages that held no live descriptor at two of its passes in a row
 * (pym_meta_decay): after a program has freed a heap of gigabytes, the
 * descriptors of its thousands of chunks do not stay resident, even where a
 * few of them still live.  Regions are never unmapped: a
 * reader holding a stale descriptor pointer (a free racing with a double
 * free, statistics) still reads mapped memory.
 */
#include <string.h>

#include "internal.h"

#define PYM_META_UNIT 64                  /* allocation granule and alignment */
#define PYM_META_BUCKETS 32               /* sizes up to 32 units (2 KiB) */
#define PYM_META_SLAB_SHIFT 16
#define PYM_META_SLAB_SIZE ((size_t)1 << PYM_META_SLAB_SHIFT) /* 64 KiB slabs */
#define PYM_META_REGION_SHIFT 20
#define PYM_META_REGION ((size_t)1 << PYM_META_REGION_SHIFT)   /* 1 MiB regions */
#define PYM_META_SLABS (PYM_META_REGION / PYM_META_SLAB_SIZE)  /* slab 0 is the header */

_Static_assert(sizeof(pym_arena_t) <= PYM_META_UNIT * PYM_META_BUCKETS, "a chunk descriptor must fit a bucket");

#define PYM_META_SLOTS_MAX (PYM_META_SLAB_SIZE / PYM_META_UNIT) /* 1024 one-unit slots */
#define PYM_META_SLAB_PAGES (PYM_META_SLAB_SIZE / PYM_POOL_SIZE) /* 16 */

typedef struct pym_meta_slab {
    struct pym_meta_slab *next;   /* in its bucket's list of slabs with room, or the empty list */
    struct pym_meta_slab *prev;
    uint64_t used[PYM_META_SLOTS_MAX / 64]; /* bit per slot handed out */
    uint32_t live;                /* slots handed out */
    uint16_t units;               /* descriptor size served (0: empty, in the empty list) */
    uint16_t slots;               /* slots of that size in the slab */
    uint16_t idle_pages;          /* pages without a live slot at the scavenger's previous pass */
    uint16_t purged;              /* pages given back and not touched since */
    uint8_t listed;               /* in its bucket's list */
} pym_meta_slab_t;

typedef struct pym_meta_region {
    pym_meta_slab_t slabs[PYM_META_SLABS]; /* [0] unused: it is this header's own slab */
} pym_meta_region_t;
_Static_assert(sizeof(pym_meta_region_t) <= 4096, "a region header is one page");

pthread_mutex_t pym_meta_lock = PTHREAD_MUTEX_INITIALIZER;
static pym_meta_slab_t *pym_meta_partial[PYM_META_BUCKETS + 1]; /* per size: slabs with room */
static pym_meta_slab_t *pym_meta_empty;                      /* slabs serving no size */

static char *pym_slab_base(const pym_meta_slab_t *slab)
{
    uintptr_t region = (uintptr_t)slab & ~(uintptr_t)(PYM_META_REGION - 1);
    size_t index = (size_t)(slab - ((pym_meta_region_t *)region)->slabs);
    return (char *)region + index * PYM_META_SLAB_SIZE;
}

static pym_meta_slab_t *pym_slab_of(const void *ptr)
{
    pym_meta_region_t *region = (pym_meta_region_t *)((uintptr_t)ptr & ~(uintptr_t)(PYM_META_REGION - 1));
    return &region->slabs[((uintptr_t)ptr >> PYM_META_SLAB_SHIFT) & (PYM_META_SLABS - 1)];
}

static void pym_slab_unlink(pym_meta_slab_t **head, pym_meta_slab_t *slab)
{
    if (slab->prev)
        slab->prev->next = slab->next;
    else
        *head = slab->next;
    if (slab->next)
        slab->next->prev = slab->prev;
    slab->next = slab->prev = NULL;
}

static void pym_slab_push(pym_meta_slab_t **head, pym_meta_slab_t *slab)
{
    slab->prev = NULL;
    slab->next = *head;
    if (slab->next)
        slab->next->prev = slab;
    *head = slab;
}

/* A slab for descriptors of `units`: an empty one, or one of a new region. */
static pym_meta_slab_t *pym_slab_fresh(unsigned units)
{
    pym_meta_slab_t *slab = pym_meta_empty;
    if (slab == NULL) {
        pym_meta_region_t *region = pym_os_map_aligned(PYM_META_REGION, PYM_META_REGION);
        if (region == NULL)
            return NULL;
        for (size_t i = PYM_META_SLABS - 1; i >= 1; i--) {
            region->slabs[i].purged = UINT16_MAX; /* never touched: nothing to give back */
            pym_slab_push(&pym_meta_empty, &region->slabs[i]);
        }
        slab = pym_meta_empty;
    }
    pym_slab_unlink(&pym_meta_empty, slab);
    slab->units = (uint16_t)units;
    slab->slots = (uint16_t)(PYM_META_SLAB_SIZE / (units * PYM_META_UNIT));
    slab->live = 0;
    slab->listed = 1;
    pym_slab_push(&pym_meta_partial[units], slab);
    return slab;
}

/* The pages (bits, one per 4 KiB of the slab) slot `slot` overlaps. */
static uint16_t pym_slot_pages(const pym_meta_slab_t *slab, unsigned slot)
{
    size_t start = (size_t)slot * slab->units * PYM_META_UNIT, end = start + slab->units * PYM_META_UNIT - 1;
    unsigned first = (unsigned)(start >> PYM_POOL_SHIFT), last = (unsigned)(end >> PYM_POOL_SHIFT);
    return (uint16_t)((((uint32_t)2 << last) - 1) & ~(((uint32_t)1 << first) - 1));
}

void *pym_meta_alloc(size_t size)
{
    size_t units = (size + PYM_META_UNIT - 1) / PYM_META_UNIT;
    if (units == 0 || units > PYM_META_BUCKETS)
        pym_fatal("pymalloc: metadata request of %zu bytes is out of range", size);
    size_t bytes = units * PYM_META_UNIT;
    void *result = NULL;
    pthread_mutex_lock(&pym_meta_lock);
    pym_meta_slab_t *slab = pym_meta_partial[units];
    if (slab == NULL)
        slab = pym_slab_fresh((unsigned)units);
    if (slab != NULL) {
        unsigned slot = 0;
        for (unsigned word = 0; word < PYM_META_SLOTS_MAX / 64; word++)
            if (~slab->used[word] != 0) {
                slot = word * 64 + (unsigned)__builtin_ctzll(~slab->used[word]);
                break;
            }
        slab->used[slot / 64] |= (uint64_t)1 << (slot % 64);
        uint16_t pages = pym_slot_pages(slab, slot);
        slab->purged &= (uint16_t)~pages; /* touched again */
        slab->idle_pages &= (uint16_t)~pages;
        result = pym_slab_base(slab) + (size_t)slot * bytes;
        if (++slab->live == slab->slots) { /* full: out of the list */
            pym_slab_unlink(&pym_meta_partial[units], slab);
            slab->listed = 0;
        }
    }
    pthread_mutex_unlock(&pym_meta_lock);
    if (result != NULL)
        memset(result, 0, bytes);
    return result;
}

void pym_meta_free(void *ptr, size_t size)
{
    size_t units = (size + PYM_META_UNIT - 1) / PYM_META_UNIT;
    pthread_mutex_lock(&pym_meta_lock);
    pym_meta_slab_t *slab = pym_slab_of(ptr);
    unsigned slot = (unsigned)(((uintptr_t)ptr & (PYM_META_SLAB_SIZE - 1)) / (units * PYM_META_UNIT));
    uint64_t bit = (uint64_t)1 << (slot % 64);
    if (PYM_UNLIKELY(slab->units != units || !(slab->used[slot / 64] & bit))) {
        pthread_mutex_unlock(&pym_meta_lock);
        pym_fatal("pymalloc: internal error: descriptor %p freed twice or into the wrong slab", ptr);
    }
    slab->used[slot / 64] &= ~bit;
    if (!slab->listed) {
        pym_slab_push(&pym_meta_partial[units], slab);
        slab->listed = 1;
    }
    if (--slab->live == 0) { /* empty: it may serve any size again */
        pym_slab_unlink(&pym_meta_partial[units], slab);
        slab->listed = 0;
        slab->units = 0;
        pym_slab_push(&pym_meta_empty, slab);
    }
    pthread_mutex_unlock(&pym_meta_lock);
}

/* Pages of a slab that hold no live slot. */
static uint16_t pym_slab_free_pages(const pym_meta_slab_t *slab)
{
    if (slab->live == 0)
        return UINT16_MAX;
    uint16_t busy = 0;
    for (unsigned slot = 0; slot < slab->slots; slot++)
        if (slab->used[slot / 64] & ((uint64_t)1 << (slot % 64)))
            busy |= pym_slot_pages(slab, slot);
    return (uint16_t)~busy;
}

/* Give back the pages free at this pass and the previous one. */
static size_t pym_slab_decay(pym_meta_slab_t *slab)
{
    uint16_t idle = pym_slab_free_pages(slab) & (uint16_t)~slab->purged;
    uint16_t purge = idle & slab->idle_pages;
    slab->idle_pages = idle & (uint16_t)~purge;
    size_t released = 0;
    char *base = pym_slab_base(slab);
    while (purge != 0) {
        unsigned first = (unsigned)__builtin_ctz(purge);
        unsigned length = (unsigned)__builtin_ctz((uint32_t)~((uint32_t)purge >> first));
        pym_os_decommit(base + ((size_t)first << PYM_POOL_SHIFT), (size_t)length << PYM_POOL_SHIFT);
        uint16_t run = (uint16_t)(((1u << length) - 1) << first);
        purge &= (uint16_t)~run;
        slab->purged |= run;
        released += (size_t)length << PYM_POOL_SHIFT;
    }
    return released;
}

size_t pym_meta_decay(void)
{
    size_t released = 0;
    pthread_mutex_lock(&pym_meta_lock);
    for (pym_meta_slab_t *slab = pym_meta_empty; slab != NULL; slab = slab->next)
        released += pym_slab_decay(slab);
    for (unsigned units = 1; units <= PYM_META_BUCKETS; units++)
        for (pym_meta_slab_t *slab = pym_meta_partial[units]; slab != NULL; slab = slab->next)
            released += pym_slab_decay(slab);
    pthread_mutex_unlock(&pym_meta_lock);
    return released;
}

bool pym_meta_has_idle_slabs(void)
{
    pthread_mutex_lock(&pym_meta_lock);
    bool idle = false;
    for (pym_meta_slab_t *slab = pym_meta_empty; slab != NULL && !idle; slab = slab->next)
        idle = slab->purged != UINT16_MAX;
    pthread_mutex_unlock(&pym_meta_lock);
    return idle;
}
