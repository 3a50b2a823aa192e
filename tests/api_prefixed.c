/*
 * api_prefixed.c -- the pym_ functions beside the system allocator (linked
 * with libpymalloc-api only: malloc/free here are glibc's).
 *
 * Covers:
 *   - pym_malloc / pym_free / pym_calloc / pym_realloc / pym_aligned_alloc /
 *     pym_posix_memalign / pym_memalign / pym_valloc / pym_pvalloc /
 *     pym_usable_size / pym_owns work as their C library namesakes, while
 *     glibc's malloc keeps working beside them;
 *   - ownership: pym_owns is nonzero for the start of a pymalloc block and 0
 *     for glibc blocks, interior pointers, stack and static addresses, NULL,
 *     and large blocks already freed (cached or unmapped);
 *   - a pointer pymalloc did not hand out (a glibc block, a stack or static
 *     address) given to pym_free is ignored and counted in
 *     pym_stats_get().invalid_frees, and the glibc block stays usable --
 *     including glibc blocks that the kernel placed in the unused tail of a
 *     256 KiB chunk holding a small pymalloc large mapping (checked in a child
 *     process, since pymalloc aborts when it believes a pointer is its own);
 *   - interleaved glibc and pymalloc blocks keep their contents;
 *   - pym_stats_print(stdout) prints the statistics table, with its
 *     "block size" header and a row for a class in use.
 */
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pymalloc.h"
#include "check.h"
#include "testlib.h"

static void *(*volatile glibc_malloc)(size_t) = malloc;
static void (*volatile glibc_free)(void *) = free;

static int static_object[16];

static size_t invalid_frees_now(void)
{
    pym_stats_t stats;
    pym_stats_get(&stats);
    return stats.invalid_frees;
}

static void check_prefixed_functions(void)
{
    const size_t sizes[] = {0, 1, 24, 100, 512, 513, 5000, 131072, 131073, 400000, 3000000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t size = sizes[i];
        unsigned char *block = pym_malloc(size);
        REQUIRE(block != NULL, "pym_malloc(%zu)", size);
        CHECK(pym_owns(block), "pym_owns(pym_malloc(%zu))", size);
        CHECK(pym_usable_size(block) >= size, "pym_usable_size of %zu bytes: %zu", size, pym_usable_size(block));
        CHECK(!pym_owns(block + 1), "an interior pointer of a %zu-byte block is not a block", size);
        memset(block, 0xAA, pym_usable_size(block));
        pym_free(block);
    }

    /* pym_calloc zeroes a block that pym_malloc left dirty. */
    unsigned char *dirty = pym_malloc(200);
    REQUIRE(dirty != NULL);
    memset(dirty, 0xEE, pym_usable_size(dirty));
    pym_free(dirty);
    unsigned char *zeroed = pym_calloc(20, 10);
    REQUIRE(zeroed != NULL);
    CHECK(zeroed == dirty, "pym_calloc reuses the block just freed");
    size_t nonzero = 0;
    for (size_t i = 0; i < 200; i++)
        nonzero += zeroed[i] != 0;
    CHECK(nonzero == 0, "pym_calloc(20, 10) has %zu nonzero bytes", nonzero);
    errno = 0;
    CHECK(pym_calloc(SIZE_MAX, 2) == NULL && errno == ENOMEM, "pym_calloc overflow fails with ENOMEM");

    /* pym_realloc keeps data through small, medium and large sizes. */
    for (size_t i = 0; i < 200; i++)
        zeroed[i] = (unsigned char)i;
    unsigned char *grown = pym_realloc(zeroed, 3000);
    REQUIRE(grown != NULL);
    grown = pym_realloc(grown, 600000);
    REQUIRE(grown != NULL);
    size_t lost = 0;
    for (size_t i = 0; i < 200; i++)
        lost += grown[i] != (unsigned char)i;
    CHECK(lost == 0, "pym_realloc lost %zu bytes", lost);
    CHECK(pym_realloc(grown, 0) == NULL, "pym_realloc(p, 0) frees and returns NULL");
    unsigned char *fresh = pym_realloc(NULL, 64);
    CHECK(fresh != NULL && pym_owns(fresh), "pym_realloc(NULL, 64) allocates");
    pym_free(fresh);
    errno = 0;
    void *array = pym_reallocarray(NULL, SIZE_MAX / 4, 8);
    CHECK(array == NULL && errno == ENOMEM, "pym_reallocarray overflow fails with ENOMEM");

    /* Aligned allocation. */
    void *aligned = pym_aligned_alloc(64, 100);
    CHECK(aligned != NULL && aligned_to(aligned, 64) && pym_usable_size(aligned) >= 100,
          "pym_aligned_alloc(64, 100) = %p", aligned);
    pym_free(aligned);
    void *out = NULL;
    CHECK(pym_posix_memalign(&out, 4096, 10) == 0 && aligned_to(out, 4096) && pym_owns(out),
          "pym_posix_memalign(4096, 10) = %p", out);
    pym_free(out);
    out = (void *)&static_object;
    CHECK(pym_posix_memalign(&out, 12, 10) == EINVAL && out == (void *)&static_object,
          "pym_posix_memalign with alignment 12 is EINVAL and leaves *out");
    CHECK(pym_posix_memalign(&out, (size_t)1 << 20, 300000) == 0 && aligned_to(out, (size_t)1 << 20),
          "pym_posix_memalign(1 MiB, 300000) = %p", out);
    pym_free(out);
    void *memaligned = pym_memalign(256, 1000);
    CHECK(memaligned != NULL && aligned_to(memaligned, 256), "pym_memalign(256, 1000) = %p", memaligned);
    pym_free(memaligned);
    long page = sysconf(_SC_PAGESIZE);
    void *paged = pym_valloc(100);
    CHECK(paged != NULL && aligned_to(paged, (size_t)page), "pym_valloc(100) = %p", paged);
    pym_free(paged);
    paged = pym_pvalloc(100);
    CHECK(paged != NULL && aligned_to(paged, (size_t)page) && pym_usable_size(paged) >= (size_t)page,
          "pym_pvalloc(100) = %p", paged);
    pym_free(paged);
}

static void check_ownership_and_foreign_frees(void)
{
    unsigned char *theirs = glibc_malloc(10);
    unsigned char *ours = pym_malloc(10);
    REQUIRE(theirs != NULL && ours != NULL);
    CHECK(pym_owns(theirs) == 0, "pym_owns(glibc malloc(10)) must be 0");
    CHECK(pym_usable_size(theirs) == 0, "pym_usable_size of a glibc block must be 0");
    CHECK(pym_owns(ours) != 0, "pym_owns(pym_malloc(10)) must be nonzero");
    CHECK(malloc_usable_size(theirs) >= 10, "glibc's malloc_usable_size still answers for its blocks");
    int on_stack = 0;
    CHECK(!pym_owns(&on_stack) && !pym_owns(static_object) && !pym_owns(NULL), "stack, static, NULL");

    memcpy(theirs, "glibc-blk", 10);
    size_t before = invalid_frees_now();
    pym_free(theirs);
    CHECK(invalid_frees_now() == before + 1, "pym_free(glibc block) counted %zu invalid frees, expected 1",
          invalid_frees_now() - before);
    CHECK(memcmp(theirs, "glibc-blk", 10) == 0, "pym_free left the glibc block alone");
    pym_free(&on_stack);
    pym_free(static_object);
    CHECK(invalid_frees_now() == before + 3, "stack and static frees are counted too (%zu)",
          invalid_frees_now() - before);
    pym_free(NULL);
    CHECK(invalid_frees_now() == before + 3, "pym_free(NULL) is not an invalid free");

    /* A large glibc block (glibc maps it) is foreign too. */
    unsigned char *big = glibc_malloc(1 << 20);
    REQUIRE(big != NULL);
    CHECK(!pym_owns(big), "a glibc mmap block is not pymalloc's");
    pym_free(big);
    CHECK(invalid_frees_now() == before + 4, "pym_free(glibc mmap block) is counted");
    glibc_free(big);
    glibc_free(theirs); /* glibc still owns and frees it normally */
    pym_free(ours);
    CHECK(invalid_frees_now() == before + 4, "pym_free of our own block is not counted");

    /* pymalloc.h: "a large block is recognised as live" -- once freed (cached
     * for reuse or unmapped) it is no longer owned.  (A freed small or medium
     * block may still count, so those are not checked.)  A live neighbour of
     * each size stays owned. */
    const size_t large_sizes[] = {300000, 2000000};
    for (size_t i = 0; i < sizeof(large_sizes) / sizeof(large_sizes[0]); i++) {
        void *freed = pym_malloc(large_sizes[i]), *neighbour = pym_malloc(large_sizes[i]);
        REQUIRE(freed != NULL && neighbour != NULL);
        CHECK(pym_owns(freed), "a live %zu-byte block is owned", large_sizes[i]);
        pym_free(freed);
        CHECK(!pym_owns(freed) && pym_usable_size(freed) == 0, "a freed %zu-byte large block is not owned",
              large_sizes[i]);
        CHECK(pym_owns(neighbour), "the live %zu-byte neighbour is still owned", large_sizes[i]);
        pym_free(neighbour);
    }
}

/* Child process: glibc blocks mapped by the kernel into the unused part of a
 * chunk whose first pages hold a small pymalloc large mapping.  Exit 0 when
 * pym_free ignored and counted them, 1 when it did not, 77 when no glibc
 * block landed in such a chunk. */
static int foreign_block_in_chunk_tail_child(void)
{
    enum { OURS = 16, THEIRS = 32 };
    const size_t chunk = 256 * 1024;
    void *ours[OURS], *theirs[THEIRS], *inside[THEIRS];
    size_t inside_count = 0;
    for (int i = 0; i < OURS; i++) {
        ours[i] = pym_aligned_alloc(chunk, 4096); /* a 4 KiB mapping on a chunk boundary */
        if (ours[i] == NULL)
            return 1;
    }
    for (int j = 0; j < THEIRS; j++) {
        theirs[j] = glibc_malloc(150000); /* above glibc's mmap threshold: its own mapping */
        if (theirs[j] == NULL)
            return 1;
        for (int i = 0; i < OURS; i++)
            if ((uintptr_t)theirs[j] - (uintptr_t)ours[i] < chunk)
                inside[inside_count++] = theirs[j];
    }
    if (inside_count == 0)
        return 77;
    fprintf(stderr, "child: %zu glibc blocks lie in chunks of pymalloc large blocks (e.g. %p); pym_free on them\n",
            inside_count, inside[0]);
    size_t before = invalid_frees_now();
    int failures = 0;
    for (size_t k = 0; k < inside_count; k++) {
        if (pym_owns(inside[k]))
            failures++;
        pym_free(inside[k]); /* must be ignored: not pymalloc's */
    }
    if (invalid_frees_now() != before + inside_count)
        failures++;
    for (int j = 0; j < THEIRS; j++)
        glibc_free(theirs[j]);
    for (int i = 0; i < OURS; i++)
        pym_free(ours[i]);
    return failures ? 1 : 0;
}

static void check_foreign_block_in_chunk_tail(void)
{
    fflush(stdout);
    fflush(stderr);
    pid_t child = fork();
    REQUIRE(child >= 0, "fork");
    if (child == 0)
        _exit(foreign_block_in_chunk_tail_child());
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
        printf("foreign block in a chunk tail: skipped (the kernel placed no glibc block there)\n");
        return;
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "pym_free of a glibc block lying in the unmapped tail of a pymalloc large block's chunk must be "
          "ignored and counted; the child %s %d",
          WIFSIGNALED(status) ? "died of signal" : "exited with", WIFSIGNALED(status) ? WTERMSIG(status)
                                                                                  : WEXITSTATUS(status));
}

static void check_interleaving(void)
{
    enum { COUNT = 3000 };
    static unsigned char *ours[COUNT], *theirs[COUNT];
    static size_t sizes[COUNT];
    uint32_t state = 99;
    for (int i = 0; i < COUNT; i++) {
        state = state * 1664525u + 1013904223u;
        sizes[i] = 1 + (state >> 8) % (i % 50 == 0 ? 300000 : 2000);
        ours[i] = pym_malloc(sizes[i]);
        theirs[i] = glibc_malloc(sizes[i]);
        REQUIRE(ours[i] != NULL && theirs[i] != NULL);
        memset(ours[i], (unsigned char)i, sizes[i]);
        memset(theirs[i], (unsigned char)~i, sizes[i]);
    }
    size_t wrong_owner = 0, damaged = 0;
    for (int i = 0; i < COUNT; i++) {
        wrong_owner += !pym_owns(ours[i]) + (pym_owns(theirs[i]) != 0);
        damaged += ours[i][0] != (unsigned char)i || ours[i][sizes[i] - 1] != (unsigned char)i;
        damaged += theirs[i][0] != (unsigned char)~i || theirs[i][sizes[i] - 1] != (unsigned char)~i;
    }
    CHECK(wrong_owner == 0, "pym_owns was wrong for %zu of %d blocks", wrong_owner, 2 * COUNT);
    CHECK(damaged == 0, "%zu interleaved blocks were overwritten", damaged);
    size_t before = invalid_frees_now();
    for (int i = 0; i < COUNT; i++) {
        pym_free(ours[i]);
        glibc_free(theirs[i]);
    }
    CHECK(invalid_frees_now() == before, "freeing our own blocks counts no invalid free");
}

static void check_stats_print(void)
{
    void *live = pym_malloc(100); /* a 112-byte block in the default mode */
    REQUIRE(live != NULL);
    size_t block_size = pym_usable_size(live);

    FILE *capture = tmpfile();
    REQUIRE(capture != NULL);
    fflush(stdout);
    int saved_stdout = dup(STDOUT_FILENO);
    REQUIRE(saved_stdout >= 0);
    REQUIRE(dup2(fileno(capture), STDOUT_FILENO) >= 0);
    pym_stats_print(stdout);
    fflush(stdout);
    dup2(saved_stdout, STDOUT_FILENO);
    close(saved_stdout);

    rewind(capture);
    static char text[64 * 1024];
    size_t length = fread(text, 1, sizeof(text) - 1, capture);
    text[length] = '\0';
    fclose(capture);

    CHECK(length > 0, "pym_stats_print(stdout) printed nothing");
    CHECK(strstr(text, "block size") != NULL, "the table has a \"block size\" column:\n%s", text);
    CHECK(strstr(text, "pymalloc statistics") != NULL, "the table has its title");
    /* A row for the live block's class: "<class>   <block size>   <pools> ...". */
    char row[64];
    snprintf(row, sizeof(row), "%5d   %10zu   ", pym_size_class(100), block_size);
    CHECK(strstr(text, row) != NULL, "the table has a row for the %zu-byte class in use", block_size);
    CHECK(strstr(text, "# foreign frees ignored") != NULL, "the table reports foreign frees");
    pym_free(live);
}

int main(void)
{
    check_foreign_block_in_chunk_tail(); /* first: it depends on a fresh address-space layout */
    check_prefixed_functions();
    check_ownership_and_foreign_frees();
    check_interleaving();
    check_stats_print();
    return check_finish();
}
