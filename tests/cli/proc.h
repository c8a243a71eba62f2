// Runs a program with arguments and extra environment, captures stdout/stderr and the exit
// status. Used by the tests that drive the real hakctl binary.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace hakctl_test {

struct RunResult {
  int status = -1;  // exit code, or 128+signal
  std::string out, err;
};

using Env = std::vector<std::pair<std::string, std::string>>;

// as_uid >= 0 (needs root): the child drops to that uid/gid before exec.
RunResult run(const std::vector<std::string>& argv, const Env& env = {}, const std::string& input = {},
              int as_uid = -1);

// A started child whose stdout is a pipe the test reads; killed on destruction.
struct Child {
  pid_t pid = -1;
  int out_fd = -1;  // read end of the child's stdout (-1 when not captured)
  int in_fd = -1;   // write end of the child's stdin (-1 when not captured)
  ~Child();
  // Sends sig and reaps; returns the exit code (or 128+signal).
  int stop(int sig);
  int wait();
  // Reads stdout until `needle` appears (or EOF); returns what was read.
  std::string read_until(const std::string& needle);
  // Reads one line of stdout, without its newline; "" at EOF.
  std::string read_line();
  std::string pending;  // read by read_line, not yet returned
};

// Starts argv with env added; stdout captured when capture_out, stdin a pipe when pipe_in.
// The child dies with the test process (PR_SET_PDEATHSIG) so nothing outlives a crash.
void spawn(Child* c, const std::vector<std::string>& argv, const Env& env, bool capture_out, bool pipe_in,
           const std::string& stderr_path = {});

// True when something accepts connections on the Unix socket `path`.
bool can_connect(const std::string& path);
void pause_ms(int ms);
inline bool contains(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

}  // namespace hakctl_test
