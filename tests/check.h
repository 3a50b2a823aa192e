/*
 * check.h -- the small assertion kit of pymalloc's C tests.
 *
 * CHECK(cond, ...) prints the file, line, condition and an optional message
 * and counts a failure; the test keeps going so one run shows every problem.
 * check_finish() prints "N passed, M failed" and returns the exit status the
 * automake driver expects (0 pass, 1 fail).  A test that needs something the
 * machine lacks exits 77 (SKIP) with a reason.
 */
#ifndef PYM_TEST_CHECK_H
#define PYM_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (cond) {                                                                           \
            check_passed++;                                                                   \
        } else {                                                                              \
            check_failed++;                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s", __FILE__, __LINE__, #cond);            \
            fprintf(stderr, " " __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                              \
        }                                                                                     \
    } while (0)

/* Abort the test at once: a failed precondition makes what follows moot. */
#define REQUIRE(cond, ...)                                                                    \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s", __FILE__, __LINE__, #cond);          \
            fprintf(stderr, " " __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                              \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

static inline int check_finish(void)
{
    printf("%d passed, %d failed\n", check_passed, check_failed);
    if (check_passed == 0 && check_failed == 0) {
        fprintf(stderr, "no check ran\n");
        return 1;
    }
    return check_failed == 0 ? 0 : 1;
}

#endif
