// Renders the daemon's results (proto/PROTOCOL.md shapes) as text for people: the ps list,
// per-tier stats, watch frames with rates, knob values, set changes and the knob table.
// Input is untrusted JSON: a missing or mistyped field shows as 0 or "-", never a crash.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace hakctl {

using json = nlohmann::ordered_json;

std::string render_ps(const json& result);
// `tier` empty: every tier plus a total row; otherwise only that tier.
std::string render_stats(const json& result, const std::string& tier);
// One --watch frame: figures of `now` with per-second rates against `prev` taken
// `dt_s` seconds earlier (prev null or dt_s <= 0: rates show "-").
std::string render_watch(const json& now, const json& prev, double dt_s, const std::string& tier);
std::string render_get(const json& result);
// `waited`: the request carried wait_ms, so each process says whether it applied the change.
std::string render_set(const json& result, long wait_ms);

// The knob table from proto/knobs.def (no daemon involved).
std::string render_knobs();
std::string render_knobs_markdown();
json knobs_json();

// --json --tier T: the stats result with every other tier (and, unless T is tiny, the
// tiny per-class list) removed.
json filter_tier(json result, const std::string& tier);
// A knob value from a reply (number, string or bool) in the knob table's syntax ("1G").
std::string knob_value_text(const std::string& knob, const json& value);

}  // namespace hakctl
