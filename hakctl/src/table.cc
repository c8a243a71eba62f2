#include "table.h"

#include <algorithm>

namespace hakctl {

size_t display_width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) n++;  // count lead bytes only
  return n;
}

void Table::add_row(std::vector<std::string> cells) {
  cells.resize(columns_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::render() const {
  std::vector<size_t> width(columns_.size());
  for (size_t c = 0; c < columns_.size(); c++) width[c] = display_width(columns_[c].header);
  for (const auto& r : rows_)
    for (size_t c = 0; c < r.size(); c++) width[c] = std::max(width[c], display_width(r[c]));

  std::string out;
  auto emit = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (size_t c = 0; c < cells.size(); c++) {
      const size_t pad = width[c] - display_width(cells[c]);
      const bool last = c + 1 == cells.size();
      if (c) line += "  ";
      if (columns_[c].align == Align::Right) line.append(pad, ' ') += cells[c];
      else {
        line += cells[c];
        if (!last) line.append(pad, ' ');
      }
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  };
  std::vector<std::string> header;
  for (const auto& col : columns_) header.push_back(col.header);
  emit(header);
  for (const auto& r : rows_) emit(r);
  return out;
}

}  // namespace hakctl
