#include "server.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>

#include "hakmem/proto/protocol.h"

namespace hakmemd {

namespace proto = hakmem::proto;
using boost::system::error_code;

bool make_private_dirs(const std::string& dir, std::string* error) {
  if (dir.empty()) return true;
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    size_t next = dir.find('/', pos + 1);
    cur = dir.substr(0, next);
    pos = next;
    if (cur.empty() || cur == "/") continue;
    if (mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) {
      *error = "cannot create " + cur + ": " + strerror(errno);
      return false;
    }
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *error = dir + " is not a directory";
    return false;
  }
  return true;
}

namespace {

// One client of the Unix socket. Requests are handled one at a time in arrival order, so
// replies keep request order even when the client pipelines.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(asio::local::stream_protocol::socket sock, Handler& h, std::shared_ptr<size_t> clients)
      : sock_(std::move(sock)), handler_(h), buf_(proto::kMaxLineBytes + 1), timer_(sock_.get_executor()),
        clients_(std::move(clients)) {
    ++*clients_;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(sock_.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
      peer_.uid = cred.uid;
      peer_.pid = cred.pid;
      cred_ok_ = true;
    }
  }
  ~Session() { --*clients_; }

  void start() {
    if (!cred_ok_) {
      // Without credentials we cannot decide what the client may see.
      spdlog::warn("client without SO_PEERCRED credentials refused");
      return;
    }
    spdlog::debug("client uid {} pid {} connected", peer_.uid, peer_.pid);
    read();
  }

 private:
  void read() {
    auto self = shared_from_this();
    asio::async_read_until(sock_, buf_, '\n', [this, self](const error_code& ec, size_t n) {
      if (ec == asio::error::not_found) {  // buffer full, no newline: the line is too long
        send(Handler::error_line(nullptr, proto::err::kLineTooLong,
                                 "request line longer than " + std::to_string(proto::kMaxLineBytes) +
                                     " bytes; closing the connection"),
             true);
        return;
      }
      if (ec) return;  // EOF or error: the session ends when the last handler drops it
      std::string line(asio::buffers_begin(buf_.data()), asio::buffers_begin(buf_.data()) + static_cast<long>(n));
      buf_.consume(n);
      while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) {  // blank line: nothing to answer
        read();
        return;
      }
      const auto t0 = std::chrono::steady_clock::now();
      Outcome out = handler_.handle(line, peer_);
      if (spdlog::should_log(spdlog::level::debug))
        spdlog::debug("request from uid {} pid {} handled in {:.2f} ms ({} reply bytes)", peer_.uid, peer_.pid,
                      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(),
                      out.reply.size());
      if (out.wait) {
        wait_ = std::move(out.wait);
        poll();
        return;
      }
      send(std::move(out.reply), out.close);
    });
  }

  void poll() {
    std::string reply;
    if (handler_.poll(*wait_, &reply)) {
      wait_.reset();
      send(std::move(reply), false);
      return;
    }
    auto self = shared_from_this();
    timer_.expires_after(std::chrono::milliseconds(1));
    timer_.async_wait([this, self](const error_code& ec) {
      if (!ec) poll();
    });
  }

  void send(std::string reply, bool close_after) {
    out_ = std::move(reply);
    auto self = shared_from_this();
    asio::async_write(sock_, asio::buffer(out_), [this, self, close_after](const error_code& ec, size_t) {
      if (ec) return;
      if (close_after) {
        error_code ignored;
        sock_.shutdown(asio::socket_base::shutdown_both, ignored);
        sock_.close(ignored);
        return;
      }
      read();
    });
  }

  asio::local::stream_protocol::socket sock_;
  Handler& handler_;
  asio::streambuf buf_;
  asio::steady_timer timer_;
  std::shared_ptr<size_t> clients_;
  std::unique_ptr<ApplyWait> wait_;
  std::string out_;
  Peer peer_;
  bool cred_ok_ = false;
};

// One HTTP exchange: read the request head (bounded, with a deadline), answer, close.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(asio::ip::tcp::socket sock, const std::function<std::string()>& render, std::shared_ptr<size_t> clients)
      : sock_(std::move(sock)), render_(render), buf_(8192), timer_(sock_.get_executor()), clients_(std::move(clients)) {
    ++*clients_;
  }
  ~HttpSession() { --*clients_; }

  void start() {
    auto self = shared_from_this();
    timer_.expires_after(std::chrono::seconds(10));
    timer_.async_wait([this, self](const error_code& ec) {
      if (ec) return;
      error_code ignored;
      sock_.close(ignored);
    });
    asio::async_read_until(sock_, buf_, head_end, [this, self](const error_code& ec, size_t n) {
      if (ec == asio::error::not_found) {
        respond(431, "Request Header Fields Too Large", "text/plain", "request head too large\n");
        return;
      }
      if (ec) {
        timer_.cancel();
        return;
      }
      std::string head(asio::buffers_begin(buf_.data()), asio::buffers_begin(buf_.data()) + static_cast<long>(n));
      const std::string first = head.substr(0, head.find_first_of("\r\n"));
      const size_t sp1 = first.find(' ');
      const size_t sp2 = sp1 == std::string::npos ? std::string::npos : first.find(' ', sp1 + 1);
      if (sp1 == std::string::npos || sp2 == std::string::npos || first.compare(sp2 + 1, 5, "HTTP/") != 0) {
        respond(400, "Bad Request", "text/plain", "bad request\n");
        return;
      }
      const std::string method = first.substr(0, sp1);
      std::string target = first.substr(sp1 + 1, sp2 - sp1 - 1);
      if (size_t q = target.find('?'); q != std::string::npos) target.resize(q);
      if (method != "GET" && method != "HEAD") {
        respond(405, "Method Not Allowed", "text/plain", "only GET\n");
        return;
      }
      if (target != "/metrics") {
        respond(404, "Not Found", "text/plain", "not found; try /metrics\n");
        return;
      }
      head_only_ = method == "HEAD";
      std::string body;
      try {
        body = render_();
      } catch (const std::exception& e) {
        spdlog::error("rendering metrics failed: {}", e.what());
        respond(500, "Internal Server Error", "text/plain", "internal error\n");
        return;
      }
      respond(200, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
    });
  }

 private:
  // End of the request head: a blank line (CRLF CRLF, or bare LF LF from hand-typed requests).
  static std::pair<asio::buffers_iterator<asio::streambuf::const_buffers_type>, bool> head_end(
      asio::buffers_iterator<asio::streambuf::const_buffers_type> begin,
      asio::buffers_iterator<asio::streambuf::const_buffers_type> end) {
    char prev1 = 0, prev2 = 0;
    for (auto it = begin; it != end; ++it) {
      const char c = *it;
      if (c == '\n' && (prev1 == '\n' || (prev1 == '\r' && prev2 == '\n'))) return {it + 1, true};
      prev2 = prev1;
      prev1 = c;
    }
    return {begin, false};
  }

  void respond(int status, const char* reason, const char* type, const std::string& body) {
    out_ = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nContent-Type: " + type +
           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
    if (!head_only_) out_ += body;
    auto self = shared_from_this();
    asio::async_write(sock_, asio::buffer(out_), [this, self](const error_code&, size_t) {
      error_code ignored;
      sock_.shutdown(asio::socket_base::shutdown_both, ignored);
      sock_.close(ignored);
      timer_.cancel();
    });
  }

  asio::ip::tcp::socket sock_;
  std::function<std::string()> render_;  // a copy: the server may be replaced on reload
  asio::streambuf buf_;
  asio::steady_timer timer_;
  std::shared_ptr<size_t> clients_;
  std::string out_;
  bool head_only_ = false;
};

}  // namespace

UnixServer::UnixServer(asio::io_context& io, Handler& handler)
    : io_(io), handler_(handler), acceptor_(io), retry_(io), clients_(std::make_shared<size_t>(0)) {}

UnixServer::~UnixServer() { close(); }

bool UnixServer::listen(const std::string& path, std::string* error) {
  struct sockaddr_un sun;
  if (path.empty() || path.size() >= sizeof sun.sun_path) {
    *error = "socket path is empty or longer than " + std::to_string(sizeof sun.sun_path - 1) + " bytes: " + path;
    return false;
  }
  const size_t slash = path.rfind('/');
  const std::string folder = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (!make_private_dirs(folder, error)) return false;
  struct stat dst;
  // A folder someone else controls could swap our socket for theirs (e.g. a pre-created
  // /tmp/hakmem-<uid>): refuse it rather than serve from it.
  if (stat(folder.c_str(), &dst) != 0 || (dst.st_uid != geteuid() && dst.st_uid != 0) ||
      ((dst.st_mode & (S_IWGRP | S_IWOTH)) && !(dst.st_mode & S_ISVTX))) {
    char mode[16];
    snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(dst.st_mode & 07777));
    *error = "socket folder " + folder + " is not private (owned by uid " + std::to_string(dst.st_uid) +
             ", mode " + mode + "); refusing to serve from it";
    return false;
  }

  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      *error = path + " exists and is not a socket; refusing to replace it";
      return false;
    }
    // Is a daemon answering on it? A refused connection means its owner is gone.
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path.c_str(), path.size() + 1);
    int rc = connect(fd, reinterpret_cast<struct sockaddr*>(&sun), sizeof sun);
    int err = errno;
    ::close(fd);
    if (rc == 0) {
      *error = "another hakmemd is already serving " + path + "; stop it first (or use --socket)";
      return false;
    }
    if (err != ECONNREFUSED) {
      *error = "cannot probe existing socket " + path + ": " + strerror(err);
      return false;
    }
    spdlog::info("replacing stale socket {} (no daemon answers on it)", path);
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      *error = "cannot remove stale socket " + path + ": " + strerror(errno);
      return false;
    }
  }

  error_code ec;
  asio::local::stream_protocol::endpoint ep(path);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) {
    // Bind under a tight umask so the socket is never reachable by others, not even briefly.
    mode_t old = umask(0177);
    acceptor_.bind(ep, ec);
    umask(old);
  }
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    *error = "cannot listen on " + path + ": " + ec.message();
    error_code ignored;
    acceptor_.close(ignored);
    return false;
  }
  chmod(path.c_str(), 0600);
  if (lstat(path.c_str(), &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
  path_ = path;
  accept();
  return true;
}

void UnixServer::accept() {
  acceptor_.async_accept([this](const error_code& ec, asio::local::stream_protocol::socket sock) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      if (*clients_ >= kMaxClients) {
        spdlog::warn("{} clients connected; refusing another", *clients_);
        error_code ignored;
        sock.close(ignored);
      } else {
        std::make_shared<Session>(std::move(sock), handler_, clients_)->start();
      }
    } else {
      // Typically EMFILE: back off instead of spinning on a listener that stays readable.
      spdlog::warn("accept failed: {}", ec.message());
      retry_.expires_after(std::chrono::milliseconds(100));
      retry_.async_wait([this](const error_code& e) {
        if (!e) accept();
      });
      return;
    }
    accept();
  });
}

void UnixServer::close() {
  if (!acceptor_.is_open()) return;
  error_code ignored;
  acceptor_.close(ignored);
  retry_.cancel();
  struct stat st;
  if (!path_.empty() && lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) unlink(path_.c_str());
}

MetricsServer::MetricsServer(asio::io_context& io, std::function<std::string()> render)
    : io_(io), render_(std::move(render)), acceptor_(io), clients_(std::make_shared<size_t>(0)) {}

MetricsServer::~MetricsServer() { close(); }

bool MetricsServer::listen(const std::string& host, uint16_t port, std::string* error) {
  error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) {
    *error = "metrics address '" + host + "' is not an IP address";
    return false;
  }
  asio::ip::tcp::endpoint ep(addr, port);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    *error = "cannot serve metrics on " + host + ":" + std::to_string(port) + ": " + ec.message();
    error_code ignored;
    acceptor_.close(ignored);
    return false;
  }
  accept();
  return true;
}

uint16_t MetricsServer::port() const {
  error_code ec;
  auto ep = acceptor_.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

void MetricsServer::accept() {
  acceptor_.async_accept([this](const error_code& ec, asio::ip::tcp::socket sock) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      if (*clients_ >= kMaxClients) {
        error_code ignored;
        sock.close(ignored);
      } else {
        std::make_shared<HttpSession>(std::move(sock), render_, clients_)->start();
      }
    }
    accept();
  });
}

void MetricsServer::close() {
  error_code ignored;
  if (acceptor_.is_open()) acceptor_.close(ignored);
}

}  // namespace hakmemd
