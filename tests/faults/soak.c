/*
 * soak.c -- long mixed workload with periodic whole-heap consistency
 * checks (`make soak`, tests/faults/soak.sh: a debug build, for hours).
 * Linked with -lpymalloc: malloc and free are pymalloc's.
 *
 * Usage: soak [--seconds N] [--threads N] [--check-every S]
 *        (defaults 60, 4, 10)
 *
 * SLOTS shared slots hold live blocks.  Worker threads pick slots at random
 * and take the block out (a CAS marks the slot busy), check its pattern and
 * usable size, then free it, realloc it or keep it, and may put a fresh
 * block back: malloc, calloc (checked zero), realloc, reallocarray,
 * posix_memalign, aligned_alloc, memalign, valloc; sizes across the small,
 * medium and large classes and, rarely, past the 64 MiB direct-mapping
 * threshold.  Any thread frees any block, so most frees are cross-thread,
 * and workers exit after a random number of operations and are replaced, so
 * heaps are abandoned, adopted and reused all the time.  Now and then a
 * worker flushes its cache or calls malloc_trim.
 *
 * Every --check-every seconds the workers are stopped and joined, and the
 * main thread checks the whole heap against the slots:
 *   - every block's pattern and usable size;
 *   - pymalloc's statistics, exact with no thread running: per class, the
 *     blocks in use (pools) equal the slots' blocks of that class plus those
 *     in use before the first worker (the main thread's stdio buffer and the
 *     DTVs glibc keeps with its cached thread stacks, a handful); large
 *     blocks likewise; thread heaps live back to their number before the
 *     workers;
 *   - a fork: the child checks every block, frees half of them, allocates,
 *     and exits 0.
 * In a debug build (./configure --enable-debug) pymalloc itself also checks
 * every heap on each slow path and every free thoroughly.
 *
 * Exits 0 when every check held, 1 otherwise (the first failures are
 * printed; the run stops at the first failed checkpoint).
 */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "faults.h"
#include "pymalloc.h"

#define SLOTS 4096
#define MAX_THREADS 16
#define STACK_SIZE (256 * 1024)   /* glibc caches every stack (and its DTV): a constant set */
#define MIN_LIFETIME 20000        /* operations of a worker before it exits */
#define MAX_LIFETIME 400000
#define DIRECT_MAX 2              /* blocks past the direct-mapping threshold live at once */
#define MEDIUM_MAX (128 * 1024)
#define MAX_REPORTS 20

#define BUSY ((void *)1)

typedef struct slot {
    _Atomic(void *) ptr;          /* NULL, BUSY (taken by a worker), or a block */
    size_t size;                  /* owned by whoever holds the slot */
    uint64_t tag;
} slot_t;

static slot_t slots[SLOTS];
static atomic_bool stop;
static atomic_int direct_live;
static atomic_ullong ops_total, frees_total, allocs_total, reallocs_total, workers_started;
static atomic_ullong corrupt, alloc_failed, next_tag = 1;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static int reports;

static void report(const char *format, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *format, ...)
{
    pthread_mutex_lock(&report_lock);
    if (reports++ < MAX_REPORTS) {
        va_list args;
        va_start(args, format);
        fputs("soak: ", stderr);
        vfprintf(stderr, format, args);
        fputc('\n', stderr);
        va_end(args);
    }
    pthread_mutex_unlock(&report_lock);
}

/* ---- sizes and allocation ------------------------------------------------------------ */
static size_t pick_size(uint64_t r, bool *direct)
{
    unsigned kind = (unsigned)(r % 10000);
    *direct = false;
    if (kind < 7000)
        return (r >> 16) % 513;                      /* small */
    if (kind < 9880)
        return 513 + (r >> 16) % (MEDIUM_MAX - 512);  /* medium */
    if (kind < 9998)
        return MEDIUM_MAX + 1 + (r >> 16) % (2u << 20); /* large, up to 2 MiB */
    *direct = true;
    return ((size_t)64 << 20) + (r >> 16) % (16u << 20); /* past the direct threshold */
}

static bool block_ok(void *p, size_t size, uint64_t tag)
{
    return sampled_ok(p, size, tag) && malloc_usable_size(p) >= size;
}

/* A fresh block of `size` bytes by one of the allocation functions; NULL on
 * failure (counted). */
static void *allocate(size_t size, uint64_t r)
{
    void *p = NULL;
    size_t alignment = (size_t)1 << (4 + (r >> 40) % 14); /* 16 B .. 128 KiB: served by the classes */
    switch ((r >> 32) % 10) {
    case 0:
        p = calloc(1, size);
        if (p != NULL && !sampled_zero(p, size)) {
            atomic_fetch_add(&corrupt, 1);
            report("calloc(1, %zu) = %p is not zeroed", size, p);
        }
        break;
    case 1:
        if (posix_memalign(&p, alignment, size) != 0)
            p = NULL;
        break;
    case 2:
        p = aligned_alloc(alignment, size);
        break;
    case 3:
        p = memalign(alignment, size);
        break;
    case 4:
        p = valloc(size);
        alignment = 4096;
        break;
    case 5:
        p = reallocarray(NULL, 1, size);
        break;
    case 6:
        p = realloc(NULL, size);
        break;
    default:
        p = malloc(size);
        break;
    }
    if (p == NULL) {
        atomic_fetch_add(&alloc_failed, 1);
        report("allocation of %zu bytes failed (errno %d)", size, errno);
        return NULL;
    }
    if ((r >> 32) % 10 >= 1 && (r >> 32) % 10 <= 4 && ((uintptr_t)p & (alignment - 1)) != 0) {
        atomic_fetch_add(&corrupt, 1);
        report("aligned allocation of %zu bytes = %p not aligned to %zu", size, p, alignment);
    }
    return p;
}

/* ---- workers --------------------------------------------------------------------------- */
static void *worker_main(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ULL + 1;
    uint64_t lifetime = MIN_LIFETIME + rng_next(&rng) % (MAX_LIFETIME - MIN_LIFETIME);
    unsigned long long ops = 0, frees = 0, allocs = 0, reallocs = 0;
    while (ops < lifetime && !atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint64_t r = rng_next(&rng);
        ops++;
        if (r % 4096 == 0) {
            pym_flush_thread_cache();
            continue;
        }
        if (r % 65536 == 1) {
            malloc_trim(0);
            continue;
        }
        slot_t *s = &slots[(r >> 8) % SLOTS];
        void *p = atomic_load_explicit(&s->ptr, memory_order_relaxed);
        if (p == BUSY || !atomic_compare_exchange_strong(&s->ptr, &p, BUSY))
            continue; /* another worker has it */
        if (p != NULL) {
            if (!block_ok(p, s->size, s->tag)) {
                atomic_fetch_add(&corrupt, 1);
                report("block %p (%zu bytes, tag %llu) corrupted or shrunk", p, s->size,
                       (unsigned long long)s->tag);
            }
            if ((r >> 20) % 4 == 0) {               /* realloc it */
                bool direct;
                size_t size = pick_size(rng_next(&rng), &direct);
                if (direct || size == 0)
                    size = 1 + size % 100000;
                uintptr_t old = (uintptr_t)p; /* for the report: p may be gone */
                void *moved = realloc(p, size);
                if (moved == NULL) {
                    atomic_fetch_add(&alloc_failed, 1);
                    report("realloc(%p, %zu) failed (errno %d)", p, size, errno);
                } else {
                    size_t kept = s->size < size ? s->size : size;
                    if (!sampled_ok_prefix(moved, s->size, s->tag, kept)) {
                        atomic_fetch_add(&corrupt, 1);
                        report("realloc(%#lx, %zu -> %zu) = %p lost the contents", (unsigned long)old, s->size, size,
                               moved);
                    }
                    if (s->size >= ((size_t)64 << 20))
                        atomic_fetch_sub(&direct_live, 1);
                    p = moved;
                    s->size = size;
                    s->tag = atomic_fetch_add_explicit(&next_tag, 1, memory_order_relaxed);
                    sampled_fill(p, size, s->tag);
                    reallocs++;
                }
                atomic_store(&s->ptr, p);
                continue;
            }
            if ((r >> 20) % 4 == 1) {               /* keep it */
                atomic_store(&s->ptr, p);
                continue;
            }
            if (s->size >= ((size_t)64 << 20))
                atomic_fetch_sub(&direct_live, 1);
            free(p);                                /* free it (often another thread's block) */
            frees++;
            p = NULL;
        }
        if ((r >> 24) % 3 != 0) {                   /* and maybe put a fresh one in its place */
            bool direct;
            uint64_t r2 = rng_next(&rng);
            size_t size = pick_size(r2, &direct);
            if (direct && atomic_fetch_add(&direct_live, 1) >= DIRECT_MAX) {
                atomic_fetch_sub(&direct_live, 1);
                size = (r2 >> 8) % 513;
            }
            p = allocate(size, r2);
            if (p != NULL) {
                s->size = size;
                s->tag = atomic_fetch_add_explicit(&next_tag, 1, memory_order_relaxed);
                sampled_fill(p, size, s->tag);
                allocs++;
            } else if (size >= ((size_t)64 << 20)) {
                atomic_fetch_sub(&direct_live, 1);
            }
        }
        atomic_store(&s->ptr, p);
    }
    atomic_fetch_add(&ops_total, ops);
    atomic_fetch_add(&frees_total, frees);
    atomic_fetch_add(&allocs_total, allocs);
    atomic_fetch_add(&reallocs_total, reallocs);
    return NULL;
}

static void *idle_main(void *arg)
{
    return arg;
}

/* ---- checkpoints ------------------------------------------------------------------------- */
typedef struct census {
    size_t per_class[PYM_STATS_CLASSES];
    size_t large;
} census_t;

static int class_of_block_size(size_t usable)
{
    for (int c = 0; c < PYM_STATS_CLASSES; c++)
        if (pym_class_block_size(c) == usable)
            return c;
    return -1;
}

/* Check every block; count them by class. */
static void census_of_slots(census_t *out, size_t *bad)
{
    memset(out, 0, sizeof(*out));
    *bad = 0;
    for (int i = 0; i < SLOTS; i++) {
        void *p = atomic_load(&slots[i].ptr);
        if (p == NULL)
            continue;
        if (p == BUSY || !block_ok(p, slots[i].size, slots[i].tag)) {
            if ((*bad)++ < 5)
                report("checkpoint: slot %d: block %p (%zu bytes) corrupted", i, p, slots[i].size);
            continue;
        }
        size_t usable = malloc_usable_size(p);
        int c = usable <= MEDIUM_MAX ? class_of_block_size(usable) : -1;
        if (c >= 0)
            out->per_class[c]++;
        else
            out->large++;
    }
}

static void census_of_stats(census_t *out, pym_stats_t *stats)
{
    pym_trim(); /* the main thread's cache flushed, its remote list collected */
    pym_stats_get(stats);
    for (int c = 0; c < PYM_STATS_CLASSES; c++)
        out->per_class[c] = stats->classes[c].blocks_used + stats->classes[c].blocks_cached;
    out->large = stats->large_count;
}

static int child_check(void)
{
    alarm(60);
    for (int i = 0; i < SLOTS; i++) {
        void *p = atomic_load(&slots[i].ptr);
        if (p == NULL)
            continue;
        if (!block_ok(p, slots[i].size, slots[i].tag))
            return 10;
        if (i % 2 == 0)
            free(p);
    }
    uint64_t rng = 99;
    for (int i = 0; i < 2000; i++) {
        bool direct;
        uint64_t r = rng_next(&rng);
        size_t size = pick_size(r, &direct);
        if (direct)
            continue;
        void *p = allocate(size, r);
        if (p == NULL)
            return 11;
        sampled_fill(p, size, r);
        if (!block_ok(p, size, r))
            return 10;
        free(p);
    }
    return 0;
}

int main(int argc, char **argv)
{
    double seconds = 60, check_every = 10;
    int threads = 4;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--check-every") == 0 && i + 1 < argc)
            check_every = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--seconds N] [--threads N] [--check-every S]\n", argv[0]);
            return 2;
        }
    }
    REQUIRE(seconds > 0 && check_every > 0 && threads > 0 && threads <= MAX_THREADS, "bad arguments");
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("soak: %d threads for %.0f s, whole-heap check every %.0f s\n", threads, seconds, check_every);
    pym_stats_t stats;
    pym_trim();
    pym_stats_get(&stats);
    size_t heaps_before = stats.heaps_live;

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, STACK_SIZE);
    double start = now_seconds(), end = start + seconds;
    /* Blocks in use before any slot is filled: the main thread's stdio
     * buffer and the DTVs glibc keeps with its cached thread stacks.  Start
     * and join as many threads as will ever run at once first, so that the
     * stack cache is already as full as it will get. */
    static pthread_t warm[MAX_THREADS];
    for (int t = 0; t < threads; t++)
        REQUIRE(pthread_create(&warm[t], &attr, idle_main, NULL) == 0);
    for (int t = 0; t < threads; t++)
        pthread_join(warm[t], NULL);
    census_t extra;
    census_of_stats(&extra, &stats);
    size_t extra_total = extra.large;
    for (int c = 0; c < PYM_STATS_CLASSES; c++)
        extra_total += extra.per_class[c];
    CHECK(extra_total <= (size_t)threads + 8, "%zu blocks in use before the workloads (stdio and glibc's cached "
          "stacks account for %d at most)", extra_total, threads + 8);
    int checkpoint = 0;
    uint64_t worker_id = 1;
    while (now_seconds() < end && check_failed == 0) {
        /* A generation: workers run, exit after their lifetime and are
         * replaced, until the next checkpoint. */
        double generation_end = now_seconds() + check_every;
        if (generation_end > end)
            generation_end = end;
        atomic_store(&stop, false);
        pthread_t ids[MAX_THREADS];
        for (int t = 0; t < threads; t++) {
            REQUIRE(pthread_create(&ids[t], &attr, worker_main, (void *)(uintptr_t)worker_id++) == 0);
            atomic_fetch_add(&workers_started, 1);
        }
        while (now_seconds() < generation_end) {
            struct timespec pause = {0, 20 * 1000 * 1000};
            nanosleep(&pause, NULL);
            for (int t = 0; t < threads; t++) {
                if (pthread_tryjoin_np(ids[t], NULL) == 0) { /* its lifetime is over: replace it */
                    REQUIRE(pthread_create(&ids[t], &attr, worker_main, (void *)(uintptr_t)worker_id++) == 0);
                    atomic_fetch_add(&workers_started, 1);
                }
            }
        }
        atomic_store(&stop, true);
        for (int t = 0; t < threads; t++)
            pthread_join(ids[t], NULL);

        /* The checkpoint. */
        checkpoint++;
        census_t model, actual;
        size_t bad;
        census_of_slots(&model, &bad);
        census_of_stats(&actual, &stats);
        CHECK(bad == 0, "checkpoint %d: %zu blocks corrupted", checkpoint, bad);
        CHECK(atomic_load(&corrupt) == 0, "checkpoint %d: workers saw %llu corrupted blocks", checkpoint,
              atomic_load(&corrupt));
        CHECK(atomic_load(&alloc_failed) == 0, "checkpoint %d: %llu allocations failed", checkpoint,
              atomic_load(&alloc_failed));
        CHECK(stats.heaps_live == heaps_before, "checkpoint %d: %zu thread heaps live with no worker running, %zu "
              "before", checkpoint, stats.heaps_live, heaps_before);
        for (int c = 0; c < PYM_STATS_CLASSES; c++)
            CHECK(actual.per_class[c] == model.per_class[c] + extra.per_class[c],
                  "checkpoint %d: class %d (%zu-byte blocks): %zu in use, %zu in the slots + %zu before", checkpoint, c,
                  pym_class_block_size(c), actual.per_class[c], model.per_class[c], extra.per_class[c]);
        CHECK(actual.large == model.large + extra.large, "checkpoint %d: %zu large blocks in use, %zu in the slots",
              checkpoint, actual.large, model.large);
        fflush(stdout);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork failed");
        if (pid == 0)
            _exit(child_check());
        int status;
        REQUIRE(waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "checkpoint %d: the forked child failed (status %#x)",
              checkpoint, status);
        size_t live = 0;
        for (int c = 0; c < PYM_STATS_CLASSES; c++)
            live += model.per_class[c];
        printf("soak: checkpoint %d at %.0f s: %llu operations, %llu workers, %zu blocks live (%zu large), "
               "%zu KiB mapped, RSS %zu KiB: %s\n",
               checkpoint, now_seconds() - start, atomic_load(&ops_total), atomic_load(&workers_started), live,
               model.large, stats.mapped_bytes / 1024, rss_kib(), check_failed == 0 ? "consistent" : "FAILED");
    }
    for (int i = 0; i < SLOTS; i++) {
        void *p = atomic_load(&slots[i].ptr);
        if (p != NULL && p != BUSY)
            free(p);
    }
    printf("soak: %d checkpoints in %.0f s: %llu operations (%llu allocations, %llu frees, %llu reallocs) by "
           "%llu worker threads\n",
           checkpoint, now_seconds() - start, atomic_load(&ops_total), atomic_load(&allocs_total),
           atomic_load(&frees_total), atomic_load(&reallocs_total), atomic_load(&workers_started));
    CHECK(checkpoint > 0, "no checkpoint ran");
    return check_finish();
}
