/*
 * api_threads.c -- pymalloc under threads (malloc/free interposed by
 * libpymalloc): per-thread heaps, remote (cross-thread) frees, abandoned
 * pools of exited threads, heap reuse, and the thread counters of
 * pym_stats_get().
 *
 *   1. producer/consumer: 2 producers allocate blocks of 8..2000 bytes (and
 *      a few of 200 KB) with malloc, calloc or posix_memalign, fill them with
 *      a pattern and pass them in batches through a mutex-protected queue to
 *      2 consumers, which realloc some (cross-thread realloc), verify and
 *      free them (every free is a cross-thread free); ~1M blocks, with a time
 *      budget so a slow machine stops early instead of timing out;
 *   2. 50 rounds of: 4 threads allocate a set of blocks, hand them to the
 *      main thread and exit; the main thread verifies and frees them (frees
 *      into abandoned pools).  The statistics must show the handed-over
 *      blocks in use while their threads are gone, then the small and medium
 *      classes back at their start values, heaps_live back down, and
 *      arenas_now bounded across the rounds;
 *   3. 200 short-lived threads (8 at a time, a new one started as soon as
 *      one ends) doing 10k malloc/free each, swapping some blocks through a
 *      shared exchange so that other (often already exited) threads free
 *      them;
 *   4. heaps_live counts live threads: N threads that allocated and wait on
 *      a barrier are counted, and the count drops when they are joined;
 *   5. thread-exit destructors that run after pymalloc retired the thread's
 *      heap free its blocks and allocate more (the shared heap); main frees
 *      what they hand over and the memory is reclaimed.
 * Every block carries a pattern that is verified before it is freed.  Each
 * part runs in a forked child (tests/sections.h) so a crash or a hang is
 * reported as a failed check instead of ending the whole test.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "pymalloc.h"
#include "sections.h"
#include "testlib.h"

/* ---- helpers ------------------------------------------------------------------- */
static atomic_size_t corrupt_blocks;     /* pattern mismatches seen by any thread */
static atomic_size_t failed_allocations; /* malloc returning NULL */

static void verify_and_free(void *block, size_t size, uint64_t tag)
{
    if (!pattern_ok(block, size, tag))
        atomic_fetch_add(&corrupt_blocks, 1);
    free(block);
}

static void *checked_malloc(size_t size)
{
    void *block = malloc(size);
    if (block == NULL) {
        atomic_fetch_add(&failed_allocations, 1);
        fprintf(stderr, "malloc(%zu) failed: %s\n", size, strerror(errno));
        exit(1);
    }
    return block;
}

typedef struct class_totals {
    size_t small_used;           /* blocks in use, small classes */
    size_t medium_used;          /* blocks in use, medium classes */
    size_t large_count;
    size_t heaps_live;
    size_t arenas_now;
    size_t mapped_bytes;
} class_totals_t;

static class_totals_t totals_now(void)
{
    pym_stats_t stats;
    pym_stats_get(&stats);
    class_totals_t totals = {0};
    for (int i = 0; i < PYM_STATS_CLASSES; i++) {
        if (i < PYM_STATS_SMALL_CLASSES)
            totals.small_used += stats.classes[i].blocks_used;
        else
            totals.medium_used += stats.classes[i].blocks_used;
    }
    totals.large_count = stats.large_count;
    totals.heaps_live = stats.heaps_live;
    totals.arenas_now = stats.arenas_now;
    totals.mapped_bytes = stats.mapped_bytes;
    return totals;
}

static size_t size_distance(size_t a, size_t b)
{
    return a > b ? a - b : b - a;
}

static void start_thread(pthread_t *thread, void *(*body)(void *), void *arg)
{
    int error = pthread_create(thread, NULL, body, arg);
    REQUIRE(error == 0, "pthread_create: %s", strerror(error));
}

/* ---- 1. producer/consumer ------------------------------------------------------------ */
#define PC_PRODUCERS 2
#define PC_CONSUMERS 2
#define PC_BLOCKS_PER_PRODUCER 500000
#define PC_BATCH 64
#define PC_QUEUE_SLOTS 128
#define PC_TIME_BUDGET 8.0          /* seconds; producers stop early past it */
#define PC_LARGE_SIZE (200 * 1024)

typedef struct pc_batch {        /* malloc'ed by a producer, freed by a consumer */
    size_t count;
    tagged_block_t items[PC_BATCH];
} pc_batch_t;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    pc_batch_t *slots[PC_QUEUE_SLOTS];
    size_t head, count;
    int producers_running;
    double deadline;
} pc_queue = {.lock = PTHREAD_MUTEX_INITIALIZER,
              .not_empty = PTHREAD_COND_INITIALIZER,
              .not_full = PTHREAD_COND_INITIALIZER};

static atomic_size_t pc_produced, pc_consumed, pc_large_produced;

static void pc_push(pc_batch_t *batch)
{
    pthread_mutex_lock(&pc_queue.lock);
    while (pc_queue.count == PC_QUEUE_SLOTS)
        pthread_cond_wait(&pc_queue.not_full, &pc_queue.lock);
    pc_queue.slots[(pc_queue.head + pc_queue.count) % PC_QUEUE_SLOTS] = batch;
    pc_queue.count++;
    pthread_cond_signal(&pc_queue.not_empty);
    pthread_mutex_unlock(&pc_queue.lock);
}

/* NULL once the queue is empty and every producer is done. */
static pc_batch_t *pc_pop(void)
{
    pthread_mutex_lock(&pc_queue.lock);
    while (pc_queue.count == 0 && pc_queue.producers_running > 0)
        pthread_cond_wait(&pc_queue.not_empty, &pc_queue.lock);
    pc_batch_t *batch = NULL;
    if (pc_queue.count > 0) {
        batch = pc_queue.slots[pc_queue.head];
        pc_queue.head = (pc_queue.head + 1) % PC_QUEUE_SLOTS;
        pc_queue.count--;
        pthread_cond_signal(&pc_queue.not_full);
    }
    pthread_mutex_unlock(&pc_queue.lock);
    return batch;
}

static void *pc_producer(void *arg)
{
    uint64_t rng = 0x1234567ULL + (uintptr_t)arg * 0x9E3779B9ULL;
    uint64_t tag = (uint64_t)(uintptr_t)arg << 48;
    size_t made = 0;
    while (made < PC_BLOCKS_PER_PRODUCER) {
        if ((made & 4095) == 0 && now_seconds() > pc_queue.deadline)
            break;
        pc_batch_t *batch = checked_malloc(sizeof(*batch));
        batch->count = 0;
        while (batch->count < PC_BATCH && made < PC_BLOCKS_PER_PRODUCER) {
            uint64_t r = rng_next(&rng);
            size_t size = 8 + r % 1993; /* 8..2000 */
            if (r % 1000 == 999) {
                size = PC_LARGE_SIZE + (r >> 40) % 4096;
                atomic_fetch_add(&pc_large_produced, 1);
            }
            tagged_block_t *item = &batch->items[batch->count++];
            switch ((r >> 32) % 16) {
            case 0: /* aligned: the consumer frees it like any other block */
                if (posix_memalign(&item->block, 64, size) != 0)
                    item->block = checked_malloc(size);
                if ((uintptr_t)item->block % 64 != 0)
                    atomic_fetch_add(&corrupt_blocks, 1);
                break;
            case 1: { /* zeroed */
                item->block = calloc(1, size);
                if (item->block == NULL)
                    item->block = checked_malloc(size);
                else if (!bytes_all(item->block, size, 0))
                    atomic_fetch_add(&corrupt_blocks, 1);
                break;
            }
            default:
                item->block = checked_malloc(size);
            }
            item->size = size;
            item->tag = ++tag;
            pattern_fill(item->block, size, item->tag);
            made++;
        }
        pc_push(batch);
    }
    atomic_fetch_add(&pc_produced, made);
    pthread_mutex_lock(&pc_queue.lock);
    pc_queue.producers_running--;
    pthread_cond_broadcast(&pc_queue.not_empty);
    pthread_mutex_unlock(&pc_queue.lock);
    return NULL;
}

static void *pc_consumer(void *arg)
{
    (void)arg;
    size_t freed = 0;
    pc_batch_t *batch;
    while ((batch = pc_pop()) != NULL) {
        for (size_t i = 0; i < batch->count; i++) {
            tagged_block_t *item = &batch->items[i];
            if (item->tag % 16 == 0) {
                /* realloc of another thread's block: contents kept, new size. */
                bool intact;
                if (!tagged_realloc(item, item->size % 2 ? item->size * 2 + 8 : item->size / 2 + 8, &intact))
                    atomic_fetch_add(&failed_allocations, 1);
                else if (!intact)
                    atomic_fetch_add(&corrupt_blocks, 1);
            }
            verify_and_free(item->block, item->size, item->tag);
        }
        freed += batch->count;
        free(batch);
    }
    atomic_fetch_add(&pc_consumed, freed);
    return NULL;
}

static void test_producer_consumer(void)
{
    class_totals_t before = totals_now();
    size_t corrupt_before = atomic_load(&corrupt_blocks);
    double start = now_seconds();
    pc_queue.producers_running = PC_PRODUCERS;
    pc_queue.deadline = start + PC_TIME_BUDGET;
    pthread_t producers[PC_PRODUCERS], consumers[PC_CONSUMERS];
    for (int i = 0; i < PC_CONSUMERS; i++)
        start_thread(&consumers[i], pc_consumer, NULL);
    for (int i = 0; i < PC_PRODUCERS; i++)
        start_thread(&producers[i], pc_producer, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < PC_PRODUCERS; i++)
        pthread_join(producers[i], NULL);
    for (int i = 0; i < PC_CONSUMERS; i++)
        pthread_join(consumers[i], NULL);
    double elapsed = now_seconds() - start;
    size_t produced = atomic_load(&pc_produced), consumed = atomic_load(&pc_consumed);
    printf("producer/consumer: %zu blocks (%zu of 200 KB) in %.2f s\n", produced, atomic_load(&pc_large_produced),
           elapsed);
    CHECK(produced == consumed, "produced %zu blocks, consumed %zu", produced, consumed);
    CHECK(produced >= 100000, "only %zu blocks in the time budget", produced);
    CHECK(atomic_load(&pc_large_produced) > 0, "no 200 KB block was produced");
    CHECK(atomic_load(&corrupt_blocks) == corrupt_before, "%zu blocks corrupted in transit",
          atomic_load(&corrupt_blocks) - corrupt_before);
    CHECK(pc_queue.count == 0, "queue not drained");

    class_totals_t after = totals_now();
    CHECK(size_distance(after.small_used, before.small_used) <= 64,
          "small blocks in use: %zu before, %zu after every block was freed", before.small_used, after.small_used);
    CHECK(size_distance(after.medium_used, before.medium_used) <= 8,
          "medium blocks in use: %zu before, %zu after every block was freed", before.medium_used, after.medium_used);
    CHECK(after.large_count == before.large_count, "large blocks live: %zu before, %zu after", before.large_count,
          after.large_count);
    CHECK(after.heaps_live == before.heaps_live, "heaps_live %zu before the threads, %zu after joining them",
          before.heaps_live, after.heaps_live);
}

/* ---- 2. threads hand their blocks over and exit ------------------------------------------- */
#define HO_ROUNDS 50
#define HO_THREADS 4
#define HO_BLOCKS 1500

typedef struct ho_set {          /* allocated by the exiting thread, freed by main */
    size_t count;
    size_t small_count;          /* blocks of a small class */
    size_t medium_count;         /* blocks of a medium class */
    tagged_block_t blocks[];
} ho_set_t;

static void *ho_worker(void *arg)
{
    uint64_t seed = (uintptr_t)arg;
    uint64_t rng = 0xABCDEF12345ULL ^ (seed * 0x9E3779B97F4A7C15ULL);
    ho_set_t *set = checked_malloc(sizeof(ho_set_t) + HO_BLOCKS * sizeof(tagged_block_t));
    set->count = set->small_count = set->medium_count = 0;
    /* Allocate more than is handed over and free the rest here, so the
     * exiting heap leaves partly used pools with free blocks behind. */
    void *scratch[HO_BLOCKS / 4];
    size_t scratch_count = 0;
    for (size_t i = 0; i < HO_BLOCKS; i++) {
        uint64_t r = rng_next(&rng);
        size_t size;
        if (r % 100 < 85)
            size = 8 + r % 505; /* small */
        else if (r % 100 < 99)
            size = 513 + (r >> 20) % 7680; /* medium */
        else
            size = 150 * 1024 + (r >> 20) % 8192; /* large */
        tagged_block_t *entry = &set->blocks[set->count++];
        entry->block = checked_malloc(size);
        entry->size = size;
        entry->tag = (seed << 32) | i;
        pattern_fill(entry->block, size, entry->tag);
        int size_class = pym_size_class(size);
        if (size_class >= 0 && size_class < PYM_STATS_SMALL_CLASSES)
            set->small_count++;
        else if (size_class >= PYM_STATS_SMALL_CLASSES)
            set->medium_count++;
        if ((r >> 8) % 3 == 0 && scratch_count < HO_BLOCKS / 4) {
            scratch[scratch_count] = checked_malloc(8 + (r >> 12) % 400);
            memset(scratch[scratch_count], 0x77, 8);
            scratch_count++;
        }
    }
    for (size_t i = 0; i < scratch_count; i++)
        free(scratch[i]);
    return set;
}

static void test_handover_and_exit(void)
{
    class_totals_t start = totals_now();
    size_t corrupt_before = atomic_load(&corrupt_blocks);
    size_t arenas_warm = 0, arenas_max_late = 0, mapped_warm = 0, mapped_max_late = 0;
    size_t bad_in_use = 0, bad_after_free = 0, bad_heaps = 0;
    for (int round = 0; round < HO_ROUNDS; round++) {
        class_totals_t before = totals_now();
        pthread_t threads[HO_THREADS];
        ho_set_t *sets[HO_THREADS];
        for (int t = 0; t < HO_THREADS; t++)
            start_thread(&threads[t], ho_worker, (void *)(uintptr_t)(round * HO_THREADS + t + 1));
        for (int t = 0; t < HO_THREADS; t++)
            pthread_join(threads[t], (void **)&sets[t]);

        /* The threads are gone; their blocks live on in abandoned pools. */
        class_totals_t orphaned = totals_now();
        size_t small_handed = 0, medium_handed = 0;
        for (int t = 0; t < HO_THREADS; t++) {
            small_handed += sets[t]->small_count;
            medium_handed += sets[t]->medium_count + 1; /* the set itself is medium */
        }
        if (orphaned.heaps_live != before.heaps_live) {
            if (bad_heaps++ == 0)
                CHECK(orphaned.heaps_live == before.heaps_live,
                      "round %d: heaps_live %zu before starting the threads, %zu after joining them", round,
                      before.heaps_live, orphaned.heaps_live);
        }
        if (orphaned.small_used < before.small_used + small_handed
            || orphaned.small_used > before.small_used + small_handed + 64
            || orphaned.medium_used < before.medium_used + medium_handed
            || orphaned.medium_used > before.medium_used + medium_handed + 8) {
            if (bad_in_use++ == 0)
                CHECK(false,
                      "round %d: with %zu small and %zu medium blocks handed over by exited threads, "
                      "small in use went %zu -> %zu and medium %zu -> %zu",
                      round, small_handed, medium_handed, before.small_used, orphaned.small_used,
                      before.medium_used, orphaned.medium_used);
        }

        /* Free them interleaved across the sets, verifying each. */
        for (size_t i = 0; i < HO_BLOCKS; i++)
            for (int t = 0; t < HO_THREADS; t++) {
                tagged_block_t *entry = &sets[t]->blocks[(i * 7 + (size_t)t) % HO_BLOCKS];
                if (!pym_owns(entry->block))
                    atomic_fetch_add(&corrupt_blocks, 1);
                verify_and_free(entry->block, entry->size, entry->tag);
            }
        for (int t = 0; t < HO_THREADS; t++)
            free(sets[t]);
        /* This thread's cache keeps up to 64 freed blocks per class, each
         * pinning its pool: return them, so that what is measured is what
         * the exited threads left behind. */
        pym_flush_thread_cache();

        class_totals_t after = totals_now();
        if (size_distance(after.small_used, start.small_used) > 64
            || size_distance(after.medium_used, start.medium_used) > 8 || after.large_count != start.large_count) {
            if (bad_after_free++ == 0)
                CHECK(false,
                      "round %d: after freeing everything: small in use %zu (start %zu), medium %zu (start %zu), "
                      "large %zu (start %zu)",
                      round, after.small_used, start.small_used, after.medium_used, start.medium_used,
                      after.large_count, start.large_count);
        }
        if (round == 4) {
            arenas_warm = after.arenas_now;
            mapped_warm = after.mapped_bytes;
        }
        if (round > 4) {
            if (after.arenas_now > arenas_max_late)
                arenas_max_late = after.arenas_now;
            if (after.mapped_bytes > mapped_max_late)
                mapped_max_late = after.mapped_bytes;
        }
    }
    class_totals_t end = totals_now();
    printf("handover: arenas_now %zu at start, %zu after round 5, at most %zu later; mapped %zu -> %zu (max %zu)\n",
           start.arenas_now, arenas_warm, arenas_max_late, start.mapped_bytes, mapped_warm, mapped_max_late);
    CHECK(bad_in_use == 0, "%zu rounds with wrong in-use figures for orphaned blocks", bad_in_use);
    CHECK(bad_after_free == 0, "%zu rounds where memory was not reclaimed", bad_after_free);
    CHECK(bad_heaps == 0, "%zu rounds where heaps_live did not drop", bad_heaps);
    CHECK(end.heaps_live == start.heaps_live, "heaps_live %zu at start, %zu at the end", start.heaps_live,
          end.heaps_live);
    CHECK(arenas_max_late <= arenas_warm + 8,
          "arenas_now keeps growing: %zu after round 5, up to %zu in rounds 6..%d", arenas_warm, arenas_max_late,
          HO_ROUNDS);
    CHECK(mapped_max_late <= mapped_warm + 8 * 1024 * 1024,
          "mapped bytes keep growing: %zu after round 5, up to %zu later", mapped_warm, mapped_max_late);
    CHECK(atomic_load(&corrupt_blocks) == corrupt_before, "%zu handed-over blocks corrupted or not owned",
          atomic_load(&corrupt_blocks) - corrupt_before);
}

/* ---- 3. many short-lived threads ----------------------------------------------------------- */
#define SL_THREADS 200
#define SL_CONCURRENT 8
#define SL_OPERATIONS 10000
#define SL_WINDOW 32
#define SL_EXCHANGE_SLOTS 64

static struct {
    pthread_mutex_t lock;
    tagged_block_t slots[SL_EXCHANGE_SLOTS];
} sl_exchange = {.lock = PTHREAD_MUTEX_INITIALIZER};
static atomic_size_t sl_operations, sl_exchanged;

static size_t sl_pick_size(uint64_t r)
{
    if (r % 64 == 0)
        return 513 + (r >> 16) % (16 * 1024); /* medium */
    return 8 + (r >> 16) % 1017;              /* 8..1024 */
}

/* Threads run 8 at a time and a new one starts as soon as one finishes, so
 * thread starts (which reuse the heaps of exited threads) overlap with
 * thread exits all the time. */
static thread_slots_t sl_slots = THREAD_SLOTS_INITIALIZER;
_Static_assert(SL_CONCURRENT <= THREAD_SLOTS_MAX, "more threads than slots");

static void *sl_worker(void *arg)
{
    uint64_t id = (uintptr_t)arg;
    int slot_index = (int)(id % SL_CONCURRENT);
    uint64_t rng = 0x51ED270B27AE2F33ULL ^ (id * 0x100000001B3ULL);
    tagged_block_t window[SL_WINDOW] = {{0}};
    uint64_t counter = 0;
    size_t exchanged = 0;
    for (int op = 0; op < SL_OPERATIONS; op++) {
        uint64_t r = rng_next(&rng);
        tagged_block_t *slot = &window[r % SL_WINDOW];
        if (slot->block != NULL)
            verify_and_free(slot->block, slot->size, slot->tag);
        slot->size = sl_pick_size(r);
        slot->block = checked_malloc(slot->size);
        slot->tag = (id << 40) | ++counter;
        pattern_fill(slot->block, slot->size, slot->tag);
        if ((r >> 8) % 8 == 0) {
            /* Swap this block with whatever another thread left. */
            tagged_swap(&sl_exchange.lock, &sl_exchange.slots[(r >> 24) % SL_EXCHANGE_SLOTS], slot);
            exchanged++;
        }
    }
    for (int i = 0; i < SL_WINDOW; i++)
        if (window[i].block != NULL)
            verify_and_free(window[i].block, window[i].size, window[i].tag);
    atomic_fetch_add(&sl_operations, SL_OPERATIONS);
    atomic_fetch_add(&sl_exchanged, exchanged);
    thread_slots_done(&sl_slots, slot_index);
    return NULL;
}

static void test_short_lived_threads(void)
{
    class_totals_t before = totals_now();
    size_t corrupt_before = atomic_load(&corrupt_blocks);
    double start = now_seconds();
    pthread_t threads[SL_CONCURRENT];
    int started = 0, joined = 0;
    for (; started < SL_CONCURRENT; started++)
        start_thread(&threads[started], sl_worker, (void *)(uintptr_t)started);
    while (joined < SL_THREADS) {
        int slot = thread_slots_wait(&sl_slots, SL_CONCURRENT);
        pthread_join(threads[slot], NULL);
        joined++;
        if (started < SL_THREADS) {
            /* Thread ids keep id % SL_CONCURRENT == slot. */
            uint64_t id = (uint64_t)(started / SL_CONCURRENT) * SL_CONCURRENT + (uint64_t)slot + SL_CONCURRENT;
            start_thread(&threads[slot], sl_worker, (void *)(uintptr_t)id);
            started++;
        }
    }
    /* Blocks still in the exchange belong to exited threads. */
    for (int i = 0; i < SL_EXCHANGE_SLOTS; i++) {
        tagged_block_t *shared = &sl_exchange.slots[i];
        if (shared->block != NULL)
            verify_and_free(shared->block, shared->size, shared->tag);
        shared->block = NULL;
    }
    printf("short-lived threads: %zu operations, %zu blocks exchanged, %.2f s\n", atomic_load(&sl_operations),
           atomic_load(&sl_exchanged), now_seconds() - start);
    CHECK(atomic_load(&sl_operations) == (size_t)SL_THREADS * SL_OPERATIONS, "%zu operations ran",
          atomic_load(&sl_operations));
    CHECK(atomic_load(&sl_exchanged) > (size_t)SL_THREADS * SL_OPERATIONS / 16, "only %zu blocks exchanged",
          atomic_load(&sl_exchanged));
    CHECK(atomic_load(&corrupt_blocks) == corrupt_before, "%zu blocks corrupted",
          atomic_load(&corrupt_blocks) - corrupt_before);
    class_totals_t after = totals_now();
    CHECK(size_distance(after.small_used, before.small_used) <= 64, "small blocks in use: %zu before, %zu after",
          before.small_used, after.small_used);
    CHECK(size_distance(after.medium_used, before.medium_used) <= 8, "medium blocks in use: %zu before, %zu after",
          before.medium_used, after.medium_used);
    CHECK(after.heaps_live == before.heaps_live, "heaps_live %zu before, %zu after 200 threads", before.heaps_live,
          after.heaps_live);
}

/* ---- 4. heaps_live counts live threads --------------------------------------------------------- */
#define HL_THREADS 6

static pthread_barrier_t hl_started, hl_release;

static void *hl_worker(void *arg)
{
    uint64_t tag = 0x4C00 + (uintptr_t)arg;
    void *block = checked_malloc(48); /* the first malloc gives the thread its heap */
    pattern_fill(block, 48, tag);
    pthread_barrier_wait(&hl_started);
    pthread_barrier_wait(&hl_release);
    verify_and_free(block, 48, tag);
    return NULL;
}

static void test_heaps_live(void)
{
    void *mine = checked_malloc(16); /* the main thread has a heap */
    class_totals_t before = totals_now();
    CHECK(before.heaps_live >= 1, "heaps_live is %zu while the main thread allocates", before.heaps_live);
    REQUIRE(pthread_barrier_init(&hl_started, NULL, HL_THREADS + 1) == 0);
    REQUIRE(pthread_barrier_init(&hl_release, NULL, HL_THREADS + 1) == 0);
    pthread_t threads[HL_THREADS];
    for (int t = 0; t < HL_THREADS; t++)
        start_thread(&threads[t], hl_worker, (void *)(uintptr_t)t);
    pthread_barrier_wait(&hl_started);
    class_totals_t during = totals_now();
    CHECK(during.heaps_live >= HL_THREADS + 1, "heaps_live %zu with %d threads and main alive", during.heaps_live,
          HL_THREADS);
    CHECK(during.heaps_live == before.heaps_live + HL_THREADS, "heaps_live %zu -> %zu with %d more threads",
          before.heaps_live, during.heaps_live, HL_THREADS);
    pthread_barrier_wait(&hl_release);
    for (int t = 0; t < HL_THREADS; t++)
        pthread_join(threads[t], NULL);
    class_totals_t after = totals_now();
    CHECK(after.heaps_live == before.heaps_live, "heaps_live %zu after joining (was %zu before the threads)",
          after.heaps_live, before.heaps_live);
    pthread_barrier_destroy(&hl_started);
    pthread_barrier_destroy(&hl_release);
    free(mine);
}

/* ---- 5. allocation in thread-exit destructors ------------------------------------------------- */
/* pymalloc retires a thread's heap in its pthread key destructor, created at
 * start-up, so the destructors of keys created later run after it: they
 * free blocks of the retired heap and allocate from the shared heap.  Each
 * worker leaves a block for such a destructor, which verifies and frees it,
 * then allocates more: half freed on the spot, half handed to main. */
#define LATE_THREADS 16
#define LATE_BLOCKS 200

static pthread_key_t late_key;
static atomic_size_t late_destructor_runs;
static struct {
    pthread_mutex_t lock;
    tagged_block_t blocks[LATE_THREADS * LATE_BLOCKS];
    size_t count;
} late_handed = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void late_destructor(void *value)
{
    tagged_block_t *carried = value;
    verify_and_free(carried->block, carried->size, carried->tag);
    uint64_t id = carried->tag >> 40;
    free(carried);
    uint64_t rng = 0x1A7E0000ULL + id;
    tagged_block_t local[LATE_BLOCKS / 2];
    size_t local_count = 0;
    for (int i = 0; i < LATE_BLOCKS; i++) {
        uint64_t r = rng_next(&rng);
        tagged_block_t entry = {.size = i % 40 == 0 ? 513 + r % 9000 : 8 + r % 505, .tag = (id << 40) | (0x100000 + i)};
        entry.block = checked_malloc(entry.size);
        pattern_fill(entry.block, entry.size, entry.tag);
        if (i % 2 == 0) {
            local[local_count++] = entry;
        } else {
            pthread_mutex_lock(&late_handed.lock);
            late_handed.blocks[late_handed.count++] = entry;
            pthread_mutex_unlock(&late_handed.lock);
        }
    }
    for (size_t i = 0; i < local_count; i++)
        verify_and_free(local[i].block, local[i].size, local[i].tag);
    atomic_fetch_add(&late_destructor_runs, 1);
}

static void *late_worker(void *arg)
{
    uint64_t id = (uintptr_t)arg;
    /* Ordinary work first, so the heap has pools to retire. */
    void *scratch[64];
    for (int i = 0; i < 64; i++) {
        scratch[i] = checked_malloc(16 + (size_t)i * 8);
        memset(scratch[i], 0x21, 16);
    }
    tagged_block_t *carried = checked_malloc(sizeof(*carried));
    carried->size = 200 + id;
    carried->tag = (id << 40) | 1;
    carried->block = checked_malloc(carried->size);
    pattern_fill(carried->block, carried->size, carried->tag);
    for (int i = 0; i < 64; i += 2)
        free(scratch[i]);
    for (int i = 1; i < 64; i += 2)
        free(scratch[i]);
    pthread_setspecific(late_key, carried);
    return NULL;
}

static void test_exit_destructors(void)
{
    void *volatile warm = checked_malloc(8); /* pymalloc is initialised: its key comes first */
    free(warm);
    REQUIRE(pthread_key_create(&late_key, late_destructor) == 0);
    class_totals_t before = totals_now();
    size_t corrupt_before = atomic_load(&corrupt_blocks);
    for (int wave = 0; wave < LATE_THREADS / 4; wave++) {
        pthread_t threads[4];
        for (int t = 0; t < 4; t++)
            start_thread(&threads[t], late_worker, (void *)(uintptr_t)(wave * 4 + t + 1));
        for (int t = 0; t < 4; t++)
            pthread_join(threads[t], NULL);
    }
    CHECK(atomic_load(&late_destructor_runs) == LATE_THREADS, "%zu of %d exit destructors ran",
          atomic_load(&late_destructor_runs), LATE_THREADS);
    class_totals_t orphaned = totals_now();
    CHECK(orphaned.heaps_live == before.heaps_live, "heaps_live %zu before, %zu after the threads exited",
          before.heaps_live, orphaned.heaps_live);
    CHECK(late_handed.count == (size_t)LATE_THREADS * LATE_BLOCKS / 2, "%zu blocks handed over by destructors",
          late_handed.count);
    for (size_t i = 0; i < late_handed.count; i++) {
        tagged_block_t *entry = &late_handed.blocks[i];
        if (!pym_owns(entry->block))
            atomic_fetch_add(&corrupt_blocks, 1);
        verify_and_free(entry->block, entry->size, entry->tag);
    }
    late_handed.count = 0;
    CHECK(atomic_load(&corrupt_blocks) == corrupt_before, "%zu blocks from exit destructors corrupted or not owned",
          atomic_load(&corrupt_blocks) - corrupt_before);
    /* Everything is freed: the memory must be reusable and counted free now,
     * not only after some later thread happens to allocate while exiting. */
    class_totals_t after = totals_now();
    CHECK(size_distance(after.small_used, before.small_used) <= 64,
          "small blocks in use: %zu before, %zu after everything was freed (frees of shared-heap blocks "
          "not reclaimed?)",
          before.small_used, after.small_used);
    CHECK(size_distance(after.medium_used, before.medium_used) <= 8,
          "medium blocks in use: %zu before, %zu after everything was freed", before.medium_used, after.medium_used);

    /* One more exiting thread whose destructor allocates: whatever was still
     * pending must be collected by then at the latest. */
    late_handed.count = 0;
    pthread_t last;
    start_thread(&last, late_worker, (void *)(uintptr_t)(LATE_THREADS + 1));
    pthread_join(last, NULL);
    for (size_t i = 0; i < late_handed.count; i++)
        verify_and_free(late_handed.blocks[i].block, late_handed.blocks[i].size, late_handed.blocks[i].tag);
    size_t pending = late_handed.count + LATE_BLOCKS / 2; /* freed by main and by the destructor itself */
    late_handed.count = 0;
    class_totals_t settled = totals_now();
    CHECK(settled.small_used + settled.medium_used <= before.small_used + before.medium_used + pending + 64,
          "blocks in use: %zu at the start, %zu after the next exit-time allocation",
          before.small_used + before.medium_used, settled.small_used + settled.medium_used);
    CHECK(atomic_load(&corrupt_blocks) == corrupt_before, "blocks corrupted in the last round");
    pthread_key_delete(late_key);
}

/* Each part runs in a child forked from the (then single-threaded) main
 * thread. */
static const test_section_t sections[] = {
    {"producer/consumer", test_producer_consumer},
    {"handover and exit", test_handover_and_exit},
    {"short-lived threads", test_short_lived_threads},
    {"heaps_live", test_heaps_live},
    {"exit destructors", test_exit_destructors},
};

static void check_no_failed_allocations(const char *name)
{
    CHECK(atomic_load(&failed_allocations) == 0, "%s: %zu failed allocations", name,
          atomic_load(&failed_allocations));
}

/* `api_threads N` runs part N (1..5, numbered as above) in this process
 * (for debuggers). */
int main(int argc, char **argv)
{
    void *volatile first = checked_malloc(16); /* the main thread gets its heap before any baseline */
    free(first);
    return sections_main(argc, argv, sections, (int)(sizeof(sections) / sizeof(sections[0])),
                         check_no_failed_allocations, 60);
}
