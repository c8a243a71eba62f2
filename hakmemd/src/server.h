// The two listeners, both on the daemon's single Asio thread:
//   UnixServer    JSON lines on a Unix socket (PROTOCOL.md), SO_PEERCRED on every connection;
//   MetricsServer a minimal HTTP/1.1 responder for GET /metrics (Prometheus scrapes).
// Every connection is asynchronous, so a silent or slow client holds up only itself.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>

#include "handler.h"

namespace hakmemd {

namespace asio = boost::asio;

// Most connections served at once; more are accepted and closed at once (fd exhaustion
// must not take the daemon down).
inline constexpr size_t kMaxClients = 1024;

class UnixServer {
 public:
  UnixServer(asio::io_context& io, Handler& handler);
  ~UnixServer();

  // Creates the socket's folder (0700) when missing, replaces a stale socket left by a dead
  // daemon, refuses when a live daemon answers on it, binds with mode 0600.
  bool listen(const std::string& path, std::string* error);
  // Stops accepting and removes the socket file (only if it is still ours).
  void close();
  const std::string& path() const { return path_; }

 private:
  void accept();

  asio::io_context& io_;
  Handler& handler_;
  asio::local::stream_protocol::acceptor acceptor_;
  asio::steady_timer retry_;
  std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  std::shared_ptr<size_t> clients_;  // shared with sessions, which outlive close()
};

class MetricsServer {
 public:
  MetricsServer(asio::io_context& io, std::function<std::string()> render);
  ~MetricsServer();

  bool listen(const std::string& host, uint16_t port, std::string* error);
  void close();
  uint16_t port() const;

 private:
  void accept();

  asio::io_context& io_;
  std::function<std::string()> render_;
  asio::ip::tcp::acceptor acceptor_;
  std::shared_ptr<size_t> clients_;
};

// Creates `dir` and its missing parents with mode 0700.
bool make_private_dirs(const std::string& dir, std::string* error);

}  // namespace hakmemd
