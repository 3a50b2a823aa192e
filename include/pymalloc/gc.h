/*
 * pymalloc/gc.h -- CPython's object memory model for C programs: reference
 * counts, a generational collector for reference cycles, weak references and
 * finalizers, with the introspection of Python's gc module.
 *
 * Optional: a program that never calls these functions pays nothing (no
 * start-up work, no memory, no test on any malloc path).  Objects live in
 * pymalloc's pools like any other block; the payload pointer pym_new returns
 * is what every function below takes.
 *
 * Life of an object (CPython's rules):
 *   - pym_new returns it with refcount 1 and a zeroed payload; instances of a
 *     PYM_TYPE_GC type are tracked by the collector (in generation 0).
 *   - pym_incref / pym_decref move the count; when it reaches zero, in order:
 *     weak references to it are cleared and their callbacks run (newest
 *     weak reference first), `finalize` runs (once in the object's life; it
 *     may resurrect the object by taking a new reference), `clear` drops
 *     the references it owns, `dealloc` releases anything else, the memory
 *     is freed.  Long chains are torn down iteratively: no recursion depth
 *     limit, a million-object chain is fine.
 *   - Reference cycles never reach zero; pym_gc_collect (called by the
 *     program, or automatically by pym_new past the thresholds) finds them.
 *
 * Type callbacks: `traverse` must call `visit(child, arg)` for every object
 * pointer the object owns a reference to (NULLs may be skipped or passed),
 * and return the first non-zero value visit returns (or 0).  `clear` must
 * decref each owned reference and set the field to NULL before the decref
 * (so it can run twice and the collector may call it on a live object).
 * A GC type may have no `clear`: unreachable cycles through it can then not
 * be broken and are reported as uncollectable (kept on the garbage list),
 * like CPython's objects with legacy __del__ finalizers.
 *
 * Threads: the collector's state is global and guarded by one lock in the
 * spirit of Python's GIL.  A program that uses this API from one thread
 * needs no locking at all.  When several threads use it, each holds
 * pym_gc_lock() while it calls any function here or touches GC-managed
 * objects; refcounts are plain integers under that lock.  The lock is
 * recursive (finalizers and callbacks may take it again) and fork-safe.
 * With PYMALLOC_DEBUG=1, once any thread has taken the lock, pym_new (of a
 * GC type), pym_weakref_new and pym_gc_collect abort when the caller does
 * not hold it.
 *
 * Misuse: pym_new(NULL), a PYM_TYPE_GC type without `traverse` or unknown
 * flags fail with EINVAL and a message on stderr.  Decref of an object that
 * is dead or being torn down, or an incref/decref that finds a count of
 * zero, is reported with the type name and the address and ignored; with
 * PYMALLOC_DEBUG=1 or a --enable-debug build it aborts instead (debug mode
 * also keeps the last dead objects' headers readable so the type name of a
 * recently freed object is still known).
 */
#ifndef PYMALLOC_GC_H
#define PYMALLOC_GC_H

#include <stddef.h>

#include "../pymalloc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- types and objects ------------------------------------------------ */
typedef int (*pym_visit_fn)(void *obj, void *arg);

#define PYM_TYPE_GC 0x1u /* instances may hold references and form cycles */

typedef struct pym_type {
    const char *name;            /* shown in reports and debug output */
    size_t size;                 /* payload bytes */
    unsigned flags;              /* PYM_TYPE_GC: instances may hold references and form cycles */
    int  (*traverse)(void *self, pym_visit_fn visit, void *arg); /* visit each reference the object owns */
    void (*clear)(void *self);   /* drop (decref and NULL) every reference the object owns */
    void (*finalize)(void *self);/* like __del__: runs at most once per object, may resurrect it */
    void (*dealloc)(void *self); /* optional: release non-object resources just before the memory is freed */
} pym_type;

/* A new object: zeroed payload, refcount 1, tracked if PYM_TYPE_GC.  May run
 * a collection first (see pym_gc_collect).  NULL with errno EINVAL (bad
 * type) or ENOMEM.  The type must outlive its instances. */
PYM_API void *pym_new(const pym_type *type) PYM_MALLOC_LIKE;
PYM_API void pym_incref(void *obj);       /* NULL: nothing */
PYM_API void pym_decref(void *obj);       /* NULL: nothing; at zero the object dies (see above) */
PYM_API size_t pym_refcount(const void *obj); /* 0 for NULL */
PYM_API const pym_type *pym_type_of(const void *obj);

/* ---- weak references ---------------------------------------------------- */
/* A weak reference is itself a small GC-tracked object (so the collector can
 * tell when a weak reference is part of the garbage, as CPython does).  The
 * creator owns one reference to it: pym_weakref_free drops it (it is
 * pym_decref), and a GC object that keeps a weakref visits it in traverse.
 *
 * When the referent dies, the reference is cleared and then the callback
 * runs as callback(ref, arg), newest weak reference first.  No callback runs
 * for a weak reference that is itself garbage in the same collection, or
 * that was freed before its turn came.  A callback may free its own ref. */
typedef struct pym_weakref pym_weakref;
typedef void (*pym_weakref_callback)(pym_weakref *ref, void *arg);
/* NULL with EINVAL for a NULL or dead object, ENOMEM without memory. */
PYM_API pym_weakref *pym_weakref_new(void *obj, pym_weakref_callback callback, void *arg);
PYM_API void *pym_weakref_get(pym_weakref *ref);  /* a new strong reference, or NULL once the object is dead */
PYM_API void pym_weakref_free(pym_weakref *ref);  /* NULL: nothing */
PYM_API size_t pym_weakref_count(const void *obj); /* live weak references to obj */

/* ---- the collector ------------------------------------------------------ */
#define PYM_GC_GENERATIONS 3

/* Collect generation `generation` (0, 1 or 2) and every younger one.
 * Returns the number of unreachable objects found (collected, counting the
 * ones saved by PYM_GC_DEBUG_SAVEALL, plus uncollectable; objects a
 * finalizer resurrected are not counted), 0 when called from inside a
 * collection (a finalizer or callback), -1 with EINVAL for a bad generation.
 *
 * Automatic collection, CPython 3.12's rules: count[0] is allocations minus
 * deallocations of tracked objects since generation 0 was last collected;
 * when pym_new makes it exceed threshold[0] (701 with the defaults), the
 * oldest generation g whose count exceeds its threshold is collected before
 * pym_new returns, except that a full collection (g = 2) is skipped while
 * the objects waiting for it are fewer than a quarter of those already in
 * generation 2.  Collecting g zeroes count[0..g] and adds one to count[g+1].
 * Survivors of g move to g+1. */
PYM_API long pym_gc_collect(int generation);
PYM_API void pym_gc_enable(void);    /* automatic collection on (the default) */
PYM_API void pym_gc_disable(void);   /* explicit pym_gc_collect still works */
PYM_API int pym_gc_isenabled(void);
/* Defaults 700, 10, 10.  threshold[0] = 0 turns automatic collection off.
 * Negative values are refused (message, thresholds unchanged). */
PYM_API void pym_gc_set_threshold(long threshold0, long threshold1, long threshold2);
PYM_API void pym_gc_get_threshold(long out[PYM_GC_GENERATIONS]);
PYM_API void pym_gc_get_count(long out[PYM_GC_GENERATIONS]);

/* Move every tracked object to a permanent generation the collector never
 * looks at (Python's gc.freeze, for fork-heavy servers); unfreeze moves them
 * back into the oldest generation. */
PYM_API void pym_gc_freeze(void);
PYM_API void pym_gc_unfreeze(void);
PYM_API size_t pym_gc_get_freeze_count(void);

/* Tracking by hand (Python's PyObject_GC_Track/UnTrack, gc.is_tracked):
 * only objects of PYM_TYPE_GC types can be tracked; an untracked object is
 * invisible to the collector but still refcounted. */
PYM_API void pym_gc_track(void *obj);
PYM_API void pym_gc_untrack(void *obj);
PYM_API int pym_gc_is_tracked(const void *obj);
PYM_API int pym_gc_is_finalized(const void *obj); /* its finalize has run */

/* ---- statistics and callbacks ------------------------------------------- */
typedef struct pym_gc_stats {
    size_t collections;          /* times this generation was collected */
    size_t collected;            /* unreachable objects found and freed (or saved) */
    size_t uncollectable;        /* unreachable objects that could not be freed */
} pym_gc_stats_t;
PYM_API void pym_gc_get_stats(pym_gc_stats_t out[PYM_GC_GENERATIONS]);

typedef enum pym_gc_phase { PYM_GC_START, PYM_GC_STOP } pym_gc_phase;
typedef struct pym_gc_info {
    int generation;              /* the generation being collected */
    long collected;              /* PYM_GC_STOP: as counted in the statistics; 0 at start */
    long uncollectable;          /* PYM_GC_STOP: as counted in the statistics; 0 at start */
} pym_gc_info;
typedef void (*pym_gc_callback_fn)(pym_gc_phase phase, const pym_gc_info *info, void *arg);
/* Called at the start and stop of every collection, automatic or not, in the
 * order they were added.  0, or -1 with ENOMEM. */
PYM_API int pym_gc_callback_add(pym_gc_callback_fn callback, void *arg);
/* Removes the first registration of (callback, arg): 0, or -1 with ENOENT. */
PYM_API int pym_gc_callback_remove(pym_gc_callback_fn callback, void *arg);

/* ---- debugging ---------------------------------------------------------- */
#define PYM_GC_DEBUG_STATS 0x01u          /* print each collection's figures on stderr */
#define PYM_GC_DEBUG_COLLECTABLE 0x02u    /* print each collectable object found */
#define PYM_GC_DEBUG_UNCOLLECTABLE 0x04u  /* print each uncollectable object found */
#define PYM_GC_DEBUG_SAVEALL 0x20u        /* keep unreachable objects on the garbage list instead of freeing them */
#define PYM_GC_DEBUG_LEAK (PYM_GC_DEBUG_COLLECTABLE | PYM_GC_DEBUG_UNCOLLECTABLE | PYM_GC_DEBUG_SAVEALL)
PYM_API void pym_gc_set_debug(unsigned flags);
PYM_API unsigned pym_gc_get_debug(void);

/* The garbage list (Python's gc.garbage): uncollectable objects, and every
 * unreachable object under PYM_GC_DEBUG_SAVEALL.  The list holds a reference
 * to each entry.  pym_gc_garbage_item returns a borrowed pointer (NULL past
 * the end); pym_gc_garbage_clear drops the list's references and returns
 * how many it held (saved cycles are then found again by the next
 * collection). */
PYM_API size_t pym_gc_garbage_count(void);
PYM_API void *pym_gc_garbage_item(size_t index);
PYM_API size_t pym_gc_garbage_clear(void);

/* Introspection.  Each calls fn(obj, arg) for the objects it finds and stops
 * at the first non-zero return, which it returns (0 otherwise, -1 with
 * EINVAL or ENOMEM on bad arguments or no memory).  The objects are held
 * (a reference each) while fn runs, so fn may do anything, even free them.
 *   visit_objects: tracked objects of one generation (0..2), or of all
 *                  three with -1 (not the frozen ones);
 *   get_referents: what obj's traverse visits;
 *   get_referrers: tracked objects whose traverse visits obj. */
PYM_API int pym_gc_visit_objects(int generation, pym_visit_fn fn, void *arg);
PYM_API int pym_gc_get_referents(void *obj, pym_visit_fn fn, void *arg);
PYM_API int pym_gc_get_referrers(void *obj, pym_visit_fn fn, void *arg);

/* ---- threads ------------------------------------------------------------ */
PYM_API void pym_gc_lock(void);      /* recursive */
PYM_API void pym_gc_unlock(void);

#ifdef __cplusplus
}
#endif

#endif /* PYMALLOC_GC_H */
