/*
 * testlib.h -- helpers shared by pymalloc's C and C++ tests (check.h holds
 * the assertion macros; this file the code the tests would otherwise repeat).
 *
 *   rng_next(&state)            xorshift64* step: the deterministic generator
 *                               behind sizes, tags and shuffles
 *   now_seconds()               CLOCK_MONOTONIC in seconds, for time budgets
 *   aligned_to(ptr, alignment)  ptr is a multiple of a power of two
 *   bytes_all(p, n, value)      every one of n bytes equals value (word-wise)
 *   fill_byte_of(tag), pattern_fill(block, size, tag), pattern_ok(...)
 *                               a block of >= 8 bytes holding its 64-bit tag
 *                               in the first word and a byte derived from
 *                               the tag everywhere else
 *   page_tags_fill_and_check(block, bytes, tag)
 *                               the same for big blocks, two words a page
 *   tagged_block_t              { block, size, tag } of a pattern-filled block;
 *   tagged_realloc(b, size, &intact)
 *                               realloc one, check the kept prefix, refill it
 *   tagged_swap(lock, shared, mine)
 *                               trade a block with a shared exchange slot
 *   thread_slots_t              a fixed set of thread slots: a finishing thread
 *                               marks its slot (thread_slots_done), the main
 *                               thread waits for any finished slot to join
 *                               and reuse it (thread_slots_wait)
 *   run_self_case(self, name, debug)
 *                               run this test's own binary on one case as a
 *                               child (PYMALLOC_DEBUG=debug unless NULL),
 *                               its exit status, stdout and stderr captured
 *
 * Only the C library and POSIX threads are used, never pymalloc's API, so
 * the helper programs built without pymalloc (stress_threads,
 * cxx_containers) may include it too; it also compiles as C++.  Everything
 * is static inline: a test pays only for what it calls.
 */
#ifndef PYM_TEST_TESTLIB_H
#define PYM_TEST_TESTLIB_H

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- random numbers and time ------------------------------------------------------ */
static inline uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline bool aligned_to(const void *ptr, size_t alignment)
{
    return ((uintptr_t)ptr & (alignment - 1)) == 0;
}

/* ---- byte patterns ----------------------------------------------------------------- */
/* Whether all `length` bytes at `block` equal `value`.  Word by word, then
 * the tail: whole blocks are checked, so this must be fast. */
static inline bool bytes_all(const void *block, size_t length, uint8_t value)
{
    const uint8_t *bytes = (const uint8_t *)block;
    uint64_t expected_word = 0x0101010101010101ULL * value, diff = 0;
    size_t i = 0;
    for (; i + sizeof(uint64_t) <= length; i += sizeof(uint64_t)) {
        uint64_t word;
        memcpy(&word, bytes + i, sizeof(word));
        diff |= word ^ expected_word;
    }
    for (; i < length; i++)
        diff |= bytes[i] ^ value;
    return diff == 0;
}

static inline uint8_t fill_byte_of(uint64_t tag)
{
    return (uint8_t)((tag * 0x9E3779B97F4A7C15ULL) >> 56);
}

/* A block of `size` >= 8 bytes: its tag in the first word, a byte derived
 * from the tag everywhere else. */
static inline void pattern_fill(void *block, size_t size, uint64_t tag)
{
    memcpy(block, &tag, sizeof(tag));
    memset((char *)block + sizeof(tag), fill_byte_of(tag), size - sizeof(tag));
}

/* Whether the first `size` (>= 8) bytes of the block still hold the pattern. */
static inline bool pattern_ok(const void *block, size_t size, uint64_t tag)
{
    uint64_t stored;
    memcpy(&stored, block, sizeof(stored));
    if (stored != tag)
        return false;
    return bytes_all((const char *)block + sizeof(tag), size - sizeof(tag), fill_byte_of(tag));
}

/* Large blocks, cheaply: a value derived from the tag in the first and
 * the last word of every 4 KiB page of the first `bytes` (a multiple of
 * 4096), then all of them checked.  A page lost to an unmap faults; a
 * block shared with another thread shows that thread's tag. */
static inline bool page_tags_fill_and_check(void *block, size_t bytes, uint64_t tag)
{
    uint64_t *words = (uint64_t *)block;
    size_t count = bytes / sizeof(uint64_t), step = 4096 / sizeof(uint64_t);
    for (size_t i = 0; i < count; i += step) {
        words[i] = tag ^ i;
        words[i + step - 1] = tag + i;
    }
    for (size_t i = 0; i < count; i += step)
        if (words[i] != (tag ^ i) || words[i + step - 1] != tag + i)
            return false;
    return true;
}

/* ---- tagged blocks ------------------------------------------------------------------ */
typedef struct tagged_block {
    void *block; /* NULL: an empty slot */
    size_t size;
    uint64_t tag;
} tagged_block_t;

/* realloc `b` to `new_size`, then fill it with its pattern at the new size.
 * Returns false, leaving `b` as it was, when realloc fails; otherwise
 * *intact says whether the part realloc had to keep still held the
 * pattern. */
static inline bool tagged_realloc(tagged_block_t *b, size_t new_size, bool *intact)
{
    void *moved = realloc(b->block, new_size);
    if (moved == NULL)
        return false;
    size_t kept = b->size < new_size ? b->size : new_size;
    *intact = pattern_ok(moved, kept, b->tag);
    b->block = moved;
    b->size = new_size;
    pattern_fill(moved, new_size, b->tag);
    return true;
}

/* Put *mine in the exchange slot *shared (guarded by `lock`); *mine becomes
 * what was there, maybe an empty slot or another thread's block. */
static inline void tagged_swap(pthread_mutex_t *lock, tagged_block_t *shared, tagged_block_t *mine)
{
    pthread_mutex_lock(lock);
    tagged_block_t theirs = *shared;
    *shared = *mine;
    pthread_mutex_unlock(lock);
    *mine = theirs;
}

/* ---- thread slots ------------------------------------------------------------------- */
/* N threads run at a time, thread i in slot i; when one finishes, the main
 * thread joins it and may start another in its slot. */
#define THREAD_SLOTS_MAX 64

typedef struct thread_slots {
    pthread_mutex_t lock;
    pthread_cond_t finished;
    bool done[THREAD_SLOTS_MAX];
} thread_slots_t;

#define THREAD_SLOTS_INITIALIZER {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {false}}

/* Called by the thread of `slot` as its last action. */
static inline void thread_slots_done(thread_slots_t *slots, int slot)
{
    pthread_mutex_lock(&slots->lock);
    slots->done[slot] = true;
    pthread_cond_signal(&slots->finished);
    pthread_mutex_unlock(&slots->lock);
}

/* Wait until a thread of slots 0..count-1 is done; that slot is free again
 * (its thread is still to be joined) and returned. */
static inline int thread_slots_wait(thread_slots_t *slots, int count)
{
    pthread_mutex_lock(&slots->lock);
    for (;;) {
        for (int i = 0; i < count; i++) {
            if (slots->done[i]) {
                slots->done[i] = false;
                pthread_mutex_unlock(&slots->lock);
                return i;
            }
        }
        pthread_cond_wait(&slots->finished, &slots->lock);
    }
}

/* ---- process memory (no malloc: safe whatever the allocator) ---------- */
/* A "Name:   1234 kB" field of /proc/self/status, in KiB; 0 when absent. */
static inline size_t proc_status_kib(const char *name)
{
    char buffer[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t got = read(fd, buffer, sizeof(buffer) - 1);
    close(fd);
    if (got <= 0)
        return 0;
    buffer[got] = '\0';
    size_t name_length = strlen(name);
    for (char *line = buffer; line != NULL && *line != '\0';) {
        if (strncmp(line, name, name_length) == 0 && line[name_length] == ':')
            return (size_t)strtoull(line + name_length + 1, NULL, 10);
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return 0;
}

static inline size_t rss_kib(void)
{
    return proc_status_kib("VmRSS");
}

static inline size_t vm_kib(void)
{
    return proc_status_kib("VmSize");
}

/* ---- one case of the test, run as a child process ------------------------------ */
typedef struct child_outcome {
    int status;                  /* waitpid status; -1: the child could not be run */
    char out[4096];              /* its stdout (truncated) */
    char err[8192];              /* its stderr (truncated) */
} child_outcome_t;

/* Read fd to its end into buffer (NUL-terminated, truncated), draining any
 * excess so the writer never blocks. */
static inline void read_all_fd(int fd, char *buffer, size_t size)
{
    size_t used = 0;
    char sink[512];
    for (;;) {
        bool room = used + 1 < size;
        ssize_t got = read(fd, room ? buffer + used : sink, room ? size - 1 - used : sizeof(sink));
        if (got <= 0)
            break;
        if (room)
            used += (size_t)got;
    }
    buffer[used] = '\0';
}

/* Run `self name` with PYMALLOC_DEBUG set to debug_value (NULL: inherited).
 * stdout is read to its end before stderr: the cases write little there.
 * A case still running after 30 s is killed by its alarm. */
static inline child_outcome_t run_self_case(const char *self, const char *name, const char *debug_value)
{
    child_outcome_t result;
    memset(&result, 0, sizeof(result));
    result.status = -1;
    int out_pipe[2], err_pipe[2];
    if (pipe(out_pipe) != 0)
        return result;
    if (pipe(err_pipe) != 0) {
        close(out_pipe[0]);
        close(out_pipe[1]);
        return result;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out_pipe[1], 1);
        dup2(err_pipe[1], 2);
        close(out_pipe[0]);
        close(err_pipe[0]);
        close(out_pipe[1]);
        close(err_pipe[1]);
        if (debug_value != NULL)
            setenv("PYMALLOC_DEBUG", debug_value, 1);
        alarm(30);
        execl(self, self, name, (char *)NULL);
        _exit(127);
    }
    close(out_pipe[1]);
    close(err_pipe[1]);
    if (pid > 0) {
        read_all_fd(out_pipe[0], result.out, sizeof(result.out));
        read_all_fd(err_pipe[0], result.err, sizeof(result.err));
        if (waitpid(pid, &result.status, 0) != pid)
            result.status = -1;
    }
    close(out_pipe[0]);
    close(err_pipe[0]);
    return result;
}

#endif
