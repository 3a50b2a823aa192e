/*
 * api_debug.c -- debug mode (PYMALLOC_DEBUG=1, debug.c), linked with
 * -lpymalloc.
 *
 * The test runs itself again with PYMALLOC_DEBUG=1 and a case name, once per
 * case, and checks what the child did:
 *   - clean: fresh memory reads 0xCD, calloc memory zero, malloc_usable_size
 *     is the size asked for, realloc keeps the contents, aligned blocks are
 *     aligned, small, medium and large blocks come and go without a report,
 *     and a freed block handed out again passes the write-after-free check;
 *   - overflow (small and large), underflow, double free, write after free,
 *     free of a foreign pointer, realloc of a freed block: the child aborts
 *     (SIGABRT) and its report names the error, the block's address, the size
 *     asked for and the size class, and dumps the bytes around the fault.
 */
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "testlib.h"

static void *(*volatile malloc_fn)(size_t) = malloc;
static void *(*volatile calloc_fn)(size_t, size_t) = calloc;
static void *(*volatile realloc_fn)(void *, size_t) = realloc;
static void (*volatile free_fn)(void *) = free;

/* ---- the child's side: one case, then exit 0 (or be aborted) ----------------- */
static int run_case(const char *name)
{
    char *block = malloc_fn(24);
    printf("block %p\n", (void *)block);
    fflush(stdout);
    if (strcmp(name, "clean") == 0) {
        int bad = 0;
        for (int i = 0; i < 24; i++)
            bad += (unsigned char)block[i] != 0xCD;
        unsigned char *zeroed = calloc_fn(100, 3);
        for (int i = 0; i < 300; i++)
            bad += zeroed[i] != 0;
        bad += malloc_usable_size(block) != 24;
        memcpy(block, "0123456789abcdefghijklm", 24);
        block = realloc_fn(block, 5000);
        bad += memcmp(block, "0123456789abcdefghijklm", 24) != 0;
        void *aligned = NULL;
        bad += posix_memalign(&aligned, 256, 100) != 0 || (uintptr_t)aligned % 256 != 0;
        memset(aligned, 1, 100);
        void *large = malloc_fn(300000);
        memset(large, 2, 300000);
        free_fn(large);
        free_fn(aligned);
        free_fn(zeroed);
        free_fn(block);
        for (int round = 0; round < 1000; round++) { /* reuse: freed blocks pass the write-after-free check */
            void *again = malloc_fn(24 + (size_t)(round % 40));
            memset(again, round, 24);
            free_fn(again);
        }
        printf("clean: %d problems\n", bad);
        return bad == 0 ? 0 : 1;
    }
    if (strcmp(name, "overflow") == 0) {
        block[24] = 'x';
        free_fn(block);
    } else if (strcmp(name, "large-overflow") == 0) {
        char *large = malloc_fn(300000);
        large[300000 + 3] = 'x';
        free_fn(large);
    } else if (strcmp(name, "underflow") == 0) {
        block[-2] = 'x';
        free_fn(block);
    } else if (strcmp(name, "double-free") == 0) {
        free_fn(block);
        free_fn(block);
    } else if (strcmp(name, "write-after-free") == 0) {
        free_fn(block);
        block[7] = 'x';
        void *again = malloc_fn(24); /* the same block comes back: checked before it is handed out */
        printf("again %p\n", again);
    } else if (strcmp(name, "foreign") == 0) {
        static char not_a_block[64];
        free_fn(not_a_block + 16);
    } else if (strcmp(name, "realloc-freed") == 0) {
        free_fn(block);
        block = realloc_fn(block, 100);
    }
    printf("no report\n");
    return 0;
}

/* ---- the parent's side ------------------------------------------------------- */
typedef child_outcome_t outcome_t;

/* Run `self case` with PYMALLOC_DEBUG=1 (testlib.h). */
static outcome_t run_child(const char *self, const char *name)
{
    return run_self_case(self, name, "1");
}

static void expect_report(const char *self, const char *name, const char *what, const char *size_text)
{
    outcome_t result = run_child(self, name);
    char block[64] = "";
    sscanf(result.out, "block %63s", block);
    bool aborted = WIFSIGNALED(result.status) && WTERMSIG(result.status) == SIGABRT;
    CHECK(aborted, "%s: the child is aborted (status %#x)", name, result.status);
    CHECK(strstr(result.err, what) != NULL, "%s: the report says \"%s\":\n%s", name, what, result.err);
    if (size_text != NULL) {
        CHECK(strstr(result.err, size_text) != NULL, "%s: the report gives the size asked for (%s)", name, size_text);
        CHECK(strstr(result.err, "size class") != NULL || strstr(result.err, "large block") != NULL,
              "%s: and the size class", name);
        CHECK(strstr(result.err, "bytes 0x") != NULL, "%s: and dumps the bytes around the fault", name);
    }
    CHECK(strstr(result.out, "no report") == NULL, "%s: the program did not go on", name);
    if (strcmp(name, "foreign") != 0 && strcmp(name, "large-overflow") != 0)
        CHECK(block[0] != '\0' && strstr(result.err, block) != NULL, "%s: the report names the block %s", name, block);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        return run_case(argv[1]);
    const char *self = "/proc/self/exe";
    char path[4096];
    ssize_t length = readlink(self, path, sizeof(path) - 1);
    REQUIRE(length > 0);
    path[length] = '\0';

    outcome_t clean = run_child(path, "clean");
    CHECK(WIFEXITED(clean.status) && WEXITSTATUS(clean.status) == 0, "clean: exits 0 (status %#x): %s %s",
          clean.status, clean.out, clean.err);
    CHECK(strstr(clean.out, "clean: 0 problems") != NULL, "clean: fill patterns, calloc, usable size, realloc, "
                                                          "alignment all as specified: %s",
          clean.out);
    CHECK(clean.err[0] == '\0', "clean: nothing on stderr: %s", clean.err);

    expect_report(path, "overflow", "buffer overflow", "24 bytes requested");
    expect_report(path, "large-overflow", "buffer overflow", "300000 bytes requested");
    expect_report(path, "underflow", "buffer underflow", "24 bytes requested");
    expect_report(path, "double-free", "double free", "24 bytes requested");
    expect_report(path, "write-after-free", "write after free", "24 bytes requested");
    expect_report(path, "foreign", "foreign pointer", NULL);
    expect_report(path, "realloc-freed", "realloc of a freed block", "24 bytes requested");
    return check_finish();
}
