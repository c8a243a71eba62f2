#include "sites.h"

#include <string.h>

#include <algorithm>
#include <map>

#include <spdlog/spdlog.h>

#include "config.h"
#include "hakmem/proto/protocol.h"
#include "knob_ops.h"
#include "symbolize.h"

namespace hakmemd {

namespace proto = hakmem::proto;
using ojson = nlohmann::ordered_json;

namespace {

constexpr uint64_t kDefaultTop = 20;

struct Fail {
  std::string code, message;
};
[[noreturn]] void fail(const char* code, std::string message) { throw Fail{code, std::move(message)}; }

Symbolizer& symbolizer() {
  static Symbolizer s;
  return s;
}

std::string hex(uint64_t v) {
  char b[24];
  snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

std::string size_text(uint64_t v) {
  static const char* const units[] = {"G", "M", "K"};
  static const uint64_t mult[] = {1ull << 30, 1ull << 20, 1ull << 10};
  for (int i = 0; i < 3; i++)
    if (v && v % mult[i] == 0) return std::to_string(v / mult[i]) + units[i];
  return std::to_string(v);
}

const char* tier_name(int32_t t) {
  if (t < 0 || t > proto::kRuleTierMax) return "-";
  return proto::kRuleTierNames[t];
}

pid_t field_pid(const ojson& req, bool required) {
  auto it = req.find("pid");
  if (it == req.end() || it->is_null()) {
    if (required) fail(proto::err::kBadRequest, "this command needs 'pid'");
    return 0;
  }
  if (!it->is_number_unsigned() || it->get<uint64_t>() == 0 || it->get<uint64_t>() > INT32_MAX)
    fail(proto::err::kBadRequest, "field 'pid' must be a positive integer");
  return static_cast<pid_t>(it->get<uint64_t>());
}

std::vector<ProcessEntry*> targets(Registry& reg, const ojson& req, uid_t uid, bool pid_required) {
  const pid_t pid = field_pid(req, pid_required);
  std::vector<ProcessEntry*> out;
  if (pid == 0) {
    for (ProcessEntry* e : reg.list())
      if ((uid == 0 || uid == e->uid) && reg.still_alive(*e)) out.push_back(e);
    return out;
  }
  ProcessEntry* e = reg.find(pid);
  if (!e) fail(proto::err::kNoSuchProcess, "no process running hakmem with pid " + std::to_string(pid));
  if (uid != 0 && uid != e->uid)
    fail(proto::err::kPermissionDenied, "pid " + std::to_string(pid) + " belongs to another user");
  if (!reg.still_alive(*e)) fail(proto::err::kNoSuchProcess, "process " + std::to_string(pid) + " has exited");
  out.push_back(e);
  return out;
}

struct SiteRow {
  uint64_t addr, samples, bytes, count;
  uint64_t hist[proto::kSiteHistBuckets];
  uint32_t tier;
};

struct RuleBlockCopy {
  uint64_t generation = 0, applied = 0, dropped = 0, hits = 0;
  uint32_t active = 0, rejected = 0;
  proto::RuleValue rules[proto::kRuleSlots];
  proto::RuleCheck check[proto::kRuleSlots];
};

// Reads the site table and the rule block under the SIGBUS guard.
bool read_tables(ProcessEntry& e, std::vector<SiteRow>* sites, RuleBlockCopy* rb, uint64_t* site_knob) {
  if (e.faulted) return false;
  {
    BusGuard g(e.map.seg(), e.map.map_len());
    proto::Segment* s = e.map.seg();
    if (sites) {
      sites->clear();
      for (const proto::SiteEntry& se : s->sites) {
        const uint64_t a = se.addr.load(std::memory_order_relaxed);
        if (a == 0) continue;
        SiteRow r{};
        r.addr = a;
        r.samples = se.samples.load(std::memory_order_relaxed);
        r.bytes = se.bytes.load(std::memory_order_relaxed);
        for (size_t b = 0; b < proto::kSiteHistBuckets; b++) {
          r.hist[b] = se.hist[b].load(std::memory_order_relaxed);
          r.count += r.hist[b];
        }
        r.tier = se.last_tier.load(std::memory_order_relaxed);
        sites->push_back(r);
      }
    }
    if (rb) {
      proto::RuleBlock& b = s->rules;
      rb->generation = b.generation.load(std::memory_order_acquire);
      rb->applied = b.applied_generation.load(std::memory_order_relaxed);
      rb->dropped = b.sites_dropped.load(std::memory_order_relaxed);
      rb->hits = b.rule_hits.load(std::memory_order_relaxed);
      rb->active = b.rules_active.load(std::memory_order_relaxed);
      rb->rejected = b.rules_rejected.load(std::memory_order_relaxed);
      for (size_t i = 0; i < proto::kRuleSlots; i++) rb->check[i] = proto::rule_read(b.rules[i], &rb->rules[i]);
    }
    if (site_knob)
      *site_knob = s->knobs.value[static_cast<size_t>(proto::Knob::SiteRules)].load(std::memory_order_relaxed);
    if (g.faulted()) e.faulted = true;
  }
  e.map.drop_pages();
  return !e.faulted;
}

ojson site_json(const SiteRow& r, const Symbolized& sym) {
  ojson o = ojson::object();
  o["addr"] = hex(r.addr);
  o["site"] = sym.text();
  o["spec"] = sym.spec();
  o["function"] = sym.function;
  o["module"] = sym.module;
  o["samples"] = r.samples;
  o["bytes"] = r.bytes;
  o["count"] = r.count;
  o["tier"] = r.tier < proto::kTierCount ? proto::kTierNames[r.tier] : "-";
  ojson h = ojson::array();
  for (uint64_t v : r.hist) h.push_back(v);
  o["hist"] = std::move(h);
  return o;
}

ojson cmd_sites(Registry& reg, const ojson& req, uid_t uid) {
  uint64_t top = kDefaultTop;
  if (auto it = req.find("top"); it != req.end() && !it->is_null()) {
    if (!it->is_number_unsigned() || it->get<uint64_t>() == 0 || it->get<uint64_t>() > proto::kSiteSlots)
      fail(proto::err::kBadRequest, "field 'top' must be an integer 1.." + std::to_string(proto::kSiteSlots));
    top = it->get<uint64_t>();
  }
  const bool one = field_pid(req, false) != 0;
  ojson list = ojson::array();
  for (ProcessEntry* e : targets(reg, req, uid, false)) {
    std::vector<SiteRow> rows;
    RuleBlockCopy rb;
    uint64_t knob = 0;
    if (!read_tables(*e, &rows, &rb, &knob)) {
      if (one) fail(proto::err::kNoSuchProcess, "process " + std::to_string(e->pid) + " vanished");
      continue;
    }
    std::vector<Mapping> maps;
    std::string err;
    const bool have_maps = read_maps(e->pid, &maps, &err);
    if (!have_maps) spdlog::warn("sites: process {}: {}; addresses left unsymbolized", e->pid, err);
    std::map<uint64_t, Symbolized> syms;
    auto sym_of = [&](uint64_t a) -> const Symbolized& {
      auto it = syms.find(a);
      if (it != syms.end()) return it->second;
      Symbolized s = have_maps ? symbolizer().symbolize(maps, a) : Symbolized{};
      s.addr = a;
      return syms.emplace(a, std::move(s)).first->second;
    };
    auto top_by = [&](auto key) {
      std::vector<const SiteRow*> v;
      for (const SiteRow& r : rows) v.push_back(&r);
      std::sort(v.begin(), v.end(), [&](const SiteRow* a, const SiteRow* b) {
        return key(*a) != key(*b) ? key(*a) > key(*b) : a->addr < b->addr;
      });
      if (v.size() > top) v.resize(top);
      ojson out = ojson::array();
      for (const SiteRow* r : v) out.push_back(site_json(*r, sym_of(r->addr)));
      return out;
    };
    ojson p = ojson::object();
    p["pid"] = static_cast<int64_t>(e->pid);
    p["exe"] = e->exe;
    p["site_rules"] = knob != 0;
    p["sites_used"] = rows.size();
    p["sites_capacity"] = proto::kSiteSlots;
    p["sites_dropped"] = rb.dropped;
    p["sample_mean_bytes"] = 512 * 1024;
    p["by_bytes"] = top_by([](const SiteRow& r) { return r.bytes; });
    p["by_count"] = top_by([](const SiteRow& r) { return r.count; });
    list.push_back(std::move(p));
  }
  return {{"processes", std::move(list)}};
}

// Resolves and installs a parsed rule; returns its id and the sites it matched.
ojson install_rule(ProcessEntry& e, const RuleSpec& spec, const std::string& who) {
  std::vector<SiteRow> rows;
  RuleBlockCopy rb;
  uint64_t knob = 0;
  if (!read_tables(e, &rows, &rb, &knob))
    fail(proto::err::kNoSuchProcess, "process " + std::to_string(e.pid) + " vanished");
  std::vector<Mapping> maps;
  std::string err;
  if (!read_maps(e.pid, &maps, &err)) fail(proto::err::kNoSuchProcess, err);
  std::vector<uint64_t> sampled, addrs;
  for (const SiteRow& r : rows) sampled.push_back(r.addr);
  if (!symbolizer().resolve(maps, spec.site, sampled, &addrs, &err)) fail(proto::err::kUnknownSymbol, err);

  uint32_t id = 1;
  std::vector<size_t> free_slots;
  for (size_t i = 0; i < proto::kRuleSlots; i++) {
    if (rb.check[i] == proto::RuleCheck::Empty) free_slots.push_back(i);
    else id = std::max(id, rb.rules[i].id + 1);
  }
  if (free_slots.size() < addrs.size())
    fail(proto::err::kRuleTableFull, "process " + std::to_string(e.pid) + " has " + std::to_string(free_slots.size()) +
                                         " free rule slot(s) of " + std::to_string(proto::kRuleSlots) + ", the rule needs " +
                                         std::to_string(addrs.size()) + "; delete a rule first");
  std::vector<proto::RuleValue> values;
  for (uint64_t a : addrs) {
    proto::RuleValue v;
    v.id = id;
    v.site = a;
    v.min_size = spec.min_size;
    v.max_size = spec.max_size;
    v.tier = spec.tier;
    v.cap = spec.cap;
    v.prewarm = spec.prewarm;
    if (proto::RuleCheck c = proto::rule_check(v); c != proto::RuleCheck::Ok)
      fail(proto::err::kInvalidRule, proto::rule_check_text(c));
    values.push_back(v);
  }
  uint64_t gen = 0;
  {
    BusGuard g(e.map.seg(), e.map.map_len());
    proto::RuleBlock& b = e.map.seg()->rules;
    for (size_t i = 0; i < values.size(); i++) proto::rule_write(b.rules[free_slots[i]], &values[i]);
    gen = b.generation.fetch_add(1, std::memory_order_release) + 1;
    if (g.faulted()) e.faulted = true;
  }
  e.map.drop_pages();
  if (e.faulted) fail(proto::err::kNoSuchProcess, "process " + std::to_string(e.pid) + " vanished");
  ojson sites = ojson::array();
  for (uint64_t a : addrs) {
    const Symbolized s = symbolizer().symbolize(maps, a);
    sites.push_back({{"addr", hex(a)}, {"site", s.text()}});
    spdlog::info("rule {} added by {}: process {} ({}) {}", id, who, e.pid, e.exe, rule_text(s.spec(), values[0]));
  }
  ojson r = ojson::object();
  r["pid"] = static_cast<int64_t>(e.pid);
  r["rule_id"] = id;
  r["rule"] = rule_text(spec.site, values[0]);
  r["sites"] = std::move(sites);
  r["generation"] = gen;
  r["site_rules"] = knob != 0;
  return r;
}

std::string rule_field(const ojson& req) {
  auto it = req.find("rule");
  if (it == req.end() || !it->is_string())
    fail(proto::err::kBadRequest, "field 'rule' must be a string such as \"site=build_json+0x1c tier=whale\"");
  return it->get<std::string>();
}

ojson cmd_rules_add(Registry& reg, const ojson& req, uid_t uid) {
  const std::string text = rule_field(req);
  RuleSpec spec;
  std::string err;
  if (!rule_parse(text, &spec, &err)) fail(proto::err::kInvalidRule, err);
  ProcessEntry* e = targets(reg, req, uid, true)[0];
  return install_rule(*e, spec, "uid " + std::to_string(uid));
}

ojson cmd_rules_list(Registry& reg, const ojson& req, uid_t uid) {
  const bool one = field_pid(req, false) != 0;
  ojson list = ojson::array();
  for (ProcessEntry* e : targets(reg, req, uid, false)) {
    RuleBlockCopy rb;
    uint64_t knob = 0;
    if (!read_tables(*e, nullptr, &rb, &knob)) {
      if (one) fail(proto::err::kNoSuchProcess, "process " + std::to_string(e->pid) + " vanished");
      continue;
    }
    std::vector<Mapping> maps;
    std::string err;
    const bool have_maps = read_maps(e->pid, &maps, &err);
    std::map<uint32_t, ojson> by_id;
    uint32_t malformed = 0;
    for (size_t i = 0; i < proto::kRuleSlots; i++) {
      if (rb.check[i] == proto::RuleCheck::Empty) continue;
      if (rb.check[i] != proto::RuleCheck::Ok) {
        malformed++;
        continue;
      }
      const proto::RuleValue& v = rb.rules[i];
      Symbolized s = have_maps ? symbolizer().symbolize(maps, v.site) : Symbolized{};
      s.addr = v.site;
      auto it = by_id.find(v.id);
      if (it == by_id.end()) {
        ojson r = ojson::object();
        r["rule_id"] = v.id;
        r["rule"] = rule_text(s.spec(), v);
        r["min_size"] = v.min_size;
        r["max_size"] = v.max_size;
        r["tier"] = tier_name(v.tier);
        r["cap"] = v.cap;
        r["prewarm"] = v.prewarm < 0 ? "-" : v.prewarm ? "on" : "off";
        r["sites"] = ojson::array();
        it = by_id.emplace(v.id, std::move(r)).first;
      }
      it->second["sites"].push_back({{"addr", hex(v.site)}, {"site", s.text()}});
    }
    ojson rules = ojson::array();
    for (auto& [id, r] : by_id) rules.push_back(std::move(r));
    ojson p = ojson::object();
    p["pid"] = static_cast<int64_t>(e->pid);
    p["exe"] = e->exe;
    p["site_rules"] = knob != 0;
    p["generation"] = rb.generation;
    p["applied_generation"] = rb.applied;
    p["rules_active"] = rb.active;
    p["rules_rejected"] = rb.rejected;
    p["rule_hits"] = rb.hits;
    p["malformed_slots"] = malformed;
    p["rules"] = std::move(rules);
    list.push_back(std::move(p));
  }
  return {{"processes", std::move(list)}};
}

ojson cmd_rules_del(Registry& reg, const ojson& req, uid_t uid) {
  // Not "id": that is the request's own id in every request.
  auto it = req.find("rule_id");
  if (it == req.end() || !it->is_number_unsigned() || it->get<uint64_t>() == 0 || it->get<uint64_t>() > UINT32_MAX)
    fail(proto::err::kBadRequest, "field 'rule_id' must be a positive rule id (see rules_list)");
  const uint32_t id = it->get<uint32_t>();
  ProcessEntry* e = targets(reg, req, uid, true)[0];
  RuleBlockCopy rb;
  if (!read_tables(*e, nullptr, &rb, nullptr))
    fail(proto::err::kNoSuchProcess, "process " + std::to_string(e->pid) + " vanished");
  std::vector<size_t> slots;
  for (size_t i = 0; i < proto::kRuleSlots; i++)
    if (rb.check[i] == proto::RuleCheck::Ok && rb.rules[i].id == id) slots.push_back(i);
  if (slots.empty())
    fail(proto::err::kNoSuchRule, "process " + std::to_string(e->pid) + " has no rule " + std::to_string(id));
  uint64_t gen = 0;
  {
    BusGuard g(e->map.seg(), e->map.map_len());
    proto::RuleBlock& b = e->map.seg()->rules;
    for (size_t i : slots) proto::rule_write(b.rules[i], nullptr);
    gen = b.generation.fetch_add(1, std::memory_order_release) + 1;
    if (g.faulted()) e->faulted = true;
  }
  e->map.drop_pages();
  if (e->faulted) fail(proto::err::kNoSuchProcess, "process " + std::to_string(e->pid) + " vanished");
  spdlog::info("rule {} deleted by uid {}: process {} ({})", id, uid, e->pid, e->exe);
  return {{"pid", static_cast<int64_t>(e->pid)}, {"rule_id", id}, {"slots", slots.size()}, {"generation", gen}};
}

}  // namespace

bool parse_size(const std::string& s, uint64_t* out) {
  size_t i = 0;
  uint64_t v = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    if (v > (UINT64_MAX - 9) / 10) return false;
    v = v * 10 + static_cast<uint64_t>(s[i] - '0');
    i++;
  }
  if (i == 0) return false;
  std::string unit = s.substr(i);
  for (char& c : unit) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  uint64_t mult = 1;
  if (unit.empty() || unit == "b") mult = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib") mult = 1ull << 10;
  else if (unit == "m" || unit == "mb" || unit == "mib") mult = 1ull << 20;
  else if (unit == "g" || unit == "gb" || unit == "gib") mult = 1ull << 30;
  else return false;
  if (v > UINT64_MAX / mult) return false;
  *out = v * mult;
  return true;
}

bool rule_parse(const std::string& text, RuleSpec* out, std::string* error) {
  static const std::vector<std::string> kKeys = {"site", "size", "tier", "cap", "prewarm"};
  RuleSpec r;
  std::vector<std::string> seen;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && isspace(static_cast<unsigned char>(text[i]))) i++;
    if (i >= text.size()) break;
    size_t j = i;
    while (j < text.size() && !isspace(static_cast<unsigned char>(text[j]))) j++;
    const std::string word = text.substr(i, j - i);
    i = j;
    const size_t eq = word.find('=');
    if (eq == std::string::npos || eq == 0) {
      *error = "expected KEY=VALUE, got '" + word + "' (keys: site, size, tier, cap, prewarm)";
      return false;
    }
    const std::string key = word.substr(0, eq), val = word.substr(eq + 1);
    if (std::find(kKeys.begin(), kKeys.end(), key) == kKeys.end()) {
      *error = "unknown rule key '" + key + "'; did you mean '" + closest_of(key, kKeys) + "'?";
      return false;
    }
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      *error = "'" + key + "' is given twice";
      return false;
    }
    seen.push_back(key);
    if (val.empty()) {
      *error = "no value after '" + key + "='";
      return false;
    }
    if (key == "site") {
      r.site = val;
    } else if (key == "size") {
      const size_t dash = val.find('-');
      std::string lo = dash == std::string::npos ? val : val.substr(0, dash);
      std::string hi = dash == std::string::npos ? val : val.substr(dash + 1);
      if ((!lo.empty() && !parse_size(lo, &r.min_size)) || (!hi.empty() && !parse_size(hi, &r.max_size)) ||
          (lo.empty() && hi.empty())) {
        *error = "size must be N, LO-HI, LO- or -HI with K/M/G units (e.g. size=64K-1M), got '" + val + "'";
        return false;
      }
      if (hi.empty()) r.max_size = 0;
      if (r.max_size != 0 && r.min_size > r.max_size) {
        *error = "size range " + val + " is empty: the lower bound exceeds the upper";
        return false;
      }
      if (r.max_size == 0 && !hi.empty()) {
        *error = "size upper bound must be at least 1";
        return false;
      }
    } else if (key == "tier") {
      r.tier = -2;
      for (int32_t t = 0; t <= proto::kRuleTierMax; t++)
        if (val == proto::kRuleTierNames[t]) r.tier = t;
      if (r.tier == -2) {
        *error = "unknown tier '" + val + "' (tiers: tiny, pool, bundle, whale, system)";
        return false;
      }
    } else if (key == "cap") {
      uint64_t c = 0;
      if (!parse_offset(val, &c) || c == 0 || c > proto::kRuleCapMax) {
        *error = "cap must be a number of blocks 1.." + std::to_string(proto::kRuleCapMax) + ", got '" + val + "'";
        return false;
      }
      r.cap = static_cast<uint32_t>(c);
    } else if (key == "prewarm") {
      if (val == "on" || val == "1" || val == "true") r.prewarm = 1;
      else if (val == "off" || val == "0" || val == "false") r.prewarm = 0;
      else {
        *error = "prewarm must be on or off, got '" + val + "'";
        return false;
      }
    }
  }
  if (r.site.empty()) {
    *error = "a rule needs site=SYMBOL[+0xOFF], site=MODULE+0xOFF or site=0xADDR";
    return false;
  }
  if (r.tier == -1 && r.cap == 0 && r.prewarm == -1) {
    *error = "a rule needs an action: tier=..., cap=N or prewarm=on|off";
    return false;
  }
  *out = r;
  return true;
}

std::string rule_text(const std::string& site, const proto::RuleValue& v) {
  std::string t = "site=" + site;
  if (v.min_size || v.max_size) {
    t += " size=";
    if (v.min_size == v.max_size) t += size_text(v.min_size);
    else t += (v.min_size ? size_text(v.min_size) : "") + "-" + (v.max_size ? size_text(v.max_size) : "");
  }
  if (v.tier >= 0) t += std::string(" tier=") + tier_name(v.tier);
  if (v.cap) t += " cap=" + std::to_string(v.cap);
  if (v.prewarm >= 0) t += v.prewarm ? " prewarm=on" : " prewarm=off";
  return t;
}

bool config_parse_site_rules(const nlohmann::json& j, std::vector<ConfigRule>* out, std::string* error) {
  if (!j.is_array()) {
    *error = "'rules' must be an array of {\"exe\": pattern, \"rule\": \"site=... tier=...\"}";
    return false;
  }
  for (size_t i = 0; i < j.size(); i++) {
    const auto& r = j[i];
    const std::string where = "rules[" + std::to_string(i) + "]";
    if (!r.is_object() || !r.contains("exe") || !r["exe"].is_string() || !r.contains("rule") || !r["rule"].is_string()) {
      *error = where + " must be {\"exe\": \"pattern\", \"rule\": \"site=... tier=...\"}";
      return false;
    }
    for (auto it = r.begin(); it != r.end(); ++it) {
      if (it.key() != "exe" && it.key() != "rule" && (it.key().empty() || it.key()[0] != '_')) {
        *error = where + ": unknown field '" + it.key() + "'";
        return false;
      }
    }
    ConfigRule cr{r["exe"].get<std::string>(), r["rule"].get<std::string>()};
    RuleSpec spec;
    std::string err;
    if (!rule_parse(cr.rule, &spec, &err)) {
      *error = where + ": " + err;
      return false;
    }
    out->push_back(std::move(cr));
  }
  return true;
}

bool sites_is_command(const std::string& cmd) {
  return cmd == "sites" || cmd == "rules_add" || cmd == "rules_list" || cmd == "rules_del";
}

SitesResult sites_command(Registry& reg, const std::string& cmd, const ojson& req, uid_t peer_uid) {
  SitesResult r;
  try {
    if (cmd == "sites") r.result = cmd_sites(reg, req, peer_uid);
    else if (cmd == "rules_add") r.result = cmd_rules_add(reg, req, peer_uid);
    else if (cmd == "rules_list") r.result = cmd_rules_list(reg, req, peer_uid);
    else r.result = cmd_rules_del(reg, req, peer_uid);
  } catch (const Fail& f) {
    r.ok = false;
    r.code = f.code;
    r.message = f.message;
  }
  return r;
}

void sites_apply_config(ProcessEntry& e, const std::vector<ConfigRule>& rules) {
  for (const ConfigRule& cr : rules) {
    if (!exe_matches(cr.exe, e.exe)) continue;
    RuleSpec spec;
    std::string err;
    if (!rule_parse(cr.rule, &spec, &err)) {
      spdlog::error("config rule '{}' for '{}': {}", cr.rule, cr.exe, err);
      continue;
    }
    try {
      install_rule(e, spec, "config rule for '" + cr.exe + "'");
    } catch (const Fail& f) {
      spdlog::warn("config rule '{}' not installed in process {} ({}): {}", cr.rule, e.pid, e.exe, f.message);
    }
  }
}

}  // namespace hakmemd
