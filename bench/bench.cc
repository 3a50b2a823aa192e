// bench.cc -- bench.h's C interface implemented on google-benchmark.
//
// A bench_run is the benchmark::State of the running benchmark plus what the
// wrapper measures around the body: bench_run_body() resets the kernel's
// peak-RSS mark (writing "5" to /proc/self/clear_refs resets VmHWM to the
// current RSS; where that is refused the peak is the process's so far), runs
// the body, then reads VmHWM and VmRSS from /proc/self/status and reports
// them as the counters peak_rss_kib and end_rss_kib.  /proc is read with
// open/read into a stack buffer so that measuring allocates nothing.
//
// Nothing here is specific to an allocator or a workload: any C body written
// against bench.h can be registered with bench_run_body (see register.cc).

#include "bench.h"

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

struct bench_run {
    benchmark::State &state;
    long end_rss_kib;  // -1: sample after the body returns
};

namespace {

bool quick_mode = false;

struct rss_kib {
    long peak;  // VmHWM
    long now;   // VmRSS
};

// The number after `key` (e.g. "VmHWM:") in /proc/self/status text, or -1.
long status_field_kib(const char *status, const char *key)
{
    const char *line = std::strstr(status, key);
    if (line == nullptr)
        return -1;
    return std::strtol(line + std::strlen(key), nullptr, 10);
}

rss_kib read_rss()
{
    rss_kib rss = {-1, -1};
    char status[8192];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return rss;
    size_t filled = 0;
    ssize_t got;
    while (filled < sizeof status - 1 && (got = read(fd, status + filled, sizeof status - 1 - filled)) > 0)
        filled += static_cast<size_t>(got);
    close(fd);
    status[filled] = '\0';
    rss.peak = status_field_kib(status, "VmHWM:");
    rss.now = status_field_kib(status, "VmRSS:");
    return rss;
}

void reset_peak_rss()
{
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t written = write(fd, "5", 1);
    (void)written;  // refused (old kernel, restricted /proc): the peak is the process's so far
    close(fd);
}

}  // namespace

extern "C" bool bench_keep_running(bench_run *run, uint64_t batch)
{
    return run->state.KeepRunningBatch(static_cast<benchmark::IterationCount>(batch));
}

extern "C" int64_t bench_arg(bench_run *run, int index)
{
    return run->state.range(static_cast<std::size_t>(index));
}

extern "C" void bench_set_items(bench_run *run, uint64_t items)
{
    run->state.SetItemsProcessed(static_cast<int64_t>(items));
}

extern "C" void bench_set_counter(bench_run *run, const char *name, double value)
{
    run->state.counters[name] = value;
}

extern "C" void bench_pause(bench_run *run)
{
    run->state.PauseTiming();
}

extern "C" void bench_resume(bench_run *run)
{
    run->state.ResumeTiming();
}

extern "C" void bench_note_end_rss(bench_run *run)
{
    run->end_rss_kib = read_rss().now;
}

extern "C" bool bench_quick(void)
{
    return quick_mode;
}

void bench_set_quick(bool quick)
{
    quick_mode = quick;
}

void bench_run_body(benchmark::State &state, bench_body *body)
{
    reset_peak_rss();
    bench_run run = {state, -1};
    body(&run);
    rss_kib rss = read_rss();
    state.counters["peak_rss_kib"] = static_cast<double>(rss.peak);
    state.counters["end_rss_kib"] = static_cast<double>(run.end_rss_kib >= 0 ? run.end_rss_kib : rss.now);
}
