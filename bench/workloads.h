/* workloads.h -- the benchmark bodies of bench/workloads.c.
 *
 * Each is a bench_body (see bench.h); register.cc gives each its name and
 * arguments.  The argument, when there is one, is named in the comment.
 */
#ifndef PYM_BENCH_WORKLOADS_H
#define PYM_BENCH_WORKLOADS_H

#include "bench.h"

#ifdef __cplusplus
extern "C" {
#endif

bench_body bench_pair;              /* arg 0: block size in bytes */
bench_body bench_random_live;       /* random sizes 8..512, 200,000 live blocks */
bench_body bench_interpreter_churn; /* lists and hash tables of 16..64-byte objects */
bench_body bench_string_append;     /* realloc growth by small appends to 8 MiB */
bench_body bench_cross_thread;      /* arg 0: producer/consumer thread pairs */
bench_body bench_parallel_threads;  /* arg 0: independent threads */
bench_body bench_short_threads;     /* one short-lived thread per operation */
bench_body bench_large;             /* arg 0: block size in bytes */
bench_body bench_fragmentation;     /* one million small blocks, half freed, refilled */
bench_body bench_large_churn;       /* 20 slots of 1..25 MiB zeroed blocks, one replaced per op */
bench_body bench_producer_consumer; /* arg 0: block size, 0 = mixed; batches of 4096 to another thread */
bench_body bench_request_response;  /* two threads trading requests and responses, 16 B..16 KiB */
bench_body bench_larson;            /* 2 workers replaced every 20,000 ops, arrays carried over */
bench_body bench_thread_churn;      /* arg 0: threads trading blocks through a shared table */

#ifdef __cplusplus
}
#endif

#endif
