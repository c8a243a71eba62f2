// A fake hakmemd for tests: a thread speaking the socket protocol on a temporary Unix socket,
// answering each request with what the test's handler says (a reply, silence, a close, or raw
// bytes). Lets the client's error handling be tested without the real daemon.
#pragma once

#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace hakctl_test {

using json = nlohmann::json;

struct Action {
  enum Kind { Reply, Silent, Close, Raw } kind = Reply;
  std::string raw;  // Raw: sent as is (add "\n" yourself)
  json reply;       // Reply: the whole envelope
};

Action ok(const json& req, json result);
Action fail(const json& req, const std::string& code, const std::string& message);

class FakeServer {
 public:
  using Handler = std::function<Action(const json& request)>;
  explicit FakeServer(Handler handler);
  ~FakeServer();
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  const std::string& path() const { return path_; }
  const std::string& dir() const { return dir_; }
  std::vector<json> requests();

 private:
  void loop();
  void serve(int fd);

  Handler handler_;
  std::string dir_, path_;
  int listen_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  std::mutex mu_;
  std::vector<json> requests_;
  std::thread thread_;
};

// A temporary directory removed (recursively) on destruction.
struct TempDir {
  TempDir();
  ~TempDir();
  std::string path;
};

}  // namespace hakctl_test
