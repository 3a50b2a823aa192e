/*
 * fuzz_alloc.c -- libFuzzer harness: input bytes become a sequence of
 * allocation calls on pymalloc's pym_ API, checked against a shadow model.
 * Built by clang -fsanitize=fuzzer,address,undefined together with the core
 * sources (`make fuzz`, `make check-fuzz`; tests/faults/Makefile.inc).
 *
 * The model: SLOTS slots, each empty or holding a live block with its
 * requested size, usable size, alignment and tag.  Every block is filled
 * over its whole usable size (a program may use all of it) with a pattern
 * that depends on the byte's offset and the block's tag (whole blocks up to
 * 16 KiB; above, the first and last 4 KiB and 64 bytes of every 64 KiB, or
 * of every MiB above 4 MiB), and
 * the pattern is checked before every free and realloc and by explicit check
 * operations.  At each allocation: usable size >= request (and equal to the
 * class's block size for malloc of small and medium sizes), alignment, no
 * overlap with any other live block, calloc memory zero.  realloc keeps the
 * first min(old, new) requested bytes, returns the same pointer when the
 * class does not change, and leaves the block intact when it fails.  Bad
 * requests (sizes above PTRDIFF_MAX, overflowing calloc/reallocarray
 * products, alignments that are not powers of two) fail with the documented
 * errno and touch nothing.  A helper thread allocates and frees on request,
 * so blocks cross threads both ways, and exits on request (its pools are
 * abandoned, then adopted).  After each input everything is freed, caches are
 * flushed and trimmed, and the statistics must show no block in use.
 *
 * Sizes cover every class and boundary: 0..512, 513..128 KiB, exact block
 * sizes +-1, large blocks up to 4 MiB, page multiples, and the 64 MiB
 * direct-mapping threshold; the live total is capped at 192 MiB of address
 * space (a few MiB of it touched).
 *
 * Input format (each operation; missing bytes read as 0):
 *   byte 0    operation (mod OP_COUNT)
 *   byte 1    slot (mod SLOTS)
 *   then the operation's arguments (sizes: a kind byte and up to 3 bytes).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faults.h"
#include "pymalloc.h"

#define SLOTS 64
#define LIVE_BYTES_MAX ((size_t)192 << 20)
#define DIRECT_THRESHOLD ((size_t)64 << 20)
#define MEDIUM_MAX ((size_t)128 << 10)
#define SMALL_MAX 512
#define BURST_MAX 96
#define FULL_MAX 16384  /* blocks up to this size are filled and checked whole; above, sampled */

/* The sampling of a block of `size` bytes: runs every 64 KiB, every MiB in
 * blocks above 4 MiB (a 64 MiB block then costs 70 page faults, not 1030). */
static sampled_iter_t spans(size_t size, size_t limit)
{
    return sampled_spans_tuned(size, limit, FULL_MAX, size > ((size_t)4 << 20) ? (size_t)1 << 20 : 65536);
}

/* ---- failures -------------------------------------------------------------------- */
static void fail(const char *format, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fputs("fuzz_alloc: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    abort();
}

#define EXPECT(cond, ...)                \
    do {                                 \
        if (__builtin_expect(!(cond), 0)) \
            fail(__VA_ARGS__);           \
    } while (0)

/* ---- input --------------------------------------------------------------------------- */
typedef struct input {
    const uint8_t *data;
    size_t size, at;
} input_t;

static unsigned in_byte(input_t *in)
{
    return in->at < in->size ? in->data[in->at++] : 0;
}

static unsigned in_u16(input_t *in)
{
    unsigned low = in_byte(in);
    return low | in_byte(in) << 8;
}

static unsigned in_u24(input_t *in)
{
    unsigned low = in_u16(in);
    return low | in_byte(in) << 16;
}

/* A request size of every kind; *absurd is set for sizes that must fail. */
static size_t in_size(input_t *in, bool *absurd)
{
    unsigned kind = in_byte(in) % 16;
    *absurd = false;
    switch (kind) {
    case 0: case 1: case 2: case 3: case 4:
        return in_u16(in) % (SMALL_MAX + 1);                     /* small, 0..512 */
    case 5: case 6: case 7:
        return SMALL_MAX + 1 + in_u24(in) % (MEDIUM_MAX - SMALL_MAX); /* medium */
    case 8: case 9: {                                            /* a class's block size, -1, 0, +1 */
        unsigned c = in_byte(in) % PYM_STATS_CLASSES;
        int delta = (int)(in_byte(in) % 3) - 1;
        size_t block = pym_class_block_size((int)c);
        return (size_t)((long)block + delta);
    }
    case 10:
        return in_byte(in) % 17;                                 /* tiny */
    case 11: case 12:
        return MEDIUM_MAX + 1 + in_u24(in) % (4u << 20);         /* large, up to 4 MiB */
    case 13: {                                                   /* page multiples +-1 */
        size_t pages = 1 + in_u16(in) % 1024;
        int delta = (int)(in_byte(in) % 3) - 1;
        return (size_t)((long)(pages * 4096) + delta);
    }
    case 14: {                                                   /* around the direct threshold */
        unsigned r = in_u16(in);
        return DIRECT_THRESHOLD - 65536 + (size_t)r * 2;
    }
    default: {                                                   /* absurd: must fail with ENOMEM */
        static const size_t absurd_sizes[] = {SIZE_MAX, SIZE_MAX - 4095, (size_t)PTRDIFF_MAX + 1,
                                              (size_t)1 << 63, ((size_t)1 << 63) + 4096};
        *absurd = true;
        return absurd_sizes[in_byte(in) % 5];
    }
    }
}

/* ---- the pattern ------------------------------------------------------------------- */
static uint8_t pattern_table[8192]; /* 4 KiB of noise, twice: any 4 KiB run starting below 4096 */

static void pattern_init(void)
{
    uint64_t state = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < 4096; i++)
        pattern_table[i] = pattern_table[i + 4096] = (uint8_t)(rng_next(&state) >> 56);
}

/* Byte at offset i of a block with tag t: pattern_table[(i + t) % 4096],
 * except the first 8 bytes, which hold the tag itself. */
static void span_fill(uint8_t *block, size_t offset, size_t length, uint64_t tag)
{
    while (length > 0) {
        size_t start = (offset + tag) & 4095, chunk = length < 4096 ? length : 4096;
        memcpy(block + offset, pattern_table + start, chunk);
        offset += chunk;
        length -= chunk;
    }
}

static size_t span_mismatch(const uint8_t *block, size_t offset, size_t length, uint64_t tag)
{
    while (length > 0) {
        size_t start = (offset + tag) & 4095, chunk = length < 4096 ? length : 4096;
        if (memcmp(block + offset, pattern_table + start, chunk) != 0) {
            for (size_t i = 0; i < chunk; i++)
                if (block[offset + i] != pattern_table[start + i])
                    return offset + i;
        }
        offset += chunk;
        length -= chunk;
    }
    return SIZE_MAX;
}

static void block_fill(void *block, size_t size, uint64_t tag)
{
    size_t offset, length;
    for (sampled_iter_t it = spans(size, size); sampled_next(&it, &offset, &length);)
        span_fill(block, offset, length, tag);
    if (size >= 8)
        memcpy(block, &tag, 8);
}

/* First offset below `limit` that does not hold what block_fill(block,
 * size, tag) wrote, SIZE_MAX if none. */
static size_t block_mismatch(const void *block, size_t size, uint64_t tag, size_t limit)
{
    size_t offset, length;
    const uint8_t *bytes = block;
    if (size >= 8 && limit > 0) {
        uint8_t stored[8];
        memcpy(stored, bytes, 8);
        for (size_t i = 0; i < 8 && i < limit; i++)
            if (stored[i] != (uint8_t)(tag >> (8 * i)))
                return i;
    }
    for (sampled_iter_t it = spans(size, limit); sampled_next(&it, &offset, &length);) {
        size_t skip = size >= 8 && offset < 8 ? 8 - offset : 0;
        if (skip >= length)
            continue;
        size_t bad = span_mismatch(bytes, offset + skip, length - skip, tag);
        if (bad != SIZE_MAX)
            return bad;
    }
    return SIZE_MAX;
}

/* ---- the model ------------------------------------------------------------------------ */
typedef struct slot {
    uint8_t *ptr;          /* NULL: empty */
    size_t requested;
    size_t usable;
    uint64_t tag;
} slot_t;

static slot_t slots[SLOTS];
static size_t live_bytes;
static uint64_t next_tag = 1;

static void slot_check(const slot_t *s, size_t limit, const char *when)
{
    size_t usable = pym_usable_size(s->ptr);
    EXPECT(usable == s->usable, "%s: block %p (%zu requested): usable size changed from %zu to %zu", when,
           (void *)s->ptr, s->requested, s->usable, usable);
    size_t bad = block_mismatch(s->ptr, s->usable, s->tag, limit);
    EXPECT(bad == SIZE_MAX, "%s: block %p (%zu requested, %zu usable) corrupted at offset %zu", when,
           (void *)s->ptr, s->requested, s->usable, bad);
}

static int class_of_block_size(size_t usable)
{
    for (int c = 0; c < PYM_STATS_CLASSES; c++)
        if (pym_class_block_size(c) == usable)
            return c;
    return -1;
}

/* Record a fresh block: checks common to every allocation function. */
static void slot_take(slot_t *s, void *p, size_t requested, size_t alignment, const char *what)
{
    EXPECT(p != NULL, "%s(%zu) returned NULL", what, requested);
    size_t usable = pym_usable_size(p);
    EXPECT(usable >= requested && usable > 0, "%s(%zu) = %p: usable size %zu", what, requested, p, usable);
    EXPECT(((uintptr_t)p & (alignment - 1)) == 0, "%s(%zu) = %p: not aligned to %zu", what, requested, p, alignment);
    EXPECT(pym_owns(p), "%s(%zu) = %p: pym_owns says no", what, requested, p);
    /* A class's block size, or a large mapping's size (page multiple; also
     * below 128 KiB for alignments no medium class satisfies). */
    EXPECT(usable % 4096 == 0 || (usable <= MEDIUM_MAX && class_of_block_size(usable) >= 0),
           "%s(%zu) = %p: usable size %zu is neither a class's block size nor a page multiple", what, requested, p,
           usable);
    for (int i = 0; i < SLOTS; i++) {
        const slot_t *o = &slots[i];
        if (o == s || o->ptr == NULL)
            continue;
        EXPECT((uint8_t *)p + usable <= o->ptr || o->ptr + o->usable <= (uint8_t *)p,
               "%s(%zu) = %p (+%zu) overlaps live block %p (+%zu)", what, requested, p, usable, (void *)o->ptr,
               o->usable);
    }
    s->ptr = p;
    s->requested = requested;
    s->usable = usable;
    s->tag = next_tag++;
    live_bytes += usable;
    block_fill(p, usable, s->tag);
}

static void slot_forget(slot_t *s)
{
    live_bytes -= s->usable;
    s->ptr = NULL;
}

static void slot_free(slot_t *s)
{
    if (s->ptr == NULL)
        return;
    slot_check(s, s->usable, "free");
    pym_free(s->ptr);
    slot_forget(s);
}

static bool budget_allows(size_t size)
{
    return size <= LIVE_BYTES_MAX && live_bytes + size + 4096 <= LIVE_BYTES_MAX;
}

static size_t malloc_alignment(size_t size)
{
    return size <= 8 ? 8 : 16;
}

/* ---- the helper thread ----------------------------------------------------------------- */
enum helper_op { HELPER_NONE, HELPER_MALLOC, HELPER_FREE, HELPER_TRIM, HELPER_EXIT };
static pthread_t helper;
static bool helper_running;
static pthread_mutex_t helper_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t helper_cond = PTHREAD_COND_INITIALIZER;
static enum helper_op helper_request;
static void *helper_ptr;
static size_t helper_size;

static void *helper_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&helper_lock);
    for (;;) {
        while (helper_request == HELPER_NONE)
            pthread_cond_wait(&helper_cond, &helper_lock);
        enum helper_op op = helper_request;
        switch (op) {
        case HELPER_MALLOC:
            helper_ptr = pym_malloc(helper_size);
            break;
        case HELPER_FREE:
            pym_free(helper_ptr);
            break;
        case HELPER_TRIM:
            pym_trim();
            break;
        default:
            break;
        }
        helper_request = HELPER_NONE;
        pthread_cond_broadcast(&helper_cond);
        if (op == HELPER_EXIT)
            break;
    }
    pthread_mutex_unlock(&helper_lock);
    return NULL;
}

static void *helper_call(enum helper_op op, void *ptr, size_t size)
{
    if (!helper_running) {
        if (op == HELPER_EXIT || op == HELPER_TRIM)
            return NULL;
        EXPECT(pthread_create(&helper, NULL, helper_main, NULL) == 0, "pthread_create failed");
        helper_running = true;
    }
    pthread_mutex_lock(&helper_lock);
    helper_ptr = ptr;
    helper_size = size;
    helper_request = op;
    pthread_cond_broadcast(&helper_cond);
    while (helper_request != HELPER_NONE)
        pthread_cond_wait(&helper_cond, &helper_lock);
    void *result = helper_ptr;
    pthread_mutex_unlock(&helper_lock);
    if (op == HELPER_EXIT) {
        pthread_join(helper, NULL);
        helper_running = false;
    }
    return result;
}

/* ---- operations -------------------------------------------------------------------------- */
enum {
    OP_MALLOC, OP_CALLOC, OP_REALLOC, OP_FREE, OP_ALIGNED, OP_USABLE, OP_FLUSH, OP_REMOTE_FREE,
    OP_REMOTE_MALLOC, OP_HELPER_EXIT, OP_REALLOCARRAY, OP_BAD, OP_CHECK, OP_FREE_ALL, OP_TRIM, OP_BURST,
    OP_MALLOC2, OP_REALLOC2, OP_FREE2, OP_COUNT
};

static void op_malloc(slot_t *s, input_t *in)
{
    bool absurd;
    size_t size = in_size(in, &absurd);
    if (absurd) {
        errno = 0;
        void *p = pym_malloc(size);
        EXPECT(p == NULL && errno == ENOMEM, "pym_malloc(%zu) = %p, errno %d", size, p, errno);
        return;
    }
    slot_free(s);
    if (!budget_allows(size))
        return;
    void *p = pym_malloc(size);
    slot_take(s, p, size, malloc_alignment(size), "pym_malloc");
    if (size <= MEDIUM_MAX) {
        size_t expected = pym_class_block_size(pym_size_class(size));
        EXPECT(s->usable == expected, "pym_malloc(%zu): usable size %zu, class block size %zu", size, s->usable,
               expected);
    }
}

static void op_calloc(slot_t *s, input_t *in)
{
    bool absurd;
    size_t total = in_size(in, &absurd);
    size_t count = 1 + in_byte(in) % 16;
    if (absurd) {
        errno = 0;
        void *p = pym_calloc(count + 1, total / (count + 1) + 1); /* overflows */
        EXPECT(p == NULL && errno == ENOMEM, "pym_calloc(%zu, %zu) = %p, errno %d", count + 1,
               total / (count + 1) + 1, p, errno);
        return;
    }
    size_t size = total / count;
    slot_free(s);
    if (!budget_allows(count * size))
        return;
    uint8_t *p = pym_calloc(count, size);
    EXPECT(p != NULL, "pym_calloc(%zu, %zu) returned NULL", count, size);
    size_t offset, length;
    for (sampled_iter_t it = spans(count * size, count * size);
         sampled_next(&it, &offset, &length);)
        EXPECT(bytes_all(p + offset, length, 0), "pym_calloc(%zu, %zu) = %p: not zero in [%zu, %zu)", count, size,
               (void *)p, offset, offset + length);
    slot_take(s, p, count * size, malloc_alignment(count * size), "pym_calloc");
}

/* realloc of slot `s` to `size`, checked. */
static void do_realloc(slot_t *s, size_t size, bool absurd)
{
    if (s->ptr == NULL) {
        if (absurd) {
            errno = 0;
            void *p = pym_realloc(NULL, size);
            EXPECT(p == NULL && errno == ENOMEM, "pym_realloc(NULL, %zu) = %p, errno %d", size, p, errno);
            return;
        }
        if (!budget_allows(size))
            return;
        void *p = pym_realloc(NULL, size);
        slot_take(s, p, size, malloc_alignment(size), "pym_realloc(NULL)");
        return;
    }
    slot_check(s, s->usable, "before realloc");
    if (absurd) {
        errno = 0;
        void *p = pym_realloc(s->ptr, size);
        EXPECT(p == NULL && errno == ENOMEM, "pym_realloc(%p, %zu) = %p, errno %d", (void *)s->ptr, size, p, errno);
        slot_check(s, s->usable, "after a failed realloc");
        return;
    }
    if (size == 0) { /* frees the block, returns NULL */
        void *p = pym_realloc(s->ptr, 0);
        EXPECT(p == NULL, "pym_realloc(%p, 0) = %p, not NULL", (void *)s->ptr, p);
        slot_forget(s);
        return;
    }
    if (size > s->usable && !budget_allows(size))
        return;
    int old_class = s->usable <= MEDIUM_MAX ? class_of_block_size(s->usable) : -1;
    uint8_t *old = s->ptr;
    uint8_t *p = pym_realloc(old, size);
    EXPECT(p != NULL, "pym_realloc(%p, %zu) returned NULL", (void *)old, size);
    if (old_class >= 0 && pym_size_class(size) == old_class)
        EXPECT(p == old, "pym_realloc(%p, %zu) within class %d moved the block to %p", (void *)old, size, old_class,
               (void *)p);
    size_t kept = s->requested < size ? s->requested : size;
    size_t bad = block_mismatch(p, s->usable, s->tag, kept);
    EXPECT(bad == SIZE_MAX, "pym_realloc(%p (%zu requested), %zu) = %p: contents lost at offset %zu", (void *)old,
           s->requested, size, (void *)p, bad);
    slot_forget(s);
    slot_take(s, p, size, malloc_alignment(size), "pym_realloc");
}

static void op_realloc(slot_t *s, input_t *in)
{
    bool absurd;
    size_t size = in_size(in, &absurd);
    do_realloc(s, size, absurd);
}

static void op_aligned(slot_t *s, input_t *in)
{
    unsigned how = in_byte(in) % 5;      /* aligned_alloc, memalign, posix_memalign, valloc, pvalloc */
    unsigned shift = in_byte(in) % 24;   /* 1 B .. 8 MiB */
    bool bad_alignment = how <= 2 && in_byte(in) % 16 == 0;
    bool absurd;
    size_t size = in_size(in, &absurd);
    size_t alignment = how >= 3 ? 4096 : (size_t)1 << shift;
    if (bad_alignment)
        alignment = alignment * 3 + (shift == 0 ? 2 : 0); /* not a power of two */
    bool must_fail = absurd || bad_alignment || (how == 2 && alignment < sizeof(void *));
    int expected_error = bad_alignment || (how == 2 && alignment < sizeof(void *)) ? EINVAL : ENOMEM;
    if (!must_fail) {
        slot_free(s);
        if (!budget_allows(size + alignment))
            return;
    }
    static const char *const names[] = {"pym_aligned_alloc", "pym_memalign", "pym_posix_memalign", "pym_valloc",
                                        "pym_pvalloc"};
    void *p = NULL;
    int error;
    if (how == 2) {
        void *sentinel = &next_tag;
        p = sentinel;
        errno = EDOM;
        error = pym_posix_memalign(&p, alignment, size);
        EXPECT(errno == EDOM, "pym_posix_memalign(%zu, %zu) changed errno to %d", alignment, size, errno);
        if (error != 0) {
            EXPECT(p == sentinel, "pym_posix_memalign(%zu, %zu) failed with %d but wrote %p", alignment, size, error,
                   p);
            p = NULL;
        }
    } else {
        errno = 0;
        p = how == 0 ? pym_aligned_alloc(alignment, size)
            : how == 1 ? pym_memalign(alignment, size)
            : how == 3 ? pym_valloc(size)
                       : pym_pvalloc(size);
        error = p == NULL ? errno : 0;
    }
    if (must_fail) {
        EXPECT(p == NULL && error == expected_error, "%s(%zu, %zu) = %p, error %d (expected %d)", names[how],
               alignment, size, p, error, expected_error);
        return;
    }
    EXPECT(p != NULL && error == 0, "%s(%zu, %zu) failed with %d", names[how], alignment, size, error);
    slot_take(s, p, size, alignment, names[how]);
    if (how == 4 && size > 0)
        EXPECT(s->usable >= (size + 4095) / 4096 * 4096, "pym_pvalloc(%zu): usable size %zu below the page multiple",
               size, s->usable);
}

static void op_usable(slot_t *s, input_t *in)
{
    unsigned offset = in_u16(in);
    if (s->ptr == NULL) {
        EXPECT(pym_usable_size(NULL) == 0 && !pym_owns(NULL), "usable size of NULL");
        return;
    }
    EXPECT(pym_usable_size(s->ptr) == s->usable, "usable size of %p changed", (void *)s->ptr);
    EXPECT(pym_owns(s->ptr), "pym_owns(%p) of a live block is 0", (void *)s->ptr);
    size_t inside = 1 + offset % (s->usable > 1 ? s->usable - 1 : 1);
    if (inside < s->usable) {
        EXPECT(pym_usable_size(s->ptr + inside) == 0, "pym_usable_size(%p + %zu) inside a block is %zu",
               (void *)s->ptr, inside, pym_usable_size(s->ptr + inside));
        EXPECT(!pym_owns(s->ptr + inside), "pym_owns(%p + %zu) inside a block is nonzero", (void *)s->ptr, inside);
    }
}

static void op_remote_free(slot_t *s)
{
    if (s->ptr == NULL)
        return;
    slot_check(s, s->usable, "before a free by another thread");
    helper_call(HELPER_FREE, s->ptr, 0);
    slot_forget(s);
}

static void op_remote_malloc(slot_t *s, input_t *in)
{
    bool absurd;
    size_t size = in_size(in, &absurd);
    if (absurd)
        return;
    slot_free(s);
    if (!budget_allows(size))
        return;
    void *p = helper_call(HELPER_MALLOC, NULL, size);
    slot_take(s, p, size, malloc_alignment(size), "pym_malloc on the helper thread");
}

static void op_reallocarray(slot_t *s, input_t *in)
{
    size_t count = 1 + in_byte(in) % 64;
    size_t size = in_u16(in);
    bool overflow = in_byte(in) % 4 == 0;
    if (overflow) {
        size_t huge = SIZE_MAX / count + 1 + size;
        if (count == 1) /* 1 * anything cannot overflow: use a product that does */
            count = 2, huge = SIZE_MAX / 2 + 1;
        void *old = s->ptr;
        errno = 0;
        void *p = pym_reallocarray(old, count, huge);
        EXPECT(p == NULL && errno == ENOMEM, "pym_reallocarray(%p, %zu, %zu) = %p, errno %d", old, count, huge, p,
               errno);
        if (s->ptr != NULL)
            slot_check(s, s->usable, "after an overflowing reallocarray");
        return;
    }
    if (s->ptr == NULL) {
        if (!budget_allows(count * size))
            return;
        void *p = pym_reallocarray(NULL, count, size);
        if (count * size == 0 && p == NULL)
            return;
        slot_take(s, p, count * size, malloc_alignment(count * size), "pym_reallocarray(NULL)");
        return;
    }
    do_realloc(s, count * size, false);
}

static void op_bad(input_t *in)
{
    unsigned which = in_byte(in) % 6;
    void *p = NULL;
    errno = 0;
    switch (which) {
    case 0:
        p = pym_malloc(SIZE_MAX);
        EXPECT(p == NULL && errno == ENOMEM, "pym_malloc(SIZE_MAX) = %p, errno %d", p, errno);
        break;
    case 1:
        p = pym_calloc(SIZE_MAX / 2, 3);
        EXPECT(p == NULL && errno == ENOMEM, "pym_calloc overflow = %p, errno %d", p, errno);
        break;
    case 2: {
        size_t alignment = 8 + 8 * (1 + in_byte(in) % 7); /* 16..64, maybe not a power of two */
        if ((alignment & (alignment - 1)) == 0)
            alignment += 8;
        void *sentinel = &next_tag;
        p = sentinel;
        errno = EDOM;
        int result = pym_posix_memalign(&p, alignment, 100);
        EXPECT(result == EINVAL && p == sentinel && errno == EDOM, "pym_posix_memalign(%zu) = %d, errno %d",
               alignment, result, errno);
        break;
    }
    case 3:
        p = pym_aligned_alloc(3, 64);
        EXPECT(p == NULL && errno == EINVAL, "pym_aligned_alloc(3, 64) = %p, errno %d", p, errno);
        break;
    case 4:
        p = pym_aligned_alloc((size_t)1 << 63, 64);
        EXPECT(p == NULL && errno == ENOMEM, "pym_aligned_alloc(2^63, 64) = %p, errno %d", p, errno);
        break;
    default:
        pym_free(NULL);
        EXPECT(pym_usable_size(NULL) == 0, "pym_usable_size(NULL)");
        EXPECT(pym_usable_size(&next_tag) == 0 && !pym_owns(&next_tag), "a static address is pymalloc's");
        break;
    }
}

/* A burst of same-size small or medium blocks, freed in a shuffled order:
 * bins refill, overflow and flush. */
static void op_burst(input_t *in)
{
    static void *burst[BURST_MAX];
    static uint64_t tags[BURST_MAX];
    size_t count = 1 + in_byte(in) % BURST_MAX;
    size_t size = in_byte(in) % 2 ? in_u16(in) % (SMALL_MAX + 1) : SMALL_MAX + 1 + in_u16(in) % 16384;
    uint64_t order = in_u16(in) | 1;
    for (size_t i = 0; i < count; i++) {
        burst[i] = pym_malloc(size);
        EXPECT(burst[i] != NULL, "burst: pym_malloc(%zu) returned NULL", size);
        tags[i] = next_tag++;
        block_fill(burst[i], size, tags[i]);
    }
    for (size_t i = 0; i < count; i++) {
        for (int o = 0; o < SLOTS; o++)
            EXPECT(slots[o].ptr == NULL || (uint8_t *)burst[i] + size <= slots[o].ptr
                       || slots[o].ptr + slots[o].usable <= (uint8_t *)burst[i],
                   "burst block %p overlaps live block %p", burst[i], (void *)slots[o].ptr);
    }
    for (size_t n = 0; n < count; n++) {
        size_t i = (n * order) % count;
        if (burst[i] == NULL) /* `order` and count not coprime: this one is gone already */
            continue;
        size_t bad = block_mismatch(burst[i], size, tags[i], size);
        EXPECT(bad == SIZE_MAX, "burst block %p (%zu bytes) corrupted at %zu", burst[i], size, bad);
        pym_free(burst[i]);
        burst[i] = NULL;
    }
    for (size_t i = 0; i < count; i++) /* `order` may not be coprime with count: free what is left */
        pym_free(burst[i]);
}

static void free_all(void)
{
    for (int i = 0; i < SLOTS; i++)
        slot_free(&slots[i]);
}

static void run_operation(input_t *in)
{
    unsigned op = in_byte(in) % OP_COUNT;
    slot_t *s = &slots[in_byte(in) % SLOTS];
    switch (op) {
    case OP_MALLOC: case OP_MALLOC2: op_malloc(s, in); break;
    case OP_CALLOC: op_calloc(s, in); break;
    case OP_REALLOC: case OP_REALLOC2: op_realloc(s, in); break;
    case OP_FREE: case OP_FREE2: slot_free(s); break;
    case OP_ALIGNED: op_aligned(s, in); break;
    case OP_USABLE: op_usable(s, in); break;
    case OP_FLUSH: pym_flush_thread_cache(); break;
    case OP_REMOTE_FREE: op_remote_free(s); break;
    case OP_REMOTE_MALLOC: op_remote_malloc(s, in); break;
    case OP_HELPER_EXIT: helper_call(HELPER_EXIT, NULL, 0); break;
    case OP_REALLOCARRAY: op_reallocarray(s, in); break;
    case OP_BAD: op_bad(in); break;
    case OP_CHECK: if (s->ptr != NULL) slot_check(s, s->usable, "check"); break;
    case OP_FREE_ALL: free_all(); break;
    case OP_TRIM: pym_trim(); break;
    default: op_burst(in); break;
    }
}

/* No block may be in use once everything is freed: caches flushed, remote
 * lists collected (pym_trim does both), on both threads. */
static void check_nothing_in_use(void)
{
    pym_trim();
    helper_call(HELPER_TRIM, NULL, 0);
    pym_trim();
    pym_stats_t stats;
    pym_stats_get(&stats);
    size_t in_use = stats.large_count;
    for (int c = 0; c < PYM_STATS_CLASSES; c++)
        in_use += stats.classes[c].blocks_used + stats.classes[c].blocks_cached;
    EXPECT(in_use == 0, "%zu blocks (%zu large) still in use after everything was freed", in_use, stats.large_count);
    EXPECT(live_bytes == 0, "model: %zu live bytes after freeing everything", live_bytes);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    pattern_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input_t in = {data, size, 0};
    while (in.at < in.size)
        run_operation(&in);
    free_all();
    check_nothing_in_use();
    return 0;
}
