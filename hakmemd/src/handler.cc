#include "handler.h"

#include <functional>

#include <string.h>
#include <time.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "hakmem/proto/protocol.h"
#include "procfs.h"
#include "sites.h"

namespace hakmemd {

namespace proto = hakmem::proto;

namespace {

// Thrown by command code for an error reply; caught in Handler::handle.
struct RequestError {
  std::string code;
  std::string message;
};

[[noreturn]] void fail(std::string code, std::string message) {
  throw RequestError{std::move(code), std::move(message)};
}

std::string dump_line(const ojson& j) {
  // Segment strings (exe, cmdline) are untrusted bytes: never let bad UTF-8 throw.
  return j.dump(-1, ' ', false, ojson::error_handler_t::replace) + "\n";
}

uint64_t unix_ns_now() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

bool visible(const Peer& p, const ProcessEntry& e) { return p.uid == 0 || p.uid == e.uid; }

// Optional pid field: absent -> 0; otherwise a positive integer.
pid_t field_pid(const ojson& req) {
  auto it = req.find("pid");
  if (it == req.end() || it->is_null()) return 0;
  if (!it->is_number_unsigned() || it->get<uint64_t>() == 0 || it->get<uint64_t>() > INT32_MAX)
    fail(proto::err::kBadRequest, "field 'pid' must be a positive integer");
  return static_cast<pid_t>(it->get<uint64_t>());
}

bool field_bool(const ojson& req, const char* key) {
  auto it = req.find(key);
  if (it == req.end() || it->is_null()) return false;
  if (!it->is_boolean()) fail(proto::err::kBadRequest, std::string("field '") + key + "' must be true or false");
  return it->get<bool>();
}

ojson tier_json(const proto::TierSnapshot& t) {
  ojson o = ojson::object();
  for (size_t c = 0; c < proto::kThreadCounterCount; c++) o[proto::kThreadCounters[c].name] = t.thread[c];
  o["hits"] = t.hits();
  o["live_bytes"] = t.live_bytes();
  o["live_objects"] = t.live_objects();
  for (size_t c = 0; c < proto::kGlobalCounterCount; c++) o[proto::kGlobalCounters[c].name] = t.global[c];
  return o;
}

}  // namespace

Handler::Handler(Registry& reg) : reg_(reg) {}

std::string Handler::error_line(const ojson& id, const char* code, const std::string& message) {
  ojson r = ojson::object();
  r["id"] = id;
  r["ok"] = false;
  r["error"] = {{"code", code}, {"message", message}};
  return dump_line(r);
}

std::string Handler::ok_line(const ojson& id, ojson result) {
  ojson r = ojson::object();
  r["id"] = id;
  r["ok"] = true;
  r["result"] = std::move(result);
  return dump_line(r);
}

Outcome Handler::handle(std::string_view line, const Peer& peer) {
  Outcome out;
  ojson id = nullptr;
  try {
    ojson req = ojson::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (req.is_discarded()) {
      out.reply = error_line(id, proto::err::kBadRequest, "request is not valid JSON");
      return out;
    }
    if (!req.is_object()) {
      out.reply = error_line(id, proto::err::kBadRequest, "request must be a JSON object");
      return out;
    }
    if (auto it = req.find("id"); it != req.end()) id = *it;
    auto cmd_it = req.find("cmd");
    if (cmd_it == req.end() || !cmd_it->is_string()) fail(proto::err::kBadRequest, "field 'cmd' must be a string");
    const std::string& cmd = cmd_it->get_ref<const std::string&>();
    ojson result;
    if (cmd == "hello") result = cmd_hello(req, peer);
    else if (cmd == "ps") result = cmd_ps(req, peer);
    else if (cmd == "stats") result = cmd_stats(req, peer);
    else if (cmd == "get") result = cmd_get(req, peer);
    else if (cmd == "set") {
      result = cmd_set(req, peer, &out.wait);
      if (out.wait) {
        out.wait->id = id;
        return out;
      }
    } else if (cmd == "knobs") result = cmd_knobs(req, peer);
    else if (sites_is_command(cmd)) {
      SitesResult sr = sites_command(reg_, cmd, req, peer.uid);
      if (!sr.ok) fail(sr.code, sr.message);
      result = std::move(sr.result);
    } else
      fail(proto::err::kUnknownCommand, "unknown command '" + cmd +
                                            "' (known: hello, ps, stats, get, set, knobs, sites, rules_add, "
                                            "rules_list, rules_del)");
    out.reply = ok_line(id, std::move(result));
  } catch (const RequestError& e) {
    out.reply = error_line(id, e.code.c_str(), e.message);
  } catch (const std::exception& e) {
    spdlog::error("request from uid {} pid {} failed: {}", peer.uid, peer.pid, e.what());
    out.reply = error_line(id, proto::err::kInternal, std::string("internal error: ") + e.what());
  }
  return out;
}

ojson Handler::cmd_hello(const ojson& req, const Peer& peer) {
  if (auto it = req.find("version"); it != req.end() && !it->is_null()) {
    if (!it->is_number_integer()) fail(proto::err::kBadRequest, "field 'version' must be an integer");
    const int64_t v = it->get<int64_t>();
    if (v != proto::kProtocolVersion)
      fail(proto::err::kVersionMismatch,
           "client speaks protocol " + std::to_string(v) + ", hakmemd speaks " +
               std::to_string(proto::kProtocolVersion) + "; upgrade the older of the two");
  }
  if (auto it = req.find("client"); it != req.end() && it->is_string())
    spdlog::debug("hello from {} (uid {} pid {})", it->get<std::string>(), peer.uid, peer.pid);
  ojson r = ojson::object();
  r["protocol"] = proto::kProtocolVersion;
  r["daemon"] = std::string("hakmemd ") + HAKMEM_VERSION;
  r["pid"] = static_cast<int64_t>(getpid());
  r["uid"] = static_cast<uint64_t>(peer.uid);
  r["shm_dir"] = reg_.dir();
  return r;
}

std::vector<ProcessEntry*> Handler::targets(const ojson& req, const Peer& peer, bool pid_required_or_all) {
  const pid_t pid = field_pid(req);
  const bool all = field_bool(req, "all");
  std::vector<ProcessEntry*> out;
  if (pid != 0 && all) fail(proto::err::kBadRequest, "give either 'pid' or 'all', not both");
  if (pid == 0) {
    if (pid_required_or_all && !all) fail(proto::err::kBadRequest, "this command needs 'pid' or \"all\": true");
    for (ProcessEntry* e : reg_.list())
      if (visible(peer, *e) && reg_.still_alive(*e)) out.push_back(e);
    return out;
  }
  ProcessEntry* e = reg_.find(pid);
  if (!e) fail(proto::err::kNoSuchProcess, "no process running hakmem with pid " + std::to_string(pid));
  if (!visible(peer, *e))
    fail(proto::err::kPermissionDenied, "pid " + std::to_string(pid) + " belongs to another user");
  if (!reg_.still_alive(*e)) fail(proto::err::kNoSuchProcess, "process " + std::to_string(pid) + " has exited");
  out.push_back(e);
  return out;
}

ojson Handler::cmd_ps(const ojson& req, const Peer& peer) {
  const double up = proc_uptime_s();
  ojson list = ojson::array();
  for (ProcessEntry* e : targets(req, peer, false)) {
    proto::Snapshot s;
    if (!reg_.read_snapshot(*e, &s)) continue;  // vanished mid-request: skipped
    uint64_t live = 0, mapped = 0, allocs = 0, frees = 0;
    for (const auto& t : s.tier) {
      live += t.live_bytes();
      mapped += t.get(proto::GlobalCounter::MappedBytes);
      allocs += t.allocs();
      frees += t.frees();
    }
    ojson p = ojson::object();
    p["pid"] = static_cast<int64_t>(e->pid);
    p["uid"] = static_cast<uint64_t>(e->uid);
    p["exe"] = e->exe;
    p["cmdline"] = e->cmdline;
    p["uptime_s"] = proc_age_s(e->start_time_ticks, up);
    p["threads"] = s.threads_live;
    p["live_bytes"] = live;
    p["mapped_bytes"] = mapped;
    p["allocs"] = allocs;
    p["frees"] = frees;
    list.push_back(std::move(p));
  }
  return {{"processes", std::move(list)}};
}

ojson Handler::stats_json(ProcessEntry& e, const proto::Snapshot& s, double uptime_s) {
  ojson p = ojson::object();
  p["pid"] = static_cast<int64_t>(e.pid);
  p["uid"] = static_cast<uint64_t>(e.uid);
  p["exe"] = e.exe;
  p["cmdline"] = e.cmdline;
  p["lib_version"] = e.lib_version;
  p["uptime_s"] = proc_age_s(e.start_time_ticks, uptime_s);
  p["threads"] = s.threads_live;
  p["thread_slots_used"] = s.thread_slots_used;
  p["threads_unslotted"] = s.threads_unslotted;
  auto st = e.has_last_stat ? std::optional<ProcStat>(e.last_stat) : proc_stat(e.pid);
  p["page_faults"] = st ? st->minflt : 0;
  p["major_faults"] = st ? st->majflt : 0;
  auto rss = proc_rss_bytes(e.pid);
  p["rss_bytes"] = rss ? *rss : 0;
  ojson tiers = ojson::object();
  for (size_t t = 0; t < proto::kTierCount; t++) tiers[proto::kTierNames[t]] = tier_json(s.tier[t]);
  p["tiers"] = std::move(tiers);
  ojson classes = ojson::array();
  for (uint32_t c = 0; c < s.tiny_class_count; c++) {
    const uint64_t a = s.tiny_class_allocs[c], f = s.tiny_class_frees[c];
    classes.push_back({{"size", s.tiny_class_size[c]}, {"allocs", a}, {"frees", f}, {"live", a > f ? a - f : 0}});
  }
  p["tiny_classes"] = std::move(classes);
  p["errors"] = {{"invalid_frees", s.invalid_frees}, {"double_frees", s.double_frees}};
  ojson knobs = ojson::object();
  for (size_t k = 0; k < proto::kKnobCount; k++) knobs[proto::kKnobs[k].name] = s.knob[k];
  p["knobs"] = std::move(knobs);
  p["generation"] = s.knob_generation;
  p["applied_generation"] = s.knob_applied_generation;
  return p;
}

// Calls fn with a fresh snapshot of each process the request names (or every visible
// one). A process that vanishes mid-request is skipped in a listing and an error when the
// request named its pid.
void Handler::for_each_snapshot(const ojson& req, const Peer& peer,
                                const std::function<void(ProcessEntry&, const proto::Snapshot&)>& fn) {
  const bool one = field_pid(req) != 0;
  for (ProcessEntry* e : targets(req, peer, false)) {
    proto::Snapshot s;
    if (!reg_.read_snapshot(*e, &s)) {
      if (one) fail(proto::err::kNoSuchProcess, "process " + std::to_string(e->pid) + " vanished");
      continue;
    }
    fn(*e, s);
  }
}

ojson Handler::cmd_stats(const ojson& req, const Peer& peer) {
  const double up = proc_uptime_s();
  ojson list = ojson::array();
  for_each_snapshot(req, peer, [&](ProcessEntry& e, const proto::Snapshot& s) { list.push_back(stats_json(e, s, up)); });
  return {{"processes", std::move(list)}};
}

ojson Handler::cmd_get(const ojson& req, const Peer& peer) {
  std::vector<const proto::KnobInfo*> keys;
  if (auto it = req.find("keys"); it != req.end() && !it->is_null()) {
    if (!it->is_array()) fail(proto::err::kBadRequest, "field 'keys' must be an array of knob names");
    for (const auto& k : *it) {
      if (!k.is_string()) fail(proto::err::kBadRequest, "field 'keys' must be an array of knob names");
      const std::string& name = k.get_ref<const std::string&>();
      const proto::KnobInfo* info = proto::knob_find(name.c_str());
      if (!info || name.size() != strlen(info->name))
        fail(proto::err::kUnknownKnob, "unknown knob '" + name + "'; did you mean '" + closest_knob(name) + "'?");
      keys.push_back(info);
    }
  } else {
    for (const auto& k : proto::kKnobs) keys.push_back(&k);
  }
  ojson list = ojson::array();
  for_each_snapshot(req, peer, [&](ProcessEntry& e, const proto::Snapshot& s) {
    ojson knobs = ojson::object();
    for (const proto::KnobInfo* k : keys) {
      const size_t i = static_cast<size_t>(k->id);
      const uint64_t v = s.knob[i];
      const char* source = "default";
      if (e.knob_set_mask & (1ull << i)) source = "set";
      else if (s.knob_env_mask & (1ull << i)) source = "env";
      else if (v != k->def) source = "set";  // changed by the process itself or an earlier daemon
      knobs[k->name] = {{"value", v}, {"text", knob_value_text(*k, v)}, {"source", source}};
    }
    ojson p = ojson::object();
    p["pid"] = static_cast<int64_t>(e.pid);
    p["exe"] = e.exe;
    p["generation"] = s.knob_generation;
    p["applied_generation"] = s.knob_applied_generation;
    p["knobs"] = std::move(knobs);
    list.push_back(std::move(p));
  });
  return {{"processes", std::move(list)}};
}

ojson Handler::cmd_set(const ojson& req, const Peer& peer, std::unique_ptr<ApplyWait>* wait) {
  auto kit = req.find("knobs");
  if (kit == req.end()) fail(proto::err::kBadRequest, "field 'knobs' is required: {\"name\": value, ...}");
  std::vector<KnobValue> values;
  KnobError ke;
  if (!knobs_validate_object(*kit, true, &values, &ke)) fail(ke.code, ke.message);
  int64_t wait_ms = 0;
  if (auto it = req.find("wait_ms"); it != req.end() && !it->is_null()) {
    if (!it->is_number_unsigned() || it->get<uint64_t>() > 60000)
      fail(proto::err::kBadRequest, "field 'wait_ms' must be an integer 0..60000");
    wait_ms = it->get<int64_t>();
  }
  const bool one = field_pid(req) != 0;
  std::vector<ProcessEntry*> procs = targets(req, peer, true);

  const auto start = std::chrono::steady_clock::now();
  const uint64_t start_ns = unix_ns_now();
  ojson changes = ojson::array();
  ojson processes = ojson::array();
  auto w = std::make_unique<ApplyWait>();
  std::vector<uint64_t> old;
  for (ProcessEntry* e : procs) {
    uint64_t gen = 0;
    if (!reg_.write_knobs(*e, values, &old, &gen)) {
      if (one) fail(proto::err::kNoSuchProcess, "process " + std::to_string(e->pid) + " vanished");
      continue;
    }
    for (size_t i = 0; i < values.size(); i++) {
      const proto::KnobInfo& k = *values[i].info;
      spdlog::info("knob set by uid {} pid {}: process {} ({}) {} {} -> {}", peer.uid, peer.pid, e->pid, e->exe,
                   k.name, knob_value_text(k, old[i]), knob_value_text(k, values[i].value));
      changes.push_back({{"pid", static_cast<int64_t>(e->pid)}, {"knob", k.name}, {"old", old[i]},
                         {"new", values[i].value}});
    }
    processes.push_back({{"pid", static_cast<int64_t>(e->pid)}, {"generation", gen}});
    w->targets.push_back({e->pid, e->start_time_ticks, gen});
  }
  if (wait_ms > 0 && !w->targets.empty()) {
    w->changes = std::move(changes);
    w->start = start;
    w->deadline = start + std::chrono::milliseconds(wait_ms);
    w->start_unix_ns = start_ns;
    *wait = std::move(w);
    return nullptr;
  }
  return {{"changes", std::move(changes)}, {"processes", std::move(processes)}};
}

bool Handler::poll(ApplyWait& w, std::string* reply) {
  const auto now = std::chrono::steady_clock::now();
  bool all_done = true;
  for (auto& t : w.targets) {
    if (t.done) continue;
    ProcessEntry* e = reg_.find(t.pid);
    uint64_t gen = 0, applied = 0, applied_ns = 0;
    if (!e || e->start_time_ticks != t.start_time_ticks || !reg_.read_generations(*e, &gen, &applied, &applied_ns)) {
      t.done = true;  // the target went away while we waited
      continue;
    }
    if (applied >= t.generation) {
      t.done = t.applied = true;
      // The process stamps the apply time itself; fall back to when we noticed it.
      if (applied_ns >= w.start_unix_ns && applied_ns - w.start_unix_ns < 3600ull * 1000000000ull)
        t.apply_ms = static_cast<double>(applied_ns - w.start_unix_ns) / 1e6;
      else
        t.apply_ms = std::chrono::duration<double, std::milli>(now - w.start).count();
      continue;
    }
    all_done = false;
  }
  if (!all_done && now < w.deadline) return false;
  ojson processes = ojson::array();
  for (const auto& t : w.targets) {
    ojson p = {{"pid", static_cast<int64_t>(t.pid)}, {"generation", t.generation}, {"applied", t.applied}};
    if (t.applied) p["apply_ms"] = t.apply_ms;
    processes.push_back(std::move(p));
  }
  *reply = ok_line(w.id, {{"changes", std::move(w.changes)}, {"processes", std::move(processes)}});
  return true;
}

ojson Handler::cmd_knobs(const ojson&, const Peer&) {
  ojson list = ojson::array();
  for (const auto& k : proto::kKnobs) {
    ojson o = ojson::object();
    o["name"] = k.name;
    o["type"] = proto::knob_type_name(k.type);
    o["default"] = k.def;
    o["min"] = k.min;
    o["max"] = k.max;
    o["default_text"] = knob_value_text(k, k.def);
    o["min_text"] = knob_value_text(k, k.min);
    o["max_text"] = knob_value_text(k, k.max);
    o["mode"] = k.mode == proto::KnobMode::Live ? "live" : "restart";
    o["env"] = k.env;
    o["help"] = k.help;
    list.push_back(std::move(o));
  }
  return {{"knobs", std::move(list)}};
}

}  // namespace hakmemd
