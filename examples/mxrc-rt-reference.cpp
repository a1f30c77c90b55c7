// mxrc-rt-reference: a reference real-time loop for mxrc-rt.service.
//
// What an MXRC RT process does with the unit's settings: lock its memory,
// prefault its stack, wake at 1 kHz on an absolute CLOCK_MONOTONIC deadline
// (MXRC_PERIOD_US sets another period: the VM test bed runs it at 250 Hz, as
// each wake-up of an emulated CPU costs the host about half a millisecond),
// measure its own wake-up latency, prove progress to the watchdog from the
// loop and report from a non-RT thread (STATUS= and the journal).
//
// Stall budget: the loop declares how long it may go without a beat before
// the watchdog thread tells systemd to kill it (WATCHDOG=trigger) instead of
// waiting for WatchdogSec. MXRC_STALL_BUDGET_MS overrides it (0: WatchdogSec only).
//
// Fault injection for the drills, from the environment (a drop-in's
// Environment=MXRC_FAULT=...):
//   hang:SECONDS    stop proving progress after SECONDS (the loop keeps running)
//   crash:SECONDS   abort() after SECONDS
//   oom             allocate and touch memory until the kernel stops us
//   burn:N          start N SCHED_OTHER threads that spin
//   write-usr, write-etc   try to create a file there; log the result
//   tmp             create /tmp/mxrc-rt-probe (PrivateTmp makes it invisible outside)
//   log-levels      log once at every level with trace and span ids
#include <mxrc/systemd.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace sd = mxrc::systemd;

namespace {

constexpr long kDefaultPeriodNs = 1'000'000;   // 1 kHz
// 1 s (1000 cycles at 1 kHz): a controller would declare ~100 ms; the reference
// is also run on emulated, shared test machines whose vCPUs can pause for tens
// of ms, and a false kill there would be a flaky test, not a finding.
constexpr long kStallBudgetMs = 1000;
constexpr size_t kStackPrefault = 512 * 1024;

std::atomic<bool> stop_requested{false};

// Per-second wake-up latency, written by the RT loop, read by the reporter.
struct LatencyWindow {
    std::atomic<long> min_ns{LONG_MAX}, max_ns{0}, sum_ns{0}, count{0};
    void add(long ns) noexcept {
        count.fetch_add(1, std::memory_order_relaxed);
        sum_ns.fetch_add(ns, std::memory_order_relaxed);
        long m = min_ns.load(std::memory_order_relaxed);
        while (ns < m && !min_ns.compare_exchange_weak(m, ns, std::memory_order_relaxed)) {}
        m = max_ns.load(std::memory_order_relaxed);
        while (ns > m && !max_ns.compare_exchange_weak(m, ns, std::memory_order_relaxed)) {}
    }
};

void timespec_add_ns(timespec& t, long ns) noexcept {
    t.tv_nsec += ns;
    while (t.tv_nsec >= 1'000'000'000) {
        t.tv_nsec -= 1'000'000'000;
        ++t.tv_sec;
    }
}

long diff_ns(const timespec& a, const timespec& b) noexcept {
    return (a.tv_sec - b.tv_sec) * 1'000'000'000L + (a.tv_nsec - b.tv_nsec);
}

void prefault_stack() {
    volatile unsigned char buffer[kStackPrefault];
    for (size_t i = 0; i < sizeof buffer; i += 4096) buffer[i] = 0;
}

void log(int priority, const std::string& message, const char* trace = nullptr) {
    sd::journal::Entry entry(priority, message);
    entry.field("SYSLOG_IDENTIFIER", "mxrc-rt");
    if (trace != nullptr) entry.field("TRACE_ID", trace).field("SPAN_ID", "00f067aa0ba902b7");
    entry.send();
}

std::string fault_name() {
    const char* f = std::getenv("MXRC_FAULT");
    return f ? f : "";
}

long fault_arg(const std::string& fault, long fallback) {
    const auto colon = fault.find(':');
    return colon == std::string::npos ? fallback : std::strtol(fault.c_str() + colon + 1, nullptr, 10);
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// A whole number from the environment within [low, high]; the fallback (and a
// warning naming the variable, the value and what it should be) otherwise.
long env_number(const char* name, long low, long high, const char* what, long fallback) {
    const char* text = std::getenv(name);
    if (text == nullptr) return fallback;
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < low || value > high) {
        log(LOG_WARNING, std::string(name) + "=" + text + " is not " + what + "; using the default");
        return fallback;
    }
    return value;
}

// The loop's period: MXRC_PERIOD_US (100 us to 1 s), else 1 ms.
long period_ns() {
    return env_number("MXRC_PERIOD_US", 100, 1'000'000, "a period in microseconds (100 to 1000000)",
                      kDefaultPeriodNs / 1000) * 1000;
}

std::chrono::microseconds stall_budget() {
    return std::chrono::milliseconds(env_number("MXRC_STALL_BUDGET_MS", 0, LONG_MAX,
                                                "a number of milliseconds (0 or more)", kStallBudgetMs));
}

// "SCHED_FIFO priority=80 cpus=2,3": what systemd actually gave this process.
std::string placement() {
    sched_param param{};
    const int policy = sched_getscheduler(0);
    sched_getparam(0, &param);
    cpu_set_t set;
    CPU_ZERO(&set);
    sched_getaffinity(0, sizeof set, &set);
    std::string cpus;
    for (int c = 0; c < CPU_SETSIZE; ++c) {
        if (CPU_ISSET(c, &set)) cpus += (cpus.empty() ? "" : ",") + std::to_string(c);
    }
    const char* name = policy == SCHED_FIFO ? "SCHED_FIFO" : policy == SCHED_RR ? "SCHED_RR" : "SCHED_OTHER";
    return std::string(name) + " priority=" + std::to_string(param.sched_priority) + " cpus=" + cpus;
}

// The calls an RT controller makes on itself, which the unit's syscall
// filter must keep allowed: "sched_setaffinity=ok sched_setscheduler=ok".
std::string rt_syscalls() {
    std::string out;
    cpu_set_t set;
    CPU_ZERO(&set);
    sched_getaffinity(0, sizeof set, &set);
    out += std::string("sched_setaffinity=") + (sched_setaffinity(0, sizeof set, &set) == 0 ? "ok" : std::strerror(errno));
    sched_param own{};
    sched_getparam(0, &own);
    int result = 0;
    std::thread([&result, &own] {
        // A worker thread at the process's own priority (at least 1), as a controller would.
        sched_param param{};
        param.sched_priority = own.sched_priority > 0 ? own.sched_priority : 1;
        result = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param);
    }).join();
    out += std::string(" sched_setscheduler=") + (result == 0 ? "ok" : std::strerror(result));
    return out;
}

// SC-010 wants every write refused: try many times, report the count.
void try_write(const char* dir) {
    constexpr int kAttempts = 100;
    int succeeded = 0, last_errno = 0;
    for (int i = 0; i < kAttempts; ++i) {
        const std::string path = std::string(dir) + "/mxrc-rt-probe-" + std::to_string(i);
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
            ::close(fd);
            ::unlink(path.c_str());
            ++succeeded;
        } else {
            last_errno = errno;
        }
    }
    log(succeeded ? LOG_ERR : LOG_NOTICE,
        "writes to " + std::string(dir) + ": " + std::to_string(succeeded) + " of " +
            std::to_string(kAttempts) + " succeeded" +
            (last_errno ? std::string(" (refused: ") + std::strerror(last_errno) + ")" : ""));
}

void run_startup_faults(const std::string& fault) {
    if (fault == "write-usr") try_write("/usr");
    if (fault == "write-etc") try_write("/etc");
    if (fault == "tmp") {
        const int fd = ::open("/tmp/mxrc-rt-probe", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) ::close(fd);
        log(LOG_NOTICE, fd >= 0 ? "created /tmp/mxrc-rt-probe" : "cannot create /tmp/mxrc-rt-probe");
    }
    if (fault == "log-levels") {
        for (int p = LOG_EMERG; p <= LOG_DEBUG; ++p) {
            log(p, "reference log line at priority " + std::to_string(p), "4bf92f3577b34da6a3ce929d0e0e4736");
        }
    }
    if (starts_with(fault, "burn:")) {
        // Each burner pinned to its own CPU, round-robin over all of them, so
        // neither isolcpus nor the load balancer limits the demand: only
        // CPUQuota= can hold them to their share.
        const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        for (long i = 0; i < fault_arg(fault, 1); ++i) {
            std::thread([i, cpus] {
                sched_param param{};
                pthread_setschedparam(pthread_self(), SCHED_OTHER, &param);
                cpu_set_t one;
                CPU_ZERO(&one);
                CPU_SET(static_cast<int>(i % cpus), &one);
                sched_setaffinity(0, sizeof one, &one);
                for (volatile unsigned long n = 0;; n = n + 1) {}
            }).detach();
        }
    }
    if (fault == "oom") {
        std::vector<char*> blocks;
        for (;;) {
            char* block = static_cast<char*>(std::malloc(64 << 20));
            if (block == nullptr) break;
            std::memset(block, 1, 64 << 20);  // touch: mlockall(MCL_FUTURE) also pins it
            blocks.push_back(block);
        }
        log(LOG_ERR, "allocation failed before the OOM kill");
    }
}

}  // namespace

int main() {
    std::signal(SIGTERM, [](int) { stop_requested.store(true); });
    std::signal(SIGINT, [](int) { stop_requested.store(true); });

    const bool locked = ::mlockall(MCL_CURRENT | MCL_FUTURE) == 0;
    const int lock_errno = errno;
    prefault_stack();

    const std::string where = placement();
    const std::string syscalls = rt_syscalls();

    sd::Heartbeat heartbeat;
    sd::Watchdog watchdog(heartbeat);
    watchdog.set_stall_budget(stall_budget());
    LatencyWindow window;
    const std::string fault = fault_name();
    const long period = period_ns();
    const long hz = 1'000'000'000L / period;

    // The reporter: a SCHED_OTHER thread, once a second.
    std::thread reporter([&] {
        sched_param other{};
        pthread_setschedparam(pthread_self(), SCHED_OTHER, &other);
        while (!stop_requested.load()) {
            std::this_thread::sleep_for(std::chrono::seconds(1));
            const long n = window.count.exchange(0);
            const long sum = window.sum_ns.exchange(0);
            const long mn = window.min_ns.exchange(LONG_MAX);
            const long mx = window.max_ns.exchange(0);
            if (n == 0) continue;
            char status[256];
            std::snprintf(status, sizeof status,
                          "STATUS=%s, %ld Hz, wake-up latency us min %ld avg %ld max %ld (%ld cycles)",
                          where.c_str(), hz, mn / 1000, sum / n / 1000, mx / 1000, n);
            sd::notify(status);
        }
    });

    run_startup_faults(fault);
    watchdog.start();

    const std::string started = where + " mlockall=" + (locked ? "ok" : std::strerror(lock_errno)) + " " + syscalls +
                                " stall_budget_ms=" + std::to_string(watchdog.stall_budget().count() / 1000);
    sd::notify("READY=1\nSTATUS=" + started);
    log(LOG_INFO, "mxrc-rt reference loop started: " + started);

    const long hang_after = starts_with(fault, "hang") ? fault_arg(fault, 5) * hz : -1;
    const long crash_after = starts_with(fault, "crash") ? fault_arg(fault, 5) * hz : -1;
    timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (long cycle = 0; !stop_requested.load(std::memory_order_relaxed); ++cycle) {
        timespec_add_ns(next, period);
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr);
        timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        window.add(std::max(0L, diff_ns(now, next)));
        if (cycle == crash_after) std::abort();
        // The drill's clock starts here: journald stamps the entry on receipt.
        // A syscall in the loop, but from here on the loop is "hung" anyway.
        if (cycle == hang_after) log(LOG_WARNING, "injected hang: the loop stops beating");
        if (hang_after < 0 || cycle < hang_after) heartbeat.beat();
    }

    sd::notify("STOPPING=1");
    watchdog.stop();
    reporter.join();
    return 0;
}
