// `hakctl sites` and `hakctl rules add|list|del` (site rules, issue 9): argument checks,
// requests and rendering. args.cc and commands.cc only dispatch here.
#pragma once

#include <string>
#include <vector>

#include "args.h"
#include "client.h"

namespace hakctl {

// Checks `rules` positionals (SUBCOMMAND ARGS...) into o->words; throws CliError(Usage).
void rules_check_args(const std::vector<std::string>& positionals, Options* o);
int run_sites_command(Client& c, const Options& o);

// Text views of the daemon's results (also for tests).
std::string render_sites(const json& result);
std::string render_rules(const json& result);

}  // namespace hakctl
