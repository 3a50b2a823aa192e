/*
 * large.c -- requests above the medium classes (> 128 KiB): extents.
 *
 * A large block is an extent, a run of whole 256 KiB chunks whose first
 * chunk is the user's pointer; every chunk of it maps to its descriptor in
 * the chunk map, so free and realloc find it from the pointer and name an
 * interior pointer.  A freed extent is not unmapped: it stays mapped with its
 * pages committed, so that the next large request of a size it can hold
 * reuses it without a system call and without faulting its pages in again
 * (the cost that dominates a program churning blocks of megabytes: each
 * fresh 4 KiB page costs a fault and the kernel's zeroing).
 *
 *   reuse:     free extents wait in size bins, one per chunk count (1..255
 *              chunks; longer ones share the last bin); a request takes the
 *              most recently freed extent of the smallest bin that holds it
 *              (best fit, found with a bitmap of non-empty bins), and what
 *              is left over stays free as an extent of its own;
 *   coalesce:  a freed extent merges with the free extents just before and
 *              after it (found through the chunk map), so that fragments
 *              add up to blocks again;
 *   grow:      realloc grows a block into the free extent after it (no copy,
 *              no system call), or moves it into a free extent that holds
 *              it (a copy: its pages are resident already), or else moves
 *              its pages to a fresh mapping with mremap (no copy), growing
 *              by at least a quarter each time;
 *   shrink:    realloc to less than half gives the chunks past the new end
 *              back as a free extent;
 *   park:      a thread keeps the extent it freed last in its heap's slot
 *              and its next large request of about that size takes it back
 *              without a lock and without an atomic read-modify-write
 *              (a malloc/free loop of one buffer: the handshake below);
 *   decay:     free extents unused for PYMALLOC_DECAY_MS (1 s) are unmapped
 *              -- at the next large free, and by the background scavenger
 *              (scavenge.c) when the program has gone quiet.  No byte
 *              budget: the free extents never exceed what the program had
 *              live at once in the last decay time, and a program that
 *              frees its buffers and makes them again right after (a batch,
 *              a request, a benchmark repetition) must find them resident;
 *              what it stops reusing goes after the decay time.  Whole free
 *              extents go back with munmap: that returns their address
 *              space as well, and no half-committed extent state has to be
 *              tracked.
 *              MADV_FREE is not used: its pages stay counted in the RSS
 *              until the kernel is short of memory, which is the figure
 *              users and container limits look at.
 *
 * Fresh extents are mapped with pym_os_map_aligned; extents of separate
 * mappings that happen to be adjacent coalesce like any others (munmap and
 * madvise work across mappings; mremap may not, and realloc then copies).
 *
 * From PYMALLOC_MMAP_THRESHOLD (64 MiB) on, and for alignments above a
 * chunk, a block is mapped on its own (DIRECT), grown and shrunk with
 * mremap, and unmapped when freed.
 *
 * Everything here is guarded by pym_large_lock; mappings are made and
 * unmapped outside it -- except the parking slots.
 *
 * The parking slot of a heap (heap->large_slot) is written by its owner
 * thread on every large malloc and free, and taken by the scavenger when
 * the extent in it has waited for the decay time.  Two atomic exchanges per
 * malloc/free pair (some 40 cycles) would be most of the pair's cost, so
 * the owner uses plain loads and stores, and the rare side pays instead --
 * an asymmetric Dekker handshake over two flags:
 *
 *   owner:      busy = 1;  [compiler barrier]  if (steal) exchange instead;
 *               old = slot; slot = new; busy = 0
 *   scavenger:  steal = 1;  membarrier (every running thread executes a
 *               full barrier);  if (busy) give up until the next pass;
 *               else exchange slot with NULL;  steal = 0
 *
 * The membarrier makes "owner saw steal == 0" and "scavenger saw busy == 0"
 * exclusive: the owner's store of busy is either visible after it, or the
 * owner's load of steal comes after it and sees 1.  The fence exists only
 * once the process is registered for it (at the first park,
 * pym_large_enable_fence); until then, and where the kernel refuses the
 * registration, the owner exchanges the slot atomically.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

pthread_mutex_t pym_large_lock = PTHREAD_MUTEX_INITIALIZER;
static pym_large_t *pym_free_bins[PYM_LARGE_BINS];  /* free extents per chunk count */
static uint64_t pym_free_bin_mask[PYM_LARGE_BINS / 64]; /* bit set per non-empty bin */
static pym_large_t *pym_free_newest, *pym_free_oldest; /* the age list */
static int pym_large_slot_fenced;            /* the membarrier handshake is on (atomic) */
static int pym_large_fence_tried;            /* the registration was tried (atomic) */
static size_t pym_free_bytes;                /* bytes in free extents */
static size_t pym_large_live_count;
static size_t pym_large_live_bytes;
static size_t pym_large_peak_bytes;          /* most bytes in large mappings (live and free extents) at once */

_Static_assert(PYM_LARGE_BINS % 64 == 0, "the bin bitmap has whole words");

static inline size_t pym_chunks_of(size_t bytes)
{
    return (bytes + PYM_CHUNK_SIZE - 1) >> PYM_CHUNK_SHIFT;
}

static inline unsigned pym_bin_of(size_t bytes)
{
    size_t chunks = bytes >> PYM_CHUNK_SHIFT;
    return chunks >= PYM_LARGE_BINS ? PYM_LARGE_BINS - 1 : (unsigned)chunks - 1;
}

static inline uintptr_t pym_large_entry(const pym_large_t *large)
{
    return (uintptr_t)large | PYM_CHUNK_LARGE;
}

/* ---- free extents: bins and age list (under the lock) ------------------------- */
static void pym_bin_insert(pym_large_t *large)
{
    large->bin = (uint16_t)pym_bin_of(large->size);
    large->bin_prev = NULL;
    large->bin_next = pym_free_bins[large->bin];
    if (large->bin_next != NULL)
        large->bin_next->bin_prev = large;
    pym_free_bins[large->bin] = large;
    pym_free_bin_mask[large->bin / 64] |= (uint64_t)1 << (large->bin % 64);
    __atomic_store_n(&pym_free_bytes, pym_free_bytes + large->size, __ATOMIC_RELAXED); /* read racily by the scavenger */
}

static void pym_bin_remove(pym_large_t *large)
{
    if (large->bin_prev != NULL)
        large->bin_prev->bin_next = large->bin_next;
    else
        pym_free_bins[large->bin] = large->bin_next;
    if (large->bin_next != NULL)
        large->bin_next->bin_prev = large->bin_prev;
    if (pym_free_bins[large->bin] == NULL)
        pym_free_bin_mask[large->bin / 64] &= ~((uint64_t)1 << (large->bin % 64));
    large->bin_next = large->bin_prev = NULL;
    __atomic_store_n(&pym_free_bytes, pym_free_bytes - large->size, __ATOMIC_RELAXED);
}

static void pym_free_insert(pym_large_t *large, uint64_t now_ms)
{
    __atomic_store_n(&large->state, PYM_LARGE_FREE, __ATOMIC_RELEASE);
    __atomic_store_n(&large->freed_at_ms, now_ms, __ATOMIC_RELAXED);
    pym_bin_insert(large);
    large->age_prev = NULL;
    large->age_next = pym_free_newest;
    if (large->age_next != NULL)
        large->age_next->age_prev = large;
    else
        pym_free_oldest = large;
    pym_free_newest = large;
}

static void pym_free_remove(pym_large_t *large)
{
    pym_bin_remove(large);
    if (large->age_prev != NULL)
        large->age_prev->age_next = large->age_next;
    else
        pym_free_newest = large->age_next;
    if (large->age_next != NULL)
        large->age_next->age_prev = large->age_prev;
    else
        pym_free_oldest = large->age_prev;
    large->age_next = large->age_prev = NULL;
}

/* The first non-empty bin at or after `bin`, or PYM_LARGE_BINS. */
static unsigned pym_next_bin(unsigned bin)
{
    for (unsigned word = bin / 64; word < PYM_LARGE_BINS / 64; word++) {
        uint64_t bits = pym_free_bin_mask[word];
        if (word == bin / 64)
            bits &= ~(uint64_t)0 << (bin % 64);
        if (bits != 0)
            return word * 64 + (unsigned)__builtin_ctzll(bits);
    }
    return PYM_LARGE_BINS;
}

/* The free extent a request of `bytes` (whole chunks) takes: the most
 * recently freed one of the smallest bin that holds it; NULL if none. */
static pym_large_t *pym_free_find(size_t bytes)
{
    for (unsigned bin = pym_next_bin(pym_bin_of(bytes)); bin < PYM_LARGE_BINS; bin = pym_next_bin(bin + 1)) {
        if (bin < PYM_LARGE_BINS - 1)
            return pym_free_bins[bin]; /* every extent of an exact bin fits */
        pym_large_t *best = NULL;      /* the last bin mixes sizes: smallest that fits */
        for (pym_large_t *large = pym_free_bins[bin]; large != NULL; large = large->bin_next)
            if (large->size >= bytes && (best == NULL || large->size < best->size))
                best = large;
        return best;
    }
    return NULL;
}

/* The extent whose chunk holds `address`, if it is free; NULL otherwise. */
static pym_large_t *pym_free_at(uintptr_t address)
{
    uintptr_t entry = pym_chunkmap_lookup(address);
    if (!(entry & PYM_CHUNK_LARGE))
        return NULL;
    pym_large_t *large = (pym_large_t *)(entry & ~PYM_CHUNK_KIND_MASK);
    return __atomic_load_n(&large->state, __ATOMIC_ACQUIRE) == PYM_LARGE_FREE ? large : NULL;
}

/* Split the first `bytes` off a free extent taken out of the bins: the rest
 * becomes a free extent of its own (descriptor `spare`, consumed), with the
 * same age.  The caller holds the lock and has made the spare. */
static void pym_split_front(pym_large_t *large, size_t bytes, pym_large_t *spare)
{
    spare->base = large->base + bytes;
    spare->size = large->size - bytes;
    large->size = bytes;
    pym_chunkmap_set(spare->base, spare->size, pym_large_entry(spare)); /* leaves exist: same range */
    pym_free_insert(spare, large->freed_at_ms);
}

/* ---- spare descriptors ------------------------------------------------------------ */
/* Descriptors that merges freed, kept under the lock for the splits that
 * need one: a free/malloc pair of large blocks then touches no metadata. */
#define PYM_SPARE_DESCRIPTORS 16
static pym_large_t *pym_spare_list;         /* linked through age_next */
static unsigned pym_spare_count;

static pym_large_t *pym_spare_take_locked(void)
{
    pym_large_t *spare = pym_spare_list;
    if (spare != NULL) {
        pym_spare_list = spare->age_next;
        pym_spare_count--;
        memset(spare, 0, sizeof(*spare));
    }
    return spare;
}

/* Keep a descriptor nobody uses, or hand it back (linked to `*overflow`)
 * for pym_free_descriptors after the lock. */
static void pym_spare_put_locked(pym_large_t *descriptor, pym_large_t **overflow)
{
    if (pym_spare_count < PYM_SPARE_DESCRIPTORS) {
        descriptor->age_next = pym_spare_list;
        pym_spare_list = descriptor;
        pym_spare_count++;
    } else {
        descriptor->age_next = *overflow;
        *overflow = descriptor;
    }
}

/* ---- counters ------------------------------------------------------------------- */
/* The peak of the bytes in large mappings: live (parked included) and free
 * extents, what is mapped for large blocks.  Called where live bytes grow;
 * taking a free extent moves bytes from free to live and changes nothing. */
static void pym_note_peak_locked(void)
{
    size_t mapped = pym_large_live_bytes + pym_free_bytes;
    if (mapped > pym_large_peak_bytes)
        pym_large_peak_bytes = mapped;
}

static void pym_count_live_locked(size_t bytes)
{
    pym_large_live_count++;
    pym_large_live_bytes += bytes;
    pym_note_peak_locked();
}

/* Under the lock: take the free extents to unmap -- those unused for the
 * decay time (every one with `all`) -- off the bins and the chunk map, and
 * return them (linked through age_next) for unmapping after. */
static pym_large_t *pym_free_victims_locked(uint64_t now_ms, bool all)
{
    pym_large_t *victims = NULL;
    while (pym_free_oldest != NULL && (all || now_ms - pym_free_oldest->freed_at_ms >= pym_options.decay_ms)) {
        pym_large_t *oldest = pym_free_oldest;
        pym_free_remove(oldest);
        pym_chunkmap_clear(oldest->base, oldest->size);
        oldest->age_next = victims;
        victims = oldest;
    }
    return victims;
}

static size_t pym_unmap_victims(pym_large_t *victims)
{
    size_t released = 0;
    while (victims != NULL) {
        pym_large_t *next = victims->age_next;
        pym_os_unmap((void *)victims->base, victims->size);
        released += victims->size;
        pym_meta_free(victims, sizeof(pym_large_t));
        victims = next;
    }
    return released;
}

/* ---- allocation ------------------------------------------------------------------ */
/* A block mapped on its own: huge or over-aligned. */
static void *pym_direct_alloc(size_t size, size_t alignment)
{
    size_t map_size = pym_align_up(size, pym_os_page_size());
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
    __atomic_store_n(&large->state, PYM_LARGE_DIRECT, __ATOMIC_RELEASE);
    if (!pym_chunkmap_set(large->base, map_size, pym_large_entry(large))) {
        pym_os_unmap(base, map_size);
        pym_meta_free(large, sizeof(pym_large_t));
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_lock(&pym_large_lock);
    pym_count_live_locked(map_size);
    pthread_mutex_unlock(&pym_large_lock);
    return base; /* fresh anonymous memory is zero */
}

/* A free extent of at least `bytes` made live with exactly `bytes`, or
 * NULL.  `spare` is a descriptor for a split-off rest (used or left). */
static pym_large_t *pym_take_free_locked(size_t bytes, size_t requested, pym_large_t **spare)
{
    pym_large_t *large = pym_free_find(bytes);
    if (large == NULL)
        return NULL;
    pym_free_remove(large);
    if (large->size > bytes) {
        pym_split_front(large, bytes, *spare);
        *spare = NULL;
    }
    __atomic_store_n(&large->state, PYM_LARGE_LIVE, __ATOMIC_RELEASE);
    large->requested = requested;
    pym_count_live_locked(large->size);
    return large;
}

static PYM_NOINLINE void pym_unpark(pym_large_t *large, uint64_t freed_ms);
static void pym_free_descriptors(pym_large_t *dead);

/* ---- parking slots (the handshake above) ----------------------------------------- */
/* The first park turns the handshake on: one system call in a process
 * that frees a large block, none in one that never does.  Tried once. */
static PYM_NOINLINE void pym_large_enable_fence(void)
{
    if (__atomic_load_n(&pym_large_fence_tried, __ATOMIC_RELAXED)
        || __atomic_exchange_n(&pym_large_fence_tried, 1, __ATOMIC_RELAXED))
        return;
    if (pym_os_fence_register())
        __atomic_store_n(&pym_large_slot_fenced, 1, __ATOMIC_RELEASE);
}

void pym_large_after_fork_child(void)
{
    /* The child's registration is its own: it tries again. */
    __atomic_store_n(&pym_large_slot_fenced, 0, __ATOMIC_RELAXED);
    pym_large_fence_tried = 0;
}

/* The owner puts `large` (NULL: nothing) into its heap's slot and gets what
 * was there. */
static PYM_ALWAYS_INLINE pym_large_t *pym_slot_swap_by_owner(pym_heap_t *heap, pym_large_t *large)
{
    if (PYM_LIKELY(__atomic_load_n(&pym_large_slot_fenced, __ATOMIC_RELAXED))) {
        __atomic_store_n(&heap->large_busy, 1, __ATOMIC_RELAXED);
        __atomic_signal_fence(__ATOMIC_SEQ_CST); /* the compiler keeps the order; the membarrier does the rest */
        if (PYM_LIKELY(!__atomic_load_n(&heap->large_steal, __ATOMIC_ACQUIRE))) {
            pym_large_t *old = __atomic_load_n(&heap->large_slot, __ATOMIC_RELAXED);
            __atomic_store_n(&heap->large_slot, large, __ATOMIC_RELEASE);
            __atomic_store_n(&heap->large_busy, 0, __ATOMIC_RELEASE);
            return old;
        }
        __atomic_store_n(&heap->large_busy, 0, __ATOMIC_RELEASE);
    }
    return __atomic_exchange_n(&heap->large_slot, large, __ATOMIC_ACQ_REL);
}

/* The scavenger takes what another thread's slot holds into `*parked`:
 * 1 when it did, 0 when the slot was empty, -1 when the owner was updating
 * it right then (the next pass tries again). */
static int pym_slot_take_by_scavenger(pym_heap_t *heap, pym_large_t **parked)
{
    *parked = NULL;
    bool fenced = __atomic_load_n(&pym_large_slot_fenced, __ATOMIC_ACQUIRE);
    if (fenced) {
        __atomic_store_n(&heap->large_steal, 1, __ATOMIC_SEQ_CST);
        /* Without the barrier (refused after the registration: never seen)
         * the owner's plain update cannot be excluded: leave the slot. */
        if (!pym_os_fence_all_threads() || __atomic_load_n(&heap->large_busy, __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&heap->large_steal, 0, __ATOMIC_RELEASE);
            return -1;
        }
    }
    *parked = __atomic_exchange_n(&heap->large_slot, NULL, __ATOMIC_ACQ_REL);
    if (fenced)
        __atomic_store_n(&heap->large_steal, 0, __ATOMIC_RELEASE);
    return *parked != NULL;
}

int pym_large_steal_parked(pym_heap_t *heap, uint64_t freed_ms)
{
    pym_large_t *parked;
    int taken = pym_slot_take_by_scavenger(heap, &parked);
    if (taken > 0)
        pym_unpark(parked, freed_ms);
    return taken;
}

bool pym_large_park_fenced(void)
{
    return __atomic_load_n(&pym_large_slot_fenced, __ATOMIC_ACQUIRE);
}

/* The parked extent does not fit the request: it goes to the free extents
 * (where the request may well find it). */
static PYM_NOINLINE void *pym_unpark_unfit(pym_large_t *parked)
{
    pym_unpark(parked, 0);
    return NULL;
}

void *pym_large_take_parked(size_t size)
{
    pym_heap_t *heap = pym_tls_heap; /* the start-up heap's slot is always empty */
    if (__atomic_load_n(&heap->large_slot, __ATOMIC_RELAXED) == NULL)
        return NULL;
    pym_large_t *parked = pym_slot_swap_by_owner(heap, NULL);
    if (parked == NULL) /* (the scavenger took it) */
        return NULL;
    if (PYM_LIKELY(size <= parked->size)) {
        size_t bytes = pym_chunks_of(size) << PYM_CHUNK_SHIFT;
        if (PYM_LIKELY(parked->size - bytes <= bytes / 4)) {
            parked->requested = size;
            __atomic_store_n(&parked->state, PYM_LARGE_LIVE, __ATOMIC_RELEASE);
            return (void *)parked->base;
        }
    }
    return pym_unpark_unfit(parked);
}

void *pym_large_alloc(size_t size, size_t alignment, bool zero)
{
    if (size > PTRDIFF_MAX - PYM_CHUNK_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    if (alignment > PYM_CHUNK_SIZE || size >= pym_options.direct_threshold)
        return pym_direct_alloc(size, alignment > PYM_CHUNK_SIZE ? alignment : PYM_CHUNK_SIZE);
    size_t bytes = pym_chunks_of(size) << PYM_CHUNK_SHIFT;

    /* The extent this thread parked last, if it holds the request with at
     * most a quarter to spare: no lock.  Any other goes to the free extents
     * (where the request may well find it). */
    pym_heap_of_thread(); /* (a thread with large blocks only gets a heap here) */
    void *parked = pym_large_take_parked(size);
    if (parked != NULL) {
        if (zero)
            memset(parked, 0, size);
        return parked;
    }

    /* A descriptor for the part of a free extent a split leaves over: a
     * kept one, or one from the metadata before the lock (which has a lock
     * of its own). */
    pthread_mutex_lock(&pym_large_lock);
    pym_large_t *spare = pym_spare_take_locked();
    if (spare == NULL) {
        pthread_mutex_unlock(&pym_large_lock);
        spare = pym_meta_alloc(sizeof(pym_large_t));
        if (spare == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        pthread_mutex_lock(&pym_large_lock);
    }
    pym_large_t *large = pym_take_free_locked(bytes, size, &spare);
    pym_large_t *overflow = NULL;
    if (large != NULL && spare != NULL)
        pym_spare_put_locked(spare, &overflow);
    pthread_mutex_unlock(&pym_large_lock);
    if (large != NULL) {
        pym_free_descriptors(overflow);
        if (zero)
            memset((void *)large->base, 0, size);
        return (void *)large->base;
    }

    /* No free extent holds it: a fresh one (zero-filled by the kernel). */
    void *base = pym_os_map_aligned(bytes, PYM_CHUNK_SIZE);
    if (base == NULL) {
        pym_meta_free(spare, sizeof(pym_large_t));
        return NULL;
    }
    large = spare;
    large->base = (uintptr_t)base;
    large->size = bytes;
    large->requested = size;
    __atomic_store_n(&large->state, PYM_LARGE_LIVE, __ATOMIC_RELEASE);
    if (!pym_chunkmap_set(large->base, bytes, pym_large_entry(large))) {
        pym_os_unmap(base, bytes);
        pym_meta_free(large, sizeof(pym_large_t));
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_lock(&pym_large_lock);
    pym_count_live_locked(bytes);
    pthread_mutex_unlock(&pym_large_lock);
    return base;
}

/* ---- free ----------------------------------------------------------------------- */
/* Under the lock: make a live extent free, merged with its free neighbours
 * (whose descriptors go to `dead`, linked through age_next, for freeing
 * after the lock). */
static void pym_release_extent_locked(pym_large_t *large, uint64_t now_ms, pym_large_t **dead)
{
    pym_large_t *before = large->base >= PYM_CHUNK_SIZE ? pym_free_at(large->base - PYM_CHUNK_SIZE) : NULL;
    pym_large_t *after = pym_free_at(large->base + large->size);
    if (before != NULL) {
        pym_free_remove(before);
        before->size += large->size;
        pym_chunkmap_set(large->base, large->size, pym_large_entry(before));
        pym_spare_put_locked(large, dead);
        large = before;
    }
    if (after != NULL) {
        pym_free_remove(after);
        pym_chunkmap_set(after->base, after->size, pym_large_entry(large));
        large->size += after->size;
        pym_spare_put_locked(after, dead);
    }
    pym_free_insert(large, now_ms);
}

static void pym_free_descriptors(pym_large_t *dead)
{
    while (dead != NULL) {
        pym_large_t *next = dead->age_next;
        pym_meta_free(dead, sizeof(pym_large_t));
        dead = next;
    }
}

/* Under the lock: a live extent (or a parked one) becomes free, freed at
 * `freed_ms`; then what decayed or is over budget goes.  Unlocks. */
static void pym_release_extent_unlock(pym_large_t *large, uint64_t now_ms, uint64_t freed_ms)
{
    /* Extents that decayed go first: a block freed now must not refresh
     * the age of an old free neighbour by merging with it.  (An extent
     * unparked as old as the decay time goes right after.) */
    pym_large_t *victims = pym_free_victims_locked(now_ms, false);
    pym_large_t *dead = NULL;
    pym_release_extent_locked(large, freed_ms, &dead);
    pym_large_t *old = pym_free_victims_locked(now_ms, false);
    pthread_mutex_unlock(&pym_large_lock);
    pym_free_descriptors(dead);
    pym_unmap_victims(victims);
    pym_unmap_victims(old);
}

/* A parked extent (taken out of its slot) goes to the free extents, freed
 * at `freed_ms` (0: now; the scavenger gives the time it saw it parked
 * since, and an extent parked for the decay time is unmapped at once). */
static PYM_NOINLINE void pym_unpark(pym_large_t *large, uint64_t freed_ms)
{
    uint64_t now_ms = pym_os_now_ms();
    pthread_mutex_lock(&pym_large_lock);
    pym_large_live_count--;
    pym_large_live_bytes -= large->size;
    pym_release_extent_unlock(large, now_ms, freed_ms ? freed_ms : now_ms);
    /* Now a free extent, which must decay even if nobody frees a large block
     * again: extents parked below 1 MiB never asked for the scavenger, and
     * threads that exit unpark theirs here.  No lock is held. */
    pym_scavenge_wake();
    pym_scavenge_poll();
}

/* After a park that found the slot empty: a quiet thread must not keep a
 * big extent for ever, so the scavenger is wanted (and may start here: no
 * lock is held). */
static PYM_NOINLINE void pym_large_parked_big(void)
{
    pym_scavenge_want();
    pym_scavenge_poll();
}

/* Park a live extent the caller frees in its heap's slot; the one parked
 * before goes to the free extents.  Every call in it is a tail call. */
static PYM_ALWAYS_INLINE void pym_park(pym_heap_t *heap, pym_large_t *large)
{
    __atomic_store_n(&large->state, PYM_LARGE_PARKED, __ATOMIC_RELEASE);
    __atomic_store_n(&heap->large_parks, heap->large_parks + 1, __ATOMIC_RELAXED); /* the scavenger ages it */
    bool big = large->size >= PYM_MiB; /* read first: once parked, the scavenger may take it */
    pym_large_t *previous = pym_slot_swap_by_owner(heap, large);
    if (previous != NULL)
        pym_unpark(previous, 0);
    else if (big)
        pym_large_parked_big();
}

static PYM_NOINLINE void pym_large_free_locked(pym_large_t *large, void *ptr);

void pym_large_free(pym_large_t *large, void *ptr)
{
    /* The common case first, without the lock: the thread parks the extent
     * and its next large request of about that size takes it back.  A live
     * extent's fields are its owner's, the caller.  Anything else -- no
     * heap yet, the handshake not on yet -- goes to a function of its own,
     * so that this part needs no stack frame. */
    pym_heap_t *heap = pym_tls_heap;
    if (PYM_LIKELY(__atomic_load_n(&heap->state, __ATOMIC_RELAXED) == PYM_HEAP_LIVE && (uintptr_t)ptr == large->base
                   && __atomic_load_n(&large->state, __ATOMIC_ACQUIRE) == PYM_LARGE_LIVE
                   && __atomic_load_n(&pym_large_slot_fenced, __ATOMIC_RELAXED))) {
        pym_park(heap, large);
        return;
    }
    pym_large_free_locked(large, ptr);
}

/* Every other free: the first park (it turns the handshake on), a thread
 * that has no heap yet (it gets one), a kernel without membarrier (parks
 * with an exchange), a direct block, an invalid pointer. */
static PYM_NOINLINE void pym_large_free_locked(pym_large_t *large, void *ptr)
{
    pym_heap_t *heap = pym_heap_of_thread();
    if (heap != NULL && (uintptr_t)ptr == large->base
        && __atomic_load_n(&large->state, __ATOMIC_ACQUIRE) == PYM_LARGE_LIVE) {
        pym_large_enable_fence(); /* (returns at once after the first try) */
        pym_park(heap, large);
        return;
    }
    pthread_mutex_lock(&pym_large_lock);
    if (PYM_UNLIKELY((uintptr_t)ptr - large->base >= large->size)) {
        /* In the extent's last chunk but past its end (a direct block's
         * page tail): another mapping's. */
        pthread_mutex_unlock(&pym_large_lock);
        pym_invalid_free(ptr, "free");
        return;
    }
    uint8_t state = __atomic_load_n(&large->state, __ATOMIC_ACQUIRE);
    if (PYM_UNLIKELY((uintptr_t)ptr != large->base || state == PYM_LARGE_FREE || state == PYM_LARGE_PARKED)) {
        bool freed = state == PYM_LARGE_FREE || state == PYM_LARGE_PARKED;
        uintptr_t base = large->base;
        size_t size = large->size;
        pthread_mutex_unlock(&pym_large_lock);
        if (freed)
            pym_fatal("pymalloc: free(): double free of large block %p (inside a free extent %p, %zu bytes)", ptr,
                      (void *)base, size);
        pym_fatal("pymalloc: free(): invalid pointer %p: inside the large block %p (%zu bytes), not its start", ptr,
                  (void *)base, size);
    }
    pym_large_live_count--;
    pym_large_live_bytes -= large->size;
    if (state == PYM_LARGE_DIRECT) {
        pym_chunkmap_clear(large->base, large->size);
        pthread_mutex_unlock(&pym_large_lock);
        pym_os_unmap((void *)large->base, large->size);
        pym_meta_free(large, sizeof(pym_large_t));
        return;
    }
    uint64_t now_ms = pym_os_now_ms();
    pym_release_extent_unlock(large, now_ms, now_ms);
    pym_scavenge_wake();
    pym_scavenge_poll();
}

void pym_large_unpark_heap(pym_heap_t *heap, uint64_t now_ms, bool only_decayed)
{
    if (__atomic_load_n(&heap->large_slot, __ATOMIC_ACQUIRE) == NULL)
        return;
    if (only_decayed) {
        /* The park path reads no clock: an extent counts as parked since the
         * pass that first saw the heap's park count where it is now. */
        uint64_t parks = __atomic_load_n(&heap->large_parks, __ATOMIC_RELAXED);
        if (parks != heap->large_parks_seen) {
            heap->large_parks_seen = parks;
            heap->large_parks_seen_ms = now_ms;
            return;
        }
        if (now_ms - heap->large_parks_seen_ms >= pym_options.decay_ms)
            pym_large_steal_parked(heap, heap->large_parks_seen_ms);
        return;
    }
    pym_large_t *parked = pym_slot_swap_by_owner(heap, NULL);
    if (parked != NULL)
        pym_unpark(parked, 0);
}

size_t pym_large_usable_size(const pym_large_t *large, const void *ptr)
{
    if (large->base != (uintptr_t)ptr)
        return 0;
    uint8_t state = __atomic_load_n(&large->state, __ATOMIC_ACQUIRE);
    if (state == PYM_LARGE_DIRECT)
        return large->size;
    if (state != PYM_LARGE_LIVE)
        return 0;
    return pym_align_up(large->requested, pym_os_page_size());
}

/* ---- realloc --------------------------------------------------------------------- */
/* realloc of a direct block: shrink in place, grow in place or move its
 * pages to a new aligned mapping, all with mremap (no copy). */
static void *pym_direct_realloc(pym_large_t *large, void *ptr, size_t size)
{
    size_t page = pym_os_page_size();
    size_t old_size = large->size;
    if (size > PTRDIFF_MAX - PYM_CHUNK_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    size_t new_size = pym_align_up(size, page);
    if (new_size > old_size) {
        /* Grow by at least a quarter: repeated small appends then cost
         * O(log n) remaps instead of one per page. */
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
    } else if (new_size > old_size) {
        /* The chunk map must be able to describe the grown block before it
         * exists: its leaves are made first, so nothing can fail after the
         * pages have moved (a failure before leaves the block untouched). */
        if (!(pym_chunkmap_prepare(old_base, new_size) && pym_os_remap_in_place(ptr, old_size, new_size))) {
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
    }
    if (!pym_chunkmap_set(new_base, new_size, pym_large_entry(large)))
        pym_fatal("pymalloc: realloc(): the chunk map of %p failed after its leaves were made", (void *)new_base);
    if (new_base != old_base)
        pym_chunkmap_clear_if(old_base, old_size, pym_large_entry(large));
    pthread_mutex_lock(&pym_large_lock);
    large->base = new_base;
    large->size = new_size;
    large->requested = size;
    pym_large_live_bytes = pym_large_live_bytes - old_size + new_size;
    pym_note_peak_locked();
    pthread_mutex_unlock(&pym_large_lock);
    return (void *)new_base;
}

/* Move a block to a new one of `size` bytes by copying what it holds (at
 * most `size`); the old one is freed.  NULL (errno ENOMEM, the old block
 * intact) when no memory. */
static void *pym_large_move(void *ptr, size_t old_usable, size_t size)
{
    void *moved = pym_malloc(size);
    if (moved == NULL)
        return NULL;
    memcpy(moved, ptr, size < old_usable ? size : old_usable);
    pym_free(ptr);
    return moved;
}

/* realloc of an extent to `bytes` (whole chunks, more than it has) by
 * taking in the free extent that follows it; false when that is not free
 * or too small.  A descriptor left unused goes to `dead`.  Under the lock. */
static bool pym_grow_into_next_locked(pym_large_t *large, size_t bytes, pym_large_t **dead)
{
    pym_large_t *after = pym_free_at(large->base + large->size);
    if (after == NULL || large->size + after->size < bytes)
        return false;
    size_t wanted = bytes - large->size;
    pym_free_remove(after);
    pym_chunkmap_set(after->base, wanted, pym_large_entry(large));
    large->size += wanted;
    pym_large_live_bytes += wanted;
    pym_note_peak_locked();
    if (after->size > wanted) { /* the rest of it stays free, as old as it was */
        after->base += wanted;
        after->size -= wanted;
        pym_free_insert(after, after->freed_at_ms);
    } else {
        after->age_next = *dead;
        *dead = after;
    }
    return true;
}

void *pym_large_realloc(pym_large_t *large, void *ptr, size_t size)
{
    if (PYM_UNLIKELY((uintptr_t)ptr != large->base
                     || (large->state != PYM_LARGE_LIVE && large->state != PYM_LARGE_DIRECT)))
        pym_fatal("pymalloc: realloc(): invalid pointer %p: not a live large block", ptr);
    size_t old_usable = pym_large_usable_size(large, ptr);
    if (size <= PYM_MEDIUM_MAX) {
        /* A small block in a large extent (an over-aligned request) stays
         * where it is if it keeps more than half of what it may use:
         * realloc within the class of its usable size does not move. */
        if (size <= old_usable && size > old_usable / 2) {
            large->requested = size;
            return ptr;
        }
        return pym_large_move(ptr, old_usable, size);
    }
    if (size > PTRDIFF_MAX - PYM_CHUNK_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    if (large->state == PYM_LARGE_DIRECT) {
        /* Shrink only when the program asks for less than half of what it
         * asked for before: a block growing inside a roomy mapping stays. */
        if (size <= large->size && (size > large->requested / 2 || size > large->size / 2)) {
            large->requested = size;
            return ptr;
        }
        return pym_direct_realloc(large, ptr, size);
    }

    if (size >= pym_options.direct_threshold)
        return pym_large_move(ptr, old_usable, size); /* becomes a direct block */
    size_t bytes = pym_chunks_of(size) << PYM_CHUNK_SHIFT;
    if (bytes <= large->size && (bytes == large->size || size > large->requested / 2)) {
        /* Still in its extent, not shrunk to less than half: nothing moves
         * (a live extent's fields are its owner's: no lock). */
        large->requested = size;
        return ptr;
    }
    pym_large_t *spare = pym_meta_alloc(sizeof(pym_large_t));
    if (spare == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    pym_large_t *dead = NULL, *victims = NULL;
    void *result = ptr;
    pthread_mutex_lock(&pym_large_lock);
    if (bytes <= large->size) {
        /* Shrink: chunks past the new end go back when the program asks for
         * less than half of what it asked before (a block growing inside
         * its extent stays as it is). */
        if (bytes < large->size && size <= large->requested / 2) {
            pym_large_t *tail = spare;
            spare = NULL;
            tail->base = large->base + bytes;
            tail->size = large->size - bytes;
            __atomic_store_n(&tail->state, PYM_LARGE_LIVE, __ATOMIC_RELEASE);
            large->size = bytes;
            pym_chunkmap_set(tail->base, tail->size, pym_large_entry(tail));
            pym_large_live_bytes -= tail->size;
            uint64_t now_ms = pym_os_now_ms();
            victims = pym_free_victims_locked(now_ms, false);
            pym_release_extent_locked(tail, now_ms, &dead);
        }
        large->requested = size;
    } else {
        /* Grow by at least a quarter (in chunks): a block growing a little at
         * a time moves O(log n) times. */
        size_t geometric = pym_chunks_of(large->size + large->size / 4) << PYM_CHUNK_SHIFT;
        if (geometric > bytes && geometric <= pym_align_up(pym_options.direct_threshold, PYM_CHUNK_SIZE))
            bytes = geometric;
        if (pym_grow_into_next_locked(large, bytes, &dead)
            || pym_grow_into_next_locked(large, pym_chunks_of(size) << PYM_CHUNK_SHIFT, &dead)) {
            large->requested = size;
        } else {
            /* A free extent that holds it has its pages resident: copying
             * the block there beats faulting in every page of the growth. */
            pym_large_t *roomy = pym_take_free_locked(bytes, size, &spare);
            if (roomy != NULL) {
                pthread_mutex_unlock(&pym_large_lock);
                memcpy((void *)roomy->base, ptr, old_usable);
                pym_free(ptr);
                if (spare != NULL)
                    pym_meta_free(spare, sizeof(pym_large_t));
                pym_free_descriptors(dead);
                return (void *)roomy->base;
            }
            result = NULL; /* a fresh mapping, below */
        }
    }
    pthread_mutex_unlock(&pym_large_lock);
    if (spare != NULL)
        pym_meta_free(spare, sizeof(pym_large_t));
    pym_free_descriptors(dead);
    pym_unmap_victims(victims);
    if (result != NULL)
        return result;

    /* A fresh mapping: the pages move there with mremap (no copy); when the
     * extent spans mappings mremap cannot move, they are copied. */
    void *target = pym_os_map_aligned(bytes, PYM_CHUNK_SIZE);
    if (target == NULL)
        return NULL; /* errno is ENOMEM; the block is untouched */
    if (!pym_chunkmap_prepare((uintptr_t)target, bytes)) {
        pym_os_unmap(target, bytes);
        errno = ENOMEM;
        return NULL;
    }
    pym_large_t *moved = pym_meta_alloc(sizeof(pym_large_t));
    if (moved == NULL) {
        pym_os_unmap(target, bytes);
        errno = ENOMEM;
        return NULL;
    }
    moved->base = (uintptr_t)target;
    moved->size = bytes;
    moved->requested = size;
    __atomic_store_n(&moved->state, PYM_LARGE_LIVE, __ATOMIC_RELEASE);
    size_t old_size = large->size;
    bool remapped = pym_os_remap_onto(ptr, old_size, bytes, target) != NULL;
    if (!remapped) {
        target = pym_os_map_aligned(bytes, PYM_CHUNK_SIZE); /* remap_onto unmapped the first one */
        if (target == NULL || !pym_chunkmap_prepare((uintptr_t)target, bytes)) {
            if (target != NULL)
                pym_os_unmap(target, bytes);
            pym_meta_free(moved, sizeof(pym_large_t));
            errno = ENOMEM;
            return NULL;
        }
        moved->base = (uintptr_t)target;
        memcpy(target, ptr, old_usable);
    }
    pym_chunkmap_set(moved->base, bytes, pym_large_entry(moved));
    pthread_mutex_lock(&pym_large_lock);
    pym_count_live_locked(bytes);
    pthread_mutex_unlock(&pym_large_lock);
    if (remapped) {
        /* The old range is gone (its pages moved): forget it. */
        pym_chunkmap_clear_if(large->base, old_size, pym_large_entry(large));
        pthread_mutex_lock(&pym_large_lock);
        pym_large_live_count--;
        pym_large_live_bytes -= old_size;
        pthread_mutex_unlock(&pym_large_lock);
        pym_meta_free(large, sizeof(pym_large_t));
    } else {
        pym_free(ptr);
    }
    return target;
}

/* ---- giving memory back ------------------------------------------------------------ */
size_t pym_large_retained_estimate(void)
{
    return __atomic_load_n(&pym_free_bytes, __ATOMIC_RELAXED);
}

size_t pym_large_trim(void)
{
    pthread_mutex_lock(&pym_large_lock);
    pym_large_t *victims = pym_free_victims_locked(0, true);
    pthread_mutex_unlock(&pym_large_lock);
    return pym_unmap_victims(victims);
}

size_t pym_large_decay(uint64_t now_ms)
{
    pthread_mutex_lock(&pym_large_lock);
    pym_large_t *victims = pym_free_victims_locked(now_ms, false);
    pthread_mutex_unlock(&pym_large_lock);
    return pym_unmap_victims(victims);
}

void pym_large_counters_locked(pym_stats_t *out)
{
    size_t parked_count = 0;
    size_t parked_bytes = pym_heap_parked_bytes(&parked_count); /* counted live here: they are not free extents */
    out->large_count = pym_large_live_count - (parked_count < pym_large_live_count ? parked_count : pym_large_live_count);
    out->large_bytes = pym_large_live_bytes - (parked_bytes < pym_large_live_bytes ? parked_bytes : pym_large_live_bytes);
    out->large_cached_bytes = pym_free_bytes + parked_bytes;
    out->large_peak_bytes = pym_large_peak_bytes;
}
