/*
 * api_gc.c -- the reference count and cycle collector side API
 * (include/pymalloc/gc.h), linked with -lpymalloc.
 *
 * The API promises CPython 3.12's object model, so every check below is a
 * figure that model fixes exactly: how many objects a collection finds,
 * which generation a survivor lands in, what the generation counts read
 * after each allocation, in which order weak reference callbacks run.  The
 * test types (a node with four owned slots, a node type without `clear`, a
 * one-link chain, GC and non-GC) record every finalize / clear / dealloc in
 * global counters and an event log, so the checks see what the collector
 * did, not only what it returned.
 *
 *    1. cycles of 1, 2, 3 and 10,000 objects: refcounting never frees them,
 *       pym_gc_collect(2) frees exactly them (returned count, deallocs,
 *       one finalize each, all finalizers before the first dealloc);
 *    2. a cycle with an outside reference survives with everything it
 *       reaches (refcounts intact); an outside reference into the middle
 *       keeps only the part it reaches;
 *    3. generations: a young cycle held by an object of generation 1 or 2
 *       survives collections of the younger generations, moves up, and once
 *       unreferenced is found only by a collection of its new generation;
 *       dead old cycles keep young objects alive until a full collection;
 *    4. thresholds, allocation by allocation against a model of the rules
 *       in gc.h (count, collections per generation, callbacks): 700,10,10
 *       from a clean state up to the first generation 1 collection, then
 *       the long_lived_pending < long_lived_total / 4 rule that skips full
 *       collections (100,000 old objects, thresholds 10,1,1);
 *    5. finalizers run once, before clear and dealloc; resurrection through
 *       refcount zero and through a collection (the resurrected objects and
 *       what they reach survive, move up, are freed later without a second
 *       finalize); pym_gc_collect from a finalizer during a collection is 0;
 *    6. weak references: get is a new strong reference, NULL after death;
 *       callbacks newest first, with get already NULL, for refcount death
 *       and for a collected cycle; no callback for a weakref that is itself
 *       garbage or freed before its turn; a callback freeing its own ref;
 *       pym_weakref_count; a weakref counts as a GC allocation;
 *    7. freeze / unfreeze / get_freeze_count and the generation counts;
 *    8. PYM_GC_DEBUG_SAVEALL (garbage list, no clear, no dealloc) and
 *       uncollectable cycles (a type without clear): garbage list, stats,
 *       return value, no finalize, their weakrefs not cleared;
 *    9. statistics and collection callbacks (order, start/stop pairs, the
 *       figures equal the statistics' deltas), callback_remove;
 *   10. million-object chains (GC and non-GC) and a million-object cycle
 *       torn down in a thread with a 256 KiB stack: no recursion;
 *   11. introspection: visit_objects per generation (a snapshot, held
 *       objects, early stop), get_referents, get_referrers, track/untrack;
 *   12. enable/disable, thresholds (0 and negative), bad generations.
 * Each part ends checking that none of its objects is left (no tracked
 * object, empty garbage list, nothing frozen).  Each part runs in a forked
 * child (a crash or a hang is a failed check, and every part starts from a
 * fresh collector); `api_gc N [M...]` runs the parts named in this
 * process and `api_gc --no-fork` all of them in this process.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "pymalloc/gc.h"
#include "sections.h"
#include "testlib.h"

/* ---- the event log -------------------------------------------------------------- */
/* 'F' finalize, 'C' clear, 'D' dealloc (id = the node's id), 'W' weakref
 * callback (id = the callback's id).  Only the first LOG_MAX events are kept;
 * the counters count them all. */
#define LOG_MAX 512
typedef struct event {
    char kind;
    long id;
} event_t;
static event_t event_log[LOG_MAX];
static size_t event_count;
static size_t created, finalized, cleared, deallocated;
static size_t dealloc_with_refs; /* a dealloc that found a slot clear had not emptied */

static void log_event(char kind, long id)
{
    if (event_count < LOG_MAX)
        event_log[event_count] = (event_t){kind, id};
    event_count++;
}

static void reset_log(void)
{
    event_count = 0;
}

/* The logged events whose kind is in `kinds`, as "W3 W2 W1" (a static buffer). */
static const char *log_string(const char *kinds)
{
    static char text[4096];
    size_t used = 0;
    text[0] = '\0';
    for (size_t i = 0; i < event_count && i < LOG_MAX; i++) {
        if (strchr(kinds, event_log[i].kind) == NULL)
            continue;
        int n = snprintf(text + used, sizeof(text) - used, "%s%c%ld", used ? " " : "", event_log[i].kind,
                         event_log[i].id);
        if (n < 0 || (size_t)n >= sizeof(text) - used)
            break;
        used += (size_t)n;
    }
    return text;
}

/* The kinds of the events of node `id` (not weakref callbacks), in order: "FCD". */
static const char *object_history(long id)
{
    static char text[64];
    size_t used = 0;
    for (size_t i = 0; i < event_count && i < LOG_MAX && used + 1 < sizeof(text); i++)
        if (event_log[i].id == id && event_log[i].kind != 'W')
            text[used++] = event_log[i].kind;
    text[used] = '\0';
    return text;
}

/* Index of the first / last logged event of a kind, or -1. */
static long first_event(char kind)
{
    for (size_t i = 0; i < event_count && i < LOG_MAX; i++)
        if (event_log[i].kind == kind)
            return (long)i;
    return -1;
}

static long last_event(char kind)
{
    long last = -1;
    for (size_t i = 0; i < event_count && i < LOG_MAX; i++)
        if (event_log[i].kind == kind)
            last = (long)i;
    return last;
}

/* ---- test types -------------------------------------------------------------------- */
/* A node owns up to SLOTS references (objects or weak references). */
#define SLOTS 4
enum { RESURRECT = 1, COLLECT_IN_FINALIZER = 2 };
typedef struct node {
    long id;
    unsigned behaviour;
    void *slot[SLOTS];
} node_t;

static void *resurrected[16]; /* references taken by resurrecting finalizers */
static size_t resurrected_count;
static long collect_in_finalizer = -99; /* what pym_gc_collect returned inside a finalizer */

static int node_traverse(void *self, pym_visit_fn visit, void *arg)
{
    node_t *node = self;
    for (int i = 0; i < SLOTS; i++) {
        if (node->slot[i] != NULL) {
            int stop = visit(node->slot[i], arg);
            if (stop != 0)
                return stop;
        }
    }
    return 0;
}

/* The clear callback's work, also used by hand on nodes of the type without clear. */
static void node_drop_refs(node_t *node)
{
    for (int i = 0; i < SLOTS; i++) {
        void *target = node->slot[i];
        node->slot[i] = NULL;
        pym_decref(target);
    }
}

static void node_clear(void *self)
{
    cleared++;
    log_event('C', ((node_t *)self)->id);
    node_drop_refs(self);
}

static void node_finalize(void *self)
{
    node_t *node = self;
    finalized++;
    log_event('F', node->id);
    if ((node->behaviour & RESURRECT) && resurrected_count < sizeof(resurrected) / sizeof(resurrected[0])) {
        pym_incref(self);
        resurrected[resurrected_count++] = self;
    }
    if (node->behaviour & COLLECT_IN_FINALIZER)
        collect_in_finalizer = pym_gc_collect(2);
}

static void node_dealloc(void *self)
{
    node_t *node = self;
    deallocated++;
    log_event('D', node->id);
    for (int i = 0; i < SLOTS; i++)
        dealloc_with_refs += node->slot[i] != NULL;
}

/* Without clear its cycles are uncollectable; its dealloc drops what it still owns. */
static void noclear_dealloc(void *self)
{
    node_t *node = self;
    deallocated++;
    log_event('D', node->id);
    node_drop_refs(node);
}

static const pym_type gc_type = {"test.node", sizeof(node_t), PYM_TYPE_GC, node_traverse, node_clear,
                                 node_finalize, node_dealloc};
static const pym_type plain_type = {"test.plain", sizeof(node_t), 0, NULL, node_clear, node_finalize, node_dealloc};
static const pym_type noclear_type = {"test.noclear", sizeof(node_t), PYM_TYPE_GC, node_traverse, NULL,
                                      node_finalize, noclear_dealloc};

static node_t *node_new(const pym_type *type)
{
    node_t *node = pym_new(type);
    REQUIRE(node != NULL, "pym_new(%s): %s", type->name, strerror(errno));
    node->id = (long)++created;
    return node;
}

/* node->slot[i] = target, with a new reference (the old one is dropped). */
static void node_set(node_t *node, int i, void *target)
{
    void *old = node->slot[i];
    pym_incref(target);
    node->slot[i] = target;
    pym_decref(old);
}

/* A ring of n new nodes, ring[i] owning ring[i + 1] (the last owns the first);
 * the caller keeps one reference to each. */
static void make_ring(const pym_type *type, node_t **ring, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ring[i] = node_new(type);
    for (size_t i = 0; i < n; i++)
        node_set(ring[i], 0, ring[(i + 1) % n]);
}

static void drop_all(node_t **nodes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pym_decref(nodes[i]);
        nodes[i] = NULL;
    }
}

/* A chain link (item 10): owns the next link. */
typedef struct link {
    void *next;
} link_t;
static size_t links_freed;

static int link_traverse(void *self, pym_visit_fn visit, void *arg)
{
    link_t *link = self;
    return link->next != NULL ? visit(link->next, arg) : 0;
}

static void link_clear(void *self)
{
    link_t *link = self;
    void *next = link->next;
    link->next = NULL;
    pym_decref(next);
}

static void link_dealloc(void *self)
{
    (void)self;
    links_freed++;
}

static const pym_type chain_gc_type = {"test.chain_gc", sizeof(link_t), PYM_TYPE_GC, link_traverse, link_clear,
                                       NULL, link_dealloc};
static const pym_type chain_plain_type = {"test.chain", sizeof(link_t), 0, NULL, link_clear, NULL, link_dealloc};

/* ---- weak reference callbacks ---------------------------------------------------- */
typedef struct weak_cb {
    long id;
    pym_weakref **own;   /* non-NULL: the callback frees its ref and NULLs *own */
    pym_weakref **other; /* non-NULL: the callback also frees *other (and NULLs it) */
} weak_cb_t;
static size_t weak_cb_saw_referent; /* callbacks for which pym_weakref_get(ref) was not NULL */

static void weak_callback(pym_weakref *ref, void *arg)
{
    weak_cb_t *cb = arg;
    log_event('W', cb->id);
    void *referent = pym_weakref_get(ref);
    if (referent != NULL) {
        weak_cb_saw_referent++;
        pym_decref(referent);
    }
    if (cb->other != NULL && *cb->other != NULL) {
        pym_weakref_free(*cb->other);
        *cb->other = NULL;
    }
    if (cb->own != NULL) {
        CHECK(*cb->own == ref, "callback %ld got ref %p, expected %p", cb->id, (void *)ref, (void *)*cb->own);
        pym_weakref_free(ref);
        *cb->own = NULL;
    }
}

static pym_weakref *weakref_new(void *obj, weak_cb_t *cb)
{
    pym_weakref *ref = pym_weakref_new(obj, cb != NULL ? weak_callback : NULL, cb);
    REQUIRE(ref != NULL, "pym_weakref_new: %s", strerror(errno));
    return ref;
}

/* ---- collection callbacks --------------------------------------------------------- */
typedef struct gc_event {
    int which; /* the callback's arg */
    pym_gc_phase phase;
    int generation;
    long collected, uncollectable;
    long step; /* current_step when it ran */
} gc_event_t;
#define GC_LOG_MAX 64 /* the last 64 are kept */
static gc_event_t gc_log[GC_LOG_MAX];
static size_t gc_log_count;
static size_t gc_starts[PYM_GC_GENERATIONS]; /* callback 1's starts per generation */
static long current_step;                    /* set by the tests: which allocation is running */
static int gc_open_generation = -1;          /* callback 1: generation of a start without its stop */
static size_t gc_pairing_errors;             /* callback 1: stop without start, start inside a collection... */

static void gc_logger(pym_gc_phase phase, const pym_gc_info *info, void *arg)
{
    int which = (int)(intptr_t)arg;
    gc_log[gc_log_count % GC_LOG_MAX] = (gc_event_t){which, phase, info->generation, info->collected, info->uncollectable,
                                            current_step};
    gc_log_count++;
    if (which != 1)
        return;
    if (info->generation < 0 || info->generation >= PYM_GC_GENERATIONS) {
        gc_pairing_errors++;
        return;
    }
    if (phase == PYM_GC_START) {
        gc_starts[info->generation]++;
        gc_pairing_errors += gc_open_generation != -1 || info->collected != 0 || info->uncollectable != 0;
        gc_open_generation = info->generation;
    } else {
        gc_pairing_errors += gc_open_generation != info->generation;
        gc_open_generation = -1;
    }
}

static void reset_gc_log(void)
{
    gc_log_count = 0;
    memset(gc_starts, 0, sizeof(gc_starts));
    gc_open_generation = -1;
    gc_pairing_errors = 0;
}

static bool gc_event_is(size_t i, int which, pym_gc_phase phase, int generation, long collected, long uncollectable)
{
    if (i >= gc_log_count || i + GC_LOG_MAX < gc_log_count)
        return false;
    const gc_event_t *e = &gc_log[i % GC_LOG_MAX];
    return e->which == which && e->phase == phase && e->generation == generation && e->collected == collected &&
           e->uncollectable == uncollectable;
}

static const char *gc_log_string(void)
{
    static char text[4096];
    size_t used = 0;
    text[0] = '\0';
    for (size_t i = gc_log_count > GC_LOG_MAX ? gc_log_count - GC_LOG_MAX : 0; i < gc_log_count; i++) {
        const gc_event_t *e = &gc_log[i % GC_LOG_MAX];
        int n = snprintf(text + used, sizeof(text) - used, "%s[cb%d %s gen%d %ld/%ld @%ld]", used ? " " : "", e->which,
                         e->phase == PYM_GC_START ? "start" : "stop", e->generation, e->collected, e->uncollectable,
                         e->step);
        if (n < 0 || (size_t)n >= sizeof(text) - used)
            break;
        used += (size_t)n;
    }
    return text;
}

/* ---- small helpers ---------------------------------------------------------------- */
#define CHECK_COUNT(c0, c1, c2)                                                                         \
    do {                                                                                                \
        long count_[PYM_GC_GENERATIONS];                                                                \
        pym_gc_get_count(count_);                                                                       \
        CHECK(count_[0] == (c0) && count_[1] == (c1) && count_[2] == (c2),                              \
              "count (%ld, %ld, %ld), expected (%ld, %ld, %ld)", count_[0], count_[1], count_[2], (long)(c0), \
              (long)(c1), (long)(c2));                                                                  \
    } while (0)

#define CHECK_COLLECT(generation, expected)                                                             \
    do {                                                                                                \
        long got_ = pym_gc_collect(generation);                                                         \
        CHECK(got_ == (long)(expected), "pym_gc_collect(%d) = %ld, expected %ld", (generation), got_,   \
              (long)(expected));                                                                        \
    } while (0)

typedef struct seen {
    void *obj[64];
    size_t count;
    size_t stop_at;  /* non-zero: return stop_value on the stop_at-th object */
    int stop_value;
} seen_t;

static int seen_visit(void *obj, void *arg)
{
    seen_t *seen = arg;
    if (seen->count < sizeof(seen->obj) / sizeof(seen->obj[0]))
        seen->obj[seen->count] = obj;
    seen->count++;
    if (seen->stop_at != 0 && seen->count == seen->stop_at)
        return seen->stop_value;
    return 0;
}

static bool seen_has(const seen_t *seen, const void *obj)
{
    for (size_t i = 0; i < seen->count && i < sizeof(seen->obj) / sizeof(seen->obj[0]); i++)
        if (seen->obj[i] == obj)
            return true;
    return false;
}

static int count_visit(void *obj, void *arg)
{
    (void)obj;
    ++*(size_t *)arg;
    return 0;
}

/* Tracked objects in generation g (-1: all three). */
static size_t gen_size(int generation)
{
    size_t count = 0;
    int rc = pym_gc_visit_objects(generation, count_visit, &count);
    CHECK(rc == 0, "pym_gc_visit_objects(%d) = %d", generation, rc);
    return count;
}

static int find_visit(void *obj, void *target)
{
    return obj == target;
}

static bool in_generation(int generation, void *obj)
{
    return pym_gc_visit_objects(generation, find_visit, obj) == 1;
}

static void get_stats(pym_gc_stats_t out[PYM_GC_GENERATIONS])
{
    memset(out, 0, sizeof(pym_gc_stats_t) * PYM_GC_GENERATIONS);
    pym_gc_get_stats(out);
}

/* Frees what an uncollectable cycle test left on the garbage list: hold each
 * entry, empty the list, break the references by hand, drop them. */
static void free_garbage_list(void)
{
    size_t n = pym_gc_garbage_count();
    node_t **held = calloc(n + 1, sizeof(*held));
    REQUIRE(held != NULL, "calloc");
    for (size_t i = 0; i < n; i++) {
        held[i] = pym_gc_garbage_item(i);
        pym_incref(held[i]);
    }
    CHECK(pym_gc_garbage_clear() == n);
    for (size_t i = 0; i < n; i++)
        node_drop_refs(held[i]);
    drop_all(held, n);
    free(held);
}

/* ---- 1. cycles ------------------------------------------------------------------- */
static void test_cycles(void)
{
    static const size_t sizes[] = {1, 2, 3, 10000};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = sizes[s];
        CHECK_COLLECT(2, 0);
        reset_log();
        size_t deallocated_before = deallocated, finalized_before = finalized;
        node_t **ring = malloc(n * sizeof(*ring));
        REQUIRE(ring != NULL, "malloc");
        make_ring(&gc_type, ring, n);
        CHECK(pym_refcount(ring[0]) == 2, "cycle of %zu: refcount %zu (ours and the previous node's)", n,
              pym_refcount(ring[0]));
        /* Reachable from our references: nothing to find. */
        CHECK_COLLECT(2, 0);
        CHECK(deallocated == deallocated_before && finalized == finalized_before, "cycle of %zu: %zu freed early", n,
              deallocated - deallocated_before);
        node_t *first = ring[0];
        drop_all(ring, n);
        /* Refcounting alone never frees a cycle. */
        CHECK(deallocated == deallocated_before, "cycle of %zu: %zu freed by refcounting", n,
              deallocated - deallocated_before);
        CHECK(pym_refcount(first) == 1, "cycle of %zu: refcount %zu after our references dropped", n,
              pym_refcount(first));
        CHECK(pym_gc_is_finalized(first) == 0);
        CHECK_COLLECT(2, n);
        CHECK(deallocated - deallocated_before == n, "cycle of %zu: %zu deallocated", n,
              deallocated - deallocated_before);
        CHECK(finalized - finalized_before == n, "cycle of %zu: %zu finalized", n, finalized - finalized_before);
        CHECK(dealloc_with_refs == 0, "cycle of %zu: a dealloc found references clear had not dropped", n);
        if (n <= 3) { /* every node finalized, cleared, deallocated once, all finalizers before any dealloc */
            for (long id = (long)created - (long)n + 1; id <= (long)created; id++) {
                const char *history = object_history(id);
                CHECK(strcmp(history, "FCD") == 0 || strcmp(history, "FCCD") == 0,
                      "cycle of %zu: node %ld: events %s, expected FCD", n, id, history);
            }
            CHECK(last_event('F') < first_event('D'), "cycle of %zu: a dealloc before the last finalizer: %s", n,
                  log_string("FCD"));
        }
        CHECK_COLLECT(2, 0);
        free(ring);
    }
}

/* ---- 2. reachable from outside ------------------------------------------------- */
/* n[0] <-> n[1], n[1] -> n[2] -> n[3] <-> n[4], each node held once by n[]. */
static void build_two_cycles(node_t *n[5])
{
    for (int i = 0; i < 5; i++)
        n[i] = node_new(&gc_type);
    node_set(n[0], 0, n[1]);
    node_set(n[1], 0, n[0]);
    node_set(n[1], 1, n[2]);
    node_set(n[2], 0, n[3]);
    node_set(n[3], 0, n[4]);
    node_set(n[4], 0, n[3]);
}

static void test_reachable(void)
{
    /* a <-> b, b -> c -> d <-> e; we keep a. */
    CHECK_COLLECT(2, 0);
    size_t deallocated_before = deallocated, finalized_before = finalized;
    node_t *n[5];
    build_two_cycles(n);
    node_t *a = n[0], *b = n[1], *c = n[2], *d = n[3], *e = n[4];
    drop_all(n + 1, 4);
    CHECK_COLLECT(0, 0);
    CHECK_COLLECT(2, 0);
    CHECK(deallocated == deallocated_before && finalized == finalized_before,
          "objects reachable from a held object were finalized (%zu) or freed (%zu)", finalized - finalized_before,
          deallocated - deallocated_before);
    CHECK(pym_refcount(a) == 2 && pym_refcount(b) == 1 && pym_refcount(c) == 1 && pym_refcount(d) == 2 &&
              pym_refcount(e) == 1,
          "refcounts %zu %zu %zu %zu %zu, expected 2 1 1 2 1", pym_refcount(a), pym_refcount(b), pym_refcount(c),
          pym_refcount(d), pym_refcount(e));
    CHECK(a->slot[0] == b && b->slot[0] == a && b->slot[1] == c && c->slot[0] == d && d->slot[0] == e &&
          e->slot[0] == d, "a survivor was cleared");
    CHECK(in_generation(2, e), "survivors of a full collection stay in generation 2");
    pym_decref(a);
    CHECK(deallocated == deallocated_before);
    CHECK_COLLECT(2, 5);
    CHECK(deallocated - deallocated_before == 5 && finalized - finalized_before == 5, "%zu freed, %zu finalized",
          deallocated - deallocated_before, finalized - finalized_before);

    /* The same graph, holding c: a and b are garbage, c, d, e live on. */
    reset_log();
    deallocated_before = deallocated;
    build_two_cycles(n);
    a = n[0], b = n[1], c = n[2], d = n[3], e = n[4];
    long a_id = a->id, b_id = b->id;
    pym_decref(a);
    pym_decref(b);
    pym_decref(d);
    pym_decref(e);
    CHECK_COLLECT(2, 2);
    CHECK(deallocated - deallocated_before == 2, "%zu freed, expected a and b", deallocated - deallocated_before);
    CHECK(strcmp(object_history(a_id), "FCD") == 0 || strcmp(object_history(a_id), "FCCD") == 0, "a: %s",
          object_history(a_id));
    CHECK(strcmp(object_history(b_id), "FCD") == 0 || strcmp(object_history(b_id), "FCCD") == 0, "b: %s",
          object_history(b_id));
    CHECK(pym_refcount(c) == 1, "c refcount %zu (b's reference dropped by its clear)", pym_refcount(c));
    CHECK(c->slot[0] == d && d->slot[0] == e && e->slot[0] == d && pym_refcount(d) == 2);
    CHECK(pym_gc_is_finalized(c) == 0 && pym_gc_is_finalized(d) == 0);
    pym_decref(c); /* c dies by refcount; the d <-> e cycle is left */
    CHECK(deallocated - deallocated_before == 3, "%zu freed", deallocated - deallocated_before);
    CHECK_COLLECT(2, 2);
    CHECK(deallocated - deallocated_before == 5, "%zu freed", deallocated - deallocated_before);
}

/* ---- 3. generations -------------------------------------------------------------- */
static void test_generations(void)
{
    CHECK_COLLECT(2, 0);
    size_t deallocated_before = deallocated;

    /* An old object in generation 1 holds a young cycle x <-> y. */
    node_t *old = node_new(&gc_type);
    CHECK(in_generation(0, old), "a new object is in generation 0");
    CHECK_COLLECT(0, 0);
    CHECK(in_generation(1, old), "a survivor of a generation 0 collection moves to 1");
    node_t *x = node_new(&gc_type), *y = node_new(&gc_type);
    node_set(x, 0, y);
    node_set(y, 0, x);
    node_set(old, 0, x);
    pym_decref(x);
    pym_decref(y);
    CHECK(in_generation(0, x) && in_generation(0, y));
    CHECK_COLLECT(0, 0); /* old's reference counts as external to generation 0 */
    CHECK(deallocated == deallocated_before, "the young cycle held by an old object was freed");
    CHECK(in_generation(1, x) && in_generation(1, y), "the young cycle moves to generation 1");
    node_set(old, 0, NULL); /* x <-> y is garbage now, in generation 1 */
    CHECK_COLLECT(0, 0);    /* ...which a generation 0 collection does not look at */
    CHECK(deallocated == deallocated_before);
    CHECK_COLLECT(1, 2);
    CHECK(deallocated - deallocated_before == 2, "%zu freed", deallocated - deallocated_before);
    pym_decref(old);
    CHECK(deallocated - deallocated_before == 3);

    /* An old object in generation 2. */
    old = node_new(&gc_type);
    CHECK_COLLECT(1, 0);
    CHECK(in_generation(2, old), "a survivor of a generation 1 collection moves to 2");
    x = node_new(&gc_type);
    y = node_new(&gc_type);
    node_set(x, 0, y);
    node_set(y, 0, x);
    node_set(old, 0, x);
    pym_decref(x);
    pym_decref(y);
    CHECK_COLLECT(0, 0);
    CHECK(in_generation(1, y));
    CHECK_COLLECT(1, 0);
    CHECK(in_generation(2, x) && in_generation(2, y));
    node_set(old, 0, NULL);
    CHECK_COLLECT(0, 0);
    CHECK_COLLECT(1, 0); /* the garbage is in generation 2 */
    CHECK(deallocated - deallocated_before == 3);
    CHECK_COLLECT(2, 2);
    CHECK(deallocated - deallocated_before == 5);
    pym_decref(old);
    CHECK(deallocated - deallocated_before == 6);

    /* A dead old cycle o1 <-> o2 (generation 2) holding a young y keeps y
     * alive through generation 0 and 1 collections: references from older
     * generations count as external.  A full collection finds all three. */
    node_t *o1 = node_new(&gc_type), *o2 = node_new(&gc_type);
    node_set(o1, 0, o2);
    node_set(o2, 0, o1);
    CHECK_COLLECT(1, 0);
    CHECK(in_generation(2, o1) && in_generation(2, o2));
    y = node_new(&gc_type);
    node_set(o1, 1, y);
    pym_decref(y);
    pym_decref(o1);
    pym_decref(o2);
    CHECK_COLLECT(0, 0);
    CHECK(in_generation(1, y));
    CHECK_COLLECT(1, 0);
    CHECK(in_generation(2, y));
    CHECK(deallocated - deallocated_before == 6);
    CHECK_COLLECT(2, 3);
    CHECK(deallocated - deallocated_before == 9);
}

/* ---- 4. thresholds ------------------------------------------------------------------ */
/* The rules of gc.h / semantics.md, for objects that stay alive (nothing is
 * ever unreachable here): what pym_gc_get_count must read after each step. */
typedef struct gc_model {
    long threshold[PYM_GC_GENERATIONS];
    long count[PYM_GC_GENERATIONS];
    long size[PYM_GC_GENERATIONS]; /* tracked objects per generation */
    long pending, total;           /* long_lived_pending, long_lived_total */
    long collections[PYM_GC_GENERATIONS];
    bool enabled;
} gc_model_t;

static void model_collect(gc_model_t *m, int generation)
{
    if (generation + 1 < PYM_GC_GENERATIONS)
        m->count[generation + 1]++;
    long survivors = 0;
    for (int g = 0; g <= generation; g++) {
        m->count[g] = 0;
        survivors += m->size[g];
        m->size[g] = 0;
    }
    m->size[generation < 2 ? generation + 1 : 2] += survivors;
    if (generation == 1)
        m->pending += survivors;
    if (generation == 2) {
        m->pending = 0;
        m->total = survivors;
    }
    m->collections[generation]++;
}

/* pym_new of a GC object: count[0]++, maybe a collection, then the object joins generation 0.
 * Returns the generation collected or -1. */
static int model_new(gc_model_t *m)
{
    int collected = -1;
    m->count[0]++;
    if (m->enabled && m->threshold[0] > 0 && m->count[0] > m->threshold[0]) {
        for (int g = PYM_GC_GENERATIONS - 1; g >= 0; g--) {
            if (m->count[g] > m->threshold[g]) {
                if (g == 2 && m->pending < m->total / 4)
                    continue;
                model_collect(m, g);
                collected = g;
                break;
            }
        }
    }
    m->size[0]++;
    return collected;
}

static void model_dealloc(gc_model_t *m, int generation)
{
    if (m->count[0] > 0)
        m->count[0]--;
    m->size[generation]--;
}

/* Compares the collector with the model; the first mismatch is described in `why`. */
static size_t model_mismatches;
static char model_why[256];

static void model_compare(const gc_model_t *m, const pym_gc_stats_t base[PYM_GC_GENERATIONS], long step)
{
    long count[PYM_GC_GENERATIONS];
    pym_gc_stats_t stats[PYM_GC_GENERATIONS];
    pym_gc_get_count(count);
    get_stats(stats);
    bool same = true;
    for (int g = 0; g < PYM_GC_GENERATIONS; g++)
        same = same && count[g] == m->count[g] && (long)(stats[g].collections - base[g].collections) == m->collections[g] &&
               (long)gc_starts[g] == m->collections[g];
    if (!same && model_mismatches++ == 0)
        snprintf(model_why, sizeof(model_why),
                 "step %ld: count (%ld, %ld, %ld) expected (%ld, %ld, %ld); collections (%ld, %ld, %ld) callbacks "
                 "(%zu, %zu, %zu) expected (%ld, %ld, %ld)",
                 step, count[0], count[1], count[2], m->count[0], m->count[1], m->count[2],
                 (long)(stats[0].collections - base[0].collections), (long)(stats[1].collections - base[1].collections),
                 (long)(stats[2].collections - base[2].collections), gc_starts[0], gc_starts[1], gc_starts[2],
                 m->collections[0], m->collections[1], m->collections[2]);
}

static void test_thresholds(void)
{
    long threshold[PYM_GC_GENERATIONS] = {0, 0, 0};
    pym_gc_get_threshold(threshold);
    CHECK(threshold[0] == 700 && threshold[1] == 10 && threshold[2] == 10, "default thresholds %ld %ld %ld",
          threshold[0], threshold[1], threshold[2]);
    CHECK(pym_gc_isenabled() == 1);
    CHECK_COLLECT(2, 0);
    CHECK_COUNT(0, 0, 0); /* a full collection zeroes every count */
    REQUIRE(gen_size(-1) == 0, "tracked objects left before the threshold test");

    /* ---- 4a: defaults 700, 10, 10 from a clean state ---- */
    gc_model_t m = {.threshold = {700, 10, 10}, .enabled = true};
    pym_gc_stats_t base[PYM_GC_GENERATIONS];
    get_stats(base);
    reset_gc_log();
    REQUIRE(pym_gc_callback_add(gc_logger, (void *)(intptr_t)1) == 0, "pym_gc_callback_add");
    size_t capacity = 8500, n = 0;
    node_t **objs = malloc(capacity * sizeof(*objs));
    REQUIRE(objs != NULL, "malloc");
    model_mismatches = 0;
    current_step = 0;
#define NEW_KEPT(model)                                                                                 \
    do {                                                                                                \
        current_step++;                                                                                 \
        objs[n++] = node_new(&gc_type);                                                                 \
        model_new(model);                                                                               \
        model_compare(model, base, current_step);                                                       \
    } while (0)

    /* Calls 1..700: count[0] = 1..700, not above 700, no collection. */
    for (int i = 0; i < 700; i++)
        NEW_KEPT(&m);
    CHECK_COUNT(700, 0, 0);
    /* A deallocation takes one off count[0]... */
    pym_decref(objs[--n]);
    model_dealloc(&m, 0);
    CHECK_COUNT(699, 0, 0);
    /* ...call 701 brings it back to 700... */
    NEW_KEPT(&m);
    CHECK_COUNT(700, 0, 0);
    CHECK(gc_log_count == 0, "a collection ran before count[0] exceeded 700: %s", gc_log_string());
    /* ...and call 702 makes it 701 > 700: count[2] = 0 and count[1] = 0 are
     * not above 10, so generation 0 is collected before the new object is
     * linked: count[1] = 1, count[0] = 0; the 700 survivors move to
     * generation 1, generation 0 holds only the new object. */
    NEW_KEPT(&m);
    CHECK_COUNT(0, 1, 0);
    CHECK(gen_size(0) == 1 && gen_size(1) == 700 && gen_size(2) == 0, "generations hold %zu %zu %zu, expected 1 700 0",
          gen_size(0), gen_size(1), gen_size(2));
    pym_gc_stats_t stats[PYM_GC_GENERATIONS];
    get_stats(stats);
    CHECK(stats[0].collections - base[0].collections == 1 && stats[1].collections == base[1].collections,
          "collections +%zu +%zu, expected +1 +0", stats[0].collections - base[0].collections,
          stats[1].collections - base[1].collections);
    CHECK(gc_log_count == 2 && gc_event_is(0, 1, PYM_GC_START, 0, 0, 0) && gc_event_is(1, 1, PYM_GC_STOP, 0, 0, 0) &&
              gc_log[0].step == 702,
          "callbacks: %s, expected start and stop of generation 0 at call 702", gc_log_string());
    /* Each further 701 calls take count[0] from 0 to 701 > 700: 10 more
     * generation 0 collections (calls 702 + 701k, k = 1..10); count[1] is
     * checked first each time, and is 1..10, never above 10; it ends at 11. */
    for (int round = 1; round <= 10; round++) {
        for (int i = 0; i < 701; i++)
            NEW_KEPT(&m);
        CHECK_COUNT(0, 1 + round, 0);
    }
    get_stats(stats);
    CHECK(stats[0].collections - base[0].collections == 11 && stats[1].collections == base[1].collections,
          "collections +%zu +%zu, expected +11 +0", stats[0].collections - base[0].collections,
          stats[1].collections - base[1].collections);
    /* 700 calls: count (700, 11, 0); call 8413 = 702 + 701 * 11 makes
     * count[0] 701: count[2] = 0 is not above 10, count[1] = 11 is: generation
     * 1 is collected: count[2] = 1, count[0] = count[1] = 0; everything but
     * the new object moves to generation 2. */
    for (int i = 0; i < 700; i++)
        NEW_KEPT(&m);
    CHECK_COUNT(700, 11, 0);
    NEW_KEPT(&m);
    CHECK(current_step == 8413);
    CHECK_COUNT(0, 0, 1);
    CHECK(gen_size(0) == 1 && gen_size(1) == 0 && gen_size(2) == n - 1, "generations hold %zu %zu %zu, expected 1 0 %zu",
          gen_size(0), gen_size(1), gen_size(2), n - 1);
    get_stats(stats);
    CHECK(stats[0].collections - base[0].collections == 11 && stats[1].collections - base[1].collections == 1 &&
              stats[2].collections == base[2].collections,
          "collections +%zu +%zu +%zu, expected +11 +1 +0", stats[0].collections - base[0].collections,
          stats[1].collections - base[1].collections, stats[2].collections - base[2].collections);
    /* The callbacks: 11 generation 0 pairs at calls 702 + 701k, then generation 1 at 8413. */
    bool callbacks_ok = gc_log_count == 24;
    for (size_t k = 0; callbacks_ok && k < 12; k++) {
        int generation = k < 11 ? 0 : 1;
        callbacks_ok = gc_event_is(2 * k, 1, PYM_GC_START, generation, 0, 0) &&
                       gc_event_is(2 * k + 1, 1, PYM_GC_STOP, generation, 0, 0) &&
                       gc_log[2 * k].step == 702 + 701 * (long)k;
    }
    CHECK(callbacks_ok, "callbacks: %s", gc_log_string());
    CHECK(gc_pairing_errors == 0);
    CHECK(model_mismatches == 0, "%zu steps differ from the rules; first: %s", model_mismatches, model_why);
    CHECK(m.collections[0] == 11 && m.collections[1] == 1 && m.collections[2] == 0, "the model itself is off");
    CHECK(created - deallocated == n, "node bookkeeping");
    drop_all(objs, n);
    n = 0;
    free(objs);

    /* ---- 4b: full collections wait for long_lived_pending >= long_lived_total / 4 ---- */
    enum { OLD = 100000, CHURN = 25030 };
    capacity = OLD + CHURN;
    objs = malloc(capacity * sizeof(*objs));
    REQUIRE(objs != NULL, "malloc");
    CHECK_COLLECT(2, 0); /* count (0, 0, 0) again (4a left count[2] = 1) */
    pym_gc_disable();
    for (int i = 0; i < OLD; i++)
        objs[n++] = node_new(&gc_type);
    /* Disabled: count[0] counts them all, nothing was collected. */
    CHECK_COUNT(OLD, 0, 0);
    /* A full collection: long_lived_total = 100,000 survivors, pending 0. */
    CHECK_COLLECT(2, 0);
    CHECK_COUNT(0, 0, 0);
    pym_gc_enable();
    pym_gc_set_threshold(10, 1, 1);
    pym_gc_get_threshold(threshold);
    CHECK(threshold[0] == 10 && threshold[1] == 1 && threshold[2] == 1);
    gc_model_t h = {.threshold = {10, 1, 1}, .size = {0, 0, OLD}, .total = OLD, .enabled = true};
    get_stats(base);
    reset_gc_log();
    model_mismatches = 0;
    current_step = 0;
    /* Calls 11m (m = 1, 2, ...) make count[0] 11 > 10.  count[1] cycles
     * 0, 1, 2: two generation 0 collections, then (2 > 1) a generation 1
     * collection at calls 33k.  Generation 0 and 1 then hold the objects of
     * calls 33(k-1) .. 33k-1 (32 for k = 1, 33 after), all alive, so
     * long_lived_pending = 33k - 1 after the k-th, and count[2] = k.  From
     * k = 2 on count[2] > 1 at every trigger, but a full collection needs
     * pending >= 100,000 / 4 = 25,000: k = 757 gives 24,980 (skipped), k = 758
     * (call 25,014) gives 25,013.  The next trigger, call 25,025, collects
     * generation 2: count (0, 0, 0), pending 0, total = 100,000 + 25,024. */
    long full_at = -1;
    for (long call = 1; call <= 25024; call++) {
        NEW_KEPT(&h);
        if (h.collections[2] != 0 && full_at < 0)
            full_at = call;
    }
    CHECK(full_at == -1, "the model collected generation 2 at call %ld", full_at);
    CHECK(h.pending == 25013 && h.count[2] == 758, "model: pending %ld, count[2] %ld", h.pending, h.count[2]);
    CHECK_COUNT(10, 0, 758);
    get_stats(stats);
    CHECK(stats[2].collections == base[2].collections, "%zu full collections while pending < total / 4",
          stats[2].collections - base[2].collections);
    CHECK(stats[0].collections - base[0].collections == 1516 && stats[1].collections - base[1].collections == 758,
          "collections +%zu +%zu, expected +1516 +758 (2274 triggers, every third one of generation 1)",
          stats[0].collections - base[0].collections, stats[1].collections - base[1].collections);
    NEW_KEPT(&h); /* call 25,025 */
    CHECK(h.collections[2] == 1, "model");
    CHECK_COUNT(0, 0, 0);
    get_stats(stats);
    CHECK(stats[2].collections - base[2].collections == 1, "%zu full collections at call 25,025, expected 1",
          stats[2].collections - base[2].collections);
    CHECK(gen_size(0) == 1 && gen_size(1) == 0 && gen_size(2) == OLD + 25024, "generations hold %zu %zu %zu",
          gen_size(0), gen_size(1), gen_size(2));
    CHECK(gc_log_count >= 2 && gc_event_is(gc_log_count - 2, 1, PYM_GC_START, 2, 0, 0) &&
              gc_event_is(gc_log_count - 1, 1, PYM_GC_STOP, 2, 0, 0),
          "the last callbacks are not generation 2's");
    /* Now total = 125,024: the next full collection waits for pending >= 31,256. */
    for (long call = 25026; call <= CHURN; call++)
        NEW_KEPT(&h);
    CHECK(h.collections[2] == 1);
    CHECK(gc_pairing_errors == 0);
    CHECK(model_mismatches == 0, "%zu steps differ from the rules; first: %s", model_mismatches, model_why);
#undef NEW_KEPT
    CHECK(pym_gc_callback_remove(gc_logger, (void *)(intptr_t)1) == 0);
    pym_gc_set_threshold(700, 10, 10);
    pym_gc_get_threshold(threshold);
    CHECK(threshold[0] == 700 && threshold[1] == 10 && threshold[2] == 10);
    drop_all(objs, n);
    free(objs);
    CHECK_COLLECT(2, 0);
}

/* ---- 5. finalizers and resurrection -------------------------------------------- */
static void test_finalizers(void)
{
    CHECK_COLLECT(2, 0);
    /* Refcount zero: finalize, clear, dealloc, once each (GC and non-GC). */
    const pym_type *types[] = {&gc_type, &plain_type};
    for (int t = 0; t < 2; t++) {
        reset_log();
        node_t *obj = node_new(types[t]), *child = node_new(types[t]);
        node_set(obj, 0, child);
        pym_decref(child);
        long obj_id = obj->id, child_id = child->id;
        CHECK(pym_gc_is_finalized(obj) == 0);
        pym_decref(obj);
        CHECK(strcmp(object_history(obj_id), "FCD") == 0, "%s: object events %s, expected FCD", types[t]->name,
              object_history(obj_id));
        CHECK(strcmp(object_history(child_id), "FCD") == 0, "%s: child events %s, expected FCD", types[t]->name,
              object_history(child_id));
    }

    /* Resurrection through refcount zero: the finalizer takes a reference;
     * the object lives on, not cleared; weak references were cleared before
     * the finalizer ran.  Dropped again, it dies without a second finalize
     * (its behaviour still says RESURRECT: the finalizer would resurrect it). */
    reset_log();
    resurrected_count = 0;
    node_t *obj = node_new(&gc_type), *child = node_new(&gc_type);
    long obj_id = obj->id;
    obj->behaviour = RESURRECT;
    node_set(obj, 0, child);
    pym_decref(child);
    pym_weakref *weak = weakref_new(obj, NULL);
    size_t deallocated_before = deallocated;
    pym_decref(obj);
    CHECK(strcmp(object_history(obj->id), "F") == 0, "events %s, expected F only", object_history(obj->id));
    CHECK(resurrected_count == 1 && resurrected[0] == obj);
    CHECK(pym_refcount(obj) == 1, "refcount %zu after resurrection", pym_refcount(obj));
    CHECK(pym_gc_is_finalized(obj) == 1);
    CHECK(pym_gc_is_tracked(obj) == 1, "a resurrected GC object is tracked again");
    CHECK(obj->slot[0] == child && pym_refcount(child) == 1, "the resurrected object was cleared");
    CHECK(deallocated == deallocated_before);
    void *through_weak = pym_weakref_get(weak);
    CHECK(through_weak == NULL, "the weak reference survived the first death");
    pym_decref(through_weak);
    CHECK(pym_weakref_count(obj) == 0);
    pym_weakref_free(weak);
    resurrected_count = 0;
    pym_decref(obj);
    CHECK(resurrected_count == 0, "the finalizer ran a second time");
    CHECK(deallocated - deallocated_before == 2, "%zu freed, expected the object and its child",
          deallocated - deallocated_before);
    CHECK(strcmp(object_history(obj_id), "FCD") == 0, "events %s, expected FCD (one finalize in a life)",
          object_history(obj_id));

    /* Resurrection in a collection: a <-> b, a's finalizer resurrects a.
     * Both are finalized (both unreachable), a and what it reaches (b)
     * survive, move to generation 1, and are not counted. */
    CHECK_COLLECT(2, 0);
    reset_log();
    resurrected_count = 0;
    deallocated_before = deallocated;
    size_t finalized_before = finalized, cleared_before = cleared;
    pym_gc_stats_t base[PYM_GC_GENERATIONS], stats[PYM_GC_GENERATIONS];
    get_stats(base);
    node_t *a = node_new(&gc_type), *b = node_new(&gc_type);
    a->behaviour = RESURRECT;
    node_set(a, 0, b);
    node_set(b, 0, a);
    pym_decref(a);
    pym_decref(b);
    CHECK_COLLECT(0, 0);
    get_stats(stats);
    CHECK(stats[0].collected == base[0].collected && stats[0].uncollectable == base[0].uncollectable,
          "resurrected objects counted as collected (+%zu)", stats[0].collected - base[0].collected);
    CHECK(finalized - finalized_before == 2, "%zu finalized, expected 2", finalized - finalized_before);
    CHECK(resurrected_count == 1 && resurrected[0] == a);
    CHECK(pym_gc_is_finalized(a) == 1 && pym_gc_is_finalized(b) == 1);
    CHECK(deallocated == deallocated_before && cleared == cleared_before, "resurrected cycle cleared (%zu) or freed (%zu)",
          cleared - cleared_before, deallocated - deallocated_before);
    CHECK(pym_refcount(a) == 2 && pym_refcount(b) == 1, "refcounts %zu %zu", pym_refcount(a), pym_refcount(b));
    CHECK(a->slot[0] == b && b->slot[0] == a);
    CHECK(in_generation(1, a) && in_generation(1, b), "resurrected objects move to the next generation");
    /* Drop the finalizer's reference: garbage again, already finalized, freed without finalize. */
    resurrected_count = 0;
    pym_decref(a);
    CHECK_COLLECT(2, 2);
    CHECK(resurrected_count == 0 && finalized - finalized_before == 2, "a finalizer ran twice (%zu)",
          finalized - finalized_before);
    CHECK(deallocated - deallocated_before == 2);

    /* A finalizer calling pym_gc_collect during a collection gets 0. */
    a = node_new(&gc_type);
    b = node_new(&gc_type);
    a->behaviour = COLLECT_IN_FINALIZER;
    node_set(a, 0, b);
    node_set(b, 0, a);
    pym_decref(a);
    pym_decref(b);
    collect_in_finalizer = -99;
    CHECK_COLLECT(2, 2);
    CHECK(collect_in_finalizer == 0, "pym_gc_collect inside a collection returned %ld", collect_in_finalizer);
}

/* ---- 6. weak references --------------------------------------------------------- */
static void test_weakrefs(void)
{
    CHECK_COLLECT(2, 0);
    CHECK_COUNT(0, 0, 0);
    errno = 0;
    CHECK(pym_weakref_new(NULL, NULL, NULL) == NULL && errno == EINVAL);
    pym_weakref_free(NULL);

    /* get: a new strong reference while alive, NULL after. */
    const pym_type *types[] = {&gc_type, &plain_type};
    for (int t = 0; t < 2; t++) {
        node_t *obj = node_new(types[t]);
        long count_before[PYM_GC_GENERATIONS];
        pym_gc_get_count(count_before);
        CHECK(pym_weakref_count(obj) == 0);
        pym_weakref *weak = weakref_new(obj, NULL);
        long count_after[PYM_GC_GENERATIONS];
        pym_gc_get_count(count_after);
        CHECK(count_after[0] == count_before[0] + 1, "a weak reference is a GC allocation: count[0] %ld -> %ld",
              count_before[0], count_after[0]);
        CHECK(pym_gc_is_tracked(weak) == 1);
        CHECK(pym_refcount(obj) == 1, "%s: a weak reference owns no reference (refcount %zu)", types[t]->name,
              pym_refcount(obj));
        CHECK(pym_weakref_count(obj) == 1);
        void *strong = pym_weakref_get(weak);
        CHECK(strong == obj && pym_refcount(obj) == 2, "%s: get %p (%p), refcount %zu", types[t]->name, strong,
              (void *)obj, pym_refcount(obj));
        pym_decref(strong);
        CHECK(pym_refcount(obj) == 1);
        pym_decref(obj);
        CHECK(pym_weakref_get(weak) == NULL, "%s: a weak reference to a dead object", types[t]->name);
        pym_weakref_free(weak);
    }

    /* pym_weakref_count as references come and go. */
    node_t *obj = node_new(&gc_type);
    pym_weakref *w[3];
    for (int i = 0; i < 3; i++)
        w[i] = weakref_new(obj, NULL);
    CHECK(pym_weakref_count(obj) == 3);
    pym_weakref_free(w[1]);
    CHECK(pym_weakref_count(obj) == 2);
    pym_weakref_free(w[0]);
    pym_weakref_free(w[2]);
    CHECK(pym_weakref_count(obj) == 0);
    pym_decref(obj);

    /* Callbacks at refcount zero: newest first, the referent already gone
     * from the ref, before the finalizer. */
    weak_cb_t cb[4] = {{1, NULL, NULL}, {2, NULL, NULL}, {3, NULL, NULL}, {4, NULL, NULL}};
    reset_log();
    weak_cb_saw_referent = 0;
    obj = node_new(&gc_type);
    long obj_id = obj->id;
    for (int i = 0; i < 3; i++)
        w[i] = weakref_new(obj, &cb[i]);
    pym_decref(obj);
    char expected[128];
    snprintf(expected, sizeof(expected), "W3 W2 W1 F%ld C%ld D%ld", obj_id, obj_id, obj_id);
    CHECK(strcmp(log_string("WFCD"), expected) == 0, "events %s, expected %s", log_string("WFCD"), expected);
    CHECK(weak_cb_saw_referent == 0, "a callback's pym_weakref_get returned the dying object");
    for (int i = 0; i < 3; i++)
        pym_weakref_free(w[i]);

    /* Callbacks for a collected cycle a <-> b: three refs to a, one to b,
     * all held from outside; callbacks before any finalizer. */
    CHECK_COLLECT(2, 0);
    reset_log();
    node_t *a = node_new(&gc_type), *b = node_new(&gc_type);
    node_set(a, 0, b);
    node_set(b, 0, a);
    for (int i = 0; i < 3; i++)
        w[i] = weakref_new(a, &cb[i]);
    pym_weakref *wb = weakref_new(b, &cb[3]);
    pym_decref(a);
    pym_decref(b);
    CHECK_COLLECT(2, 2); /* the weak references are reachable (ours): not garbage */
    const char *callbacks = log_string("W");
    CHECK(strcmp(callbacks, "W3 W2 W1 W4") == 0 || strcmp(callbacks, "W4 W3 W2 W1") == 0,
          "callbacks %s, expected 3 2 1 (a's, newest first) and 4 (b's)", callbacks);
    CHECK(weak_cb_saw_referent == 0);
    CHECK(last_event('W') < first_event('F'), "a finalizer ran before the weakref callbacks: %s", log_string("WFCD"));
    for (int i = 0; i < 3; i++) {
        CHECK(pym_weakref_get(w[i]) == NULL);
        pym_weakref_free(w[i]);
    }
    pym_weakref_free(wb);

    /* A weak reference that is garbage itself (owned by cycle member a,
     * visited by its traverse, freed by its clear) gets no callback; ours
     * does.  The collection finds a, b and a's weak reference. */
    CHECK_COLLECT(2, 0);
    reset_log();
    weak_cb_t inner = {10, NULL, NULL}, outer = {11, NULL, NULL};
    a = node_new(&gc_type);
    b = node_new(&gc_type);
    node_set(a, 0, b);
    node_set(b, 0, a);
    a->slot[1] = weakref_new(b, &inner); /* a owns it */
    pym_weakref *wo = weakref_new(b, &outer);
    CHECK(pym_weakref_count(b) == 2);
    pym_decref(a);
    pym_decref(b);
    CHECK(gen_size(-1) == 4);
    CHECK_COLLECT(2, 3);
    CHECK(strcmp(log_string("W"), "W11") == 0, "callbacks %s, expected only 11 (the garbage weakref's must not run)",
          log_string("W"));
    CHECK(gen_size(-1) == 1, "%zu tracked objects left, expected only our weak reference", gen_size(-1));
    CHECK(pym_weakref_get(wo) == NULL);
    pym_weakref_free(wo);

    /* Callbacks freeing refs: 3's frees itself and 2 (so 2's never runs),
     * 1's frees itself.  At refcount zero, then for a collected cycle. */
    for (int through_collection = 0; through_collection < 2; through_collection++) {
        reset_log();
        weak_cb_t freeing[3] = {{1, &w[0], NULL}, {2, &w[1], NULL}, {3, &w[2], &w[1]}};
        a = node_new(&gc_type);
        b = NULL;
        if (through_collection) {
            b = node_new(&gc_type);
            node_set(a, 0, b);
            node_set(b, 0, a);
        }
        for (int i = 0; i < 3; i++)
            w[i] = weakref_new(a, &freeing[i]);
        pym_decref(a);
        if (through_collection) {
            pym_decref(b);
            CHECK_COLLECT(2, 2);
        }
        CHECK(strcmp(log_string("W"), "W3 W1") == 0, "%s: callbacks %s, expected 3 1",
              through_collection ? "collection" : "refcount", log_string("W"));
        CHECK(w[0] == NULL && w[1] == NULL && w[2] == NULL, "a weak reference was not freed");
        CHECK(gen_size(-1) == 0, "%zu tracked objects left", gen_size(-1));
    }
}

/* ---- 7. freeze ------------------------------------------------------------------ */
static void test_freeze(void)
{
    CHECK_COLLECT(2, 0);
    CHECK_COLLECT(0, 0);
    CHECK_COUNT(0, 1, 0);
    CHECK(pym_gc_get_freeze_count() == 0);
    size_t deallocated_before = deallocated;
    node_t *a = node_new(&gc_type), *b = node_new(&gc_type);
    node_set(a, 0, b);
    node_set(b, 0, a);
    CHECK_COUNT(2, 1, 0);
    pym_gc_freeze();
    CHECK_COUNT(0, 1, 0); /* freeze zeroes count[0] only */
    CHECK(pym_gc_get_freeze_count() == 2, "freeze count %zu", pym_gc_get_freeze_count());
    CHECK(gen_size(-1) == 0, "frozen objects still visible in the generations");
    CHECK(pym_gc_is_tracked(a) == 1, "a frozen object is still tracked");
    pym_decref(a);
    pym_decref(b);
    CHECK_COLLECT(2, 0);
    CHECK(deallocated == deallocated_before, "a frozen cycle was collected");
    seen_t seen = {0};
    CHECK(pym_gc_get_referrers(a, seen_visit, &seen) == 0 && seen.count == 0,
          "get_referrers found %zu frozen referrers", seen.count);
    /* A frozen object can still die by refcount. */
    node_t *single = node_new(&gc_type);
    pym_gc_freeze();
    CHECK(pym_gc_get_freeze_count() == 3);
    pym_decref(single);
    CHECK(deallocated - deallocated_before == 1);
    CHECK(pym_gc_get_freeze_count() == 2, "freeze count %zu after a frozen object died", pym_gc_get_freeze_count());
    pym_gc_unfreeze();
    CHECK(pym_gc_get_freeze_count() == 0);
    CHECK(in_generation(2, a) && in_generation(2, b), "unfreeze moves objects to generation 2");
    CHECK_COLLECT(1, 0);
    CHECK_COLLECT(2, 2);
    CHECK(deallocated - deallocated_before == 3);
}

/* ---- 8. garbage list: SAVEALL and uncollectable ------------------------------- */
static void test_garbage(void)
{
    CHECK_COLLECT(2, 0);
    CHECK(pym_gc_get_debug() == 0);
    CHECK(pym_gc_garbage_count() == 0 && pym_gc_garbage_item(0) == NULL);

    /* SAVEALL: the 3 unreachable objects go on the list (finalized, not cleared, not freed). */
    pym_gc_set_debug(PYM_GC_DEBUG_SAVEALL);
    CHECK(pym_gc_get_debug() == PYM_GC_DEBUG_SAVEALL);
    size_t deallocated_before = deallocated, cleared_before = cleared, finalized_before = finalized;
    pym_gc_stats_t base[PYM_GC_GENERATIONS], stats[PYM_GC_GENERATIONS];
    get_stats(base);
    node_t *ring[3];
    make_ring(&gc_type, ring, 3);
    node_t *saved[3] = {ring[0], ring[1], ring[2]};
    drop_all(ring, 3);
    CHECK_COLLECT(2, 3);
    CHECK(pym_gc_garbage_count() == 3, "garbage list holds %zu", pym_gc_garbage_count());
    for (int i = 0; i < 3; i++) {
        void *item = pym_gc_garbage_item((size_t)i);
        CHECK(item == saved[0] || item == saved[1] || item == saved[2], "garbage item %d is %p", i, item);
        CHECK(pym_refcount(saved[i]) == 2, "a saved object's refcount is %zu (cycle + list)", pym_refcount(saved[i]));
        CHECK(saved[i]->slot[0] == saved[(i + 1) % 3], "a saved object was cleared");
    }
    CHECK(pym_gc_garbage_item(0) != pym_gc_garbage_item(1) && pym_gc_garbage_item(1) != pym_gc_garbage_item(2) &&
          pym_gc_garbage_item(0) != pym_gc_garbage_item(2));
    CHECK(pym_gc_garbage_item(3) == NULL);
    CHECK(deallocated == deallocated_before && cleared == cleared_before, "saved objects cleared or freed");
    CHECK(finalized - finalized_before == 3, "%zu finalized before saving, expected 3", finalized - finalized_before);
    get_stats(stats);
    CHECK(stats[2].collected - base[2].collected == 3 && stats[2].uncollectable == base[2].uncollectable,
          "stats +%zu collected +%zu uncollectable", stats[2].collected - base[2].collected,
          stats[2].uncollectable - base[2].uncollectable);
    CHECK_COLLECT(2, 0); /* held by the list now */
    CHECK(pym_gc_garbage_count() == 3);
    pym_gc_set_debug(0);
    CHECK_COLLECT(2, 0);
    CHECK(pym_gc_garbage_clear() == 3);
    CHECK(pym_gc_garbage_count() == 0 && pym_gc_garbage_item(0) == NULL);
    CHECK(deallocated == deallocated_before);
    CHECK_COLLECT(2, 3);
    CHECK(deallocated - deallocated_before == 3 && finalized - finalized_before == 3,
          "%zu freed, %zu finalized (no second finalize)", deallocated - deallocated_before,
          finalized - finalized_before);
    CHECK(pym_gc_garbage_count() == 0);

    /* Uncollectable: x <-> y of a type without clear, z reached from x;
     * beside them a collectable cycle p <-> q.  x, y, z go on the list
     * (never finalized, their weak references not cleared); p, q are freed. */
    reset_log();
    deallocated_before = deallocated;
    finalized_before = finalized;
    get_stats(base);
    node_t *x = node_new(&noclear_type), *y = node_new(&noclear_type), *z = node_new(&gc_type);
    node_t *p = node_new(&gc_type), *q = node_new(&gc_type);
    node_set(x, 0, y);
    node_set(y, 0, x);
    node_set(x, 1, z);
    node_set(p, 0, q);
    node_set(q, 0, p);
    weak_cb_t cb_x = {20, NULL, NULL}, cb_p = {21, NULL, NULL};
    pym_weakref *wx = weakref_new(x, &cb_x), *wp = weakref_new(p, &cb_p);
    pym_decref(x);
    pym_decref(y);
    pym_decref(z);
    pym_decref(p);
    pym_decref(q);
    CHECK_COLLECT(2, 5); /* 2 collected + 3 uncollectable */
    get_stats(stats);
    CHECK(stats[2].uncollectable - base[2].uncollectable == 3 && stats[2].collected - base[2].collected == 2,
          "stats +%zu collected +%zu uncollectable, expected +2 +3", stats[2].collected - base[2].collected,
          stats[2].uncollectable - base[2].uncollectable);
    CHECK(pym_gc_garbage_count() == 3, "garbage list holds %zu, expected x, y, z", pym_gc_garbage_count());
    seen_t listed = {0};
    for (size_t i = 0; i < pym_gc_garbage_count(); i++)
        seen_visit(pym_gc_garbage_item(i), &listed);
    CHECK(seen_has(&listed, x) && seen_has(&listed, y) && seen_has(&listed, z));
    CHECK(pym_gc_is_finalized(x) == 0 && pym_gc_is_finalized(y) == 0 && pym_gc_is_finalized(z) == 0,
          "an uncollectable object was finalized");
    CHECK(finalized - finalized_before == 2 && deallocated - deallocated_before == 2,
          "%zu finalized, %zu freed, expected p and q", finalized - finalized_before, deallocated - deallocated_before);
    CHECK(x->slot[0] == y && y->slot[0] == x && x->slot[1] == z, "an uncollectable object was cleared");
    CHECK(strcmp(log_string("W"), "W21") == 0, "callbacks %s, expected only p's (21)", log_string("W"));
    void *through_weak = pym_weakref_get(wx);
    CHECK(through_weak == x, "the weak reference to an uncollectable object was cleared");
    pym_decref(through_weak);
    CHECK(pym_weakref_get(wp) == NULL);
    /* Found again, but held by the list: not reported twice. */
    CHECK_COLLECT(2, 0);
    CHECK(pym_gc_garbage_count() == 3);
    get_stats(stats);
    CHECK(stats[2].uncollectable - base[2].uncollectable == 3);
    free_garbage_list();
    CHECK(deallocated - deallocated_before == 5);
    CHECK(pym_gc_garbage_count() == 0);
    pym_weakref_free(wx);
    pym_weakref_free(wp);
}

/* ---- 9. statistics and callbacks ---------------------------------------------- */
static long collect_in_callback = -99;
static void collecting_callback(pym_gc_phase phase, const pym_gc_info *info, void *arg)
{
    (void)info;
    (void)arg;
    if (phase == PYM_GC_START)
        collect_in_callback = pym_gc_collect(2);
}

static void unused_callback(pym_gc_phase phase, const pym_gc_info *info, void *arg)
{
    (void)phase;
    (void)info;
    (void)arg;
}

static void test_stats_callbacks(void)
{
    CHECK_COLLECT(2, 0);
    reset_gc_log();
    CHECK(pym_gc_callback_add(gc_logger, (void *)(intptr_t)1) == 0);
    CHECK(pym_gc_callback_add(gc_logger, (void *)(intptr_t)2) == 0);

    /* Generation 1: a collectable pair and an uncollectable pair. */
    node_t *p = node_new(&gc_type), *q = node_new(&gc_type), *x = node_new(&noclear_type), *y = node_new(&noclear_type);
    node_set(p, 0, q);
    node_set(q, 0, p);
    node_set(x, 0, y);
    node_set(y, 0, x);
    pym_decref(p);
    pym_decref(q);
    pym_decref(x);
    pym_decref(y);
    pym_gc_stats_t base[PYM_GC_GENERATIONS], stats[PYM_GC_GENERATIONS];
    get_stats(base);
    CHECK_COLLECT(1, 4);
    get_stats(stats);
    CHECK(stats[1].collections - base[1].collections == 1 && stats[1].collected - base[1].collected == 2 &&
              stats[1].uncollectable - base[1].uncollectable == 2,
          "generation 1 stats +%zu +%zu +%zu, expected +1 +2 +2", stats[1].collections - base[1].collections,
          stats[1].collected - base[1].collected, stats[1].uncollectable - base[1].uncollectable);
    CHECK(memcmp(&stats[0], &base[0], sizeof(stats[0])) == 0 && memcmp(&stats[2], &base[2], sizeof(stats[2])) == 0,
          "the statistics of generations 0 or 2 moved");
    CHECK(gc_log_count == 4 && gc_event_is(0, 1, PYM_GC_START, 1, 0, 0) && gc_event_is(1, 2, PYM_GC_START, 1, 0, 0) &&
              gc_event_is(2, 1, PYM_GC_STOP, 1, 2, 2) && gc_event_is(3, 2, PYM_GC_STOP, 1, 2, 2),
          "callbacks %s, expected both starts then both stops of generation 1 with 2/2", gc_log_string());
    CHECK(pym_gc_garbage_count() == 2);

    /* An empty generation 0 collection. */
    reset_gc_log();
    get_stats(base);
    CHECK_COLLECT(0, 0);
    get_stats(stats);
    CHECK(stats[0].collections - base[0].collections == 1 && stats[0].collected == base[0].collected &&
          stats[0].uncollectable == base[0].uncollectable);
    CHECK(gc_log_count == 4 && gc_event_is(0, 1, PYM_GC_START, 0, 0, 0) && gc_event_is(3, 2, PYM_GC_STOP, 0, 0, 0),
          "callbacks %s", gc_log_string());

    /* Generation 2, collected figures equal the statistics' delta. */
    node_t *ring[3];
    make_ring(&gc_type, ring, 3);
    drop_all(ring, 3);
    reset_gc_log();
    get_stats(base);
    CHECK_COLLECT(2, 3);
    get_stats(stats);
    CHECK(gc_log_count == 4 && gc_event_is(2, 1, PYM_GC_STOP, 2, (long)(stats[2].collected - base[2].collected),
                                           (long)(stats[2].uncollectable - base[2].uncollectable)),
          "callbacks %s, stats +%zu +%zu", gc_log_string(), stats[2].collected - base[2].collected,
          stats[2].uncollectable - base[2].uncollectable);
    CHECK(stats[2].collected - base[2].collected == 3 && stats[2].uncollectable == base[2].uncollectable);
    CHECK(gc_pairing_errors == 0);

    /* Removal: the first registration of (callback, arg); unknown -> ENOENT. */
    CHECK(pym_gc_callback_remove(gc_logger, (void *)(intptr_t)2) == 0);
    errno = 0;
    CHECK(pym_gc_callback_remove(gc_logger, (void *)(intptr_t)2) == -1 && errno == ENOENT);
    errno = 0;
    CHECK(pym_gc_callback_remove(gc_logger, (void *)(intptr_t)99) == -1 && errno == ENOENT);
    errno = 0;
    CHECK(pym_gc_callback_remove(unused_callback, (void *)(intptr_t)1) == -1 && errno == ENOENT);
    /* Registrations 1, 2, 1: called in that order; removing (gc_logger, 1)
     * takes the first one, leaving 2, 1. */
    CHECK(pym_gc_callback_add(gc_logger, (void *)(intptr_t)2) == 0);
    CHECK(pym_gc_callback_add(gc_logger, (void *)(intptr_t)1) == 0);
    reset_gc_log();
    CHECK_COLLECT(0, 0);
    CHECK(gc_log_count == 6 && gc_event_is(0, 1, PYM_GC_START, 0, 0, 0) && gc_event_is(1, 2, PYM_GC_START, 0, 0, 0) &&
              gc_event_is(2, 1, PYM_GC_START, 0, 0, 0) && gc_event_is(3, 1, PYM_GC_STOP, 0, 0, 0),
          "callbacks %s, expected cb1 cb2 cb1 (the order they were added)", gc_log_string());
    CHECK(pym_gc_callback_remove(gc_logger, (void *)(intptr_t)1) == 0);
    reset_gc_log();
    CHECK_COLLECT(0, 0);
    CHECK(gc_log_count == 4 && gc_event_is(0, 2, PYM_GC_START, 0, 0, 0) && gc_event_is(1, 1, PYM_GC_START, 0, 0, 0),
          "callbacks %s after removing the first of two registrations, expected cb2 then cb1", gc_log_string());
    CHECK(pym_gc_callback_remove(gc_logger, (void *)(intptr_t)1) == 0);
    CHECK(pym_gc_callback_remove(gc_logger, (void *)(intptr_t)2) == 0);
    reset_gc_log();
    CHECK_COLLECT(0, 0);
    CHECK(gc_log_count == 0, "callbacks %s after removing all", gc_log_string());
    errno = 0;
    CHECK(pym_gc_callback_remove(gc_logger, (void *)(intptr_t)1) == -1 && errno == ENOENT);

    /* A callback's pym_gc_collect during a collection returns 0; the outer one finds the pair. */
    CHECK(pym_gc_callback_add(collecting_callback, NULL) == 0);
    p = node_new(&gc_type);
    q = node_new(&gc_type);
    node_set(p, 0, q);
    node_set(q, 0, p);
    pym_decref(p);
    pym_decref(q);
    CHECK_COLLECT(2, 2);
    CHECK(collect_in_callback == 0, "pym_gc_collect in a callback returned %ld", collect_in_callback);
    CHECK(pym_gc_callback_remove(collecting_callback, NULL) == 0);
    free_garbage_list();
}

/* ---- 10. long chains ---------------------------------------------------------------- */
#define CHAIN_LENGTH 1000000

static void *build_chain(const pym_type *type, link_t **tail)
{
    link_t *head = NULL;
    for (size_t i = 0; i < CHAIN_LENGTH; i++) {
        link_t *link = pym_new(type);
        REQUIRE(link != NULL, "pym_new: %s", strerror(errno));
        link->next = head; /* the new link takes over our reference to the old head */
        if (head == NULL && tail != NULL)
            *tail = link;
        head = link;
    }
    return head;
}

static void *chains_thread(void *unused)
{
    (void)unused;
    /* Non-GC chain dropped from its head. */
    links_freed = 0;
    link_t *head = build_chain(&chain_plain_type, NULL);
    pym_decref(head);
    CHECK(links_freed == CHAIN_LENGTH, "non-GC chain: %zu of %d freed", links_freed, CHAIN_LENGTH);

    /* GC chain: a collection walks it whole, then dropping the head frees it. */
    links_freed = 0;
    head = build_chain(&chain_gc_type, NULL);
    CHECK_COLLECT(2, 0);
    CHECK(links_freed == 0);
    pym_decref(head);
    CHECK(links_freed == CHAIN_LENGTH, "GC chain: %zu of %d freed", links_freed, CHAIN_LENGTH);

    /* A million-object cycle: the collector's clear of one link starts a
     * million-deep cascade of refcount deaths. */
    links_freed = 0;
    link_t *tail = NULL;
    head = build_chain(&chain_gc_type, &tail);
    tail->next = head;
    pym_incref(head);
    pym_decref(head);
    CHECK(links_freed == 0);
    CHECK_COLLECT(2, CHAIN_LENGTH);
    CHECK(links_freed == CHAIN_LENGTH, "GC cycle: %zu of %d freed", links_freed, CHAIN_LENGTH);
    return NULL;
}

static void test_long_chains(void)
{
    CHECK_COLLECT(2, 0);
    pthread_attr_t attr;
    REQUIRE(pthread_attr_init(&attr) == 0, "pthread_attr_init");
    REQUIRE(pthread_attr_setstacksize(&attr, 256 * 1024) == 0, "pthread_attr_setstacksize");
    pthread_t thread;
    REQUIRE(pthread_create(&thread, &attr, chains_thread, NULL) == 0, "pthread_create");
    REQUIRE(pthread_join(thread, NULL) == 0, "pthread_join");
    pthread_attr_destroy(&attr);
}

/* ---- 11. introspection -------------------------------------------------------------- */
static node_t *visit_created[16];
static size_t visit_created_count;

/* Frees the objects it visits (our references are in visit_victims) and allocates new ones. */
static node_t *visit_victims[8];
static int freeing_visit(void *obj, void *arg)
{
    size_t *visits = arg;
    ++*visits;
    for (int i = 0; i < 8; i++) {
        if (visit_victims[i] == obj) {
            visit_victims[i] = NULL;
            pym_decref(obj); /* the visit holds its own reference */
        }
    }
    if (visit_created_count < 16)
        visit_created[visit_created_count++] = node_new(&gc_type);
    return 0;
}

static int held_visit(void *obj, void *arg)
{
    size_t *not_held = arg;
    *not_held += pym_refcount(obj) < 2;
    return 0;
}

static void test_introspection(void)
{
    CHECK_COLLECT(2, 0);
    CHECK(gen_size(-1) == 0);
    node_t *a = node_new(&gc_type);
    CHECK_COLLECT(1, 0); /* a: generation 2 */
    node_t *b = node_new(&gc_type);
    CHECK_COLLECT(0, 0); /* b: generation 1 */
    node_t *c = node_new(&gc_type);
    node_t *plain = node_new(&plain_type);
    CHECK(pym_type_of(a) == &gc_type && pym_type_of(plain) == &plain_type);
    CHECK(pym_refcount(NULL) == 0);
    seen_t seen[4];
    memset(seen, 0, sizeof(seen));
    for (int g = 0; g < 3; g++)
        CHECK(pym_gc_visit_objects(g, seen_visit, &seen[g]) == 0);
    CHECK(pym_gc_visit_objects(-1, seen_visit, &seen[3]) == 0);
    CHECK(seen[0].count == 1 && seen_has(&seen[0], c), "generation 0: %zu objects", seen[0].count);
    CHECK(seen[1].count == 1 && seen_has(&seen[1], b), "generation 1: %zu objects", seen[1].count);
    CHECK(seen[2].count == 1 && seen_has(&seen[2], a), "generation 2: %zu objects", seen[2].count);
    CHECK(seen[3].count == 3 && seen_has(&seen[3], a) && seen_has(&seen[3], b) && seen_has(&seen[3], c),
          "all generations: %zu objects", seen[3].count);
    CHECK(!seen_has(&seen[3], plain), "a non-GC object was visited");
    size_t not_held = 0;
    CHECK(pym_gc_visit_objects(-1, held_visit, &not_held) == 0 && not_held == 0,
          "%zu objects were not held during the visit", not_held);
    CHECK(pym_refcount(a) == 1 && pym_refcount(b) == 1 && pym_refcount(c) == 1, "a visit leaked references");
    /* Early stop. */
    seen_t stop = {.stop_at = 2, .stop_value = 7};
    CHECK(pym_gc_visit_objects(-1, seen_visit, &stop) == 7 && stop.count == 2,
          "early stop: returned after %zu objects", stop.count);
    errno = 0;
    CHECK(pym_gc_visit_objects(3, seen_visit, &stop) == -1 && errno == EINVAL);
    errno = 0;
    CHECK(pym_gc_visit_objects(-2, seen_visit, &stop) == -1 && errno == EINVAL);
    errno = 0;
    CHECK(pym_gc_visit_objects(0, NULL, NULL) == -1 && errno == EINVAL);

    /* referents: what traverse visits (objects and weak references). */
    pym_weakref *weak = weakref_new(c, NULL);
    node_set(a, 0, b);
    node_set(a, 2, c);
    pym_incref(weak);
    a->slot[3] = weak;
    seen_t referents = {0};
    CHECK(pym_gc_get_referents(a, seen_visit, &referents) == 0);
    CHECK(referents.count == 3 && seen_has(&referents, b) && seen_has(&referents, c) && seen_has(&referents, weak),
          "referents: %zu", referents.count);
    seen_t first_only = {.stop_at = 1, .stop_value = 5};
    CHECK(pym_gc_get_referents(a, seen_visit, &first_only) == 5 && first_only.count == 1);
    seen_t none = {0};
    CHECK(pym_gc_get_referents(c, seen_visit, &none) == 0 && none.count == 0);
    errno = 0;
    CHECK(pym_gc_get_referents(a, NULL, NULL) == -1 && errno == EINVAL);
    errno = 0;
    CHECK(pym_gc_get_referents(NULL, seen_visit, &none) == -1 && errno == EINVAL);

    /* referrers: tracked objects whose traverse visits the object. */
    node_t *d = node_new(&gc_type);
    node_set(d, 1, c);
    node_set(plain, 0, c); /* not tracked: not a referrer */
    seen_t referrers = {0};
    CHECK(pym_gc_get_referrers(c, seen_visit, &referrers) == 0);
    CHECK(referrers.count == 2 && seen_has(&referrers, a) && seen_has(&referrers, d), "referrers of c: %zu",
          referrers.count);
    seen_t weak_referrers = {0};
    CHECK(pym_gc_get_referrers(weak, seen_visit, &weak_referrers) == 0 && weak_referrers.count == 1 &&
          seen_has(&weak_referrers, a));
    seen_t one = {.stop_at = 1, .stop_value = 9};
    CHECK(pym_gc_get_referrers(c, seen_visit, &one) == 9 && one.count == 1);
    errno = 0;
    CHECK(pym_gc_get_referrers(c, NULL, NULL) == -1 && errno == EINVAL);

    /* track / untrack. */
    CHECK(pym_gc_is_tracked(a) == 1 && pym_gc_is_tracked(plain) == 0);
    pym_gc_untrack(d);
    CHECK(pym_gc_is_tracked(d) == 0);
    CHECK(!in_generation(-1, d), "an untracked object was visited");
    seen_t after_untrack = {0};
    CHECK(pym_gc_get_referrers(c, seen_visit, &after_untrack) == 0 && after_untrack.count == 1 &&
          seen_has(&after_untrack, a), "referrers after untrack: %zu", after_untrack.count);
    pym_gc_track(d);
    CHECK(pym_gc_is_tracked(d) == 1 && in_generation(-1, d));
    pym_gc_track(plain); /* not a GC type: stays untracked */
    CHECK(pym_gc_is_tracked(plain) == 0);
    /* An untracked cycle is invisible to the collector; tracked again, it is found. */
    size_t deallocated_before = deallocated;
    node_t *u = node_new(&gc_type), *v = node_new(&gc_type);
    node_set(u, 0, v);
    node_set(v, 0, u);
    pym_gc_untrack(u);
    pym_gc_untrack(v);
    pym_decref(u);
    pym_decref(v);
    CHECK_COLLECT(2, 0);
    CHECK(deallocated == deallocated_before);
    pym_gc_track(u);
    pym_gc_track(v);
    CHECK(in_generation(0, u) && in_generation(0, v), "a tracked object starts in generation 0");
    CHECK_COLLECT(2, 2);
    CHECK(deallocated - deallocated_before == 2);

    /* A visit is a snapshot of held objects: fn may free them and create new ones. */
    pym_decref(a);
    pym_decref(b);
    pym_decref(c);
    pym_decref(d);
    pym_decref(plain);
    pym_weakref_free(weak);
    CHECK_COLLECT(2, 0);
    REQUIRE(gen_size(-1) == 0, "objects left: %zu", gen_size(-1));
    deallocated_before = deallocated;
    for (int i = 0; i < 5; i++)
        visit_victims[i] = node_new(&gc_type);
    visit_created_count = 0;
    size_t visits = 0;
    CHECK(pym_gc_visit_objects(0, freeing_visit, &visits) == 0);
    CHECK(visits == 5, "%zu visits, expected the 5 objects of the snapshot", visits);
    CHECK(deallocated - deallocated_before == 5, "%zu of the visited objects freed", deallocated - deallocated_before);
    CHECK(gen_size(-1) == visit_created_count);
    drop_all(visit_created, visit_created_count);
}

/* ---- 12. control: enable, thresholds, bad generations -------------------------------- */
static void test_control(void)
{
    CHECK_COLLECT(2, 0);
    CHECK_COUNT(0, 0, 0);
    CHECK(pym_gc_isenabled() == 1);
    pym_gc_disable();
    CHECK(pym_gc_isenabled() == 0);
    pym_gc_stats_t base[PYM_GC_GENERATIONS], stats[PYM_GC_GENERATIONS];
    get_stats(base);
    reset_gc_log();
    CHECK(pym_gc_callback_add(gc_logger, (void *)(intptr_t)1) == 0);
    node_t *objs[1001];
    for (int i = 0; i < 1000; i++)
        objs[i] = node_new(&gc_type);
    CHECK_COUNT(1000, 0, 0); /* counted, not collected */
    get_stats(stats);
    CHECK(stats[0].collections == base[0].collections && gc_log_count == 0, "a collection ran while disabled");
    /* Explicit collections still work. */
    node_t *ring[2];
    make_ring(&gc_type, ring, 2);
    drop_all(ring, 2);
    CHECK_COLLECT(0, 2);
    CHECK_COUNT(0, 1, 0);
    for (int i = 0; i < 1000; i++) {
        pym_decref(objs[i]);
        objs[i] = node_new(&gc_type);
    }
    /* A deallocation takes one off count[0] only while it is positive: the
     * first decref finds 0 and leaves it, each new object adds one, each
     * later decref takes it back to 0. */
    CHECK_COUNT(1, 1, 0);
    for (int i = 0; i < 700; i++) {
        pym_decref(objs[i]); /* count[0] 1 -> 0, then stays 0 */
        objs[i] = NULL;
    }
    CHECK_COUNT(0, 1, 0);
    for (int i = 0; i < 700; i++)
        objs[i] = node_new(&gc_type);
    node_t *extra = node_new(&gc_type);
    CHECK_COUNT(701, 1, 0); /* over 700, but disabled */
    pym_gc_enable();
    CHECK(pym_gc_isenabled() == 1);
    objs[1000] = node_new(&gc_type); /* 702 > 700: generation 0 collected first */
    CHECK_COUNT(0, 2, 0);
    get_stats(stats);
    CHECK(stats[0].collections - base[0].collections == 2, "+%zu generation 0 collections, expected 2 (1 explicit)",
          stats[0].collections - base[0].collections);

    /* Thresholds. */
    long threshold[PYM_GC_GENERATIONS];
    pym_gc_set_threshold(100, 5, 3);
    pym_gc_get_threshold(threshold);
    CHECK(threshold[0] == 100 && threshold[1] == 5 && threshold[2] == 3);
    pym_gc_set_threshold(-1, 5, 5);
    pym_gc_get_threshold(threshold);
    CHECK(threshold[0] == 100 && threshold[1] == 5 && threshold[2] == 3, "a negative threshold was taken: %ld %ld %ld",
          threshold[0], threshold[1], threshold[2]);
    pym_gc_set_threshold(50, -1, 3);
    pym_gc_set_threshold(50, 5, -7);
    pym_gc_get_threshold(threshold);
    CHECK(threshold[0] == 100 && threshold[1] == 5 && threshold[2] == 3, "a negative threshold was taken: %ld %ld %ld",
          threshold[0], threshold[1], threshold[2]);
    /* threshold[0] = 0: no automatic collection, allocations still counted. */
    CHECK_COLLECT(2, 0);
    pym_gc_set_threshold(0, 10, 10);
    get_stats(base);
    reset_gc_log();
    node_t *more[1000];
    for (int i = 0; i < 1000; i++)
        more[i] = node_new(&gc_type);
    CHECK_COUNT(1000, 0, 0);
    get_stats(stats);
    CHECK(stats[0].collections == base[0].collections && gc_log_count == 0, "threshold 0 still collected");
    drop_all(more, 1000);
    pym_gc_set_threshold(700, 10, 10);
    pym_gc_get_threshold(threshold);
    CHECK(threshold[0] == 700 && threshold[1] == 10 && threshold[2] == 10);
    CHECK(pym_gc_callback_remove(gc_logger, (void *)(intptr_t)1) == 0);

    /* Bad generations. */
    errno = 0;
    CHECK(pym_gc_collect(3) == -1 && errno == EINVAL);
    errno = 0;
    CHECK(pym_gc_collect(-1) == -1 && errno == EINVAL);
    for (int i = 0; i < 1001; i++)
        pym_decref(objs[i]);
    pym_decref(extra);
}

/* ---- driver --------------------------------------------------------------------------- */
/* What every part must leave behind: nothing. */
static void check_nothing_left(const char *name)
{
    CHECK(created == deallocated, "%s: %zu test objects left alive", name, created - deallocated);
    CHECK(dealloc_with_refs == 0, "%s: %zu deallocs found references clear had not dropped", name, dealloc_with_refs);
    CHECK(pym_gc_garbage_count() == 0, "%s: %zu objects left on the garbage list", name, pym_gc_garbage_count());
    CHECK(pym_gc_get_freeze_count() == 0, "%s: %zu objects left frozen", name, pym_gc_get_freeze_count());
    CHECK(gen_size(-1) == 0, "%s: %zu tracked objects left", name, gen_size(-1));
    CHECK(pym_gc_get_debug() == 0 && pym_gc_isenabled() == 1, "%s: debug flags or enabled left changed", name);
}

static const test_section_t sections[] = {
    {"cycles", test_cycles},
    {"reachable", test_reachable},
    {"generations", test_generations},
    {"thresholds", test_thresholds},
    {"finalizers", test_finalizers},
    {"weakrefs", test_weakrefs},
    {"freeze", test_freeze},
    {"garbage", test_garbage},
    {"stats and callbacks", test_stats_callbacks},
    {"long chains", test_long_chains},
    {"introspection", test_introspection},
    {"control", test_control},
};

/* Each part in a forked child (tests/sections.h); `api_gc N [M...]` runs
 * parts N, M... (1..12, numbered as above) in this process, one after the
 * other (for debuggers); `api_gc --no-fork` runs all parts in this process.
 * The timeout is generous: valgrind runs are ~50 times slower. */
int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    return sections_main(argc, argv, sections, (int)(sizeof(sections) / sizeof(sections[0])), check_nothing_left,
                         300);
}
