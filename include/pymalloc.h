/*
 * pymalloc.h -- public interface of pymalloc, a drop-in malloc replacement
 * built on CPython's small-object allocator design (arenas, pools, blocks).
 *
 * Two libraries are installed:
 *   libpymalloc      replaces malloc/free/... of the whole process (LD_PRELOAD
 *                    or -lpymalloc) and also exports the pym_ functions below;
 *   libpymalloc-api  exports only the pym_ functions, so pymalloc can be used
 *                    beside the system allocator (benchmarks, sanitizer builds).
 *
 * Every pym_ function follows the contract of its C library namesake:
 * pym_malloc(n) behaves as malloc(n), and so on.  Blocks from pym_ functions
 * and from the interposed malloc family are the same blocks: either free
 * releases either.
 */
#ifndef PYMALLOC_H
#define PYMALLOC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PYM_VERSION_MAJOR 0
#define PYM_VERSION_MINOR 1
#define PYM_VERSION_PATCH 0
#define PYM_VERSION_STRING "0.1.0"

#if defined(__GNUC__)
#define PYM_API __attribute__((visibility("default")))
#define PYM_MALLOC_LIKE __attribute__((malloc, warn_unused_result))
#else
#define PYM_API
#define PYM_MALLOC_LIKE
#endif

/* ---- allocation ------------------------------------------------------- */
PYM_API void *pym_malloc(size_t size) PYM_MALLOC_LIKE;
PYM_API void *pym_calloc(size_t count, size_t size) PYM_MALLOC_LIKE;
PYM_API void *pym_realloc(void *ptr, size_t size);
PYM_API void *pym_reallocarray(void *ptr, size_t count, size_t size);
PYM_API void  pym_free(void *ptr);
PYM_API void *pym_aligned_alloc(size_t alignment, size_t size) PYM_MALLOC_LIKE;
PYM_API int   pym_posix_memalign(void **out, size_t alignment, size_t size);
PYM_API void *pym_memalign(size_t alignment, size_t size) PYM_MALLOC_LIKE;
PYM_API void *pym_valloc(size_t size) PYM_MALLOC_LIKE;
PYM_API void *pym_pvalloc(size_t size) PYM_MALLOC_LIKE;
/* Bytes usable in the block at ptr (>= the size requested); 0 for NULL or
 * for a pointer pymalloc does not own. */
PYM_API size_t pym_usable_size(const void *ptr);
/* Nonzero when ptr is the start of a block pymalloc handed out.  A large
 * block is recognised as live; a small or medium block freed since may still
 * count (telling would take a scan of its pool's free list). */
PYM_API int pym_owns(const void *ptr);

/* Return the free blocks held in the calling thread's cache to their pools,
 * and take back the thread's blocks other threads have freed (pools and
 * arenas that become empty can then go back to the OS).  Threads
 * flush their caches when they exit; malloc_trim flushes the caller's. */
PYM_API void pym_flush_thread_cache(void);

/* Give free memory back to the OS now (malloc_trim calls this): the calling
 * thread's cache and empty pools, the empty arenas and large mappings kept
 * for reuse, and the pages of free pools inside arenas still in use.
 * Returns 1 when some memory was released, 0 otherwise. */
PYM_API int pym_trim(void);

/* ---- allocation hooks ------------------------------------------------- */
/* Callbacks for tracing tools (like Python's tracemalloc): on_alloc after
 * every successful allocation (the pointer and the size asked for), on_free
 * before every free of a non-NULL pointer; realloc reports the free of the
 * old block and the allocation of the new one.  Either may be NULL.  A hook
 * may allocate: its own allocations are not reported.  Installing NULL (or
 * both callbacks NULL) removes the hooks.  With no hooks installed the cost
 * is nothing on the small-malloc fast path and one predictable branch on the
 * others.  Returns 0. */
typedef struct pym_hooks {
    void (*on_alloc)(void *ptr, size_t size, void *context);
    void (*on_free)(void *ptr, void *context);
    void *context;                    /* passed to both */
} pym_hooks_t;
PYM_API int pym_set_hooks(const pym_hooks_t *hooks);

/* ---- statistics ------------------------------------------------------- */
#define PYM_STATS_CLASSES 96          /* 64 small classes + 32 medium classes */
#define PYM_STATS_SMALL_CLASSES 64

typedef struct pym_class_stats {
    size_t block_size;                /* bytes per block of this class */
    size_t pools;                     /* pools (small) or spans (medium) in use */
    size_t full_pools;                /* of which have no free block */
    size_t blocks_used;               /* blocks handed out and not freed */
    size_t blocks_cached;             /* freed blocks held in thread caches for reuse */
    size_t blocks_free;               /* blocks free in those pools (not counting cached ones) */
} pym_class_stats_t;

typedef struct pym_stats {
    pym_class_stats_t classes[PYM_STATS_CLASSES];
    size_t empty_pools;               /* pools kept empty by thread heaps */
    size_t arenas_now;                /* 256 KiB chunks mapped now (arenas and spans) */
    size_t arenas_total;              /* chunks mapped since start */
    size_t arenas_returned;           /* chunks unmapped since start */
    size_t arenas_cached;             /* empty chunks kept mapped for reuse */
    size_t arenas_peak;               /* most chunks mapped at once */
    size_t large_count;               /* live large blocks */
    size_t large_bytes;               /* bytes mapped for live large blocks */
    size_t large_cached_bytes;        /* bytes of freed large mappings kept for reuse */
    size_t large_peak_bytes;          /* most bytes in large mappings at once (live and kept for reuse) */
    size_t mapped_bytes;              /* all bytes pymalloc has mapped now */
    size_t mapped_peak_bytes;         /* most bytes mapped at once */
    size_t heaps_live;                /* thread heaps in use */
    size_t invalid_frees;             /* frees of pointers pymalloc did not hand out */
    unsigned alignment;               /* 16 (default) or 8 (PYMALLOC_ALIGN=8) */
} pym_stats_t;

/* Fill *out with a snapshot.  Figures of pools owned by running threads are
 * read without stopping them, so they are exact only when threads are idle. */
PYM_API void pym_stats_get(pym_stats_t *out);
/* Print the statistics table (the same one PYMALLOC_STATS=1 prints at exit). */
PYM_API void pym_stats_print(FILE *stream);
/* The same figures as one JSON object (stream NULL: stderr). */
PYM_API void pym_stats_print_json(FILE *stream);

/* Size class that serves a request of `size` bytes (0..95), or -1 when the
 * request is served from a large mapping.  Honours the alignment mode. */
PYM_API int pym_size_class(size_t size);
/* Block size of a class, or 0 for an invalid class. */
PYM_API size_t pym_class_block_size(int size_class);

#ifdef __cplusplus
}
#endif

#endif /* PYMALLOC_H */
