/*
 * hooks.c -- allocation hooks: callbacks on every allocation and free, for
 * tracing tools in the spirit of Python's tracemalloc (pym_set_hooks).
 *
 * The same routing serves debug mode (debug.c, PYMALLOC_DEBUG=1), which is
 * chosen at start-up: the hooked paths then allocate and free through the
 * debug layer.
 *
 * Cost when no hook is installed: nothing on the malloc and free fast paths
 * and one predictable branch on a global flag on the others.  Installing
 * hooks sets the flag, fills the size tables malloc's fast path reads with
 * the bin that never holds a block (pym_no_bin), and points free's view of
 * the page map at an empty root: every malloc and free up to 128 KiB then
 * falls to its slow path, which tests the flag and comes here.  Removing
 * them restores both.  Other threads see the change within a call or two
 * (tables, view and flag are read without synchronisation).
 *
 * A hook may itself allocate (record a stack trace, grow a table): while a
 * thread runs a hook its nested allocations and frees are not reported to
 * the hook (pym_in_hook); inside a composite call such as realloc, which
 * reports once for itself, nothing is reported at all (pym_in_composite).
 * A hook must not free the block it is told about.
 *
 * Under valgrind (memcheck), the same reporting points tell memcheck about
 * every block the program gets and gives back (valgrind.c), so that its
 * leak, invalid-read and invalid-free checks see pymalloc's blocks as heap
 * blocks, as they see glibc's.
 */
#include <errno.h>
#include <string.h>

#include "fastpath.h"

int pym_hooks_active;
int pym_under_valgrind;
static pym_hooks_t pym_hooks;                    /* the installed callbacks (read relaxed) */
static pthread_mutex_t pym_hooks_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int pym_in_hook __attribute__((tls_model("initial-exec")));   /* a callback runs on this thread */
static __thread int pym_in_composite __attribute__((tls_model("initial-exec"))); /* calloc, realloc, ... report once */

int pym_set_hooks(const pym_hooks_t *hooks)
{
    pym_ensure_init();
    bool install = hooks != NULL && (hooks->on_alloc != NULL || hooks->on_free != NULL);
    pthread_mutex_lock(&pym_hooks_lock);
    __atomic_store_n(&pym_hooks.on_alloc, install ? hooks->on_alloc : NULL, __ATOMIC_RELAXED);
    __atomic_store_n(&pym_hooks.on_free, install ? hooks->on_free : NULL, __ATOMIC_RELAXED);
    __atomic_store_n(&pym_hooks.context, install ? hooks->context : NULL, __ATOMIC_RELAXED);
    pym_hooks_update_routing(install || pym_options.debug || pym_under_valgrind);
    pthread_mutex_unlock(&pym_hooks_lock);
    return 0;
}

void pym_hooks_update_routing(bool hooked)
{
    __atomic_store_n(&pym_hooks_active, hooked ? 1 : 0, __ATOMIC_RELEASE);
    pym_bin_tables_route(hooked);
    pym_pagemap_route(hooked);
}

void pym_hooks_suspend(void)
{
    pym_in_composite++;
}

void pym_hooks_resume(void)
{
    pym_in_composite--;
}

void pym_hooks_report_alloc(void *ptr, size_t size, bool zeroed)
{
    if (ptr == NULL || pym_in_composite)
        return;
    pym_valgrind_malloclike(ptr, size, zeroed);
    void (*on_alloc)(void *, size_t, void *) = __atomic_load_n(&pym_hooks.on_alloc, __ATOMIC_RELAXED);
    if (on_alloc == NULL || pym_in_hook)
        return;
    pym_in_hook++;
    on_alloc(ptr, size, __atomic_load_n(&pym_hooks.context, __ATOMIC_RELAXED));
    pym_in_hook--;
}

void pym_hooks_report_free(void *ptr)
{
    if (ptr == NULL || pym_in_composite)
        return;
    void (*on_free)(void *, void *) = __atomic_load_n(&pym_hooks.on_free, __ATOMIC_RELAXED);
    if (on_free != NULL && !pym_in_hook) {
        pym_in_hook++;
        on_free(ptr, __atomic_load_n(&pym_hooks.context, __ATOMIC_RELAXED));
        pym_in_hook--;
    }
    pym_valgrind_freelike(ptr);
}

void *pym_malloc_unhooked(size_t size)
{
    pym_ensure_init();
    if (size <= PYM_SMALL_MAX)
        return pym_malloc_class(pym_small_class_of[(size + PYM_ALIGNMENT - 1) / PYM_ALIGNMENT]);
    if (size <= PYM_MEDIUM_MAX)
        return pym_malloc_class(pym_medium_class_of(size));
    if (PYM_UNLIKELY(size > PTRDIFF_MAX)) {
        errno = ENOMEM;
        return NULL;
    }
    return pym_large_alloc(size, 0, false);
}

void pym_free_unhooked(void *ptr)
{
    pym_free_generic(ptr, pym_chunkmap_lookup((uintptr_t)ptr));
}

void *pym_malloc_hooked(size_t size)
{
    void *block = pym_options.debug ? pym_debug_malloc(size, false) : pym_malloc_unhooked(size);
    pym_hooks_report_alloc(block, size, false);
    return block;
}

void pym_free_hooked(void *ptr)
{
    pym_hooks_report_free(ptr); /* before: the block is still the program's */
    if (pym_options.debug)
        pym_debug_free(ptr);
    else
        pym_free_unhooked(ptr);
}
