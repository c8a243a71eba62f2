// The socket protocol between hakmemd and its clients (hakctl, scripts). PROTOCOL.md
// beside this folder is the prose; this header holds the constants both sides compile in.
// Not for libhakmem (uses std::string).
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <string>

namespace hakmem::proto {

// Bumped when a request or reply changes incompatibly. A hello with another major
// version gets error `version_mismatch` naming both versions.
inline constexpr int kProtocolVersion = 1;
// Longest request line the daemon reads; longer lines get `line_too_long` and the
// connection is closed (the rest of the line cannot be resynchronised).
inline constexpr size_t kMaxLineBytes = 64 * 1024;
inline constexpr const char* kSocketEnv = "HAKMEM_SOCKET";

namespace err {
inline constexpr const char* kBadRequest = "bad_request";          // not JSON, not an object, bad field type
inline constexpr const char* kUnknownCommand = "unknown_command";
inline constexpr const char* kLineTooLong = "line_too_long";
inline constexpr const char* kVersionMismatch = "version_mismatch";
inline constexpr const char* kNoSuchProcess = "no_such_process";  // pid not running hakmem (or vanished)
inline constexpr const char* kPermissionDenied = "permission_denied";  // another uid's process
inline constexpr const char* kUnknownKnob = "unknown_knob";      // message names the closest knob
inline constexpr const char* kInvalidValue = "invalid_value";    // not parseable for the knob's type
inline constexpr const char* kOutOfRange = "out_of_range";       // message names MIN..MAX
inline constexpr const char* kRestartOnly = "restart_only";      // knob cannot change in a live process
inline constexpr const char* kInternal = "internal";
// Site rules (sites, rules_add, rules_list, rules_del).
inline constexpr const char* kInvalidRule = "invalid_rule";      // rule text does not parse or check
inline constexpr const char* kUnknownSymbol = "unknown_symbol";  // the site names nothing in the process
inline constexpr const char* kRuleTableFull = "rule_table_full"; // no free slot in the process's rule block
inline constexpr const char* kNoSuchRule = "no_such_rule";
}  // namespace err

// Default socket: $HAKMEM_SOCKET, else /run/hakmem/hakmemd.sock for root, else
// $XDG_RUNTIME_DIR/hakmem/hakmemd.sock, else /tmp/hakmem-<uid>/hakmemd.sock.
inline std::string default_socket_path() {
  if (const char* s = getenv(kSocketEnv); s && *s) return s;
  if (geteuid() == 0) return "/run/hakmem/hakmemd.sock";
  if (const char* x = getenv("XDG_RUNTIME_DIR"); x && *x) return std::string(x) + "/hakmem/hakmemd.sock";
  return "/tmp/hakmem-" + std::to_string(geteuid()) + "/hakmemd.sock";
}

}  // namespace hakmem::proto
