// Knob validation as the daemon does it for every write (socket `set` and config defaults):
// JSON value -> checked 64-bit value, with the error code and message the protocol promises.
// Pure functions over proto's knob table; nothing here touches a segment.
#pragma once

#include <stdint.h>

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "hakmem/proto/knobs.h"

namespace hakmemd {

// A validated knob write.
struct KnobValue {
  const hakmem::proto::KnobInfo* info;
  uint64_t value;
};

// A refusal: protocol error code (proto::err::*) and a one-line message.
struct KnobError {
  std::string code;
  std::string message;
};

// Levenshtein distance; small strings only (knob and field names).
size_t edit_distance(std::string_view a, std::string_view b);
// The known knob name closest to `name` (ties: first in table order).
const char* closest_knob(std::string_view name);
// Closest of `candidates` to `name` (for config field names).
std::string closest_of(std::string_view name, const std::vector<std::string>& candidates);

// "tiny.cap must be 0..1024" with MIN/MAX in the knob's own syntax.
std::string knob_range_message(const hakmem::proto::KnobInfo& k);
// Value in the knob's syntax ("64", "1G", "on").
std::string knob_value_text(const hakmem::proto::KnobInfo& k, uint64_t v);

// Checks one name/value pair. Accepts JSON unsigned integers, strings in the knob's syntax
// ("512M", "2s", "on") and, for bool knobs, true/false. `live_only` refuses restart-only
// knobs (every runtime write does; nothing in the daemon writes restart knobs).
bool knob_validate(const std::string& name, const nlohmann::json& value, bool live_only, KnobValue* out,
                   KnobError* err);

// Validates every entry of a {"name": value, ...} object; all or nothing.
bool knobs_validate_object(const nlohmann::json& obj, bool live_only, std::vector<KnobValue>* out,
                           KnobError* err);

}  // namespace hakmemd
