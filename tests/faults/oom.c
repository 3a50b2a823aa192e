/*
 * oom.c -- out of memory: every pym_ allocation function returns NULL with
 * errno ENOMEM (posix_memalign returns ENOMEM and leaves errno alone) when
 * the OS refuses memory, nothing crashes or aborts, blocks allocated before
 * stay intact and freeable, and allocation works again once memory is
 * available.
 *
 * Built with the core sources compiled with -DPYM_FAULT_INJECTION (static,
 * no override: malloc is glibc's), which makes src/os.c fail chosen calls
 * (pym_os_inject_failures: operations by mask, skip the next N calls, fail
 * the M after them or all).  Each scenario runs in a forked child: a fresh
 * pymalloc with nothing cached, and a crash, abort or hang (alarm) is that
 * scenario's failure rather than the end of the test.
 *
 * Scenarios (`oom --list`; `oom NAME...` runs some; OOM_SKIP="NAME ..." in
 * the environment leaves some out):
 *   fresh          every OS call fails from the first one: each API, for
 *                  small, medium, large and direct sizes, aligned or not, on
 *                  the main thread and on a new thread; then the failures
 *                  stop and the same calls succeed
 *   exhausted      blocks of every kind live, then every OS call fails:
 *                  small and medium classes allocate from what is mapped
 *                  until NULL, realloc grow (small and large) and big
 *                  requests fail, the old blocks are intact; freeing half of
 *                  the exhausted blocks makes as many allocations (and at
 *                  most a bin's worth more) succeed again without the OS;
 *                  then the failures stop and
 *                  everything works, and freeing everything leaves no block
 *                  in use
 *   sweep-*        a workload of ~30 mixed operations on a new thread (its
 *                  heap, chunk-map leaf, metadata, arenas, spans, large and
 *                  direct mappings, mremap growth and moves) run with the
 *                  k-th OS call of a class failing -- once (transient) or
 *                  from then on (permanent) -- for every k until the
 *                  workload completes without reaching an injected failure;
 *                  classes: all, map (leaves, metadata, heaps), aligned
 *                  (arenas, spans, large), remap (mremap growth and moves).
 *                  After each run the failures stop, the workload runs again
 *                  and must succeed whole, everything is freed and the
 *                  statistics must show no block in use
 *   realloc-new-leaf
 *                  a large block grows by realloc into address space whose
 *                  chunk-map leaf does not exist yet, and mapping the leaf
 *                  fails: realloc must return NULL/ENOMEM with the block
 *                  intact.  (pym_large_realloc used to abort here, "out of
 *                  memory for the chunk map"; it now makes the leaves
 *                  before moving the pages.)
 * A child that hangs is killed by its alarm (CHILD_ALARM_SECONDS): reported
 * as signal 14.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "faults.h"
#include "internal.h"

#define CHILD_ALARM_SECONDS 60
#define NOTHING_INJECTED 2 /* child exit code bit: no injected failure was reached (the sweep is over) */

static uint64_t next_tag = 1;

typedef struct live {
    void *ptr;
    size_t size;
    uint64_t tag;
} live_t;

#define LIVE_MAX (1 << 19)
static live_t live[LIVE_MAX];
static size_t live_count;

static void live_add(void *ptr, size_t size)
{
    REQUIRE(live_count < LIVE_MAX, "too many live blocks");
    live_t *b = &live[live_count++];
    b->ptr = ptr;
    b->size = size;
    b->tag = next_tag++;
    sampled_fill(ptr, size, b->tag);
}

static void live_verify_all(const char *when)
{
    for (size_t i = 0; i < live_count; i++)
        CHECK(sampled_ok(live[i].ptr, live[i].size, live[i].tag), "%s: block %p (%zu bytes) corrupted", when,
              live[i].ptr, live[i].size);
}

static void live_free_all(void)
{
    for (size_t i = 0; i < live_count; i++)
        pym_free(live[i].ptr);
    live_count = 0;
}

static unsigned long injected_failures(void)
{
    unsigned long failed;
    pym_os_inject_counters(PYM_OS_OP_ALL, NULL, &failed);
    return failed;
}

/* ---- checking one call ------------------------------------------------------------ */
/* The result of an allocation of `size` bytes aligned to `alignment`: NULL
 * with ENOMEM is accepted when `may_fail`, a block must be usable.  A good
 * block is recorded as live. */
static bool accept_block(const char *what, void *p, int saved_errno, size_t size, size_t alignment, bool may_fail)
{
    if (p == NULL) {
        CHECK(may_fail, "%s(%zu) failed while memory was available (errno %d)", what, size, saved_errno);
        CHECK(saved_errno == ENOMEM, "%s(%zu) returned NULL with errno %d, not ENOMEM", what, size, saved_errno);
        return false;
    }
    CHECK(pym_usable_size(p) >= size, "%s(%zu): usable size %zu", what, size, pym_usable_size(p));
    CHECK(aligned_to(p, alignment), "%s(%zu): %p not aligned to %zu", what, size, p, alignment);
    live_add(p, size ? size : 1);
    return true;
}

static size_t default_alignment(size_t size)
{
    return size <= 8 ? 8 : 16;
}

static bool try_malloc(size_t size, bool may_fail)
{
    errno = 0;
    void *p = pym_malloc(size);
    return accept_block("pym_malloc", p, errno, size, default_alignment(size), may_fail);
}

static bool try_calloc(size_t count, size_t size, bool may_fail)
{
    errno = 0;
    void *p = pym_calloc(count, size);
    int saved = errno;
    if (p != NULL)
        CHECK(sampled_zero(p, count * size), "pym_calloc(%zu, %zu) not zeroed", count, size);
    return accept_block("pym_calloc", p, saved, count * size, default_alignment(count * size), may_fail);
}

enum aligned_kind { ALIGNED_ALLOC, MEMALIGN, POSIX_MEMALIGN, VALLOC, PVALLOC };

static bool try_aligned(enum aligned_kind kind, size_t alignment, size_t size, bool may_fail)
{
    void *p = NULL;
    int saved;
    const char *what;
    switch (kind) {
    case ALIGNED_ALLOC:
        what = "pym_aligned_alloc";
        errno = 0;
        p = pym_aligned_alloc(alignment, size);
        saved = errno;
        break;
    case MEMALIGN:
        what = "pym_memalign";
        errno = 0;
        p = pym_memalign(alignment, size);
        saved = errno;
        break;
    case VALLOC:
        what = "pym_valloc";
        alignment = 4096;
        errno = 0;
        p = pym_valloc(size);
        saved = errno;
        break;
    case PVALLOC:
        what = "pym_pvalloc";
        alignment = 4096;
        errno = 0;
        p = pym_pvalloc(size);
        saved = errno;
        break;
    default: {
        what = "pym_posix_memalign";
        void *sentinel = (void *)&next_tag;
        p = sentinel;
        errno = EDOM;
        int result = pym_posix_memalign(&p, alignment, size);
        CHECK(errno == EDOM, "pym_posix_memalign(%zu, %zu) changed errno to %d", alignment, size, errno);
        if (result != 0) {
            CHECK(p == sentinel, "pym_posix_memalign(%zu, %zu) failed (%d) but wrote its result", alignment, size,
                  result);
            p = NULL;
        } else {
            CHECK(p != NULL && p != sentinel, "pym_posix_memalign(%zu, %zu) returned 0 without a block", alignment,
                  size);
        }
        saved = result; /* posix_memalign reports through its result */
        break;
    }
    }
    return accept_block(what, p, saved, size, alignment, may_fail);
}

/* realloc of live block `index` to `size`; on failure it must be intact. */
static bool try_realloc(size_t index, size_t size, bool may_fail)
{
    live_t *b = &live[index];
    errno = 0;
    void *p = pym_realloc(b->ptr, size);
    int saved = errno;
    if (p == NULL) {
        CHECK(may_fail, "pym_realloc(%zu -> %zu) failed while memory was available (errno %d)", b->size, size,
              saved);
        CHECK(saved == ENOMEM, "pym_realloc(%zu -> %zu) returned NULL with errno %d", b->size, size, saved);
        CHECK(sampled_ok(b->ptr, b->size, b->tag), "pym_realloc(%zu -> %zu) failed and damaged the block", b->size,
              size);
        CHECK(pym_usable_size(b->ptr) >= b->size, "the block of a failed realloc is no longer live");
        return false;
    }
    size_t kept = b->size < size ? b->size : size;
    CHECK(sampled_ok_prefix(p, b->size, b->tag, kept), "pym_realloc(%zu -> %zu) lost the contents", b->size, size);
    CHECK(pym_usable_size(p) >= size, "pym_realloc(%zu -> %zu): usable size %zu", b->size, size, pym_usable_size(p));
    CHECK(aligned_to(p, default_alignment(size)), "pym_realloc(%zu -> %zu): %p misaligned", b->size, size, p);
    b->ptr = p;
    b->size = size;
    b->tag = next_tag++;
    sampled_fill(p, size, b->tag);
    return true;
}

static void free_live(size_t index)
{
    pym_free(live[index].ptr);
    live[index] = live[--live_count];
}

/* ---- children ------------------------------------------------------------------------ */
typedef int (*scenario_fn)(long arg1, long arg2, long arg3);

/* Run fn in a child; returns its exit code, or 128 + signal. */
static int run_child(scenario_fn fn, long a1, long a2, long a3)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork failed");
    if (pid == 0) {
        alarm(CHILD_ALARM_SECONDS);
        _exit(fn(a1, a2, a3));
    }
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid failed");
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

static int child_result(void)
{
    fflush(stdout);
    return check_failed == 0 ? 0 : 1;
}

/* ---- scenario: fresh -------------------------------------------------------------- */
/* Every API on sizes of every kind; returns how many calls succeeded. */
static int every_api(bool may_fail)
{
    static const size_t sizes[] = {0, 1, 8, 24, 100, 512, 513, 4000, 65536, 131072, 131073, 1 << 20,
                                   3 << 20, 70u << 20};
    int ok = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        ok += try_malloc(sizes[i], may_fail);
        ok += try_calloc(1, sizes[i], may_fail);
        errno = 0;
        void *p = pym_realloc(NULL, sizes[i]);
        ok += accept_block("pym_realloc(NULL)", p, errno, sizes[i], default_alignment(sizes[i]), may_fail);
        errno = 0;
        p = pym_reallocarray(NULL, 1, sizes[i]);
        ok += accept_block("pym_reallocarray(NULL)", p, errno, sizes[i], default_alignment(sizes[i]), may_fail);
    }
    ok += try_calloc(100, 10, may_fail);
    static const size_t alignments[] = {16, 64, 256, 4096, 65536, 1 << 20};
    static const size_t aligned_sizes[] = {1, 48, 500, 5000, 200000};
    for (size_t a = 0; a < sizeof(alignments) / sizeof(alignments[0]); a++)
        for (size_t s = 0; s < sizeof(aligned_sizes) / sizeof(aligned_sizes[0]); s++) {
            ok += try_aligned(ALIGNED_ALLOC, alignments[a], aligned_sizes[s], may_fail);
            ok += try_aligned(MEMALIGN, alignments[a], aligned_sizes[s], may_fail);
            ok += try_aligned(POSIX_MEMALIGN, alignments[a], aligned_sizes[s], may_fail);
        }
    ok += try_aligned(VALLOC, 0, 100, may_fail);
    ok += try_aligned(PVALLOC, 0, 100, may_fail);
    ok += try_aligned(VALLOC, 0, 300000, may_fail);
    return ok;
}

static void *every_api_thread(void *arg)
{
    (void)arg;
    int ok = every_api(true);
    return (void *)(intptr_t)ok;
}

static int scenario_fresh(long a1, long a2, long a3)
{
    (void)a1, (void)a2, (void)a3;
    pym_os_inject_failures(PYM_OS_OP_ALL, 0, -1);
    int ok = every_api(true);
    CHECK(ok == 0, "%d allocations succeeded with every OS call failing on a fresh process", ok);
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, every_api_thread, NULL) == 0, "pthread_create failed");
    void *result;
    pthread_join(thread, &result);
    CHECK(result == NULL, "%d allocations succeeded on a new thread with every OS call failing", (int)(intptr_t)result);
    CHECK(injected_failures() > 0, "no failure was injected");
    CHECK(live_count == 0, "blocks recorded while failing");

    /* Memory again: the same calls all succeed. */
    pym_os_inject_failures(0, 0, 0);
    int calls = every_api(false);
    CHECK(calls > 100 && live_count == (size_t)calls, "%d of the calls succeeded after the failures stopped", calls);
    live_verify_all("fresh, after recovery");
    live_free_all();
    CHECK(blocks_in_use() == 0, "blocks still in use after freeing everything");
    return child_result();
}

/* ---- scenario: exhausted ----------------------------------------------------------- */
/* Allocate blocks of `size` until NULL (bounded); returns how many succeeded,
 * recording them at live[first...]. */
static size_t allocate_until_null(size_t size, size_t cap)
{
    size_t got = 0;
    while (got < cap) {
        errno = 0;
        void *p = pym_malloc(size);
        if (p == NULL) {
            CHECK(errno == ENOMEM, "pym_malloc(%zu) ran out with errno %d", size, errno);
            break;
        }
        live_add(p, size);
        got++;
    }
    return got;
}

static int scenario_exhausted(long a1, long a2, long a3)
{
    (void)a1, (void)a2, (void)a3;
    /* Before: blocks of every kind, one freed large block in the cache. */
    static const size_t sizes[] = {8, 40, 200, 512, 700, 5000, 60000, 131072, 200000, 2 << 20, 66u << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        REQUIRE(try_malloc(sizes[i], false), "allocation before the failures");
    size_t small_index = 0, large_index = 9; /* 8 bytes, 2 MiB */
    size_t before = live_count;

    pym_os_inject_failures(PYM_OS_OP_ALL, 0, -1);
    /* A small and a medium class, until they run out of what is mapped. */
    size_t small_first = live_count;
    size_t small_got = allocate_until_null(48, 200000);
    CHECK(small_got < 200000, "48-byte blocks never ran out with every OS call failing");
    size_t medium_first = live_count;
    size_t medium_got = allocate_until_null(3000, 200000);
    CHECK(medium_got < 200000, "3000-byte blocks never ran out with every OS call failing");
    printf("exhausted: %zu blocks of 48 bytes and %zu of 3000 bytes from mapped memory, then NULL\n", small_got,
           medium_got);
    for (int again = 0; again < 3; again++) {
        CHECK(!try_malloc(48, true), "48-byte allocation succeeded after running out");
        CHECK(!try_malloc(3000, true), "3000-byte allocation succeeded after running out");
    }
    /* Every other way to need new memory fails cleanly. */
    CHECK(!try_calloc(1, 48, true), "calloc of an exhausted class succeeded");
    CHECK(!try_aligned(POSIX_MEMALIGN, 1 << 20, 1 << 20, true), "posix_memalign of 1 MiB succeeded");
    CHECK(!try_aligned(ALIGNED_ALLOC, 4096, 3000, true), "aligned_alloc(4096, 3000) succeeded");
    CHECK(!try_malloc(8u << 20, true), "malloc of 8 MiB succeeded");
    CHECK(!try_malloc(100u << 20, true), "malloc of 100 MiB succeeded");
    CHECK(!try_realloc(small_index, 48, true), "realloc 8 -> 48 bytes succeeded");
    CHECK(!try_realloc(small_index, 3000, true), "realloc 8 -> 3000 bytes succeeded");
    CHECK(!try_realloc(large_index, 16u << 20, true), "realloc 2 MiB -> 16 MiB succeeded");
    CHECK(try_realloc(large_index, 1 << 20, true), "shrinking realloc 2 MiB -> 1 MiB needs no memory");
    CHECK(injected_failures() > 0, "no failure was injected");
    live_verify_all("exhausted, out of memory");

    /* Free half of each exhausted class: exactly that many come back. */
    size_t freed_small = 0, freed_medium = 0;
    for (size_t i = live_count; i-- > small_first;) {
        if ((i - small_first) % 2 != 0)
            continue;
        bool small = i < medium_first;
        free_live(i); /* moves the last block into slot i */
        if (small)
            freed_small++;
        else
            freed_medium++;
    }
    size_t again_small = allocate_until_null(48, freed_small + 1000000);
    size_t again_medium = allocate_until_null(3000, freed_medium + 1000000);
    CHECK(again_small >= freed_small, "freed %zu 48-byte blocks, then only %zu could be allocated", freed_small,
          again_small);
    CHECK(again_medium >= freed_medium, "freed %zu 3000-byte blocks, then only %zu could be allocated", freed_medium,
          again_medium);
    CHECK(again_small <= freed_small + 64 && again_medium <= freed_medium + 64,
          "more came back (%zu, %zu) than was freed (%zu, %zu)", again_small, again_medium, freed_small, freed_medium);

    /* Memory again: everything works. */
    pym_os_inject_failures(0, 0, 0);
    CHECK(try_malloc(48, false) && try_malloc(3000, false), "small and medium allocations after recovery");
    CHECK(try_malloc(8u << 20, false) && try_malloc(100u << 20, false), "large allocations after recovery");
    CHECK(try_realloc(large_index, 16u << 20, false), "realloc 1 MiB -> 16 MiB after recovery");
    CHECK(try_realloc(small_index, 3000, false), "realloc 8 -> 3000 bytes after recovery");
    CHECK(try_aligned(POSIX_MEMALIGN, 1 << 20, 1 << 20, false), "posix_memalign after recovery");
    live_verify_all("exhausted, after recovery");
    CHECK(live_count > before, "blocks recorded");
    live_free_all();
    CHECK(blocks_in_use() == 0, "blocks still in use after freeing everything");
    return child_result();
}

/* ---- scenario: sweeps ---------------------------------------------------------------- */
/* ~30 operations of every kind, each allowed to fail cleanly when `may_fail`. */
static void workload(bool may_fail)
{
    size_t first = live_count;
    static const size_t sizes[] = {24, 100, 512, 513, 3000, 70000, 131072, 131073, 1 << 20, 3 << 20, 70u << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        try_malloc(sizes[i], may_fail);
    try_calloc(50, 10, may_fail);
    try_calloc(1, 300000, may_fail);
    try_aligned(ALIGNED_ALLOC, 64, 200, may_fail);
    try_aligned(ALIGNED_ALLOC, 4096, 5000, may_fail);
    try_aligned(MEMALIGN, 1 << 20, 300000, may_fail);
    try_aligned(POSIX_MEMALIGN, 128, 1000, may_fail);
    /* realloc chains: small -> medium -> large -> grow -> grow (mremap) -> small */
    static const size_t chain[] = {40, 200, 3000, 400000, 5 << 20, 9 << 20, 100};
    if (try_malloc(chain[0], may_fail)) {
        size_t index = live_count - 1;
        for (size_t i = 1; i < sizeof(chain) / sizeof(chain[0]); i++)
            try_realloc(index, chain[i], may_fail);
    }
    /* free the 3 MiB block, take it back from the large cache */
    for (size_t i = first; i < live_count; i++)
        if (live[i].size == (3u << 20)) {
            free_live(i);
            try_malloc(3 << 20, may_fail);
            break;
        }
    /* free the direct mapping: unmapped at once */
    for (size_t i = first; i < live_count; i++)
        if (live[i].size == (70u << 20)) {
            free_live(i);
            break;
        }
    live_verify_all("workload");
}

static void *workload_thread(void *arg)
{
    workload(arg != NULL);
    return NULL;
}

static void run_workload_thread(bool may_fail)
{
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, workload_thread, may_fail ? (void *)1 : NULL) == 0,
            "pthread_create failed");
    pthread_join(thread, NULL);
}

/* The k-th call (from 0) of the operations `ops` fails, `count` calls in a
 * row (-1: all from there on). */
static int scenario_sweep_one(long ops, long k, long count)
{
    pym_os_inject_failures((unsigned)ops, k, count);
    run_workload_thread(true);
    unsigned long failed = injected_failures();
    pym_os_inject_failures(0, 0, 0);
    run_workload_thread(false); /* memory again: every operation succeeds */
    live_verify_all("after recovery");
    live_free_all(); /* from the main thread: the workload threads have exited */
    size_t in_use = blocks_in_use();
    CHECK(in_use == 0, "%zu blocks still in use after freeing everything", in_use);
    return child_result() | (failed == 0 ? NOTHING_INJECTED : 0);
}

static int sweep(const char *name, unsigned ops)
{
    static const long counts[] = {1, -1};
    int failures = 0;
    for (size_t c = 0; c < 2; c++) {
        const char *how = counts[c] == 1 ? "transient" : "permanent";
        long k = 0;
        for (;; k++) {
            int status = run_child(scenario_sweep_one, ops, k, counts[c]);
            bool over = status < 128 && (status & NOTHING_INJECTED);
            if (status < 128)
                status &= ~NOTHING_INJECTED;
            if (status != 0 && failures++ < 5)
                fprintf(stderr, "oom %s: the %s failure of OS call %ld: child %s %d\n", name, how, k,
                        status > 128 ? "killed by signal" : "exit", status > 128 ? status - 128 : status);
            if (over)
                break;
            if (k > 2000) {
                fprintf(stderr, "oom %s: the workload never completes\n", name);
                failures++;
                break;
            }
        }
        printf("oom %s: %s failures at each of %ld OS calls%s\n", name, how, k,
               failures > 5 ? " (first 5 failures shown)" : "");
    }
    return failures == 0 ? 0 : 1;
}

/* ---- scenario: realloc-new-leaf ------------------------------------------------------- */
static int scenario_realloc_new_leaf(long a1, long a2, long a3)
{
    (void)a1, (void)a2, (void)a3;
    REQUIRE(try_malloc(1 << 20, false), "malloc 1 MiB");
    /* Reserve 32 GiB of address space below everything (PROT_NONE costs no
     * memory) and give back all but its top 8 GiB: the next big mapping
     * lands at least 8 GiB below every mapping pymalloc has, in a range
     * whose chunk-map leaf does not exist yet. */
    size_t reserve = (size_t)32 << 30, keep = (size_t)8 << 30;
    char *reserved = mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reserved == MAP_FAILED) {
        printf("realloc-new-leaf: cannot reserve 32 GiB of address space: not run\n");
        return 0;
    }
    munmap(reserved, reserve - keep);
    /* In-place growth fails (as when the next range is taken) and so does
     * every mapping of a chunk-map leaf (pym_os_map); the move's target
     * region itself can be mapped. */
    pym_os_inject_failures(PYM_OS_OP_MAP | PYM_OS_OP_REMAP_GROW, 0, -1);
    size_t size = 200u << 20;
    bool grown = try_realloc(0, size, true);
    pym_os_inject_failures(0, 0, 0);
    if (grown) {
        uintptr_t root = (uintptr_t)live[0].ptr >> (PYM_CHUNK_SHIFT + PYM_CHUNKMAP_LEAF_BITS);
        printf("realloc-new-leaf: the block moved to %p, in an existing leaf (%lu): not reproduced\n", live[0].ptr,
               (unsigned long)root);
    } else {
        printf("realloc-new-leaf: realloc returned NULL with ENOMEM, block intact\n");
    }
    CHECK(try_realloc(0, size, false), "realloc to 200 MiB after the failures stopped");
    live_verify_all("realloc-new-leaf");
    live_free_all();
    CHECK(blocks_in_use() == 0, "blocks still in use after freeing everything");
    return child_result();
}

/* ---- main --------------------------------------------------------------------------- */
typedef struct scenario {
    const char *name;
    scenario_fn fn;  /* run once in a child */
    unsigned sweep;  /* or: sweep these operations */
} scenario_t;

static const scenario_t scenarios[] = {
    {"fresh", scenario_fresh, 0},
    {"exhausted", scenario_exhausted, 0},
    {"sweep-all", NULL, PYM_OS_OP_ALL},
    {"sweep-map", NULL, PYM_OS_OP_MAP},
    {"sweep-aligned", NULL, PYM_OS_OP_MAP_ALIGNED},
    {"sweep-remap", NULL, PYM_OS_OP_REMAP_GROW | PYM_OS_OP_REMAP_MOVE},
    {"realloc-new-leaf", scenario_realloc_new_leaf, 0},
};
#define SCENARIO_COUNT (sizeof(scenarios) / sizeof(scenarios[0]))

int main(int argc, char **argv)
{
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core); /* a crashing child should not leave a core file */
    setvbuf(stdout, NULL, _IOLBF, 0);
    bool selected[SCENARIO_COUNT];
    for (size_t s = 0; s < SCENARIO_COUNT; s++)
        selected[s] = argc < 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--sweep-one") == 0 && i + 3 < argc) /* debugging: one sweep run, in process */
            return scenario_sweep_one(strtol(argv[i + 1], NULL, 0), strtol(argv[i + 2], NULL, 0),
                                      strtol(argv[i + 3], NULL, 0));
        if (strcmp(argv[i], "--list") == 0) {
            for (size_t s = 0; s < SCENARIO_COUNT; s++)
                printf("%s\n", scenarios[s].name);
            return 0;
        }
        bool found = false;
        for (size_t s = 0; s < SCENARIO_COUNT; s++)
            if (strcmp(argv[i], scenarios[s].name) == 0)
                selected[s] = found = true;
        if (!found) {
            fprintf(stderr, "usage: %s [--list | SCENARIO...]\n", argv[0]);
            return 2;
        }
    }
    const char *skip = getenv("OOM_SKIP"); /* scenarios to leave out, separated by spaces */
    for (size_t s = 0; s < SCENARIO_COUNT; s++) {
        if (!selected[s])
            continue;
        if (skip != NULL) {
            size_t length = strlen(scenarios[s].name);
            const char *at = skip;
            bool skipped = false;
            while ((at = strstr(at, scenarios[s].name)) != NULL) {
                if ((at == skip || at[-1] == ' ') && (at[length] == '\0' || at[length] == ' '))
                    skipped = true;
                at += length;
            }
            if (skipped) {
                printf("oom %s: skipped (OOM_SKIP)\n", scenarios[s].name);
                continue;
            }
        }
        double start = now_seconds();
        int status = scenarios[s].fn != NULL ? run_child(scenarios[s].fn, 0, 0, 0)
                                             : sweep(scenarios[s].name, scenarios[s].sweep);
        CHECK(status == 0, "scenario %s: %s %d", scenarios[s].name,
              status > 128 ? "child killed by signal" : "exit status", status > 128 ? status - 128 : status);
        printf("oom %s: %s (%.2f s)\n", scenarios[s].name, status == 0 ? "ok" : "FAILED", now_seconds() - start);
    }
    return check_finish();
}
