#include "words.h"

#include <regex>

std::vector<std::string> split_words(const std::string& text) {
  static const std::regex word("[A-Za-z]+[0-9]*");
  std::vector<std::string> out;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), word); it != std::sregex_iterator(); ++it)
    out.push_back(it->str());
  return out;
}

std::map<std::string, int> count_words(const std::vector<std::string>& words) {
  std::map<std::string, int> counts;
  for (const auto& w : words) counts[w]++;
  return counts;
}
