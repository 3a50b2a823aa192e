/*
 * debug.c -- PYMALLOC_DEBUG=1: guard bytes, fill patterns and checks on
 * every block, like Python's PYTHONMALLOC=debug.
 *
 * Each block the program gets is carved out of a larger ordinary block:
 *
 *   underlying block: [ header 32 ][ front guard 16 ][ user data n ][ rear guard 16 ]
 *                                                    ^ the pointer the program gets
 *
 *   header: bytes 0..7 unused (a free block's link may land there), state
 *           (LIVE or FREED magic), offset of the user data from the
 *           underlying block, the size asked for, the underlying block size
 *   guards: PYM_DEBUG_GUARD (0xFD) bytes
 *   fresh user data: PYM_DEBUG_CLEAN (0xCD); calloc: zero
 *   after free: everything past the header PYM_DEBUG_DEAD (0xDD)
 *
 * free checks that the pointer is pymalloc's (a foreign pointer is an error
 * here, not ignored), that the header says LIVE (FREED: a double free;
 * anything else: not a block start, or a damaged header), then both guards
 * (underflow, overflow).  A block freed in debug mode and handed out again
 * at the same address by the same class is checked for writes after its
 * free before it is reused: every byte past its header must still be 0xDD.
 * Every error prints what happened, the address, the size asked for, the
 * class and the bytes around the fault, then aborts.
 *
 * Aligned requests put the user data at the first multiple of the alignment
 * past 48 bytes; the header sits just before the front guard as usual.
 * Debug mode is chosen at start-up and routes every entry point through the
 * hooked paths (hooks.c), so the fast paths carry no test for it.
 */
#include <errno.h>
#include <string.h>

#include "fastpath.h"

#define PYM_DEBUG_GUARD 0xFD        /* guard bytes around user data */
#define PYM_DEBUG_CLEAN 0xCD        /* fresh user data */
#define PYM_DEBUG_DEAD 0xDD         /* freed memory */
#define PYM_DEBUG_LIVE_MAGIC 0x4C495645u  /* "LIVE" */
#define PYM_DEBUG_FREED_MAGIC 0x46524545u /* "FREE" */
#define PYM_DEBUG_GUARD_SIZE 16     /* bytes of each guard */
#define PYM_DEBUG_PREFIX 48         /* header + front guard before the user data */

typedef struct pym_debug_header {
    uint64_t link;               /* unused: a pool's free list may write here */
    uint32_t state;              /* PYM_DEBUG_LIVE_MAGIC or PYM_DEBUG_FREED_MAGIC */
    uint32_t offset;             /* user data - underlying block */
    uint64_t requested;          /* bytes the program asked for */
    uint32_t block_size;         /* usable bytes of the underlying block (small and medium) */
    uint32_t reserved;
    unsigned char front_guard[PYM_DEBUG_GUARD_SIZE];
} pym_debug_header_t;
_Static_assert(sizeof(pym_debug_header_t) == PYM_DEBUG_PREFIX, "the header and front guard fill the prefix");

static pym_debug_header_t *pym_debug_header(const void *user)
{
    return (pym_debug_header_t *)((char *)user - PYM_DEBUG_PREFIX);
}

/* Print a fault with the bytes around `at` and abort. */
__attribute__((noreturn)) static void pym_debug_fault(const char *what, const void *user, size_t requested,
                                                      const void *at)
{
    char dump[3 * 32 + 1];
    const unsigned char *from = (const unsigned char *)at - 8;
    for (int i = 0; i < 32; i++) {
        static const char digits[] = "0123456789abcdef";
        dump[3 * i] = digits[from[i] >> 4];
        dump[3 * i + 1] = digits[from[i] & 15];
        dump[3 * i + 2] = i == 7 ? '|' : ' ';
    }
    dump[sizeof(dump) - 1] = '\0';
    int size_class = pym_size_class(requested + PYM_DEBUG_PREFIX + PYM_DEBUG_GUARD_SIZE);
    if (size_class >= 0)
        pym_report("pymalloc debug: %s: block %p, %zu bytes requested, size class %d (%zu-byte blocks with the "
                   "debug header and guards), fault at %p (block %+td)",
                   what, user, requested, size_class, pym_class_block_size(size_class), at,
                   (const char *)at - (const char *)user);
    else
        pym_report("pymalloc debug: %s: block %p, %zu bytes requested, a large block, fault at %p (block %+td)", what,
                   user, requested, at, (const char *)at - (const char *)user);
    pym_fatal("pymalloc debug: bytes %p..%p (| before the fault): %s", (const void *)from, (const void *)(from + 31),
              dump);
}

/* The first byte of [from, from + length) that is not `value`, or NULL. */
static const unsigned char *pym_debug_first_not(const void *from, size_t length, unsigned char value)
{
    const unsigned char *bytes = from;
    for (size_t i = 0; i < length; i++)
        if (bytes[i] != value)
            return bytes + i;
    return NULL;
}

/* Before reusing an underlying block: was it freed in debug mode at this
 * address with this block size, and has anything written into it since? */
static void pym_debug_check_reuse(void *raw)
{
    pym_debug_header_t *old = raw;
    size_t usable = pym_usable_size_unhooked(raw);
    if (old->state != PYM_DEBUG_FREED_MAGIC || old->offset != PYM_DEBUG_PREFIX || old->block_size != usable
        || old->requested > usable - PYM_DEBUG_PREFIX - PYM_DEBUG_GUARD_SIZE)
        return;
    const unsigned char *written = pym_debug_first_not(old->front_guard, usable - offsetof(pym_debug_header_t,
                                                                                             front_guard),
                                                       PYM_DEBUG_DEAD);
    if (written != NULL)
        pym_debug_fault("write after free (found when the block was handed out again)",
                        (char *)raw + PYM_DEBUG_PREFIX, old->requested, written);
}

static void *pym_debug_finish(void *raw, size_t offset, size_t size, bool zero)
{
    char *user = (char *)raw + offset;
    pym_debug_header_t *header = pym_debug_header(user);
    header->state = PYM_DEBUG_LIVE_MAGIC;
    header->offset = (uint32_t)offset;
    header->requested = size;
    size_t usable = pym_usable_size_unhooked(raw);
    header->block_size = usable <= UINT32_MAX ? (uint32_t)usable : 0;
    memset(header->front_guard, PYM_DEBUG_GUARD, PYM_DEBUG_GUARD_SIZE);
    memset(user, zero ? 0 : PYM_DEBUG_CLEAN, size);
    memset(user + size, PYM_DEBUG_GUARD, PYM_DEBUG_GUARD_SIZE);
    return user;
}

void *pym_debug_malloc(size_t size, bool zero)
{
    if (size > PTRDIFF_MAX - PYM_DEBUG_PREFIX - PYM_DEBUG_GUARD_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    void *raw = pym_malloc_unhooked(size + PYM_DEBUG_PREFIX + PYM_DEBUG_GUARD_SIZE);
    if (raw == NULL)
        return NULL;
    pym_debug_check_reuse(raw);
    return pym_debug_finish(raw, PYM_DEBUG_PREFIX, size, zero);
}

void *pym_debug_aligned(size_t alignment, size_t size)
{
    size_t offset = pym_align_up(PYM_DEBUG_PREFIX, alignment < 16 ? 16 : alignment);
    if (size > PTRDIFF_MAX - offset - PYM_DEBUG_GUARD_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    void *raw = pym_aligned_unhooked(alignment < 16 ? 16 : alignment, size + offset + PYM_DEBUG_GUARD_SIZE);
    if (raw == NULL)
        return NULL;
    if (offset == PYM_DEBUG_PREFIX)
        pym_debug_check_reuse(raw);
    return pym_debug_finish(raw, offset, size, false);
}

/* Check a block the program hands back (free or realloc); returns its
 * header.  Any problem is reported and aborts. */
static pym_debug_header_t *pym_debug_check_live(void *user, const char *caller)
{
    uintptr_t entry = pym_chunkmap_lookup((uintptr_t)user);
    if ((entry & PYM_CHUNK_KIND_MASK) == PYM_CHUNK_NONE)
        pym_fatal("pymalloc debug: %s(%p): pointer not allocated by pymalloc (a foreign pointer)", caller, user);
    if ((uintptr_t)user % 16 != 0 || pym_chunkmap_lookup((uintptr_t)user - PYM_DEBUG_PREFIX) != entry)
        pym_fatal("pymalloc debug: %s(%p): not the start of a block pymalloc handed out", caller, user);
    pym_debug_header_t *header = pym_debug_header(user);
    if (header->state == PYM_DEBUG_FREED_MAGIC)
        pym_debug_fault(caller[0] == 'f' ? "double free" : "realloc of a freed block", user, header->requested,
                        user);
    if (header->state != PYM_DEBUG_LIVE_MAGIC)
        pym_debug_fault("not a live block, or its header was overwritten (buffer underflow?)", user, 0,
                        &header->state);
    const unsigned char *bad = pym_debug_first_not(header->front_guard, PYM_DEBUG_GUARD_SIZE, PYM_DEBUG_GUARD);
    if (bad != NULL)
        pym_debug_fault("buffer underflow (guard bytes before the block overwritten)", user, header->requested, bad);
    bad = pym_debug_first_not((char *)user + header->requested, PYM_DEBUG_GUARD_SIZE, PYM_DEBUG_GUARD);
    if (bad != NULL)
        pym_debug_fault("buffer overflow (guard bytes after the block overwritten)", user, header->requested, bad);
    return header;
}

void pym_debug_free(void *user)
{
    if (user == NULL)
        return;
    pym_debug_header_t *header = pym_debug_check_live(user, "free");
    char *raw = (char *)user - header->offset;
    size_t usable = pym_usable_size_unhooked(raw);
    header->state = PYM_DEBUG_FREED_MAGIC;
    memset(header->front_guard, PYM_DEBUG_DEAD, usable - (size_t)((char *)header->front_guard - raw));
    pym_free_unhooked(raw);
}

void *pym_debug_realloc(void *user, size_t size)
{
    if (user == NULL)
        return pym_debug_malloc(size, false);
    pym_debug_header_t *header = pym_debug_check_live(user, "realloc");
    if (size == 0) {
        pym_debug_free(user);
        return NULL;
    }
    void *moved = pym_debug_malloc(size, false);
    if (moved == NULL)
        return NULL;
    memcpy(moved, user, header->requested < size ? header->requested : size);
    pym_debug_free(user);
    return moved;
}

/* The header of a live debug block, or NULL. */
static const pym_debug_header_t *pym_debug_live_header(const void *user)
{
    uintptr_t entry = pym_chunkmap_lookup((uintptr_t)user);
    if (user == NULL || (entry & PYM_CHUNK_KIND_MASK) == PYM_CHUNK_NONE
        || pym_chunkmap_lookup((uintptr_t)user - PYM_DEBUG_PREFIX) != entry)
        return NULL;
    const pym_debug_header_t *header = pym_debug_header(user);
    return header->state == PYM_DEBUG_LIVE_MAGIC ? header : NULL;
}

size_t pym_debug_usable_size(const void *user)
{
    const pym_debug_header_t *header = pym_debug_live_header(user);
    return header ? header->requested : 0;
}

bool pym_debug_owns(const void *user)
{
    return pym_debug_live_header(user) != NULL;
}
