#include "fake_server.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

namespace hakctl_test {

Action ok(const json& req, json result) {
  Action a;
  a.reply = {{"id", req.value("id", json())}, {"ok", true}, {"result", std::move(result)}};
  return a;
}

Action fail(const json& req, const std::string& code, const std::string& message) {
  Action a;
  a.reply = {{"id", req.value("id", json())}, {"ok", false}, {"error", {{"code", code}, {"message", message}}}};
  return a;
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/hakctl-test-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  path = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

FakeServer::FakeServer(Handler handler) : handler_(std::move(handler)) {
  char tmpl[] = "/tmp/hakctl-fake-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  path_ = dir_ + "/fake.sock";
  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strcpy(addr.sun_path, path_.c_str());
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listen_fd_, 16) != 0)
    throw std::runtime_error("fake server: cannot listen on " + path_);
  if (pipe(stop_pipe_) != 0) throw std::runtime_error("pipe failed");
  thread_ = std::thread([this] { loop(); });
}

FakeServer::~FakeServer() {
  (void)!write(stop_pipe_[1], "x", 1);
  thread_.join();
  close(listen_fd_);
  close(stop_pipe_[0]);
  close(stop_pipe_[1]);
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::vector<json> FakeServer::requests() {
  std::lock_guard<std::mutex> g(mu_);
  return requests_;
}

void FakeServer::loop() {
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    if (poll(p, 2, -1) < 0) continue;
    if (p[1].revents) return;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) serve(fd);
  }
}

// One client at a time, until it hangs up, the handler says Close, or the test ends.
void FakeServer::serve(int fd) {
  std::string buf;
  for (;;) {
    pollfd p[2] = {{fd, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    if (poll(p, 2, -1) < 0) continue;
    if (p[1].revents) break;
    char chunk[4096];
    const ssize_t n = read(fd, chunk, sizeof chunk);
    if (n <= 0) break;
    buf.append(chunk, static_cast<size_t>(n));
    size_t nl;
    bool closed = false;
    while (!closed && (nl = buf.find('\n')) != std::string::npos) {
      const json req = json::parse(buf.substr(0, nl), nullptr, false);
      buf.erase(0, nl + 1);
      {
        std::lock_guard<std::mutex> g(mu_);
        requests_.push_back(req);
      }
      const Action a = handler_(req);
      std::string out;
      if (a.kind == Action::Reply) out = a.reply.dump() + "\n";
      if (a.kind == Action::Raw) out = a.raw;
      if (a.kind == Action::Close) closed = true;
      for (size_t off = 0; off < out.size();) {
        const ssize_t w = send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
        if (w <= 0) { closed = true; break; }
        off += static_cast<size_t>(w);
      }
    }
    if (closed) break;
  }
  close(fd);
}

}  // namespace hakctl_test
