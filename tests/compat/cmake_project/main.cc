// Prints deterministic word statistics of a generated text.
#include <algorithm>
#include <cstdio>
#include <string>
#include <unordered_map>

#include "words.h"

int main() {
  std::string text;
  unsigned x = 1;
  for (int i = 0; i < 200000; i++) {
    x = x * 1103515245u + 12345u;
    text += "w";
    text += std::to_string((x >> 16) % 997);
    text += (i % 13) ? " " : ".\n";
  }
  auto words = split_words(text);
  auto counts = count_words(words);
  std::unordered_map<int, int> by_count;
  for (const auto& [w, c] : counts) by_count[c]++;
  auto top = std::max_element(counts.begin(), counts.end(),
                              [](const auto& a, const auto& b) { return a.second < b.second; });
  std::printf("words %zu distinct %zu top %s %d buckets %zu\n", words.size(), counts.size(),
              top->first.c_str(), top->second, by_count.size());
  return 0;
}
