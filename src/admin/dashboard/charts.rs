//! Charts of the queue history as inline SVG, drawn on the server: no
//! script, no inline style (the page's CSP allows neither), colours from
//! the stylesheet by class. Every line also has its own dash pattern and
//! marker shape, named in the legend, so the chart reads without colour;
//! the axes are labelled and the time axis says its zone (UTC).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::html::esc;
use crate::broker::history::{Resolution, Series};

/// The drawing's size in user units (it scales to the page's width).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
/// Room for the axis labels.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 44.0;
/// Horizontal grid lines (and y-axis labels) above zero.
const Y_TICKS: usize = 4;
/// Labels along the time axis.
const X_TICKS: usize = 6;
/// Markers drawn on a line at most, spread evenly (every point when fewer).
const MAX_MARKERS: usize = 60;

/// How a point is marked, besides the line's colour and dash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Marker {
    Circle,
    Square,
    Triangle,
    Diamond,
}

impl Marker {
    fn name(self) -> &'static str {
        match self {
            Marker::Circle => "circles",
            Marker::Square => "squares",
            Marker::Triangle => "triangles",
            Marker::Diamond => "diamonds",
        }
    }

    fn draw(self, out: &mut String, x: f64, y: f64, class: &str) {
        let _ = match self {
            Marker::Circle => write!(out, "<circle class=\"{class}\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\"/>"),
            Marker::Square => write!(
                out,
                "<rect class=\"{class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"6\" height=\"6\"/>",
                x - 3.0,
                y - 3.0
            ),
            Marker::Triangle => write!(
                out,
                "<polygon class=\"{class}\" points=\"{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\"/>",
                y - 3.5,
                x - 3.5,
                y + 3.0,
                x + 3.5,
                y + 3.0
            ),
            Marker::Diamond => write!(
                out,
                "<polygon class=\"{class}\" points=\"{x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1}\"/>",
                y - 4.0,
                x + 4.0,
                y + 4.0,
                x - 4.0
            ),
        };
    }
}

/// One line of a chart.
#[derive(Debug)]
pub(super) struct Line {
    /// What it shows, in the legend (and the id the browser test reads).
    pub(super) label: &'static str,
    /// Stylesheet class: the colour (`s1` to `s4`).
    pub(super) class: &'static str,
    /// `stroke-dasharray`, empty for solid.
    pub(super) dash: &'static str,
    pub(super) marker: Marker,
    /// One value per bucket; `None` leaves a gap.
    pub(super) values: Vec<Option<f64>>,
}

/// The unit of a chart's y axis.
#[derive(Debug, Clone, Copy)]
pub(super) enum Unit {
    /// Jobs per bucket (or a depth in jobs).
    Jobs,
    /// Milliseconds, shown as ms, s, min or h.
    Millis,
}

impl Unit {
    fn format(self, v: f64) -> String {
        match self {
            Unit::Jobs if v >= 10_000.0 => format!("{:.0}k", v / 1000.0),
            Unit::Jobs => format_number(v),
            Unit::Millis => duration(v),
        }
    }
}

fn format_number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Milliseconds for a person: `850 ms`, `2.5 s`, `3.0 min`, `1.5 h`.
pub(super) fn duration(ms: f64) -> String {
    if ms < 1_000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1_000.0)
    } else if ms < 3_600_000.0 {
        format!("{:.1} min", ms / 60_000.0)
    } else {
        format!("{:.1} h", ms / 3_600_000.0)
    }
}

/// Tick steps that read well as durations (ms): round seconds, minutes, hours.
const DURATION_STEPS: [f64; 22] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5,
    18e5, 36e5,
];

/// A top for a y axis of durations at or above `max`, in steps from
/// [`DURATION_STEPS`] (whole hours above those).
fn nice_duration_max(max: f64) -> f64 {
    let step = max / Y_TICKS as f64;
    let step = DURATION_STEPS
        .into_iter()
        .find(|s| *s >= step)
        .unwrap_or_else(|| (step / 36e5).ceil() * 36e5);
    step * Y_TICKS as f64
}

/// A round top for the y axis at or above `max`: 1, 2 or 5 times a power of ten.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 {
        return Y_TICKS as f64;
    }
    let step = max / Y_TICKS as f64;
    let power = 10f64.powf(step.log10().floor());
    let nice = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= step)
        .unwrap_or(10.0 * power);
    // Whole jobs: never a step under 1.
    nice.max(1.0) * Y_TICKS as f64
}

/// A time label for the axis: `HH:MM` per minute, `MM-DD HH:00` per hour.
fn time_label(at: DateTime<Utc>, resolution: Resolution) -> String {
    match resolution {
        Resolution::Minute => at.format("%H:%M").to_string(),
        Resolution::Hour => at.format("%m-%d %H:00").to_string(),
    }
}

/// A point's tooltip time.
fn point_time(at: DateTime<Utc>, resolution: Resolution) -> String {
    match resolution {
        Resolution::Minute => at.format("%Y-%m-%d %H:%M UTC").to_string(),
        Resolution::Hour => at.format("%Y-%m-%d %H:00 UTC").to_string(),
    }
}

/// A chart of `lines` over `series`' buckets, with a title, labelled axes
/// and a legend naming each line's colour-free marks and its total or peak.
pub(super) fn chart(id: &str, title: &str, y_label: &str, unit: Unit, series: &Series, lines: &[Line]) -> String {
    let n = series.buckets.len();
    let max = lines
        .iter()
        .flat_map(|l| l.values.iter().flatten())
        .fold(0.0f64, |m, v| m.max(*v));
    let top = match unit {
        Unit::Jobs => nice_max(max),
        Unit::Millis => nice_duration_max(max),
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |i: usize| {
        LEFT + if n <= 1 {
            plot_w / 2.0
        } else {
            plot_w * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| TOP + plot_h - plot_h * (v / top).clamp(0.0, 1.0);
    let title_id = format!("{id}-title");
    let desc_id = format!("{id}-desc");
    let first = series.buckets.first().map(|b| point_time(b.start, series.resolution));
    let last = series.buckets.last().map(|b| point_time(b.start, series.resolution));
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\" id=\"{id}\"><figcaption>{title}</figcaption>\
         <svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-labelledby=\"{title_id} {desc_id}\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title id=\"{title_id}\">{title}</title>\
         <desc id=\"{desc_id}\">{y_label} per {} from {} to {}; time in UTC.</desc>",
        series.resolution,
        esc(first.as_deref().unwrap_or("")),
        esc(last.as_deref().unwrap_or("")),
        title = esc(title),
        y_label = esc(y_label),
    );
    // Grid and y axis labels.
    for tick in 0..=Y_TICKS {
        let v = top * tick as f64 / Y_TICKS as f64;
        let ty = y(v);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{ty:.1}\" x2=\"{:.1}\" y2=\"{ty:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            ty + 4.0,
            esc(&unit.format(v))
        );
    }
    // Time axis labels.
    if n > 0 {
        let ticks = X_TICKS.min(n);
        for t in 0..ticks {
            let i = if ticks <= 1 { 0 } else { t * (n - 1) / (ticks - 1) };
            let anchor = match t {
                0 => "start",
                t if t + 1 == ticks => "end",
                _ => "middle",
            };
            let _ = write!(
                out,
                "<line class=\"axis\" x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\"/>\
                 <text class=\"tick\" x=\"{0:.1}\" y=\"{3:.1}\" text-anchor=\"{anchor}\">{4}</text>",
                x(i),
                TOP + plot_h,
                TOP + plot_h + 4.0,
                TOP + plot_h + 16.0,
                esc(&time_label(series.buckets[i].start, series.resolution))
            );
        }
    }
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{0:.1}\"/>\
         <text class=\"axis-label\" x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"middle\">time (UTC), one point per {4}</text>\
         <text class=\"axis-label\" x=\"14\" y=\"{5:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {5:.1})\">{6}</text>",
        TOP + plot_h,
        WIDTH - RIGHT,
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0,
        series.resolution,
        TOP + plot_h / 2.0,
        esc(y_label)
    );
    for line in lines {
        draw_line(&mut out, line, series, &x, &y, unit);
    }
    out.push_str("</svg><ul class=\"legend\">");
    for line in lines {
        let values: Vec<f64> = line.values.iter().flatten().copied().collect();
        let summary = match unit {
            Unit::Jobs if line.label.contains("depth") => {
                format!("peak {}", format_number(values.iter().fold(0.0, |m, v| m.max(*v))))
            }
            Unit::Jobs => format!("total {}", format_number(values.iter().sum())),
            Unit::Millis if values.is_empty() => "no samples".to_owned(),
            Unit::Millis => format!("peak {}", duration(values.iter().fold(0.0, |m, v| m.max(*v)))),
        };
        let _ = write!(
            out,
            "<li><svg class=\"key\" viewBox=\"0 0 36 12\" aria-hidden=\"true\"><line class=\"{class}\" x1=\"2\" y1=\"6\" \
             x2=\"34\" y2=\"6\" stroke-dasharray=\"{dash}\"/>",
            class = line.class,
            dash = line.dash,
        );
        line.marker.draw(&mut out, 18.0, 6.0, &format!("mark {}", line.class));
        let _ = write!(
            out,
            "</svg> <span class=\"series\" data-series=\"{label}\">{label}</span> \
             ({dash_name}, {marker}): <span class=\"summary\">{summary}</span></li>",
            label = esc(line.label),
            dash_name = if line.dash.is_empty() {
                "solid line"
            } else {
                "dashed line"
            },
            marker = line.marker.name(),
            summary = esc(&summary),
        );
    }
    out.push_str("</ul></figure>");
    out
}

fn draw_line(
    out: &mut String,
    line: &Line,
    series: &Series,
    x: &impl Fn(usize) -> f64,
    y: &impl Fn(f64) -> f64,
    unit: Unit,
) {
    // Runs of present values, each one polyline.
    let mut run = String::new();
    let flush = |out: &mut String, run: &mut String| {
        if !run.is_empty() {
            let _ = write!(
                out,
                "<polyline class=\"{}\" fill=\"none\" stroke-dasharray=\"{}\" points=\"{}\"/>",
                line.class,
                line.dash,
                run.trim_end()
            );
            run.clear();
        }
    };
    for (i, value) in line.values.iter().enumerate() {
        match value {
            Some(v) => {
                let _ = write!(run, "{:.1},{:.1} ", x(i), y(*v));
            }
            None => flush(out, &mut run),
        }
    }
    flush(out, &mut run);
    // Markers, each with its value as a tooltip.
    let n = line.values.len();
    let every = n.div_ceil(MAX_MARKERS).max(1);
    let class = format!("mark {}", line.class);
    let _ = write!(out, "<g class=\"points\" data-series=\"{}\">", esc(line.label));
    for (i, value) in line.values.iter().enumerate() {
        let Some(v) = value else { continue };
        let shown = i % every == 0 || i + 1 == n;
        if !shown {
            continue;
        }
        let at = point_time(series.buckets[i].start, series.resolution);
        let _ = write!(
            out,
            "<g data-value=\"{}\"><title>{}: {} {}</title>",
            v,
            esc(&at),
            esc(line.label),
            esc(&unit.format(*v))
        );
        line.marker.draw(out, x(i), y(*v), &class);
        out.push_str("</g>");
    }
    out.push_str("</g>");
}

/// A small line of completed (solid) and failed (dashed) jobs per bucket,
/// for the queue table, with the totals in its title.
pub(super) fn sparkline(series: &Series) -> String {
    const W: f64 = 120.0;
    const H: f64 = 24.0;
    let n = series.buckets.len();
    let completed: Vec<f64> = series.buckets.iter().map(|b| b.completed as f64).collect();
    let failed: Vec<f64> = series.buckets.iter().map(|b| b.failed() as f64).collect();
    let max = completed.iter().chain(&failed).fold(1.0f64, |m, v| m.max(*v));
    let x = |i: usize| {
        if n <= 1 {
            W / 2.0
        } else {
            1.0 + (W - 2.0) * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| H - 2.0 - (H - 4.0) * v / max;
    let points = |values: &[f64]| {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let totals = series.totals();
    let text = format!(
        "last hour: {} completed, {} failed (solid line: completed, dashed: failed)",
        totals.completed,
        totals.failed()
    );
    format!(
        "<svg class=\"sparkline\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{text}\" \
         xmlns=\"http://www.w3.org/2000/svg\" data-completed=\"{}\" data-failed=\"{}\"><title>{text}</title>\
         <polyline class=\"s1\" fill=\"none\" points=\"{}\"/>\
         <polyline class=\"s2\" fill=\"none\" stroke-dasharray=\"3 2\" points=\"{}\"/></svg>",
        totals.completed,
        totals.failed(),
        points(&completed),
        points(&failed),
        text = esc(&text),
    )
}

/// The four charts of a history page: processed and failed, ready depth,
/// oldest ready age, start latency.
pub(super) fn history_charts(series: &Series, scope: &str) -> String {
    let values = |f: &dyn Fn(&crate::broker::history::HistoryBucket) -> Option<f64>| -> Vec<Option<f64>> {
        series.buckets.iter().map(f).collect()
    };
    let per = series.resolution;
    let mut out = String::new();
    out.push_str(&chart(
        "chart-throughput",
        &format!("{scope}: processed and failed per {per}"),
        &format!("jobs per {per}"),
        Unit::Jobs,
        series,
        &[
            Line {
                label: "completed",
                class: "s1",
                dash: "",
                marker: Marker::Circle,
                values: values(&|b| Some(b.completed as f64)),
            },
            Line {
                label: "failed (retried + dead-lettered)",
                class: "s2",
                dash: "6 3",
                marker: Marker::Square,
                values: values(&|b| Some(b.failed() as f64)),
            },
            Line {
                label: "dead-lettered",
                class: "s3",
                dash: "2 2",
                marker: Marker::Triangle,
                values: values(&|b| Some(b.dead_lettered as f64)),
            },
        ],
    ));
    out.push_str(&chart(
        "chart-depth",
        &format!("{scope}: ready depth (sampled each minute)"),
        "jobs ready",
        Unit::Jobs,
        series,
        &[Line {
            label: "ready depth",
            class: "s1",
            dash: "",
            marker: Marker::Circle,
            values: values(&|b| b.ready.map(|r| r as f64)),
        }],
    ));
    out.push_str(&chart(
        "chart-age",
        &format!("{scope}: oldest ready job's age (sampled each minute)"),
        "age",
        Unit::Millis,
        series,
        &[Line {
            label: "oldest ready age",
            class: "s4",
            dash: "",
            marker: Marker::Diamond,
            values: values(&|b| b.ready.map(|_| b.oldest_ready_age_ms.unwrap_or(0) as f64)),
        }],
    ));
    let pct =
        |q: fn(&crate::broker::history::Percentiles) -> u64| values(&move |b| b.percentiles().map(|p| q(&p) as f64));
    out.push_str(&chart(
        "chart-latency",
        &format!("{scope}: start latency, due to started (upper bounds of fixed ranges)"),
        "latency",
        Unit::Millis,
        series,
        &[
            Line {
                label: "p50",
                class: "s1",
                dash: "",
                marker: Marker::Circle,
                values: pct(|p| p.p50_ms),
            },
            Line {
                label: "p95",
                class: "s2",
                dash: "6 3",
                marker: Marker::Square,
                values: pct(|p| p.p95_ms),
            },
            Line {
                label: "p99",
                class: "s3",
                dash: "2 2",
                marker: Marker::Triangle,
                values: pct(|p| p.p99_ms),
            },
        ],
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::history::{HistoryBucket, HistoryLayout};

    fn series(completed: &[u64]) -> Series {
        let layout = HistoryLayout::default();
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut s = Series::empty(&layout, Resolution::Minute, completed.len() as u32, now);
        for (b, n) in s.buckets.iter_mut().zip(completed) {
            *b = HistoryBucket {
                completed: *n,
                ..HistoryBucket::empty(b.start)
            };
        }
        s
    }

    #[test]
    fn y_axes_end_on_round_numbers() {
        assert_eq!(nice_max(0.0), 4.0);
        assert_eq!(nice_max(3.0), 4.0);
        assert_eq!(nice_max(37.0), 40.0);
        assert_eq!(nice_max(101.0), 200.0);
        assert_eq!(nice_duration_max(660_000.0), 1_200_000.0);
        assert_eq!(nice_duration_max(3.0), 4.0);
        assert_eq!(nice_duration_max(20_000_000.0), 8.0 * 3_600_000.0);
    }

    #[test]
    fn charts_have_no_inline_style_or_script_and_name_the_time_zone() {
        let svg = history_charts(&series(&[1, 5, 0, 2]), "emails");
        for banned in ["style=", "<script", "javascript:", "on"] {
            if banned == "on" {
                assert!(!svg.contains(" onload") && !svg.contains(" onclick"));
            } else {
                assert!(!svg.contains(banned), "{banned} in {svg}");
            }
        }
        assert!(svg.contains("time (UTC)"));
        assert!(svg.contains("total 8"), "the legend states the total");
        assert_eq!(svg.matches("<figure").count(), 4);
    }

    #[test]
    fn sparklines_carry_their_totals() {
        let spark = sparkline(&series(&[1, 2, 3]));
        assert!(spark.contains("data-completed=\"6\""));
        assert!(spark.contains("6 completed, 0 failed"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(850.0), "850 ms");
        assert_eq!(duration(2_500.0), "2.5 s");
        assert_eq!(duration(180_000.0), "3.0 min");
        assert_eq!(duration(5_400_000.0), "1.5 h");
    }
}
