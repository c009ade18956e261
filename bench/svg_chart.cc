#include "bench/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace courier::bench {
namespace {

constexpr int kWidth = 960;
constexpr int kLeft = 90;  // room for the y-axis labels
constexpr int kRight = 30;
constexpr int kPanelHeight = 330;
constexpr int kPlotTop = 50;  // within a panel: title above
constexpr int kPlotHeight = 230;
constexpr size_t kPayload = 64;

std::string Esc(const std::string& text) {
  std::string out;
  for (char c : text) {
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
      default:
        out += c;
    }
  }
  return out;
}

std::string Color(const std::string& system, size_t index) {
  if (system == "raw") return "#8c8c8c";
  if (system == "courier") return "#1f77b4";
  if (system == "grpc") return "#ff7f0e";
  if (system == "capnp") return "#2ca02c";
  static const char* const kOthers[] = {"#9467bd", "#d62728", "#17becf", "#bcbd22"};
  return kOthers[index % 4];
}

// A round upper bound for the axis: 1, 2 or 5 times a power of ten.
double NiceMax(double max) {
  if (max <= 0) return 1;
  double power = std::pow(10, std::floor(std::log10(max)));
  for (double step : {1.0, 2.0, 5.0, 10.0}) {
    if (step * power >= max) return step * power;
  }
  return 10 * power;
}

std::string Compact(double x) {
  if (x >= 1e6) return absl::StrFormat("%.3gM", x / 1e6);
  if (x >= 1e3) return absl::StrFormat("%.3gk", x / 1e3);
  return absl::StrFormat("%.3g", x);
}

struct Series {
  std::string system;
  std::vector<std::optional<double>> values;  // per transport
};

std::string Panel(int top, const std::string& title, const std::vector<std::string>& transports,
                  const std::vector<Series>& series) {
  std::string svg = absl::StrFormat(
      "<g transform=\"translate(0,%d)\">\n<text x=\"%d\" y=\"24\" class=\"title\">%s</text>\n", top,
      kLeft, Esc(title));
  double max = 0;
  for (const Series& s : series) {
    for (const auto& v : s.values) max = std::max(max, v.value_or(0));
  }
  const double axis_max = NiceMax(max * 1.05);
  const int plot_width = kWidth - kLeft - kRight;
  const int bottom = kPlotTop + kPlotHeight;
  for (int i = 0; i <= 5; ++i) {
    double value = axis_max * i / 5;
    int y = bottom - static_cast<int>(std::lround(kPlotHeight * i / 5.0));
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"grid\"/>\n"
                          "<text x=\"%d\" y=\"%d\" class=\"tick\" text-anchor=\"end\">%s</text>\n",
                          kLeft, y, kLeft + plot_width, y, kLeft - 8, y + 4, Compact(value));
  }
  const double group_width =
      static_cast<double>(plot_width) / std::max<size_t>(transports.size(), 1);
  const double bar_width =
      std::min(70.0, group_width * 0.8 / static_cast<double>(std::max<size_t>(series.size(), 1)));
  for (size_t g = 0; g < transports.size(); ++g) {
    const double group_left = kLeft + group_width * static_cast<double>(g);
    const double bars_left =
        group_left + (group_width - bar_width * static_cast<double>(series.size())) / 2;
    absl::StrAppendFormat(
        &svg, "<text x=\"%.1f\" y=\"%d\" class=\"label\" text-anchor=\"middle\">%s://</text>\n",
        group_left + group_width / 2, bottom + 24, Esc(transports[g]));
    for (size_t s = 0; s < series.size(); ++s) {
      const double x = bars_left + bar_width * static_cast<double>(s);
      const std::optional<double>& value = series[s].values[g];
      if (!value) {
        absl::StrAppendFormat(
            &svg, "<text x=\"%.1f\" y=\"%d\" class=\"value\" text-anchor=\"middle\">n/a</text>\n",
            x + bar_width / 2, bottom - 4);
        continue;
      }
      const double height = kPlotHeight * *value / axis_max;
      absl::StrAppendFormat(
          &svg,
          "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\">"
          "<title>%s %s: %s</title></rect>\n"
          "<text x=\"%.1f\" y=\"%.1f\" class=\"value\" text-anchor=\"middle\">%s</text>\n",
          x + 1, bottom - height, bar_width - 2, height, Color(series[s].system, s),
          Esc(series[s].system), Esc(transports[g]), Compact(*value), x + bar_width / 2,
          bottom - height - 5, Compact(*value));
    }
  }
  absl::StrAppendFormat(&svg,
                        "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"axis\"/>\n</g>\n",
                        kLeft, bottom, kLeft + plot_width, bottom);
  return svg;
}

}  // namespace

std::string ToSvg(const RunResult& run) {
  std::vector<std::string> systems, transports;
  for (const CaseResult& c : run.cases) {
    if (c.payload != kPayload) continue;
    if (std::find(systems.begin(), systems.end(), c.system) == systems.end()) {
      systems.push_back(c.system);
    }
    if (std::find(transports.begin(), transports.end(), c.transport) == transports.end()) {
      transports.push_back(c.transport);
    }
  }
  auto collect = [&](const std::function<std::optional<double>(const CaseResult&)>& figure) {
    std::vector<Series> series;
    for (const std::string& system : systems) {
      Series s{system, {}};
      for (const std::string& transport : transports) {
        const CaseResult* c = run.Find(system, transport, kPayload);
        s.values.push_back(c ? figure(*c) : std::nullopt);
      }
      series.push_back(std::move(s));
    }
    return series;
  };
  std::vector<Series> latency = collect([](const CaseResult& c) -> std::optional<double> {
    if (!c.latency) return std::nullopt;
    return c.latency->p50_us;
  });
  std::vector<Series> throughput = collect([](const CaseResult& c) -> std::optional<double> {
    const ThroughputFigures* t = c.AtInFlight(32);
    if (!t) return std::nullopt;
    return t->calls_per_s;
  });

  // Issue #13's handshake phase, when it ran: the fresh-connection p50 per transport, the same
  // colours (a system that ran no payload case there joins the legend).
  std::vector<std::string> handshake_transports;
  for (const HandshakeResult& h : run.handshakes) {
    if (std::find(systems.begin(), systems.end(), h.system) == systems.end()) {
      systems.push_back(h.system);
    }
    if (std::find(handshake_transports.begin(), handshake_transports.end(), h.transport) ==
        handshake_transports.end()) {
      handshake_transports.push_back(h.transport);
    }
  }
  std::vector<Series> handshake;
  for (const std::string& system : systems) {
    Series s{system, {}};
    for (const std::string& transport : handshake_transports) {
      const HandshakeResult* h = FindHandshake(run, system, transport);
      s.values.push_back(h && h->figures && h->error.empty()
                             ? std::optional<double>(h->figures->p50_us)
                             : std::nullopt);
    }
    handshake.push_back(std::move(s));
  }
  // A system that ran only handshakes has no bars in the payload panels (n/a).
  for (std::vector<Series>* panel : {&latency, &throughput}) {
    for (size_t s = panel->size(); s < systems.size(); ++s) {
      panel->push_back({systems[s], std::vector<std::optional<double>>(transports.size())});
    }
  }

  const int header = 92;
  const int panels = handshake_transports.empty() ? 2 : 3;
  const int height = header + panels * kPanelHeight;
  const MachineInfo& m = run.machine;
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
      "font-family=\"Helvetica, Arial, sans-serif\">\n"
      "<style>.h1{font-size:20px;font-weight:bold}.sub{font-size:12px;fill:#444}"
      ".title{font-size:15px;font-weight:bold}.tick{font-size:11px;fill:#555}"
      ".label{font-size:13px}.value{font-size:11px;fill:#222}.legend{font-size:13px}"
      ".grid{stroke:#ddd;stroke-width:1}.axis{stroke:#333;stroke-width:1}</style>\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
      "<text x=\"20\" y=\"30\" class=\"h1\">courier-bench (%s): echo, %s payload</text>\n"
      "<text x=\"20\" y=\"50\" class=\"sub\">%s, %d CPUs, %s, %s; %s</text>\n",
      kWidth, height, kWidth, height, Esc(run.mode), PayloadLabel(kPayload), Esc(m.cpu_model),
      m.nproc, Esc(m.kernel), Esc(m.date),
      m.pinned ? "server and client pinned to different CPUs" : "not pinned");
  int x = 20;
  for (size_t s = 0; s < systems.size(); ++s) {
    absl::StrAppendFormat(&svg,
                          "<rect x=\"%d\" y=\"64\" width=\"14\" height=\"14\" fill=\"%s\"/>"
                          "<text x=\"%d\" y=\"76\" class=\"legend\">%s</text>\n",
                          x, Color(systems[s], s), x + 20, Esc(systems[s]));
    x += 36 + 8 * static_cast<int>(systems[s].size());
  }
  // Each absent peer says so after the legend, one line each.
  int note_y = 76;
  for (const auto& [included, label, note] :
       {std::tuple<bool, const char*, const std::string&>{run.grpc_included, "gRPC", run.grpc_note},
        {run.capnp_included, "Cap'n Proto", run.capnp_note}}) {
    if (included) continue;
    std::string text = absl::StrCat(label, ": ", note.substr(0, note.find(';')));
    absl::StrAppendFormat(&svg, "<text x=\"%d\" y=\"%d\" class=\"sub\">%s</text>\n", x, note_y,
                          Esc(text));
    note_y += 13;
  }
  svg += Panel(header, "p50 round-trip latency, one call in flight (microseconds, lower is better)",
               transports, latency);
  svg += Panel(header + kPanelHeight,
               "throughput, 32 calls in flight on one connection (calls/s, higher is better)",
               transports, throughput);
  if (!handshake_transports.empty()) {
    svg += Panel(
        header + 2 * kPanelHeight,
        absl::StrCat("fresh connection to its first ", PayloadLabel(run.handshakes.front().payload),
                     " reply, p50 (microseconds, lower is better)"),
        handshake_transports, handshake);
  }
  svg += "</svg>\n";
  return svg;
}

absl::Status WriteSvgFile(const RunResult& run, const std::string& path) {
  std::ofstream file(path, std::ios::trunc);
  file << ToSvg(run);
  file.close();
  if (!file) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace courier::bench
