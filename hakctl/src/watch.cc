// stats --watch: a refreshing view like top/varnishstat. On a terminal each frame redraws
// the screen; otherwise (a pipe, a file) each interval appends one snapshot, so logs and
// `| head` work. SIGINT/SIGTERM end it cleanly with exit 0; a closed stdout (SIGPIPE is
// ignored, EPIPE seen by write_out) ends it quietly too.
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "commands.h"
#include "views.h"

namespace hakctl {

namespace {

volatile sig_atomic_t g_stop = 0;

void on_stop_signal(int) { g_stop = 1; }

double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Sleeps until `deadline` (monotonic seconds); returns false when a stop signal came first.
bool sleep_until(double deadline) {
  while (!g_stop) {
    const double left = deadline - now_s();
    if (left <= 0) return true;
    timespec ts;
    ts.tv_sec = static_cast<time_t>(left);
    ts.tv_nsec = static_cast<long>((left - static_cast<double>(ts.tv_sec)) * 1e9);
    nanosleep(&ts, nullptr);  // EINTR: loop and look at g_stop
  }
  return false;
}

std::string header(const Options& o, bool tty) {
  char when[64];
  const time_t t = time(nullptr);
  tm utc;
  gmtime_r(&t, &utc);
  strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &utc);
  char every[32];
  snprintf(every, sizeof every, "%g", o.interval_s);
  return std::string("hakctl stats --watch ") + every + "  " + when + "  rates per second since the last refresh" +
         (tty ? "  (Ctrl-C quits)" : "") + "\n\n";
}

}  // namespace

int run_watch(const Options& o) {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a signal must cut poll()/nanosleep() short
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  const bool tty = isatty(STDOUT_FILENO) == 1;
  Client c(socket_path(o), o.timeout_s);
  c.set_interrupt_flag(&g_stop);
  json req = {{"cmd", "stats"}};
  if (o.pid) req["pid"] = o.pid;

  try {
    c.hello();
    json prev;
    double prev_t = 0;
    for (long n = 1;; n++) {
      json r;
      try {
        r = c.call_ok(req);
      } catch (const CliError& e) {
        // A daemon may drop a connection it thinks idle, or restart: try once more afresh.
        if (e.code() != Exit::Unreachable) throw;
        c.close();
        c.hello();
        r = c.call_ok(req);
      }
      const double t = now_s();
      if (o.json) {
        write_out(filter_tier(r, o.tier).dump() + "\n");
      } else {
        std::string frame = header(o, tty) + render_watch(r, prev, prev.is_null() ? 0 : t - prev_t, o.tier);
        write_out(tty ? "\x1b[H\x1b[2J" + frame : frame + "\n");
      }
      if (o.count && n >= o.count) break;
      prev = std::move(r);
      prev_t = t;
      if (!sleep_until(t + o.interval_s)) break;
    }
  } catch (const Interrupted&) {
  }
  return 0;
}

}  // namespace hakctl
