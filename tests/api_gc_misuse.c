/*
 * api_gc_misuse.c -- bad use of the refcount and cycle collector API
 * (include/pymalloc/gc.h), linked with -lpymalloc.
 *
 * A program that gets the object rules wrong must hear about it, with enough
 * detail to find the culprit (the function, the type name, the address), and
 * must not corrupt the heap: in release mode the bad call is reported and
 * ignored, in debug mode (PYMALLOC_DEBUG=1, or an --enable-debug build) it
 * aborts at once, as CPython's debug build does.
 *
 * The test runs itself again once per case, with PYMALLOC_DEBUG=0 or 1 in
 * the environment and the case name as argument, captures the child's
 * stdout and stderr through pipes and checks its exit status and its
 * report.  The child checks return values and errno itself (its CHECK
 * failures make it exit 1).
 *   - pym_new(NULL), a PYM_TYPE_GC type without traverse, unknown flag bits
 *     (on a plain and on a GC type): NULL with EINVAL and a message on
 *     stderr ("pym_new", the type's name); the next valid pym_new works;
 *   - decref of an object that just died (a GC and a plain one, no
 *     allocation in between), decref of an object from its own dealloc (the
 *     count would go below zero), incref at a count of zero (from dealloc):
 *     the report names the function ("pym_decref", "pym_incref"), the type
 *     and the address; release mode goes on (dealloc ran once, the heap
 *     still works: a thousand cycles are built and collected afterwards),
 *     debug mode is aborted by SIGABRT after the report;
 *   - debug mode only: a decref of a dead object after other allocations
 *     and 100 other deaths still names its type (the last dead headers are
 *     kept readable);
 *   - pym_weakref_new on NULL, on an object that just died and on an object
 *     inside its own dealloc: NULL with EINVAL;
 *   - bad arguments to the collector: pym_gc_collect(-1 / 3), a generation
 *     or a NULL object for the introspection functions (-1, EINVAL), the
 *     removal of a callback never added (-1, ENOENT), negative thresholds
 *     (refused with a message, thresholds unchanged), tracking an object of
 *     a non-GC type (stays untracked), NULL for incref/decref/refcount/
 *     weakref_free (nothing happens);
 *   - threads sharing the API: once another thread has taken pym_gc_lock,
 *     pym_new of a GC type without the lock is aborted in debug mode (with
 *     the lock it is fine), goes unchecked in release mode;
 *   - correct use (cycles, weakrefs with callbacks, finalizers, collections)
 *     prints nothing on stderr in either mode: no false alarm.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "testlib.h"
#include "pymalloc/gc.h"

/* ---- types the children use ------------------------------------------------------ */
typedef struct node {
    void *next;                  /* owned reference (or NULL) */
    long tag;
} node_t;

static int deallocs;             /* dealloc calls, every type */

static int node_traverse(void *self, pym_visit_fn visit, void *arg)
{
    node_t *node = self;
    return node->next != NULL ? visit(node->next, arg) : 0;
}

static void node_clear(void *self)
{
    node_t *node = self;
    void *next = node->next;
    node->next = NULL;
    pym_decref(next);
}

static void count_dealloc(void *self)
{
    (void)self;
    deallocs++;
}

static void decref_self_in_dealloc(void *self)
{
    deallocs++;
    pym_decref(self);            /* the count is already zero: would go negative */
}

static void incref_self_in_dealloc(void *self)
{
    deallocs++;
    pym_incref(self);            /* too late to resurrect: the count is zero */
}

static pym_weakref *weakref_from_dealloc = (pym_weakref *)1;
static int weakref_from_dealloc_errno;

static void weakref_self_in_dealloc(void *self)
{
    deallocs++;
    errno = 0;
    weakref_from_dealloc = pym_weakref_new(self, NULL, NULL);
    weakref_from_dealloc_errno = errno;
}

static int finalizes;

static void count_finalize(void *self)
{
    (void)self;
    finalizes++;
}

static const pym_type node_type = {"MisuseNode", sizeof(node_t), PYM_TYPE_GC, node_traverse, node_clear,
                                   count_finalize, count_dealloc};
static const pym_type plain_type = {"MisusePlain", sizeof(long), 0, NULL, NULL, NULL, count_dealloc};
static const pym_type no_traverse_type = {"MisuseNoTraverse", sizeof(node_t), PYM_TYPE_GC, NULL, node_clear,
                                          NULL, NULL};
static const pym_type bad_flags_plain_type = {"MisuseFlagsPlain", sizeof(long), 0x100u, NULL, NULL, NULL, NULL};
static const pym_type bad_flags_gc_type = {"MisuseFlagsGC", sizeof(node_t), PYM_TYPE_GC | 0x8000u, node_traverse,
                                           node_clear, NULL, NULL};
static const pym_type self_decref_type = {"MisuseSelfDecref", sizeof(node_t), PYM_TYPE_GC, node_traverse,
                                          node_clear, NULL, decref_self_in_dealloc};
static const pym_type self_incref_type = {"MisuseSelfIncref", sizeof(long), 0, NULL, NULL, NULL,
                                          incref_self_in_dealloc};
static const pym_type weak_in_dealloc_type = {"MisuseWeakInDealloc", sizeof(long), 0, NULL, NULL, NULL,
                                              weakref_self_in_dealloc};

/* ---- the child's side: one case -------------------------------------------------- */
static void print_address(const void *object)
{
    printf("object %p\n", object);
    fflush(stdout);
}

/* A pym_new that must fail with EINVAL; the next valid pym_new must work. */
static void expect_new_refused(const pym_type *type, const char *what)
{
    errno = 0;
    void *object = pym_new(type);
    CHECK(object == NULL, "pym_new(%s) returns NULL (got %p)", what, object);
    CHECK(errno == EINVAL, "pym_new(%s) sets EINVAL (errno %d)", what, errno);
    void *fine = pym_new(&node_type);
    CHECK(fine != NULL && pym_refcount(fine) == 1, "a valid pym_new works after pym_new(%s)", what);
    pym_decref(fine);
}

/* After an ignored bad call, the heap and the collector still work: rings of
 * three nodes are built, dropped and found by the collector. */
static void collector_still_works(void)
{
    pym_gc_collect(2);
    pym_gc_disable();            /* one explicit collection must find them all */
    int before = deallocs;
    for (int i = 0; i < 1000; i++) {
        node_t *a = pym_new(&node_type), *b = pym_new(&node_type), *c = pym_new(&node_type);
        if (a == NULL || b == NULL || c == NULL) {
            CHECK(false, "pym_new failed after the ignored call");
            return;
        }
        a->next = b;             /* takes the creation reference of b */
        b->next = c;             /* and of c */
        c->next = a;
        pym_incref(a);           /* c->next's reference to a */
        pym_decref(a);           /* the creation reference: the ring is garbage */
    }
    long found = pym_gc_collect(2);
    pym_gc_enable();
    CHECK(found == 3000, "the collector finds the 3000 ring nodes after the ignored call (found %ld)", found);
    CHECK(deallocs - before == 3000, "and frees them all (%d deallocs)", deallocs - before);
    CHECK(pym_gc_garbage_count() == 0, "nothing uncollectable (%zu)", pym_gc_garbage_count());
}

static int gc_callback_calls;

static void count_gc_callback(pym_gc_phase phase, const pym_gc_info *info, void *arg)
{
    (void)phase;
    (void)info;
    (void)arg;
    gc_callback_calls++;
}

static int weakref_callbacks;

static void free_own_weakref(pym_weakref *ref, void *arg)
{
    (void)arg;
    weakref_callbacks++;
    pym_weakref_free(ref);
}

static int visit_nothing(void *object, void *arg)
{
    (void)object;
    (void)arg;
    return 0;
}

/* Another thread uses the API properly, under the lock. */
static void *lock_and_release(void *unused)
{
    (void)unused;
    pym_gc_lock();
    pym_decref(pym_new(&node_type));
    pym_gc_unlock();
    return NULL;
}

static int run_case(const char *name)
{
    if (strcmp(name, "new-null") == 0) {
        expect_new_refused(NULL, "NULL");
    } else if (strcmp(name, "new-no-traverse") == 0) {
        expect_new_refused(&no_traverse_type, "a GC type without traverse");
    } else if (strcmp(name, "new-flags-plain") == 0) {
        expect_new_refused(&bad_flags_plain_type, "flags 0x100");
    } else if (strcmp(name, "new-flags-gc") == 0) {
        expect_new_refused(&bad_flags_gc_type, "flags PYM_TYPE_GC | 0x8000");
    } else if (strcmp(name, "decref-dead-gc") == 0 || strcmp(name, "decref-dead-plain") == 0) {
        bool gc = strcmp(name, "decref-dead-gc") == 0;
        void *object = pym_new(gc ? &node_type : &plain_type);
        REQUIRE(object != NULL);
        print_address(object);
        pym_decref(object);      /* dies here */
        CHECK(deallocs == 1, "the object died (%d deallocs)", deallocs);
        pym_decref(object);      /* the bug: no allocation since the death */
        printf("continued\n");
        CHECK(deallocs == 1, "the bad decref did not tear the object down again (%d deallocs)", deallocs);
        collector_still_works();
    } else if (strcmp(name, "decref-dead-later") == 0) {
        /* Debug mode: the dead object's header stays readable for a while. */
        void *object = pym_new(&node_type);
        REQUIRE(object != NULL);
        print_address(object);
        pym_decref(object);
        void *others[8];
        for (int i = 0; i < 8; i++)
            others[i] = malloc(24 + (size_t)i * 8);
        for (int i = 0; i < 100; i++) {
            void *plain = pym_new(&plain_type);
            pym_decref(plain);
        }
        for (int i = 0; i < 8; i++)
            free(others[i]);
        pym_decref(object);
        printf("continued\n");
    } else if (strcmp(name, "decref-in-dealloc") == 0 || strcmp(name, "incref-in-dealloc") == 0) {
        void *object = pym_new(name[0] == 'd' ? &self_decref_type : &self_incref_type);
        REQUIRE(object != NULL);
        print_address(object);
        pym_decref(object);
        printf("continued\n");
        CHECK(deallocs == 1, "dealloc ran once (%d)", deallocs);
        collector_still_works();
    } else if (strcmp(name, "weakref-null") == 0) {
        errno = 0;
        pym_weakref *ref = pym_weakref_new(NULL, NULL, NULL);
        CHECK(ref == NULL && errno == EINVAL, "pym_weakref_new(NULL): NULL, EINVAL (got %p, errno %d)",
              (void *)ref, errno);
        CHECK(pym_weakref_count(NULL) == 0, "pym_weakref_count(NULL) is 0");
    } else if (strcmp(name, "weakref-dead") == 0) {
        void *object = pym_new(&node_type);
        REQUIRE(object != NULL);
        pym_decref(object);
        errno = 0;
        pym_weakref *ref = pym_weakref_new(object, NULL, NULL); /* no allocation since the death */
        CHECK(ref == NULL && errno == EINVAL, "pym_weakref_new(dead object): NULL, EINVAL (got %p, errno %d)",
              (void *)ref, errno);
        void *inside = pym_new(&weak_in_dealloc_type);
        REQUIRE(inside != NULL);
        pym_decref(inside);
        CHECK(weakref_from_dealloc == NULL && weakref_from_dealloc_errno == EINVAL,
              "pym_weakref_new(self) in dealloc: NULL, EINVAL (got %p, errno %d)", (void *)weakref_from_dealloc,
              weakref_from_dealloc_errno);
        CHECK(deallocs == 2, "both objects died once (%d deallocs)", deallocs);
        collector_still_works();
    } else if (strcmp(name, "unlocked-after-lock") == 0) {
        pthread_t thread;
        REQUIRE(pthread_create(&thread, NULL, lock_and_release, NULL) == 0);
        REQUIRE(pthread_join(thread, NULL) == 0);
        pym_gc_lock();
        pym_decref(pym_new(&node_type));
        pym_gc_unlock();
        printf("locked call ok\n");
        fflush(stdout);
        void *unlocked = pym_new(&node_type); /* the bug: threads share the API, this thread holds no lock */
        printf("continued\n");
        CHECK(unlocked != NULL, "release mode: the unlocked pym_new still works");
        pym_decref(unlocked);
    } else if (strcmp(name, "collector-arguments") == 0) {
        int bad_generations[] = {-1, 3, 1000};
        for (int i = 0; i < 3; i++) {
            errno = 0;
            long result = pym_gc_collect(bad_generations[i]);
            CHECK(result == -1 && errno == EINVAL, "pym_gc_collect(%d): -1, EINVAL (got %ld, errno %d)",
                  bad_generations[i], result, errno);
        }
        int bad_visit_generations[] = {-2, 3};
        for (int i = 0; i < 2; i++) {
            errno = 0;
            int result = pym_gc_visit_objects(bad_visit_generations[i], visit_nothing, NULL);
            CHECK(result == -1 && errno == EINVAL, "pym_gc_visit_objects(%d): -1, EINVAL (got %d, errno %d)",
                  bad_visit_generations[i], result, errno);
        }
        errno = 0;
        int result = pym_gc_get_referents(NULL, visit_nothing, NULL);
        CHECK(result == -1 && errno == EINVAL, "pym_gc_get_referents(NULL): -1, EINVAL (got %d, errno %d)", result,
              errno);
        errno = 0;
        result = pym_gc_get_referrers(NULL, visit_nothing, NULL);
        CHECK(result == -1 && errno == EINVAL, "pym_gc_get_referrers(NULL): -1, EINVAL (got %d, errno %d)", result,
              errno);
        errno = 0;
        result = pym_gc_callback_remove(count_gc_callback, NULL);
        CHECK(result == -1 && errno == ENOENT, "removing a callback never added: -1, ENOENT (got %d, errno %d)",
              result, errno);
        CHECK(pym_gc_callback_add(count_gc_callback, &gc_callback_calls) == 0, "adding a callback works");
        errno = 0;
        result = pym_gc_callback_remove(count_gc_callback, NULL);
        CHECK(result == -1 && errno == ENOENT, "removing it with another arg: -1, ENOENT (got %d, errno %d)",
              result, errno);
        CHECK(pym_gc_callback_remove(count_gc_callback, &gc_callback_calls) == 0, "removing it works");
        errno = 0;
        result = pym_gc_callback_remove(count_gc_callback, &gc_callback_calls);
        CHECK(result == -1 && errno == ENOENT, "removing it twice: -1, ENOENT (got %d, errno %d)", result, errno);
        pym_gc_collect(0);
        CHECK(gc_callback_calls == 0, "a removed callback is not called (%d calls)", gc_callback_calls);

        pym_incref(NULL);
        pym_decref(NULL);
        pym_weakref_free(NULL);
        CHECK(pym_refcount(NULL) == 0, "pym_refcount(NULL) is 0");
        void *plain = pym_new(&plain_type);
        REQUIRE(plain != NULL);
        pym_gc_track(plain);
        CHECK(pym_gc_is_tracked(plain) == 0, "an object of a non-GC type cannot be tracked");
        CHECK(pym_gc_collect(2) == 0, "and the collector does not see it");
        CHECK(pym_refcount(plain) == 1 && deallocs == 0, "it is still alive with its one reference");
        pym_decref(plain);
        CHECK(deallocs == 1, "and dies normally (%d deallocs)", deallocs);
    } else if (strcmp(name, "threshold-negative") == 0) {
        long before[PYM_GC_GENERATIONS], after[PYM_GC_GENERATIONS];
        pym_gc_set_threshold(500, 20, 30);
        pym_gc_get_threshold(before);
        pym_gc_set_threshold(-1, 10, 10);
        pym_gc_set_threshold(700, -5, 10);
        pym_gc_set_threshold(700, 10, -100);
        pym_gc_get_threshold(after);
        CHECK(after[0] == 500 && after[1] == 20 && after[2] == 30 && memcmp(before, after, sizeof(after)) == 0,
              "negative thresholds are refused: (%ld, %ld, %ld) stays (%ld, %ld, %ld)", after[0], after[1],
              after[2], before[0], before[1], before[2]);
    } else if (strcmp(name, "clean") == 0) {
        int created = 0, weak_made = 0;
        for (int round = 0; round < 2000; round++) {
            node_t *a = pym_new(&node_type), *b = pym_new(&node_type);
            REQUIRE(a != NULL && b != NULL);
            created += 2;
            a->next = b;          /* takes the creation reference of b */
            b->next = a;
            pym_incref(a);       /* b->next's reference */
            if (round % 3 == 0 && pym_weakref_new(b, free_own_weakref, NULL) != NULL)
                weak_made++;
            pym_decref(a);       /* the cycle is garbage now */
            if (round % 500 == 0)
                pym_gc_collect(round % 3);
            void *plain = pym_new(&plain_type);
            created++;
            pym_decref(plain);
        }
        pym_gc_collect(2);
        CHECK(deallocs == created, "every object died (%d of %d)", deallocs, created);
        CHECK(weakref_callbacks == weak_made, "every weakref callback ran (%d of %d)", weakref_callbacks,
              weak_made);
        CHECK(finalizes == created * 2 / 3, "every GC node was finalized (%d)", finalizes);
    } else {
        fprintf(stderr, "unknown case %s\n", name);
        return 2;
    }
    return check_finish();
}

/* ---- the parent's side ------------------------------------------------------------ */
typedef child_outcome_t outcome_t;

/* Run `self case` with PYMALLOC_DEBUG=debug (testlib.h). */
static outcome_t run_child(const char *self, const char *name, int debug)
{
    outcome_t result = run_self_case(self, name, debug ? "1" : "0");
    REQUIRE(result.status != -1, "could not run the case %s", name);
    return result;
}

static bool exited_zero(const outcome_t *result)
{
    return WIFEXITED(result->status) && WEXITSTATUS(result->status) == 0;
}

static bool aborted(const outcome_t *result)
{
    return WIFSIGNALED(result->status) && WTERMSIG(result->status) == SIGABRT;
}

/* The case must fail cleanly in the child's own checks and leave a message
 * containing each of `texts` (NULL-terminated) on stderr. */
static void expect_refusal(const char *self, const char *name, const char *const *texts)
{
    outcome_t result = run_child(self, name, 0);
    CHECK(exited_zero(&result), "%s: the child's checks pass (status %#x):\n%s%s", name, result.status, result.out,
          result.err);
    CHECK(result.err[0] != '\0', "%s: a message on stderr", name);
    for (int i = 0; texts[i] != NULL; i++)
        CHECK(strstr(result.err, texts[i]) != NULL, "%s: the message contains \"%s\":\n%s", name, texts[i],
              result.err);
    printf("%s: %s%s", name, result.err, result.err[0] == '\0' || strchr(result.err, '\n') ? "" : "\n");
}

/* A refcount error: the report names `function` (unless NULL), `type_name`
 * and the object's address; release mode goes on and passes its own checks,
 * debug mode is aborted. */
static void expect_refcount_report(const char *self, const char *name, int debug, const char *function,
                                   const char *type_name)
{
#ifdef PYM_DEBUG
    bool abort_expected = true; /* an --enable-debug build aborts whatever the environment says */
#else
    bool abort_expected = debug != 0;
#endif
    outcome_t result = run_child(self, name, debug);
    const char *mode = debug ? "PYMALLOC_DEBUG=1" : "PYMALLOC_DEBUG=0";
    char address[64] = "";
    sscanf(result.out, "object %63s", address);
    if (abort_expected) {
        CHECK(aborted(&result), "%s (%s): the child is aborted by SIGABRT (status %#x):\n%s%s", name, mode,
              result.status, result.out, result.err);
        CHECK(strstr(result.out, "continued") == NULL, "%s (%s): the program did not go on", name, mode);
    } else {
        CHECK(exited_zero(&result), "%s (%s): the call is ignored, the program goes on and passes its checks "
                                    "(status %#x):\n%s%s",
              name, mode, result.status, result.out, result.err);
        CHECK(strstr(result.out, "continued") != NULL, "%s (%s): the program went on", name, mode);
    }
    if (function != NULL)
        CHECK(strstr(result.err, function) != NULL, "%s (%s): the report names %s:\n%s", name, mode, function,
              result.err);
    CHECK(strstr(result.err, type_name) != NULL, "%s (%s): the report names the type %s:\n%s", name, mode,
          type_name, result.err);
    CHECK(address[0] != '\0' && strstr(result.err, address) != NULL, "%s (%s): the report gives the address %s:\n%s",
          name, mode, address, result.err);
    printf("%s (%s): %s", name, mode, result.err);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        return run_case(argv[1]);
    char self[4096];
    ssize_t length = readlink("/proc/self/exe", self, sizeof(self) - 1);
    REQUIRE(length > 0);
    self[length] = '\0';

    /* Correct use: quiet in both modes. */
    for (int debug = 0; debug <= 1; debug++) {
        outcome_t clean = run_child(self, "clean", debug);
        CHECK(exited_zero(&clean), "clean (PYMALLOC_DEBUG=%d): exits 0 (status %#x):\n%s%s", debug, clean.status,
              clean.out, clean.err);
        CHECK(clean.err[0] == '\0', "clean (PYMALLOC_DEBUG=%d): nothing on stderr:\n%s", debug, clean.err);
    }

    /* Bad types. */
    expect_refusal(self, "new-null", (const char *const[]){"pym_new", NULL});
    expect_refusal(self, "new-no-traverse", (const char *const[]){"MisuseNoTraverse", NULL});
    expect_refusal(self, "new-flags-plain", (const char *const[]){NULL});
    expect_refusal(self, "new-flags-gc", (const char *const[]){NULL});

    /* Refcount errors, in both modes. */
    for (int debug = 0; debug <= 1; debug++) {
        expect_refcount_report(self, "decref-dead-gc", debug, "pym_decref", "MisuseNode");
        expect_refcount_report(self, "decref-dead-plain", debug, "pym_decref", "MisusePlain");
        expect_refcount_report(self, "decref-in-dealloc", debug, "pym_decref", "MisuseSelfDecref");
        expect_refcount_report(self, "incref-in-dealloc", debug, "pym_incref", "MisuseSelfIncref");
    }
    expect_refcount_report(self, "decref-dead-later", 1, "pym_decref", "MisuseNode");

    /* Weak references to nothing. */
    outcome_t weak = run_child(self, "weakref-null", 0);
    CHECK(exited_zero(&weak), "weakref-null: the child's checks pass (status %#x):\n%s%s", weak.status, weak.out,
          weak.err);
#ifndef PYM_DEBUG
    weak = run_child(self, "weakref-dead", 0);
    CHECK(exited_zero(&weak), "weakref-dead: the child's checks pass (status %#x):\n%s%s", weak.status, weak.out,
          weak.err);
#endif

    /* Threads share the API: the lock holder check of debug mode. */
    for (int debug = 0; debug <= 1; debug++) {
        outcome_t shared = run_child(self, "unlocked-after-lock", debug);
        CHECK(strstr(shared.out, "locked call ok") != NULL, "unlocked-after-lock (PYMALLOC_DEBUG=%d): calls under "
              "the lock pass:\n%s%s", debug, shared.out, shared.err);
        if (debug) {
            CHECK(aborted(&shared) && strstr(shared.out, "continued") == NULL,
                  "unlocked-after-lock: debug mode aborts the unlocked pym_new (status %#x)", shared.status);
            CHECK(strstr(shared.err, "pym_new") && strstr(shared.err, "without holding pym_gc_lock"),
                  "unlocked-after-lock: the report names pym_new and the missing lock:\n%s", shared.err);
        } else {
            CHECK(exited_zero(&shared) && strstr(shared.out, "continued") != NULL && shared.err[0] == '\0',
                  "unlocked-after-lock: release mode does not check (status %#x):\n%s", shared.status, shared.err);
        }
    }

    /* The collector's arguments. */
    outcome_t arguments = run_child(self, "collector-arguments", 0);
    CHECK(exited_zero(&arguments), "collector-arguments: the child's checks pass (status %#x):\n%s%s",
          arguments.status, arguments.out, arguments.err);
    expect_refusal(self, "threshold-negative", (const char *const[]){NULL});
    return check_finish();
}
