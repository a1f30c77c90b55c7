// Unit tests for include/mxrc/systemd.hpp: real sockets in a temporary
// directory stand in for systemd's notify and journal sockets.
#include <mxrc/systemd.hpp>

#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <vector>
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

// Every message the watchdog sends, in order; the tests drive time explicitly
// (tick(now)), so nothing here depends on the wall clock or on sleeps.
static std::vector<std::string> sent;
static bool record(std::string_view s) {
    sent.emplace_back(s);
    return true;
}
static int count_sent(const std::string& what) {
    int n = 0;
    for (const auto& s : sent) n += s.find(what) != std::string::npos;
    return n;
}

using Clock = sd::Watchdog::Clock;
using Action = sd::Watchdog::Action;
static const Clock::time_point t0{};

static void test_watchdog_pings_only_after_progress() {
    sent.clear();
    sd::Heartbeat heartbeat;
    sd::Watchdog watchdog(heartbeat, std::chrono::seconds(30), &record);
    CHECK(watchdog.period() == std::chrono::microseconds(7500000));
    CHECK(watchdog.check_interval() == watchdog.period());  // no budget: wake up to ping only
    CHECK(watchdog.tick(t0) == Action::none);  // no progress yet: a hung loop gets no ping
    heartbeat.beat();
    CHECK(watchdog.tick(t0 + std::chrono::milliseconds(7500)) == Action::ping && sent.size() == 1);
    CHECK(watchdog.tick(t0 + std::chrono::seconds(15)) == Action::none);  // stalled: pings stop
    CHECK(watchdog.tick(t0 + std::chrono::seconds(60)) == Action::none);  // ... and no trigger without a budget
    heartbeat.beat();
    heartbeat.beat();
    CHECK(watchdog.tick(t0 + std::chrono::milliseconds(67500)) == Action::ping);
    CHECK(count_sent("WATCHDOG=1") == 2 && count_sent("WATCHDOG=trigger") == 0);
}

static void test_check_interval_follows_the_budget() {
    sd::Heartbeat heartbeat;
    sd::Watchdog watchdog(heartbeat, std::chrono::seconds(30), &record);
    watchdog.set_stall_budget(std::chrono::milliseconds(100));
    CHECK(watchdog.check_interval() == std::chrono::milliseconds(25));
    watchdog.set_stall_budget(std::chrono::milliseconds(2));
    CHECK(watchdog.check_interval() == std::chrono::milliseconds(1));  // floor: never a busy loop
    watchdog.set_stall_budget(std::chrono::seconds(60));
    CHECK(watchdog.check_interval() == watchdog.period());
    watchdog.set_stall_budget(std::chrono::milliseconds(-5));
    CHECK(watchdog.stall_budget().count() == 0 && watchdog.check_interval() == watchdog.period());
}

// A healthy 1 kHz loop checked every 25 ms for 60 s: pings at the ping
// period, never a trigger.
static void test_progress_within_the_budget_never_triggers() {
    sent.clear();
    sd::Heartbeat heartbeat;
    sd::Watchdog watchdog(heartbeat, std::chrono::seconds(30), &record);
    watchdog.set_stall_budget(std::chrono::milliseconds(100));
    int pings = 0, triggers = 0;
    for (int step = 0; step <= 2400; ++step) {
        for (int cycle = 0; cycle < 25; ++cycle) heartbeat.beat();
        const Action a = watchdog.tick(t0 + step * std::chrono::milliseconds(25));
        pings += a == Action::ping;
        triggers += a == Action::trigger;
    }
    CHECK(triggers == 0 && !watchdog.triggered());
    CHECK(pings == 9);  // at 0, 7.5, 15, ... 60 s: the ping rate does not follow the check rate
}

static void test_stall_beyond_the_budget_triggers_once() {
    sent.clear();
    sd::Heartbeat heartbeat;
    sd::Watchdog watchdog(heartbeat, std::chrono::seconds(30), &record);
    watchdog.set_stall_budget(std::chrono::milliseconds(100));
    // Start-up before the first beat is not a stall: the budget is not armed yet.
    CHECK(watchdog.tick(t0 + std::chrono::seconds(10)) == Action::none);
    const auto t1 = t0 + std::chrono::seconds(20);
    heartbeat.beat();
    CHECK(watchdog.tick(t1) == Action::ping);
    CHECK(watchdog.tick(t1 + std::chrono::milliseconds(100)) == Action::none);  // at the budget: still fine
    CHECK(watchdog.tick(t1 + std::chrono::milliseconds(125)) == Action::trigger);
    CHECK(watchdog.triggered());
    CHECK(sent.back() == "STATUS=control loop stalled: no heartbeat for 125 ms (budget 100 ms)\nWATCHDOG=trigger");
    heartbeat.beat();  // too late: systemd is killing the process, nothing more is sent
    CHECK(watchdog.tick(t1 + std::chrono::seconds(8)) == Action::none);
    CHECK(count_sent("WATCHDOG=trigger") == 1 && count_sent("WATCHDOG=1") == 1);
}

// A late pinger (the non-RT thread delayed 2 s) is not a stalled loop: the
// heartbeat moved meanwhile.
static void test_a_late_checker_is_not_a_stall() {
    sent.clear();
    sd::Heartbeat heartbeat;
    sd::Watchdog watchdog(heartbeat, std::chrono::seconds(30), &record);
    watchdog.set_stall_budget(std::chrono::milliseconds(100));
    heartbeat.beat();
    CHECK(watchdog.tick(t0) == Action::ping);
    heartbeat.beat();
    CHECK(watchdog.tick(t0 + std::chrono::seconds(2)) == Action::none && !watchdog.triggered());
}

// The thread: start() ticks at once, so a beat before start() yields a ping
// the test can wait for without a clock; stop() wakes and joins it.
static std::promise<void>* first_ping = nullptr;
static bool signal_ping(std::string_view s) {
    if (s == "WATCHDOG=1" && first_ping != nullptr) {
        first_ping->set_value();
        first_ping = nullptr;
    }
    return true;
}

static Clock::time_point frozen_now() { return t0; }

static void test_watchdog_thread_runs_and_stops() {
    std::promise<void> pinged;
    first_ping = &pinged;
    sd::Heartbeat heartbeat;
    sd::Watchdog watchdog(heartbeat, std::chrono::seconds(30), &signal_ping, &frozen_now);
    heartbeat.beat();
    watchdog.start();
    pinged.get_future().wait();
    watchdog.stop();
    CHECK(first_ping == nullptr);
    sd::Watchdog disabled(heartbeat, std::chrono::microseconds(0), &signal_ping);
    disabled.start();  // outside systemd: no thread, stop() returns at once
    CHECK(!disabled.enabled());
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

// LOG_LEVEL is journalctl -p's name for PRIORITY, and cannot be set twice.
static void test_journal_log_level_follows_priority() {
    const char* names[] = {"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"};
    for (int p = 0; p <= 7; ++p) {
        sd::journal::Entry entry(p, "m");
        const std::string payload(entry.payload());
        CHECK(payload.find("PRIORITY=" + std::to_string(p) + "\nLOG_LEVEL=" + names[p] + "\n") != std::string::npos);
    }
    sd::journal::Entry entry(LOG_WARNING, "m");
    entry.field("LOG_LEVEL", "error").field("PRIORITY", "3").field("MESSAGE", "other");
    CHECK(entry.dropped() == 3);
    CHECK(std::string(entry.payload()) == "MESSAGE=m\nPRIORITY=4\nLOG_LEVEL=warning\n");
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
    test_check_interval_follows_the_budget();
    test_progress_within_the_budget_never_triggers();
    test_stall_beyond_the_budget_triggers_once();
    test_a_late_checker_is_not_a_stall();
    test_watchdog_thread_runs_and_stops();
    test_journal_entry_fields(dir);
    test_journal_log_level_follows_priority();
    test_journal_entry_never_overflows();
    ::rmdir(dir.c_str());
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
