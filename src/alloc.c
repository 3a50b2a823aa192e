/*
 * alloc.c -- the public pym_ entry points and the paths off the fast path:
 * medium requests, aligned requests, realloc, and the free of anything that
 * is not a small block of the calling thread.
 *
 * Request sizes:
 *   0..512 bytes        small classes, 4 KiB pools (fastpath.h, heap.c)
 *   513 B..128 KiB      medium classes, 256 KiB spans, same heap machinery
 *   above 128 KiB       large blocks (large.c): extents of whole 256 KiB
 *                       chunks, reused, split and coalesced when freed,
 *                       below PYMALLOC_MMAP_THRESHOLD (64 MiB); mapped and
 *                       unmapped directly from there on, grown with mremap.
 * Requests above PTRDIFF_MAX fail with ENOMEM before anything is tried, as
 * glibc does: no object may be larger than the largest pointer difference.
 *
 * Invalid pointers (README, "Invalid frees"):
 *   - a pointer in no chunk of pymalloc's (stack, static data, memory of
 *     another allocator) is ignored by free, counted, and reported once with
 *     PYMALLOC_VERBOSE=1: pymalloc cannot know what it is, and leaving it
 *     alone is the only safe action;
 *   - a pointer inside pymalloc's memory that is not a live block (interior
 *     pointer, block never handed out, block already free when detectable)
 *     is a heap corruption in the making: pymalloc prints what it found and
 *     aborts, like glibc's "free(): invalid pointer".
 */
#include <errno.h>
#include <string.h>

#include "fastpath.h"

size_t pym_invalid_free_count;

/* ---- block validation ----------------------------------------------------------- */
/* Why `ptr` (in a chunk of kind SMALL or MEDIUM, chunk-map entry `entry`) is
 * not a live block, or NULL when it may be one.  The directory entry of a
 * foreign thread's pool is read racily but monotonely: a live block stays
 * below the carved bound and its pool stays in use while the block lives. */
static const char *pym_block_problem(const void *ptr, uintptr_t entry)
{
    uint32_t offset;
    const pym_pool_info_t *info = pym_pool_info_of((uintptr_t)ptr, entry, &offset);
    uint32_t carved = __atomic_load_n(&info->carved, __ATOMIC_RELAXED);
    if (carved == 0)
        return "not in a pool in use";
    uint32_t index = pym_block_index(offset, info->odd_inverse, info->rotate);
    if (index < carved)
        return NULL;
    if (index <= pym_classes[info->size_class].max_quotient)
        return "not a block handed out";
    return "not the start of a block";
}

void pym_check_block(const void *ptr, uintptr_t entry, const char *caller)
{
    const char *problem = pym_block_problem(ptr, entry);
    if (PYM_UNLIKELY(problem != NULL)) {
        uint32_t offset;
        const pym_pool_info_t *info = pym_pool_info_of((uintptr_t)ptr, entry, &offset);
        uint32_t block_size = pym_classes[info->size_class].block_size;
        uintptr_t first = (uintptr_t)ptr - offset;
        if (offset > PYM_CHUNK_SIZE) /* inside a pool header: name the pool's first block */
            offset = 0;
        pym_fatal("pymalloc: %s(): invalid pointer %p: %s (%s, %u-byte blocks, nearest block %p)", caller, ptr,
                  problem, entry & PYM_CHUNK_SMALL ? "small pool" : "medium span", block_size,
                  (void *)(first + (offset / block_size) * block_size));
    }
}

void pym_double_free(const void *ptr, unsigned size_class)
{
    pym_fatal("pymalloc: free(): double free of block %p (%u-byte class)", ptr, pym_classes[size_class].block_size);
}

/* ---- generic paths ---------------------------------------------------------------- */
static PYM_NOINLINE void *pym_malloc_large_slow(size_t size);

void *pym_malloc_large_entry(size_t size)
{
    if (PYM_LIKELY(size > PYM_MEDIUM_MAX && !pym_hooks_on())) {
        void *parked = pym_large_take_parked(size); /* a malloc/free loop of one big buffer: no lock */
        if (PYM_LIKELY(parked != NULL))
            return parked;
    }
    return pym_malloc_large_slow(size);
}

static PYM_NOINLINE void *pym_malloc_large_slow(size_t size)
{
    if (size <= PYM_MEDIUM_MAX) /* before start-up, or hooked: the tables are closed */
        return pym_malloc_slow(size);
    if (pym_hooks_on())
        return pym_malloc_hooked(size);
    if (PYM_UNLIKELY(size > PTRDIFF_MAX)) {
        errno = ENOMEM;
        return NULL;
    }
    pym_ensure_init();
    void *block = pym_large_alloc(size, 0, false);
    pym_scavenge_poll();
    return block;
}

void pym_free_slow(void *ptr)
{
    if (pym_hooks_on()) {
        pym_free_hooked(ptr);
        return;
    }
    pym_free_generic(ptr, pym_chunkmap_lookup((uintptr_t)ptr));
}

/* Every free the fast path did not finish, with the whole proof: large
 * blocks, full bins, pointers off the grid or in pages of no pool, debug
 * builds, invalid pointers. */
void pym_free_generic(void *ptr, uintptr_t entry)
{
    switch (entry & PYM_CHUNK_KIND_MASK) {
    case PYM_CHUNK_NONE:
        if (ptr != NULL)
            pym_invalid_free(ptr, "free");
        return;
    case PYM_CHUNK_LARGE:
        pym_large_free((pym_large_t *)(entry & ~PYM_CHUNK_KIND_MASK), ptr);
        return;
    default:
        break;
    }
    uint32_t offset;
    const pym_pool_info_t *info = pym_pool_info_of((uintptr_t)ptr, entry, &offset);
    if (PYM_UNLIKELY(!pym_pool_info_has_block(info, offset)))
        pym_check_block(ptr, entry, "free");
    unsigned size_class = info->size_class;
    pym_cache_bin_t *bin = pym_bin_of_class(size_class);
    void **cursor = bin->cursor;
    if (PYM_UNLIKELY(cursor != NULL && cursor[-1] == ptr))
        pym_double_free(ptr, size_class);
#ifdef PYM_DEBUG
    for (void **slot = bin->base; slot < cursor; slot++)
        if (*slot == ptr)
            pym_double_free(ptr, size_class);
#endif
    if (PYM_LIKELY(cursor != bin->limit)) {
        *cursor = ptr;
        pym_bin_set_cursor(bin, cursor + 1);
        return;
    }
    pym_heap_free_slow(ptr, size_class);
}

/* `alignment` is a power of two. */
void *pym_aligned_generic(size_t alignment, size_t size)
{
    if (pym_hooks_on()) {
        pym_hooks_suspend();
        void *block = pym_options.debug ? pym_debug_aligned(alignment, size) : pym_aligned_unhooked(alignment, size);
        pym_hooks_resume();
        pym_hooks_report_alloc(block, size, false);
        return block;
    }
    return pym_aligned_unhooked(alignment, size);
}

void *pym_aligned_unhooked(size_t alignment, size_t size)
{
    if (PYM_UNLIKELY(size > PTRDIFF_MAX || alignment > PTRDIFF_MAX)) {
        errno = ENOMEM;
        return NULL;
    }
    pym_ensure_init();
    if (alignment <= PYM_ALIGNMENT)
        return pym_malloc_inline(size);
    /* Small class whose block size is a multiple of the alignment: blocks of
     * such a class are aligned because pools start 64 bytes (a multiple of
     * any alignment up to 64) before their first block. */
    if (alignment <= PYM_POOL_HEADER_SIZE && size <= PYM_SMALL_MAX) {
        size_t rounded = pym_align_up(size ? size : 1, alignment);
        if (rounded <= PYM_SMALL_MAX)
            return pym_malloc_class(pym_small_class_of[rounded / PYM_ALIGNMENT]);
    }
    /* Medium class whose block size is a multiple of the alignment: spans
     * start on a chunk boundary. */
    if (alignment <= PYM_MEDIUM_MAX && size <= PYM_MEDIUM_MAX) {
        size_t wanted = size > alignment ? size : alignment;
        if (wanted <= PYM_SMALL_MAX)
            wanted = PYM_SMALL_MAX + 1;
        for (unsigned size_class = pym_medium_class_of(wanted); size_class < PYM_CLASS_COUNT; size_class++)
            if (pym_classes[size_class].block_size % alignment == 0)
                return pym_malloc_class(size_class);
    }
    return pym_large_alloc(size ? size : 1, alignment, false);
}

static bool pym_is_power_of_two(size_t value)
{
    return value != 0 && (value & (value - 1)) == 0;
}

/* ---- public entry points ------------------------------------------------------------- */
void *pym_malloc(size_t size)
{
    return pym_malloc_inline(size);
}

void pym_free(void *ptr)
{
    pym_free_inline(ptr);
}

static void *pym_calloc_unhooked(size_t count, size_t size);

void *pym_calloc(size_t count, size_t size)
{
    if (pym_hooks_on()) {
        size_t total;
        if (__builtin_mul_overflow(count, size, &total) || total > PTRDIFF_MAX) {
            errno = ENOMEM;
            return NULL;
        }
        /* Pool and span blocks are zeroed after they are reported: under
         * memcheck the block is not the program's (writable) before. */
        bool zero_after = !pym_options.debug && total <= PYM_MEDIUM_MAX;
        pym_hooks_suspend();
        void *block = pym_options.debug ? pym_debug_malloc(total, true)
                      : zero_after      ? pym_malloc_unhooked(total)
                                        : pym_calloc_unhooked(count, size);
        pym_hooks_resume();
        pym_hooks_report_alloc(block, total, true);
        if (zero_after && block != NULL)
            memset(block, 0, total);
        return block;
    }
    return pym_calloc_unhooked(count, size);
}

static void *pym_calloc_unhooked(size_t count, size_t size)
{
    size_t total;
    if (PYM_UNLIKELY(__builtin_mul_overflow(count, size, &total) || total > PTRDIFF_MAX)) {
        errno = ENOMEM;
        return NULL;
    }
    if (total > PYM_MEDIUM_MAX) {
        pym_ensure_init();
        return pym_large_alloc(total, 0, true); /* fresh mappings are already zero */
    }
    void *block = pym_malloc_inline(total);
    if (PYM_LIKELY(block != NULL))
        memset(block, 0, total);
    return block;
}

static void *pym_realloc_unhooked(void *ptr, size_t size);

/* Hooks see a realloc as the free of the old block and the allocation of
 * the new one (even when the pointer stays), as tracemalloc does; a failed
 * realloc reports nothing (the old block stays). */
void *pym_realloc(void *ptr, size_t size)
{
    if (pym_hooks_on()) {
        if (pym_under_valgrind)
            return pym_valgrind_realloc(ptr, size);
        pym_hooks_suspend();
        void *moved = pym_options.debug ? pym_debug_realloc(ptr, size) : pym_realloc_unhooked(ptr, size);
        pym_hooks_resume();
        if (moved != NULL || size == 0)
            pym_hooks_report_free(ptr);
        pym_hooks_report_alloc(moved, size, false);
        return moved;
    }
    return pym_realloc_unhooked(ptr, size);
}

static void *pym_realloc_unhooked(void *ptr, size_t size)
{
    if (ptr == NULL)
        return pym_malloc_inline(size);
    if (size == 0) { /* glibc: realloc(p, 0) frees p and returns NULL */
        pym_free_inline(ptr);
        return NULL;
    }
    if (PYM_UNLIKELY(size > PTRDIFF_MAX)) {
        errno = ENOMEM;
        return NULL;
    }
    uintptr_t entry = pym_chunkmap_lookup((uintptr_t)ptr);
    size_t old_size;
    switch (entry & PYM_CHUNK_KIND_MASK) {
    case PYM_CHUNK_NONE:
        pym_fatal("pymalloc: realloc(): invalid pointer %p: not allocated by pymalloc (its size is unknown)", ptr);
    case PYM_CHUNK_LARGE:
        return pym_large_realloc((pym_large_t *)(entry & ~PYM_CHUNK_KIND_MASK), ptr, size);
    default: {
        pym_check_block(ptr, entry, "realloc");
        uint32_t offset;
        unsigned old_class = pym_pool_info_of((uintptr_t)ptr, entry, &offset)->size_class;
        if (size <= PYM_MEDIUM_MAX) {
            unsigned new_class = size <= PYM_SMALL_MAX ? pym_small_class_of[(size + PYM_ALIGNMENT - 1) / PYM_ALIGNMENT]
                                                       : pym_medium_class_of(size);
            if (new_class == old_class)
                return ptr;
        }
        old_size = pym_classes[old_class].block_size;
        break;
    }
    }
    void *moved = pym_malloc_inline(size);
    if (moved == NULL)
        return NULL; /* errno is ENOMEM; the old block is untouched */
    memcpy(moved, ptr, old_size < size ? old_size : size);
    pym_free_inline(ptr);
    return moved;
}

void *pym_reallocarray(void *ptr, size_t count, size_t size)
{
    size_t total;
    if (PYM_UNLIKELY(__builtin_mul_overflow(count, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    return pym_realloc(ptr, total);
}

int pym_posix_memalign(void **out, size_t alignment, size_t size)
{
    if (alignment % sizeof(void *) != 0 || !pym_is_power_of_two(alignment))
        return EINVAL;
    int saved_errno = errno;
    void *block = pym_aligned_generic(alignment, size);
    errno = saved_errno; /* POSIX: the result is returned, errno is left alone */
    if (block == NULL)
        return ENOMEM;
    *out = block;
    return 0;
}

void *pym_aligned_alloc(size_t alignment, size_t size)
{
    if (!pym_is_power_of_two(alignment)) {
        errno = EINVAL;
        return NULL;
    }
    return pym_aligned_generic(alignment, size);
}

void *pym_memalign(size_t alignment, size_t size)
{
    if (alignment == 0) /* glibc serves memalign(0, n) as malloc(n); so do we */
        alignment = 1;
    return pym_aligned_alloc(alignment, size);
}

void *pym_valloc(size_t size)
{
    return pym_aligned_generic(pym_os_page_size(), size);
}

void *pym_pvalloc(size_t size)
{
    size_t page = pym_os_page_size();
    if (size > PTRDIFF_MAX) {
        errno = ENOMEM;
        return NULL;
    }
    return pym_aligned_generic(page, size ? pym_align_up(size, page) : page);
}

size_t pym_usable_size(const void *ptr)
{
    if (PYM_UNLIKELY(pym_options.debug))
        return pym_debug_usable_size(ptr);
    return pym_usable_size_unhooked(ptr);
}

size_t pym_usable_size_unhooked(const void *ptr)
{
    uintptr_t entry = pym_chunkmap_lookup((uintptr_t)ptr);
    switch (entry & PYM_CHUNK_KIND_MASK) {
    case PYM_CHUNK_NONE:
        return 0;
    case PYM_CHUNK_LARGE:
        return pym_large_usable_size((pym_large_t *)(entry & ~PYM_CHUNK_KIND_MASK), ptr);
    default: {
        uint32_t offset;
        unsigned size_class = pym_pool_info_of((uintptr_t)ptr, entry, &offset)->size_class;
        return pym_block_problem(ptr, entry) == NULL ? pym_classes[size_class].block_size : 0;
    }
    }
}

int pym_trim(void)
{
    pym_ensure_init();
    pym_heap_trim(pym_tls_heap);
    pthread_mutex_lock(&pym_arena_lock);
    size_t released = pym_arena_trim_locked();
    pthread_mutex_unlock(&pym_arena_lock);
    released += pym_large_trim();
    return released != 0;
}

int pym_owns(const void *ptr)
{
    if (PYM_UNLIKELY(pym_options.debug))
        return pym_debug_owns(ptr);
    return ptr != NULL && pym_usable_size_unhooked(ptr) != 0;
}
