/*
 * api_align.c -- posix_memalign, aligned_alloc and memalign (linked with
 * -lpymalloc: the whole process allocates with pymalloc).
 *
 * Covers:
 *   - posix_memalign with an alignment that is 0, not a power of two (3, 12,
 *     24) or not a multiple of sizeof(void *) (4) returns EINVAL, leaves
 *     errno and *out alone; an impossible size returns ENOMEM, same rules;
 *   - aligned_alloc and memalign with 3, 24, 48 return NULL with EINVAL;
 *   - every power-of-two alignment from 8 to 2 MiB with sizes 0 .. 1.5 MB
 *     (small, medium, large and direct-mapped blocks) through all three
 *     functions: the block is aligned, its usable size covers the request,
 *     every byte is writable, blocks alive together do not overlap, and they
 *     free normally (no invalid free, no large block leaked);
 *   - memalign(0, n) behaves as malloc(n).
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
#include "testlib.h"

static int (*volatile posix_memalign_fn)(void **, size_t, size_t) = posix_memalign;
static void *(*volatile aligned_alloc_fn)(size_t, size_t) = aligned_alloc;
static void *(*volatile memalign_fn)(size_t, size_t) = memalign;
static void *(*volatile malloc_fn)(size_t) = malloc;
static void (*volatile free_fn)(void *) = free;
static size_t (*volatile usable_fn)(void *) = malloc_usable_size;

#define ERRNO_SENTINEL 12345

static void check_invalid_alignments(void)
{
    void *const untouched = (void *)(uintptr_t)0xdeadbeef;
    const size_t bad_alignments[] = {0, 3, 12, 24, 4, 2, 1, 48, 100, 4097, (size_t)1 << 63 | 8};
    for (size_t i = 0; i < sizeof(bad_alignments) / sizeof(bad_alignments[0]); i++) {
        void *out = untouched;
        errno = ERRNO_SENTINEL;
        int result = posix_memalign_fn(&out, bad_alignments[i], 64);
        CHECK(result == EINVAL, "posix_memalign(alignment %zu) returned %d, expected EINVAL", bad_alignments[i], result);
        CHECK(errno == ERRNO_SENTINEL, "posix_memalign(alignment %zu) changed errno to %d", bad_alignments[i], errno);
        CHECK(out == untouched, "posix_memalign(alignment %zu) wrote *out on failure", bad_alignments[i]);
        if (result == 0)
            free_fn(out);
    }

    /* Valid alignment, impossible size: ENOMEM, errno and *out untouched. */
    const size_t huge_sizes[] = {SIZE_MAX, (size_t)PTRDIFF_MAX + 1, (size_t)PTRDIFF_MAX};
    const size_t alignments[] = {8, 64, 4096, (size_t)1 << 20};
    for (size_t s = 0; s < sizeof(huge_sizes) / sizeof(huge_sizes[0]); s++)
        for (size_t a = 0; a < sizeof(alignments) / sizeof(alignments[0]); a++) {
            void *out = untouched;
            errno = ERRNO_SENTINEL;
            int result = posix_memalign_fn(&out, alignments[a], huge_sizes[s]);
            CHECK(result == ENOMEM, "posix_memalign(%zu, %zu) returned %d, expected ENOMEM", alignments[a],
                  huge_sizes[s], result);
            CHECK(errno == ERRNO_SENTINEL, "posix_memalign(%zu, %zu) changed errno to %d", alignments[a],
                  huge_sizes[s], errno);
            CHECK(out == untouched, "posix_memalign(%zu, %zu) wrote *out on failure", alignments[a], huge_sizes[s]);
        }
    /* A power-of-two alignment too large for any object. */
    void *out = untouched;
    errno = ERRNO_SENTINEL;
    int result = posix_memalign_fn(&out, (size_t)1 << 63, 64);
    CHECK(result == ENOMEM || result == EINVAL, "posix_memalign(2^63, 64) returned %d", result);
    CHECK(errno == ERRNO_SENTINEL && out == untouched, "posix_memalign(2^63, 64) left errno and *out alone");

    const size_t not_powers[] = {3, 24, 48};
    for (size_t i = 0; i < sizeof(not_powers) / sizeof(not_powers[0]); i++) {
        errno = 0;
        void *block = aligned_alloc_fn(not_powers[i], 96);
        CHECK(block == NULL && errno == EINVAL, "aligned_alloc(%zu, 96): %p, errno %d", not_powers[i], block, errno);
        errno = 0;
        block = memalign_fn(not_powers[i], 96);
        CHECK(block == NULL && errno == EINVAL, "memalign(%zu, 96): %p, errno %d", not_powers[i], block, errno);
        errno = 0;
        block = pym_aligned_alloc(not_powers[i], 96);
        CHECK(block == NULL && errno == EINVAL, "pym_aligned_alloc(%zu, 96): %p, errno %d", not_powers[i], block,
              errno);
    }
    errno = 0;
    void *block = aligned_alloc_fn(64, SIZE_MAX);
    CHECK(block == NULL && errno == ENOMEM, "aligned_alloc(64, SIZE_MAX): %p, errno %d", block, errno);
}

enum { API_POSIX_MEMALIGN, API_ALIGNED_ALLOC, API_MEMALIGN, API_COUNT };
static const char *const api_names[API_COUNT] = {"posix_memalign", "aligned_alloc", "memalign"};

static void *aligned_with(int api, size_t alignment, size_t size)
{
    switch (api) {
    case API_POSIX_MEMALIGN: {
        void *out = NULL;
        int result = posix_memalign_fn(&out, alignment, size);
        return result == 0 ? out : NULL;
    }
    case API_ALIGNED_ALLOC:
        return aligned_alloc_fn(alignment, size);
    default:
        return memalign_fn(alignment, size);
    }
}

static unsigned char pattern(size_t block_index, size_t offset)
{
    return (unsigned char)(block_index * 37 + offset * 11 + (offset >> 9));
}

static void check_every_alignment(void)
{
    const size_t sizes[] = {0, 1, 7, 8, 24, 63, 64, 100, 512, 513, 4096, 70000, 200000, 1500000};
    enum { SIZE_COUNT = sizeof(sizes) / sizeof(sizes[0]), PER_ALIGNMENT = SIZE_COUNT * API_COUNT };
    pym_stats_t before;
    pym_stats_get(&before);

    for (size_t alignment = 8; alignment <= ((size_t)2 << 20); alignment *= 2) {
        /* All blocks of one alignment stay alive together, so overlaps show. */
        unsigned char *blocks[PER_ALIGNMENT];
        size_t requested[PER_ALIGNMENT];
        size_t failures = 0, misaligned = 0, short_usable = 0, foreign = 0;
        for (size_t s = 0; s < SIZE_COUNT; s++)
            for (int api = 0; api < API_COUNT; api++) {
                size_t index = s * API_COUNT + (size_t)api;
                size_t size = sizes[s];
                requested[index] = size;
                blocks[index] = aligned_with(api, alignment, size);
                if (blocks[index] == NULL) {
                    failures++;
                    fprintf(stderr, "%s(%zu, %zu) failed\n", api_names[api], alignment, size);
                    continue;
                }
                if (!aligned_to(blocks[index], alignment)) {
                    if (misaligned++ < 5)
                        fprintf(stderr, "%s(%zu, %zu) = %p is misaligned\n", api_names[api], alignment, size,
                                (void *)blocks[index]);
                }
                if (usable_fn(blocks[index]) < size) {
                    if (short_usable++ < 5)
                        fprintf(stderr, "%s(%zu, %zu): usable size %zu\n", api_names[api], alignment, size,
                                usable_fn(blocks[index]));
                }
                foreign += !pym_owns(blocks[index]);
                for (size_t i = 0; i < size; i++)
                    blocks[index][i] = pattern(index, i);
            }
        CHECK(failures == 0, "alignment %zu: %zu requests failed", alignment, failures);
        CHECK(misaligned == 0, "alignment %zu: %zu blocks misaligned", alignment, misaligned);
        CHECK(short_usable == 0, "alignment %zu: %zu blocks have a usable size below the request", alignment,
              short_usable);
        CHECK(foreign == 0, "alignment %zu: %zu blocks are not recognised as pymalloc's", alignment, foreign);

        size_t corrupt = 0;
        for (size_t index = 0; index < PER_ALIGNMENT; index++) {
            if (blocks[index] == NULL)
                continue;
            for (size_t i = 0; i < requested[index]; i++)
                if (blocks[index][i] != pattern(index, i)) {
                    corrupt++;
                    break;
                }
            free_fn(blocks[index]);
        }
        CHECK(corrupt == 0, "alignment %zu: %zu blocks were overwritten by another block", alignment, corrupt);
    }

    pym_stats_t after;
    pym_stats_get(&after);
    CHECK(after.invalid_frees == before.invalid_frees, "aligned blocks free as real blocks (%zu invalid frees)",
          after.invalid_frees - before.invalid_frees);
    CHECK(after.large_count == before.large_count, "every large aligned block was freed (%zu -> %zu live)",
          before.large_count, after.large_count);
    CHECK(after.large_bytes == before.large_bytes, "large bytes back to %zu (now %zu)", before.large_bytes,
          after.large_bytes);
}

static void check_memalign_zero(void)
{
    pym_stats_t mode;
    pym_stats_get(&mode);
    const size_t sizes[] = {0, 1, 8, 24, 100, 512, 1000, 100000, 300000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t size = sizes[i];
        void *plain = malloc_fn(size);
        void *zero_aligned = memalign_fn(0, size);
        REQUIRE(plain != NULL && zero_aligned != NULL, "memalign(0, %zu)", size);
        if (pym_size_class(size) >= 0) /* pooled: exactly the class malloc uses */
            CHECK(usable_fn(zero_aligned) == usable_fn(plain), "memalign(0, %zu): usable %zu, malloc gives %zu",
                  size, usable_fn(zero_aligned), usable_fn(plain));
        else
            CHECK(usable_fn(zero_aligned) >= size, "memalign(0, %zu): usable %zu", size, usable_fn(zero_aligned));
        /* malloc's promise: 16 bytes from 16 bytes up in the default mode, 8 with PYMALLOC_ALIGN=8. */
        CHECK(aligned_to(zero_aligned, mode.alignment == 16 && size >= 16 ? 16 : 8), "memalign(0, %zu) = %p", size,
              zero_aligned);
        CHECK(pym_size_class(size) < 0 || usable_fn(zero_aligned) == pym_class_block_size(pym_size_class(size)),
              "memalign(0, %zu) uses the malloc class", size);
        if (size)
            memset(zero_aligned, 0x5c, size);
        free_fn(zero_aligned);
        free_fn(plain);
    }
    /* And memalign(1, n), memalign(8, n): nothing stricter than malloc. */
    void *one = memalign_fn(1, 24), *eight = memalign_fn(8, 24);
    CHECK(one != NULL && eight != NULL && usable_fn(one) >= 24 && usable_fn(eight) >= 24, "memalign(1|8, 24)");
    free_fn(one);
    free_fn(eight);
}

int main(void)
{
    check_invalid_alignments();
    check_every_alignment();
    check_memalign_zero();
    return check_finish();
}
