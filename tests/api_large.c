/*
 * api_large.c -- large blocks (> 128 KiB, large.c) through malloc/calloc/free
 * (linked with -lpymalloc: the whole process allocates with pymalloc).
 *
 * Covers:
 *   - blocks of 200 KB .. 32 MB allocate, start on a 256 KiB boundary, have
 *     every page writable, count in large_count / large_bytes while alive and
 *     leave those counters when freed;
 *   - a steady malloc/free loop of a 300 KB block reuses one mapping: the
 *     pointer repeats, nothing new is mapped, large_count returns to its
 *     start value, the arena counters do not move;
 *   - the cache reuses a mapping at most 25% larger than the request, not a
 *     bigger one, and takes the best fit;
 *   - from 64 MiB (the direct-mapping threshold) on blocks are not cached:
 *     freeing a 64 MiB block lowers large_bytes and mapped_bytes by 64 MiB
 *     and the block is no longer pymalloc's; a block just below 64 MiB is
 *     cached and handed out again;
 *   - the cache is bounded: after freeing many 900 KB blocks it holds at most
 *     16 mappings, keeping the most recent ones; after freeing five 20 MiB
 *     blocks it holds no more than 64 MiB;
 *   - decay: a cached mapping unused for a second is unmapped at the next
 *     free of a large block;
 *   - calloc of a reused (dirty) cached block is zero.
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
static void (*volatile free_fn)(void *) = free;
static size_t (*volatile usable_fn)(void *) = malloc_usable_size;

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)
#define CHUNK (256 * KiB)
#define CACHE_SLOTS 16
#define CACHE_BYTES (64 * MiB)
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

/* Fill the large cache with 16 small mappings (132 KiB), evicting whatever it
 * held, so that a check's own mappings are the only candidates near its
 * request size. */
static void flush_large_cache(void)
{
    void *fillers[CACHE_SLOTS];
    for (int i = 0; i < CACHE_SLOTS; i++) {
        fillers[i] = malloc_fn(132 * KiB);
        REQUIRE(fillers[i] != NULL);
    }
    for (int i = 0; i < CACHE_SLOTS; i++)
        free_fn(fillers[i]);
}

static void check_sizes(void)
{
    const size_t sizes[] = {200 * 1000, 256 * KiB, 300 * 1000, 500 * 1000, 1000 * 1000, MiB,
                            MiB + 1,    2 * MiB,   5 * MiB + 3, 16 * MiB,  32 * MiB};
    enum { COUNT = sizeof(sizes) / sizeof(sizes[0]) };
    pym_stats_t before = stats_now();
    unsigned char *blocks[COUNT];
    size_t total_usable = 0;
    for (size_t i = 0; i < COUNT; i++) {
        blocks[i] = malloc_fn(sizes[i]);
        REQUIRE(blocks[i] != NULL, "malloc(%zu)", sizes[i]);
        CHECK(((uintptr_t)blocks[i] & (CHUNK - 1)) == 0, "malloc(%zu) = %p is not on a chunk boundary", sizes[i],
              (void *)blocks[i]);
        size_t usable = usable_fn(blocks[i]);
        CHECK(usable >= sizes[i] && usable % page_size == 0, "malloc(%zu): usable %zu", sizes[i], usable);
        total_usable += usable;
        for (size_t offset = 0; offset < sizes[i]; offset += page_size)
            blocks[i][offset] = (unsigned char)(i + offset / page_size);
        blocks[i][sizes[i] - 1] = (unsigned char)i;
    }
    pym_stats_t during = stats_now();
    CHECK(during.large_count == before.large_count + COUNT, "large_count %zu, expected %zu", during.large_count,
          before.large_count + COUNT);
    CHECK(during.large_bytes == before.large_bytes + total_usable, "large_bytes %zu, expected %zu",
          during.large_bytes, before.large_bytes + total_usable);
    CHECK(during.large_peak_bytes >= during.large_bytes, "large_peak_bytes %zu", during.large_peak_bytes);
    CHECK(during.mapped_bytes >= total_usable, "mapped_bytes %zu", during.mapped_bytes);

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

static void check_steady_loop_reuses_mapping(void)
{
    const size_t size = 300 * 1000;
    unsigned char *first = malloc_fn(size);
    REQUIRE(first != NULL);
    memset(first, 1, size);
    free_fn(first);
    pym_stats_t start = stats_now();

    size_t repeats = 0;
    for (int round = 0; round < 2000; round++) {
        unsigned char *block = malloc_fn(size);
        REQUIRE(block != NULL);
        repeats += block == first;
        block[0] = (unsigned char)round;
        block[size - 1] = (unsigned char)round;
        free_fn(block);
    }
    pym_stats_t end = stats_now();
    CHECK(repeats == 2000, "the 300 KB loop reused the cached mapping %zu of 2000 times", repeats);
    CHECK(end.large_count == start.large_count, "large_count %zu -> %zu", start.large_count, end.large_count);
    CHECK(end.large_bytes == start.large_bytes, "large_bytes %zu -> %zu", start.large_bytes, end.large_bytes);
    CHECK(end.large_cached_bytes == start.large_cached_bytes, "large_cached_bytes %zu -> %zu",
          start.large_cached_bytes, end.large_cached_bytes);
    CHECK(end.large_cached_bytes >= page_round(size), "the freed 300 KB mapping is in the cache (%zu bytes cached)",
          end.large_cached_bytes);
    CHECK(end.mapped_bytes == start.mapped_bytes, "the loop mapped nothing new (%zu -> %zu)", start.mapped_bytes,
          end.mapped_bytes);
    CHECK(end.arenas_now == start.arenas_now && end.arenas_total == start.arenas_total,
          "arena counters unchanged by large blocks");
    CHECK(end.large_peak_bytes == start.large_peak_bytes, "peak unchanged by the loop");
}

static void check_cache_fit(void)
{
    const size_t request = 300 * 1000, mapped = page_round(request);
    flush_large_cache();
    /* A mapping within 25% of the request is reused... */
    size_t near_size = mapped + mapped / 4 - page_size;
    void *near = malloc_fn(near_size);
    REQUIRE(near != NULL);
    free_fn(near);
    void *reused = malloc_fn(request);
    CHECK(reused == near, "a %zu-byte cached mapping serves a %zu-byte request", page_round(near_size), request);
    CHECK(usable_fn(reused) == page_round(near_size), "the reused block reports the mapping's size (%zu)",
          usable_fn(reused));
    free_fn(reused);

    /* ...a larger one is not. */
    size_t far_size = mapped + mapped / 4 + 4 * page_size;
    void *far = malloc_fn(far_size);
    REQUIRE(far != NULL);
    free_fn(far);
    void *fresh = malloc_fn(request);
    CHECK(fresh != far, "a mapping more than 25%% larger (%zu) must not serve %zu bytes", page_round(far_size),
          request);
    /* The near one, still cached, is the best fit now. */
    CHECK(fresh == near, "the best fitting cached mapping is used (%p, expected %p)", fresh, near);
    free_fn(fresh);
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
    CHECK(after.large_cached_bytes == before.large_cached_bytes, "a 64 MiB block is not cached (%zu -> %zu)",
          before.large_cached_bytes, after.large_cached_bytes);
    CHECK(after.mapped_bytes + 64 * MiB <= during.mapped_bytes, "mapped_bytes %zu -> %zu", during.mapped_bytes,
          after.mapped_bytes);
    CHECK(!pym_owns(huge) && usable_fn(huge) == 0, "a freed direct block is no longer pymalloc's");

    /* Just below the threshold the mapping is cached and handed out again. */
    flush_large_cache();
    void *below = malloc_fn(DIRECT_THRESHOLD - page_size);
    REQUIRE(below != NULL);
    free_fn(below);
    CHECK(stats_now().large_cached_bytes >= DIRECT_THRESHOLD - page_size, "a block of 64 MiB - 1 page is cached");
    void *below_again = malloc_fn(DIRECT_THRESHOLD - page_size);
    CHECK(below_again == below, "the cached 64 MiB - 1 page mapping is reused");
    free_fn(below_again);
    flush_large_cache();
}

static void check_cache_byte_bound(void)
{
    enum { COUNT = 5 };
    const size_t size = 20 * MiB;
    void *blocks[COUNT];
    for (int i = 0; i < COUNT; i++)
        REQUIRE((blocks[i] = malloc_fn(size)) != NULL);
    for (int i = 0; i < COUNT; i++)
        free_fn(blocks[i]);
    pym_stats_t after = stats_now();
    CHECK(after.large_cached_bytes <= CACHE_BYTES, "five 20 MiB blocks freed: %zu bytes cached, more than 64 MiB",
          after.large_cached_bytes);
    CHECK(after.large_cached_bytes >= 3 * size, "the last three 20 MiB mappings stay cached (%zu bytes cached)",
          after.large_cached_bytes);
    flush_large_cache();
}

static void check_cache_decay(void)
{
    const size_t size = 700 * 1000;
    flush_large_cache();
    pym_stats_t start = stats_now();
    void *block = malloc_fn(size);
    REQUIRE(block != NULL);
    free_fn(block);
    pym_stats_t cached = stats_now();
    CHECK(cached.large_cached_bytes >= page_round(size) && cached.large_cached_bytes > start.large_cached_bytes,
          "the 700 KB mapping is cached (%zu -> %zu bytes cached)", start.large_cached_bytes, cached.large_cached_bytes);
    usleep(1200 * 1000); /* past the one-second decay */
    void *other = malloc_fn(150 * 1000);
    REQUIRE(other != NULL);
    free_fn(other); /* a large free trims the cache */
    pym_stats_t decayed = stats_now();
    CHECK(decayed.large_cached_bytes == page_round(150 * 1000),
          "mappings cached for 1.2 s are unmapped at the next large free (%zu -> %zu bytes cached)",
          cached.large_cached_bytes, decayed.large_cached_bytes);
    CHECK(decayed.mapped_bytes + cached.large_cached_bytes <= cached.mapped_bytes + page_round(150 * 1000),
          "and their memory is unmapped (%zu -> %zu bytes mapped)", cached.mapped_bytes, decayed.mapped_bytes);
}

static void check_cache_bound(void)
{
    enum { COUNT = 60 };
    const size_t size = 900 * 1000;
    unsigned char *blocks[COUNT];
    for (int i = 0; i < COUNT; i++) {
        blocks[i] = malloc_fn(size);
        REQUIRE(blocks[i] != NULL);
        blocks[i][0] = blocks[i][size - 1] = (unsigned char)i;
    }
    pym_stats_t live = stats_now();
    for (int i = 0; i < COUNT; i++)
        free_fn(blocks[i]);
    pym_stats_t after = stats_now();
    CHECK(after.large_cached_bytes <= CACHE_BYTES, "large_cached_bytes %zu exceeds 64 MiB", after.large_cached_bytes);
    CHECK(after.large_cached_bytes == CACHE_SLOTS * page_round(size),
          "the cache should hold exactly the 16 last 900 KB mappings (%zu bytes cached, expected %zu)",
          after.large_cached_bytes, CACHE_SLOTS * page_round(size));
    CHECK(after.large_count + COUNT == live.large_count, "all 60 blocks left the live count");
    CHECK(after.mapped_bytes + (COUNT - CACHE_SLOTS) * page_round(size) <= live.mapped_bytes,
          "the mappings beyond the cache were unmapped (%zu -> %zu)", live.mapped_bytes, after.mapped_bytes);

    /* The cache keeps the most recently freed mappings. */
    unsigned char *again[CACHE_SLOTS];
    size_t recent = 0;
    for (int i = 0; i < CACHE_SLOTS; i++) {
        again[i] = malloc_fn(size);
        REQUIRE(again[i] != NULL);
        for (int j = COUNT - CACHE_SLOTS; j < COUNT; j++)
            recent += again[i] == blocks[j];
    }
    CHECK(recent == CACHE_SLOTS, "%zu of 16 new blocks reused the 16 most recently freed mappings", recent);
    for (int i = 0; i < CACHE_SLOTS; i++)
        free_fn(again[i]);
}

static void check_calloc_of_reused_block(void)
{
    const size_t sizes[] = {150 * 1000, 300 * 1000, 700 * 1000, 1000 * 1000};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t size = sizes[s];
        flush_large_cache();
        unsigned char *dirty = malloc_fn(size);
        REQUIRE(dirty != NULL);
        memset(dirty, 0xCD, usable_fn(dirty));
        free_fn(dirty);
        /* Same size, then a slightly smaller one that the same mapping serves. */
        for (int pass = 0; pass < 2; pass++) {
            size_t request = pass == 0 ? size : size - size / 20;
            unsigned char *zeroed = calloc_fn(1, request);
            REQUIRE(zeroed != NULL);
            CHECK(zeroed == dirty, "calloc(%zu) reuses the cached %zu-byte mapping", request, size);
            size_t nonzero = 0;
            for (size_t i = 0; i < request; i++)
                nonzero += zeroed[i] != 0;
            CHECK(nonzero == 0, "calloc(%zu) over a reused mapping: %zu nonzero bytes", request, nonzero);
            memset(zeroed, 0xCD, usable_fn(zeroed));
            free_fn(zeroed);
        }
    }
}

int main(void)
{
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    check_sizes();
    check_steady_loop_reuses_mapping();
    check_cache_fit();
    check_direct_blocks_are_unmapped();
    check_cache_bound();
    check_cache_byte_bound();
    check_cache_decay();
    check_calloc_of_reused_block();
    return check_finish();
}
