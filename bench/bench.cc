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
// It also counts the system calls through which an allocator takes memory
// from the kernel and gives it back -- mmap, munmap, madvise, mremap, brk --
// made while the benchmark's timer runs, by every thread of the process
// (the body's own threads included): one perf event per call on the
// kernel's tracepoint syscalls:sys_enter_<name> (its id read from tracefs,
// /sys/kernel/tracing or /sys/kernel/debug/tracing), counting, with
// inherit=1, this process and every thread it creates afterwards.  The
// events are opened once, by main() before any benchmark (registering a
// tracepoint costs the kernel milliseconds: never per run), and stay
// disabled except while a timer runs: enabled when the first
// bench_keep_running starts it, disabled around bench_pause/bench_resume
// and when the loop ends.  A run's figure is the difference of the totals
// read before and after it, reported as <name>_per_kop, calls per 1000
// iterations.  Where the tracepoints cannot be used (no tracefs, no
// permission: it takes root or kernel.perf_event_paranoid <= -1) the
// counters are simply absent, and bench_syscall_counters_status() says why
// (register.cc puts it into the JSON context).
//
// Nothing here is specific to an allocator or a workload: any C body written
// against bench.h can be registered with bench_run_body (see register.cc).

#include "bench.h"

#include <benchmark/benchmark.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace {

// The system calls counted, as named by the tracepoints (sys_enter_<name>)
// and by the counters (<name>_per_kop).
constexpr const char *syscall_names[] = {"mmap", "munmap", "madvise", "mremap", "brk"};
constexpr int syscall_kinds = sizeof syscall_names / sizeof syscall_names[0];

}  // namespace

struct bench_run {
    benchmark::State &state;
    long end_rss_kib;  // -1: sample after the body returns
    bool counting_syscalls;  // the process's counters are on and were read before the body
    uint64_t syscalls_before[syscall_kinds];
    bool timer_started;  // the first bench_keep_running has returned
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

// ---- system calls counted on tracepoints ----

enum class counting { unknown, on, off };
counting syscall_counting = counting::unknown;
int syscall_fds[syscall_kinds] = {-1, -1, -1, -1, -1};  // the process's events while on
char syscall_status[512] = "off: not probed";

// The tracepoint id of syscalls:sys_enter_<name>, or -1 with the reason in
// syscall_status.
long tracepoint_id(const char *name)
{
    static const char *const roots[] = {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"};
    int first_error = 0;
    for (const char *root : roots) {
        char path[256];
        std::snprintf(path, sizeof path, "%s/events/syscalls/sys_enter_%s/id", root, name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (first_error == 0 || first_error == ENOENT)
                first_error = errno;
            continue;
        }
        char text[32];
        ssize_t got = read(fd, text, sizeof text - 1);
        close(fd);
        if (got > 0) {
            text[got] = '\0';
            return std::strtol(text, nullptr, 10);
        }
    }
    std::snprintf(syscall_status, sizeof syscall_status,
                  "off: no tracepoint id for syscalls:sys_enter_%s in /sys/kernel/tracing or"
                  " /sys/kernel/debug/tracing (%s%s)",
                  name, first_error == ENOENT ? "no tracefs with syscall events" : std::strerror(first_error),
                  first_error == EACCES || first_error == EPERM ? ": tracefs is readable by root only here" : "");
    return -1;
}

// A disabled, inherited counting event on that tracepoint for this process, or -1.
int open_tracepoint(long id, const char *name)
{
    perf_event_attr attr;
    std::memset(&attr, 0, sizeof attr);
    attr.type = PERF_TYPE_TRACEPOINT;
    attr.size = sizeof attr;
    attr.config = static_cast<unsigned long long>(id);
    attr.disabled = 1;
    attr.inherit = 1;  // threads created after this are counted as well
    long fd = syscall(SYS_perf_event_open, &attr, 0 /* this process */, -1 /* any CPU */,
                      -1 /* no group */, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0) {
        int error = errno;
        std::snprintf(syscall_status, sizeof syscall_status,
                      "off: perf_event_open(syscalls:sys_enter_%s): %s%s", name, std::strerror(error),
                      error == EACCES || error == EPERM
                          ? " (needs root, or kernel.perf_event_paranoid <= -1)" : "");
        return -1;
    }
    return static_cast<int>(fd);
}

// Open the process's events, once: all of them, or none.
void open_syscall_counters()
{
    if (syscall_counting != counting::unknown)
        return;
    for (int i = 0; i < syscall_kinds; i++) {
        long id = tracepoint_id(syscall_names[i]);
        syscall_fds[i] = id < 0 ? -1 : open_tracepoint(id, syscall_names[i]);
        if (syscall_fds[i] < 0) {
            for (int j = 0; j < i; j++) {
                close(syscall_fds[j]);
                syscall_fds[j] = -1;
            }
            syscall_counting = counting::off;
            return;
        }
    }
    syscall_counting = counting::on;
    std::snprintf(syscall_status, sizeof syscall_status, "on");
}

// The totals so far (all threads, live or gone); false if one is unreadable.
bool read_syscall_counters(uint64_t *totals)
{
    for (int i = 0; i < syscall_kinds; i++)
        if (read(syscall_fds[i], &totals[i], sizeof totals[i]) != static_cast<ssize_t>(sizeof totals[i]))
            return false;
    return true;
}

void switch_syscall_counters(bench_run *run, bool on)
{
    if (!run->counting_syscalls)
        return;
    for (int fd : syscall_fds)
        ioctl(fd, on ? PERF_EVENT_IOC_ENABLE : PERF_EVENT_IOC_DISABLE, 0);
}

// This run's counts, as <name>_per_kop counters (nothing when not counting).
void report_syscall_counters(bench_run *run)
{
    uint64_t after[syscall_kinds];
    double iterations = static_cast<double>(run->state.iterations());
    if (!run->counting_syscalls || !read_syscall_counters(after) || iterations <= 0)
        return;  // no counters rather than wrong ones
    for (int i = 0; i < syscall_kinds; i++) {
        char name[32];
        std::snprintf(name, sizeof name, "%s_per_kop", syscall_names[i]);
        run->state.counters[name] = static_cast<double>(after[i] - run->syscalls_before[i]) * 1000.0 / iterations;
    }
}

}  // namespace

extern "C" bool bench_keep_running(bench_run *run, uint64_t batch)
{
    bool more = run->state.KeepRunningBatch(static_cast<benchmark::IterationCount>(batch));
    if (!run->timer_started && more) {
        // The timer has just started: so does the counting.
        run->timer_started = true;
        switch_syscall_counters(run, true);
    } else if (!more) {
        switch_syscall_counters(run, false);  // the timer has stopped
    }
    return more;
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
    if (run->timer_started)
        switch_syscall_counters(run, false);
    run->state.PauseTiming();
}

extern "C" void bench_resume(bench_run *run)
{
    run->state.ResumeTiming();
    if (run->timer_started)
        switch_syscall_counters(run, true);
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

const char *bench_syscall_counters_status(bool wanted)
{
    if (!wanted && syscall_counting == counting::unknown) {
        syscall_counting = counting::off;
        std::snprintf(syscall_status, sizeof syscall_status, "off: not asked for (--bench-no-syscalls)");
    }
    open_syscall_counters();
    return syscall_status;
}

void bench_run_body(benchmark::State &state, bench_body *body)
{
    reset_peak_rss();
    bench_run run = {state, -1, false, {}, false};
    open_syscall_counters();  // main() normally did it: the threads of every body inherit the events
    run.counting_syscalls = syscall_counting == counting::on && read_syscall_counters(run.syscalls_before);
    body(&run);
    switch_syscall_counters(&run, false);  // a body that left its loop early
    rss_kib rss = read_rss();
    state.counters["peak_rss_kib"] = static_cast<double>(rss.peak);
    state.counters["end_rss_kib"] = static_cast<double>(run.end_rss_kib >= 0 ? run.end_rss_kib : rss.now);
    report_syscall_counters(&run);
}
