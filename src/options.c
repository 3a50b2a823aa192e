/*
 * options.c -- settings read from the environment, once, at start-up.
 *
 * The first allocation may come from inside the dynamic loader, before libc
 * has finished starting, so this file allocates nothing: it reads `environ`
 * when libc has set it and otherwise /proc/self/environ into a static buffer.
 *
 * Every option is one row of pym_option_table: its variable, what it
 * accepts, and a parser.  The compiled-in default string
 * (./configure --with-pymalloc-conf="NAME=VALUE,...") is applied first, the
 * environment second.  A malformed value -- from either -- is reported once
 * on stderr, naming the variable, the value and what it accepts, and the
 * setting keeps its previous value.  `pymalloc --help` and the README list
 * the same table.
 *
 *   PYMALLOC_ALIGN          16 (default) or 8: alignment mode of the small classes
 *   PYMALLOC_STATS          0 (default), 1, json, a file path, or json:PATH:
 *                           statistics at exit, as text or JSON, on stderr or
 *                           into the file
 *   PYMALLOC_VERBOSE        0 (default) or 1: warn about ignored foreign frees
 *   PYMALLOC_THREAD_CACHE   1 (default) or 0: per-thread caches of free blocks;
 *                           0 sends every small and medium malloc and free to
 *                           the pools (slower; for debugging and measurement)
 *   PYMALLOC_DEBUG          0 (default) or 1: guard bytes, fill patterns and
 *                           checks on every block (debug.c)
 *   PYMALLOC_DECAY_MS       1000 (default), 0..3600000: how long free large
 *                           extents, empty chunks, empty pools and unused
 *                           pages are kept for reuse before they go back
 *   PYMALLOC_ARENA_CACHE    1024 (default), 0..65536: most empty 256 KiB
 *                           chunks kept for reuse (each at most the decay time)
 *   PYMALLOC_BACKGROUND_THREAD 1 (default) or 0: a thread that returns what
 *                           decayed while the program does not call malloc
 *                           (scavenge.c); 0: only malloc and free return it
 *   PYMALLOC_MMAP_THRESHOLD 64M (default), 129K..4G (K, M, G suffixes): blocks
 *                           this large are mapped and unmapped directly
 */
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#ifndef PYM_DEFAULT_CONF
#define PYM_DEFAULT_CONF "" /* set by ./configure --with-pymalloc-conf */
#endif

extern char **environ;

pym_options_t pym_options = {
    .alignment = 16,
    .thread_cache = 1,
    .background_thread = 1,
    .decay_ms = PYM_LARGE_CACHE_DECAY_MS,
    .arena_cache = PYM_CHUNK_CACHE_MAX,
    .direct_threshold = PYM_DIRECT_THRESHOLD,
};

static char pym_proc_environ[64 * 1024]; /* copy of /proc/self/environ when environ is not yet set */
static size_t pym_proc_environ_length;

const char *pym_env_lookup(const char *name)
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

/* ---- parsers: true and the value stored, or false (the caller reports) -- */
static bool pym_parse_unsigned(const char *text, uint64_t *out)
{
    if (*text < '0' || *text > '9')
        return false;
    uint64_t value = 0;
    for (; *text >= '0' && *text <= '9'; text++) {
        if (value > (UINT64_MAX - 9) / 10)
            return false;
        value = value * 10 + (uint64_t)(*text - '0');
    }
    *out = value;
    return *text == '\0';
}

static bool pym_parse_switch(const char *text, pym_options_t *options, size_t offset)
{
    if (strcmp(text, "0") != 0 && strcmp(text, "1") != 0)
        return false;
    *(int *)((char *)options + offset) = text[0] == '1';
    return true;
}

static bool pym_parse_align(const char *text, pym_options_t *options, size_t offset)
{
    (void)offset;
    if (strcmp(text, "8") != 0 && strcmp(text, "16") != 0)
        return false;
    options->alignment = text[0] == '8' ? 8 : 16;
    return true;
}

static bool pym_parse_stats(const char *text, pym_options_t *options, size_t offset)
{
    (void)offset;
    const char *path = NULL;
    bool json = false;
    if (strcmp(text, "0") == 0 || strcmp(text, "1") == 0) {
        options->stats = text[0] == '1';
        options->stats_json = false;
        options->stats_path[0] = '\0';
        return true;
    }
    if (strcmp(text, "json") == 0) {
        json = true;
    } else if (strncmp(text, "json:", 5) == 0 && text[5] != '\0') {
        json = true;
        path = text + 5;
    } else if (strchr(text, '/') != NULL) {
        path = text;
    } else {
        return false;
    }
    if (path != NULL && strlen(path) >= sizeof(options->stats_path))
        return false;
    options->stats = 1;
    options->stats_json = json;
    strcpy(options->stats_path, path ? path : "");
    return true;
}

/* 0..3600000 milliseconds */
static bool pym_parse_decay(const char *text, pym_options_t *options, size_t offset)
{
    (void)offset;
    uint64_t value;
    if (!pym_parse_unsigned(text, &value) || value > 3600000)
        return false;
    options->decay_ms = value;
    return true;
}

static bool pym_parse_arena_cache(const char *text, pym_options_t *options, size_t offset)
{
    (void)offset;
    uint64_t value;
    if (!pym_parse_unsigned(text, &value) || value > 65536)
        return false;
    options->arena_cache = (unsigned)value;
    return true;
}

/* bytes, with an optional K, M or G suffix (powers of 1024) */
static bool pym_parse_threshold(const char *text, pym_options_t *options, size_t offset)
{
    (void)offset;
    char digits[32];
    size_t length = strlen(text);
    if (length == 0 || length >= sizeof(digits))
        return false;
    memcpy(digits, text, length + 1);
    unsigned shift = 0;
    switch (digits[length - 1]) {
    case 'K': case 'k': shift = 10; break;
    case 'M': case 'm': shift = 20; break;
    case 'G': case 'g': shift = 30; break;
    default: break;
    }
    if (shift != 0)
        digits[length - 1] = '\0';
    uint64_t value;
    if (!pym_parse_unsigned(digits, &value) || value > (UINT64_C(4) << 30) >> shift)
        return false;
    value <<= shift;
    if (value <= PYM_MEDIUM_MAX || value > (UINT64_C(4) << 30))
        return false;
    options->direct_threshold = (size_t)value;
    return true;
}

typedef struct pym_option {
    const char *name;            /* environment variable */
    const char *accepts;         /* what a valid value looks like, for the report */
    bool (*parse)(const char *text, pym_options_t *options, size_t offset);
    size_t offset;               /* field of a 0/1 switch (pym_parse_switch) */
} pym_option_t;

static const pym_option_t pym_option_table[] = {
    {"PYMALLOC_ALIGN", "16 or 8", pym_parse_align, 0},
    {"PYMALLOC_STATS", "0, 1, json, a file path or json:PATH", pym_parse_stats, 0},
    {"PYMALLOC_VERBOSE", "0 or 1", pym_parse_switch, offsetof(pym_options_t, verbose)},
    {"PYMALLOC_THREAD_CACHE", "0 or 1", pym_parse_switch, offsetof(pym_options_t, thread_cache)},
    {"PYMALLOC_DEBUG", "0 or 1", pym_parse_switch, offsetof(pym_options_t, debug)},
    {"PYMALLOC_BACKGROUND_THREAD", "0 or 1", pym_parse_switch, offsetof(pym_options_t, background_thread)},
    {"PYMALLOC_DECAY_MS", "milliseconds, 0 to 3600000", pym_parse_decay, 0},
    {"PYMALLOC_ARENA_CACHE", "a count of chunks, 0 to 65536", pym_parse_arena_cache, 0},
    {"PYMALLOC_MMAP_THRESHOLD", "bytes above 128K, at most 4G, with an optional K, M or G suffix",
     pym_parse_threshold, 0},
};
#define PYM_OPTION_COUNT (sizeof(pym_option_table) / sizeof(pym_option_table[0]))

static void pym_option_apply(const pym_option_t *option, const char *value, const char *source)
{
    if (value == NULL || value[0] == '\0')
        return;
    if (!option->parse(value, &pym_options, option->offset))
        pym_report("pymalloc: %s=\"%s\"%s is not valid (accepted: %s); ignored", option->name, value, source,
                   option->accepts);
}

/* The compiled-in default: "NAME=VALUE" items separated by commas or
 * spaces; values cannot contain either. */
void pym_options_apply_string(const char *conf, const char *source)
{
    while (*conf != '\0') {
        while (*conf == ',' || *conf == ' ')
            conf++;
        size_t length = strcspn(conf, ", ");
        if (length == 0)
            break;
        char item[320];
        if (length >= sizeof(item)) {
            pym_report("pymalloc: an item of %s is too long; ignored", source);
        } else {
            memcpy(item, conf, length);
            item[length] = '\0';
            char *equals = strchr(item, '=');
            const pym_option_t *found = NULL;
            if (equals != NULL) {
                *equals = '\0';
                for (size_t i = 0; i < PYM_OPTION_COUNT; i++)
                    if (strcmp(item, pym_option_table[i].name) == 0)
                        found = &pym_option_table[i];
            }
            if (found == NULL)
                pym_report("pymalloc: \"%.*s\" in %s is not NAME=VALUE with a PYMALLOC_ option; ignored",
                           (int)length, conf, source);
            else
                pym_option_apply(found, equals + 1, source);
        }
        conf += length;
    }
}

void pym_options_load(void)
{
    pym_options_apply_string(PYM_DEFAULT_CONF, " (compiled-in default, ./configure --with-pymalloc-conf)");
    for (size_t i = 0; i < PYM_OPTION_COUNT; i++)
        pym_option_apply(&pym_option_table[i], pym_env_lookup(pym_option_table[i].name), "");
}
