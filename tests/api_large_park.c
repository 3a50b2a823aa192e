/*
 * api_large_park.c -- the parking slot of large extents (src/large.c): a
 * thread keeps the extent it freed last and takes it back on its next large
 * malloc with plain loads and stores, while the background scavenger may
 * take it from the thread at any moment (an asymmetric handshake made safe
 * by membarrier).  Linked with -lpymalloc; re-executes itself with
 * PYMALLOC_DECAY_MS=20 so that the scavenger takes parked extents within
 * tens of milliseconds.
 *
 * Covers:
 *   1. a thread that frees a 4 MiB block and then blocks (alive, idle) gets
 *      its parked extent taken and unmapped: large_cached_bytes goes to 0
 *      and mapped bytes fall by at least 4 MiB; the thread can then allocate
 *      and use a block of that size again;
 *   2. two threads run bursts of malloc/fill/check/free of 256 KiB..3 MiB
 *      blocks, separated by pauses of 0..40 ms (longer than the decay time,
 *      so the scavenger takes their parked extents just as they resume):
 *      every block still holds the pattern its thread wrote (a block taken
 *      by the scavenger while its thread used it would be unmapped -- a
 *      crash -- or handed to the other thread, whose pattern would show);
 *      afterwards, idle and the threads gone, less than 1 MiB stays cached
 *      (the background thread's start threshold: extents the exiting
 *      threads unparked below it may wait for the next large free).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "testlib.h"
#include "pymalloc.h"

#define MiB ((size_t)1 << 20)
#define DECAY_MS "20"

static void sleep_ms(long milliseconds)
{
    struct timespec pause = {milliseconds / 1000, (milliseconds % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

static pym_stats_t stats_now(void)
{
    pym_stats_t stats;
    pym_stats_get(&stats);
    return stats;
}

#define PYMALLOC_SCAVENGE_START MiB /* src/scavenge.c's PYM_SCAVENGE_START_BYTES */

/* Wait up to `limit_ms` for the bytes of free and parked large extents to
 * fall below `bound`. */
static bool cached_bytes_below(size_t bound, long limit_ms)
{
    for (long waited = 0; waited <= limit_ms; waited += 10) {
        if (stats_now().large_cached_bytes < bound)
            return true;
        sleep_ms(10);
    }
    return false;
}

/* ---- 1. an idle thread's parked extent is taken ------------------------------- */
static pthread_mutex_t idle_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t idle_cond = PTHREAD_COND_INITIALIZER;
static int idle_step; /* 1: the worker parked its block; 2: main saw it taken; 3: the worker used one again */
static bool idle_second_ok;

static void idle_advance(int step)
{
    pthread_mutex_lock(&idle_lock);
    idle_step = step;
    pthread_cond_broadcast(&idle_cond);
    pthread_mutex_unlock(&idle_lock);
}

static void idle_wait(int step)
{
    pthread_mutex_lock(&idle_lock);
    while (idle_step < step)
        pthread_cond_wait(&idle_cond, &idle_lock);
    pthread_mutex_unlock(&idle_lock);
}

static void *idle_worker(void *unused)
{
    (void)unused;
    char *block = malloc(4 * MiB);
    if (block != NULL) {
        memset(block, 0x5a, 4 * MiB);
        free(block); /* parked in this thread's heap */
    }
    idle_advance(1);
    idle_wait(2); /* blocked, alive: the scavenger must take the extent without this thread */
    block = malloc(4 * MiB);
    idle_second_ok = block != NULL;
    if (block != NULL) {
        memset(block, 0xa5, 4 * MiB);
        idle_second_ok = block[0] == (char)0xa5 && block[4 * MiB - 1] == (char)0xa5;
        free(block);
    }
    idle_advance(3);
    return NULL;
}

static void check_idle_thread_gives_back(void)
{
    size_t mapped_before = stats_now().mapped_bytes;
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, idle_worker, NULL) == 0, "pthread_create");
    idle_wait(1);
    size_t mapped_parked = stats_now().mapped_bytes;
    CHECK(mapped_parked >= mapped_before + 4 * MiB, "the parked 4 MiB extent is mapped (%zu -> %zu bytes)",
          mapped_before, mapped_parked);
    CHECK(cached_bytes_below(1, 3000), "the idle thread's parked extent is given back within 3 s (%zu bytes kept)",
          stats_now().large_cached_bytes);
    size_t mapped_taken = stats_now().mapped_bytes;
    CHECK(mapped_taken + 4 * MiB <= mapped_parked, "its 4 MiB are unmapped (%zu -> %zu bytes)", mapped_parked,
          mapped_taken);
    idle_advance(2);
    idle_wait(3);
    CHECK(idle_second_ok, "the thread allocates and uses 4 MiB again after its extent was taken");
    REQUIRE(pthread_join(thread, NULL) == 0, "pthread_join");
}

/* ---- 2. bursts against the scavenger ------------------------------------------ */
#define BURST_SECONDS 2.0

static atomic_ullong damaged, failed, blocks_checked;

static void *burst_worker(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    static const size_t sizes[] = {256 * 1024, 300 * 1000, 1536 * 1024, 3 * MiB};
    double end = now_seconds() + BURST_SECONDS;
    uint64_t tag = (uint64_t)(uintptr_t)arg << 48;
    while (now_seconds() < end) {
        unsigned rounds = 1 + (unsigned)(rng_next(&seed) % 200);
        size_t size = sizes[rng_next(&seed) % 4];
        for (unsigned r = 0; r < rounds; r++) {
            uint64_t *block = malloc(size);
            if (block == NULL) {
                atomic_fetch_add(&failed, 1);
                continue;
            }
            tag++;
            if (!page_tags_fill_and_check(block, size, tag))
                atomic_fetch_add(&damaged, 1);
            atomic_fetch_add(&blocks_checked, 1);
            free(block);
        }
        sleep_ms((long)(rng_next(&seed) % 41)); /* 0..40 ms: the scavenger (decay 20 ms) takes the parked extent */
    }
    return NULL;
}

static void check_bursts_against_the_scavenger(void)
{
    pthread_t threads[2];
    for (uintptr_t i = 0; i < 2; i++)
        REQUIRE(pthread_create(&threads[i], NULL, burst_worker, (void *)(i + 1)) == 0, "pthread_create");
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_join(threads[i], NULL) == 0, "pthread_join");
    printf("api_large_park: %llu blocks checked in %.0f s by 2 threads\n", atomic_load(&blocks_checked),
           BURST_SECONDS);
    CHECK(atomic_load(&damaged) == 0, "%llu blocks lost their pattern", atomic_load(&damaged));
    CHECK(atomic_load(&failed) == 0, "%llu allocations failed", atomic_load(&failed));
    CHECK(atomic_load(&blocks_checked) > 100, "the threads made %llu blocks", atomic_load(&blocks_checked));
    /* The background thread starts only for 1 MiB or more waiting to decay
     * (scavenge.c: a short program never gets one); less may stay. */
    CHECK(cached_bytes_below(PYMALLOC_SCAVENGE_START, 3000),
          "idle again, the extents are given back within 3 s down to less than 1 MiB (%zu bytes kept)",
          stats_now().large_cached_bytes);
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *decay = getenv("PYMALLOC_DECAY_MS");
    if (decay == NULL || strcmp(decay, DECAY_MS) != 0) {
        /* The options are read at start-up: run again with the short decay. */
        setenv("PYMALLOC_DECAY_MS", DECAY_MS, 1);
        execv("/proc/self/exe", argv);
        perror("api_large_park: execv /proc/self/exe");
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    check_idle_thread_gives_back();
    check_bursts_against_the_scavenger();
    return check_finish();
}
