//! `ipcring bench --svg FILE`: the run's results as three charts in one
//! SVG file: p50 round trips with p99 whiskers, throughput, and one-way
//! latency against the paced rate, all on log scales ticked at powers of
//! ten, under the machine's description and above the rows not measured.
//!
//! A small writer of our own, not a plotting crate (docs/design.md,
//! "Dependencies", says why). Every piece of text goes through [`escape`],
//! and every number through [`num`], so any input, a CPU model or an error
//! message full of `<&"`, a zero or infinite measurement, still gives a
//! well-formed file. This module only formats: it never measures, and it
//! touches the file system only in [`write()`].

use std::fmt::Write as _;
use std::path::Path;

use super::machine::Machine;
use super::report::{self, RowResult, Skipped};
use super::rows::{Mode, Scenario};

const WIDTH: f64 = 960.0;
const MARGIN: f64 = 16.0;
/// Bar charts: the row labels' column, the plot, and the figures' column.
const LABEL_RIGHT: f64 = 250.0;
const PLOT_RIGHT: f64 = 790.0;
const FIGURES_LEFT: f64 = 800.0;
const ROW_HEIGHT: f64 = 18.0;
const BAR_HEIGHT: f64 = 11.0;
/// The paced chart's plot and the legend to its right.
const PACED_LEFT: f64 = 90.0;
const PACED_RIGHT: f64 = 680.0;
const PACED_HEIGHT: f64 = 300.0;
const LEGEND_LEFT: f64 = 710.0;
/// One colour per paced series, as many as a full run has, reused in
/// turn past sixteen.
const SERIES_COLOURS: [&str; 16] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
];
/// Longest skip reason shown; the table and JSON carry all of it.
const REASON_CHARS: usize = 110;
const SUSPECT_NOTE: &str =
    "(!) faster than the hardware floor: a measuring error, do not trust the row";

const STYLE: &str = "text{font-family:sans-serif;font-size:11px;fill:#222}\
.title{font-size:18px;font-weight:bold}.chart{font-size:15px;font-weight:bold}\
.group{font-weight:bold}.note{fill:#555}.warn{fill:#b00}\
.grid{stroke:#ddd;stroke-width:1}.axis{stroke:#444;stroke-width:1}\
.whisker{stroke:#222;stroke-width:1.2}.suspect{stroke:#d00;stroke-width:2;stroke-dasharray:3 2}\
.p99{stroke-dasharray:5 3}";

/// Renders the charts and writes them to `path`.
pub fn write(
    path: &Path,
    title: &str,
    machine: &Machine,
    results: &[RowResult],
    skipped: &[Skipped],
) -> Result<(), String> {
    std::fs::write(path, render(title, machine, results, skipped))
        .map_err(|e| format!("bench: writing the chart to {}: {e}", path.display()))
}

/// The whole SVG document.
pub fn render(
    title: &str,
    machine: &Machine,
    results: &[RowResult],
    skipped: &[Skipped],
) -> String {
    let suspects = report::suspects(results);
    let rows: Vec<(&RowResult, bool)> = results.iter().zip(suspects).collect();
    let mut body = Svg::default();
    let mut y = MARGIN + 18.0;
    body.text(MARGIN, y, "title", "start", title);
    y += 18.0;
    body.text(MARGIN, y, "", "start", &machine.describe());
    y += 15.0;
    body.text(MARGIN, y, "note", "start", &machine.placement.describe());
    if let Some(warning) = machine.busy_warning() {
        y += 15.0;
        body.text(MARGIN, y, "warn", "start", &format!("WARNING: {warning}"));
    }
    y += 20.0;

    let of = |scenario: fn(Scenario) -> bool| -> Vec<(&RowResult, bool)> {
        rows.iter()
            .copied()
            .filter(|(result, _)| scenario(result.row.scenario))
            .collect()
    };
    let skipped_in = |prefix: &str| {
        skipped
            .iter()
            .filter(|skip| {
                skip.row
                    .split('/')
                    .nth(2)
                    .is_some_and(|s| s.starts_with(prefix))
            })
            .count()
    };
    y = bar_chart(
        &mut body,
        y,
        &BarChart {
            title: "Ping-pong round trip: p50 (bar) and p99 (whisker)",
            axis: "round trip, log scale",
            what: "ping-pong",
            rows: of(|s| s == Scenario::PingPong),
            skipped: skipped_in("pingpong"),
            tick_label: power_of_ten_ns,
        },
    );
    y = bar_chart(
        &mut body,
        y,
        &BarChart {
            title: "Throughput: messages per second, one way",
            axis: "messages/s, log scale",
            what: "throughput",
            rows: of(|s| s == Scenario::Throughput),
            skipped: skipped_in("throughput"),
            tick_label: |exp| format!("{}/s", power_of_ten_count(exp)),
        },
    );
    y = paced_chart(
        &mut body,
        y,
        &of(|s| matches!(s, Scenario::Paced { .. })),
        skipped_in("paced"),
    );
    y = skipped_note(&mut body, y, skipped);

    let height = y + MARGIN;
    let mut out = String::with_capacity(body.0.len() + 512);
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\">\n<title>{}</title>\n<style>{STYLE}</style>\n\
         <rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#fff\"/>\n",
        escape(title),
        w = num(WIDTH),
        h = num(height),
    );
    out += &body.0;
    out += "</svg>\n";
    out
}

/// Rows of one bar chart, with whether each is suspect.
struct BarChart<'a> {
    title: &'a str,
    axis: &'a str,
    /// "ping-pong": names the rows in notes.
    what: &'a str,
    rows: Vec<(&'a RowResult<'a>, bool)>,
    /// Rows of this scenario that did not run.
    skipped: usize,
    /// Names a power of ten on the axis.
    tick_label: fn(i32) -> String,
}

/// A horizontal bar per row, grouped by message size, on a log axis:
/// p50 latency with a p99 whisker for rows with latencies, msgs/s for the
/// others. Returns the y below it.
fn bar_chart(svg: &mut Svg, top: f64, chart: &BarChart) -> f64 {
    let mut y = top + 16.0;
    svg.text(MARGIN, y, "chart", "start", chart.title);
    y += 8.0;
    if chart.rows.is_empty() {
        y += 16.0;
        svg.text(
            MARGIN,
            y,
            "note",
            "start",
            &format!("No {} rows in this run.", chart.what),
        );
        return not_measured_line(svg, y, chart.skipped, chart.what) + 16.0;
    }
    let latency = |result: &RowResult| result.measurement.latency;
    // Latencies in ns clamp to 1 ns, rates to 1 msg/s: both are the
    // bottom of their log axis.
    let values: Vec<(f64, Option<f64>)> = chart
        .rows
        .iter()
        .map(|(result, _)| match latency(result) {
            Some(l) => (l.p50.max(1) as f64, Some(l.p99.max(1) as f64)),
            None => (result.measurement.msgs_per_sec().max(1.0), None),
        })
        .collect();
    let axis = LogAxis::covering(
        values.iter().flat_map(|&(a, b)| [Some(a), b]).flatten(),
        LABEL_RIGHT,
        PLOT_RIGHT,
    );
    y = legend(svg, y + 4.0);
    let plot_top = y;

    let mut groups: Vec<usize> = Vec::new();
    for ((result, _), _) in chart.rows.iter().zip(&values) {
        if !groups.contains(&result.row.size) {
            groups.push(result.row.size);
        }
    }
    let mut any_suspect = false;
    for size in groups {
        y += ROW_HEIGHT;
        svg.text(
            MARGIN,
            y - 4.0,
            "group",
            "start",
            &format!("{} messages", report::bytes(size)),
        );
        for ((result, suspect), &(value, p99)) in chart.rows.iter().zip(&values) {
            if result.row.size != size {
                continue;
            }
            any_suspect |= *suspect;
            y += ROW_HEIGHT;
            let mid = y - ROW_HEIGHT / 2.0;
            let label = format!(
                "{}{}",
                row_label(result),
                if *suspect { " (!)" } else { "" }
            );
            svg.text(LABEL_RIGHT - 6.0, mid + 4.0, "", "end", &label);
            let end = axis.position(value);
            let (figures, tooltip) = match (latency(result), p99) {
                (Some(l), Some(_)) => (
                    format!("{} / {}", report::nanos(l.p50), report::nanos(l.p99)),
                    format!(
                        "{}: p50 {}, p99 {}",
                        result.row.id(),
                        report::nanos(l.p50),
                        report::nanos(l.p99)
                    ),
                ),
                _ => (
                    rate(result.measurement.msgs_per_sec()),
                    format!(
                        "{}: {} msgs/s",
                        result.row.id(),
                        report::thousands(result.measurement.msgs_per_sec().round() as u64)
                    ),
                ),
            };
            svg.bar(
                LABEL_RIGHT,
                mid - BAR_HEIGHT / 2.0,
                end - LABEL_RIGHT,
                transport_colour(result.row.transport),
                *suspect,
                &format!("{tooltip}{}", if *suspect { " (suspect)" } else { "" }),
            );
            if let Some(p99) = p99 {
                let whisker = axis.position(p99);
                svg.line(end, mid, whisker, mid, "whisker");
                svg.line(whisker, mid - 4.0, whisker, mid + 4.0, "whisker");
            }
            svg.text(FIGURES_LEFT, mid + 4.0, "note", "start", &figures);
        }
    }
    y += 6.0;
    axis.draw_horizontal(svg, plot_top, y, &chart.tick_label);
    y += 30.0;
    svg.text(
        (LABEL_RIGHT + PLOT_RIGHT) / 2.0,
        y,
        "note",
        "middle",
        chart.axis,
    );
    if any_suspect {
        y += 15.0;
        svg.text(MARGIN, y, "warn", "start", SUSPECT_NOTE);
    }
    not_measured_line(svg, y, chart.skipped, chart.what) + 16.0
}

/// One colour per kind of transport, with the legend above each bar chart.
fn transport_colour(transport: &str) -> &'static str {
    match transport {
        "hw-limit" => "#2ca02c",
        t if t.starts_with("ipcring-") => "#1f77b4",
        "rtrb" | "rtrb-chunk" | "crossbeam-arrayqueue" => "#9467bd",
        _ => "#ff7f0e",
    }
}

fn legend(svg: &mut Svg, y: f64) -> f64 {
    let mut x = LABEL_RIGHT;
    for (name, sample) in [
        ("hardware floor", "hw-limit"),
        ("ipcring", "ipcring-spsc"),
        ("kernel IPC", "pipe"),
        ("in-process queue", "rtrb"),
    ] {
        svg.bar(x, y + 1.0, 10.0, transport_colour(sample), false, name);
        svg.text(x + 14.0, y + 11.0, "", "start", name);
        x += 130.0;
    }
    y + 14.0
}

/// "pipe 8 B" or "ipcring-spsc hybrid 8 B": the mode only where there is
/// a choice of one.
fn row_label(result: &RowResult) -> String {
    match result.row.mode {
        Mode::Null => format!(
            "{} {}",
            result.row.transport,
            report::bytes(result.row.size)
        ),
        mode => format!(
            "{} {} {}",
            result.row.transport,
            mode.as_str(),
            report::bytes(result.row.size)
        ),
    }
}

/// One-way latency against the paced rate: a p50 line (solid, circles) and
/// a p99 line (dashed, squares) per transport and mode.
fn paced_chart(svg: &mut Svg, top: f64, rows: &[(&RowResult, bool)], skipped: usize) -> f64 {
    let mut y = top + 16.0;
    svg.text(
        MARGIN,
        y,
        "chart",
        "start",
        "Paced one-way latency against send rate: p50 (solid) and p99 (dashed)",
    );
    let points: Vec<PacedPoint> = rows
        .iter()
        .filter_map(|&(result, suspect)| {
            let latency = result.measurement.latency?;
            Some(PacedPoint {
                result,
                suspect,
                rate: result.row.scenario.rate()?.max(1),
                p50: latency.p50.max(1),
                p99: latency.p99.max(1),
            })
        })
        .collect();
    if points.is_empty() {
        y += 24.0;
        svg.text(MARGIN, y, "note", "start", "No paced rows in this run.");
        return not_measured_line(svg, y, skipped, "paced") + 16.0;
    }
    let plot_top = y + 16.0;
    let plot_bottom = plot_top + PACED_HEIGHT;
    // Half a decade of room either side, so one rate is not on the edge.
    let rates = LogAxis::padded(
        points.iter().map(|p| p.rate as f64),
        0.3,
        PACED_LEFT,
        PACED_RIGHT,
    );
    // Drawn upwards: the top of the plot is the largest latency.
    let latencies = LogAxis::covering(
        points.iter().flat_map(|p| [p.p50 as f64, p.p99 as f64]),
        plot_bottom,
        plot_top,
    );
    rates.draw_horizontal(svg, plot_top, plot_bottom, &|exp| {
        format!("{}/s", power_of_ten_count(exp))
    });
    latencies.draw_vertical(svg, PACED_LEFT, PACED_RIGHT, &power_of_ten_ns);
    svg.text(
        (PACED_LEFT + PACED_RIGHT) / 2.0,
        plot_bottom + 36.0,
        "note",
        "middle",
        "messages sent per second, log scale",
    );
    svg.text_rotated(
        MARGIN + 10.0,
        (plot_top + plot_bottom) / 2.0,
        "one-way latency from the intended send time, log scale",
    );

    let mut series: Vec<(&str, Mode)> = Vec::new();
    for p in &points {
        let key = (p.result.row.transport, p.result.row.mode);
        if !series.contains(&key) {
            series.push(key);
        }
    }
    let mut any_suspect = false;
    let mut legend_y = plot_top;
    for (index, &(transport, mode)) in series.iter().enumerate() {
        let colour = SERIES_COLOURS[index % SERIES_COLOURS.len()];
        let mut mine: Vec<&PacedPoint> = points
            .iter()
            .filter(|p| p.result.row.transport == transport && p.result.row.mode == mode)
            .collect();
        mine.sort_by_key(|p| p.rate);
        let name = match mode {
            Mode::Null => transport.to_owned(),
            mode => format!("{transport} {}", mode.as_str()),
        };
        for (percentile, class, value_of) in [
            (
                "p50",
                "",
                (|p: &PacedPoint| p.p50) as fn(&PacedPoint) -> u64,
            ),
            ("p99", "p99", |p: &PacedPoint| p.p99),
        ] {
            let at = |p: &PacedPoint| {
                (
                    rates.position(p.rate as f64),
                    latencies.position(value_of(p) as f64),
                )
            };
            let path: Vec<(f64, f64)> = mine.iter().map(|p| at(p)).collect();
            svg.polyline(&path, colour, class);
            for p in &mine {
                let (x, y) = at(p);
                let tooltip = format!(
                    "{}: {percentile} {} at {} msg/s{}",
                    p.result.row.id(),
                    report::nanos(value_of(p)),
                    report::thousands(p.rate),
                    if p.suspect { " (suspect)" } else { "" }
                );
                svg.marker(x, y, colour, percentile == "p50", &tooltip);
                if p.suspect {
                    any_suspect = true;
                    svg.ring(x, y);
                }
            }
        }
        legend_y += 16.0;
        svg.polyline(
            &[
                (LEGEND_LEFT, legend_y - 4.0),
                (LEGEND_LEFT + 24.0, legend_y - 4.0),
            ],
            colour,
            "",
        );
        svg.text(LEGEND_LEFT + 30.0, legend_y, "", "start", &name);
    }
    legend_y += 22.0;
    svg.polyline(
        &[
            (LEGEND_LEFT, legend_y - 4.0),
            (LEGEND_LEFT + 24.0, legend_y - 4.0),
        ],
        "#444",
        "",
    );
    svg.text(LEGEND_LEFT + 30.0, legend_y, "note", "start", "p50");
    legend_y += 16.0;
    svg.polyline(
        &[
            (LEGEND_LEFT, legend_y - 4.0),
            (LEGEND_LEFT + 24.0, legend_y - 4.0),
        ],
        "#444",
        "p99",
    );
    svg.text(LEGEND_LEFT + 30.0, legend_y, "note", "start", "p99");

    y = plot_bottom.max(legend_y) + 40.0;
    if any_suspect {
        y += 15.0;
        svg.text(
            MARGIN,
            y,
            "warn",
            "start",
            "red ring: faster than half the hardware floor's round trip, a measuring error",
        );
    }
    not_measured_line(svg, y, skipped, "paced") + 16.0
}

/// One paced row's point on the chart; latencies in ns, at least 1.
struct PacedPoint<'a> {
    result: &'a RowResult<'a>,
    suspect: bool,
    rate: u64,
    p50: u64,
    p99: u64,
}

/// "3 ping-pong rows not measured (listed at the end).", when any were not.
fn not_measured_line(svg: &mut Svg, y: f64, skipped: usize, what: &str) -> f64 {
    if skipped == 0 {
        return y;
    }
    let y = y + 15.0;
    svg.text(
        MARGIN,
        y,
        "warn",
        "start",
        &format!(
            "{skipped} {what} row{} not measured (listed at the end).",
            if skipped == 1 { "" } else { "s" }
        ),
    );
    y
}

/// Every row not measured, with its reason cut to one line.
fn skipped_note(svg: &mut Svg, top: f64, skipped: &[Skipped]) -> f64 {
    if skipped.is_empty() {
        return top;
    }
    let mut y = top + 16.0;
    svg.text(
        MARGIN,
        y,
        "group",
        "start",
        &format!(
            "Not measured ({} row{}):",
            skipped.len(),
            if skipped.len() == 1 { "" } else { "s" }
        ),
    );
    for skip in skipped {
        y += 15.0;
        let mut reason: String = skip.reason.chars().take(REASON_CHARS).collect();
        if reason.len() < skip.reason.len() {
            reason.push('…');
        }
        svg.text(
            MARGIN + 8.0,
            y,
            "note",
            "start",
            &format!("{}: {reason}", skip.row),
        );
    }
    y
}

/// A log10 axis mapping values onto pixels from `start` to `end` (either
/// direction), over the exponents `low..=high`.
struct LogAxis {
    low: f64,
    high: f64,
    start: f64,
    end: f64,
}

impl LogAxis {
    /// From the power of ten at or below the smallest value to the one at or
    /// above the largest, at least one decade. Values that are not positive
    /// and finite are left out.
    fn covering(values: impl Iterator<Item = f64>, start: f64, end: f64) -> LogAxis {
        let (low, high) = exponents(values);
        let (low, high) = (low.floor(), high.ceil());
        LogAxis {
            low,
            high: if high > low { high } else { low + 1.0 },
            start,
            end,
        }
    }

    /// From `pad` decades below the smallest value to `pad` above the largest.
    fn padded(values: impl Iterator<Item = f64>, pad: f64, start: f64, end: f64) -> LogAxis {
        let (low, high) = exponents(values);
        LogAxis {
            low: low - pad,
            high: high + pad,
            start,
            end,
        }
    }

    /// Where `value` falls, clamped to the axis.
    fn position(&self, value: f64) -> f64 {
        let exp = if value.is_finite() && value > 0.0 {
            value.log10().clamp(self.low, self.high)
        } else {
            self.low
        };
        self.start + (exp - self.low) / (self.high - self.low) * (self.end - self.start)
    }

    /// The powers of ten on the axis, as exponents.
    fn ticks(&self) -> impl Iterator<Item = i32> {
        // Bounded by the clamp in `exponents`: at most a few dozen ticks.
        (self.low.ceil() as i32)..=(self.high.floor() as i32)
    }

    /// Vertical grid lines from `top` to `bottom`, labelled below.
    fn draw_horizontal(&self, svg: &mut Svg, top: f64, bottom: f64, label: &dyn Fn(i32) -> String) {
        svg.line(self.start, bottom, self.end, bottom, "axis");
        for exp in self.ticks() {
            let x = self.position(10f64.powi(exp));
            svg.line(x, top, x, bottom, "grid");
            svg.line(x, bottom, x, bottom + 4.0, "axis");
            svg.text(x, bottom + 16.0, "", "middle", &label(exp));
        }
    }

    /// Horizontal grid lines from `left` to `right`, labelled on the left.
    fn draw_vertical(&self, svg: &mut Svg, left: f64, right: f64, label: &dyn Fn(i32) -> String) {
        svg.line(left, self.start, left, self.end, "axis");
        for exp in self.ticks() {
            let y = self.position(10f64.powi(exp));
            svg.line(left, y, right, y, "grid");
            svg.line(left - 4.0, y, left, y, "axis");
            svg.text(left - 7.0, y + 4.0, "", "end", &label(exp));
        }
    }
}

/// The log10 of the smallest and largest usable values, clamped to what a
/// u64 of nanoseconds or messages can reach; 0 and 1 if there are none.
fn exponents(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(|v| v.log10().clamp(0.0, 20.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
            (low.min(v), high.max(v))
        });
    if low.is_finite() && high.is_finite() {
        (low, high)
    } else {
        (0.0, 1.0)
    }
}

/// `10^exp` nanoseconds: "1 ns", "100 µs", "10 s".
fn power_of_ten_ns(exp: i32) -> String {
    const UNITS: [&str; 4] = ["ns", "µs", "ms", "s"];
    match usize::try_from(exp.div_euclid(3)) {
        Ok(unit) if unit < UNITS.len() => {
            format!("{} {}", 10u32.pow(exp.rem_euclid(3) as u32), UNITS[unit])
        }
        _ => format!("1e{exp} ns"),
    }
}

/// `10^exp` as a count: "1", "100", "10k", "1M", "100G".
fn power_of_ten_count(exp: i32) -> String {
    const UNITS: [&str; 5] = ["", "k", "M", "G", "T"];
    match usize::try_from(exp.div_euclid(3)) {
        Ok(unit) if unit < UNITS.len() => {
            format!("{}{}", 10u32.pow(exp.rem_euclid(3) as u32), UNITS[unit])
        }
        _ => format!("1e{exp}"),
    }
}

/// Messages per second in three figures: "18.5k/s", "5.35M/s".
fn rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec < 0.0 {
        return "-".to_owned();
    }
    let (scaled, unit) = match per_sec {
        r if r >= 1e9 => (r / 1e9, "G"),
        r if r >= 1e6 => (r / 1e6, "M"),
        r if r >= 1e3 => (r / 1e3, "k"),
        r => (r, ""),
    };
    let decimals = match scaled {
        s if s >= 100.0 => 0,
        s if s >= 10.0 => 1,
        _ => 2,
    };
    format!("{scaled:.decimals$}{unit}/s")
}

/// Text for XML content or a quoted attribute: the five markup characters
/// escaped, and characters XML 1.0 does not allow at all (most C0
/// controls) replaced.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A coordinate: one decimal, and 0 for anything not finite.
fn num(value: f64) -> String {
    let value = if value.is_finite() { value } else { 0.0 };
    format!("{value:.1}")
}

/// The document's elements, as text.
#[derive(Default)]
struct Svg(String);

impl Svg {
    fn text(&mut self, x: f64, y: f64, class: &str, anchor: &str, text: &str) {
        let _ = writeln!(
            self.0,
            "<text x=\"{}\" y=\"{}\"{} text-anchor=\"{anchor}\">{}</text>",
            num(x),
            num(y),
            class_attribute(class),
            escape(text)
        );
    }

    /// Reads bottom to top, centred on (x, y).
    fn text_rotated(&mut self, x: f64, y: f64, text: &str) {
        let _ = writeln!(
            self.0,
            "<text x=\"0\" y=\"0\" class=\"note\" text-anchor=\"middle\" \
             transform=\"translate({} {}) rotate(-90)\">{}</text>",
            num(x),
            num(y),
            escape(text)
        );
    }

    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, class: &str) {
        let _ = writeln!(
            self.0,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"{}/>",
            num(x1),
            num(y1),
            num(x2),
            num(y2),
            class_attribute(class)
        );
    }

    /// A filled bar, `BAR_HEIGHT` tall, with a hover title; a suspect one
    /// gets a red dashed outline and a paler fill.
    fn bar(&mut self, x: f64, y: f64, width: f64, colour: &str, suspect: bool, tooltip: &str) {
        let _ = writeln!(
            self.0,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{colour}\"{}>\
             <title>{}</title></rect>",
            num(x),
            num(y),
            num(width.max(1.0)),
            num(BAR_HEIGHT),
            if suspect {
                " fill-opacity=\"0.4\" class=\"suspect\""
            } else {
                ""
            },
            escape(tooltip)
        );
    }

    fn polyline(&mut self, points: &[(f64, f64)], colour: &str, class: &str) {
        let mut list = String::new();
        for (x, y) in points {
            let _ = write!(list, "{},{} ", num(*x), num(*y));
        }
        let _ = writeln!(
            self.0,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{}/>",
            list.trim_end(),
            class_attribute(class)
        );
    }

    /// A circle (p50) or a square (p99) with a hover title.
    fn marker(&mut self, x: f64, y: f64, colour: &str, circle: bool, tooltip: &str) {
        let shape = if circle {
            format!("<circle cx=\"{}\" cy=\"{}\" r=\"4\"", num(x), num(y))
        } else {
            format!(
                "<rect x=\"{}\" y=\"{}\" width=\"7\" height=\"7\"",
                num(x - 3.5),
                num(y - 3.5)
            )
        };
        let _ = writeln!(
            self.0,
            "{shape} fill=\"{colour}\"><title>{}</title>{}",
            escape(tooltip),
            if circle { "</circle>" } else { "</rect>" }
        );
    }

    /// A red ring around a suspect point.
    fn ring(&mut self, x: f64, y: f64) {
        let _ = writeln!(
            self.0,
            "<circle cx=\"{}\" cy=\"{}\" r=\"8\" fill=\"none\" stroke=\"#d00\" stroke-width=\"2\"/>",
            num(x),
            num(y)
        );
    }
}

fn class_attribute(class: &str) -> String {
    if class.is_empty() {
        String::new()
    } else {
        format!(" class=\"{}\"", escape(class))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::drivers::{Cost, Latency, Measurement};
    use super::super::machine::Placement;
    use super::super::rows::{self, Row};
    use super::*;

    const TITLES: [&str; 3] = [
        "Ping-pong round trip",
        "Throughput: messages per second",
        "Paced one-way latency",
    ];

    fn machine(cpu_model: &str) -> Machine {
        Machine {
            cpus: 2,
            cores: Some(2),
            threads_per_core: Some(1),
            placement: Placement::Pinned {
                parent: 0,
                child: 1,
            },
            kernel: "6.1".to_owned(),
            cpu_model: cpu_model.to_owned(),
            hypervisor: None,
            pair: Some("separate-cores"),
            load_average: Some(9.0),
            procs_running: Some(4),
        }
    }

    fn measured(latency: Option<(u64, u64)>, iterations: u64, elapsed: Duration) -> Measurement {
        Measurement {
            latency: latency.map(|(p50, p99)| Latency {
                p50,
                p99,
                p999: p99,
                max: p99,
            }),
            iterations,
            elapsed,
            parent_cost: Cost::default(),
            child_cost: Cost::default(),
        }
    }

    fn row<'a>(all: &'a [Row], id: &str) -> &'a Row {
        all.iter().find(|row| row.id() == id).unwrap()
    }

    /// Parses `svg` and returns every piece of text in it, in order.
    fn texts(svg: &str) -> Vec<String> {
        let document = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        let root = document.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert!(root.attribute("viewBox").is_some());
        root.descendants()
            .filter(|node| node.is_text())
            .filter_map(|node| node.text().map(str::to_owned))
            .collect()
    }

    #[test]
    fn draws_every_chart_from_any_input_as_well_formed_svg() {
        let all = rows::rows();
        let second = Duration::from_secs(1);
        let results = vec![
            RowResult {
                row: row(&all, "hw-limit/spin/pingpong/8"),
                measurement: measured(Some((120, 160)), 1000, second),
            },
            // Under the floor: suspect.
            RowResult {
                row: row(&all, "ipcring-spsc/spin/pingpong/8"),
                measurement: measured(Some((100, 230)), 1000, second),
            },
            RowResult {
                row: row(&all, "pipe/null/pingpong/65536"),
                measurement: measured(Some((0, u64::MAX)), 1000, second),
            },
            RowResult {
                row: row(&all, "pipe/null/throughput/8"),
                measurement: measured(None, 0, Duration::ZERO),
            },
            RowResult {
                row: row(&all, "rtrb/null/throughput/8"),
                measurement: measured(None, u64::MAX, Duration::from_nanos(1)),
            },
            RowResult {
                row: row(&all, "pipe/null/paced-1000/64"),
                measurement: measured(Some((40_000, 90_000)), 2000, second),
            },
            RowResult {
                row: row(&all, "pipe/null/paced-100000/64"),
                measurement: measured(Some((30_000, 2_000_000)), 2000, second),
            },
            // Under half the floor: suspect.
            RowResult {
                row: row(&all, "ipcring-spsc/park/paced-10000/64"),
                measurement: measured(Some((10, 20)), 2000, second),
            },
        ];
        let skipped = [Skipped {
            row: "sysv-msg/null/pingpong/65536".to_owned(),
            reason: "a <reason> & \"quotes\" 'too'\u{0}\u{7}\n".repeat(10),
        }];
        let cpu = "Weird <CPU> & \"Co\" 'x'\u{1b}[0m";
        let svg = render("ipcring bench (test)", &machine(cpu), &results, &skipped);
        let texts = texts(&svg);
        let all_text = texts.join("\n");
        for title in TITLES {
            assert!(all_text.contains(title), "{title} missing");
        }
        assert!(all_text.contains("Weird <CPU> & \"Co\" 'x'"));
        assert!(all_text.contains("WARNING: the machine is busy"));
        assert!(all_text.contains("Not measured (1 row):"));
        assert!(all_text.contains("sysv-msg/null/pingpong/65536: a <reason> &"));
        assert!(all_text.contains("1 ping-pong row not measured"));
        assert!(all_text.contains("ipcring-spsc spin 8 B (!)"));
        assert!(!all_text.contains("hw-limit spin 8 B (!)"));
        assert!(all_text.contains(SUSPECT_NOTE));
        assert!(all_text.contains("red ring"));
        assert!(all_text.contains("64 KiB messages"));
        // Power-of-ten ticks only.
        for tick in ["100 ns", "1 µs", "1k/s", "10k/s", "100k/s"] {
            assert!(texts.iter().any(|t| t == tick), "tick {tick} missing");
        }
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn an_empty_run_says_so_in_each_chart() {
        let skipped = [
            Skipped {
                row: "pipe/null/pingpong/8".to_owned(),
                reason: "failed: x".to_owned(),
            },
            Skipped {
                row: "pipe/null/paced-1000/64".to_owned(),
                reason: "failed: y".to_owned(),
            },
        ];
        let svg = render("t", &machine("cpu"), &[], &skipped);
        let all_text = texts(&svg).join("\n");
        for title in TITLES {
            assert!(all_text.contains(title), "{title} missing");
        }
        for what in ["ping-pong", "throughput", "paced"] {
            assert!(all_text.contains(&format!("No {what} rows in this run.")));
        }
        assert!(all_text.contains("1 paced row not measured"));
        assert!(!all_text.contains("throughput row not measured"));
    }

    #[test]
    fn log_axes_tick_at_powers_of_ten() {
        let axis = LogAxis::covering([130.0, 108_400.0].into_iter(), 0.0, 600.0);
        assert_eq!(axis.ticks().collect::<Vec<_>>(), [2, 3, 4, 5, 6]);
        assert_eq!(num(axis.position(100.0)), "0.0");
        assert_eq!(num(axis.position(1e6)), "600.0");
        assert_eq!(num(axis.position(1e4)), "300.0");
        // Out of range, zero and NaN clamp to the ends.
        assert_eq!(num(axis.position(1e9)), "600.0");
        assert_eq!(num(axis.position(0.0)), "0.0");
        assert_eq!(num(axis.position(f64::NAN)), "0.0");
        let one = LogAxis::covering([1000.0].into_iter(), 0.0, 1.0);
        assert_eq!(one.ticks().collect::<Vec<_>>(), [3, 4]);
        let none = LogAxis::covering([0.0, f64::INFINITY].into_iter(), 0.0, 1.0);
        assert_eq!(none.ticks().collect::<Vec<_>>(), [0, 1]);
        let padded = LogAxis::padded([1000.0].into_iter(), 0.3, 0.0, 1.0);
        assert_eq!(padded.ticks().collect::<Vec<_>>(), [3]);
        assert_eq!(num(padded.position(1000.0)), "0.5");
    }

    #[test]
    fn formats_labels() {
        assert_eq!(power_of_ten_ns(0), "1 ns");
        assert_eq!(power_of_ten_ns(4), "10 µs");
        assert_eq!(power_of_ten_ns(9), "1 s");
        assert_eq!(power_of_ten_ns(12), "1e12 ns");
        assert_eq!(power_of_ten_ns(-1), "1e-1 ns");
        assert_eq!(power_of_ten_count(0), "1");
        assert_eq!(power_of_ten_count(5), "100k");
        assert_eq!(power_of_ten_count(9), "1G");
        assert_eq!(power_of_ten_count(30), "1e30");
        assert_eq!(rate(18_471.0), "18.5k/s");
        assert_eq!(rate(5_353_458.0), "5.35M/s");
        assert_eq!(rate(792_396_857.0), "792M/s");
        assert_eq!(rate(f64::NAN), "-");
        assert_eq!(
            escape("a<b>&\"c'\u{0}\td"),
            "a&lt;b&gt;&amp;&quot;c&apos;\u{FFFD} d"
        );
    }
}
