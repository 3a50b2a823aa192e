/*
 * compat.c -- glibc's introspection entry points, answered from pymalloc's
 * own figures, so that tools and programs calling them keep working when
 * pymalloc replaces malloc: mallinfo2, mallinfo, malloc_stats, malloc_info,
 * malloc_trim and mallopt.
 *
 * Linked into libpymalloc only (like override.c): libpymalloc-api must not
 * shadow glibc's versions of these for a program whose malloc is glibc's.
 *
 * How glibc's fields map onto pymalloc (glibc's meaning in brackets):
 *   arena     bytes of 256 KiB chunks mapped for small and medium blocks
 *             [non-mmapped space obtained from the system]
 *   ordblks   free small and medium blocks, cached ones included [free chunks]
 *   hblks     live large blocks [mmapped regions]
 *   hblkhd    bytes mapped for live large blocks [bytes in mmapped regions]
 *   uordblks  bytes of small and medium blocks in use [allocated bytes]
 *   fordblks  bytes of free small and medium blocks [free bytes]
 *   keepcost  bytes malloc_trim would give back now: cached empty chunks and
 *             cached large mappings [releasable top-most space]
 *   smblks, usmblks, fsmblks  0, as in glibc (fastbins have no equivalent)
 * Figures are exact when other threads are idle (see stats.c).
 *
 * mallopt accepts every parameter glibc defines and ignores it (pymalloc's
 * settings come from PYMALLOC_* variables, read once at start-up): it
 * returns 1, as glibc does on success, so programs that tune glibc keep
 * running; an unknown parameter returns 0, as in glibc.
 */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>

#include "internal.h"

#define PYM_EXPORT __attribute__((visibility("default")))

/* The few totals every entry point here needs. */
typedef struct pym_totals {
    size_t chunk_bytes;          /* 256 KiB chunks mapped (arenas and spans) */
    size_t used_bytes;           /* bytes of small and medium blocks in use */
    size_t free_bytes;           /* bytes of free small and medium blocks, cached ones included */
    size_t free_blocks;          /* their number */
    size_t large_count;          /* live large blocks */
    size_t large_bytes;          /* bytes mapped for them */
    size_t releasable_bytes;     /* cached empty chunks and large mappings */
    size_t mapped_bytes;         /* everything mapped now */
    size_t mapped_peak_bytes;    /* most mapped at once */
} pym_totals_t;

static void pym_totals_get(pym_stats_t *stats, pym_totals_t *totals)
{
    pym_stats_get(stats);
    *totals = (pym_totals_t){0};
    for (unsigned i = 0; i < PYM_STATS_CLASSES; i++) {
        const pym_class_stats_t *cls = &stats->classes[i];
        totals->used_bytes += cls->blocks_used * cls->block_size;
        totals->free_blocks += cls->blocks_free + cls->blocks_cached;
        totals->free_bytes += (cls->blocks_free + cls->blocks_cached) * cls->block_size;
    }
    totals->chunk_bytes = (stats->arenas_now + stats->arenas_cached) * PYM_CHUNK_SIZE;
    totals->large_count = stats->large_count;
    totals->large_bytes = stats->large_bytes;
    totals->releasable_bytes = stats->arenas_cached * PYM_CHUNK_SIZE + stats->large_cached_bytes;
    totals->mapped_bytes = stats->mapped_bytes;
    totals->mapped_peak_bytes = stats->mapped_peak_bytes;
}

PYM_EXPORT struct mallinfo2 mallinfo2(void)
{
    pym_stats_t stats;
    pym_totals_t totals;
    pym_totals_get(&stats, &totals);
    struct mallinfo2 info = {0};
    info.arena = totals.chunk_bytes;
    info.ordblks = totals.free_blocks;
    info.hblks = totals.large_count;
    info.hblkhd = totals.large_bytes;
    info.uordblks = totals.used_bytes;
    info.fordblks = totals.free_bytes;
    info.keepcost = totals.releasable_bytes;
    return info;
}

/* glibc's int fields wrap past 2 GiB; saturating is more useful. */
static int pym_saturate(size_t value)
{
    return value > INT_MAX ? INT_MAX : (int)value;
}

PYM_EXPORT struct mallinfo mallinfo(void)
{
    struct mallinfo2 wide = mallinfo2();
    struct mallinfo info = {0};
    info.arena = pym_saturate(wide.arena);
    info.ordblks = pym_saturate(wide.ordblks);
    info.hblks = pym_saturate(wide.hblks);
    info.hblkhd = pym_saturate(wide.hblkhd);
    info.uordblks = pym_saturate(wide.uordblks);
    info.fordblks = pym_saturate(wide.fordblks);
    info.keepcost = pym_saturate(wide.keepcost);
    return info;
}

/* glibc's layout (one "arena" here: pymalloc's pools), then pymalloc's own
 * table; on stderr, like glibc's. */
PYM_EXPORT void malloc_stats(void)
{
    pym_stats_t stats;
    pym_totals_t totals;
    pym_totals_get(&stats, &totals);
    fprintf(stderr, "Arena 0:\n");
    fprintf(stderr, "system bytes     = %10zu\n", totals.chunk_bytes);
    fprintf(stderr, "in use bytes     = %10zu\n", totals.used_bytes);
    fprintf(stderr, "Total (incl. mmap):\n");
    fprintf(stderr, "system bytes     = %10zu\n", totals.mapped_bytes);
    fprintf(stderr, "in use bytes     = %10zu\n", totals.used_bytes + totals.large_bytes);
    fprintf(stderr, "max mmap regions = %10zu\n", totals.large_count);
    fprintf(stderr, "max mmap bytes   = %10zu\n", stats.large_peak_bytes);
    pym_stats_print(stderr);
}

/* The totals glibc's XML gives per heap and for the whole process (one heap
 * here, so the same figures twice). */
static void pym_xml_totals(FILE *stream, const pym_totals_t *totals, const char *free_kind)
{
    fprintf(stream, "<total type=\"%s\" count=\"%zu\" size=\"%zu\"/>\n", free_kind, totals->free_blocks,
            totals->free_bytes);
    fprintf(stream, "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n", totals->large_count, totals->large_bytes);
    fprintf(stream, "<system type=\"current\" size=\"%zu\"/>\n", totals->mapped_bytes);
    fprintf(stream, "<system type=\"max\" size=\"%zu\"/>\n", totals->mapped_peak_bytes);
    fprintf(stream, "<aspace type=\"total\" size=\"%zu\"/>\n", totals->mapped_bytes);
    fprintf(stream, "<aspace type=\"mprotect\" size=\"%zu\"/>\n", totals->mapped_bytes);
}

PYM_EXPORT int malloc_info(int options, FILE *stream)
{
    if (options != 0 || stream == NULL) { /* glibc: options must be zero */
        errno = EINVAL;
        return -1;
    }
    pym_stats_t stats;
    pym_totals_t totals;
    pym_totals_get(&stats, &totals);
    fprintf(stream, "<malloc version=\"pymalloc-1\">\n<heap nr=\"0\">\n<sizes>\n");
    size_t previous = 0;
    for (unsigned i = 0; i < PYM_STATS_CLASSES; i++) {
        const pym_class_stats_t *cls = &stats.classes[i];
        size_t free_blocks = cls->blocks_free + cls->blocks_cached;
        if (cls->pools != 0)
            fprintf(stream,
                    "  <size from=\"%zu\" to=\"%zu\" total=\"%zu\" count=\"%zu\" used=\"%zu\" pools=\"%zu\"/>\n",
                    previous + 1, cls->block_size, free_blocks * cls->block_size, free_blocks, cls->blocks_used,
                    cls->pools);
        previous = cls->block_size;
    }
    fprintf(stream, "</sizes>\n");
    pym_xml_totals(stream, &totals, "pools");
    fprintf(stream, "</heap>\n");
    fprintf(stream, "<total type=\"fast\" count=\"0\" size=\"0\"/>\n");
    pym_xml_totals(stream, &totals, "rest");
    fprintf(stream, "</malloc>\n");
    return 0;
}

PYM_EXPORT int malloc_trim(size_t pad)
{
    (void)pad; /* pymalloc keeps no top-of-heap padding */
    return pym_trim();
}

PYM_EXPORT int mallopt(int parameter, int value)
{
    (void)value;
    switch (parameter) {
    case M_MXFAST:
    case M_TRIM_THRESHOLD:
    case M_TOP_PAD:
    case M_MMAP_THRESHOLD:
    case M_MMAP_MAX:
    case M_CHECK_ACTION:
    case M_PERTURB:
    case M_ARENA_TEST:
    case M_ARENA_MAX:
        return 1;
    default:
        return 0;
    }
}
