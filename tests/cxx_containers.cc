/*
 * cxx_containers.cc -- a deterministic C++ container workload for the
 * preload tests.  Built without pymalloc; tests/preload_cxx.sh runs it with
 * and without LD_PRELOAD=libpymalloc.so and compares the outputs, which
 * therefore depend only on the computation, never on addresses, timing,
 * hash-table iteration order or thread scheduling.
 *
 * Usage: cxx_containers [scale]     (scale: positive integer, default 1;
 *                                    well under a second at scale 1)
 *
 * Sections (one summary line each, checksums as 16 hex digits):
 *   vector_sort      sort/unique/binary search over random integers
 *   string_sort      many short strings built, sorted and joined
 *   word_count       std::map word frequencies of a generated text, top 5
 *   hash_table       std::unordered_map insert/erase/lookup, order-free sums
 *   concat           strings grown by repeated appends and inserts
 *   list_deque_set   std::list, std::deque, std::set churn
 *   shared_objects   shared_ptr graphs built and released
 *   threads          4 std::threads each running its own mixed workload,
 *                    reported in thread order
 * Exit status 0, or 1 when an internal consistency check fails.
 */
#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

int consistency_failures = 0;

void expect(bool condition, const char *what)
{
    if (!condition) {
        std::fprintf(stderr, "consistency check failed: %s\n", what);
        consistency_failures++;
    }
}

/* FNV-1a over 64-bit values and strings: defined here, so the checksums do
 * not depend on the standard library's hash functions. */
struct Checksum {
    uint64_t value = 0xcbf29ce484222325ULL;
    void add(uint64_t word)
    {
        for (int i = 0; i < 8; i++) {
            value ^= (word >> (8 * i)) & 0xff;
            value *= 0x100000001b3ULL;
        }
    }
    void add(const std::string &text)
    {
        for (unsigned char c : text) {
            value ^= c;
            value *= 0x100000001b3ULL;
        }
        add(text.size());
    }
};

std::string make_word(std::mt19937_64 &rng, size_t max_length)
{
    static const char letters[] = "etaoinshrdlucmfwypvbgkqjxz";
    size_t length = 1 + rng() % max_length;
    std::string word;
    for (size_t i = 0; i < length; i++)
        word.push_back(letters[std::min<uint64_t>(rng() % 26, rng() % 26)]); /* skewed towards common letters */
    return word;
}

/* ---- sections ------------------------------------------------------------------ */
uint64_t vector_sort(int scale)
{
    std::mt19937_64 rng(1);
    std::vector<uint32_t> values;
    size_t count = 300000 * static_cast<size_t>(scale);
    for (size_t i = 0; i < count; i++)
        values.push_back(static_cast<uint32_t>(rng() % 1000000));
    std::vector<uint32_t> sorted = values;
    std::sort(sorted.begin(), sorted.end());
    expect(std::is_sorted(sorted.begin(), sorted.end()), "vector sorted");
    std::vector<uint32_t> unique = sorted;
    unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
    size_t found = 0;
    for (size_t i = 0; i < 10000; i++)
        found += std::binary_search(unique.begin(), unique.end(), static_cast<uint32_t>(rng() % 1000000));
    Checksum sum;
    for (size_t i = 0; i < sorted.size(); i += 7)
        sum.add(sorted[i]);
    sum.add(unique.size());
    sum.add(found);
    std::printf("vector_sort: n=%zu unique=%zu found=%zu min=%u max=%u checksum=%016" PRIx64 "\n", sorted.size(),
                    unique.size(), found, sorted.front(), sorted.back(), sum.value);
    return sum.value;
}

uint64_t string_sort(int scale)
{
    std::mt19937_64 rng(2);
    std::vector<std::string> words;
    size_t count = 60000 * static_cast<size_t>(scale);
    for (size_t i = 0; i < count; i++)
        words.push_back(make_word(rng, 24));
    std::sort(words.begin(), words.end());
    expect(std::is_sorted(words.begin(), words.end()), "strings sorted");
    std::string joined;
    for (size_t i = 0; i < words.size(); i += 3) {
        joined += words[i];
        joined += ' ';
    }
    Checksum sum;
    sum.add(joined);
    std::printf("string_sort: n=%zu first=%s last=%s joined=%zu checksum=%016" PRIx64 "\n", words.size(),
                    words.front().c_str(), words.back().c_str(), joined.size(), sum.value);
    return sum.value;
}

uint64_t word_count(int scale)
{
    std::mt19937_64 rng(3);
    std::map<std::string, int> counts;
    size_t total = 200000 * static_cast<size_t>(scale);
    for (size_t i = 0; i < total; i++)
        counts[make_word(rng, 3)]++;
    std::vector<std::pair<int, std::string>> ranked;
    for (const auto &entry : counts)
        ranked.emplace_back(-entry.second, entry.first);
    std::sort(ranked.begin(), ranked.end());
    Checksum sum;
    size_t words_seen = 0;
    for (const auto &entry : counts) {
        sum.add(entry.first);
        sum.add(static_cast<uint64_t>(entry.second));
        words_seen += static_cast<size_t>(entry.second);
    }
    expect(words_seen == total, "word counts add up");
    std::printf("word_count: words=%zu distinct=%zu top=", total, counts.size());
    for (size_t i = 0; i < 5 && i < ranked.size(); i++)
        std::printf("%s%s:%d", i ? "," : "", ranked[i].second.c_str(), -ranked[i].first);
    std::printf(" checksum=%016" PRIx64 "\n", sum.value);
    return sum.value;
}

uint64_t hash_table(int scale)
{
    std::mt19937_64 rng(4);
    std::unordered_map<uint64_t, uint64_t> table;
    size_t count = 200000 * static_cast<size_t>(scale);
    std::vector<uint64_t> keys;
    for (size_t i = 0; i < count; i++) {
        uint64_t key = rng() % (4 * count);
        keys.push_back(key);
        table[key] += i;
    }
    for (size_t i = 0; i < keys.size(); i += 2)
        table.erase(keys[i]);
    std::unordered_map<std::string, size_t> by_name;
    for (size_t i = 0; i < count / 10; i++)
        by_name["key-" + std::to_string(keys[i])] = i;
    size_t hits = 0;
    for (size_t i = 1; i < keys.size(); i += 2)
        hits += table.count(keys[i]);
    /* Order-independent: sums and xors over the entries. */
    uint64_t key_sum = 0, value_xor = 0, name_sum = 0;
    for (const auto &entry : table) {
        key_sum += entry.first;
        value_xor ^= entry.second * 0x9E3779B97F4A7C15ULL;
    }
    for (const auto &entry : by_name)
        name_sum += entry.first.size() * 31 + entry.second;
    Checksum sum;
    sum.add(table.size());
    sum.add(key_sum);
    sum.add(value_xor);
    sum.add(name_sum);
    std::printf("hash_table: size=%zu names=%zu hits=%zu checksum=%016" PRIx64 "\n", table.size(), by_name.size(),
                    hits, sum.value);
    return sum.value;
}

uint64_t concat(int scale)
{
    std::mt19937_64 rng(5);
    Checksum sum;
    size_t longest = 0;
    for (int round = 0; round < 40 * scale; round++) {
        std::string text;
        for (int i = 0; i < 2000; i++) {
            text += make_word(rng, 12);
            if (i % 50 == 0)
                text.insert(text.size() / 2, "<mid>");
            text += i % 10 ? "," : ";\n";
        }
        std::string copy = text + text.substr(text.size() / 3);
        size_t position = copy.find("<mid>");
        expect(position != std::string::npos, "inserted marker found");
        longest = std::max(longest, copy.size());
        sum.add(copy);
    }
    std::printf("concat: rounds=%d longest=%zu checksum=%016" PRIx64 "\n", 40 * scale, longest, sum.value);
    return sum.value;
}

uint64_t list_deque_set(int scale)
{
    std::mt19937_64 rng(6);
    std::list<uint64_t> list;
    std::deque<std::string> deque;
    std::set<uint64_t> set;
    Checksum sum;
    size_t count = 100000 * static_cast<size_t>(scale);
    for (size_t i = 0; i < count; i++) {
        uint64_t value = rng() % 100000;
        if (value % 3 == 0)
            list.push_front(value);
        else
            list.push_back(value);
        deque.push_back(std::to_string(value));
        if (deque.size() > 1000) {
            sum.add(deque.front());
            deque.pop_front();
        }
        set.insert(value);
        if (i % 4 == 0)
            set.erase(rng() % 100000);
    }
    list.sort();
    list.unique();
    expect(std::is_sorted(list.begin(), list.end()), "list sorted");
    for (uint64_t value : list)
        sum.add(value);
    for (uint64_t value : set)
        sum.add(value);
    std::printf("list_deque_set: list=%zu deque=%zu set=%zu checksum=%016" PRIx64 "\n", list.size(), deque.size(),
                    set.size(), sum.value);
    return sum.value;
}

struct Node {
    uint64_t value;
    std::vector<std::shared_ptr<Node>> children;
    std::weak_ptr<Node> parent;
};

uint64_t shared_objects(int scale)
{
    std::mt19937_64 rng(7);
    Checksum sum;
    size_t nodes_made = 0;
    for (int round = 0; round < 20 * scale; round++) {
        auto root = std::make_shared<Node>();
        root->value = static_cast<uint64_t>(round);
        std::vector<std::shared_ptr<Node>> all{root};
        for (int i = 0; i < 3000; i++) {
            auto parent = all[rng() % all.size()];
            auto child = std::make_shared<Node>();
            child->value = rng() % 1000;
            child->parent = parent;
            parent->children.push_back(child);
            all.push_back(child);
        }
        nodes_made += all.size();
        uint64_t depth_sum = 0;
        for (const auto &node : all) {
            uint64_t depth = 0;
            for (auto up = node->parent.lock(); up; up = up->parent.lock())
                depth++;
            depth_sum += depth * node->value;
        }
        sum.add(depth_sum);
        all.clear();
        expect(root.use_count() == 1, "only the root reference is left");
    }
    std::printf("shared_objects: nodes=%zu checksum=%016" PRIx64 "\n", nodes_made, sum.value);
    return sum.value;
}

/* Each thread runs the sections at a reduced size with its own seeds. */
void threads(int scale)
{
    constexpr int kThreads = 4;
    uint64_t results[kThreads] = {};
    std::vector<std::thread> workers;
    for (int t = 0; t < kThreads; t++)
        workers.emplace_back([t, scale, &results] {
            std::mt19937_64 rng(100 + static_cast<uint64_t>(t));
            Checksum sum;
            for (int round = 0; round < 30 * scale; round++) {
                std::map<std::string, std::vector<uint64_t>> groups;
                for (int i = 0; i < 2000; i++)
                    groups[make_word(rng, 2)].push_back(rng() % 1000);
                for (auto &group : groups) {
                    std::sort(group.second.begin(), group.second.end());
                    sum.add(group.first);
                    sum.add(group.second.back());
                }
                std::unordered_map<uint64_t, std::string> names;
                for (int i = 0; i < 1000; i++)
                    names[rng() % 500] += "x";
                uint64_t total = 0;
                for (const auto &entry : names)
                    total += entry.first * entry.second.size();
                sum.add(total);
            }
            results[t] = sum.value;
        });
    for (std::thread &worker : workers)
        worker.join();
    std::printf("threads:");
    for (int t = 0; t < kThreads; t++)
        std::printf(" %016" PRIx64, results[t]);
    std::printf("\n");
}

} // namespace

int main(int argc, char **argv)
{
    int scale = 1;
    if (argc > 1) {
        char *end = nullptr;
        long parsed = std::strtol(argv[1], &end, 10);
        if (end == argv[1] || *end != '\0' || parsed < 1 || parsed > 1000) {
            std::fprintf(stderr, "usage: %s [scale]   (scale: 1..1000)\n", argv[0]);
            return 2;
        }
        scale = static_cast<int>(parsed);
    }
    std::printf("cxx_containers scale=%d\n", scale);
    vector_sort(scale);
    string_sort(scale);
    word_count(scale);
    hash_table(scale);
    concat(scale);
    list_deque_set(scale);
    shared_objects(scale);
    threads(scale);
    if (consistency_failures != 0) {
        std::printf("FAILED: %d consistency checks\n", consistency_failures);
        return 1;
    }
    std::printf("ok\n");
    return 0;
}
