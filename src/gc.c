/*
 * gc.c -- the refcount and cycle collector side API (include/pymalloc/gc.h):
 * CPython's object memory model for C programs.
 *
 * Objects are ordinary pymalloc blocks with a header in front of the payload
 * the program sees:
 *
 *   GC types:      [ links 16 ][ header 32 ][ payload ... ]
 *   other types:               [ header 32 ][ payload ... ]
 *                                           ^ the pointer the API uses
 *
 *   links:  the doubly linked list of the generation the object is in
 *           (next == NULL: not tracked), like CPython's PyGC_Head;
 *   header: newest weak reference, state flags (and, during a collection,
 *           the working copy of the refcount), type, refcount.
 *
 * Both prefixes are multiples of 16 bytes, so the payload keeps the block's
 * alignment.
 *
 * Reference counting: pym_decref to zero tears the object down in the
 * documented order (weakrefs, finalize, clear, dealloc, free).  `clear`
 * decrefs what the object owns, so teardown recurses; past
 * PYM_TEARDOWN_DEPTH nested teardowns further objects are queued and the
 * outermost teardown drains the queue (CPython's "trashcan"), so a chain of
 * any length is freed in bounded stack.
 *
 * The collector is CPython 3.12's: three generations plus a permanent
 * (frozen) one; a collection of generation g merges the younger ones into
 * it, copies each refcount into the object's state, subtracts the
 * references `traverse` finds inside the set, and moves what keeps a
 * positive count (and everything it reaches) to the next generation; the
 * rest is unreachable.  Unreachable objects of types without `clear` (and
 * what they reach) are uncollectable and go to the garbage list; for the
 * others weak references are cleared and their callbacks run, finalizers
 * run, objects the finalizers resurrected are found again by a second pass
 * of the same analysis, and what is still unreachable is cleared (or saved
 * under PYM_GC_DEBUG_SAVEALL), which breaks the cycles and frees it.
 *
 * Weak references are small GC objects of an internal type, linked into a
 * per-referent list, newest first; being objects, the collector can tell
 * when a weak reference is itself garbage.
 *
 * State is global and unsynchronised: the API is used from one thread, or
 * under pym_gc_lock() (see the header).  Nothing here runs until the
 * program calls the API: no constructor, no allocation; the fork handlers
 * in init.c only read one flag.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "pymalloc/gc.h"

/* ---- tunables --------------------------------------------------------- */
#define PYM_GC_DEFAULT_THRESHOLD0 700   /* generation 0: tracked allocations minus deallocations */
#define PYM_GC_DEFAULT_THRESHOLD1 10    /* generation 1: collections of generation 0 */
#define PYM_GC_DEFAULT_THRESHOLD2 10    /* generation 2: collections of generation 1 */
#define PYM_TEARDOWN_DEPTH 64           /* nested teardowns before further ones are queued */
#define PYM_DEAD_QUARANTINE 1024        /* debug mode: dead objects whose headers stay readable */
#define PYM_REFCOUNT_LIMIT ((size_t)1 << 56) /* counts this high are freed memory or corruption */
#define PYM_REFCOUNT_DEAD ((size_t)0xDEADDEADDEADDEADULL) /* count of an object whose memory is freed */
#define PYM_GC_REFS_SHIFT 8             /* state bits below this are flags; above, gc_refs */

_Static_assert(PYM_GC_GENERATIONS == 3, "the collection rules below are written for three generations");
_Static_assert(PYM_REFCOUNT_DEAD >= PYM_REFCOUNT_LIMIT, "a dead count must be recognisable");
_Static_assert(PYM_TEARDOWN_DEPTH >= 1, "at least one teardown runs in place");

/* Object state flags (low bits of pym_object_header_t.state). */
#define PYM_OBJECT_FINALIZED 0x1u       /* finalize has run (or is running) */
#define PYM_OBJECT_COLLECTING 0x2u      /* in the set being collected, not yet proven reachable */
#define PYM_OBJECT_UNREACHABLE 0x4u     /* on the tentative unreachable list */
#define PYM_OBJECT_TEARDOWN 0x8u        /* the count reached zero: being torn down */
#define PYM_OBJECT_FLAGS_MASK ((1u << PYM_GC_REFS_SHIFT) - 1)

typedef struct pym_gc_links {
    struct pym_gc_links *next;   /* next in the generation list; NULL: untracked */
    struct pym_gc_links *prev;   /* previous in the generation list */
} pym_gc_links_t;

typedef struct pym_object_header {
    union {
        struct pym_weakref *weakrefs;              /* newest weak reference to the object */
        struct pym_object_header *next_queued;     /* teardown queue link (weakrefs are gone then) */
    };
    uintptr_t state;             /* PYM_OBJECT_ flags | gc_refs << PYM_GC_REFS_SHIFT */
    const pym_type *type;        /* never NULL for a live object */
    size_t refcount;             /* strong references; PYM_REFCOUNT_DEAD once freed */
} pym_object_header_t;

_Static_assert(sizeof(pym_gc_links_t) % 16 == 0, "the payload keeps the block alignment");
_Static_assert(sizeof(pym_object_header_t) % 16 == 0, "the payload keeps the block alignment");

/* The payload of a weak reference object. */
struct pym_weakref {
    pym_object_header_t *referent; /* NULL once cleared */
    struct pym_weakref *newer;   /* neighbours in the referent's list (newest first) */
    struct pym_weakref *older;
    pym_weakref_callback callback; /* may be NULL */
    void *arg;                   /* passed to callback */
};

typedef struct pym_gc_generation {
    pym_gc_links_t head;         /* list sentinel */
    long threshold;              /* collect when count exceeds this */
    long count;                  /* generation 0: allocations - deallocations; others: younger collections */
} pym_gc_generation_t;

typedef struct pym_gc_callback_entry {
    pym_gc_callback_fn callback;
    void *arg;
} pym_gc_callback_entry_t;

typedef struct pym_gc_state {
    pym_gc_generation_t generations[PYM_GC_GENERATIONS];
    pym_gc_links_t permanent;    /* frozen objects: never collected */
    int enabled;                 /* automatic collection */
    int collecting;              /* a collection is running (no nesting) */
    unsigned debug;              /* PYM_GC_DEBUG_ flags */
    size_t long_lived_total;     /* objects in generation 2 after its last collection */
    size_t long_lived_pending;   /* objects promoted into generation 2 since */
    pym_gc_stats_t stats[PYM_GC_GENERATIONS];
    pym_gc_callback_entry_t *callbacks; /* pym_malloc'ed array */
    size_t callback_count, callback_capacity;
    void **garbage;              /* the garbage list (holds a reference to each) */
    size_t garbage_count, garbage_capacity;
    unsigned teardown_depth;     /* nested teardowns running */
    pym_object_header_t *teardown_queue; /* teardowns waiting for the outermost one */
    unsigned quarantine_next;    /* next slot of pym_gc_quarantine to reuse */
} pym_gc_state_t;

/* Debug mode: dead blocks not yet freed.  Kept out of pym_gc, whose
 * initialiser would put these 8 KiB into initialised data. */
static void *pym_gc_quarantine[PYM_DEAD_QUARANTINE];

#define PYM_GC_GENERATION_INIT(i, threshold) \
    { { &pym_gc.generations[i].head, &pym_gc.generations[i].head }, threshold, 0 }

static pym_gc_state_t pym_gc = {
    .generations = {
        PYM_GC_GENERATION_INIT(0, PYM_GC_DEFAULT_THRESHOLD0),
        PYM_GC_GENERATION_INIT(1, PYM_GC_DEFAULT_THRESHOLD1),
        PYM_GC_GENERATION_INIT(2, PYM_GC_DEFAULT_THRESHOLD2),
    },
    .permanent = { &pym_gc.permanent, &pym_gc.permanent },
    .enabled = 1,
};

static const pym_type pym_weakref_type;

/* ---- object layout -------------------------------------------------------- */
static inline pym_object_header_t *pym_header_of(const void *obj)
{
    return (pym_object_header_t *)((char *)obj - sizeof(pym_object_header_t));
}

static inline void *pym_payload_of(pym_object_header_t *header)
{
    return header + 1;
}

static inline bool pym_type_is_gc(const pym_type *type)
{
    return (type->flags & PYM_TYPE_GC) != 0;
}

/* Only for objects of GC types. */
static inline pym_gc_links_t *pym_links_of(pym_object_header_t *header)
{
    return (pym_gc_links_t *)header - 1;
}

static inline pym_object_header_t *pym_header_of_links(pym_gc_links_t *links)
{
    return (pym_object_header_t *)(links + 1);
}

static inline bool pym_is_tracked(pym_object_header_t *header)
{
    return pym_type_is_gc(header->type) && pym_links_of(header)->next != NULL;
}

static inline size_t pym_gc_refs(const pym_object_header_t *header)
{
    return header->state >> PYM_GC_REFS_SHIFT;
}

static inline void pym_set_gc_refs(pym_object_header_t *header, size_t refs)
{
    header->state = (header->state & PYM_OBJECT_FLAGS_MASK) | ((uintptr_t)refs << PYM_GC_REFS_SHIFT);
}

/* Misuse aborts with PYMALLOC_DEBUG=1 or in a --enable-debug build. */
static bool pym_gc_misuse_aborts(void)
{
#ifdef PYM_DEBUG
    return true;
#else
    return pym_options.debug != 0;
#endif
}

static const char *pym_type_name(const pym_type *type)
{
    return type->name ? type->name : "(unnamed type)";
}

/* ---- generation lists ------------------------------------------------------ */
static void pym_list_init(pym_gc_links_t *list)
{
    list->next = list->prev = list;
}

static bool pym_list_is_empty(const pym_gc_links_t *list)
{
    return list->next == list;
}

static void pym_list_unlink(pym_gc_links_t *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
}

static void pym_list_append(pym_gc_links_t *node, pym_gc_links_t *list)
{
    node->prev = list->prev;
    node->next = list;
    list->prev->next = node;
    list->prev = node;
}

static void pym_list_move(pym_gc_links_t *node, pym_gc_links_t *list)
{
    pym_list_unlink(node);
    pym_list_append(node, list);
}

/* Append every node of `from` to `to`; `from` ends empty. */
static void pym_list_merge(pym_gc_links_t *from, pym_gc_links_t *to)
{
    if (pym_list_is_empty(from))
        return;
    pym_gc_links_t *first = from->next, *last = from->prev;
    first->prev = to->prev;
    to->prev->next = first;
    last->next = to;
    to->prev = last;
    pym_list_init(from);
}

static size_t pym_list_size(const pym_gc_links_t *list)
{
    size_t size = 0;
    for (const pym_gc_links_t *node = list->next; node != list; node = node->next)
        size++;
    return size;
}

static void pym_track(pym_object_header_t *header)
{
    pym_list_append(pym_links_of(header), &pym_gc.generations[0].head);
}

static void pym_untrack(pym_object_header_t *header)
{
    pym_gc_links_t *links = pym_links_of(header);
    pym_list_unlink(links);
    links->next = links->prev = NULL;
    header->state &= PYM_OBJECT_FINALIZED | PYM_OBJECT_TEARDOWN;
}

/* ---- misuse reports --------------------------------------------------------- */
/* The header is not that of a live object: say what it looks like. */
static PYM_COLD void pym_object_misuse(const char *caller, const void *obj)
{
    const pym_object_header_t *header = pym_header_of(obj);
    size_t refcount = header->refcount;
    if (refcount == PYM_REFCOUNT_DEAD)
        pym_report("pymalloc: %s(%p): object of type '%s' is dead (its memory was freed)", caller, obj,
                   pym_type_name(header->type));
    else if (refcount == 0 && (header->state & PYM_OBJECT_TEARDOWN))
        pym_report("pymalloc: %s(%p): object of type '%s' is being torn down (its count reached zero)",
                   caller, obj, pym_type_name(header->type));
    else if (refcount == 0)
        pym_report("pymalloc: %s(%p): object of type '%s' has a count of zero; the count would go negative",
                   caller, obj, pym_type_name(header->type));
    else
        pym_report("pymalloc: %s(%p): not a live object (count %zu: freed memory, a corrupt header or "
                   "not an object from pym_new); type unknown", caller, obj, refcount);
    if (pym_gc_misuse_aborts()) {
        pym_report("pymalloc: aborting (debug mode)");
        abort();
    }
}

static inline bool pym_count_is_live(size_t refcount)
{
    return refcount - 1 < PYM_REFCOUNT_LIMIT - 1; /* 1 .. limit-1 */
}

/* ---- reference counts -------------------------------------------------------- */
static void pym_object_die(pym_object_header_t *header);

void pym_incref(void *obj)
{
    if (obj == NULL)
        return;
    pym_object_header_t *header = pym_header_of(obj);
    if (PYM_UNLIKELY(!pym_count_is_live(header->refcount))) {
        pym_object_misuse("pym_incref", obj);
        return;
    }
    header->refcount++;
}

void pym_decref(void *obj)
{
    if (obj == NULL)
        return;
    pym_object_header_t *header = pym_header_of(obj);
    if (PYM_UNLIKELY(!pym_count_is_live(header->refcount))) {
        pym_object_misuse("pym_decref", obj);
        return;
    }
    if (--header->refcount == 0)
        pym_object_die(header);
}

size_t pym_refcount(const void *obj)
{
    if (obj == NULL)
        return 0;
    size_t refcount = pym_header_of(obj)->refcount;
    return refcount == PYM_REFCOUNT_DEAD ? 0 : refcount;
}

const pym_type *pym_type_of(const void *obj)
{
    return obj == NULL ? NULL : pym_header_of(obj)->type;
}

/* ---- weak references ------------------------------------------------------------ */
/* Clear the references of `batch` (a chain through `older`, already detached
 * from its referents), then run the callbacks in chain order.  Every
 * reference is held while the callbacks run so that none is freed under the
 * walk; one whose only remaining holder is this walk was freed by its owner
 * and gets no callback.  Nor does one that is itself garbage of the running
 * collection (flagged COLLECTING: only the unreachable set carries the flag
 * once the analysis is done) -- whether its referent is garbage too or an
 * outside object that dies while the garbage is finalized or cleared: its
 * callback could reach objects already cleared (CPython's bpo-38006). */
static size_t pym_weakrefs_dispatch(struct pym_weakref *batch)
{
    size_t callbacks_run = 0;
    for (struct pym_weakref *ref = batch; ref != NULL; ref = ref->older) {
        ref->referent = NULL;
        pym_header_of(ref)->refcount++;
    }
    for (struct pym_weakref *ref = batch; ref != NULL; ref = ref->older) {
        pym_object_header_t *ref_header = pym_header_of(ref);
        bool garbage = (ref_header->state & PYM_OBJECT_COLLECTING) != 0;
        if (ref->callback != NULL && ref_header->refcount > 1 && !garbage) {
            ref->callback(ref, ref->arg);
            callbacks_run++;
        }
    }
    while (batch != NULL) {
        struct pym_weakref *ref = batch;
        batch = ref->older;
        ref->newer = ref->older = NULL;
        pym_decref(ref);
    }
    return callbacks_run;
}

/* Detach the object's weak references (newest first) and return the chain. */
static struct pym_weakref *pym_weakrefs_detach(pym_object_header_t *header)
{
    struct pym_weakref *list = header->weakrefs;
    header->weakrefs = NULL;
    return list;
}

static int pym_weakref_traverse(void *self, pym_visit_fn visit, void *arg)
{
    (void)self, (void)visit, (void)arg;
    return 0; /* owns no strong reference */
}

static void pym_weakref_clear(void *self)
{
    struct pym_weakref *ref = self;
    pym_object_header_t *referent = ref->referent;
    if (referent == NULL)
        return;
    if (ref->newer != NULL)
        ref->newer->older = ref->older;
    else
        referent->weakrefs = ref->older;
    if (ref->older != NULL)
        ref->older->newer = ref->newer;
    ref->referent = NULL;
    ref->newer = ref->older = NULL;
}

static const pym_type pym_weakref_type = {
    .name = "weakref",
    .size = sizeof(struct pym_weakref),
    .flags = PYM_TYPE_GC,
    .traverse = pym_weakref_traverse,
    .clear = pym_weakref_clear,
};

pym_weakref *pym_weakref_new(void *obj, pym_weakref_callback callback, void *arg)
{
    if (obj == NULL || !pym_count_is_live(pym_header_of(obj)->refcount)) {
        pym_report("pymalloc: pym_weakref_new(%p): not a live object", obj);
        errno = EINVAL;
        return NULL;
    }
    struct pym_weakref *ref = pym_new(&pym_weakref_type); /* may collect; the caller holds obj */
    if (ref == NULL)
        return NULL;
    pym_object_header_t *referent = pym_header_of(obj);
    ref->referent = referent;
    ref->callback = callback;
    ref->arg = arg;
    ref->older = referent->weakrefs;
    if (ref->older != NULL)
        ref->older->newer = ref;
    referent->weakrefs = ref;
    return ref;
}

void *pym_weakref_get(pym_weakref *ref)
{
    if (ref == NULL || ref->referent == NULL)
        return NULL;
    void *obj = pym_payload_of(ref->referent);
    pym_incref(obj);
    return obj;
}

void pym_weakref_free(pym_weakref *ref)
{
    if (ref != NULL)
        pym_decref(ref);
}

size_t pym_weakref_count(const void *obj)
{
    if (obj == NULL)
        return 0;
    size_t count = 0;
    for (struct pym_weakref *ref = pym_header_of(obj)->weakrefs; ref != NULL; ref = ref->older)
        count++;
    return count;
}

/* ---- allocation and teardown -------------------------------------------------------- */
static void pym_collect_automatically(void);
static void pym_gc_check_lock_holder(const char *caller);

void *pym_new(const pym_type *type)
{
    if (type == NULL) {
        pym_report("pymalloc: pym_new(NULL): a type is required");
        errno = EINVAL;
        return NULL;
    }
    if (type->flags & ~PYM_TYPE_GC) {
        pym_report("pymalloc: pym_new: type '%s' has unknown flags 0x%x", pym_type_name(type),
                   type->flags & ~PYM_TYPE_GC);
        errno = EINVAL;
        return NULL;
    }
    bool gc_type = pym_type_is_gc(type);
    if (gc_type && type->traverse == NULL) {
        pym_report("pymalloc: pym_new: type '%s' has PYM_TYPE_GC but no traverse function", pym_type_name(type));
        errno = EINVAL;
        return NULL;
    }
    if (gc_type)
        pym_gc_check_lock_holder("pym_new");
    size_t prefix = sizeof(pym_object_header_t) + (gc_type ? sizeof(pym_gc_links_t) : 0);
    if (type->size > (size_t)PTRDIFF_MAX - prefix) {
        errno = ENOMEM;
        return NULL;
    }
    char *block = pym_calloc(1, prefix + type->size);
    if (block == NULL)
        return NULL;
    if (gc_type) {
        /* CPython counts the allocation, then collects if past threshold 0;
         * the new object is not tracked yet, so it is not part of it. */
        pym_gc_generation_t *young = &pym_gc.generations[0];
        young->count++;
        if (young->count > young->threshold && young->threshold > 0 && pym_gc.enabled && !pym_gc.collecting)
            pym_collect_automatically();
    }
    pym_object_header_t *header = (pym_object_header_t *)(block + prefix - sizeof(pym_object_header_t));
    header->type = type;
    header->refcount = 1;
    if (gc_type)
        pym_track(header);
    return pym_payload_of(header);
}

/* Give the memory back (debug mode: after PYM_DEAD_QUARANTINE later deaths,
 * so that a late decref still finds the type name). */
static void pym_object_release(pym_object_header_t *header)
{
    const pym_type *type = header->type;
    void *block = header;
    if (pym_type_is_gc(type)) {
        block = pym_links_of(header);
        if (pym_gc.generations[0].count > 0)
            pym_gc.generations[0].count--;
    }
    header->refcount = PYM_REFCOUNT_DEAD;
    if (pym_options.debug) {
        void *evicted = pym_gc_quarantine[pym_gc.quarantine_next];
        pym_gc_quarantine[pym_gc.quarantine_next] = block;
        pym_gc.quarantine_next = (pym_gc.quarantine_next + 1) % PYM_DEAD_QUARANTINE;
        block = evicted;
    }
    pym_free(block);
}

/* The rest of a teardown, after the weak references: finalize (may
 * resurrect), clear, dealloc, free. */
static void pym_object_finish(pym_object_header_t *header)
{
    const pym_type *type = header->type;
    void *obj = pym_payload_of(header);
    if (type->finalize != NULL && !(header->state & PYM_OBJECT_FINALIZED)) {
        /* As CPython: the finalizer sees a live, tracked object with one
         * reference; any reference it adds resurrects the object. */
        header->state |= PYM_OBJECT_FINALIZED;
        header->refcount = 1;
        bool gc_type = pym_type_is_gc(type);
        if (gc_type)
            pym_track(header);
        type->finalize(obj);
        if (--header->refcount != 0) {
            header->state &= ~(uintptr_t)PYM_OBJECT_TEARDOWN;
            return; /* resurrected */
        }
        if (gc_type && pym_links_of(header)->next != NULL)
            pym_untrack(header);
        if (header->weakrefs != NULL) /* taken by the finalizer */
            pym_weakrefs_dispatch(pym_weakrefs_detach(header));
    }
    if (type->clear != NULL)
        type->clear(obj);
    if (type->dealloc != NULL)
        type->dealloc(obj);
    if (header->weakrefs != NULL)
        pym_weakrefs_dispatch(pym_weakrefs_detach(header));
    pym_object_release(header);
}

/* The count reached zero. */
static void pym_object_die(pym_object_header_t *header)
{
    header->state |= PYM_OBJECT_TEARDOWN;
    if (pym_is_tracked(header))
        pym_untrack(header);
    /* A dying weak reference leaves its referent's list now, not when its
     * (possibly queued) teardown finishes: every reference on a list is
     * then alive, which pym_weakrefs_dispatch relies on. */
    if (header->type == &pym_weakref_type)
        pym_weakref_clear(pym_payload_of(header));
    if (header->weakrefs != NULL)
        pym_weakrefs_dispatch(pym_weakrefs_detach(header));
    if (pym_gc.teardown_depth >= PYM_TEARDOWN_DEPTH) {
        header->next_queued = pym_gc.teardown_queue;
        pym_gc.teardown_queue = header;
        return;
    }
    pym_gc.teardown_depth++;
    pym_object_finish(header);
    if (pym_gc.teardown_depth == 1) {
        while (pym_gc.teardown_queue != NULL) {
            pym_object_header_t *queued = pym_gc.teardown_queue;
            pym_gc.teardown_queue = queued->next_queued;
            queued->next_queued = NULL;
            pym_object_finish(queued);
        }
    }
    pym_gc.teardown_depth--;
}

/* ---- the collector ------------------------------------------------------------ */
static inline void pym_traverse(pym_object_header_t *header, pym_visit_fn visit, void *arg)
{
    if (header->type->traverse != NULL)
        header->type->traverse(pym_payload_of(header), visit, arg);
}

static int pym_visit_decref(void *obj, void *arg)
{
    (void)arg;
    if (obj == NULL)
        return 0;
    pym_object_header_t *header = pym_header_of(obj);
    if (!(header->state & PYM_OBJECT_COLLECTING))
        return 0;
    size_t refs = pym_gc_refs(header);
    if (PYM_UNLIKELY(refs == 0)) {
        pym_report("pymalloc: gc: object %p of type '%s' is visited by more traverse calls than its count "
                   "(%zu) allows: a missing incref or an extra visit", obj, pym_type_name(header->type),
                   header->refcount);
        if (pym_gc_misuse_aborts())
            abort();
        return 0;
    }
    pym_set_gc_refs(header, refs - 1);
    return 0;
}

/* A reachable object reaches this one: so it is reachable too. */
static int pym_visit_reachable(void *obj, void *young)
{
    if (obj == NULL)
        return 0;
    pym_object_header_t *header = pym_header_of(obj);
    if (!(header->state & PYM_OBJECT_COLLECTING))
        return 0; /* outside the set, or already scanned as reachable */
    if (header->state & PYM_OBJECT_UNREACHABLE) {
        /* Tentatively unreachable: back to the end of young, to be scanned. */
        header->state &= ~(uintptr_t)PYM_OBJECT_UNREACHABLE;
        pym_list_move(pym_links_of(header), young);
        pym_set_gc_refs(header, 1);
    } else if (pym_gc_refs(header) == 0) {
        pym_set_gc_refs(header, 1); /* not scanned yet; will be, as reachable */
    }
    return 0;
}

/* Split `young` into what is reachable from outside it (stays) and the rest
 * (moved to `unreachable`, flagged COLLECTING | UNREACHABLE).  Returns how
 * many stay and sets *unreachable_count. */
static size_t pym_deduce_unreachable(pym_gc_links_t *young, pym_gc_links_t *unreachable, size_t *unreachable_count)
{
    size_t total = 0, reachable = 0;
    for (pym_gc_links_t *node = young->next; node != young; node = node->next) {
        pym_object_header_t *header = pym_header_of_links(node);
        header->state = (header->state & (PYM_OBJECT_FINALIZED | PYM_OBJECT_TEARDOWN)) | PYM_OBJECT_COLLECTING;
        pym_set_gc_refs(header, header->refcount);
        total++;
    }
    for (pym_gc_links_t *node = young->next; node != young; node = node->next)
        pym_traverse(pym_header_of_links(node), pym_visit_decref, NULL);
    pym_gc_links_t *node = young->next;
    while (node != young) {
        pym_object_header_t *header = pym_header_of_links(node);
        if (pym_gc_refs(header) > 0) {
            pym_traverse(header, pym_visit_reachable, young);
            header->state &= PYM_OBJECT_FINALIZED | PYM_OBJECT_TEARDOWN; /* proven reachable */
            reachable++;
            node = node->next;
        } else {
            pym_gc_links_t *next = node->next;
            header->state |= PYM_OBJECT_UNREACHABLE;
            pym_list_move(node, unreachable);
            node = next;
        }
    }
    *unreachable_count = total - reachable;
    return reachable;
}

/* Clear the collection flags of the objects on `list`. */
static void pym_list_clear_flags(pym_gc_links_t *list)
{
    for (pym_gc_links_t *node = list->next; node != list; node = node->next)
        pym_header_of_links(node)->state &= PYM_OBJECT_FINALIZED | PYM_OBJECT_TEARDOWN;
}

static int pym_visit_move_uncollectable(void *obj, void *uncollectable)
{
    if (obj == NULL)
        return 0;
    pym_object_header_t *header = pym_header_of(obj);
    if ((header->state & (PYM_OBJECT_COLLECTING | PYM_OBJECT_UNREACHABLE)) ==
        (PYM_OBJECT_COLLECTING | PYM_OBJECT_UNREACHABLE)) {
        header->state &= PYM_OBJECT_FINALIZED | PYM_OBJECT_TEARDOWN;
        pym_list_move(pym_links_of(header), uncollectable);
    }
    return 0;
}

/* Objects whose type cannot clear, and everything they reach, cannot be
 * freed safely: CPython's rule for legacy finalizers. */
static size_t pym_move_uncollectable(pym_gc_links_t *unreachable, pym_gc_links_t *uncollectable)
{
    pym_gc_links_t *node = unreachable->next;
    while (node != unreachable) {
        pym_gc_links_t *next = node->next;
        pym_object_header_t *header = pym_header_of_links(node);
        if (header->type->clear == NULL) {
            header->state &= PYM_OBJECT_FINALIZED | PYM_OBJECT_TEARDOWN;
            pym_list_move(node, uncollectable);
        }
        node = next;
    }
    size_t moved = 0;
    for (node = uncollectable->next; node != uncollectable; node = node->next) {
        pym_traverse(pym_header_of_links(node), pym_visit_move_uncollectable, uncollectable);
        moved++;
    }
    return moved;
}

/* Clear every weak reference to an unreachable object, then run the
 * callbacks of those that are not garbage themselves.  Returns how many
 * callbacks ran. */
static size_t pym_handle_weakrefs(pym_gc_links_t *unreachable)
{
    struct pym_weakref *batch = NULL, *tail = NULL;
    for (pym_gc_links_t *node = unreachable->next; node != unreachable; node = node->next) {
        struct pym_weakref *list = pym_weakrefs_detach(pym_header_of_links(node));
        if (list == NULL)
            continue;
        if (tail == NULL)
            batch = list;
        else
            tail->older = list;
        for (tail = list; tail->older != NULL; tail = tail->older) {
        }
    }
    return batch != NULL ? pym_weakrefs_dispatch(batch) : 0;
}

/* Run the finalizers not run yet; returns how many ran. */
static size_t pym_finalize_garbage(pym_gc_links_t *unreachable)
{
    size_t finalizers_run = 0;
    pym_gc_links_t seen;
    pym_list_init(&seen);
    while (!pym_list_is_empty(unreachable)) {
        pym_gc_links_t *node = unreachable->next;
        pym_object_header_t *header = pym_header_of_links(node);
        pym_list_move(node, &seen);
        if (header->type->finalize != NULL && !(header->state & PYM_OBJECT_FINALIZED)) {
            header->state |= PYM_OBJECT_FINALIZED;
            void *obj = pym_payload_of(header);
            pym_incref(obj);
            header->type->finalize(obj);
            pym_decref(obj); /* may free it: it then leaves `seen` */
            finalizers_run++;
        }
    }
    pym_list_merge(&seen, unreachable);
    return finalizers_run;
}

static void pym_garbage_append(void *obj)
{
    if (pym_gc.garbage_count == pym_gc.garbage_capacity) {
        size_t capacity = pym_gc.garbage_capacity ? 2 * pym_gc.garbage_capacity : 64;
        void **grown = pym_realloc(pym_gc.garbage, capacity * sizeof(void *));
        if (grown == NULL) {
            /* The object stays alive (its cycle holds it) but unlisted. */
            pym_report("pymalloc: gc: no memory to grow the garbage list; object %p left off it", obj);
            return;
        }
        pym_gc.garbage = grown;
        pym_gc.garbage_capacity = capacity;
    }
    pym_incref(obj);
    pym_gc.garbage[pym_gc.garbage_count++] = obj;
}

/* Break the cycles: clear each object (or save it under SAVEALL).  What
 * the clearing leaves alive moves to the old generation. */
static void pym_delete_garbage(pym_gc_links_t *collectable, pym_gc_links_t *old)
{
    while (!pym_list_is_empty(collectable)) {
        pym_gc_links_t *node = collectable->next;
        pym_object_header_t *header = pym_header_of_links(node);
        void *obj = pym_payload_of(header);
        if (pym_gc.debug & PYM_GC_DEBUG_SAVEALL) {
            pym_garbage_append(obj);
        } else {
            pym_incref(obj);
            header->type->clear(obj);
            pym_decref(obj); /* frees it once the cycle is broken */
        }
        if (collectable->next == node) { /* still alive */
            header->state &= PYM_OBJECT_FINALIZED | PYM_OBJECT_TEARDOWN;
            pym_list_move(node, old);
        }
    }
}

static void pym_print_objects(const char *what, pym_gc_links_t *list)
{
    for (pym_gc_links_t *node = list->next; node != list; node = node->next) {
        pym_object_header_t *header = pym_header_of_links(node);
        pym_report("gc: %s <%s %p>", what, pym_type_name(header->type), pym_payload_of(header));
    }
}

static double pym_monotonic_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* One collection of `generation` (CPython's gc_collect_main).  Returns the
 * number collected; *uncollectable_out gets the uncollectable ones. */
static long pym_collect_main(int generation, long *uncollectable_out)
{
    double started = 0;
    if (pym_gc.debug & PYM_GC_DEBUG_STATS) {
        started = pym_monotonic_seconds();
        pym_report("gc: collecting generation %d...", generation);
        pym_report("gc: objects in each generation: %zu %zu %zu", pym_list_size(&pym_gc.generations[0].head),
                   pym_list_size(&pym_gc.generations[1].head), pym_list_size(&pym_gc.generations[2].head));
        pym_report("gc: objects in permanent generation: %zu", pym_list_size(&pym_gc.permanent));
    }
    if (generation + 1 < PYM_GC_GENERATIONS)
        pym_gc.generations[generation + 1].count++;
    for (int i = 0; i <= generation; i++)
        pym_gc.generations[i].count = 0;
    for (int i = 0; i < generation; i++)
        pym_list_merge(&pym_gc.generations[i].head, &pym_gc.generations[generation].head);
    pym_gc_links_t *young = &pym_gc.generations[generation].head;
    pym_gc_links_t *old = generation + 1 < PYM_GC_GENERATIONS ? &pym_gc.generations[generation + 1].head : young;

    pym_gc_links_t unreachable;
    pym_list_init(&unreachable);
    size_t unreachable_count;
    size_t survivors = pym_deduce_unreachable(young, &unreachable, &unreachable_count);
    if (young != old) {
        if (generation == PYM_GC_GENERATIONS - 2)
            pym_gc.long_lived_pending += survivors;
        pym_list_merge(young, old);
    } else {
        pym_gc.long_lived_pending = 0;
        pym_gc.long_lived_total = survivors;
    }

    pym_gc_links_t uncollectable;
    pym_list_init(&uncollectable);
    size_t uncollectable_count = pym_move_uncollectable(&unreachable, &uncollectable);
    unreachable_count -= uncollectable_count;
    if (pym_gc.debug & PYM_GC_DEBUG_COLLECTABLE)
        pym_print_objects("collectable", &unreachable);

    size_t user_code_runs = pym_handle_weakrefs(&unreachable);
    user_code_runs += pym_finalize_garbage(&unreachable);

    /* Resurrection: run the analysis again over the unreachable set; what
     * the finalizers (or callbacks, whose opaque argument may point at
     * garbage) made reachable survives, and is never finalized again: its
     * flag stays set.  When no program code ran, nothing can have changed
     * (and a finalizer freeing an object removed it from the list). */
    pym_gc_links_t still_unreachable;
    pym_list_init(&still_unreachable);
    if (user_code_runs > 0) {
        pym_list_clear_flags(&unreachable);
        pym_deduce_unreachable(&unreachable, &still_unreachable, &unreachable_count);
        pym_list_merge(&unreachable, old);
    } else {
        pym_list_merge(&unreachable, &still_unreachable);
    }

    long collected = (long)unreachable_count;
    pym_delete_garbage(&still_unreachable, old);

    if (pym_gc.debug & PYM_GC_DEBUG_UNCOLLECTABLE)
        pym_print_objects("uncollectable", &uncollectable);
    for (pym_gc_links_t *node = uncollectable.next; node != &uncollectable; node = node->next)
        pym_garbage_append(pym_payload_of(pym_header_of_links(node)));
    pym_list_merge(&uncollectable, old);

    pym_gc_stats_t *stats = &pym_gc.stats[generation];
    stats->collections++;
    stats->collected += (size_t)collected;
    stats->uncollectable += uncollectable_count;
    if (pym_gc.debug & PYM_GC_DEBUG_STATS)
        pym_report("gc: done, %ld unreachable, %zu uncollectable, %.4fs elapsed",
                   collected + (long)uncollectable_count, uncollectable_count, pym_monotonic_seconds() - started);
    *uncollectable_out = (long)uncollectable_count;
    return collected;
}

static void pym_invoke_callbacks(pym_gc_phase phase, int generation, long collected, long uncollectable)
{
    pym_gc_info info = { .generation = generation, .collected = collected, .uncollectable = uncollectable };
    /* Indexed walk: a callback may add or remove callbacks. */
    for (size_t i = 0; i < pym_gc.callback_count; i++)
        pym_gc.callbacks[i].callback(phase, &info, pym_gc.callbacks[i].arg);
}

/* A collection with its callbacks around it; pym_gc.collecting is set. */
static long pym_collect_with_callbacks(int generation)
{
    pym_invoke_callbacks(PYM_GC_START, generation, 0, 0);
    long uncollectable = 0;
    long collected = pym_collect_main(generation, &uncollectable);
    pym_invoke_callbacks(PYM_GC_STOP, generation, collected, uncollectable);
    return collected + uncollectable;
}

static void pym_collect_automatically(void)
{
    pym_gc.collecting = 1;
    for (int i = PYM_GC_GENERATIONS - 1; i >= 0; i--) {
        if (pym_gc.generations[i].count > pym_gc.generations[i].threshold) {
            /* A full collection waits until the objects it would examine
             * for the first time are a quarter of the long-lived ones. */
            if (i == PYM_GC_GENERATIONS - 1 && pym_gc.long_lived_pending < pym_gc.long_lived_total / 4)
                continue;
            pym_collect_with_callbacks(i);
            break;
        }
    }
    pym_gc.collecting = 0;
}

long pym_gc_collect(int generation)
{
    if (generation < 0 || generation >= PYM_GC_GENERATIONS) {
        errno = EINVAL;
        return -1;
    }
    pym_gc_check_lock_holder("pym_gc_collect");
    if (pym_gc.collecting)
        return 0;
    pym_gc.collecting = 1;
    long found = pym_collect_with_callbacks(generation);
    pym_gc.collecting = 0;
    return found;
}

/* ---- settings ------------------------------------------------------------------- */
void pym_gc_enable(void)
{
    pym_gc.enabled = 1;
}

void pym_gc_disable(void)
{
    pym_gc.enabled = 0;
}

int pym_gc_isenabled(void)
{
    return pym_gc.enabled;
}

void pym_gc_set_threshold(long threshold0, long threshold1, long threshold2)
{
    if (threshold0 < 0 || threshold1 < 0 || threshold2 < 0) {
        pym_report("pymalloc: pym_gc_set_threshold(%ld, %ld, %ld): thresholds cannot be negative; unchanged",
                   threshold0, threshold1, threshold2);
        errno = EINVAL;
        return;
    }
    pym_gc.generations[0].threshold = threshold0;
    pym_gc.generations[1].threshold = threshold1;
    pym_gc.generations[2].threshold = threshold2;
}

void pym_gc_get_threshold(long out[PYM_GC_GENERATIONS])
{
    for (int i = 0; i < PYM_GC_GENERATIONS; i++)
        out[i] = pym_gc.generations[i].threshold;
}

void pym_gc_get_count(long out[PYM_GC_GENERATIONS])
{
    for (int i = 0; i < PYM_GC_GENERATIONS; i++)
        out[i] = pym_gc.generations[i].count;
}

void pym_gc_freeze(void)
{
    for (int i = 0; i < PYM_GC_GENERATIONS; i++)
        pym_list_merge(&pym_gc.generations[i].head, &pym_gc.permanent);
    pym_gc.generations[0].count = 0;
}

void pym_gc_unfreeze(void)
{
    pym_list_merge(&pym_gc.permanent, &pym_gc.generations[PYM_GC_GENERATIONS - 1].head);
}

size_t pym_gc_get_freeze_count(void)
{
    return pym_list_size(&pym_gc.permanent);
}

void pym_gc_track(void *obj)
{
    if (obj == NULL)
        return;
    pym_object_header_t *header = pym_header_of(obj);
    if (!pym_type_is_gc(header->type)) {
        pym_report("pymalloc: pym_gc_track(%p): type '%s' is not a PYM_TYPE_GC type", obj,
                   pym_type_name(header->type));
        return;
    }
    if (pym_links_of(header)->next == NULL && pym_count_is_live(header->refcount))
        pym_track(header);
}

void pym_gc_untrack(void *obj)
{
    if (obj != NULL && pym_is_tracked(pym_header_of(obj)))
        pym_untrack(pym_header_of(obj));
}

int pym_gc_is_tracked(const void *obj)
{
    return obj != NULL && pym_is_tracked(pym_header_of(obj));
}

int pym_gc_is_finalized(const void *obj)
{
    return obj != NULL && (pym_header_of(obj)->state & PYM_OBJECT_FINALIZED) != 0;
}

/* ---- statistics, callbacks, debugging ------------------------------------------------- */
void pym_gc_get_stats(pym_gc_stats_t out[PYM_GC_GENERATIONS])
{
    memcpy(out, pym_gc.stats, sizeof(pym_gc.stats));
}

int pym_gc_callback_add(pym_gc_callback_fn callback, void *arg)
{
    if (callback == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (pym_gc.callback_count == pym_gc.callback_capacity) {
        size_t capacity = pym_gc.callback_capacity ? 2 * pym_gc.callback_capacity : 8;
        pym_gc_callback_entry_t *grown = pym_realloc(pym_gc.callbacks, capacity * sizeof(*grown));
        if (grown == NULL)
            return -1; /* errno ENOMEM */
        pym_gc.callbacks = grown;
        pym_gc.callback_capacity = capacity;
    }
    pym_gc.callbacks[pym_gc.callback_count++] = (pym_gc_callback_entry_t){ callback, arg };
    return 0;
}

int pym_gc_callback_remove(pym_gc_callback_fn callback, void *arg)
{
    for (size_t i = 0; i < pym_gc.callback_count; i++) {
        if (pym_gc.callbacks[i].callback == callback && pym_gc.callbacks[i].arg == arg) {
            memmove(&pym_gc.callbacks[i], &pym_gc.callbacks[i + 1],
                    (pym_gc.callback_count - i - 1) * sizeof(pym_gc.callbacks[0]));
            pym_gc.callback_count--;
            return 0;
        }
    }
    errno = ENOENT;
    return -1;
}

void pym_gc_set_debug(unsigned flags)
{
    pym_gc.debug = flags;
}

unsigned pym_gc_get_debug(void)
{
    return pym_gc.debug;
}

size_t pym_gc_garbage_count(void)
{
    return pym_gc.garbage_count;
}

void *pym_gc_garbage_item(size_t index)
{
    return index < pym_gc.garbage_count ? pym_gc.garbage[index] : NULL;
}

size_t pym_gc_garbage_clear(void)
{
    /* Detach first: the decrefs may run code that looks at the list. */
    void **garbage = pym_gc.garbage;
    size_t count = pym_gc.garbage_count;
    pym_gc.garbage = NULL;
    pym_gc.garbage_count = pym_gc.garbage_capacity = 0;
    for (size_t i = 0; i < count; i++)
        pym_decref(garbage[i]);
    pym_free(garbage);
    return count;
}

/* ---- introspection ---------------------------------------------------------------- */
/* A growable array of held objects: fn may do anything while it runs. */
typedef struct pym_object_snapshot {
    void **objects;
    size_t count, capacity;
    int failed;                  /* out of memory */
} pym_object_snapshot_t;

static void pym_snapshot_add(pym_object_snapshot_t *snapshot, void *obj)
{
    if (snapshot->failed)
        return;
    if (snapshot->count == snapshot->capacity) {
        size_t capacity = snapshot->capacity ? 2 * snapshot->capacity : 64;
        void **grown = pym_realloc(snapshot->objects, capacity * sizeof(void *));
        if (grown == NULL) {
            snapshot->failed = 1;
            return;
        }
        snapshot->objects = grown;
        snapshot->capacity = capacity;
    }
    pym_incref(obj);
    snapshot->objects[snapshot->count++] = obj;
}

/* Call fn on each object (stopping at a non-zero result), then drop them. */
static int pym_snapshot_visit_and_drop(pym_object_snapshot_t *snapshot, pym_visit_fn fn, void *arg)
{
    int result = 0;
    if (snapshot->failed) {
        errno = ENOMEM;
        result = -1;
    }
    for (size_t i = 0; i < snapshot->count && result == 0; i++)
        result = fn(snapshot->objects[i], arg);
    for (size_t i = 0; i < snapshot->count; i++)
        pym_decref(snapshot->objects[i]);
    pym_free(snapshot->objects);
    return result;
}

int pym_gc_visit_objects(int generation, pym_visit_fn fn, void *arg)
{
    if (fn == NULL || generation < -1 || generation >= PYM_GC_GENERATIONS) {
        errno = EINVAL;
        return -1;
    }
    pym_object_snapshot_t snapshot = { 0 };
    for (int i = 0; i < PYM_GC_GENERATIONS; i++) {
        if (generation != -1 && generation != i)
            continue;
        pym_gc_links_t *list = &pym_gc.generations[i].head;
        for (pym_gc_links_t *node = list->next; node != list; node = node->next)
            pym_snapshot_add(&snapshot, pym_payload_of(pym_header_of_links(node)));
    }
    return pym_snapshot_visit_and_drop(&snapshot, fn, arg);
}

static int pym_visit_add_to_snapshot(void *obj, void *snapshot)
{
    if (obj != NULL)
        pym_snapshot_add(snapshot, obj);
    return 0;
}

int pym_gc_get_referents(void *obj, pym_visit_fn fn, void *arg)
{
    if (obj == NULL || fn == NULL) {
        errno = EINVAL;
        return -1;
    }
    pym_object_snapshot_t snapshot = { 0 };
    pym_traverse(pym_header_of(obj), pym_visit_add_to_snapshot, &snapshot);
    return pym_snapshot_visit_and_drop(&snapshot, fn, arg);
}

static int pym_visit_is_target(void *obj, void *target)
{
    return obj == target; /* non-zero stops the traverse: one match is enough */
}

int pym_gc_get_referrers(void *obj, pym_visit_fn fn, void *arg)
{
    if (obj == NULL || fn == NULL) {
        errno = EINVAL;
        return -1;
    }
    pym_object_snapshot_t snapshot = { 0 };
    for (int i = 0; i < PYM_GC_GENERATIONS; i++) {
        pym_gc_links_t *list = &pym_gc.generations[i].head;
        for (pym_gc_links_t *node = list->next; node != list; node = node->next) {
            pym_object_header_t *header = pym_header_of_links(node);
            if (header->type->traverse(pym_payload_of(header), pym_visit_is_target, obj))
                pym_snapshot_add(&snapshot, pym_payload_of(header));
        }
    }
    return pym_snapshot_visit_and_drop(&snapshot, fn, arg);
}

/* ---- the lock --------------------------------------------------------------------- */
/* A plain mutex plus owner and depth (recursion); unlike a recursive
 * pthread mutex it survives fork in the child, where the forking thread's
 * id is the same pthread_t but a new kernel tid. */
static pthread_mutex_t pym_gc_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_t pym_gc_lock_owner;     /* valid while pym_gc_lock_depth > 0 */
static int pym_gc_lock_owned;           /* atomic: some thread holds the lock */
static unsigned pym_gc_lock_depth;      /* holds by the owner */
static int pym_gc_lock_used;            /* atomic: the lock was ever taken (fork handlers) */
static int pym_gc_lock_held_for_fork;   /* the fork prepare handler took it */

static bool pym_gc_lock_is_mine(void)
{
    return __atomic_load_n(&pym_gc_lock_owned, __ATOMIC_ACQUIRE) &&
           pthread_equal(__atomic_load_n(&pym_gc_lock_owner, __ATOMIC_RELAXED), pthread_self());
}

void pym_gc_lock(void)
{
    if (pym_gc_lock_is_mine()) {
        pym_gc_lock_depth++;
        return;
    }
    pthread_mutex_lock(&pym_gc_mutex);
    __atomic_store_n(&pym_gc_lock_owner, pthread_self(), __ATOMIC_RELAXED);
    __atomic_store_n(&pym_gc_lock_owned, 1, __ATOMIC_RELEASE);
    pym_gc_lock_depth = 1;
    if (!__atomic_load_n(&pym_gc_lock_used, __ATOMIC_RELAXED))
        __atomic_store_n(&pym_gc_lock_used, 1, __ATOMIC_RELAXED);
}

void pym_gc_unlock(void)
{
    if (!pym_gc_lock_is_mine()) {
        pym_report("pymalloc: pym_gc_unlock: the calling thread does not hold the lock; ignored");
        if (pym_gc_misuse_aborts())
            abort();
        return;
    }
    if (--pym_gc_lock_depth > 0)
        return;
    __atomic_store_n(&pym_gc_lock_owned, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&pym_gc_mutex);
}

/* PYMALLOC_DEBUG=1: once some thread has taken the lock, threads share the
 * API, and the calls that change the collector's lists must come from the
 * lock's holder.  (Not checked on incref/decref: they stay two instructions
 * and a test.) */
static void pym_gc_check_lock_holder(const char *caller)
{
    if (PYM_LIKELY(!pym_options.debug) || !__atomic_load_n(&pym_gc_lock_used, __ATOMIC_RELAXED)
        || pym_gc_lock_is_mine())
        return;
    pym_report("pymalloc: %s: called without holding pym_gc_lock() while threads share the GC API (the lock "
               "has been used); aborting (debug mode)", caller);
    abort();
}

/* Fork (called by init.c's handlers, before pymalloc's own locks are taken
 * and after they are released): the child starts with the collector in a
 * consistent state, never in the middle of another thread's collection. */
void pym_gc_fork_prepare(void)
{
    pym_gc_lock_held_for_fork = 0;
    if (__atomic_load_n(&pym_gc_lock_used, __ATOMIC_RELAXED)) {
        pym_gc_lock();
        pym_gc_lock_held_for_fork = 1;
    }
}

void pym_gc_fork_parent(void)
{
    if (pym_gc_lock_held_for_fork)
        pym_gc_unlock();
}

void pym_gc_fork_child(void)
{
    if (pym_gc_lock_held_for_fork) {
        pym_gc_unlock(); /* same pthread_t in the child: still the owner */
    } else {
        /* Taken for the first time by another thread after prepare looked:
         * that thread does not exist here. */
        pthread_mutex_init(&pym_gc_mutex, NULL);
        __atomic_store_n(&pym_gc_lock_owned, 0, __ATOMIC_RELAXED);
        pym_gc_lock_depth = 0;
    }
}
