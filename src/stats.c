/*
 * stats.c -- statistics: the snapshot (pym_stats_get) and the table printed
 * by pym_stats_print and, with PYMALLOC_STATS=1, at exit.
 *
 * Nothing on the fast paths counts anything.  Per-class figures are read
 * from the pool headers themselves by walking every chunk in use under the
 * arena lock (a pool header says its class, its state and how many of its
 * blocks are handed out), as sys._debugmallocstats() walks CPython's arenas.
 * Pools of running threads are read without stopping them, so those figures
 * are exact only when the threads are idle.  Chunk and large-mapping
 * counters are kept by the slow paths under their locks.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static void pym_stats_add_pool(pym_stats_t *out, const pym_pool_t *pool)
{
    uint8_t state = __atomic_load_n(&pool->state, __ATOMIC_RELAXED);
    if (state == PYM_POOL_EMPTY) {
        out->empty_pools++;
        return;
    }
    if (state != PYM_POOL_USED && state != PYM_POOL_FULL && state != PYM_POOL_ABANDONED)
        return;
    pym_class_stats_t *cls = &out->classes[pool->size_class];
    uint32_t capacity = pym_classes[pool->size_class].capacity;
    uint32_t used = __atomic_load_n(&pool->used, __ATOMIC_RELAXED);
    if (used > capacity)
        used = capacity;
    cls->pools++;
    if (used == capacity)
        cls->full_pools++;
    cls->blocks_used += used;
    cls->blocks_free += capacity - used;
}

void pym_stats_get(pym_stats_t *out)
{
    pym_ensure_init();
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < PYM_CLASS_COUNT; i++)
        out->classes[i].block_size = pym_classes[i].block_size;
    pthread_mutex_lock(&pym_large_lock);
    pym_large_counters_locked(out);
    pthread_mutex_unlock(&pym_large_lock);
    pthread_mutex_lock(&pym_arena_lock);
    for (pym_arena_t *arena = pym_arena_first_locked(); arena != NULL; arena = arena->all_next) {
        if (arena->kind == PYM_CHUNK_MEDIUM) {
            pym_stats_add_pool(out, &arena->span);
            continue;
        }
        for (unsigned index = 0; index < PYM_POOLS_PER_ARENA; index++)
            if (!(arena->free_mask & ((uint64_t)1 << index)))
                pym_stats_add_pool(out, (const pym_pool_t *)(arena->base + (uintptr_t)index * PYM_POOL_SIZE));
    }
    pym_arena_counters_locked(out);
    out->heaps_live = pym_heap_live_count();
    size_t cached[PYM_CLASS_COUNT] = {0};
    pym_heap_cached_counts_locked(cached);
    pthread_mutex_unlock(&pym_arena_lock);
    for (unsigned i = 0; i < PYM_CLASS_COUNT; i++) { /* pools count cached blocks as used */
        pym_class_stats_t *cls = &out->classes[i];
        cls->blocks_cached = cached[i] < cls->blocks_used ? cached[i] : cls->blocks_used;
        cls->blocks_used -= cls->blocks_cached;
    }
    out->mapped_bytes = (out->arenas_now + out->arenas_cached) * PYM_CHUNK_SIZE + out->large_bytes
                        + out->large_cached_bytes;
    out->mapped_peak_bytes = out->arenas_peak * PYM_CHUNK_SIZE + out->large_peak_bytes;
    out->invalid_frees = __atomic_load_n(&pym_invalid_free_count, __ATOMIC_RELAXED);
    out->alignment = pym_options.alignment;
}

/* Output either to a FILE or, at exit, straight to fd 2 (stdio may already
 * be torn down). */
typedef struct pym_printer {
    FILE *stream;                 /* NULL: write(2) to fd */
    int fd;                       /* used when stream is NULL */
} pym_printer_t;

__attribute__((format(printf, 2, 3))) static void pym_print(pym_printer_t *printer, const char *format, ...)
{
    char line[256];
    va_list args;
    va_start(args, format);
    int length = vsnprintf(line, sizeof(line), format, args);
    va_end(args);
    if (length < 0)
        return;
    if ((size_t)length >= sizeof(line))
        length = (int)sizeof(line) - 1;
    if (printer->stream != NULL) {
        fwrite(line, 1, (size_t)length, printer->stream);
        return;
    }
    for (ssize_t done = 0; done < length;) {
        ssize_t wrote = write(printer->fd, line + done, (size_t)(length - done));
        if (wrote <= 0)
            break;
        done += wrote;
    }
}

static double pym_mib(size_t bytes)
{
    return (double)bytes / (double)PYM_MiB;
}

static void pym_stats_render(pym_printer_t *printer)
{
    pym_stats_t stats;
    pym_stats_get(&stats);
    pym_print(printer, "pymalloc statistics (alignment %u, pid %ld)\n", stats.alignment, (long)getpid());
    pym_print(printer, "class   block size   pools   full pools   blocks in use   free blocks   thread-cached\n");
    pym_print(printer, "-----   ----------   -----   ----------   -------------   -----------   -------------\n");
    size_t pool_bytes_used = 0, pool_bytes_free = 0, pool_bytes_cached = 0;
    for (unsigned i = 0; i < PYM_CLASS_COUNT; i++) {
        const pym_class_stats_t *cls = &stats.classes[i];
        if (cls->pools == 0)
            continue;
        pym_print(printer, "%5u   %10zu   %5zu   %10zu   %13zu   %11zu   %13zu\n", i, cls->block_size, cls->pools,
                  cls->full_pools, cls->blocks_used, cls->blocks_free, cls->blocks_cached);
        pool_bytes_used += cls->blocks_used * cls->block_size;
        pool_bytes_free += cls->blocks_free * cls->block_size;
        pool_bytes_cached += cls->blocks_cached * cls->block_size;
    }
    pym_print(printer, "# bytes in pool blocks in use     %14zu\n", pool_bytes_used);
    pym_print(printer, "# bytes in free pool blocks       %14zu\n", pool_bytes_free);
    pym_print(printer, "# bytes in thread-cached blocks   %14zu\n", pool_bytes_cached);
    pym_print(printer, "# empty pools kept by threads     %14zu\n", stats.empty_pools);
    pym_print(printer, "# arenas (256 KiB) mapped now     %14zu\n", stats.arenas_now);
    pym_print(printer, "# arenas mapped in total          %14zu\n", stats.arenas_total);
    pym_print(printer, "# arenas returned to the OS       %14zu\n", stats.arenas_returned);
    pym_print(printer, "# arenas cached empty             %14zu\n", stats.arenas_cached);
    pym_print(printer, "# arenas at peak                  %14zu\n", stats.arenas_peak);
    pym_print(printer, "# large blocks live               %14zu\n", stats.large_count);
    pym_print(printer, "# bytes in large mappings         %14zu  (%.1f MiB)\n", stats.large_bytes,
              pym_mib(stats.large_bytes));
    pym_print(printer, "# bytes in free large extents     %14zu\n", stats.large_cached_bytes);
    pym_print(printer, "# bytes in large mappings at peak %14zu  (%.1f MiB)\n", stats.large_peak_bytes,
              pym_mib(stats.large_peak_bytes));
    pym_print(printer, "# bytes mapped now                %14zu  (%.1f MiB)\n", stats.mapped_bytes,
              pym_mib(stats.mapped_bytes));
    pym_print(printer, "# bytes mapped at peak (bound)    %14zu  (%.1f MiB)\n", stats.mapped_peak_bytes,
              pym_mib(stats.mapped_peak_bytes));
    pym_print(printer, "# thread heaps live               %14zu\n", stats.heaps_live);
    pym_print(printer, "# foreign frees ignored           %14zu\n", stats.invalid_frees);
    size_t calls[PYM_OS_CALL_KINDS];
    pym_os_counters(calls);
    pym_print(printer, "# system calls: mmap %zu, munmap %zu, madvise %zu, mremap %zu\n", calls[PYM_OS_MMAP],
              calls[PYM_OS_MUNMAP], calls[PYM_OS_MADVISE], calls[PYM_OS_MREMAP]);
}

/* The same figures as one JSON object (PYMALLOC_STATS=json). */
static void pym_stats_render_json(pym_printer_t *printer)
{
    pym_stats_t stats;
    pym_stats_get(&stats);
    pym_print(printer, "{\"pymalloc\": {\"pid\": %ld, \"alignment\": %u, \"classes\": [", (long)getpid(),
              stats.alignment);
    const char *separator = "";
    for (unsigned i = 0; i < PYM_CLASS_COUNT; i++) {
        const pym_class_stats_t *cls = &stats.classes[i];
        if (cls->pools == 0)
            continue;
        pym_print(printer,
                  "%s\n  {\"class\": %u, \"block_size\": %zu, \"pools\": %zu, \"full_pools\": %zu, "
                  "\"blocks_used\": %zu, \"blocks_free\": %zu, \"blocks_cached\": %zu}",
                  separator, i, cls->block_size, cls->pools, cls->full_pools, cls->blocks_used, cls->blocks_free,
                  cls->blocks_cached);
        separator = ",";
    }
    pym_print(printer, "],\n  \"empty_pools\": %zu, \"arenas_now\": %zu, \"arenas_total\": %zu, "
                       "\"arenas_returned\": %zu, \"arenas_cached\": %zu, \"arenas_peak\": %zu,\n",
              stats.empty_pools, stats.arenas_now, stats.arenas_total, stats.arenas_returned, stats.arenas_cached,
              stats.arenas_peak);
    pym_print(printer, "  \"large_count\": %zu, \"large_bytes\": %zu, \"large_cached_bytes\": %zu, "
                       "\"large_peak_bytes\": %zu,\n",
              stats.large_count, stats.large_bytes, stats.large_cached_bytes, stats.large_peak_bytes);
    size_t calls[PYM_OS_CALL_KINDS];
    pym_os_counters(calls);
    pym_print(printer, "  \"mapped_bytes\": %zu, \"mapped_peak_bytes\": %zu, \"heaps_live\": %zu, "
                       "\"invalid_frees\": %zu,\n",
              stats.mapped_bytes, stats.mapped_peak_bytes, stats.heaps_live, stats.invalid_frees);
    pym_print(printer, "  \"system_calls\": {\"mmap\": %zu, \"munmap\": %zu, \"madvise\": %zu, \"mremap\": %zu}}}\n",
              calls[PYM_OS_MMAP], calls[PYM_OS_MUNMAP], calls[PYM_OS_MADVISE], calls[PYM_OS_MREMAP]);
}

void pym_stats_print(FILE *stream)
{
    pym_printer_t printer = {.stream = stream ? stream : stderr};
    pym_stats_render(&printer);
    fflush(printer.stream);
}

void pym_stats_print_json(FILE *stream)
{
    pym_printer_t printer = {.stream = stream ? stream : stderr};
    pym_stats_render_json(&printer);
    fflush(printer.stream);
}

/* PYMALLOC_STATS at exit: stdio may already be torn down, so straight to a
 * file descriptor -- stderr, or the file PYMALLOC_STATS names (created or
 * truncated, "%p" replaced by the process id; a file that cannot be opened
 * is reported and stderr used). */
void pym_stats_print_at_exit(void)
{
    pym_printer_t printer = {.stream = NULL, .fd = STDERR_FILENO};
    if (pym_options.stats_path[0] != '\0') {
        /* "%p" in the path stands for the process id: each process of a
         * program that forks then writes its own file. */
        char path[sizeof(pym_options.stats_path) + 24];
        const char *pid_mark = strstr(pym_options.stats_path, "%p");
        if (pid_mark != NULL)
            snprintf(path, sizeof(path), "%.*s%ld%s", (int)(pid_mark - pym_options.stats_path),
                     pym_options.stats_path, (long)getpid(), pid_mark + 2);
        else
            snprintf(path, sizeof(path), "%s", pym_options.stats_path);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0)
            printer.fd = fd;
        else
            pym_report("pymalloc: PYMALLOC_STATS: cannot open %s (errno %d); statistics go to stderr", path, errno);
    }
    if (pym_options.stats_json)
        pym_stats_render_json(&printer);
    else
        pym_stats_render(&printer);
    if (printer.fd != STDERR_FILENO)
        close(printer.fd);
}
