/*
 * stress_threads.c -- multi-threaded allocator stress, run by `make stress`
 * under LD_PRELOAD=libpymalloc.so.  Built without pymalloc and using only
 * the C library interface, so it runs the same way on glibc's malloc.
 *
 * Usage: stress_threads [--seconds N]      (default 10)
 *
 * 4 worker threads run at any time.  Each runs a random number of
 * operations and exits; a new thread takes its place until the time is up,
 * so heaps of exited threads are abandoned and reused all the time.  Every
 * operation is one of
 *   malloc, calloc (checked zeroed), realloc (checked to keep the old
 *   contents), posix_memalign and aligned_alloc (checked aligned), free
 * with sizes across every class: tiny, small (<= 512), medium (<= 128 KiB),
 * large (<= 1 MiB) and directly mapped (up to 4 MiB).  Each live block
 * carries a pattern derived from a unique tag, verified before every
 * realloc and free, and malloc_usable_size() must cover the request.  A
 * third of the blocks go through a shared mailbox, so another (often newer)
 * thread frees them; a thread that exits leaves its blocks there.
 *
 * Prints the totals; exits 0 when nothing was corrupted and every
 * allocation succeeded, 1 otherwise, 2 on a usage error.
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
#include <time.h>

#include "testlib.h"

#define WORKERS 4
#define WINDOW 64                 /* live blocks a worker holds */
#define MAILBOX_SLOTS 256         /* blocks in transit between threads */
#define MIN_LIFETIME 5000         /* operations a worker runs before exiting */
#define MAX_LIFETIME 200000
#define MAX_REPORTS 10            /* corruption reports printed in detail */

typedef struct block {
    unsigned char *ptr;
    size_t size;
    uint64_t tag;
} block_t;

/* ---- totals ------------------------------------------------------------------- */
enum { OP_MALLOC, OP_CALLOC, OP_REALLOC, OP_MEMALIGN, OP_ALIGNED_ALLOC, OP_FREE, OP_COUNT };
static const char *const op_names[OP_COUNT] = {"malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc",
                                               "free"};
static atomic_ullong op_totals[OP_COUNT];
static atomic_ullong bytes_allocated, handoffs, threads_started;
static atomic_ullong corruptions, allocation_failures;
static atomic_ullong next_tag = 1;

static double deadline;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;

static void report(const char *what, const block_t *block, const char *detail)
{
    unsigned long long count = atomic_fetch_add(&corruptions, 1) + 1;
    if (count > MAX_REPORTS)
        return;
    pthread_mutex_lock(&report_lock);
    fprintf(stderr, "stress_threads: %s: block %p, %zu bytes, tag %llu: %s\n", what, (void *)block->ptr,
            block->size, (unsigned long long)block->tag, detail);
    pthread_mutex_unlock(&report_lock);
}

/* ---- patterns ------------------------------------------------------------------- */
/* Like testlib.h's pattern_fill, for blocks of any size (malloc(0)
 * included): the first 8 bytes hold the tag (or its low bytes in a tinier
 * block), the rest a byte derived from it. */
static void block_pattern_fill_from(block_t *block, size_t from)
{
    size_t head = block->size < 8 ? block->size : 8;
    for (size_t i = from; i < head; i++)
        block->ptr[i] = (uint8_t)(block->tag >> (8 * i));
    if (block->size > 8 && from < block->size)
        memset(block->ptr + (from > 8 ? from : 8), fill_byte_of(block->tag),
               block->size - (from > 8 ? from : 8));
}

/* Whether the first `length` bytes of the block still hold its pattern. */
static bool block_pattern_ok(const block_t *block, size_t length)
{
    size_t head = length < 8 ? length : 8;
    for (size_t i = 0; i < head; i++)
        if (block->ptr[i] != (uint8_t)(block->tag >> (8 * i)))
            return false;
    return length <= 8 || bytes_all(block->ptr + 8, length - 8, fill_byte_of(block->tag));
}

/* ---- sizes and operations ------------------------------------------------------------- */
static size_t pick_size(uint64_t r)
{
    unsigned bucket = (unsigned)(r % 1000);
    uint64_t x = r >> 10;
    if (bucket < 50)
        return x % 9;                         /* 0..8: tiny, including malloc(0) */
    if (bucket < 500)
        return 9 + x % 120;                   /* up to 128 */
    if (bucket < 750)
        return 129 + x % 384;                 /* up to 512: the rest of the small classes */
    if (bucket < 930)
        return 513 + x % (16 * 1024);         /* medium */
    if (bucket < 985)
        return 16 * 1024 + x % (112 * 1024);  /* medium, up to 128 KiB */
    if (bucket < 997)
        return 128 * 1024 + x % (896 * 1024); /* large, cached below 1 MiB */
    return 1024 * 1024 + x % (3 * 1024 * 1024); /* mapped directly */
}

static void count_failure(const char *call, size_t size)
{
    unsigned long long count = atomic_fetch_add(&allocation_failures, 1) + 1;
    if (count <= MAX_REPORTS) {
        pthread_mutex_lock(&report_lock);
        fprintf(stderr, "stress_threads: %s of %zu bytes failed: %s\n", call, size, strerror(errno));
        pthread_mutex_unlock(&report_lock);
    }
}

static void check_usable(const block_t *block)
{
    if (block->ptr != NULL && malloc_usable_size(block->ptr) < block->size)
        report("malloc_usable_size", block, "smaller than the request");
}

static void release(block_t *block)
{
    if (block->ptr == NULL && block->size == 0)
        return; /* malloc(0) may return NULL */
    if (!block_pattern_ok(block, block->size))
        report("free", block, "pattern changed while the block was live");
    free(block->ptr);
    atomic_fetch_add_explicit(&op_totals[OP_FREE], 1, memory_order_relaxed);
    block->ptr = NULL;
    block->size = 0;
}

/* Fill `slot` (empty) with a fresh block made by a random call. */
static void allocate(block_t *slot, uint64_t r)
{
    size_t size = pick_size(r);
    slot->tag = atomic_fetch_add_explicit(&next_tag, 1, memory_order_relaxed);
    unsigned op = (unsigned)((r >> 40) % 16);
    if (op < 10) {
        slot->ptr = malloc(size);
        atomic_fetch_add_explicit(&op_totals[OP_MALLOC], 1, memory_order_relaxed);
    } else if (op < 12) {
        size_t count = 1 + (r >> 50) % 8;
        size_t each = size / count + 1;
        size = count * each;
        slot->ptr = calloc(count, each);
        atomic_fetch_add_explicit(&op_totals[OP_CALLOC], 1, memory_order_relaxed);
        if (slot->ptr != NULL && !bytes_all(slot->ptr, size, 0)) {
            block_t shown = {slot->ptr, size, slot->tag};
            report("calloc", &shown, "memory not zeroed");
        }
    } else if (op < 14) {
        size_t alignment = (size_t)16 << ((r >> 50) % 10); /* 16 .. 8 KiB */
        if ((r >> 56) % 32 == 0)
            alignment = 64 * 1024;
        void *ptr = NULL;
        int error = posix_memalign(&ptr, alignment, size);
        atomic_fetch_add_explicit(&op_totals[OP_MEMALIGN], 1, memory_order_relaxed);
        slot->ptr = error == 0 ? ptr : NULL;
        if (error != 0)
            errno = error;
        if (slot->ptr != NULL && (uintptr_t)slot->ptr % alignment != 0) {
            block_t shown = {slot->ptr, size, slot->tag};
            report("posix_memalign", &shown, "misaligned");
        }
    } else {
        size_t alignment = (size_t)8 << ((r >> 50) % 8); /* 8 .. 1 KiB */
        size = (size + alignment - 1) / alignment * alignment;
        slot->ptr = aligned_alloc(alignment, size);
        atomic_fetch_add_explicit(&op_totals[OP_ALIGNED_ALLOC], 1, memory_order_relaxed);
        if (slot->ptr != NULL && (uintptr_t)slot->ptr % alignment != 0) {
            block_t shown = {slot->ptr, size, slot->tag};
            report("aligned_alloc", &shown, "misaligned");
        }
    }
    slot->size = size;
    if (slot->ptr == NULL) {
        if (size != 0)
            count_failure("allocation", size);
        slot->size = 0;
        return;
    }
    atomic_fetch_add_explicit(&bytes_allocated, size, memory_order_relaxed);
    check_usable(slot);
    block_pattern_fill_from(slot, 0);
}

static void reallocate(block_t *slot, uint64_t r)
{
    size_t new_size = pick_size(r);
    if (new_size == 0)
        new_size = 1; /* realloc(p, 0) frees: not what this step tests */
    if (!block_pattern_ok(slot, slot->size))
        report("realloc", slot, "pattern changed before realloc");
    unsigned char *moved = realloc(slot->ptr, new_size);
    atomic_fetch_add_explicit(&op_totals[OP_REALLOC], 1, memory_order_relaxed);
    if (moved == NULL) {
        count_failure("realloc", new_size);
        return; /* the old block is still valid */
    }
    size_t kept = slot->size < new_size ? slot->size : new_size;
    block_t after = {moved, kept, slot->tag};
    if (!block_pattern_ok(&after, kept))
        report("realloc", &after, "contents not preserved");
    slot->ptr = moved;
    size_t old_size = slot->size;
    slot->size = new_size;
    check_usable(slot);
    block_pattern_fill_from(slot, old_size < new_size ? old_size : new_size);
    atomic_fetch_add_explicit(&bytes_allocated, new_size, memory_order_relaxed);
}

/* ---- the shared mailbox ------------------------------------------------------------------ */
static struct {
    pthread_mutex_t lock;
    block_t slots[MAILBOX_SLOTS];
} mailbox = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Put *mine in a random slot; *mine becomes what was there (maybe empty). */
static void mailbox_swap(block_t *mine, uint64_t r)
{
    pthread_mutex_lock(&mailbox.lock);
    block_t *slot = &mailbox.slots[r % MAILBOX_SLOTS];
    block_t theirs = *slot;
    *slot = *mine;
    pthread_mutex_unlock(&mailbox.lock);
    *mine = theirs;
    atomic_fetch_add_explicit(&handoffs, 1, memory_order_relaxed);
}

/* ---- workers --------------------------------------------------------------------------------- */
static thread_slots_t workers = THREAD_SLOTS_INITIALIZER;
_Static_assert(WORKERS <= THREAD_SLOTS_MAX, "more workers than slots");

typedef struct worker_arg {
    int slot;
    uint64_t seed;
} worker_arg_t;

static void *worker_main(void *arg)
{
    worker_arg_t *me = arg;
    uint64_t rng = me->seed;
    block_t window[WINDOW];
    memset(window, 0, sizeof(window));
    uint64_t lifetime = MIN_LIFETIME + rng_next(&rng) % (MAX_LIFETIME - MIN_LIFETIME);
    for (uint64_t op = 0; op < lifetime; op++) {
        if ((op & 1023) == 0 && now_seconds() > deadline)
            break;
        uint64_t r = rng_next(&rng);
        block_t *slot = &window[r % WINDOW];
        unsigned action = (unsigned)((r >> 8) % 10);
        if (slot->ptr == NULL && slot->size == 0)
            allocate(slot, rng_next(&rng));
        else if (action < 2 && slot->ptr != NULL)
            reallocate(slot, rng_next(&rng));
        else if (action < 5)
            mailbox_swap(slot, rng_next(&rng));
        else
            release(slot);
    }
    /* Leave some blocks for the next threads, free the rest. */
    for (int i = 0; i < WINDOW; i++) {
        if (i % 2 == 0)
            mailbox_swap(&window[i], rng_next(&rng));
        release(&window[i]);
    }
    thread_slots_done(&workers, me->slot);
    return NULL;
}

static int start_worker(pthread_t *thread, worker_arg_t *arg)
{
    atomic_fetch_add(&threads_started, 1);
    int error = pthread_create(thread, NULL, worker_main, arg);
    if (error != 0)
        fprintf(stderr, "stress_threads: pthread_create: %s\n", strerror(error));
    return error;
}

int main(int argc, char **argv)
{
    double seconds = 10;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            char *end;
            seconds = strtod(argv[++i], &end);
            if (*end != '\0' || seconds <= 0) {
                fprintf(stderr, "stress_threads: --seconds needs a positive number\n");
                return 2;
            }
        } else {
            fprintf(stderr, "usage: %s [--seconds N]\n", argv[0]);
            return 2;
        }
    }
    double start = now_seconds();
    deadline = start + seconds;

    pthread_t threads[WORKERS];
    worker_arg_t args[WORKERS];
    uint64_t seed_source = 0x9E3779B97F4A7C15ULL ^ (uint64_t)time(NULL);
    printf("stress_threads: %d threads at a time for %.1f s, seed %llx\n", WORKERS, seconds,
           (unsigned long long)seed_source);
    fflush(stdout);
    for (int w = 0; w < WORKERS; w++) {
        args[w] = (worker_arg_t){.slot = w, .seed = rng_next(&seed_source) | 1};
        if (start_worker(&threads[w], &args[w]) != 0)
            return 1;
    }
    int running = WORKERS;
    while (running > 0) {
        int slot = thread_slots_wait(&workers, WORKERS);
        pthread_join(threads[slot], NULL);
        running--;
        if (now_seconds() < deadline) {
            args[slot].seed = rng_next(&seed_source) | 1;
            if (start_worker(&threads[slot], &args[slot]) != 0)
                atomic_fetch_add(&allocation_failures, 1);
            else
                running++;
        }
    }

    /* Whatever is left in the mailbox belongs to exited threads. */
    for (int i = 0; i < MAILBOX_SLOTS; i++)
        release(&mailbox.slots[i]);

    unsigned long long total = 0;
    printf("stress_threads: %.1f s, %llu threads started\n", now_seconds() - start,
           (unsigned long long)atomic_load(&threads_started));
    for (int op = 0; op < OP_COUNT; op++) {
        printf("  %-15s %12llu\n", op_names[op], (unsigned long long)atomic_load(&op_totals[op]));
        total += atomic_load(&op_totals[op]);
    }
    printf("  %-15s %12llu\n", "operations", total);
    printf("  %-15s %12llu\n", "handoffs", (unsigned long long)atomic_load(&handoffs));
    printf("  %-15s %12.1f MiB\n", "allocated", (double)atomic_load(&bytes_allocated) / (1024.0 * 1024.0));
    printf("  %-15s %12llu\n", "corruptions", (unsigned long long)atomic_load(&corruptions));
    printf("  %-15s %12llu\n", "failures", (unsigned long long)atomic_load(&allocation_failures));
    bool ok = atomic_load(&corruptions) == 0 && atomic_load(&allocation_failures) == 0 && total > 0;
    printf("%s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}
