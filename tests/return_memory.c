/*
 * return_memory.c -- "I freed everything, why is my process still big?"
 * The program the memory-return test (tests/preload_return.sh) runs, with
 * and without pymalloc preloaded.
 *
 * It allocates 10,000,000 small strings (8..47 bytes, filled) and 100,000
 * medium blocks (600..8,600 bytes), frees them all, optionally calls
 * malloc_trim(0), sleeps two seconds, and prints its RSS at four points:
 *   start=KiB peak=KiB freed=KiB end=KiB
 * The pointer arrays are mapped with mmap and unmapped before the third
 * reading, so only the allocator's memory is measured.  Built without
 * pymalloc (the test preloads it).
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "testlib.h"

enum { SMALL_COUNT = 10000000, MEDIUM_COUNT = 100000 };

static void *map_array(size_t count)
{
    void *array = mmap(NULL, count * sizeof(char *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (array == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    return array;
}

int main(int argc, char **argv)
{
    int trim = argc > 1 && strcmp(argv[1], "trim") == 0;
    char **small = map_array(SMALL_COUNT);
    char **medium = map_array(MEDIUM_COUNT);
    long start = (long)rss_kib();
    for (long i = 0; i < SMALL_COUNT; i++) {
        size_t length = 8 + (size_t)(i % 40);
        if ((small[i] = malloc(length)) == NULL) {
            fprintf(stderr, "malloc(%zu) failed at string %ld\n", length, i);
            return 2;
        }
        memset(small[i], 'a' + (int)(i % 26), length);
    }
    for (long i = 0; i < MEDIUM_COUNT; i++) {
        size_t length = 600 + (size_t)((i * 37) % 8000);
        if ((medium[i] = malloc(length)) == NULL) {
            fprintf(stderr, "malloc(%zu) failed at medium block %ld\n", length, i);
            return 2;
        }
        memset(medium[i], 'm', length);
    }
    long peak = (long)rss_kib();
    long damaged = 0;
    for (long i = 0; i < SMALL_COUNT; i++) {
        damaged += small[i][0] != 'a' + (int)(i % 26);
        free(small[i]);
    }
    for (long i = 0; i < MEDIUM_COUNT; i++)
        free(medium[i]);
    munmap(small, SMALL_COUNT * sizeof(char *));
    munmap(medium, MEDIUM_COUNT * sizeof(char *));
    long freed = (long)rss_kib();
    if (trim)
        malloc_trim(0);
    sleep(2);
    printf("start=%ld peak=%ld freed=%ld end=%ld damaged=%ld\n", start, peak, freed, (long)rss_kib(), damaged);
    return damaged == 0 ? 0 : 1;
}
