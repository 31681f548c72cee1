// The look of the comparison report: the page's CSS and the runs' colours and dash patterns.
#pragma once

#include <array>
#include <cstddef>
#include <string>

namespace switchyard::report {

// Okabe & Ito's colour-blind-safe palette, the low-contrast yellow last; past eight runs the
// colours repeat with a dash pattern.
constexpr std::array<const char*, 8> kPalette = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                                 "#E69F00", "#56B4E9", "#000000", "#F0E442"};

// Style index i: colour i mod 8, dash (i / 8) mod 3.
const char* run_colour(size_t i);
const char* run_dash(size_t i);

// index.html's stylesheet (the plots' kPlotCss included).
std::string report_css();

}  // namespace switchyard::report
