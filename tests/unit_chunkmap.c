/*
 * unit_chunkmap.c -- the chunk map (chunkmap.c): which 256 KiB chunks are
 * pymalloc's and what kind each one is.
 *
 * Covers:
 *   - addresses that are not pymalloc's look up as 0: the stack, static data,
 *     NULL, a private mmap, and addresses at or above 2^48;
 *   - blocks of each kind look up with the right tag and descriptor: a small
 *     block (PYM_CHUNK_SMALL, its arena), a 2000-byte block (PYM_CHUNK_MEDIUM,
 *     a span of the right class), a 300000-byte block (PYM_CHUNK_LARGE, a
 *     descriptor whose base is the block), for every chunk the block covers;
 *   - a direct-mapped block (64 MiB, the threshold): every chunk maps to it while it lives and
 *     none after free;
 *   - pym_chunkmap_set / clear / clear_if on a private 256 KiB-aligned
 *     mapping: exact chunk ranges, partial sizes rounding out to whole
 *     chunks, clear_if clearing only matching entries, set refusing ranges
 *     beyond 48 bits, and a range that straddles two leaves (8 GiB boundary).
 * Links the core statically; malloc here is glibc's, pym_malloc is ours.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"
#include "check.h"

#define CHUNK ((uintptr_t)PYM_CHUNK_SIZE)

static int static_variable = 42;

static unsigned kind_of(uintptr_t entry)
{
    return (unsigned)(entry & PYM_CHUNK_KIND_MASK);
}

static void check_foreign_addresses(const char *when)
{
    int on_stack = 7;
    CHECK(pym_chunkmap_lookup((uintptr_t)&on_stack) == 0, "%s: stack address", when);
    CHECK(pym_chunkmap_lookup((uintptr_t)&static_variable) == 0, "%s: static variable", when);
    CHECK(pym_chunkmap_lookup((uintptr_t)&check_foreign_addresses) == 0, "%s: code address", when);
    CHECK(pym_chunkmap_lookup(0) == 0, "%s: NULL", when);
    CHECK(pym_chunkmap_lookup((uintptr_t)1 << 48) == 0, "%s: 2^48", when);
    CHECK(pym_chunkmap_lookup(((uintptr_t)1 << 48) + 12345 * CHUNK) == 0, "%s: above 2^48", when);
    CHECK(pym_chunkmap_lookup(UINTPTR_MAX) == 0, "%s: UINTPTR_MAX", when);
    CHECK(pym_chunkmap_lookup(UINTPTR_MAX - CHUNK + 1) == 0, "%s: last chunk of the address space", when);
    void *glibc_block = malloc(100); /* glibc's malloc in this static test */
    REQUIRE(glibc_block != NULL);
    CHECK(pym_chunkmap_lookup((uintptr_t)glibc_block) == 0, "%s: a glibc malloc block", when);
    free(glibc_block);
}

/* pym_malloc(size) of a pooled size: the block's chunk map entry must be
 * of `kind` (small arena or medium span) and point to a descriptor of that
 * kind based at the block's chunk.  Returns the descriptor. */
static pym_arena_t *pooled_block(size_t size, unsigned kind, char **block_out, uintptr_t *entry_out)
{
    char *block = pym_malloc(size);
    REQUIRE(block != NULL);
    uintptr_t entry = pym_chunkmap_lookup((uintptr_t)block);
    CHECK(kind_of(entry) == kind, "%zu-byte block: kind %u", size, kind_of(entry));
    pym_arena_t *arena = (pym_arena_t *)(entry & ~PYM_CHUNK_KIND_MASK);
    REQUIRE(arena != NULL);
    CHECK(arena->kind == kind, "%zu-byte block: descriptor kind %u", size, arena->kind);
    CHECK(arena->base == ((uintptr_t)block & ~(CHUNK - 1)), "descriptor base %#lx for block %p",
          (unsigned long)arena->base, (void *)block);
    *block_out = block;
    *entry_out = entry;
    return arena;
}

static void check_small_block(void)
{
    char *block;
    uintptr_t entry;
    pym_arena_t *arena = pooled_block(48, PYM_CHUNK_SMALL, &block, &entry);
    pym_pool_t *pool = (pym_pool_t *)((uintptr_t)block & ~(PYM_POOL_SIZE - 1));
    CHECK(pool->arena == arena, "the pool header names the same arena");
    /* Every address in the arena maps to the same entry, first and last byte. */
    CHECK(pym_chunkmap_lookup(arena->base) == entry && pym_chunkmap_lookup(arena->base + CHUNK - 1) == entry,
          "the whole arena maps to its descriptor");
    CHECK(pym_chunkmap_lookup(arena->base + CHUNK) != entry, "the next chunk is not this arena");
    CHECK(pym_chunkmap_lookup(arena->base - 1) != entry, "the previous chunk is not this arena");
    pym_free(block);
}

static void check_medium_block(void)
{
    char *block;
    uintptr_t entry;
    pym_arena_t *span = pooled_block(2000, PYM_CHUNK_MEDIUM, &block, &entry);
    CHECK(span->span.size_class == pym_size_class(2000), "span class %u, expected %d", span->span.size_class,
          pym_size_class(2000));
    CHECK(span->span.arena == span, "the span's pool header points back at its descriptor");
    CHECK(pym_chunkmap_lookup(span->base + CHUNK - 1) == entry, "last byte of the span");
    pym_free(block);
}

static void check_large_block(void)
{
    const size_t size = 300000;
    char *block = pym_malloc(size);
    REQUIRE(block != NULL);
    uintptr_t entry = pym_chunkmap_lookup((uintptr_t)block);
    CHECK(kind_of(entry) == PYM_CHUNK_LARGE, "300000-byte block: kind %u", kind_of(entry));
    pym_large_t *large = (pym_large_t *)(entry & ~PYM_CHUNK_KIND_MASK);
    REQUIRE(large != NULL);
    CHECK(large->base == (uintptr_t)block, "descriptor base %#lx, block %p", (unsigned long)large->base,
          (void *)block);
    CHECK(large->size >= size && large->state == PYM_LARGE_LIVE, "descriptor size %zu, state %u", large->size,
          large->state);
    CHECK(((uintptr_t)block & (CHUNK - 1)) == 0, "large blocks start on a chunk boundary");
    /* 300000 bytes cover two chunks: both map to the descriptor. */
    CHECK(pym_chunkmap_lookup((uintptr_t)block + size - 1) == entry, "last byte of the large block");
    CHECK(pym_chunkmap_lookup((uintptr_t)block + CHUNK) == entry, "second chunk of the large block");
    pym_free(block);
}

static void check_direct_block(void)
{
    const size_t size = PYM_DIRECT_THRESHOLD; /* the first size mapped and unmapped directly */
    char *block = pym_malloc(size);
    REQUIRE(block != NULL);
    uintptr_t entry = pym_chunkmap_lookup((uintptr_t)block);
    CHECK(kind_of(entry) == PYM_CHUNK_LARGE, "direct block: kind %u", kind_of(entry));
    unsigned mapped_chunks = 0;
    for (uintptr_t chunk = (uintptr_t)block; chunk < (uintptr_t)block + size; chunk += CHUNK)
        mapped_chunks += pym_chunkmap_lookup(chunk) == entry;
    CHECK(mapped_chunks == size / CHUNK, "%u of %zu chunks of the direct block are mapped", mapped_chunks,
          (size_t)(size / CHUNK));
    memset(block, 0x5a, size);
    pym_free(block);
    unsigned stale_chunks = 0;
    for (uintptr_t chunk = (uintptr_t)block; chunk < (uintptr_t)block + size; chunk += CHUNK)
        stale_chunks += pym_chunkmap_lookup(chunk) != 0;
    CHECK(stale_chunks == 0, "%u chunks of a freed direct block still look like pymalloc's", stale_chunks);
    CHECK(pym_usable_size(block) == 0 && !pym_owns(block), "a freed direct block is not owned");
}

/* A private region of `chunks` chunks aligned to a chunk, not pymalloc's. */
static uintptr_t map_private_chunks(size_t chunks, void **raw_out, size_t *raw_size_out)
{
    size_t raw_size = (chunks + 1) * CHUNK;
    void *raw = mmap(NULL, raw_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(raw != MAP_FAILED, "mmap of %zu bytes", raw_size);
    *raw_out = raw;
    *raw_size_out = raw_size;
    return ((uintptr_t)raw + CHUNK - 1) & ~(CHUNK - 1);
}

static void check_set_and_clear(void)
{
    void *raw;
    size_t raw_size;
    uintptr_t base = map_private_chunks(4, &raw, &raw_size);
    static pym_large_t fake_one, fake_two; /* stand-in descriptors: never dereferenced by the map */
    uintptr_t entry_one = (uintptr_t)&fake_one | PYM_CHUNK_LARGE;
    uintptr_t entry_two = (uintptr_t)&fake_two | PYM_CHUNK_MEDIUM;

    for (unsigned i = 0; i < 4; i++)
        CHECK(pym_chunkmap_lookup(base + i * CHUNK) == 0, "private chunk %u is not in the map", i);

    /* Three whole chunks. */
    CHECK(pym_chunkmap_set(base, 3 * CHUNK, entry_one), "set of 3 chunks");
    CHECK(pym_chunkmap_lookup(base) == entry_one, "first byte");
    CHECK(pym_chunkmap_lookup(base + CHUNK + 123) == entry_one, "inside the second chunk");
    CHECK(pym_chunkmap_lookup(base + 3 * CHUNK - 1) == entry_one, "last byte of the third chunk");
    CHECK(pym_chunkmap_lookup(base + 3 * CHUNK) == 0, "the fourth chunk stays out");
    CHECK(pym_chunkmap_lookup(base - 1) == 0, "the byte before stays out");

    /* Clearing the middle chunk leaves its neighbours. */
    pym_chunkmap_clear(base + CHUNK, CHUNK);
    CHECK(pym_chunkmap_lookup(base) == entry_one, "chunk 0 kept");
    CHECK(pym_chunkmap_lookup(base + CHUNK) == 0, "chunk 1 cleared");
    CHECK(pym_chunkmap_lookup(base + 2 * CHUNK) == entry_one, "chunk 2 kept");

    /* clear_if with another entry changes nothing. */
    pym_chunkmap_clear_if(base, 3 * CHUNK, entry_two);
    CHECK(pym_chunkmap_lookup(base) == entry_one && pym_chunkmap_lookup(base + 2 * CHUNK) == entry_one,
          "clear_if of a different entry must not clear");

    /* Mixed entries: clear_if clears only its own. */
    CHECK(pym_chunkmap_set(base + CHUNK, CHUNK, entry_two), "set of chunk 1");
    pym_chunkmap_clear_if(base, 3 * CHUNK, entry_one);
    CHECK(pym_chunkmap_lookup(base) == 0 && pym_chunkmap_lookup(base + 2 * CHUNK) == 0,
          "clear_if clears the matching chunks");
    CHECK(pym_chunkmap_lookup(base + CHUNK) == entry_two, "clear_if keeps the other entry");
    pym_chunkmap_clear(base + CHUNK, CHUNK);
    CHECK(pym_chunkmap_lookup(base + CHUNK) == 0, "chunk 1 cleared again");

    /* A size that is not a chunk multiple covers the chunk its last byte is in. */
    CHECK(pym_chunkmap_set(base, CHUNK + 1, entry_two), "set of one chunk and a byte");
    CHECK(pym_chunkmap_lookup(base) == entry_two && pym_chunkmap_lookup(base + CHUNK) == entry_two,
          "both chunks touched by the range are set");
    CHECK(pym_chunkmap_lookup(base + 2 * CHUNK) == 0, "the chunk after the range is not set");
    pym_chunkmap_clear(base, CHUNK + 1);
    CHECK(pym_chunkmap_lookup(base) == 0 && pym_chunkmap_lookup(base + CHUNK) == 0,
          "clear of a partial size clears both chunks");

    /* One byte at the start of a chunk: exactly that chunk. */
    CHECK(pym_chunkmap_set(base + 3 * CHUNK, 1, entry_one), "set of one byte");
    CHECK(pym_chunkmap_lookup(base + 3 * CHUNK + CHUNK - 1) == entry_one, "the one-byte range covers its chunk");
    CHECK(pym_chunkmap_lookup(base + 2 * CHUNK) == 0, "and not the previous one");
    pym_chunkmap_clear_if(base + 3 * CHUNK, 1, entry_one);
    CHECK(pym_chunkmap_lookup(base + 3 * CHUNK) == 0, "clear_if of a one-byte range");

    /* Beyond the 48 bits the map covers: refused, nothing written. */
    uintptr_t top = ((uintptr_t)1 << 48) - CHUNK;
    CHECK(!pym_chunkmap_set(top, 2 * CHUNK, entry_one), "a range crossing 2^48 is refused");
    CHECK(pym_chunkmap_lookup(top) == 0, "a refused set writes nothing");
    CHECK(!pym_chunkmap_set((uintptr_t)1 << 48, CHUNK, entry_one), "a range at 2^48 is refused");

    munmap(raw, raw_size);
}

/* A range crossing a leaf boundary (every 2^15 chunks = 8 GiB) sets entries in
 * two leaves.  Needs 8 GiB + of address space reserved with PROT_NONE. */
static void check_leaf_boundary(void)
{
    const uintptr_t leaf_span = CHUNK << PYM_CHUNKMAP_LEAF_BITS;
    size_t reserve = leaf_span + 4 * CHUNK;
    void *raw = mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) {
        printf("leaf boundary check skipped: cannot reserve %zu bytes of address space\n", reserve);
        return;
    }
    uintptr_t boundary = ((uintptr_t)raw + leaf_span - 1) & ~(leaf_span - 1);
    REQUIRE(boundary - CHUNK >= (uintptr_t)raw && boundary + 2 * CHUNK <= (uintptr_t)raw + reserve);
    uintptr_t entry = (uintptr_t)&static_variable | PYM_CHUNK_LARGE;
    CHECK(pym_chunkmap_set(boundary - CHUNK, 3 * CHUNK, entry), "set across a leaf boundary");
    CHECK(pym_chunkmap_lookup(boundary - 1) == entry, "last chunk of the lower leaf");
    CHECK(pym_chunkmap_lookup(boundary) == entry && pym_chunkmap_lookup(boundary + CHUNK) == entry,
          "first chunks of the upper leaf");
    CHECK(pym_chunkmap_lookup(boundary - 2 * CHUNK) == 0 && pym_chunkmap_lookup(boundary + 2 * CHUNK) == 0,
          "neighbours outside the range");
    pym_chunkmap_clear_if(boundary - CHUNK, 3 * CHUNK, entry);
    CHECK(pym_chunkmap_lookup(boundary - 1) == 0 && pym_chunkmap_lookup(boundary) == 0
              && pym_chunkmap_lookup(boundary + CHUNK) == 0,
          "clear_if across a leaf boundary");
    munmap(raw, reserve);
}

int main(void)
{
    pym_ensure_init();
    check_foreign_addresses("before any allocation");

    /* Keep some blocks alive so the map has leaves near the heap and mappings. */
    void *keep_small = pym_malloc(16), *keep_medium = pym_malloc(4000), *keep_large = pym_malloc(500000);
    REQUIRE(keep_small && keep_medium && keep_large);

    check_small_block();
    check_medium_block();
    check_large_block();
    check_direct_block();
    check_foreign_addresses("with blocks live");
    check_set_and_clear();
    check_leaf_boundary();

    pym_free(keep_small);
    pym_free(keep_medium);
    pym_free(keep_large);
    check_foreign_addresses("after freeing");
    return check_finish();
}
