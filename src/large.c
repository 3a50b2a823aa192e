/*
 * large.c -- requests above the medium classes (> 128 KiB).
 *
 * Each large block is a mapping of its own, aligned to a chunk (256 KiB) or
 * to the requested alignment if larger, so the user's pointer is the mapping
 * address and the chunk map finds the descriptor (kept out of line) from any
 * address inside it.
 *
 *   below the direct-mapping threshold (PYMALLOC_MMAP_THRESHOLD, 64 MiB): a
 *       freed mapping is kept in a cache of at most PYM_LARGE_CACHE_SLOTS
 *       mappings and PYM_LARGE_CACHE_BYTES bytes (or the threshold if higher), and a later request of nearly the same size (the mapping at
 *       most 25% larger) takes it back: a steady malloc/free loop makes no
 *       system call and faults no page in again.  The oldest entries are
 *       unmapped when the cache is full, and entries unused for
 *       PYMALLOC_DECAY_MS (1 s) are unmapped at the next free of a large
 *       block, so a burst of big buffers does not stay resident.
 *       (glibc gets the same effect from its dynamic mmap threshold, which
 *       rises up to 32 MiB; jemalloc keeps freed extents and purges them
 *       after a decay time.)
 *   from the threshold on: mapped on malloc, unmapped on free.
 * realloc of a large block to another large size never copies: shrinking
 * and growing in place use mremap, and when the neighbouring address space
 * is taken the pages move with mremap(MREMAP_FIXED) to an aligned region.
 * Growth is at least geometric (+25%), so repeated small appends remap
 * O(log n) times.
 *
 * The cache and counters are guarded by pym_large_lock; system calls are
 * made outside it.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "internal.h"

pthread_mutex_t pym_large_lock = PTHREAD_MUTEX_INITIALIZER;
static pym_large_t *pym_large_cache_head;  /* most recently freed first */
static pym_large_t *pym_large_cache_tail;
static size_t pym_large_cache_count;
static size_t pym_large_cache_bytes;
static size_t pym_large_live_count;
static size_t pym_large_live_bytes;
static size_t pym_large_peak_bytes;

static void pym_large_cache_unlink_locked(pym_large_t *large)
{
    if (large->prev)
        large->prev->next = large->next;
    else
        pym_large_cache_head = large->next;
    if (large->next)
        large->next->prev = large->prev;
    else
        pym_large_cache_tail = large->prev;
    large->next = large->prev = NULL;
    pym_large_cache_count--;
    pym_large_cache_bytes -= large->size;
}

static void pym_large_count_live_locked(size_t bytes)
{
    pym_large_live_count++;
    pym_large_live_bytes += bytes;
    if (pym_large_live_bytes > pym_large_peak_bytes)
        pym_large_peak_bytes = pym_large_live_bytes;
}

static void pym_large_unmap(pym_large_t *large)
{
    pym_os_unmap((void *)large->base, large->size);
    pym_meta_free(large, sizeof(pym_large_t));
}

static void pym_large_unmap_list(pym_large_t *victims)
{
    while (victims != NULL) {
        pym_large_t *next = victims->next;
        pym_large_unmap(victims);
        victims = next;
    }
}

/* Bytes the cache may hold: PYM_LARGE_CACHE_BYTES, or more when a higher
 * PYMALLOC_MMAP_THRESHOLD lets bigger blocks be cached. */
static size_t pym_large_cache_budget(void)
{
    return pym_options.direct_threshold > PYM_LARGE_CACHE_BYTES ? pym_options.direct_threshold
                                                                : PYM_LARGE_CACHE_BYTES;
}

uint64_t pym_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now); /* vDSO: no system call */
    return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

/* Under the lock: take the cache entries to unmap -- the oldest while the
 * cache is over its limits, and those unused for the decay time -- off the
 * cache and the chunk map, and return them (linked through `next`) for the
 * caller to unmap after unlocking. */
static pym_large_t *pym_large_cache_trim_locked(uint64_t now_ms)
{
    pym_large_t *victims = NULL;
    while (pym_large_cache_tail != NULL
           && (pym_large_cache_count > PYM_LARGE_CACHE_SLOTS || pym_large_cache_bytes > pym_large_cache_budget()
               || now_ms - pym_large_cache_tail->cached_at_ms >= pym_options.decay_ms)) {
        pym_large_t *oldest = pym_large_cache_tail;
        pym_large_cache_unlink_locked(oldest);
        pym_chunkmap_clear(oldest->base, oldest->size);
        oldest->next = victims;
        victims = oldest;
    }
    return victims;
}

/* The smallest cached mapping of `min_size` to `max_size` bytes, taken out
 * of the cache and counted live; NULL when there is none.  (Decay is
 * applied by frees, which read the clock anyway.) */
static pym_large_t *pym_large_cache_take(size_t min_size, size_t max_size)
{
    pym_large_t *best = NULL;
    pthread_mutex_lock(&pym_large_lock);
    for (pym_large_t *large = pym_large_cache_head; large != NULL; large = large->next)
        if (large->size >= min_size && large->size <= max_size && (best == NULL || large->size < best->size))
            best = large;
    if (best != NULL) {
        pym_large_cache_unlink_locked(best);
        best->state = PYM_LARGE_LIVE;
        pym_large_count_live_locked(best->size);
    }
    pthread_mutex_unlock(&pym_large_lock);
    return best;
}

void *pym_large_alloc(size_t size, size_t alignment, bool zero)
{
    size_t page = pym_os_page_size();
    if (size > PTRDIFF_MAX - PYM_CHUNK_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    size_t map_size = pym_align_up(size, page);
    if (alignment < PYM_CHUNK_SIZE)
        alignment = PYM_CHUNK_SIZE;

    if (map_size < pym_options.direct_threshold && alignment == PYM_CHUNK_SIZE) {
        pym_large_t *reused = pym_large_cache_take(map_size, map_size + map_size / 4);
        if (reused != NULL) {
            reused->requested = size;
            if (zero)
                memset((void *)reused->base, 0, size);
            return (void *)reused->base;
        }
    }

    void *base = pym_os_map_aligned(map_size, alignment);
    if (base == NULL)
        return NULL;
    pym_large_t *large = pym_meta_alloc(sizeof(pym_large_t));
    if (large == NULL) {
        pym_os_unmap(base, map_size);
        errno = ENOMEM;
        return NULL;
    }
    large->base = (uintptr_t)base;
    large->size = map_size;
    large->requested = size;
    large->state = PYM_LARGE_LIVE;
    if (!pym_chunkmap_set(large->base, map_size, (uintptr_t)large | PYM_CHUNK_LARGE)) {
        pym_large_unmap(large);
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_lock(&pym_large_lock);
    pym_large_count_live_locked(map_size);
    pthread_mutex_unlock(&pym_large_lock);
    return base; /* fresh anonymous memory is zero: nothing to clear */
}

void pym_large_free(pym_large_t *large, void *ptr)
{
    pthread_mutex_lock(&pym_large_lock);
    if (PYM_UNLIKELY((uintptr_t)ptr - large->base >= large->size)) {
        /* In the mapping's last chunk but past its end: another mapping's. */
        pthread_mutex_unlock(&pym_large_lock);
        pym_invalid_free(ptr, "free");
        return;
    }
    if (PYM_UNLIKELY((uintptr_t)ptr != large->base || large->state != PYM_LARGE_LIVE)) {
        bool cached = (uintptr_t)ptr == large->base;
        pthread_mutex_unlock(&pym_large_lock);
        if (cached)
            pym_fatal("pymalloc: free(): double free of large block %p (%zu bytes)", ptr, large->size);
        pym_fatal("pymalloc: free(): invalid pointer %p: inside the large block %p (%zu bytes), not its start", ptr,
                  (void *)large->base, large->size);
    }
    pym_large_live_count--;
    pym_large_live_bytes -= large->size;
    if (large->size >= pym_options.direct_threshold || large->size > pym_large_cache_budget()) {
        pym_chunkmap_clear(large->base, large->size);
        pthread_mutex_unlock(&pym_large_lock);
        pym_large_unmap(large);
        return;
    }
    large->state = PYM_LARGE_CACHED;
    large->cached_at_ms = pym_now_ms();
    large->prev = NULL;
    large->next = pym_large_cache_head;
    if (large->next)
        large->next->prev = large;
    else
        pym_large_cache_tail = large;
    pym_large_cache_head = large;
    pym_large_cache_count++;
    pym_large_cache_bytes += large->size;
    pym_large_t *victims = pym_large_cache_trim_locked(large->cached_at_ms);
    pthread_mutex_unlock(&pym_large_lock);
    pym_large_unmap_list(victims);
}

void *pym_large_realloc(pym_large_t *large, void *ptr, size_t size)
{
    if (PYM_UNLIKELY((uintptr_t)ptr != large->base || large->state != PYM_LARGE_LIVE))
        pym_fatal("pymalloc: realloc(): invalid pointer %p: not a live large block", ptr);
    size_t page = pym_os_page_size();
    size_t old_size = large->size;
    /* Shrink only when the program asks for less than half of what it
     * asked for before: a block growing inside a roomy mapping stays. */
    if (size <= old_size && (size > large->requested / 2 || size > old_size / 2)) {
        large->requested = size;
        return ptr;
    }
    if (size <= PYM_MEDIUM_MAX) {
        /* (An over-aligned large block may be smaller than the medium size
         * asked for: copy what it holds, no more.) */
        void *moved = pym_malloc(size);
        if (moved == NULL)
            return NULL;
        memcpy(moved, ptr, size < old_size ? size : old_size);
        pym_free(ptr);
        return moved;
    }
    if (size > PTRDIFF_MAX - PYM_CHUNK_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    size_t new_size = pym_align_up(size, page);
    if (new_size > old_size) {
        /* Grow by at least a quarter: a string or vector growing a few bytes
         * at a time then costs O(log n) remaps instead of one per page.  The
         * slack is address space only; its pages are faulted in, like any
         * mapping's, when first written. */
        size_t geometric = pym_align_up(old_size + old_size / 4, page);
        if (new_size < geometric && geometric <= PTRDIFF_MAX - PYM_CHUNK_SIZE)
            new_size = geometric;
    }
    uintptr_t old_base = large->base;
    uintptr_t new_base = old_base;
    if (new_size < old_size) {
        /* Forget the chunks past the new end while they are still ours. */
        uintptr_t keep_end = pym_align_up(old_base + new_size, PYM_CHUNK_SIZE);
        if (keep_end < old_base + old_size)
            pym_chunkmap_clear(keep_end, old_base + old_size - keep_end);
        pym_os_remap_in_place(ptr, old_size, new_size); /* shrinking in place cannot fail */
    } else if (new_size <= pym_options.direct_threshold) {
        /* A cached mapping with room to spare has its pages in memory
         * already: moving there costs a copy of the old block instead of
         * faulting in every page of the growth (the repeated `s += x` that
         * builds a big string again and again).  At most 64 times the need:
         * a growing block may take over a big resident mapping, but not an
         * arbitrarily big one. */
        pym_large_t *roomy = pym_large_cache_take(new_size, new_size * 64);
        if (roomy != NULL) {
            roomy->requested = size;
            memcpy((void *)roomy->base, ptr, old_size);
            pym_large_free(large, ptr);
            return (void *)roomy->base;
        }
    }
    /* The chunk map must be able to describe the grown block before it
     * exists: its leaves are made first, so nothing can fail after the
     * pages have moved (a failure before leaves the block untouched). */
    if (new_size > old_size
        && !(pym_chunkmap_prepare(old_base, new_size) && pym_os_remap_in_place(ptr, old_size, new_size))) {
        void *target = pym_os_map_aligned(new_size, PYM_CHUNK_SIZE);
        if (target == NULL)
            return NULL; /* errno is ENOMEM; the block is untouched */
        if (!pym_chunkmap_prepare((uintptr_t)target, new_size)) {
            pym_os_unmap(target, new_size);
            errno = ENOMEM;
            return NULL;
        }
        void *moved = pym_os_remap_onto(ptr, old_size, new_size, target);
        if (moved == NULL)
            return NULL;
        new_base = (uintptr_t)moved;
    }
    if (!pym_chunkmap_set(new_base, new_size, (uintptr_t)large | PYM_CHUNK_LARGE))
        pym_fatal("pymalloc: realloc(): the chunk map of %p failed after its leaves were made", (void *)new_base);
    if (new_base != old_base)
        pym_chunkmap_clear_if(old_base, old_size, (uintptr_t)large | PYM_CHUNK_LARGE);
    pthread_mutex_lock(&pym_large_lock);
    large->base = new_base;
    large->size = new_size;
    large->requested = size;
    pym_large_live_bytes = pym_large_live_bytes - old_size + new_size;
    if (pym_large_live_bytes > pym_large_peak_bytes)
        pym_large_peak_bytes = pym_large_live_bytes;
    pthread_mutex_unlock(&pym_large_lock);
    return (void *)new_base;
}

size_t pym_large_trim(void)
{
    pthread_mutex_lock(&pym_large_lock);
    pym_large_t *victims = NULL;
    size_t released = 0;
    while (pym_large_cache_tail != NULL) {
        pym_large_t *oldest = pym_large_cache_tail;
        pym_large_cache_unlink_locked(oldest);
        pym_chunkmap_clear(oldest->base, oldest->size);
        released += oldest->size;
        oldest->next = victims;
        victims = oldest;
    }
    pthread_mutex_unlock(&pym_large_lock);
    pym_large_unmap_list(victims);
    return released;
}

void pym_large_counters_locked(pym_stats_t *out)
{
    out->large_count = pym_large_live_count;
    out->large_bytes = pym_large_live_bytes;
    out->large_cached_bytes = pym_large_cache_bytes;
    out->large_peak_bytes = pym_large_peak_bytes;
}
