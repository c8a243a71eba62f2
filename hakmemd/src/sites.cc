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

// The sampled call-site addresses alone, sorted: what the followed config rules need to see
// whether anything new was sampled (no symbolization, no /proc reads).
bool read_site_addrs(ProcessEntry& e, std::vector<uint64_t>* out) {
  if (e.faulted) return false;
  out->clear();
  {
    BusGuard g(e.map.seg(), e.map.map_len());
    for (const proto::SiteEntry& se : e.map.seg()->sites)
      if (const uint64_t a = se.addr.load(std::memory_order_relaxed); a != 0) out->push_back(a);
    if (g.faulted()) e.faulted = true;
  }
  e.map.drop_pages();
  std::sort(out->begin(), out->end());
  return !e.faulted;
}

// The empty slots of a rule block, and the id a new rule gets (one above the largest in use).
uint32_t free_slots_of(const RuleBlockCopy& rb, std::vector<size_t>* free_slots) {
  uint32_t id = 1;
  free_slots->clear();
  for (size_t i = 0; i < proto::kRuleSlots; i++) {
    if (rb.check[i] == proto::RuleCheck::Empty) free_slots->push_back(i);
    else id = std::max(id, rb.rules[i].id + 1);
  }
  return id;
}

proto::RuleValue rule_value(const RuleSpec& spec, uint32_t id, uint64_t site) {
  proto::RuleValue v;
  v.id = id;
  v.site = site;
  v.min_size = spec.min_size;
  v.max_size = spec.max_size;
  v.tier = spec.tier;
  v.cap = spec.cap;
  v.prewarm = spec.prewarm;
  return v;
}

// Writes values[i] into slot slots[i] (seq protocol), then bumps the rule generation once;
// false when the segment faulted.
bool write_slots(ProcessEntry& e, const std::vector<size_t>& slots, const std::vector<proto::RuleValue>& values,
                 uint64_t* gen) {
  if (e.faulted) return false;
  {
    BusGuard g(e.map.seg(), e.map.map_len());
    proto::RuleBlock& b = e.map.seg()->rules;
    for (size_t i = 0; i < values.size(); i++) proto::rule_write(b.rules[slots[i]], &values[i]);
    *gen = b.generation.fetch_add(1, std::memory_order_release) + 1;
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

  std::vector<size_t> free_slots;
  const uint32_t id = free_slots_of(rb, &free_slots);
  if (free_slots.size() < addrs.size())
    fail(proto::err::kRuleTableFull, "process " + std::to_string(e.pid) + " has " + std::to_string(free_slots.size()) +
                                         " free rule slot(s) of " + std::to_string(proto::kRuleSlots) + ", the rule needs " +
                                         std::to_string(addrs.size()) + "; delete a rule first");
  std::vector<proto::RuleValue> values;
  for (uint64_t a : addrs) {
    const proto::RuleValue v = rule_value(spec, id, a);
    if (proto::RuleCheck c = proto::rule_check(v); c != proto::RuleCheck::Ok)
      fail(proto::err::kInvalidRule, proto::rule_check_text(c));
    values.push_back(v);
  }
  uint64_t gen = 0;
  if (!write_slots(e, free_slots, values, &gen))
    fail(proto::err::kNoSuchProcess, "process " + std::to_string(e.pid) + " vanished");
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

// --- Config rules that name a function, followed per process (FollowedRule in registry.h) ---
//
// Such a rule resolves to the function's sampled call sites, and a process that just
// registered has sampled none. So the rule stays with the process: each scan reads the site
// addresses (one shared-memory pass, nothing else) and, only when the table holds an address
// not seen before, reads /proc/PID/maps and looks the function up to install the new call
// sites inside it under the rule's id. Sites that find no free slot wait and are placed as
// soon as one frees up. Deleting the rule (rules_del) ends the following.

// /proc/PID/maps, read at most once per pass and only when needed.
class LazyMaps {
 public:
  explicit LazyMaps(pid_t pid) : pid_(pid) {}
  const std::vector<Mapping>* get() {
    if (!tried_) {
      tried_ = true;
      std::string err;
      ok_ = read_maps(pid_, &maps_, &err);
    }
    return ok_ ? &maps_ : nullptr;
  }

 private:
  pid_t pid_;
  bool tried_ = false, ok_ = false;
  std::vector<Mapping> maps_;
};

bool same_action(const proto::RuleValue& v, const RuleSpec& spec) {
  return v.min_size == spec.min_size && v.max_size == spec.max_size && v.tier == spec.tier && v.cap == spec.cap &&
         v.prewarm == spec.prewarm;
}

bool contains_addr(const std::vector<uint64_t>& v, uint64_t a) { return std::find(v.begin(), v.end(), a) != v.end(); }

// True while f's rule id still holds one of its call sites with its action: rules_del may
// have removed it, and the id may since belong to another rule.
bool follow_alive(const FollowedRule& f, const RuleSpec& spec, const RuleBlockCopy& rb) {
  for (size_t i = 0; i < proto::kRuleSlots; i++)
    if (rb.check[i] == proto::RuleCheck::Ok && rb.rules[i].id == f.id && contains_addr(f.installed, rb.rules[i].site) &&
        same_action(rb.rules[i], spec))
      return true;
  return false;
}

std::string sites_text(LazyMaps& maps, const std::vector<uint64_t>& addrs) {
  std::string t;
  for (uint64_t a : addrs) {
    Symbolized s = maps.get() ? symbolizer().symbolize(*maps.get(), a) : Symbolized{};
    s.addr = a;
    t += (t.empty() ? "" : ", ") + s.text();
  }
  return t;
}

// Writes f's waiting call sites into free slots (as many as there are); `rb` is kept in step
// with what was written. `late`: the process registered earlier (the rule was pending).
void follow_place(ProcessEntry& e, FollowedRule& f, const RuleSpec& spec, RuleBlockCopy& rb, LazyMaps& maps,
                  bool late) {
  if (f.waiting.empty()) return;
  std::vector<size_t> free_slots;
  const uint32_t next_id = free_slots_of(rb, &free_slots);
  const uint32_t id = f.id ? f.id : next_id;
  const size_t n = std::min(free_slots.size(), f.waiting.size());
  if (n < f.waiting.size() && !f.full_logged) {
    spdlog::warn("config rule '{}' for '{}': process {} ({}) has no free rule slot (of {}) for {} call site(s) of {}; "
                 "they are installed when a rule is deleted (hakctl rules del)",
                 f.rule, f.exe, e.pid, e.exe, proto::kRuleSlots, f.waiting.size() - n, f.function);
    f.full_logged = true;
  }
  if (n == 0) return;
  std::vector<proto::RuleValue> values;
  for (size_t i = 0; i < n; i++) {
    const proto::RuleValue v = rule_value(spec, id, f.waiting[i]);
    if (proto::rule_check(v) != proto::RuleCheck::Ok) return;  // validated at load: cannot happen
    values.push_back(v);
  }
  uint64_t gen = 0;
  if (!write_slots(e, free_slots, values, &gen)) return;
  for (size_t i = 0; i < n; i++) {
    rb.check[free_slots[i]] = proto::RuleCheck::Ok;
    rb.rules[free_slots[i]] = values[i];
  }
  const std::vector<uint64_t> placed(f.waiting.begin(), f.waiting.begin() + static_cast<ptrdiff_t>(n));
  f.waiting.erase(f.waiting.begin(), f.waiting.begin() + static_cast<ptrdiff_t>(n));
  if (f.waiting.empty()) f.full_logged = false;
  const bool first = f.installed.empty();
  f.id = id;
  f.installed.insert(f.installed.end(), placed.begin(), placed.end());
  std::sort(f.installed.begin(), f.installed.end());
  f.reason.clear();
  if (first)
    spdlog::info("{}config rule '{}' for '{}' installed in process {} ({}): rule {} at {}", late ? "pending " : "",
                 f.rule, f.exe, e.pid, e.exe, id, sites_text(maps, placed));
  else
    spdlog::info("config rule '{}' for '{}': rule {} in process {} ({}) gained call site(s) {}", f.rule, f.exe, id,
                 e.pid, e.exe, sites_text(maps, placed));
}

// One pass over e's followed rules. `force` matches them against the site table even when
// it did not change (at registration).
void follow_update(ProcessEntry& e, bool force) {
  if (e.followed_rules.empty() || e.faulted) return;
  std::vector<uint64_t> sampled;
  if (!read_site_addrs(e, &sampled)) return;
  const bool fresh = force || sampled != e.followed_sites_seen;
  const bool waiting = std::any_of(e.followed_rules.begin(), e.followed_rules.end(),
                                   [](const FollowedRule& f) { return !f.waiting.empty(); });
  if (!fresh && !waiting) return;  // the common case: nothing new sampled, nothing to place
  RuleBlockCopy rb;
  if (!read_tables(e, nullptr, &rb, nullptr)) return;
  LazyMaps maps(e.pid);
  if (fresh && !maps.get()) return;  // the process is going away; the scan drops it
  for (auto it = e.followed_rules.begin(); it != e.followed_rules.end();) {
    FollowedRule& f = *it;
    RuleSpec spec;
    std::string err;
    if (!rule_parse(f.rule, &spec, &err)) {  // validated at config load: cannot happen
      it = e.followed_rules.erase(it);
      continue;
    }
    if (f.id != 0 && !follow_alive(f, spec, rb)) {
      spdlog::info("config rule '{}' for '{}': rule {} was deleted from process {} ({}); new call sites of {} are not "
                   "installed any more",
                   f.rule, f.exe, f.id, e.pid, e.exe, f.function);
      it = e.followed_rules.erase(it);
      continue;
    }
    if (fresh) {
      std::vector<uint64_t> found;
      if (!symbolizer().function_sites(*maps.get(), f.function, sampled, &found, &err)) {
        if (f.installed.empty()) f.reason = err;
      } else {
        for (uint64_t a : found)
          if (!contains_addr(f.installed, a) && !contains_addr(f.waiting, a)) f.waiting.push_back(a);
        if (f.installed.empty() && f.waiting.empty()) f.reason = "no call site inside " + f.function + " sampled yet";
      }
    }
    follow_place(e, f, spec, rb, maps, !force);
    ++it;
  }
  if (e.followed_rules.empty()) e.followed_sites_seen = {};
  else if (fresh) e.followed_sites_seen = std::move(sampled);
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
        // A config rule naming a function shows as written: it covers each call site of it.
        const FollowedRule* fr = nullptr;
        for (const FollowedRule& f : e->followed_rules)
          if (f.id == v.id && contains_addr(f.installed, v.site)) fr = &f;
        ojson r = ojson::object();
        r["rule_id"] = v.id;
        r["rule"] = rule_text(fr ? fr->function : s.spec(), v);
        r["min_size"] = v.min_size;
        r["max_size"] = v.max_size;
        r["tier"] = tier_name(v.tier);
        r["cap"] = v.cap;
        r["prewarm"] = v.prewarm < 0 ? "-" : v.prewarm ? "on" : "off";
        if (fr) {
          r["config"] = fr->exe;
          r["follows"] = fr->function;
        }
        r["sites"] = ojson::array();
        it = by_id.emplace(v.id, std::move(r)).first;
      }
      it->second["sites"].push_back({{"addr", hex(v.site)}, {"site", s.text()}});
    }
    ojson rules = ojson::array();
    for (auto& [id, r] : by_id) rules.push_back(std::move(r));
    // Config rules with call sites not (yet) in any slot: shown, not hidden.
    ojson pending = ojson::array();
    for (const FollowedRule& f : e->followed_rules) {
      if (!f.installed.empty() && f.waiting.empty()) continue;
      ojson r = ojson::object();
      r["rule"] = f.rule;
      r["config"] = f.exe;
      r["rule_id"] = f.id;
      r["reason"] = f.waiting.empty() ? f.reason
                                      : "no free rule slot (" + std::to_string(proto::kRuleSlots) +
                                            " per process): delete a rule to make room";
      r["sites"] = ojson::array();
      for (uint64_t a : f.waiting) {
        Symbolized s = have_maps ? symbolizer().symbolize(maps, a) : Symbolized{};
        s.addr = a;
        r["sites"].push_back({{"addr", hex(a)}, {"site", s.text()}});
      }
      pending.push_back(std::move(r));
    }
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
    p["pending_rules"] = std::move(pending);
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
  const size_t followed_before = e.followed_rules.size();
  for (const ConfigRule& cr : rules) {
    if (!exe_matches(cr.exe, e.exe)) continue;
    RuleSpec spec;
    std::string err;
    if (!rule_parse(cr.rule, &spec, &err)) {
      spdlog::error("config rule '{}' for '{}': {}", cr.rule, cr.exe, err);
      continue;
    }
    if (site_names_function(spec.site)) {
      // Its call sites are known only once sampled: followed for the life of the process.
      FollowedRule f;
      f.exe = cr.exe;
      f.rule = cr.rule;
      f.function = spec.site;
      f.reason = "no call site inside " + spec.site + " sampled yet";
      e.followed_rules.push_back(std::move(f));
      continue;
    }
    try {
      install_rule(e, spec, "config rule for '" + cr.exe + "'");
    } catch (const Fail& f) {
      spdlog::warn("config rule '{}' not installed in process {} ({}): {}", cr.rule, e.pid, e.exe, f.message);
    }
  }
  if (e.followed_rules.size() == followed_before) return;
  follow_update(e, true);
  for (size_t i = followed_before; i < e.followed_rules.size(); i++) {
    const FollowedRule& f = e.followed_rules[i];
    if (f.installed.empty())
      spdlog::info("config rule '{}' for '{}' pending in process {} ({}): {}; tried again whenever the process "
                   "samples new call sites (site.rules=1)",
                   f.rule, f.exe, e.pid, e.exe, f.reason);
  }
}

void sites_follow(Registry& reg) {
  for (ProcessEntry* e : reg.list()) follow_update(*e, false);
}

void sites_config_reloaded(Registry& reg, const std::vector<ConfigRule>& rules) {
  for (ProcessEntry* e : reg.list()) {
    auto& fr = e->followed_rules;
    for (auto it = fr.begin(); it != fr.end();) {
      const bool kept = std::any_of(rules.begin(), rules.end(),
                                    [&](const ConfigRule& cr) { return cr.exe == it->exe && cr.rule == it->rule; });
      if (kept) {
        ++it;
        continue;
      }
      spdlog::info("config rule '{}' for '{}' is no longer in the configuration: process {} ({}) stops following "
                   "{}{}",
                   it->rule, it->exe, e->pid, e->exe, it->function,
                   it->id ? "; rule " + std::to_string(it->id) + " stays installed" : std::string());
      it = fr.erase(it);
    }
    if (fr.empty()) e->followed_sites_seen = {};
  }
}

}  // namespace hakmemd
