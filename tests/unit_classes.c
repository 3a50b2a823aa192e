/*
 * unit_classes.c -- the size-class tables (pool.c), checked exhaustively.
 *
 * Covers, in both alignment modes (pym_classes_init(16) and (8)):
 *   - the request -> small class table pym_small_class_of[] for every request
 *     of 0..512 bytes, against the rule each mode documents
 *     (16: 0..16 -> 16 B, larger -> a block size that is a multiple of 16,
 *     so every block start is 16-aligned; 8: 0..8 -> 8 B, n -> class
 *     (n + 7) / 8 - 1), and the public
 *     pym_size_class() agreeing with it;
 *   - every small block size (8 * (i + 1)) and capacity ((4096 - 64) / size);
 *   - the 32 medium classes (640, 768, 896, 1024, 1280, ... 131072), their
 *     capacity (262144 / size), and pym_medium_class_of(n) being the smallest
 *     class >= n for every n in 513..131072;
 *   - the multiply-and-rotate divisibility test pym_class_offset_is_block()
 *     against % for every class and every offset below 262144, plus sampled
 *     offsets over the whole 32-bit range;
 *   - pym_size_class() for large requests (-1) and pym_class_block_size()
 *     for valid and invalid classes.
 * Links the core statically, so the internal tables are reachable.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"
#include "check.h"

#define SMALL_CLASSES 64
#define MEDIUM_CLASSES 32
#define ALL_CLASSES (SMALL_CLASSES + MEDIUM_CLASSES)

/* The medium block sizes as the design describes them, built independently of
 * pool.c: four steps per doubling from 512, i.e. 512 * (5, 6, 7, 8) / 4 << d. */
static uint32_t expected_medium_sizes[MEDIUM_CLASSES];

static void build_expected_medium_sizes(void)
{
    for (unsigned doubling = 0; doubling < 8; doubling++)
        for (unsigned step = 0; step < 4; step++)
            expected_medium_sizes[doubling * 4 + step] = (512u << doubling) / 4 * (5 + step);
}

/* The small class a request should get in a given alignment mode. */
static unsigned expected_small_class(size_t request, unsigned alignment)
{
    if (alignment == 8)
        return request <= 8 ? 0 : (unsigned)((request + 7) / 8 - 1);
    if (request <= 16)
        return 1;
    /* Smallest block size that is a multiple of 16 and holds the request. */
    size_t block = (request + 15) / 16 * 16;
    return (unsigned)(block / 8 - 1);
}

static void check_small_table(unsigned alignment)
{
    pym_classes_init(alignment);
    unsigned smallest = alignment == 16 ? 1 : 0;
    CHECK(pym_small_class_of[0] == smallest, "mode %u: size 0 must use class %u", alignment, smallest);
    CHECK(pym_size_class(0) == (int)smallest, "mode %u: pym_size_class(0) = %d", alignment, pym_size_class(0));

    unsigned table_mismatches = 0, public_mismatches = 0, too_small = 0, misaligned = 0;
    for (size_t request = 1; request <= 512; request++) {
        unsigned got = pym_small_class_of[(request + 7) / 8];
        unsigned want = expected_small_class(request, alignment);
        if (got != want) {
            if (table_mismatches++ < 5)
                fprintf(stderr, "mode %u: request %zu -> class %u, expected %u\n", alignment, request, got, want);
        }
        if (pym_size_class(request) != (int)want)
            public_mismatches++;
        if (pym_classes[got].block_size < request)
            too_small++;
        if (alignment == 16 && pym_classes[got].block_size % 16 != 0)
            misaligned++;
    }
    CHECK(table_mismatches == 0, "mode %u: %u requests map to the wrong small class", alignment, table_mismatches);
    CHECK(public_mismatches == 0, "mode %u: pym_size_class disagrees with the rule for %u requests", alignment,
          public_mismatches);
    CHECK(too_small == 0, "mode %u: %u requests get a block smaller than themselves", alignment, too_small);
    CHECK(misaligned == 0, "mode %u: %u requests get a block size not a multiple of 16", alignment, misaligned);

    /* Spot values the brief spells out, as literal numbers. */
    if (alignment == 16) {
        CHECK(pym_small_class_of[1] == 1 && pym_size_class(1) == 1 && pym_size_class(8) == 1,
              "16: 1..8 -> class 1 (16 B: every block start on the 16-byte grid)");
        CHECK(pym_size_class(9) == 1 && pym_size_class(16) == 1, "16: 9..16 -> class 1");
        CHECK(pym_size_class(17) == 3 && pym_size_class(24) == 3, "16: 17..24 -> class 3 (32 B), got %d",
              pym_size_class(24));
        CHECK(pym_size_class(25) == 3 && pym_size_class(32) == 3, "16: 25..32 -> class 3");
        CHECK(pym_size_class(33) == 5 && pym_size_class(40) == 5, "16: 33..40 -> class 5 (48 B)");
        CHECK(pym_class_block_size(pym_size_class(40)) == 48, "16: 40 bytes use 48-byte blocks");
        CHECK(pym_size_class(505) == 63 && pym_size_class(512) == 63, "16: 505..512 -> class 63");
    } else {
        CHECK(pym_size_class(24) == 2 && pym_class_block_size(2) == 24, "8: 24 -> class 2 (24 B), got %d",
              pym_size_class(24));
        CHECK(pym_size_class(17) == 2 && pym_size_class(40) == 4, "8: 17 -> class 2, 40 -> class 4");
        CHECK(pym_size_class(505) == 63 && pym_size_class(504) == 62, "8: 504 -> 62, 505 -> 63");
    }
}

static void check_block_sizes_and_capacities(void)
{
    unsigned bad_small = 0, bad_small_capacity = 0;
    for (unsigned i = 0; i < SMALL_CLASSES; i++) {
        if (pym_classes[i].block_size != 8 * (i + 1))
            bad_small++;
        if (pym_classes[i].capacity != (4096 - 64) / (8 * (i + 1)))
            bad_small_capacity++;
        if (pym_class_block_size((int)i) != 8 * (i + 1))
            bad_small++;
    }
    CHECK(bad_small == 0, "%u small classes have the wrong block size", bad_small);
    CHECK(bad_small_capacity == 0, "%u small classes have the wrong capacity", bad_small_capacity);
    CHECK(pym_classes[0].capacity == 504 && pym_classes[63].capacity == 7, "capacities of 8 B and 512 B: %u, %u",
          pym_classes[0].capacity, pym_classes[63].capacity);

    unsigned bad_medium = 0, bad_medium_capacity = 0;
    for (unsigned i = 0; i < MEDIUM_CLASSES; i++) {
        const pym_class_t *cls = &pym_classes[SMALL_CLASSES + i];
        if (cls->block_size != expected_medium_sizes[i]) {
            bad_medium++;
            fprintf(stderr, "medium class %u: %u bytes, expected %u\n", i, cls->block_size, expected_medium_sizes[i]);
        }
        if (cls->capacity != 262144 / expected_medium_sizes[i])
            bad_medium_capacity++;
        if (pym_class_block_size((int)(SMALL_CLASSES + i)) != expected_medium_sizes[i])
            bad_medium++;
    }
    CHECK(bad_medium == 0, "%u medium classes have the wrong block size", bad_medium);
    CHECK(bad_medium_capacity == 0, "%u medium classes have the wrong capacity", bad_medium_capacity);
    CHECK(pym_classes[64].block_size == 640 && pym_classes[65].block_size == 768 && pym_classes[66].block_size == 896
              && pym_classes[67].block_size == 1024 && pym_classes[68].block_size == 1280,
          "first medium classes are 640, 768, 896, 1024, 1280");
    CHECK(pym_classes[95].block_size == 131072, "last medium class is 128 KiB, got %u", pym_classes[95].block_size);
    CHECK(pym_classes[95].capacity == 2, "a 128 KiB span holds 2 blocks, got %u", pym_classes[95].capacity);

    /* The divisibility constants are what the comment in internal.h says. */
    unsigned bad_constants = 0;
    for (unsigned i = 0; i < ALL_CLASSES; i++) {
        const pym_class_t *cls = &pym_classes[i];
        uint32_t odd = cls->block_size >> cls->rotate;
        if ((odd & 1) == 0 || (uint32_t)(odd * cls->odd_inverse) != 1 || odd << cls->rotate != cls->block_size
            || cls->max_quotient != UINT32_MAX / cls->block_size)
            bad_constants++;
    }
    CHECK(bad_constants == 0, "%u classes have wrong divisibility constants", bad_constants);

    CHECK(pym_class_block_size(-1) == 0, "class -1 is invalid");
    CHECK(pym_class_block_size(ALL_CLASSES) == 0, "class 96 is invalid");
    CHECK(pym_class_block_size(1000) == 0, "class 1000 is invalid");
}

static void check_medium_lookup(void)
{
    unsigned wrong = 0, public_wrong = 0;
    unsigned expected = 0; /* index into expected_medium_sizes; only grows with n */
    for (size_t request = 513; request <= 131072; request++) {
        while (expected_medium_sizes[expected] < request)
            expected++;
        unsigned got = pym_medium_class_of(request);
        if (got != SMALL_CLASSES + expected) {
            if (wrong++ < 5)
                fprintf(stderr, "pym_medium_class_of(%zu) = %u, expected %u (%u bytes)\n", request, got,
                        SMALL_CLASSES + expected, expected_medium_sizes[expected]);
        }
        if (pym_size_class(request) != (int)(SMALL_CLASSES + expected))
            public_wrong++;
    }
    CHECK(wrong == 0, "pym_medium_class_of is wrong for %u requests in 513..131072", wrong);
    CHECK(public_wrong == 0, "pym_size_class is wrong for %u medium requests", public_wrong);
    CHECK(pym_medium_class_of(513) == 64 && pym_medium_class_of(640) == 64 && pym_medium_class_of(641) == 65,
          "boundaries around 640");
    CHECK(pym_medium_class_of(1024) == 67 && pym_medium_class_of(1025) == 68, "boundaries around 1024");
    CHECK(pym_medium_class_of(131072) == 95, "128 KiB is the last medium class");
    CHECK(pym_size_class(131073) == -1, "131073 bytes are large, got %d", pym_size_class(131073));
    CHECK(pym_size_class(1 << 20) == -1, "1 MiB is large");
    CHECK(pym_size_class(SIZE_MAX) == -1, "SIZE_MAX is large");
}

/* pym_block_index must give offset / block size for a multiple of the block
 * size and a number above max_quotient (never a valid index) otherwise. */
static bool block_index_is_right(const pym_class_t *cls, uint32_t offset)
{
    uint32_t index = pym_block_index(offset, cls->odd_inverse, cls->rotate);
    if (offset % cls->block_size == 0)
        return index == offset / cls->block_size;
    return index > cls->max_quotient;
}

static void check_divisibility_test(void)
{
    unsigned bad_classes = 0;
    for (unsigned i = 0; i < ALL_CLASSES; i++) {
        const pym_class_t *cls = &pym_classes[i];
        unsigned mismatches = 0;
        for (uint32_t offset = 0; offset < 262144; offset++)
            if (!block_index_is_right(cls, offset))
                mismatches++;
        /* Sampled offsets over the rest of the 32-bit range, including both
         * multiples and their neighbours. */
        uint32_t state = 0x9e3779b9u ^ i;
        for (unsigned sample = 0; sample < 20000; sample++) {
            state = state * 1664525u + 1013904223u;
            uint32_t multiple = (state / cls->block_size) * cls->block_size;
            for (int delta = -1; delta <= 1; delta++) {
                uint32_t offset = multiple + (uint32_t)delta;
                if (!block_index_is_right(cls, offset))
                    mismatches++;
            }
        }
        uint32_t last_multiple = UINT32_MAX / cls->block_size * cls->block_size;
        if (!block_index_is_right(cls, last_multiple) || !block_index_is_right(cls, UINT32_MAX))
            mismatches++;
        if (mismatches != 0) {
            bad_classes++;
            fprintf(stderr, "class %u (%u bytes): divisibility test wrong for %u offsets\n", i, cls->block_size,
                    mismatches);
        }
    }
    CHECK(bad_classes == 0, "the divisibility test disagrees with %% for %u classes", bad_classes);
}

int main(void)
{
    pym_ensure_init();
    unsigned startup_alignment = pym_options.alignment;
    CHECK(startup_alignment == 16 || startup_alignment == 8, "alignment option is %u", startup_alignment);
    build_expected_medium_sizes();

    check_small_table(16);
    check_block_sizes_and_capacities();
    check_medium_lookup();
    check_divisibility_test();

    check_small_table(8);
    check_block_sizes_and_capacities(); /* the mode changes only the request table */
    check_medium_lookup();

    /* Re-initialising is idempotent: mode 16 again gives the mode-16 table. */
    check_small_table(16);

    pym_classes_init(startup_alignment);
    return check_finish();
}
