#include "views.h"

#include <algorithm>
#include <map>

#include "hakmem/proto/knobs.h"
#include "hakmem/proto/segment.h"
#include "table.h"
#include "units.h"

namespace hakctl {

namespace proto = hakmem::proto;

namespace {

uint64_t u64(const json& j, const char* key) {
  if (!j.is_object()) return 0;
  auto it = j.find(key);
  if (it == j.end()) return 0;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (it->is_number_integer()) { const int64_t v = it->get<int64_t>(); return v > 0 ? static_cast<uint64_t>(v) : 0; }
  if (it->is_number_float()) { const double v = it->get<double>(); return v > 0 ? static_cast<uint64_t>(v) : 0; }
  return 0;
}

double num(const json& j, const char* key) {
  if (!j.is_object()) return 0;
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0;
}

std::string str(const json& j, const char* key) {
  if (!j.is_object()) return {};
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const json& processes(const json& result) {
  static const json kEmpty = json::array();
  if (!result.is_object()) return kEmpty;
  auto it = result.find("processes");
  return it != result.end() && it->is_array() ? *it : kEmpty;
}

const json& tier_of(const json& proc, const char* tier) {
  static const json kEmpty = json::object();
  if (!proc.is_object()) return kEmpty;
  auto t = proc.find("tiers");
  if (t == proc.end() || !t->is_object()) return kEmpty;
  auto it = t->find(tier);
  return it != t->end() && it->is_object() ? *it : kEmpty;
}

uint64_t hits_of(const json& t) {
  if (t.contains("hits")) return u64(t, "hits");
  const uint64_t a = u64(t, "allocs"), m = u64(t, "misses");
  return a > m ? a - m : 0;
}

std::string exe_of(const json& p) {
  std::string e = str(p, "exe");
  return e.empty() ? str(p, "cmdline") : e;
}

std::string process_line(const json& p) {
  std::string line = "pid " + std::to_string(u64(p, "pid")) + "  " + exe_of(p) + "  up " +
                     format_duration(num(p, "uptime_s")) + "  threads " + std::to_string(u64(p, "threads"));
  if (p.contains("rss_bytes")) line += "  rss " + format_bytes(u64(p, "rss_bytes"));
  if (p.contains("page_faults")) line += "  page faults " + format_count(u64(p, "page_faults"));
  return line + "\n";
}

std::string errors_line(const json& p) {
  auto it = p.find("errors");
  if (it == p.end() || !it->is_object()) return {};
  const uint64_t inv = u64(*it, "invalid_frees"), dbl = u64(*it, "double_frees");
  if (!inv && !dbl) return {};
  return "errors: " + format_count(inv) + " invalid frees, " + format_count(dbl) + " double frees\n";
}

std::string no_processes() { return "no processes running hakmem (that you may see)\n"; }

std::vector<const char*> tiers_for(const std::string& tier) {
  std::vector<const char*> out;
  for (const char* t : proto::kTierNames)
    if (tier.empty() || tier == t) out.push_back(t);
  return out;
}

// The knob's position in knobs.def, for ordering; unknown names sort last by name.
size_t knob_rank(const std::string& name) {
  for (size_t i = 0; i < proto::kKnobCount; i++)
    if (name == proto::kKnobs[i].name) return i;
  return proto::kKnobCount;
}

std::string fmt_knob(const proto::KnobInfo& k, uint64_t v) {
  char buf[32];
  proto::knob_format(k, v, buf, sizeof buf);
  return buf;
}

}  // namespace

std::string knob_value_text(const std::string& knob, const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_boolean()) return value.get<bool>() ? "1" : "0";
  if (value.is_number()) {
    const uint64_t v = value.is_number_unsigned() ? value.get<uint64_t>()
                       : value.is_number_integer() ? static_cast<uint64_t>(std::max<int64_t>(0, value.get<int64_t>()))
                                                   : static_cast<uint64_t>(std::max(0.0, value.get<double>()));
    if (const proto::KnobInfo* k = proto::knob_find(knob.c_str())) return fmt_knob(*k, v);
    return std::to_string(v);
  }
  return value.is_null() ? "-" : value.dump();
}

std::string render_ps(const json& result) {
  const json& procs = processes(result);
  Table t({{"PID", Align::Right},
           {"UPTIME", Align::Right},
           {"THREADS", Align::Right},
           {"LIVE", Align::Right},
           {"MAPPED", Align::Right},
           {"ALLOCS", Align::Right},
           {"ALLOCS/S", Align::Right},
           {"EXE", Align::Left}});
  for (const json& p : procs) {
    const double up = num(p, "uptime_s");
    const uint64_t allocs = u64(p, "allocs");
    t.add_row({std::to_string(u64(p, "pid")), format_duration(up), std::to_string(u64(p, "threads")),
               format_bytes(u64(p, "live_bytes")), format_bytes(u64(p, "mapped_bytes")), format_count(allocs),
               up > 0 ? format_rate(static_cast<double>(allocs) / up) : "-", exe_of(p)});
  }
  std::string out = t.render();
  if (procs.empty()) out += no_processes();
  return out;
}

std::string render_stats(const json& result, const std::string& tier) {
  const json& procs = processes(result);
  if (procs.empty()) return no_processes();
  std::string out;
  for (const json& p : procs) {
    if (!out.empty()) out += "\n";
    out += process_line(p);
    Table t({{"TIER", Align::Left},
             {"ALLOCS", Align::Right},
             {"FREES", Align::Right},
             {"HIT%", Align::Right},
             {"MISSES", Align::Right},
             {"REMOTE", Align::Right},
             {"LIVE", Align::Right},
             {"CACHED", Align::Right},
             {"MAPPED", Align::Right},
             {"CACHE%", Align::Right},
             {"MMAPS", Align::Right}});
    uint64_t sum[9] = {};
    for (const char* name : tiers_for(tier)) {
      const json& x = tier_of(p, name);
      const uint64_t v[9] = {u64(x, "allocs"),       u64(x, "frees"),        hits_of(x),
                             u64(x, "misses"),       u64(x, "remote_frees"), u64(x, "live_bytes"),
                             u64(x, "cached_bytes"), u64(x, "mapped_bytes"), u64(x, "os_maps")};
      const uint64_t ch = u64(x, "cache_hits"), cm = u64(x, "cache_misses");
      for (int i = 0; i < 9; i++) sum[i] += v[i];
      t.add_row({name, format_count(v[0]), format_count(v[1]), format_percent(v[2], v[0]), format_count(v[3]),
                 format_count(v[4]), format_bytes(v[5]), format_bytes(v[6]), format_bytes(v[7]),
                 format_percent(ch, ch + cm), format_count(v[8])});
    }
    if (tier.empty())
      t.add_row({"total", format_count(sum[0]), format_count(sum[1]), format_percent(sum[2], sum[0]),
                 format_count(sum[3]), format_count(sum[4]), format_bytes(sum[5]), format_bytes(sum[6]),
                 format_bytes(sum[7]), "", format_count(sum[8])});
    out += t.render();
    out += errors_line(p);
  }
  return out;
}

std::string render_watch(const json& now, const json& prev, double dt_s, const std::string& tier) {
  const json& procs = processes(now);
  if (procs.empty()) return no_processes();
  std::map<uint64_t, const json*> before;
  for (const json& p : processes(prev)) before[u64(p, "pid")] = &p;

  std::string out;
  for (const json& p : procs) {
    if (!out.empty()) out += "\n";
    out += process_line(p);
    // Rates only against the same process: a pid whose uptime went backwards was restarted.
    const json* q = nullptr;
    if (auto it = before.find(u64(p, "pid")); it != before.end() && dt_s > 0 &&
                                              num(*it->second, "uptime_s") <= num(p, "uptime_s"))
      q = it->second;
    Table t({{"TIER", Align::Left},
             {"ALLOCS/S", Align::Right},
             {"FREES/S", Align::Right},
             {"MISSES/S", Align::Right},
             {"REMOTE/S", Align::Right},
             {"HIT%", Align::Right},
             {"LIVE", Align::Right},
             {"CACHED", Align::Right},
             {"MAPPED", Align::Right}});
    for (const char* name : tiers_for(tier)) {
      const json& x = tier_of(p, name);
      auto rate = [&](const char* key) -> std::string {
        if (!q) return "-";
        const uint64_t a = u64(x, key), b = u64(tier_of(*q, name), key);
        if (a < b) return "-";  // counters never go backwards in one process
        return format_rate(static_cast<double>(a - b) / dt_s);
      };
      std::string hit = "-";
      if (q) {
        const json& y = tier_of(*q, name);
        const uint64_t da = u64(x, "allocs") >= u64(y, "allocs") ? u64(x, "allocs") - u64(y, "allocs") : 0;
        const uint64_t dh = hits_of(x) >= hits_of(y) ? hits_of(x) - hits_of(y) : 0;
        hit = format_percent(std::min(dh, da), da);
      }
      t.add_row({name, rate("allocs"), rate("frees"), rate("misses"), rate("remote_frees"), hit,
                 format_bytes(u64(x, "live_bytes")), format_bytes(u64(x, "cached_bytes")),
                 format_bytes(u64(x, "mapped_bytes"))});
    }
    out += t.render();
    out += errors_line(p);
  }
  return out;
}

std::string render_get(const json& result) {
  const json& procs = processes(result);
  if (procs.empty()) return no_processes();
  Table t({{"PID", Align::Right},
           {"KNOB", Align::Left},
           {"VALUE", Align::Right},
           {"DEFAULT", Align::Right},
           {"SOURCE", Align::Left}});
  std::string notes;
  for (const json& p : procs) {
    const std::string pid = std::to_string(u64(p, "pid"));
    std::vector<std::pair<std::string, const json*>> knobs;
    if (auto it = p.find("knobs"); it != p.end() && it->is_object())
      for (auto k = it->begin(); k != it->end(); ++k) knobs.emplace_back(k.key(), &k.value());
    std::stable_sort(knobs.begin(), knobs.end(),
                     [](const auto& a, const auto& b) { return knob_rank(a.first) < knob_rank(b.first); });
    for (const auto& [name, v] : knobs) {
      const json& value = v->is_object() && v->contains("value") ? (*v)["value"] : *v;
      const proto::KnobInfo* k = proto::knob_find(name.c_str());
      t.add_row({pid, name, knob_value_text(name, value), k ? fmt_knob(*k, k->def) : "-",
                 v->is_object() ? str(*v, "source") : ""});
    }
    if (p.contains("generation") && p.contains("applied_generation") &&
        u64(p, "applied_generation") < u64(p, "generation"))
      notes += "pid " + pid + ": knob generation " + std::to_string(u64(p, "generation")) +
               " not applied yet (the process applied " + std::to_string(u64(p, "applied_generation")) +
               "; it picks changes up on its next allocations)\n";
  }
  return t.render() + notes;
}

std::string render_set(const json& result, long wait_ms) {
  std::string out;
  if (auto it = result.find("changes"); it != result.end() && it->is_array()) {
    for (const json& c : *it) {
      const std::string knob = str(c, "knob");
      const std::string old_v = knob_value_text(knob, c.contains("old") ? c["old"] : json());
      const std::string new_v = knob_value_text(knob, c.contains("new") ? c["new"] : json());
      out += "pid " + std::to_string(u64(c, "pid")) + " " + knob + ": " + old_v + " -> " + new_v +
             (old_v == new_v ? " (unchanged)" : "") + "\n";
    }
  }
  if (out.empty()) out = "no process changed (no processes running hakmem that you may see)\n";
  if (wait_ms > 0) {
    for (const json& p : processes(result)) {
      if (!p.contains("applied")) continue;
      const std::string pid = std::to_string(u64(p, "pid"));
      if (p["applied"].is_boolean() && p["applied"].get<bool>()) {
        char ms[32];
        snprintf(ms, sizeof ms, "%.1f", num(p, "apply_ms"));
        out += "pid " + pid + ": applied in " + ms + " ms\n";
      } else {
        out += "pid " + pid + ": not applied within " + std::to_string(wait_ms) +
               " ms; the process picks the change up on its next allocations\n";
      }
    }
  }
  return out;
}

namespace {
std::string range_text(const proto::KnobInfo& k) { return fmt_knob(k, k.min) + ".." + fmt_knob(k, k.max); }
const char* mode_text(const proto::KnobInfo& k) { return k.mode == proto::KnobMode::Live ? "live" : "restart"; }
}  // namespace

std::string render_knobs() {
  Table t({{"KNOB", Align::Left},
           {"TYPE", Align::Left},
           {"DEFAULT", Align::Right},
           {"RANGE", Align::Left},
           {"MODE", Align::Left},
           {"ENV", Align::Left},
           {"HELP", Align::Left}});
  for (const proto::KnobInfo& k : proto::kKnobs)
    t.add_row({k.name, proto::knob_type_name(k.type), fmt_knob(k, k.def), range_text(k), mode_text(k), k.env, k.help});
  return t.render();
}

std::string render_knobs_markdown() {
  std::string out =
      "| Environment variable | Knob | Type | Default | Range | Changes | Description |\n"
      "|---|---|---|---|---|---|---|\n";
  for (const proto::KnobInfo& k : proto::kKnobs)
    out += std::string("| `") + k.env + "` | `" + k.name + "` | " + proto::knob_type_name(k.type) + " | " +
           fmt_knob(k, k.def) + " | " + range_text(k) + " | " +
           (k.mode == proto::KnobMode::Live ? "live (`hakctl set`)" : "at start only") + " | " + k.help + " |\n";
  return out;
}

json knobs_json() {
  json list = json::array();
  for (const proto::KnobInfo& k : proto::kKnobs)
    list.push_back({{"name", k.name},
                    {"type", proto::knob_type_name(k.type)},
                    {"default", k.def},
                    {"min", k.min},
                    {"max", k.max},
                    {"mode", mode_text(k)},
                    {"env", k.env},
                    {"help", k.help}});
  return {{"knobs", list}};
}

json filter_tier(json result, const std::string& tier) {
  if (tier.empty() || !result.is_object() || !result.contains("processes") || !result["processes"].is_array())
    return result;
  for (json& p : result["processes"]) {
    if (!p.is_object() || !p.contains("tiers") || !p["tiers"].is_object()) continue;
    json keep = json::object();
    if (p["tiers"].contains(tier)) keep[tier] = p["tiers"][tier];
    p["tiers"] = keep;
    if (tier != "tiny") p.erase("tiny_classes");  // per-class detail of the tiny tier
  }
  return result;
}

}  // namespace hakctl
