/*
 * heap.c -- thread heaps: per-thread caches of free blocks in front of the
 * pools each thread owns.
 *
 * Every thread starts with pym_tls_heap pointing at pym_startup_heap, whose
 * bins all have capacity 0.  The first malloc (or free) therefore lands on
 * the slow path, which gives the thread a heap of its own, reusing one left
 * by an exited thread when there is one.  No branch on "has this thread a
 * heap yet" exists on the fast paths.
 *
 * Thread cache.  Per class a bin, a stack of up to PYM_CACHE_SLOTS free
 * blocks (fewer for medium classes: PYM_CACHE_CLASS_BYTES of them).  malloc
 * pops the top, free pushes, whichever thread's pool the block comes from:
 * the block most recently freed is handed out next, while it is still in
 * cache, and neither the block nor its pool header is touched.  An empty bin
 * is refilled with half its capacity from the pools; a full bin flushes its
 * oldest half back to them.  A block in a bin still counts as used by its
 * pool, so cached blocks keep their pools (and arenas) alive: bins are
 * flushed at thread exit and by pym_flush_thread_cache() (malloc_trim).
 *
 * Pools.  A heap keeps, per class, a doubly linked list of pools with free
 * blocks; refills take from the head.  A pool with no block left leaves the
 * list and is in no list at all while it is full; the first block flushed
 * back puts it at the head again (CPython's used/full pool states).  Both
 * moves touch only the pool itself and the pool at the list head: a full
 * list would make every move write two random pool headers.  Emptied small
 * pools wait in a small per-heap cache before going back to their arena,
 * except the last pool of a small class, which stays put.
 *
 * Blocks of other threads' pools.  Only a pool's owner touches its free list
 * and used count.  A flush sends a block whose pool belongs to another heap
 * to that heap's `remote` list; consecutive blocks of the same owner are
 * chained and pushed with one CAS.  The owner collects the list on its
 * refill path and frees each block locally.
 *
 * Thread exit (the pthread key destructor):
 *   1. flush the bins and collect the remote list;
 *   2. under the arena lock, give back every empty pool and abandon every
 *      other one (owner = NULL, listed per class in arena.c);
 *   3. swap the remote list for PYM_REMOTE_CLOSED and free what arrived
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
 * remote list.
 */
#include <errno.h>
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
static pym_heap_t *pym_all_heaps;      /* every heap made (all_next), under the arena lock */
static size_t pym_heaps_live;          /* heaps owned by running threads */

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
    if (pool->free != NULL || pym_pool_carved(pool) < pym_classes[pool->size_class].capacity)
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

/* ---- freeing ------------------------------------------------------------------ */
void pym_heap_free_local_slow(pym_heap_t *heap, pym_pool_t *pool)
{
    if (pool->state == PYM_POOL_FULL)
        pym_class_list_push(heap, pool);
    if (pool->used != 0)
        return;
    /* Empty: a small class keeps its last pool (4 KiB), so that a program
     * allocating and freeing a batch of one size does not take a pool from
     * its arena again and again; a medium span (256 KiB) always goes back. */
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

/* An orphan free (see the top of this file): `seen_owner` is the owner the
 * caller found, NULL or a heap whose remote list was CLOSED. */
static void pym_heap_free_orphan(pym_pool_t *pool, pym_block_t *block, pym_heap_t *seen_owner)
{
    pym_heap_t *heap = pym_tls_heap;
    pthread_mutex_lock(&pym_arena_lock);
    pym_heap_t *owner = pym_pool_owner(pool);
    bool orphan = owner == NULL
                  || (owner == seen_owner && __atomic_load_n(&owner->remote, __ATOMIC_ACQUIRE) == PYM_REMOTE_CLOSED);
    if (!orphan) {
        pthread_mutex_unlock(&pym_arena_lock); /* adopted or reopened meanwhile: route again */
        pym_heap_free_remote(pool, block);
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
        pym_pool_free_block(heap, pool, block);
        return;
    }
    /* No heap to adopt it: free under the lock, leave the pool to others. */
    if (pym_pool_push_block(pool, block) == 0)
        pym_arena_release_pool_locked(pool);
    else
        pym_arena_abandon_pool_locked(pool);
    pthread_mutex_unlock(&pym_arena_lock);
}

/* Free into a pool of the shared heap: it has no thread to collect a remote
 * list, so the block goes back at once, under the shared heap's lock. */
static bool pym_heap_free_shared(pym_pool_t *pool, pym_block_t *block)
{
    pthread_mutex_lock(&pym_shared_heap_lock);
    bool owned = pym_pool_owner(pool) == &pym_shared_heap;
    if (owned)
        pym_pool_free_block(&pym_shared_heap, pool, block);
    pthread_mutex_unlock(&pym_shared_heap_lock);
    return owned;
}

/* Push the chain head..tail onto the remote list of `owner` with one CAS;
 * false when the list is closed (the owner has exited). */
static bool pym_remote_push(pym_heap_t *owner, pym_block_t *head, pym_block_t *tail)
{
    pym_block_t *remote = __atomic_load_n(&owner->remote, __ATOMIC_RELAXED);
    while (remote != PYM_REMOTE_CLOSED) {
        tail->next = remote;
        if (__atomic_compare_exchange_n(&owner->remote, &remote, head, true, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
            return true;
    }
    return false;
}

void pym_heap_free_remote(pym_pool_t *pool, pym_block_t *block)
{
    for (;;) {
        pym_heap_t *owner = pym_pool_owner(pool);
        if (owner == pym_tls_heap && owner->state == PYM_HEAP_LIVE) {
            pym_pool_free_block(owner, pool, block); /* adopted by this thread meanwhile */
            return;
        }
        if (owner == NULL) {
            pym_heap_free_orphan(pool, block, NULL);
            return;
        }
        if (PYM_UNLIKELY(owner == &pym_shared_heap)) {
            if (pym_heap_free_shared(pool, block))
                return;
            continue;
        }
        if (pym_remote_push(owner, block, block))
            return;
        /* The owner has exited: an orphan free. */
        pym_heap_free_orphan(pool, block, owner);
        return;
    }
}

/* Free every block of a list taken from a heap's remote list: as the owner
 * where `heap` owns the block's pool, as a stranger otherwise (`heap` NULL:
 * always as a stranger). */
static void pym_heap_free_list(pym_heap_t *heap, pym_block_t *list)
{
    while (list != NULL) {
        pym_block_t *next = list->next;
        pym_pool_t *pool = pym_pool_of((uintptr_t)list, pym_chunkmap_lookup((uintptr_t)list));
        if (heap != NULL && pym_pool_owner(pool) == heap)
            pym_pool_free_block(heap, pool, list);
        else
            pym_heap_free_remote(pool, list); /* the pool changed hands since the push */
        list = next;
    }
}

static void pym_heap_collect_remote(pym_heap_t *heap)
{
    pym_block_t *list = __atomic_exchange_n(&heap->remote, NULL, __ATOMIC_ACQUIRE);
    pym_heap_free_list(heap, list);
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

/* Move up to `want` blocks out of `pool` into `out`: its free list first,
 * then never-used blocks from its bump area (written so that ascending
 * addresses are popped first, and not touched: fresh pages stay unfaulted
 * until the program uses them). */
static unsigned pym_pool_take(pym_pool_t *pool, void **out, unsigned want)
{
    unsigned got = 0;
    pym_block_t *block = pool->free;
    while (block != NULL && got < want) {
        out[got++] = block;
        block = block->next;
    }
    pool->free = block;
    if (got < want) {
        const pym_class_t *cls = &pym_classes[pool->size_class];
        pym_pool_info_t *info = pym_pool_info(pool);
        uint32_t carved = info->carved;
        uint32_t carve = cls->capacity - carved;
        if (carve > want - got)
            carve = want - got;
        char *first = pym_pool_first_block(pool) + (size_t)carved * cls->block_size;
        for (uint32_t i = carve; i-- > 0;)
            out[got++] = first + (size_t)i * cls->block_size;
        __atomic_store_n(&info->carved, (uint16_t)(carved + carve), __ATOMIC_RELAXED);
    }
    pool->used += got;
    return got;
}

/* Up to `want` (>= 1) blocks of `size_class` from the heap's pools into
 * `out`; 0 when out of memory.  A new pool is taken only when the heap's
 * pools yield nothing. */
static unsigned pym_heap_take_blocks(pym_heap_t *heap, unsigned size_class, void **out, unsigned want)
{
#ifdef PYM_DEBUG
    pym_heap_verify(heap);
#endif
    if (__atomic_load_n(&heap->remote, __ATOMIC_RELAXED) != NULL)
        pym_heap_collect_remote(heap);
    unsigned got = 0;
    for (;;) {
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
        pym_all_heaps = heap;
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
    heap->state = PYM_HEAP_LIVE;
    pthread_mutex_lock(&pym_arena_lock);
    /* Reopen a retired heap's remote list under the arena lock: orphan frees
     * decide under that lock whether the owner is closed. */
    __atomic_store_n(&heap->remote, NULL, __ATOMIC_RELEASE);
    pym_heaps_live++;
    pthread_mutex_unlock(&pym_arena_lock);
    /* Set the TLS pointer first: pthread_setspecific may allocate. */
    pym_tls_heap = heap;
    if (pym_heap_key_ready)
        pthread_setspecific(pym_heap_key, heap);
    return heap;
}

/* The calling thread's live heap, made on first use; NULL for a thread past
 * its TLS teardown (or out of memory), which must use the shared heap. */
static pym_heap_t *pym_heap_of_thread(void)
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
        if (bin->limit == bin->base) {
            pym_heap_take_blocks(heap, size_class, &block, 1);
        } else {
            unsigned got = pym_heap_take_blocks(heap, size_class, bin->base, pym_bin_batch(size_class));
            if (got > 0) {
                pym_bin_set_cursor(bin, bin->base + got - 1);
                block = *bin->cursor;
            }
        }
    }
    if (block == NULL)
        errno = ENOMEM;
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
/* Hand a chain of blocks (linked through `next`, last one `tail`) whose
 * pools all belonged to `owner` when the caller looked to that heap's remote
 * list with one CAS; blocks the owner cannot take (it is gone, or is the
 * shared heap) go one by one through pym_heap_free_remote, which re-reads
 * each pool's owner. */
static void pym_heap_push_chain(pym_heap_t *owner, pym_block_t *head, pym_block_t *tail)
{
    if (head == NULL)
        return;
    if (owner != NULL && owner != &pym_shared_heap && pym_remote_push(owner, head, tail))
        return;
    tail->next = NULL;
    while (head != NULL) {
        pym_block_t *next = head->next;
        pym_heap_free_remote(pym_pool_of((uintptr_t)head, pym_chunkmap_lookup((uintptr_t)head)), head);
        head = next;
    }
}

/* Return `count` blocks of class `size_class` to their pools: as the owner
 * into the heap's own pools, in chains onto the remote lists of the others.
 * `heap` may be NULL (a thread without a heap owns no pool).  Another heap's
 * pool is known by its directory entry alone: its header, which its owner
 * keeps writing, is not read here.
 *
 * This is where a block freed through the fast path is proven to be a block
 * start its pool has handed out (the fast path checked only its page and
 * its alignment), before any pool takes it back. */
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
            pym_pool_free_block(heap, pym_pool_of((uintptr_t)block, entry), block);
            continue;
        }
        if (owner != chain_owner || chain_head == NULL) {
            pym_heap_push_chain(chain_owner, chain_head, chain_tail);
            chain_owner = owner;
            chain_head = chain_tail = block;
        } else {
            chain_tail->next = block;
            chain_tail = block;
        }
    }
    pym_heap_push_chain(chain_owner, chain_head, chain_tail);
}

/* Return the `count` oldest blocks of a bin to their pools. */
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

void pym_heap_flush_cache(pym_heap_t *heap)
{
    if (heap->state != PYM_HEAP_LIVE)
        return;
    for (unsigned size_class = 0; size_class < PYM_CLASS_COUNT; size_class++)
        pym_cache_flush(heap, size_class, PYM_CACHE_SLOTS);
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
        if (bin->limit != bin->base) { /* full: make room */
            pym_cache_flush(heap, size_class, pym_bin_batch(size_class));
            *bin->cursor = ptr;
            pym_bin_set_cursor(bin, bin->cursor + 1);
            /* A thread that frees much and allocates little still takes back
             * its blocks that others freed. */
            if (__atomic_load_n(&heap->remote, __ATOMIC_RELAXED) != NULL)
                pym_heap_collect_remote(heap);
            return;
        }
    }
    pym_heap_free_blocks(heap, size_class, &ptr, 1); /* no cache */
}

void pym_flush_thread_cache(void)
{
    pym_heap_t *heap = pym_tls_heap;
    pym_heap_flush_cache(heap);
    /* and take back this heap's blocks that other threads freed */
    if (heap->state == PYM_HEAP_LIVE && __atomic_load_n(&heap->remote, __ATOMIC_RELAXED) != NULL)
        pym_heap_collect_remote(heap);
}

void pym_heap_trim(pym_heap_t *heap)
{
    if (heap->state != PYM_HEAP_LIVE)
        return;
    pym_heap_flush_cache(heap);
    if (__atomic_load_n(&heap->remote, __ATOMIC_RELAXED) != NULL)
        pym_heap_collect_remote(heap);
    pthread_mutex_lock(&pym_arena_lock);
    while (heap->empty != NULL) {
        pym_pool_t *pool = heap->empty;
        heap->empty = pool->next;
        heap->empty_count--;
        pym_arena_release_pool_locked(pool);
    }
    pthread_mutex_unlock(&pym_arena_lock);
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
    pym_heap_flush_cache(heap);
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
     * shared heap; late remote frees find the pools abandoned.  The remote
     * list is closed before the heap is offered for reuse, so that a new
     * owner's reopened list is never closed under it. */
    pym_tls_heap = &pym_startup_heap;
    pym_tls_heap_retired = true;
    pym_block_t *late = __atomic_exchange_n(&heap->remote, PYM_REMOTE_CLOSED, __ATOMIC_ACQUIRE);
    pym_heap_free_list(NULL, late); /* orphan frees now: the heap is closed */

    pthread_mutex_lock(&pym_arena_lock);
    heap->state = PYM_HEAP_DEAD;
    heap->next_dead = pym_dead_heaps;
    pym_dead_heaps = heap;
    pym_heaps_live--;
    pthread_mutex_unlock(&pym_arena_lock);
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
     * freed (they are pushed to the dead owner's remote list) but that memory
     * is not reused in the child.  Touching those heaps is not safe: their
     * threads may have stopped in the middle of a list update.  The forking
     * thread took the shared-heap lock in the prepare handler; it owns it in
     * the child too.  Only the forking thread's heap is live in the child. */
    pym_heaps_live = pym_tls_heap->state == PYM_HEAP_LIVE ? 1 : 0;
    pthread_mutex_unlock(&pym_shared_heap_lock);
}

#ifdef PYM_DEBUG
static void pym_pool_verify(pym_pool_t *pool, pym_heap_t *heap)
{
    const pym_class_t *cls = &pym_classes[pool->size_class];
    char *first = pym_pool_first_block(pool);
    const pym_pool_info_t *info = pym_pool_info(pool);
    PYM_ASSERT(pym_pool_owner(pool) == heap);
    PYM_ASSERT(info->carved <= cls->capacity && info->size_class == pool->size_class);
    PYM_ASSERT(info->odd_inverse == cls->odd_inverse && info->rotate == cls->rotate);
    char *bump = first + (size_t)info->carved * cls->block_size;
    size_t free_count = 0;
    for (pym_block_t *block = pool->free; block != NULL; block = block->next) {
        uintptr_t offset = (uintptr_t)((char *)block - first);
        if ((char *)block < first || (char *)block >= bump || offset % cls->block_size != 0)
            pym_fatal("pymalloc: heap check: pool %p (%u-byte class) has a corrupt free list entry %p", (void *)pool,
                      cls->block_size, (void *)block);
        if (++free_count > cls->capacity)
            pym_fatal("pymalloc: heap check: pool %p (%u-byte class) free list loops (double free?)", (void *)pool,
                      cls->block_size);
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
