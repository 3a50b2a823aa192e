/*
 * alloc_sites.c -- an example tracing tool built on pymalloc's allocation
 * hooks: which code allocates the most?  (In the spirit of Python's
 * tracemalloc, for any program.)
 *
 *   LD_PRELOAD="/path/libpymalloc.so /path/libpymalloc-sites.so" program args
 *
 * prints, when the program exits, the allocation sites (the code that called
 * malloc, calloc, realloc, ...) that allocated the most bytes, with their
 * number of allocations, on stderr.  PYMALLOC_SITES_TOP=N sets how many rows
 * (default 10).
 *
 * How: a constructor installs hooks with pym_set_hooks; on every allocation
 * the hook takes a short backtrace and keeps the first frame that is
 * neither pymalloc's nor this library's, and adds the request to that
 * site's totals in a fixed open-addressing table (no allocation on the hot
 * path; the backtrace machinery's own first-call allocations are not
 * reported, pymalloc suppresses reports from inside a hook).  A destructor
 * removes the hooks and prints the table, naming each site with dladdr.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pymalloc.h"

enum { SITE_SLOTS = 8192, FRAMES = 12 };

typedef struct site {
    void *address;               /* return address in the caller; NULL: slot free */
    uint64_t count;              /* allocations made there */
    uint64_t bytes;              /* bytes asked for there */
} site_t;

static site_t sites[SITE_SLOTS];
static uint64_t unplaced;          /* allocations whose site did not fit the table */
static pthread_mutex_t sites_lock = PTHREAD_MUTEX_INITIALIZER;
static void *pymalloc_base, *own_base; /* load addresses of libpymalloc and of this library */

static void *object_base(void *address)
{
    Dl_info info;
    return dladdr(address, &info) ? info.dli_fbase : NULL;
}

/* The first frame of the backtrace outside pymalloc and this library. */
static void *call_site(void)
{
    void *frames[FRAMES];
    int depth = backtrace(frames, FRAMES);
    for (int i = 1; i < depth; i++) {
        void *base = object_base(frames[i]);
        if (base != pymalloc_base && base != own_base)
            return frames[i];
    }
    return NULL;
}

static void record(void *ptr, size_t size, void *context)
{
    (void)ptr;
    (void)context;
    void *address = call_site();
    if (address == NULL)
        return;
    size_t slot = ((uintptr_t)address >> 4) % SITE_SLOTS;
    pthread_mutex_lock(&sites_lock);
    for (size_t probes = 0; probes < SITE_SLOTS; probes++, slot = (slot + 1) % SITE_SLOTS) {
        if (sites[slot].address == NULL)
            sites[slot].address = address;
        if (sites[slot].address == address) {
            sites[slot].count++;
            sites[slot].bytes += size;
            pthread_mutex_unlock(&sites_lock);
            return;
        }
    }
    unplaced++;
    pthread_mutex_unlock(&sites_lock);
}

static int by_bytes(const void *a, const void *b)
{
    const site_t *left = a, *right = b;
    return left->bytes < right->bytes ? 1 : left->bytes > right->bytes ? -1 : 0;
}

__attribute__((constructor)) static void start(void)
{
    pymalloc_base = object_base((void *)pym_set_hooks);
    own_base = object_base((void *)start);
    static const pym_hooks_t hooks = {record, NULL, NULL};
    pym_set_hooks(&hooks);
}

__attribute__((destructor)) static void report(void)
{
    pym_set_hooks(NULL);
    const char *top_text = getenv("PYMALLOC_SITES_TOP");
    int top = top_text ? atoi(top_text) : 10;
    if (top <= 0)
        top = 10;
    static site_t sorted[SITE_SLOTS];
    size_t used = 0;
    uint64_t total_count = 0, total_bytes = 0;
    pthread_mutex_lock(&sites_lock);
    for (size_t i = 0; i < SITE_SLOTS; i++)
        if (sites[i].address != NULL) {
            sorted[used++] = sites[i];
            total_count += sites[i].count;
            total_bytes += sites[i].bytes;
        }
    pthread_mutex_unlock(&sites_lock);
    qsort(sorted, used, sizeof(site_t), by_bytes);
    fprintf(stderr, "pymalloc allocation sites: %zu sites, %llu allocations, %llu bytes asked for\n", used,
            (unsigned long long)total_count, (unsigned long long)total_bytes);
    fprintf(stderr, "%14s %12s  %s\n", "bytes", "allocations", "site");
    for (size_t i = 0; i < used && (int)i < top; i++) {
        Dl_info info;
        const char *object = "?", *symbol = NULL;
        uintptr_t offset = 0;
        if (dladdr(sorted[i].address, &info)) {
            object = info.dli_fname ? info.dli_fname : "?";
            symbol = info.dli_sname;
            offset = (uintptr_t)sorted[i].address - (uintptr_t)(symbol ? info.dli_saddr : info.dli_fbase);
        }
        fprintf(stderr, "%14llu %12llu  %s(%s+0x%lx)\n", (unsigned long long)sorted[i].bytes,
                (unsigned long long)sorted[i].count, object, symbol ? symbol : "", (unsigned long)offset);
    }
    if (unplaced != 0)
        fprintf(stderr, "(%llu allocations at sites beyond the table's %d)\n", (unsigned long long)unplaced,
                SITE_SLOTS);
}
