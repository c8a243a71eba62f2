#include "daemon.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include "handler.h"
#include "metrics.h"
#include "registry.h"
#include "server.h"
#include "sites.h"

namespace hakmemd {

namespace asio = boost::asio;
using boost::system::error_code;

void set_log_level(const std::string& level) {
  spdlog::set_level(spdlog::level::from_str(level == "warning" ? "warn" : level));
}

struct Daemon::Impl {
  Overrides ov;
  Config cfg;
  asio::io_context io;
  std::unique_ptr<Registry> reg;
  std::unique_ptr<Handler> handler;
  std::unique_ptr<UnixServer> unix_server;
  std::unique_ptr<MetricsServer> metrics;
  asio::steady_timer scan_timer{io};
  asio::steady_timer pending_timer{io};
  bool pending_armed = false;
  asio::signal_set signals{io, SIGTERM, SIGINT, SIGHUP};
  asio::posix::stream_descriptor inotify{io};
  int watch = -1;
  alignas(struct inotify_event) char ev_buf[16384];

  explicit Impl(Overrides o) : ov(std::move(o)) {}

  bool start_metrics(std::string* error) {
    metrics.reset();
    if (cfg.metrics.empty()) return true;
    std::string host;
    uint16_t port = 0;
    parse_host_port(cfg.metrics, &host, &port);
    auto m = std::make_unique<MetricsServer>(io, [this] { return metrics_render(*reg); });
    if (!m->listen(host, port, error)) return false;
    spdlog::info("serving Prometheus metrics on http://{}/metrics", cfg.metrics);
    metrics = std::move(m);
    return true;
  }

  void apply_defaults(ProcessEntry& e) {
    sites_apply_config(e, cfg.rules);
    for (const DefaultRule& rule : cfg.defaults) {
      if (!exe_matches(rule.exe, e.exe)) continue;
      std::vector<uint64_t> old;
      uint64_t gen = 0;
      if (!reg->write_knobs(e, rule.knobs, &old, &gen)) return;
      for (size_t i = 0; i < rule.knobs.size(); i++) {
        const auto& k = *rule.knobs[i].info;
        spdlog::info("knob set by config default '{}': process {} ({}) {} {} -> {}", rule.exe, e.pid, e.exe, k.name,
                     knob_value_text(k, old[i]), knob_value_text(k, rule.knobs[i].value));
      }
    }
  }

  void arm_pending() {
    if (pending_armed || !reg->has_pending()) return;
    pending_armed = true;
    pending_timer.expires_after(std::chrono::milliseconds(20));
    pending_timer.async_wait([this](const error_code& ec) {
      pending_armed = false;
      if (ec) return;
      reg->retry_pending();
      arm_pending();
    });
  }

  void add_watch() {
    if (!inotify.is_open() || watch >= 0) return;
    watch = inotify_add_watch(inotify.native_handle(), reg->dir().c_str(),
                              IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_MOVED_TO | IN_DELETE |
                                  IN_MOVED_FROM | IN_DELETE_SELF | IN_ONLYDIR);
    if (watch < 0) spdlog::warn("inotify on {} failed: {}; relying on the periodic scan", reg->dir(), strerror(errno));
  }

  void scan() {
    add_watch();
    reg->scan();
    sites_follow(*reg);
    arm_pending();
  }

  void schedule_scan() {
    scan_timer.expires_after(std::chrono::milliseconds(cfg.scan_interval_ms));
    scan_timer.async_wait([this](const error_code& ec) {
      if (ec) return;
      scan();
      schedule_scan();
    });
  }

  void read_inotify() {
    inotify.async_read_some(asio::buffer(ev_buf), [this](const error_code& ec, size_t n) {
      if (ec) {
        if (ec != asio::error::operation_aborted) spdlog::warn("inotify read failed: {}", ec.message());
        return;
      }
      for (size_t off = 0; off + sizeof(struct inotify_event) <= n;) {
        const auto* ev = reinterpret_cast<const struct inotify_event*>(ev_buf + off);
        off += sizeof(struct inotify_event) + ev->len;
        if (ev->mask & IN_Q_OVERFLOW) {
          reg->scan();
          continue;
        }
        if (ev->mask & (IN_IGNORED | IN_DELETE_SELF)) {
          watch = -1;  // the folder went away; the periodic scan re-adds the watch
          continue;
        }
        if (ev->len == 0) continue;
        const std::string name(ev->name, strnlen(ev->name, ev->len));
        if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) reg->on_deleted(name);
        else reg->on_created(name);
      }
      arm_pending();
      read_inotify();
    });
  }

  void reload() {
    Config next;
    std::string error;
    if (!config_resolve(ov, &next, &error)) {
      spdlog::error("SIGHUP: configuration not reloaded: {}", error);
      return;
    }
    if (next.socket != cfg.socket) spdlog::warn("SIGHUP: socket path change to {} needs a restart", next.socket);
    if (next.shm_dir != cfg.shm_dir) spdlog::warn("SIGHUP: shm_dir change to {} needs a restart", next.shm_dir);
    next.socket = cfg.socket;
    next.shm_dir = cfg.shm_dir;
    const bool metrics_changed = next.metrics != cfg.metrics;
    cfg = std::move(next);
    sites_config_reloaded(*reg, cfg.rules);
    set_log_level(cfg.log_level);
    if (metrics_changed) {
      std::string err;
      if (!start_metrics(&err)) spdlog::error("SIGHUP: {}", err);
      else if (cfg.metrics.empty()) spdlog::info("metrics endpoint turned off");
    }
    scan_timer.cancel();
    schedule_scan();
    spdlog::info("configuration reloaded: scan every {} ms, log level {}, {} default rule(s)", cfg.scan_interval_ms,
                 cfg.log_level, cfg.defaults.size());
  }

  void wait_signal() {
    signals.async_wait([this](const error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        reload();
        wait_signal();
        return;
      }
      spdlog::info("signal {}: stopping", strsignal(sig));
      stop();
    });
  }

  void stop() {
    if (unix_server) unix_server->close();
    if (metrics) metrics->close();
    scan_timer.cancel();
    pending_timer.cancel();
    error_code ignored;
    signals.cancel(ignored);
    inotify.close(ignored);
    io.stop();
  }

  int run() {
    std::string error;
    if (!config_resolve(ov, &cfg, &error)) {
      spdlog::error("{}", error);
      return 2;
    }
    set_log_level(cfg.log_level);
    signal(SIGPIPE, SIG_IGN);
    reg = std::make_unique<Registry>(cfg.shm_dir);
    reg->on_new = [this](ProcessEntry& e) { apply_defaults(e); };
    handler = std::make_unique<Handler>(*reg);

    unix_server = std::make_unique<UnixServer>(io, *handler);
    if (!unix_server->listen(cfg.socket, &error)) {
      spdlog::error("{}", error);
      return 1;
    }
    if (!start_metrics(&error)) {
      spdlog::error("{}", error);
      unix_server->close();
      return 1;
    }
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd >= 0) {
      inotify.assign(fd);
      read_inotify();
    } else {
      spdlog::warn("inotify unavailable ({}); relying on the periodic scan", strerror(errno));
    }
    wait_signal();
    spdlog::info("hakmemd {} listening on {} (segments in {}, scan every {} ms)", HAKMEM_VERSION, cfg.socket,
                 cfg.shm_dir, cfg.scan_interval_ms);
    scan();
    schedule_scan();
    // A handler that throws must not take the daemon down: log it and keep serving.
    for (;;) {
      try {
        io.run();
        break;
      } catch (const std::exception& e) {
        spdlog::error("internal error, continuing: {}", e.what());
      }
    }
    spdlog::info("hakmemd stopped");
    return 0;
  }
};

Daemon::Daemon(Overrides ov) : impl_(std::make_unique<Impl>(std::move(ov))) {}
Daemon::~Daemon() = default;
int Daemon::run() { return impl_->run(); }

}  // namespace hakmemd
