/*
 * api_malloc.c -- malloc, calloc, free, reallocarray, malloc_usable_size,
 * valloc and pvalloc as the program sees them (linked with -lpymalloc: the
 * whole process allocates with pymalloc).
 *
 * Covers:
 *   - malloc(0) returns distinct, freeable pointers; free(NULL) is a no-op;
 *   - requests above PTRDIFF_MAX (SIZE_MAX, PTRDIFF_MAX + 1) and PTRDIFF_MAX
 *     itself fail with NULL and ENOMEM;
 *   - calloc and reallocarray overflow fail with NULL and ENOMEM, and the
 *     block given to a failing reallocarray is untouched;
 *   - calloc memory is zero, also when it reuses a block just freed dirty
 *     (small, medium, large-cached sizes);
 *   - malloc_usable_size >= the request for every size 0..5000 and several
 *     large sizes, equal to the class block size for pooled sizes, constant
 *     while the block lives, 0 for NULL;
 *   - default mode: 24 bytes -> 16-aligned, 32 usable; every size 1..1024 is
 *     16-aligned from 16 bytes up and 8-aligned below;
 *   - filling every usable byte of thousands of blocks corrupts nothing;
 *   - pym_ functions and the malloc family free each other's blocks;
 *   - valloc / pvalloc are page aligned and pvalloc rounds up to pages;
 *   - PYMALLOC_ALIGN=8, in a re-executed copy of this program: 24 bytes ->
 *     24 usable, 8-aligned, and blocks are packed 24 bytes apart.
 * Calls go through volatile function pointers so the compiler cannot fold
 * them with its built-in knowledge of malloc (e.g. "calloc returns zeros").
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

#define ALIGN8_CHILD_FLAG "--align8-child"

static void *(*volatile malloc_fn)(size_t) = malloc;
static void *(*volatile calloc_fn)(size_t, size_t) = calloc;
static void *(*volatile reallocarray_fn)(void *, size_t, size_t) = reallocarray;
static void (*volatile free_fn)(void *) = free;
static size_t (*volatile usable_fn)(void *) = malloc_usable_size;
static void *(*volatile valloc_fn)(size_t) = valloc;
static void *(*volatile pvalloc_fn)(size_t) = pvalloc;

extern char **environ;

static int compare_pointers(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

/* xorshift: deterministic sizes and patterns. */
static uint64_t random_state = 0x2545f4914f6cdd1dULL;
static uint64_t random_next(void)
{
    random_state ^= random_state << 13;
    random_state ^= random_state >> 7;
    random_state ^= random_state << 17;
    return random_state;
}

/* ---- malloc(0) and free(NULL) ---------------------------------------------------- */
static void check_malloc_zero(void)
{
    enum { COUNT = 2000 };
    static void *blocks[COUNT];
    size_t null_results = 0;
    for (size_t i = 0; i < COUNT; i++) {
        blocks[i] = malloc_fn(0);
        null_results += blocks[i] == NULL;
    }
    CHECK(null_results == 0, "malloc(0) returned NULL %zu times", null_results);
    void *sorted[COUNT];
    memcpy(sorted, blocks, sizeof(sorted));
    qsort(sorted, COUNT, sizeof(void *), compare_pointers);
    size_t duplicates = 0;
    for (size_t i = 1; i < COUNT; i++)
        duplicates += sorted[i] == sorted[i - 1];
    CHECK(duplicates == 0, "malloc(0) returned %zu duplicate pointers", duplicates);
    CHECK(pym_owns(blocks[0]) && pym_owns(blocks[COUNT - 1]), "malloc(0) blocks are pymalloc blocks");
    pym_stats_t before;
    pym_stats_get(&before);
    for (size_t i = 0; i < COUNT; i++)
        free_fn(blocks[i]);
    pym_stats_t after;
    pym_stats_get(&after);
    CHECK(after.invalid_frees == before.invalid_frees, "freeing malloc(0) blocks is not an invalid free");

    free_fn(NULL);
    pym_free(NULL);
    pym_stats_get(&after);
    CHECK(after.invalid_frees == before.invalid_frees, "free(NULL) is not counted as an invalid free");
    CHECK(usable_fn(NULL) == 0, "malloc_usable_size(NULL) = %zu", usable_fn(NULL));
}

/* ---- requests that cannot be served ------------------------------------------------- */
static void check_impossible_requests(void)
{
    const size_t sizes[] = {SIZE_MAX, (size_t)PTRDIFF_MAX + 1, (size_t)PTRDIFF_MAX, SIZE_MAX - 4095};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        errno = 0;
        void *block = malloc_fn(sizes[i]);
        CHECK(block == NULL && errno == ENOMEM, "malloc(%zu): %p, errno %d", sizes[i], block, errno);
        errno = 0;
        block = calloc_fn(1, sizes[i]);
        CHECK(block == NULL && errno == ENOMEM, "calloc(1, %zu): %p, errno %d", sizes[i], block, errno);
        errno = 0;
        block = pym_malloc(sizes[i]);
        CHECK(block == NULL && errno == ENOMEM, "pym_malloc(%zu): %p, errno %d", sizes[i], block, errno);
    }

    struct { size_t count, size; } overflows[] = {
        {SIZE_MAX / 2 + 1, 2}, {SIZE_MAX, SIZE_MAX}, {2, SIZE_MAX / 2 + 1}, {(size_t)1 << 32, (size_t)1 << 32},
        {(size_t)PTRDIFF_MAX / 2 + 1, 2}, /* no overflow, but above PTRDIFF_MAX */
    };
    for (size_t i = 0; i < sizeof(overflows) / sizeof(overflows[0]); i++) {
        errno = 0;
        void *block = calloc_fn(overflows[i].count, overflows[i].size);
        CHECK(block == NULL && errno == ENOMEM, "calloc(%zu, %zu): %p, errno %d", overflows[i].count,
              overflows[i].size, block, errno);
    }

    /* reallocarray overflow leaves the block alone. */
    const size_t size = 100;
    unsigned char *block = malloc_fn(size);
    REQUIRE(block != NULL);
    for (size_t i = 0; i < size; i++)
        block[i] = (unsigned char)(i * 7 + 3);
    size_t usable = usable_fn(block);
    for (size_t i = 0; i < sizeof(overflows) / sizeof(overflows[0]) - 1; i++) {
        errno = 0;
        void *moved = reallocarray_fn(block, overflows[i].count, overflows[i].size);
        CHECK(moved == NULL && errno == ENOMEM, "reallocarray(p, %zu, %zu): %p, errno %d", overflows[i].count,
              overflows[i].size, moved, errno);
    }
    size_t damaged = 0;
    for (size_t i = 0; i < size; i++)
        damaged += block[i] != (unsigned char)(i * 7 + 3);
    CHECK(damaged == 0, "a failed reallocarray changed %zu bytes of the block", damaged);
    CHECK(usable_fn(block) == usable && pym_owns(block), "a failed reallocarray keeps the block live");
    /* A working reallocarray on the same block still works. */
    unsigned char *grown = reallocarray_fn(block, 10, 100);
    REQUIRE(grown != NULL);
    damaged = 0;
    for (size_t i = 0; i < size; i++)
        damaged += grown[i] != (unsigned char)(i * 7 + 3);
    CHECK(damaged == 0 && usable_fn(grown) >= 1000, "reallocarray(p, 10, 100) keeps the data");
    free_fn(grown);
}

/* ---- calloc zeroes reused memory ------------------------------------------------------- */
static void check_calloc_zeroes_reused_blocks(void)
{
    const size_t sizes[] = {8, 24, 100, 512, 1000, 5000, 100000, 200000, 600000};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t size = sizes[s];
        unsigned char *dirty = malloc_fn(size);
        REQUIRE(dirty != NULL);
        memset(dirty, 0xAB, usable_fn(dirty));
        free_fn(dirty);
        size_t reused = 0, nonzero_blocks = 0;
        for (int round = 0; round < 40; round++) {
            unsigned char *block = round & 1 ? calloc_fn(size, 1) : calloc_fn(1, size);
            REQUIRE(block != NULL, "calloc of %zu bytes", size);
            reused += block == dirty;
            size_t nonzero = 0;
            for (size_t i = 0; i < size; i++)
                nonzero += block[i] != 0;
            if (nonzero) {
                nonzero_blocks++;
                fprintf(stderr, "calloc(%zu) round %d: %zu nonzero bytes\n", size, round, nonzero);
            }
            memset(block, 0xAB, usable_fn(block)); /* dirty it for the next round */
            dirty = block;
            free_fn(block);
        }
        CHECK(nonzero_blocks == 0, "calloc of %zu bytes returned %zu blocks that were not zero", size, nonzero_blocks);
        CHECK(reused > 0, "calloc of %zu bytes never reused the block just freed: the reuse path went untested", size);
    }
}

/* ---- malloc_usable_size ------------------------------------------------------------------- */
static void check_usable_sizes(void)
{
    enum { SMALL_MAX = 5000 };
    static void *blocks[SMALL_MAX + 1];
    static size_t usable[SMALL_MAX + 1];
    size_t too_small = 0, not_class_size = 0;
    for (size_t size = 0; size <= SMALL_MAX; size++) {
        blocks[size] = malloc_fn(size);
        REQUIRE(blocks[size] != NULL, "malloc(%zu)", size);
        usable[size] = usable_fn(blocks[size]);
        too_small += usable[size] < size;
        not_class_size += usable[size] != pym_class_block_size(pym_size_class(size));
        memset(blocks[size], 0x11, usable[size]);
    }
    CHECK(too_small == 0, "%zu blocks of 0..5000 bytes have a usable size below the request", too_small);
    CHECK(not_class_size == 0, "%zu blocks have a usable size other than their class's block size",
          not_class_size);
    CHECK(pym_usable_size(blocks[100]) == usable[100], "pym_usable_size agrees with malloc_usable_size");

    const size_t large_sizes[] = {131073, 200000, 262144, 300001, 1000000, 1048576, 3 * 1048576 + 17, 20000000};
    enum { LARGE_COUNT = sizeof(large_sizes) / sizeof(large_sizes[0]) };
    void *large[LARGE_COUNT];
    size_t large_usable[LARGE_COUNT];
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < LARGE_COUNT; i++) {
        large[i] = malloc_fn(large_sizes[i]);
        REQUIRE(large[i] != NULL, "malloc(%zu)", large_sizes[i]);
        large_usable[i] = usable_fn(large[i]);
        CHECK(large_usable[i] >= large_sizes[i], "malloc(%zu): usable %zu", large_sizes[i], large_usable[i]);
        CHECK(large_usable[i] <= large_sizes[i] + large_sizes[i] / 4 + page, "malloc(%zu): usable %zu is too big",
              large_sizes[i], large_usable[i]);
        memset(large[i], 0x22, large_usable[i]);
    }

    /* Churn: other allocations and frees must not change any live block's size. */
    void *churn[1000];
    for (size_t i = 0; i < 1000; i++)
        churn[i] = malloc_fn(random_next() % 3000);
    for (size_t i = 0; i < 1000; i += 2)
        free_fn(churn[i]);
    size_t changed = 0;
    for (size_t size = 0; size <= SMALL_MAX; size++)
        changed += usable_fn(blocks[size]) != usable[size];
    for (size_t i = 0; i < LARGE_COUNT; i++)
        changed += usable_fn(large[i]) != large_usable[i];
    CHECK(changed == 0, "%zu live blocks changed their usable size", changed);
    size_t overwritten = 0;
    for (size_t size = 0; size <= SMALL_MAX; size++)
        for (size_t i = 0; i < usable[size]; i++)
            overwritten += ((unsigned char *)blocks[size])[i] != 0x11;
    CHECK(overwritten == 0, "%zu bytes of live blocks were overwritten", overwritten);

    for (size_t i = 1; i < 1000; i += 2)
        free_fn(churn[i]);
    for (size_t size = 0; size <= SMALL_MAX; size++)
        free_fn(blocks[size]);
    for (size_t i = 0; i < LARGE_COUNT; i++)
        free_fn(large[i]);
}

/* ---- alignment in the default mode ------------------------------------------------------------ */
static void check_default_alignment(void)
{
    pym_stats_t stats;
    pym_stats_get(&stats);
    CHECK(stats.alignment == 16, "default alignment mode is %u", stats.alignment);

    void *block = malloc_fn(24);
    REQUIRE(block != NULL);
    CHECK(aligned_to(block, 16), "malloc(24) = %p is not 16-aligned", block);
    CHECK(usable_fn(block) == 32, "malloc(24) usable size %zu, expected 32", usable_fn(block));
    free_fn(block);

    enum { PER_SIZE = 4, MAX_SIZE = 1024 };
    static void *blocks[MAX_SIZE + 1][PER_SIZE];
    size_t misaligned = 0;
    for (size_t size = 1; size <= MAX_SIZE; size++) {
        size_t alignment = size >= 16 ? 16 : 8;
        for (int i = 0; i < PER_SIZE; i++) {
            blocks[size][i] = malloc_fn(size);
            REQUIRE(blocks[size][i] != NULL);
            if (!aligned_to(blocks[size][i], alignment)) {
                if (misaligned++ < 5)
                    fprintf(stderr, "malloc(%zu) = %p is not %zu-aligned\n", size, blocks[size][i], alignment);
            }
        }
    }
    CHECK(misaligned == 0, "%zu blocks of 1..1024 bytes are misaligned", misaligned);
    for (size_t size = 1; size <= MAX_SIZE; size++)
        for (int i = 0; i < PER_SIZE; i++)
            free_fn(blocks[size][i]);

    /* calloc follows the same rule. */
    void *zeroed = calloc_fn(3, 8);
    CHECK(zeroed != NULL && aligned_to(zeroed, 16) && usable_fn(zeroed) == 32, "calloc(3, 8) aligned and 32 usable");
    free_fn(zeroed);
}

/* ---- writing every usable byte ------------------------------------------------------------------- */
static size_t random_request(void)
{
    uint64_t pick = random_next() % 1000;
    if (pick < 700)
        return random_next() % 513;
    if (pick < 990)
        return 513 + random_next() % 40000;
    return 131073 + random_next() % 1200000;
}

static unsigned char pattern_byte(size_t slot, size_t generation, size_t offset)
{
    return (unsigned char)(slot * 31 + generation * 17 + offset * 13 + (offset >> 8));
}

static size_t verify_block(unsigned char *block, size_t usable, size_t slot, size_t generation)
{
    size_t bad = 0;
    for (size_t i = 0; i < usable; i++)
        bad += block[i] != pattern_byte(slot, generation, i);
    return bad;
}

static void check_full_usable_writes(void)
{
    enum { SLOTS = 4000, ROUNDS = 4 };
    static unsigned char *blocks[SLOTS];
    static size_t usable[SLOTS], generation[SLOTS];
    size_t corrupt = 0;
    for (size_t slot = 0; slot < SLOTS; slot++) {
        blocks[slot] = malloc_fn(random_request());
        REQUIRE(blocks[slot] != NULL);
        usable[slot] = usable_fn(blocks[slot]);
        for (size_t i = 0; i < usable[slot]; i++)
            blocks[slot][i] = pattern_byte(slot, 0, i);
    }
    for (size_t round = 1; round <= ROUNDS; round++) {
        /* Verify everything, then replace a random half. */
        for (size_t slot = 0; slot < SLOTS; slot++)
            corrupt += verify_block(blocks[slot], usable[slot], slot, generation[slot]) != 0;
        for (size_t slot = 0; slot < SLOTS; slot++) {
            if (random_next() & 1)
                continue;
            free_fn(blocks[slot]);
            blocks[slot] = malloc_fn(random_request());
            REQUIRE(blocks[slot] != NULL);
            usable[slot] = usable_fn(blocks[slot]);
            generation[slot] = round;
            for (size_t i = 0; i < usable[slot]; i++)
                blocks[slot][i] = pattern_byte(slot, round, i);
        }
    }
    for (size_t slot = 0; slot < SLOTS; slot++) {
        corrupt += verify_block(blocks[slot], usable[slot], slot, generation[slot]) != 0;
        free_fn(blocks[slot]);
    }
    CHECK(corrupt == 0, "%zu block verifications found bytes overwritten by a neighbour", corrupt);
}

/* ---- pym_ functions and the malloc family mix -------------------------------------------------- */
static void check_interoperation(void)
{
    pym_stats_t before;
    pym_stats_get(&before);

    void *block = pym_malloc(100);
    REQUIRE(block != NULL);
    CHECK(usable_fn(block) == pym_usable_size(block), "both usable-size functions agree");
    free_fn(block);
    void *again = malloc_fn(100);
    CHECK(again == block, "free() released a pym_malloc block: malloc reuses it (%p vs %p)", again, block);
    pym_free(again);
    void *third = pym_malloc(100);
    CHECK(third == block, "pym_free() released a malloc block: pym_malloc reuses it (%p vs %p)", third, block);
    free_fn(third);

    /* Every size range, in both directions. */
    const size_t sizes[] = {1, 64, 512, 513, 4000, 131072, 131073, 500000, 2000000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char *ours = pym_malloc(sizes[i]);
        char *theirs = malloc_fn(sizes[i]);
        REQUIRE(ours != NULL && theirs != NULL);
        ours[sizes[i] - 1] = 1;
        theirs[sizes[i] - 1] = 2;
        CHECK(pym_owns(theirs) && pym_owns(ours), "both blocks of %zu bytes are pymalloc's", sizes[i]);
        free_fn(ours);
        pym_free(theirs);
        char *grown = pym_realloc(malloc_fn(sizes[i]), sizes[i] * 2);
        REQUIRE(grown != NULL);
        char *shrunk = realloc(grown, sizes[i]);
        REQUIRE(shrunk != NULL);
        pym_free(shrunk);
    }
    void *zeroed = pym_calloc(10, 10);
    REQUIRE(zeroed != NULL);
    free_fn(zeroed);

    pym_stats_t after;
    pym_stats_get(&after);
    CHECK(after.invalid_frees == before.invalid_frees, "cross frees are real frees, not ignored foreign ones (%zu)",
          after.invalid_frees - before.invalid_frees);
    CHECK(after.large_count == before.large_count, "no large block leaked (%zu -> %zu)", before.large_count,
          after.large_count);
}

/* ---- valloc and pvalloc ------------------------------------------------------------------------------ */
static void check_page_aligned(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t sizes[] = {0, 1, 100, 4095, 4096, 4097, 5000, 70000, 131072, 300000, 2000000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t size = sizes[i];
        char *block = valloc_fn(size);
        REQUIRE(block != NULL, "valloc(%zu)", size);
        CHECK(aligned_to(block, page), "valloc(%zu) = %p", size, (void *)block);
        CHECK(usable_fn(block) >= size, "valloc(%zu) usable %zu", size, usable_fn(block));
        if (size)
            memset(block, 0x33, size);
        free_fn(block);

        size_t rounded = size ? (size + page - 1) / page * page : page;
        block = pvalloc_fn(size);
        REQUIRE(block != NULL, "pvalloc(%zu)", size);
        CHECK(aligned_to(block, page), "pvalloc(%zu) = %p", size, (void *)block);
        CHECK(usable_fn(block) >= rounded, "pvalloc(%zu) usable %zu, expected >= %zu", size, usable_fn(block),
              rounded);
        memset(block, 0x44, rounded); /* pvalloc promises whole pages */
        free_fn(block);
    }
    errno = 0;
    void *block = pvalloc_fn(SIZE_MAX - 10);
    CHECK(block == NULL && errno == ENOMEM, "pvalloc(SIZE_MAX - 10): %p, errno %d", block, errno);
    errno = 0;
    block = valloc_fn((size_t)PTRDIFF_MAX + 1);
    CHECK(block == NULL && errno == ENOMEM, "valloc(PTRDIFF_MAX + 1): %p, errno %d", block, errno);
}

/* ---- PYMALLOC_ALIGN=8 --------------------------------------------------------------------------------- */
static char **environment_with(const char *setting)
{
    size_t count = 0;
    while (environ[count] != NULL)
        count++;
    char **copy = malloc_fn((count + 2) * sizeof(char *));
    REQUIRE(copy != NULL);
    size_t used = 0;
    for (size_t i = 0; i < count; i++)
        if (strncmp(environ[i], "PYMALLOC_ALIGN=", 15) != 0)
            copy[used++] = environ[i];
    if (setting != NULL)
        copy[used++] = (char *)setting;
    copy[used] = NULL;
    return copy;
}

static int run_align8_child(void)
{
    pym_stats_t stats;
    pym_stats_get(&stats);
    CHECK(stats.alignment == 8, "child: alignment mode is %u with PYMALLOC_ALIGN=8", stats.alignment);
    CHECK(pym_size_class(24) == 2, "child: 24 bytes use class 2, got %d", pym_size_class(24));

    enum { COUNT = 32 };
    void *blocks[COUNT];
    size_t wrong_usable = 0, misaligned = 0, not_16_aligned = 0;
    for (int i = 0; i < COUNT; i++) {
        blocks[i] = malloc_fn(24);
        REQUIRE(blocks[i] != NULL);
        wrong_usable += usable_fn(blocks[i]) != 24;
        misaligned += !aligned_to(blocks[i], 8);
        not_16_aligned += !aligned_to(blocks[i], 16);
        memset(blocks[i], i, 24);
    }
    CHECK(wrong_usable == 0, "child: %zu 24-byte blocks have a usable size other than 24", wrong_usable);
    CHECK(misaligned == 0, "child: %zu 24-byte blocks are not 8-aligned", misaligned);
    CHECK(not_16_aligned > 0, "child: 24-byte blocks are packed 24 bytes apart, so some are only 8-aligned");
    for (int i = 0; i < COUNT; i++) {
        const unsigned char *bytes = blocks[i];
        CHECK(bytes[0] == i && bytes[23] == i, "child: block %d intact", i);
        free_fn(blocks[i]);
    }
    void *block = malloc_fn(17);
    CHECK(block != NULL && usable_fn(block) == 24, "child: malloc(17) usable %zu", block ? usable_fn(block) : 0);
    free_fn(block);
    block = malloc_fn(40);
    CHECK(block != NULL && usable_fn(block) == 40, "child: malloc(40) usable %zu", block ? usable_fn(block) : 0);
    free_fn(block);
    /* An explicit 16-byte alignment request is still honoured in mode 8. */
    void *aligned = NULL;
    CHECK(posix_memalign(&aligned, 16, 24) == 0 && aligned_to(aligned, 16), "child: posix_memalign(16, 24)");
    free_fn(aligned);
    return check_finish();
}

static void check_align8_mode(const char *self)
{
    fflush(stdout);
    fflush(stderr);
    char **environment = environment_with("PYMALLOC_ALIGN=8");
    pid_t child = fork();
    REQUIRE(child >= 0, "fork");
    if (child == 0) {
        char *arguments[] = {(char *)self, (char *)ALIGN8_CHILD_FLAG, NULL};
        execve("/proc/self/exe", arguments, environment);
        execve(self, arguments, environment); /* no /proc: the path we were started by */
        perror("execve");
        _exit(127);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the PYMALLOC_ALIGN=8 run failed (status %#x)", status);
    free_fn(environment);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], ALIGN8_CHILD_FLAG) == 0)
        return run_align8_child();
    if (getenv("PYMALLOC_ALIGN") != NULL) {
        /* The default-mode checks need the default mode: run again without it. */
        char **environment = environment_with(NULL);
        execve("/proc/self/exe", argv, environment);
        execve(argv[0], argv, environment);
        perror("execve");
        return 1;
    }

    check_malloc_zero();
    check_impossible_requests();
    check_calloc_zeroes_reused_blocks();
    check_usable_sizes();
    check_default_alignment();
    check_full_usable_writes();
    check_interoperation();
    check_page_aligned();
    check_align8_mode(argv[0]);
    return check_finish();
}
