/*
 * tsan_pym.c -- ThreadSanitizer driver for pymalloc's cross-thread paths
 * (`make check-tsan`, built by clang -fsanitize=thread together with the
 * core sources; uses the pym_ API so TSan keeps its own malloc).
 *
 * Rounds of 4 threads allocate blocks of small, medium and large sizes and
 * swap them through shared slots, so most blocks are freed by a thread other
 * than the one that allocated them, and many after that thread has exited
 * (orphan frees into abandoned and dead heaps' full pools, heap reuse by the
 * next round).  At the end every block is freed and the statistics must show
 * no block in use: nothing was lost on the way.  TSan reports any data race;
 * the run fails on a report (TSan's exit code) or on a lost block.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "pymalloc.h"

#define SLOTS 256
#define ROUNDS 6
#define THREADS 4
#define OPERATIONS 20000

static void *slots[SLOTS];

static void *worker(void *arg)
{
    unsigned long long state = (unsigned long long)(size_t)arg * 2654435761u + 1;
    for (int i = 0; i < OPERATIONS; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        size_t size = state % 7 == 0 ? 1000 + state % 60000 : 8 + state % 500;
        if (state % 997 == 0)
            size = 300000;
        char *block = pym_malloc(size);
        if (block == NULL)
            return (void *)1;
        memset(block, 1, size < 64 ? size : 64);
        void *old = __atomic_exchange_n(&slots[state % SLOTS], block, __ATOMIC_ACQ_REL);
        pym_free(old);
    }
    return NULL;
}

int main(void)
{
    int failures = 0;
    for (int round = 0; round < ROUNDS; round++) {
        pthread_t threads[THREADS];
        for (int i = 0; i < THREADS; i++)
            pthread_create(&threads[i], NULL, worker, (void *)(size_t)(round * THREADS + i + 1));
        for (int i = 0; i < THREADS; i++) {
            void *result;
            pthread_join(threads[i], &result);
            failures += result != NULL;
        }
    }
    for (int i = 0; i < SLOTS; i++)
        pym_free(slots[i]);
    pym_stats_t stats;
    pym_stats_get(&stats);
    size_t in_use = stats.large_count;
    for (int c = 0; c < PYM_STATS_CLASSES; c++)
        in_use += stats.classes[c].blocks_used;
    printf("tsan_pym: %d allocation failures, %zu blocks still in use, %zu thread heaps live\n", failures, in_use,
           stats.heaps_live);
    printf("%d passed, %d failed\n", (failures == 0) + (in_use == 0), (failures != 0) + (in_use != 0));
    return failures == 0 && in_use == 0 ? 0 : 1;
}
