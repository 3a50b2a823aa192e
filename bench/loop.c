/* loop.c -- bench/pymalloc-bench-loop: malloc/free pairs in a loop, for
 * counting instructions under valgrind (`make bench-instructions`, driven by
 * bench/instructions.py).
 *
 *   pymalloc-bench-loop fixed PAIRS   PAIRS x (malloc(64), free)
 *   pymalloc-bench-loop mixed PAIRS   PAIRS x (malloc(size), free), size cycling
 *                                     through 16, 32, 48, 64, 96, 128, 256, 512
 *
 * Each loop is its own function, never inlined (loop_fixed_64,
 * loop_mixed_sizes): callgrind's --toggle-collect=<function> counts only the
 * instructions executed inside it and its callees, so start-up, the
 * allocator's initialisation and the warm-up pairs (same sizes, run first, so
 * that the measured loop sees the allocator's steady state) are left out.
 * The figure is that count divided by PAIRS: the loop's own few instructions
 * (counter, size table, the byte written) are included.
 *
 * The program is linked with no allocator; the one measured is preloaded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static const size_t mixed_sizes[8] = {16, 32, 48, 64, 96, 128, 256, 512};

__attribute__((noinline)) void loop_fixed_64(unsigned long pairs);
__attribute__((noinline)) void loop_mixed_sizes(unsigned long pairs);

__attribute__((noinline)) void loop_fixed_64(unsigned long pairs)
{
    for (unsigned long i = 0; i < pairs; i++) {
        void *block = malloc(64);
        bench_touch(block, 64);
        free(block);
    }
}

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
 * initialised state exist before the measurement starts. */
__attribute__((noinline)) static void warm_up(void)
{
    for (unsigned long i = 0; i < 1000; i++) {
        void *block = malloc(mixed_sizes[i & 7]);
        bench_touch(block, mixed_sizes[i & 7]);
        free(block);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "fixed") != 0 && strcmp(argv[1], "mixed") != 0)) {
        fprintf(stderr, "usage: %s fixed|mixed PAIRS\n", argv[0]);
        return 2;
    }
    char *end;
    unsigned long pairs = strtoul(argv[2], &end, 10);
    if (*end != '\0' || pairs == 0) {
        fprintf(stderr, "%s: PAIRS must be a positive number, not '%s'\n", argv[0], argv[2]);
        return 2;
    }
    warm_up();
    if (strcmp(argv[1], "fixed") == 0)
        loop_fixed_64(pairs);
    else
        loop_mixed_sizes(pairs);
    return 0;
}
