/*
 * heap.c -- thread heaps: per-thread caches of free blocks in front of the
 * pools each thread owns, and the paths that move blocks between threads.
 *
 * Every thread starts with all its cache bins zero (thread-local storage,
 * see internal.h) and pym_tls_heap pointing at pym_startup_heap.  Its first
 * malloc (or free) therefore lands on a slow path, which gives the thread a
 * heap of its own -- one left by an exited thread when there is one -- and
 * points its bins at the heap's slots.  No branch on "has this thread a heap
 * yet" exists on the fast paths.
 *
 * Thread cache.  Per class a bin, a stack of up to PYM_CACHE_SLOTS free
 * blocks (fewer for medium classes: PYM_CACHE_CLASS_BYTES of them).  malloc
 * pops the top, free pushes, whichever thread's pool the block comes from:
 * the block most recently freed is handed out next, while it is still in
 * cache, and neither the block nor its pool header is touched.  An empty bin
 * is refilled with half its capacity; a full bin flushes its oldest half.
 * A block in a bin still counts as used by its pool, so cached blocks keep
 * their pools alive: bins are flushed at thread exit and by
 * pym_flush_thread_cache() (malloc_trim).
 *
 * Pools.  A heap keeps, per class, a doubly linked list of pools with free
 * blocks; refills take from the head.  A pool with no block left leaves the
 * list and is in no list while it is full; the first block flushed back puts
 * it at the head again (CPython's used/full pool states).  Emptied small
 * pools wait in a small per-heap cache before going back to their arena,
 * except the last pool of a small class, which stays put.
 *
 * Blocks of other threads' pools (remote frees).  Only a pool's owner
 * touches its free list and used count.  A flush sends blocks whose pool
 * belongs to another heap to that heap's transfer list of their class
 * (remote[class]): consecutive blocks of one owner are chained through their
 * first word and pushed with one CAS -- no lock, whatever the class.  The
 * owner's next refill of that class takes the whole list at once (an
 * exchange) and moves blocks from it straight into its bin: a block freed
 * by a consumer thread reaches the producer's bin without going back to its
 * pool (it stays "used" there all along), so a producer/consumer pair costs
 * a link written by the consumer and read by the producer, nothing else.
 * What the refill does not need waits in the heap's private deferred list.
 * A thread that frees much and allocates little takes its transfer lists
 * back into its pools on its free slow path (remote_pending tells it to).
 *
 * Locks.  The owner's slow paths hold its heap lock (a spinlock nobody else
 * waits on: the scavenger only tries it), so that the background scavenger
 * can give back what a quiet heap keeps -- empty pools, the deferred and
 * transfer lists, the free pages of its medium spans -- without the quiet
 * thread's help.  It never touches a thread's bins: what they hold is
 * freed by the thread at its next slow path, at exit, or by
 * pym_flush_thread_cache.  Lock order: heap, large, arena, metadata.
 *
 * Thread exit (the pthread key destructor):
 *   1. flush the bins and take back the transfer lists;
 *   2. under the arena lock, give back every empty pool and abandon every
 *      other one (owner = NULL, listed per class in arena.c);
 *   3. swap each transfer list for PYM_REMOTE_CLOSED and free what arrived
 *      meanwhile; only then is the heap listed for reuse.  A thread that
 *      read the old owner before step 2 and tries to push afterwards sees
 *      CLOSED, re-reads the pool's owner (now NULL or an adopter) and frees
 *      there.  Nothing is lost and nobody waits.
 * The dead heap is kept for the next new thread.  A block freed into an
 * abandoned pool makes the freeing thread adopt the pool (one arena-lock
 * acquisition per pool, not per block); threads without a heap free into
 * the abandoned pool directly under the lock.
 *
 * After its heap is gone a thread can still allocate (destructors of other
 * libraries run later); it then uses the shared heap, the one heap guarded
 * by a mutex, without a cache.  Blocks of the shared heap are freed under
 * that mutex too, by whichever thread frees them: no thread would collect a
 * transfer list.
 */
#include <errno.h>
#include <sched.h>
#include <string.h>

#include "internal.h"

pym_pool_t pym_empty_pool;

__thread pym_cache_bin_t pym_tls_bins[PYM_BIN_COUNT] __attribute__((tls_model("initial-exec")));

pym_heap_t pym_startup_heap = {
    .pools = {[0 ... PYM_CLASS_COUNT - 1] = &pym_empty_pool},
    .state = PYM_HEAP_STARTUP,
};
__thread pym_heap_t *pym_tls_heap __attribute__((tls_model("initial-exec"))) = &pym_startup_heap;
static __thread bool pym_tls_heap_retired __attribute__((tls_model("initial-exec"))); /* key destructor ran */

static pym_heap_t pym_shared_heap = {
    .pools = {[0 ... PYM_CLASS_COUNT - 1] = &pym_empty_pool},
    .state = PYM_HEAP_SHARED,
};
static pthread_mutex_t pym_shared_heap_lock = PTHREAD_MUTEX_INITIALIZER;

static pym_heap_t *pym_dead_heaps;     /* heaps of exited threads (next_dead), under the arena lock */
static pym_heap_t *pym_all_heaps;      /* every heap made (all_next, atomic), pushed under the arena lock */
static size_t pym_heaps_live;          /* heaps owned by running threads */

static void pym_heap_collect_remote(pym_heap_t *heap);

/* ---- the heap lock -------------------------------------------------------------- */
static void pym_heap_lock(pym_heap_t *heap)
{
    while (__atomic_exchange_n(&heap->lock, 1, __ATOMIC_ACQUIRE)) {
        /* Only the scavenger holds it besides the owner, briefly. */
        while (__atomic_load_n(&heap->lock, __ATOMIC_RELAXED))
            sched_yield();
    }
    heap->activity++; /* the scavenger tells a quiet heap by this count standing still */
    if (__atomic_load_n(&heap->tidy, __ATOMIC_RELAXED))
        __atomic_store_n(&heap->tidy, 0, __ATOMIC_RELAXED);
}

static bool pym_heap_trylock(pym_heap_t *heap)
{
    return !__atomic_load_n(&heap->lock, __ATOMIC_RELAXED) && !__atomic_exchange_n(&heap->lock, 1, __ATOMIC_ACQUIRE);
}

static void pym_heap_unlock(pym_heap_t *heap)
{
    __atomic_store_n(&heap->lock, 0, __ATOMIC_RELEASE);
}

/* ---- class lists ------------------------------------------------------------ */
static void pym_class_list_push(pym_heap_t *heap, pym_pool_t *pool)
{
    pym_pool_t **head = &heap->pools[pool->size_class];
    pool->prev = NULL;
    pool->next = *head == &pym_empty_pool ? NULL : *head;
    if (pool->next)
        pool->next->prev = pool;
    *head = pool;
    __atomic_store_n(&pool->state, PYM_POOL_USED, __ATOMIC_RELAXED);
}

static void pym_class_list_remove(pym_heap_t *heap, pym_pool_t *pool)
{
    if (pool->prev)
        pool->prev->next = pool->next;
    else
        heap->pools[pool->size_class] = pool->next ? pool->next : &pym_empty_pool;
    if (pool->next)
        pool->next->prev = pool->prev;
    pool->next = pool->prev = NULL;
}

static void pym_mark_full(pym_pool_t *pool)
{
    pool->next = pool->prev = NULL;
    __atomic_store_n(&pool->state, PYM_POOL_FULL, __ATOMIC_RELAXED);
}

/* Put a pool this heap just acquired (adopted or fresh) where it belongs. */
static void pym_heap_link_pool(pym_heap_t *heap, pym_pool_t *pool)
{
    if (pym_pool_free_count(pool) > 0)
        pym_class_list_push(heap, pool);
    else
        pym_mark_full(pool);
}

/* An emptied small pool is reset (so a stray free into it fails validation)
 * and cached; past the cache limit half the cache returns to the arenas. */
static void pym_heap_cache_empty_pool(pym_heap_t *heap, pym_pool_t *pool)
{
    pym_pool_set_pages(pool, 0);
    pool->free = NULL;
    __atomic_store_n(&pym_pool_info(pool)->carved, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&pool->state, PYM_POOL_EMPTY, __ATOMIC_RELAXED);
    pool->prev = NULL;
    pool->next = heap->empty;
    heap->empty = pool;
    if (++heap->empty_count <= PYM_HEAP_EMPTY_POOLS_MAX)
        return;
    pthread_mutex_lock(&pym_arena_lock);
    while (heap->empty_count > PYM_HEAP_EMPTY_POOLS_MAX / 2) {
        pym_pool_t *victim = heap->empty;
        heap->empty = victim->next;
        heap->empty_count--;
        pym_arena_release_pool_locked(victim);
    }
    pthread_mutex_unlock(&pym_arena_lock);
}

/* Give the whole empty-pool cache back to the arenas (`decayed`: the
 * scavenger's, for pools unused for the decay time already). */
static void pym_heap_release_empty_pools(pym_heap_t *heap, bool decayed)
{
    if (heap->empty == NULL)
        return;
    pthread_mutex_lock(&pym_arena_lock);
    while (heap->empty != NULL) {
        pym_pool_t *pool = heap->empty;
        heap->empty = pool->next;
        heap->empty_count--;
        if (decayed)
            pym_arena_release_decayed_pool_locked(pool);
        else
            pym_arena_release_pool_locked(pool);
    }
    pthread_mutex_unlock(&pym_arena_lock);
}

/* ---- freeing into pools ------------------------------------------------------ */
/* After a block went back into a pool of this heap: a full pool gets a place
 * in its class list again, an empty one leaves it. */
static void pym_heap_free_local_slow(pym_heap_t *heap, pym_pool_t *pool)
{
    if (pool->state == PYM_POOL_FULL)
        pym_class_list_push(heap, pool);
    if (pool->used != 0)
        return;
    /* Empty: a small class keeps its last pool (4 KiB), so that a program
     * allocating and freeing a batch of one size does not take a pool from
     * its arena again and again; a medium span (256 KiB) goes back to the
     * chunk cache, where it waits the decay time. */
    if (pool->size_class < PYM_SMALL_CLASSES && heap->pools[pool->size_class] == pool && pool->next == NULL)
        return;
    pym_class_list_remove(heap, pool);
    if (pool->size_class < PYM_SMALL_CLASSES) {
        pym_heap_cache_empty_pool(heap, pool);
    } else {
        pthread_mutex_lock(&pym_arena_lock);
        pym_arena_release_pool_locked(pool);
        pthread_mutex_unlock(&pym_arena_lock);
    }
#ifdef PYM_DEBUG
    pym_heap_verify(heap);
#endif
}

/* Give a validated block back to a pool of this heap (the caller holds the
 * heap's lock, or the shared heap's). */
static void pym_heap_free_local(pym_heap_t *heap, pym_pool_t *pool, pym_block_t *block)
{
    if (pym_pool_push_block(pool, block) == 0 || pool->state != PYM_POOL_USED)
        pym_heap_free_local_slow(heap, pool);
}

static void pym_heap_free_remote(pym_pool_t *pool, unsigned size_class, pym_block_t *block);

/* An orphan free (see the top of this file): `seen_owner` is the owner the
 * caller found, NULL or a heap whose transfer list was CLOSED.  The caller
 * holds its own heap's lock (it may adopt the pool). */
static void pym_heap_free_orphan(pym_pool_t *pool, unsigned size_class, pym_block_t *block, pym_heap_t *seen_owner)
{
    pym_heap_t *heap = pym_tls_heap;
    pthread_mutex_lock(&pym_arena_lock);
    pym_heap_t *owner = pym_pool_owner(pool);
    bool orphan = owner == NULL
                  || (owner == seen_owner
                      && __atomic_load_n(&owner->remote[size_class], __ATOMIC_ACQUIRE) == PYM_REMOTE_CLOSED);
    if (!orphan) {
        pthread_mutex_unlock(&pym_arena_lock); /* adopted or reopened meanwhile: route again */
        pym_heap_free_remote(pool, size_class, block);
        return;
    }
    uint8_t state = pool->state;
    if (owner == NULL ? state != PYM_POOL_ABANDONED : state != PYM_POOL_FULL) {
        pthread_mutex_unlock(&pym_arena_lock);
        pym_fatal("pymalloc: free(): invalid pointer %p: its pool is not in use (double free?)", (void *)block);
    }
    if (state == PYM_POOL_ABANDONED)
        pym_arena_unlink_abandoned_locked(pool);
    if (heap->state == PYM_HEAP_LIVE) {
        pym_pool_set_owner(pool, heap);
        pthread_mutex_unlock(&pym_arena_lock);
        pym_heap_link_pool(heap, pool);
        pym_heap_free_local(heap, pool, block);
        return;
    }
    /* No heap to adopt it: free under the lock, leave the pool to others. */
    if (pym_pool_push_block(pool, block) == 0)
        pym_arena_release_pool_locked(pool);
    else
        pym_arena_abandon_pool_locked(pool);
    pthread_mutex_unlock(&pym_arena_lock);
}

/* Free into a pool of the shared heap: it has no thread to collect a
 * transfer list, so the block goes back at once, under the shared heap's
 * lock. */
static bool pym_heap_free_shared(pym_pool_t *pool, pym_block_t *block)
{
    pthread_mutex_lock(&pym_shared_heap_lock);
    bool owned = pym_pool_owner(pool) == &pym_shared_heap;
    if (owned)
        pym_heap_free_local(&pym_shared_heap, pool, block);
    pthread_mutex_unlock(&pym_shared_heap_lock);
    return owned;
}

/* Push the chain head..tail of class `size_class` onto the transfer list of
 * `owner` with one CAS; false when the list is closed (the owner has
 * exited). */
static bool pym_remote_push(pym_heap_t *owner, unsigned size_class, pym_block_t *head, pym_block_t *tail)
{
    pym_block_t **list = &owner->remote[size_class];
    pym_block_t *remote = __atomic_load_n(list, __ATOMIC_RELAXED);
    while (remote != PYM_REMOTE_CLOSED) {
        tail->next = remote;
        if (__atomic_compare_exchange_n(list, &remote, head, true, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
            if (!__atomic_load_n(&owner->remote_pending, __ATOMIC_RELAXED))
                __atomic_store_n(&owner->remote_pending, 1, __ATOMIC_RELEASE);
            return true;
        }
    }
    return false;
}

/* Route one block to its pool's current owner. */
static void pym_heap_free_remote(pym_pool_t *pool, unsigned size_class, pym_block_t *block)
{
    for (;;) {
        pym_heap_t *owner = pym_pool_owner(pool);
        if (owner == pym_tls_heap && owner->state == PYM_HEAP_LIVE) {
            pym_heap_free_local(owner, pool, block); /* adopted by this thread meanwhile */
            return;
        }
        if (owner == NULL) {
            pym_heap_free_orphan(pool, size_class, block, NULL);
            return;
        }
        if (PYM_UNLIKELY(owner == &pym_shared_heap)) {
            if (pym_heap_free_shared(pool, block))
                return;
            continue;
        }
        if (pym_remote_push(owner, size_class, block, block))
            return;
        /* The owner has exited: an orphan free. */
        pym_heap_free_orphan(pool, size_class, block, owner);
        return;
    }
}

/* Free every block of a list into its pool: as the owner where `heap` owns
 * the block's pool, routed to the current owner otherwise (`heap` NULL:
 * always routed). */
static void pym_heap_free_list(pym_heap_t *heap, pym_block_t *list)
{
    while (list != NULL) {
        pym_block_t *next = list->next;
        uintptr_t entry = pym_chunkmap_lookup((uintptr_t)list);
        uint32_t offset;
        unsigned size_class = pym_pool_info_of((uintptr_t)list, entry, &offset)->size_class;
        pym_pool_t *pool = pym_pool_of((uintptr_t)list, entry);
        if (heap != NULL && pym_pool_owner(pool) == heap)
            pym_heap_free_local(heap, pool, list);
        else
            pym_heap_free_remote(pool, size_class, list); /* the pool changed hands since the push */
        list = next;
    }
}

/* Take the transfer and deferred lists back into the pools (a thread that
 * does not refill those classes, the scavenger, exit, trim).  Under the
 * heap lock. */
static void pym_heap_collect_remote(pym_heap_t *heap)
{
    __atomic_store_n(&heap->remote_pending, 0, __ATOMIC_RELAXED);
    for (unsigned size_class = 0; size_class < PYM_CLASS_COUNT; size_class++) {
        pym_block_t *deferred = heap->deferred[size_class];
        heap->deferred[size_class] = NULL;
        pym_heap_free_list(heap, deferred);
        if (__atomic_load_n(&heap->remote[size_class], __ATOMIC_RELAXED) != NULL)
            pym_heap_free_list(heap, __atomic_exchange_n(&heap->remote[size_class], NULL, __ATOMIC_ACQUIRE));
    }
}

/* ---- allocating ----------------------------------------------------------------- */
/* A pool of `size_class` for the heap: its empty cache, an abandoned pool, or
 * fresh pools from the arenas (a batch, the spare ones cached). */
static pym_pool_t *pym_heap_new_pool(pym_heap_t *heap, unsigned size_class)
{
    pym_pool_t *pool;
    if (size_class < PYM_SMALL_CLASSES && heap->empty != NULL) {
        pool = heap->empty;
        heap->empty = pool->next;
        heap->empty_count--;
        pym_pool_init(pool, size_class, heap);
        pym_class_list_push(heap, pool);
        return pool;
    }
    pthread_mutex_lock(&pym_arena_lock);
    pool = pym_arena_adopt_pool_locked(size_class);
    if (pool != NULL) {
        pym_pool_set_owner(pool, heap);
        pthread_mutex_unlock(&pym_arena_lock);
        pym_heap_link_pool(heap, pool);
        return pool;
    }
    if (size_class >= PYM_SMALL_CLASSES) {
        pool = pym_arena_take_span_locked(size_class);
        if (pool != NULL)
            pym_pool_set_owner(pool, heap);
        pthread_mutex_unlock(&pym_arena_lock);
        if (pool != NULL)
            pym_class_list_push(heap, pool);
        return pool;
    }
    unsigned got;
    pool = pym_arena_take_pools_locked(PYM_HEAP_POOL_BATCH, &got);
    for (pym_pool_t *spare = pool ? pool->next : NULL; spare != NULL; spare = spare->next)
        pym_pool_set_owner(spare, heap);
    pthread_mutex_unlock(&pym_arena_lock);
    if (pool == NULL)
        return NULL;
    pym_pool_t *spare = pool->next;
    while (spare != NULL) {
        pym_pool_t *next = spare->next;
        pym_heap_cache_empty_pool(heap, spare);
        spare = next;
    }
    pym_pool_init(pool, size_class, heap);
    pym_class_list_push(heap, pool);
    return pool;
}

/* Up to `want` blocks of `size_class` from the heap's deferred list, then
 * its transfer list (taken whole; what is not needed is deferred). */
static unsigned pym_heap_take_transfers(pym_heap_t *heap, unsigned size_class, void **out, unsigned want)
{
    pym_block_t *list = heap->deferred[size_class];
    if (list == NULL) {
        if (__atomic_load_n(&heap->remote[size_class], __ATOMIC_RELAXED) == NULL)
            return 0;
        list = __atomic_exchange_n(&heap->remote[size_class], NULL, __ATOMIC_ACQUIRE);
    }
    unsigned got = 0;
    while (list != NULL && got < want) {
        out[got++] = list;
        list = list->next;
    }
    heap->deferred[size_class] = list;
    return got;
}

/* Up to `want` (>= 1) blocks of `size_class` from the heap into `out`; 0
 * when out of memory.  Blocks other threads freed come first, then pools; a
 * new pool is taken only when the heap's pools yield nothing.  Under the
 * heap lock. */
static unsigned pym_heap_take_blocks(pym_heap_t *heap, unsigned size_class, void **out, unsigned want)
{
#ifdef PYM_DEBUG
    pym_heap_verify(heap);
#endif
    unsigned got = pym_heap_take_transfers(heap, size_class, out, want);
    if (got < want)
        got += pym_heap_take_transfers(heap, size_class, out + got, want - got); /* deferred ran out: the list */
    for (;;) {
        if (got == want)
            return got;
        pym_pool_t *pool = heap->pools[size_class];
        if (pool == &pym_empty_pool) {
            if (got > 0 || pym_heap_new_pool(heap, size_class) == NULL)
                return got;
            continue;
        }
        got += pym_pool_take(pool, out + got, want - got);
        if (got == want)
            return got;
        pym_class_list_remove(heap, pool); /* exhausted */
        pym_mark_full(pool);
    }
}

/* A heap for the calling thread: a dead thread's, or a new one. */
static pym_heap_t *pym_heap_acquire(void)
{
    pthread_mutex_lock(&pym_arena_lock);
    pym_heap_t *heap = pym_dead_heaps;
    if (heap != NULL)
        pym_dead_heaps = heap->next_dead;
    pthread_mutex_unlock(&pym_arena_lock);
    if (heap == NULL) {
        /* Mapped on its own (zero-filled), never unmapped: a late remote free
         * may still push onto a dead heap's list. */
        heap = pym_os_map(pym_align_up(sizeof(pym_heap_t), pym_os_page_size()));
        if (heap == NULL)
            return NULL;
        for (unsigned size_class = 0; size_class < PYM_CLASS_COUNT; size_class++)
            heap->pools[size_class] = &pym_empty_pool;
        pthread_mutex_lock(&pym_arena_lock);
        heap->all_next = pym_all_heaps;
        __atomic_store_n(&pym_all_heaps, heap, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&pym_arena_lock);
    }
    /* The thread's bins take their slots from the heap; base[-1] stays NULL. */
    for (unsigned size_class = 0; size_class < PYM_CLASS_COUNT; size_class++) {
        pym_cache_bin_t *bin = pym_bin_of_class(size_class);
        unsigned capacity = pym_options.thread_cache ? pym_classes[size_class].cache_capacity : 0;
        bin->base = &heap->slots[size_class * PYM_CACHE_BIN_STRIDE + 1];
        bin->limit = bin->base + capacity;
        pym_bin_set_cursor(bin, bin->base);
    }
    __atomic_store_n(&heap->bins, pym_tls_bins, __ATOMIC_RELEASE);
    heap->next_dead = NULL;
    __atomic_store_n(&heap->state, PYM_HEAP_LIVE, __ATOMIC_RELAXED);
    pthread_mutex_lock(&pym_arena_lock);
    /* Reopen a retired heap's transfer lists under the arena lock: orphan
     * frees decide under that lock whether the owner is closed. */
    for (unsigned size_class = 0; size_class < PYM_CLASS_COUNT; size_class++)
        __atomic_store_n(&heap->remote[size_class], NULL, __ATOMIC_RELEASE);
    pym_heaps_live++;
    pthread_mutex_unlock(&pym_arena_lock);
    /* Set the TLS pointer first: pthread_setspecific may allocate. */
    pym_tls_heap = heap;
    if (pym_heap_key_ready)
        pthread_setspecific(pym_heap_key, heap);
    return heap;
}

pym_heap_t *pym_heap_of_thread(void)
{
    pym_heap_t *heap = pym_tls_heap;
    if (PYM_LIKELY(heap->state == PYM_HEAP_LIVE))
        return heap;
    if (pym_tls_heap_retired)
        return NULL;
    return pym_heap_acquire();
}

/* Blocks moved per refill and per flush of a bin of this class. */
static unsigned pym_bin_batch(unsigned size_class)
{
    unsigned capacity = pym_classes[size_class].cache_capacity;
    return capacity > 1 ? capacity / 2 : 1;
}

void *pym_malloc_class(unsigned size_class)
{
    void *block = NULL;
    pym_heap_t *heap = pym_heap_of_thread();
    if (PYM_UNLIKELY(heap == NULL)) {
        pthread_mutex_lock(&pym_shared_heap_lock);
        pym_heap_take_blocks(&pym_shared_heap, size_class, &block, 1);
        pthread_mutex_unlock(&pym_shared_heap_lock);
    } else {
        pym_cache_bin_t *bin = pym_bin_of_class(size_class);
        if (bin->cursor != bin->base) { /* a heap acquired just now, or an aligned request */
            pym_bin_set_cursor(bin, bin->cursor - 1);
            return *bin->cursor;
        }
        pym_heap_lock(heap);
        if (bin->limit == bin->base) {
            pym_heap_take_blocks(heap, size_class, &block, 1);
        } else {
            unsigned got = pym_heap_take_blocks(heap, size_class, bin->base, pym_bin_batch(size_class));
            if (got > 0) {
                pym_bin_set_cursor(bin, bin->base + got - 1);
                block = *bin->cursor;
            }
        }
        pym_heap_unlock(heap);
    }
    if (block == NULL)
        errno = ENOMEM;
    pym_scavenge_poll();
    return block;
}

void *pym_malloc_slow(size_t size)
{
    if (pym_hooks_on())
        return pym_malloc_hooked(size);
    pym_ensure_init(); /* the class tables depend on the options */
    return pym_malloc_class(size <= PYM_SMALL_MAX ? pym_small_class_of[(size + PYM_ALIGNMENT - 1) / PYM_ALIGNMENT]
                                                  : pym_medium_class_of(size));
}

/* ---- thread cache flushes ----------------------------------------------------------- */
/* Hand a chain of blocks of `size_class` (linked through `next`, last one
 * `tail`) whose pools all belonged to `owner` when the caller looked to
 * that heap's transfer list with one CAS; blocks the owner cannot take (it
 * is gone, or is the shared heap) go one by one through
 * pym_heap_free_remote, which re-reads each pool's owner. */
static void pym_heap_push_chain(pym_heap_t *owner, unsigned size_class, pym_block_t *head, pym_block_t *tail)
{
    if (head == NULL)
        return;
    if (owner != NULL && owner != &pym_shared_heap && pym_remote_push(owner, size_class, head, tail))
        return;
    tail->next = NULL;
    while (head != NULL) {
        pym_block_t *next = head->next;
        pym_heap_free_remote(pym_pool_of((uintptr_t)head, pym_chunkmap_lookup((uintptr_t)head)), size_class, head);
        head = next;
    }
}

/* Return `count` blocks of class `size_class` to their pools: as the owner
 * into the heap's own pools, in chains onto the transfer lists of the
 * others.  `heap` may be NULL (a thread without a heap owns no pool);
 * otherwise the caller holds its lock.  Another heap's pool is known by its
 * directory entry alone: its header, which its owner keeps writing, is not
 * read here.
 *
 * This is where a block freed through the fast path is proven to be a block
 * start its pool has handed out (the fast path checked only its page and
 * its alignment), before any pool or other thread takes it. */
static void pym_heap_free_blocks(pym_heap_t *heap, unsigned size_class, void **blocks, unsigned count)
{
    pym_heap_t *chain_owner = NULL;
    pym_block_t *chain_head = NULL, *chain_tail = NULL;
    for (unsigned i = 0; i < count; i++) {
        pym_block_t *block = blocks[i];
        if (i + 2 < count) { /* cold in a large heap: start the misses of a later block early */
            __builtin_prefetch(blocks[i + 2], 1);
            __builtin_prefetch((void *)((uintptr_t)blocks[i + 2] & ~(PYM_POOL_SIZE - 1)), 1);
        }
        uintptr_t entry = pym_chunkmap_lookup((uintptr_t)block);
        if (PYM_UNLIKELY(!(entry & (PYM_CHUNK_SMALL | PYM_CHUNK_MEDIUM))))
            pym_fatal("pymalloc: free(): invalid pointer %p: not in a pool or span (double free?)", (void *)block);
        uint32_t offset;
        const pym_pool_info_t *info = pym_pool_info_of((uintptr_t)block, entry, &offset);
        if (PYM_UNLIKELY(!pym_pool_info_has_block(info, offset)))
            pym_check_block(block, entry, "free");
        if (PYM_UNLIKELY(info->size_class != size_class))
            pym_fatal("pymalloc: free(): invalid pointer %p: a %u-byte block freed while its pool serves %u-byte "
                      "blocks (double free?)",
                      (void *)block, pym_classes[size_class].block_size, pym_classes[info->size_class].block_size);
        pym_heap_t *owner = __atomic_load_n(&info->owner, __ATOMIC_ACQUIRE);
        if (owner == heap && heap != NULL) {
            pym_heap_free_local(heap, pym_pool_of((uintptr_t)block, entry), block);
            continue;
        }
        if (owner != chain_owner || chain_head == NULL) {
            pym_heap_push_chain(chain_owner, size_class, chain_head, chain_tail);
            chain_owner = owner;
            chain_head = chain_tail = block;
        } else {
            chain_tail->next = block;
            chain_tail = block;
        }
    }
    pym_heap_push_chain(chain_owner, size_class, chain_head, chain_tail);
}

/* Return the `count` oldest blocks of a bin to their pools (heap locked). */
static void pym_cache_flush(pym_heap_t *heap, unsigned size_class, unsigned count)
{
    pym_cache_bin_t *bin = pym_bin_of_class(size_class);
    unsigned held = (unsigned)(bin->cursor - bin->base);
    if (count > held)
        count = held;
    pym_heap_free_blocks(heap, size_class, bin->base, count);
    memmove(bin->base, bin->base + count, (held - count) * sizeof(void *));
    pym_bin_set_cursor(bin, bin->cursor - count);
}

/* Every bin back to the pools (heap locked). */
static void pym_heap_flush_cache_locked(pym_heap_t *heap)
{
    for (unsigned size_class = 0; size_class < PYM_CLASS_COUNT; size_class++)
        if (pym_bin_of_class(size_class)->cursor != pym_bin_of_class(size_class)->base)
            pym_cache_flush(heap, size_class, PYM_CACHE_SLOTS);
}

void pym_heap_flush_cache(pym_heap_t *heap)
{
    if (heap->state != PYM_HEAP_LIVE)
        return;
    pym_heap_lock(heap);
    pym_heap_flush_cache_locked(heap);
    pym_heap_unlock(heap);
}

void pym_heap_free_slow(void *ptr, unsigned size_class)
{
    pym_heap_t *heap = pym_heap_of_thread();
    if (heap != NULL) {
        pym_cache_bin_t *bin = pym_bin_of_class(size_class);
        if (bin->cursor != bin->limit) { /* a heap acquired just now */
            *bin->cursor = ptr;
            pym_bin_set_cursor(bin, bin->cursor + 1);
            return;
        }
        pym_heap_lock(heap);
        if (bin->limit != bin->base) { /* full: make room */
            pym_cache_flush(heap, size_class, pym_bin_batch(size_class));
            *bin->cursor = ptr;
            pym_bin_set_cursor(bin, bin->cursor + 1);
        } else {
            pym_heap_free_blocks(heap, size_class, &ptr, 1); /* no cache */
        }
        /* A thread that frees much and allocates little still takes back
         * its blocks that others freed. */
        if (__atomic_load_n(&heap->remote_pending, __ATOMIC_RELAXED))
            pym_heap_collect_remote(heap);
        pym_heap_unlock(heap);
    } else {
        pym_heap_free_blocks(NULL, size_class, &ptr, 1); /* no heap */
    }
    pym_scavenge_poll();
}

void pym_flush_thread_cache(void)
{
    pym_heap_t *heap = pym_tls_heap;
    if (heap->state != PYM_HEAP_LIVE)
        return;
    pym_heap_lock(heap);
    pym_heap_flush_cache_locked(heap);
    pym_heap_collect_remote(heap); /* and take back this heap's blocks that other threads freed */
    pym_heap_unlock(heap);
}

void pym_heap_trim(pym_heap_t *heap)
{
    if (heap->state != PYM_HEAP_LIVE)
        return;
    pym_heap_lock(heap);
    pym_heap_flush_cache_locked(heap);
    pym_heap_collect_remote(heap);
    pym_heap_release_empty_pools(heap, false);
    pym_heap_unlock(heap);
    pym_large_unpark_heap(heap, 0, false);
}

/* ---- thread exit ------------------------------------------------------------------ */
static void pym_heap_give_back_locked(pym_pool_t *pool)
{
    if (pool->used == 0)
        pym_arena_release_pool_locked(pool);
    else
        pym_arena_abandon_pool_locked(pool);
}

void pym_heap_thread_exit(void *arg)
{
    pym_heap_t *heap = arg;
    if (heap == NULL || heap->state != PYM_HEAP_LIVE)
        return;
    pym_large_unpark_heap(heap, 0, false);
    pym_heap_lock(heap);
    pym_heap_flush_cache_locked(heap);
    pym_heap_collect_remote(heap);

    pthread_mutex_lock(&pym_arena_lock);
    for (unsigned size_class = 0; size_class < PYM_CLASS_COUNT; size_class++) {
        pym_pool_t *pool = heap->pools[size_class];
        while (pool != &pym_empty_pool) {
            pym_class_list_remove(heap, pool);
            pym_heap_give_back_locked(pool);
            pool = heap->pools[size_class];
        }
    }
    while (heap->empty != NULL) {
        pym_pool_t *pool = heap->empty;
        heap->empty = pool->next;
        pym_arena_release_pool_locked(pool);
    }
    heap->empty_count = 0;
    /* The bins are flushed: zero them (every later malloc and free of this
     * thread takes a slow path), and forget them for statistics. */
    __atomic_store_n(&heap->bins, NULL, __ATOMIC_RELEASE);
    for (unsigned bin = 0; bin < PYM_BIN_COUNT; bin++) {
        pym_bin_set_cursor(&pym_tls_bins[bin], NULL);
        pym_tls_bins[bin].base = pym_tls_bins[bin].limit = NULL;
    }
    pthread_mutex_unlock(&pym_arena_lock);

    /* From here on this thread frees like a stranger and allocates from the
     * shared heap; late remote frees find the pools abandoned.  The transfer
     * lists are closed before the heap is offered for reuse, so that a new
     * owner's reopened lists are never closed under it. */
    pym_tls_heap = &pym_startup_heap;
    pym_tls_heap_retired = true;
    for (unsigned size_class = 0; size_class < PYM_CLASS_COUNT; size_class++) {
        pym_block_t *late = __atomic_exchange_n(&heap->remote[size_class], PYM_REMOTE_CLOSED, __ATOMIC_ACQUIRE);
        pym_heap_free_list(NULL, late); /* orphan frees now: the heap is closed */
    }
    __atomic_store_n(&heap->remote_pending, 0, __ATOMIC_RELAXED);

    pthread_mutex_lock(&pym_arena_lock);
    __atomic_store_n(&heap->state, PYM_HEAP_DEAD, __ATOMIC_RELAXED);
    heap->next_dead = pym_dead_heaps;
    pym_dead_heaps = heap;
    pym_heaps_live--;
    pthread_mutex_unlock(&pym_arena_lock);
    pym_heap_unlock(heap);
}

/* ---- decay of quiet heaps ----------------------------------------------------------- */
/* What a heap keeps and its thread would give back at its next slow path, given back
 * without it: the transfer and deferred lists into the pools, then the empty
 * pools (the cache, and the last pool a class keeps), then the pages of the
 * medium spans that hold no block in use.  Heap locked. */
static size_t pym_heap_give_back_quiet(pym_heap_t *heap)
{
    size_t released = 0;
    pym_heap_collect_remote(heap);
    released += (size_t)heap->empty_count * PYM_POOL_SIZE;
    pym_heap_release_empty_pools(heap, true);
    for (unsigned size_class = 0; size_class < PYM_CLASS_COUNT; size_class++) {
        pym_pool_t *pool = heap->pools[size_class];
        while (pool != &pym_empty_pool && pool != NULL) {
            pym_pool_t *next = pool->next;
            if (pool->used == 0) {
                pym_class_list_remove(heap, pool);
                pthread_mutex_lock(&pym_arena_lock);
                pym_arena_release_decayed_pool_locked(pool);
                pthread_mutex_unlock(&pym_arena_lock);
                released += size_class < PYM_SMALL_CLASSES ? PYM_POOL_SIZE : PYM_CHUNK_SIZE;
            } else if (size_class >= PYM_SMALL_CLASSES) {
                released += pym_span_decommit_free(pool);
            }
            pool = next ? next : &pym_empty_pool;
        }
    }
    return released;
}

size_t pym_heap_decay(uint64_t now_ms)
{
    size_t released = 0;
    for (pym_heap_t *heap = __atomic_load_n(&pym_all_heaps, __ATOMIC_ACQUIRE); heap != NULL;
         heap = __atomic_load_n(&heap->all_next, __ATOMIC_ACQUIRE)) {
        if (__atomic_load_n(&heap->state, __ATOMIC_RELAXED) != PYM_HEAP_LIVE)
            continue;
        pym_large_unpark_heap(heap, now_ms, true); /* a parked extent decays like a free one */
        if (!pym_heap_trylock(heap))
            continue; /* busy now: not quiet */
        if (__atomic_load_n(&heap->state, __ATOMIC_RELAXED) == PYM_HEAP_LIVE && !heap->tidy) {
            if (heap->activity != heap->activity_seen) {
                heap->activity_seen = heap->activity;
                heap->quiet_since_ms = now_ms;
            } else if (now_ms - heap->quiet_since_ms >= pym_options.decay_ms) {
                released += pym_heap_give_back_quiet(heap);
                __atomic_store_n(&heap->tidy, 1, __ATOMIC_RELAXED);
            }
        }
        __atomic_store_n(&heap->lock, 0, __ATOMIC_RELEASE); /* not pym_heap_unlock: no activity of the owner's */
    }
    return released;
}

bool pym_heap_has_idle_pools(void)
{
    for (pym_heap_t *heap = __atomic_load_n(&pym_all_heaps, __ATOMIC_ACQUIRE); heap != NULL;
         heap = __atomic_load_n(&heap->all_next, __ATOMIC_ACQUIRE))
        if (__atomic_load_n(&heap->state, __ATOMIC_RELAXED) == PYM_HEAP_LIVE
            && !__atomic_load_n(&heap->tidy, __ATOMIC_RELAXED))
            return true;
    return false;
}

size_t pym_heap_parked_bytes(size_t *count)
{
    size_t bytes = 0;
    for (pym_heap_t *heap = __atomic_load_n(&pym_all_heaps, __ATOMIC_ACQUIRE); heap != NULL;
         heap = __atomic_load_n(&heap->all_next, __ATOMIC_ACQUIRE)) {
        pym_large_t *parked = __atomic_load_n(&heap->large_slot, __ATOMIC_ACQUIRE);
        if (parked != NULL) { /* descriptors are never unmapped: a stale one reads fine */
            bytes += __atomic_load_n(&parked->size, __ATOMIC_RELAXED);
            (*count)++;
        }
    }
    return bytes;
}

/* ---- statistics, fork, debugging ---------------------------------------------------- */
size_t pym_heap_live_count(void)
{
    return pym_heaps_live;
}

void pym_heap_cached_counts_locked(size_t counts[PYM_CLASS_COUNT])
{
    for (pym_heap_t *heap = pym_all_heaps; heap != NULL; heap = heap->all_next) {
        /* A live heap's bins are its thread's TLS, valid while the arena
         * lock is held: the thread clears the pointer under it at exit. */
        pym_cache_bin_t *bins = __atomic_load_n(&heap->bins, __ATOMIC_ACQUIRE);
        if (bins == NULL)
            continue;
        for (unsigned size_class = 0; size_class < PYM_CLASS_COUNT; size_class++) {
            pym_cache_bin_t *bin = &bins[size_class + 1];
            void **cursor = __atomic_load_n(&bin->cursor, __ATOMIC_RELAXED);
            void **base = __atomic_load_n(&bin->base, __ATOMIC_RELAXED);
            if (cursor > base)
                counts[size_class] += (size_t)(cursor - base);
        }
    }
}

void pym_heap_lock_all(void)
{
    pthread_mutex_lock(&pym_shared_heap_lock);
}

void pym_heap_unlock_all(void)
{
    pthread_mutex_unlock(&pym_shared_heap_lock);
}

void pym_heap_after_fork_child(void)
{
    /* Heaps of threads that did not survive the fork keep their pools, as
     * glibc keeps the arenas of such threads: their blocks can still be
     * freed (they are pushed to the dead owner's transfer lists) but that
     * memory is not reused in the child.  Touching those heaps is not safe:
     * their threads may have stopped in the middle of a list update (their
     * heap locks may be held forever: only the scavenger ever tries them,
     * and it skips a locked heap).  The forking thread took the shared-heap
     * lock in the prepare handler; it owns it in the child too.  Only the
     * forking thread's heap is live in the child. */
    pym_heaps_live = pym_tls_heap->state == PYM_HEAP_LIVE ? 1 : 0;
    /* A thread stopped by the fork inside its parking handshake (large.c)
     * never clears its busy flag: the child's scavenger may take its slot. */
    for (pym_heap_t *heap = pym_all_heaps; heap != NULL; heap = heap->all_next)
        __atomic_store_n(&heap->large_busy, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&pym_shared_heap_lock);
}

#ifdef PYM_DEBUG
static void pym_pool_verify(pym_pool_t *pool, pym_heap_t *heap)
{
    const pym_class_t *cls = &pym_classes[pool->size_class];
    const pym_pool_info_t *info = pym_pool_info(pool);
    PYM_ASSERT(pym_pool_owner(pool) == heap);
    PYM_ASSERT(info->carved <= cls->capacity && info->size_class == pool->size_class);
    PYM_ASSERT(info->odd_inverse == cls->odd_inverse && info->rotate == cls->rotate);
    size_t free_count = 0;
    if (pool->size_class >= PYM_SMALL_CLASSES) {
        for (unsigned word = 0; word < PYM_SPAN_FREE_WORDS; word++)
            free_count += (size_t)__builtin_popcountll(pool->arena->span_free[word]);
    } else {
        char *first = pym_pool_first_block(pool);
        char *bump = first + (size_t)info->carved * cls->block_size;
        for (pym_block_t *block = pool->free; block != NULL; block = block->next) {
            uintptr_t offset = (uintptr_t)((char *)block - first);
            if ((char *)block < first || (char *)block >= bump || offset % cls->block_size != 0)
                pym_fatal("pymalloc: heap check: pool %p (%u-byte class) has a corrupt free list entry %p",
                          (void *)pool, cls->block_size, (void *)block);
            if (++free_count > cls->capacity)
                pym_fatal("pymalloc: heap check: pool %p (%u-byte class) free list loops (double free?)",
                          (void *)pool, cls->block_size);
        }
    }
    size_t handed_out = info->carved;
    if (free_count + pool->used != handed_out)
        pym_fatal("pymalloc: heap check: pool %p (%u-byte class): %zu free + %u used != %zu carved", (void *)pool,
                  cls->block_size, free_count, pool->used, handed_out);
}

void pym_heap_verify(pym_heap_t *heap)
{
    for (unsigned size_class = 0; size_class < PYM_CLASS_COUNT; size_class++)
        for (pym_pool_t *pool = heap->pools[size_class]; pool != &pym_empty_pool && pool; pool = pool->next) {
            PYM_ASSERT(pool->state == PYM_POOL_USED && pool->size_class == size_class);
            pym_pool_verify(pool, heap);
        }
}
#endif
