/*
 * oom_ulimit_prog.c -- run by tests/faults/oom_ulimit.sh under `ulimit -v`
 * with libpymalloc.so preloaded (built without pymalloc: only the C library's
 * names, so the preload is what is tested).
 *
 * Usage: oom_ulimit_prog            the test (exits 0 when everything held)
 *        oom_ulimit_prog --vmsize   print VmSize in KiB after start-up, for
 *                                   the script to set the limit above it
 *
 * 1. Allocates 4000-byte blocks, pattern-filled, until malloc returns NULL:
 *    errno must be ENOMEM (it must happen before MAX_BLOCKS, i.e. the limit
 *    binds).  Then every other way to need memory fails cleanly too: small
 *    blocks until NULL, 1 MiB and 100 MiB malloc, calloc, posix_memalign
 *    (ENOMEM returned, errno untouched), aligned_alloc, realloc growing a
 *    block (NULL, block intact), realloc growing a large block.
 * 2. Frees every other 4000-byte block: as many allocations of that size
 *    succeed again, from the memory just freed.
 * 3. Frees everything (malloc_trim returns what the thread caches hold):
 *    large and medium allocations succeed again; the large block grows.
 * Every block's pattern is checked before it is freed.  Output goes through
 * write(2): stdio may need memory that is not there.
 */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "faults.h"

#define BLOCK 4000
#define MAX_BLOCKS (1 << 20)     /* 4 GB of blocks: far beyond any limit the script sets */
#define SMALL 48
#define MAX_SMALL (1 << 20)

static void *blocks[MAX_BLOCKS];
static void *smalls[MAX_SMALL];
static int failures;

static void say(const char *format, ...)
{
    char line[512];
    va_list args;
    va_start(args, format);
    int length = vsnprintf(line, sizeof(line), format, args); /* no allocation for these formats */
    va_end(args);
    if (length > 0 && write(1, line, (size_t)length < sizeof(line) ? (size_t)length : sizeof(line) - 1) < 0)
        _exit(3);
}

#define EXPECT(cond, ...)                          \
    do {                                           \
        if (!(cond)) {                             \
            say("oom_ulimit_prog: FAILED: " __VA_ARGS__); \
            say(" (line %d)\n", __LINE__);         \
            failures++;                            \
        }                                          \
    } while (0)

static void *volatile sink;

int main(int argc, char **argv)
{
    void *(*stats_get)(void *) = (void *(*)(void *))dlsym(RTLD_DEFAULT, "pym_stats_get");
    if (argc > 1 && strcmp(argv[1], "--vmsize") == 0) {
        say("%zu\n", vm_kib());
        return 0;
    }
    if (stats_get == NULL) {
        say("oom_ulimit_prog: pymalloc is not loaded (run with LD_PRELOAD=libpymalloc.so)\n");
        return 1;
    }
    struct rlimit limit;
    if (getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
        say("oom_ulimit_prog: no address-space limit is set (run under ulimit -v)\n");
        return 1;
    }
    say("oom_ulimit_prog: limit %zu KiB, VmSize at start %zu KiB\n", (size_t)(limit.rlim_cur / 1024), vm_kib());

    /* 1. Until NULL. */
    size_t count = 0;
    for (; count < MAX_BLOCKS; count++) {
        errno = 0;
        blocks[count] = malloc(BLOCK);
        if (blocks[count] == NULL)
            break;
        sampled_fill(blocks[count], BLOCK, count + 1);
    }
    EXPECT(count < MAX_BLOCKS, "malloc(%d) never failed under the limit", BLOCK);
    EXPECT(errno == ENOMEM, "malloc(%d) failed with errno %d, not ENOMEM", BLOCK, errno);
    say("oom_ulimit_prog: %zu blocks of %d bytes (%zu KiB) before NULL, VmSize %zu KiB\n", count, BLOCK,
        count * BLOCK / 1024, vm_kib());
    size_t small_count = 0;
    for (; small_count < MAX_SMALL; small_count++) {
        errno = 0;
        smalls[small_count] = malloc(SMALL);
        if (smalls[small_count] == NULL)
            break;
        sampled_fill(smalls[small_count], SMALL, ~(uint64_t)small_count);
    }
    EXPECT(small_count < MAX_SMALL && errno == ENOMEM, "malloc(%d) until NULL: errno %d", SMALL, errno);
    errno = 0;
    EXPECT(malloc(BLOCK) == NULL && errno == ENOMEM, "malloc(%d) again: errno %d", BLOCK, errno);
    errno = 0;
    EXPECT(malloc(1 << 20) == NULL && errno == ENOMEM, "malloc(1 MiB): errno %d", errno);
    errno = 0;
    EXPECT(malloc(100u << 20) == NULL && errno == ENOMEM, "malloc(100 MiB): errno %d", errno);
    errno = 0;
    EXPECT(calloc(1, 1 << 20) == NULL && errno == ENOMEM, "calloc(1 MiB): errno %d", errno);
    errno = 0;
    EXPECT(calloc(1, BLOCK) == NULL && errno == ENOMEM, "calloc(%d): errno %d", BLOCK, errno);
    errno = 0;
    EXPECT(aligned_alloc(1 << 20, 1 << 20) == NULL && errno == ENOMEM, "aligned_alloc(1 MiB): errno %d", errno);
    void *out = &out;
    errno = EDOM;
    int result = posix_memalign(&out, 4096, 1 << 20);
    EXPECT(result == ENOMEM && out == (void *)&out && errno == EDOM,
           "posix_memalign(1 MiB) = %d, errno %d (ENOMEM, errno untouched expected)", result, errno);
    if (count > 0) {
        errno = 0;
        void *grown = realloc(blocks[0], 3 * BLOCK);
        EXPECT(grown == NULL && errno == ENOMEM, "realloc growing a block: %p, errno %d", grown, errno);
        EXPECT(sampled_ok(blocks[0], BLOCK, 1), "a failed realloc damaged its block");
    }

    /* 2. Free every other block: as many come back. */
    size_t freed = 0;
    for (size_t i = 0; i < count; i += 2) {
        EXPECT(sampled_ok(blocks[i], BLOCK, i + 1), "block %zu corrupted", i);
        free(blocks[i]);
        blocks[i] = NULL;
        freed++;
    }
    size_t again = 0;
    for (size_t i = 0; i < count; i += 2) {
        blocks[i] = malloc(BLOCK);
        if (blocks[i] == NULL)
            break;
        sampled_fill(blocks[i], BLOCK, i + 1);
        again++;
    }
    EXPECT(again == freed, "freed %zu blocks of %d bytes, then %zu could be allocated again", freed, BLOCK, again);
    say("oom_ulimit_prog: freed %zu blocks, allocated %zu again\n", freed, again);

    /* 3. Free everything: big requests work again. */
    for (size_t i = 0; i < count; i++) {
        if (blocks[i] == NULL)
            continue;
        EXPECT(sampled_ok(blocks[i], BLOCK, i + 1), "block %zu corrupted", i);
        free(blocks[i]);
    }
    for (size_t i = 0; i < small_count; i++) {
        EXPECT(sampled_ok(smalls[i], SMALL, ~(uint64_t)i), "small block %zu corrupted", i);
        free(smalls[i]);
    }
    malloc_trim(0);
    char *large = malloc(16u << 20);
    EXPECT(large != NULL, "malloc(16 MiB) after freeing everything: errno %d", errno);
    if (large != NULL) {
        sampled_fill(large, 16u << 20, 77);
        char *larger = realloc(large, 32u << 20);
        EXPECT(larger != NULL, "realloc 16 -> 32 MiB after freeing everything: errno %d", errno);
        if (larger != NULL) {
            EXPECT(sampled_ok(larger, 16u << 20, 77), "realloc 16 -> 32 MiB lost the contents");
            large = larger;
        }
        free(large);
    }
    for (size_t i = 0; i < 1000; i++) {
        sink = malloc(BLOCK);
        EXPECT(sink != NULL, "malloc(%d) after freeing everything", BLOCK);
        free(sink);
    }
    void *aligned = NULL;
    EXPECT(posix_memalign(&aligned, 1 << 20, 1 << 20) == 0, "posix_memalign(1 MiB) after freeing everything");
    free(aligned);
    say("oom_ulimit_prog: %s\n", failures == 0 ? "all checks passed" : "FAILED");
    return failures == 0 ? 0 : 1;
}
