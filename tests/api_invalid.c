/*
 * api_invalid.c -- the invalid-free policy of pymalloc (alloc.c, "Invalid
 * pointers"), with malloc/free/realloc interposed by libpymalloc.
 *
 * Covered:
 *   - free() of a pointer pymalloc never mapped (a stack address, a static
 *     variable, a page from mmap) is ignored: the process keeps running,
 *     pym_stats_get().invalid_frees counts each one, nothing is printed by
 *     default, and free(NULL) is not counted;
 *   - a pointer into another mapping that shares the last 256 KiB chunk of
 *     a large block's mapping (past the block's end) is foreign too: ignored;
 *   - with PYMALLOC_VERBOSE=1 (the test re-executes itself with that
 *     environment) the first ignored free prints exactly one line on stderr
 *     naming the pointer, and later ones stay silent;
 *   - free() of a pointer inside pymalloc's memory that is not the start of a
 *     live block aborts (SIGABRT) after printing "invalid pointer <%p>":
 *     p+8 and p+1 of a 64-byte block, p+100 of a 2000-byte medium block,
 *     p+4096 of a 300 KB large block;
 *   - an immediate double free of a small or medium block and a double
 *     free of a (cached) large block abort with "double free";
 *   - realloc() of a stack pointer or of an interior pointer aborts with
 *     "invalid pointer";
 *   - debug builds only: a non-immediate double free of a small block is
 *     caught by the full free-list scan;
 *   - a block slot of a pool never handed out, in a small arena whose chunk
 *     was a medium span filled with data before, is not owned and its free
 *     aborts with "invalid pointer" (stale bytes must not pass for a pool
 *     header);
 *   - after the parent itself had foreign frees ignored, its heap still works
 *     (blocks of every kind allocated, filled and verified).
 *
 * Every fatal case runs in a forked child whose stdout and stderr come back
 * through pipes; the child has an alarm() so a hang shows as SIGALRM.
 */
#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "pymalloc.h"

#define CHILD_TIMEOUT_SECONDS 10
#define CAPTURE_MAX 8192

/* A static object: pymalloc never maps the data segment. */
static char static_buffer[256];

/* Hide where a pointer comes from, so the compiler neither warns about
 * freeing a non-heap object nor optimises the call away. */
static void *launder(void *ptr)
{
    void *volatile hidden = ptr;
    return hidden;
}

typedef struct child_result {
    int status;                 /* from waitpid */
    char how[128];              /* the status in words: "exited with 0", "killed by signal 6 (Aborted)" */
    char out[CAPTURE_MAX];      /* the child's stdout */
    char err[CAPTURE_MAX];      /* the child's stderr */
} child_result_t;

static bool child_exited_ok(const child_result_t *result)
{
    return WIFEXITED(result->status) && WEXITSTATUS(result->status) == 0;
}

static bool child_aborted(const child_result_t *result)
{
    return WIFSIGNALED(result->status) && WTERMSIG(result->status) == SIGABRT;
}

static void describe_status(child_result_t *result)
{
    if (WIFEXITED(result->status))
        snprintf(result->how, sizeof(result->how), "exited with %d", WEXITSTATUS(result->status));
    else if (WIFSIGNALED(result->status))
        snprintf(result->how, sizeof(result->how), "killed by signal %d (%s)", WTERMSIG(result->status),
                 strsignal(WTERMSIG(result->status)));
    else
        snprintf(result->how, sizeof(result->how), "status 0x%x", result->status);
}

/* Read both pipes to EOF (they are small, but poll keeps a chatty child from
 * blocking on a full pipe). */
static void capture_pipes(int out_fd, int err_fd, child_result_t *result)
{
    size_t out_length = 0, err_length = 0;
    struct pollfd fds[2] = {{.fd = out_fd, .events = POLLIN}, {.fd = err_fd, .events = POLLIN}};
    int open_count = 2;
    while (open_count > 0) {
        if (poll(fds, 2, (CHILD_TIMEOUT_SECONDS + 5) * 1000) <= 0)
            break;
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char *buffer = i == 0 ? result->out : result->err;
            size_t *length = i == 0 ? &out_length : &err_length;
            char scratch[1024];
            ssize_t got = read(fds[i].fd, scratch, sizeof(scratch));
            if (got <= 0) {
                fds[i].fd = -1;
                open_count--;
                continue;
            }
            size_t room = CAPTURE_MAX - 1 - *length;
            size_t keep = (size_t)got < room ? (size_t)got : room;
            memcpy(buffer + *length, scratch, keep);
            *length += keep;
        }
    }
    result->out[out_length] = '\0';
    result->err[err_length] = '\0';
}

/* Run body(arg) in a child with its stdout and stderr captured.  The child
 * exits 0 when body returns; result->how describes how it ended. */
static void run_child(void (*body)(void *), void *arg, child_result_t *result)
{
    int out_pipe[2], err_pipe[2];
    REQUIRE(pipe(out_pipe) == 0 && pipe(err_pipe) == 0, "pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core); /* the aborts are expected: no core files */
        alarm(CHILD_TIMEOUT_SECONDS);
        dup2(out_pipe[1], STDOUT_FILENO);
        dup2(err_pipe[1], STDERR_FILENO);
        close(out_pipe[0]);
        close(out_pipe[1]);
        close(err_pipe[0]);
        close(err_pipe[1]);
        body(arg);
        fflush(stdout);
        _exit(0);
    }
    close(out_pipe[1]);
    close(err_pipe[1]);
    memset(result, 0, sizeof(*result));
    capture_pipes(out_pipe[0], err_pipe[0], result);
    close(out_pipe[0]);
    close(err_pipe[0]);
    REQUIRE(waitpid(pid, &result->status, 0) == pid, "waitpid: %s", strerror(errno));
    describe_status(result);
}

static size_t invalid_free_count(void)
{
    pym_stats_t stats;
    pym_stats_get(&stats);
    return stats.invalid_frees;
}

static int count_lines(const char *text)
{
    int lines = 0;
    for (; *text; text++)
        lines += *text == '\n';
    return lines;
}

static bool verbose_env_set(void)
{
    const char *value = getenv("PYMALLOC_VERBOSE");
    return value != NULL && strcmp(value, "1") == 0;
}

/* ---- foreign pointers: ignored ---------------------------------------------------- */
static void body_foreign_frees(void *unused)
{
    (void)unused;
    char stack_buffer[64];
    memset(stack_buffer, 1, sizeof(stack_buffer));
    void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        _exit(20);
    size_t before = invalid_free_count();
    free(launder(NULL)); /* not an invalid free */
    size_t after_null = invalid_free_count();
    free(launder(stack_buffer));
    free(launder(static_buffer));
    free(launder(static_buffer + 16));
    free(launder(page));
    size_t after = invalid_free_count();
    /* The ignored frees must not have touched the memory. */
    int intact = stack_buffer[0] == 1 && stack_buffer[63] == 1;
    ((char *)page)[0] = 7; /* still mapped and writable */
    printf("null_delta=%zu foreign_delta=%zu intact=%d\n", after_null - before, after - after_null, intact);
    /* The heap still works after that. */
    char *block = malloc(100);
    if (block == NULL)
        _exit(21);
    memset(block, 0x5a, 100);
    for (int i = 0; i < 100; i++)
        if (block[i] != 0x5a)
            _exit(22);
    free(block);
}

static void test_foreign_frees_ignored(void)
{
    child_result_t result;
    run_child(body_foreign_frees, NULL, &result);
    CHECK(child_exited_ok(&result), "foreign frees: child %s; stderr: %s", result.how, result.err);
    unsigned long null_delta = 99, foreign_delta = 99;
    int intact = 0;
    CHECK(sscanf(result.out, "null_delta=%lu foreign_delta=%lu intact=%d", &null_delta, &foreign_delta, &intact)
              == 3,
          "foreign frees: child output \"%s\"", result.out);
    CHECK(null_delta == 0, "free(NULL) counted as invalid (%lu)", null_delta);
    CHECK(foreign_delta == 4, "4 foreign frees, invalid_frees grew by %lu", foreign_delta);
    CHECK(intact == 1, "an ignored free modified the memory it was given");
    if (!verbose_env_set())
        CHECK(result.err[0] == '\0', "ignored frees printed without PYMALLOC_VERBOSE: \"%s\"", result.err);
}

/* ---- foreign memory inside the last chunk of a large mapping ------------------------- */
/* A block mapped on its own (over-aligned here; huge ones too) ends on a
 * page, not a chunk boundary; the rest of its last 256 KiB chunk may hold
 * someone else's mapping.  A pointer there is foreign memory: ignored and
 * counted like any other, not mistaken for an interior pointer of the large
 * block.  (Other large blocks are extents of whole chunks.) */
static void body_past_large_end(void *unused)
{
    (void)unused;
    const uintptr_t chunk_mask = 256 * 1024 - 1;
    for (size_t attempt = 0; attempt < 8; attempt++) {
        size_t size = 300 * 1024 + 1000 + attempt * 8192;
        char *large = aligned_alloc(512 * 1024, size);
        if (large == NULL)
            _exit(40);
        memset(large, 0x6b, size);
        char *end = large + malloc_usable_size(large);
        if (((uintptr_t)end & chunk_mask) == 0)
            continue; /* ends on a chunk boundary: nothing shares its chunk */
        void *page = mmap(end, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (page != end) {
            if (page != MAP_FAILED)
                munmap(page, 4096);
            continue; /* the address range is taken: try another size */
        }
        memset(page, 0x3c, 4096);
        size_t before = invalid_free_count();
        free(launder((char *)page + 64));
        size_t after = invalid_free_count();
        int intact = ((char *)page)[64] == 0x3c && large[size - 1] == 0x6b && pym_owns(large);
        printf("page=%p delta=%zu intact=%d\n", page, after - before, intact);
        free(large);
        return;
    }
    printf("setup-failed: no free page after a large mapping\n");
}

static void test_foreign_past_large_end(void)
{
    child_result_t result;
    run_child(body_past_large_end, NULL, &result);
    CHECK(strstr(result.out, "setup-failed") == NULL, "past a large mapping: %s", result.out);
    CHECK(child_exited_ok(&result), "free of a foreign page past a large mapping's end: child %s; stderr: %s",
          result.how, result.err);
    unsigned long delta = 0;
    int intact = 0;
    char page[64] = "";
    CHECK(sscanf(result.out, "page=%63s delta=%lu intact=%d", page, &delta, &intact) == 3,
          "past a large mapping: child output \"%s\"", result.out);
    CHECK(delta == 1, "free of a foreign page past a large mapping: invalid_frees grew by %lu", delta);
    CHECK(intact == 1, "the ignored free changed the page or the large block");
}

/* ---- PYMALLOC_VERBOSE=1: one warning line ------------------------------------------ */
/* Run in the re-executed process (options are read once at start-up). */
static int verbose_child_main(void)
{
    char stack_buffer[32];
    memset(stack_buffer, 0, sizeof(stack_buffer));
    printf("stack=%p static=%p\n", (void *)stack_buffer, (void *)static_buffer);
    fflush(stdout);
    size_t before = invalid_free_count();
    free(launder(stack_buffer));   /* reported */
    free(launder(static_buffer));  /* counted, not reported again */
    size_t after = invalid_free_count();
    printf("delta=%zu\n", after - before);
    fflush(stdout);
    return 0;
}

static void body_exec_verbose(void *unused)
{
    (void)unused;
    char *child_argv[] = {"api_invalid", "--verbose-child", NULL};
    setenv("PYMALLOC_VERBOSE", "1", 1);
    unsetenv("PYMALLOC_STATS"); /* its table at exit would add lines to stderr */
    execv("/proc/self/exe", child_argv);
    fprintf(stderr, "execv(/proc/self/exe): %s\n", strerror(errno));
    _exit(30);
}

static void test_verbose_warning(void)
{
    child_result_t result;
    run_child(body_exec_verbose, NULL, &result);
    CHECK(child_exited_ok(&result), "verbose child %s; stderr: %s", result.how, result.err);
    char stack_text[64] = "", static_text[64] = "";
    unsigned long delta = 0;
    int fields = sscanf(result.out, "stack=%63s static=%63s delta=%lu", stack_text, static_text, &delta);
    CHECK(fields == 3, "verbose child output \"%s\"", result.out);
    CHECK(delta == 2, "verbose child: invalid_frees grew by %lu, expected 2", delta);
    CHECK(count_lines(result.err) == 1, "expected exactly one warning line, got: \"%s\"", result.err);
    CHECK(stack_text[0] != '\0' && strstr(result.err, stack_text) != NULL,
          "the warning does not name the pointer %s: \"%s\"", stack_text, result.err);
    CHECK(strstr(result.err, "pymalloc") != NULL, "the warning does not say who speaks: \"%s\"", result.err);
    CHECK(strstr(result.err, "free") != NULL, "the warning does not name free: \"%s\"", result.err);
    CHECK(static_text[0] == '\0' || strstr(result.err, static_text) == NULL,
          "the second foreign free was reported too: \"%s\"", result.err);
}

/* ---- pointers into pymalloc's memory that are not live blocks: abort ------------------ */
typedef struct fatal_case {
    const char *name;
    void *block;                /* allocated by the parent before the fork */
    size_t offset;              /* freed (or realloc'ed) at block + offset */
    int operation;              /* FREE_ONCE, FREE_TWICE, ... */
    const char *expect;         /* text stderr must contain */
} fatal_case_t;

enum { FREE_ONCE, FREE_TWICE, FREE_TWICE_LATER, REALLOC_ONCE };

static void body_fatal_case(void *arg)
{
    fatal_case_t *fatal = arg;
    char *target = (char *)fatal->block + fatal->offset;
    switch (fatal->operation) {
    case FREE_ONCE:
        free(launder(target));
        break;
    case FREE_TWICE:
        free(launder(target));
        free(launder(target));
        break;
    case FREE_TWICE_LATER: {
        /* Another block of the class is freed in between: only the full
         * free-list scan of debug builds can see this one. */
        void *other = malloc(64);
        memset(other, 0, 64);
        free(launder(target));
        free(launder(other));
        free(launder(target));
        break;
    }
    case REALLOC_ONCE: {
        void *moved = realloc(launder(target), 100);
        printf("realloc returned %p\n", moved);
        break;
    }
    }
    printf("survived\n");
}

static void run_fatal_case(fatal_case_t *fatal)
{
    child_result_t result;
    run_child(body_fatal_case, fatal, &result);
    char address[64];
    snprintf(address, sizeof(address), "%p", (void *)((char *)fatal->block + fatal->offset));
    CHECK(child_aborted(&result), "%s: expected SIGABRT, child %s; stdout: %s; stderr: %s", fatal->name, result.how,
          result.out, result.err);
    CHECK(strstr(result.err, fatal->expect) != NULL, "%s: stderr lacks \"%s\": \"%s\"", fatal->name, fatal->expect,
          result.err);
    CHECK(strstr(result.err, address) != NULL, "%s: stderr does not name %s: \"%s\"", fatal->name, address,
          result.err);
    CHECK(strstr(result.out, "survived") == NULL, "%s: the child went on after the bad call", fatal->name);
}

static void test_fatal_cases(void)
{
    char stack_buffer[64];
    memset(stack_buffer, 0, sizeof(stack_buffer));
    char *small = malloc(64);
    char *medium = malloc(2000);
    char *large = malloc(300 * 1024);
    char *small_to_double = malloc(64);
    char *large_to_double = malloc(300 * 1024);
    char *medium_to_double = malloc(2000);
    REQUIRE(small && medium && large && small_to_double && large_to_double && medium_to_double);
    memset(medium_to_double, 6, 2000);
    memset(small, 1, 64);
    memset(medium, 2, 2000);
    memset(large, 3, 300 * 1024);
    memset(small_to_double, 4, 64);
    memset(large_to_double, 5, 300 * 1024);
    CHECK(pym_size_class(2000) >= PYM_STATS_SMALL_CLASSES,
          "2000 bytes should be a medium class (got %d)", pym_size_class(2000));
    CHECK(pym_size_class(300 * 1024) == -1, "300 KB should be a large request");

    fatal_case_t cases[] = {
        {"small p+8", small, 8, FREE_ONCE, "invalid pointer"},
        {"small p+1", small, 1, FREE_ONCE, "invalid pointer"},
        {"medium p+100", medium, 100, FREE_ONCE, "invalid pointer"},
        {"large p+4096", large, 4096, FREE_ONCE, "invalid pointer"},
        {"small double free", small_to_double, 0, FREE_TWICE, "double free"},
        {"large double free", large_to_double, 0, FREE_TWICE, "double free"},
        {"medium double free", medium_to_double, 0, FREE_TWICE, "double free"},
        {"realloc of a stack pointer", stack_buffer, 0, REALLOC_ONCE, "invalid pointer"},
        {"realloc of small p+8", small, 8, REALLOC_ONCE, "invalid pointer"},
#ifdef PYM_DEBUG
        {"small double free, not immediate (debug)", small_to_double, 0, FREE_TWICE_LATER, "double free"},
#endif
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_fatal_case(&cases[i]);

    /* The children's aborts did not disturb the parent's blocks. */
    bool intact = true;
    for (size_t i = 0; i < 64; i++)
        intact &= small[i] == 1 && small_to_double[i] == 4;
    for (size_t i = 0; i < 2000; i++)
        intact &= medium[i] == 2;
    for (size_t i = 0; i < 300 * 1024; i += 512)
        intact &= large[i] == 3 && large_to_double[i] == 5;
    CHECK(intact, "parent blocks changed after the children's bad frees");
    CHECK(pym_owns(small) && pym_owns(medium) && pym_owns(large), "parent blocks no longer owned");
    free(small);
    free(medium);
    free(large);
    free(small_to_double);
    free(large_to_double);
    free(medium_to_double);
}

/* ---- a never-used pool in a chunk recycled from a medium span -------------------------- */
/* A 256 KiB chunk serves first as a medium span whose blocks the program
 * filled with ordinary data (bytes of 0x01), is emptied into the chunk cache,
 * and comes back as a small arena: the chunk map then says "small arena" for
 * all of it, while most of its pools were never handed to a heap.  A pointer
 * to the first block slot of such a pool is not a block pymalloc handed
 * out: pym_owns() must say 0, and free() must abort with "invalid pointer"
 * like any other non-block inside pymalloc's memory. */
#define RECYCLE_MEDIUM_SIZE (32 * 1024)
#define RECYCLE_CHUNK_SIZE ((uintptr_t)256 * 1024)

static void body_recycled_chunk(void *unused)
{
    (void)unused;
    enum { SPAN_BLOCKS = 8, MEDIUM_BLOCKS = 2 * SPAN_BLOCKS + 1 };
    if (pym_class_block_size(pym_size_class(RECYCLE_MEDIUM_SIZE)) != RECYCLE_MEDIUM_SIZE) {
        printf("setup-failed: no 32 KiB class\n");
        return;
    }
    /* Empty the chunk cache (spans of 128 KiB blocks take its chunks), so
     * the span emptied below is cached, not unmapped.  Flush the thread
     * cache first: spans emptied by that flush go to the chunk cache too. */
    pym_flush_thread_cache();
    enum { MAX_DRAIN = 64 };
    void *drain[MAX_DRAIN];
    int drained = 0;
    pym_stats_t stats;
    for (pym_stats_get(&stats); stats.arenas_cached > 0 && drained < MAX_DRAIN; pym_stats_get(&stats)) {
        drain[drained] = malloc(128 * 1024);
        if (drain[drained] == NULL)
            break;
        memset(drain[drained++], 0, 64);
    }
    if (stats.arenas_cached != 0) {
        printf("setup-failed: could not empty the chunk cache\n");
        return;
    }
    /* Two full spans and a third one holding one block: the first span is
     * then not its class's last pool and goes back to the chunk cache when
     * it empties. */
    char *medium[MEDIUM_BLOCKS];
    for (int i = 0; i < MEDIUM_BLOCKS; i++) {
        medium[i] = malloc(RECYCLE_MEDIUM_SIZE);
        if (medium[i] == NULL) {
            printf("setup-failed: malloc\n");
            return;
        }
        memset(medium[i], 0x01, RECYCLE_MEDIUM_SIZE);
    }
    uintptr_t chunk = (uintptr_t)medium[0] & ~(RECYCLE_CHUNK_SIZE - 1);
    for (int i = 0; i < SPAN_BLOCKS; i++)
        if (((uintptr_t)medium[i] & ~(RECYCLE_CHUNK_SIZE - 1)) != chunk) {
            printf("setup-failed: the first %d blocks are not one span\n", SPAN_BLOCKS);
            return;
        }
    for (int i = 0; i < SPAN_BLOCKS; i++)
        free(medium[i]);
    pym_flush_thread_cache(); /* the thread cache keeps the last freed blocks (and so the span) */
    pym_stats_get(&stats);
    if (pym_owns((void *)chunk) || stats.arenas_cached != 1) {
        printf("setup-failed: the emptied span was not cached (%zu chunks cached)\n", stats.arenas_cached);
        return;
    }
    size_t chunks_mapped = stats.arenas_total;
    /* Small blocks until one comes from the recycled chunk. */
    enum { MAX_SMALL = 200000 };
    void **small = malloc(MAX_SMALL * sizeof(void *));
    int taken = 0;
    bool reached = false;
    while (small != NULL && taken < MAX_SMALL && !reached) {
        small[taken] = malloc(512);
        if (small[taken] == NULL)
            break;
        reached = ((uintptr_t)small[taken] & ~(RECYCLE_CHUNK_SIZE - 1)) == chunk;
        taken++;
    }
    if (!reached) {
        printf("setup-failed: the chunk did not come back as a small arena (%d blocks)\n", taken);
        return;
    }
    pym_stats_get(&stats);
    if (stats.arenas_total != chunks_mapped || stats.arenas_cached != 0) {
        printf("setup-failed: the small arena is a new mapping, not the cached chunk\n");
        return;
    }
    /* Taking a pool writes its header (state, index); a pool no heap has
     * taken yet holds either the span's old bytes or, if pymalloc cleared
     * the chunk, zeros. */
    char *target = NULL;
    for (int pool = 63; pool > 0 && target == NULL; pool--) {
        const unsigned char *header = (const unsigned char *)chunk + (uintptr_t)pool * 4096;
        bool stale = true, zero = true;
        for (int i = 0; i < 64; i++) {
            stale &= header[i] == 0x01;
            zero &= header[i] == 0;
        }
        if (stale || zero)
            target = (char *)header + 64;
    }
    if (target == NULL) {
        printf("setup-failed: no untouched pool in the recycled chunk\n");
        return;
    }
    printf("target=%p owns=%d\n", (void *)target, pym_owns(target));
    fflush(stdout);
    free(launder(target));
    printf("survived\n");
}

static void test_recycled_chunk_pool(void)
{
    child_result_t result;
    run_child(body_recycled_chunk, NULL, &result);
    REQUIRE(strstr(result.out, "setup-failed") == NULL, "recycled chunk: %s", result.out);
    char target[64] = "";
    int owns = -1;
    CHECK(sscanf(result.out, "target=%63s owns=%d", target, &owns) == 2, "recycled chunk: child output \"%s\"",
          result.out);
    CHECK(owns == 0, "pym_owns() is %d for a block slot of a pool never handed out (%s)", owns, target);
    CHECK(child_aborted(&result), "recycled chunk: free(%s) should abort, child %s; stderr: %s", target, result.how,
          result.err);
    CHECK(strstr(result.err, "invalid pointer") != NULL && target[0] && strstr(result.err, target) != NULL,
          "recycled chunk: stderr should report invalid pointer %s: \"%s\"", target, result.err);
}

/* ---- the parent ignores foreign frees and goes on ------------------------------------- */
static void test_parent_heap_after_foreign_frees(void)
{
    char stack_buffer[128];
    memset(stack_buffer, 0x11, sizeof(stack_buffer));
    size_t before = invalid_free_count();
    free(launder(stack_buffer));
    free(launder(static_buffer + 8));
    free(launder(stack_buffer + 1));
    CHECK(invalid_free_count() - before == 3, "parent: 3 foreign frees, counter grew by %zu",
          invalid_free_count() - before);
    CHECK(pym_owns(stack_buffer) == 0 && pym_usable_size(stack_buffer) == 0, "a stack buffer is not pymalloc's");
    CHECK(stack_buffer[0] == 0x11 && stack_buffer[127] == 0x11, "an ignored free wrote into the stack buffer");

    enum { BLOCKS = 3000 };
    static char *blocks[BLOCKS];
    static size_t sizes[BLOCKS];
    uint64_t seed = 12345;
    for (size_t i = 0; i < BLOCKS; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t size = 1 + (seed >> 33) % 3000;
        if (i % 500 == 0)
            size = 200 * 1024 + i;
        sizes[i] = size;
        blocks[i] = malloc(size);
        REQUIRE(blocks[i] != NULL, "malloc(%zu)", size);
        memset(blocks[i], (int)(i & 0xff), size);
    }
    size_t bad = 0;
    for (size_t i = 0; i < BLOCKS; i++) {
        for (size_t j = 0; j < sizes[i]; j++)
            if ((unsigned char)blocks[i][j] != (i & 0xff)) {
                bad++;
                break;
            }
        if (!pym_owns(blocks[i]))
            bad++;
    }
    CHECK(bad == 0, "%zu blocks corrupted or unowned after foreign frees", bad);
    for (size_t i = 0; i < BLOCKS; i += 2)
        free(blocks[i]);
    for (size_t i = 1; i < BLOCKS; i += 2)
        free(blocks[i]);
    CHECK(invalid_free_count() - before == 3, "freeing live blocks counted invalid frees");
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--verbose-child") == 0)
        return verbose_child_main();
    test_foreign_frees_ignored();
    test_foreign_past_large_end();
    test_verbose_warning();
    test_fatal_cases();
    test_recycled_chunk_pool();
    test_parent_heap_after_foreign_frees();
    return check_finish();
}
