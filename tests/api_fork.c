/*
 * api_fork.c -- fork() of a multi-threaded program that allocates with
 * pymalloc (malloc/free interposed by libpymalloc).
 *
 * pymalloc's atfork handlers (init.c) take every lock before fork and
 * release them in both processes, so the child must find a consistent heap
 * whatever the other threads were doing at the instant of the fork.
 *
 * Set-up in the parent:
 *   - 3 worker threads allocate and free continuously (small, medium and a
 *     few large blocks), passing some blocks to each other through a shared
 *     exchange so that a third of the frees are cross-thread frees; the
 *     third worker is a chain of threads, each handing its state to a new
 *     thread after a few thousand steps, so forks also catch threads while
 *     they start and exit;
 *   - before forking, the main thread, each worker, and a thread that has
 *     already exited (its pools are abandoned) allocate pattern-filled
 *     blocks that stay live for the whole test.
 * Then 200 times: fork; the child (with alarm() armed, so a deadlock ends in
 * SIGALRM instead of a hang) verifies and frees every block allocated before
 * the fork (its own thread's, the workers' whose threads do not exist in the
 * child, the exited thread's), mallocs/reallocs/frees small, medium and
 * large blocks with pattern checks, starts a thread of its own that
 * allocates and frees blocks (some of them the child's main thread's) and
 * exits 0.  The parent checks that every child exited 0 in time, and at the
 * end that its own copies of the pre-fork blocks are intact.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "pymalloc.h"
#include "testlib.h"

#define FORKS 200
#define WORKERS 3
#define CHILD_ALARM_SECONDS 10
#define PARENT_WAIT_SECONDS 30
#define PREFORK_BLOCKS 200       /* per owner: main, each worker, the exited thread */
#define WORKER_WINDOW 256
#define EXCHANGE_SLOTS 64
#define GENERATION_OPERATIONS 3000 /* steps of each thread of the last worker's chain */

/* Child exit codes. */
enum { CHILD_OK = 0, CHILD_CORRUPT = 10, CHILD_NO_MEMORY = 11, CHILD_THREAD_FAILED = 12, CHILD_NOT_OWNED = 13 };

/* ---- helpers ------------------------------------------------------------------- */
/* Request sizes mixing the three kinds: mostly small, some medium, rare large. */
static size_t pick_size(uint64_t r)
{
    unsigned kind = (unsigned)(r % 1000);
    if (kind < 850)
        return 8 + (r >> 16) % 505;              /* small: 8..512 */
    if (kind < 995)
        return 513 + (r >> 16) % (32 * 1024);   /* medium */
    return 130 * 1024 + (r >> 16) % (200 * 1024); /* large */
}

static void fill_set(tagged_block_t *set, size_t count, uint64_t owner, uint64_t seed)
{
    uint64_t rng = seed;
    for (size_t i = 0; i < count; i++) {
        uint64_t r = rng_next(&rng);
        size_t size = i == count / 2 ? 2 * 1024 * 1024 + (r >> 40) % 4096 : pick_size(r); /* one direct mapping */
        set[i].size = size;
        set[i].tag = (owner << 32) | i;
        set[i].block = malloc(size);
        if (set[i].block == NULL) {
            fprintf(stderr, "malloc(%zu) failed before the forks\n", size);
            exit(1);
        }
        pattern_fill(set[i].block, size, set[i].tag);
    }
}

/* ---- parent worker threads ------------------------------------------------------------ */
static tagged_block_t prefork_main[PREFORK_BLOCKS];
static tagged_block_t prefork_workers[WORKERS][PREFORK_BLOCKS];
static tagged_block_t prefork_exited[PREFORK_BLOCKS];

static atomic_bool workers_stop;
static atomic_size_t worker_operations, worker_cross_frees, worker_corrupt;
static pthread_barrier_t workers_ready;

static struct {
    pthread_mutex_t lock;
    tagged_block_t slots[EXCHANGE_SLOTS];
} exchange = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void worker_verify_and_free(tagged_block_t *entry)
{
    if (!pattern_ok(entry->block, entry->size, entry->tag))
        atomic_fetch_add(&worker_corrupt, 1);
    free(entry->block);
    entry->block = NULL;
}

/* A worker's state; the last worker's is handed from one generation (thread)
 * to the next. */
typedef struct worker_state {
    uint64_t id;
    uint64_t rng;
    uint64_t counter;
    size_t operations, cross_frees;
    tagged_block_t window[WORKER_WINDOW];
} worker_state_t;

static atomic_size_t generations;
static atomic_bool last_generation_done;

static void worker_init(worker_state_t *state, uint64_t id)
{
    memset(state, 0, sizeof(*state));
    state->id = id;
    state->rng = 0xC0FFEE123ULL * id;
    /* Lower priority: the workers keep allocating on every idle CPU, but a
     * child, which runs at normal priority, is not starved on a 2-core
     * machine (that only makes the test slow). */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 15);
    fill_set(prefork_workers[id - 1], PREFORK_BLOCKS, 100 + id, 0xF00D + id);
    pthread_barrier_wait(&workers_ready);
}

static void worker_step(worker_state_t *state)
{
    uint64_t r = rng_next(&state->rng);
    tagged_block_t *slot = &state->window[r % WORKER_WINDOW];
    if (slot->block != NULL)
        worker_verify_and_free(slot); /* often another thread's, or an exited generation's */
    slot->size = pick_size(r >> 7);
    slot->block = malloc(slot->size);
    if (slot->block == NULL) {
        atomic_fetch_add(&worker_corrupt, 1);
        return;
    }
    slot->tag = (state->id << 48) | ++state->counter;
    pattern_fill(slot->block, slot->size, slot->tag);
    if ((r >> 20) % 3 == 0) {
        /* Swap with another thread's block: it is freed here later. */
        tagged_swap(&exchange.lock, &exchange.slots[(r >> 24) % EXCHANGE_SLOTS], slot);
        if (slot->block != NULL && slot->tag >> 48 != state->id)
            state->cross_frees++;
    }
    state->operations++;
}

static void worker_finish(worker_state_t *state)
{
    for (int i = 0; i < WORKER_WINDOW; i++)
        if (state->window[i].block != NULL)
            worker_verify_and_free(&state->window[i]);
    atomic_fetch_add(&worker_operations, state->operations);
    atomic_fetch_add(&worker_cross_frees, state->cross_frees);
}

/* Workers 1..WORKERS-1 run until told to stop. */
static void *worker_main(void *arg)
{
    worker_state_t state;
    worker_init(&state, (uintptr_t)arg);
    while (!atomic_load_explicit(&workers_stop, memory_order_relaxed))
        worker_step(&state);
    worker_finish(&state);
    return NULL;
}

/* The last worker is a chain of threads: each runs GENERATION_OPERATIONS
 * steps, starts its successor (detached) with the same state and exits, so
 * the forks also land in thread start-up and exit. */
static void *generation_main(void *arg)
{
    worker_state_t *state = arg;
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 15);
    for (int step = 0; step < GENERATION_OPERATIONS; step++) {
        if (atomic_load_explicit(&workers_stop, memory_order_relaxed))
            break;
        worker_step(state);
    }
    if (!atomic_load(&workers_stop)) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t successor;
        int error = pthread_create(&successor, &attr, generation_main, state);
        pthread_attr_destroy(&attr);
        if (error == 0) {
            atomic_fetch_add(&generations, 1);
            return NULL; /* the state is the successor's now */
        }
        atomic_fetch_add(&worker_corrupt, 1);
    }
    worker_finish(state);
    free(state);
    atomic_store(&last_generation_done, true);
    return NULL;
}

static void *first_generation_main(void *arg)
{
    worker_state_t *state = malloc(sizeof(*state));
    if (state == NULL) {
        atomic_fetch_add(&worker_corrupt, 1);
        atomic_store(&last_generation_done, true);
        pthread_barrier_wait(&workers_ready);
        return NULL;
    }
    worker_init(state, (uintptr_t)arg);
    return generation_main(state);
}

static void *exited_thread_main(void *arg)
{
    (void)arg;
    fill_set(prefork_exited, PREFORK_BLOCKS, 200, 0xDEAD);
    return NULL;
}

/* ---- the child --------------------------------------------------------------------------- */
typedef struct child_thread_work {
    tagged_block_t *handed;      /* blocks of the child's main thread, freed by the child's thread */
    size_t handed_count;
    uint64_t seed;
    int result;                  /* CHILD_OK or a failure code */
} child_thread_work_t;

static int child_free_set(tagged_block_t *set, size_t count)
{
    int result = CHILD_OK;
    for (size_t i = 0; i < count; i++) {
        if (!pym_owns(set[i].block))
            result = CHILD_NOT_OWNED;
        else if (!pattern_ok(set[i].block, set[i].size, set[i].tag))
            result = CHILD_CORRUPT;
        else
            free(set[i].block);
    }
    return result;
}

/* Allocate `count` blocks, fill, verify, realloc some, free them all. */
static int child_churn(uint64_t seed, size_t count)
{
    tagged_block_t *blocks = calloc(count, sizeof(tagged_block_t));
    if (blocks == NULL)
        return CHILD_NO_MEMORY;
    uint64_t rng = seed;
    int result = CHILD_OK;
    for (size_t i = 0; i < count; i++) {
        uint64_t r = rng_next(&rng);
        size_t size = i == count / 2 ? 1536 * 1024 : pick_size(r);
        blocks[i].block = malloc(size);
        if (blocks[i].block == NULL) {
            result = CHILD_NO_MEMORY;
            count = i;
            break;
        }
        blocks[i].size = size;
        blocks[i].tag = seed ^ i;
        pattern_fill(blocks[i].block, size, blocks[i].tag);
    }
    for (size_t i = 0; i < count && result == CHILD_OK; i += 5) {
        /* realloc keeps the pattern's prefix; refill at the new size. */
        size_t old_size = blocks[i].size;
        bool intact;
        if (!tagged_realloc(&blocks[i], old_size % 2 ? old_size * 3 : old_size / 2 + 8, &intact)) {
            result = CHILD_NO_MEMORY;
            break;
        }
        if (!intact)
            result = CHILD_CORRUPT;
    }
    for (size_t i = 0; i < count; i++) {
        if (blocks[i].block == NULL)
            continue;
        if (!pattern_ok(blocks[i].block, blocks[i].size, blocks[i].tag))
            result = CHILD_CORRUPT;
        free(blocks[i].block);
    }
    free(blocks);
    return result;
}

static void *child_thread_main(void *arg)
{
    child_thread_work_t *work = arg;
    work->result = child_churn(work->seed, 400);
    int handed = child_free_set(work->handed, work->handed_count); /* cross-thread frees in the child */
    if (work->result == CHILD_OK)
        work->result = handed;
    return NULL;
}

static int child_main(int iteration)
{
    alarm(CHILD_ALARM_SECONDS);
    int result = CHILD_OK;
    /* Blocks allocated before the fork by this thread, by the workers (whose
     * threads do not exist here) and by a thread that had exited. */
    int freed = child_free_set(prefork_main, PREFORK_BLOCKS);
    if (freed != CHILD_OK)
        return freed;
    for (int w = 0; w < WORKERS; w++)
        if ((freed = child_free_set(prefork_workers[w], PREFORK_BLOCKS)) != CHILD_OK)
            return freed;
    if ((freed = child_free_set(prefork_exited, PREFORK_BLOCKS)) != CHILD_OK)
        return freed;

    result = child_churn(0x5EED0000ULL + (uint64_t)iteration, 500);
    if (result != CHILD_OK)
        return result;

    /* A thread of the child's own, which also frees blocks of this thread. */
    enum { HANDED = 64 };
    tagged_block_t handed[HANDED];
    fill_set(handed, HANDED, 300, 0xABC0ULL + (uint64_t)iteration);
    child_thread_work_t work = {.handed = handed, .handed_count = HANDED, .seed = 0x7777ULL + (uint64_t)iteration};
    pthread_t thread;
    if (pthread_create(&thread, NULL, child_thread_main, &work) != 0)
        return CHILD_THREAD_FAILED;
    if (pthread_join(thread, NULL) != 0)
        return CHILD_THREAD_FAILED;
    if (work.result != CHILD_OK)
        return work.result;

    /* And the heap still works after the thread exited. */
    return child_churn(0x9999ULL + (uint64_t)iteration, 300);
}

/* ---- the parent ---------------------------------------------------------------------------- */
/* Wait for `pid` at most PARENT_WAIT_SECONDS; kill it past that. */
static int wait_child(pid_t pid, bool *timed_out)
{
    double deadline = now_seconds() + PARENT_WAIT_SECONDS;
    *timed_out = false;
    for (;;) {
        int status;
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid)
            return status;
        if (done < 0 && errno != EINTR) {
            fprintf(stderr, "waitpid: %s\n", strerror(errno));
            return -1;
        }
        if (now_seconds() > deadline) {
            *timed_out = true;
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return status;
        }
        struct timespec pause = {0, 200 * 1000};
        nanosleep(&pause, NULL);
    }
}

static const char *child_code_name(int code)
{
    switch (code) {
    case CHILD_CORRUPT: return "pattern corrupted";
    case CHILD_NO_MEMORY: return "allocation failed";
    case CHILD_THREAD_FAILED: return "pthread_create/join failed";
    case CHILD_NOT_OWNED: return "a pre-fork block is not owned by pymalloc in the child";
    default: return "unexpected exit code";
    }
}

int main(void)
{
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core); /* a crashing child should not leave a core file */
    double start = now_seconds();

    fill_set(prefork_main, PREFORK_BLOCKS, 1, 0xBEEF);
    pthread_t exited;
    REQUIRE(pthread_create(&exited, NULL, exited_thread_main, NULL) == 0);
    REQUIRE(pthread_join(exited, NULL) == 0);

    REQUIRE(pthread_barrier_init(&workers_ready, NULL, WORKERS + 1) == 0);
    pthread_t workers[WORKERS];
    for (int w = 0; w < WORKERS; w++)
        REQUIRE(pthread_create(&workers[w], NULL, w == WORKERS - 1 ? first_generation_main : worker_main,
                               (void *)(uintptr_t)(w + 1)) == 0);
    pthread_barrier_wait(&workers_ready);

    int ok = 0, crashed = 0, hung = 0, failed = 0;
    for (int i = 0; i < FORKS; i++) {
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0)
            _exit(child_main(i));
        bool timed_out;
        int status = wait_child(pid, &timed_out);
        if (timed_out) {
            if (hung++ == 0)
                CHECK(false, "fork %d: the child did not finish within %d s (deadlock?)", i, PARENT_WAIT_SECONDS);
        } else if (WIFSIGNALED(status)) {
            if (crashed++ == 0)
                CHECK(false, "fork %d: the child died by signal %d (%s)%s", i, WTERMSIG(status),
                      strsignal(WTERMSIG(status)),
                      WTERMSIG(status) == SIGALRM ? " -- its alarm fired: deadlock in the child" : "");
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (failed++ == 0)
                CHECK(false, "fork %d: the child exited with %d (%s)", i, WEXITSTATUS(status),
                      child_code_name(WEXITSTATUS(status)));
        } else {
            ok++;
        }
    }
    CHECK(ok == FORKS, "%d of %d children exited 0 (%d crashed, %d hung, %d failed)", ok, FORKS, crashed, hung,
          failed);

    atomic_store(&workers_stop, true);
    for (int w = 0; w < WORKERS; w++)
        pthread_join(workers[w], NULL); /* the last one is the chain's first thread */
    double chain_deadline = now_seconds() + PARENT_WAIT_SECONDS;
    while (!atomic_load(&last_generation_done) && now_seconds() < chain_deadline) {
        struct timespec pause = {0, 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    REQUIRE(atomic_load(&last_generation_done), "the last worker's thread chain did not stop");
    CHECK(atomic_load(&generations) > 0, "the last worker never handed over to a new thread");
    for (int i = 0; i < EXCHANGE_SLOTS; i++)
        if (exchange.slots[i].block != NULL)
            worker_verify_and_free(&exchange.slots[i]);
    CHECK(atomic_load(&worker_corrupt) == 0, "%zu worker blocks corrupted or not allocated",
          atomic_load(&worker_corrupt));
    CHECK(atomic_load(&worker_operations) > 0, "the workers did not run");
    CHECK(atomic_load(&worker_cross_frees) > 0, "no cross-thread free happened among the workers");

    /* The children freed their copies; the parent's are untouched. */
    size_t bad = 0;
    tagged_block_t *sets[] = {prefork_main, prefork_workers[0], prefork_workers[1], prefork_workers[2],
                              prefork_exited};
    for (size_t s = 0; s < sizeof(sets) / sizeof(sets[0]); s++)
        for (size_t i = 0; i < PREFORK_BLOCKS; i++) {
            if (!pym_owns(sets[s][i].block) || !pattern_ok(sets[s][i].block, sets[s][i].size, sets[s][i].tag))
                bad++;
            free(sets[s][i].block);
        }
    CHECK(bad == 0, "%zu of the parent's pre-fork blocks changed during the forks", bad);
    printf("%d forks, %zu worker operations (%zu cross-thread frees, %zu worker threads replaced) in %.2f s\n",
           FORKS, atomic_load(&worker_operations), atomic_load(&worker_cross_frees), atomic_load(&generations),
           now_seconds() - start);
    return check_finish();
}
