/*
 * init.c -- start-up and fork.
 *
 * Start-up happens on the first slow path (the first malloc of the process,
 * which may come from inside the dynamic loader) or from the library
 * constructor, whichever is first.  It reads the options, builds the class
 * tables, and only then marks pymalloc initialised; the steps after that
 * (pthread_key_create, pthread_atfork) may allocate, and such nested calls
 * find pymalloc already usable.  Nothing here allocates before the mark.
 *
 * fork: the prepare handler takes every pymalloc lock (in the order the
 * slow paths nest them: scavenger pass, heaps, large, arena, metadata) so
 * that the child starts with consistent shared state; both parent and child
 * release them.  Because pymalloc registers its handlers first, at start-up, its
 * prepare handler runs after every other library's (which may allocate) and
 * its child handler before theirs.  The GC side API's lock (gc.c) is taken
 * before pymalloc's locks, when the program ever used it.  Lock-free state
 * (remote lists) is always consistent at the instant of fork.
 */
#include "internal.h"

int pym_initialized;
pthread_key_t pym_heap_key;
int pym_heap_key_ready;
static pthread_mutex_t pym_init_lock = PTHREAD_MUTEX_INITIALIZER;

static void pym_fork_prepare(void)
{
    pym_gc_fork_prepare(); /* first: its holder may need the locks below */
    pym_scavenge_lock_for_fork();
    pym_heap_lock_all();
    pthread_mutex_lock(&pym_large_lock);
    pthread_mutex_lock(&pym_arena_lock);
    pthread_mutex_lock(&pym_meta_lock);
}

static void pym_fork_parent(void)
{
    pthread_mutex_unlock(&pym_meta_lock);
    pthread_mutex_unlock(&pym_arena_lock);
    pthread_mutex_unlock(&pym_large_lock);
    pym_heap_unlock_all();
    pym_scavenge_unlock_after_fork();
    pym_gc_fork_parent();
}

static void pym_fork_child(void)
{
    /* The forking thread holds every lock; in the child it is their owner. */
    pthread_mutex_unlock(&pym_meta_lock);
    pthread_mutex_unlock(&pym_arena_lock);
    pthread_mutex_unlock(&pym_large_lock);
    pym_heap_after_fork_child();
    pym_large_after_fork_child();
    pym_scavenge_after_fork_child();
    pym_gc_fork_child();
}

void pym_init_slow(void)
{
    pthread_mutex_lock(&pym_init_lock);
    if (!__atomic_load_n(&pym_initialized, __ATOMIC_ACQUIRE)) {
        pym_options_load();
        pym_classes_init(pym_options.alignment);
        pym_bin_tables_init();
        pym_valgrind_init(); /* may turn debug mode off */
        /* Open the fast paths, or route every call through the debug layer. */
        pym_hooks_update_routing(pym_options.debug || pym_under_valgrind);
        __atomic_store_n(&pym_initialized, 1, __ATOMIC_RELEASE);
        if (pthread_key_create(&pym_heap_key, pym_heap_thread_exit) == 0)
            pym_heap_key_ready = 1;
        if (pym_tls_heap->state == PYM_HEAP_LIVE)
            pthread_setspecific(pym_heap_key, pym_tls_heap);
        pthread_atfork(pym_fork_prepare, pym_fork_parent, pym_fork_child);
    }
    pthread_mutex_unlock(&pym_init_lock);
}

__attribute__((constructor(101))) static void pym_constructor(void)
{
    pym_ensure_init();
}

__attribute__((destructor(101))) static void pym_destructor(void)
{
    if (pym_options.stats)
        pym_stats_print_at_exit();
}
