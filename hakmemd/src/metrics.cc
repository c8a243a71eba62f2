#include "metrics.h"

#include <string.h>

#include <functional>
#include <optional>

#include "procfs.h"

namespace hakmemd {

namespace proto = hakmem::proto;

std::string metrics_escape(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

namespace {

struct Row {
  ProcessEntry* e;
  proto::Snapshot s;
  std::optional<ProcStat> st;
  std::optional<uint64_t> rss;
  std::string labels;  // pid="..",exe=".."
};

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

class Writer {
 public:
  void family(const std::string& name, const char* type, const std::string& help) {
    out_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  void sample(const std::string& name, const std::string& labels, uint64_t v) {
    out_ += name + (labels.empty() ? "" : "{" + labels + "}") + " " + std::to_string(v) + "\n";
  }
  void sample(const std::string& name, const std::string& labels, double v) {
    char buf[64];
    snprintf(buf, sizeof buf, "%.3f", v);
    out_ += name + (labels.empty() ? "" : "{" + labels + "}") + " " + buf + "\n";
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace

std::string metrics_render(Registry& reg) {
  std::vector<Row> rows;
  for (ProcessEntry* e : reg.list()) {
    if (!reg.still_alive(*e)) continue;
    Row r{e, {}, e->has_last_stat ? std::optional<ProcStat>(e->last_stat) : proc_stat(e->pid), proc_rss_bytes(e->pid), {}};
    if (!reg.read_snapshot(*e, &r.s)) continue;
    r.labels = "pid=\"" + std::to_string(e->pid) + "\",exe=\"" + metrics_escape(e->exe) + "\"";
    rows.push_back(std::move(r));
  }
  const double up = proc_uptime_s();
  Writer w;
  w.family("hakmem_processes", "gauge", "processes running libhakmem seen by hakmemd");
  w.sample("hakmem_processes", "", static_cast<uint64_t>(rows.size()));

  auto per_tier = [&](const std::string& name, const char* type, const std::string& help,
                      const std::function<uint64_t(const proto::TierSnapshot&)>& get) {
    w.family(name, type, help);
    for (const Row& r : rows)
      for (size_t t = 0; t < proto::kTierCount; t++)
        w.sample(name, r.labels + ",tier=\"" + proto::kTierNames[t] + "\"", get(r.s.tier[t]));
  };
  for (size_t c = 0; c < proto::kThreadCounterCount; c++)
    per_tier(std::string("hakmem_") + proto::kThreadCounters[c].name + "_total", "counter",
             proto::kThreadCounters[c].help, [c](const proto::TierSnapshot& t) { return t.thread[c]; });
  per_tier("hakmem_hits_total", "counter", "allocations served by the thread cache without a refill",
           [](const proto::TierSnapshot& t) { return t.hits(); });
  per_tier("hakmem_live_bytes", "gauge", "bytes handed out and not yet freed",
           [](const proto::TierSnapshot& t) { return t.live_bytes(); });
  for (size_t c = 0; c < proto::kGlobalCounterCount; c++) {
    const std::string n = proto::kGlobalCounters[c].name;
    const bool level = ends_with(n, "_bytes");
    per_tier("hakmem_" + n + (level ? "" : "_total"), level ? "gauge" : "counter", proto::kGlobalCounters[c].help,
             [c](const proto::TierSnapshot& t) { return t.global[c]; });
  }

  auto per_proc = [&](const char* name, const char* type, const char* help, const std::function<uint64_t(const Row&)>& get) {
    w.family(name, type, help);
    for (const Row& r : rows) w.sample(name, r.labels, get(r));
  };
  per_proc("hakmem_page_faults_total", "counter", "minor page faults of the process (/proc/pid/stat)",
           [](const Row& r) { return r.st ? r.st->minflt : 0; });
  per_proc("hakmem_major_page_faults_total", "counter", "major page faults of the process (/proc/pid/stat)",
           [](const Row& r) { return r.st ? r.st->majflt : 0; });
  per_proc("hakmem_rss_bytes", "gauge", "resident set size of the process",
           [](const Row& r) { return r.rss ? *r.rss : 0; });
  per_proc("hakmem_threads", "gauge", "threads holding a counter slot",
           [](const Row& r) { return static_cast<uint64_t>(r.s.threads_live); });
  per_proc("hakmem_invalid_frees_total", "counter", "frees of pointers hakmem does not own",
           [](const Row& r) { return r.s.invalid_frees; });
  per_proc("hakmem_double_frees_total", "counter", "detected double frees", [](const Row& r) { return r.s.double_frees; });
  per_proc("hakmem_knob_generation", "gauge", "knob generation written into the segment",
           [](const Row& r) { return r.s.knob_generation; });
  w.family("hakmem_uptime_seconds", "gauge", "seconds since the process started");
  for (const Row& r : rows) w.sample("hakmem_uptime_seconds", r.labels, proc_age_s(r.e->start_time_ticks, up));
  w.family("hakmem_knob_value", "gauge", "current value of each knob");
  for (const Row& r : rows)
    for (size_t k = 0; k < proto::kKnobCount; k++)
      w.sample("hakmem_knob_value", r.labels + ",knob=\"" + proto::kKnobs[k].name + "\"", r.s.knob[k]);
  return w.take();
}

}  // namespace hakmemd
