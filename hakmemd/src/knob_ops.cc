#include "knob_ops.h"

#include <algorithm>

#include "hakmem/proto/protocol.h"

namespace hakmemd {

namespace proto = hakmem::proto;

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); j++) prev[j] = j;
  for (size_t i = 1; i <= a.size(); i++) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); j++) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

const char* closest_knob(std::string_view name) {
  const char* best = proto::kKnobs[0].name;
  size_t best_d = SIZE_MAX;
  for (const auto& k : proto::kKnobs) {
    size_t d = edit_distance(name, k.name);
    if (d < best_d) { best_d = d; best = k.name; }
  }
  return best;
}

std::string closest_of(std::string_view name, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& c : candidates) {
    size_t d = edit_distance(name, c);
    if (d < best_d) { best_d = d; best = c; }
  }
  return best;
}

std::string knob_value_text(const proto::KnobInfo& k, uint64_t v) {
  char buf[32];
  proto::knob_format(k, v, buf, sizeof buf);
  return buf;
}

std::string knob_range_message(const proto::KnobInfo& k) {
  return std::string(k.name) + " must be " + knob_value_text(k, k.min) + ".." + knob_value_text(k, k.max);
}

bool knob_validate(const std::string& name, const nlohmann::json& value, bool live_only, KnobValue* out,
                   KnobError* err) {
  const proto::KnobInfo* k = proto::knob_find(name.c_str());
  if (!k || name.size() != std::char_traits<char>::length(k->name)) {
    *err = {proto::err::kUnknownKnob,
            "unknown knob '" + name + "'; did you mean '" + closest_knob(name) + "'?"};
    return false;
  }
  if (live_only && k->mode == proto::KnobMode::Restart) {
    *err = {proto::err::kRestartOnly,
            std::string(k->name) + " is read at process start only; set " + k->env + " in its environment"};
    return false;
  }
  uint64_t v = 0;
  if (value.is_number_unsigned()) {
    v = value.get<uint64_t>();
  } else if (value.is_number_integer()) {  // signed storage: built in code, or negative from text
    const int64_t i = value.get<int64_t>();
    if (i < 0) {
      *err = {proto::err::kOutOfRange, knob_range_message(*k)};
      return false;
    }
    v = static_cast<uint64_t>(i);
  } else if (value.is_boolean() && k->type == proto::KnobType::Bool) {
    v = value.get<bool>() ? 1 : 0;
  } else if (value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    if (s.find('\0') != std::string::npos) {
      *err = {proto::err::kInvalidValue, std::string(k->name) + ": not a valid value"};
      return false;
    }
    proto::ParseError pe = proto::knob_parse(*k, s.c_str(), &v);
    if (pe == proto::ParseError::OutOfRange || pe == proto::ParseError::Overflow) {
      *err = {proto::err::kOutOfRange, knob_range_message(*k)};
      return false;
    }
    if (pe != proto::ParseError::Ok) {
      *err = {proto::err::kInvalidValue, std::string(k->name) + ": " + proto::parse_error_text(pe) + " '" + s +
                                             "' (expected " + proto::knob_type_name(k->type) + ")"};
      return false;
    }
  } else {
    *err = {proto::err::kInvalidValue, std::string(k->name) + ": expected a number or a string (" +
                                           proto::knob_type_name(k->type) + "), got " + value.type_name()};
    return false;
  }
  if (v < k->min || v > k->max) {
    *err = {proto::err::kOutOfRange, knob_range_message(*k)};
    return false;
  }
  *out = {k, v};
  return true;
}

bool knobs_validate_object(const nlohmann::json& obj, bool live_only, std::vector<KnobValue>* out,
                           KnobError* err) {
  out->clear();
  if (!obj.is_object() || obj.empty()) {
    *err = {proto::err::kBadRequest, "'knobs' must be a non-empty object of name: value"};
    return false;
  }
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    KnobValue kv;
    if (!knob_validate(it.key(), it.value(), live_only, &kv, err)) return false;
    out->push_back(kv);
  }
  return true;
}

}  // namespace hakmemd
