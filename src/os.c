/*
 * os.c -- the operating-system layer: the only file that calls mmap, munmap,
 * mremap and madvise.
 *
 * Everything pymalloc maps is aligned to a chunk (256 KiB) or more, so the
 * chunk map can classify addresses.  An aligned mapping is made by asking for
 * `size` at a hint just past the previous aligned mapping (the kernel usually
 * honours it, and then no trimming is needed); when the result is misaligned,
 * the region is mapped again `alignment` bytes larger and the excess at both
 * ends is unmapped.  pym_os_decommit gives a range's pages back while keeping
 * the range mapped (they read as zero afterwards).
 *
 * Failures return NULL with errno left as ENOMEM: callers turn them into a
 * NULL from malloc.
 *
 * It also reads the clock (pym_os_now_ms) and the process's thread count
 * (pym_os_thread_count, for the scavenger), and makes the asymmetric fence
 * that lets a thread heap's owner update its large-extent slot with plain
 * loads and stores (pym_os_fence_register, pym_os_fence_all_threads: the
 * membarrier system call, large.c explains the protocol).
 *
 * Every memory system call made here is counted (pym_os_counters: mmap, munmap,
 * madvise, mremap), for the statistics and the tests that check a steady
 * loop makes none.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static uintptr_t pym_os_hint; /* where the next aligned mapping is asked for (racy by design: only a hint) */
static size_t pym_os_calls[PYM_OS_CALL_KINDS]; /* system calls made, per kind (atomic) */

static inline void pym_os_count(enum pym_os_call kind)
{
    __atomic_fetch_add(&pym_os_calls[kind], 1, __ATOMIC_RELAXED);
}

void pym_os_counters(size_t out[PYM_OS_CALL_KINDS])
{
    for (unsigned kind = 0; kind < PYM_OS_CALL_KINDS; kind++)
        out[kind] = __atomic_load_n(&pym_os_calls[kind], __ATOMIC_RELAXED);
}

static void *pym_os_mmap(void *hint, size_t size)
{
    pym_os_count(PYM_OS_MMAP);
    return mmap(hint, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

static int pym_os_munmap(void *address, size_t size)
{
    pym_os_count(PYM_OS_MUNMAP);
    return munmap(address, size);
}

#ifdef PYM_FAULT_INJECTION
/* Out-of-memory injection, compiled only into test builds (tests/faults/oom.c).
 * Of the calls whose operation is in the mask, the first `skip` go through,
 * the `count` after them fail with ENOMEM without reaching the kernel
 * (count < 0: all of them).  Counters under a mutex: test code only. */
static pthread_mutex_t pym_inject_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned pym_inject_ops;
static long pym_inject_skip, pym_inject_count;
static unsigned long pym_inject_seen[4], pym_inject_failed; /* seen: per operation bit */

void pym_os_inject_failures(unsigned ops, long skip, long count)
{
    pthread_mutex_lock(&pym_inject_lock);
    pym_inject_ops = count == 0 ? 0 : ops;
    pym_inject_skip = skip;
    pym_inject_count = count;
    pthread_mutex_unlock(&pym_inject_lock);
}

void pym_os_inject_counters(unsigned ops, unsigned long *seen, unsigned long *failed)
{
    pthread_mutex_lock(&pym_inject_lock);
    if (seen != NULL) {
        *seen = 0;
        for (unsigned bit = 0; bit < 4; bit++)
            if (ops & (1u << bit))
                *seen += pym_inject_seen[bit];
    }
    if (failed != NULL)
        *failed = pym_inject_failed;
    pthread_mutex_unlock(&pym_inject_lock);
}

/* Whether this call of `op` must fail (then errno is ENOMEM). */
static bool pym_os_injected(unsigned op)
{
    bool fail = false;
    pthread_mutex_lock(&pym_inject_lock);
    pym_inject_seen[__builtin_ctz(op)]++;
    if (pym_inject_ops & op) {
        if (pym_inject_skip > 0) {
            pym_inject_skip--;
        } else if (pym_inject_count != 0) {
            fail = true;
            pym_inject_failed++;
            if (pym_inject_count > 0 && --pym_inject_count == 0)
                pym_inject_ops = 0;
        }
    }
    pthread_mutex_unlock(&pym_inject_lock);
    if (fail)
        errno = ENOMEM;
    return fail;
}
#define PYM_OS_INJECT(op, failure) \
    do {                             \
        if (pym_os_injected(op))     \
            return failure;          \
    } while (0)
#else
#define PYM_OS_INJECT(op, failure) ((void)0)
#endif

size_t pym_os_page_size(void)
{
    static size_t page_size;
    if (PYM_UNLIKELY(page_size == 0)) {
        long value = sysconf(_SC_PAGESIZE);
        page_size = value > 0 ? (size_t)value : 4096;
    }
    return page_size;
}

void *pym_os_map(size_t size)
{
    PYM_OS_INJECT(PYM_OS_OP_MAP, NULL);
    void *address = pym_os_mmap(NULL, size);
    if (address == MAP_FAILED) {
        errno = ENOMEM;
        return NULL;
    }
    return address;
}

void pym_os_unmap(void *address, size_t size)
{
    if (address != NULL && size != 0 && pym_os_munmap(address, size) != 0)
        pym_report("pymalloc: munmap(%p, %zu) failed (errno %d); the range stays mapped", address, size, errno);
}

void *pym_os_map_aligned(size_t size, size_t alignment)
{
    PYM_OS_INJECT(PYM_OS_OP_MAP_ALIGNED, NULL);
    uintptr_t hint = __atomic_load_n(&pym_os_hint, __ATOMIC_RELAXED);
    if (hint != 0 && (hint & (alignment - 1)) == 0) {
        void *address = pym_os_mmap((void *)hint, size);
        if (address != MAP_FAILED) {
            if (((uintptr_t)address & (alignment - 1)) == 0) {
                __atomic_store_n(&pym_os_hint, (uintptr_t)address + pym_align_up(size, PYM_CHUNK_SIZE),
                                 __ATOMIC_RELAXED);
                return address;
            }
            pym_os_munmap(address, size);
        }
    }
    if (size + alignment < size) {
        errno = ENOMEM;
        return NULL;
    }
    size_t padded = size + alignment;
    char *raw = pym_os_mmap(NULL, padded);
    if (raw == MAP_FAILED) {
        errno = ENOMEM;
        return NULL;
    }
    char *aligned = (char *)pym_align_up((uintptr_t)raw, alignment);
    size_t head = (size_t)(aligned - raw);
    size_t tail = padded - head - size;
    if (head)
        pym_os_munmap(raw, head);
    if (tail)
        pym_os_munmap(aligned + size, tail);
    __atomic_store_n(&pym_os_hint, (uintptr_t)aligned + pym_align_up(size, PYM_CHUNK_SIZE), __ATOMIC_RELAXED);
    return aligned;
}

bool pym_os_remap_in_place(void *address, size_t old_size, size_t new_size)
{
    if (new_size == old_size)
        return true;
    if (new_size > old_size) /* shrinking only trims a mapping: not a failure to model */
        PYM_OS_INJECT(PYM_OS_OP_REMAP_GROW, false);
    pym_os_count(PYM_OS_MREMAP);
    return mremap(address, old_size, new_size, 0) != MAP_FAILED;
}

/* Move (without copying: the kernel moves the page tables) a mapping onto
 * `target`, a region of new_size bytes the caller mapped (pym_os_map_aligned)
 * and prepared.  On failure the target is unmapped, the old mapping is
 * untouched, and NULL is returned. */
void *pym_os_remap_onto(void *address, size_t old_size, size_t new_size, void *target)
{
    void *moved = MAP_FAILED;
#ifdef PYM_FAULT_INJECTION
    if (!pym_os_injected(PYM_OS_OP_REMAP_MOVE))
#endif
    {
        pym_os_count(PYM_OS_MREMAP);
        moved = mremap(address, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, target);
    }
    if (moved == MAP_FAILED) {
        pym_os_munmap(target, new_size);
        errno = ENOMEM;
        return NULL;
    }
    return moved;
}

/* Drop the pages of a range, which stays mapped and reads as zero after. */
void pym_os_decommit(void *address, size_t size)
{
    pym_os_count(PYM_OS_MADVISE);
    if (madvise(address, size, MADV_DONTNEED) != 0)
        pym_report("pymalloc: madvise(%p, %zu, MADV_DONTNEED) failed (errno %d)", address, size, errno);
}

uint64_t pym_os_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now); /* vDSO: no system call */
    return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

/* membarrier(2), or false where the headers do not know the call. */
static bool pym_os_membarrier(int command)
{
#ifdef SYS_membarrier
    return syscall(SYS_membarrier, command, 0, 0) == 0;
#else
    (void)command;
    return false;
#endif
}

bool pym_os_fence_register(void)
{
    /* Registered once per process (a forked child must register again);
     * kernels before 4.14, or a seccomp filter, refuse it. */
    return pym_os_membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED);
}

bool pym_os_fence_all_threads(void)
{
    /* Every running thread of the process executes a full memory barrier
     * before this returns (an IPI to the CPUs running one). */
    return pym_os_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
}

long pym_os_thread_count(void)
{
    /* Field 20 of /proc/self/stat (num_threads); the command name (field
     * 2) may hold spaces and parentheses, so fields are counted from its
     * last ')'.  No allocation: the scavenger calls it. */
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char text[1024];
    ssize_t length = read(fd, text, sizeof text - 1);
    close(fd);
    if (length <= 0)
        return 0;
    text[length] = '\0';
    const char *cursor = strrchr(text, ')');
    if (cursor == NULL)
        return 0;
    for (unsigned field = 2; *cursor != '\0'; cursor++)
        if (*cursor == ' ' && ++field == 20)
            return strtol(cursor + 1, NULL, 10);
    return 0;
}
