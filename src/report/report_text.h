// Text formatting shared by the report pages and plots: appends, Markdown escaping, numbers.
#pragma once

#include <fmt/format.h>

#include <iterator>
#include <string>
#include <string_view>
#include <utility>

namespace switchyard::report {

// fmt::format_to onto a string, keeping fmt's compile-time format checks.
template <typename... Args>
void append(std::string& out, fmt::format_string<Args...> format, Args&&... args) {
  fmt::format_to(std::back_inserter(out), format, std::forward<Args>(args)...);
}

// Markdown table cells: pipes end cells, newlines end rows, and raw HTML would render.
std::string md_escape(std::string_view s);

// 1234567 -> "1,234,567"; non-finite -> "—".
std::string thousands(double v);

// 2713344 -> "2.71 M"; non-finite or non-positive -> "—".
std::string human_count(double v);

// Seconds as s, min or h; non-finite -> "running".
std::string seconds_text(double s);

// An axis tick: `decimals` fixed decimals, whole numbers from 10000 with thousands separators.
std::string tick_label(double v, int decimals);

}  // namespace switchyard::report
