/*
 * api_gc_random.c -- randomized model-based test of the refcount and cycle
 * collector side API (include/pymalloc/gc.h), linked with -lpymalloc.
 *
 * A seeded xorshift (rng_next) drives a random sequence of operations on a
 * small graph of GC nodes (4 owned object slots and 2 owned weak reference
 * fields each), and the test keeps a shadow model of everything in plain C
 * arrays: each node's slots, the "root" references the test holds, the
 * references the resurrecting finalizers put on a global list, the weak
 * references (owned by the test or by a node's field) with their referents
 * and callbacks, which generation every tracked object (weak references
 * included: they are GC objects) is in, the generation counts, thresholds
 * and CPython's long_lived_pending / long_lived_total.  The model replays
 * each operation by the rules of gc.h (CPython 3.12's) -- a refcount death
 * in the documented order (weakrefs cleared and their callbacks run,
 * finalize once, maybe resurrect, clear, dealloc), pym_new counting and
 * collecting before it links the new object, a collection of generation g
 * (merge, find unreachable, survivors move up, weakrefs cleared and their
 * callbacks run unless the weakref is garbage itself, finalizers,
 * resurrection re-check, clear) -- and predicts what must have happened.
 *
 * Operations: create a node (a root; some types finalize, some of those
 * resurrect), take or drop a root, store a node into a slot (incref the new
 * target, decref the old one: refcount deaths cascade), clear a slot, make a
 * weak reference (test- or node-owned, with or without a callback, some
 * callbacks free their own reference), free one, get one (sometimes kept as
 * a root), collect generation 0/1/2, drop an entry of the resurrected list,
 * set small thresholds (automatic collections then run inside pym_new,
 * weakref creation included), disable/enable, freeze/unfreeze, and a
 * "garbage pair": a new two-node cycle, dropped at once, that holds an
 * existing (often older) node and owns a weak reference with a callback to
 * it -- the shape in which clearing young garbage frees an older referent
 * by refcount while the garbage weak reference is still there.
 *
 * After every operation the test compares reality with the model:
 *   - which nodes were deallocated (exactly the predicted ones), finalize
 *     at most once and exactly when predicted, clear never on a live node,
 *     dealloc only after clear, no callback on an unknown object;
 *   - no node reachable (model slots) from a root or the resurrected list
 *     is dead -- checked directly, independently of the model's prediction;
 *     after an explicit pym_gc_collect(2) with nothing frozen the live set
 *     is exactly that reachable set;
 *   - pym_refcount of every live node = roots + slots pointing to it +
 *     resurrected-list entries; its real slots equal the model's;
 *     pym_gc_is_finalized; pym_weakref_count; every weak reference's
 *     callback count (exactly once for a referent that died, none when the
 *     reference was garbage in the same collection -- also when its
 *     referent is outside the collected set and dies only because the
 *     garbage released it -- or freed before) and pym_weakref_get (NULL
 *     exactly once the referent went through death; a garbage weak
 *     reference that a resurrection saves keeps its live referent, as gc.h
 *     words it: CPython would have cleared it);
 *   - pym_gc_collect's return value: the objects found unreachable and
 *     freed, i.e. the nodes *and* node-owned weak references that are
 *     still unreachable after the resurrection re-check (objects freed only
 *     because garbage released them are not counted; resurrected ones are
 *     not either); nothing is uncollectable here (every type has clear);
 *   - the generation of every tracked node and the number of weak
 *     references per generation (pym_gc_visit_objects), the frozen count,
 *     pym_gc_get_count, thresholds, enabled, the statistics and the
 *     collection callback (collections per generation, automatic ones
 *     included, and what each found), the garbage list stays empty;
 *   - at the end of a run everything is dropped and pym_gc_collect(2)
 *     leaves nothing alive, nothing tracked, an empty garbage list.
 * The order in which callbacks and finalizers run is not checked here
 * (api_gc does, on fixed scenarios); only what ran and how often.
 *
 * One order is not fixed by the contract: the collector clears its garbage
 * in an unspecified order, and when that garbage held the last references
 * to older garbage, the cascade of refcount deaths it starts may free a
 * weak reference before or after its referent dies.  Such a reference
 * (owner and referent both freed by that cascade) may get its callback or
 * not; every other callback count is exact.  Nodes are kept below 64 so no
 * teardown nests deeper than PYM_TEARDOWN_DEPTH (whose queue would also
 * reorder deaths).
 *
 * Every operation ends with one CHECK per family of facts (13), whose
 * message names the seed, the operation and the first offender; a seed
 * stops at its first failing operation.
 *
 * Default run: 200 seeds x 2,000 operations and 4 seeds x 25,000, each seed
 * in a forked child (two at a time; a crash or a hang names its seed),
 * stopping after about 10 failed checks.  A failure names its seed and
 * operation:
 *   api_gc_random --seed N [--ops M] [-v]
 * replays one seed in this process (-v traces every operation on stderr);
 *   api_gc_random --from S --runs K [--ops M] [--jobs J]
 * runs seeds S..S+K-1 instead of the default schedule (soak runs).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
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
#include "testlib.h"

#define SLOTS 4              /* owned object references per node */
#define WFIELDS 2            /* owned weak references per node */
#define MAX_NODES 40         /* < 64: no teardown nests deeper than PYM_TEARDOWN_DEPTH */
#define MAX_TEST_WREFS 24    /* weak references the test owns */
#define MAX_WREFS (MAX_NODES * WFIELDS + MAX_TEST_WREFS)
#define GEN_NONE (-1)        /* not tracked (dead) */
#define GEN_FROZEN 3         /* the permanent generation */
#define FAILURE_LIMIT 10     /* stop starting seeds after this many failed checks */

/* ---- the objects ------------------------------------------------------------------ */
typedef struct node {
    uint64_t serial;         /* unique in a run; the model entry must agree */
    int idx;                 /* its entry in N[] */
    bool resurrect;          /* its finalizer resurrects it */
    void *slot[SLOTS];
    pym_weakref *wref[WFIELDS];
} node_t;

/* ---- the model ---------------------------------------------------------------------- */
typedef struct mnode {
    bool used;               /* the entry describes a node (alive, or died in this operation) */
    bool alive;              /* model: not yet deallocated */
    node_t *ptr;
    uint64_t serial;
    bool has_finalizer, resurrect, finalized;
    long rc;                 /* model reference count */
    int roots;               /* references the test holds */
    int res;                 /* entries on the resurrected list */
    int slot[SLOTS];         /* node indexes, -1 empty */
    int wref[WFIELDS];       /* weakref indexes, -1 empty */
    int gen;                 /* 0..2, GEN_FROZEN, GEN_NONE */
    int e_finalized;         /* finalizer calls predicted */
    int a_finalized, a_cleared, a_dealloc; /* what the callbacks saw */
    /* scratch of a model collection */
    bool in_y, in_u, in_s, mark;
    long refs;
} mnode_t;

typedef struct mwref {
    bool used, alive;
    pym_weakref *ptr;
    int referent;            /* node index, -1 once cleared */
    int owner;               /* -1: the test; else node index * WFIELDS + field */
    bool has_cb, free_self;  /* free_self: the callback frees the (test-owned) reference */
    long seq;                /* creation order: callbacks run newest first */
    int gen;
    int e_cb_lo, e_cb_hi;    /* callbacks predicted (a range only in the unordered case) */
    int a_cb;                /* callbacks run */
    bool a_freed_by_cb;
    bool in_y, in_u, in_s, mark;
    long refs;
    bool died_in_delete, cleared_in_delete;
    int cb_before_delete;
} mwref_t;

static struct model {
    long count[PYM_GC_GENERATIONS], threshold[PYM_GC_GENERATIONS];
    bool enabled;
    size_t pending, total;   /* long_lived_pending, long_lived_total */
    long collections[PYM_GC_GENERATIONS], collected[PYM_GC_GENERATIONS];
    bool in_delete;          /* the delete phase of a model collection */
    long seq;
} M;

static mnode_t N[MAX_NODES];
static mwref_t W[MAX_WREFS];
static int max_live;         /* node entries this seed uses (<= MAX_NODES) */
static uint64_t next_serial;

/* The resurrected list: references taken by resurrecting finalizers. */
static node_t *res_list[2 * MAX_NODES];
static int res_n;

/* What the collection callback saw. */
static long a_collections[PYM_GC_GENERATIONS], a_collected[PYM_GC_GENERATIONS];
static int gc_open = -1;

/* Coverage figures of a run (sent to the parent). */
typedef struct run_stats {
    int passed, failed;
    long ops, explicit_collections, auto_collections, gc_freed, rc_deaths, resurrections, callbacks, unordered;
    long garbage_ref_cascade; /* a garbage weakref whose referent died in its collection's delete cascade */
} run_stats_t;
static run_stats_t stats;

/* ---- faults: one CHECK per family and operation, naming the first offender ---------- */
enum { F_STRAY, F_OP, F_ALIVE, F_FINALIZE, F_REFCOUNT, F_SLOTS, F_REACH, F_WEAK, F_GEN, F_COUNTS, F_STATS, F_RES,
       F_MODEL, F_FAMILIES };
static const char *const family_name[F_FAMILIES] = {
    "callbacks on unknown objects / out of order", "operation", "dealloc as predicted", "finalize as predicted",
    "refcounts", "slots and weakref fields", "reachable nodes alive", "weak references", "generations",
    "counts, thresholds, enabled", "statistics and collection callbacks", "resurrected list", "model consistency"};
typedef struct fault {
    int count;
    char first[400];
} fault_t;
static fault_t faults[F_FAMILIES];

static void fault(int family, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void fault(int family, const char *format, ...)
{
    fault_t *f = &faults[family];
    if (f->count++ == 0) {
        va_list ap;
        va_start(ap, format);
        vsnprintf(f->first, sizeof(f->first), format, ap);
        va_end(ap);
    }
}

static uint64_t seed_now;
static volatile long op_now;
static volatile uint64_t seed_for_signal;
static const char *op_name = "start";
static char op_text[160];
static bool verbose;

/* ---- random numbers --------------------------------------------------------------- */
static uint64_t rng;
static unsigned rnd(unsigned n)
{
    return (unsigned)(rng_next(&rng) % n);
}
static bool chance(unsigned percent)
{
    return rnd(100) < percent;
}

/* ---- the types' callbacks ------------------------------------------------------------ */
static mnode_t *lookup(const node_t *n, const char *what)
{
    if (n != NULL && n->idx >= 0 && n->idx < MAX_NODES && N[n->idx].used && N[n->idx].ptr == n &&
        N[n->idx].serial == n->serial)
        return &N[n->idx];
    fault(F_STRAY, "%s on an unknown node %p (serial %" PRIu64 ")", what, (const void *)n,
          n != NULL ? n->serial : 0);
    return NULL;
}

static int node_traverse(void *self, pym_visit_fn visit, void *arg)
{
    node_t *n = self;
    for (int k = 0; k < SLOTS; k++)
        if (n->slot[k] != NULL) {
            int stop = visit(n->slot[k], arg);
            if (stop != 0)
                return stop;
        }
    for (int j = 0; j < WFIELDS; j++)
        if (n->wref[j] != NULL) {
            int stop = visit(n->wref[j], arg);
            if (stop != 0)
                return stop;
        }
    return 0;
}

/* Slots first (each NULLed before its decref), then the weak reference fields:
 * the model's m_clear follows the same order. */
static void node_clear(void *self)
{
    node_t *n = self;
    mnode_t *m = lookup(n, "clear");
    if (m != NULL) {
        m->a_cleared++;
        if (m->has_finalizer && m->a_finalized == 0)
            fault(F_STRAY, "n%" PRIu64 " cleared before it was finalized", m->serial);
    }
    for (int k = 0; k < SLOTS; k++) {
        void *target = n->slot[k];
        n->slot[k] = NULL;
        pym_decref(target);
    }
    for (int j = 0; j < WFIELDS; j++) {
        pym_weakref *ref = n->wref[j];
        n->wref[j] = NULL;
        pym_weakref_free(ref);
    }
}

static void node_finalize(void *self)
{
    node_t *n = self;
    mnode_t *m = lookup(n, "finalize");
    if (m == NULL)
        return;
    m->a_finalized++;
    if (m->a_cleared != 0 || m->a_dealloc != 0)
        fault(F_STRAY, "n%" PRIu64 " finalized after clear or dealloc", m->serial);
    if (n->resurrect && res_n < (int)(sizeof(res_list) / sizeof(res_list[0]))) {
        pym_incref(self);
        res_list[res_n++] = n;
    }
}

static void node_dealloc(void *self)
{
    node_t *n = self;
    mnode_t *m = lookup(n, "dealloc");
    if (m == NULL)
        return;
    m->a_dealloc++;
    if (m->a_cleared == 0)
        fault(F_STRAY, "n%" PRIu64 " deallocated without clear", m->serial);
    for (int k = 0; k < SLOTS; k++)
        if (n->slot[k] != NULL)
            fault(F_STRAY, "n%" PRIu64 " deallocated with slot %d still set", m->serial, k);
}

static const pym_type fin_type = {"random.node_fin", sizeof(node_t), PYM_TYPE_GC, node_traverse, node_clear,
                                  node_finalize, node_dealloc};
static const pym_type plain_type = {"random.node", sizeof(node_t), PYM_TYPE_GC, node_traverse, node_clear, NULL,
                                    node_dealloc};

static void weak_callback(pym_weakref *ref, void *arg)
{
    mwref_t *mw = arg;
    if (mw < W || mw >= W + MAX_WREFS || !mw->used || mw->ptr != ref) {
        fault(F_STRAY, "weakref callback for an unknown reference %p", (void *)ref);
        return;
    }
    mw->a_cb++;
    void *referent = pym_weakref_get(ref);
    if (referent != NULL) {
        fault(F_WEAK, "w%ld: its callback ran with pym_weakref_get not NULL", mw->seq);
        pym_decref(referent);
    }
    if (mw->free_self && mw->owner == -1 && !mw->a_freed_by_cb) {
        mw->a_freed_by_cb = true;
        pym_weakref_free(ref);
    }
}

static void gc_callback(pym_gc_phase phase, const pym_gc_info *info, void *arg)
{
    (void)arg;
    int g = info->generation;
    if (g < 0 || g >= PYM_GC_GENERATIONS) {
        fault(F_STATS, "collection callback with generation %d", g);
        return;
    }
    if (phase == PYM_GC_START) {
        if (gc_open != -1 || info->collected != 0 || info->uncollectable != 0)
            fault(F_STATS, "start of a collection of %d: open %d, figures %ld/%ld", g, gc_open, info->collected,
                  info->uncollectable);
        gc_open = g;
        a_collections[g]++;
    } else {
        if (gc_open != g)
            fault(F_STATS, "stop of a collection of %d, open %d", g, gc_open);
        if (info->uncollectable != 0)
            fault(F_STATS, "collection of %d: %ld uncollectable", g, info->uncollectable);
        gc_open = -1;
        a_collected[g] += info->collected;
    }
}

/* ---- the model's rules ---------------------------------------------------------------- */
static void m_node_die(int i);

/* A GC object is released: count[0]-- while positive. */
static void m_count0_dec(void)
{
    if (M.count[0] > 0)
        M.count[0]--;
}

/* The last reference to weakref w goes (weak references have one owner). */
static void m_wref_release(int w)
{
    mwref_t *r = &W[w];
    r->alive = false;
    r->gen = GEN_NONE;
    r->referent = -1;
    if (M.in_delete)
        r->died_in_delete = true;
    m_count0_dec();
}

static void m_decref_node(int i)
{
    mnode_t *n = &N[i];
    if (n->rc <= 0 || !n->alive) {
        fault(F_MODEL, "model decref of n%" PRIu64 " with count %ld", n->serial, n->rc);
        return;
    }
    if (--n->rc == 0)
        m_node_die(i);
}

/* The node dies by refcount: its weak references are cleared and their
 * callbacks run, newest first; those the callbacks freed die after.  No
 * callback for a reference that is garbage of the collection running. */
static void m_dispatch(int i)
{
    int batch[MAX_WREFS], count = 0;
    for (int w = 0; w < MAX_WREFS; w++)
        if (W[w].used && W[w].alive && W[w].referent == i)
            batch[count++] = w;
    for (int a = 1; a < count; a++) /* newest (highest seq) first */
        for (int b = a; b > 0 && W[batch[b]].seq > W[batch[b - 1]].seq; b--) {
            int t = batch[b];
            batch[b] = batch[b - 1];
            batch[b - 1] = t;
        }
    int to_free[MAX_WREFS], freeing = 0;
    for (int b = 0; b < count; b++) {
        W[batch[b]].referent = -1;
        if (M.in_delete)
            W[batch[b]].cleared_in_delete = true;
    }
    for (int b = 0; b < count; b++) {
        mwref_t *r = &W[batch[b]];
        if (r->has_cb && r->alive && r->in_s)
            stats.garbage_ref_cascade++;
        if (r->has_cb && r->alive && !r->in_s) {
            r->e_cb_lo++;
            r->e_cb_hi++;
            stats.callbacks++;
            if (r->free_self)
                to_free[freeing++] = batch[b];
        }
    }
    for (int f = 0; f < freeing; f++)
        m_wref_release(to_free[f]);
}

static void m_clear(int i)
{
    mnode_t *n = &N[i];
    for (int k = 0; k < SLOTS; k++) {
        int t = n->slot[k];
        n->slot[k] = -1;
        if (t >= 0)
            m_decref_node(t);
    }
    for (int j = 0; j < WFIELDS; j++) {
        int w = n->wref[j];
        n->wref[j] = -1;
        if (w >= 0)
            m_wref_release(w);
    }
}

/* Count zero: weakrefs, finalize once (with count 1, tracked in generation 0;
 * a reference it takes resurrects the node), clear, dealloc, release. */
static void m_node_die(int i)
{
    mnode_t *n = &N[i];
    n->gen = GEN_NONE;
    m_dispatch(i);
    if (n->has_finalizer && !n->finalized) {
        n->finalized = true;
        n->e_finalized++;
        n->rc = 1;
        n->gen = 0;
        if (n->resurrect) {
            n->res++;
            n->rc++;
        }
        if (--n->rc != 0) {
            stats.resurrections++;
            return;
        }
        n->gen = GEN_NONE;
    }
    m_clear(i);
    n->alive = false;
    if (!n->in_s) /* the collector's garbage is counted in gc_freed */
        stats.rc_deaths++;
    m_count0_dec();
}

/* Traverse edges of node a, for the model collections. */
static void m_mark_from(int a, bool (*member)(int node), bool (*wmember)(int w), int *queue, int *tail)
{
    for (int k = 0; k < SLOTS; k++) {
        int t = N[a].slot[k];
        if (t >= 0 && member(t) && !N[t].mark) {
            N[t].mark = true;
            queue[(*tail)++] = t;
        }
    }
    for (int j = 0; j < WFIELDS; j++) {
        int w = N[a].wref[j];
        if (w >= 0 && wmember(w))
            W[w].mark = true;
    }
}

static bool in_y(int i) { return N[i].in_y; }
static bool w_in_y(int w) { return W[w].in_y; }
static bool in_u(int i) { return N[i].in_u; }
static bool w_in_u(int w) { return W[w].in_u; }

/* The set (in_y or in_u): refs = count minus the references from inside the
 * set; what keeps refs > 0, and what it reaches inside the set, is marked. */
static void m_find_reachable(bool (*member)(int), bool (*wmember)(int))
{
    int queue[MAX_NODES], head = 0, tail = 0;
    for (int i = 0; i < max_live; i++) {
        N[i].mark = false;
        if (N[i].used && N[i].alive && member(i))
            N[i].refs = N[i].rc;
    }
    for (int w = 0; w < MAX_WREFS; w++) {
        W[w].mark = false;
        if (W[w].used && W[w].alive && wmember(w))
            W[w].refs = 1; /* its one owner */
    }
    for (int i = 0; i < max_live; i++) {
        if (!(N[i].used && N[i].alive && member(i)))
            continue;
        for (int k = 0; k < SLOTS; k++)
            if (N[i].slot[k] >= 0 && member(N[i].slot[k]))
                N[N[i].slot[k]].refs--;
        for (int j = 0; j < WFIELDS; j++)
            if (N[i].wref[j] >= 0 && wmember(N[i].wref[j]))
                W[N[i].wref[j]].refs--;
    }
    for (int i = 0; i < max_live; i++)
        if (N[i].used && N[i].alive && member(i) && N[i].refs > 0) {
            N[i].mark = true;
            queue[tail++] = i;
        }
    for (int w = 0; w < MAX_WREFS; w++)
        if (W[w].used && W[w].alive && wmember(w) && W[w].refs > 0)
            W[w].mark = true;
    while (head < tail)
        m_mark_from(queue[head++], member, wmember, queue, &tail);
}

/* A collection of generation g; returns what pym_gc_collect must return. */
static long m_collect(int g)
{
    if (g + 1 < PYM_GC_GENERATIONS)
        M.count[g + 1]++;
    for (int i = 0; i <= g; i++)
        M.count[i] = 0;
    int old = g + 1 < PYM_GC_GENERATIONS ? g + 1 : g;
    /* Y: generations 0..g merged into g. */
    for (int i = 0; i < max_live; i++) {
        mnode_t *n = &N[i];
        n->in_y = n->in_u = n->in_s = false;
        if (n->used && n->alive && n->gen >= 0 && n->gen <= g) {
            n->in_y = true;
            n->gen = g;
        }
    }
    for (int w = 0; w < MAX_WREFS; w++) {
        mwref_t *r = &W[w];
        r->in_y = r->in_u = r->in_s = false;
        if (r->used && r->alive && r->gen >= 0 && r->gen <= g) {
            r->in_y = true;
            r->gen = g;
        }
    }
    m_find_reachable(in_y, w_in_y);
    size_t survivors = 0;
    for (int i = 0; i < max_live; i++)
        if (N[i].in_y) {
            if (N[i].mark) {
                survivors++;
                N[i].gen = old;
            } else {
                N[i].in_u = true;
            }
        }
    for (int w = 0; w < MAX_WREFS; w++)
        if (W[w].in_y) {
            if (W[w].mark) {
                survivors++;
                W[w].gen = old;
            } else {
                W[w].in_u = true;
            }
        }
    if (g == 1)
        M.pending += survivors;
    else if (g == 2) {
        M.pending = 0;
        M.total = survivors;
    }
    /* Weak references to unreachable nodes: cleared; callbacks unless the
     * reference is unreachable itself; those the callbacks freed die. */
    long user_code = 0;
    int to_free[MAX_WREFS], freeing = 0;
    for (int w = 0; w < MAX_WREFS; w++) {
        mwref_t *r = &W[w];
        if (!(r->used && r->alive && r->referent >= 0 && N[r->referent].in_u))
            continue;
        r->referent = -1;
        if (r->has_cb && !r->in_u) {
            r->e_cb_lo++;
            r->e_cb_hi++;
            stats.callbacks++;
            user_code++;
            if (r->free_self)
                to_free[freeing++] = w;
        }
    }
    for (int f = 0; f < freeing; f++)
        m_wref_release(to_free[f]);
    /* Finalizers of the unreachable nodes not finalized yet. */
    for (int i = 0; i < max_live; i++) {
        mnode_t *n = &N[i];
        if (n->in_u && n->has_finalizer && !n->finalized) {
            n->finalized = true;
            n->e_finalized++;
            user_code++;
            if (n->resurrect) {
                n->res++;
                n->rc++;
                stats.resurrections++;
            }
        }
    }
    /* Resurrection re-check: what the finalizers made reachable (and what it
     * reaches) survives into the old generation. */
    if (user_code > 0) {
        m_find_reachable(in_u, w_in_u);
        for (int i = 0; i < max_live; i++)
            if (N[i].in_u && N[i].mark)
                N[i].gen = old;
        for (int w = 0; w < MAX_WREFS; w++)
            if (W[w].in_u && W[w].mark)
                W[w].gen = old;
    } else {
        for (int i = 0; i < max_live; i++)
            N[i].mark = false;
        for (int w = 0; w < MAX_WREFS; w++)
            W[w].mark = false;
    }
    long collected = 0;
    for (int i = 0; i < max_live; i++)
        if (N[i].in_u && !N[i].mark) {
            N[i].in_s = true;
            collected++;
        }
    for (int w = 0; w < MAX_WREFS; w++) {
        mwref_t *r = &W[w];
        if (r->in_u && !r->mark) {
            r->in_s = true;
            collected++;
        }
        r->died_in_delete = r->cleared_in_delete = false;
        r->cb_before_delete = r->e_cb_lo;
    }
    /* Delete: clear each (in some order); the cycles break and they die.
     * Garbage holding the last reference to older garbage frees it too. */
    M.in_delete = true;
    for (int i = 0; i < max_live; i++) {
        if (!N[i].in_s || !N[i].alive)
            continue;
        N[i].rc++;
        m_clear(i);
        m_decref_node(i);
    }
    M.in_delete = false;
    for (int w = 0; w < MAX_WREFS; w++) {
        mwref_t *r = &W[w];
        if (r->used && r->has_cb && !r->in_s && r->died_in_delete && r->cleared_in_delete) {
            /* Owner and referent both died in the cascade: the order decides. */
            r->e_cb_lo = r->cb_before_delete;
            r->e_cb_hi = r->cb_before_delete + 1;
            stats.unordered++;
        }
    }
    for (int i = 0; i < max_live; i++) {
        if (N[i].in_s && N[i].alive)
            fault(F_MODEL, "model: garbage n%" PRIu64 " survived its collection", N[i].serial);
        N[i].in_y = N[i].in_u = N[i].in_s = N[i].mark = false;
    }
    for (int w = 0; w < MAX_WREFS; w++) {
        if (W[w].in_s && W[w].alive)
            fault(F_MODEL, "model: garbage w%ld survived its collection", W[w].seq);
        W[w].in_y = W[w].in_u = W[w].in_s = W[w].mark = false;
    }
    M.collections[g]++;
    M.collected[g] += collected;
    stats.gc_freed += collected;
    return collected;
}

/* pym_new of a GC type: count, maybe collect (the new object is not part of it). */
static void m_alloc_gc(void)
{
    M.count[0]++;
    if (!(M.count[0] > M.threshold[0] && M.threshold[0] > 0 && M.enabled))
        return;
    for (int g = PYM_GC_GENERATIONS - 1; g >= 0; g--) {
        if (M.count[g] > M.threshold[g]) {
            if (g == PYM_GC_GENERATIONS - 1 && M.pending < M.total / 4)
                continue;
            stats.auto_collections++;
            m_collect(g);
            return;
        }
    }
}

/* ---- choosing ------------------------------------------------------------------------ */
/* A random entry satisfying `ok`, or -1. */
static int pick_node(bool (*ok)(int))
{
    int candidates[MAX_NODES], count = 0;
    for (int i = 0; i < max_live; i++)
        if (N[i].used && N[i].alive && ok(i))
            candidates[count++] = i;
    return count ? candidates[rnd((unsigned)count)] : -1;
}

static int pick_wref(bool (*ok)(int))
{
    int candidates[MAX_WREFS], count = 0;
    for (int w = 0; w < MAX_WREFS; w++)
        if (W[w].used && W[w].alive && ok(w))
            candidates[count++] = w;
    return count ? candidates[rnd((unsigned)count)] : -1;
}

static bool any_node(int i) { (void)i; return true; }
static bool has_root(int i) { return N[i].roots > 0; }
static bool has_slot_set(int i)
{
    for (int k = 0; k < SLOTS; k++)
        if (N[i].slot[k] >= 0)
            return true;
    return false;
}
static bool has_wref_field(int i) { return N[i].wref[0] >= 0 || N[i].wref[1] >= 0; }
static bool any_wref(int w) { (void)w; return true; }
static bool test_wref(int w) { return W[w].owner == -1; }

static int test_wref_count(void)
{
    int count = 0;
    for (int w = 0; w < MAX_WREFS; w++)
        count += W[w].used && W[w].alive && W[w].owner == -1;
    return count;
}

static int frozen_count(void)
{
    int count = 0;
    for (int i = 0; i < max_live; i++)
        count += N[i].used && N[i].alive && N[i].gen == GEN_FROZEN;
    for (int w = 0; w < MAX_WREFS; w++)
        count += W[w].used && W[w].alive && W[w].gen == GEN_FROZEN;
    return count;
}

static void describe(const char *name, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void describe(const char *name, const char *format, ...)
{
    op_name = name;
    va_list ap;
    va_start(ap, format);
    vsnprintf(op_text, sizeof(op_text), format, ap);
    va_end(ap);
    if (verbose)
        fprintf(stderr, "op %ld: %s %s\n", op_now, name, op_text);
}

/* ---- operations (each: the real calls, and the model's replay) --------------------- */
static bool full_collect_done; /* this operation was pym_gc_collect(2) with nothing frozen */

static int free_node_entry(void)
{
    for (int k = 0; k < max_live; k++)
        if (!N[k].used)
            return k;
    return -1;
}

/* A new node in entry i (free), held by one root. */
static void create_node(int i, bool finalizer, bool resurrect)
{
    m_alloc_gc();
    node_t *n = pym_new(finalizer ? &fin_type : &plain_type);
    REQUIRE(n != NULL, "pym_new: %s", strerror(errno));
    n->serial = ++next_serial;
    n->idx = i;
    n->resurrect = resurrect;
    mnode_t *m = &N[i];
    memset(m, 0, sizeof(*m));
    m->used = m->alive = true;
    m->ptr = n;
    m->serial = n->serial;
    m->has_finalizer = finalizer;
    m->resurrect = resurrect;
    m->rc = 1;
    m->roots = 1;
    m->gen = 0;
    for (int k = 0; k < SLOTS; k++)
        m->slot[k] = -1;
    for (int j = 0; j < WFIELDS; j++)
        m->wref[j] = -1;
}

static bool op_create(void)
{
    int i = free_node_entry();
    if (i < 0)
        return false;
    bool finalizer = chance(60), resurrect = finalizer && chance(30);
    describe("create", "n%" PRIu64 " (%s%s)", next_serial + 1, finalizer ? "finalizer" : "plain",
             resurrect ? ", resurrects" : "");
    create_node(i, finalizer, resurrect);
    return true;
}

static void drop_root(int i)
{
    N[i].roots--;
    pym_decref(N[i].ptr);
    m_decref_node(i);
}

static bool op_drop_root(void)
{
    int i = pick_node(has_root);
    if (i < 0)
        return false;
    describe("drop root", "n%" PRIu64, N[i].serial);
    drop_root(i);
    return true;
}

static bool op_add_root(void)
{
    int i = pick_node(any_node);
    if (i < 0)
        return false;
    describe("add root", "n%" PRIu64, N[i].serial);
    pym_incref(N[i].ptr);
    N[i].roots++;
    N[i].rc++;
    return true;
}

/* a->slot[k] = b (b may be -1): incref the new, decref the old. */
static void store(int a, int k, int b)
{
    node_t *target = b >= 0 ? N[b].ptr : NULL;
    node_t *na = N[a].ptr;
    pym_incref(target);
    void *old_ptr = na->slot[k];
    na->slot[k] = target;
    pym_decref(old_ptr);
    if (b >= 0)
        N[b].rc++;
    int old = N[a].slot[k];
    N[a].slot[k] = b;
    if (old >= 0)
        m_decref_node(old);
}

static bool op_store(void)
{
    int a = pick_node(any_node), b = pick_node(any_node);
    if (a < 0)
        return false;
    int k = (int)rnd(SLOTS);
    describe("store", "n%" PRIu64 ".slot[%d] = n%" PRIu64, N[a].serial, k, N[b].serial);
    store(a, k, b);
    return true;
}

static bool op_clear_slot(void)
{
    int a = pick_node(has_slot_set);
    if (a < 0)
        return false;
    int k;
    do
        k = (int)rnd(SLOTS);
    while (N[a].slot[k] < 0);
    describe("clear slot", "n%" PRIu64 ".slot[%d]", N[a].serial, k);
    store(a, k, -1);
    return true;
}

static int free_wref_entry(void)
{
    for (int k = 0; k < MAX_WREFS; k++)
        if (!W[k].used)
            return k;
    return -1;
}

/* A new weak reference (entry w) to node x, owned by the test (a < 0) or by
 * field j of node a (replacing what was there). */
static void weakref_new(int w, int x, int a, int j, bool has_cb, bool free_self)
{
    mwref_t *r = &W[w];
    memset(r, 0, sizeof(*r));
    r->used = true;
    r->owner = a < 0 ? -1 : a * WFIELDS + j;
    r->has_cb = has_cb;
    r->free_self = free_self;
    r->seq = ++M.seq;
    /* Hold the referent and the owner: pym_new may collect. */
    pym_incref(N[x].ptr);
    N[x].rc++;
    if (a >= 0) {
        pym_incref(N[a].ptr);
        N[a].rc++;
    }
    m_alloc_gc();
    pym_weakref *ref = pym_weakref_new(N[x].ptr, has_cb ? weak_callback : NULL, r);
    REQUIRE(ref != NULL, "pym_weakref_new: %s", strerror(errno));
    r->ptr = ref;
    r->alive = true;
    r->referent = x;
    r->gen = 0;
    if (a >= 0) {
        pym_weakref *old_ptr = N[a].ptr->wref[j];
        N[a].ptr->wref[j] = ref;
        pym_weakref_free(old_ptr);
        int old = N[a].wref[j];
        N[a].wref[j] = w;
        if (old >= 0)
            m_wref_release(old);
    }
    pym_decref(N[x].ptr);
    m_decref_node(x);
    if (a >= 0) {
        pym_decref(N[a].ptr);
        m_decref_node(a);
    }
}

static bool op_weakref_new(void)
{
    int x = pick_node(any_node), w = free_wref_entry();
    if (x < 0 || w < 0)
        return false;
    int a = -1, j = 0;
    if (test_wref_count() >= MAX_TEST_WREFS || chance(50)) {
        a = pick_node(any_node);
        j = (int)rnd(WFIELDS);
    }
    bool has_cb = chance(80), free_self = has_cb && a < 0 && chance(25);
    describe("weakref new", "w%ld -> n%" PRIu64 ", owned by %s%" PRIu64 "[%d]%s%s", M.seq + 1, N[x].serial,
             a < 0 ? "the test" : "n", a < 0 ? 0 : N[a].serial, j, has_cb ? ", callback" : "",
             free_self ? " freeing it" : "");
    weakref_new(w, x, a, j, has_cb, free_self);
    return true;
}

/* Young garbage over older nodes: two new nodes a <-> b, b holding an
 * existing node x, a owning a weak reference (with a callback) to x or to
 * another existing node; then the roots of a and b are dropped, and
 * sometimes a root of x too (the test hands its reference to b).  When x
 * was promoted before and b holds its last reference, the collection that
 * frees a and b frees x by refcount in its delete phase, while a's weak
 * reference is garbage of that same collection: its callback must not run. */
static bool op_garbage_pair(void)
{
    int x = pick_node(any_node), y = pick_node(any_node);
    if (x < 0)
        return false;
    int a = free_node_entry();
    if (a < 0)
        return false;
    N[a].used = true; /* reserved: b must be another entry */
    int b = free_node_entry();
    N[a].used = false;
    int w = free_wref_entry();
    if (b < 0 || w < 0)
        return false;
    int target = chance(50) ? x : y;
    bool hand_over = N[x].roots > 0 && chance(60);
    describe("garbage pair", "n%" PRIu64 " <-> n%" PRIu64 ", holding n%" PRIu64 "%s, weakref w%ld -> n%" PRIu64,
             next_serial + 1, next_serial + 2, N[x].serial, hand_over ? " (the test's root handed over)" : "",
             M.seq + 1, N[target].serial);
    /* x and target are held while the nodes are made: pym_new may collect. */
    pym_incref(N[x].ptr), N[x].roots++, N[x].rc++;
    pym_incref(N[target].ptr), N[target].roots++, N[target].rc++;
    create_node(a, chance(50), false);
    create_node(b, chance(50), false);
    store(b, 0, x);
    weakref_new(w, target, a, (int)rnd(WFIELDS), true, false);
    store(a, 0, b);
    store(b, 1, a);
    drop_root(a);
    drop_root(b);
    drop_root(target);
    drop_root(x);
    if (hand_over)
        drop_root(x);
    return true;
}

static bool op_weakref_free(void)
{
    if (chance(50)) {
        int w = pick_wref(test_wref);
        if (w < 0)
            return false;
        describe("weakref free", "w%ld (the test's)", W[w].seq);
        pym_weakref_free(W[w].ptr);
        m_wref_release(w);
    } else {
        int a = pick_node(has_wref_field);
        if (a < 0)
            return false;
        int j = N[a].wref[0] >= 0 ? 0 : 1;
        describe("weakref free", "n%" PRIu64 ".wref[%d] (w%ld)", N[a].serial, j, W[N[a].wref[j]].seq);
        pym_weakref *ref = N[a].ptr->wref[j];
        N[a].ptr->wref[j] = NULL;
        pym_weakref_free(ref);
        int w = N[a].wref[j];
        N[a].wref[j] = -1;
        m_wref_release(w);
    }
    return true;
}

static bool op_weakref_get(void)
{
    int w = pick_wref(any_wref);
    if (w < 0)
        return false;
    mwref_t *r = &W[w];
    describe("weakref get", "w%ld", r->seq);
    void *got = pym_weakref_get(r->ptr);
    void *want = r->referent >= 0 ? N[r->referent].ptr : NULL;
    if (got != want) {
        fault(F_WEAK, "pym_weakref_get(w%ld) = %p, expected %p", r->seq, got, want);
        pym_decref(got);
    } else if (got != NULL && chance(50)) {
        N[r->referent].roots++; /* keep it as a root */
        N[r->referent].rc++;
    } else {
        pym_decref(got);
    }
    return true;
}

static bool op_collect(void)
{
    unsigned roll = rnd(10);
    int g = roll < 5 ? 0 : roll < 8 ? 1 : 2;
    bool none_frozen = frozen_count() == 0;
    describe("collect", "generation %d%s", g, none_frozen ? "" : " (objects frozen)");
    long got = pym_gc_collect(g);
    long want = m_collect(g);
    stats.explicit_collections++;
    if (got != want)
        fault(F_OP, "pym_gc_collect(%d) = %ld, expected %ld", g, got, want);
    full_collect_done = g == 2 && none_frozen;
    return true;
}

static bool op_drop_resurrected(void)
{
    if (res_n == 0)
        return false;
    int r = (int)rnd((unsigned)res_n);
    node_t *n = res_list[r];
    res_list[r] = res_list[--res_n];
    mnode_t *m = lookup(n, "resurrected list entry");
    describe("drop resurrected", "n%" PRIu64, m ? m->serial : 0);
    if (m == NULL || m->res <= 0) {
        fault(F_RES, "the resurrected list holds %p, which the model does not expect there", (void *)n);
        return true;
    }
    int idx = (int)(m - N); /* n may be freed by the decref */
    m->res--;
    pym_decref(n);
    m_decref_node(idx);
    return true;
}

static bool op_thresholds(void)
{
    long t0, t1, t2;
    unsigned roll = rnd(10);
    if (roll < 4) {
        t0 = 1 + rnd(12);
        t1 = rnd(4);
        t2 = rnd(4);
    } else if (roll < 7) {
        t0 = 1 + rnd(40);
        t1 = rnd(10);
        t2 = rnd(10);
    } else if (roll < 9) {
        t0 = 700, t1 = 10, t2 = 10;
    } else {
        t0 = 0, t1 = rnd(4), t2 = rnd(4);
    }
    describe("thresholds", "%ld %ld %ld", t0, t1, t2);
    pym_gc_set_threshold(t0, t1, t2);
    M.threshold[0] = t0, M.threshold[1] = t1, M.threshold[2] = t2;
    return true;
}

static bool op_enable(void)
{
    bool on = chance(70);
    describe(on ? "enable" : "disable", "%s", "");
    if (on)
        pym_gc_enable();
    else
        pym_gc_disable();
    M.enabled = on;
    return true;
}

static void m_freeze(void)
{
    for (int i = 0; i < max_live; i++)
        if (N[i].used && N[i].alive && N[i].gen >= 0)
            N[i].gen = GEN_FROZEN;
    for (int w = 0; w < MAX_WREFS; w++)
        if (W[w].used && W[w].alive && W[w].gen >= 0)
            W[w].gen = GEN_FROZEN;
    M.count[0] = 0;
}

static void m_unfreeze(void)
{
    for (int i = 0; i < max_live; i++)
        if (N[i].used && N[i].alive && N[i].gen == GEN_FROZEN)
            N[i].gen = PYM_GC_GENERATIONS - 1;
    for (int w = 0; w < MAX_WREFS; w++)
        if (W[w].used && W[w].alive && W[w].gen == GEN_FROZEN)
            W[w].gen = PYM_GC_GENERATIONS - 1;
}

static bool op_freeze(void)
{
    if (frozen_count() > 0) {
        describe("unfreeze", "%s", "");
        pym_gc_unfreeze();
        m_unfreeze();
    } else {
        if (!chance(40))
            return false;
        describe("freeze", "%s", "");
        pym_gc_freeze();
        m_freeze();
    }
    return true;
}

typedef struct operation {
    bool (*run)(void);
    unsigned weight;
} operation_t;

static const operation_t operations[] = {
    {op_create, 14},       {op_drop_root, 12},  {op_add_root, 3},   {op_store, 24},
    {op_clear_slot, 6},    {op_weakref_new, 8}, {op_weakref_free, 4}, {op_weakref_get, 4},
    {op_collect, 5},       {op_drop_resurrected, 3}, {op_thresholds, 2}, {op_enable, 1},
    {op_freeze, 1},        {op_garbage_pair, 3},
};

static void run_one_operation(void)
{
    unsigned total = 0;
    for (size_t o = 0; o < sizeof(operations) / sizeof(operations[0]); o++)
        total += operations[o].weight;
    for (;;) {
        unsigned roll = rnd(total);
        size_t o = 0;
        while (roll >= operations[o].weight)
            roll -= operations[o++].weight;
        if (operations[o].run())
            return;
    }
}

/* ---- comparing reality with the model ------------------------------------------------ */
typedef struct gen_scan {
    int gen;
    int nodes, wrefs;
} gen_scan_t;

static int gen_visit(void *obj, void *arg)
{
    gen_scan_t *scan = arg;
    const pym_type *type = pym_type_of(obj);
    if (type == &fin_type || type == &plain_type) {
        scan->nodes++;
        mnode_t *m = lookup(obj, "pym_gc_visit_objects");
        if (m != NULL && m->gen != scan->gen)
            fault(F_GEN, "n%" PRIu64 " is in generation %d, expected %d", m->serial, scan->gen, m->gen);
    } else {
        scan->wrefs++;
    }
    return 0;
}

static int count_visit(void *obj, void *arg)
{
    (void)obj;
    ++*(long *)arg;
    return 0;
}

/* Reachable from the test's roots and the resurrected list, through model slots. */
static void compute_reachable(bool *reach)
{
    int queue[MAX_NODES], head = 0, tail = 0;
    for (int i = 0; i < max_live; i++) {
        reach[i] = N[i].used && (N[i].roots > 0 || N[i].res > 0);
        if (reach[i])
            queue[tail++] = i;
    }
    while (head < tail) {
        int a = queue[head++];
        for (int k = 0; k < SLOTS; k++) {
            int t = N[a].slot[k];
            if (t >= 0 && !reach[t]) {
                reach[t] = true;
                queue[tail++] = t;
            }
        }
    }
}

static void verify(void)
{
    /* Nodes. */
    long model_rc[MAX_NODES] = {0};
    for (int i = 0; i < max_live; i++) {
        if (!N[i].used || !N[i].alive)
            continue;
        model_rc[i] += N[i].roots + N[i].res;
        for (int k = 0; k < SLOTS; k++)
            if (N[i].slot[k] >= 0)
                model_rc[N[i].slot[k]]++;
    }
    for (int i = 0; i < max_live; i++) {
        mnode_t *m = &N[i];
        if (!m->used)
            continue;
        bool actual_alive = m->a_dealloc == 0;
        if (m->a_dealloc > 1)
            fault(F_ALIVE, "n%" PRIu64 " deallocated %d times", m->serial, m->a_dealloc);
        if (actual_alive != m->alive)
            fault(F_ALIVE, "n%" PRIu64 " is %s, expected %s (rc model %ld, roots %d, resurrected %d, gen %d)",
                  m->serial, actual_alive ? "alive" : "deallocated", m->alive ? "alive" : "deallocated", m->rc,
                  m->roots, m->res, m->gen);
        if (m->a_finalized != m->e_finalized)
            fault(F_FINALIZE, "n%" PRIu64 " finalized %d times, expected %d", m->serial, m->a_finalized,
                  m->e_finalized);
        if (m->alive && m->rc != model_rc[i])
            fault(F_MODEL, "n%" PRIu64 ": model count %ld, references %ld", m->serial, m->rc, model_rc[i]);
        if (!m->alive && (m->rc != 0 || m->roots != 0 || m->res != 0))
            fault(F_MODEL, "n%" PRIu64 ": dead in the model with count %ld", m->serial, m->rc);
        if (!actual_alive || !m->alive)
            continue;
        node_t *n = m->ptr;
        if (m->a_cleared != 0)
            fault(F_SLOTS, "n%" PRIu64 " is alive but was cleared %d times", m->serial, m->a_cleared);
        size_t rc = pym_refcount(n);
        if ((long)rc != m->rc)
            fault(F_REFCOUNT, "pym_refcount(n%" PRIu64 ") = %zu, expected %ld (roots %d, resurrected %d)",
                  m->serial, rc, m->rc, m->roots, m->res);
        if (pym_gc_is_finalized(n) != (m->finalized ? 1 : 0))
            fault(F_FINALIZE, "pym_gc_is_finalized(n%" PRIu64 ") = %d, expected %d", m->serial,
                  pym_gc_is_finalized(n), m->finalized);
        if (!pym_gc_is_tracked(n))
            fault(F_GEN, "n%" PRIu64 " is not tracked", m->serial);
        for (int k = 0; k < SLOTS; k++) {
            void *want = m->slot[k] >= 0 ? N[m->slot[k]].ptr : NULL;
            if (n->slot[k] != want)
                fault(F_SLOTS, "n%" PRIu64 ".slot[%d] = %p, expected %p", m->serial, k, n->slot[k], want);
        }
        for (int j = 0; j < WFIELDS; j++) {
            pym_weakref *want = m->wref[j] >= 0 ? W[m->wref[j]].ptr : NULL;
            if (n->wref[j] != want)
                fault(F_SLOTS, "n%" PRIu64 ".wref[%d] = %p, expected %p", m->serial, j, (void *)n->wref[j],
                      (void *)want);
        }
        size_t weak = 0;
        for (int w = 0; w < MAX_WREFS; w++)
            weak += W[w].used && W[w].alive && W[w].referent == i;
        if (pym_weakref_count(n) != weak)
            fault(F_WEAK, "pym_weakref_count(n%" PRIu64 ") = %zu, expected %zu", m->serial, pym_weakref_count(n),
                  weak);
    }
    /* The spec-level invariant, independent of the model's predictions. */
    bool reach[MAX_NODES];
    compute_reachable(reach);
    for (int i = 0; i < max_live; i++) {
        mnode_t *m = &N[i];
        if (!m->used)
            continue;
        if (reach[i] && m->a_dealloc != 0)
            fault(F_REACH, "n%" PRIu64 " is reachable from the roots but was deallocated", m->serial);
        if (reach[i] && !m->alive)
            fault(F_MODEL, "model: n%" PRIu64 " is reachable but predicted dead", m->serial);
        if (full_collect_done && !reach[i] && m->a_dealloc == 0)
            fault(F_REACH, "n%" PRIu64 " is unreachable but alive after pym_gc_collect(2)", m->serial);
        if (full_collect_done && !reach[i] && m->alive)
            fault(F_MODEL, "model: n%" PRIu64 " is unreachable but predicted alive after collect(2)", m->serial);
    }
    /* Weak references. */
    for (int w = 0; w < MAX_WREFS; w++) {
        mwref_t *r = &W[w];
        if (!r->used)
            continue;
        if (r->a_cb < r->e_cb_lo || r->a_cb > r->e_cb_hi)
            fault(F_WEAK, "w%ld (referent %s, owner %s): %d callbacks, expected %d%s", r->seq,
                  r->referent >= 0 ? "alive" : "cleared", r->owner < 0 ? "test" : "node", r->a_cb, r->e_cb_lo,
                  r->e_cb_hi != r->e_cb_lo ? " or one more" : "");
        else
            r->e_cb_lo = r->e_cb_hi = r->a_cb;
        if (!r->alive)
            continue;
        if (r->a_freed_by_cb) {
            fault(F_WEAK, "w%ld was freed by its callback, the model expects it alive", r->seq);
            continue;
        }
        if (pym_refcount(r->ptr) != 1)
            fault(F_WEAK, "pym_refcount(w%ld) = %zu, expected 1", r->seq, pym_refcount(r->ptr));
        void *got = pym_weakref_get(r->ptr);
        void *want = r->referent >= 0 ? N[r->referent].ptr : NULL;
        if (got != want)
            fault(F_WEAK, "pym_weakref_get(w%ld) = %p, expected %p (referent %s)", r->seq, got, want,
                  r->referent >= 0 ? "alive" : "cleared");
        pym_decref(got);
    }
    /* Generations. */
    for (int g = 0; g < PYM_GC_GENERATIONS; g++) {
        gen_scan_t scan = {g, 0, 0};
        int rc = pym_gc_visit_objects(g, gen_visit, &scan);
        int nodes = 0, wrefs = 0;
        for (int i = 0; i < max_live; i++)
            nodes += N[i].used && N[i].alive && N[i].gen == g;
        for (int w = 0; w < MAX_WREFS; w++)
            wrefs += W[w].used && W[w].alive && W[w].gen == g;
        if (rc != 0 || scan.nodes != nodes || scan.wrefs != wrefs)
            fault(F_GEN, "generation %d holds %d nodes and %d weakrefs, expected %d and %d (visit: %d)", g,
                  scan.nodes, scan.wrefs, nodes, wrefs, rc);
    }
    if (pym_gc_get_freeze_count() != (size_t)frozen_count())
        fault(F_GEN, "%zu objects frozen, expected %d", pym_gc_get_freeze_count(), frozen_count());
    long count[PYM_GC_GENERATIONS], threshold[PYM_GC_GENERATIONS];
    pym_gc_get_count(count);
    pym_gc_get_threshold(threshold);
    if (memcmp(count, M.count, sizeof(count)) != 0)
        fault(F_COUNTS, "count (%ld, %ld, %ld), expected (%ld, %ld, %ld)", count[0], count[1], count[2], M.count[0],
              M.count[1], M.count[2]);
    if (memcmp(threshold, M.threshold, sizeof(threshold)) != 0 || pym_gc_isenabled() != (M.enabled ? 1 : 0))
        fault(F_COUNTS, "thresholds (%ld, %ld, %ld) enabled %d, expected (%ld, %ld, %ld) %d", threshold[0],
              threshold[1], threshold[2], pym_gc_isenabled(), M.threshold[0], M.threshold[1], M.threshold[2],
              M.enabled);
    /* Statistics and the collection callback. */
    pym_gc_stats_t st[PYM_GC_GENERATIONS];
    memset(st, 0, sizeof(st));
    pym_gc_get_stats(st);
    for (int g = 0; g < PYM_GC_GENERATIONS; g++) {
        if (a_collections[g] != M.collections[g] || (long)st[g].collections != M.collections[g])
            fault(F_STATS, "generation %d collected %ld times (callback), %zu (stats), expected %ld", g,
                  a_collections[g], st[g].collections, M.collections[g]);
        if (a_collected[g] != M.collected[g] || (long)st[g].collected != M.collected[g] || st[g].uncollectable != 0)
            fault(F_STATS, "generation %d: %ld collected (callback), %zu (stats), expected %ld; %zu uncollectable",
                  g, a_collected[g], st[g].collected, M.collected[g], st[g].uncollectable);
    }
    if (gc_open != -1)
        fault(F_STATS, "a collection of %d started and did not stop", gc_open);
    if (pym_gc_garbage_count() != 0)
        fault(F_STATS, "%zu objects on the garbage list", pym_gc_garbage_count());
    /* The resurrected list. */
    int listed[MAX_NODES] = {0}, expected = 0;
    for (int r = 0; r < res_n; r++) {
        mnode_t *m = lookup(res_list[r], "resurrected list");
        if (m != NULL)
            listed[m - N]++;
    }
    for (int i = 0; i < max_live; i++) {
        if (!N[i].used)
            continue;
        expected += N[i].res;
        if (listed[i] != N[i].res)
            fault(F_RES, "n%" PRIu64 " is %d times on the resurrected list, expected %d", N[i].serial, listed[i],
                  N[i].res);
    }
    if (expected != res_n)
        fault(F_RES, "%d entries on the resurrected list, expected %d", res_n, expected);

    for (int f = 0; f < F_FAMILIES; f++) {
        CHECK(faults[f].count == 0, "seed %" PRIu64 " op %ld (%s %s): %s: %d fault(s), first: %s", seed_now, op_now,
              op_name, op_text, family_name[f], faults[f].count, faults[f].first);
        faults[f].count = 0;
        faults[f].first[0] = '\0';
    }
    full_collect_done = false;
    /* Entries of the dead are free again. */
    for (int i = 0; i < max_live; i++)
        if (N[i].used && !N[i].alive && N[i].a_dealloc != 0)
            N[i].used = false;
    for (int w = 0; w < MAX_WREFS; w++)
        if (W[w].used && !W[w].alive)
            W[w].used = false;
}

/* ---- one seed ------------------------------------------------------------------------- */
static void drop_everything(void)
{
    describe("final cleanup", "unfreeze, drop every reference, collect(2)");
    if (frozen_count() > 0) {
        pym_gc_unfreeze();
        m_unfreeze();
    }
    pym_gc_set_threshold(700, 10, 10);
    M.threshold[0] = 700, M.threshold[1] = 10, M.threshold[2] = 10;
    pym_gc_enable();
    M.enabled = true;
    for (int w = 0; w < MAX_WREFS; w++)
        if (W[w].used && W[w].alive && W[w].owner == -1) {
            pym_weakref_free(W[w].ptr);
            m_wref_release(w);
        }
    for (int i = 0; i < max_live; i++)
        while (N[i].used && N[i].alive && N[i].roots > 0) {
            N[i].roots--;
            pym_decref(N[i].ptr);
            m_decref_node(i);
        }
    /* The collection may run finalizers that resurrect (each at most once in a
     * node's life): drop the resurrected list and collect again until none does. */
    for (int round = 0; round < 4; round++) {
        while (res_n > 0) {
            node_t *n = res_list[--res_n];
            mnode_t *m = lookup(n, "resurrected list entry");
            if (m == NULL || m->res <= 0) {
                fault(F_RES, "unexpected resurrected list entry %p", (void *)n);
                continue;
            }
            int idx = (int)(m - N);
            m->res--;
            pym_decref(n);
            m_decref_node(idx);
        }
        long got = pym_gc_collect(2);
        long want = m_collect(2);
        if (got != want)
            fault(F_OP, "final pym_gc_collect(2) round %d = %ld, expected %ld", round + 1, got, want);
        if (res_n == 0)
            break;
    }
    full_collect_done = true;
}

/* Returns whether every check passed; stops at the first failing operation. */
static bool run_seed(uint64_t seed, long ops)
{
    int failed_before = check_failed;
    seed_now = seed;
    seed_for_signal = seed;
    rng = seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    if (rng == 0)
        rng = 1;
    memset(&M, 0, sizeof(M));
    memset(N, 0, sizeof(N));
    memset(W, 0, sizeof(W));
    res_n = 0;
    static const int lives[] = {4, 8, 16, 24, MAX_NODES};
    max_live = lives[rnd(sizeof(lives) / sizeof(lives[0]))];
    M.threshold[0] = 700, M.threshold[1] = 10, M.threshold[2] = 10;
    M.enabled = true;
    /* Every seed runs in a fresh process: the collector starts untouched. */
    memset(a_collections, 0, sizeof(a_collections));
    memset(a_collected, 0, sizeof(a_collected));
    long count[PYM_GC_GENERATIONS];
    pym_gc_get_count(count);
    REQUIRE(count[0] == 0 && count[1] == 0 && count[2] == 0 && pym_gc_visit_objects(-1, count_visit, &count[0]) == 0 &&
                count[0] == 0,
            "the collector was used before seed %" PRIu64, seed);
    REQUIRE(pym_gc_callback_add(gc_callback, NULL) == 0, "pym_gc_callback_add");
    if (chance(50)) {
        op_now = 0;
        op_thresholds();
    }
    for (op_now = 1; op_now <= ops; op_now++) {
        run_one_operation();
        stats.ops++;
        verify();
        if (check_failed != failed_before)
            break;
    }
    if (check_failed == failed_before) {
        op_now = ops + 1;
        drop_everything();
        verify();
        long tracked = 0;
        CHECK(pym_gc_visit_objects(-1, count_visit, &tracked) == 0 && tracked == 0,
              "seed %" PRIu64 ": %ld objects still tracked at the end", seed, tracked);
        int alive = 0;
        for (int i = 0; i < max_live; i++)
            alive += N[i].used;
        CHECK(alive == 0, "seed %" PRIu64 ": %d nodes alive at the end", seed, alive);
        CHECK(pym_gc_garbage_count() == 0 && pym_gc_get_freeze_count() == 0,
              "seed %" PRIu64 ": garbage list %zu, frozen %zu at the end", seed, pym_gc_garbage_count(),
              pym_gc_get_freeze_count());
    }
    CHECK(pym_gc_callback_remove(gc_callback, NULL) == 0, "pym_gc_callback_remove");
    if (check_failed != failed_before) {
        fprintf(stderr, "seed %" PRIu64 " failed at operation %ld; replay: api_gc_random --seed %" PRIu64
                        " --ops %ld -v\n", seed, op_now, seed, op_now <= ops ? op_now : ops);
        return false;
    }
    return true;
}

/* ---- crash reports ------------------------------------------------------------------- */
static void put_text(const char *text)
{
    ssize_t ignored = write(2, text, strlen(text));
    (void)ignored;
}

static void put_number(uint64_t value)
{
    char digits[24];
    int n = 0;
    do
        digits[sizeof(digits) - 1 - n++] = (char)('0' + value % 10);
    while ((value /= 10) != 0);
    ssize_t ignored = write(2, digits + sizeof(digits) - n, (size_t)n);
    (void)ignored;
}

static void on_fatal_signal(int sig)
{
    put_text("api_gc_random: signal ");
    put_number((uint64_t)sig);
    put_text(" in seed ");
    put_number(seed_for_signal);
    put_text(" at operation ");
    put_number((uint64_t)op_now);
    put_text("; replay: api_gc_random --seed ");
    put_number(seed_for_signal);
    put_text(" --ops ");
    put_number((uint64_t)op_now);
    put_text(" -v\n");
    signal(sig, SIG_DFL);
    raise(sig);
}

static void catch_fatal_signals(void)
{
    static const int signals[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGALRM};
    for (size_t s = 0; s < sizeof(signals) / sizeof(signals[0]); s++)
        signal(signals[s], on_fatal_signal);
}

/* ---- driver ----------------------------------------------------------------------------- */
typedef struct job {
    pid_t pid;
    int fd;
    uint64_t seed;
    long ops;
} job_t;

static void start_job(job_t *job, uint64_t seed, long ops)
{
    int fds[2];
    REQUIRE(pipe(fds) == 0, "pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(fds[0]);
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        catch_fatal_signals();
        alarm(120);
        check_passed = check_failed = 0;
        memset(&stats, 0, sizeof(stats));
        run_seed(seed, ops);
        stats.passed = check_passed;
        stats.failed = check_failed;
        if (write(fds[1], &stats, sizeof(stats)) != (ssize_t)sizeof(stats))
            _exit(3);
        fflush(stderr);
        exit(0);
    }
    close(fds[1]);
    *job = (job_t){pid, fds[0], seed, ops};
}

static run_stats_t total_stats;

static void finish_job(job_t *job, int status)
{
    run_stats_t got;
    memset(&got, 0, sizeof(got));
    ssize_t n = read(job->fd, &got, sizeof(got));
    close(job->fd);
    if (n == (ssize_t)sizeof(got)) {
        check_passed += got.passed;
        check_failed += got.failed;
        total_stats.ops += got.ops;
        total_stats.explicit_collections += got.explicit_collections;
        total_stats.auto_collections += got.auto_collections;
        total_stats.gc_freed += got.gc_freed;
        total_stats.rc_deaths += got.rc_deaths;
        total_stats.resurrections += got.resurrections;
        total_stats.callbacks += got.callbacks;
        total_stats.unordered += got.unordered;
        total_stats.garbage_ref_cascade += got.garbage_ref_cascade;
    }
    if (WIFSIGNALED(status))
        CHECK(false, "seed %" PRIu64 ": the test process died by signal %d (%s); replay: api_gc_random --seed %" PRIu64
              " --ops %ld -v", job->seed, WTERMSIG(status), strsignal(WTERMSIG(status)), job->seed, job->ops);
    else
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0 && n == (ssize_t)sizeof(got),
              "seed %" PRIu64 ": the test process exited with status %d", job->seed,
              WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    job->pid = 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    uint64_t seed = 0;
    long ops = 2000;
    bool replay = false;
    int jobs = 2;
    long runs_wanted = 0; /* --runs: that many seeds from --from, --ops each, instead of the schedule */
    uint64_t first_seed = 1;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--seed") == 0 && a + 1 < argc) {
            seed = strtoull(argv[++a], NULL, 0);
            replay = true;
        } else if (strcmp(argv[a], "--ops") == 0 && a + 1 < argc) {
            ops = strtol(argv[++a], NULL, 0);
        } else if (strcmp(argv[a], "--runs") == 0 && a + 1 < argc) {
            runs_wanted = strtol(argv[++a], NULL, 0);
        } else if (strcmp(argv[a], "--from") == 0 && a + 1 < argc) {
            first_seed = strtoull(argv[++a], NULL, 0);
        } else if (strcmp(argv[a], "--jobs") == 0 && a + 1 < argc) {
            jobs = atoi(argv[++a]);
        } else if (strcmp(argv[a], "-v") == 0) {
            verbose = true;
        } else {
            fprintf(stderr, "usage: %s [--seed N [--ops M] [-v]] [--from S --runs K [--ops M]] [--jobs J]\n",
                    argv[0]);
            return 2;
        }
    }
    double start = now_seconds();
    if (replay) {
        catch_fatal_signals();
        bool ok = run_seed(seed, ops);
        printf("seed %" PRIu64 ", %ld operations: %s, %.2f s\n", seed, ops, ok ? "ok" : "FAILED",
               now_seconds() - start);
        return check_finish();
    }
    if (jobs < 1 || jobs > 16)
        jobs = 2;
    /* The schedule: many short runs, a few long ones. */
    typedef struct run { uint64_t seed; long ops; } run_t;
    int run_count = 0;
    run_t *runs = malloc(sizeof(run_t) * (size_t)(runs_wanted > 0 ? runs_wanted : 204));
    REQUIRE(runs != NULL, "malloc");
    if (runs_wanted > 0) {
        for (long r = 0; r < runs_wanted; r++)
            runs[run_count++] = (run_t){first_seed + (uint64_t)r, ops};
    } else {
        for (uint64_t s = 1; s <= 200; s++)
            runs[run_count++] = (run_t){s, 2000};
        for (uint64_t s = 1001; s <= 1004; s++)
            runs[run_count++] = (run_t){s, 25000};
    }
    job_t pool[16];
    memset(pool, 0, sizeof(pool));
    int next = 0, running = 0;
    while (next < run_count || running > 0) {
        while (running < jobs && next < run_count && check_failed < FAILURE_LIMIT) {
            for (int j = 0; j < jobs; j++)
                if (pool[j].pid == 0) {
                    start_job(&pool[j], runs[next].seed, runs[next].ops);
                    next++;
                    running++;
                    break;
                }
        }
        if (running == 0)
            break;
        int status = 0;
        pid_t pid = wait(&status);
        REQUIRE(pid > 0, "wait: %s", strerror(errno));
        for (int j = 0; j < jobs; j++)
            if (pool[j].pid == pid) {
                finish_job(&pool[j], status);
                running--;
            }
    }
    if (next < run_count)
        printf("stopped after %d failed checks: %d of %d runs not started\n", check_failed, run_count - next,
               run_count);
    printf("%ld operations in %d runs: %ld explicit and %ld automatic collections, %ld objects freed by the "
           "collector, %ld nodes freed by refcount, %ld resurrections, %ld weakref callbacks, %ld unordered "
           "callback cases, %ld garbage weakrefs whose referent died while their garbage was cleared; %.2f s\n",
           total_stats.ops, next, total_stats.explicit_collections, total_stats.auto_collections,
           total_stats.gc_freed, total_stats.rc_deaths, total_stats.resurrections, total_stats.callbacks,
           total_stats.unordered, total_stats.garbage_ref_cascade, now_seconds() - start);
    free(runs);
    return check_finish();
}
