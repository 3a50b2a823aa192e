/*
 * override.c -- the C library's allocation functions, replaced.
 *
 * Linked into libpymalloc (not libpymalloc-api).  Defining these symbols in
 * a preloaded or explicitly linked library makes every malloc/free of the
 * process -- the program's, libc's own (strdup, fopen, ...), libstdc++'s
 * operator new/delete -- come here.  glibc also exports __libc_* names that
 * some programs and libraries call directly; they are provided so no block
 * is ever handed to the wrong allocator.
 *
 * malloc and free compile the fast paths inline; the rest forward to the
 * pym_ functions (bound locally: the library links with -Bsymbolic-functions).
 * No request needs dlsym or anything of the real libc malloc.
 */
#include "fastpath.h"

#define PYM_EXPORT __attribute__((visibility("default")))

PYM_EXPORT void *malloc(size_t size)
{
    return pym_malloc_inline(size);
}

PYM_EXPORT void free(void *ptr)
{
    pym_free_inline(ptr);
}

PYM_EXPORT void *calloc(size_t count, size_t size)
{
    return pym_calloc(count, size);
}

PYM_EXPORT void *realloc(void *ptr, size_t size)
{
    return pym_realloc(ptr, size);
}

PYM_EXPORT void *reallocarray(void *ptr, size_t count, size_t size)
{
    return pym_reallocarray(ptr, count, size);
}

PYM_EXPORT int posix_memalign(void **out, size_t alignment, size_t size)
{
    return pym_posix_memalign(out, alignment, size);
}

PYM_EXPORT void *aligned_alloc(size_t alignment, size_t size)
{
    return pym_aligned_alloc(alignment, size);
}

PYM_EXPORT void *memalign(size_t alignment, size_t size)
{
    return pym_memalign(alignment, size);
}

PYM_EXPORT void *valloc(size_t size)
{
    return pym_valloc(size);
}

PYM_EXPORT void *pvalloc(size_t size)
{
    return pym_pvalloc(size);
}

PYM_EXPORT size_t malloc_usable_size(void *ptr)
{
    return pym_usable_size(ptr);
}

/* glibc's internal names. */
PYM_EXPORT void *__libc_malloc(size_t size)
{
    return pym_malloc_inline(size);
}

PYM_EXPORT void __libc_free(void *ptr)
{
    pym_free_inline(ptr);
}

PYM_EXPORT void *__libc_calloc(size_t count, size_t size)
{
    return pym_calloc(count, size);
}

PYM_EXPORT void *__libc_realloc(void *ptr, size_t size)
{
    return pym_realloc(ptr, size);
}

PYM_EXPORT void *__libc_memalign(size_t alignment, size_t size)
{
    return pym_memalign(alignment, size);
}

PYM_EXPORT void *__libc_valloc(size_t size)
{
    return pym_valloc(size);
}

PYM_EXPORT void *__libc_pvalloc(size_t size)
{
    return pym_pvalloc(size);
}

PYM_EXPORT int __posix_memalign(void **out, size_t alignment, size_t size)
{
    return pym_posix_memalign(out, alignment, size);
}
