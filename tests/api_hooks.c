/*
 * api_hooks.c -- allocation hooks (pym_set_hooks, hooks.c), linked with
 * -lpymalloc so malloc, calloc, realloc and the aligned functions are
 * pymalloc's.
 *
 * Covers:
 *   - every entry point reports exactly what it did, with the pointer and
 *     the size asked for: malloc of small, medium and large sizes, calloc
 *     (once, not its inner malloc), realloc (free of the old block, then the
 *     new one, even in place; realloc(NULL, n) only allocates, realloc(p, 0)
 *     only frees), posix_memalign, aligned_alloc, free; free(NULL) reports
 *     nothing;
 *   - the context pointer reaches both callbacks;
 *   - a hook that allocates does not see its own allocation, and does not
 *     recurse;
 *   - with hooks removed nothing is reported and the fast path serves again
 *     (the freed block is reused);
 *   - 4 threads x 20,000 malloc/free pairs: 80,000 allocations and frees
 *     reported, not one lost.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pymalloc.h"
#include "check.h"

static void *(*volatile malloc_fn)(size_t) = malloc;
static void *(*volatile calloc_fn)(size_t, size_t) = calloc;
static void *(*volatile realloc_fn)(void *, size_t) = realloc;
static void (*volatile free_fn)(void *) = free;

enum { LOG_SIZE = 64 };
typedef struct event {
    char kind;                   /* 'a' or 'f' */
    void *ptr;
    size_t size;
} event_t;
static event_t log_events[LOG_SIZE];
static int log_count;
static void *_Atomic seen_context; /* written by every thread's hooks */
static int allocate_in_hook;
static atomic_long thread_allocs, thread_frees;
static int counting_threads;

static void on_alloc(void *ptr, size_t size, void *context)
{
    atomic_store(&seen_context, context);
    if (counting_threads) {
        atomic_fetch_add(&thread_allocs, 1);
        return;
    }
    if (log_count < LOG_SIZE)
        log_events[log_count++] = (event_t){'a', ptr, size};
    if (allocate_in_hook) { /* a tracer recording something */
        void *scratch = malloc_fn(48);
        free_fn(scratch);
    }
}

static void on_free(void *ptr, void *context)
{
    atomic_store(&seen_context, context);
    if (counting_threads) {
        atomic_fetch_add(&thread_frees, 1);
        return;
    }
    if (log_count < LOG_SIZE)
        log_events[log_count++] = (event_t){'f', ptr, 0};
}

static int context_marker;
static const pym_hooks_t hooks = {on_alloc, on_free, &context_marker};

/* Check that the log holds exactly the expected events, then clear it. */
static void expect(const char *what, int count, const event_t *expected)
{
    bool same = log_count == count;
    for (int i = 0; same && i < count; i++)
        same = log_events[i].kind == expected[i].kind && log_events[i].ptr == expected[i].ptr
               && (expected[i].kind == 'f' || log_events[i].size == expected[i].size);
    CHECK(same, "%s: %d events logged, %d expected", what, log_count, count);
    if (!same)
        for (int i = 0; i < log_count; i++)
            fprintf(stderr, "  logged %c %p %zu\n", log_events[i].kind, log_events[i].ptr, log_events[i].size);
    log_count = 0;
}

static void check_every_entry_point(void)
{
    const size_t sizes[] = {24, 3000, 500000};
    for (int i = 0; i < 3; i++) {
        void *block = malloc_fn(sizes[i]);
        REQUIRE(block != NULL);
        free_fn(block);
        expect("malloc + free", 2, (event_t[]){{'a', block, sizes[i]}, {'f', block, 0}});
    }
    void *zeroed = calloc_fn(10, 10);
    REQUIRE(zeroed != NULL);
    expect("calloc(10, 10)", 1, (event_t[]){{'a', zeroed, 100}});
    void *grown = realloc_fn(zeroed, 2000);
    REQUIRE(grown != NULL);
    expect("realloc to 2000", 2, (event_t[]){{'f', zeroed, 0}, {'a', grown, 2000}});
    void *same = realloc_fn(grown, 1990); /* same class: stays in place */
    REQUIRE(same == grown);
    expect("realloc in place", 2, (event_t[]){{'f', grown, 0}, {'a', grown, 1990}});
    CHECK(realloc_fn(same, 0) == NULL, "realloc(p, 0) frees");
    expect("realloc(p, 0)", 1, (event_t[]){{'f', same, 0}});
    void *fresh = realloc_fn(NULL, 50);
    REQUIRE(fresh != NULL);
    expect("realloc(NULL, 50)", 1, (event_t[]){{'a', fresh, 50}});
    free_fn(fresh);
    log_count = 0;
    void *aligned = NULL;
    REQUIRE(posix_memalign(&aligned, 64, 100) == 0);
    expect("posix_memalign(64, 100)", 1, (event_t[]){{'a', aligned, 100}});
    free_fn(aligned);
    log_count = 0;
    void *page = aligned_alloc(4096, 8192);
    REQUIRE(page != NULL);
    expect("aligned_alloc(4096, 8192)", 1, (event_t[]){{'a', page, 8192}});
    free_fn(page);
    log_count = 0;
    free_fn(NULL);
    expect("free(NULL)", 0, NULL);
    CHECK(atomic_load(&seen_context) == (void *)&context_marker, "the context pointer reaches the hooks");
}

static void check_hook_that_allocates(void)
{
    allocate_in_hook = 1;
    void *block = malloc_fn(40);
    REQUIRE(block != NULL);
    allocate_in_hook = 0;
    expect("a hook's own malloc is not reported", 1, (event_t[]){{'a', block, 40}});
    free_fn(block);
    log_count = 0;
}

static void *churn(void *unused)
{
    (void)unused;
    for (int i = 0; i < 20000; i++) {
        void *block = malloc_fn(16 + (size_t)(i % 600));
        free_fn(block);
    }
    return NULL;
}

static void check_threads(void)
{
    counting_threads = 1;
    pthread_t threads[4];
    for (int t = 0; t < 4; t++)
        REQUIRE(pthread_create(&threads[t], NULL, churn, NULL) == 0);
    for (int t = 0; t < 4; t++)
        pthread_join(threads[t], NULL);
    counting_threads = 0;
    CHECK(atomic_load(&thread_allocs) >= 80000 && atomic_load(&thread_frees) >= 80000,
          "4 threads: %ld allocations and %ld frees reported, at least 80,000 each expected",
          (long)atomic_load(&thread_allocs), (long)atomic_load(&thread_frees));
    log_count = 0;
}

static void check_removed(void)
{
    REQUIRE(pym_set_hooks(NULL) == 0);
    void *block = malloc_fn(24);
    free_fn(block);
    void *again = malloc_fn(24);
    free_fn(again);
    void *medium = malloc_fn(5000);
    free_fn(medium);
    expect("no hooks: nothing reported", 0, NULL);
    CHECK(again == block, "the fast path serves again: the freed block comes back first");
}

int main(void)
{
    void *warm = malloc_fn(24); /* the thread's heap exists before the hooks */
    free_fn(warm);
    REQUIRE(pym_set_hooks(&hooks) == 0);
    check_every_entry_point();
    check_hook_that_allocates();
    check_threads();
    check_removed();
    return check_finish();
}
