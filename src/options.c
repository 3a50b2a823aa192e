/*
 * options.c -- settings read from the environment, once, at start-up.
 *
 * The first allocation may come from inside the dynamic loader, before libc
 * has finished starting, so this file allocates nothing: it reads `environ`
 * when libc has set it and otherwise /proc/self/environ into a static buffer.
 * A malformed value is reported once on stderr, naming the variable and what
 * it accepts, and the default is used.
 *
 *   PYMALLOC_ALIGN    16 (default) or 8: alignment mode of the small classes
 *   PYMALLOC_STATS    0 (default) or 1: print the statistics table at exit
 *   PYMALLOC_VERBOSE  0 (default) or 1: warn about ignored foreign frees
 *   PYMALLOC_THREAD_CACHE 1 (default) or 0: per-thread caches of free blocks;
 *                     0 sends every small and medium malloc and free to the
 *                     pools (slower; for debugging and measurement)
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

pym_options_t pym_options = {.alignment = 16, .stats = 0, .verbose = 0, .thread_cache = 1};

static char pym_proc_environ[64 * 1024]; /* copy of /proc/self/environ when environ is not yet set */
static size_t pym_proc_environ_length;

static const char *pym_env_lookup(const char *name)
{
    size_t name_length = strlen(name);
    if (environ != NULL) {
        for (char **entry = environ; *entry != NULL; entry++)
            if (strncmp(*entry, name, name_length) == 0 && (*entry)[name_length] == '=')
                return *entry + name_length + 1;
        return NULL;
    }
    if (pym_proc_environ_length == 0) {
        int fd = open("/proc/self/environ", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return NULL;
        ssize_t got;
        while (pym_proc_environ_length < sizeof(pym_proc_environ) - 1
               && (got = read(fd, pym_proc_environ + pym_proc_environ_length,
                              sizeof(pym_proc_environ) - 1 - pym_proc_environ_length)) > 0)
            pym_proc_environ_length += (size_t)got;
        close(fd);
    }
    for (size_t at = 0; at < pym_proc_environ_length; at += strlen(pym_proc_environ + at) + 1) {
        const char *entry = pym_proc_environ + at;
        if (strncmp(entry, name, name_length) == 0 && entry[name_length] == '=')
            return entry + name_length + 1;
    }
    return NULL;
}

/* A 0/1 switch; anything else is reported and the default kept. */
static int pym_env_switch(const char *name, int fallback)
{
    const char *value = pym_env_lookup(name);
    if (value == NULL || value[0] == '\0')
        return fallback;
    if (strcmp(value, "0") == 0)
        return 0;
    if (strcmp(value, "1") == 0)
        return 1;
    pym_report("pymalloc: %s=\"%s\" is not valid (accepted: 0 or 1); using %d", name, value, fallback);
    return fallback;
}

void pym_options_load(void)
{
    const char *align = pym_env_lookup("PYMALLOC_ALIGN");
    if (align != NULL && align[0] != '\0') {
        if (strcmp(align, "8") == 0)
            pym_options.alignment = 8;
        else if (strcmp(align, "16") == 0)
            pym_options.alignment = 16;
        else
            pym_report("pymalloc: PYMALLOC_ALIGN=\"%s\" is not valid (accepted: 16 or 8); using 16", align);
    }
    pym_options.stats = pym_env_switch("PYMALLOC_STATS", 0);
    pym_options.verbose = pym_env_switch("PYMALLOC_VERBOSE", 0);
    pym_options.thread_cache = pym_env_switch("PYMALLOC_THREAD_CACHE", 1);
}
