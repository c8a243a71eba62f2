// hakmemd entry point: command line -> Overrides, then the daemon runs in the foreground.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "config.h"
#include "daemon.h"

namespace {

const char kUsage[] =
    "usage: hakmemd [--config FILE] [--socket PATH] [--metrics HOST:PORT] [--log-level LEVEL]\n"
    "               [--shm-dir DIR] [--scan-interval-ms N]\n"
    "\n"
    "The hakmem host daemon: finds processes running libhakmem through their shared-memory\n"
    "segments, serves their figures and takes knob changes over a Unix socket (for hakctl),\n"
    "and optionally serves Prometheus metrics. Runs in the foreground; logs go to stderr.\n"
    "\n"
    "  --config FILE          JSON config (see /etc/hakmem/hakmemd.json); SIGHUP reloads it\n"
    "  --socket PATH          Unix socket (default: $HAKMEM_SOCKET, /run/hakmem/hakmemd.sock for\n"
    "                         root, else $XDG_RUNTIME_DIR/hakmem/hakmemd.sock)\n"
    "  --metrics HOST:PORT    serve GET /metrics there, e.g. 127.0.0.1:9464 (default: off)\n"
    "  --log-level LEVEL      trace, debug, info (default), warn, error, critical, off\n"
    "  --shm-dir DIR          segment folder (default: $HAKMEM_SHM_DIR or /dev/shm)\n"
    "  --scan-interval-ms N   full rescan period besides inotify (default 1000)\n"
    "  --help, --version\n"
    "\n"
    "Command line beats environment, environment beats the config file.\n";

int usage_error(const std::string& msg) {
  fprintf(stderr, "hakmemd: %s\n%s", msg.c_str(), kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  hakmemd::Overrides ov;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    std::string value;
    bool has_inline = false;
    if (a.rfind("--", 0) == 0) {
      if (size_t eq = a.find('='); eq != std::string::npos) {
        value = a.substr(eq + 1);
        a.resize(eq);
        has_inline = true;
      }
    }
    auto need = [&](std::string* out) {
      if (has_inline) {
        *out = value;
        return true;
      }
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    if (a == "--help" || a == "-h") {
      fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--version" || a == "-V") {
      printf("hakmemd %s\n", HAKMEM_VERSION);
      return 0;
    }
    std::string v;
    if (a == "--config" || a == "--socket" || a == "--metrics" || a == "--log-level" || a == "--shm-dir" ||
        a == "--scan-interval-ms") {
      if (!need(&v) || v.empty()) return usage_error(a + " needs a value");
    } else {
      return usage_error("unknown option '" + a + "'");
    }
    if (a == "--config") ov.config_path = v;
    else if (a == "--socket") ov.socket = v;
    else if (a == "--shm-dir") ov.shm_dir = v;
    else if (a == "--metrics") {
      std::string host;
      uint16_t port;
      if (!hakmemd::parse_host_port(v, &host, &port)) return usage_error("--metrics needs HOST:PORT, got '" + v + "'");
      ov.metrics = v;
    } else if (a == "--log-level") {
      if (!hakmemd::valid_log_level(v)) return usage_error("unknown log level '" + v + "'");
      ov.log_level = v;
    } else if (a == "--scan-interval-ms") {
      char* end = nullptr;
      unsigned long n = strtoul(v.c_str(), &end, 10);
      if (!end || *end || n < 10 || n > 3600000) return usage_error("--scan-interval-ms needs 10..3600000");
      ov.scan_interval_ms = static_cast<uint32_t>(n);
    }
  }
  auto logger = spdlog::stderr_logger_mt("hakmemd");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::flush_on(spdlog::level::info);
  return hakmemd::Daemon(std::move(ov)).run();
}
