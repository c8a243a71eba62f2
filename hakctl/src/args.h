// Command-line parsing for hakctl: the command table (names, flags, help text) and the
// parser that turns argv into Options or a usage error (Exit::Usage) with a hint. Nothing
// here touches the socket, so every rule is unit-tested without a daemon.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace hakctl {

struct Options {
  std::string command;             // "ps", "stats", "get", "set", "knobs", "version", "help"
  std::string socket;              // --socket; empty: $HAKMEM_SOCKET or the default path
  bool json = false;               // --json: the daemon's result as JSON
  bool help = false;               // --help / -h on a command
  double timeout_s = 5.0;          // --timeout: limit on each socket wait
  int pid = 0;                     // --pid; 0 when not given
  bool all = false;                // --all
  std::string tier;                // stats --tier
  bool watch = false;              // stats --watch
  double interval_s = 1.0;         // stats --watch SECONDS
  long count = 0;                  // stats --watch --count N; 0: until interrupted
  bool markdown = false;           // knobs --markdown
  long wait_ms = 1000;             // set --wait MS / --no-wait (0)
  std::vector<std::string> keys;   // get KEY...
  std::vector<std::pair<std::string, std::string>> assignments;  // set KEY=VALUE...
  std::string help_topic;          // help COMMAND
  long top = 0;                    // sites --top K; 0: the daemon's default
  std::vector<std::string> words;  // rules SUBCOMMAND ARGS... (sites_cmd.cc)
};

// Parses argv[1..]; throws CliError(Exit::Usage, message, hint) on any mistake.
Options parse_args(const std::vector<std::string>& args);

// The command names, in help order (for completion and suggestions).
std::vector<std::string> command_names();
// Every flag a command accepts (long forms, globals included), for completion.
std::vector<std::string> command_flags(const std::string& command);
// `hakctl help` (empty command) or `hakctl help COMMAND`; the latter requires a known name.
std::string help_text(const std::string& command);
// The known word closest to `word` by edit distance, or "" when none is close enough.
std::string closest(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace hakctl
