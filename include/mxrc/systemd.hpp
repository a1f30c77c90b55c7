// mxrc/systemd.hpp - sd_notify, a health-gated watchdog and native journald
// logging for MXRC's C++ processes. Header-only, C++17, no libsystemd.
//
// Why no libsystemd: the two protocols are a datagram each (sd_notify(3),
// systemd-journald.socket(8) "native protocol"), so speaking them directly
// costs a few dozen lines, links nothing, works in static builds and lets us
// promise exactly what the real-time loop may call:
//
//   RT thread:      Heartbeat::beat()                   one relaxed atomic add
//   non-RT threads: notify(), Watchdog, journal::Entry  syscalls, no allocation
//
// Typical use:
//
//   mxrc::systemd::Heartbeat heartbeat;
//   mxrc::systemd::Watchdog watchdog(heartbeat);   // pings only while beats arrive
//   watchdog.set_stall_budget(std::chrono::milliseconds(100));  // 100 cycles at 1 kHz
//   watchdog.start();                              // its own SCHED_OTHER thread
//   mxrc::systemd::notify("READY=1");
//   for (;;) { control_cycle(); heartbeat.beat(); }
//
//   mxrc::systemd::journal::Entry(LOG_ERR, "joint limit")
//       .field("TRACE_ID", trace_id).field("JOINT", "3").send();

#ifndef MXRC_SYSTEMD_HPP
#define MXRC_SYSTEMD_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string_view>
#include <thread>

#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

namespace mxrc::systemd {

namespace detail {

// Fill `addr` from a socket path; "@name" is the abstract namespace.
// Returns the address length, or 0 if the path does not fit.
inline socklen_t make_address(const char* path, sockaddr_un& addr) noexcept {
    std::memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    const size_t len = std::strlen(path);
    if (len == 0 || len >= sizeof addr.sun_path) return 0;
    std::memcpy(addr.sun_path, path, len);
    if (path[0] == '@') addr.sun_path[0] = '\0';
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len + (path[0] == '@' ? 0 : 1));
}

inline bool send_datagram(const char* path, const iovec* iov, size_t iovcnt) noexcept {
    sockaddr_un addr;
    const socklen_t addrlen = make_address(path, addr);
    if (addrlen == 0) return false;
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    msghdr msg{};
    msg.msg_name = &addr;
    msg.msg_namelen = addrlen;
    msg.msg_iov = const_cast<iovec*>(iov);
    msg.msg_iovlen = iovcnt;
    const bool ok = ::sendmsg(fd, &msg, MSG_NOSIGNAL) >= 0;
    ::close(fd);
    return ok;
}

}  // namespace detail

// sd_notify(3): send "READY=1", "STATUS=...", "WATCHDOG=1", "WATCHDOG=trigger", "STOPPING=1",
// "RELOADING=1", "EXTEND_TIMEOUT_USEC=..." (newline-separated for several).
// Returns false outside systemd (no NOTIFY_SOCKET): safe to call anywhere.
inline bool notify(std::string_view state) noexcept {
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (path == nullptr) return false;
    iovec iov{const_cast<char*>(state.data()), state.size()};
    return detail::send_datagram(path, &iov, 1);
}

// The watchdog timeout systemd set for this process (WATCHDOG_USEC), or zero.
// As sd_watchdog_enabled(3): a child that inherited the variables gets zero.
inline std::chrono::microseconds watchdog_timeout() noexcept {
    const char* usec = std::getenv("WATCHDOG_USEC");
    if (usec == nullptr) return std::chrono::microseconds{0};
    const char* pid = std::getenv("WATCHDOG_PID");
    if (pid != nullptr && std::strtol(pid, nullptr, 10) != static_cast<long>(::getpid())) {
        return std::chrono::microseconds{0};
    }
    char* end = nullptr;
    const unsigned long long value = std::strtoull(usec, &end, 10);
    if (end == usec || *end != '\0') return std::chrono::microseconds{0};
    return std::chrono::microseconds{static_cast<long long>(value)};
}

// Proof of progress, bumped by the real-time loop: lock-free, wait-free.
class Heartbeat {
public:
    void beat() noexcept { count_.fetch_add(1, std::memory_order_relaxed); }
    std::uint64_t count() const noexcept { return count_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::uint64_t> count_{0};
    static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "heartbeat must be lock-free");
};

// Pings systemd from its own SCHED_OTHER thread, but only while the
// heartbeat moves: a hung control loop stops the pings, and systemd kills it
// 0.75-1.25 x WatchdogSec after the hang began (the pinger runs at a quarter
// of the timeout and its last ping may still carry the final beats).
//
// With a stall budget (set_stall_budget(), e.g. 100 cycles of a 1 kHz loop =
// 100 ms) the pinger looks at the heartbeat every quarter of the budget, and
// once the loop has gone longer than the budget without a beat it sends
// WATCHDOG=trigger (systemd >= 243): systemd kills the process at once, as
// for a watchdog timeout (Result=watchdog, Restart= applies), instead of
// waiting out WatchdogSec.  WatchdogSec stays the backstop for a process
// frozen as a whole, pinger included.  The budget is armed by the first beat,
// so initialisation before the loop starts is not a stall.
class Watchdog {
public:
    using Sender = bool (*)(std::string_view);
    using Clock = std::chrono::steady_clock;
    using Now = Clock::time_point (*)();  // injectable, so tests drive time explicitly

    enum class Action { none, ping, trigger };

    explicit Watchdog(const Heartbeat& heartbeat,
                      std::chrono::microseconds timeout = watchdog_timeout(),
                      Sender send = &notify, Now now = &Clock::now) noexcept
        : heartbeat_(heartbeat), timeout_(timeout), send_(send), now_(now) {}
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;
    ~Watchdog() { stop(); }

    // Call before start(). Zero (the default) leaves detection to WatchdogSec.
    void set_stall_budget(std::chrono::microseconds budget) noexcept {
        budget_ = budget.count() > 0 ? budget : std::chrono::microseconds{0};
    }
    std::chrono::microseconds stall_budget() const noexcept { return budget_; }

    bool enabled() const noexcept { return timeout_.count() > 0; }
    std::chrono::microseconds period() const noexcept { return timeout_ / 4; }
    bool triggered() const noexcept { return triggered_.load(std::memory_order_relaxed); }

    // How often the pinger thread looks at the heartbeat: the ping period, or
    // a quarter of the stall budget (at least 1 ms) when that is shorter.
    std::chrono::microseconds check_interval() const noexcept {
        if (budget_.count() == 0) return period();
        const auto quarter = std::max(budget_ / 4, std::chrono::microseconds{1000});
        return std::min(period(), quarter);
    }

    // One pinger step at time `now`: ping when the loop progressed and a ping
    // is due, trigger when it has stalled beyond the budget, else nothing.
    // start()'s thread calls it; call it yourself only instead of start()
    // (your own non-RT loop, or a test driving time), never beside it.
    Action tick(Clock::time_point now) noexcept {
        if (triggered()) return Action::none;  // systemd is already killing us
        const std::uint64_t count = heartbeat_.count();
        if (count != seen_) {
            seen_ = count;
            last_progress_ = now;
            armed_ = true;
        } else if (armed_ && budget_.count() > 0 && now - last_progress_ > budget_) {
            return trigger(now);
        }
        // Half an interval of slack: a wake-up a hair early must not skip a ping.
        const bool due = !pinged_once_ || now - last_ping_ >= period() - check_interval() / 2;
        if (count == pinged_ || !due) return Action::none;
        pinged_ = count;
        last_ping_ = now;
        pinged_once_ = true;
        send_("WATCHDOG=1");
        return Action::ping;
    }
    Action tick() noexcept { return tick(now_()); }

    void start() {
        if (!enabled() || thread_.joinable()) return;
        stopping_ = false;
        thread_ = std::thread([this] {
            // The RT main thread's policy is inherited: drop it, pinging is not RT work.
            sched_param param{};
            pthread_setschedparam(pthread_self(), SCHED_OTHER, &param);
            std::unique_lock<std::mutex> lock(mutex_);
            do {
                tick();
            } while (!cv_.wait_for(lock, check_interval(), [this] { return stopping_; }));
        });
    }

    void stop() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopping_ = true;
        }
        cv_.notify_all();
        if (thread_.joinable()) thread_.join();
    }

private:
    Action trigger(Clock::time_point now) noexcept {
        using std::chrono::duration_cast;
        using std::chrono::milliseconds;
        triggered_.store(true, std::memory_order_relaxed);
        // STATUS= first: systemd logs "Watchdog request (last status: ...)!".
        char message[160];
        const int n = std::snprintf(message, sizeof message,
                                    "STATUS=control loop stalled: no heartbeat for %lld ms (budget %lld ms)\n"
                                    "WATCHDOG=trigger",
                                    static_cast<long long>(duration_cast<milliseconds>(now - last_progress_).count()),
                                    static_cast<long long>(duration_cast<milliseconds>(budget_).count()));
        const bool fits = n > 0 && n < static_cast<int>(sizeof message);
        send_(fits ? std::string_view(message, static_cast<size_t>(n)) : std::string_view("WATCHDOG=trigger"));
        return Action::trigger;
    }

    const Heartbeat& heartbeat_;
    std::chrono::microseconds timeout_;
    Sender send_;
    Now now_;
    std::chrono::microseconds budget_{0};
    std::uint64_t seen_ = 0;
    std::uint64_t pinged_ = 0;
    Clock::time_point last_progress_{};
    Clock::time_point last_ping_{};
    bool armed_ = false;
    bool pinged_once_ = false;
    std::atomic<bool> triggered_{false};  // read by other threads (status, tests)
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable cv_;
    bool stopping_ = false;
};

namespace journal {

inline constexpr const char* kSocket = "/run/systemd/journal/socket";

// LOG_LEVEL for each syslog priority: the names journalctl -p takes, the same
// in the Python helper (mxrc_runtime.journal), so one query finds both.
inline constexpr const char* kLevelNames[] = {"emerg", "alert", "crit", "err",
                                              "warning", "notice", "info", "debug"};

// One journal entry built in a fixed buffer (no allocation): MESSAGE,
// PRIORITY (syslog level, for journalctl -p), LOG_LEVEL, and any fields.
// Field names: upper case, digits and "_", not starting with "_".
// A field that does not fit the buffer is dropped and counted.
template <size_t Capacity = 4096>
class BasicEntry {
public:
    BasicEntry(int priority, std::string_view message) noexcept {
        const int p = priority < 0 ? 0 : (priority > 7 ? 7 : priority);
        const char digit[2] = {static_cast<char>('0' + p), '\0'};
        append_field("MESSAGE", message);
        append_field("PRIORITY", digit);
        append_field("LOG_LEVEL", kLevelNames[p]);
    }

    // MESSAGE, PRIORITY and LOG_LEVEL come from the constructor: a second
    // value would make two, so they are refused (dropped) here.
    BasicEntry& field(std::string_view name, std::string_view value) noexcept {
        if (name == "MESSAGE" || name == "PRIORITY" || name == "LOG_LEVEL") {
            ++dropped_;
            return *this;
        }
        return append_field(name, value);
    }

    std::string_view payload() const noexcept { return {buffer_, used_}; }
    int dropped() const noexcept { return dropped_; }

    // Send to journald; outside systemd's reach the message goes to stderr.
    bool send(const char* socket_path = kSocket) const noexcept {
        iovec iov{const_cast<char*>(buffer_), used_};
        if (detail::send_datagram(socket_path, &iov, 1)) return true;
        std::fprintf(stderr, "%.*s", static_cast<int>(used_), buffer_);
        return false;
    }

private:
    BasicEntry& append_field(std::string_view name, std::string_view value) noexcept {
        if (!valid_name(name)) {
            ++dropped_;
            return *this;
        }
        const bool binary = value.find('\n') != std::string_view::npos;
        const size_t need = name.size() + 1 + (binary ? 8 : 0) + value.size() + 1;
        if (used_ + need > Capacity) {
            ++dropped_;
            return *this;
        }
        append(name);
        if (binary) {  // KEY\n<64-bit little-endian length><value>\n
            append("\n");
            std::uint64_t len = value.size();
            for (int i = 0; i < 8; ++i) buffer_[used_++] = static_cast<char>((len >> (8 * i)) & 0xff);
        } else {
            append("=");
        }
        append(value);
        append("\n");
        return *this;
    }

    static bool valid_name(std::string_view name) noexcept {
        if (name.empty() || name.size() > 64 || name[0] == '_') return false;
        for (char c : name) {
            if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
        }
        return true;
    }

    void append(std::string_view s) noexcept {
        std::memcpy(buffer_ + used_, s.data(), s.size());
        used_ += s.size();
    }

    char buffer_[Capacity];
    size_t used_ = 0;
    int dropped_ = 0;
};

using Entry = BasicEntry<>;

}  // namespace journal
}  // namespace mxrc::systemd

#endif  // MXRC_SYSTEMD_HPP
