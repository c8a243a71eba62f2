// hakctl's exit codes and the one error type that carries them to main(). Scripts rely on
// the numbers: 0 ok, 1 the daemon answered with an error, 2 usage error, 3 daemon unreachable.
#pragma once

#include <stdexcept>
#include <string>

namespace hakctl {

enum class Exit : int {
  Ok = 0,
  DaemonError = 1,  // hakmemd replied ok:false (unknown knob, out of range, no such pid, ...)
  Usage = 2,        // the command line is wrong; nothing was sent
  Unreachable = 3,  // no socket, refused, permission denied, timeout, connection lost
};

// Thrown by commands; main() prints "hakctl: <message>" (+ hint line) and exits with `code`.
class CliError : public std::runtime_error {
 public:
  CliError(Exit code, std::string message, std::string hint = {})
      : std::runtime_error(std::move(message)), code_(code), hint_(std::move(hint)) {}
  Exit code() const { return code_; }
  const std::string& hint() const { return hint_; }

 private:
  Exit code_;
  std::string hint_;
};

}  // namespace hakctl
