// Integration-test harness: the real hakmemd binary on a private socket and segment folder,
// a line-oriented socket client with timeouts (a broken daemon fails a test, never hangs it),
// and a tiny HTTP GET. Everything started here is stopped in destructors, also on failure.
#pragma once

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "fake_segment.h"
#include "hakmem/proto/protocol.h"

namespace hakmem_test {

using nlohmann::json;

inline std::string hakmemd_path() {
  if (const char* p = getenv("HAKMEMD"); p && *p) return p;
  return HAKMEMD_PATH;
}

// Polls `cond` every 10 ms for up to `seconds`; a bounded wait for asynchronous effects
// (discovery, removal), not a timing assertion.
inline bool eventually(const std::function<bool()>& cond, double seconds = 10) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

class Client {
 public:
  Client() = default;
  explicit Client(const std::string& path) { connect(path); }
  ~Client() { close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  Client(Client&& o) noexcept : fd_(o.fd_), buf_(std::move(o.buf_)) { o.fd_ = -1; }

  bool connect(const std::string& path) {
    close();
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path.c_str());
    if (::connect(fd_, reinterpret_cast<struct sockaddr*>(&sun), sizeof sun) != 0) {
      close();
      return false;
    }
    return true;
  }
  bool connected() const { return fd_ >= 0; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool send_raw(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // The next reply line, or nullopt on EOF/timeout.
  std::optional<std::string> read_line(int timeout_ms = 10000) {
    for (;;) {
      if (size_t nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      struct pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, timeout_ms) <= 0) return std::nullopt;
      char tmp[65536];
      ssize_t n = recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) return std::nullopt;
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }
  // True when the daemon closed the connection within the timeout: EOF, or ECONNRESET when
  // it closed with some of our bytes still unread (what AF_UNIX reports then).
  bool closed_by_peer(int timeout_ms = 10000) {
    struct pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return false;
    char c;
    ssize_t n = recv(fd_, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }
  json call(const json& req) {
    if (!send_raw(req.dump() + "\n")) return json{{"transport_error", "send"}};
    auto line = read_line();
    if (!line) return json{{"transport_error", "no reply"}};
    return json::parse(*line, nullptr, false);
  }

 private:
  int fd_ = -1;
  std::string buf_;
};

class DaemonProc {
 public:
  // Starts hakmemd on <tmp>/run/hakmemd.sock with segments in <tmp>/shm.
  explicit DaemonProc(std::vector<std::string> extra = {}, bool wait_ready = true) {
    shm_ = dir_.path() + "/shm";
    mkdir(shm_.c_str(), 0755);
    socket_ = dir_.path() + "/run/hakmemd.sock";
    log_ = dir_.path() + "/hakmemd.log";
    args_ = {hakmemd_path(), "--socket", socket_, "--shm-dir", shm_, "--scan-interval-ms", "100",
             "--log-level", "debug"};
    for (auto& a : extra) args_.push_back(a);
    start(wait_ready);
  }
  ~DaemonProc() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  void start(bool wait_ready = true) {
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 2);
      dup2(fd, 1);
      std::vector<char*> argv;
      for (auto& a : args_) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    if (wait_ready) ready_ = eventually([&] { return Client().connect(socket_) || exited(); }) && !exited();
  }
  bool ready() const { return ready_; }
  pid_t pid() const { return pid_; }
  const std::string& socket() const { return socket_; }
  const std::string& shm() const { return shm_; }
  const std::string& tmp() const { return dir_.path(); }

  bool exited() {
    if (pid_ <= 0) return true;
    int st;
    pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = st;
      pid_ = -1;
      return true;
    }
    return false;
  }
  // Sends sig and waits (bounded) for the exit; the exit status or -1.
  int signal_and_wait(int sig) {
    if (pid_ <= 0) return status_;
    kill(pid_, sig);
    if (!eventually([&] { return exited(); })) return -1;
    return status_;
  }
  int status() const { return status_; }
  std::string log() const {
    std::ifstream f(log_);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  Client client() { return Client(socket_); }
  json ps() {
    Client c(socket_);
    return c.call({{"cmd", "ps"}});
  }
  bool lists(pid_t pid) {
    json r = ps();
    if (!r.contains("result")) return false;
    for (const auto& p : r["result"]["processes"])
      if (p["pid"] == pid) return true;
    return false;
  }

 private:
  TempDir dir_;
  std::string shm_, socket_, log_;
  std::vector<std::string> args_;
  pid_t pid_ = -1;
  int status_ = -1;
  bool ready_ = false;
};

// A free loopback TCP port (bound then released; the daemon binds it right after).
inline uint16_t free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<struct sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<struct sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// GET http://127.0.0.1:port/path; returns the whole response (head and body).
inline std::string http_get(uint16_t port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<struct sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n";
  (void)!send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[65536];
  for (;;) {
    struct pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10000) <= 0) break;
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace hakmem_test
