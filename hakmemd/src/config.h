// hakmemd's configuration: the JSON file (config/hakmemd.json documents every field), the
// command line and the environment, merged with the precedence
//   command line > environment (HAKMEM_SOCKET, HAKMEM_SHM_DIR) > file > built-in default.
#pragma once

#include <stdint.h>

#include <optional>
#include <string>
#include <vector>

#include "knob_ops.h"
#include "sites.h"

namespace hakmemd {

// Knobs applied to each newly seen process whose executable matches `exe` (fnmatch; a
// pattern without '/' is also tried against the executable's base name).
struct DefaultRule {
  std::string exe;
  std::vector<KnobValue> knobs;
};

struct Config {
  std::string socket;              // empty: proto::default_socket_path()
  std::string metrics;             // "HOST:PORT"; empty: no metrics endpoint
  std::string shm_dir;             // empty: $HAKMEM_SHM_DIR or /dev/shm
  uint32_t scan_interval_ms = 1000;
  std::string log_level = "info";
  std::vector<DefaultRule> defaults;
  std::vector<ConfigRule> rules;   // site rules per executable (sites.h)
};

// Settings given on the command line; they win over the file, also across reloads.
struct Overrides {
  std::optional<std::string> config_path;
  std::optional<std::string> socket;
  std::optional<std::string> metrics;
  std::optional<std::string> shm_dir;
  std::optional<uint32_t> scan_interval_ms;
  std::optional<std::string> log_level;
};

// Parses the file's JSON text into *out (starting from the built-in defaults). Unknown fields
// are errors naming the closest known field; keys starting with '_' are comments.
bool config_parse(const std::string& text, Config* out, std::string* error);
bool config_load(const std::string& path, Config* out, std::string* error);

// File (if any) + environment + overrides, with the defaults resolved (socket path, shm dir).
bool config_resolve(const Overrides& ov, Config* out, std::string* error);

// "HOST:PORT" or "[V6]:PORT" -> host and port (1..65535).
bool parse_host_port(const std::string& s, std::string* host, uint16_t* port);
bool valid_log_level(const std::string& s);

// True when the rule's pattern matches the executable path.
bool exe_matches(const std::string& pattern, const std::string& exe);

}  // namespace hakmemd
