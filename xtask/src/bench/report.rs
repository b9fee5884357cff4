//! The benchmark's results: the terminal table, the JSON record, the
//! Markdown table and the SVG bar charts for `docs/`.

use std::fmt::Write as _;

use super::stats::{ratio, Summary};

/// One side's result for one metric.
#[derive(Clone, Debug, PartialEq)]
pub enum Side {
    /// Every run's figure, in the metric's unit.
    Measured { samples: Vec<f64>, detail: Option<String> },
    /// Not measured, and why ("n/a — no network yet").
    Missing(String),
}

impl Side {
    pub fn measured(samples: Vec<f64>) -> Self {
        Self::Measured { samples, detail: None }
    }

    pub fn summary(&self) -> Option<Summary> {
        match self {
            Self::Measured { samples, .. } => Summary::of(samples),
            Self::Missing(_) => None,
        }
    }
}

/// One row of the table: a quantity measured on both guests, lower is
/// better.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// Stable name for the JSON record and the plot's file name.
    pub key: &'static str,
    pub title: &'static str,
    pub unit: &'static str,
    pub toro: Side,
    pub linux: Side,
}

impl Metric {
    pub fn ratio(&self) -> Option<f64> {
        ratio(&self.toro.summary()?, &self.linux.summary()?)
    }
}

/// Facts about where and how the run happened.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub timestamp: String,
    pub command: String,
    pub runs: usize,
    pub quick: bool,
    pub cpus: usize,
    pub cpu_model: String,
    pub qemu_version: String,
    pub accelerator: String,
    pub vm: String,
    pub linux_kernel: String,
    pub linux_command_line: String,
    /// The Linux guest's command line for the workloads (bench mode).
    pub linux_bench_command_line: String,
    /// What went into the Linux guest (packages, modules, libraries).
    pub linux_manifest: String,
    pub host_tsc_khz: u64,
    /// `/proc/loadavg`'s 1-minute figure when the run started: other work
    /// on the host's cores disturbs every figure.
    pub load_average: f64,
    pub duration_seconds: f64,
}

/// A figure with as many decimals as its size needs.
pub fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// "3412 ms (3390–3450)", or the reason it is missing.
pub fn cell(side: &Side, unit: &str) -> String {
    match side {
        Side::Missing(reason) => reason.clone(),
        Side::Measured { detail, .. } => match side.summary() {
            None => "failed".into(),
            Some(summary) => {
                let mut text = format!("{} {unit}", number(summary.median));
                if summary.count > 1 {
                    let _ = write!(text, " ({}–{})", number(summary.min), number(summary.max));
                }
                if let Some(detail) = detail {
                    let _ = write!(text, " [{detail}]");
                }
                text
            }
        },
    }
}

/// A ratio as "78x", "7.0x" or "0.55x".
pub fn times(ratio: f64) -> String {
    if ratio >= 10.0 {
        format!("{ratio:.0}x")
    } else if ratio >= 1.0 {
        format!("{ratio:.1}x")
    } else {
        format!("{ratio:.2}x")
    }
}

fn ratio_cell(metric: &Metric) -> String {
    metric.ratio().map_or_else(|| "—".into(), times)
}

const HEADERS: [&str; 4] = ["metric", "Toro", "Linux guest", "Linux/Toro"];

fn rows(metrics: &[Metric]) -> Vec<Vec<String>> {
    metrics
        .iter()
        .map(|m| vec![m.title.to_string(), cell(&m.toro, m.unit), cell(&m.linux, m.unit), ratio_cell(m)])
        .collect()
}

/// The table for the terminal: aligned columns, medians with (min–max).
pub fn table(metrics: &[Metric]) -> String {
    aligned(&HEADERS, &rows(metrics))
}

/// Rows under headers in aligned columns, two spaces apart, with a rule
/// under the headers.
pub fn aligned(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if index + 1 < cells.len() {
                text.push_str(&" ".repeat(width - cell.chars().count()));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&rule.iter().map(String::as_str).collect::<Vec<_>>());
    for row in rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

/// The same table in Markdown.
pub fn markdown_table(metrics: &[Metric]) -> String {
    markdown_grid(&HEADERS, &rows(metrics), &["---", "--:", "--:", "--:"])
}

/// Rows under headers as a Markdown table; `alignments` is each column's
/// rule (`---` or `--:`).
pub fn markdown_grid(headers: &[&str], rows: &[Vec<String>], alignments: &[&str]) -> String {
    let mut out = format!("| {} |\n| {} |\n", headers.join(" | "), alignments.join(" | "));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

// ---------------------------------------------------------------------------
// JSON

/// Just enough JSON to write the record without a dependency.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn object(fields: Vec<(&str, Json)>) -> Self {
        Self::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    fn string(text: &str) -> Self {
        Self::String(text.to_string())
    }

    /// Pretty-printed, two spaces per level.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let indent = |out: &mut String, depth: usize| out.push_str(&"  ".repeat(depth));
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(value) => out.push_str(if *value { "true" } else { "false" }),
            Self::Number(value) if value.is_finite() => {
                let _ = write!(out, "{value}");
            }
            Self::Number(_) => out.push_str("null"),
            Self::String(text) => {
                out.push('"');
                for c in text.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(out, "\\u{:04x}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Self::Array(items) if items.is_empty() => out.push_str("[]"),
            Self::Array(items) => {
                // Arrays of numbers stay on one line.
                if items.iter().all(|i| matches!(i, Self::Number(_))) {
                    out.push('[');
                    for (index, item) in items.iter().enumerate() {
                        if index > 0 {
                            out.push_str(", ");
                        }
                        item.write(out, depth);
                    }
                    out.push(']');
                    return;
                }
                out.push_str("[\n");
                for (index, item) in items.iter().enumerate() {
                    indent(out, depth + 1);
                    item.write(out, depth + 1);
                    out.push_str(if index + 1 < items.len() { ",\n" } else { "\n" });
                }
                indent(out, depth);
                out.push(']');
            }
            Self::Object(fields) if fields.is_empty() => out.push_str("{}"),
            Self::Object(fields) => {
                out.push_str("{\n");
                for (index, (key, value)) in fields.iter().enumerate() {
                    indent(out, depth + 1);
                    Self::String(key.clone()).write(out, depth + 1);
                    out.push_str(": ");
                    value.write(out, depth + 1);
                    out.push_str(if index + 1 < fields.len() { ",\n" } else { "\n" });
                }
                indent(out, depth);
                out.push('}');
            }
        }
    }
}

pub fn side_json(side: &Side) -> Json {
    match side {
        Side::Missing(reason) => Json::object(vec![("missing", Json::string(reason))]),
        Side::Measured { samples, detail } => {
            let mut fields = vec![("samples", Json::Array(samples.iter().map(|s| Json::Number(*s)).collect()))];
            match Summary::of(samples) {
                Some(summary) => {
                    fields.push(("median", Json::Number(summary.median)));
                    fields.push(("min", Json::Number(summary.min)));
                    fields.push(("max", Json::Number(summary.max)));
                }
                None => fields.push(("failed", Json::Bool(true))),
            }
            if let Some(detail) = detail {
                fields.push(("detail", Json::string(detail)));
            }
            Json::object(fields)
        }
    }
}

/// The record of one run, as written to `target/bench/`; `workloads` is
/// the workloads' part (`workloads::json`), `host_cpu` the host's CPU over
/// each wrk run (`net::host_cpu_json`).
pub fn json(context: &Context, metrics: &[Metric], workloads: Json, host_cpu: Json) -> Json {
    Json::object(vec![
        ("schema", Json::Number(2.0)),
        ("timestamp", Json::string(&context.timestamp)),
        ("command", Json::string(&context.command)),
        ("runs", Json::Number(context.runs as f64)),
        ("quick", Json::Bool(context.quick)),
        ("duration_seconds", Json::Number((context.duration_seconds * 10.0).round() / 10.0)),
        (
            "machine",
            Json::object(vec![
                ("cpus", Json::Number(context.cpus as f64)),
                ("cpu_model", Json::string(&context.cpu_model)),
                ("qemu", Json::string(&context.qemu_version)),
                ("accelerator", Json::string(&context.accelerator)),
                ("host_tsc_khz", Json::Number(context.host_tsc_khz as f64)),
                ("load_average_at_start", Json::Number(context.load_average)),
            ]),
        ),
        ("vm", Json::string(&context.vm)),
        (
            "linux_guest",
            Json::object(vec![
                ("kernel", Json::string(&context.linux_kernel)),
                ("command_line", Json::string(&context.linux_command_line)),
                ("bench_command_line", Json::string(&context.linux_bench_command_line)),
                ("manifest", Json::Array(context.linux_manifest.lines().map(|l| Json::string(l.trim())).collect())),
            ]),
        ),
        (
            "metrics",
            Json::Array(
                metrics
                    .iter()
                    .map(|m| {
                        Json::object(vec![
                            ("key", Json::string(m.key)),
                            ("title", Json::string(m.title)),
                            ("unit", Json::string(m.unit)),
                            ("toro", side_json(&m.toro)),
                            ("linux", side_json(&m.linux)),
                            ("linux_over_toro", m.ratio().map_or(Json::Null, Json::Number)),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("workloads", workloads),
        ("host_cpu_during_wrk", host_cpu),
    ])
}

// ---------------------------------------------------------------------------
// Markdown and plots

/// The generated part of `docs/benchmarks.md` (between the markers);
/// `workloads` is the workloads' part (`workloads::markdown`), placed last.
pub fn markdown(context: &Context, metrics: &[Metric], plots: &[(String, &Metric)], workloads: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Latest run: {} (took {:.0} s).\n", context.timestamp, context.duration_seconds);
    let _ = writeln!(out, "- Command: `{}`", context.command);
    let _ = writeln!(
        out,
        "- Machine: `nproc` {}, {} (from /proc/cpuinfo), host TSC {} kHz, load average {:.2} at the start",
        context.cpus, context.cpu_model, context.host_tsc_khz, context.load_average
    );
    let _ = writeln!(out, "- Emulator: {}, accelerator {}", context.qemu_version, context.accelerator);
    let _ = writeln!(out, "- Both guests: {}", context.vm);
    let _ = writeln!(
        out,
        "- Linux guest: Debian kernel {}, command line `{}`",
        context.linux_kernel, context.linux_command_line
    );
    let _ = writeln!(
        out,
        "- Figures: median of {} runs per side, (min–max) after it; memory and image size are single figures. \
         Ratio = Linux median / Toro median (higher is better for Toro).\n",
        context.runs
    );
    out.push_str(&markdown_table(metrics));
    out.push('\n');
    for (file, metric) in plots {
        let _ = writeln!(out, "![{}]({file})", metric.title);
    }
    if !workloads.is_empty() {
        out.push('\n');
        out.push_str(workloads);
    }
    out
}

/// Replaces the text between `<!-- bench:begin -->` and `<!-- bench:end -->`
/// in `document`, or appends the block if the markers are missing.
pub fn splice(document: &str, generated: &str) -> String {
    const BEGIN: &str = "<!-- bench:begin -->";
    const END: &str = "<!-- bench:end -->";
    let block = format!("{BEGIN}\n{generated}{END}");
    match (document.find(BEGIN), document.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{block}{}", &document[..begin], &document[end + END.len()..])
        }
        _ => format!("{}\n{block}\n", document.trim_end()),
    }
}

fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Toro's colour in every chart.
pub const TORO_COLOUR: &str = "#d9480f";
/// The Linux guest's colour.
pub const LINUX_COLOUR: &str = "#495057";

/// One bar of a chart.
pub struct Bar<'a> {
    pub label: String,
    pub side: &'a Side,
    pub colour: &'static str,
}

/// A bar chart of one metric: Toro beside Linux, the bar at the median and
/// a whisker from min to max, the figure written above.
pub fn svg(metric: &Metric) -> String {
    let subtitle = match metric.ratio() {
        Some(_) => format!("{}, lower is better; Linux/Toro = {}", metric.unit, ratio_cell(metric)),
        None => format!("{}, lower is better", metric.unit),
    };
    let bars = [
        Bar { label: "Toro".into(), side: &metric.toro, colour: TORO_COLOUR },
        Bar { label: "Linux guest".into(), side: &metric.linux, colour: LINUX_COLOUR },
    ];
    bar_chart(metric.title, &subtitle, metric.unit, &bars)
}

/// Bars side by side on one scale: each at its median with a whisker from
/// min to max and the figure above, or the reason it is missing.
pub fn bar_chart(title: &str, subtitle: &str, unit: &str, bars: &[Bar]) -> String {
    const WIDTH: f64 = 520.0;
    const HEIGHT: f64 = 300.0;
    const TOP: f64 = 70.0;
    const BOTTOM: f64 = 250.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = WIDTH - 40.0;
    let slot = (RIGHT - LEFT) / bars.len().max(1) as f64;
    let bar_width = (slot * 0.7).min(110.0);
    let scale_max =
        bars.iter().filter_map(|bar| bar.side.summary().map(|s| s.max)).fold(0.0_f64, f64::max).max(f64::MIN_POSITIVE)
            * 1.1;
    let y = |value: f64| BOTTOM - (BOTTOM - TOP) * (value / scale_max);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"14\">"
    );
    let _ = writeln!(out, "<rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>");
    let _ = writeln!(out, "<text x=\"20\" y=\"28\" font-size=\"17\" font-weight=\"bold\">{}</text>", escape_xml(title));
    let _ = writeln!(out, "<text x=\"20\" y=\"50\" fill=\"#555555\" font-size=\"12\">{}</text>", escape_xml(subtitle));
    let _ = writeln!(out, "<line x1=\"{LEFT}\" y1=\"{BOTTOM}\" x2=\"{RIGHT}\" y2=\"{BOTTOM}\" stroke=\"#333333\"/>");
    for (index, bar) in bars.iter().enumerate() {
        let x = LEFT + slot * index as f64 + (slot - bar_width) / 2.0;
        let centre = x + bar_width / 2.0;
        let _ = writeln!(
            out,
            "<text x=\"{centre:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            BOTTOM + 22.0,
            escape_xml(&bar.label)
        );
        match bar.side.summary() {
            Some(summary) => {
                let top = y(summary.median);
                let _ = writeln!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{top:.1}\" width=\"{bar_width:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
                    (BOTTOM - top).max(1.0),
                    bar.colour
                );
                if summary.count > 1 && summary.max > summary.min {
                    let (low, high) = (y(summary.min), y(summary.max));
                    let _ = writeln!(
                        out,
                        "<path d=\"M{centre:.1} {low:.1}V{high:.1}M{:.1} {low:.1}h20M{:.1} {high:.1}h20\" stroke=\"#000000\" stroke-width=\"1.5\"/>",
                        centre - 10.0,
                        centre - 10.0
                    );
                }
                let label = format!("{} {unit}", number(summary.median));
                let _ = writeln!(
                    out,
                    "<text x=\"{centre:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>",
                    y(summary.max) - 8.0,
                    escape_xml(&label)
                );
            }
            None => {
                let reason = match bar.side {
                    Side::Missing(reason) => reason.clone(),
                    Side::Measured { .. } => "failed".into(),
                };
                let _ = writeln!(
                    out,
                    "<text x=\"{centre:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#868e96\" font-size=\"12\">{}</text>",
                    BOTTOM - 12.0,
                    escape_xml(&reason)
                );
            }
        }
    }
    let repeated = bars.iter().any(|bar| bar.side.summary().is_some_and(|s| s.count > 1));
    let caption = if repeated { "bar: median; whisker: min–max" } else { "a single figure per side" };
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#868e96\" font-size=\"11\">{caption}</text>",
        WIDTH - 12.0,
        HEIGHT - 8.0
    );
    out.push_str("</svg>\n");
    out
}

/// A line chart: one line per series through its values at the evenly
/// spaced `labels` (a missing value breaks nothing, it is left out), each
/// point marked and its figure written beside it.
pub fn line_chart(
    title: &str,
    subtitle: &str,
    x_caption: &str,
    unit: &str,
    labels: &[String],
    series: &[(&str, &str, Vec<Option<f64>>)],
) -> String {
    const WIDTH: f64 = 560.0;
    const HEIGHT: f64 = 330.0;
    const TOP: f64 = 80.0;
    const BOTTOM: f64 = 270.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = WIDTH - 40.0;
    let scale_max = series
        .iter()
        .flat_map(|(_, _, values)| values.iter().flatten().copied())
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.1;
    let x = |index: usize| LEFT + (RIGHT - LEFT) * (index as f64 + 0.5) / labels.len().max(1) as f64;
    let y = |value: f64| BOTTOM - (BOTTOM - TOP) * (value / scale_max);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"14\">"
    );
    let _ = writeln!(out, "<rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>");
    let _ = writeln!(out, "<text x=\"20\" y=\"28\" font-size=\"17\" font-weight=\"bold\">{}</text>", escape_xml(title));
    let _ = writeln!(out, "<text x=\"20\" y=\"50\" fill=\"#555555\" font-size=\"12\">{}</text>", escape_xml(subtitle));
    let _ = writeln!(out, "<line x1=\"{LEFT}\" y1=\"{BOTTOM}\" x2=\"{RIGHT}\" y2=\"{BOTTOM}\" stroke=\"#333333\"/>");
    for (index, label) in labels.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(index),
            BOTTOM + 20.0,
            escape_xml(label)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555555\" font-size=\"12\">{}</text>",
        (LEFT + RIGHT) / 2.0,
        BOTTOM + 40.0,
        escape_xml(x_caption)
    );
    for (number_of_series, (name, colour, values)) in series.iter().enumerate() {
        let points: Vec<(f64, f64, f64)> = values
            .iter()
            .enumerate()
            .filter_map(|(index, value)| value.filter(|v| v.is_finite()).map(|v| (x(index), y(v), v)))
            .collect();
        let path: Vec<String> = points.iter().map(|(px, py, _)| format!("{px:.1},{py:.1}")).collect();
        let _ = writeln!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2.5\"/>",
            path.join(" ")
        );
        for (px, py, value) in &points {
            let _ = writeln!(out, "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"{colour}\"/>");
            let _ = writeln!(
                out,
                "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\" fill=\"{colour}\">{}</text>",
                py - 8.0,
                escape_xml(&format!("{} {unit}", number(*value)))
            );
        }
        let legend_y = 68.0;
        let legend_x = 20.0 + 200.0 * number_of_series as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{legend_x}\" y=\"{}\" width=\"14\" height=\"4\" fill=\"{colour}\"/>",
            legend_y - 4.0
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{legend_y}\" font-size=\"12\">{}</text>",
            legend_x + 20.0,
            escape_xml(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (UTC).
pub fn iso8601(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let seconds_of_day = unix_seconds % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds_of_day / 3600,
        seconds_of_day / 60 % 60,
        seconds_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_metrics() -> Vec<Metric> {
        vec![
            Metric {
                key: "boot",
                title: "boot to first line",
                unit: "ms",
                toro: Side::measured(vec![60.0, 55.0, 70.0]),
                linux: Side::measured(vec![3400.0, 3500.0, 3300.0]),
            },
            Metric {
                key: "http",
                title: "boot to first HTTP 200",
                unit: "ms",
                toro: Side::Missing("n/a — no network yet".into()),
                linux: Side::measured(vec![4000.0]),
            },
        ]
    }

    #[test]
    fn table_aligns_columns_and_shows_spread_and_ratio() {
        let text = table(&sample_metrics());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("metric"));
        assert!(lines[2].contains("60 ms (55–70)"));
        assert!(lines[2].contains("3400 ms (3300–3500)"));
        assert!(lines[2].ends_with("57x"));
        assert!(lines[3].contains("n/a — no network yet"));
        assert!(lines[3].contains("4000 ms"));
        assert!(!lines[3].contains("4000 ms ("), "one run has no spread");
        assert!(lines[3].ends_with('—'));
        // Columns line up: "Toro" starts where each row's second cell does.
        let column = lines[0].find("Toro").unwrap();
        assert_eq!(lines[2].chars().nth(column - 2), Some(' '));
        assert_eq!(&lines[2][column..column + 2], "60");
    }

    #[test]
    fn markdown_table_has_a_row_per_metric() {
        let text = markdown_table(&sample_metrics());
        assert_eq!(text.lines().count(), 4);
        assert!(text.starts_with("| metric | Toro | Linux guest | Linux/Toro |"));
    }

    #[test]
    fn json_record_shape() {
        let context = Context { timestamp: "2025-01-01T00:00:00Z".into(), runs: 3, ..Context::default() };
        let text = json(&context, &sample_metrics(), Json::Array(Vec::new()), Json::Array(Vec::new())).render();
        for expected in [
            "\"schema\": 2",
            "\"workloads\": []",
            "\"host_cpu_during_wrk\": []",
            "\"timestamp\": \"2025-01-01T00:00:00Z\"",
            "\"runs\": 3",
            "\"key\": \"boot\"",
            "\"samples\": [60, 55, 70]",
            "\"median\": 60",
            "\"min\": 55",
            "\"max\": 70",
            "\"missing\": \"n/a — no network yet\"",
            "\"linux_over_toro\": null",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        // Balanced braces and brackets, no trailing commas.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
        assert_eq!(text.matches('[').count(), text.matches(']').count());
        assert!(!text.contains(",\n}") && !text.contains(",\n]") && !text.contains(",]"));
    }

    #[test]
    fn json_escapes_strings() {
        let text = Json::String("a \"b\" \\ c\nd\u{1}".into()).render();
        assert_eq!(text, "\"a \\\"b\\\" \\\\ c\\nd\\u0001\"\n");
        assert_eq!(Json::Number(f64::NAN).render(), "null\n");
    }

    #[test]
    fn splice_replaces_between_markers_or_appends() {
        let document = "# Title\nintro\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nouttro\n";
        let spliced = splice(document, "new\n");
        assert_eq!(spliced, "# Title\nintro\n<!-- bench:begin -->\nnew\n<!-- bench:end -->\nouttro\n");
        let appended = splice("# Title\n", "new\n");
        assert_eq!(appended, "# Title\n<!-- bench:begin -->\nnew\n<!-- bench:end -->\n");
    }

    #[test]
    fn svg_has_both_bars_or_the_reason() {
        let metrics = sample_metrics();
        let boot = svg(&metrics[0]);
        assert!(boot.starts_with("<svg"));
        assert_eq!(boot.matches("<rect").count(), 3, "background and two bars");
        assert!(boot.contains("60 ms") && boot.contains("3400 ms"));
        let http = svg(&metrics[1]);
        assert!(http.contains("n/a — no network yet"));
        assert_eq!(http.matches("<rect").count(), 2);
    }

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_764_178_503), "2025-11-26T17:35:03Z");
    }

    #[test]
    fn numbers_keep_useful_precision() {
        assert_eq!(number(3412.4), "3412");
        assert_eq!(number(42.0), "42");
        assert_eq!(number(15.25), "15.2");
        assert_eq!(number(0.153), "0.15");
    }
}
