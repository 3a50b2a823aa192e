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
 * released: it stays mapped, pages and all, in the chunk cache for
 * PYMALLOC_DECAY_MS (1 s) -- up to PYMALLOC_ARENA_CACHE (1024) chunks --, so
 * a program that frees a heap full of objects and builds another right after
 * (a request, a batch, a benchmark repetition) faults nothing in again; the
 * newest cached chunk is reused first.  Chunks cached longer are unmapped
 * when a chunk is released and by the background scavenger (scavenge.c).
 * A cached chunk serves as an arena or a span, whatever it was before: a
 * pool header is read only while its pool is in use.  Free pools of a chunk
 * that stays in use keep their pages (like CPython) until the scavenger
 * finds them unused for the decay time, or pym_trim (malloc_trim) runs:
 * then runs of them go back with madvise(MADV_DONTNEED).
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
static pym_arena_t *pym_chunk_cache;                 /* empty chunks kept mapped, newest first (next/prev) */
static pym_arena_t *pym_chunk_cache_oldest;          /* its last entry */
static unsigned pym_chunk_cache_count;               /* length of pym_chunk_cache */
static bool pym_releasing_decayed;                   /* the pool being released has decayed already */
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
static void pym_chunk_cache_remove(pym_arena_t *arena)
{
    if (arena->prev)
        arena->prev->next = arena->next;
    else
        pym_chunk_cache = arena->next;
    if (arena->next)
        arena->next->prev = arena->prev;
    else
        pym_chunk_cache_oldest = arena->prev;
    arena->next = arena->prev = NULL;
    __atomic_store_n(&pym_chunk_cache_count, pym_chunk_cache_count - 1, __ATOMIC_RELAXED);
}

static pym_arena_t *pym_chunk_acquire(uint8_t kind)
{
    pym_arena_t *arena = pym_chunk_cache;
    bool reused = arena != NULL;
    if (reused) {
        /* The most recently cached chunk: its pages are the likeliest to be
         * resident.  Nothing reads a pool header of a pool not in use, so a
         * chunk that was a medium span serves as a small arena as it is. */
        pym_chunk_cache_remove(arena);
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
    uintptr_t base = arena->base; /* a cached chunk keeps its base */
    memset(arena, 0, sizeof(*arena));
    arena->base = base;
    arena->kind = kind;
    if (reused && kind == PYM_CHUNK_SMALL)
        arena->dirty_mask = ~(uint64_t)0; /* its pages may be resident: trim and decay may give them back */
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

/* Unmap the chunks cached for the decay time. */
static size_t pym_chunk_cache_decay(uint64_t now_ms)
{
    size_t released = 0;
    while (pym_chunk_cache_oldest != NULL && now_ms - pym_chunk_cache_oldest->cached_at_ms >= pym_options.decay_ms) {
        pym_arena_t *oldest = pym_chunk_cache_oldest;
        pym_chunk_cache_remove(oldest);
        pym_chunk_unmap(oldest);
        released += PYM_CHUNK_SIZE;
    }
    return released;
}

/* Give back the pages of the free pools in `purge` (a mask of pools of the
 * arena, all free), one madvise per run of neighbours. */
static size_t pym_arena_decommit_pools(pym_arena_t *arena, uint64_t purge)
{
    size_t released = 0;
    while (purge != 0) {
        unsigned first = (unsigned)__builtin_ctzll(purge);
        uint64_t run = purge >> first;
        unsigned length = run == ~(uint64_t)0 ? 64 : (unsigned)__builtin_ctzll(~run);
        pym_os_decommit((void *)(arena->base + (uintptr_t)first * PYM_POOL_SIZE), (size_t)length * PYM_POOL_SIZE);
        released += (size_t)length * PYM_POOL_SIZE;
        uint64_t run_mask = length == 64 ? ~(uint64_t)0 : (((uint64_t)1 << length) - 1) << first;
        purge &= ~run_mask;
        arena->dirty_mask &= ~run_mask;
        arena->aged_mask &= ~run_mask;
    }
    return released;
}

size_t pym_arena_decay_locked(uint64_t now_ms)
{
    size_t released = pym_chunk_cache_decay(now_ms);
    /* Free pools that may hold pages and were so at the previous pass too
     * (passes are half a decay time apart) go back; the others are marked
     * for the next pass. */
    for (pym_arena_t *arena = pym_all_chunks; arena != NULL; arena = arena->all_next) {
        if (arena->kind != PYM_CHUNK_SMALL)
            continue;
        uint64_t idle = arena->free_mask & arena->dirty_mask;
        released += pym_arena_decommit_pools(arena, idle & arena->aged_mask);
        arena->aged_mask = idle & ~arena->aged_mask;
    }
    return released + pym_pagemap_decay_locked();
}

size_t pym_arena_retained_estimate(void)
{
    return (size_t)__atomic_load_n(&pym_chunk_cache_count, __ATOMIC_RELAXED) * PYM_CHUNK_SIZE;
}

bool pym_arena_has_idle_pages_locked(void)
{
    if (pym_chunk_cache != NULL)
        return true;
    for (pym_arena_t *arena = pym_all_chunks; arena != NULL; arena = arena->all_next)
        if (arena->kind == PYM_CHUNK_SMALL && (arena->free_mask & arena->dirty_mask) != 0)
            return true;
    return false;
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
    /* Cached chunks unused for PYMALLOC_DECAY_MS go back first. */
    uint64_t now_ms = pym_os_now_ms();
    pym_chunk_cache_decay(now_ms);
    if (pym_chunk_cache_count < pym_options.arena_cache) {
        arena->cached_at_ms = pym_releasing_decayed ? 0 : now_ms; /* 0: unmapped at the next decay pass */
        arena->prev = NULL;
        arena->next = pym_chunk_cache;
        if (arena->next)
            arena->next->prev = arena;
        else
            pym_chunk_cache_oldest = arena;
        pym_chunk_cache = arena;
        __atomic_store_n(&pym_chunk_cache_count, pym_chunk_cache_count + 1, __ATOMIC_RELAXED); /* read racily */
        pym_scavenge_wake();
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
            arena->aged_mask &= ~((uint64_t)1 << index);
            arena->free_pools--;
            pym_pool_t *pool = (pym_pool_t *)(arena->base + (uintptr_t)index * PYM_POOL_SIZE);
            pool->arena = arena;
            pool->index = (uint8_t)index;
            pym_pool_set_owner(pool, NULL);
            __atomic_store_n(&pool->state, PYM_POOL_EMPTY, __ATOMIC_RELAXED);
            pool->size_class = UINT8_MAX; /* no class yet (the chunk may hold an old life's bytes) */
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

void pym_arena_release_decayed_pool_locked(pym_pool_t *pool)
{
    pym_releasing_decayed = true;
    pym_arena_release_pool_locked(pool);
    pym_releasing_decayed = false;
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
        pym_chunk_cache_remove(arena);
        pym_chunk_unmap(arena);
        released += PYM_CHUNK_SIZE;
    }
    /* Free pools of arenas in use: runs of pools that are free and may hold
     * pages go back with one madvise each. */
    for (pym_arena_t *arena = pym_all_chunks; arena != NULL; arena = arena->all_next)
        if (arena->kind == PYM_CHUNK_SMALL)
            released += pym_arena_decommit_pools(arena, arena->free_mask & arena->dirty_mask);
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
