#include "config.h"

#include <fnmatch.h>
#include <stdlib.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "hakmem/proto/protocol.h"
#include "hakmem/proto/segment.h"

namespace hakmemd {

namespace {
const std::vector<std::string> kFields = {"socket", "metrics", "shm_dir", "scan_interval_ms", "log_level",
                                          "defaults", "rules"};
}

bool valid_log_level(const std::string& s) {
  static const char* const levels[] = {"trace", "debug", "info", "warn", "warning", "error", "critical", "off"};
  for (const char* l : levels)
    if (s == l) return true;
  return false;
}

bool parse_host_port(const std::string& s, std::string* host, uint16_t* port) {
  std::string h, p;
  if (!s.empty() && s[0] == '[') {
    size_t close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') return false;
    h = s.substr(1, close - 1);
    p = s.substr(close + 2);
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string::npos) return false;
    h = s.substr(0, colon);
    p = s.substr(colon + 1);
  }
  if (h.empty() || p.empty() || p.size() > 5) return false;
  unsigned long v = 0;
  for (char c : p) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned long>(c - '0');
  }
  if (v == 0 || v > 65535) return false;
  *host = h;
  *port = static_cast<uint16_t>(v);
  return true;
}

bool exe_matches(const std::string& pattern, const std::string& exe) {
  if (fnmatch(pattern.c_str(), exe.c_str(), 0) == 0) return true;
  if (pattern.find('/') == std::string::npos) {
    size_t slash = exe.rfind('/');
    std::string base = slash == std::string::npos ? exe : exe.substr(slash + 1);
    return fnmatch(pattern.c_str(), base.c_str(), 0) == 0;
  }
  return false;
}

// The metrics address and the log level, checked for the file and again for the result of
// merging the command line and environment into it; `metrics`/`level` name them in errors.
bool check_metrics_and_level(const Config& c, const char* metrics, const char* level, std::string* error) {
  if (!c.metrics.empty()) {
    std::string h;
    uint16_t p;
    if (!parse_host_port(c.metrics, &h, &p)) {
      *error = std::string(metrics) + " must be HOST:PORT, got '" + c.metrics + "'";
      return false;
    }
  }
  if (!valid_log_level(c.log_level)) {
    *error = std::string(level) + " must be one of trace, debug, info, warn, error, critical, off";
    return false;
  }
  return true;
}

bool config_parse(const std::string& text, Config* out, std::string* error) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    *error = std::string("not valid JSON: ") + e.what();
    return false;
  }
  if (!j.is_object()) {
    *error = "the top level must be an object";
    return false;
  }
  Config c;
  auto want_string = [&](const char* key, std::string* dst) {
    if (!j.contains(key)) return true;
    if (!j[key].is_string()) {
      *error = std::string("'") + key + "' must be a string";
      return false;
    }
    *dst = j[key].get<std::string>();
    return true;
  };
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (!k.empty() && k[0] == '_') continue;
    bool known = false;
    for (const auto& f : kFields) known = known || f == k;
    if (!known) {
      *error = "unknown field '" + k + "'; did you mean '" + closest_of(k, kFields) + "'?";
      return false;
    }
  }
  if (!want_string("socket", &c.socket) || !want_string("metrics", &c.metrics) ||
      !want_string("shm_dir", &c.shm_dir) || !want_string("log_level", &c.log_level))
    return false;
  if (!check_metrics_and_level(c, "'metrics'", "'log_level'", error)) return false;
  if (j.contains("scan_interval_ms")) {
    const auto& v = j["scan_interval_ms"];
    if (!v.is_number_unsigned() || v.get<uint64_t>() < 10 || v.get<uint64_t>() > 3600000) {
      *error = "'scan_interval_ms' must be an integer 10..3600000";
      return false;
    }
    c.scan_interval_ms = v.get<uint32_t>();
  }
  if (j.contains("defaults")) {
    const auto& d = j["defaults"];
    if (!d.is_array()) {
      *error = "'defaults' must be an array of {\"exe\": pattern, \"knobs\": {...}}";
      return false;
    }
    for (size_t i = 0; i < d.size(); i++) {
      const auto& r = d[i];
      const std::string where = "defaults[" + std::to_string(i) + "]";
      if (!r.is_object() || !r.contains("exe") || !r["exe"].is_string() || !r.contains("knobs")) {
        *error = where + " must be {\"exe\": \"pattern\", \"knobs\": {...}}";
        return false;
      }
      for (auto it = r.begin(); it != r.end(); ++it) {
        if (it.key() != "exe" && it.key() != "knobs" && (it.key().empty() || it.key()[0] != '_')) {
          *error = where + ": unknown field '" + it.key() + "'";
          return false;
        }
      }
      DefaultRule rule;
      rule.exe = r["exe"].get<std::string>();
      KnobError ke;
      if (!knobs_validate_object(r["knobs"], true, &rule.knobs, &ke)) {
        *error = where + ": " + ke.message;
        return false;
      }
      c.defaults.push_back(std::move(rule));
    }
  }
  if (j.contains("rules") && !config_parse_site_rules(j["rules"], &c.rules, error)) return false;
  *out = std::move(c);
  return true;
}

bool config_load(const std::string& path, Config* out, std::string* error) {
  std::ifstream f(path);
  if (!f) {
    *error = "cannot read " + path;
    return false;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  if (!config_parse(ss.str(), out, error)) {
    *error = path + ": " + *error;
    return false;
  }
  return true;
}

bool config_resolve(const Overrides& ov, Config* out, std::string* error) {
  Config c;
  if (ov.config_path && !config_load(*ov.config_path, &c, error)) return false;
  if (const char* s = getenv(hakmem::proto::kSocketEnv); s && *s) c.socket = s;
  if (const char* s = getenv(hakmem::proto::kShmDirEnv); s && *s) c.shm_dir = s;
  if (ov.socket) c.socket = *ov.socket;
  if (ov.metrics) c.metrics = *ov.metrics;
  if (ov.shm_dir) c.shm_dir = *ov.shm_dir;
  if (ov.scan_interval_ms) c.scan_interval_ms = *ov.scan_interval_ms;
  if (ov.log_level) c.log_level = *ov.log_level;
  if (c.socket.empty()) c.socket = hakmem::proto::default_socket_path();
  if (c.shm_dir.empty()) c.shm_dir = hakmem::proto::kDefaultShmDir;
  if (!check_metrics_and_level(c, "metrics address", "log level", error)) return false;
  *out = std::move(c);
  return true;
}

}  // namespace hakmemd
