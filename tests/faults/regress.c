/*
 * regress.c -- minimal reproductions of the pymalloc bugs the reliability
 * suite found, kept as regression tests (part of `make check`).  Each runs
 * in a forked child, so a crash is reported as that case's failure.  The
 * fuzzer's crashers for the same bugs are in tests/faults/corpus/crash-*.
 *
 *   large-aligned-realloc-to-medium
 *       (found by fuzz_alloc, corpus/crash-large-aligned-realloc-to-medium)
 *       An aligned request no medium class can serve (alignment above
 *       128 KiB) gets a large mapping of the request's size rounded to pages,
 *       which may be well below 128 KiB.  realloc of that block to a medium
 *       size larger than the mapping moved it to a medium block and copied
 *       `size` bytes -- reading past the end of the mapping: SIGSEGV, or a
 *       copy of whatever mapping follows.  (Fixed in pym_large_realloc: it
 *       copies what the mapping holds.)
 *
 *   large-small-realloc-in-class
 *       (found by fuzz_alloc, corpus/crash-large-small-realloc-in-class)
 *       A small request aligned to a chunk is a large extent whose usable
 *       size is its request rounded to pages (4 KiB for 3000 bytes).  realloc
 *       of it to a size of the same class as that usable size (3840: the
 *       4096-byte class) moved it, although a realloc within a class keeps
 *       the block.  (Fixed in pym_large_realloc: a block that keeps more
 *       than half of its usable size stays.)
 *
 * The out-of-memory abort in realloc (chunk-map leaf) is reproduced by
 * tests/faults/oom (scenario realloc-new-leaf): it needs the failure
 * injection build.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "faults.h"
#include "pymalloc.h"

/* ---- large-aligned-realloc-to-medium ----------------------------------------------- */
static int large_aligned_realloc_to_medium(void)
{
    static const struct {
        size_t alignment, size, new_size;
    } cases[] = {
        {1u << 20, 5000, 100000},       /* an 8 KiB mapping grown to a 100000-byte medium block */
        {256u << 10, 100, 65536},      /* a 4 KiB mapping grown to 64 KiB */
        {4u << 20, 4096, 131072},      /* a 4 KiB mapping grown to the largest medium class */
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *p = pym_aligned_alloc(cases[i].alignment, cases[i].size);
        if (p == NULL || ((uintptr_t)p & (cases[i].alignment - 1)) != 0) {
            fprintf(stderr, "aligned_alloc(%zu, %zu) = %p\n", cases[i].alignment, cases[i].size, (void *)p);
            failures++;
            continue;
        }
        sampled_fill(p, cases[i].size, 1000 + i);
        char *q = pym_realloc(p, cases[i].new_size);
        if (q == NULL || !sampled_ok(q, cases[i].size, 1000 + i)) {
            fprintf(stderr, "realloc(aligned_alloc(%zu, %zu), %zu) = %p: %s\n", cases[i].alignment, cases[i].size,
                    cases[i].new_size, (void *)q, q == NULL ? "NULL" : "contents lost");
            failures++;
            continue;
        }
        memset(q, 0x5A, cases[i].new_size); /* the whole new block is usable */
        pym_free(q);
    }
    return failures == 0 ? 0 : 1;
}

/* ---- large-small-realloc-in-class ------------------------------------------------- */
static int large_small_realloc_in_class(void)
{
    int failures = 0;
    char *p = pym_aligned_alloc(256u << 10, 3000);
    if (p == NULL || pym_usable_size(p) != 4096) {
        fprintf(stderr, "aligned_alloc(256 KiB, 3000) = %p, usable %zu (want 4096)\n", (void *)p,
                p ? pym_usable_size(p) : 0);
        return 1;
    }
    sampled_fill(p, 3000, 2000);
    char *q = pym_realloc(p, 3840); /* the 4096-byte class: stays */
    if (q != p || !sampled_ok(q, 3000, 2000)) {
        fprintf(stderr, "realloc(%p, 3840) = %p (want the same block, contents kept)\n", (void *)p, (void *)q);
        failures++;
    }
    char *r = pym_realloc(q, 100); /* far below: may move, keeps the first 100 bytes */
    if (r == NULL || !sampled_ok_prefix(r, 3000, 2000, 100)) {
        fprintf(stderr, "realloc(%p, 100) = %p: %s\n", (void *)q, (void *)r, r == NULL ? "NULL" : "contents lost");
        failures++;
    }
    pym_free(r);
    return failures == 0 ? 0 : 1;
}

/* ---- driver --------------------------------------------------------------------------- */
typedef struct regression {
    const char *name;
    int (*fn)(void);
} regression_t;

static const regression_t regressions[] = {
    {"large-aligned-realloc-to-medium", large_aligned_realloc_to_medium},
    {"large-small-realloc-in-class", large_small_realloc_in_class},
};

int main(void)
{
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    for (size_t i = 0; i < sizeof(regressions) / sizeof(regressions[0]); i++) {
        fflush(stdout);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork failed");
        if (pid == 0) {
            alarm(30);
            _exit(regressions[i].fn());
        }
        int status;
        REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid failed");
        bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        CHECK(ok, "%s: %s %d", regressions[i].name, WIFSIGNALED(status) ? "killed by signal" : "exit status",
              WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        printf("regress %s: %s\n", regressions[i].name, ok ? "ok" : "FAILED");
    }
    return check_finish();
}
