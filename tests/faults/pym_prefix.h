/*
 * pym_prefix.h -- force-included (-include) by tests/faults/sanitize.sh when
 * it builds the malloc-level integration tests (tests/api_*.c) with a
 * sanitizer: the sanitizer's runtime owns malloc and free, so the tests'
 * calls are renamed to pymalloc's pym_ functions, which are compiled into
 * the same program from the core sources.  Memory the C library allocates
 * for itself (stdio, strdup) stays the runtime's.
 *
 * The system headers come first, so their declarations keep the real names;
 * every later use of the names in the test -- calls and function pointers
 * alike -- resolves to pym_.
 */
#ifndef PYM_TEST_PREFIX_H
#define PYM_TEST_PREFIX_H

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "pymalloc.h"

#define malloc pym_malloc
#define free pym_free
#define calloc pym_calloc
#define realloc pym_realloc
#define reallocarray pym_reallocarray
#define aligned_alloc pym_aligned_alloc
#define posix_memalign pym_posix_memalign
#define memalign pym_memalign
#define valloc pym_valloc
#define pvalloc pym_pvalloc
#define malloc_usable_size pym_usable_size
#define malloc_trim(pad) ((void)(pad), pym_trim())

#endif
