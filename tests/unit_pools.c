/*
 * unit_pools.c -- pools, thread heaps and arenas (pool.c, heap.c, arena.c),
 * observed through pym_stats_get() and the pool headers themselves.
 *
 * Covers:
 *   - the thread heap: pym_tls_heap is the start-up placeholder until the
 *     first malloc and a live heap owning its pools afterwards;
 *   - N blocks of one class occupy ceil(N / capacity) pools (small) or spans
 *     (medium) with blocks_used == N, full_pools == N / capacity, and every
 *     block's pool header (at ptr & ~4095, or the span descriptor) names the
 *     right class, arena, index and owner; freeing them all leaves at most
 *     one pool of the class and at most 16 empty pools in the heap's cache;
 *   - a pool that runs out of blocks moves to PYM_POOL_FULL (in no list)
 *     and back to PYM_POOL_USED, at the head of its class list, on
 *     its first free; the freed block is the next one handed out;
 *   - new pools come from the most used arena: with a lightly used arena and
 *     a heavily used one both holding free pools, fresh pools are taken from
 *     the heavily used one;
 *   - arena life: 20 MB of 64-byte blocks map some 80 arenas; after freeing
 *     them arenas_now falls back, at most 4 arenas stay cached and the rest
 *     are returned to the OS (arenas_returned grows).
 * Links the core statically (malloc here is glibc's; pymalloc is pym_*).
 * Runs with the thread cache off (PYMALLOC_THREAD_CACHE=0), so every
 * malloc and free reaches the pools and their state can be asserted block
 * by block; unit_cache covers the cache in front of them.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "check.h"

#define CHUNK ((uintptr_t)PYM_CHUNK_SIZE)

static pym_stats_t stats_now(void)
{
    pym_stats_t stats;
    pym_stats_get(&stats);
    return stats;
}

/* The pool header of a block, small or medium (NULL for anything else). */
static pym_pool_t *pool_of(const void *block)
{
    uintptr_t entry = pym_chunkmap_lookup((uintptr_t)block);
    if (!(entry & (PYM_CHUNK_SMALL | PYM_CHUNK_MEDIUM)))
        return NULL;
    return pym_pool_of((uintptr_t)block, entry);
}

static bool pool_in_list(pym_pool_t *head, pym_pool_t *wanted)
{
    for (pym_pool_t *pool = head; pool != NULL && pool != &pym_empty_pool; pool = pool->next)
        if (pool == wanted)
            return true;
    return false;
}

static size_t count_distinct_pools(void **blocks, size_t count)
{
    size_t distinct = 0;
    pym_pool_t *previous = NULL;
    /* Blocks of one class are handed out pool by pool, so distinct pools are
     * runs; check the runs never come back to an earlier pool. */
    for (size_t i = 0; i < count; i++) {
        pym_pool_t *pool = pool_of(blocks[i]);
        if (pool != previous) {
            distinct++;
            previous = pool;
        }
    }
    return distinct;
}

/* ---- the thread heap ---------------------------------------------------------- */
static void check_heap_comes_alive(void)
{
    CHECK(pym_tls_heap == &pym_startup_heap, "before the first malloc the thread uses the start-up heap");
    CHECK(pym_tls_heap->state == PYM_HEAP_STARTUP, "start-up heap state %u", pym_tls_heap->state);
    pym_stats_t before = stats_now();
    CHECK(before.heaps_live == 0, "no heap is live before the first malloc (%zu)", before.heaps_live);

    void *block = pym_malloc(16);
    REQUIRE(block != NULL);
    CHECK(pym_tls_heap != &pym_startup_heap, "the first malloc gives the thread a heap of its own");
    CHECK(pym_tls_heap->state == PYM_HEAP_LIVE, "heap state after the first malloc: %u", pym_tls_heap->state);
    pym_stats_t after = stats_now();
    CHECK(after.heaps_live == 1, "one heap live after the first malloc (%zu)", after.heaps_live);
    pym_pool_t *pool = pool_of(block);
    REQUIRE(pool != NULL);
    CHECK(pym_pool_owner(pool) == pym_tls_heap, "the block's pool is owned by the thread's heap");
    CHECK(pym_tls_heap->pools[pool->size_class] == pool, "and is the head of the class list");
    pym_free(block);
    CHECK(pym_tls_heap->state == PYM_HEAP_LIVE, "the heap stays live after free");
}

/* ---- new pools come from the most used arena ----------------------------------- */
static pym_arena_t *fullest_usable_arena(bool *unique)
{
    pym_arena_t *best = NULL;
    *unique = false;
    pthread_mutex_lock(&pym_arena_lock);
    for (pym_arena_t *arena = pym_arena_first_locked(); arena != NULL; arena = arena->all_next) {
        if (arena->kind != PYM_CHUNK_SMALL || arena->free_pools == 0)
            continue;
        if (best == NULL || arena->free_pools < best->free_pools) {
            best = arena;
            *unique = true;
        } else if (arena->free_pools == best->free_pools) {
            *unique = false;
        }
    }
    pthread_mutex_unlock(&pym_arena_lock);
    return best;
}

/* True when the next block of `size_class` cannot come from the heap: no pool of
 * the class has a free or never-used block and the empty-pool cache is empty. */
static bool next_block_needs_arena(pym_heap_t *heap, unsigned size_class)
{
    if (heap->empty != NULL)
        return false;
    for (pym_pool_t *pool = heap->pools[size_class]; pool != NULL && pool != &pym_empty_pool; pool = pool->next)
        if (pool->free != NULL || pym_pool_carved(pool) < pym_classes[size_class].capacity)
            return false;
    return true;
}

static void check_pools_come_from_the_fullest_arena(void)
{
    const size_t filler_size = 512, probe_size = 496;
    const unsigned filler_class = (unsigned)pym_size_class(filler_size);
    const unsigned probe_class = (unsigned)pym_size_class(probe_size);
    REQUIRE(filler_class != probe_class);
    pym_stats_t start = stats_now();
    REQUIRE(start.classes[filler_class].pools == 0 && start.classes[probe_class].pools == 0,
            "the classes of this check must be unused so far");

    /* 160 pools of 512-byte blocks: about two and a half arenas. */
    const unsigned filler_capacity = pym_classes[filler_class].capacity;
    const size_t filler_pools = 160, filler_count = filler_pools * filler_capacity;
    void **filler = calloc(filler_count, sizeof(void *));
    REQUIRE(filler != NULL);
    for (size_t i = 0; i < filler_count; i++) {
        filler[i] = pym_malloc(filler_size);
        REQUIRE(filler[i] != NULL);
    }
    CHECK(count_distinct_pools(filler, filler_count) == filler_pools, "%zu blocks fill %zu pools, got %zu",
          filler_count, filler_pools, count_distinct_pools(filler, filler_count));

    pym_arena_t *light = pool_of(filler[0])->arena;                     /* first arena: will be emptied */
    pym_arena_t *heavy = pool_of(filler[100 * filler_capacity])->arena; /* second arena: stays full */
    REQUIRE(light != heavy, "pools 0 and 100 cannot share a 64-pool arena");
    size_t heavy_pools = 0;
    for (size_t pool = 0; pool < filler_pools; pool++)
        heavy_pools += pool_of(filler[pool * filler_capacity])->arena == heavy;
    CHECK(heavy_pools == PYM_POOLS_PER_ARENA, "the second arena holds %zu filler pools, expected 64", heavy_pools);

    /* Free every filler pool of the first arena but two, 16 pools of the
     * second arena, and all filler pools in any other arena. */
    size_t light_kept = 0, heavy_freed = 0;
    for (int pass = 0; pass < 3; pass++) {
        for (size_t pool = 0; pool < filler_pools; pool++) {
            void **run = &filler[pool * filler_capacity];
            if (run[0] == NULL)
                continue; /* released in an earlier pass */
            pym_arena_t *arena = pool_of(run[0])->arena;
            bool release;
            if (pass == 0) {
                if (arena != light)
                    continue;
                release = light_kept >= 2;
                light_kept += !release;
            } else if (pass == 1) {
                if (arena != heavy)
                    continue;
                release = heavy_freed < 16;
                heavy_freed += release;
            } else {
                if (arena == light || arena == heavy)
                    continue;
                release = true;
            }
            if (!release)
                continue;
            for (unsigned i = 0; i < filler_capacity; i++) {
                pym_free(run[i]);
                run[i] = NULL;
            }
        }
    }

    /* Use up the heap's cache of empty pools with probe blocks, so the next
     * probe pool must come from an arena. */
    pym_heap_t *heap = pym_tls_heap;
    size_t probe_limit = 4096, probe_count = 0;
    void **probe = calloc(probe_limit, sizeof(void *));
    REQUIRE(probe != NULL);
    while (!next_block_needs_arena(heap, probe_class)) {
        REQUIRE(probe_count < probe_limit, "the heap's empty-pool cache never drains");
        probe[probe_count] = pym_malloc(probe_size);
        REQUIRE(probe[probe_count] != NULL);
        probe_count++;
    }

    bool unique;
    pym_arena_t *fullest = fullest_usable_arena(&unique);
    printf("arena choice: first arena %u free pools, second arena %u free pools\n", light->free_pools,
           heavy->free_pools);
    CHECK(fullest == heavy && unique, "test premise: the second arena should be the fullest usable one "
                                      "(it has %u free pools, the first arena %u)",
          heavy->free_pools, light->free_pools);
    CHECK(light->free_pools > heavy->free_pools, "the first arena has more free pools (%u) than the second (%u)",
          light->free_pools, heavy->free_pools);

    /* The next probe pools come from the fullest arena: the first batch of
     * 8 and, while it still has free pools, the next one too. */
    size_t new_pools = 0, new_pools_in_heavy = 0, new_pools_in_light = 0;
    pym_pool_t *previous = NULL;
    while (new_pools < 16) {
        REQUIRE(probe_count < probe_limit);
        void *block = pym_malloc(probe_size);
        REQUIRE(block != NULL);
        probe[probe_count++] = block;
        pym_pool_t *pool = pool_of(block);
        if (pool == previous)
            continue;
        previous = pool;
        if (new_pools == 0)
            CHECK(pool->arena == fullest, "the first fresh pool comes from the fullest arena");
        new_pools++;
        new_pools_in_heavy += pool->arena == heavy;
        new_pools_in_light += pool->arena == light;
    }
    CHECK(new_pools_in_heavy == 16, "%zu of 16 fresh pools came from the fuller arena, %zu from the emptier one",
          new_pools_in_heavy, new_pools_in_light);

    for (size_t i = 0; i < probe_count; i++)
        pym_free(probe[i]);
    for (size_t i = 0; i < filler_count; i++)
        if (filler[i] != NULL)
            pym_free(filler[i]);
    free(probe);
    free(filler);
    pym_stats_t end = stats_now();
    CHECK(end.classes[filler_class].blocks_used == 0 && end.classes[probe_class].blocks_used == 0,
          "every filler and probe block is back");
}

/* ---- pool counts per class ------------------------------------------------------- */
static void check_pool_count(size_t size, size_t count)
{
    int size_class = pym_size_class(size);
    REQUIRE(size_class >= 0);
    const pym_class_t *cls = &pym_classes[size_class];
    bool small = size_class < PYM_SMALL_CLASSES;
    pym_stats_t before = stats_now();
    REQUIRE(before.classes[size_class].pools == 0, "class of %zu bytes must be unused before", size);

    void **blocks = calloc(count, sizeof(void *));
    REQUIRE(blocks != NULL);
    size_t bad_headers = 0;
    for (size_t i = 0; i < count; i++) {
        blocks[i] = pym_malloc(size);
        REQUIRE(blocks[i] != NULL);
        pym_pool_t *pool = pool_of(blocks[i]);
        if (pool == NULL || pool->size_class != size_class || pym_pool_owner(pool) != pym_tls_heap
            || (pool->state != PYM_POOL_USED && pool->state != PYM_POOL_FULL)) {
            bad_headers++;
            continue;
        }
        uintptr_t chunk = (uintptr_t)blocks[i] & ~(CHUNK - 1);
        if (pool->arena->base != chunk)
            bad_headers++;
        if (small && (pool->index != ((uintptr_t)blocks[i] - chunk) / PYM_POOL_SIZE
                      || (char *)blocks[i] < (char *)pool + PYM_POOL_HEADER_SIZE))
            bad_headers++;
        if (!small && (pool != &pool->arena->span || pool->arena->kind != PYM_CHUNK_MEDIUM))
            bad_headers++;
    }
    CHECK(bad_headers == 0, "%zu-byte blocks: %zu blocks have a pool header that does not describe them", size,
          bad_headers);

    size_t expected_pools = (count + cls->capacity - 1) / cls->capacity;
    pym_stats_t during = stats_now();
    const pym_class_stats_t *got = &during.classes[size_class];
    CHECK(got->block_size == cls->block_size, "stats block size %zu", got->block_size);
    CHECK(got->pools == expected_pools, "%zu blocks of %zu bytes (capacity %u): %zu pools, expected %zu", count,
          size, cls->capacity, got->pools, expected_pools);
    CHECK(got->blocks_used == count, "%zu-byte blocks: blocks_used %zu, expected %zu", size, got->blocks_used, count);
    CHECK(got->full_pools == count / cls->capacity, "%zu-byte blocks: full_pools %zu, expected %zu", size,
          got->full_pools, count / cls->capacity);
    CHECK(got->blocks_free == expected_pools * cls->capacity - count, "%zu-byte blocks: blocks_free %zu", size,
          got->blocks_free);
    CHECK(count_distinct_pools(blocks, count) == expected_pools, "blocks are handed out one pool after another");

    for (size_t i = 0; i < count; i++)
        pym_free(blocks[i]);
    free(blocks);
    pym_stats_t after = stats_now();
    CHECK(after.classes[size_class].pools <= 1, "%zu-byte blocks all freed: %zu pools of the class left", size,
          after.classes[size_class].pools);
    CHECK(after.classes[size_class].blocks_used == 0, "%zu-byte blocks all freed: blocks_used %zu", size,
          after.classes[size_class].blocks_used);
    CHECK(after.empty_pools <= PYM_HEAP_EMPTY_POOLS_MAX, "the heap keeps at most 16 empty pools, has %zu",
          after.empty_pools);
}

/* ---- full pools go back to the used list on their first free --------------------- */
static void check_full_pool_returns_to_used(void)
{
    const size_t size = 256;
    const unsigned size_class = (unsigned)pym_size_class(size);
    const unsigned capacity = pym_classes[size_class].capacity;
    pym_heap_t *heap = pym_tls_heap;
    REQUIRE(stats_now().classes[size_class].pools == 0);

    void *blocks[64];
    REQUIRE(capacity + 1 <= 64);
    for (unsigned i = 0; i < capacity; i++)
        REQUIRE((blocks[i] = pym_malloc(size)) != NULL);
    pym_pool_t *first_pool = pool_of(blocks[0]);
    CHECK(pool_of(blocks[capacity - 1]) == first_pool, "the first %u blocks share a pool", capacity);
    CHECK(first_pool->used == capacity, "used %u, capacity %u", first_pool->used, capacity);
    CHECK(stats_now().classes[size_class].full_pools == 1, "a pool with every block handed out counts as full");

    /* One more: the exhausted pool leaves its class list (a full pool is in no
     * list), a new pool serves. */
    REQUIRE((blocks[capacity] = pym_malloc(size)) != NULL);
    pym_pool_t *second_pool = pool_of(blocks[capacity]);
    CHECK(second_pool != first_pool, "block %u comes from a second pool", capacity + 1);
    CHECK(first_pool->state == PYM_POOL_FULL, "exhausted pool state %u, expected FULL", first_pool->state);
    CHECK(!pool_in_list(heap->pools[size_class], first_pool), "the exhausted pool is not on the class list");
    CHECK(first_pool->next == NULL && first_pool->prev == NULL, "and is linked to nothing");
    CHECK(pym_pool_owner(first_pool) == heap, "it still belongs to the heap");
    CHECK(second_pool->state == PYM_POOL_USED, "the new pool is USED");
    CHECK(heap->pools[size_class] == second_pool, "the new pool heads the class list");

    /* First free into the full pool: back to USED, at the head of the class list. */
    void *freed = blocks[capacity / 2];
    pym_free(freed);
    CHECK(first_pool->state == PYM_POOL_USED, "after one free the pool state is %u, expected USED",
          first_pool->state);
    CHECK(heap->pools[size_class] == first_pool, "the pool heads its class list again");
    CHECK(first_pool->used == capacity - 1, "used %u after one free", first_pool->used);
    CHECK(stats_now().classes[size_class].full_pools == 0, "no full pool of the class is left");

    /* The freed block is the next one handed out, and the pool is full again. */
    void *again = pym_malloc(size);
    CHECK(again == freed, "the freed block %p is reused first (got %p)", freed, again);
    blocks[capacity / 2] = again;
    CHECK(first_pool->used == capacity, "used %u", first_pool->used);

    for (unsigned i = 0; i <= capacity; i++)
        pym_free(blocks[i]);
    CHECK(stats_now().classes[size_class].pools <= 1, "all freed: at most one pool of the class is kept");
}

/* ---- arenas go back to the OS ------------------------------------------------------ */
static void check_arenas_are_returned(void)
{
    const size_t size = 64, total = 20 * 1000 * 1000, count = total / size;
    const unsigned size_class = (unsigned)pym_size_class(size);
    void **blocks = malloc(count * sizeof(void *)); /* glibc's malloc */
    REQUIRE(blocks != NULL);
    pym_stats_t before = stats_now();

    for (size_t i = 0; i < count; i++) {
        blocks[i] = pym_malloc(size);
        REQUIRE(blocks[i] != NULL, "block %zu of %zu", i, count);
        memset(blocks[i], (int)(i & 0xff), size);
    }
    pym_stats_t during = stats_now();
    const size_t capacity = pym_classes[size_class].capacity;
    size_t pools_needed = (count + capacity - 1) / capacity;
    size_t arenas_needed = (pools_needed + PYM_POOLS_PER_ARENA - 1) / PYM_POOLS_PER_ARENA;
    CHECK(during.classes[size_class].blocks_used == before.classes[size_class].blocks_used + count,
          "blocks_used %zu", during.classes[size_class].blocks_used);
    CHECK(during.classes[size_class].pools >= pools_needed, "%zu pools for %zu blocks", during.classes[size_class].pools,
          count);
    CHECK(during.arenas_now >= arenas_needed, "arenas_now %zu while %zu arenas' worth of blocks are live",
          during.arenas_now, arenas_needed);
    CHECK(during.arenas_peak >= during.arenas_now, "peak %zu >= now %zu", during.arenas_peak, during.arenas_now);
    CHECK(during.mapped_bytes >= total, "mapped_bytes %zu", during.mapped_bytes);

    size_t corrupt = 0;
    for (size_t i = 0; i < count; i++) {
        const unsigned char *bytes = blocks[i];
        if (bytes[0] != (i & 0xff) || bytes[size - 1] != (i & 0xff))
            corrupt++;
        pym_free(blocks[i]);
    }
    CHECK(corrupt == 0, "%zu blocks were overwritten while live", corrupt);
    free(blocks);

    /* The emptied chunks wait in the chunk cache; a pass of the scavenger a
     * decay time later gives them back. */
    pym_stats_t freed = stats_now();
    CHECK(freed.arenas_cached + freed.arenas_now >= during.arenas_now - 3,
          "the emptied chunks are cached for reuse (%zu cached, %zu in use, %zu at the peak)", freed.arenas_cached,
          freed.arenas_now, during.arenas_now);
    CHECK(freed.arenas_returned == before.arenas_returned, "nothing is unmapped before the decay time");
    pym_scavenge_pass(pym_os_now_ms() + pym_options.decay_ms);
    pym_stats_t after = stats_now();
    printf("20 MB of %zu-byte blocks: arenas now %zu -> %zu -> %zu, cached %zu then %zu, returned %zu -> %zu\n", size,
           before.arenas_now, during.arenas_now, after.arenas_now, freed.arenas_cached, after.arenas_cached,
           before.arenas_returned, after.arenas_returned);
    CHECK(after.arenas_cached == 0, "a decay time later no empty chunk is cached (%zu)", after.arenas_cached);
    CHECK(after.classes[size_class].blocks_used == before.classes[size_class].blocks_used, "blocks_used back to %zu",
          before.classes[size_class].blocks_used);
    CHECK(after.classes[size_class].pools <= before.classes[size_class].pools + 1,
          "at most one extra pool of the class survives (%zu, before %zu)", after.classes[size_class].pools,
          before.classes[size_class].pools);
    CHECK(after.arenas_now <= before.arenas_now + 3, "arenas_now %zu after freeing (before %zu, peak %zu)",
          after.arenas_now, before.arenas_now, during.arenas_now);
    CHECK(after.arenas_cached <= PYM_CHUNK_CACHE_MAX, "arenas_cached %zu", after.arenas_cached);
    CHECK(after.arenas_returned > before.arenas_returned, "no arena was returned (%zu)", after.arenas_returned);
    CHECK(after.arenas_returned - before.arenas_returned + PYM_CHUNK_CACHE_MAX + 3 + before.arenas_now
              >= during.arenas_now,
          "arenas returned %zu of %zu", after.arenas_returned - before.arenas_returned, during.arenas_now);
    CHECK(after.arenas_total == during.arenas_total, "freeing maps nothing new");
    CHECK(after.mapped_bytes + 15 * PYM_MiB <= during.mapped_bytes, "mapped bytes %zu -> %zu", during.mapped_bytes,
          after.mapped_bytes);
    CHECK(after.empty_pools <= PYM_HEAP_EMPTY_POOLS_MAX, "empty pools kept: %zu", after.empty_pools);

    /* Allocating again after the churn works and reuses cached arenas first. */
    void *again = pym_malloc(size);
    CHECK(again != NULL && pool_of(again) != NULL && pool_of(again)->size_class == size_class);
    pym_free(again);
}

int main(int argc, char **argv)
{
    (void)argc;
    /* The option is read once, at start-up (a constructor may already have
     * run): run again with it set. */
    if (getenv("PYMALLOC_THREAD_CACHE") == NULL) {
        setenv("PYMALLOC_THREAD_CACHE", "0", 1);
        execv("/proc/self/exe", argv);
        perror("execv /proc/self/exe");
        return 1;
    }
    pym_ensure_init();
    CHECK(pym_options.thread_cache == 0, "PYMALLOC_THREAD_CACHE=0 turns the thread cache off");
    check_heap_comes_alive();
    check_pools_come_from_the_fullest_arena(); /* early: relies on a short arena history */
    check_pool_count(40, 1000);       /* small, many pools */
    check_pool_count(120, 100);
    check_pool_count(176, 22);        /* exactly one full pool (4032 / 176) */
    check_pool_count(3000, 200);      /* medium spans */
    check_pool_count(100000, 5);      /* two blocks per span */
    check_full_pool_returns_to_used();
    check_arenas_are_returned();
    return check_finish();
}
