// Site rules in hakmemd (issue 9): the `sites`, `rules_add`, `rules_list` and `rules_del`
// commands (proto/PROTOCOL.md), the rule text syntax, and persistent rules from the config
// ("rules": [{"exe": pattern, "rule": text}]) installed when a matching process appears (and,
// for a rule naming a bare function, as the process samples call sites inside it).
//
// The daemon owns rule ids and validation: a rule is parsed, its site resolved to run-time
// addresses with the symbolizer, checked with proto::rule_check(), then written into free
// slots of the process's RuleBlock (seq protocol) and the rule generation bumped once.
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hakmem/proto/site_rules.h"
#include "registry.h"

namespace hakmemd {

// A rule as written by an operator: "site=build_json+0x1c size=64K-1M tier=whale prewarm=on".
struct RuleSpec {
  std::string site;        // symbol[+off], module+off or 0xADDR
  uint64_t min_size = 0;
  uint64_t max_size = 0;   // 0 = no bound
  int32_t tier = -1;       // proto::RuleTier
  uint32_t cap = 0;
  int32_t prewarm = -1;
};

// Parses the text; false with a message naming the bad word otherwise.
bool rule_parse(const std::string& text, RuleSpec* out, std::string* error);
// Canonical text of a rule with `site` as given ("site=... size=... tier=...").
std::string rule_text(const std::string& site, const hakmem::proto::RuleValue& v);
// "64K", "1M", "100": binary units, case-insensitive, optional "iB"/"B".
bool parse_size(const std::string& s, uint64_t* out);

// A persistent rule from the config file.
struct ConfigRule {
  std::string exe;   // fnmatch pattern, as for "defaults"
  std::string rule;  // rule text, validated by rule_parse at load
};

struct SitesResult {
  bool ok = true;
  nlohmann::ordered_json result;
  std::string code, message;  // the error reply when !ok
};

bool sites_is_command(const std::string& cmd);
// Runs one of the commands for a client with uid `peer_uid` (0 sees every process).
SitesResult sites_command(Registry& reg, const std::string& cmd, const nlohmann::ordered_json& req, uid_t peer_uid);
// The config file's "rules" array: [{"exe": pattern, "rule": text}]; each text must parse.
bool config_parse_site_rules(const nlohmann::json& j, std::vector<ConfigRule>* out, std::string* error);
// Installs the config rules whose exe pattern matches a newly registered process. A rule
// whose site is a bare function is followed instead (FollowedRule): installed for each call
// site inside the function as the process samples it, by sites_follow().
void sites_apply_config(ProcessEntry& e, const std::vector<ConfigRule>& rules);
// One pass over every process's followed config rules (the daemon calls it after each scan).
// Costs one read of the site addresses per such process; the symbolizer and /proc/PID/maps
// only when the site table holds an address not seen before.
void sites_follow(Registry& reg);
// After a config reload: followed rules no longer in `rules` stop being followed (what they
// installed stays, like any installed rule).
void sites_config_reloaded(Registry& reg, const std::vector<ConfigRule>& rules);

}  // namespace hakmemd
