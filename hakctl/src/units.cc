#include "units.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

namespace hakctl {

namespace {

// Three significant digits: "1.50", "15.3", "153". Returns the text and whether rounding
// carried the value to `base` or more (then the caller moves to the next unit).
std::string three_digits(double v, double base, bool* carried) {
  char buf[32];
  const int decimals = v < 9.995 ? 2 : (v < 99.95 ? 1 : 0);
  snprintf(buf, sizeof buf, "%.*f", decimals, v);
  *carried = atof(buf) >= base;
  return buf;
}

std::string scaled(double v, double base, const char* const* units, int nunits, const char* sep) {
  int u = 0;
  while (u + 1 < nunits && v >= base) { v /= base; u++; }
  for (;;) {
    bool carried = false;
    std::string s = three_digits(v, base, &carried);
    if (carried && u + 1 < nunits) { v /= base; u++; continue; }
    return s + sep + units[u];
  }
}

}  // namespace

std::string format_bytes(uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes) / 1024.0;
  return scaled(v, 1024.0, kUnits + 1, 6, " ");
}

std::string format_count(uint64_t n) {
  if (n < 1000) return std::to_string(n);
  static const char* const kUnits[] = {"k", "M", "G", "T", "P", "E"};
  double v = static_cast<double>(n) / 1000.0;
  return scaled(v, 1000.0, kUnits, 6, "");
}

std::string format_rate(double per_second) {
  if (!(per_second >= 0) || isinf(per_second)) return "-";
  if (per_second < 1000) {
    char buf[32];
    // Small rates keep one decimal so a slow trickle does not read as zero.
    if (per_second > 0 && per_second < 10) snprintf(buf, sizeof buf, "%.1f/s", per_second);
    else snprintf(buf, sizeof buf, "%.0f/s", per_second);
    if (atof(buf) < 1000) return buf;
  }
  static const char* const kUnits[] = {"k", "M", "G", "T", "P", "E"};
  return scaled(per_second / 1000.0, 1000.0, kUnits, 6, "") + "/s";
}

std::string format_percent(uint64_t part, uint64_t whole) {
  if (whole == 0) return "-";
  char buf[32];
  snprintf(buf, sizeof buf, "%.1f%%", 100.0 * static_cast<double>(part) / static_cast<double>(whole));
  return buf;
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  const uint64_t s = static_cast<uint64_t>(seconds);
  char buf[48];
  if (s < 60) snprintf(buf, sizeof buf, "%llus", static_cast<unsigned long long>(s));
  else if (s < 3600) snprintf(buf, sizeof buf, "%llum%02llus", static_cast<unsigned long long>(s / 60),
                              static_cast<unsigned long long>(s % 60));
  else if (s < 86400) snprintf(buf, sizeof buf, "%lluh%02llum", static_cast<unsigned long long>(s / 3600),
                               static_cast<unsigned long long>(s % 3600 / 60));
  else snprintf(buf, sizeof buf, "%llud%02lluh", static_cast<unsigned long long>(s / 86400),
                static_cast<unsigned long long>(s % 86400 / 3600));
  return buf;
}

}  // namespace hakctl
