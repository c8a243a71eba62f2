#include "sites_cmd.h"

#include <stdlib.h>

#include "commands.h"
#include "exit.h"
#include "table.h"
#include "units.h"

namespace hakctl {

namespace {

const char* kRulesHint = "run `hakctl help rules` for its usage";

uint64_t u64(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}
std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return "-";
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}
bool flag(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}
const json& arr(const json& j, const char* key) {
  static const json empty = json::array();
  auto it = j.find(key);
  return it != j.end() && it->is_array() ? *it : empty;
}

std::string site_table(const json& list) {
  Table t({{"SITE", Align::Left}, {"BYTES", Align::Right}, {"COUNT", Align::Right}, {"SAMPLES", Align::Right},
           {"TIER", Align::Left}, {"ADDR", Align::Left}});
  for (const json& s : list) {
    if (!s.is_object()) continue;
    t.add_row({str(s, "site"), format_bytes(u64(s, "bytes")), format_count(u64(s, "count")),
               format_count(u64(s, "samples")), str(s, "tier"), str(s, "addr")});
  }
  return t.render();
}

void off_note(std::string* out, const json& p) {
  if (!flag(p, "site_rules"))
    *out += "note: site.rules is off in this process: no sampling, rules inactive; turn it on with "
            "`hakctl set site.rules=1 --pid " + str(p, "pid") + "`\n";
}

}  // namespace

void rules_check_args(const std::vector<std::string>& positionals, Options* o) {
  if (positionals.empty()) throw CliError(Exit::Usage, "rules needs a subcommand: add, list or del", kRulesHint);
  const std::string& sub = positionals[0];
  if (sub == "add") {
    if (positionals.size() != 2)
      throw CliError(Exit::Usage, "rules add takes one RULE (quote it: 'site=... tier=...')", kRulesHint);
    if (!o->pid) throw CliError(Exit::Usage, "rules add needs --pid N", kRulesHint);
  } else if (sub == "list") {
    if (positionals.size() != 1) throw CliError(Exit::Usage, "rules list takes no argument", kRulesHint);
  } else if (sub == "del") {
    if (positionals.size() != 2) throw CliError(Exit::Usage, "rules del takes one rule ID", kRulesHint);
    char* end = nullptr;
    const unsigned long id = strtoul(positionals[1].c_str(), &end, 10);
    if (positionals[1].empty() || *end || id == 0 || id > 0xffffffffUL)
      throw CliError(Exit::Usage, "rule ID must be a positive number, got '" + positionals[1] + "'", kRulesHint);
    if (!o->pid) throw CliError(Exit::Usage, "rules del needs --pid N", kRulesHint);
  } else {
    const std::string near = closest(sub, {"add", "list", "del"});
    throw CliError(Exit::Usage,
                   "unknown rules subcommand '" + sub + "'" + (near.empty() ? "" : "; did you mean '" + near + "'?"),
                   kRulesHint);
  }
  o->words = positionals;
}

std::string render_sites(const json& result) {
  std::string out;
  for (const json& p : arr(result, "processes")) {
    if (!p.is_object()) continue;
    if (!out.empty()) out += "\n";
    out += "pid " + str(p, "pid") + "  " + str(p, "exe") + "  site.rules " + (flag(p, "site_rules") ? "on" : "off") +
           "  sites " + std::to_string(u64(p, "sites_used")) + "/" + std::to_string(u64(p, "sites_capacity")) +
           "  dropped " + std::to_string(u64(p, "sites_dropped")) + "\n";
    off_note(&out, p);
    if (arr(p, "by_bytes").empty()) {
      out += "no sampled call sites yet\n";
      continue;
    }
    out += "\nby bytes (estimated from samples, mean 1 per " + format_bytes(u64(p, "sample_mean_bytes")) + "):\n";
    out += site_table(arr(p, "by_bytes"));
    out += "\nby count:\n" + site_table(arr(p, "by_count"));
  }
  if (out.empty()) out = "no process running hakmem\n";
  return out;
}

std::string render_rules(const json& result) {
  std::string out;
  for (const json& p : arr(result, "processes")) {
    if (!p.is_object()) continue;
    if (!out.empty()) out += "\n";
    out += "pid " + str(p, "pid") + "  " + str(p, "exe") + "  site.rules " + (flag(p, "site_rules") ? "on" : "off") +
           "  generation " + std::to_string(u64(p, "generation")) + " (applied " +
           std::to_string(u64(p, "applied_generation")) + ")  rule hits " + format_count(u64(p, "rule_hits")) + "\n";
    if (u64(p, "rules_rejected") || u64(p, "malformed_slots"))
      out += "warning: " + std::to_string(u64(p, "malformed_slots")) + " malformed rule slot(s) ignored\n";
    off_note(&out, p);
    if (arr(p, "rules").empty() && arr(p, "pending_rules").empty()) {
      out += "no rules\n";
      continue;
    }
    auto site_list = [](const json& r) {
      std::string sites;
      for (const json& s : arr(r, "sites")) sites += (sites.empty() ? "" : ", ") + str(s, "site");
      return sites;
    };
    Table t({{"ID", Align::Right}, {"RULE", Align::Left}, {"SITES", Align::Left}});
    for (const json& r : arr(p, "rules")) t.add_row({str(r, "rule_id"), str(r, "rule"), site_list(r)});
    // Config rules not (fully) installed: ID "-" until their first call site is.
    for (const json& r : arr(p, "pending_rules")) {
      const std::string sites = site_list(r);
      t.add_row({u64(r, "rule_id") ? str(r, "rule_id") : "-", str(r, "rule"),
                 "pending: " + (sites.empty() ? "" : sites + ": ") + str(r, "reason")});
    }
    out += t.render();
  }
  if (out.empty()) out = "no process running hakmem\n";
  return out;
}

int run_sites_command(Client& c, const Options& o) {
  auto print = [&](const json& r) { write_out(r.dump(2) + "\n"); };
  if (o.command == "sites") {
    json req = {{"cmd", "sites"}};
    if (o.pid) req["pid"] = o.pid;
    if (o.top) req["top"] = o.top;
    const json r = c.call_ok(req);
    if (o.json) print(r);
    else write_out(render_sites(r));
    return 0;
  }
  const std::string& sub = o.words.at(0);
  if (sub == "add") {
    const json r = c.call_ok({{"cmd", "rules_add"}, {"pid", o.pid}, {"rule", o.words.at(1)}});
    if (o.json) {
      print(r);
      return 0;
    }
    std::string out = "rule " + str(r, "rule_id") + " added to pid " + str(r, "pid") + ": " + str(r, "rule") + "\n";
    for (const json& s : arr(r, "sites")) out += "  site " + str(s, "site") + " at " + str(s, "addr") + "\n";
    off_note(&out, r);
    write_out(out);
  } else if (sub == "list") {
    json req = {{"cmd", "rules_list"}};
    if (o.pid) req["pid"] = o.pid;
    const json r = c.call_ok(req);
    if (o.json) print(r);
    else write_out(render_rules(r));
  } else {
    const json r = c.call_ok({{"cmd", "rules_del"}, {"pid", o.pid}, {"rule_id", std::stoul(o.words.at(1))}});
    if (o.json) print(r);
    else write_out("rule " + str(r, "rule_id") + " deleted from pid " + str(r, "pid") + "\n");
  }
  return 0;
}

}  // namespace hakctl
