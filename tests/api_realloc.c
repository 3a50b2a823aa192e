/*
 * api_realloc.c -- realloc (linked with -lpymalloc: the whole process
 * allocates with pymalloc).
 *
 * Covers:
 *   - realloc(NULL, n) is malloc(n); realloc(p, 0) frees p and returns NULL
 *     (the block is handed out again by the next malloc of its size, a large
 *     block leaves the statistics);
 *   - shrinking keeps the kept part, growing keeps the old contents, across
 *     every pair of sizes in a list spanning small, medium, large and
 *     direct-mapped blocks;
 *   - a new size in the same class returns the same pointer (17 -> 30 in the
 *     default mode, 600 -> 640, 1000 -> 1024, 100 -> 110 and back);
 *   - a chain small -> medium -> large -> huge (> 1 MiB) -> back down keeps
 *     every byte at each step;
 *   - a string built by appending pieces with realloc up to 8 MiB is intact;
 *   - a huge block grown from 4 MiB to 64 MiB and shrunk again keeps its data;
 *   - a realloc that cannot succeed (PTRDIFF_MAX + 1, PTRDIFF_MAX, SIZE_MAX)
 *     returns NULL with ENOMEM and leaves the block intact and live, for
 *     small, medium and large blocks.
 * Calls go through volatile function pointers so the compiler cannot fold
 * them with its built-in knowledge of the allocation functions.
 */
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pymalloc.h"
#include "check.h"

static void *(*volatile malloc_fn)(size_t) = malloc;
static void *(*volatile realloc_fn)(void *, size_t) = realloc;
static void (*volatile free_fn)(void *) = free;
static size_t (*volatile usable_fn)(void *) = malloc_usable_size;

#define MiB ((size_t)1 << 20)

static unsigned char pattern(size_t offset, unsigned seed)
{
    return (unsigned char)(offset * 7 + seed + (offset >> 10) * 3 + (offset >> 20));
}

static void fill(unsigned char *block, size_t from, size_t to, unsigned seed)
{
    for (size_t i = from; i < to; i++)
        block[i] = pattern(i, seed);
}

/* Number of bytes in [0, length) that do not hold the pattern. */
static size_t damaged(const unsigned char *block, size_t length, unsigned seed)
{
    size_t bad = 0;
    for (size_t i = 0; i < length; i++)
        bad += block[i] != pattern(i, seed);
    return bad;
}

static void check_null_and_zero(void)
{
    unsigned char *block = realloc_fn(NULL, 100);
    REQUIRE(block != NULL);
    CHECK(usable_fn(block) == pym_class_block_size(pym_size_class(100)), "realloc(NULL, 100) is a 100-byte malloc");
    fill(block, 0, 100, 1);

    /* realloc(p, 0) frees p: the next malloc of that class hands p out again. */
    errno = 0;
    void *result = realloc_fn(block, 0);
    CHECK(result == NULL, "realloc(p, 0) returned %p", result);
    void *next = malloc_fn(100);
    CHECK(next == block, "realloc(p, 0) freed p: malloc(100) reuses it (%p vs %p)", next, (void *)block);
    free_fn(next);

    /* The same for a large block: it leaves the live counters. */
    pym_stats_t before, after;
    pym_stats_get(&before);
    void *large = realloc_fn(NULL, 3 * MiB);
    REQUIRE(large != NULL);
    pym_stats_get(&after);
    CHECK(after.large_count == before.large_count + 1, "realloc(NULL, 3 MiB) made a large block");
    CHECK(realloc_fn(large, 0) == NULL, "realloc(large, 0) returns NULL");
    pym_stats_get(&after);
    CHECK(after.large_count == before.large_count && after.large_bytes == before.large_bytes,
          "realloc(large, 0) freed the large block (%zu live, %zu bytes)", after.large_count, after.large_bytes);

    /* And a medium block. */
    void *medium = realloc_fn(NULL, 5000);
    REQUIRE(medium != NULL);
    CHECK(realloc_fn(medium, 0) == NULL, "realloc(medium, 0) returns NULL");
    void *medium_again = malloc_fn(5000);
    CHECK(medium_again == medium, "realloc(medium, 0) freed the block: malloc reuses it");
    free_fn(medium_again);
}

static void check_same_class_keeps_pointer(void)
{
    struct { size_t from, to; } pairs[] = {
        {17, 30}, {30, 17}, {600, 640}, {640, 513}, {1000, 1024}, {100, 110}, {110, 100},
        {1, 8}, {3000, 3072}, {100000, 114688},
    };
    pym_stats_t stats;
    pym_stats_get(&stats);
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        size_t from = pairs[i].from, to = pairs[i].to;
        if (pym_size_class(from) != pym_size_class(to)) {
            /* All pairs share a class in the default mode; mode 8 splits 17 / 30. */
            CHECK(stats.alignment == 8, "%zu and %zu should share a class in mode 16", from, to);
            continue;
        }
        unsigned char *block = malloc_fn(from);
        REQUIRE(block != NULL);
        fill(block, 0, from, 2);
        unsigned char *moved = realloc_fn(block, to);
        CHECK(moved == block, "realloc within the class (%zu -> %zu) moved the block", from, to);
        REQUIRE(moved != NULL);
        CHECK(damaged(moved, from < to ? from : to, 2) == 0, "realloc %zu -> %zu lost data", from, to);
        free_fn(moved);
    }
    if (stats.alignment == 16) {
        /* The brief's example, stated for the default mode. */
        void *block = malloc_fn(17);
        CHECK(realloc_fn(block, 30) == block, "17 -> 30 stays in the 32-byte class");
        free_fn(block);
    }
    /* Large blocks: a shrink to more than half stays in place. */
    unsigned char *large = malloc_fn(3 * MiB);
    REQUIRE(large != NULL);
    fill(large, 0, 3 * MiB, 3);
    unsigned char *shrunk = realloc_fn(large, 2 * MiB);
    CHECK(shrunk == large, "3 MiB -> 2 MiB stays in place");
    REQUIRE(shrunk != NULL);
    CHECK(damaged(shrunk, 2 * MiB, 3) == 0, "3 MiB -> 2 MiB keeps the data");
    free_fn(shrunk);
}

static void check_every_size_pair(void)
{
    const size_t sizes[] = {1, 8, 24, 100, 512, 513, 2000, 20000, 131072, 131073, 300000, 1000000, 1100000, 5000000};
    enum { COUNT = sizeof(sizes) / sizeof(sizes[0]) };
    size_t failures = 0;
    for (size_t a = 0; a < COUNT; a++)
        for (size_t b = 0; b < COUNT; b++) {
            size_t from = sizes[a], to = sizes[b];
            unsigned seed = (unsigned)(a * COUNT + b);
            unsigned char *block = malloc_fn(from);
            REQUIRE(block != NULL);
            fill(block, 0, from, seed);
            unsigned char *moved = realloc_fn(block, to);
            REQUIRE(moved != NULL, "realloc %zu -> %zu", from, to);
            size_t kept = from < to ? from : to;
            size_t bad = damaged(moved, kept, seed);
            if (bad) {
                failures++;
                fprintf(stderr, "realloc %zu -> %zu: %zu of %zu bytes lost\n", from, to, bad, kept);
            }
            if (usable_fn(moved) < to) {
                failures++;
                fprintf(stderr, "realloc %zu -> %zu: usable size %zu\n", from, to, usable_fn(moved));
            }
            memset(moved, 0x77, to); /* the whole new size is writable */
            free_fn(moved);
        }
    CHECK(failures == 0, "%zu of %d realloc size pairs lost data or space", failures, COUNT * COUNT);
}

static void check_growth_chain(void)
{
    const size_t chain[] = {5,       100,     512,     513,    2000,   131072, 131073, 500000,
                            MiB,     3 * MiB, 20 * MiB, 3 * MiB, 900000, 500000, 131073, 2000,
                            100,     5};
    unsigned char *block = NULL;
    size_t length = 0;
    for (size_t step = 0; step < sizeof(chain) / sizeof(chain[0]); step++) {
        size_t size = chain[step];
        unsigned char *moved = realloc_fn(block, size);
        REQUIRE(moved != NULL, "realloc to %zu", size);
        size_t kept = length < size ? length : size;
        size_t bad = damaged(moved, kept, 9);
        CHECK(bad == 0, "step %zu (%zu -> %zu bytes): %zu bytes lost", step, length, size, bad);
        fill(moved, kept, size, 9);
        block = moved;
        length = size;
    }
    free_fn(block);
}

/* Piece `index` of the string check_string_building appends: "<index>:",
 * 0..299 letters (a count drawn from *state), a newline.  Returns its
 * length. */
#define PIECE_MAX 400

static size_t string_piece(char piece[PIECE_MAX], size_t index, uint32_t *state)
{
    *state = *state * 1103515245u + 12345u;
    size_t length = (size_t)snprintf(piece, PIECE_MAX, "%zu:", index);
    size_t filler = (*state >> 16) % 300;
    for (size_t i = 0; i < filler; i++)
        piece[length++] = (char)('a' + (index + i) % 26);
    piece[length++] = '\n';
    return length;
}

static void check_string_building(void)
{
    const size_t target = 8 * MiB;
    char *text = NULL;
    size_t length = 0, appends = 0;
    uint32_t state = 12345;
    char piece[PIECE_MAX];
    while (length < target) {
        size_t piece_length = string_piece(piece, appends, &state);
        char *grown = realloc_fn(text, length + piece_length + 1);
        REQUIRE(grown != NULL, "realloc to %zu bytes", length + piece_length + 1);
        memcpy(grown + length, piece, piece_length);
        length += piece_length;
        grown[length] = '\0';
        text = grown;
        appends++;
    }

    /* Rebuild the expected text piece by piece and compare. */
    state = 12345;
    size_t offset = 0, mismatched_pieces = 0;
    for (size_t index = 0; index < appends; index++) {
        size_t piece_length = string_piece(piece, index, &state);
        if (memcmp(text + offset, piece, piece_length) != 0) {
            if (mismatched_pieces++ < 3)
                fprintf(stderr, "piece %zu at offset %zu differs\n", index, offset);
        }
        offset += piece_length;
    }
    CHECK(offset == length && text[length] == '\0', "string length %zu, expected %zu", length, offset);
    CHECK(mismatched_pieces == 0, "%zu of %zu appended pieces were damaged by realloc", mismatched_pieces, appends);
    CHECK(usable_fn(text) > length, "usable size covers the string");
    free_fn(text);
}

static void check_huge_growth(void)
{
    unsigned char *block = malloc_fn(4 * MiB);
    REQUIRE(block != NULL);
    fill(block, 0, 4 * MiB, 5);
    /* Something right after it makes in-place growth less likely. */
    void *neighbour = malloc_fn(2 * MiB);
    REQUIRE(neighbour != NULL);
    unsigned char *grown = realloc_fn(block, 64 * MiB);
    REQUIRE(grown != NULL, "realloc 4 MiB -> 64 MiB");
    CHECK(damaged(grown, 4 * MiB, 5) == 0, "4 MiB -> 64 MiB kept the first 4 MiB");
    CHECK(usable_fn(grown) >= 64 * MiB, "usable %zu", usable_fn(grown));
    CHECK(((uintptr_t)grown & (256 * 1024 - 1)) == 0, "a grown large block stays chunk aligned");
    fill(grown, 4 * MiB, 64 * MiB, 5);
    CHECK(pym_owns(grown) && pym_owns(grown + 63 * MiB) == 0, "the block is owned at its start only");

    pym_stats_t stats;
    pym_stats_get(&stats);
    CHECK(stats.large_bytes >= 66 * MiB, "large_bytes %zu counts the grown block", stats.large_bytes);

    unsigned char *shrunk = realloc_fn(grown, 6 * MiB);
    REQUIRE(shrunk != NULL);
    CHECK(damaged(shrunk, 6 * MiB, 5) == 0, "64 MiB -> 6 MiB kept the first 6 MiB");
    CHECK(usable_fn(shrunk) >= 6 * MiB && usable_fn(shrunk) < 64 * MiB, "usable %zu after the shrink",
          usable_fn(shrunk));
    /* Grow again: the pages past 6 MiB were given back, new ones are usable. */
    unsigned char *regrown = realloc_fn(shrunk, 40 * MiB);
    REQUIRE(regrown != NULL);
    CHECK(damaged(regrown, 6 * MiB, 5) == 0, "6 MiB -> 40 MiB kept the first 6 MiB");
    memset(regrown + 6 * MiB, 0x3c, 34 * MiB);
    free_fn(regrown);
    free_fn(neighbour);
    pym_stats_t after;
    pym_stats_get(&after);
    CHECK(after.large_bytes + 46 * MiB <= stats.large_bytes, "large_bytes fell from %zu to %zu", stats.large_bytes,
          after.large_bytes);
}

static void check_failed_realloc_keeps_block(void)
{
    const size_t sizes[] = {40, 5000, 300000, 3 * MiB};
    const size_t impossible[] = {(size_t)PTRDIFF_MAX + 1, SIZE_MAX, (size_t)PTRDIFF_MAX};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t size = sizes[s];
        unsigned char *block = malloc_fn(size);
        REQUIRE(block != NULL);
        fill(block, 0, size, 11);
        size_t usable = usable_fn(block);
        for (size_t i = 0; i < sizeof(impossible) / sizeof(impossible[0]); i++) {
            errno = 0;
            void *moved = realloc_fn(block, impossible[i]);
            CHECK(moved == NULL && errno == ENOMEM, "realloc(%zu-byte block, %zu): %p, errno %d", size,
                  impossible[i], moved, errno);
        }
        CHECK(damaged(block, size, 11) == 0, "failed reallocs damaged the %zu-byte block", size);
        CHECK(usable_fn(block) == usable && pym_owns(block), "the %zu-byte block is still live", size);
        /* It is still an ordinary block: grow it for real. */
        unsigned char *grown = realloc_fn(block, size * 2);
        REQUIRE(grown != NULL);
        CHECK(damaged(grown, size, 11) == 0, "the %zu-byte block grows normally afterwards", size);
        free_fn(grown);
    }
}

int main(void)
{
    check_null_and_zero();
    check_same_class_keeps_pointer();
    check_every_size_pair();
    check_growth_chain();
    check_string_building();
    check_huge_growth();
    check_failed_realloc_keeps_block();
    return check_finish();
}
