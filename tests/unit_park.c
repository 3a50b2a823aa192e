/*
 * unit_park.c -- the parking handshake of large extents (large.c): the
 * owner of a heap swaps its parking slot with plain loads and stores while
 * another thread takes what the slot holds (the scavenger's side,
 * pym_large_steal_parked, called here back to back instead of once per
 * pass, so that the two sides meet millions of times more often than in a
 * program).
 *
 * Covers:
 *   - an owner thread runs malloc/fill/check/free pairs of 256 KiB and 1 MiB
 *     blocks for 1.5 s while a second thread steals its parked extent as
 *     fast as it can: every block keeps its pattern (a block stolen while in
 *     use would go to the free extents and be handed to the allocation the
 *     stealer makes right after each steal, whose pattern would show in
 *     one of the two blocks, or trip a double-free check later);
 *   - steals happen (taken > 0); how often the stealer found the owner in
 *     the middle of its update (-1) is printed, and whether the membarrier
 *     handshake was on (pym_large_park_fenced; off, both sides exchange
 *     atomically and the test checks that path);
 *   - afterwards the owner's slot is empty or holds a parked extent, and
 *     the large-block counters are back to nothing live.
 * Links the core statically (malloc here is glibc's; pymalloc is pym_*).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "check.h"
#include "testlib.h"

#define RUN_SECONDS 1.5

static pym_heap_t *_Atomic owner_heap;
static atomic_bool stop;
static atomic_ullong owner_pairs, owner_damaged, stealer_damaged, failures;
static unsigned long long taken, empty, busy;

static void *owner_main(void *unused)
{
    (void)unused;
    void *first = pym_malloc(64); /* gives the thread its heap */
    pym_free(first);
    atomic_store(&owner_heap, pym_tls_heap);
    uint64_t tag = 1ull << 62;
    for (unsigned long long pair = 0; !atomic_load(&stop); pair++) {
        size_t size = pair % 8 == 7 ? PYM_MiB : 256 * PYM_KiB; /* 1 MiB now and then: the slot's extent does not fit */
        uint64_t *block = pym_malloc(size);
        if (block == NULL) {
            atomic_fetch_add(&failures, 1);
            continue;
        }
        /* Most pairs only touch the block's first page: the race is in the
         * handshake, which runs twice per pair. */
        size_t checked = pair % 64 == 0 ? size : 4096;
        if (!page_tags_fill_and_check(block, checked, ++tag))
            atomic_fetch_add(&owner_damaged, 1);
        pym_free(block);
        atomic_fetch_add_explicit(&owner_pairs, 1, memory_order_relaxed);
    }
    return NULL;
}

int main(void)
{
    pthread_t owner;
    REQUIRE(pthread_create(&owner, NULL, owner_main, NULL) == 0, "pthread_create");
    pym_heap_t *heap;
    while ((heap = atomic_load(&owner_heap)) == NULL) {
    }
    double end = now_seconds() + RUN_SECONDS;
    uint64_t tag = 1ull << 61;
    unsigned long long round = 0;
    while (now_seconds() < end) {
        int result = pym_large_steal_parked(heap, 0);
        round++;
        taken += result > 0;
        empty += result == 0;
        busy += result < 0;
        if (result > 0 || round % 16 == 0) {
            /* Take from the free extents what the steal put there, right
             * away: an extent stolen while its owner used it is this block. */
            uint64_t *block = pym_malloc(256 * PYM_KiB);
            if (block == NULL)
                atomic_fetch_add(&failures, 1);
            else {
                size_t checked = round % 64 == 0 ? 256 * PYM_KiB : 4096;
                if (!page_tags_fill_and_check(block, checked, ++tag))
                    atomic_fetch_add(&stealer_damaged, 1);
                pym_free(block);
            }
        }
    }
    atomic_store(&stop, true);
    REQUIRE(pthread_join(owner, NULL) == 0, "pthread_join");

    printf("unit_park: handshake %s; %llu owner pairs; steals: %llu taken, %llu empty slot, %llu owner busy\n",
           pym_large_park_fenced() ? "on (membarrier)" : "off (atomic exchanges)", atomic_load(&owner_pairs),
           taken, empty, busy);
    CHECK(atomic_load(&owner_damaged) == 0, "%llu of the owner's blocks lost their pattern",
          atomic_load(&owner_damaged));
    CHECK(atomic_load(&stealer_damaged) == 0, "%llu of the stealer's blocks lost their pattern",
          atomic_load(&stealer_damaged));
    CHECK(atomic_load(&failures) == 0, "%llu allocations failed", atomic_load(&failures));
    CHECK(atomic_load(&owner_pairs) > 1000, "the owner made %llu pairs", atomic_load(&owner_pairs));
    CHECK(taken > 0, "the stealer took the parked extent %llu times", taken);
    pym_stats_t stats;
    pym_stats_get(&stats);
    CHECK(stats.large_count == 0, "%zu large blocks live at the end", stats.large_count);
    return check_finish();
}
