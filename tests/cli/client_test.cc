// The client against a fake daemon: hello, replies, and every way the daemon can fail,
// each mapped to its exit code (1 error reply, 3 unreachable) with a message saying what to do.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "client.h"
#include "fake_server.h"

using hakctl::CliError;
using hakctl::Client;
using hakctl::Exit;
using hakctl_test::Action;
using hakctl_test::FakeServer;
using hakctl_test::TempDir;
using json = nlohmann::json;

namespace {

// Runs f, expects a CliError with `code` whose message contains `needle`; returns it.
template <class F>
CliError expect_error(F f, Exit code, const std::string& needle) {
  try {
    f();
  } catch (const CliError& e) {
    EXPECT_EQ(static_cast<int>(e.code()), static_cast<int>(code)) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
    return e;
  }
  ADD_FAILURE() << "no CliError";
  return CliError(Exit::Ok, "");
}

Action hello_ok(const json& req) {
  return hakctl_test::ok(req, {{"protocol", 1}, {"daemon", "hakmemd 0.1.0"}, {"pid", 1}, {"uid", 0}});
}

}  // namespace

TEST(Client, HelloCarriesProtocolVersionAndClientName) {
  FakeServer srv([](const json& req) { return hello_ok(req); });
  Client c(srv.path(), 5);
  const json r = c.hello();
  EXPECT_EQ(r["daemon"], "hakmemd 0.1.0");
  const auto reqs = srv.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0]["cmd"], "hello");
  EXPECT_EQ(reqs[0]["version"], 1);
  EXPECT_EQ(reqs[0]["client"], std::string("hakctl ") + HAKMEM_VERSION);
  EXPECT_TRUE(reqs[0].contains("id"));
}

TEST(Client, RequestsGetFreshIdsAndResults) {
  FakeServer srv([](const json& req) {
    if (req["cmd"] == "hello") return hello_ok(req);
    return hakctl_test::ok(req, {{"echo", req["cmd"]}});
  });
  Client c(srv.path(), 5);
  c.hello();
  EXPECT_EQ(c.call_ok({{"cmd", "ps"}})["echo"], "ps");
  EXPECT_EQ(c.call_ok({{"cmd", "stats"}})["echo"], "stats");
  const auto reqs = srv.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_NE(reqs[1]["id"], reqs[2]["id"]);
}

TEST(Client, LargeReplyInManyPieces) {
  const std::string big(3 << 20, 'x');
  FakeServer srv([&](const json& req) { return hakctl_test::ok(req, {{"blob", big}}); });
  Client c(srv.path(), 5);
  EXPECT_EQ(c.call_ok({{"cmd", "stats"}})["blob"].get<std::string>().size(), big.size());
}

TEST(Client, VersionMismatchIsShownClearly) {
  FakeServer srv([](const json& req) {
    return hakctl_test::fail(req, "version_mismatch", "client speaks protocol 1, hakmemd speaks 2; upgrade hakctl");
  });
  Client c(srv.path(), 5);
  CliError e = expect_error([&] { c.hello(); }, Exit::DaemonError,
                            "version_mismatch: client speaks protocol 1, hakmemd speaks 2; upgrade hakctl");
  EXPECT_NE(e.hint().find("speaks protocol 1"), std::string::npos) << e.hint();
}

TEST(Client, ErrorReplyKeepsCodeAndMessage) {
  FakeServer srv([](const json& req) {
    return hakctl_test::fail(req, "unknown_knob", "unknown knob 'tiny.cpa'; did you mean 'tiny.cap'?");
  });
  Client c(srv.path(), 5);
  expect_error([&] { c.call_ok({{"cmd", "set"}}); }, Exit::DaemonError,
               "unknown_knob: unknown knob 'tiny.cpa'; did you mean 'tiny.cap'?");
  // The connection stays usable after an error reply.
  const hakctl::Reply r = c.call({{"cmd", "get"}});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error_code, "unknown_knob");
}

TEST(Client, ErrorWithoutCodeOrMessageStillReadable) {
  FakeServer srv([](const json& req) {
    Action a;
    a.reply = {{"id", req["id"]}, {"ok", false}};
    return a;
  });
  Client c(srv.path(), 5);
  expect_error([&] { c.call_ok({{"cmd", "ps"}}); }, Exit::DaemonError, "internal: (no message)");
}

TEST(Client, NoSocketSaysHowToStartTheDaemon) {
  TempDir d;
  Client c(d.path + "/missing.sock", 5);
  expect_error([&] { c.hello(); }, Exit::Unreachable,
               "hakmemd is not running: no socket at " + d.path +
                   "/missing.sock; start it with `hakmemd` or `systemctl start hakmemd`");
}

TEST(Client, StaleSocketIsConnectionRefused) {
  TempDir d;
  const std::string path = d.path + "/stale.sock";
  // Bound but never listening: what a killed daemon leaves behind.
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  Client c(path, 5);
  expect_error([&] { c.hello(); }, Exit::Unreachable, "nothing listens on " + path);
  close(fd);
}

TEST(Client, NotASocketAndTooLongPath) {
  TempDir d;
  Client c(d.path, 5);  // a directory
  expect_error([&] { c.hello(); }, Exit::Unreachable, d.path);
  Client c2("/tmp/" + std::string(200, 'a'), 5);
  expect_error([&] { c2.hello(); }, Exit::Unreachable, "socket path too long");
}

TEST(Client, ConnectErrorTexts) {
  EXPECT_NE(hakctl::describe_connect_error(EACCES, "/run/x.sock").find("permission denied on /run/x.sock"),
            std::string::npos);
  EXPECT_NE(hakctl::describe_connect_error(EPERM, "/s").find("permission denied"), std::string::npos);
  EXPECT_NE(hakctl::describe_connect_error(ECONNREFUSED, "/s").find("systemctl start hakmemd"), std::string::npos);
  EXPECT_NE(hakctl::describe_connect_error(EAGAIN, "/s").find("did not accept"), std::string::npos);
  EXPECT_NE(hakctl::describe_connect_error(EIO, "/s").find("/s"), std::string::npos);
}

TEST(Client, ExitCodeOfEveryErrorReplyIsOne) {
  for (const char* code : {"bad_request", "unknown_command", "version_mismatch", "no_such_process",
                           "permission_denied", "unknown_knob", "invalid_value", "out_of_range", "restart_only",
                           "internal", "something_new"})
    EXPECT_EQ(hakctl::exit_for_error_code(code), Exit::DaemonError) << code;
}

TEST(Client, SilentDaemonTimesOut) {
  FakeServer srv([](const json&) { Action a; a.kind = Action::Silent; return a; });
  Client c(srv.path(), 0.2);
  CliError e = expect_error([&] { c.hello(); }, Exit::Unreachable, "did not answer within 0.2 s");
  EXPECT_NE(e.hint().find("--timeout"), std::string::npos);
}

TEST(Client, ClosedConnection) {
  FakeServer srv([](const json&) { Action a; a.kind = Action::Close; return a; });
  Client c(srv.path(), 5);
  expect_error([&] { c.hello(); }, Exit::Unreachable, "closed the connection");
}

TEST(Client, GarbageReply) {
  FakeServer srv([](const json&) { Action a; a.kind = Action::Raw; a.raw = "HTTP/1.1 400 Bad Request\n"; return a; });
  Client c(srv.path(), 5);
  expect_error([&] { c.hello(); }, Exit::Unreachable, "not hakmemd's protocol");
}

TEST(Client, ReplyToAnotherRequest) {
  FakeServer srv([](const json&) {
    Action a;
    a.reply = {{"id", 999}, {"ok", true}, {"result", json::object()}};
    return a;
  });
  Client c(srv.path(), 5);
  expect_error([&] { c.hello(); }, Exit::Unreachable, "with the reply to 999");
}

TEST(Client, InterruptFlagEndsAWait) {
  FakeServer srv([](const json&) { Action a; a.kind = Action::Silent; return a; });
  Client c(srv.path(), 30);
  volatile sig_atomic_t flag = 1;
  c.set_interrupt_flag(&flag);
  EXPECT_THROW(c.hello(), hakctl::Interrupted);
}
