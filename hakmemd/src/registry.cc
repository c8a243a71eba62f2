#include "registry.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>

#include <spdlog/spdlog.h>

#include "procfs.h"

namespace hakmemd {

namespace proto = hakmem::proto;

namespace {

bool parse_u64(const char* s, size_t n, uint64_t max, uint64_t* out) {
  if (n == 0 || n > 10) return false;  // uid_t and pid_t fit in 10 digits
  if (n > 1 && s[0] == '0') return false;  // one spelling per number
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + static_cast<uint64_t>(s[i] - '0');
  }
  if (v > max) return false;
  *out = v;
  return true;
}

// A bounded copy of a NUL-terminated field that the writer may not have terminated.
std::string bounded(const char* s, size_t cap) { return std::string(s, strnlen(s, cap)); }

}  // namespace

bool parse_segment_name(const std::string& name, uid_t* uid, pid_t* pid) {
  const size_t plen = strlen(proto::kSegmentPrefix);
  if (name.compare(0, plen, proto::kSegmentPrefix) != 0) return false;
  const size_t dot = name.find('.', plen);
  if (dot == std::string::npos) return false;
  uint64_t u, p;
  if (!parse_u64(name.data() + plen, dot - plen, UINT32_MAX - 1, &u)) return false;
  if (!parse_u64(name.data() + dot + 1, name.size() - dot - 1, INT32_MAX, &p) || p == 0) return false;
  *uid = static_cast<uid_t>(u);
  *pid = static_cast<pid_t>(p);
  return true;
}

Registry::Registry(std::string dir) : dir_(std::move(dir)) { bus_guard_install(); }
Registry::~Registry() = default;

void Registry::reject(const std::string& name, ino_t ino, const std::string& reason) {
  std::string key = std::to_string(ino) + ":" + reason;
  auto it = rejected_.find(name);
  if (it != rejected_.end() && it->second == key) return;
  rejected_[name] = key;
  spdlog::warn("skipping segment {}/{}: {}", dir_, name, reason);
}

bool Registry::unlink_if_same(const std::string& name, dev_t dev, ino_t ino) {
  std::string path = dir_ + "/" + name;
  struct stat st;
  if (lstat(path.c_str(), &st) != 0 || st.st_dev != dev || st.st_ino != ino) return false;
  if (unlink(path.c_str()) != 0) {
    spdlog::warn("cannot remove stale segment {}: {}", path, strerror(errno));
    return false;
  }
  return true;
}

void Registry::remove_entry(pid_t pid, const char* why, bool unlink_file) {
  auto it = entries_.find(pid);
  if (it == entries_.end()) return;
  ProcessEntry& e = *it->second;
  bool removed = unlink_file && unlink_if_same(e.name, e.dev, e.ino);
  spdlog::info("process {} ({}) dropped: {}{}", e.pid, e.exe, why, removed ? "; stale segment removed" : "");
  entries_.erase(it);
}

Registry::OpenResult Registry::try_open(const std::string& name) {
  uid_t uid;
  pid_t pid;
  if (!parse_segment_name(name, &uid, &pid)) return OpenResult::Ignored;
  const std::string path = dir_ + "/" + name;

  if (auto it = entries_.find(pid); it != entries_.end()) {
    struct stat st;
    ProcessEntry& e = *it->second;
    const std::string own = dir_ + "/" + e.name;
    const bool own_intact = lstat(own.c_str(), &st) == 0 && st.st_dev == e.dev && st.st_ino == e.ino;
    if (e.name == name && own_intact) return OpenResult::Registered;
    if (e.name != name && own_intact && still_alive(e)) {
      // The registered segment is healthy: a second file claiming the same pid is a forgery.
      struct stat other;
      reject(name, lstat(path.c_str(), &other) == 0 ? other.st_ino : 0, "pid already served by " + e.name);
      return OpenResult::Rejected;
    }
    // The old file is gone or its process is: the pid now belongs to a new process.
    remove_entry(pid, "its pid now belongs to a new segment", false);
  }

  auto settle = [&](OpenResult r) {
    if (r == OpenResult::NotReady) pending_.emplace(name, std::chrono::steady_clock::now());
    else pending_.erase(name);
    if (r == OpenResult::Registered || r == OpenResult::Stale || r == OpenResult::Ignored) rejected_.erase(name);
    return r;
  };

  int fd = open(path.c_str(), O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return settle(OpenResult::Ignored);
    if (errno == EACCES || errno == EPERM) {
      // Another user's segment seen by a non-root daemon: not ours to read.
      rejected_[name] = "0:eacces";
      return settle(OpenResult::Rejected);
    }
    reject(name, 0, std::string("cannot open: ") + strerror(errno));
    return settle(OpenResult::Rejected);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return settle(OpenResult::Ignored);
  }
  auto fail = [&](OpenResult r, const std::string& why) {
    close(fd);
    if (r == OpenResult::Rejected) reject(name, st.st_ino, why);
    return settle(r);
  };
  if (!S_ISREG(st.st_mode)) return fail(OpenResult::Rejected, "not a regular file");
  if (st.st_uid != uid)
    return fail(OpenResult::Rejected, "owned by uid " + std::to_string(st.st_uid) + ", the name says " +
                                          std::to_string(uid));
  if (st.st_mode & (S_IWGRP | S_IWOTH)) return fail(OpenResult::Rejected, "group- or world-writable");

  // The name's process is gone: whatever the file holds, nobody will ever remove it but us.
  if (proc_liveness(pid) == Liveness::Dead) {
    close(fd);
    if (unlink_if_same(name, st.st_dev, st.st_ino))
      spdlog::info("removed stale segment {} (process {} is gone)", path, pid);
    return settle(OpenResult::Stale);
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) return fail(OpenResult::NotReady, "");  // created, not sized yet
  if (size < sizeof(proto::Segment))
    return fail(OpenResult::Rejected, std::string(proto::segment_check_text(proto::SegmentCheck::TooSmall)) +
                                          " (" + std::to_string(size) + " < " +
                                          std::to_string(sizeof(proto::Segment)) + " bytes)");

  auto e = std::make_unique<ProcessEntry>();
  if (!e->map.map(fd, size)) return fail(OpenResult::Rejected, std::string("mmap failed: ") + strerror(errno));
  close(fd);
  fd = -1;

  proto::SegmentCheck check;
  uint64_t created_ticks = 0;
  int32_t hdr_pid = 0;
  uint32_t hdr_uid = 0;
  {
    BusGuard g(e->map.seg(), e->map.map_len());
    check = proto::validate_segment(e->map.seg(), size);
    const proto::SegmentHeader& h = e->map.seg()->header;
    if (check == proto::SegmentCheck::Ok) {
      created_ticks = h.created_boot_ticks;
      hdr_pid = h.pid;
      hdr_uid = h.uid;
      e->lib_version = bounded(h.lib_version, sizeof h.lib_version);
    }
    if (g.faulted()) {
      reject(name, st.st_ino, "file shrank while being read");
      return settle(OpenResult::Rejected);
    }
  }
  e->map.drop_pages();
  if (check == proto::SegmentCheck::NotReady) return settle(OpenResult::NotReady);
  if (check != proto::SegmentCheck::Ok) {
    reject(name, st.st_ino, proto::segment_check_text(check));
    return settle(OpenResult::Rejected);
  }
  if (hdr_pid != pid || hdr_uid != uid) {
    reject(name, st.st_ino, "header says pid " + std::to_string(hdr_pid) + " uid " + std::to_string(hdr_uid) +
                                ", the name says pid " + std::to_string(pid) + " uid " + std::to_string(uid));
    return settle(OpenResult::Rejected);
  }
  // The owner started before its segment was created; a process under this pid that started
  // later took the pid of a dead one.
  const auto ps = proc_stat(pid);
  if (ps && ps->start_time_ticks > created_ticks) {
    if (unlink_if_same(name, st.st_dev, st.st_ino))
      spdlog::info("removed stale segment {} (pid {} was reused by a newer process)", path, pid);
    return settle(OpenResult::Stale);
  }

  e->pid = pid;
  e->uid = uid;
  // Without /proc/<pid>/stat (hidepid) the creation time stands in for the start time: the
  // same process to every later check, and an uptime from when hakmem started in it.
  e->start_time_ticks = ps ? ps->start_time_ticks : created_ticks;
  e->exe = proc_exe(pid);
  e->cmdline = proc_cmdline(pid);
  e->name = name;
  e->dev = st.st_dev;
  e->ino = st.st_ino;
  ProcessEntry& ref = *e;
  entries_[pid] = std::move(e);
  spdlog::info("process {} uid {} ({}) registered, libhakmem {}", pid, uid, ref.exe, ref.lib_version);
  settle(OpenResult::Registered);
  if (on_new) on_new(ref);
  return OpenResult::Registered;
}

void Registry::scan() {
  std::set<std::string> names;
  if (DIR* d = opendir(dir_.c_str())) {
    while (struct dirent* de = readdir(d)) {
      if (strncmp(de->d_name, proto::kSegmentPrefix, strlen(proto::kSegmentPrefix)) == 0)
        names.insert(de->d_name);
    }
    closedir(d);
  } else {
    static std::string last_error;
    std::string err = strerror(errno);
    if (err != last_error) spdlog::warn("cannot read segment folder {}: {}", dir_, err);
    last_error = err;
  }

  // pid, 0 = vanished, 1 = faulted, 2 = stale, 3 = left behind by an exec
  std::vector<std::pair<pid_t, int>> drop;
  const auto now = std::chrono::steady_clock::now();
  for (auto& [pid, e] : entries_) {
    if (!names.count(e->name)) drop.push_back({pid, 0});
    else if (e->faulted) drop.push_back({pid, 1});
    else if (!still_alive(*e)) drop.push_back({pid, 2});
    else if (left_by_exec(*e, now)) drop.push_back({pid, 3});
  }
  for (auto [pid, why] : drop) {
    if (why == 0) {
      remove_entry(pid, "segment removed", false);
    } else if (why == 1) {
      remove_entry(pid, "segment truncated under the daemon", false);
    } else if (why == 2) {
      remove_entry(pid, "process exited", true);
    } else {
      const ProcessEntry& e = *entries_[pid];
      if (unlink_if_same(e.name, e.dev, e.ino))
        spdlog::info("removed stale segment {}/{} (process {} exec'd a program without hakmem)", dir_, e.name, pid);
      remove_entry(pid, "it exec'd a program without hakmem (its segment is no longer mapped)", false);
    }
  }

  for (const auto& n : names) try_open(n);
  for (auto it = rejected_.begin(); it != rejected_.end();)
    it = names.count(it->first) ? std::next(it) : rejected_.erase(it);
  for (auto it = pending_.begin(); it != pending_.end();)
    it = names.count(it->first) ? std::next(it) : pending_.erase(it);
}

void Registry::on_created(const std::string& name) { try_open(name); }

void Registry::on_deleted(const std::string& name) {
  pending_.erase(name);
  rejected_.erase(name);
  uid_t uid;
  pid_t pid;
  if (!parse_segment_name(name, &uid, &pid)) return;
  auto it = entries_.find(pid);
  if (it == entries_.end() || it->second->name != name) return;
  struct stat st;
  std::string path = dir_ + "/" + name;
  if (lstat(path.c_str(), &st) == 0 && st.st_ino == it->second->ino) return;  // still there
  remove_entry(pid, "segment removed", false);
}

namespace {
constexpr auto kPendingFastRetry = std::chrono::seconds(2);
}

bool Registry::has_pending() const {
  const auto now = std::chrono::steady_clock::now();
  for (const auto& [name, since] : pending_)
    if (now - since < kPendingFastRetry) return true;
  return false;
}

void Registry::retry_pending() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::string> names;
  for (const auto& [name, since] : pending_)
    if (now - since < kPendingFastRetry) names.push_back(name);
  for (const auto& n : names) try_open(n);
}

ProcessEntry* Registry::find(pid_t pid) {
  auto it = entries_.find(pid);
  return it == entries_.end() || it->second->faulted ? nullptr : it->second.get();
}

std::vector<ProcessEntry*> Registry::list() {
  std::vector<ProcessEntry*> out;
  out.reserve(entries_.size());
  for (auto& [pid, e] : entries_)
    if (!e->faulted) out.push_back(e.get());
  return out;
}

bool Registry::still_alive(ProcessEntry& e) {
  e.has_last_stat = false;
  if (e.faulted) return false;
  auto ps = proc_stat(e.pid);
  if (!ps) return proc_liveness(e.pid) != Liveness::Dead;  // no /proc access (hidepid): trust kill()
  if (ps->start_time_ticks != e.start_time_ticks) return false;
  e.last_stat = *ps;
  e.has_last_stat = true;
  return true;
}

bool Registry::left_by_exec(ProcessEntry& e, std::chrono::steady_clock::time_point now) {
  // No /proc/<pid>/stat (hidepid): no way to tell, and maps would be hidden as well.
  if (!e.has_last_stat) return false;
  const ProcImage& image = e.last_stat.image;
  // The common case costs nothing beyond the stat read still_alive() did: the program seen
  // mapping the segment is still the one running.
  if (e.has_mapped_image && image == e.mapped_image) return false;
  switch (proc_maps_file(e.pid, e.dev, e.ino, e.name.c_str())) {
    case MapCheck::Mapped:
      e.mapped_image = image;
      e.has_mapped_image = true;
      if (e.unmapped) spdlog::debug("process {}: segment {} mapped again", e.pid, e.name);
      e.unmapped = false;
      return false;
    case MapCheck::Unknown:
      return false;  // not ours to judge (no ptrace read access, or no address space)
    case MapCheck::NotMapped:
      break;
  }
  if (!e.unmapped) {
    e.unmapped = true;
    e.unmapped_since = now;
    spdlog::debug("process {} ({}) no longer maps its segment {}; dropping it in {} ms unless that changes", e.pid,
                  e.exe, e.name, unmapped_grace.count());
  }
  return now - e.unmapped_since >= unmapped_grace;
}

bool Registry::read_snapshot(ProcessEntry& e, proto::Snapshot* out) {
  if (e.faulted) return false;
  BusGuard g(e.map.seg(), e.map.map_len());
  proto::snapshot(*e.map.seg(), out);
  if (g.faulted()) e.faulted = true;
  e.map.drop_pages();
  return !e.faulted;
}

bool Registry::read_generations(ProcessEntry& e, uint64_t* generation, uint64_t* applied, uint64_t* applied_ns) {
  if (e.faulted) return false;
  BusGuard g(e.map.seg(), e.map.map_len());
  const proto::KnobBlock& kb = e.map.seg()->knobs;
  *generation = kb.generation.load(std::memory_order_acquire);
  *applied = kb.applied_generation.load(std::memory_order_acquire);
  *applied_ns = kb.applied_unix_ns.load(std::memory_order_relaxed);
  if (g.faulted()) e.faulted = true;
  e.map.drop_pages();
  return !e.faulted;
}

bool Registry::write_knobs(ProcessEntry& e, const std::vector<KnobValue>& values, std::vector<uint64_t>* old_values,
                           uint64_t* new_generation) {
  if (e.faulted) return false;
  old_values->clear();
  BusGuard g(e.map.seg(), e.map.map_len());
  proto::KnobBlock& kb = e.map.seg()->knobs;
  for (const KnobValue& kv : values) {
    const size_t i = static_cast<size_t>(kv.info->id);
    old_values->push_back(proto::knob_clamp(*kv.info, kb.value[i].load(std::memory_order_relaxed)));
    kb.value[i].store(kv.value, std::memory_order_relaxed);
  }
  // One generation per request: a thread that sees it reloads every value written above.
  *new_generation = kb.generation.fetch_add(1, std::memory_order_release) + 1;
  // The target's decay thread, if it runs one, waits on this word: it applies the write
  // now rather than at its next period or the program's next periodic check.
  syscall(SYS_futex, proto::knob_wake_word(kb), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
  e.map.drop_pages();
  if (g.faulted()) {
    e.faulted = true;
    return false;
  }
  for (const KnobValue& kv : values) e.knob_set_mask |= 1ull << static_cast<size_t>(kv.info->id);
  return true;
}

}  // namespace hakmemd
