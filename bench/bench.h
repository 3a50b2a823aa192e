/* bench.h -- the C interface between benchmark bodies and google-benchmark.
 *
 * A workload is a plain C function `void body(bench_run *run)`.  It does its
 * set-up, then loops on bench_keep_running(run, batch), doing `batch`
 * operations per call, then tears down.  Only the loop is timed (the timer
 * starts at the first bench_keep_running and stops when it returns false),
 * so the per-operation cost never includes a call into C++: one call per
 * batch.  bench.cc implements these functions on top of benchmark::State;
 * register.cc lists the workloads and their arguments.
 *
 * Every run gets two memory counters without asking (see bench.cc):
 *   peak_rss_kib  VmHWM at the end of the run (reset at its start through
 *                 /proc/self/clear_refs where the kernel allows it)
 *   end_rss_kib   VmRSS after the body returns, or at the point where the
 *                 body called bench_note_end_rss()
 * and, where the kernel's syscall tracepoints can be used (root), five
 * system-call counters: mmap_per_kop, munmap_per_kop, madvise_per_kop,
 * mremap_per_kop, brk_per_kop -- calls made by all threads of the process
 * while the timer runs (from the first bench_keep_running to the last,
 * bench_pause .. bench_resume excluded), per 1000 iterations.
 *
 * The helpers below (bench_escape, bench_touch, the PRNG) are inline so that
 * they cost the same under every allocator and nothing the compiler could
 * remove: GCC deletes a malloc/free pair whose pointer is never used, and a
 * store into a block that is freed right after.
 */
#ifndef PYM_BENCH_H
#define PYM_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bench_run bench_run;
typedef void bench_body(bench_run *run);

/* True while the benchmark wants `batch` more operations (state.KeepRunningBatch). */
bool bench_keep_running(bench_run *run, uint64_t batch);
/* The run's argument number `index` (state.range(index)). */
int64_t bench_arg(bench_run *run, int index);
/* Operations done in the whole run: google-benchmark reports items_per_second. */
void bench_set_items(bench_run *run, uint64_t items);
/* A named figure reported beside the time (state.counters[name]). */
void bench_set_counter(bench_run *run, const char *name, double value);
/* Stop and restart the timer inside the loop (costly: not per operation). */
void bench_pause(bench_run *run);
void bench_resume(bench_run *run);
/* Record the current RSS as the run's end_rss_kib (default: after the body). */
void bench_note_end_rss(bench_run *run);
/* True with --bench-quick: bodies shrink their sizes for a smoke test. */
bool bench_quick(void);

/* Make the compiler believe *p is read and written here. */
static inline void bench_escape(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

/* Write one byte of a new block, as a program initialising it would. */
static inline void bench_touch(void *p, size_t size)
{
    *(volatile unsigned char *)p = (unsigned char)size;
    bench_escape(p);
}

/* Write one byte in every 4 KiB page of a block (faults each page in). */
static inline void bench_touch_pages(void *p, size_t size)
{
    for (size_t offset = 0; offset < size; offset += 4096)
        ((volatile unsigned char *)p)[offset] = (unsigned char)offset;
    bench_escape(p);
}

/* splitmix64: a cheap, deterministic generator; each workload seeds its own. */
static inline uint64_t bench_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [low, high] (multiply-shift: no division, negligible bias). */
static inline uint64_t bench_random_between(uint64_t *state, uint64_t low, uint64_t high)
{
    return low + (uint64_t)(((unsigned __int128)bench_random(state) * (high - low + 1)) >> 64);
}

#ifdef __cplusplus
}

/* For the C++ side (register.cc): run one C body as a google-benchmark
 * function, adding the RSS counters; and switch the bodies to quick sizes. */
namespace benchmark {
class State;
}
void bench_run_body(benchmark::State &state, bench_body *body);
void bench_set_quick(bool quick);
/* Whether the system-call counters work here: "on", or "off: <why>".  With
 * wanted false they are switched off for the whole process. */
const char *bench_syscall_counters_status(bool wanted);
#endif

#endif
