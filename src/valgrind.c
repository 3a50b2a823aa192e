/*
 * valgrind.c -- pymalloc's blocks as memcheck sees them.
 *
 * Run under valgrind, pymalloc's malloc is not valgrind's: memcheck only
 * sees the arenas pymalloc maps.  With valgrind's headers at build time
 * (Debian's valgrind package; configure checks), pymalloc detects valgrind
 * at start-up and routes every call through the hooked paths (hooks.c),
 * which describe each block the program gets with
 * VALGRIND_MALLOCLIKE_BLOCK and each block it gives back with
 * VALGRIND_FREELIKE_BLOCK: memcheck then reports leaks, reads of freed or
 * never-written memory and frees of bad pointers as it does for glibc.  Not
 * on valgrind, or on a valgrind tool that does not track heap blocks
 * (callgrind, cachegrind), none of this runs (one check at start-up).
 *
 * pymalloc itself writes a link into the first word of a free block (pool
 * free lists, remote chains); that word is made accessible again right after
 * the free is announced, so memcheck does not blame pymalloc -- at the price
 * of not seeing a program's stray read of exactly that word.  When a pool
 * (or span) is set up for a class, possibly another one than before, or a
 * cached chunk is reused (a span's chunk may become an arena of pools), the
 * memory is made accessible again: new links and pool headers land at
 * other offsets.
 *
 * realloc under valgrind always moves the block (malloc, copy, free), so
 * memcheck follows which bytes were ever written; the copy runs with error
 * reporting off, as it may read past the old block's requested size.
 *
 * The other way -- `valgrind --soname-synonyms=somalloc=*pymalloc*` --
 * makes valgrind replace pymalloc's exported functions with its own
 * allocator; pymalloc's code is then not exercised at all.
 */
#include <string.h>

#include "fastpath.h"

#ifdef HAVE_VALGRIND_MEMCHECK_H
#include <valgrind/memcheck.h>
#endif

/* Only the tools that track heap blocks want the annotations (memcheck,
 * and massif and dhat, which honour them too); valgrind names the tool in the
 * preload it gives the program.  Under callgrind or cachegrind pymalloc runs
 * its normal paths, so their counts are pymalloc's real ones. */
static bool pym_valgrind_tool_tracks_heap(void)
{
    const char *preload = pym_env_lookup("LD_PRELOAD");
    return preload != NULL
           && (strstr(preload, "vgpreload_memcheck") != NULL || strstr(preload, "vgpreload_massif") != NULL
               || strstr(preload, "vgpreload_dhat") != NULL);
}

void pym_valgrind_init(void)
{
#ifdef HAVE_VALGRIND_MEMCHECK_H
    if (RUNNING_ON_VALGRIND && pym_valgrind_tool_tracks_heap()) {
        pym_under_valgrind = 1;
        if (pym_options.debug) { /* memcheck's checks cover debug mode's, which would confuse them */
            pym_report("pymalloc: PYMALLOC_DEBUG is ignored under valgrind (memcheck checks every block)");
            pym_options.debug = 0;
        }
        pym_hooks_update_routing(true);
    }
#endif
}

/* A block just popped from this thread's cache leaves its pointer in the
 * slot it came from; memcheck's leak check would take that stale copy for a
 * reference and call a leaked block reachable.  Clear it. */
static void pym_valgrind_forget_slot(void *ptr)
{
    uintptr_t entry = pym_chunkmap_lookup((uintptr_t)ptr);
    if (!(entry & (PYM_CHUNK_SMALL | PYM_CHUNK_MEDIUM)))
        return;
    uint32_t offset;
    pym_cache_bin_t *bin = pym_bin_of_class(pym_pool_info_of((uintptr_t)ptr, entry, &offset)->size_class);
    if (bin->cursor != NULL && bin->cursor < bin->limit && *bin->cursor == ptr)
        *bin->cursor = NULL;
}

void pym_valgrind_malloclike(void *ptr, size_t size, bool zeroed)
{
#ifdef HAVE_VALGRIND_MEMCHECK_H
    if (pym_under_valgrind) {
        pym_valgrind_forget_slot(ptr);
        VALGRIND_MALLOCLIKE_BLOCK(ptr, size, 0, zeroed);
    }
#else
    (void)ptr, (void)size, (void)zeroed;
#endif
}

void pym_valgrind_freelike(void *ptr)
{
#ifdef HAVE_VALGRIND_MEMCHECK_H
    if (pym_under_valgrind) {
        VALGRIND_FREELIKE_BLOCK(ptr, 0);
        VALGRIND_MAKE_MEM_DEFINED(ptr, sizeof(void *)); /* pymalloc's link word */
    }
#else
    (void)ptr;
#endif
}

void pym_valgrind_reclaim(void *start, size_t size)
{
#ifdef HAVE_VALGRIND_MEMCHECK_H
    /* Defined: pymalloc reads what it wrote (links, headers) or what a
     * decommit left (zeros); each block handed out is re-described by
     * MALLOCLIKE anyway. */
    VALGRIND_MAKE_MEM_DEFINED(start, size);
#else
    (void)start, (void)size;
#endif
}

void *pym_valgrind_realloc(void *ptr, size_t size)
{
    if (ptr == NULL)
        return pym_malloc_hooked(size);
    if (size == 0) {
        pym_free_hooked(ptr);
        return NULL;
    }
    size_t old_size = pym_usable_size_unhooked(ptr);
    if (old_size == 0) { /* not a live block: let free's checks and memcheck say so */
        pym_free_hooked(ptr);
        return NULL;
    }
    void *moved = pym_malloc_hooked(size);
    if (moved == NULL)
        return NULL;
#ifdef HAVE_VALGRIND_MEMCHECK_H
    VALGRIND_DISABLE_ERROR_REPORTING;
#endif
    memcpy(moved, ptr, old_size < size ? old_size : size);
#ifdef HAVE_VALGRIND_MEMCHECK_H
    VALGRIND_ENABLE_ERROR_REPORTING;
#endif
    pym_free_hooked(ptr);
    return moved;
}
