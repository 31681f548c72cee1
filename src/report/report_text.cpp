// Text formatting for the HTML reports and summary.md (report_text.h), and html_escape.
#include "report/report_text.h"

#include <switchyard/report.h>

#include <cctype>
#include <cmath>

namespace switchyard {

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

namespace report {

std::string md_escape(std::string_view s) {
  auto word = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) != 0; };
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    switch (c) {
      case '|':
        out += "\\|";
        break;
      case '\n':
      case '\r':
        out += ' ';
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '_':
        // Only at a word's edge can '_' start emphasis; "deepseek_v3" stays readable.
        if (i == 0 || !word(s[i - 1]) || i + 1 == s.size() || !word(s[i + 1])) out += '\\';
        out += c;
        break;
      case '*':
      case '`':
      case '[':
      case ']':
      case '\\':
        out += '\\', out += c;
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string thousands(double v) {
  if (!std::isfinite(v)) return "—";
  const std::string digits = fmt::format("{:.0f}", std::fabs(v));
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (v < 0 ? "-" : "") + out;
}

std::string human_count(double v) {
  if (!std::isfinite(v) || v <= 0) return "—";
  const char* units[] = {"", " k", " M", " G", " T"};
  int u = 0;
  while (v >= 1000 && u < 4) v /= 1000, ++u;
  const int decimals = u == 0 ? 0 : v < 10 ? 2 : v < 100 ? 1 : 0;
  return fmt::format("{:.{}f}{}", v, decimals, units[u]);
}

std::string seconds_text(double s) {
  if (!std::isfinite(s)) return "running";
  if (s < 120) return fmt::format("{:.1f} s", s);
  if (s < 7200) return fmt::format("{:.1f} min", s / 60);
  return fmt::format("{:.2f} h", s / 3600);
}

std::string tick_label(double v, int decimals) {
  if (decimals == 0 && std::fabs(v) >= 10000) return thousands(v);
  return fmt::format("{:.{}f}", v, decimals);
}

}  // namespace report
}  // namespace switchyard
