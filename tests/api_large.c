/*
 * api_large.c -- large blocks (> 128 KiB, large.c) through malloc, calloc,
 * realloc and free (linked with -lpymalloc: the whole process allocates
 * with pymalloc).
 *
 * Covers:
 *   - blocks of 200 KB .. 32 MB allocate, start on a 256 KiB boundary, have
 *     every page writable, count in large_count / large_bytes (whole chunks)
 *     while alive and leave those counters when freed;
 *   - a steady malloc/free loop of a 300 KB block reuses one extent: the
 *     pointer repeats and no system call is made;
 *   - reuse and split: a freed 4 MiB extent serves a 1 MiB request from its
 *     start and keeps the other 3 MiB free for the next request;
 *   - coalescing: extents freed next to each other merge (two and three
 *     ways), so the whole range serves one request again;
 *   - best fit: of two free extents the smallest that holds the request;
 *   - realloc grows a block into the free extent after it without moving or
 *     a system call, gives chunks back when shrunk to less than half, and
 *     moves it (contents intact) when nothing next to it is free;
 *   - from 64 MiB (the direct-mapping threshold) on blocks are unmapped when
 *     freed; a block just below is kept and handed out again;
 *   - the budget of free extents: as many bytes as were live at once in
 *     the last decay time (a round of blocks freed and made again maps
 *     nothing); left alone, the background scavenger unmaps them once they
 *     have been free for the decay time;
 *   - decay: a free extent unused for a second is unmapped at the next large
 *     free, before that free can merge with it (the extent a thread freed
 *     last is parked in its heap, and goes to the free extents when the
 *     thread parks another);
 *   - calloc of a reused (dirty) extent is zero;
 *   - blocks of 1..8 MiB churned through 20 slots (the shape of programs
 *     that allocate and value-initialise big buffers) stop mapping memory
 *     once the first rounds have warmed the extents up.
 * System-call counts come from the JSON statistics (pym_stats_print_json).
 * Calls go through volatile function pointers so the compiler cannot fold
 * them with its built-in knowledge of the allocation functions.
 */
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pymalloc.h"
#include "check.h"

static void *(*volatile malloc_fn)(size_t) = malloc;
static void *(*volatile calloc_fn)(size_t, size_t) = calloc;
static void *(*volatile realloc_fn)(void *, size_t) = realloc;
static void (*volatile free_fn)(void *) = free;
static size_t (*volatile usable_fn)(void *) = malloc_usable_size;

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)
#define CHUNK (256 * KiB)
#define FREE_BUDGET (64 * MiB)
#define DIRECT_THRESHOLD (64 * MiB)

static size_t page_size;

static pym_stats_t stats_now(void)
{
    pym_stats_t stats;
    pym_stats_get(&stats);
    return stats;
}

static size_t page_round(size_t size)
{
    return (size + page_size - 1) / page_size * page_size;
}

static size_t chunk_round(size_t size)
{
    return (size + CHUNK - 1) / CHUNK * CHUNK;
}

/* mmap + munmap + madvise + mremap calls so far, from the JSON statistics. */
typedef struct os_calls {
    unsigned long mmap, munmap, madvise, mremap;
} os_calls_t;

static os_calls_t os_calls_now(void)
{
    /* Into a fixed buffer: measuring must not allocate (much) itself. */
    static char text[32768];
    memset(text, 0, sizeof(text));
    FILE *stream = fmemopen(text, sizeof(text) - 1, "w");
    REQUIRE(stream != NULL);
    pym_stats_print_json(stream);
    fclose(stream);
    os_calls_t calls = {0, 0, 0, 0};
    const char *at = strstr(text, "\"system_calls\"");
    REQUIRE(at != NULL, "no system_calls in the JSON statistics");
    REQUIRE(sscanf(at, "\"system_calls\": {\"mmap\": %lu, \"munmap\": %lu, \"madvise\": %lu, \"mremap\": %lu}",
                   &calls.mmap, &calls.munmap, &calls.madvise, &calls.mremap) == 4,
            "system_calls: %.80s", at);
    return calls;
}

static unsigned long os_calls_since(os_calls_t before)
{
    os_calls_t now = os_calls_now();
    return (now.mmap - before.mmap) + (now.munmap - before.munmap) + (now.madvise - before.madvise)
           + (now.mremap - before.mremap);
}

/* Forget every free extent: the checks below start from none. */
static void no_free_extents(void)
{
    pym_trim();
    REQUIRE(stats_now().large_cached_bytes == 0, "pym_trim leaves free extents");
}

static void check_sizes(void)
{
    const size_t sizes[] = {200 * 1000, 256 * KiB, 300 * 1000, 500 * 1000, 1000 * 1000, MiB,
                            MiB + 1,    2 * MiB,   5 * MiB + 3, 16 * MiB,  32 * MiB};
    enum { COUNT = sizeof(sizes) / sizeof(sizes[0]) };
    pym_stats_t before = stats_now();
    unsigned char *blocks[COUNT];
    size_t total_extents = 0;
    for (size_t i = 0; i < COUNT; i++) {
        blocks[i] = malloc_fn(sizes[i]);
        REQUIRE(blocks[i] != NULL, "malloc(%zu)", sizes[i]);
        CHECK(((uintptr_t)blocks[i] & (CHUNK - 1)) == 0, "malloc(%zu) = %p is not on a chunk boundary", sizes[i],
              (void *)blocks[i]);
        size_t usable = usable_fn(blocks[i]);
        CHECK(usable == page_round(sizes[i]), "malloc(%zu): usable %zu, expected the request in whole pages",
              sizes[i], usable);
        total_extents += chunk_round(sizes[i]);
        for (size_t offset = 0; offset < sizes[i]; offset += page_size)
            blocks[i][offset] = (unsigned char)(i + offset / page_size);
        blocks[i][sizes[i] - 1] = (unsigned char)i;
    }
    pym_stats_t during = stats_now();
    CHECK(during.large_count == before.large_count + COUNT, "large_count %zu, expected %zu", during.large_count,
          before.large_count + COUNT);
    CHECK(during.large_bytes == before.large_bytes + total_extents, "large_bytes %zu, expected %zu (whole chunks)",
          during.large_bytes, before.large_bytes + total_extents);
    CHECK(during.large_peak_bytes >= during.large_bytes, "large_peak_bytes %zu", during.large_peak_bytes);
    CHECK(during.mapped_bytes >= total_extents, "mapped_bytes %zu", during.mapped_bytes);

    size_t damaged = 0;
    for (size_t i = 0; i < COUNT; i++) {
        for (size_t offset = 0; offset < sizes[i] - 1; offset += page_size)
            damaged += blocks[i][offset] != (unsigned char)(i + offset / page_size);
        damaged += blocks[i][sizes[i] - 1] != (unsigned char)i;
        free_fn(blocks[i]);
    }
    CHECK(damaged == 0, "%zu pages of large blocks were overwritten", damaged);
    pym_stats_t after = stats_now();
    CHECK(after.large_count == before.large_count, "large_count back to %zu (%zu)", before.large_count,
          after.large_count);
    CHECK(after.large_bytes == before.large_bytes, "large_bytes back to %zu (%zu)", before.large_bytes,
          after.large_bytes);
    CHECK(after.invalid_frees == before.invalid_frees, "no invalid free");
}

static void check_steady_loop_reuses_extent(void)
{
    const size_t size = 300 * 1000;
    unsigned char *first = malloc_fn(size);
    REQUIRE(first != NULL);
    memset(first, 1, size);
    free_fn(first);
    pym_stats_t start = stats_now();
    os_calls_t calls = os_calls_now();

    size_t repeats = 0;
    for (int round = 0; round < 2000; round++) {
        unsigned char *block = malloc_fn(size);
        REQUIRE(block != NULL);
        repeats += block == first;
        block[0] = (unsigned char)round;
        block[size - 1] = (unsigned char)round;
        free_fn(block);
    }
    unsigned long syscalls = os_calls_since(calls);
    pym_stats_t end = stats_now();
    CHECK(repeats == 2000, "the 300 KB loop reused the free extent %zu of 2000 times", repeats);
    CHECK(syscalls == 0, "the loop made %lu system calls", syscalls);
    CHECK(end.large_count == start.large_count, "large_count %zu -> %zu", start.large_count, end.large_count);
    CHECK(end.large_bytes == start.large_bytes, "large_bytes %zu -> %zu", start.large_bytes, end.large_bytes);
    CHECK(end.large_cached_bytes == start.large_cached_bytes, "large_cached_bytes %zu -> %zu",
          start.large_cached_bytes, end.large_cached_bytes);
    CHECK(end.mapped_bytes == start.mapped_bytes, "the loop mapped nothing new (%zu -> %zu)", start.mapped_bytes,
          end.mapped_bytes);
    CHECK(end.arenas_now == start.arenas_now && end.arenas_total == start.arenas_total,
          "arena counters unchanged by large blocks");
}

static void check_split_and_reuse(void)
{
    no_free_extents();
    char *whole = malloc_fn(4 * MiB);
    REQUIRE(whole != NULL);
    memset(whole, 0x11, 4 * MiB);
    free_fn(whole);
    CHECK(stats_now().large_cached_bytes == 4 * MiB, "the freed 4 MiB extent is kept");
    os_calls_t calls = os_calls_now();
    char *front = malloc_fn(MiB);
    CHECK(front == whole, "a 1 MiB request takes the start of the free 4 MiB extent (%p, expected %p)",
          (void *)front, (void *)whole);
    CHECK(stats_now().large_cached_bytes == 3 * MiB, "the other 3 MiB stay free (%zu)",
          stats_now().large_cached_bytes);
    char *rest = malloc_fn(3 * MiB);
    CHECK(rest == whole + MiB, "a 3 MiB request takes the rest (%p, expected %p)", (void *)rest,
          (void *)(whole + MiB));
    CHECK(os_calls_since(calls) == 0, "splitting a free extent makes no system call");
    CHECK(stats_now().large_cached_bytes == 0, "nothing is left free");

    /* Coalescing, two ways: both freed, one 4 MiB request fits again. */
    free_fn(front);
    free_fn(rest);
    CHECK(stats_now().large_cached_bytes == 4 * MiB, "4 MiB free again");
    char *again = malloc_fn(4 * MiB);
    CHECK(again == whole, "two freed neighbours merged: a 4 MiB request takes them (%p, expected %p)",
          (void *)again, (void *)whole);

    /* Three ways: the middle one freed last joins both neighbours. */
    free_fn(again);
    char *a = malloc_fn(MiB), *b = malloc_fn(MiB), *c = malloc_fn(2 * MiB);
    REQUIRE(a == whole && b == whole + MiB && c == whole + 2 * MiB, "carved in address order: %p %p %p",
            (void *)a, (void *)b, (void *)c);
    free_fn(a);
    free_fn(c);
    char *probe = malloc_fn(4 * MiB);
    CHECK(probe != whole, "with the middle still live no 4 MiB extent is free");
    free_fn(probe);
    free_fn(b);
    calls = os_calls_now();
    char *merged = malloc_fn(4 * MiB);
    CHECK(merged == whole, "three neighbours merged into one extent (%p, expected %p)", (void *)merged,
          (void *)whole);
    CHECK(os_calls_since(calls) == 0, "taking the merged extent makes no system call");
    free_fn(merged);
}

static void check_best_fit(void)
{
    no_free_extents();
    char *whole = malloc_fn(6 * MiB);
    REQUIRE(whole != NULL);
    free_fn(whole);
    char *small = malloc_fn(MiB), *guard1 = malloc_fn(MiB), *big = malloc_fn(2 * MiB), *guard2 = malloc_fn(2 * MiB);
    REQUIRE(small == whole && guard1 == whole + MiB && big == whole + 2 * MiB && guard2 == whole + 4 * MiB);
    free_fn(big);
    free_fn(small); /* free: 1 MiB at whole, 2 MiB at whole + 2 MiB */
    char *one = malloc_fn(MiB);
    CHECK(one == whole, "a 1 MiB request takes the 1 MiB extent, not the 2 MiB one (%p)", (void *)one);
    char *two = malloc_fn(2 * MiB);
    CHECK(two == whole + 2 * MiB, "a 2 MiB request takes the 2 MiB extent (%p)", (void *)two);
    free_fn(one);
    free_fn(two);
    free_fn(guard1);
    free_fn(guard2);
}

static bool filled_with(const unsigned char *block, size_t size, unsigned char value)
{
    for (size_t i = 0; i < size; i++)
        if (block[i] != value)
            return false;
    return true;
}

static void check_realloc(void)
{
    no_free_extents();
    unsigned char *whole = malloc_fn(4 * MiB);
    REQUIRE(whole != NULL);
    free_fn(whole);
    unsigned char *block = malloc_fn(MiB);
    REQUIRE(block == whole);
    memset(block, 0x42, MiB);
    os_calls_t calls = os_calls_now();
    unsigned char *grown = realloc_fn(block, 3 * MiB);
    CHECK(grown == block, "realloc to 3 MiB grows into the free extent after the block (%p, expected %p)",
          (void *)grown, (void *)block);
    CHECK(os_calls_since(calls) == 0, "growing into a free neighbour makes no system call");
    CHECK(filled_with(grown, MiB, 0x42), "the first 1 MiB survives the growth");
    memset(grown, 0x43, 3 * MiB);
    CHECK(stats_now().large_cached_bytes == MiB, "1 MiB of the extent stays free");

    unsigned char *shrunk = realloc_fn(grown, MiB);
    CHECK(shrunk == grown, "realloc to less than half stays in place");
    CHECK(stats_now().large_cached_bytes == 3 * MiB, "and gives 2 MiB back, merged with the free 1 MiB (%zu)",
          stats_now().large_cached_bytes);
    CHECK(filled_with(shrunk, MiB, 0x43), "the kept 1 MiB is intact");

    /* Nothing free holds 8 MiB, and the free 3 MiB after the block is too
     * short: the block moves (its pages, with mremap), contents intact. */
    unsigned char *moved = realloc_fn(shrunk, 8 * MiB);
    REQUIRE(moved != NULL);
    CHECK(filled_with(moved, MiB, 0x43), "the block's bytes survive the move");
    memset(moved, 0x44, 8 * MiB);
    CHECK(usable_fn(moved) >= 8 * MiB, "usable %zu after growing to 8 MiB", usable_fn(moved));
    unsigned char *small = realloc_fn(moved, 100 * 1000);
    REQUIRE(small != NULL);
    CHECK(filled_with(small, 100 * 1000, 0x44), "realloc down to a medium size keeps the bytes");
    CHECK(pym_size_class(100 * 1000) >= 0 && usable_fn(small) < 256 * KiB, "and gives a medium block");
    free_fn(small);
}

static void check_direct_blocks_are_unmapped(void)
{
    pym_stats_t before = stats_now();
    unsigned char *huge = malloc_fn(64 * MiB);
    REQUIRE(huge != NULL);
    memset(huge, 0x5a, 64 * MiB);
    pym_stats_t during = stats_now();
    CHECK(during.large_bytes >= before.large_bytes + 64 * MiB, "large_bytes %zu while the 64 MiB block lives",
          during.large_bytes);
    free_fn(huge);
    pym_stats_t after = stats_now();
    CHECK(after.large_bytes + 64 * MiB <= during.large_bytes, "large_bytes after freeing 64 MiB: %zu -> %zu",
          during.large_bytes, after.large_bytes);
    CHECK(after.large_cached_bytes == before.large_cached_bytes, "a 64 MiB block is not kept (%zu -> %zu)",
          before.large_cached_bytes, after.large_cached_bytes);
    CHECK(after.mapped_bytes + 64 * MiB <= during.mapped_bytes, "mapped_bytes %zu -> %zu", during.mapped_bytes,
          after.mapped_bytes);
    CHECK(!pym_owns(huge) && usable_fn(huge) == 0, "a freed direct block is no longer pymalloc's");

    /* Just below the threshold the extent is kept and handed out again. */
    no_free_extents();
    void *below = malloc_fn(DIRECT_THRESHOLD - page_size);
    REQUIRE(below != NULL);
    free_fn(below);
    CHECK(stats_now().large_cached_bytes >= DIRECT_THRESHOLD - page_size, "a block of 64 MiB - 1 page is kept");
    void *below_again = malloc_fn(DIRECT_THRESHOLD - page_size);
    CHECK(below_again == below, "the kept 64 MiB - 1 page extent is reused");
    free_fn(below_again);
    no_free_extents();
}

static void check_free_budget(void)
{
    /* Five 20 MiB blocks live at once, then all freed: the recent peak was
     * 100 MiB, so all of it stays free for the next such round. */
    enum { COUNT = 5 };
    const size_t size = 20 * MiB;
    no_free_extents();
    void *blocks[COUNT];
    for (int i = 0; i < COUNT; i++)
        REQUIRE((blocks[i] = malloc_fn(size)) != NULL);
    for (int i = 0; i < COUNT; i++)
        free_fn(blocks[i]);
    size_t kept = stats_now().large_cached_bytes;
    CHECK(kept == COUNT * size, "five 20 MiB blocks live at once, then freed: %zu of 100 MiB kept free", kept);
    os_calls_t calls = os_calls_now();
    for (int i = 0; i < COUNT; i++)
        REQUIRE((blocks[i] = malloc_fn(size)) != NULL);
    CHECK(os_calls_since(calls) == 0, "the next round of five maps nothing");
    for (int i = 0; i < COUNT; i++)
        free_fn(blocks[i]);

    /* Without another call into pymalloc, the background scavenger gives
     * them back once they have been free for the decay time (1 s; it looks
     * every half second). */
    size_t mapped = stats_now().mapped_bytes;
    usleep(2000 * 1000);
    pym_stats_t idle = stats_now();
    CHECK(idle.large_cached_bytes == 0, "2 s later the scavenger has unmapped the free extents (%zu bytes left)",
          idle.large_cached_bytes);
    CHECK(idle.mapped_bytes + COUNT * size <= mapped, "mapped bytes %zu -> %zu", mapped, idle.mapped_bytes);
    no_free_extents();
}

static void check_decay(void)
{
    /* A thread parks the extent it freed last; the one parked before goes
     * to the free extents.  So: A freed (parked), B freed (A is a free
     * extent now), 1.2 s later C freed (B goes to the free extents, and A,
     * free for longer than the decay time, is unmapped first). */
    const size_t size = 700 * 1000, small = 150 * 1000;
    no_free_extents();
    void *a = malloc_fn(size), *b = malloc_fn(small), *c = malloc_fn(small);
    REQUIRE(a != NULL && b != NULL && c != NULL);
    free_fn(a);
    free_fn(b);
    pym_stats_t kept = stats_now();
    CHECK(kept.large_cached_bytes == chunk_round(size) + chunk_round(small),
          "the 700 KB extent is free, the 150 KB one parked (%zu bytes kept)", kept.large_cached_bytes);
    usleep(1200 * 1000); /* past the one-second decay */
    free_fn(c);          /* a large free returns what decayed, before it merges */
    pym_stats_t decayed = stats_now();
    /* (The background scavenger may have given back A, and B from its slot,
     * during the sleep already: at most B and C are kept.) */
    CHECK(decayed.large_cached_bytes <= 2 * chunk_round(small),
          "an extent free for 1.2 s is unmapped by the next large free at the latest (%zu -> %zu bytes kept)",
          kept.large_cached_bytes, decayed.large_cached_bytes);
    CHECK(decayed.mapped_bytes + chunk_round(size) <= kept.mapped_bytes,
          "and its memory is unmapped (%zu -> %zu bytes mapped)", kept.mapped_bytes, decayed.mapped_bytes);
}

static void check_calloc_of_reused_block(void)
{
    const size_t sizes[] = {150 * 1000, 300 * 1000, 700 * 1000, 1000 * 1000};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t size = sizes[s];
        no_free_extents();
        unsigned char *dirty = malloc_fn(size);
        REQUIRE(dirty != NULL);
        memset(dirty, 0xCD, usable_fn(dirty));
        free_fn(dirty);
        /* Same size, then a slightly smaller one that the same extent serves. */
        for (int pass = 0; pass < 2; pass++) {
            size_t request = pass == 0 ? size : size - size / 20;
            unsigned char *zeroed = calloc_fn(1, request);
            REQUIRE(zeroed != NULL);
            CHECK(zeroed == dirty, "calloc(%zu) reuses the free %zu-byte extent", request, size);
            size_t nonzero = 0;
            for (size_t i = 0; i < request; i++)
                nonzero += zeroed[i] != 0;
            CHECK(nonzero == 0, "calloc(%zu) over a reused extent: %zu nonzero bytes", request, nonzero);
            memset(zeroed, 0xCD, usable_fn(zeroed));
            free_fn(zeroed);
        }
    }
}

/* Buffers of 1..8 MiB, value-initialised, in 20 slots, each new one made
 * before the one it replaces is freed. */
static void check_churn_stops_mapping(void)
{
    enum { SLOTS = 20, WARM = 200, MEASURED = 300 };
    no_free_extents();
    unsigned char *slots[SLOTS] = {0};
    uint64_t state = 42;
    unsigned long measured_maps = 0;
    os_calls_t calls = os_calls_now();
    for (int round = 0; round < WARM + MEASURED; round++) {
        if (round == WARM)
            calls = os_calls_now();
        state = state * 6364136223846793005u + 1442695040888963407u;
        size_t slot = (size_t)(state >> 33) % SLOTS;
        size_t size = MiB + (size_t)(state >> 40) % (7 * MiB);
        unsigned char *fresh = malloc_fn(size);
        REQUIRE(fresh != NULL);
        memset(fresh, (int)round, size);
        free_fn(slots[slot]);
        slots[slot] = fresh;
    }
    measured_maps = os_calls_now().mmap - calls.mmap;
    CHECK(measured_maps <= MEASURED / 20, "after %d warm-up rounds, %d more mapped %lu times (at most %d expected)",
          WARM, MEASURED, measured_maps, MEASURED / 20);
    printf("churn of 1..8 MiB buffers: %lu mmap calls in %d rounds after warm-up\n", measured_maps, MEASURED);
    for (int i = 0; i < SLOTS; i++)
        free_fn(slots[i]);
    no_free_extents();
}

int main(void)
{
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    os_calls_now(); /* the stream's own allocations are made once, here */
    check_sizes();
    check_steady_loop_reuses_extent();
    check_split_and_reuse();
    check_best_fit();
    check_realloc();
    check_direct_blocks_are_unmapped();
    check_free_budget();
    check_decay();
    check_calloc_of_reused_block();
    check_churn_stops_mapping();
    return check_finish();
}
