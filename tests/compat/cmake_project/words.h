// Word statistics for the compat cmake project.
#pragma once
#include <map>
#include <string>
#include <vector>

std::vector<std::string> split_words(const std::string& text);
std::map<std::string, int> count_words(const std::vector<std::string>& words);
