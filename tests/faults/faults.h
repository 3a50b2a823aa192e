/*
 * faults.h -- helpers shared by the reliability tests of tests/faults/
 * (oom, fork_storm, thread_churn, soak, oom_ulimit_prog); with check.h and
 * testlib.h from tests/.
 *
 *   sampled_fill(block, size, tag), sampled_ok(block, size, tag)
 *       testlib's tag pattern, on the whole block up to SAMPLED_FULL_MAX
 *       bytes; above that on its first and last 4 KiB and 64 bytes of every
 *       64 KiB in between, so multi-MiB blocks cost a few page faults, not a
 *       memset of megabytes.  Sizes below 8 hold the tag's fill byte only.
 *   sampled_ok_prefix(block, size, tag, limit)
 *       the same check clipped to the first `limit` bytes (realloc's kept part)
 *   vm_kib()     VmSize, same source
 *
 * Everything is static inline and uses only the C library: the helpers
 * never allocate, so they work in programs whose malloc is pymalloc, in
 * programs that use pymalloc through pym_ only, and under `ulimit -v`.
 */
#ifndef PYM_TEST_FAULTS_H
#define PYM_TEST_FAULTS_H

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pymalloc.h"
#include "testlib.h"

#define SAMPLED_FULL_MAX (256 * 1024) /* blocks up to this size are filled and checked whole */
#define SAMPLED_EDGE 4096             /* bytes filled at each end of a bigger block */
#define SAMPLED_STRIDE 65536          /* and 64 bytes at every multiple of this in between */
#define SAMPLED_RUN 64

/* Walks the spans the sampling scheme covers in a block of `size` bytes,
 * clipped to its first `limit` bytes:
 *     sampled_iter_t it = sampled_spans(size, limit);
 *     while (sampled_next(&it, &offset, &length)) ... */
typedef struct sampled_iter {
    size_t size, limit, at;
    int phase; /* 0: head (or the whole block), 1: stride runs, 2: tail, 3: done */
    size_t full_max; /* blocks up to this size are one span */
    size_t stride;   /* distance between the 64-byte runs */
} sampled_iter_t;

static inline sampled_iter_t sampled_spans(size_t size, size_t limit)
{
    sampled_iter_t it = {size, limit < size ? limit : size, SAMPLED_STRIDE, 0, SAMPLED_FULL_MAX, SAMPLED_STRIDE};
    return it;
}

/* The same with blocks up to `full_max` (>= 2 * SAMPLED_EDGE) covered whole
 * and the 64-byte runs `stride` bytes apart (a multiple of 4096). */
static inline sampled_iter_t sampled_spans_tuned(size_t size, size_t limit, size_t full_max, size_t stride)
{
    sampled_iter_t it = {size, limit < size ? limit : size, stride, 0, full_max, stride};
    return it;
}

static inline bool sampled_next(sampled_iter_t *it, size_t *offset, size_t *length)
{
    for (;;) {
        size_t start, end;
        if (it->phase == 0) {
            start = 0;
            end = it->size <= it->full_max ? it->size : SAMPLED_EDGE;
            it->phase = it->size <= it->full_max ? 3 : 1;
        } else if (it->phase == 1) {
            if (it->at + SAMPLED_RUN > it->size - SAMPLED_EDGE) {
                it->phase = 2;
                continue;
            }
            start = it->at;
            end = it->at + SAMPLED_RUN;
            it->at += it->stride;
        } else if (it->phase == 2) {
            start = it->size - SAMPLED_EDGE;
            end = it->size;
            it->phase = 3;
        } else {
            return false;
        }
        if (end > it->limit)
            end = it->limit;
        if (start >= end) {
            if (start >= it->limit)
                it->phase = 3; /* spans come in ascending order: nothing more below the limit */
            continue;
        }
        *offset = start;
        *length = end - start;
        return true;
    }
}

static inline void sampled_fill(void *block, size_t size, uint64_t tag)
{
    unsigned char *bytes = (unsigned char *)block;
    uint8_t fill = fill_byte_of(tag);
    size_t offset, length;
    for (sampled_iter_t it = sampled_spans(size, size); sampled_next(&it, &offset, &length);)
        memset(bytes + offset, fill, length);
    if (size >= sizeof(tag))
        memcpy(bytes, &tag, sizeof(tag));
}

/* Whether the first `limit` bytes of a block filled by sampled_fill(block,
 * size, tag) still hold what was written there. */
static inline bool sampled_ok_prefix(const void *block, size_t size, uint64_t tag, size_t limit)
{
    const unsigned char *bytes = (const unsigned char *)block;
    uint8_t fill = fill_byte_of(tag);
    size_t offset, length, tag_bytes = size >= sizeof(tag) ? sizeof(tag) : 0;
    for (sampled_iter_t it = sampled_spans(size, limit); sampled_next(&it, &offset, &length);) {
        size_t skip = offset < tag_bytes ? tag_bytes - offset : 0; /* the tag word is compared below */
        if (skip < length && !bytes_all(bytes + offset + skip, length - skip, fill))
            return false;
    }
    if (tag_bytes != 0 && limit >= tag_bytes) {
        uint64_t stored;
        memcpy(&stored, bytes, sizeof(stored));
        return stored == tag;
    }
    return true;
}

static inline bool sampled_ok(const void *block, size_t size, uint64_t tag)
{
    return sampled_ok_prefix(block, size, tag, size);
}

/* Whether every sampled byte of a block of `size` bytes is zero (calloc). */
static inline bool sampled_zero(const void *block, size_t size)
{
    size_t offset, length;
    for (sampled_iter_t it = sampled_spans(size, size); sampled_next(&it, &offset, &length);)
        if (!bytes_all((const unsigned char *)block + offset, length, 0))
            return false;
    return true;
}

/* Blocks in use according to pymalloc's statistics, after the calling
 * thread's cache is flushed and its remote list collected. */
static inline size_t blocks_in_use(void)
{
    pym_flush_thread_cache();
    pym_stats_t stats;
    pym_stats_get(&stats);
    size_t in_use = stats.large_count;
    for (int c = 0; c < PYM_STATS_CLASSES; c++)
        in_use += stats.classes[c].blocks_used;
    return in_use;
}

#endif
