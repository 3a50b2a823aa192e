/*
 * report.c -- messages on stderr that work when nothing else does.
 *
 * Reports are formatted into a buffer on the stack and written with one
 * write(2), never through stdio (whose buffers are malloc'ed, and whose locks
 * may be held by the code that corrupted the heap).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

static void pym_vreport(const char *format, va_list args)
{
    char buffer[1024];
    int length = vsnprintf(buffer, sizeof(buffer) - 1, format, args);
    if (length < 0)
        return;
    if ((size_t)length > sizeof(buffer) - 2)
        length = (int)sizeof(buffer) - 2;
    buffer[length++] = '\n';
    for (ssize_t done = 0; done < length;) {
        ssize_t wrote = write(STDERR_FILENO, buffer + done, (size_t)(length - done));
        if (wrote <= 0)
            break;
        done += wrote;
    }
}

void pym_report(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    pym_vreport(format, args);
    va_end(args);
}

void pym_fatal(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    pym_vreport(format, args);
    va_end(args);
    abort();
}

/* A pointer in no chunk of pymalloc's: ignored (see alloc.c). */
void pym_invalid_free(const void *ptr, const char *caller)
{
    size_t count = __atomic_add_fetch(&pym_invalid_free_count, 1, __ATOMIC_RELAXED);
    if (pym_options.verbose && count == 1)
        pym_report("pymalloc: %s(%p): pointer not allocated by pymalloc, ignored "
                   "(further ones are counted in the statistics)", caller, ptr);
}
