/*
 * sections.h -- tests made of independent sections, each run in a forked
 * child: a crash or a hang (alarm) in one section fails a check instead of
 * ending the whole test, and every section starts from a fresh process.
 * The child's check counts come back through a pipe.
 *
 *   prog              every section, each in its own child
 *   prog N [M...]     sections N, M... (1-based) in this process (debuggers)
 *   prog --no-fork    every section in this process
 *
 * `epilogue` (may be NULL) runs after each section, in the process that ran
 * it, for checks every section shares (e.g. nothing left allocated).
 */
#ifndef PYM_TEST_SECTIONS_H
#define PYM_TEST_SECTIONS_H

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "testlib.h"

typedef struct test_section {
    const char *name;
    void (*run)(void);
} test_section_t;

typedef void (*test_epilogue_fn)(const char *section_name);

static void section_run_forked(const test_section_t *section, test_epilogue_fn epilogue, unsigned timeout_seconds)
{
    int counts_pipe[2];
    REQUIRE(pipe(counts_pipe) == 0, "pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    double start = now_seconds();
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(counts_pipe[0]);
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        alarm(timeout_seconds);
        check_passed = check_failed = 0; /* the parent's counts were copied by fork */
        section->run();
        if (epilogue)
            epilogue(section->name);
        int counts[2] = {check_passed, check_failed};
        if (write(counts_pipe[1], counts, sizeof(counts)) != (ssize_t)sizeof(counts))
            _exit(3);
        fflush(stdout);
        fflush(stderr);
        exit(0); /* exit, not _exit: under valgrind its leak check and exit code apply to the child too */
    }
    close(counts_pipe[1]);
    int counts[2] = {0, 0};
    ssize_t got = read(counts_pipe[0], counts, sizeof(counts));
    close(counts_pipe[0]);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
    if (got == (ssize_t)sizeof(counts)) {
        check_passed += counts[0];
        check_failed += counts[1];
    }
    if (WIFSIGNALED(status))
        CHECK(false, "%s: the test process died by signal %d (%s)%s", section->name, WTERMSIG(status),
              strsignal(WTERMSIG(status)), WTERMSIG(status) == SIGALRM ? ": hang (no progress within the timeout)" : "");
    else
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0 && got == (ssize_t)sizeof(counts),
              "%s: the test process exited with status %d", section->name,
              WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    printf("%s: %.2f s\n", section->name, now_seconds() - start);
}

static void section_run_here(const test_section_t *section, test_epilogue_fn epilogue)
{
    double start = now_seconds();
    section->run();
    if (epilogue)
        epilogue(section->name);
    printf("%s: %.2f s\n", section->name, now_seconds() - start);
}

/* The whole main of such a test; returns its exit status. */
static int sections_main(int argc, char **argv, const test_section_t *sections, int count,
                         test_epilogue_fn epilogue, unsigned timeout_seconds)
{
    double start = now_seconds();
    if (argc > 1 && strcmp(argv[1], "--no-fork") == 0) {
        for (int i = 0; i < count; i++)
            section_run_here(&sections[i], epilogue);
    } else if (argc > 1) {
        for (int arg = 1; arg < argc; arg++) {
            int only = atoi(argv[arg]);
            REQUIRE(only >= 1 && only <= count, "usage: %s [--no-fork | section 1..%d ...]", argv[0], count);
            section_run_here(&sections[only - 1], epilogue);
        }
    } else {
        for (int i = 0; i < count; i++)
            section_run_forked(&sections[i], epilogue, timeout_seconds);
    }
    printf("total %.2f s\n", now_seconds() - start);
    return check_finish();
}

#endif
