#include "client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hakmem/proto/protocol.h"

namespace hakctl {

namespace {

constexpr const char* kStartHint = "start it with `hakmemd` or `systemctl start hakmemd`";
// Replies can be large (stats over hundreds of processes) but never this large; a longer
// line means the peer is not hakmemd.
constexpr size_t kMaxReplyBytes = 256u << 20;

double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

std::string seconds_text(double s) {
  char buf[32];
  snprintf(buf, sizeof buf, "%g s", s);
  return buf;
}

}  // namespace

std::string describe_connect_error(int err, const std::string& path) {
  switch (err) {
    case ENOENT:
      return "hakmemd is not running: no socket at " + path + "; " + kStartHint;
    case ECONNREFUSED:
      return "hakmemd is not running: nothing listens on " + path +
             " (a socket left behind by a stopped daemon); " + kStartHint;
    case EACCES:
    case EPERM:
      return "cannot reach hakmemd: permission denied on " + path +
             "; run hakctl as the socket's owner, or point --socket (or HAKMEM_SOCKET) at your own daemon";
    case ENOTDIR:
      return "hakmemd is not running: a part of " + path + " is not a directory; " + kStartHint;
    case ENAMETOOLONG:
      return "socket path too long (" + std::to_string(path.size()) + " bytes, at most " +
             std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + "): " + path;
    case EAGAIN:
    case ETIMEDOUT:
      return "hakmemd at " + path + " did not accept the connection in time (overloaded or stuck?); "
             "check `systemctl status hakmemd`";
    case ENOTSOCK:
      return "hakmemd is not running: " + path + " is not a socket; " + kStartHint;
    default:
      return "cannot reach hakmemd at " + path + ": " + strerror(err);
  }
}

Exit exit_for_error_code(const std::string&) { return Exit::DaemonError; }

Client::Client(std::string socket_path, double timeout_s) : path_(std::move(socket_path)), timeout_s_(timeout_s) {}

Client::~Client() { close(); }

void Client::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buf_.clear();
}

void Client::connect() {
  close();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path_.size() >= sizeof addr.sun_path)
    throw CliError(Exit::Unreachable, describe_connect_error(ENAMETOOLONG, path_));
  memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw CliError(Exit::Unreachable, std::string("cannot create a socket: ") + strerror(errno));
  // A blocking connect to a Unix socket waits while the listen backlog is full; the send
  // timeout bounds that wait.
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout_s_);
  tv.tv_usec = static_cast<suseconds_t>((timeout_s_ - static_cast<double>(tv.tv_sec)) * 1e6);
  setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int rc;
  do rc = ::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  while (rc != 0 && errno == EINTR && !(interrupt_ && *interrupt_));
  if (rc != 0) {
    const int err = errno;
    close();
    if (err == EINTR) throw Interrupted{};
    throw CliError(Exit::Unreachable, describe_connect_error(err, path_));
  }
  // From here on every wait goes through poll() with a deadline.
  fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
}

bool Client::wait_fd(short events, double deadline) {
  for (;;) {
    if (interrupt_ && *interrupt_) throw Interrupted{};
    const double left = deadline - now_s();
    if (left <= 0) return false;
    pollfd p{fd_, events, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(left * 1000) + 1);
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR)
      throw CliError(Exit::Unreachable, std::string("waiting for hakmemd failed: ") + strerror(errno));
  }
}

void Client::send_all(const std::string& data, double deadline) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n > 0) { off += static_cast<size_t>(n); continue; }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!wait_fd(POLLOUT, deadline))
        throw CliError(Exit::Unreachable, "hakmemd at " + path_ + " did not take the request within " +
                                              seconds_text(timeout_s_) + "; check `systemctl status hakmemd`");
      continue;
    }
    const int err = errno;
    close();
    throw CliError(Exit::Unreachable, "lost the connection to hakmemd at " + path_ + ": " + strerror(err) +
                                          " (did it stop or restart?)");
  }
}

std::string Client::read_line(double deadline) {
  for (;;) {
    const size_t nl = buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      return line;
    }
    if (buf_.size() > kMaxReplyBytes) {
      close();
      throw CliError(Exit::Unreachable, "the peer at " + path_ + " sent a reply line over 256 MiB; is it hakmemd?");
    }
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n > 0) { buf_.append(chunk, static_cast<size_t>(n)); continue; }
    if (n == 0) {
      close();
      throw CliError(Exit::Unreachable, "hakmemd closed the connection at " + path_ +
                                            " without answering (did it stop or restart?)");
    }
    if (errno == EAGAIN || errno == EINTR) {
      if (!wait_fd(POLLIN, deadline)) {
        close();
        throw CliError(Exit::Unreachable, "hakmemd at " + path_ + " did not answer within " + seconds_text(timeout_s_),
                       "check `systemctl status hakmemd`, or give it longer with --timeout SECONDS");
      }
      continue;
    }
    const int err = errno;
    close();
    throw CliError(Exit::Unreachable, "lost the connection to hakmemd at " + path_ + ": " + strerror(err));
  }
}

Reply Client::call(json request) {
  if (fd_ < 0) connect();
  const uint64_t id = next_id_++;
  request["id"] = id;
  // Replies to long waits (set with wait_ms) legitimately take that long on top.
  double budget = timeout_s_;
  if (request.contains("wait_ms") && request["wait_ms"].is_number())
    budget += request["wait_ms"].get<double>() / 1000.0;
  const double deadline = now_s() + budget;
  send_all(request.dump() + "\n", deadline);
  const std::string line = read_line(deadline);

  json reply = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (reply.is_discarded() || !reply.is_object() || !reply.contains("ok") || !reply["ok"].is_boolean()) {
    close();
    throw CliError(Exit::Unreachable, "the peer at " + path_ + " sent a reply that is not hakmemd's protocol: " +
                                          line.substr(0, 120));
  }
  if (!reply.contains("id") || reply["id"] != json(id)) {
    close();
    throw CliError(Exit::Unreachable, "hakmemd answered request " + json(id).dump() + " with the reply to " +
                                          (reply.contains("id") ? reply["id"].dump() : std::string("null")));
  }
  Reply r;
  r.ok = reply["ok"].get<bool>();
  if (r.ok) {
    r.result = reply.contains("result") ? reply["result"] : json::object();
  } else {
    const json& e = reply.contains("error") && reply["error"].is_object() ? reply["error"] : json::object();
    r.error_code = e.contains("code") && e["code"].is_string() ? e["code"].get<std::string>() : "internal";
    r.error_message = e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>()
                                                                         : "(no message)";
  }
  return r;
}

json Client::call_ok(json request) {
  Reply r = call(std::move(request));
  if (!r.ok) throw CliError(exit_for_error_code(r.error_code), r.error_code + ": " + r.error_message);
  return std::move(r.result);
}

json Client::hello() {
  Reply r = call({{"cmd", "hello"},
                  {"version", hakmem::proto::kProtocolVersion},
                  {"client", std::string("hakctl ") + HAKMEM_VERSION}});
  if (!r.ok) {
    std::string hint;
    if (r.error_code == hakmem::proto::err::kVersionMismatch)
      hint = std::string("hakctl ") + HAKMEM_VERSION + " speaks protocol " +
             std::to_string(hakmem::proto::kProtocolVersion) +
             "; use the hakctl that came with the running hakmemd (or upgrade both together)";
    throw CliError(exit_for_error_code(r.error_code), r.error_code + ": " + r.error_message, hint);
  }
  return std::move(r.result);
}

}  // namespace hakctl
