/*
 * valgrind_leak.c -- a program with the three mistakes memcheck must find in
 * pymalloc's blocks (tests/preload_valgrind.sh runs it under valgrind with
 * libpymalloc preloaded): 10 blocks of 100 bytes leaked, one read of a
 * freed block, one free of a pointer into the middle of a block (which
 * memcheck reports before pymalloc aborts, so it comes last).  Everything
 * else it allocates -- small, medium, large, calloc, realloc growing and
 * shrinking, from two threads, pools reused for other classes -- is freed,
 * and must not be reported.
 * Built without pymalloc.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *(*volatile malloc_fn)(size_t) = malloc;
static void (*volatile free_fn)(void *) = free;

static void *churn(void *unused)
{
    (void)unused;
    for (int i = 0; i < 2000; i++) {
        char *block = malloc_fn(16 + (size_t)(i % 3000));
        block[0] = (char)i;
        free_fn(block);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int interior = argc > 1 && strcmp(argv[1], "interior") == 0;
    for (int i = 0; i < 10; i++) {
        char *lost = malloc_fn(100);
        memset(lost, i, 100);
        lost = NULL; /* leaked */
    }
    char *text = calloc(4, 50);
    text = realloc(text, 5000);
    strcpy(text, "kept");
    text = realloc(text, 20);
    char *big = malloc_fn(500000);
    memset(big, 1, 500000);
    pthread_t thread;
    pthread_create(&thread, NULL, churn, NULL);
    churn(NULL);
    pthread_join(thread, NULL);
    free_fn(big);
    /* Chunks of medium spans reused as arenas of pools (900-byte blocks,
     * then small ones), pools changing class (88-byte blocks, then 64 and
     * 40 in the same pools), calloc reusing freed blocks: pymalloc's own
     * writes there must not be reported. */
    static void *many[20000];
    static const size_t sizes[4] = { 900, 88, 64, 40 };
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 20000; i++)
            many[i] = round == 3 ? calloc(1, sizes[round]) : malloc_fn(sizes[round]);
        for (int i = 0; i < 20000; i++)
            free_fn(many[i]);
    }

    volatile char *freed = malloc_fn(64);
    memset((char *)freed, 7, 64);
    free_fn((void *)freed);
    int stale = freed[10]; /* read after free (printed, so no compiler drops it) */
    printf("%s %d\n", text, stale);
    free_fn(text);
    if (interior) {
        char *block = malloc_fn(200);
        free_fn(block + 8); /* not a block start */
    }
    return 0;
}
