#include "proc.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <grp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>

namespace hakctl_test {

namespace {

int decode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

[[noreturn]] void exec_child(const std::vector<std::string>& argv, const Env& env, int as_uid = -1) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (as_uid >= 0) {
    const gid_t gid = static_cast<gid_t>(as_uid);
    if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(static_cast<uid_t>(as_uid)) != 0) _exit(126);
  }
  signal(SIGPIPE, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}

}  // namespace

RunResult run(const std::vector<std::string>& argv, const Env& env, const std::string& input, int as_uid) {
  int out[2], err[2], in[2];
  if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(in, O_CLOEXEC)) throw std::runtime_error("pipe");
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    dup2(in[0], 0);
    exec_child(argv, env, as_uid);
  }
  close(out[1]);
  close(err[1]);
  close(in[0]);
  if (!input.empty()) (void)!write(in[1], input.data(), input.size());
  close(in[1]);
  RunResult r;
  pollfd p[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open_fds = 2;
  while (open_fds) {
    if (poll(p, 2, -1) < 0) continue;
    for (int i = 0; i < 2; i++) {
      if (p[i].fd < 0 || !p[i].revents) continue;
      char buf[4096];
      const ssize_t n = read(p[i].fd, buf, sizeof buf);
      if (n <= 0) { close(p[i].fd); p[i].fd = -1; open_fds--; continue; }
      (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  r.status = decode(status);
  return r;
}

void spawn(Child* c, const std::vector<std::string>& argv, const Env& env, bool capture_out, bool pipe_in,
           const std::string& stderr_path) {
  int out[2] = {-1, -1}, in[2] = {-1, -1};
  if (capture_out && pipe2(out, O_CLOEXEC)) throw std::runtime_error("pipe");
  if (pipe_in && pipe2(in, O_CLOEXEC)) throw std::runtime_error("pipe");
  const pid_t pid = fork();
  if (pid == 0) {
    if (capture_out) dup2(out[1], 1);
    if (pipe_in) dup2(in[0], 0);
    if (!stderr_path.empty()) {
      const int fd = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (fd >= 0) dup2(fd, 2);
    }
    exec_child(argv, env);
  }
  c->pid = pid;
  if (capture_out) { close(out[1]); c->out_fd = out[0]; }
  if (pipe_in) { close(in[0]); c->in_fd = in[1]; }
}

int Child::wait() {
  if (pid < 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  pid = -1;
  return decode(status);
}

int Child::stop(int sig) {
  if (pid < 0) return -1;
  kill(pid, sig);
  return wait();
}

std::string Child::read_until(const std::string& needle) {
  std::string got;
  char buf[4096];
  while (got.find(needle) == std::string::npos) {
    const ssize_t n = read(out_fd, buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

std::string Child::read_line() {
  for (;;) {
    const size_t nl = pending.find('\n');
    if (nl != std::string::npos) {
      std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      return line;
    }
    char buf[512];
    const ssize_t n = read(out_fd, buf, sizeof buf);
    if (n <= 0) return {};
    pending.append(buf, static_cast<size_t>(n));
  }
}

bool can_connect(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

void pause_ms(int ms) { poll(nullptr, 0, ms); }

Child::~Child() {
  if (in_fd >= 0) close(in_fd);
  if (pid > 0) stop(SIGKILL);
  if (out_fd >= 0) close(out_fd);
}

}  // namespace hakctl_test
