// The client side of the hakmemd socket protocol (proto/PROTOCOL.md): a Unix stream socket
// carrying one JSON object per line. Every wait is bounded by the timeout, so hakctl never
// hangs on a stuck daemon; every failure becomes a CliError with the right exit code.
#pragma once

#include <signal.h>
#include <stdint.h>

#include <nlohmann/json.hpp>
#include <string>

#include "exit.h"

namespace hakctl {

// ordered: --json prints the daemon's objects with their keys in the daemon's order.
using json = nlohmann::ordered_json;

struct Reply {
  bool ok = false;
  json result;                // when ok
  std::string error_code;     // when !ok: proto::err::*
  std::string error_message;  // when !ok: one line for people
};

// Thrown when the interrupt flag (SIGINT) is raised during a wait; not an error.
struct Interrupted {};

class Client {
 public:
  Client(std::string socket_path, double timeout_s);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& socket_path() const { return path_; }

  // Connects; throws CliError(Exit::Unreachable) saying what to do.
  void connect();
  void close();
  bool connected() const { return fd_ >= 0; }

  // Sends `request` (an "id" is added) and reads its reply. Throws CliError(Unreachable)
  // on I/O failure, timeout, a closed connection or an unreadable reply.
  Reply call(json request);
  // call() that turns an ok:false reply into CliError(Exit::DaemonError, "code: message").
  json call_ok(json request);
  // The hello exchange; a version_mismatch reply becomes CliError(DaemonError) with a hint.
  json hello();

  // While *flag is non-zero, waits end by throwing Interrupted (set by a SIGINT handler).
  void set_interrupt_flag(const volatile sig_atomic_t* flag) { interrupt_ = flag; }

 private:
  void send_all(const std::string& data, double deadline);
  std::string read_line(double deadline);
  bool wait_fd(short events, double deadline);

  std::string path_;
  double timeout_s_;
  int fd_ = -1;
  std::string buf_;
  uint64_t next_id_ = 1;
  const volatile sig_atomic_t* interrupt_ = nullptr;
};

// The message for a failed connect() to `path` with errno `err` (unit-tested directly).
std::string describe_connect_error(int err, const std::string& path);
// The exit code for an error reply's code: always DaemonError; kept as one function so the
// mapping is tested and stays in one place.
Exit exit_for_error_code(const std::string& code);

}  // namespace hakctl
