// Human units for hakctl's tables: bytes as B/KiB/MiB/GiB/TiB, counts as k/M/G, rates,
// percentages and durations. Pure functions so render tests can pin every edge.
#pragma once

#include <stdint.h>

#include <string>

namespace hakctl {

// 0 -> "0 B", 1536 -> "1.50 KiB", 12.3 MiB -> "12.3 MiB", 200 MiB -> "200 MiB".
std::string format_bytes(uint64_t bytes);
// 999 -> "999", 1500 -> "1.50k", 15300 -> "15.3k", 2.5e6 -> "2.50M", 7e9 -> "7.00G".
std::string format_count(uint64_t n);
// Events per second with the count scale: 0 -> "0/s", 1234.5 -> "1.23k/s"; negative -> "-".
std::string format_rate(double per_second);
// part/whole as a percentage with one decimal ("99.8%"); "-" when whole is 0.
std::string format_percent(uint64_t part, uint64_t whole);
// Uptime: "45s", "5m12s", "3h05m", "2d04h".
std::string format_duration(double seconds);

}  // namespace hakctl
