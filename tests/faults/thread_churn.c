/*
 * thread_churn.c -- 100,000 short-lived threads allocating and freeing, many
 * of their blocks freed by other threads; memory must stay bounded (no leak
 * of per-thread state: heaps, caches, pools).  Linked with -lpymalloc.
 *
 * Usage: thread_churn [--threads N] [--concurrent N] [--bound-mib N] [--rss-bound-mib N]
 *        (defaults 100000, 4, 8, the --bound-mib value; sanitizer builds raise
 *        the RSS bound: their runtimes keep freed memory in quarantine)
 *
 * Threads run CONCURRENT at a time (testlib's thread slots): when one ends,
 * the main thread joins it and starts the next.  Each thread
 *   - allocates BLOCKS pattern-filled blocks (mostly small, some medium, a
 *     large one now and then), with malloc, calloc, realloc and
 *     posix_memalign;
 *   - frees half of them itself, after checking them;
 *   - swaps HANDOFF of them with the shared mailbox: the blocks it takes out
 *     were left by earlier threads, most of them exited since (frees into
 *     abandoned pools, adoption); it checks and frees them;
 *   - frees the rest and exits.
 * The main thread also takes blocks out of the mailbox now and then and
 * frees them (cross-thread frees into heaps of exited threads).
 *
 * Measured: VmRSS and pymalloc's mapped bytes after WARMUP threads and at
 * the end (mailbox still full in both), each after a trim gave back what is
 * only cached (see settle); asserted: the end exceeds the
 * warm-up by at most --bound-mib (default 8 MiB) in RSS and in mapped bytes,
 * the number of live thread heaps is back to its value before the first
 * thread, no pattern was damaged and no allocation failed, and the blocks in
 * use outside the mailbox are as many at the end as after the warm-up (the
 * main thread's stdio buffer, and the DTVs glibc keeps with its cache of
 * thread stacks: one per cached stack, so not before the first thread).  A
 * leak of per-thread state -- a heap (~50 KiB mapped) or cached pools --
 * exceeds the RSS bound many times over; a leak of blocks, however small,
 * shows in that count.
 */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "faults.h"
#include "pymalloc.h"

#define BLOCKS 48
#define HANDOFF 8
#define MAILBOX_SLOTS 256
#define WARMUP 5000
#define STACK_SIZE (256 * 1024) /* small stacks: glibc's 40 MiB stack cache keeps every one (and its DTV) */

typedef struct block {
    void *ptr;
    size_t size;
    uint64_t tag;
} block_t;

static pthread_mutex_t mailbox_lock = PTHREAD_MUTEX_INITIALIZER;
static block_t mailbox[MAILBOX_SLOTS];
static atomic_ullong corrupt, failed, cross_frees, next_tag = 1;
static thread_slots_t slots = THREAD_SLOTS_INITIALIZER;

static size_t pick_size(uint64_t r)
{
    unsigned kind = (unsigned)(r % 1000);
    if (kind < 850)
        return (r >> 16) % 513;
    if (kind < 998)
        return 513 + (r >> 16) % (16 * 1024);
    return 128 * 1024 + 1 + (r >> 16) % (512 * 1024);
}

static void check_and_free(block_t *b)
{
    if (b->ptr == NULL)
        return;
    if (!sampled_ok(b->ptr, b->size, b->tag) || malloc_usable_size(b->ptr) < b->size)
        atomic_fetch_add(&corrupt, 1);
    free(b->ptr);
    b->ptr = NULL;
}

static void swap_with_mailbox(block_t *mine, size_t slot)
{
    pthread_mutex_lock(&mailbox_lock);
    block_t theirs = mailbox[slot];
    mailbox[slot] = *mine;
    pthread_mutex_unlock(&mailbox_lock);
    *mine = theirs;
}

typedef struct work {
    int slot;
    uint64_t seed;
} work_t;

static void *thread_main(void *arg)
{
    work_t *work = arg;
    uint64_t rng = work->seed;
    block_t blocks[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        uint64_t r = rng_next(&rng);
        size_t size = pick_size(r);
        void *p;
        switch ((r >> 8) % 8) {
        case 0:
            p = calloc(1, size);
            if (p != NULL && !sampled_zero(p, size))
                atomic_fetch_add(&corrupt, 1);
            break;
        case 1:
            p = NULL;
            if (posix_memalign(&p, 64, size) != 0 || ((uintptr_t)p & 63) != 0)
                p = NULL;
            break;
        case 2:
            p = realloc(malloc(16), size); /* realloc from another class */
            break;
        default:
            p = malloc(size);
            break;
        }
        blocks[i].ptr = p;
        blocks[i].size = size;
        blocks[i].tag = atomic_fetch_add_explicit(&next_tag, 1, memory_order_relaxed);
        if (p == NULL && (size != 0 || ((r >> 8) % 8) != 2)) {
            atomic_fetch_add(&failed, 1);
            continue;
        }
        if (p != NULL)
            sampled_fill(p, size, blocks[i].tag);
    }
    for (int i = 0; i < BLOCKS; i += 2)
        check_and_free(&blocks[i]);
    unsigned long long cross = 0;
    for (int i = 1; i < 2 * HANDOFF; i += 2) {
        swap_with_mailbox(&blocks[i], (size_t)(rng_next(&rng) % MAILBOX_SLOTS));
        cross += blocks[i].ptr != NULL;
        check_and_free(&blocks[i]); /* a block of an earlier thread */
    }
    for (int i = 0; i < BLOCKS; i++)
        check_and_free(&blocks[i]);
    atomic_fetch_add(&cross_frees, cross);
    thread_slots_done(&slots, work->slot);
    return NULL;
}

typedef struct snapshot {
    size_t rss_kib;
    size_t mapped_bytes;
    size_t heaps_live;
    size_t arenas_now;
} snapshot_t;

/* Return the main thread's cached blocks to their pools, and collect the
 * blocks other threads freed into pools the main thread owns (it adopts
 * abandoned pools when it frees into them): they wait on its remote list,
 * counted as in use, until its next refill -- which this malloc makes, every
 * bin being empty after the flush.  Then give back what is only cached:
 * free large extents and empty chunks are kept until they decay (1 s by
 * default), so without the trim a snapshot would measure how much the last
 * second freed -- far more at the end than after the short warm-up -- not
 * what is held.  Memory that leaks (a heap, pools of a thread that is gone)
 * is out of the trim's reach and still shows. */
static void settle(void)
{
    pym_flush_thread_cache();
    void *volatile refill = malloc(1); /* volatile: the compiler may not elide the pair */
    free(refill);
    pym_flush_thread_cache();
    pym_trim();
}

static snapshot_t take_snapshot(void)
{
    settle();
    pym_stats_t stats;
    pym_stats_get(&stats);
    snapshot_t s = {rss_kib(), stats.mapped_bytes, stats.heaps_live, stats.arenas_now};
    return s;
}

static size_t mailbox_count(void)
{
    size_t count = 0;
    pthread_mutex_lock(&mailbox_lock);
    for (int i = 0; i < MAILBOX_SLOTS; i++)
        count += mailbox[i].ptr != NULL;
    pthread_mutex_unlock(&mailbox_lock);
    return count;
}

int main(int argc, char **argv)
{
    long threads = 100000, concurrent = 4, bound_mib = 8, rss_bound_mib = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atol(argv[++i]);
        else if (strcmp(argv[i], "--concurrent") == 0 && i + 1 < argc)
            concurrent = atol(argv[++i]);
        else if (strcmp(argv[i], "--bound-mib") == 0 && i + 1 < argc)
            bound_mib = atol(argv[++i]);
        else if (strcmp(argv[i], "--rss-bound-mib") == 0 && i + 1 < argc) /* sanitizers: their own memory grows */
            rss_bound_mib = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--threads N] [--concurrent N] [--bound-mib N] [--rss-bound-mib N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (rss_bound_mib < 0)
        rss_bound_mib = bound_mib;
    REQUIRE(threads > WARMUP && concurrent > 0 && concurrent <= THREAD_SLOTS_MAX && bound_mib > 0,
            "bad arguments (--threads must exceed %d)", WARMUP);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("thread_churn: %ld threads, %ld at a time, bounds: RSS %ld MiB, mapped %ld MiB\n", threads, concurrent,
           rss_bound_mib, bound_mib);
    snapshot_t baseline = take_snapshot();
    size_t baseline_blocks = blocks_in_use(), warm_blocks = 0;
    snapshot_t warm = baseline;
    double start = now_seconds(), warm_time = start;

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, STACK_SIZE);
    static work_t work[THREAD_SLOTS_MAX];
    pthread_t ids[THREAD_SLOTS_MAX];
    uint64_t rng = 0xC4A7;
    long started = 0, finished = 0;
    for (; started < concurrent; started++) {
        work[started] = (work_t){(int)started, rng_next(&rng)};
        REQUIRE(pthread_create(&ids[started], &attr, thread_main, &work[started]) == 0, "pthread_create");
    }
    while (finished < threads) {
        int slot = thread_slots_wait(&slots, (int)concurrent);
        REQUIRE(pthread_join(ids[slot], NULL) == 0, "pthread_join");
        finished++;
        if (finished % 16 == 0) { /* the main thread frees an exited thread's block */
            block_t none = {NULL, 0, 0};
            swap_with_mailbox(&none, (size_t)(rng_next(&rng) % MAILBOX_SLOTS));
            check_and_free(&none);
        }
        if (finished == WARMUP) {
            /* Every thread started so far has been joined but concurrent - 1:
             * wait for those too, so both snapshots see no thread alive. */
            for (int left = (int)concurrent - 1; left > 0; left--) {
                int other = thread_slots_wait(&slots, (int)concurrent);
                REQUIRE(pthread_join(ids[other], NULL) == 0, "pthread_join");
                finished++;
            }
            warm = take_snapshot();
            warm_blocks = blocks_in_use() - mailbox_count();
            warm_time = now_seconds();
            started = finished;
            for (int s = 0; s < concurrent && started < threads; s++, started++) {
                work[s] = (work_t){s, rng_next(&rng)};
                REQUIRE(pthread_create(&ids[s], &attr, thread_main, &work[s]) == 0, "pthread_create");
            }
            continue;
        }
        if (started < threads) {
            work[slot] = (work_t){slot, rng_next(&rng)};
            REQUIRE(pthread_create(&ids[slot], &attr, thread_main, &work[slot]) == 0, "pthread_create");
            started++;
        }
    }
    snapshot_t end = take_snapshot();
    double elapsed = now_seconds() - start;

    printf("thread_churn: %ld threads in %.1f s (%.0f threads/s); %llu blocks freed by a later thread\n", finished,
           elapsed, (double)finished / elapsed, atomic_load(&cross_frees));
    printf("thread_churn: %-22s %10s %14s %11s %11s\n", "", "VmRSS KiB", "mapped bytes", "heaps live",
           "chunks now");
    printf("thread_churn: %-22s %10zu %14zu %11zu %11zu\n", "before any thread", baseline.rss_kib,
           baseline.mapped_bytes, baseline.heaps_live, baseline.arenas_now);
    printf("thread_churn: %-22s %10zu %14zu %11zu %11zu\n", "after warm-up threads", warm.rss_kib, warm.mapped_bytes,
           warm.heaps_live, warm.arenas_now);
    printf("thread_churn: %-22s %10zu %14zu %11zu %11zu\n", "at the end", end.rss_kib, end.mapped_bytes,
           end.heaps_live, end.arenas_now);
    long rss_growth = (long)end.rss_kib - (long)warm.rss_kib;
    long mapped_growth = (long)end.mapped_bytes - (long)warm.mapped_bytes;
    printf("thread_churn: growth over the last %ld threads (%.1f s): RSS %+ld KiB (bound %ld MiB), mapped %+ld KiB "
           "(bound %ld MiB)\n",
           finished - WARMUP, now_seconds() - warm_time, rss_growth, rss_bound_mib, mapped_growth / 1024, bound_mib);

    CHECK(rss_growth <= rss_bound_mib * 1024, "RSS grew by %ld KiB after warm-up (bound %ld MiB)", rss_growth,
          rss_bound_mib);
    CHECK(mapped_growth <= bound_mib * 1024 * 1024, "pymalloc's mapped bytes grew by %ld KiB after warm-up",
          mapped_growth / 1024);
    CHECK(end.heaps_live == baseline.heaps_live, "%zu thread heaps live at the end, %zu before the threads",
          end.heaps_live, baseline.heaps_live);
    CHECK(atomic_load(&corrupt) == 0, "%llu blocks corrupted", atomic_load(&corrupt));
    CHECK(atomic_load(&failed) == 0, "%llu allocations failed", atomic_load(&failed));
    CHECK(atomic_load(&cross_frees) > (unsigned long long)threads, "too few cross-thread frees (%llu)",
          atomic_load(&cross_frees));

    size_t before_mailbox = blocks_in_use();
    size_t in_mailbox = 0;
    for (int i = 0; i < MAILBOX_SLOTS; i++) {
        in_mailbox += mailbox[i].ptr != NULL;
        check_and_free(&mailbox[i]);
    }
    size_t after = blocks_in_use();
    printf("thread_churn: blocks in use outside the mailbox: %zu before any thread, %zu after warm-up, %zu at the end "
           "(%zu with the %zu of the mailbox)\n",
           baseline_blocks, warm_blocks, after, before_mailbox, in_mailbox);
    CHECK(after + in_mailbox == before_mailbox, "the statistics count %zu blocks in use for %zu in the mailbox",
          before_mailbox - after, in_mailbox);
    CHECK(after == warm_blocks, "%zu blocks in use at the end, %zu after warm-up: %ld leaked by %ld threads", after,
          warm_blocks, (long)after - (long)warm_blocks, finished - WARMUP);
    CHECK(after <= baseline_blocks + (size_t)concurrent + 2,
          "%zu blocks in use at the end, %zu before the first thread (glibc's stack cache explains %ld at most)", after,
          baseline_blocks, concurrent + 2);
    CHECK(atomic_load(&corrupt) == 0, "mailbox blocks corrupted");
    return check_finish();
}
