/* workloads.c -- the benchmark bodies: what each workload does, in plain C.
 *
 * Each body calls malloc/free/realloc directly; which allocator answers is
 * decided when the program is started (LD_PRELOAD, see bench/README.md), so
 * the same code runs under glibc, jemalloc and pymalloc.  Every new block has
 * a byte written into it (bench_touch) as a real program would, and every
 * pointer goes through bench_escape so that the compiler cannot drop a
 * malloc/free pair.  Sizes and orders come from a seeded splitmix64, so each
 * allocator sees exactly the same sequence of requests.
 *
 * One google-benchmark iteration is one operation, as named in register.cc
 * (a malloc/free pair, a block replaced, a string built, a thread run...).
 * A failed allocation aborts the run with a message: the driver reports the
 * workload as failed for that allocator.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workloads.h"

/* ---- helpers ------------------------------------------------------------- */

static _Noreturn void allocation_failed(const char *call, size_t size)
{
    fprintf(stderr, "pymalloc-bench: %s(%zu) returned NULL\n", call, size);
    abort();
}

static void *checked_malloc(size_t size)
{
    void *block = malloc(size);
    if (block == NULL)
        allocation_failed("malloc", size);
    return block;
}

static void *checked_realloc(void *block, size_t size)
{
    void *moved = realloc(block, size);
    if (moved == NULL)
        allocation_failed("realloc", size);
    return moved;
}

static void *checked_calloc(size_t count, size_t size)
{
    void *block = calloc(count, size);
    if (block == NULL)
        allocation_failed("calloc", count * size);
    return block;
}

/* malloc + one byte written: a new object being initialised. */
static void *new_block(size_t size)
{
    void *block = checked_malloc(size);
    bench_touch(block, size);
    return block;
}

static void start_thread(pthread_t *thread, void *(*main_function)(void *), void *argument)
{
    int error = pthread_create(thread, NULL, main_function, argument);
    if (error != 0) {
        fprintf(stderr, "pymalloc-bench: pthread_create: %s\n", strerror(error));
        abort();
    }
}

static void join_thread(pthread_t thread)
{
    int error = pthread_join(thread, NULL);
    if (error != 0) {
        fprintf(stderr, "pymalloc-bench: pthread_join: %s\n", strerror(error));
        abort();
    }
}

enum { MAX_THREADS_PER_ROLE = 16 };

/* A thread-count argument of register.cc, within what the bodies' arrays hold. */
static size_t checked_thread_count(int64_t count, const char *what)
{
    if (count < 1 || count > MAX_THREADS_PER_ROLE) {
        fprintf(stderr, "pymalloc-bench: %s = %lld, must be 1..%d\n", what, (long long)count,
                MAX_THREADS_PER_ROLE);
        abort();
    }
    return (size_t)count;
}

/* Busy-wait politely: spin briefly, then give the core away (on 2 cores with
 * 4 threads the thread we wait for may need ours). */
static void wait_a_little(unsigned *spins)
{
    if (++*spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ volatile("yield");
#endif
    } else {
        *spins = 0;
        sched_yield();
    }
}

/* ---- malloc/free pairs of one size ------------------------------------------- */

/* One size in a tight loop: the temporary buffer of every request or call
 * (a parser's scratch node, a formatting buffer, an I/O block). */
void bench_pair(bench_run *run)
{
    size_t size = (size_t)bench_arg(run, 0);
    uint64_t batch = size >= 65536 ? 16 : 1024;
    while (bench_keep_running(run, batch)) {
        for (uint64_t i = 0; i < batch; i++) {
            void *block = new_block(size);
            free(block);
        }
    }
}

/* ---- random sizes, large live set ---------------------------------------------- */

enum { RANDOM_LIVE_BLOCKS = 200000, RANDOM_LIVE_BLOCKS_QUICK = 20000 };

/* A long-running server or cache whose objects have unrelated lifetimes:
 * 200,000 blocks of 8..512 bytes live (far more than the CPU caches hold),
 * one of them, picked at random, replaced by a new random size per operation. */
void bench_random_live(bench_run *run)
{
    size_t live = bench_quick() ? RANDOM_LIVE_BLOCKS_QUICK : RANDOM_LIVE_BLOCKS;
    uint64_t random_state = 0x5eed0001;
    void **blocks = checked_malloc(live * sizeof *blocks);
    for (size_t i = 0; i < live; i++)
        blocks[i] = new_block(bench_random_between(&random_state, 8, 512));

    const uint64_t batch = 1024;
    while (bench_keep_running(run, batch)) {
        for (uint64_t n = 0; n < batch; n++) {
            size_t victim = bench_random_between(&random_state, 0, live - 1);
            free(blocks[victim]);
            blocks[victim] = new_block(bench_random_between(&random_state, 8, 512));
        }
    }

    for (size_t i = 0; i < live; i++)
        free(blocks[i]);
    free(blocks);
    bench_set_counter(run, "live_blocks", (double)live);
}

/* ---- interpreter-like object churn ------------------------------------------------ */

/* A list as CPython keeps one: an array of object pointers over-allocated by
 * 1/8 on growth, shrunk when less than half full, freed when empty. */
typedef struct churn_list {
    void **items;
    size_t length;
    size_t capacity;
    size_t target_length; /* grows toward it, or shrinks; a new one is drawn on arrival */
} churn_list;

/* A chained hash table of (key, value object) entries, resized (new bucket
 * array, entries relinked, old array freed) as a dict is. */
typedef struct churn_entry {
    struct churn_entry *next;
    uint64_t key;
    void *value;
} churn_entry;

typedef struct churn_table {
    churn_entry **buckets;
    size_t bucket_count; /* a power of two, or 0 with buckets == NULL */
    size_t entry_count;
    size_t target_count;
    uint64_t next_key;
} churn_table;

enum {
    CHURN_LISTS = 64,
    CHURN_LIST_MAX = 2048,
    CHURN_TABLES = 16,
    CHURN_TABLE_MAX = 4096,
    CHURN_TABLE_MIN_BUCKETS = 8,
};

static void *new_small_object(uint64_t *random_state)
{
    return new_block(bench_random_between(random_state, 16, 64));
}

static void list_resize(churn_list *list, size_t new_length)
{
    if (new_length <= list->capacity && new_length >= list->capacity / 2)
        return;
    if (new_length == 0) {
        free(list->items);
        list->items = NULL;
        list->capacity = 0;
        return;
    }
    size_t capacity = (new_length + (new_length >> 3) + 6) & ~(size_t)3;
    list->items = checked_realloc(list->items, capacity * sizeof *list->items);
    list->capacity = capacity;
}

static void list_step(churn_list *list, uint64_t *random_state)
{
    if (list->length < list->target_length) {
        list_resize(list, list->length + 1);
        list->items[list->length++] = new_small_object(random_state);
    } else if (list->length > list->target_length) {
        free(list->items[--list->length]);
        list_resize(list, list->length);
    }
    if (list->length == list->target_length)
        list->target_length = bench_random_between(random_state, 0, CHURN_LIST_MAX);
}

static size_t table_slot(uint64_t key, size_t bucket_count)
{
    return (size_t)((key * 0x9e3779b97f4a7c15u) >> 20) & (bucket_count - 1);
}

static void table_rehash(churn_table *table, size_t bucket_count)
{
    churn_entry **buckets = NULL;
    if (bucket_count > 0)
        buckets = checked_calloc(bucket_count, sizeof *buckets);
    for (size_t b = 0; b < table->bucket_count; b++) {
        churn_entry *entry = table->buckets[b];
        while (entry != NULL) {
            churn_entry *next = entry->next;
            size_t slot = table_slot(entry->key, bucket_count);
            entry->next = buckets[slot];
            buckets[slot] = entry;
            entry = next;
        }
    }
    free(table->buckets);
    table->buckets = buckets;
    table->bucket_count = bucket_count;
}

static void table_insert(churn_table *table, uint64_t *random_state)
{
    if (table->entry_count + 1 > table->bucket_count)
        table_rehash(table, table->bucket_count ? table->bucket_count * 2 : CHURN_TABLE_MIN_BUCKETS);
    churn_entry *entry = new_block(sizeof *entry);
    entry->key = table->next_key++;
    entry->value = new_small_object(random_state);
    size_t slot = table_slot(entry->key, table->bucket_count);
    entry->next = table->buckets[slot];
    table->buckets[slot] = entry;
    table->entry_count++;
}

/* Delete the first entry at or after a random bucket. */
static void table_delete_one(churn_table *table, uint64_t *random_state)
{
    size_t slot = bench_random_between(random_state, 0, table->bucket_count - 1);
    while (table->buckets[slot] == NULL)
        slot = (slot + 1) & (table->bucket_count - 1);
    churn_entry *entry = table->buckets[slot];
    table->buckets[slot] = entry->next;
    free(entry->value);
    free(entry);
    table->entry_count--;
    if (table->entry_count == 0)
        table_rehash(table, 0);
    else if (table->entry_count < table->bucket_count / 8 && table->bucket_count > CHURN_TABLE_MIN_BUCKETS)
        table_rehash(table, table->bucket_count / 4);
}

static void table_step(churn_table *table, uint64_t *random_state)
{
    if (table->entry_count < table->target_count)
        table_insert(table, random_state);
    else if (table->entry_count > table->target_count)
        table_delete_one(table, random_state);
    if (table->entry_count == table->target_count)
        table->target_count = bench_random_between(random_state, 0, CHURN_TABLE_MAX);
}

/* An interpreter running a program that builds and discards lists and dicts
 * (CPython with PYTHONMALLOC=malloc, Ruby, Lua): 16..64-byte objects appended
 * to and popped from 64 lists whose item arrays grow and shrink by realloc,
 * and entries inserted into and deleted from 16 resizing hash tables.  Each
 * structure heads for a random size, then for another; one operation is one
 * step of one structure (3 of 4 steps go to lists). */
void bench_interpreter_churn(bench_run *run)
{
    uint64_t random_state = 0x5eed0002;
    churn_list lists[CHURN_LISTS];
    churn_table tables[CHURN_TABLES];
    memset(lists, 0, sizeof lists);
    memset(tables, 0, sizeof tables);
    for (size_t i = 0; i < CHURN_LISTS; i++)
        lists[i].target_length = bench_random_between(&random_state, 0, CHURN_LIST_MAX);
    for (size_t i = 0; i < CHURN_TABLES; i++)
        tables[i].target_count = bench_random_between(&random_state, 0, CHURN_TABLE_MAX);

    const uint64_t batch = 1024;
    while (bench_keep_running(run, batch)) {
        for (uint64_t n = 0; n < batch; n++) {
            uint64_t choice = bench_random(&random_state);
            if ((choice & 3) != 0)
                list_step(&lists[(choice >> 8) % CHURN_LISTS], &random_state);
            else
                table_step(&tables[(choice >> 8) % CHURN_TABLES], &random_state);
        }
    }

    size_t live_objects = 0;
    for (size_t i = 0; i < CHURN_LISTS; i++) {
        live_objects += lists[i].length;
        for (size_t j = 0; j < lists[i].length; j++)
            free(lists[i].items[j]);
        free(lists[i].items);
    }
    for (size_t i = 0; i < CHURN_TABLES; i++) {
        live_objects += 2 * tables[i].entry_count;
        while (tables[i].entry_count > 0)
            table_delete_one(&tables[i], &random_state);
    }
    bench_set_counter(run, "live_blocks_at_end", (double)live_objects);
}

/* ---- string building by repeated append ------------------------------------------- */

enum { STRING_FINAL_LENGTH = 8 << 20, STRING_FINAL_LENGTH_QUICK = 1 << 20 };

/* A naive `s += x` loop (or a runtime without growth slack): chunks of 1..64
 * bytes appended to a string that starts at 16 bytes, with a realloc to the
 * exact new length per append, until it holds 8 MiB.  One operation is one
 * whole string built and freed. */
void bench_string_append(bench_run *run)
{
    size_t final_length = bench_quick() ? STRING_FINAL_LENGTH_QUICK : STRING_FINAL_LENGTH;
    char chunk_source[64];
    memset(chunk_source, 'x', sizeof chunk_source);
    uint64_t random_state = 0x5eed0003;
    uint64_t appends = 0;
    uint64_t builds = 0;

    while (bench_keep_running(run, 1)) {
        size_t length = 16;
        char *text = checked_malloc(length);
        memset(text, 's', length);
        while (length < final_length) {
            size_t chunk = bench_random_between(&random_state, 1, sizeof chunk_source);
            text = checked_realloc(text, length + chunk);
            memcpy(text + length, chunk_source, chunk);
            length += chunk;
            appends++;
        }
        bench_escape(text);
        free(text);
        builds++;
    }
    bench_set_counter(run, "appends_per_build", builds ? (double)appends / (double)builds : 0);
}

/* ---- cross-thread frees: producers and consumers ------------------------------------ */

enum {
    MESSAGE_RING_SLOTS = 1024,  /* a power of two */
    MESSAGE_PUBLISH_EVERY = 32, /* indices are published in groups: less line ping-pong */
    MESSAGES_PER_PAIR = 200000,
    MESSAGES_PER_PAIR_QUICK = 20000,
};

/* A single-producer single-consumer queue of blocks. */
typedef struct message_ring {
    _Alignas(64) _Atomic uint64_t published; /* written by the producer */
    _Alignas(64) _Atomic uint64_t consumed;  /* written by the consumer */
    _Alignas(64) void *slots[MESSAGE_RING_SLOTS];
    uint64_t messages;
    uint64_t random_seed;
    uint64_t checksum; /* consumer's: first bytes of the messages read */
} message_ring;

static void *producer_main(void *argument)
{
    message_ring *ring = argument;
    uint64_t random_state = ring->random_seed;
    uint64_t written = 0;
    uint64_t consumed_seen = 0;
    while (written < ring->messages) {
        size_t size = bench_random_between(&random_state, 16, 512);
        unsigned char *message = checked_malloc(size);
        message[0] = (unsigned char)size;
        message[size - 1] = (unsigned char)size;
        if (written - consumed_seen == MESSAGE_RING_SLOTS) {
            atomic_store_explicit(&ring->published, written, memory_order_release);
            unsigned spins = 0;
            while (written - (consumed_seen = atomic_load_explicit(&ring->consumed, memory_order_acquire)) ==
                   MESSAGE_RING_SLOTS)
                wait_a_little(&spins);
        }
        ring->slots[written % MESSAGE_RING_SLOTS] = message;
        written++;
        if (written % MESSAGE_PUBLISH_EVERY == 0 || written == ring->messages)
            atomic_store_explicit(&ring->published, written, memory_order_release);
    }
    return NULL;
}

static void *consumer_main(void *argument)
{
    message_ring *ring = argument;
    uint64_t read_count = 0;
    uint64_t published_seen = 0;
    uint64_t checksum = 0;
    while (read_count < ring->messages) {
        if (read_count == published_seen) {
            atomic_store_explicit(&ring->consumed, read_count, memory_order_release);
            unsigned spins = 0;
            while ((published_seen = atomic_load_explicit(&ring->published, memory_order_acquire)) == read_count)
                wait_a_little(&spins);
        }
        unsigned char *message = ring->slots[read_count % MESSAGE_RING_SLOTS];
        checksum += message[0];
        free(message);
        read_count++;
        if (read_count % MESSAGE_PUBLISH_EVERY == 0)
            atomic_store_explicit(&ring->consumed, read_count, memory_order_release);
    }
    ring->checksum = checksum;
    return NULL;
}

/* A pipeline or a thread pool whose results are freed by another thread:
 * producer threads allocate messages of 16..512 bytes and pass them through
 * a queue to consumer threads that read and free them.  Argument: number of
 * producer/consumer pairs.  One operation is one message. */
void bench_cross_thread(bench_run *run)
{
    size_t pairs = checked_thread_count(bench_arg(run, 0), "cross_thread pairs");
    uint64_t messages_per_pair = bench_quick() ? MESSAGES_PER_PAIR_QUICK : MESSAGES_PER_PAIR;
    message_ring *rings = aligned_alloc(64, pairs * sizeof *rings);
    if (rings == NULL)
        allocation_failed("aligned_alloc", pairs * sizeof *rings);
    pthread_t producers[MAX_THREADS_PER_ROLE], consumers[MAX_THREADS_PER_ROLE];
    uint64_t messages = 0;
    uint64_t round = 0;

    while (bench_keep_running(run, pairs * messages_per_pair)) {
        for (size_t p = 0; p < pairs; p++) {
            memset(&rings[p], 0, sizeof rings[p]);
            rings[p].messages = messages_per_pair;
            rings[p].random_seed = 0x5eed0004 + 1000 * round + p;
            start_thread(&consumers[p], consumer_main, &rings[p]);
            start_thread(&producers[p], producer_main, &rings[p]);
        }
        for (size_t p = 0; p < pairs; p++) {
            join_thread(producers[p]);
            join_thread(consumers[p]);
        }
        messages += pairs * messages_per_pair;
        round++;
    }
    free(rings);
    bench_set_items(run, messages);
}

/* ---- independent threads ---------------------------------------------------------------- */

enum { PARALLEL_OPS_PER_THREAD = 1000000, PARALLEL_OPS_PER_THREAD_QUICK = 50000, PARALLEL_WINDOW = 64 };

/* A thread's private work: `operations` times, replace a random block of a
 * window of `size` (<= 64) blocks of 16..512 bytes; all freed at the end. */
static void churn_private_window(size_t size, uint64_t operations, uint64_t *random_state)
{
    void *window[64];
    if (size > 64)
        size = 64;
    for (size_t i = 0; i < size; i++)
        window[i] = new_block(bench_random_between(random_state, 16, 512));
    for (uint64_t n = 0; n < operations; n++) {
        size_t slot = bench_random(random_state) % size;
        free(window[slot]);
        window[slot] = new_block(bench_random_between(random_state, 16, 512));
    }
    for (size_t i = 0; i < size; i++)
        free(window[i]);
}

typedef struct parallel_worker {
    uint64_t operations;
    uint64_t random_seed;
} parallel_worker;

static void *parallel_worker_main(void *argument)
{
    parallel_worker *worker = argument;
    uint64_t random_state = worker->random_seed;
    churn_private_window(PARALLEL_WINDOW, worker->operations, &random_state);
    return NULL;
}

/* Worker threads that allocate privately (a thread-pool server handling
 * independent requests): each replaces blocks of 16..512 bytes in its own
 * window of 64.  Argument: number of threads.  One operation is one block
 * replaced (a free and a malloc); the figure that matters is how the total
 * rate grows from 1 thread to 2. */
void bench_parallel_threads(bench_run *run)
{
    size_t threads = checked_thread_count(bench_arg(run, 0), "parallel_threads threads");
    uint64_t per_thread = bench_quick() ? PARALLEL_OPS_PER_THREAD_QUICK : PARALLEL_OPS_PER_THREAD;
    parallel_worker workers[MAX_THREADS_PER_ROLE];
    pthread_t ids[MAX_THREADS_PER_ROLE];
    uint64_t operations = 0;
    uint64_t round = 0;

    while (bench_keep_running(run, threads * per_thread)) {
        for (size_t t = 0; t < threads; t++) {
            workers[t].operations = per_thread;
            workers[t].random_seed = 0x5eed0005 + 1000 * round + t;
            start_thread(&ids[t], parallel_worker_main, &workers[t]);
        }
        for (size_t t = 0; t < threads; t++)
            join_thread(ids[t]);
        operations += threads * per_thread;
        round++;
    }
    bench_set_items(run, operations);
}

/* ---- short-lived threads ------------------------------------------------------------------ */

enum {
    SHORT_THREAD_OPERATIONS = 1000,
    SHORT_THREAD_WINDOW = 16,
    SHORT_THREAD_FROM_PARENT = 64,
    SHORT_THREAD_TO_PARENT = 16,
};

typedef struct short_thread_job {
    void *from_parent[SHORT_THREAD_FROM_PARENT]; /* allocated by the parent, freed by the thread */
    void *to_parent[SHORT_THREAD_TO_PARENT];     /* allocated by the thread, freed by the parent */
    uint64_t random_seed;
} short_thread_job;

static void *short_thread_main(void *argument)
{
    short_thread_job *job = argument;
    uint64_t random_state = job->random_seed;
    churn_private_window(SHORT_THREAD_WINDOW, SHORT_THREAD_OPERATIONS, &random_state);
    for (size_t i = 0; i < SHORT_THREAD_FROM_PARENT; i++)
        free(job->from_parent[i]);
    for (size_t i = 0; i < SHORT_THREAD_TO_PARENT; i++)
        job->to_parent[i] = new_block(bench_random_between(&random_state, 16, 256));
    return NULL;
}

/* A server starting a thread per connection, a parallel tool spawning
 * workers: each thread makes 1000 malloc/free of mixed small sizes, frees
 * 64 blocks its parent allocated and leaves 16 for the parent to free after
 * joining it.  One operation is one thread, from creation to join. */
void bench_short_threads(bench_run *run)
{
    uint64_t random_state = 0x5eed0006;
    short_thread_job job;
    uint64_t threads = 0;
    while (bench_keep_running(run, 1)) {
        for (size_t i = 0; i < SHORT_THREAD_FROM_PARENT; i++)
            job.from_parent[i] = new_block(bench_random_between(&random_state, 16, 256));
        job.random_seed = bench_random(&random_state);
        pthread_t thread;
        start_thread(&thread, short_thread_main, &job);
        join_thread(thread);
        for (size_t i = 0; i < SHORT_THREAD_TO_PARENT; i++)
            free(job.to_parent[i]);
        threads++;
    }
    bench_set_items(run, threads);
}

/* ---- large blocks -------------------------------------------------------------------------- */

/* Large buffers allocated, written page by page and dropped: image and video
 * frames, decompression and file buffers, per-request scratch space.
 * Argument: block size.  Faulting the pages in dominates; it costs every
 * allocator the same unless it keeps pages mapped between calls. */
void bench_large(bench_run *run)
{
    size_t size = (size_t)bench_arg(run, 0);
    while (bench_keep_running(run, 1)) {
        void *block = checked_malloc(size);
        bench_touch_pages(block, size);
        free(block);
    }
}

/* ---- fragmentation ------------------------------------------------------------------------------ */

enum { FRAGMENTATION_BLOCKS = 1000000, FRAGMENTATION_BLOCKS_QUICK = 100000 };

/* A program that loads a million small records, drops every other one and
 * then loads half as many of other sizes (a cache after an eviction sweep, a
 * compiler between passes): 1,000,000 blocks of 16..128 bytes, the odd ones
 * freed, 500,000 of 16..256 allocated.  Is the freed memory reused, how much
 * RSS does it take?  end_rss_kib is read while all those blocks are live,
 * before the final frees.  One operation is the whole sequence. */
void bench_fragmentation(bench_run *run)
{
    size_t first_count = bench_quick() ? FRAGMENTATION_BLOCKS_QUICK : FRAGMENTATION_BLOCKS;
    size_t second_count = first_count / 2;
    void **first = checked_malloc(first_count * sizeof *first);
    void **second = checked_malloc(second_count * sizeof *second);

    while (bench_keep_running(run, 1)) {
        uint64_t random_state = 0x5eed0007;
        for (size_t i = 0; i < first_count; i++)
            first[i] = new_block(bench_random_between(&random_state, 16, 128));
        for (size_t i = 1; i < first_count; i += 2)
            free(first[i]);
        for (size_t i = 0; i < second_count; i++)
            second[i] = new_block(bench_random_between(&random_state, 16, 256));

        bench_pause(run);
        bench_note_end_rss(run);
        bench_resume(run);

        for (size_t i = 0; i < first_count; i += 2)
            free(first[i]);
        for (size_t i = 0; i < second_count; i++)
            free(second[i]);
    }
    free(first);
    free(second);
    bench_set_counter(run, "live_blocks_at_end_rss", (double)(first_count - first_count / 2 + second_count));
}

/* ---- large blocks replaced at random ----------------------------------------------------------- */

enum { LARGE_CHURN_SLOTS = 20 };

/* A program holding a score of big buffers -- decoded images, column chunks
 * of a query engine, compression windows -- and replacing one at random by
 * a fresh one of another size, the way
 *     buffers[i] = std::make_unique<char[]>(n);
 * does it: the new block is allocated and value-initialised (all of it
 * zeroed) before the old one is freed.  mimalloc-bench's malloc-large, on
 * which users measured pymalloc 19x slower than tcmalloc.  20 slots, sizes
 * uniform in 1..25 MiB (quick: 64 KiB..1 MiB), filled before the timer
 * starts.  One operation is one replacement; peak RSS matters as much. */
void bench_large_churn(bench_run *run)
{
    size_t low = bench_quick() ? 64 << 10 : 1 << 20;
    size_t high = bench_quick() ? 1 << 20 : 25 << 20;
    uint64_t random_state = 0x5eed0008;
    unsigned char *slots[LARGE_CHURN_SLOTS];
    for (size_t i = 0; i < LARGE_CHURN_SLOTS; i++) {
        size_t size = bench_random_between(&random_state, low, high);
        slots[i] = checked_malloc(size);
        bench_escape(slots[i]); /* GCC would make malloc + memset(0) a calloc */
        memset(slots[i], 0, size);
    }

    uint64_t bytes = 0;
    uint64_t replaced = 0;
    while (bench_keep_running(run, 1)) {
        size_t victim = bench_random_between(&random_state, 0, LARGE_CHURN_SLOTS - 1);
        size_t size = bench_random_between(&random_state, low, high);
        unsigned char *fresh = checked_malloc(size);
        bench_escape(fresh);
        memset(fresh, 0, size);
        bench_escape(fresh);
        free(slots[victim]);
        slots[victim] = fresh;
        bytes += size;
        replaced++;
    }

    for (size_t i = 0; i < LARGE_CHURN_SLOTS; i++)
        free(slots[i]);
    bench_set_counter(run, "mean_block_mib", replaced ? (double)bytes / (double)replaced / (1 << 20) : 0);
}

/* ---- batches handed from a producer thread to a consumer thread -------------------------------- */

enum {
    BATCH_BLOCKS = 4096,
    BATCH_QUEUE_SLOTS = 64, /* batches in flight, at most */
    BATCHES_PER_ROUND = 256,
    BATCHES_PER_ROUND_QUICK = 4,
    BATCH_WRITTEN_BYTES = 128,
};

static const size_t batch_mixed_sizes[] = {8,   12,  16,  24,  32,  48,   64,   96,  128,
                                           192, 256, 384, 512, 768, 1024, 1536, 2048};

typedef struct block_batch {
    void *blocks[BATCH_BLOCKS];
} block_batch;

/* A bounded queue of batches (mutex + condition variables) and the round's work. */
typedef struct batch_queue {
    pthread_mutex_t lock;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    block_batch *slots[BATCH_QUEUE_SLOTS];
    size_t first; /* index of the oldest queued batch */
    size_t queued;
    size_t batches; /* to hand over this round */
    size_t size;    /* of every block, or 0: drawn from batch_mixed_sizes */
    uint64_t random_seed;
    uint64_t checksum; /* consumer's: first bytes read */
} batch_queue;

static void batch_queue_push(batch_queue *queue, block_batch *batch)
{
    pthread_mutex_lock(&queue->lock);
    while (queue->queued == BATCH_QUEUE_SLOTS)
        pthread_cond_wait(&queue->not_full, &queue->lock);
    queue->slots[(queue->first + queue->queued) % BATCH_QUEUE_SLOTS] = batch;
    queue->queued++;
    pthread_cond_signal(&queue->not_empty);
    pthread_mutex_unlock(&queue->lock);
}

static block_batch *batch_queue_pop(batch_queue *queue)
{
    pthread_mutex_lock(&queue->lock);
    while (queue->queued == 0)
        pthread_cond_wait(&queue->not_empty, &queue->lock);
    block_batch *batch = queue->slots[queue->first];
    queue->first = (queue->first + 1) % BATCH_QUEUE_SLOTS;
    queue->queued--;
    pthread_cond_signal(&queue->not_full);
    pthread_mutex_unlock(&queue->lock);
    return batch;
}

static void *batch_producer_main(void *argument)
{
    batch_queue *queue = argument;
    uint64_t random_state = queue->random_seed;
    const size_t mixed_count = sizeof batch_mixed_sizes / sizeof batch_mixed_sizes[0];
    for (size_t b = 0; b < queue->batches; b++) {
        block_batch *batch = checked_malloc(sizeof *batch);
        for (size_t i = 0; i < BATCH_BLOCKS; i++) {
            size_t size = queue->size != 0
                              ? queue->size
                              : batch_mixed_sizes[bench_random_between(&random_state, 0, mixed_count - 1)];
            void *block = checked_malloc(size);
            memset(block, (int)(size & 0xff), size < BATCH_WRITTEN_BYTES ? size : BATCH_WRITTEN_BYTES);
            bench_escape(block);
            batch->blocks[i] = block;
        }
        batch_queue_push(queue, batch);
    }
    return NULL;
}

static void *batch_consumer_main(void *argument)
{
    batch_queue *queue = argument;
    uint64_t checksum = 0;
    for (size_t b = 0; b < queue->batches; b++) {
        block_batch *batch = batch_queue_pop(queue);
        for (size_t i = 0; i < BATCH_BLOCKS; i++) {
            checksum += *(unsigned char *)batch->blocks[i];
            free(batch->blocks[i]);
        }
        free(batch);
    }
    queue->checksum = checksum;
    return NULL;
}

/* xmalloc-test: a producer thread (a parser, a network reader) allocates
 * objects in batches of 4096, initialising up to 128 bytes of each, and
 * hands every batch (a malloc'd array of the pointers) through a bounded
 * queue -- at most 64 batches in flight -- to a consumer thread that frees
 * the objects and the batch: every free is remote.  Argument: the block
 * size, or 0 for sizes drawn from 8 B .. 2 KiB.  One operation is one
 * block; both threads are started per round of 256 batches (quick: 4). */
void bench_producer_consumer(bench_run *run)
{
    size_t size = (size_t)bench_arg(run, 0);
    size_t batches = bench_quick() ? BATCHES_PER_ROUND_QUICK : BATCHES_PER_ROUND;
    batch_queue queue;
    memset(&queue, 0, sizeof queue);
    pthread_mutex_init(&queue.lock, NULL);
    pthread_cond_init(&queue.not_empty, NULL);
    pthread_cond_init(&queue.not_full, NULL);
    uint64_t blocks = 0;
    uint64_t round = 0;

    while (bench_keep_running(run, batches * BATCH_BLOCKS)) {
        queue.first = 0;
        queue.queued = 0;
        queue.batches = batches;
        queue.size = size;
        queue.random_seed = 0x5eed0009 + round;
        pthread_t producer, consumer;
        start_thread(&consumer, batch_consumer_main, &queue);
        start_thread(&producer, batch_producer_main, &queue);
        join_thread(producer);
        join_thread(consumer);
        blocks += batches * BATCH_BLOCKS;
        round++;
    }
    pthread_cond_destroy(&queue.not_full);
    pthread_cond_destroy(&queue.not_empty);
    pthread_mutex_destroy(&queue.lock);
    bench_set_items(run, blocks);
}

/* ---- requests and responses between two threads ------------------------------------------------ */

enum {
    REQUEST_WINDOW = 64,     /* requests in flight, at most */
    REQUEST_RING_SLOTS = 64, /* a power of two, >= REQUEST_WINDOW: a ring never fills */
    REQUESTS_PER_ROUND = 100000,
    REQUESTS_PER_ROUND_QUICK = 2000,
};

typedef struct sized_block {
    unsigned char *data;
    size_t size;
} sized_block;

/* A single-producer single-consumer ring of blocks, one element published at a time. */
typedef struct request_ring {
    _Alignas(64) _Atomic uint64_t written; /* by the producer */
    _Alignas(64) _Atomic uint64_t taken;   /* by the consumer */
    _Alignas(64) sized_block slots[REQUEST_RING_SLOTS];
} request_ring;

typedef struct request_exchange {
    request_ring to_server;
    request_ring to_client;
    uint64_t requests; /* this round */
    uint64_t client_seed;
    uint64_t server_seed;
    uint64_t checksum;
} request_exchange;

static void ring_put(request_ring *ring, sized_block block)
{
    uint64_t written = atomic_load_explicit(&ring->written, memory_order_relaxed);
    unsigned spins = 0;
    while (written - atomic_load_explicit(&ring->taken, memory_order_acquire) == REQUEST_RING_SLOTS)
        wait_a_little(&spins);
    ring->slots[written % REQUEST_RING_SLOTS] = block;
    atomic_store_explicit(&ring->written, written + 1, memory_order_release);
}

static bool ring_take(request_ring *ring, sized_block *block)
{
    uint64_t taken = atomic_load_explicit(&ring->taken, memory_order_relaxed);
    if (atomic_load_explicit(&ring->written, memory_order_acquire) == taken)
        return false;
    *block = ring->slots[taken % REQUEST_RING_SLOTS];
    atomic_store_explicit(&ring->taken, taken + 1, memory_order_release);
    return true;
}

/* 16 B .. 16 KiB, each power-of-two range as likely as the others. */
static sized_block new_message(uint64_t *random_state)
{
    unsigned shift = (unsigned)bench_random_between(random_state, 4, 13);
    size_t size = ((size_t)1 << shift) + bench_random_between(random_state, 0, ((size_t)1 << shift) - 1);
    sized_block block = {checked_malloc(size), size};
    block.data[0] = (unsigned char)size;
    block.data[size - 1] = (unsigned char)shift;
    bench_escape(block.data);
    return block;
}

static uint64_t read_message(sized_block block)
{
    return (uint64_t)block.data[0] + block.data[block.size - 1];
}

static void *request_client_main(void *argument)
{
    request_exchange *exchange = argument;
    uint64_t random_state = exchange->client_seed;
    uint64_t sent = 0;
    uint64_t answered = 0;
    uint64_t checksum = 0;
    unsigned spins = 0;
    while (answered < exchange->requests) {
        bool progress = false;
        sized_block response;
        while (ring_take(&exchange->to_client, &response)) {
            checksum += read_message(response);
            free(response.data);
            answered++;
            progress = true;
        }
        if (sent < exchange->requests && sent - answered < REQUEST_WINDOW) {
            ring_put(&exchange->to_server, new_message(&random_state));
            sent++;
            progress = true;
        }
        if (progress)
            spins = 0;
        else
            wait_a_little(&spins);
    }
    exchange->checksum = checksum;
    return NULL;
}

static void *request_server_main(void *argument)
{
    request_exchange *exchange = argument;
    uint64_t random_state = exchange->server_seed;
    uint64_t checksum = 0;
    unsigned spins = 0;
    for (uint64_t handled = 0; handled < exchange->requests;) {
        sized_block request;
        if (!ring_take(&exchange->to_server, &request)) {
            wait_a_little(&spins);
            continue;
        }
        spins = 0;
        checksum += read_message(request);
        free(request.data);
        ring_put(&exchange->to_client, new_message(&random_state));
        handled++;
    }
    bench_escape(&checksum);
    return NULL;
}

/* rptest, or any server answering requests from a client thread: thread A
 * allocates a request of 16 B .. 16 KiB (log-uniform), writes its first and
 * last bytes and passes it through an SPSC ring to thread B, which reads
 * and frees it and answers with a response block of another random size,
 * freed by A; up to 64 requests in flight.  Each side frees what the other
 * allocated.  One operation is one request and its response; both threads
 * are started per round of 100,000 (quick: 2,000). */
void bench_request_response(bench_run *run)
{
    uint64_t requests = bench_quick() ? REQUESTS_PER_ROUND_QUICK : REQUESTS_PER_ROUND;
    request_exchange *exchange = aligned_alloc(64, sizeof *exchange);
    if (exchange == NULL)
        allocation_failed("aligned_alloc", sizeof *exchange);
    uint64_t done = 0;
    uint64_t round = 0;

    while (bench_keep_running(run, requests)) {
        memset(exchange, 0, sizeof *exchange);
        exchange->requests = requests;
        exchange->client_seed = 0x5eed000a + 1000 * round;
        exchange->server_seed = 0x5eed000b + 1000 * round;
        pthread_t client, server;
        start_thread(&server, request_server_main, exchange);
        start_thread(&client, request_client_main, exchange);
        join_thread(client);
        join_thread(server);
        done += requests;
        round++;
    }
    free(exchange);
    bench_set_items(run, done);
}

/* ---- larson: worker threads replaced while their blocks live on -------------------------------- */

enum {
    LARSON_LANES = 2, /* worker threads at any time */
    LARSON_SLOTS = 1000,
    LARSON_OPS_PER_THREAD = 20000,
    LARSON_OPS_PER_THREAD_QUICK = 2000,
    LARSON_THREADS_PER_ROUND = 10, /* per lane */
    LARSON_THREADS_PER_ROUND_QUICK = 2,
};

typedef struct larson_round {
    pthread_mutex_t lock;
    pthread_cond_t lane_done;
    size_t lanes_done;
} larson_round;

/* One worker's array, handed from each thread to the next. */
typedef struct larson_lane {
    void *slots[LARSON_SLOTS];
    uint64_t random_state;
    uint64_t operations; /* per thread */
    size_t threads_left; /* in this round, the running one included */
    pthread_t previous;  /* the thread that started the running one (joined by it), or the last one */
    bool has_previous;
    larson_round *round;
} larson_lane;

static void *new_larson_block(uint64_t *random_state)
{
    size_t size = bench_random_between(random_state, 8, 1000);
    unsigned char *block = checked_malloc(size);
    block[0] = (unsigned char)size;
    block[size - 1] = (unsigned char)size;
    bench_escape(block);
    return block;
}

static void *larson_worker_main(void *argument)
{
    larson_lane *lane = argument;
    if (lane->has_previous)
        join_thread(lane->previous); /* it exits right after starting this one */
    for (uint64_t n = 0; n < lane->operations; n++) {
        size_t slot = bench_random_between(&lane->random_state, 0, LARSON_SLOTS - 1);
        free(lane->slots[slot]);
        lane->slots[slot] = new_larson_block(&lane->random_state);
    }
    lane->previous = pthread_self();
    lane->has_previous = true;
    if (--lane->threads_left > 0) {
        pthread_t next;
        start_thread(&next, larson_worker_main, lane);
    } else {
        pthread_mutex_lock(&lane->round->lock);
        lane->round->lanes_done++;
        pthread_cond_signal(&lane->round->lane_done);
        pthread_mutex_unlock(&lane->round->lock);
    }
    return NULL;
}

/* The larson server benchmark: 2 worker threads, each with its own array of
 * 1000 blocks of 8..1000 bytes (filled before the timer starts); one
 * operation frees a random block of the array and puts a new random size in
 * its place (2 bytes written).  Every 20,000 operations (quick: 2,000) the
 * thread starts its successor, which carries on with the same array --
 * freeing blocks that a thread now gone allocated -- and exits.  One
 * operation is one free + malloc; a round is 10 threads per array (quick 2). */
void bench_larson(bench_run *run)
{
    uint64_t per_thread = bench_quick() ? LARSON_OPS_PER_THREAD_QUICK : LARSON_OPS_PER_THREAD;
    size_t threads = bench_quick() ? LARSON_THREADS_PER_ROUND_QUICK : LARSON_THREADS_PER_ROUND;
    larson_round round;
    pthread_mutex_init(&round.lock, NULL);
    pthread_cond_init(&round.lane_done, NULL);
    larson_lane *lanes = checked_malloc(LARSON_LANES * sizeof *lanes);
    for (size_t l = 0; l < LARSON_LANES; l++) {
        lanes[l].random_state = 0x5eed000c + l;
        for (size_t i = 0; i < LARSON_SLOTS; i++)
            lanes[l].slots[i] = new_larson_block(&lanes[l].random_state);
        lanes[l].operations = per_thread;
        lanes[l].round = &round;
    }
    uint64_t operations = 0;

    while (bench_keep_running(run, LARSON_LANES * threads * per_thread)) {
        round.lanes_done = 0;
        for (size_t l = 0; l < LARSON_LANES; l++) {
            lanes[l].threads_left = threads;
            lanes[l].has_previous = false;
            pthread_t first;
            start_thread(&first, larson_worker_main, &lanes[l]);
        }
        pthread_mutex_lock(&round.lock);
        while (round.lanes_done < LARSON_LANES)
            pthread_cond_wait(&round.lane_done, &round.lock);
        pthread_mutex_unlock(&round.lock);
        for (size_t l = 0; l < LARSON_LANES; l++)
            join_thread(lanes[l].previous); /* each lane's last thread */
        operations += LARSON_LANES * threads * per_thread;
    }

    for (size_t l = 0; l < LARSON_LANES; l++)
        for (size_t i = 0; i < LARSON_SLOTS; i++)
            free(lanes[l].slots[i]);
    free(lanes);
    pthread_cond_destroy(&round.lane_done);
    pthread_mutex_destroy(&round.lock);
    bench_set_items(run, operations);
}

/* ---- many threads trading blocks through a shared table ---------------------------------------- */

enum {
    TRADE_SHARED_SLOTS = 4096,
    TRADE_LOCAL_SLOTS = 256,
    TRADE_OPS_PER_THREAD = 50000,
    TRADE_OPS_PER_THREAD_QUICK = 1000,
};

typedef struct trade_worker {
    void **shared; /* TRADE_SHARED_SLOTS pointers, swapped atomically */
    uint64_t operations;
    uint64_t random_seed;
} trade_worker;

/* 90% 8..256 B, 9% 257 B..16 KiB, 1% 16 KiB..1 MiB. */
static size_t trade_size(uint64_t *random_state)
{
    uint64_t percent = bench_random_between(random_state, 0, 99);
    if (percent < 90)
        return bench_random_between(random_state, 8, 256);
    if (percent < 99)
        return bench_random_between(random_state, 257, 16 << 10);
    return bench_random_between(random_state, (16 << 10) + 1, 1 << 20);
}

static void *trade_worker_main(void *argument)
{
    trade_worker *worker = argument;
    uint64_t random_state = worker->random_seed;
    void *local[TRADE_LOCAL_SLOTS] = {NULL};
    for (uint64_t n = 0; n < worker->operations; n++) {
        void *block = new_block(trade_size(&random_state));
        void *old;
        if (bench_random(&random_state) & 1) {
            size_t slot = bench_random_between(&random_state, 0, TRADE_LOCAL_SLOTS - 1);
            old = local[slot];
            local[slot] = block;
        } else {
            size_t slot = bench_random_between(&random_state, 0, TRADE_SHARED_SLOTS - 1);
            old = __atomic_exchange_n(&worker->shared[slot], block, __ATOMIC_ACQ_REL);
        }
        free(old); /* possibly allocated by another thread, maybe one that has exited */
    }
    for (size_t i = 0; i < TRADE_LOCAL_SLOTS; i++)
        free(local[i]);
    return NULL;
}

/* mstress, or a task-parallel program whose tasks pass results around: T
 * threads each allocate blocks of mostly small, sometimes medium and rarely
 * large sizes (one byte written), keep half of them in a private array of
 * 256 slots and swap the other half into a table of 4096 slots shared by
 * all threads (__atomic_exchange_n), freeing whatever comes back -- often a
 * block of another thread, or of a thread of an earlier round that has
 * exited.  Argument: threads, started per round of 50,000 operations each
 * (quick: 1,000); the shared table lives through the run and is emptied at
 * its end.  One operation is one malloc (and the free of what it replaces). */
void bench_thread_churn(bench_run *run)
{
    size_t threads = checked_thread_count(bench_arg(run, 0), "thread_churn threads");
    uint64_t per_thread = bench_quick() ? TRADE_OPS_PER_THREAD_QUICK : TRADE_OPS_PER_THREAD;
    void **shared = checked_calloc(TRADE_SHARED_SLOTS, sizeof *shared);
    trade_worker workers[MAX_THREADS_PER_ROLE];
    pthread_t ids[MAX_THREADS_PER_ROLE];
    uint64_t operations = 0;
    uint64_t round = 0;

    while (bench_keep_running(run, threads * per_thread)) {
        for (size_t t = 0; t < threads; t++) {
            workers[t].shared = shared;
            workers[t].operations = per_thread;
            workers[t].random_seed = 0x5eed000e + 1000 * round + t;
            start_thread(&ids[t], trade_worker_main, &workers[t]);
        }
        for (size_t t = 0; t < threads; t++)
            join_thread(ids[t]);
        operations += threads * per_thread;
        round++;
    }

    for (size_t i = 0; i < TRADE_SHARED_SLOTS; i++)
        free(shared[i]);
    free(shared);
    bench_set_items(run, operations);
}
