// The commands: each turns Options into requests (client.h) and the replies into output
// (views.h). run() returns the exit code or throws CliError; main() prints errors.
#pragma once

#include <string>

#include "args.h"

namespace hakctl {

// Thrown when stdout is a closed pipe (`hakctl ps | head -1`): not an error, exit 0.
struct BrokenPipe {};

// Writes to stdout and flushes; throws BrokenPipe on EPIPE.
void write_out(const std::string& text);

int run(const Options& o);
// stats --watch (watch.cc).
int run_watch(const Options& o);

// The socket path hakctl uses: --socket, else $HAKMEM_SOCKET, else the per-user default.
std::string socket_path(const Options& o);

}  // namespace hakctl
