/* loop.c -- bench/pymalloc-bench-loop: malloc/free pairs in a loop, for
 * counting instructions under valgrind (`make bench-instructions`, driven by
 * bench/instructions.py).
 *
 *   pymalloc-bench-loop fixed PAIRS   PAIRS x (malloc(64), free)
 *   pymalloc-bench-loop mixed PAIRS   PAIRS x (malloc(size), free), size cycling
 *                                     through 16, 32, 48, 64, 96, 128, 256, 512
 *   pymalloc-bench-loop N PAIRS       PAIRS x (malloc(N), free) for N = 8, 32,
 *                                     256 or 4000 (the sizes of the project's
 *                                     instruction target)
 *
 * Each loop is its own function, never inlined (loop_fixed_64,
 * loop_mixed_sizes, loop_fixed_8, loop_fixed_32, loop_fixed_256,
 * loop_fixed_4000): callgrind's --toggle-collect=<function> counts only the
 * instructions executed inside it and its callees, so start-up, the
 * allocator's initialisation and the warm-up pairs (same sizes, run first, so
 * that the measured loop sees the allocator's steady state) are left out.
 * The figure is that count divided by PAIRS: the loop's own few instructions
 * (counter, size table, the byte written) and the PLT jumps are included.
 *
 * The program is linked with no allocator; the one measured is preloaded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static const size_t mixed_sizes[8] = {16, 32, 48, 64, 96, 128, 256, 512};

/* One function per fixed size, all the same loop: the size is a constant
 * in each, as it is at most call sites of malloc. */
#define FIXED_SIZE_LOOP(size)                                                  \
    __attribute__((noinline)) void loop_fixed_##size(unsigned long pairs);     \
    __attribute__((noinline)) void loop_fixed_##size(unsigned long pairs)      \
    {                                                                          \
        for (unsigned long i = 0; i < pairs; i++) {                            \
            void *block = malloc(size);                                        \
            bench_touch(block, size);                                          \
            free(block);                                                       \
        }                                                                      \
    }

FIXED_SIZE_LOOP(64)
FIXED_SIZE_LOOP(8)
FIXED_SIZE_LOOP(32)
FIXED_SIZE_LOOP(256)
FIXED_SIZE_LOOP(4000)

__attribute__((noinline)) void loop_mixed_sizes(unsigned long pairs);

__attribute__((noinline)) void loop_mixed_sizes(unsigned long pairs)
{
    for (unsigned long i = 0; i < pairs; i++) {
        size_t size = mixed_sizes[i & 7];
        void *block = malloc(size);
        bench_touch(block, size);
        free(block);
    }
}

/* The same work outside the measured functions: pools, caches and lazily
 * initialised state exist before the measurement starts.  `size` is the
 * fixed size of the variant (0 for mixed). */
__attribute__((noinline)) static void warm_up(size_t size)
{
    for (unsigned long i = 0; i < 1000; i++) {
        void *block = malloc(mixed_sizes[i & 7]);
        bench_touch(block, mixed_sizes[i & 7]);
        free(block);
    }
    for (unsigned long i = 0; size != 0 && i < 1000; i++) {
        void *block = malloc(size);
        bench_touch(block, size);
        free(block);
    }
}

static const struct {
    const char *name;
    size_t size; /* for the warm-up */
    void (*loop)(unsigned long pairs);
} variants[] = {
    {"fixed", 64, loop_fixed_64},
    {"mixed", 0, loop_mixed_sizes},
    {"8", 8, loop_fixed_8},
    {"32", 32, loop_fixed_32},
    {"256", 256, loop_fixed_256},
    {"4000", 4000, loop_fixed_4000},
};

int main(int argc, char **argv)
{
    size_t variant = 0;
    while (argc == 3 && variant < sizeof variants / sizeof variants[0] &&
           strcmp(argv[1], variants[variant].name) != 0)
        variant++;
    if (argc != 3 || variant == sizeof variants / sizeof variants[0]) {
        fprintf(stderr, "usage: %s fixed|mixed|8|32|256|4000 PAIRS\n", argv[0]);
        return 2;
    }
    char *end;
    unsigned long pairs = strtoul(argv[2], &end, 10);
    if (*end != '\0' || pairs == 0) {
        fprintf(stderr, "%s: PAIRS must be a positive number, not '%s'\n", argv[0], argv[2]);
        return 2;
    }
    warm_up(variants[variant].size);
    variants[variant].loop(pairs);
    return 0;
}
