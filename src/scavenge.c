/*
 * scavenge.c -- the background scavenger: what has been free for the decay
 * time (PYMALLOC_DECAY_MS, 1 s) goes back to the OS even when the program
 * has stopped calling malloc and free.
 *
 * Free memory is kept for reuse, so that loops of allocating and freeing
 * make no system call and fault no page in again: free large extents, empty
 * chunks, free pools holding pages, the empty pools and the last pool of
 * each class a thread heap keeps.  malloc and free give back what decayed
 * when they pass by a slow path, but a program that frees everything and
 * then sleeps, or waits for input, never passes by one again.  The
 * scavenger is a thread that does it then:
 *
 *   - it is started lazily, the first time a slow path finds that at least
 *     PYM_SCAVENGE_START_BYTES (1 MiB) of free extents and empty chunks
 *     wait to decay (counters read without a lock) -- a short program
 *     (ls, a compiler pass) never gets one -- and only from a point where no
 *     pymalloc lock is held (pym_scavenge_poll), because pthread_create
 *     allocates; it runs with every signal blocked and is called
 *     "pymalloc-decay" (ps -L, top -H);
 *   - while something waits to decay it makes a pass every half decay time
 *     (at least 10 ms apart);
 *   - when nothing is left to give back, the thread ends (an idle program
 *     has no thread of ours and is never woken up); a slow path that keeps
 *     memory again starts a new one.  The end and the slow path's notice
 *     (pym_scavenge_wake: a load and a branch while the thread runs) are
 *     ordered by one atomic exchange on each side, so memory kept while
 *     the thread ends is not left without one;
 *   - it also ends as soon as it is the process's last thread (every other
 *     one called pthread_exit or returned): glibc then ends the process with
 *     exit(0), as it would have without our thread.  A program whose main
 *     calls pthread_exit, or whose child of a fork from a thread ends that
 *     thread (Python's test_threading does), must not be kept alive by it;
 *   - a pass takes the same locks as the slow paths, one at a time, and
 *     never touches a thread's cache bins: those belong to their thread
 *     (heap.c says what an idle thread's heap gives back without it);
 *   - after fork the child has no scavenger; its first slow path that
 *     keeps memory starts one again.
 * PYMALLOC_BACKGROUND_THREAD=0 turns it off: then only the slow paths give
 * memory back (as before).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <time.h>

#include "internal.h"

#define PYM_SCAVENGE_START_BYTES (1 * PYM_MiB) /* retained bytes that make a scavenger worth a thread */
#define PYM_SCAVENGE_MIN_PERIOD_MS 10          /* shortest time between two passes */
#define PYM_SCAVENGE_STACK (64 * PYM_KiB)      /* the thread's stack: a pass needs little */

int pym_scavenge_start_wanted;          /* a slow path asked for the thread (atomic) */
static int pym_scavenge_running;        /* 0: no thread, 1: it runs, 2: being started (atomic) */
static int pym_scavenge_work;           /* something was kept since the thread's pass began (atomic) */
static int pym_scavenge_failed;         /* pthread_create failed once: not tried again */
static pthread_mutex_t pym_scavenge_pass_lock = PTHREAD_MUTEX_INITIALIZER; /* held by a pass; fork takes it first */

/* A slow path kept something: tell the running thread (it must not end
 * without looking at it), or ask for one.  `check_bytes`: only when enough
 * waits to decay to be worth a thread. */
static void pym_scavenge_notice(bool check_bytes)
{
    if (!pym_options.background_thread)
        return;
    int running = __atomic_load_n(&pym_scavenge_running, __ATOMIC_ACQUIRE);
    if (running == 1) {
        if (__atomic_load_n(&pym_scavenge_work, __ATOMIC_RELAXED))
            return; /* already told during this pass */
        /* The exchange orders this against the thread's exchange of
         * `running` when it ends: either it sees `work`, or we see it gone. */
        if (__atomic_exchange_n(&pym_scavenge_work, 1, __ATOMIC_SEQ_CST))
            return;
        running = __atomic_load_n(&pym_scavenge_running, __ATOMIC_SEQ_CST);
        if (running != 0)
            return;
    }
    /* No thread: worth one only once enough waits to decay (a few loads,
     * no lock: this runs on every large free and chunk release). */
    if (running == 2 || pym_scavenge_failed || __atomic_load_n(&pym_scavenge_start_wanted, __ATOMIC_RELAXED))
        return;
    if (!check_bytes || pym_large_retained_estimate() + pym_arena_retained_estimate() >= PYM_SCAVENGE_START_BYTES)
        __atomic_store_n(&pym_scavenge_start_wanted, 1, __ATOMIC_RELEASE);
}

void pym_scavenge_wake(void)
{
    pym_scavenge_notice(true);
}

void pym_scavenge_want(void)
{
    pym_scavenge_notice(false);
}

size_t pym_scavenge_pass(uint64_t now_ms)
{
    /* A pass holds heap locks it only tried: fork must not happen in the
     * middle of one, or the child would find a heap locked forever. */
    pthread_mutex_lock(&pym_scavenge_pass_lock);
    /* Heaps first: what a quiet heap gives back has decayed already, and
     * the arena pass right after unmaps the chunks it empties. */
    size_t released = pym_large_decay(now_ms);
    released += pym_heap_decay(now_ms);
    pthread_mutex_lock(&pym_arena_lock);
    released += pym_arena_decay_locked(now_ms);
    pthread_mutex_unlock(&pym_arena_lock);
    released += pym_meta_decay();
    pthread_mutex_unlock(&pym_scavenge_pass_lock);
    return released;
}

/* Bytes kept for reuse that the scavenger would give back in time (racy
 * reads: an estimate). */
static size_t pym_scavenge_retained(void)
{
    pym_stats_t counters = {0};
    pthread_mutex_lock(&pym_large_lock);
    pym_large_counters_locked(&counters);
    pthread_mutex_unlock(&pym_large_lock);
    pthread_mutex_lock(&pym_arena_lock);
    pym_arena_counters_locked(&counters);
    bool idle_pages = pym_arena_has_idle_pages_locked();
    pthread_mutex_unlock(&pym_arena_lock);
    size_t retained = counters.large_cached_bytes + counters.arenas_cached * PYM_CHUNK_SIZE;
    if (idle_pages || pym_heap_has_idle_pools() || pym_meta_has_idle_slabs())
        retained += PYM_POOL_SIZE;
    return retained;
}

static void pym_scavenge_sleep_ms(uint64_t milliseconds)
{
    struct timespec pause = {.tv_sec = (time_t)(milliseconds / 1000),
                             .tv_nsec = (long)(milliseconds % 1000) * 1000000L};
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
    }
}

static void *pym_scavenge_main(void *unused)
{
    (void)unused;
    prctl(PR_SET_NAME, "pymalloc-decay", 0, 0, 0);
    for (;;) {
        __atomic_store_n(&pym_scavenge_work, 0, __ATOMIC_SEQ_CST);
        pym_scavenge_pass(pym_os_now_ms());
        if (pym_os_thread_count() == 1)
            break; /* the last thread: returning lets glibc call exit(0) */
        if (pym_scavenge_retained() > 0) {
            uint64_t period = pym_options.decay_ms / 2;
            pym_scavenge_sleep_ms(period < PYM_SCAVENGE_MIN_PERIOD_MS ? PYM_SCAVENGE_MIN_PERIOD_MS : period);
            continue;
        }
        /* Nothing waits: end, unless a slow path kept something since the
         * pass began and saw the thread still running. */
        __atomic_exchange_n(&pym_scavenge_running, 0, __ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&pym_scavenge_work, __ATOMIC_SEQ_CST))
            return NULL;
        int idle = 0;
        if (!__atomic_compare_exchange_n(&pym_scavenge_running, &idle, 1, false, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED))
            return NULL; /* a slow path is starting another one */
    }
    __atomic_store_n(&pym_scavenge_running, 0, __ATOMIC_RELEASE);
    return NULL;
}

void pym_scavenge_start(void)
{
    if (!__atomic_exchange_n(&pym_scavenge_start_wanted, 0, __ATOMIC_ACQ_REL))
        return;
    /* Not under valgrind either: its tools would count the thread's own
     * memory (its TLS) as the program's leak. */
    if (!pym_options.background_thread || pym_scavenge_failed || pym_under_valgrind
        || !__atomic_load_n(&pym_initialized, __ATOMIC_ACQUIRE))
        return;
    /* No pymalloc lock is held across pthread_create, which allocates (and
     * may come back here: the flag turns it away). */
    int idle = 0;
    if (!__atomic_compare_exchange_n(&pym_scavenge_running, &idle, 2, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return;
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attributes, PYM_SCAVENGE_STACK);
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous); /* the thread inherits a full mask */
    pthread_t thread;
    int error = pthread_create(&thread, &attributes, pym_scavenge_main, NULL);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    pthread_attr_destroy(&attributes);
    if (error != 0) {
        pym_scavenge_failed = 1;
        if (pym_options.verbose)
            pym_report("pymalloc: cannot start the background scavenger (pthread_create: error %d); "
                       "decayed memory goes back only from malloc and free",
                       error);
    }
    __atomic_store_n(&pym_scavenge_running, error == 0 ? 1 : 0, __ATOMIC_RELEASE);
}

void pym_scavenge_lock_for_fork(void)
{
    pthread_mutex_lock(&pym_scavenge_pass_lock);
}

void pym_scavenge_unlock_after_fork(void)
{
    pthread_mutex_unlock(&pym_scavenge_pass_lock);
}

void pym_scavenge_after_fork_child(void)
{
    /* The thread did not survive the fork; the forking thread holds the
     * pass lock. */
    pthread_mutex_unlock(&pym_scavenge_pass_lock);
    __atomic_store_n(&pym_scavenge_running, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&pym_scavenge_work, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&pym_scavenge_start_wanted, 1, __ATOMIC_RELEASE); /* the child may keep what the parent kept */
}
