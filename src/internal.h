/*
 * internal.h -- private structures and tunables shared by pymalloc's files.
 *
 * Address space layout
 * --------------------
 * Every mapping pymalloc makes starts on a CHUNK boundary (256 KiB).  A chunk
 * is one of:
 *   - a small arena: 64 pools of 4 KiB, each pool serving one small class
 *     (requests <= 512 bytes), with its 64-byte header at the start of the
 *     pool, exactly as CPython's obmalloc lays them out;
 *   - a medium span: the whole chunk serves one medium class (513 B..128 KiB),
 *     its pool header lives out of line in the chunk's descriptor;
 *   - part of a large mapping (> 128 KiB), described out of line too.
 * The chunk map (chunkmap.c), a two-level radix table indexed by address >> 18,
 * maps each chunk to its descriptor, tagged with its kind.  free() therefore
 * classifies any pointer in O(1) without locks and without touching memory
 * that might not be mapped; a pointer whose chunk is not in the map is not
 * pymalloc's.
 *
 * Each chunk's descriptor also holds a pool directory: per pool its class,
 * the constants of the divisibility test for its block size, and how many
 * blocks it has handed out.  free() validates a pointer and finds its class
 * from the directory -- dense metadata that stays in cache -- without reading
 * the pool header, which in a large heap is a cache and TLB miss.
 *
 * Threads
 * -------
 * Each thread owns a heap (heap.c): per class a thread cache (a bin, a stack
 * of free blocks) in front of a list of pools with free blocks.  malloc pops
 * from the bin, free pushes onto it, whoever owns the block's pool: the fast
 * paths touch the bin and the directory only, take no lock and make no
 * atomic read-modify-write.  Bins are refilled from, and flushed in batches
 * to, the pools.  Only a pool's owner touches its free list and used count;
 * a flushed block of another thread's pool goes, chained with its neighbours
 * of the same owner, onto that owner heap's remote list with one CAS, and the
 * owner collects the list on its slow path.  Arenas, the chunk map and large
 * mappings are shared and guarded by mutexes that only slow paths take.
 */
#ifndef PYM_INTERNAL_H
#define PYM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pymalloc.h"

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

/* ---- compiler helpers ------------------------------------------------- */
#define PYM_LIKELY(x)    __builtin_expect(!!(x), 1)
#define PYM_UNLIKELY(x)  __builtin_expect(!!(x), 0)
#define PYM_INTERNAL     __attribute__((visibility("hidden")))
#define PYM_NOINLINE     __attribute__((noinline))
#define PYM_COLD         __attribute__((cold, noinline))
#define PYM_ALWAYS_INLINE inline __attribute__((always_inline))

#define PYM_KiB 1024UL
#define PYM_MiB (1024 * PYM_KiB)

/* ---- tunables ----------------------------------------------------------- */
#define PYM_ALIGNMENT            8        /* spacing of the small classes */
#define PYM_SMALL_MAX            512      /* largest request served from pools */
#define PYM_SMALL_CLASSES        (PYM_SMALL_MAX / PYM_ALIGNMENT)
#define PYM_POOL_SHIFT           12
#define PYM_POOL_SIZE            (1UL << PYM_POOL_SHIFT)   /* 4 KiB pools */
#define PYM_POOL_HEADER_SIZE     64       /* pool header; blocks start after it */
#define PYM_CHUNK_SHIFT          18
#define PYM_CHUNK_SIZE           (1UL << PYM_CHUNK_SHIFT)  /* 256 KiB arenas */
#define PYM_POOLS_PER_ARENA      (PYM_CHUNK_SIZE / PYM_POOL_SIZE)
#define PYM_MEDIUM_MAX           (128 * PYM_KiB) /* largest request served from spans */
#define PYM_MEDIUM_STEPS         4        /* medium classes per doubling of size */
#define PYM_MEDIUM_CLASSES       32       /* 640 B .. 128 KiB */
#define PYM_CLASS_COUNT          (PYM_SMALL_CLASSES + PYM_MEDIUM_CLASSES)
#define PYM_DIRECT_THRESHOLD     (64 * PYM_MiB) /* default: from here blocks are mapped and unmapped directly */
#define PYM_CACHE_SLOTS          64       /* most blocks a thread cache bin holds (small classes get all) */
#define PYM_SIZE_TABLE_MAX       4096     /* malloc finds the bin of a request up to this size with one table load */
#define PYM_MEDIUM_TABLE_SHIFT   7        /* above it, with one load indexed by size / 128 (medium sizes are multiples of 128) */
#define PYM_POOL_PREFETCH_MIN    8        /* a refill taking this many blocks of a pool's free list prefetches the pool */
#define PYM_CACHE_CLASS_BYTES    (16 * PYM_KiB) /* a medium class's bin holds at most this many bytes of blocks (at least one) */
#define PYM_HEAP_POOL_BATCH      8        /* fresh pools a heap takes per arena-lock acquisition */
#define PYM_SPAN_FREE_WORDS      7        /* words of a medium span's free bitmap (409 blocks of 640 B at most) */
#define PYM_HEAP_EMPTY_POOLS_MAX 16       /* empty pools a heap keeps before returning some */
#define PYM_CHUNK_CACHE_MAX      1024     /* default: at most this many empty chunks (256 MiB) wait for reuse or decay */
#define PYM_LARGE_BINS           256      /* free extents of n chunks wait in size bin n - 1; longer ones in the last */
#define PYM_LARGE_CACHE_DECAY_MS 1000     /* default: a free extent or empty chunk unused this long goes back to the OS */
#define PYM_ADDRESS_BITS         48       /* user address space covered by the chunk map */
#define PYM_CHUNKMAP_LEAF_BITS   15       /* chunk-map entries per leaf: 2^15 (8 GiB of address space) */
#define PYM_PAGEMAP_LEAF_SHIFT   32       /* one page-map leaf per 4 GiB of address space (2^20 pages, 4 MiB) */

#if PYM_POOL_SIZE * PYM_POOLS_PER_ARENA != PYM_CHUNK_SIZE
#error "an arena must hold a whole number of pools"
#endif
#if PYM_POOLS_PER_ARENA != 64
#error "the arena bookkeeping assumes 64 pools per arena (one bit each)"
#endif
#if PYM_SMALL_CLASSES != 64
#error "the design has 64 small classes spaced 8 bytes apart"
#endif
#if PYM_POOL_HEADER_SIZE % 64 != 0
#error "the pool header must keep blocks whose size is a multiple of 64 aligned to 64"
#endif
#if PYM_MEDIUM_MAX * 2 > PYM_CHUNK_SIZE
#error "a medium span must hold at least two blocks"
#endif
#if (PYM_SMALL_MAX << (PYM_MEDIUM_CLASSES / PYM_MEDIUM_STEPS)) != PYM_MEDIUM_MAX
#error "medium classes must cover (PYM_SMALL_MAX, PYM_MEDIUM_MAX] in PYM_MEDIUM_STEPS steps per doubling"
#endif
#if (PYM_CHUNK_SIZE / (PYM_SMALL_MAX + PYM_SMALL_MAX / PYM_MEDIUM_STEPS)) > PYM_SPAN_FREE_WORDS * 64
#error "a medium span's free bitmap must have a bit for each block of the smallest medium class"
#endif
#if PYM_CHUNK_SIZE / PYM_POOL_SIZE > 64
#error "a medium span's purged pages fit one 64-bit mask"
#endif
#if (PYM_CHUNK_SIZE / (PYM_SMALL_MAX + PYM_SMALL_MAX / PYM_MEDIUM_STEPS)) > UINT16_MAX
#error "the pool directory counts carved blocks in 16 bits"
#endif
#if PYM_SIZE_TABLE_MAX > PYM_MEDIUM_MAX || PYM_SIZE_TABLE_MAX < PYM_SMALL_MAX
#error "the size table covers the small classes and part of the medium ones"
#endif
#if (PYM_SMALL_MAX / PYM_MEDIUM_STEPS) % (1 << PYM_MEDIUM_TABLE_SHIFT) != 0
#error "every medium block size must be a multiple of the medium table's granule"
#endif
#if PYM_PAGEMAP_LEAF_SHIFT != 32
#error "free's page-map index is the low 32 bits of the address (one leaf per 4 GiB)"
#endif
#if PYM_DIRECT_THRESHOLD <= PYM_MEDIUM_MAX
#error "the direct-mapping threshold must lie above the medium classes"
#endif

/* ---- forward declarations ---------------------------------------------- */
typedef struct pym_block pym_block_t;
typedef struct pym_pool pym_pool_t;
typedef struct pym_arena pym_arena_t;
typedef struct pym_large pym_large_t;
typedef struct pym_heap pym_heap_t;
typedef int32_t pym_bin_offset_t; /* a thread-cache bin, as its offset from the thread pointer */

/* A free block holds the link to the next free block in its first word. */
struct pym_block {
    pym_block_t *next;
};

/* ---- size classes (pool.c) -------------------------------------------- */
typedef struct pym_class {
    uint32_t block_size;         /* bytes per block */
    uint32_t capacity;           /* blocks per pool (small) or span (medium) */
    uint32_t rotate;             /* divisibility test: trailing zero bits of block_size */
    uint32_t odd_inverse;        /* multiplicative inverse of block_size's odd part mod 2^32 */
    uint32_t max_quotient;       /* UINT32_MAX / block_size */
    uint32_t cache_capacity;     /* blocks a thread cache bin of this class holds */
} pym_class_t;

PYM_INTERNAL extern pym_class_t pym_classes[PYM_CLASS_COUNT];
/* Small request size -> class, indexed by (size + 7) / 8; filled at start-up
 * for the alignment mode (16: every request gets a 16-aligned class). */
PYM_INTERNAL extern uint8_t pym_small_class_of[PYM_SMALL_CLASSES + 1];

PYM_INTERNAL void pym_classes_init(unsigned alignment);

/* Class of a request of PYM_SMALL_MAX < size <= PYM_MEDIUM_MAX bytes: the
 * position of the top bit of size - 1 gives the doubling, the two bits
 * below it the step. */
static PYM_ALWAYS_INLINE unsigned pym_medium_class_of(size_t size)
{
    size_t last = size - 1;
    unsigned top_bit = 63u - (unsigned)__builtin_clzl(last);             /* >= 9 */
    unsigned step = (unsigned)(last >> (top_bit - 2)) - PYM_MEDIUM_STEPS; /* 0..3 */
    return PYM_SMALL_CLASSES + (top_bit - 9) * PYM_MEDIUM_STEPS + step;
}

/* offset / block size when `offset` is a multiple of the block size (whose
 * odd part has inverse `odd_inverse` mod 2^32 and whose power of two is
 * 2^rotate), a number above UINT32_MAX / block size otherwise: one multiply
 * and one rotate stand for a division and a remainder test. */
static PYM_ALWAYS_INLINE uint32_t pym_block_index(uint32_t offset, uint32_t odd_inverse, unsigned rotate)
{
    uint32_t product = offset * odd_inverse;
    return (product >> rotate) | (product << ((32 - rotate) & 31));
}

/* ---- pools -------------------------------------------------------------- */
enum pym_pool_state {
    PYM_POOL_UNUSED = 0,         /* never carved, or returned to its arena */
    PYM_POOL_USED,               /* owned, in its heap's class list */
    PYM_POOL_FULL,               /* owned, no block left, in no list */
    PYM_POOL_EMPTY,              /* owned, all blocks free, in its heap's empty cache */
    PYM_POOL_ABANDONED,          /* its thread exited; in the arena's abandoned list */
};

/* Pool header: at the start of each small pool, inside the chunk descriptor
 * for a medium span.  Its fields belong to the owning thread (or to the
 * arena lock when the pool is abandoned or unused); other threads never read
 * it, so its cache line stays with the owner.  A block "used" by the pool is
 * out of it: with a program or in a thread cache. */
struct pym_pool {
    pym_block_t *free;           /* small pool: next free block to hand out, NULL if none (a span keeps a bitmap) */
    uint32_t used;               /* blocks out of the pool (handed out, cached, or in transfer lists) */
    uint8_t size_class;          /* index into pym_classes (copy of the directory's) */
    uint8_t state;               /* enum pym_pool_state */
    uint8_t index;               /* pool number inside its arena (0 for a span) */
    uint8_t reserved;            /* padding */
    pym_pool_t *next;            /* link in whichever list holds the pool */
    pym_pool_t *prev;
    pym_arena_t *arena;          /* descriptor of the chunk holding the pool */
    char padding[24];            /* the header is one cache line */
};
_Static_assert(sizeof(pym_pool_t) == PYM_POOL_HEADER_SIZE, "the pool header is one cache line");

/* A pool's entry in its chunk's directory: everything a thread other than
 * the owner reads -- free() and cache flushes -- in dense, read-mostly
 * memory.  Written by the pool's owner (`carved` now and then as it carves,
 * the rest when the pool changes class or hands), read by any thread. */
typedef struct pym_pool_info {
    uint32_t odd_inverse;        /* divisibility test of the block size (pym_block_index) */
    uint16_t carved;             /* blocks handed out at least once (atomic); 0 while not in use */
    uint8_t rotate;              /* trailing zero bits of the block size */
    uint8_t size_class;          /* class the pool serves */
    pym_heap_t *owner;           /* owning heap (atomic); NULL when abandoned or unused */
} pym_pool_info_t;
_Static_assert(sizeof(pym_pool_info_t) == 16, "the pool directory packs 4 pools per cache line");

static inline char *pym_pool_first_block(const pym_pool_t *pool);

/* ---- chunk map (chunkmap.c) --------------------------------------------- */
/* One bit per kind, so free's fast path tests "small arena" with one `test`
 * (descriptors are 64-byte aligned: the low bits are free for the tag). */
enum pym_chunk_kind {
    PYM_CHUNK_NONE = 0,          /* not pymalloc's */
    PYM_CHUNK_SMALL = 1,         /* small arena: entry points to its pym_arena_t */
    PYM_CHUNK_MEDIUM = 2,        /* medium span: entry points to its pym_arena_t */
    PYM_CHUNK_LARGE = 4,         /* large mapping: entry points to its pym_large_t */
};
#define PYM_CHUNK_KIND_MASK ((uintptr_t)7)

#define PYM_CHUNKMAP_LEAF_SIZE ((size_t)1 << PYM_CHUNKMAP_LEAF_BITS)
#define PYM_CHUNKMAP_ROOT_SIZE ((size_t)1 << (PYM_ADDRESS_BITS - PYM_CHUNK_SHIFT - PYM_CHUNKMAP_LEAF_BITS))
typedef struct pym_chunkmap_leaf {
    uintptr_t entries[PYM_CHUNKMAP_LEAF_SIZE]; /* descriptor address | kind, 0 if none */
} pym_chunkmap_leaf_t;
PYM_INTERNAL extern pym_chunkmap_leaf_t *pym_chunkmap_root[PYM_CHUNKMAP_ROOT_SIZE];

/* Kind-tagged entry for the chunk holding `address`, 0 if not pymalloc's. */
static PYM_ALWAYS_INLINE uintptr_t pym_chunkmap_lookup(uintptr_t address)
{
    uintptr_t root_index = address >> (PYM_CHUNK_SHIFT + PYM_CHUNKMAP_LEAF_BITS);
    if (PYM_UNLIKELY(root_index >= PYM_CHUNKMAP_ROOT_SIZE))
        return 0; /* beyond the 48-bit space: never pymalloc's */
    pym_chunkmap_leaf_t *leaf = __atomic_load_n(&pym_chunkmap_root[root_index], __ATOMIC_ACQUIRE);
    if (PYM_UNLIKELY(leaf == NULL))
        return 0;
    return __atomic_load_n(&leaf->entries[(address >> PYM_CHUNK_SHIFT) & (PYM_CHUNKMAP_LEAF_SIZE - 1)],
                           __ATOMIC_ACQUIRE);
}
/* Map every chunk of [base, base + size) to entry; false when out of memory.
 * Callers hold the lock that owns the range (arena or large lock). */
PYM_INTERNAL bool pym_chunkmap_set(uintptr_t base, size_t size, uintptr_t entry);
PYM_INTERNAL void pym_chunkmap_clear(uintptr_t base, size_t size);
/* Make sure the leaves covering [base, base + size) exist, so that a later
 * pym_chunkmap_set of that range cannot fail; false when out of memory. */
PYM_INTERNAL bool pym_chunkmap_prepare(uintptr_t base, size_t size);
/* Clear only the entries still equal to `entry` (a range the kernel may
 * already have given to someone else). */
PYM_INTERNAL void pym_chunkmap_clear_if(uintptr_t base, size_t size, uintptr_t entry);

/* ---- arenas and chunks (arena.c) ---------------------------------------- */
/* Descriptor of a 256 KiB chunk used as a small arena or a medium span,
 * allocated out of line so all 64 pools of an arena hold blocks. */
struct pym_arena {
    uintptr_t base;              /* chunk address, 256 KiB aligned */
    uint64_t free_mask;          /* small: bit i set when pool i is in no heap */
    uint64_t dirty_mask;         /* small: bit i set when free pool i may still hold pages */
    uint64_t aged_mask;          /* small: free and dirty at the scavenger's previous pass */
    uint32_t free_pools;         /* small: number of bits set in free_mask */
    uint8_t kind;                /* PYM_CHUNK_SMALL or PYM_CHUNK_MEDIUM */
    pym_arena_t *next;           /* usable-arena bucket list (small arenas with free pools) */
    pym_arena_t *prev;
    pym_arena_t *all_next;       /* every chunk in use, for statistics */
    pym_arena_t *all_prev;
    uint64_t cached_at_ms;       /* in the chunk cache: when it entered (monotonic milliseconds) */
    pym_pool_t span;             /* medium: the span's pool header */
    uint64_t span_free[PYM_SPAN_FREE_WORDS]; /* medium: bit i set when carved block i is free in the span */
    uint64_t span_purged;        /* medium: bit p set when page p was given back and not used since */
    pym_pool_info_t pools[PYM_POOLS_PER_ARENA]; /* directory: small: one per pool; medium: [0] */
};

/* The directory entry of a pool. */
static inline pym_pool_info_t *pym_pool_info(const pym_pool_t *pool)
{
    return &pool->arena->pools[pool->index];
}

/* The pool's owning heap, NULL when abandoned or unused. */
static inline pym_heap_t *pym_pool_owner(const pym_pool_t *pool)
{
    return __atomic_load_n(&pym_pool_info(pool)->owner, __ATOMIC_ACQUIRE);
}

static inline void pym_pool_set_owner(const pym_pool_t *pool, pym_heap_t *owner)
{
    __atomic_store_n(&pym_pool_info(pool)->owner, owner, __ATOMIC_RELEASE);
}

/* Blocks the pool has handed out at least once (its bump offset in blocks). */
static inline uint32_t pym_pool_carved(const pym_pool_t *pool)
{
    return __atomic_load_n(&pym_pool_info(pool)->carved, __ATOMIC_RELAXED);
}

PYM_INTERNAL extern pthread_mutex_t pym_arena_lock;

/* Under pym_arena_lock: up to `want` unused small pools, linked through
 * `next`, taken from the most used arenas first; NULL when out of memory. */
PYM_INTERNAL pym_pool_t *pym_arena_take_pools_locked(unsigned want, unsigned *got);
/* Under pym_arena_lock: return an empty pool (small or medium span) to its
 * chunk; an arena whose pools are all back is cached or unmapped. */
PYM_INTERNAL void pym_arena_release_pool_locked(pym_pool_t *pool);
/* The same for a pool that has been unused for the decay time already (the
 * scavenger's): a chunk it empties is unmapped at the next decay pass. */
PYM_INTERNAL void pym_arena_release_decayed_pool_locked(pym_pool_t *pool);
/* Under pym_arena_lock: a fresh medium span of class `size_class`. */
PYM_INTERNAL pym_pool_t *pym_arena_take_span_locked(unsigned size_class);
/* Abandoned pools: non-empty pools whose thread exited, per class. */
PYM_INTERNAL void pym_arena_abandon_pool_locked(pym_pool_t *pool);
PYM_INTERNAL pym_pool_t *pym_arena_adopt_pool_locked(unsigned size_class);
PYM_INTERNAL void pym_arena_unlink_abandoned_locked(pym_pool_t *pool);
/* Under pym_arena_lock: unmap the cached empty chunks and give back the
 * pages of free pools in arenas still in use; returns the bytes released. */
PYM_INTERNAL size_t pym_arena_trim_locked(void);
/* Under pym_arena_lock: unmap the empty chunks cached for the decay time;
 * returns the bytes released. */
PYM_INTERNAL size_t pym_arena_decay_locked(uint64_t now_ms);
/* Under pym_arena_lock: whether anything waits to decay (cached chunks,
 * free pools holding pages). */
PYM_INTERNAL bool pym_arena_has_idle_pages_locked(void);
/* Bytes of empty chunks cached (racy read, no lock: the scavenger's start). */
PYM_INTERNAL size_t pym_arena_retained_estimate(void);
/* Visit every chunk in use (statistics); caller holds pym_arena_lock. */
PYM_INTERNAL pym_arena_t *pym_arena_first_locked(void);
PYM_INTERNAL void pym_arena_counters_locked(pym_stats_t *out);

/* Initialise a pool taken from an arena to serve `size_class` (its pages
 * then lead free to that class's bin). */
PYM_INTERNAL void pym_pool_init(pym_pool_t *pool, unsigned size_class, pym_heap_t *owner);
/* Point the page-map entries of a pool's pages (one page, or a span's
 * chunk) at `bin`; 0 when the pool stops serving blocks. */
PYM_INTERNAL void pym_pool_set_pages(const pym_pool_t *pool, pym_bin_offset_t bin);
/* The pool operations (pool.c).  The caller owns the pool (holds its heap's
 * lock), or holds the lock that does (arena lock for an abandoned pool,
 * shared-heap lock).
 * Move up to `want` blocks out of the pool into `out`, in the order a bin
 * pops them: lowest address first (its free blocks, then never-used ones,
 * whose pages are not touched: they stay unfaulted until the program uses
 * them); returns how many. */
PYM_INTERNAL unsigned pym_pool_take(pym_pool_t *pool, void **out, unsigned want);
/* Give a validated block back to its pool (catching the double frees the
 * pool can see); returns the pool's new used count. */
PYM_INTERNAL uint32_t pym_pool_push_block(pym_pool_t *pool, pym_block_t *block);
/* A medium span: give back the pages that hold no block in use (with
 * madvise, runs of pages at a time, skipping pages given back already);
 * returns the bytes released. */
PYM_INTERNAL size_t pym_span_decommit_free(pym_pool_t *span);
/* Free blocks a pool holds (not counting blocks in caches or transfer lists). */
static inline uint32_t pym_pool_free_count(const pym_pool_t *pool)
{
    return pym_classes[pool->size_class].capacity - pool->used;
}

/* ---- large blocks: extents of whole chunks (large.c) -------------------- */
enum pym_large_state {
    PYM_LARGE_LIVE = 1,          /* an extent handed out */
    PYM_LARGE_FREE,              /* an extent kept for reuse, its pages committed, until it decays */
    PYM_LARGE_DIRECT,            /* handed out, mapped on its own (huge or over-aligned): unmapped when freed */
    PYM_LARGE_PARKED,            /* freed, kept in the freeing thread's heap slot for its next large request */
};
/* An extent: a run of whole chunks that is one large block, or free.  Every
 * chunk of it maps to this descriptor in the chunk map. */
struct pym_large {
    uintptr_t base;              /* first chunk: the user's pointer when handed out */
    size_t size;                 /* bytes: whole chunks (direct: whole pages) */
    size_t requested;            /* handed out: bytes the program last asked for */
    pym_large_t *bin_next;       /* free: its size bin, most recently freed first */
    pym_large_t *bin_prev;
    pym_large_t *age_next;       /* free: the age list, most recently freed first */
    pym_large_t *age_prev;
    uint64_t freed_at_ms;        /* free: when it last became free (monotonic milliseconds) */
    uint16_t bin;                /* free: index of its size bin */
    uint8_t state;               /* enum pym_large_state (atomic) */
};
PYM_INTERNAL extern pthread_mutex_t pym_large_lock;
/* Send the extent a heap parked to the free extents (its own thread at
 * exit and trim; the scavenger, with `only_decayed`: only when parked for
 * the decay time). */
PYM_INTERNAL void pym_large_unpark_heap(pym_heap_t *heap, uint64_t now_ms, bool only_decayed);
PYM_INTERNAL void *pym_large_alloc(size_t size, size_t alignment, bool zero);
/* malloc's first try for a large request: the extent the calling thread
 * parked, if it fits (no lock); NULL otherwise.  The caller checked hooks. */
PYM_INTERNAL void *pym_large_take_parked(size_t size);
/* The scavenger's side of the parking handshake (large.c): take another
 * thread's parked extent to the free extents, as freed at `freed_ms` (0:
 * now).  1: taken, 0: the slot was empty, -1: its owner was updating it
 * (try again later).  Whether the handshake is on (membarrier registered). */
PYM_INTERNAL int pym_large_steal_parked(pym_heap_t *heap, uint64_t freed_ms);
PYM_INTERNAL bool pym_large_park_fenced(void);
/* A forked child starts with the parking handshake off (large.c). */
PYM_INTERNAL void pym_large_after_fork_child(void);
PYM_INTERNAL void pym_large_free(pym_large_t *large, void *ptr);
PYM_INTERNAL void *pym_large_realloc(pym_large_t *large, void *ptr, size_t size);
/* Bytes usable in a live large block (0 when `ptr` is not one's start). */
PYM_INTERNAL size_t pym_large_usable_size(const pym_large_t *large, const void *ptr);
PYM_INTERNAL void pym_large_counters_locked(pym_stats_t *out);
/* Unmap every free extent; returns the bytes released. */
PYM_INTERNAL size_t pym_large_trim(void);
/* Bytes of free extents (racy read, no lock). */
PYM_INTERNAL size_t pym_large_retained_estimate(void);
/* Unmap the free extents unused for the decay time; returns the bytes
 * released (the background scavenger calls it). */
PYM_INTERNAL size_t pym_large_decay(uint64_t now_ms);

/* ---- thread caches: bins in thread-local storage (heap.c) --------------- */
/* A thread cache bin: a stack of free blocks of one class.  Empty when
 * cursor == base, full when cursor == limit; base[-1] is always NULL, so
 * free's check of the block pushed last needs no emptiness test.  The bins
 * live in static thread-local storage (pym_tls_bins), so that malloc and
 * free reach a bin with one %fs-relative access and no pointer chase; their
 * slots live in the thread's heap.  A bin that is all zero -- every bin of
 * a thread before its first slow path, and bin 0 always -- is both empty
 * and full, so every malloc and free that reaches it takes its slow path. */
typedef struct pym_cache_bin {
    void **cursor;               /* next slot to fill; the top block is cursor[-1] */
    void **base;                 /* first slot */
    void **limit;                /* one past the last slot */
} pym_cache_bin_t;
#define PYM_BIN_COUNT (PYM_CLASS_COUNT + 1) /* bin 0 never holds a block; class c has bin c + 1 */
#define PYM_CACHE_BIN_STRIDE (PYM_CACHE_SLOTS + 1) /* slots per bin, with its NULL sentinel */
PYM_INTERNAL extern __thread pym_cache_bin_t pym_tls_bins[PYM_BIN_COUNT] __attribute__((tls_model("initial-exec")));

/* Bins are named by their offset from the thread pointer (the same in every
 * thread: static TLS), so that the tables below can hold them.  The fast
 * paths turn an offset into a %fs-relative access (x86-64, GCC's and clang's
 * __seg_fs address space); sanitizer builds and other machines add the
 * offset to __builtin_thread_pointer(), which the sanitizers instrument. */
#if !defined(__x86_64__) || !defined(__SEG_FS) || defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PYM_BIN_GENERIC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define PYM_BIN_GENERIC 1
#endif
#endif
#ifdef PYM_BIN_GENERIC
typedef pym_cache_bin_t *pym_fast_bin_t;
static PYM_ALWAYS_INLINE pym_fast_bin_t pym_bin_at(pym_bin_offset_t offset)
{
    return (pym_cache_bin_t *)((char *)__builtin_thread_pointer() + offset);
}
/* Other threads read cursors for statistics: relaxed atomics (plain moves). */
#define pym_fast_bin_set_cursor(bin, value) __atomic_store_n(&(bin)->cursor, (value), __ATOMIC_RELAXED)
#else
typedef pym_cache_bin_t __seg_fs *pym_fast_bin_t;
static PYM_ALWAYS_INLINE pym_fast_bin_t pym_bin_at(pym_bin_offset_t offset)
{
    return (pym_fast_bin_t)(intptr_t)offset;
}
/* A plain store is what a relaxed atomic store is on x86-64; GCC has no
 * atomics on other address spaces. */
#define pym_fast_bin_set_cursor(bin, value) ((bin)->cursor = (value))
#endif

/* The bin of each class as a thread-pointer offset (pym_class_bin[c] is
 * bin c + 1), and of bin 0, which never holds a block. */
PYM_INTERNAL extern pym_bin_offset_t pym_class_bin[PYM_CLASS_COUNT];
PYM_INTERNAL extern pym_bin_offset_t pym_no_bin;
/* The tables malloc's fast path reads: request size -> bin, for sizes up to
 * PYM_SIZE_TABLE_MAX, and for medium sizes by (size + 127) / 128.  They are
 * used for a request only below the two limits, which are 0 until start-up
 * has filled the tables (the first mallocs of a process may come from other
 * libraries' constructors, before pymalloc's) and while allocation hooks are
 * installed or debug mode is on: every malloc then reaches a slow path,
 * which starts pymalloc up or reports it.  A limit is compared with the size
 * in memory, so hooks and start-up cost the fast path nothing. */
PYM_INTERNAL extern pym_bin_offset_t pym_size_bin[PYM_SIZE_TABLE_MAX + 1];
PYM_INTERNAL extern pym_bin_offset_t pym_medium_bin[(PYM_MEDIUM_MAX >> PYM_MEDIUM_TABLE_SHIFT) + 1];
PYM_INTERNAL extern size_t pym_size_bin_limit;   /* PYM_SIZE_TABLE_MAX + 1, or 0 */
PYM_INTERNAL extern size_t pym_medium_bin_limit; /* PYM_MEDIUM_MAX + 1, or 0 */
/* Fill the tables (start-up), and open or close them to the fast path. */
PYM_INTERNAL void pym_bin_tables_init(void);
PYM_INTERNAL void pym_bin_tables_route(bool hooked);

/* Set a bin's cursor from a slow path (other threads read it racily). */
static PYM_ALWAYS_INLINE void pym_bin_set_cursor(pym_cache_bin_t *bin, void **cursor)
{
    __atomic_store_n(&bin->cursor, cursor, __ATOMIC_RELAXED);
}

/* The calling thread's bin of class `size_class` as an ordinary pointer. */
static PYM_ALWAYS_INLINE pym_cache_bin_t *pym_bin_of_class(unsigned size_class)
{
    return &pym_tls_bins[size_class + 1];
}

/* ---- page map (pagemap.c) ----------------------------------------------- */
/* Per 4 KiB page of the address space, the bin (thread-pointer offset) of the
 * class whose pool or span holds the page, 0 for every other page: pages
 * of no pool in use, of large blocks, of other allocators.  It is what lets
 * free() send a block to its bin with two dependent loads and no look at
 * any descriptor.  Two levels: a root of 2^16 leaf pointers indexed by
 * address >> 32 (48-bit space), leaves of 2^20 entries (4 MiB each, mapped
 * when a chunk in their range is first mapped, pages touched only where
 * pools are).  Entries are set when a pool or span starts serving a class
 * and cleared when it stops, by the thread that owns it; free reads them
 * without a lock.  While hooks are installed the block grid below is all
 * ones, so that every free fails the grid test and takes its slow path
 * (which reports it): the root is a static array, one load fewer in free's
 * chain of dependent loads than reading it through a pointer. */
#define PYM_PAGEMAP_LEAF_SIZE ((size_t)1 << (PYM_PAGEMAP_LEAF_SHIFT - PYM_POOL_SHIFT))
#define PYM_PAGEMAP_ROOT_SIZE ((size_t)1 << (PYM_ADDRESS_BITS - PYM_PAGEMAP_LEAF_SHIFT))
PYM_INTERNAL extern pym_bin_offset_t *pym_pagemap_root[];

/* The bin of the page holding `address`; 0 when it holds no small or medium block. */
static PYM_ALWAYS_INLINE pym_bin_offset_t pym_pagemap_lookup(uintptr_t address)
{
    uintptr_t root_index = address >> PYM_PAGEMAP_LEAF_SHIFT;
    if (PYM_UNLIKELY(root_index >= PYM_PAGEMAP_ROOT_SIZE))
        return 0;
    pym_bin_offset_t *leaf = __atomic_load_n(&pym_pagemap_root[root_index], __ATOMIC_ACQUIRE);
    if (PYM_UNLIKELY(leaf == NULL))
        return 0;
    return __atomic_load_n(&leaf[(uint32_t)address >> PYM_POOL_SHIFT], __ATOMIC_RELAXED);
}
/* Make the leaves covering [base, base + size) exist, so that setting their
 * entries cannot fail; false when out of memory. */
PYM_INTERNAL bool pym_pagemap_prepare(uintptr_t base, size_t size);
/* Set every page of [base, base + size) (prepared) to `bin`. */
PYM_INTERNAL void pym_pagemap_set(uintptr_t base, size_t size, pym_bin_offset_t bin);
/* Route free through its slow path (hooks installed) or not. */
PYM_INTERNAL void pym_pagemap_route(bool hooked);
/* The block grid of the alignment mode (16 or 8; pym_classes_init). */
PYM_INTERNAL void pym_pagemap_set_grid(uintptr_t alignment);
/* Under pym_arena_lock: give back the pages of the map that describe no
 * chunk in use any more; returns the bytes released. */
PYM_INTERNAL size_t pym_pagemap_decay_locked(void);

/* Lowest address bits that are zero in every block start of the alignment
 * mode (15 for 16, 7 for 8): free's fast path sends any other pointer to
 * the slow path, which names the interior pointer.  All ones while hooks
 * are installed (pym_pagemap_route): no pointer but NULL passes, and NULL
 * is in no page of the map. */
PYM_INTERNAL extern uintptr_t pym_block_grid;
static PYM_ALWAYS_INLINE bool pym_on_block_grid(uintptr_t address)
{
#if defined(__x86_64__) && !defined(PYM_BIN_GENERIC)
    /* One `test` with the mask in memory; GCC would load it into a register first. */
    bool off_grid;
    __asm__("testq %1, %2" : "=@ccnz"(off_grid) : "r"(address), "m"(pym_block_grid));
    return !off_grid;
#else
    return (address & __atomic_load_n(&pym_block_grid, __ATOMIC_RELAXED)) == 0;
#endif
}

/* ---- thread heaps (heap.c) ---------------------------------------------- */
#define PYM_REMOTE_CLOSED ((pym_block_t *)1) /* remote list of a heap being retired */

enum pym_heap_state {
    PYM_HEAP_STARTUP = 0,        /* the static placeholder every thread starts with */
    PYM_HEAP_LIVE,               /* owned by a running thread */
    PYM_HEAP_SHARED,             /* the locked heap of threads past their TLS teardown */
    PYM_HEAP_DEAD,               /* its thread exited; kept for reuse */
};

struct pym_heap {
    /* The owner's: its slow paths hold `lock` (the scavenger tries it). */
    pym_pool_t *pools[PYM_CLASS_COUNT]; /* per class: first pool with free blocks, or &pym_empty_pool */
    pym_block_t *deferred[PYM_CLASS_COUNT]; /* per class: blocks taken off `remote`, not yet handed out */
    pym_pool_t *empty;           /* owned small pools with every block free */
    uint32_t empty_count;        /* length of `empty` */
    uint32_t lock;               /* spinlock over the pools and lists above (atomic) */
    uint64_t activity;           /* slow paths the owner made (under the lock) */
    uint64_t activity_seen;      /* the scavenger's last reading of it */
    uint64_t quiet_since_ms;     /* the scavenger saw no activity since then */
    int tidy;                    /* the scavenger gave back what the quiet heap kept (atomic) */
    uint8_t state;               /* enum pym_heap_state (atomic) */
    pym_heap_t *next_dead;       /* dead heaps waiting for reuse */
    pym_heap_t *all_next;        /* every heap ever made (statistics, the scavenger) */
    pym_cache_bin_t *bins;       /* the owning thread's bins (atomic; NULL unless live), for statistics */
    pym_large_t *large_slot;     /* the large extent the thread freed last (atomic; large.c's parking protocol) */
    int large_busy;              /* the owner is updating large_slot (atomic; written by the owner only) */
    int large_steal;             /* the scavenger is taking large_slot (atomic; written by the scavenger only) */
    uint64_t large_parks;        /* extents the owner parked so far (atomic: the scavenger reads it) */
    uint64_t large_parks_seen;   /* the scavenger's last reading of it */
    uint64_t large_parks_seen_ms; /* and when it changed */
    /* Other threads': blocks they freed into this heap's pools. */
    int remote_pending __attribute__((aligned(64))); /* some transfer list may hold blocks (atomic) */
    pym_block_t *remote[PYM_CLASS_COUNT]; /* per class: chains CAS-pushed by other threads; CLOSED when retired */
    void *slots[PYM_CLASS_COUNT * PYM_CACHE_BIN_STRIDE] __attribute__((aligned(64))); /* storage of the bins */
};

PYM_INTERNAL extern pym_pool_t pym_empty_pool;     /* has no free block: sends malloc to its slow path */
PYM_INTERNAL extern pym_heap_t pym_startup_heap;   /* every class points at pym_empty_pool */
PYM_INTERNAL extern __thread pym_heap_t *pym_tls_heap __attribute__((tls_model("initial-exec")));
/* The calling thread's live heap, made on first use; NULL for a thread past
 * its TLS teardown (or out of memory), which must use the shared heap. */
PYM_INTERNAL pym_heap_t *pym_heap_of_thread(void);

/* malloc's slow path: a request the fast path could not serve from a bin
 * (small or medium size); hooks, start-up and refills are handled here. */
PYM_INTERNAL void *pym_malloc_slow(size_t size);
/* A block of class `size_class` from the calling thread's bin or pools
 * (aligned requests choose the class themselves). */
PYM_INTERNAL void *pym_malloc_class(unsigned size_class);
/* Free a validated block of class `size_class` that free's fast path did not
 * cache: its bin is full, or the thread has no heap (or no cache). */
PYM_INTERNAL void pym_heap_free_slow(void *ptr, unsigned size_class);
/* Return every block of the calling thread's cache to its pool. */
PYM_INTERNAL void pym_heap_flush_cache(pym_heap_t *heap);
/* Flush the heap's cache and give its empty pools back to their arenas. */
PYM_INTERNAL void pym_heap_trim(pym_heap_t *heap);
/* Blocks held by all thread caches, per class (statistics; racy reads). */
PYM_INTERNAL void pym_heap_cached_counts_locked(size_t counts[PYM_CLASS_COUNT]);
PYM_INTERNAL void pym_heap_thread_exit(void *heap);
PYM_INTERNAL void pym_heap_lock_all(void);
PYM_INTERNAL void pym_heap_unlock_all(void);
PYM_INTERNAL void pym_heap_after_fork_child(void);
PYM_INTERNAL size_t pym_heap_live_count(void);
/* The scavenger's share of heaps (scavenge.c): give back what heaps whose
 * threads have been quiet for the decay time keep (empty pools, the blocks
 * other threads freed for them); returns the bytes released. */
PYM_INTERNAL size_t pym_heap_decay(uint64_t now_ms);
/* Whether some heap keeps pools a quiet thread could give back (racy). */
PYM_INTERNAL bool pym_heap_has_idle_pools(void);
/* Bytes (and number) of the large extents threads keep parked (racy). */
PYM_INTERNAL size_t pym_heap_parked_bytes(size_t *count);

/* ---- allocation paths (alloc.c) ----------------------------------------- */
/* malloc of a request the size tables do not cover (large), and free of a
 * pointer free's fast path did not take (any kind, hooks included). */
PYM_INTERNAL void *pym_malloc_large_entry(size_t size);
PYM_INTERNAL void pym_free_slow(void *ptr);
PYM_INTERNAL void pym_free_generic(void *ptr, uintptr_t entry);
PYM_INTERNAL void *pym_aligned_generic(size_t alignment, size_t size);
/* Validate `ptr`, in a chunk of kind SMALL or MEDIUM with chunk-map entry
 * `entry`, as a live block; reports what is wrong and aborts when it is not. */
PYM_INTERNAL void pym_check_block(const void *ptr, uintptr_t entry, const char *caller);
/* Report a double free of `ptr` (class `size_class`) and abort. */
PYM_INTERNAL void pym_double_free(const void *ptr, unsigned size_class) __attribute__((noreturn, cold));

/* ---- allocation hooks (hooks.c) ------------------------------------------ */
PYM_INTERNAL extern int pym_hooks_active;  /* set while hooks are installed (read relaxed) */
static PYM_ALWAYS_INLINE bool pym_hooks_on(void)
{
    return PYM_UNLIKELY(__atomic_load_n(&pym_hooks_active, __ATOMIC_RELAXED) != 0);
}
/* malloc and free with the hooks called around them. */
PYM_INTERNAL void *pym_malloc_hooked(size_t size);
PYM_INTERNAL void pym_free_hooked(void *ptr);
/* Report an allocation / a free to the hooks (nothing inside a hook). */
PYM_INTERNAL void pym_hooks_report_alloc(void *ptr, size_t size, bool zeroed);
PYM_INTERNAL void pym_hooks_report_free(void *ptr);
/* Suppress reports on this thread around a composite call (realloc, ...)
 * that reports once for itself; the two nest. */
PYM_INTERNAL void pym_hooks_suspend(void);
PYM_INTERNAL void pym_hooks_resume(void);
/* Unhooked allocation and free (the hooked paths call these). */
PYM_INTERNAL void *pym_malloc_unhooked(size_t size);
PYM_INTERNAL void pym_free_unhooked(void *ptr);
PYM_INTERNAL void *pym_aligned_unhooked(size_t alignment, size_t size);
/* Turn the hooked paths on or off as hooks and debug mode require. */
PYM_INTERNAL void pym_hooks_update_routing(bool hooked);

/* ---- valgrind (valgrind.c): memcheck told about every block ------------------- */
PYM_INTERNAL extern int pym_under_valgrind; /* running on valgrind (memcheck annotations on) */
PYM_INTERNAL void pym_valgrind_init(void);
PYM_INTERNAL void pym_valgrind_malloclike(void *ptr, size_t size, bool zeroed);
PYM_INTERNAL void pym_valgrind_freelike(void *ptr);
/* Memory starting a new life (a pool or span set up for a class, a cached
 * chunk reused) is pymalloc's again: accessible to its own writes. */
PYM_INTERNAL void pym_valgrind_reclaim(void *start, size_t size);
PYM_INTERNAL void *pym_valgrind_realloc(void *ptr, size_t size);

/* ---- debug mode (debug.c), PYMALLOC_DEBUG=1 ---------------------------------- */
PYM_INTERNAL void *pym_debug_malloc(size_t size, bool zero);
PYM_INTERNAL void *pym_debug_aligned(size_t alignment, size_t size);
PYM_INTERNAL void pym_debug_free(void *ptr);
PYM_INTERNAL void *pym_debug_realloc(void *ptr, size_t size);
PYM_INTERNAL size_t pym_debug_usable_size(const void *ptr); /* the size asked for */
PYM_INTERNAL bool pym_debug_owns(const void *ptr);
PYM_INTERNAL size_t pym_usable_size_unhooked(const void *ptr);

/* ---- OS layer (os.c): the only file that calls mmap/munmap/madvise ------ */
PYM_INTERNAL void *pym_os_map(size_t size);
PYM_INTERNAL void *pym_os_map_aligned(size_t size, size_t alignment);
PYM_INTERNAL void pym_os_unmap(void *address, size_t size);
PYM_INTERNAL bool pym_os_remap_in_place(void *address, size_t old_size, size_t new_size);
PYM_INTERNAL void *pym_os_remap_onto(void *address, size_t old_size, size_t new_size, void *target);
PYM_INTERNAL void pym_os_decommit(void *address, size_t size);
PYM_INTERNAL size_t pym_os_page_size(void);
/* Monotonic milliseconds from the vDSO (no system call). */
PYM_INTERNAL uint64_t pym_os_now_ms(void);
/* Threads in the process, 0 when it cannot be read (no /proc). */
PYM_INTERNAL long pym_os_thread_count(void);
/* The asymmetric fence (membarrier): register the process for it (false:
 * not available), then make every running thread execute a full barrier
 * (false: the kernel refused, no barrier was made). */
PYM_INTERNAL bool pym_os_fence_register(void);
PYM_INTERNAL bool pym_os_fence_all_threads(void);
enum pym_os_call { PYM_OS_MMAP, PYM_OS_MUNMAP, PYM_OS_MADVISE, PYM_OS_MREMAP, PYM_OS_CALL_KINDS };
/* System calls of each kind made so far. */
PYM_INTERNAL void pym_os_counters(size_t out[PYM_OS_CALL_KINDS]);
#ifdef PYM_FAULT_INJECTION
/* Test builds only (tests/faults/oom.c): make OS calls fail with ENOMEM.
 * Of the calls whose operation is in `ops`, the next `skip` succeed and the
 * `count` after them fail (count < 0: every one; ops or count 0: injection
 * off).  Shrinking remaps and unmaps never fail. */
enum {
    PYM_OS_OP_MAP = 1,           /* pym_os_map: chunk-map leaves, metadata regions, thread heaps */
    PYM_OS_OP_MAP_ALIGNED = 2,   /* pym_os_map_aligned: arenas, spans, large blocks, remap targets */
    PYM_OS_OP_REMAP_GROW = 4,    /* pym_os_remap_in_place growing a large block */
    PYM_OS_OP_REMAP_MOVE = 8,    /* pym_os_remap_onto moving a large block */
    PYM_OS_OP_ALL = 15,
};
PYM_INTERNAL void pym_os_inject_failures(unsigned ops, long skip, long count);
/* Calls of the operations in `ops` seen so far (injected or not), and
 * failures injected; either pointer may be NULL. */
PYM_INTERNAL void pym_os_inject_counters(unsigned ops, unsigned long *seen, unsigned long *failed);
#endif

/* ---- metadata (meta.c) -------------------------------------------------- */
/* Zeroed, 64-byte aligned memory for chunk and large descriptors; never from pools. */
PYM_INTERNAL void *pym_meta_alloc(size_t size);
PYM_INTERNAL void pym_meta_free(void *ptr, size_t size);
/* The scavenger's share: give back the pages of descriptor slabs empty for
 * a pass; returns the bytes released.  Whether some empty slab holds pages. */
PYM_INTERNAL size_t pym_meta_decay(void);
PYM_INTERNAL bool pym_meta_has_idle_slabs(void);
PYM_INTERNAL extern pthread_mutex_t pym_meta_lock;

/* ---- the GC side API (gc.c) ---------------------------------------------- */
/* Fork handlers of the collector's lock; they only read a flag when the
 * program never used the API. */
PYM_INTERNAL void pym_gc_fork_prepare(void);
PYM_INTERNAL void pym_gc_fork_parent(void);
PYM_INTERNAL void pym_gc_fork_child(void);

/* ---- background scavenger (scavenge.c) ------------------------------------ */
/* Something that decays (a free extent, an empty chunk, an empty pool) was
 * kept: make sure the scavenger will look at it.  Cheap (two loads and a
 * branch when the scavenger runs and was told already); callable under any pymalloc lock: it
 * never creates the thread itself, it asks pym_scavenge_poll to. */
PYM_INTERNAL void pym_scavenge_wake(void);
/* The same where something is kept that pymalloc's counters do not show (a
 * thread's parked extent): the scavenger is started if it is not running. */
PYM_INTERNAL void pym_scavenge_want(void);
/* Called where no pymalloc lock is held (after a slow path): starts the
 * scavenger thread if it was asked for and is not running. */
PYM_INTERNAL extern int pym_scavenge_start_wanted;
PYM_INTERNAL void pym_scavenge_start(void);
static PYM_ALWAYS_INLINE void pym_scavenge_poll(void)
{
    if (PYM_UNLIKELY(__atomic_load_n(&pym_scavenge_start_wanted, __ATOMIC_RELAXED)))
        pym_scavenge_start();
}
/* One pass over everything that decays (also what pym_trim's callers and
 * tests use); returns the bytes given back. */
PYM_INTERNAL size_t pym_scavenge_pass(uint64_t now_ms);
PYM_INTERNAL void pym_scavenge_lock_for_fork(void); /* the pass lock: first of pymalloc's locks */
PYM_INTERNAL void pym_scavenge_unlock_after_fork(void);
PYM_INTERNAL void pym_scavenge_after_fork_child(void);

/* ---- options (options.c) ------------------------------------------------ */
typedef struct pym_options {
    unsigned alignment;          /* 16 (default) or 8 */
    int stats;                   /* print statistics at exit */
    int stats_json;              /* ... as JSON rather than text */
    char stats_path[256];        /* ... into this file rather than stderr ("" = stderr) */
    int verbose;                 /* warn about foreign frees and the like */
    int thread_cache;            /* per-thread caches of free blocks (1) or none (0) */
    int debug;                   /* guard bytes, fill patterns and checks on every block */
    int background_thread;       /* a scavenger thread returns decayed memory of a quiet program */
    uint64_t decay_ms;           /* cached large mappings unused this long are unmapped */
    unsigned arena_cache;        /* empty chunks kept mapped */
    size_t direct_threshold;     /* blocks this large are mapped and unmapped directly */
} pym_options_t;
PYM_INTERNAL extern pym_options_t pym_options;
PYM_INTERNAL void pym_options_load(void);
/* An environment variable's value, read without allocating; NULL if unset. */
PYM_INTERNAL const char *pym_env_lookup(const char *name);
/* Apply "NAME=VALUE,..." (the compiled-in default's syntax); malformed items
 * are reported naming `source`. */
PYM_INTERNAL void pym_options_apply_string(const char *conf, const char *source);

/* ---- start-up and fork (init.c) ------------------------------------------ */
PYM_INTERNAL extern int pym_initialized;
PYM_INTERNAL void pym_init_slow(void);
static PYM_ALWAYS_INLINE void pym_ensure_init(void)
{
    if (PYM_UNLIKELY(!__atomic_load_n(&pym_initialized, __ATOMIC_ACQUIRE)))
        pym_init_slow();
}
PYM_INTERNAL extern pthread_key_t pym_heap_key;
PYM_INTERNAL extern int pym_heap_key_ready;

/* ---- reporting (report.c): stderr without malloc ------------------------- */
PYM_INTERNAL void pym_report(const char *format, ...) __attribute__((format(printf, 1, 2)));
PYM_INTERNAL void pym_fatal(const char *format, ...) __attribute__((format(printf, 1, 2), noreturn, cold));
PYM_INTERNAL void pym_invalid_free(const void *ptr, const char *caller);
PYM_INTERNAL extern size_t pym_invalid_free_count;

/* ---- statistics (stats.c) ------------------------------------------------ */
PYM_INTERNAL void pym_stats_print_at_exit(void);

#ifdef PYM_DEBUG
#define PYM_ASSERT(cond) \
    ((cond) ? (void)0 : pym_fatal("pymalloc: internal assertion failed: %s (%s:%d)", #cond, __FILE__, __LINE__))
PYM_INTERNAL void pym_heap_verify(pym_heap_t *heap);
#else
#define PYM_ASSERT(cond) ((void)0)
#endif

static inline char *pym_pool_first_block(const pym_pool_t *pool)
{
    if (pool->size_class < PYM_SMALL_CLASSES)
        return (char *)pool + PYM_POOL_HEADER_SIZE;
    return (char *)pool->arena->base;
}

/* The pool of a block in a small arena or medium span (`entry` is the
 * block's chunk-map entry, of kind SMALL or MEDIUM). */
static inline pym_pool_t *pym_pool_of(uintptr_t address, uintptr_t entry)
{
    if (entry & PYM_CHUNK_SMALL)
        return (pym_pool_t *)(address & ~(PYM_POOL_SIZE - 1));
    return &((pym_arena_t *)(entry & ~PYM_CHUNK_KIND_MASK))->span;
}

/* The directory entry of the pool holding `address` (chunk-map entry
 * `entry`, of kind SMALL or MEDIUM), and the address's offset from that
 * pool's first block (wrapped to a huge value inside a pool header). */
static PYM_ALWAYS_INLINE pym_pool_info_t *pym_pool_info_of(uintptr_t address, uintptr_t entry, uint32_t *offset)
{
    pym_arena_t *arena = (pym_arena_t *)(entry & ~PYM_CHUNK_KIND_MASK);
    if (entry & PYM_CHUNK_SMALL) {
        *offset = (uint32_t)(address & (PYM_POOL_SIZE - 1)) - PYM_POOL_HEADER_SIZE;
        return &arena->pools[(address >> PYM_POOL_SHIFT) & (PYM_POOLS_PER_ARENA - 1)];
    }
    *offset = (uint32_t)(address & (PYM_CHUNK_SIZE - 1));
    return &arena->pools[0];
}

/* True when `offset` is the start of a block the pool of `info` has handed
 * out at least once: one test covers "is a multiple of the block size" and
 * "lies below the carved bound", since a non-multiple gives a huge index. */
static PYM_ALWAYS_INLINE bool pym_pool_info_has_block(const pym_pool_info_t *info, uint32_t offset)
{
    return pym_block_index(offset, info->odd_inverse, info->rotate)
           < __atomic_load_n(&info->carved, __ATOMIC_RELAXED);
}


static inline size_t pym_align_up(size_t value, size_t alignment)
{
    return (value + alignment - 1) & ~(alignment - 1);
}

#endif /* PYM_INTERNAL_H */
