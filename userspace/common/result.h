// Error handling for every oneframe library: no exceptions across library boundaries, no logging.
// A failure carries a positive errno-style code (what a caller branches on) and a message
// (what an operator reads). Library code returns these; only programs print them.
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace of {

struct Error {
    int code = EINVAL;  // positive errno value
    std::string message;
};

inline Error make_error(int code, std::string message) { return Error{code, std::move(message)}; }

template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}
    Result(Error e) : v_(std::move(e)) {}

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    const Error& error() const { return std::get<1>(v_); }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error e) : err_(std::move(e)), ok_(false) {}
    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }
    const Error& error() const { return err_; }

private:
    Error err_{};
    bool ok_ = true;
};

using Status = Result<void>;

// Builds an Error from errno after a failed system call: "what: strerror".
Error errno_error(const std::string& what, int err = errno);

}  // namespace of
