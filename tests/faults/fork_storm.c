/*
 * fork_storm.c -- 10,000 forks of a process whose other threads allocate
 * and free all the time (malloc/free interposed: linked with -lpymalloc).
 *
 * Usage: fork_storm [--forks N] [--workers N]     (defaults 10000, 3)
 *
 * Worker threads churn a window of pattern-filled blocks (small, medium,
 * some large), verifying each block before freeing it; a third of their
 * blocks go through a shared exchange, so many frees are cross-thread.  The
 * forks land wherever the workers happen to be: in a fast path, a refill, a
 * flush, a remote-list push, a large mapping, or inside pymalloc's locks
 * (the atfork handlers must take them all).  One fork in 8 is made by a
 * worker thread instead of the main thread, at a random point of its churn.
 *
 * Every child (alarm armed: a deadlock becomes SIGALRM, reported as such)
 *   - checks the forking thread's blocks from before the fork, and frees
 *     part of them and of blocks other threads allocated (their threads do
 *     not exist in the child);
 *   - mallocs, reallocs and frees a few hundred blocks of every kind,
 *     checking their patterns and usable sizes;
 *   - exits 0 through exit() (atexit handlers and stdio run).
 * The parent checks every child's status, reports the first failures of
 * each kind and, at the end, that its own copies of the blocks are intact and
 * that the workers saw no corruption.  A watchdog alarm in the parent turns
 * a deadlock of the parent (say, in fork's prepare handler) into a failure.
 */
#include <errno.h>
#include <malloc.h>
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
#include <unistd.h>

#include "check.h"
#include "faults.h"
#include "pymalloc.h"

#define MAX_WORKERS 8
#define WINDOW 64                /* live blocks per worker */
#define EXCHANGE_SLOTS 64
#define HELD_BLOCKS 48           /* blocks the main thread keeps across all forks */
#define CHILD_BLOCKS 300         /* blocks each child allocates */
#define CHILD_ALARM_SECONDS 20
#define PARENT_ALARM_SECONDS 900
#define WORKER_FORK_EVERY 8      /* one fork in this many is made by worker 0 */
#define IN_FLIGHT 2              /* children of the main thread running at once */

enum { CHILD_OK = 0, CHILD_CORRUPT = 10, CHILD_NO_MEMORY = 11, CHILD_BAD_SIZE = 12, CHILD_NOT_OWNED = 13 };

typedef struct block {
    void *ptr;
    size_t size;
    uint64_t tag;
} block_t;

/* The workers' sizes: mostly small, medium up to 32 KiB, rarely large.  Kept
 * modest: every page a worker writes while a child lives is copied. */
static size_t pick_size(uint64_t r)
{
    unsigned kind = (unsigned)(r % 1000);
    if (kind < 850)
        return (r >> 16) % 513;                   /* small, 0..512 */
    if (kind < 998)
        return 513 + (r >> 16) % (32 * 1024);     /* medium */
    return 128 * 1024 + 1 + (r >> 16) % (1 << 20); /* large, up to 1.1 MiB */
}

/* The children's sizes: mostly small, medium up to 16 KiB, rarely large. */
static size_t pick_child_size(uint64_t r)
{
    unsigned kind = (unsigned)(r % 1000);
    if (kind < 850)
        return (r >> 16) % 513;
    if (kind < 995)
        return 513 + (r >> 16) % (16 * 1024);
    return 128 * 1024 + 1 + (r >> 16) % (1 << 20);
}

static bool block_new(block_t *b, size_t size, uint64_t tag)
{
    b->ptr = malloc(size);
    if (b->ptr == NULL)
        return false;
    b->size = size;
    b->tag = tag;
    sampled_fill(b->ptr, size, tag);
    return true;
}

static bool block_ok(const block_t *b)
{
    return sampled_ok(b->ptr, b->size, b->tag) && malloc_usable_size(b->ptr) >= b->size;
}

/* ---- workers ------------------------------------------------------------------------ */
static atomic_bool stop;
static atomic_ullong worker_ops, worker_cross, worker_corrupt, worker_nomem;
static atomic_ullong next_tag = 1;
static pthread_mutex_t exchange_lock = PTHREAD_MUTEX_INITIALIZER;
static block_t exchange[EXCHANGE_SLOTS];

/* Forks made by worker 0 on request of the main thread. */
static pthread_mutex_t request_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t request_cond = PTHREAD_COND_INITIALIZER;
static int fork_requested;       /* index of the requested fork + 1, 0 for none */
static int fork_result;          /* wait status of its child, -1 while pending */

typedef struct worker {
    int id;
    uint64_t rng;
    block_t window[WINDOW];
} worker_t;
static worker_t workers[MAX_WORKERS];

static int child_main(block_t *mine, size_t mine_count, int fork_index);
static int fork_and_wait(block_t *mine, size_t mine_count, int fork_index);

static void worker_free(block_t *b)
{
    if (!block_ok(b))
        atomic_fetch_add(&worker_corrupt, 1);
    free(b->ptr);
    b->ptr = NULL;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    /* Lower priority: the workers take every idle CPU, but the children, at
     * normal priority, are not starved on a 2-core machine. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 15);
    unsigned long long ops = 0, cross = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint64_t r = rng_next(&w->rng);
        block_t *slot = &w->window[r % WINDOW];
        if (slot->ptr != NULL)
            worker_free(slot);
        if (!block_new(slot, pick_size(r >> 10), atomic_fetch_add(&next_tag, 1)))
            atomic_fetch_add(&worker_nomem, 1);
        if ((r >> 40) % 3 == 0 && slot->ptr != NULL) {
            pthread_mutex_lock(&exchange_lock);
            block_t *shared = &exchange[(r >> 45) % EXCHANGE_SLOTS];
            block_t theirs = *shared;
            *shared = *slot;
            pthread_mutex_unlock(&exchange_lock);
            *slot = theirs;
            cross += theirs.ptr != NULL;
        }
        ops++;
        if (w->id == 0 && (ops & 63) == 0) {
            pthread_mutex_lock(&request_lock);
            int requested = fork_requested;
            pthread_mutex_unlock(&request_lock);
            if (requested != 0) {
                int status = fork_and_wait(w->window, WINDOW, requested - 1);
                pthread_mutex_lock(&request_lock);
                fork_requested = 0;
                fork_result = status;
                pthread_cond_signal(&request_cond);
                pthread_mutex_unlock(&request_lock);
            }
        }
    }
    for (int i = 0; i < WINDOW; i++)
        if (w->window[i].ptr != NULL)
            worker_free(&w->window[i]);
    atomic_fetch_add(&worker_ops, ops);
    atomic_fetch_add(&worker_cross, cross);
    return NULL;
}

/* ---- the child ------------------------------------------------------------------------ */
static int child_main(block_t *mine, size_t mine_count, int fork_index)
{
    signal(SIGALRM, SIG_DFL); /* not the parent's watchdog: a deadlocked child dies of SIGALRM */
    alarm(CHILD_ALARM_SECONDS);
    /* The forking thread's blocks are intact; free every other one. */
    for (size_t i = 0; i < mine_count; i++) {
        if (mine[i].ptr == NULL)
            continue;
        if (!pym_owns(mine[i].ptr))
            return CHILD_NOT_OWNED;
        if (!block_ok(&mine[i]))
            return CHILD_CORRUPT;
        if (i % 2 == 0)
            free(mine[i].ptr);
    }
    /* Blocks of the exchange: other threads' (whose threads are gone here).
     * The lock may have been held by a vanished worker at the fork: copy the
     * table without it (a slot caught mid-swap is skipped, not freed). */
    for (int i = 0; i < EXCHANGE_SLOTS; i += 4) {
        block_t b = exchange[i];
        if (b.ptr != NULL && pym_owns(b.ptr) && (i / 4) % 2 == 0 && sampled_ok(b.ptr, b.size, b.tag))
            free(b.ptr);
    }
    /* Fresh blocks of every kind, reallocs, frees. */
    static block_t blocks[CHILD_BLOCKS];
    uint64_t rng = 0x5EED0000ULL + (uint64_t)fork_index;
    for (int i = 0; i < CHILD_BLOCKS; i++) {
        uint64_t r = rng_next(&rng);
        size_t size = i == CHILD_BLOCKS / 2 ? (2u << 20) + 100 : pick_child_size(r);
        if (!block_new(&blocks[i], size, ((uint64_t)fork_index << 32) | (uint64_t)i))
            return CHILD_NO_MEMORY;
        if (malloc_usable_size(blocks[i].ptr) < size)
            return CHILD_BAD_SIZE;
    }
    for (int i = 0; i < CHILD_BLOCKS; i += 7) {
        size_t new_size = blocks[i].size % 2 ? blocks[i].size * 2 + 1 : blocks[i].size / 2;
        void *moved = realloc(blocks[i].ptr, new_size);
        if (moved == NULL && new_size != 0)
            return CHILD_NO_MEMORY;
        if (new_size == 0) { /* realloc(p, 0) freed it */
            if (!block_new(&blocks[i], 16, blocks[i].tag))
                return CHILD_NO_MEMORY;
            continue;
        }
        size_t kept = blocks[i].size < new_size ? blocks[i].size : new_size;
        if (!sampled_ok_prefix(moved, blocks[i].size, blocks[i].tag, kept))
            return CHILD_CORRUPT;
        blocks[i].ptr = moved;
        blocks[i].size = new_size;
        sampled_fill(moved, new_size, blocks[i].tag);
    }
    for (int i = 0; i < CHILD_BLOCKS; i++) {
        if (!block_ok(&blocks[i]))
            return CHILD_CORRUPT;
        free(blocks[i].ptr);
    }
    return CHILD_OK;
}

/* Fork; the child runs child_main and exits.  The child's pid, -1 on error. */
static pid_t fork_child(block_t *mine, size_t mine_count, int fork_index)
{
    pid_t pid = fork();
    if (pid < 0)
        fprintf(stderr, "fork %d: %s\n", fork_index, strerror(errno));
    else if (pid == 0)
        exit(child_main(mine, mine_count, fork_index));
    return pid;
}

/* The wait status of child `pid`, -1 on error. */
static int wait_child(pid_t pid)
{
    if (pid < 0)
        return -1;
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "waitpid: %s\n", strerror(errno));
            return -1;
        }
    }
    return status;
}

static int fork_and_wait(block_t *mine, size_t mine_count, int fork_index)
{
    return wait_child(fork_child(mine, mine_count, fork_index));
}

static const char *child_code_name(int code)
{
    switch (code) {
    case CHILD_CORRUPT: return "a block's pattern was corrupted";
    case CHILD_NO_MEMORY: return "an allocation failed";
    case CHILD_BAD_SIZE: return "malloc_usable_size below the request";
    case CHILD_NOT_OWNED: return "a pre-fork block is not pymalloc's in the child";
    default: return "unexpected exit code";
    }
}

static int children_ok, failures[4], reported[4]; /* signal, alarm, exit code, fork error */

static void tally(int status, int index, bool by_worker)
{
    const char *who = by_worker ? "by a worker" : "by the main thread";
    if (status == -1) {
        if (reported[3]++ < 3)
            CHECK(false, "fork %d (%s): fork or waitpid failed", index, who);
        failures[3]++;
    } else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
        if (reported[1]++ < 3)
            CHECK(false, "fork %d (%s): the child's %d s alarm fired: it deadlocked", index, who,
                  CHILD_ALARM_SECONDS);
        failures[1]++;
    } else if (WIFSIGNALED(status)) {
        if (reported[0]++ < 3)
            CHECK(false, "fork %d (%s): the child died by signal %d (%s)", index, who, WTERMSIG(status),
                  strsignal(WTERMSIG(status)));
        failures[0]++;
    } else if (WEXITSTATUS(status) != 0) {
        if (reported[2]++ < 3)
            CHECK(false, "fork %d (%s): the child exited %d: %s", index, who, WEXITSTATUS(status),
                  child_code_name(WEXITSTATUS(status)));
        failures[2]++;
    } else {
        children_ok++;
    }
}

static void parent_alarm(int sig)
{
    (void)sig;
    static const char message[] = "fork_storm: the parent made no progress for too long (deadlock?)\n";
    if (write(2, message, sizeof(message) - 1) < 0)
        _exit(1);
    _exit(1);
}

int main(int argc, char **argv)
{
    int forks = 10000, worker_count = 3;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--forks") == 0 && i + 1 < argc)
            forks = atoi(argv[++i]);
        else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
            worker_count = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--forks N] [--workers N]\n", argv[0]);
            return 2;
        }
    }
    REQUIRE(forks > 0 && worker_count > 0 && worker_count <= MAX_WORKERS, "bad arguments");
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(SIGALRM, parent_alarm);
    alarm(PARENT_ALARM_SECONDS);
    setvbuf(stdout, NULL, _IOLBF, 0);
    double start = now_seconds();

    static block_t held[HELD_BLOCKS];
    uint64_t rng = 42;
    for (int i = 0; i < HELD_BLOCKS; i++)
        REQUIRE(block_new(&held[i], i == 0 ? 3u << 20 : pick_size(rng_next(&rng)), 0xAB000000ULL + (uint64_t)i));

    pthread_t threads[MAX_WORKERS];
    for (int w = 0; w < worker_count; w++) {
        workers[w].id = w;
        workers[w].rng = 0x1234567ULL * (uint64_t)(w + 1);
        REQUIRE(pthread_create(&threads[w], NULL, worker_main, &workers[w]) == 0);
    }

    /* The main thread keeps IN_FLIGHT children running at once (the
     * machine's second core); a worker waits for its own child. */
    pid_t in_flight[IN_FLIGHT];
    int in_flight_index[IN_FLIGHT];
    int running = 0, by_worker = 0;
    for (int i = 0; i < forks || running > 0;) {
        int status, index;
        bool worker_fork = false;
        if (i < forks && i % WORKER_FORK_EVERY == WORKER_FORK_EVERY - 1) {
            pthread_mutex_lock(&request_lock);
            fork_result = -1;
            fork_requested = i + 1;
            while (fork_requested != 0)
                pthread_cond_wait(&request_cond, &request_lock);
            status = fork_result;
            pthread_mutex_unlock(&request_lock);
            index = i++;
            worker_fork = true;
            by_worker++;
        } else if (i < forks && running < IN_FLIGHT) {
            in_flight[running] = fork_child(held, HELD_BLOCKS, i);
            in_flight_index[running++] = i++;
            continue;
        } else {
            status = wait_child(in_flight[0]);
            index = in_flight_index[0];
            running--;
            memmove(in_flight, in_flight + 1, (size_t)running * sizeof(in_flight[0]));
            memmove(in_flight_index, in_flight_index + 1, (size_t)running * sizeof(in_flight_index[0]));
        }
        alarm(PARENT_ALARM_SECONDS); /* progress: re-arm the watchdog */
        tally(status, index, worker_fork);
    }
    double forks_done = now_seconds();
    CHECK(children_ok == forks,
          "%d of %d children exited 0 (%d killed by a signal, %d deadlocked, %d exited non-zero, %d fork errors)",
          children_ok, forks, failures[0], failures[1], failures[2], failures[3]);

    atomic_store(&stop, true);
    for (int w = 0; w < worker_count; w++)
        pthread_join(threads[w], NULL);
    for (int i = 0; i < EXCHANGE_SLOTS; i++)
        if (exchange[i].ptr != NULL)
            worker_free(&exchange[i]);
    size_t bad = 0;
    for (int i = 0; i < HELD_BLOCKS; i++) {
        bad += !block_ok(&held[i]);
        free(held[i].ptr);
    }
    CHECK(bad == 0, "%zu of the main thread's blocks changed in the parent during the forks", bad);
    CHECK(atomic_load(&worker_corrupt) == 0, "%llu corrupted blocks seen by the workers", atomic_load(&worker_corrupt));
    CHECK(atomic_load(&worker_nomem) == 0, "%llu failed worker allocations", atomic_load(&worker_nomem));
    CHECK(atomic_load(&worker_ops) > (unsigned long long)forks, "the workers hardly ran (%llu operations)",
          atomic_load(&worker_ops));
    CHECK(atomic_load(&worker_cross) > 0, "no cross-thread free among the workers");
    printf("fork_storm: %d forks (%d by a worker thread) in %.1f s (%.0f forks/s), %d children exited 0; "
           "%d workers did %llu operations (%llu cross-thread frees)\n",
           forks, by_worker, forks_done - start, forks / (forks_done - start), children_ok, worker_count,
           atomic_load(&worker_ops), atomic_load(&worker_cross));
    return check_finish();
}
