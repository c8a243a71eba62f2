#include "args.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include <algorithm>

#include "exit.h"
#include "sites_cmd.h"
#include "hakmem/proto/segment.h"

namespace hakctl {

namespace {

enum class Arg { None, Required, Optional };

struct FlagSpec {
  const char* name;   // long form, "--pid"
  const char* alias;  // short form or nullptr
  Arg arg;
  const char* metavar;
  const char* help;
};

const FlagSpec kGlobalFlags[] = {
    {"--socket", nullptr, Arg::Required, "PATH", "daemon socket (default: $HAKMEM_SOCKET, else the per-user path)"},
    {"--json", nullptr, Arg::None, nullptr, "print the daemon's result as JSON, for scripts"},
    {"--timeout", nullptr, Arg::Required, "SECONDS", "give up on a silent daemon after this long (default 5)"},
    {"--help", "-h", Arg::None, nullptr, "show help for the command"},
};

const FlagSpec kPid = {"--pid", "-p", Arg::Required, "N", "only process N"};
const FlagSpec kAll = {"--all", "-a", Arg::None, nullptr, "every process you can see"};
const FlagSpec kTier = {"--tier", nullptr, Arg::Required, "T", "only tier T: tiny, pool, bundle or whale"};
const FlagSpec kWatch = {"--watch", "-w", Arg::Optional, "SECONDS",
                         "refresh every SECONDS (default 1) with per-second rates; Ctrl-C ends"};
const FlagSpec kCount = {"--count", nullptr, Arg::Required, "N", "with --watch: stop after N refreshes"};
const FlagSpec kMarkdown = {"--markdown", nullptr, Arg::None, nullptr, "emit the README table of env vars"};
const FlagSpec kWait = {"--wait", nullptr, Arg::Required, "MS",
                        "wait up to MS for each process to apply the change (default 1000)"};
const FlagSpec kTop = {"--top", "-k", Arg::Required, "K", "show the top K sites by bytes and by count (default 20)"};
const FlagSpec kNoWait = {"--no-wait", nullptr, Arg::None, nullptr, "do not wait for the change to be applied"};

struct CommandSpec {
  const char* name;
  const char* synopsis;
  const char* summary;
  std::vector<FlagSpec> flags;
  const char* details;
};

const std::vector<CommandSpec>& commands() {
  static const std::vector<CommandSpec> kCommands = {
      {"ps", "hakctl ps", "list the processes running hakmem", {},
       "One line per process: pid, uptime, threads, live and mapped bytes, allocations and the\n"
       "average allocation rate since the process started, executable."},
      {"stats", "hakctl stats [--pid N | --all] [--tier T] [--watch [SECONDS] [--count N]]",
       "per-tier figures of one or every process", {kPid, kAll, kTier, kWatch, kCount},
       "Without --pid, every process you can see. --watch redraws like top on a terminal and prints\n"
       "one snapshot per interval otherwise; rates are per second since the previous refresh."},
      {"get", "hakctl get [KEY...] [--pid N]", "show knob values (all knobs when no KEY)", {kPid},
       "Without --pid, every process you can see. SOURCE says where a value came from: default,\n"
       "env (HAKMEM_* at start) or set (changed since start)."},
      {"set", "hakctl set KEY=VALUE [KEY=VALUE...] (--pid N | --all) [--wait MS | --no-wait]",
       "change knobs in running processes", {kPid, kAll, kWait, kNoWait},
       "All pairs go in one request: one bad key or value refuses the whole change, nothing is\n"
       "half-applied. Values use the knob's syntax: 64, on/off, 512M, 2s. Prints old -> new.\n"
       "Example: hakctl set tiny.cap=64 --pid 1234"},
      {"knobs", "hakctl knobs [--markdown]", "the table of every knob (no daemon needed)", {kMarkdown},
       "Name, type, default, range, live or restart-only, environment variable and help."},
      {"sites", "hakctl sites [--pid N] [--top K]", "the call sites that allocate most (site.rules=1)", {kPid, kTop},
       "Sampled call sites of each process (or of N), by estimated bytes and by estimated count,\n"
       "symbolized as function+0xoff (module). Sampling runs only while site.rules is on:\n"
       "HAKMEM_SITE_RULES=1 at start or `hakctl set site.rules=1 --pid N`."},
      {"rules", "hakctl rules add --pid N 'RULE' | rules list [--pid N] | rules del ID --pid N",
       "route a call site's allocations (site rules)", {kPid},
       "RULE is KEY=VALUE words: site=SYMBOL+0xOFF | MODULE+0xOFF | 0xADDR (as `hakctl sites` shows;\n"
       "a bare SYMBOL covers every sampled site inside it), optional size=LO-HI (K/M/G), and actions:\n"
       "tier=tiny|pool|bundle|whale|system, cap=N (magazine blocks), prewarm=on|off.\n"
       "Rules act only while site.rules is on in the process. `rules list` also shows hakmemd's\n"
       "config rules that name a function and wait for a sampled call site of it, as pending.\n"
       "Example: hakctl rules add --pid 1234 'site=build_json+0x1c size=64K-1M tier=whale prewarm=on'"},
      {"version", "hakctl version", "versions of hakctl, the protocol and the running hakmemd", {}, ""},
      {"help", "hakctl help [COMMAND]", "this help, or the help of one command", {}, ""},
  };
  return kCommands;
}

const CommandSpec* find_command(const std::string& name) {
  for (const auto& c : commands())
    if (name == c.name) return &c;
  return nullptr;
}

// Looks a flag up among the globals and, when known, the command's own flags.
const FlagSpec* find_flag(const std::string& name, const CommandSpec* cmd) {
  for (const auto& f : kGlobalFlags)
    if (name == f.name || (f.alias && name == f.alias)) return &f;
  if (cmd)
    for (const auto& f : cmd->flags)
      if (name == f.name || (f.alias && name == f.alias)) return &f;
  return nullptr;
}

// Any command's flag: lets the first pass skip flag values before the command is known.
const FlagSpec* find_any_flag(const std::string& name) {
  if (const FlagSpec* f = find_flag(name, nullptr)) return f;
  for (const auto& c : commands())
    if (const FlagSpec* f = find_flag(name, &c)) return f;
  return nullptr;
}

bool is_flag(const std::string& s) { return s.size() > 1 && s[0] == '-'; }

[[noreturn]] void usage(std::string message, std::string hint) {
  throw CliError(Exit::Usage, std::move(message), std::move(hint));
}

std::string help_hint(const std::string& command) {
  return command.empty() ? "run `hakctl help` for the list of commands"
                         : "run `hakctl help " + command + "` for its usage";
}

long parse_long(const std::string& flag, const std::string& v, long lo, long hi, const std::string& command) {
  errno = 0;
  char* end = nullptr;
  const long n = strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != 0 || errno == ERANGE || n < lo || n > hi)
    usage(flag + " expects a whole number in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got '" +
              v + "'",
          help_hint(command));
  return n;
}

bool parse_seconds(const std::string& v, double* out) {
  char* end = nullptr;
  errno = 0;
  const double d = strtod(v.c_str(), &end);
  if (v.empty() || *end != 0 || errno == ERANGE || !(d > 0) || d > 86400) return false;
  *out = d;
  return true;
}

std::vector<std::string> flag_names(const CommandSpec* cmd) {
  std::vector<std::string> out;
  for (const auto& f : kGlobalFlags) out.push_back(f.name);
  if (cmd)
    for (const auto& f : cmd->flags) out.push_back(f.name);
  return out;
}

}  // namespace

std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  // Optimal string alignment distance (Levenshtein plus swapped neighbours, the commonest
  // typo); close means at most a third of the word (at least 1, at most 3).
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
    for (size_t i = 0; i <= a.size(); i++) d[i][0] = i;
    for (size_t j = 0; j <= b.size(); j++) d[0][j] = j;
    for (size_t i = 1; i <= a.size(); i++)
      for (size_t j = 1; j <= b.size(); j++) {
        d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
          d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    return d[a.size()][b.size()];
  };
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& c : candidates) {
    const size_t d = distance(word, c);
    if (d < best_d) { best_d = d; best = c; }
  }
  const size_t limit = std::clamp<size_t>(word.size() / 3, 1, 3);
  return best_d <= limit ? best : std::string();
}

std::vector<std::string> command_names() {
  std::vector<std::string> out;
  for (const auto& c : commands()) out.push_back(c.name);
  return out;
}

std::vector<std::string> command_flags(const std::string& command) {
  return flag_names(find_command(command));
}

std::string help_text(const std::string& command) {
  auto flag_lines = [](const std::vector<FlagSpec>& flags) {
    std::string out;
    for (const auto& f : flags) {
      std::string left = "  ";
      if (f.alias) left += std::string(f.alias) + ", ";
      left += f.name;
      if (f.arg == Arg::Required) left += std::string(" ") + f.metavar;
      if (f.arg == Arg::Optional) left += std::string(" [") + f.metavar + "]";
      if (left.size() < 26) left.append(26 - left.size(), ' ');
      else left += "  ";
      out += left + f.help + "\n";
    }
    return out;
  };
  std::vector<FlagSpec> globals(std::begin(kGlobalFlags), std::end(kGlobalFlags));
  if (command.empty()) {
    std::string out =
        "hakctl — look at and retune processes running the hakmem allocator (through hakmemd)\n\n"
        "Usage: hakctl [--socket PATH] [--json] COMMAND [ARGS...]\n\nCommands:\n";
    for (const auto& c : commands()) {
      std::string left = std::string("  ") + c.name;
      left.append(12 - left.size(), ' ');
      out += left + c.summary + "\n";
    }
    out += "\nGlobal options (anywhere on the line):\n" + flag_lines(globals);
    out +=
        "\nExit codes: 0 ok, 1 hakmemd answered with an error, 2 usage error, 3 hakmemd unreachable.\n"
        "Run `hakctl help COMMAND` or `hakctl COMMAND --help` for a command's options.\n";
    return out;
  }
  const CommandSpec* c = find_command(command);
  if (!c) return {};
  std::string out = std::string("Usage: ") + c->synopsis + "\n\n" + c->summary + ".\n";
  if (*c->details) out += std::string("\n") + c->details + "\n";
  if (!c->flags.empty()) out += "\nOptions:\n" + flag_lines(c->flags);
  out += "\nGlobal options:\n" + flag_lines(globals);
  return out;
}

Options parse_args(const std::vector<std::string>& args) {
  Options o;

  // Pass 1: find the command (the first word that is neither a flag nor a flag's value), so
  // pass 2 knows which flags are allowed wherever they appear on the line.
  size_t cmd_index = args.size();
  for (size_t i = 0; i < args.size(); i++) {
    const std::string& a = args[i];
    if (a == "--") { if (i + 1 < args.size()) cmd_index = i + 1; break; }
    if (!is_flag(a)) { cmd_index = i; break; }
    const std::string name = a.substr(0, a.find('='));
    const FlagSpec* f = find_any_flag(name);
    if (f && f->arg == Arg::Required && a.find('=') == std::string::npos) i++;
  }
  const CommandSpec* cmd = nullptr;
  if (cmd_index < args.size()) {
    o.command = args[cmd_index];
    cmd = find_command(o.command);
    if (!cmd) {
      const std::string near = closest(o.command, command_names());
      usage("unknown command '" + o.command + "'" + (near.empty() ? "" : "; did you mean '" + near + "'?"),
            help_hint(""));
    }
  }

  bool only_positionals = false;
  std::vector<std::string> positionals;
  for (size_t i = 0; i < args.size(); i++) {
    if (i == cmd_index) continue;
    const std::string& a = args[i];
    if (only_positionals || !is_flag(a)) { positionals.push_back(a); continue; }
    if (a == "--") { only_positionals = true; continue; }
    const size_t eq = a.find('=');
    const std::string name = a.substr(0, eq);
    const FlagSpec* f = find_flag(name, cmd);
    if (!f) {
      if (cmd && find_any_flag(name))
        usage("'" + o.command + "' does not take " + name, help_hint(o.command));
      if (!cmd && find_any_flag(name))
        usage(name + " needs a command before it", help_hint(""));
      const std::string near = closest(name, flag_names(cmd));
      usage("unknown option " + name + (near.empty() ? "" : "; did you mean " + near + "?"),
            help_hint(o.command));
    }
    std::string value;
    bool has_value = eq != std::string::npos;
    if (has_value) value = a.substr(eq + 1);
    if (f->arg == Arg::None && has_value) usage(std::string(f->name) + " takes no value", help_hint(o.command));
    if (f->arg == Arg::Required && !has_value) {
      if (i + 1 >= args.size() || i + 1 == cmd_index)
        usage(std::string(f->name) + " needs a value (" + f->metavar + ")", help_hint(o.command));
      value = args[++i];
      has_value = true;
    }
    if (f->arg == Arg::Optional && !has_value && i + 1 < args.size() && i + 1 != cmd_index) {
      double d;  // --watch takes the next word only when it reads as seconds
      if (parse_seconds(args[i + 1], &d)) { value = args[++i]; has_value = true; }
    }

    const std::string n = f->name;
    if (n == "--socket") {
      if (value.empty()) usage("--socket needs a path", help_hint(o.command));
      o.socket = value;
    } else if (n == "--json") {
      o.json = true;
    } else if (n == "--timeout") {
      if (!parse_seconds(value, &o.timeout_s))
        usage("--timeout expects seconds greater than 0, got '" + value + "'", help_hint(o.command));
    } else if (n == "--help") {
      o.help = true;
    } else if (n == "--pid") {
      o.pid = static_cast<int>(parse_long("--pid", value, 1, INT_MAX, o.command));
    } else if (n == "--all") {
      o.all = true;
    } else if (n == "--tier") {
      std::vector<std::string> tiers(std::begin(hakmem::proto::kTierNames), std::end(hakmem::proto::kTierNames));
      if (std::find(tiers.begin(), tiers.end(), value) == tiers.end()) {
        const std::string near = closest(value, tiers);
        usage("unknown tier '" + value + "'" + (near.empty() ? "" : "; did you mean '" + near + "'?"),
              "tiers are tiny, pool, bundle and whale");
      }
      o.tier = value;
    } else if (n == "--watch") {
      o.watch = true;
      if (has_value && !parse_seconds(value, &o.interval_s))
        usage("--watch expects seconds greater than 0, got '" + value + "'", help_hint(o.command));
    } else if (n == "--count") {
      o.count = parse_long("--count", value, 1, LONG_MAX, o.command);
    } else if (n == "--markdown") {
      o.markdown = true;
    } else if (n == "--wait") {
      o.wait_ms = parse_long("--wait", value, 0, 600000, o.command);
    } else if (n == "--top") {
      o.top = parse_long("--top", value, 1, 512, o.command);
    } else if (n == "--no-wait") {
      o.wait_ms = 0;
    }
  }

  if (o.command.empty()) {
    if (o.help) { o.command = "help"; return o; }
    usage("no command given", help_hint(""));
  }
  if (o.help) return o;  // `hakctl set --help` needs no valid pairs

  if (o.pid && o.all) usage("--pid and --all exclude each other", help_hint(o.command));
  if (o.count && !o.watch) usage("--count works only with --watch", help_hint(o.command));

  if (o.command == "help") {
    if (positionals.size() > 1) usage("help takes at most one command", help_hint(""));
    if (!positionals.empty()) {
      o.help_topic = positionals[0];
      if (!find_command(o.help_topic)) {
        const std::string near = closest(o.help_topic, command_names());
        usage("no help for unknown command '" + o.help_topic + "'" +
                  (near.empty() ? "" : "; did you mean '" + near + "'?"),
              help_hint(""));
      }
    }
  } else if (o.command == "get") {
    for (const auto& p : positionals) {
      if (p.find('=') != std::string::npos)
        usage("get takes knob names, not KEY=VALUE ('" + p + "')",
              "to change a knob run `hakctl set " + p + " --pid N`");
      o.keys.push_back(p);
    }
  } else if (o.command == "set") {
    for (const auto& p : positionals) {
      const size_t eq = p.find('=');
      if (eq == std::string::npos)
        usage("expected KEY=VALUE, got '" + p + "'", "for example: hakctl set tiny.cap=64 --pid 1234");
      std::string key = p.substr(0, eq), value = p.substr(eq + 1);
      if (key.empty()) usage("no knob name before '=' in '" + p + "'", "for example: hakctl set tiny.cap=64 --pid 1234");
      if (value.empty())
        usage("no value after '=' for " + key, "for example: hakctl set " + key + "=VALUE; see `hakctl knobs`");
      for (const auto& [k, v] : o.assignments)
        if (k == key) usage(key + " is given twice", "give each knob once");
      o.assignments.emplace_back(std::move(key), std::move(value));
    }
    if (o.assignments.empty())
      usage("set needs at least one KEY=VALUE", "for example: hakctl set tiny.cap=64 --pid 1234");
    if (!o.pid && !o.all)
      usage("set needs a target: --pid N or --all", "for example: hakctl set tiny.cap=64 --pid 1234");
  } else if (o.command == "rules") {
    rules_check_args(positionals, &o);
  } else if (!positionals.empty()) {
    usage("'" + o.command + "' takes no argument '" + positionals[0] + "'", help_hint(o.command));
  }
  if (o.markdown && o.json) usage("--markdown and --json exclude each other", help_hint(o.command));
  return o;
}

}  // namespace hakctl
