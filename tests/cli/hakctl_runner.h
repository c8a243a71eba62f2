// Runs the real hakctl against one daemon socket, for the end-to-end fixtures of tests/cli
// and tests/sites: plain runs, --json runs checked for exit 0 and valid JSON, and whether
// `hakctl ps` lists a pid.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

#include "proc.h"

namespace hakctl_test {

class HakctlRunner {
 public:
  void init(std::string binary, std::string socket) {
    binary_ = std::move(binary);
    socket_ = std::move(socket);
  }

  RunResult run(const std::vector<std::string>& args, const Env& env = {}) const {
    std::vector<std::string> argv{binary_, "--socket", socket_};
    argv.insert(argv.end(), args.begin(), args.end());
    return hakctl_test::run(argv, env);
  }

  nlohmann::json run_json(std::vector<std::string> args) const {
    args.push_back("--json");
    RunResult r = run(args);
    EXPECT_EQ(r.status, 0) << r.err;
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }

  bool lists(int pid) const {
    const nlohmann::json j = run_json({"ps"});
    if (!j.contains("processes")) return false;
    for (const nlohmann::json& p : j["processes"])
      if (p.value("pid", 0) == pid) return true;
    return false;
  }

 private:
  std::string binary_, socket_;
};

}  // namespace hakctl_test
