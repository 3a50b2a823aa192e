/*
 * arena.c -- chunks, small arenas, medium spans and abandoned pools: the
 * shared state behind pym_arena_lock.
 *
 * A chunk is 256 KiB of address space, aligned to 256 KiB, mapped with
 * pym_os_map_aligned and described by a pym_arena_t kept out of line.  It is
 * either a small arena (64 pools of 4 KiB) or a medium span (one class).
 *
 * Small arenas hand out pools to thread heaps in batches.  As in CPython,
 * new pools come from the most used arenas first, so that lightly used
 * arenas can drain completely and go back to the OS: arenas with free pools
 * sit in buckets by their number of free pools (1..64), and a bitmap of
 * non-empty buckets finds the fullest usable arena with one count-trailing-
 * zeros.  An arena records which of its pools are free in a 64-bit mask, so
 * never-used and returned pools are handed out the same way, lowest address
 * first.
 *
 * A chunk whose last pool comes back (or a medium span that empties) is
 * released: up to PYMALLOC_ARENA_CACHE (4) empty chunks stay mapped (for at
 * most PYMALLOC_DECAY_MS, checked whenever a chunk is released), so a program
 * allocating and freeing around an arena boundary does not map and unmap in
 * a loop; beyond that the chunk is unmapped.  Pools of a chunk that stays in
 * use keep their pages (like CPython) until pym_trim (malloc_trim) gives the
 * pages of its free pools back with madvise.
 *
 * Abandoned pools: when a thread exits, each of its pools that still holds
 * live blocks loses its owner and waits here, in a list per class.  A thread
 * that needs a pool of that class adopts it before taking a fresh one, and a
 * thread that frees a block into it adopts it on the spot (heap.c).
 */
#include <string.h>

#include "internal.h"

pthread_mutex_t pym_arena_lock = PTHREAD_MUTEX_INITIALIZER;

static pym_arena_t *pym_usable_buckets[PYM_POOLS_PER_ARENA]; /* [n - 1]: small arenas with n free pools */
static uint64_t pym_usable_mask;                     /* bit n - 1 set when bucket n - 1 is non-empty */
static pym_arena_t *pym_chunk_cache;                 /* empty chunks kept mapped (linked by next) */
static unsigned pym_chunk_cache_count;               /* length of pym_chunk_cache */
static pym_arena_t *pym_all_chunks;                  /* every chunk in use (all_next) */
static pym_pool_t *pym_abandoned[PYM_CLASS_COUNT];   /* per class: pools whose thread exited */
static size_t pym_chunks_now, pym_chunks_total, pym_chunks_returned, pym_chunks_peak;

/* ---- usable-arena buckets ------------------------------------------------ */
static void pym_bucket_insert(pym_arena_t *arena)
{
    unsigned bucket = arena->free_pools - 1;
    arena->prev = NULL;
    arena->next = pym_usable_buckets[bucket];
    if (arena->next)
        arena->next->prev = arena;
    pym_usable_buckets[bucket] = arena;
    pym_usable_mask |= (uint64_t)1 << bucket;
}

static void pym_bucket_remove(pym_arena_t *arena)
{
    unsigned bucket = arena->free_pools - 1;
    if (arena->prev)
        arena->prev->next = arena->next;
    else
        pym_usable_buckets[bucket] = arena->next;
    if (arena->next)
        arena->next->prev = arena->prev;
    if (pym_usable_buckets[bucket] == NULL)
        pym_usable_mask &= ~((uint64_t)1 << bucket);
    arena->next = arena->prev = NULL;
}

/* ---- chunks -------------------------------------------------------------- */
static pym_arena_t *pym_chunk_acquire(uint8_t kind)
{
    pym_arena_t *arena = pym_chunk_cache;
    if (arena != NULL) {
        pym_chunk_cache = arena->next;
        pym_chunk_cache_count--;
        /* A small arena finds pool headers at every 4 KiB boundary; after a
         * medium span those bytes are old user data, so the pages go back to
         * the kernel and return as zeros (= unused pool headers). */
        if (kind == PYM_CHUNK_SMALL && arena->kind != PYM_CHUNK_SMALL)
            pym_os_decommit((void *)arena->base, PYM_CHUNK_SIZE);
        if (PYM_UNLIKELY(pym_under_valgrind))
            pym_valgrind_reclaim((void *)arena->base, PYM_CHUNK_SIZE);
    } else {
        void *base = pym_os_map_aligned(PYM_CHUNK_SIZE, PYM_CHUNK_SIZE);
        if (base == NULL)
            return NULL;
        arena = pym_meta_alloc(sizeof(pym_arena_t));
        if (arena == NULL) {
            pym_os_unmap(base, PYM_CHUNK_SIZE);
            return NULL;
        }
        arena->base = (uintptr_t)base;
        pym_chunks_total++;
    }
    uintptr_t base = arena->base; /* a cached chunk keeps base and kind */
    memset(arena, 0, sizeof(*arena));
    arena->base = base;
    arena->kind = kind;
    if (!pym_pagemap_prepare(base, PYM_CHUNK_SIZE) || !pym_chunkmap_set(base, PYM_CHUNK_SIZE, (uintptr_t)arena | kind)) {
        pym_os_unmap((void *)base, PYM_CHUNK_SIZE);
        pym_meta_free(arena, sizeof(pym_arena_t));
        pym_chunks_returned++;
        return NULL;
    }
    arena->all_next = pym_all_chunks;
    if (pym_all_chunks)
        pym_all_chunks->all_prev = arena;
    pym_all_chunks = arena;
    if (++pym_chunks_now > pym_chunks_peak)
        pym_chunks_peak = pym_chunks_now;
    return arena;
}

static void pym_chunk_unmap(pym_arena_t *arena)
{
    pym_os_unmap((void *)arena->base, PYM_CHUNK_SIZE);
    pym_meta_free(arena, sizeof(pym_arena_t));
    pym_chunks_returned++;
}

static void pym_chunk_release(pym_arena_t *arena)
{
    pym_chunkmap_clear(arena->base, PYM_CHUNK_SIZE);
    if (arena->all_prev)
        arena->all_prev->all_next = arena->all_next;
    else
        pym_all_chunks = arena->all_next;
    if (arena->all_next)
        arena->all_next->all_prev = arena->all_prev;
    pym_chunks_now--;
    /* Cached chunks unused for PYMALLOC_DECAY_MS go back first (the cache
     * is newest first, so they are at its end). */
    uint64_t now_ms = pym_os_now_ms();
    for (pym_arena_t **link = &pym_chunk_cache; *link != NULL;) {
        pym_arena_t *cached = *link;
        if (now_ms - cached->cached_at_ms < pym_options.decay_ms) {
            link = &cached->next;
            continue;
        }
        *link = cached->next;
        pym_chunk_cache_count--;
        pym_chunk_unmap(cached);
    }
    if (pym_chunk_cache_count < pym_options.arena_cache) {
        arena->cached_at_ms = now_ms;
        arena->next = pym_chunk_cache;
        pym_chunk_cache = arena;
        pym_chunk_cache_count++;
        return;
    }
    pym_chunk_unmap(arena);
}

/* ---- small pools ----------------------------------------------------------- */
pym_pool_t *pym_arena_take_pools_locked(unsigned want, unsigned *got)
{
    pym_pool_t *list = NULL, **tail = &list;
    *got = 0;
    while (*got < want) {
        pym_arena_t *arena;
        if (pym_usable_mask != 0) {
            arena = pym_usable_buckets[__builtin_ctzll(pym_usable_mask)];
            pym_bucket_remove(arena);
        } else {
            arena = pym_chunk_acquire(PYM_CHUNK_SMALL);
            if (arena == NULL)
                break;
            arena->free_mask = ~(uint64_t)0;
            arena->free_pools = PYM_POOLS_PER_ARENA;
        }
        while (arena->free_pools > 0 && *got < want) {
            unsigned index = (unsigned)__builtin_ctzll(arena->free_mask);
            arena->free_mask &= arena->free_mask - 1;
            arena->dirty_mask &= ~((uint64_t)1 << index); /* in use again: its pages are wanted */
            arena->free_pools--;
            pym_pool_t *pool = (pym_pool_t *)(arena->base + (uintptr_t)index * PYM_POOL_SIZE);
            pool->arena = arena;
            pool->index = (uint8_t)index;
            pym_pool_set_owner(pool, NULL);
            __atomic_store_n(&pool->state, PYM_POOL_EMPTY, __ATOMIC_RELAXED);
            pool->next = NULL;
            *tail = pool;
            tail = &pool->next;
            (*got)++;
        }
        if (arena->free_pools > 0)
            pym_bucket_insert(arena);
    }
    return list;
}

pym_pool_t *pym_arena_take_span_locked(unsigned size_class)
{
    pym_arena_t *arena = pym_chunk_acquire(PYM_CHUNK_MEDIUM);
    if (arena == NULL)
        return NULL;
    pym_pool_t *span = &arena->span;
    span->arena = arena;
    span->index = 0;
    pym_pool_init(span, size_class, NULL);
    return span;
}

void pym_arena_release_pool_locked(pym_pool_t *pool)
{
    pym_arena_t *arena = pool->arena;
    pym_pool_set_pages(pool, 0);
    pym_pool_set_owner(pool, NULL);
    __atomic_store_n(&pool->state, PYM_POOL_UNUSED, __ATOMIC_RELAXED);
    __atomic_store_n(&pym_pool_info(pool)->carved, 0, __ATOMIC_RELAXED); /* frees into it now fail validation */
    if (arena->kind == PYM_CHUNK_MEDIUM) {
        pym_chunk_release(arena);
        return;
    }
    if (arena->free_pools > 0)
        pym_bucket_remove(arena);
    arena->free_mask |= (uint64_t)1 << pool->index;
    arena->dirty_mask |= (uint64_t)1 << pool->index;
    arena->free_pools++;
    if (arena->free_pools == PYM_POOLS_PER_ARENA)
        pym_chunk_release(arena);
    else
        pym_bucket_insert(arena);
}

/* ---- abandoned pools --------------------------------------------------------- */
void pym_arena_abandon_pool_locked(pym_pool_t *pool)
{
    unsigned size_class = pool->size_class;
    pym_pool_set_owner(pool, NULL);
    __atomic_store_n(&pool->state, PYM_POOL_ABANDONED, __ATOMIC_RELAXED);
    pool->prev = NULL;
    pool->next = pym_abandoned[size_class];
    if (pool->next)
        pool->next->prev = pool;
    pym_abandoned[size_class] = pool;
}

void pym_arena_unlink_abandoned_locked(pym_pool_t *pool)
{
    if (pool->prev)
        pool->prev->next = pool->next;
    else
        pym_abandoned[pool->size_class] = pool->next;
    if (pool->next)
        pool->next->prev = pool->prev;
    pool->next = pool->prev = NULL;
}

pym_pool_t *pym_arena_adopt_pool_locked(unsigned size_class)
{
    pym_pool_t *pool = pym_abandoned[size_class];
    if (pool != NULL)
        pym_arena_unlink_abandoned_locked(pool);
    return pool;
}

/* ---- giving memory back ------------------------------------------------------- */
size_t pym_arena_trim_locked(void)
{
    size_t released = 0;
    while (pym_chunk_cache != NULL) {
        pym_arena_t *arena = pym_chunk_cache;
        pym_chunk_cache = arena->next;
        pym_chunk_cache_count--;
        pym_chunk_unmap(arena);
        released += PYM_CHUNK_SIZE;
    }
    /* Free pools of arenas in use: runs of pools that are free and may hold
     * pages go back with one madvise each; they read as zeros (unused pool
     * headers) when handed out again. */
    for (pym_arena_t *arena = pym_all_chunks; arena != NULL; arena = arena->all_next) {
        if (arena->kind != PYM_CHUNK_SMALL)
            continue;
        uint64_t purge = arena->free_mask & arena->dirty_mask;
        while (purge != 0) {
            unsigned first = (unsigned)__builtin_ctzll(purge);
            uint64_t run = purge >> first;
            unsigned length = run == ~(uint64_t)0 ? 64 : (unsigned)__builtin_ctzll(~run);
            pym_os_decommit((void *)(arena->base + (uintptr_t)first * PYM_POOL_SIZE), (size_t)length * PYM_POOL_SIZE);
            released += (size_t)length * PYM_POOL_SIZE;
            uint64_t run_mask = length == 64 ? ~(uint64_t)0 : (((uint64_t)1 << length) - 1) << first;
            purge &= ~run_mask;
            arena->dirty_mask &= ~run_mask;
        }
    }
    return released;
}

/* ---- statistics and fork ------------------------------------------------------ */
pym_arena_t *pym_arena_first_locked(void)
{
    return pym_all_chunks;
}

void pym_arena_counters_locked(pym_stats_t *out)
{
    out->arenas_now = pym_chunks_now;
    out->arenas_total = pym_chunks_total;
    out->arenas_returned = pym_chunks_returned;
    out->arenas_cached = pym_chunk_cache_count;
    out->arenas_peak = pym_chunks_peak;
}
