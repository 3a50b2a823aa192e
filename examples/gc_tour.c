/*
 * gc_tour.c -- a guided tour of Python's memory management, in C, with
 * pymalloc's object API (include/pymalloc/gc.h).
 *
 * Each step does what a Python program does behind the scenes and prints
 * what happens:
 *   1. reference counts rise and fall as references are taken and dropped
 *      (pym_refcount is sys.getrefcount without its own extra reference);
 *   2. the destructor runs at the very moment the count reaches zero;
 *   3. two nodes referring to each other: counting alone never frees them,
 *      the cycle collector (pym_gc_collect, Python's gc.collect) does;
 *   4. a cache of weak references: an entry goes away by itself when its
 *      object dies (Python's weakref.WeakValueDictionary);
 *   5. generations: allocations push count 0 up to its threshold, and a
 *      collection runs by itself (Python's gc.get_count/get_threshold);
 *      pym_gc_freeze hides long-lived objects from the collector.
 *
 * `make gc-tour` builds and runs it.  The output is deterministic (no
 * addresses, no timings): tests/example_gc_tour.sh compares it with
 * examples/gc_tour.out.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pymalloc/gc.h"

static long objects_created, objects_freed;
static bool quiet;               /* step 5 makes thousands of objects: no line for each */

/* ---- a Point: holds no references, so it is not tracked by the collector ---- */
typedef struct point {
    int x, y;
} point_t;

static void point_finalize(void *self)
{
    point_t *point = self;
    printf("    finalize Point(%d, %d): like __del__, runs once\n", point->x, point->y);
}

static void point_dealloc(void *self)
{
    point_t *point = self;
    printf("    dealloc Point(%d, %d): the memory is freed right after\n", point->x, point->y);
    objects_freed++;
}

static const pym_type point_type = {
    .name = "Point", .size = sizeof(point_t), .finalize = point_finalize, .dealloc = point_dealloc,
};

/* ---- a Node: refers to another node, so it can be part of a cycle ----------- */
typedef struct node {
    char name[16];
    struct node *other;          /* a strong reference (owned), or NULL */
} node_t;

static int node_traverse(void *self, pym_visit_fn visit, void *arg)
{
    node_t *node = self;
    return node->other != NULL ? visit(node->other, arg) : 0;
}

static void node_clear(void *self)
{
    node_t *node = self;
    node_t *other = node->other;
    node->other = NULL;          /* first unlink, then drop: clear may run twice */
    pym_decref(other);
}

static void node_finalize(void *self)
{
    if (!quiet)
        printf("    finalize Node %s\n", ((node_t *)self)->name);
}

static void node_dealloc(void *self)
{
    if (!quiet)
        printf("    dealloc Node %s\n", ((node_t *)self)->name);
    objects_freed++;
}

static const pym_type node_type = {
    .name = "Node", .size = sizeof(node_t), .flags = PYM_TYPE_GC,
    .traverse = node_traverse, .clear = node_clear, .finalize = node_finalize, .dealloc = node_dealloc,
};

/* pym_new that ends the tour when memory runs out. */
static void *new_object(const pym_type *type)
{
    void *object = pym_new(type);
    if (object == NULL) {
        perror("pym_new");
        exit(1);
    }
    objects_created++;
    return object;
}

static node_t *new_node(const char *name)
{
    node_t *node = new_object(&node_type);
    snprintf(node->name, sizeof(node->name), "%s", name);
    return node;
}

/* One line of the tour: the Python statement, the C call doing its work,
 * and what happened. */
static void show(const char *python, const char *c_call, const char *format, ...)
{
    char result[128];
    va_list args;
    va_start(args, format);
    vsnprintf(result, sizeof(result), format, args);
    va_end(args);
    if (result[0] == '\0')
        printf("%-21s %s\n", python, c_call);
    else
        printf("%-21s %-20s %s\n", python, c_call, result);
}

/* ---- steps 1 and 2 ----------------------------------------------------------------- */
static void reference_counts(void)
{
    printf("== 1. Reference counts ==\n");
    point_t *p = new_object(&point_type);
    p->x = 3, p->y = 4;
    show("p = Point(3, 4)", "pym_new", "refcount %zu (the creator's reference)", pym_refcount(p));
    pym_incref(p);
    show("q = p", "pym_incref", "refcount %zu", pym_refcount(p));
    pym_incref(p);
    show("list.append(p)", "pym_incref", "refcount %zu", pym_refcount(p));
    pym_decref(p);
    show("list.clear()", "pym_decref", "refcount %zu", pym_refcount(p));
    pym_decref(p);
    show("del q", "pym_decref", "refcount %zu", pym_refcount(p));
    printf("(Python's sys.getrefcount(p) says one more: its own argument is a reference too)\n");

    printf("\n== 2. The destructor runs when the count reaches zero ==\n");
    show("del p", "pym_decref", "the last reference goes:");
    pym_decref(p);
    printf("back from pym_decref: the Point is gone already, no collector involved\n");
}

/* ---- step 3 ------------------------------------------------------------------------ */
static int count_object(void *object, void *count)
{
    (void)object;
    ++*(long *)count;
    return 0;
}

static long objects_in_generation(int generation)
{
    long count = 0;
    pym_gc_visit_objects(generation, count_object, &count);
    return count;
}

static void reference_cycle(void)
{
    printf("\n== 3. A reference cycle ==\n");
    node_t *a = new_node("a"), *b = new_node("b");
    show("a, b = Node(), Node()", "pym_new x 2", "refcounts %zu and %zu", pym_refcount(a), pym_refcount(b));
    a->other = b;                /* a now owns a reference to b */
    pym_incref(b);
    show("a.other = b", "pym_incref(b)", "refcount of b %zu", pym_refcount(b));
    b->other = a;
    pym_incref(a);
    show("b.other = a", "pym_incref(a)", "refcount of a %zu", pym_refcount(a));
    pym_decref(a);
    pym_decref(b);
    show("del a, b", "pym_decref x 2", "refcounts %zu and %zu: unreachable, but not zero:", pym_refcount(a),
         pym_refcount(b));
    show("", "", "no destructor ran, the memory stays taken");
    show("gc.get_objects(0)", "pym_gc_visit_objects", "%ld objects: the collector tracks them", objects_in_generation(0));
    show("gc.collect(0)", "pym_gc_collect(0)", "their references to each other explain their counts:");
    long found = pym_gc_collect(0);
    printf("pym_gc_collect returned %ld: two unreachable objects, finalized, then clear() broke the cycle\n",
           found);
}

/* ---- step 4 ------------------------------------------------------------------------- */
typedef struct cache_entry {
    const char *key;             /* NULL: a free entry */
    pym_weakref *ref;
} cache_entry_t;

static cache_entry_t cache[4];

/* The weak reference's callback: its object died, drop the entry. */
static void cache_evict(pym_weakref *ref, void *entry_arg)
{
    cache_entry_t *entry = entry_arg;
    printf("    callback: \"%s\" died, its cache entry is removed\n", entry->key);
    entry->key = NULL;
    entry->ref = NULL;
    pym_weakref_free(ref);
}

static void cache_put(const char *key, void *object)
{
    for (size_t i = 0; i < sizeof(cache) / sizeof(cache[0]); i++) {
        if (cache[i].key == NULL) {
            cache[i].key = key;
            cache[i].ref = pym_weakref_new(object, cache_evict, &cache[i]);
            return;
        }
    }
}

/* A new strong reference to the cached object, or NULL. */
static node_t *cache_get(const char *key)
{
    for (size_t i = 0; i < sizeof(cache) / sizeof(cache[0]); i++)
        if (cache[i].key != NULL && strcmp(cache[i].key, key) == 0)
            return pym_weakref_get(cache[i].ref);
    return NULL;
}

static void show_lookup(const char *key)
{
    char python[32];
    snprintf(python, sizeof(python), "cache[\"%s\"]", key);
    node_t *node = cache_get(key);
    if (node == NULL) {
        show(python, "pym_weakref_get", "missing");
        return;
    }
    show(python, "pym_weakref_get", "Node %s (refcount %zu while we hold it)", node->name, pym_refcount(node));
    pym_decref(node);
}

static void weakref_cache(void)
{
    printf("\n== 4. A cache of weak references ==\n");
    node_t *conf = new_node("conf");
    show("conf = Node()", "pym_new", "refcount %zu", pym_refcount(conf));
    cache_put("conf", conf);
    show("cache[\"conf\"] = conf", "pym_weakref_new", "refcount %zu, weak references %zu: the cache keeps",
         pym_refcount(conf), pym_weakref_count(conf));
    show("", "", "nothing alive");
    show_lookup("conf");
    show("del conf", "pym_decref", "the last strong reference goes:");
    pym_decref(conf);
    show_lookup("conf");

    printf("An object in a cycle stays cached until the collector finds it:\n");
    node_t *loop = new_node("loop"); /* loop = Node() */
    loop->other = loop;          /* a cycle of one */
    pym_incref(loop);
    show("loop.other = loop", "pym_new, pym_incref", "refcount %zu", pym_refcount(loop));
    cache_put("loop", loop);
    show("cache[\"loop\"] = loop", "pym_weakref_new", "weak references %zu", pym_weakref_count(loop));
    pym_decref(loop);
    show("del loop", "pym_decref", "refcount %zu: garbage, not found yet", pym_refcount(loop));
    show_lookup("loop");
    show("gc.collect(0)", "pym_gc_collect(0)", "weak references are cleared before finalizers run:");
    long found = pym_gc_collect(0);
    printf("pym_gc_collect returned %ld\n", found);
    show_lookup("loop");
}

/* ---- step 5 ------------------------------------------------------------------------- */
static void show_counts(const char *comment)
{
    long count[PYM_GC_GENERATIONS];
    pym_gc_get_count(count);
    show("gc.get_count()", "pym_gc_get_count", "(%ld, %ld, %ld)%s", count[0], count[1], count[2], comment);
}

/* Called at the start and at the end of every collection, automatic or
 * not (Python's gc.callbacks). */
static void announce_collection(pym_gc_phase phase, const pym_gc_info *info, void *arg)
{
    (void)arg;
    if (phase == PYM_GC_STOP) {
        long count[PYM_GC_GENERATIONS];
        pym_gc_get_count(count);
        printf("    collection of generation %d: %ld collected, counts now (%ld, %ld, %ld)\n", info->generation,
               info->collected, count[0], count[1], count[2]);
    }
}

static void generations(void)
{
    printf("\n== 5. Generations ==\n");
    long threshold[PYM_GC_GENERATIONS];
    pym_gc_get_threshold(threshold);
    show("gc.get_threshold()", "pym_gc_get_threshold", "(%ld, %ld, %ld)", threshold[0], threshold[1], threshold[2]);
    printf("Generation 0 is collected when the tracked objects allocated minus those freed\n");
    printf("exceed %ld, generation 1 after %ld collections of generation 0, generation 2 after %ld\n",
           threshold[0], threshold[1], threshold[2]);
    printf("of generation 1 (once the objects waiting for it are a quarter of those already there).\n");
    show("gc.collect()", "pym_gc_collect(2)", "%ld: nothing left to find", pym_gc_collect(2));
    show_counts("");

    static node_t *kept[701];
    quiet = true;
    for (int i = 0; i < 700; i++)
        kept[i] = new_node("kept");
    show("700 x Node(), kept", "pym_new x 700", "");
    show_counts("");
    pym_gc_callback_add(announce_collection, NULL);
    show("one more Node()", "pym_new", "crosses the threshold: a collection runs first");
    kept[700] = new_node("kept");
    show_counts(": generation 0 was collected once");
    show("gc.get_objects(g)", "pym_gc_visit_objects", "%ld, %ld and %ld objects in generations 0, 1 and 2:",
         objects_in_generation(0), objects_in_generation(1), objects_in_generation(2));
    show("", "", "the 700 survivors moved up, the new node is in 0");
    for (int i = 0; i < 701; i++)
        pym_decref(kept[i]);
    show("del kept", "pym_decref x 701", "all freed at once: no cycle among them");

    printf("Garbage nodes referring to themselves, until generation 1 is collected:\n");
    pym_gc_stats_t stats[PYM_GC_GENERATIONS];
    do {
        node_t *node = new_node("garbage");
        node->other = node;      /* takes our reference: a cycle nobody else reaches */
        pym_gc_get_stats(stats);
    } while (stats[1].collections == 0);
    pym_gc_callback_remove(announce_collection, NULL);

    printf("Long-lived objects can be hidden from the collector, e.g. before fork():\n");
    node_t *settings[3];
    for (int i = 0; i < 3; i++)
        settings[i] = new_node("settings");
    pym_gc_collect(2);           /* the garbage still waiting in the generations goes first */
    pym_gc_freeze();
    show("gc.freeze()", "pym_gc_freeze", "%zu objects frozen (gc.get_freeze_count())", pym_gc_get_freeze_count());
    show("gc.collect()", "pym_gc_collect(2)", "%ld: frozen objects are not even examined", pym_gc_collect(2));
    pym_gc_unfreeze();
    show("gc.unfreeze()", "pym_gc_unfreeze", "%ld objects back in generation 2", objects_in_generation(2));
    for (int i = 0; i < 3; i++)
        pym_decref(settings[i]);
    quiet = false;
}

int main(void)
{
    reference_counts();
    reference_cycle();
    weakref_cache();
    generations();
    printf("\n%ld objects created, %ld freed\n", objects_created, objects_freed);
    return objects_created == objects_freed ? 0 : 1;
}
