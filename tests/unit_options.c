/*
 * unit_options.c -- the option parsers (options.c), through the syntax of
 * the compiled-in default string ("NAME=VALUE,...").
 *
 * Covers, for every PYMALLOC_ variable: its accepted values land in
 * pym_options; a malformed value leaves the previous setting alone (and is
 * reported on stderr, seen in this test's log); unknown names and items
 * without '=' change nothing; separators may be commas or spaces.
 * Environment handling and the report text are checked by
 * tests/preload_options.sh.  Links the core statically.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "check.h"

static void apply(const char *conf)
{
    pym_options_apply_string(conf, " (unit test)");
}

int main(void)
{
    pym_ensure_init();
    pym_options_t saved = pym_options;

    apply("PYMALLOC_ALIGN=8");
    CHECK(pym_options.alignment == 8, "PYMALLOC_ALIGN=8 -> %u", pym_options.alignment);
    apply("PYMALLOC_ALIGN=7");
    CHECK(pym_options.alignment == 8, "PYMALLOC_ALIGN=7 is refused, 8 kept (%u)", pym_options.alignment);
    apply("PYMALLOC_ALIGN=16");
    CHECK(pym_options.alignment == 16, "PYMALLOC_ALIGN=16 -> %u", pym_options.alignment);

    apply("PYMALLOC_STATS=1");
    CHECK(pym_options.stats == 1 && !pym_options.stats_json && pym_options.stats_path[0] == '\0', "STATS=1: text on stderr");
    apply("PYMALLOC_STATS=json");
    CHECK(pym_options.stats == 1 && pym_options.stats_json && pym_options.stats_path[0] == '\0', "STATS=json");
    apply("PYMALLOC_STATS=/tmp/pymalloc-stats.txt");
    CHECK(pym_options.stats && !pym_options.stats_json && strcmp(pym_options.stats_path, "/tmp/pymalloc-stats.txt") == 0,
          "STATS=PATH: text into the file (%s)", pym_options.stats_path);
    apply("PYMALLOC_STATS=json:out/s.json");
    CHECK(pym_options.stats && pym_options.stats_json && strcmp(pym_options.stats_path, "out/s.json") == 0,
          "STATS=json:PATH: JSON into the file (%s)", pym_options.stats_path);
    apply("PYMALLOC_STATS=yes");
    CHECK(pym_options.stats && pym_options.stats_json && strcmp(pym_options.stats_path, "out/s.json") == 0,
          "STATS=yes is refused, the previous setting kept");
    apply("PYMALLOC_STATS=0");
    CHECK(pym_options.stats == 0 && pym_options.stats_path[0] == '\0', "STATS=0 turns it off");

    apply("PYMALLOC_VERBOSE=1,PYMALLOC_THREAD_CACHE=0");
    CHECK(pym_options.verbose == 1 && pym_options.thread_cache == 0, "two switches separated by a comma");
    apply("PYMALLOC_VERBOSE=2 PYMALLOC_THREAD_CACHE=on");
    CHECK(pym_options.verbose == 1 && pym_options.thread_cache == 0, "switches accept only 0 and 1");
    apply("PYMALLOC_VERBOSE=0 PYMALLOC_THREAD_CACHE=1");
    CHECK(pym_options.verbose == 0 && pym_options.thread_cache == 1, "items separated by a space");

    apply("PYMALLOC_DECAY_MS=250");
    CHECK(pym_options.decay_ms == 250, "DECAY_MS=250 -> %llu", (unsigned long long)pym_options.decay_ms);
    apply("PYMALLOC_DECAY_MS=3600001");
    CHECK(pym_options.decay_ms == 250, "DECAY_MS above an hour is refused");
    apply("PYMALLOC_DECAY_MS=-1");
    CHECK(pym_options.decay_ms == 250, "a negative DECAY_MS is refused");
    apply("PYMALLOC_DECAY_MS=0");
    CHECK(pym_options.decay_ms == 0, "DECAY_MS=0 (unmap at the next large free)");

    apply("PYMALLOC_ARENA_CACHE=32");
    CHECK(pym_options.arena_cache == 32, "ARENA_CACHE=32 -> %u", pym_options.arena_cache);
    apply("PYMALLOC_ARENA_CACHE=65537");
    CHECK(pym_options.arena_cache == 32, "ARENA_CACHE above 65536 is refused");
    apply("PYMALLOC_ARENA_CACHE=65536");
    CHECK(pym_options.arena_cache == 65536, "ARENA_CACHE=65536 is accepted");
    apply("PYMALLOC_ARENA_CACHE=32");
    apply("PYMALLOC_ARENA_CACHE=4x");
    CHECK(pym_options.arena_cache == 32, "trailing garbage is refused");

    apply("PYMALLOC_MMAP_THRESHOLD=1M");
    CHECK(pym_options.direct_threshold == 1024 * 1024, "MMAP_THRESHOLD=1M -> %zu", pym_options.direct_threshold);
    apply("PYMALLOC_MMAP_THRESHOLD=262144");
    CHECK(pym_options.direct_threshold == 262144, "MMAP_THRESHOLD in bytes -> %zu", pym_options.direct_threshold);
    apply("PYMALLOC_MMAP_THRESHOLD=2g");
    CHECK(pym_options.direct_threshold == (size_t)2 << 30, "lower-case suffix -> %zu", pym_options.direct_threshold);
    apply("PYMALLOC_MMAP_THRESHOLD=128K");
    CHECK(pym_options.direct_threshold == (size_t)2 << 30, "128K (a medium size) is refused");
    apply("PYMALLOC_MMAP_THRESHOLD=5G");
    CHECK(pym_options.direct_threshold == (size_t)2 << 30, "above 4G is refused");
    apply("PYMALLOC_MMAP_THRESHOLD=99999999999999999999999M");
    CHECK(pym_options.direct_threshold == (size_t)2 << 30, "an overflowing number is refused");
    apply("PYMALLOC_MMAP_THRESHOLD=M");
    CHECK(pym_options.direct_threshold == (size_t)2 << 30, "a suffix alone is refused");

    pym_options_t before = pym_options;
    apply("PYMALLOC_NOSUCH=1,PYMALLOC_ALIGN,garbage, ,,");
    CHECK(memcmp(&before, &pym_options, sizeof before) == 0, "unknown names and bare words change nothing");

    pym_options = saved;
    return check_finish();
}
