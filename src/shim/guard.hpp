// How the shim's C functions carry errors across the FFI: they never throw; a failing call returns
// its error value (null or -1) and leaves the exception's message for rr_last_error().

#pragma once

#include <c10/util/Exception.h>

#include <exception>
#include <string>

namespace rr {

// This thread's last error message (one per thread, shared by every file of the shim).
inline std::string& last_error() {
  thread_local std::string message;
  return message;
}

template <typename F>
auto guarded(F f, decltype(f()) on_error) -> decltype(f()) {
  try {
    last_error().clear();
    return f();
  } catch (const c10::Error& e) {
    last_error() = e.what_without_backtrace();  // the message, not libtorch's C++ stack
  } catch (const std::exception& e) {
    last_error() = e.what();
  } catch (...) {
    last_error() = "unknown C++ exception";
  }
  return on_error;
}

}  // namespace rr
