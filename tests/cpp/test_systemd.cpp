// Unit tests for include/mxrc/systemd.hpp: real sockets in a temporary
// directory stand in for systemd's notify and journal sockets.
#include <mxrc/systemd.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace sd = mxrc::systemd;

static int passed = 0, failed = 0;
#define CHECK(cond)                                                        \
    do {                                                                   \
        if (cond) {                                                        \
            ++passed;                                                      \
        } else {                                                           \
            ++failed;                                                      \
            std::fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
        }                                                                  \
    } while (0)

struct Server {
    int fd = -1;
    std::string path;
    explicit Server(const std::string& p) : path(p) {
        fd = ::socket(AF_UNIX, SOCK_DGRAM, 0);
        sockaddr_un addr;
        const socklen_t len = sd::detail::make_address(p.c_str(), addr);
        if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) std::perror("bind");
    }
    ~Server() {
        ::close(fd);
        if (path[0] != '@') ::unlink(path.c_str());
    }
    std::string recv() const {
        char buf[8192];
        const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        return n < 0 ? std::string() : std::string(buf, static_cast<size_t>(n));
    }
};

static std::string tmpdir() {
    char tmpl[] = "/tmp/mxrc-cpp-XXXXXX";
    return ::mkdtemp(tmpl);
}

static void test_notify_outside_systemd_is_noop() {
    ::unsetenv("NOTIFY_SOCKET");
    CHECK(!sd::notify("READY=1"));
}

static void test_notify_sends_datagram(const std::string& dir) {
    Server server(dir + "/notify");
    ::setenv("NOTIFY_SOCKET", server.path.c_str(), 1);
    CHECK(sd::notify("READY=1\nSTATUS=up"));
    CHECK(server.recv() == "READY=1\nSTATUS=up");
    ::unsetenv("NOTIFY_SOCKET");
}

static void test_notify_abstract_socket() {
    const std::string name = "@mxrc-cpp-test-" + std::to_string(::getpid());
    Server server(name);
    ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
    CHECK(sd::notify("WATCHDOG=1"));
    CHECK(server.recv() == "WATCHDOG=1");
    ::unsetenv("NOTIFY_SOCKET");
}

static void test_watchdog_timeout_honours_pid() {
    ::setenv("WATCHDOG_USEC", "30000000", 1);
    ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
    CHECK(sd::watchdog_timeout() == std::chrono::seconds(30));
    ::setenv("WATCHDOG_PID", "1", 1);
    CHECK(sd::watchdog_timeout().count() == 0);
    ::setenv("WATCHDOG_USEC", "junk", 1);
    ::unsetenv("WATCHDOG_PID");
    CHECK(sd::watchdog_timeout().count() == 0);
    ::unsetenv("WATCHDOG_USEC");
}

static int pings = 0;
static bool count_ping(std::string_view s) {
    if (s == "WATCHDOG=1") ++pings;
    return true;
}

static void test_watchdog_pings_only_after_progress() {
    sd::Heartbeat heartbeat;
    sd::Watchdog watchdog(heartbeat, std::chrono::seconds(30), &count_ping);
    CHECK(watchdog.period() == std::chrono::microseconds(7500000));
    CHECK(!watchdog.tick());  // no progress yet: a hung loop gets no ping
    heartbeat.beat();
    CHECK(watchdog.tick() && pings == 1);
    CHECK(!watchdog.tick() && pings == 1);  // stalled: pings stop
    heartbeat.beat();
    heartbeat.beat();
    CHECK(watchdog.tick() && pings == 2);
}

static void test_watchdog_thread_runs_and_stops() {
    sd::Heartbeat heartbeat;
    pings = 0;
    sd::Watchdog watchdog(heartbeat, std::chrono::milliseconds(40), &count_ping);
    watchdog.start();
    for (int i = 0; i < 10; ++i) {
        heartbeat.beat();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    watchdog.stop();
    CHECK(pings >= 2);
    const int after_stop = pings;
    heartbeat.beat();
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    CHECK(pings == after_stop);
}

static void test_journal_entry_fields(const std::string& dir) {
    Server server(dir + "/journal");
    sd::journal::Entry entry(LOG_ERR, "joint 3 over limit");
    entry.field("TRACE_ID", "4bf92f35").field("lower", "x").field("_PID", "1").field("NOTE", "a\nb");
    CHECK(entry.dropped() == 2);
    CHECK(entry.send(server.path.c_str()));
    const std::string got = server.recv();
    CHECK(got.find("MESSAGE=joint 3 over limit\n") == 0);
    CHECK(got.find("PRIORITY=3\n") != std::string::npos);
    CHECK(got.find("LOG_LEVEL=err\n") != std::string::npos);
    CHECK(got.find("TRACE_ID=4bf92f35\n") != std::string::npos);
    const std::string binary = std::string("NOTE\n") + std::string("\x03\0\0\0\0\0\0\0", 8) + "a\nb\n";
    CHECK(got.size() >= binary.size() && got.compare(got.size() - binary.size(), binary.size(), binary) == 0);
}

static void test_journal_entry_never_overflows() {
    sd::journal::BasicEntry<64> entry(LOG_INFO, "short");
    entry.field("BIG", std::string(100, 'x'));
    CHECK(entry.dropped() == 1);
    CHECK(entry.payload().size() <= 64);
}

int main() {
    const std::string dir = tmpdir();
    test_notify_outside_systemd_is_noop();
    test_notify_sends_datagram(dir);
    test_notify_abstract_socket();
    test_watchdog_timeout_honours_pid();
    test_watchdog_pings_only_after_progress();
    test_watchdog_thread_runs_and_stops();
    test_journal_entry_fields(dir);
    test_journal_entry_never_overflows();
    ::rmdir(dir.c_str());
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
