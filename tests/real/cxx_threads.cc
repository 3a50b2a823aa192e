/*
 * cxx_threads.cc -- a multithreaded C++ program for tests/real/cxx_threads.test
 * (`make check-real`).  Built without pymalloc (plain libstdc++ new/delete
 * over malloc/free); the test runs it with and without
 * LD_PRELOAD=libpymalloc.so and compares the outputs, so everything it
 * prints depends only on the computation: never on addresses, timing,
 * thread scheduling or hash-table iteration order (results from several
 * threads are combined with commutative sums, or reported in thread order).
 *
 * Usage: cxx_threads [scale]      (positive integer, default 1: about a
 *                                  second on two cores)
 *
 * Sections, one summary line each (checksums as 16 hex digits):
 *   workers     8 std::threads, each churning std::map<std::string,
 *               std::vector<int>>, std::unordered_map<uint64_t, std::string>,
 *               std::vector<std::string> and std::deque, and throwing
 *               exceptions through 5..60 frames that each hold heap objects
 *               (strings, vectors, unique_ptrs, counted objects) which the
 *               unwinder destroys; some frames catch and rethrow, some wrap
 *               the exception in std::throw_with_nested.  Reported per thread.
 *   pipeline    4 producers create std::shared_ptr<Message> (string, vector,
 *               map) and push them through a mutex/condition-variable queue
 *               to 4 consumers, which pass half of them on through a second
 *               queue to 2 finishers: the last reference of a message is
 *               dropped by a thread other than the one that made it.
 *   transport   std::exception_ptr and results carried between threads by
 *               std::promise/std::future and std::async (allocated in one
 *               thread, freed in another).
 *   live        every counted object was destroyed (0 live), no check failed.
 * Exit status 0, or 1 when an internal consistency check fails (it prints
 * "CHECK FAILED: ..." on stderr).
 */
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

std::atomic<long> g_live{0};       // Counted objects alive.
std::atomic<long> g_failures{0};   // Failed internal checks.

void check(bool ok, const char *what) {
    if (!ok) {
        g_failures.fetch_add(1);
        std::fprintf(stderr, "CHECK FAILED: %s\n", what);
    }
}

struct Rng {   // xorshift64*: the same sequence everywhere.
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x1234567ull) {}
    uint64_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545F4914F6CDD1Dull;
    }
    uint32_t below(uint32_t n) { return static_cast<uint32_t>(next() % n); }
};

uint64_t fnv(const void *data, size_t n, uint64_t h = 1469598103934665603ull) {
    const unsigned char *p = static_cast<const unsigned char *>(data);
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}
uint64_t fnv(const std::string &s, uint64_t h = 1469598103934665603ull) { return fnv(s.data(), s.size(), h); }
uint64_t mix(uint64_t h, uint64_t v) { return fnv(&v, sizeof v, h); }

// An object whose construction and destruction are counted.
struct Counted {
    std::string name;
    std::vector<uint64_t> data;
    Counted(std::string n, size_t len, uint64_t seed) : name(std::move(n)), data(len) {
        for (size_t i = 0; i < len; i++) data[i] = seed + i * i;
        g_live.fetch_add(1, std::memory_order_relaxed);
    }
    Counted(const Counted &o) : name(o.name), data(o.data) { g_live.fetch_add(1, std::memory_order_relaxed); }
    ~Counted() { g_live.fetch_sub(1, std::memory_order_relaxed); }
    uint64_t digest() const { return fnv(data.data(), data.size() * sizeof data[0], fnv(name)); }
};

// ---- workers: containers and exceptions --------------------------------------------

struct DeepError : std::runtime_error {
    std::vector<Counted> payload;   // Allocated while throwing, freed by the catcher.
    int depth;
    DeepError(const std::string &what, int d) : std::runtime_error(what), depth(d) {
        for (int i = 0; i < 1 + d % 5; i++) payload.emplace_back("payload-" + std::to_string(i), 3 + d % 17, d);
    }
};

// Recurse DEPTH frames, each holding heap objects, then throw.  Frames where
// (depth % 9 == 4) catch and rethrow; (depth % 13 == 6) wrap the exception
// in a std::nested_exception.
uint64_t descend(Rng &rng, int depth, int target, std::vector<std::string> &trail) {
    std::string frame_name = "frame-" + std::to_string(depth) + std::string(rng.below(40), 'f');
    std::vector<int> local(1 + rng.below(64), depth);
    auto owned = std::make_unique<Counted>(frame_name, 1 + rng.below(30), depth);
    std::map<int, std::string> scratch;
    for (int i = 0; i < depth % 6; i++) scratch[i] = frame_name.substr(0, 6 + i);
    trail.push_back(frame_name.substr(0, 8));
    if (depth == target) throw DeepError("bottom at " + std::to_string(depth) + " " + frame_name, depth);
    if (depth % 9 == 4) {
        try {
            return descend(rng, depth + 1, target, trail) + local.size();
        } catch (DeepError &e) {
            e.payload.emplace_back("rethrown-at-" + std::to_string(depth), 5, depth);
            throw;
        } catch (...) {
            throw;
        }
    }
    if (depth % 13 == 6) {
        try {
            return descend(rng, depth + 1, target, trail) + owned->data.size();
        } catch (...) {
            std::throw_with_nested(std::logic_error("wrapped at " + std::to_string(depth) + " " + scratch[0]));
        }
    }
    return descend(rng, depth + 1, target, trail) + local.size() + scratch.size();
}

// Unwrap nested exceptions down to the DeepError; returns its digest.
uint64_t unwrap(const std::exception &e, int &wraps) {
    uint64_t h = fnv(std::string(e.what()));
    if (const auto *deep = dynamic_cast<const DeepError *>(&e)) {
        for (const Counted &c : deep->payload) h = mix(h, c.digest());
        return mix(h, static_cast<uint64_t>(deep->depth));
    }
    try {
        std::rethrow_if_nested(e);
    } catch (const std::exception &inner) {
        wraps++;
        return mix(h, unwrap(inner, wraps));
    }
    check(false, "a wrapped exception without a DeepError inside");
    return h;
}

struct WorkerResult {
    uint64_t containers = 0, exceptions = 0;
    long thrown = 0, wraps = 0, rethrows = 0;
};

void worker(int tid, int scale, WorkerResult &out) {
    Rng rng(static_cast<uint64_t>(tid) + 1);
    std::map<std::string, std::vector<int>> tree;
    std::unordered_map<uint64_t, std::string> hash;
    std::vector<std::string> strings;
    std::deque<Counted> fifo;
    const int rounds = 20000 * scale;
    for (int r = 0; r < rounds; r++) {
        uint32_t op = rng.below(10);
        uint64_t key = rng.below(3000);
        std::string skey = "k" + std::to_string(key) + "-" + std::string(key % 23, 'a' + tid);
        switch (op) {
        case 0: case 1: case 2:
            tree[skey].resize(1 + key % 50, r);
            break;
        case 3:
            tree.erase(skey);
            break;
        case 4: case 5:
            hash[key] = skey + std::to_string(r);
            break;
        case 6:
            hash.erase(key);
            break;
        case 7:
            strings.push_back(skey + skey);
            if (strings.size() > 500) strings.erase(strings.begin(), strings.begin() + 200);
            break;
        case 8:
            fifo.emplace_back(skey, key % 100, key);
            if (fifo.size() > 300) fifo.pop_front();
            break;
        default: {
            std::string big;
            for (int i = 0; i < 1 + static_cast<int>(key % 40); i++) big += skey;
            std::reverse(big.begin(), big.end());
            strings.push_back(std::move(big));
            break;
        }
        }
        if (r % 25 == 0) {   // An exception through 5..60 frames.
            std::vector<std::string> trail;
            int target = 5 + static_cast<int>(rng.below(56));
            long live_before = g_live.load();
            (void)live_before;
            try {
                descend(rng, 0, target, trail);
                check(false, "descend returned without throwing");
            } catch (const DeepError &e) {
                out.thrown++;
                out.rethrows += static_cast<long>(e.payload.size()) - (1 + e.depth % 5);
                int wraps = 0;
                out.exceptions = mix(out.exceptions, unwrap(e, wraps));
                check(e.depth == target, "DeepError depth");
            } catch (const std::logic_error &e) {
                out.thrown++;
                int wraps = 1;
                out.exceptions = mix(out.exceptions, unwrap(e, wraps));
                out.wraps += wraps;
            }
            check(static_cast<int>(trail.size()) == target + 1, "every frame ran");
            out.exceptions = mix(out.exceptions, fnv(trail.back()));
        }
    }
    // Order-independent digests of the containers (iteration order of the
    // unordered_map is not part of the result).
    uint64_t h = 0;
    for (const auto &kv : tree) h = mix(mix(h, fnv(kv.first)), kv.second.size() * 1000003u + kv.second.back());
    uint64_t hs = 0;
    for (const auto &kv : hash) hs += mix(fnv(kv.second), kv.first);
    for (const auto &s : strings) h = mix(h, fnv(s));
    for (const auto &c : fifo) h = mix(h, c.digest());
    out.containers = mix(h, hs) ^ (tree.size() << 40) ^ (hash.size() << 20) ^ strings.size();
}

// ---- pipeline: shared_ptr through queues --------------------------------------------

struct Message {
    uint64_t id;
    std::string text;
    std::vector<uint32_t> values;
    std::map<std::string, Counted> attrs;
    Message(uint64_t i, Rng &rng) : id(i) {
        text = "message-" + std::to_string(i) + "-" + std::string(rng.below(200), static_cast<char>('a' + i % 26));
        values.resize(rng.below(300));
        for (auto &v : values) v = static_cast<uint32_t>(rng.next());
        for (uint32_t k = 0; k < rng.below(4); k++)
            attrs.emplace("attr" + std::to_string(k), Counted(text.substr(0, 12), 1 + k * 7, i));
        g_live.fetch_add(1, std::memory_order_relaxed);
    }
    ~Message() { g_live.fetch_sub(1, std::memory_order_relaxed); }
    uint64_t digest() const {
        uint64_t h = fnv(text);
        h = fnv(values.data(), values.size() * sizeof values[0], h);
        for (const auto &kv : attrs) h = mix(fnv(kv.first, h), kv.second.digest());
        return mix(h, id);
    }
};

template <class T>
class Queue {   // Unbounded; pop() returns false once closed and drained.
public:
    void push(T v) {
        {
            std::lock_guard<std::mutex> lock(m_);
            q_.push(std::move(v));
        }
        cv_.notify_one();
    }
    bool pop(T &v) {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [this] { return !q_.empty() || closed_; });
        if (q_.empty()) return false;
        v = std::move(q_.front());
        q_.pop();
        return true;
    }
    void close() {
        {
            std::lock_guard<std::mutex> lock(m_);
            closed_ = true;
        }
        cv_.notify_all();
    }
private:
    std::mutex m_;
    std::condition_variable cv_;
    std::queue<T> q_;
    bool closed_ = false;
};

struct Totals {   // Commutative: the order of arrival does not matter.
    std::atomic<uint64_t> sum{0}, x{0};
    std::atomic<long> count{0};
    void add(uint64_t d) {
        sum.fetch_add(d);
        x.fetch_xor(d * 0x9E3779B97F4A7C15ull);
        count.fetch_add(1);
    }
};

void pipeline(int scale, Totals &consumed, Totals &finished) {
    Queue<std::shared_ptr<Message>> first, second;
    const int producers = 4, consumers = 4, finishers = 2, per_producer = 20000 * scale;
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; p++)
        threads.emplace_back([&, p] {
            Rng rng(100 + p);
            std::vector<std::shared_ptr<Message>> recent;   // Some kept a while longer.
            for (int i = 0; i < per_producer; i++) {
                auto m = std::make_shared<Message>(static_cast<uint64_t>(p) * 1000000 + i, rng);
                if (i % 3 == 0) recent.push_back(m);
                if (recent.size() > 50) recent.erase(recent.begin(), recent.begin() + 25);
                first.push(std::move(m));
            }
        });
    std::vector<std::thread> stage2;
    for (int c = 0; c < consumers; c++)
        stage2.emplace_back([&] {
            std::shared_ptr<Message> m;
            while (first.pop(m)) {
                std::weak_ptr<Message> weak = m;
                consumed.add(m->digest());
                check(!weak.expired(), "weak_ptr of a held message");
                if (m->id % 2 == 0) {
                    m->text += "+seen";
                    second.push(std::move(m));
                }
                m.reset();
            }
        });
    std::vector<std::thread> stage3;
    for (int f = 0; f < finishers; f++)
        stage3.emplace_back([&] {
            std::shared_ptr<Message> m;
            while (second.pop(m)) {
                finished.add(m->digest());
                m.reset();
            }
        });
    for (auto &t : threads) t.join();
    first.close();
    for (auto &t : stage2) t.join();
    second.close();
    for (auto &t : stage3) t.join();
}

// ---- transport: exception_ptr, promise/future, async ------------------------------------

std::vector<std::string> async_strings(int n) {
    std::vector<std::string> v;
    for (int i = 0; i < n; i++) v.push_back(std::string(1 + i % 300, static_cast<char>('A' + i % 26)) + std::to_string(i));
    return v;
}

void transport(int scale, uint64_t &digest, long &errors) {
    digest = 0;
    errors = 0;
    for (int round = 0; round < 40 * scale; round++) {
        std::vector<std::promise<std::vector<Counted>>> promises(4);
        std::vector<std::future<std::vector<Counted>>> futures;
        for (auto &p : promises) futures.push_back(p.get_future());
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; t++)
            threads.emplace_back([&promises, t, round] {
                try {
                    std::vector<Counted> v;
                    for (int i = 0; i < 20 + t; i++) v.emplace_back("t" + std::to_string(t), 1 + i, round);
                    if ((round + t) % 3 == 0) throw DeepError("in thread " + std::to_string(t), round % 50);
                    promises[t].set_value(std::move(v));
                } catch (...) {
                    promises[t].set_exception(std::current_exception());
                }
            });
        auto a = std::async(std::launch::async, async_strings, 200 + round);
        for (auto &f : futures) {
            try {
                for (const Counted &c : f.get()) digest = mix(digest, c.digest());
            } catch (const DeepError &e) {
                errors++;
                int wraps = 0;
                digest = mix(digest, unwrap(e, wraps));
            }
        }
        for (const auto &s : a.get()) digest = mix(digest, fnv(s));
        for (auto &t : threads) t.join();
    }
}

}  // namespace

int main(int argc, char **argv) {
    int scale = 1;
    if (argc > 1) {
        scale = std::atoi(argv[1]);
        if (scale < 1 || scale > 1000) {
            std::fprintf(stderr, "usage: cxx_threads [scale 1..1000]\n");
            return 2;
        }
    }

    std::vector<WorkerResult> results(8);
    {
        std::vector<std::thread> threads;
        for (int t = 0; t < 8; t++) threads.emplace_back(worker, t, scale, std::ref(results[t]));
        for (auto &t : threads) t.join();
    }
    for (int t = 0; t < 8; t++)
        std::printf("workers thread %d: containers %016llx exceptions %016llx thrown %ld wrapped %ld rethrown %ld\n", t,
                    static_cast<unsigned long long>(results[t].containers),
                    static_cast<unsigned long long>(results[t].exceptions), results[t].thrown, results[t].wraps,
                    results[t].rethrows);

    Totals consumed, finished;
    pipeline(scale, consumed, finished);
    std::printf("pipeline: consumed %ld sum %016llx xor %016llx; finished %ld sum %016llx xor %016llx\n",
                consumed.count.load(), static_cast<unsigned long long>(consumed.sum.load()),
                static_cast<unsigned long long>(consumed.x.load()), finished.count.load(),
                static_cast<unsigned long long>(finished.sum.load()), static_cast<unsigned long long>(finished.x.load()));
    check(consumed.count.load() == 4L * 20000 * scale, "every message consumed");
    check(finished.count.load() == 2L * 20000 * scale, "every even message finished");

    uint64_t tdigest;
    long terrors;
    transport(scale, tdigest, terrors);
    std::printf("transport: digest %016llx, %ld exceptions carried\n", static_cast<unsigned long long>(tdigest), terrors);

    check(g_live.load() == 0, "every counted object destroyed");
    std::printf("live: %ld objects, %ld failed checks\n", g_live.load(), g_failures.load());
    return g_failures.load() == 0 ? 0 : 1;
}
