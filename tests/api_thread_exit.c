/*
 * api_thread_exit.c -- the background scavenger never keeps a process
 * alive, and goes away when it has nothing to do.
 *
 * POSIX ends a process when its last thread ends, whether by returning
 * from main, calling pthread_exit or returning from its start routine;
 * glibc then calls exit(0).  pymalloc's scavenger (src/scavenge.c) is a
 * thread of the process, so it must end by itself when it is the last one,
 * or such a process would never exit.  Python's test_threading does this
 * (a child forked from a worker thread ends that thread with pthread_exit).
 *
 * Each case runs in a child process that first makes the scavenger start
 * (it frees 8 MiB of large blocks and waits for the "pymalloc-decay"
 * thread to appear in /proc/self/task) and then ends its threads one way
 * or another.  The parent waits up to 10 s for it and wants exit status 0.
 *   1. main calls pthread_exit;
 *   2. main calls pthread_exit while a worker still runs; the worker
 *      allocates more and returns from its start routine;
 *   3. a worker thread forks; the child, whose only thread is that worker,
 *      makes the scavenger start and calls pthread_exit;
 *   4. with nothing left to give back (2 s after the free, decay 1 s), the
 *      scavenger thread ends; a new free of 8 MiB starts one again.
 */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define MiB ((size_t)1 << 20)

/* Is a thread named pymalloc-decay in this process? */
static bool scavenger_present(void)
{
    DIR *tasks = opendir("/proc/self/task");
    if (tasks == NULL)
        return false;
    bool found = false;
    struct dirent *entry;
    while (!found && (entry = readdir(tasks)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        char path[300], name[32] = {0};
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", entry->d_name);
        FILE *comm = fopen(path, "r");
        if (comm == NULL)
            continue;
        if (fgets(name, sizeof name, comm) != NULL && strncmp(name, "pymalloc-decay", 14) == 0)
            found = true;
        fclose(comm);
    }
    closedir(tasks);
    return found;
}

static void sleep_ms(long milliseconds)
{
    struct timespec pause = {milliseconds / 1000, (milliseconds % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

/* Wait up to `limit_ms` for the scavenger to be (or not be) there. */
static bool scavenger_becomes(bool present, long limit_ms)
{
    for (long waited = 0; waited <= limit_ms; waited += 20) {
        if (scavenger_present() == present)
            return true;
        sleep_ms(20);
    }
    return false;
}

/* Free 8 MiB of large blocks (kept for reuse: the scavenger is wanted)
 * and pass by another large allocation's slow path. */
static void make_scavenger_start(void)
{
    void *blocks[4];
    for (int i = 0; i < 4; i++) {
        blocks[i] = malloc(2 * MiB);
        if (blocks[i] == NULL)
            _exit(3);
        memset(blocks[i], i, 2 * MiB);
    }
    for (int i = 0; i < 4; i++)
        free(blocks[i]);
    void *volatile another = malloc(3 * MiB); /* volatile: the compiler may not drop the pair */
    free(another);
}

/* In a child: status 4 when the scavenger did not start (the case would
 * test nothing). */
static void child_start_scavenger(void)
{
    make_scavenger_start();
    if (!scavenger_becomes(true, 3000))
        _exit(4);
}

/* Run `body` in a child; return its exit status, or -1 when it has not
 * ended 10 s later (it is then killed). */
static int run_child(void (*body)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -2;
    if (pid == 0) {
        body();
        _exit(5); /* body() must not return */
    }
    for (int waited = 0; waited < 1000; waited++) {
        int status;
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static void main_exits_thread(void)
{
    child_start_scavenger();
    pthread_exit(NULL);
}

static void *late_worker(void *unused)
{
    (void)unused;
    sleep_ms(200); /* main has called pthread_exit by now */
    for (int round = 0; round < 100; round++)
        free(malloc(1 + (size_t)round * 4096));
    make_scavenger_start();
    return NULL; /* the last application thread returns */
}

static void main_exits_before_worker(void)
{
    child_start_scavenger();
    pthread_t worker;
    if (pthread_create(&worker, NULL, late_worker, NULL) != 0)
        _exit(6);
    pthread_exit(NULL);
}

static void *forking_worker(void *unused)
{
    (void)unused;
    pid_t pid = fork();
    if (pid < 0)
        _exit(7);
    if (pid == 0) {
        /* The child's only thread: this one. */
        child_start_scavenger();
        pthread_exit(NULL);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        _exit(8);
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 9);
}

static void fork_from_thread(void)
{
    pthread_t worker;
    if (pthread_create(&worker, NULL, forking_worker, NULL) != 0)
        _exit(6);
    pthread_join(worker, NULL);
    _exit(10); /* forking_worker ends the process itself */
}

int main(void)
{
    if (access("/proc/self/task", R_OK) != 0) {
        printf("SKIP: no /proc/self/task to look for the scavenger thread\n");
        return 77;
    }
    const char *background = getenv("PYMALLOC_BACKGROUND_THREAD");
    if (background != NULL && strcmp(background, "0") == 0) {
        printf("SKIP: PYMALLOC_BACKGROUND_THREAD=0\n");
        return 77;
    }

    int status = run_child(main_exits_thread);
    CHECK(status == 0, "main calls pthread_exit with the scavenger running: status %d (-1: still alive after 10 s)",
          status);
    status = run_child(main_exits_before_worker);
    CHECK(status == 0, "main calls pthread_exit, the last worker returns: status %d (-1: still alive after 10 s)",
          status);
    status = run_child(fork_from_thread);
    CHECK(status == 0, "child of a fork from a thread ends that thread: status %d (-1: still alive after 10 s)",
          status);

    /* In this process: the scavenger comes, gives everything back, goes. */
    make_scavenger_start();
    CHECK(scavenger_becomes(true, 3000), "8 MiB of free large blocks start the scavenger");
    CHECK(scavenger_becomes(false, 5000), "with nothing left to give back, the scavenger thread ends");
    make_scavenger_start();
    CHECK(scavenger_becomes(true, 3000), "memory kept again starts a new scavenger");
    return check_finish();
}
