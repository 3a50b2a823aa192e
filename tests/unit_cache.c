/*
 * unit_cache.c -- the thread cache in front of the pools (heap.c, fastpath.h).
 *
 * Covers:
 *   - bin sizes: every small class caches PYM_CACHE_SLOTS blocks, medium
 *     classes PYM_CACHE_CLASS_BYTES worth (at least one);
 *   - LIFO reuse: the block freed last is the next one handed out;
 *   - refill: the first malloc of a class takes half a bin from the pools
 *     (the rest waits in the bin, counted as thread-cached);
 *   - overflow: freeing into a full bin sends its oldest half back to the
 *     pools, and the block just freed stays on top;
 *   - pym_flush_thread_cache() empties every bin, and the pools' figures
 *     come back to what they were;
 *   - cross-thread: blocks freed by another thread go into that thread's
 *     bin; its flush sends them, as chains, to the owner's transfer list of
 *     their class, and the owner's next refill of that class takes the list
 *     (into its bin, the rest deferred);
 *   - a thread that only frees gets a heap (and so a cache) of its own;
 *   - thread exit flushes the exiting thread's bins.
 * Links the core statically (malloc here is glibc's; pymalloc is pym_*).
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "check.h"

static pym_stats_t stats_now(void)
{
    pym_stats_t stats;
    pym_stats_get(&stats);
    return stats;
}

/* The calling thread's bins (thread-local storage). */
static size_t bin_count(unsigned size_class)
{
    pym_cache_bin_t *bin = pym_bin_of_class(size_class);
    return (size_t)(bin->cursor - bin->base);
}

static size_t bin_capacity(unsigned size_class)
{
    pym_cache_bin_t *bin = pym_bin_of_class(size_class);
    return (size_t)(bin->limit - bin->base);
}

/* Blocks waiting on a heap's transfer lists (every class). */
static size_t remote_length(pym_heap_t *heap)
{
    size_t length = 0;
    for (unsigned size_class = 0; size_class < PYM_CLASS_COUNT; size_class++)
        for (pym_block_t *block = __atomic_load_n(&heap->remote[size_class], __ATOMIC_ACQUIRE); block != NULL;
             block = block->next)
            length++;
    return length;
}

/* ---- bin sizes -------------------------------------------------------------- */
static void check_bin_sizes(void)
{
    void *first = pym_malloc(1); /* gives this thread its heap */
    REQUIRE(first != NULL);
    pym_heap_t *heap = pym_tls_heap;
    REQUIRE(heap->state == PYM_HEAP_LIVE);
    unsigned wrong = 0;
    for (unsigned size_class = 0; size_class < PYM_CLASS_COUNT; size_class++) {
        size_t block_size = pym_classes[size_class].block_size;
        size_t expected = size_class < PYM_SMALL_CLASSES ? PYM_CACHE_SLOTS : PYM_CACHE_CLASS_BYTES / block_size;
        if (expected > PYM_CACHE_SLOTS)
            expected = PYM_CACHE_SLOTS;
        if (expected == 0)
            expected = 1;
        if (bin_capacity(size_class) != expected || pym_bin_of_class(size_class)->base[-1] != NULL) {
            if (wrong++ < 3)
                fprintf(stderr, "class %u (%zu bytes): bin holds %zu, expected %zu\n", size_class, block_size,
                        bin_capacity(size_class), expected);
        }
    }
    CHECK(wrong == 0, "%u classes have a bin of the wrong size or no NULL sentinel", wrong);
    CHECK(bin_capacity(pym_medium_class_of(4096)) == PYM_CACHE_CLASS_BYTES / 4096, "4 KiB blocks: %zu cached (%lu KiB)",
          (size_t)(PYM_CACHE_CLASS_BYTES / 4096), (unsigned long)(PYM_CACHE_CLASS_BYTES / 1024));
    CHECK(bin_capacity(pym_medium_class_of(128 * 1024)) == 1, "128 KiB blocks: 1 cached");
    pym_free(first);
}

/* ---- LIFO, refill, overflow, flush -------------------------------------------- */
static void check_refill_overflow_flush(void)
{
    const size_t size = 96; /* 42 blocks per pool: a refill of 32 fits one fresh pool */
    const unsigned size_class = (unsigned)pym_size_class(size);
    const size_t capacity = bin_capacity(size_class), batch = capacity / 2;
    REQUIRE(capacity == PYM_CACHE_SLOTS && batch == capacity / 2 && pym_classes[size_class].capacity >= batch);
    REQUIRE(stats_now().classes[size_class].pools == 0, "the class of this check must be unused so far");

    /* Refill: the first malloc takes a batch, hands out one, caches the rest. */
    void *block = pym_malloc(size);
    REQUIRE(block != NULL);
    CHECK(bin_count(size_class) == batch - 1, "after the first malloc %zu blocks wait in the bin, expected %zu",
          bin_count(size_class), batch - 1);
    pym_stats_t stats = stats_now();
    CHECK(stats.classes[size_class].blocks_used == 1 && stats.classes[size_class].blocks_cached == batch - 1,
          "statistics: %zu in use, %zu cached (expected 1 and %zu)", stats.classes[size_class].blocks_used,
          stats.classes[size_class].blocks_cached, batch - 1);

    /* LIFO: free then malloc gives the same block back, without the pools. */
    pym_free(block);
    CHECK(bin_count(size_class) == batch, "the freed block waits in the bin");
    void *again = pym_malloc(size);
    CHECK(again == block, "the block freed last is handed out first (%p, expected %p)", again, block);

    /* Fill the bin, then one more free: the oldest half goes back. */
    enum { MANY = 3 * PYM_CACHE_SLOTS };
    void *blocks[MANY];
    blocks[0] = again;
    for (size_t i = 1; i < MANY; i++)
        REQUIRE((blocks[i] = pym_malloc(size)) != NULL);
    CHECK(bin_count(size_class) < batch, "the bin drained while allocating (%zu left)",
          bin_count(size_class));
    pym_stats_t before_frees = stats_now();
    size_t freed = 0;
    while (bin_count(size_class) < capacity)
        pym_free(blocks[freed++]);
    pym_stats_t full = stats_now();
    CHECK(full.classes[size_class].blocks_free == before_frees.classes[size_class].blocks_free,
          "filling the bin returns nothing to the pools");
    void **bottom = pym_bin_of_class(size_class)->base;
    void *oldest_kept = bottom[batch]; /* survives the flush of the oldest half */
    pym_free(blocks[freed]);
    CHECK(bin_count(size_class) == capacity - batch + 1, "after the overflow the bin holds %zu, expected %zu",
          bin_count(size_class), capacity - batch + 1);
    CHECK(pym_bin_of_class(size_class)->cursor[-1] == blocks[freed], "the block freed last is on top");
    CHECK(bottom[0] == oldest_kept, "the younger half moved down to the bottom of the bin");
    pym_stats_t flushed = stats_now();
    CHECK(flushed.classes[size_class].blocks_free == full.classes[size_class].blocks_free + batch,
          "the overflow returned %zu blocks to the pools, expected %zu",
          flushed.classes[size_class].blocks_free - full.classes[size_class].blocks_free, batch);
    freed++;

    /* Everything back, then a full flush. */
    for (size_t i = freed; i < MANY; i++)
        pym_free(blocks[i]);
    pym_flush_thread_cache();
    pym_stats_t end = stats_now();
    size_t cached_anywhere = 0;
    for (unsigned i = 0; i < PYM_CLASS_COUNT; i++)
        cached_anywhere += bin_count(i);
    CHECK(cached_anywhere == 0, "pym_flush_thread_cache leaves %zu blocks in the bins", cached_anywhere);
    CHECK(end.classes[size_class].blocks_cached == 0 && end.classes[size_class].blocks_used == 0,
          "after the flush: %zu cached, %zu in use", end.classes[size_class].blocks_cached,
          end.classes[size_class].blocks_used);
    CHECK(end.classes[size_class].pools <= 1, "and at most the class's last pool is kept (%zu)",
          end.classes[size_class].pools);
}

/* ---- cross-thread ------------------------------------------------------------------ */
enum { CROSS_BLOCKS = 200 };

typedef struct cross_job {
    void **blocks;               /* allocated by the main thread */
    size_t count;
    bool flush;                  /* flush before returning, and report the owner's remote list */
    pym_heap_t *owner;
    size_t cached_after_frees;   /* blocks in this thread's bin after the frees */
    size_t remote_after_flush;   /* length of the owner's remote list after the flush */
    bool had_heap_before;        /* the thread had a heap before its first free */
    bool has_heap_after;
} cross_job_t;

static void *cross_free_main(void *arg)
{
    cross_job_t *job = arg;
    job->had_heap_before = pym_tls_heap->state == PYM_HEAP_LIVE;
    unsigned size_class = pym_pool_info_of((uintptr_t)job->blocks[0], pym_chunkmap_lookup((uintptr_t)job->blocks[0]),
                                           &(uint32_t){0})->size_class;
    for (size_t i = 0; i < job->count; i++)
        pym_free(job->blocks[i]);
    job->has_heap_after = pym_tls_heap->state == PYM_HEAP_LIVE;
    job->cached_after_frees = bin_count(size_class);
    if (job->flush) {
        pym_flush_thread_cache();
        job->remote_after_flush = remote_length(job->owner);
    }
    return NULL;
}

static void check_cross_thread_frees(bool flush_before_exit)
{
    const size_t size = 72;
    const unsigned size_class = (unsigned)pym_size_class(size);
    pym_heap_t *heap = pym_tls_heap;
    pym_flush_thread_cache();
    pym_stats_t start = stats_now();
    void *blocks[CROSS_BLOCKS];
    for (size_t i = 0; i < CROSS_BLOCKS; i++)
        REQUIRE((blocks[i] = pym_malloc(size)) != NULL);
    pym_flush_thread_cache(); /* what the bin held goes back: only the 200 are out */
    REQUIRE(remote_length(heap) == 0);

    cross_job_t job = {.blocks = blocks, .count = CROSS_BLOCKS, .flush = flush_before_exit, .owner = heap};
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, cross_free_main, &job) == 0);
    REQUIRE(pthread_join(thread, NULL) == 0);
    const char *how = flush_before_exit ? "flushed" : "exited";
    CHECK(!job.had_heap_before && job.has_heap_after, "%s: a thread that only frees gets a heap of its own", how);
    CHECK(job.cached_after_frees > 0 && job.cached_after_frees <= PYM_CACHE_SLOTS,
          "%s: the freeing thread's bin holds %zu of the blocks", how, job.cached_after_frees);
    size_t waiting = remote_length(heap);
    if (flush_before_exit)
        CHECK(job.remote_after_flush == CROSS_BLOCKS, "%s: all %d blocks wait on the owner's remote list (%zu)", how,
              CROSS_BLOCKS, job.remote_after_flush);
    CHECK(waiting == CROSS_BLOCKS, "%s: after the thread is gone, %zu of %d blocks wait for the owner", how, waiting,
          CROSS_BLOCKS);
    pym_stats_t pending = stats_now();
    CHECK(pending.classes[size_class].blocks_used >= start.classes[size_class].blocks_used + CROSS_BLOCKS,
          "%s: blocks on a remote list still count as in use", how);

    /* The owner's next refill takes them back. */
    void *probe = pym_malloc(size);
    REQUIRE(probe != NULL);
    CHECK(remote_length(heap) == 0, "%s: the owner's refill collected its remote list", how);
    pym_free(probe);
    pym_flush_thread_cache();
    pym_stats_t end = stats_now();
    CHECK(end.classes[size_class].blocks_used == start.classes[size_class].blocks_used,
          "%s: every block is back (%zu in use, %zu at the start)", how, end.classes[size_class].blocks_used,
          start.classes[size_class].blocks_used);
}

int main(void)
{
    pym_ensure_init();
    REQUIRE(pym_options.thread_cache == 1, "the thread cache is on by default");
    check_bin_sizes();
    check_refill_overflow_flush();
    check_cross_thread_frees(true);
    check_cross_thread_frees(false);
    return check_finish();
}
