/*
 * api_gc_threads.c -- the threading model of the refcount and cycle
 * collector API (include/pymalloc/gc.h), linked with -lpymalloc.
 *
 * The collector's state is global and guarded by one recursive, fork-safe
 * lock, pym_gc_lock(), in the spirit of Python's GIL: every thread holds it
 * while it calls the API or touches objects.  This test uses the API that
 * way from several threads and checks that nothing is lost or corrupted:
 *
 *   1. threads: 4 workers build rings of 1..6 nodes (cycles: only the
 *      collector frees them), some with a weak reference from one node to
 *      the next (garbage together with the ring, so its callback must never
 *      run), some with a weak reference the worker forgets (its callback
 *      frees it: it must run exactly once), some kept alive for a while with
 *      a weak reference the worker holds and checks (it must give back the
 *      kept object, and after the ring is dropped, the ring or nothing until
 *      the collector finds it); then they drop them.  A fifth thread builds rings and
 *      passes them to the workers through shared slots (under the lock); the
 *      workers check the tag of what they receive and link it into their own
 *      rings.  Each thread takes and releases the lock per small batch, so
 *      they interleave and the automatic collections run from different
 *      threads (seen through a collection callback); finalizers and weak
 *      reference callbacks take the lock again (recursion), wherever the
 *      collection runs.  A plain counter incremented only under the lock
 *      must add up (the lock excludes).  At the end, after a last
 *      collection: every node created was finalized once and deallocated,
 *      nothing is left tracked (weak references included) or on the garbage
 *      list;
 *   2. recursion: pym_gc_lock twice from one thread; after one unlock
 *      another thread still waits, after the second it gets the lock;
 *   3. fork: 50 times, fork while another thread works under the lock (and
 *      every fifth time while the forking thread holds it too); the child
 *      (with alarm() armed, so a deadlock ends in SIGALRM instead of a hang)
 *      takes the lock, builds a cycle with a weak reference, collects it
 *      (the destructors and the callback run), allocates enough for an
 *      automatic collection and exits 0.
 * Each part runs in a forked child (tests/sections.h), so a crash or a hang is a
 * failed check instead of the end of the test.  Shared counters touched
 * outside the lock are atomics: the test is clean under ThreadSanitizer.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "pymalloc/gc.h"
#include "sections.h"
#include "testlib.h"

#define WORKERS 4
#define SHARER WORKERS           /* index of the thread that passes rings to the workers */
#define THREADS (WORKERS + 1)
#define BATCHES 8000             /* per worker */
#define RINGS_PER_BATCH 8
#define WINDOW 32                /* rings a worker keeps alive, with a weak reference each */
#define SHARED_SLOTS 16
#define TIME_BUDGET 4.0          /* seconds for the threads part; workers stop early past it */
#define FORKS 50
#define CHILD_ALARM_SECONDS 10
#define SECTION_TIMEOUT_SECONDS 60

#define WORKER_TAG 0x574F524Bull /* "WORK" in the high half of a node's tag */
#define SHARED_TAG 0x53484152ull /* "SHAR" */

/* ---- nodes ------------------------------------------------------------------------- */
typedef struct node {
    void *next;                  /* owned: the next node of the ring */
    void *extra;                 /* owned: a node of another ring, or NULL */
    pym_weakref *inner;          /* owned: a weak reference to `next` (garbage with the ring), or NULL */
    uint64_t tag;                /* kind << 32 | serial */
} node_t;

static atomic_long created, finalized, deallocated;
static atomic_long owned_made, owned_callbacks;  /* weak references freed by their callback */
static atomic_long held_made, held_callbacks;    /* weak references the workers keep */
static atomic_long inner_made, inner_callbacks;  /* weak references inside rings: no callback */
static atomic_long weak_errors, bad_tags, shared_taken;
static atomic_long automatic_by_thread[THREADS + 1]; /* [THREADS]: the main thread */
static long guarded_counter;     /* touched only under pym_gc_lock */
static _Thread_local int thread_index = THREADS;
static _Thread_local bool explicit_collection;

static int node_traverse(void *self, pym_visit_fn visit, void *arg)
{
    node_t *node = self;
    int result = 0;
    if (node->next != NULL && (result = visit(node->next, arg)) != 0)
        return result;
    if (node->extra != NULL && (result = visit(node->extra, arg)) != 0)
        return result;
    if (node->inner != NULL)
        result = visit(node->inner, arg);
    return result;
}

static void node_clear(void *self)
{
    node_t *node = self;
    void *next = node->next, *extra = node->extra;
    pym_weakref *inner = node->inner;
    node->next = NULL;
    node->extra = NULL;
    node->inner = NULL;
    pym_decref(next);
    pym_decref(extra);
    pym_weakref_free(inner);
}

/* Finalizers may take the lock again: whoever runs the collection holds it. */
static void node_finalize(void *self)
{
    (void)self;
    pym_gc_lock();
    atomic_fetch_add(&finalized, 1);
    pym_gc_unlock();
}

static void node_dealloc(void *self)
{
    (void)self;
    atomic_fetch_add(&deallocated, 1);
}

static const pym_type node_type = {"ThreadNode", sizeof(node_t), PYM_TYPE_GC, node_traverse, node_clear,
                                   node_finalize, node_dealloc};

static node_t *new_node(uint64_t kind, uint64_t serial)
{
    node_t *node = pym_new(&node_type);
    REQUIRE(node != NULL, "pym_new: %s", strerror(errno));
    node->tag = kind << 32 | (serial & 0xFFFFFFFFu);
    atomic_fetch_add(&created, 1);
    return node;
}

/* A ring of `length` nodes; the caller owns the reference returned (to the
 * first node), the ring's links own the rest. */
static node_t *build_ring(int length, uint64_t kind, uint64_t serial)
{
    node_t *first = new_node(kind, serial), *last = first;
    for (int i = 1; i < length; i++) {
        node_t *node = new_node(kind, serial);
        last->next = node;       /* takes the creation reference */
        last = node;
    }
    pym_incref(first);
    last->next = first;
    return first;
}

/* ---- weak reference callbacks (run under the lock, by whichever thread collects) ---- */
static void owned_callback(pym_weakref *ref, void *arg)
{
    (void)arg;
    pym_gc_lock();
    if (pym_weakref_get(ref) != NULL)
        atomic_fetch_add(&weak_errors, 1);
    atomic_fetch_add(&owned_callbacks, 1);
    pym_weakref_free(ref);
    pym_gc_unlock();
}

static void held_callback(pym_weakref *ref, void *arg)
{
    (void)arg;
    if (pym_weakref_get(ref) != NULL)
        atomic_fetch_add(&weak_errors, 1);
    atomic_fetch_add(&held_callbacks, 1);
}

static void inner_callback(pym_weakref *ref, void *arg)
{
    (void)ref;
    (void)arg;
    atomic_fetch_add(&inner_callbacks, 1);
}

static void collection_callback(pym_gc_phase phase, const pym_gc_info *info, void *arg)
{
    (void)info;
    (void)arg;
    if (phase == PYM_GC_START && !explicit_collection)
        atomic_fetch_add(&automatic_by_thread[thread_index], 1);
}

static long collect(int generation)
{
    explicit_collection = true;
    long found = pym_gc_collect(generation);
    explicit_collection = false;
    return found;
}

/* ---- 1. threads ------------------------------------------------------------------------ */
static void *shared_slots[SHARED_SLOTS]; /* rings passed from the sharer to the workers; under the lock */
static atomic_bool workers_done;
static double deadline;

typedef struct thread_arg {
    int index;
    long guarded_increments;     /* this thread's increments of guarded_counter */
    long batches;
} thread_arg_t;

static void *worker_main(void *argument)
{
    thread_arg_t *arg = argument;
    thread_index = arg->index;
    uint64_t rng = 0x9E3779B97F4A7C15ull * (uint64_t)(arg->index + 1);
    node_t *kept[WINDOW] = {NULL};
    pym_weakref *held[WINDOW] = {NULL};    /* to kept[i] */
    pym_weakref *expired[WINDOW] = {NULL}; /* to the ring kept[i] replaced: dead, or garbage not yet collected */
    uint64_t serial = 0;
    for (int batch = 0; batch < BATCHES; batch++) {
        if (batch % 16 == 0 && now_seconds() > deadline)
            break;
        pym_gc_lock();
        for (int r = 0; r < RINGS_PER_BATCH; r++) {
            uint64_t random = rng_next(&rng);
            node_t *ring = build_ring(1 + (int)(random % 6), WORKER_TAG, serial++);
            if (ring->next != ring && random % 2 == 0) {
                ring->inner = pym_weakref_new(ring->next, inner_callback, NULL);
                if (ring->inner == NULL)
                    atomic_fetch_add(&weak_errors, 1);
                atomic_fetch_add(&inner_made, 1);
            }
            if ((random >> 8) % 4 == 0) { /* forgotten: its callback frees it */
                if (pym_weakref_new(ring, owned_callback, NULL) == NULL)
                    atomic_fetch_add(&weak_errors, 1);
                else
                    atomic_fetch_add(&owned_made, 1);
            }
            if ((random >> 12) % 3 == 0) { /* a ring from the sharer, if there is one */
                int slot = (int)((random >> 16) % SHARED_SLOTS);
                node_t *shared = shared_slots[slot];
                if (shared != NULL) {
                    shared_slots[slot] = NULL;
                    if (shared->tag >> 32 != SHARED_TAG || pym_refcount(shared) == 0)
                        atomic_fetch_add(&bad_tags, 1);
                    atomic_fetch_add(&shared_taken, 1);
                    ring->extra = shared; /* takes the slot's reference */
                }
            }
            int window_slot = (int)((random >> 24) % WINDOW);
            if ((random >> 32) % 3 == 0) { /* kept alive for a while, with a weak reference */
                pym_weakref_free(expired[window_slot]);
                expired[window_slot] = held[window_slot];
                pym_decref(kept[window_slot]);
                kept[window_slot] = ring;
                held[window_slot] = pym_weakref_new(ring, held_callback, NULL);
                if (held[window_slot] == NULL)
                    atomic_fetch_add(&weak_errors, 1);
                atomic_fetch_add(&held_made, 1);
            } else {
                pym_decref(ring); /* garbage: a cycle */
            }
            int probe = (int)((random >> 40) % WINDOW);
            if (kept[probe] != NULL) {
                void *again = pym_weakref_get(held[probe]);
                if (again != kept[probe] || ((node_t *)again)->tag >> 32 != WORKER_TAG)
                    atomic_fetch_add(&weak_errors, 1);
                pym_decref(again);
            }
            if (expired[probe] != NULL) { /* the ring it names, while the collector has not found it */
                node_t *late = pym_weakref_get(expired[probe]);
                if (late != NULL && late->tag >> 32 != WORKER_TAG)
                    atomic_fetch_add(&weak_errors, 1);
                pym_decref(late);
            }
            guarded_counter++;
            arg->guarded_increments++;
        }
        if (batch % 97 == arg->index)
            collect(batch % PYM_GC_GENERATIONS);
        pym_gc_unlock();
        arg->batches++;
        if (batch % 4 == 0)
            sched_yield();
    }
    pym_gc_lock();
    for (int i = 0; i < WINDOW; i++) {
        pym_weakref_free(expired[i]);
        pym_weakref_free(held[i]);
        pym_decref(kept[i]);
    }
    pym_gc_unlock();
    return NULL;
}

static void *sharer_main(void *argument)
{
    thread_arg_t *arg = argument;
    thread_index = arg->index;
    uint64_t rng = 12345, serial = 0;
    while (!atomic_load(&workers_done)) {
        pym_gc_lock();
        for (int i = 0; i < 4; i++) {
            uint64_t random = rng_next(&rng);
            int slot = (int)(random % SHARED_SLOTS);
            if (shared_slots[slot] == NULL)
                shared_slots[slot] = build_ring(1 + (int)((random >> 8) % 4), SHARED_TAG, serial++);
        }
        guarded_counter++;
        arg->guarded_increments++;
        pym_gc_unlock();
        arg->batches++;
        sched_yield();
    }
    return NULL;
}

static int count_object(void *object, void *arg)
{
    (void)object;
    (*(long *)arg)++;
    return 0;
}

static void test_threads(void)
{
    REQUIRE(pym_gc_callback_add(collection_callback, NULL) == 0);
    deadline = now_seconds() + TIME_BUDGET;
    pthread_t threads[THREADS];
    thread_arg_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (thread_arg_t){.index = i};
        int error = pthread_create(&threads[i], NULL, i == SHARER ? sharer_main : worker_main, &args[i]);
        REQUIRE(error == 0, "pthread_create: %s", strerror(error));
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join(threads[i], NULL);
    atomic_store(&workers_done, true);
    pthread_join(threads[SHARER], NULL);

    pym_gc_lock();
    for (int i = 0; i < SHARED_SLOTS; i++) {
        pym_decref(shared_slots[i]);
        shared_slots[i] = NULL;
    }
    collect(2);
    long tracked = 0;
    pym_gc_visit_objects(-1, count_object, &tracked);
    size_t garbage = pym_gc_garbage_count();
    pym_gc_stats_t stats[PYM_GC_GENERATIONS];
    pym_gc_get_stats(stats);
    long expected_guarded = 0;
    for (int i = 0; i < THREADS; i++)
        expected_guarded += args[i].guarded_increments;
    long final_guarded = guarded_counter;
    pym_gc_unlock();
    REQUIRE(pym_gc_callback_remove(collection_callback, NULL) == 0);

    long batches = 0;
    for (int i = 0; i < WORKERS; i++)
        batches += args[i].batches;
    int collecting_threads = 0;
    for (int i = 0; i < THREADS; i++)
        collecting_threads += atomic_load(&automatic_by_thread[i]) > 0;
    printf("threads: %ld worker batches, %ld nodes, %ld rings passed between threads, weak reference callbacks: "
           "%ld forgotten, %ld held, %ld inner; automatic collections by thread: %ld %ld %ld %ld %ld (main %ld), "
           "collections per generation: %zu %zu %zu\n",
           batches, atomic_load(&created), atomic_load(&shared_taken), atomic_load(&owned_callbacks),
           atomic_load(&held_callbacks), atomic_load(&inner_callbacks), atomic_load(&automatic_by_thread[0]),
           atomic_load(&automatic_by_thread[1]), atomic_load(&automatic_by_thread[2]),
           atomic_load(&automatic_by_thread[3]), atomic_load(&automatic_by_thread[4]),
           atomic_load(&automatic_by_thread[THREADS]), stats[0].collections, stats[1].collections,
           stats[2].collections);

    CHECK(batches >= WORKERS * 50, "the workers made progress (%ld batches)", batches);
    CHECK(atomic_load(&deallocated) == atomic_load(&created), "every node was deallocated: %ld of %ld",
          atomic_load(&deallocated), atomic_load(&created));
    CHECK(atomic_load(&finalized) == atomic_load(&created), "every node was finalized once: %ld of %ld",
          atomic_load(&finalized), atomic_load(&created));
    CHECK(tracked == 0, "nothing is left tracked, weak references included (%ld objects)", tracked);
    CHECK(garbage == 0, "nothing on the garbage list (%zu)", garbage);
    CHECK(atomic_load(&owned_callbacks) == atomic_load(&owned_made),
          "every forgotten weak reference's callback ran once: %ld of %ld", atomic_load(&owned_callbacks),
          atomic_load(&owned_made));
    CHECK(atomic_load(&held_callbacks) <= atomic_load(&held_made), "held weak references: %ld callbacks for %ld",
          atomic_load(&held_callbacks), atomic_load(&held_made));
    CHECK(atomic_load(&inner_made) > 0 && atomic_load(&inner_callbacks) == 0,
          "no callback for the %ld weak references that were garbage with their ring (%ld ran)",
          atomic_load(&inner_made), atomic_load(&inner_callbacks));
    CHECK(atomic_load(&weak_errors) == 0, "%ld weak reference errors (creation failed, get gave a wrong object, "
                                          "or an object in a callback)",
          atomic_load(&weak_errors));
    CHECK(atomic_load(&shared_taken) > 0 && atomic_load(&bad_tags) == 0,
          "%ld rings passed between threads, %ld with a bad tag or count", atomic_load(&shared_taken),
          atomic_load(&bad_tags));
    CHECK(final_guarded == expected_guarded, "the lock excludes: a plain counter incremented under it reads %ld, "
                                             "expected %ld",
          final_guarded, expected_guarded);
    CHECK(collecting_threads >= 2, "automatic collections ran from %d threads (expected at least 2)",
          collecting_threads);
    CHECK(atomic_load(&automatic_by_thread[THREADS]) == 0, "none from the main thread before the end");
}

/* ---- 2. recursion ---------------------------------------------------------------------- */
static atomic_bool other_got_lock;

static void *take_lock_once(void *arg)
{
    (void)arg;
    pym_gc_lock();
    atomic_store(&other_got_lock, true);
    pym_gc_unlock();
    return NULL;
}

static void test_recursion(void)
{
    pym_gc_lock();
    pym_gc_lock();              /* a non-recursive lock deadlocks here: SIGALRM ends the section */
    node_t *ring = build_ring(3, WORKER_TAG, 0);
    pym_decref(ring);
    long found = collect(0);
    pym_gc_unlock();
    CHECK(found == 3, "a collection under the lock taken twice finds the ring (%ld)", found);

    pthread_t other;
    REQUIRE(pthread_create(&other, NULL, take_lock_once, NULL) == 0);
    struct timespec pause = {0, 150 * 1000 * 1000};
    nanosleep(&pause, NULL);
    CHECK(!atomic_load(&other_got_lock), "after one unlock of two, the lock is still held");
    pym_gc_unlock();
    pthread_join(other, NULL);
    CHECK(atomic_load(&other_got_lock), "after the second unlock another thread gets it");

    pym_gc_lock();              /* and this thread takes it again */
    CHECK(atomic_load(&deallocated) == 3, "the ring's nodes were deallocated (%ld)", atomic_load(&deallocated));
    pym_gc_unlock();
}

/* ---- 3. fork ---------------------------------------------------------------------------- */
static atomic_bool stop_background;
static atomic_long background_batches;

static void *background_main(void *arg)
{
    (void)arg;
    thread_index = 0;
    uint64_t rng = 777, serial = 0;
    node_t *kept = NULL;
    pym_weakref *held = NULL;
    while (!atomic_load(&stop_background)) {
        pym_gc_lock();
        for (int i = 0; i < 16; i++) {
            uint64_t random = rng_next(&rng);
            node_t *ring = build_ring(1 + (int)(random % 5), WORKER_TAG, serial++);
            if (random % 8 == 0) {
                pym_weakref_free(held);
                pym_decref(kept);
                kept = ring;
                held = pym_weakref_new(ring, held_callback, NULL);
            } else {
                pym_decref(ring);
            }
        }
        if (serial % 1024 < 16)
            collect(2);
        pym_gc_unlock();
        atomic_fetch_add(&background_batches, 1);
    }
    pym_gc_lock();
    pym_weakref_free(held);
    pym_decref(kept);
    pym_gc_unlock();
    return NULL;
}

static int fork_child_deallocs;
static int fork_child_callbacks;

static void fork_node_dealloc(void *self)
{
    (void)self;
    fork_child_deallocs++;
}

static void fork_child_callback(pym_weakref *ref, void *arg)
{
    (void)arg;
    fork_child_callbacks++;
    pym_weakref_free(ref);
}

static const pym_type fork_node_type = {"ForkNode", sizeof(node_t), PYM_TYPE_GC, node_traverse, node_clear,
                                        NULL, fork_node_dealloc};

/* Exit codes of the forked children. */
enum { FORK_OK = 0, FORK_NEW_FAILED = 10, FORK_NOT_FOUND = 11, FORK_NO_DEALLOC = 12, FORK_NO_CALLBACK = 13,
       FORK_NO_AUTOMATIC = 14 };

/* `holding`: the forking thread held the lock, so the child holds it once. */
static int fork_child(bool holding)
{
    alarm(CHILD_ALARM_SECONDS);
    pym_gc_lock();
    node_t *a = pym_new(&fork_node_type), *b = pym_new(&fork_node_type);
    if (a == NULL || b == NULL)
        return FORK_NEW_FAILED;
    a->next = b;
    b->next = a;
    pym_incref(a);
    if (pym_weakref_new(b, fork_child_callback, NULL) == NULL)
        return FORK_NEW_FAILED;
    pym_decref(a);
    long found = pym_gc_collect(2);
    if (found < 2)
        return FORK_NOT_FOUND;
    if (fork_child_deallocs != 2)
        return FORK_NO_DEALLOC;
    if (fork_child_callbacks != 1)
        return FORK_NO_CALLBACK;
    pym_gc_unlock();
    if (holding)
        pym_gc_unlock();

    /* Enough allocations for an automatic collection, lock taken per batch. */
    pym_gc_stats_t before[PYM_GC_GENERATIONS], after[PYM_GC_GENERATIONS];
    pym_gc_lock();
    pym_gc_get_stats(before);
    pym_gc_unlock();
    for (int batch = 0; batch < 100; batch++) {
        pym_gc_lock();
        for (int i = 0; i < 10; i++) {
            node_t *node = pym_new(&fork_node_type);
            if (node == NULL)
                return FORK_NEW_FAILED;
            node->next = node;   /* a self-cycle */
            pym_incref(node);
            pym_decref(node);
        }
        pym_gc_unlock();
    }
    pym_gc_lock();
    pym_gc_get_stats(after);
    pym_gc_collect(2);
    pym_gc_unlock();
    if (after[0].collections + after[1].collections + after[2].collections
        <= before[0].collections + before[1].collections + before[2].collections)
        return FORK_NO_AUTOMATIC;
    if (fork_child_deallocs != 2 + 1000)
        return FORK_NO_DEALLOC;
    return FORK_OK;
}

static void test_fork(void)
{
    pthread_t background;
    REQUIRE(pthread_create(&background, NULL, background_main, NULL) == 0);
    int succeeded = 0;
    for (int round = 0; round < FORKS; round++) {
        long progress = atomic_load(&background_batches);
        while (atomic_load(&background_batches) < progress + 3) /* the other thread is busy under the lock */
            sched_yield();
        bool holding = round % 5 == 0;
        if (holding)
            pym_gc_lock();
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0)
            _exit(fork_child(holding));
        if (holding)
            pym_gc_unlock();
        int status = 0;
        REQUIRE(waitpid(pid, &status, 0) == pid);
        if (WIFSIGNALED(status))
            CHECK(false, "fork %d%s: the child died by signal %d (%s)%s", round,
                  holding ? " (lock held by the forking thread)" : "", WTERMSIG(status),
                  strsignal(WTERMSIG(status)), WTERMSIG(status) == SIGALRM ? ": deadlock after fork" : "");
        else if (WEXITSTATUS(status) != FORK_OK)
            CHECK(false, "fork %d%s: the child exited %d (%s)", round,
                  holding ? " (lock held by the forking thread)" : "", WEXITSTATUS(status),
                  WEXITSTATUS(status) == FORK_NOT_FOUND     ? "the cycle was not found"
                  : WEXITSTATUS(status) == FORK_NO_DEALLOC  ? "objects not deallocated"
                  : WEXITSTATUS(status) == FORK_NO_CALLBACK ? "no weakref callback"
                  : WEXITSTATUS(status) == FORK_NO_AUTOMATIC ? "no automatic collection"
                                                             : "pym_new failed");
        else
            succeeded++;
    }
    atomic_store(&stop_background, true);
    pthread_join(background, NULL);
    CHECK(succeeded == FORKS, "%d of %d forked children could lock, collect a cycle and allocate", succeeded,
          FORKS);
    pym_gc_lock();
    collect(2);
    long created_now = atomic_load(&created), deallocated_now = atomic_load(&deallocated);
    pym_gc_unlock();
    CHECK(created_now == deallocated_now, "the parent's nodes were all deallocated: %ld of %ld", deallocated_now,
          created_now);
    printf("fork: %ld background batches during %d forks\n", atomic_load(&background_batches), FORKS);
}

/* ---- sections ----------------------------------------------------------------------- */
static const test_section_t sections[] = {
    {"threads", test_threads},
    {"recursion", test_recursion},
    {"fork", test_fork},
};

/* Each part in a forked child (tests/sections.h); `api_gc_threads N` runs
 * part N (1..3, numbered as above) in this process (for debuggers and
 * ThreadSanitizer). */
int main(int argc, char **argv)
{
    return sections_main(argc, argv, sections, (int)(sizeof(sections) / sizeof(sections[0])), NULL,
                         SECTION_TIMEOUT_SECONDS);
}
