/*
 * api_cxx.cc -- C++ on top of pymalloc (linked with libpymalloc, so
 * libstdc++'s operator new/delete reach pymalloc's malloc/free).
 *
 * Covered:
 *   - operator new/delete and new[]/delete[] of scalars and of class types
 *     (constructors and destructors run once each), and pym_owns() true for
 *     a `new int` pointer and a vector's storage: new goes through pymalloc;
 *   - aligned new: alignas(64) and alignas(4096) types, single and arrays,
 *     aligned and owned;
 *   - nothrow new: succeeds for ordinary sizes, returns nullptr for an
 *     impossible size, and the throwing form throws std::bad_alloc;
 *   - churn with verification of std::vector, std::string, std::map,
 *     std::unordered_map, std::list and std::shared_ptr (with a counting
 *     deleter);
 *   - std::thread workers building and destroying containers, each
 *     checking a checksum computed the same way single-threaded, and objects
 *     created in one thread and deleted in another;
 *   - exceptions: the exception object is malloc'ed (blocks in use grow
 *     while it is live), messages survive, nested rethrow, and an
 *     exception_ptr made in a worker thread rethrown and released in main.
 */
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <list>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "check.h"
#include "pymalloc.h"
#include "testlib.h"

namespace {

/* The same deterministic generator in every thread. */
struct Rng {
    uint64_t state;
    explicit Rng(uint64_t seed) : state(seed * 0x9E3779B97F4A7C15ULL + 1) {}
    uint64_t next()
    {
        return rng_next(&state);
    }
};

size_t blocks_in_use()
{
    pym_stats_t stats;
    pym_stats_get(&stats);
    size_t used = 0;
    for (int i = 0; i < PYM_STATS_CLASSES; i++)
        used += stats.classes[i].blocks_used;
    return used + stats.large_count;
}

/* ---- new/delete ------------------------------------------------------------------ */
std::atomic<int> live_tracked{0};

struct Tracked {
    uint64_t value;
    char padding[40];
    explicit Tracked(uint64_t v = 7) : value(v)
    {
        std::memset(padding, static_cast<int>(v & 0xff), sizeof(padding));
        live_tracked++;
    }
    ~Tracked()
    {
        live_tracked--;
    }
    bool intact() const
    {
        for (char c : padding)
            if (c != static_cast<char>(value & 0xff))
                return false;
        return true;
    }
};

void test_new_delete()
{
    int *scalar = new int(42);
    CHECK(pym_owns(scalar), "new int is not a pymalloc block: operator new does not reach pymalloc");
    CHECK(*scalar == 42);
    delete scalar;

    int *array = new int[1000];
    CHECK(pym_owns(array), "new int[1000] is not a pymalloc block");
    CHECK(pym_usable_size(array) >= 1000 * sizeof(int), "usable size %zu", pym_usable_size(array));
    for (int i = 0; i < 1000; i++)
        array[i] = i * 3;
    long sum = 0;
    for (int i = 0; i < 1000; i++)
        sum += array[i];
    CHECK(sum == 3L * 999 * 1000 / 2);
    delete[] array;

    Tracked *one = new Tracked(0x31);
    CHECK(live_tracked == 1 && one->intact());
    delete one;
    CHECK(live_tracked == 0, "destructor ran %d times too few", live_tracked.load());

    Tracked *many = new Tracked[257];
    CHECK(live_tracked == 257, "new[] constructed %d objects", live_tracked.load());
    bool intact = true;
    for (int i = 0; i < 257; i++)
        intact &= many[i].intact() && many[i].value == 7;
    CHECK(intact, "new[] objects corrupted");
    delete[] many;
    CHECK(live_tracked == 0, "delete[] left %d objects", live_tracked.load());

    /* Many objects of several sizes, deleted in a shuffled order. */
    std::vector<Tracked *> objects;
    Rng rng(5);
    for (int i = 0; i < 20000; i++)
        objects.push_back(new Tracked(rng.next()));
    CHECK(pym_owns(objects.data()), "a vector's storage is not a pymalloc block");
    for (size_t i = objects.size() - 1; i > 0; i--)
        std::swap(objects[i], objects[rng.next() % (i + 1)]);
    size_t broken = 0;
    for (Tracked *object : objects) {
        broken += !object->intact() || !pym_owns(object);
        delete object;
    }
    CHECK(broken == 0, "%zu of 20000 objects corrupted or not owned", broken);
    CHECK(live_tracked == 0);
}

/* ---- aligned new ------------------------------------------------------------------- */
struct alignas(64) CacheLine {
    unsigned char bytes[64];
};
struct alignas(4096) Page {
    unsigned char bytes[4096];
};
struct alignas(256) Odd {
    unsigned char bytes[300]; /* size 512 after alignment padding */
};

template <typename T> bool fill_and_check(T *object, unsigned char value)
{
    std::memset(object->bytes, value, sizeof(object->bytes));
    for (unsigned char byte : object->bytes)
        if (byte != value)
            return false;
    return true;
}

void test_aligned_new()
{
    std::vector<CacheLine *> lines;
    std::vector<Page *> pages;
    bool aligned = true, owned = true, intact = true;
    for (int i = 0; i < 200; i++) {
        CacheLine *line = new CacheLine;
        aligned &= aligned_to(line, 64);
        owned &= pym_owns(line) != 0;
        intact &= fill_and_check(line, static_cast<unsigned char>(i));
        lines.push_back(line);
        if (i % 4 == 0) {
            Page *page = new Page;
            aligned &= aligned_to(page, 4096);
            owned &= pym_owns(page) != 0;
            intact &= fill_and_check(page, static_cast<unsigned char>(i + 1));
            pages.push_back(page);
        }
    }
    CHECK(aligned, "alignas(64)/alignas(4096) new returned a misaligned pointer");
    CHECK(owned, "aligned new did not come from pymalloc");
    CHECK(intact);
    for (size_t i = 0; i < lines.size(); i++) {
        for (unsigned char byte : lines[i]->bytes)
            intact &= byte == static_cast<unsigned char>(i);
        delete lines[i];
    }
    for (size_t i = 0; i < pages.size(); i++) {
        for (unsigned char byte : pages[i]->bytes)
            intact &= byte == static_cast<unsigned char>(i * 4 + 1);
        delete pages[i];
    }
    CHECK(intact, "aligned objects changed while others were allocated");

    Page *page_array = new Page[5];
    CHECK(aligned_to(page_array, 4096) && aligned_to(&page_array[4], 4096), "new Page[5] misaligned: %p",
          static_cast<void *>(page_array));
    CHECK(fill_and_check(&page_array[4], 0xAB));
    delete[] page_array;

    CacheLine *line_array = new CacheLine[33];
    CHECK(aligned_to(line_array, 64), "new CacheLine[33] misaligned");
    delete[] line_array;

    Odd *odd = new Odd;
    CHECK(aligned_to(odd, 256) && pym_owns(odd), "alignas(256) new: %p", static_cast<void *>(odd));
    CHECK(fill_and_check(odd, 0x5C));
    delete odd;

    Page *nothrow_page = new (std::nothrow) Page;
    CHECK(nothrow_page != nullptr && aligned_to(nothrow_page, 4096), "nothrow aligned new");
    delete nothrow_page;
}

/* ---- nothrow and failing new --------------------------------------------------------- */
void test_nothrow_new()
{
    char *text = new (std::nothrow) char[1000];
    CHECK(text != nullptr && pym_owns(text), "nothrow new of 1000 bytes");
    if (text != nullptr) {
        std::memset(text, 'x', 1000);
        CHECK(text[999] == 'x');
    }
    delete[] text;

    volatile size_t impossible = static_cast<size_t>(PTRDIFF_MAX) + 4096; /* runtime value: no compile-time error */
    char *none = new (std::nothrow) char[impossible];
    CHECK(none == nullptr, "nothrow new of an impossible size returned %p", static_cast<void *>(none));
    delete[] none;

    bool threw = false;
    try {
        char *never = new char[impossible];
        delete[] never;
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw, "new of an impossible size did not throw std::bad_alloc");

    /* And allocation works after the failures. */
    std::string after(5000, 'k');
    CHECK(after.size() == 5000 && after[4999] == 'k');
}

/* ---- container churn ----------------------------------------------------------------- */
/* One deterministic workload; returns a checksum and counts its own
 * self-check failures in *errors.  Run single-threaded and in threads. */
uint64_t container_workload(uint64_t seed, int rounds, int *errors)
{
    Rng rng(seed);
    uint64_t checksum = seed;
    auto mix = [&checksum](uint64_t value) { checksum = (checksum ^ value) * 0x100000001B3ULL; };
    for (int round = 0; round < rounds; round++) {
        /* vector: growth by push_back, reserve, shrink_to_fit. */
        std::vector<uint32_t> numbers;
        size_t count = 100 + rng.next() % 3000;
        for (size_t i = 0; i < count; i++)
            numbers.push_back(static_cast<uint32_t>(rng.next()));
        std::vector<uint32_t> copy = numbers;
        std::sort(copy.begin(), copy.end());
        if (!std::is_sorted(copy.begin(), copy.end()) || copy.size() != count)
            ++*errors;
        numbers.resize(count / 3);
        numbers.shrink_to_fit();
        for (uint32_t n : numbers)
            mix(n);
        mix(copy.front());
        mix(copy.back());

        /* string: concatenation, substrings, find. */
        std::string text;
        for (int i = 0; i < 200; i++) {
            text += std::to_string(rng.next() % 100000);
            text.push_back(',');
        }
        std::string head = text.substr(0, text.size() / 2);
        if (text.compare(0, head.size(), head) != 0)
            ++*errors;
        mix(std::hash<std::string>{}(text));
        mix(text.size());

        /* map and unordered_map keyed by strings, then erased. */
        std::map<int, std::string> ordered;
        std::unordered_map<std::string, int> hashed;
        for (int i = 0; i < 300; i++) {
            int key = static_cast<int>(rng.next() % 1000);
            std::string value = "value-" + std::to_string(key) + std::string(key % 50, '#');
            ordered[key] = value;
            hashed[value] = key;
        }
        for (const auto &entry : ordered) {
            auto found = hashed.find(entry.second);
            if (found == hashed.end() || found->second != entry.first)
                ++*errors;
            mix(static_cast<uint64_t>(entry.first) * entry.second.size());
        }
        for (auto it = ordered.begin(); it != ordered.end();)
            it = it->first % 2 ? ordered.erase(it) : std::next(it);
        mix(ordered.size());

        /* list: splice and remove. */
        std::list<std::string> items;
        for (int i = 0; i < 150; i++)
            items.push_back(std::string(1 + rng.next() % 90, static_cast<char>('a' + i % 26)));
        std::list<std::string> other;
        other.splice(other.begin(), items, items.begin(), std::next(items.begin(), 50));
        items.remove_if([](const std::string &s) { return s.size() % 3 == 0; });
        for (const std::string &s : items)
            mix(s.size() * static_cast<unsigned char>(s[0]));
        mix(other.size());

        /* shared_ptr: make_shared, copies, custom deleter. */
        static thread_local int deleted;
        deleted = 0;
        {
            std::vector<std::shared_ptr<std::string>> shared;
            for (int i = 0; i < 100; i++)
                shared.push_back(std::make_shared<std::string>(std::string(i + 1, 'z')));
            std::vector<std::shared_ptr<std::string>> copies(shared.begin(), shared.end());
            std::shared_ptr<int> custom(new int(round), [](int *p) {
                deleted++;
                delete p;
            });
            for (size_t i = 0; i < shared.size(); i++)
                if (shared[i].use_count() != 2 || shared[i]->size() != i + 1)
                    ++*errors;
            mix(*custom);
        }
        if (deleted != 1)
            ++*errors;
    }
    return checksum;
}

void test_container_churn()
{
    int errors = 0;
    size_t before = blocks_in_use();
    uint64_t first = container_workload(11, 40, &errors);
    uint64_t second = container_workload(11, 40, &errors);
    CHECK(errors == 0, "%d container self-checks failed", errors);
    CHECK(first == second, "the same workload gave checksums %llx and %llx", (unsigned long long)first,
          (unsigned long long)second);
    size_t after = blocks_in_use();
    CHECK(after <= before + 16, "blocks in use %zu before the container churn, %zu after (leak?)", before, after);
}

/* ---- threads --------------------------------------------------------------------------- */
void test_thread_workers()
{
    constexpr int kThreads = 4;
    constexpr int kRounds = 100;
    uint64_t expected[kThreads];
    int errors = 0;
    for (int t = 0; t < kThreads; t++)
        expected[t] = container_workload(100 + t, kRounds, &errors);

    uint64_t results[kThreads] = {};
    int thread_errors[kThreads] = {};
    std::vector<std::thread> workers;
    for (int t = 0; t < kThreads; t++)
        workers.emplace_back([t, &results, &thread_errors] {
            results[t] = container_workload(100 + t, kRounds, &thread_errors[t]);
        });
    for (std::thread &worker : workers)
        worker.join();
    for (int t = 0; t < kThreads; t++) {
        CHECK(results[t] == expected[t], "thread %d: checksum %llx, single-threaded %llx", t,
              (unsigned long long)results[t], (unsigned long long)expected[t]);
        errors += thread_errors[t];
    }
    CHECK(errors == 0, "%d container self-checks failed in threads", errors);

    /* Objects made in one thread, checked and deleted in another. */
    std::vector<Tracked *> made(5000);
    std::thread maker([&made] {
        for (size_t i = 0; i < made.size(); i++)
            made[i] = new Tracked(i * 13);
    });
    maker.join(); /* the maker has exited: its pools are abandoned */
    std::vector<std::unique_ptr<std::string>> strings(2000);
    std::thread string_maker([&strings] {
        for (size_t i = 0; i < strings.size(); i++)
            strings[i].reset(new std::string(i % 300 + 1, static_cast<char>('A' + i % 26)));
    });
    size_t broken = 0;
    std::thread deleter([&made, &broken] {
        for (Tracked *object : made) {
            broken += !object->intact();
            delete object;
        }
    });
    deleter.join();
    string_maker.join();
    for (size_t i = 0; i < strings.size(); i++)
        broken += strings[i]->size() != i % 300 + 1 || (*strings[i])[0] != static_cast<char>('A' + i % 26);
    strings.clear();
    CHECK(broken == 0, "%zu objects corrupted across threads", broken);
    CHECK(live_tracked == 0, "%d Tracked objects left", live_tracked.load());
}

/* ---- exceptions --------------------------------------------------------------------------- */
struct BigError : std::runtime_error {
    char payload[3000];
    explicit BigError(const std::string &what) : std::runtime_error(what)
    {
        std::memset(payload, 'E', sizeof(payload));
    }
};

void thrower(int depth)
{
    if (depth == 0)
        throw BigError("deep failure " + std::string(200, '!'));
    std::vector<std::string> locals(10, std::string(100, 'L')); /* unwound on the way out */
    thrower(depth - 1);
}

void test_exceptions()
{
    try { /* warm-up: whatever the runtime sets up on its first throw stays */
        throw std::logic_error("warm-up");
    } catch (const std::exception &) {
    }
    size_t outside = blocks_in_use();
    size_t inside = 0;
    try {
        throw std::runtime_error("a message long enough to need its own heap block, not the SSO buffer");
    } catch (const std::runtime_error &error) {
        inside = blocks_in_use();
        CHECK(std::strcmp(error.what(), "a message long enough to need its own heap block, not the SSO buffer") == 0,
              "what() = %s", error.what());
    }
    CHECK(inside > outside, "no pymalloc block was live while the exception was (%zu -> %zu)", outside, inside);
    CHECK(blocks_in_use() <= outside, "the exception's blocks were not freed (%zu -> %zu)", outside,
          blocks_in_use());

    int caught = 0;
    for (int i = 0; i < 2000; i++) {
        try {
            thrower(i % 20);
        } catch (const BigError &error) {
            bool payload_ok = true;
            for (char c : error.payload)
                payload_ok &= c == 'E';
            caught += payload_ok && std::strncmp(error.what(), "deep failure !", 14) == 0;
        }
    }
    CHECK(caught == 2000, "%d of 2000 exceptions came back intact", caught);

    /* Nested: catch, wrap, rethrow. */
    std::string trail;
    try {
        try {
            try {
                throw std::out_of_range("inner");
            } catch (const std::exception &inner) {
                std::throw_with_nested(std::runtime_error(std::string("middle<") + inner.what() + ">"));
            }
        } catch (const std::exception &middle) {
            trail += middle.what();
            std::rethrow_if_nested(middle);
        }
    } catch (const std::out_of_range &inner) {
        trail += "/";
        trail += inner.what();
    }
    CHECK(trail == "middle<inner>/inner", "nested exceptions: %s", trail.c_str());

    /* An exception made in a worker thread, rethrown and freed in main. */
    std::exception_ptr carried;
    std::thread worker([&carried] {
        try {
            throw BigError("from the worker");
        } catch (...) {
            carried = std::current_exception();
        }
    });
    worker.join();
    bool rethrown = false;
    try {
        std::rethrow_exception(carried);
    } catch (const BigError &error) {
        rethrown = std::strcmp(error.what(), "from the worker") == 0 && error.payload[2999] == 'E';
    }
    carried = nullptr; /* the last reference: freed here, allocated by an exited thread */
    CHECK(rethrown, "an exception from a worker thread did not survive the trip");
}

} // namespace

int main()
{
    test_new_delete();
    test_aligned_new();
    test_nothrow_new();
    test_container_churn();
    test_thread_workers();
    test_exceptions();
    return check_finish();
}
