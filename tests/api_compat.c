/*
 * api_compat.c -- glibc's introspection entry points as pymalloc answers
 * them (compat.c), linked with -lpymalloc.
 *
 * Covers:
 *   - mallinfo2: uordblks grows by the bytes of 100,000 live 100-byte
 *     blocks (their 112-byte class) and falls back when they are freed;
 *     hblks/hblkhd count a live 1 MB block; arena covers the blocks in use;
 *   - mallinfo: the same figures in ints;
 *   - malloc_trim: 40 MB of small blocks freed but one pool in each arena:
 *     no arena can go, yet malloc_trim returns 1 and the RSS drops by
 *     more than 10 MiB (free pools' pages), keepcost is 0, live blocks
 *     are intact;
 *     with nothing left to give back it returns 0;
 *   - malloc_info: well-formed XML (<malloc ...> ... </malloc>, one <size>
 *     row per class in use); options != 0 fails with EINVAL;
 *   - mallopt: 1 for glibc's parameters (ignored), 0 for an unknown one;
 *   - malloc_stats: prints glibc's "in use bytes" lines and pymalloc's table
 *     on stderr;
 *   - cached empty chunks are unmapped once unused for a second.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pymalloc.h"
#include "check.h"
#include "testlib.h"

static void *(*volatile malloc_fn)(size_t) = malloc;
static void (*volatile free_fn)(void *) = free;

static void check_mallinfo(void)
{
    enum { COUNT = 100000 };
    const size_t block = pym_class_block_size(pym_size_class(100));
    static void *blocks[COUNT];
    struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < COUNT; i++)
        REQUIRE((blocks[i] = malloc_fn(100)) != NULL);
    void *large = malloc_fn(1000 * 1000);
    REQUIRE(large != NULL);
    struct mallinfo2 during = mallinfo2();
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations" /* still called by old programs */
    struct mallinfo narrow = mallinfo();
#pragma GCC diagnostic pop
    size_t grown = during.uordblks - before.uordblks;
    CHECK(grown >= COUNT * block && grown <= COUNT * block + 64 * 1024,
          "uordblks grew by %zu for %d blocks of %zu bytes", grown, COUNT, block);
    CHECK(during.hblks == before.hblks + 1 && during.hblkhd >= before.hblkhd + 1000 * 1000,
          "a live 1 MB block counts in hblks (%zu -> %zu) and hblkhd (%zu -> %zu)", before.hblks, during.hblks,
          before.hblkhd, during.hblkhd);
    CHECK(during.arena >= during.uordblks, "arena %zu covers uordblks %zu", during.arena, during.uordblks);
    CHECK((size_t)narrow.uordblks == during.uordblks && (size_t)narrow.hblks == during.hblks,
          "mallinfo agrees with mallinfo2 (%d / %zu)", narrow.uordblks, during.uordblks);
    for (int i = 0; i < COUNT; i++)
        free_fn(blocks[i]);
    free_fn(large);
    struct mallinfo2 after = mallinfo2();
    CHECK(after.uordblks <= before.uordblks + 64 * 1024, "uordblks back to %zu (was %zu)", after.uordblks,
          before.uordblks);
    CHECK(after.hblks == before.hblks, "hblks back to %zu", after.hblks);
}

static void check_malloc_trim(void)
{
    enum { COUNT = 500000 };
    static void *blocks[COUNT];
    for (int i = 0; i < COUNT; i++) {
        REQUIRE((blocks[i] = malloc_fn(80)) != NULL);
        memset(blocks[i], 0x5a, 80);
    }
    /* Free all but one block in 3200 (a pool holds 50 blocks of 80 bytes, an
     * arena 64 pools): every arena keeps one pool in use, so no arena can be
     * unmapped, and its free pools keep their pages until trimmed. */
    enum { KEEP_EVERY = 3200 };
    for (int i = 0; i < COUNT; i++)
        if (i % KEEP_EVERY != 0)
            free_fn(blocks[i]);
    pym_stats_t loaded;
    pym_stats_get(&loaded);
    long rss_loaded = (long)rss_kib();
    CHECK(malloc_trim(0) == 1, "malloc_trim gives memory back after 40 MB were freed");
    long rss_trimmed = (long)rss_kib();
    pym_stats_t trimmed;
    pym_stats_get(&trimmed);
    printf("malloc_trim: RSS %ld -> %ld KiB, mapped %zu -> %zu bytes\n", rss_loaded, rss_trimmed, loaded.mapped_bytes,
           trimmed.mapped_bytes);
    CHECK(rss_trimmed + 10 * 1024 < rss_loaded, "RSS drops by more than 10 MiB (%ld -> %ld KiB)", rss_loaded,
          rss_trimmed);
    CHECK(trimmed.arenas_cached == 0 && trimmed.large_cached_bytes == 0, "no empty chunk or large mapping is kept");
    CHECK(mallinfo2().keepcost == 0, "keepcost is 0 right after a trim");
    size_t corrupt = 0;
    for (int i = 0; i < COUNT; i += KEEP_EVERY) {
        const unsigned char *bytes = blocks[i];
        corrupt += bytes[0] != 0x5a || bytes[79] != 0x5a;
        free_fn(blocks[i]);
    }
    CHECK(corrupt == 0, "%zu live blocks were damaged by the trim", corrupt);
    malloc_trim(0);
    CHECK(malloc_trim(0) == 0, "a second trim finds nothing to give back");
    void *again = malloc_fn(80);
    CHECK(again != NULL, "allocation works after a trim");
    free_fn(again);
}

static void check_malloc_info(void)
{
    void *keep = malloc_fn(3000);
    char *text = NULL;
    size_t length = 0;
    FILE *stream = open_memstream(&text, &length);
    REQUIRE(stream != NULL);
    CHECK(malloc_info(0, stream) == 0, "malloc_info(0, stream) succeeds");
    fclose(stream);
    REQUIRE(text != NULL);
    CHECK(strncmp(text, "<malloc version=", 16) == 0, "the XML starts with <malloc version=...>");
    CHECK(length > 10 && strcmp(text + length - 10, "</malloc>\n") == 0, "and ends with </malloc>");
    CHECK(strstr(text, "<size from=") != NULL && strstr(text, "<system type=\"current\"") != NULL,
          "it lists size rows and the system totals");
    int opens = 0, closes = 0;
    for (const char *at = text; (at = strchr(at, '<')) != NULL; at++)
        at[1] == '/' ? closes++ : opens++;
    int self_closing = 0;
    for (const char *at = text; (at = strstr(at, "/>")) != NULL; at++)
        self_closing++;
    CHECK(opens == closes + self_closing, "every element is closed (%d opened, %d closed, %d self-closing)", opens,
          closes, self_closing);
    free(text);
    errno = 0;
    CHECK(malloc_info(1, stdout) == -1 && errno == EINVAL, "options other than 0 fail with EINVAL");
    free_fn(keep);
}

static void check_mallopt(void)
{
    CHECK(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1, "mallopt(M_MMAP_THRESHOLD) is accepted");
    CHECK(mallopt(M_ARENA_MAX, 2) == 1, "mallopt(M_ARENA_MAX) is accepted");
    CHECK(mallopt(M_TRIM_THRESHOLD, 0) == 1, "mallopt(M_TRIM_THRESHOLD) is accepted");
    CHECK(mallopt(12345, 1) == 0, "an unknown parameter returns 0");
    void *block = malloc_fn(64);
    CHECK(block != NULL, "allocation works after mallopt");
    free_fn(block);
}

static void check_malloc_stats(void)
{
    fflush(stderr);
    int saved = dup(2);
    FILE *capture = tmpfile();
    REQUIRE(saved >= 0 && capture != NULL);
    dup2(fileno(capture), 2);
    malloc_stats();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char text[8192] = {0};
    rewind(capture);
    size_t got = fread(text, 1, sizeof text - 1, capture);
    fclose(capture);
    CHECK(got > 0 && strstr(text, "in use bytes     =") != NULL, "malloc_stats prints glibc's lines");
    CHECK(strstr(text, "pymalloc statistics") != NULL, "and pymalloc's table");
}

/* Empty chunks kept against map/unmap loops go back after PYMALLOC_DECAY_MS
 * (one second by default): a chunk released later sweeps the old ones. */
static void check_chunk_cache_decay(void)
{
    enum { COUNT = 60000 };
    static void *blocks[COUNT];
    for (int i = 0; i < COUNT; i++)
        REQUIRE((blocks[i] = malloc_fn(64)) != NULL);
    for (int i = 0; i < COUNT; i++)
        free_fn(blocks[i]);
    pym_flush_thread_cache();
    pym_stats_t full;
    pym_stats_get(&full);
    CHECK(full.arenas_cached >= 2, "freeing 4 MB of small blocks fills the chunk cache (%zu cached)",
          full.arenas_cached);
    usleep(1200 * 1000);
    void *span_block = malloc_fn(100000); /* a medium span: takes one cached chunk */
    REQUIRE(span_block != NULL);
    free_fn(span_block);
    pym_flush_thread_cache(); /* the span empties: its chunk is released, the old ones swept */
    pym_stats_t swept;
    pym_stats_get(&swept);
    CHECK(swept.arenas_cached == 1, "after 1.2 s, releasing a chunk unmaps the old cached ones (%zu -> %zu cached)",
          full.arenas_cached, swept.arenas_cached);
    CHECK(swept.arenas_returned >= full.arenas_returned + full.arenas_cached - 1, "they were unmapped (%zu -> %zu)",
          full.arenas_returned, swept.arenas_returned);
}

int main(void)
{
    check_chunk_cache_decay();
    check_mallinfo();
    check_malloc_trim();
    check_malloc_info();
    check_mallopt();
    check_malloc_stats();
    return check_finish();
}
