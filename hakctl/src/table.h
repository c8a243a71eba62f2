// An aligned text table: columns padded to their widest cell, two spaces between columns,
// numbers right-aligned, no trailing blanks. The only place hakctl lays out columns.
#pragma once

#include <string>
#include <vector>

namespace hakctl {

enum class Align { Left, Right };

class Table {
 public:
  struct Column {
    std::string header;
    Align align;
  };
  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}
  // A row with fewer cells than columns is padded with empty cells; extra cells are an error
  // in the caller and are dropped.
  void add_row(std::vector<std::string> cells);
  size_t rows() const { return rows_.size(); }
  std::string render() const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// Display width of UTF-8 text (code points, not bytes), so "→" or an exe path with accents
// still lines up.
size_t display_width(const std::string& s);

}  // namespace hakctl
