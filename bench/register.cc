// register.cc -- the workload table and main() of bench/pymalloc-bench.
//
// Each row names a C body of workloads.c, its argument (name and values),
// whether it runs threads of its own (then google-benchmark must time the
// wall clock: UseRealTime), the time unit of its figures and, for workloads
// where one iteration is long, a fixed iteration count.  Everything else —
// minimum time, repetitions, output files — comes from google-benchmark's
// own command-line flags, which bench/report.py passes.
//
// The binary is linked with neither pymalloc nor jemalloc: which malloc it
// measures is chosen with LD_PRELOAD when it is started.  The library that
// actually provides `malloc` is recorded in the JSON context as malloc_from,
// so the report can check that each preload took effect.
//
// Own flags (removed before google-benchmark sees the arguments):
//   --bench-quick         small sizes for the smoke test (tests/bench_smoke.sh)
//   --bench-no-syscalls   no system-call counters (bench.cc); the JSON context
//                         says whether they are on (syscall_counters)

#include "workloads.h"

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <initializer_list>
#include <vector>

namespace {

struct workload {
    const char *name;
    bench_body *body;
    const char *arg_name;  // nullptr: no argument
    std::vector<int64_t> args;
    bool own_threads;  // starts its own threads: wall-clock time
    benchmark::TimeUnit unit;
    int64_t fixed_iterations;  // 0: as many as --benchmark_min_time needs
};

constexpr int64_t KiB = 1024;
constexpr int64_t MiB = 1024 * KiB;

const workload workloads[] = {
    {"pair", bench_pair, "size",
     {8, 16, 32, 64, 128, 256, 512, 1 * KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB},
     false, benchmark::kNanosecond, 0},
    {"random_live", bench_random_live, nullptr, {}, false, benchmark::kNanosecond, 0},
    {"interpreter_churn", bench_interpreter_churn, nullptr, {}, false, benchmark::kNanosecond, 0},
    {"string_append", bench_string_append, nullptr, {}, false, benchmark::kMillisecond, 0},
    {"cross_thread", bench_cross_thread, "pairs", {1, 2}, true, benchmark::kNanosecond, 0},
    {"parallel_threads", bench_parallel_threads, "threads", {1, 2}, true, benchmark::kNanosecond, 0},
    {"short_threads", bench_short_threads, nullptr, {}, true, benchmark::kMicrosecond, 0},
    {"producer_consumer", bench_producer_consumer, "size", {64, 0}, true, benchmark::kNanosecond, 0},
    {"request_response", bench_request_response, nullptr, {}, true, benchmark::kNanosecond, 0},
    {"larson", bench_larson, nullptr, {}, true, benchmark::kNanosecond, 0},
    {"thread_churn", bench_thread_churn, "threads", {4, 16}, true, benchmark::kNanosecond, 0},
    {"large", bench_large, "size", {64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB, 32 * MiB}, false,
     benchmark::kMicrosecond, 0},
    // A fixed count: every allocator gets the same sequence of sizes (and so comparable peak RSS).
    {"large_churn", bench_large_churn, nullptr, {}, false, benchmark::kMillisecond, 100},
    {"fragmentation", bench_fragmentation, nullptr, {}, false, benchmark::kMillisecond, 1},
};

void register_workloads()
{
    for (const workload &w : workloads) {
        bench_body *body = w.body;
        benchmark::internal::Benchmark *b = benchmark::RegisterBenchmark(
            w.name, [body](benchmark::State &state) { bench_run_body(state, body); });
        if (w.arg_name != nullptr) {
            b->ArgName(w.arg_name);
            for (int64_t arg : w.args)
                b->Arg(arg);
        }
        if (w.own_threads)
            b->UseRealTime();
        b->Unit(w.unit);
        if (w.fixed_iterations > 0)
            b->Iterations(w.fixed_iterations);
    }
}

// The file name of the library whose `malloc` this process calls.
const char *malloc_provider()
{
    Dl_info info;
    void *malloc_address = dlsym(RTLD_DEFAULT, "malloc");
    if (malloc_address != nullptr && dladdr(malloc_address, &info) != 0 && info.dli_fname != nullptr)
        return info.dli_fname;
    return "unknown";
}

}  // namespace

int main(int argc, char **argv)
{
    bool quick = false;
    bool syscalls = true;
    int kept = 1;
    for (int i = 1; i < argc; i++) {
        if (std::strcmp(argv[i], "--bench-quick") == 0)
            quick = true;
        else if (std::strcmp(argv[i], "--bench-no-syscalls") == 0)
            syscalls = false;
        else
            argv[kept++] = argv[i];
    }
    argc = kept;
    argv[argc] = nullptr;
    bench_set_quick(quick);

    register_workloads();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    const char *preload = std::getenv("LD_PRELOAD");
    benchmark::AddCustomContext("malloc_from", malloc_provider());
    benchmark::AddCustomContext("ld_preload", preload != nullptr ? preload : "");
    benchmark::AddCustomContext("bench_quick", quick ? "yes" : "no");
    benchmark::AddCustomContext("syscall_counters", bench_syscall_counters_status(syscalls));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
