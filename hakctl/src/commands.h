// The commands: each turns Options into requests (client.h) and the replies into output
// (views.h). run() returns the exit code or throws CliError; main() prints errors.
#pragma once

#include <string>
#include <vector>

#include "args.h"

namespace hakctl {

// Thrown when stdout is a closed pipe (`hakctl ps | head -1`): not an error, exit 0.
struct BrokenPipe {};

// Writes to stdout and flushes; throws BrokenPipe on EPIPE.
void write_out(const std::string& text);

int run(const Options& o);
// stats --watch (watch.cc).
int run_watch(const Options& o);

// `hakctl __complete commands | flags [COMMAND] | knobs [--live] | pids [--socket PATH]`:
// words for the bash completion, one per line; quiet and exit 0 on any failure.
int run_complete(const std::vector<std::string>& args);

// The socket path hakctl uses: --socket, else $HAKMEM_SOCKET, else the per-user default.
std::string socket_path(const Options& o);

}  // namespace hakctl
