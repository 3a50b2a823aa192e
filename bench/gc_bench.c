/*
 * gc_bench.c -- workloads of the GC side API (pymalloc/gc.h), timed; the
 * same workloads in Python are bench/gc_bench.py, and bench/gc_compare.sh
 * runs both and prints the ratios (`make bench-gc`).
 *
 * Objects are "nodes" of two reference fields, the shape of a __slots__
 * class with two attributes in the Python twin.  Each workload prints one
 * line: "<name> <seconds>", the best of --repeat runs.
 *
 *   churn       create and drop N objects (refcount to zero each time)
 *   cycles      N/2 two-object cycles made and dropped, then one collection
 *   full        collection of generation 2 over N live objects (no garbage)
 *   chain       a chain of N objects, each owning the next, dropped at the head
 *   weakrefs    N objects, a weak reference with a callback to each, dropped
 *   build       N objects linked into a live tree with automatic collection
 *               on (default thresholds): the generational collector's cost
 *               while a program grows
 */
#include <pymalloc/gc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct node {
    void *left;                  /* owned references (or NULL) */
    void *right;
} node_t;

static int node_traverse(void *self, pym_visit_fn visit, void *arg)
{
    node_t *node = self;
    int result = node->left ? visit(node->left, arg) : 0;
    if (result == 0 && node->right)
        result = visit(node->right, arg);
    return result;
}

static void node_clear(void *self)
{
    node_t *node = self;
    void *left = node->left, *right = node->right;
    node->left = node->right = NULL;
    pym_decref(left);
    pym_decref(right);
}

static const pym_type node_type = {
    .name = "node", .size = sizeof(node_t), .flags = PYM_TYPE_GC,
    .traverse = node_traverse, .clear = node_clear,
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *new_node(void)
{
    void *obj = pym_new(&node_type);
    if (obj == NULL) {
        perror("pym_new");
        exit(1);
    }
    return obj;
}

static void run_churn(long n)
{
    for (long i = 0; i < n; i++)
        pym_decref(new_node());
}

static void run_cycles(long n)
{
    pym_gc_disable(); /* as gc_bench.py: one collection at the end finds them all */
    for (long i = 0; i < n / 2; i++) {
        node_t *a = new_node(), *b = new_node();
        a->left = b; /* each holds the reference pym_new gave to the other */
        b->left = a;
    }
    long found = pym_gc_collect(2);
    pym_gc_enable();
    if (found != n / 2 * 2) {
        fprintf(stderr, "cycles: collected %ld, expected %ld\n", found, n / 2 * 2);
        exit(1);
    }
}

/* A live binary-ish tree: node i is the left or right child of node (i-1)/2. */
static void *build_tree(long n)
{
    void **nodes = malloc((size_t)n * sizeof(void *));
    if (nodes == NULL)
        exit(1);
    for (long i = 0; i < n; i++) {
        nodes[i] = new_node();
        if (i > 0) {
            node_t *parent = nodes[(i - 1) / 2];
            if (i % 2)
                parent->left = nodes[i];
            else
                parent->right = nodes[i];
        }
    }
    void *root = nodes[0];
    free(nodes);
    return root;
}

static double time_full(long n)
{
    void *root = build_tree(n);
    pym_gc_collect(2);
    double start = now_seconds();
    long found = pym_gc_collect(2);
    double elapsed = now_seconds() - start;
    if (found != 0)
        exit(1);
    pym_decref(root);
    return elapsed;
}

static void run_chain(long n)
{
    pym_gc_disable();
    node_t *head = new_node(), *tail = head;
    for (long i = 1; i < n; i++) {
        node_t *next = new_node();
        tail->left = next;
        tail = next;
    }
    pym_decref(head);
    pym_gc_enable();
}

static long callbacks_run;
static void count_callback(pym_weakref *ref, void *arg)
{
    (void)arg;
    callbacks_run++;
    pym_weakref_free(ref);
}

static void run_weakrefs(long n)
{
    callbacks_run = 0;
    for (long i = 0; i < n; i++) {
        void *obj = new_node();
        if (pym_weakref_new(obj, count_callback, NULL) == NULL)
            exit(1);
        pym_decref(obj);
    }
    if (callbacks_run != n)
        exit(1);
}

static void run_build(long n)
{
    pym_decref(build_tree(n));
}

int main(int argc, char **argv)
{
    const char *only = NULL;
    long n = 1000000;
    int repeat = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--n") && i + 1 < argc)
            n = atol(argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (argv[i][0] != '-')
            only = argv[i];
        else {
            fprintf(stderr, "usage: %s [--n N] [--repeat R] [workload]\n", argv[0]);
            return 2;
        }
    }
    static const struct {
        const char *name;
        void (*run)(long n);
        double (*timed)(long n); /* times only part of itself */
    } workloads[] = {
        { "churn", run_churn, NULL },   { "cycles", run_cycles, NULL },     { "full", NULL, time_full },
        { "chain", run_chain, NULL },   { "weakrefs", run_weakrefs, NULL }, { "build", run_build, NULL },
    };
    for (size_t w = 0; w < sizeof(workloads) / sizeof(workloads[0]); w++) {
        if (only && strcmp(only, workloads[w].name))
            continue;
        double best = 1e30;
        for (int r = 0; r < repeat; r++) {
            double elapsed;
            if (workloads[w].timed) {
                elapsed = workloads[w].timed(n);
            } else {
                double start = now_seconds();
                workloads[w].run(n);
                elapsed = now_seconds() - start;
            }
            if (elapsed < best)
                best = elapsed;
            pym_gc_collect(2);
        }
        printf("%s %.6f\n", workloads[w].name, best);
        fflush(stdout);
    }
    return 0;
}
