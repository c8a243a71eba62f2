// compat: a C++ program with std::thread and the standard containers. Producers build
// strings, vectors and maps and hand them to consumers on other threads (so blocks are
// freed by a thread that did not allocate them); everything printed is a commutative
// digest, so the output does not depend on scheduling and must match the plain run.
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

struct Item {
  std::string text;
  std::vector<uint64_t> numbers;
  std::map<int, std::string> table;
};

class Queue {
 public:
  void push(std::unique_ptr<Item> item) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      items_.push_back(std::move(item));
    }
    cv_.notify_one();
  }
  // Returns null once closed and drained.
  std::unique_ptr<Item> pop() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return !items_.empty() || closed_; });
    if (items_.empty()) return nullptr;
    auto item = std::move(items_.front());
    items_.pop_front();
    return item;
  }
  void close() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Item>> items_;
  bool closed_ = false;
};

uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

std::unique_ptr<Item> make_item(uint64_t seed) {
  auto item = std::make_unique<Item>();
  uint64_t r = mix(seed + 1);
  size_t len = r % 3000;  // tiny .. pool sizes
  item->text.assign(len, static_cast<char>('a' + r % 26));
  item->text += std::to_string(seed);
  size_t n = (r >> 12) % 200;
  for (size_t i = 0; i < n; i++) item->numbers.push_back(mix(seed * 131 + i));
  for (int i = 0; i < static_cast<int>((r >> 20) % 20); i++) item->table[i] = std::to_string(mix(seed + i));
  return item;
}

uint64_t digest(const Item& item) {
  uint64_t h = std::hash<std::string>{}(item.text);
  for (uint64_t v : item.numbers) h = mix(h ^ v);
  for (const auto& [k, v] : item.table) h = mix(h ^ (static_cast<uint64_t>(k) << 32) ^ std::hash<std::string>{}(v));
  return h;
}

}  // namespace

int main() {
  constexpr int kProducers = 4, kConsumers = 4, kItemsPerProducer = 30000;
  Queue queue;
  std::vector<uint64_t> sums(kConsumers), counts(kConsumers);
  std::vector<std::thread> threads;
  for (int c = 0; c < kConsumers; c++) {
    threads.emplace_back([&, c] {
      std::unordered_map<uint64_t, std::list<std::string>> seen;
      while (auto item = queue.pop()) {
        sums[c] += digest(*item);
        counts[c]++;
        seen[item->text.size() % 64].push_back(item->text.substr(0, 16));
        if (seen.size() > 32) seen.clear();
      }
    });
  }
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; p++) {
    producers.emplace_back([&, p] {
      std::set<std::string> local;
      for (int i = 0; i < kItemsPerProducer; i++) {
        uint64_t seed = static_cast<uint64_t>(p) * kItemsPerProducer + i;
        queue.push(make_item(seed));
        local.insert(std::to_string(mix(seed) % 1000));
      }
    });
  }
  for (auto& t : producers) t.join();
  queue.close();
  for (auto& t : threads) t.join();

  uint64_t sum = 0, count = 0;
  for (int c = 0; c < kConsumers; c++) {
    sum += sums[c];
    count += counts[c];
  }
  // The same digest computed on one thread must agree with what the consumers saw.
  uint64_t expect = 0;
  for (uint64_t s = 0; s < static_cast<uint64_t>(kProducers) * kItemsPerProducer; s++) expect += digest(*make_item(s));
  std::printf("items %llu digest %016llx %s\n", static_cast<unsigned long long>(count),
              static_cast<unsigned long long>(sum), sum == expect ? "consistent" : "MISMATCH");
  return sum == expect ? 0 : 1;
}
