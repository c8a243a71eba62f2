#include "commands.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "hakmem/proto/knobs.h"
#include "hakmem/proto/protocol.h"
#include "sites_cmd.h"
#include "views.h"

namespace hakctl {

namespace {

void print_json(const json& j) { write_out(j.dump(2) + "\n"); }

// A set value goes out as a JSON number when it is plain decimal (the common case, and what
// the knob table stores), otherwise as a string in the knob's syntax ("512M", "on", "2s").
json set_value(const std::string& v) {
  if (!v.empty() && v.size() <= 19 && v.find_first_not_of("0123456789") == std::string::npos)
    return json(std::stoull(v));
  return json(v);
}

json with_target(json req, const Options& o) {
  if (o.pid) req["pid"] = o.pid;
  return req;
}

int cmd_version(const Options& o) {
  const std::string mine = std::string("hakctl ") + HAKMEM_VERSION;
  Client c(socket_path(o), o.timeout_s);
  json daemon;
  std::string unreachable;
  try {
    daemon = c.hello();
  } catch (const CliError& e) {
    if (e.code() != Exit::Unreachable) throw;  // version_mismatch and friends: show them
    unreachable = e.what();
  }
  if (o.json) {
    print_json({{"hakctl", HAKMEM_VERSION}, {"protocol", hakmem::proto::kProtocolVersion}, {"daemon", daemon}});
    return 0;
  }
  std::string out = mine + " (protocol " + std::to_string(hakmem::proto::kProtocolVersion) + ")\n";
  if (!unreachable.empty()) {
    out += "hakmemd: not reachable: " + unreachable + "\n";
  } else {
    const std::string name = daemon.contains("daemon") && daemon["daemon"].is_string()
                                 ? daemon["daemon"].get<std::string>()
                                 : std::string("hakmemd");
    out += name + " (protocol " + (daemon.contains("protocol") ? daemon["protocol"].dump() : std::string("?")) +
           (daemon.contains("pid") ? ", pid " + daemon["pid"].dump() : std::string()) + ") at " + c.socket_path() + "\n";
  }
  write_out(out);
  return 0;
}

}  // namespace

void write_out(const std::string& text) {
  if (fwrite(text.data(), 1, text.size(), stdout) != text.size() || fflush(stdout) != 0) {
    if (errno == EPIPE) throw BrokenPipe{};
    throw CliError(Exit::DaemonError, std::string("cannot write the output: ") + strerror(errno));
  }
}

int run_complete(const std::vector<std::string>& args) {
  const std::string what = args.empty() ? "" : args[0];
  std::string out;
  if (what == "commands") {
    for (const auto& c : command_names()) out += c + "\n";
  } else if (what == "flags") {
    for (const auto& f : command_flags(args.size() > 1 ? args[1] : "")) out += f + "\n";
  } else if (what == "knobs") {
    const bool live_only = args.size() > 1 && args[1] == "--live";
    for (const auto& k : hakmem::proto::kKnobs)
      if (!live_only || k.mode == hakmem::proto::KnobMode::Live) out += std::string(k.name) + "\n";
  } else if (what == "pids") {
    Options o;
    for (size_t i = 1; i < args.size(); i++) {
      if (args[i] == "--socket" && i + 1 < args.size()) o.socket = args[++i];
      else if (args[i].rfind("--socket=", 0) == 0) o.socket = args[i].substr(9);
    }
    try {
      Client c(socket_path(o), 0.5);  // a prompt must not wait on a stuck daemon
      const json r = c.call_ok({{"cmd", "ps"}});
      if (r.contains("processes") && r["processes"].is_array())
        for (const json& p : r["processes"])
          if (p.is_object() && p.contains("pid")) out += p["pid"].dump() + "\n";
    } catch (const CliError&) {
    }
  }
  try {
    write_out(out);
  } catch (const BrokenPipe&) {
  }
  return 0;
}

std::string socket_path(const Options& o) {
  return o.socket.empty() ? hakmem::proto::default_socket_path() : o.socket;
}

int run(const Options& o) {
  if (o.command == "help" || o.help) {
    write_out(help_text(o.command == "help" ? o.help_topic : o.command));
    return 0;
  }
  if (o.command == "knobs") {
    if (o.json) print_json(knobs_json());
    else write_out(o.markdown ? render_knobs_markdown() : render_knobs());
    return 0;
  }
  if (o.command == "version") return cmd_version(o);
  if (o.command == "stats" && o.watch) return run_watch(o);

  Client c(socket_path(o), o.timeout_s);
  c.hello();
  if (o.command == "ps") {
    const json r = c.call_ok({{"cmd", "ps"}});
    if (o.json) print_json(r);
    else write_out(render_ps(r));
  } else if (o.command == "stats") {
    const json r = c.call_ok(with_target({{"cmd", "stats"}}, o));
    if (o.json) print_json(filter_tier(r, o.tier));
    else write_out(render_stats(r, o.tier));
  } else if (o.command == "get") {
    json req = with_target({{"cmd", "get"}}, o);
    if (!o.keys.empty()) req["keys"] = o.keys;
    const json r = c.call_ok(req);
    if (o.json) print_json(r);
    else write_out(render_get(r));
  } else if (o.command == "set") {
    json knobs = json::object();
    for (const auto& [k, v] : o.assignments) knobs[k] = set_value(v);
    json req = with_target({{"cmd", "set"}, {"knobs", knobs}}, o);
    if (o.all) req["all"] = true;
    if (o.wait_ms > 0) req["wait_ms"] = o.wait_ms;
    const json r = c.call_ok(req);
    if (o.json) print_json(r);
    else write_out(render_set(r, o.wait_ms));
  } else if (o.command == "sites" || o.command == "rules") {
    return run_sites_command(c, o);
  } else {
    throw CliError(Exit::Usage, "unknown command '" + o.command + "'", "run `hakctl help`");
  }
  return 0;
}

}  // namespace hakctl
