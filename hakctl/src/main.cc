// hakctl: the operator CLI of hakmem. Parse (args.cc), talk to hakmemd (client.cc),
// render (views.cc); this file only maps failures to messages and exit codes.
#include <signal.h>
#include <stdio.h>

#include <string>
#include <vector>

#include "args.h"
#include "client.h"
#include "commands.h"
#include "exit.h"

int main(int argc, char** argv) {
  // Writes to a closed pipe must return EPIPE (handled as a quiet exit), not kill us.
  signal(SIGPIPE, SIG_IGN);
  try {
    if (argc >= 2 && std::string(argv[1]) == "__complete")  // for the bash completion script
      return hakctl::run_complete(std::vector<std::string>(argv + 2, argv + argc));
    const hakctl::Options o = hakctl::parse_args(std::vector<std::string>(argv + 1, argv + argc));
    return hakctl::run(o);
  } catch (const hakctl::CliError& e) {
    fflush(stdout);
    fprintf(stderr, "hakctl: %s\n", e.what());
    if (!e.hint().empty()) fprintf(stderr, "hint: %s\n", e.hint().c_str());
    return static_cast<int>(e.code());
  } catch (const hakctl::BrokenPipe&) {
    return 0;
  } catch (const hakctl::Interrupted&) {
    return 0;
  } catch (const std::exception& e) {
    fprintf(stderr, "hakctl: internal error: %s\n", e.what());
    return static_cast<int>(hakctl::Exit::DaemonError);
  }
}
