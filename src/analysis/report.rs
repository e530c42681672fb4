//! The run's HTML report: memory over time with the fitted slope, the RTF distribution with its
//! warning and critical lines, RTF over the run, and the verdict table.
//!
//! Charts are drawn by plotters into inline SVG, so the page is one file that opens in a browser
//! with no network and no scripts.

use super::results::{Results, Section};
use super::verdicts::{fmt_value, Status};
use crate::measure::memory::MemorySeries;
use crate::measure::slope::fit;
use anyhow::{anyhow, Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

const SIZE: (u32, u32) = (860, 360);
const SERVER: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const LOADGEN: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const FIT: RGBColor = RGBColor(0x33, 0x33, 0x33);
const MESH: RGBColor = RGBColor(0xf0, 0xf0, 0xf0);
const WARN: RGBColor = RGBColor(0xe6, 0xa1, 0x00);
const CRIT: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// Writes the report to `path`.
pub fn write_html(results: &Results, path: &Path) -> Result<()> {
    let html = render_html(results)?;
    std::fs::write(path, html).with_context(|| format!("cannot write the HTML report {}", path.display()))
}

/// The report as one HTML page.
pub fn render_html(r: &Results) -> Result<String> {
    let mut h = String::new();
    let verdict = if r.passed { "PASSED" } else { "FAILED" };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>phone-agent-load: {profile} {verdict}</title><style>{CSS}</style></head><body>\n\
         <h1>phone-agent-load: {verdict}</h1>\n<p>profile <b>{profile}</b>, host <b>{host}</b>, \
         started {ts}, ran {dur:.1} s{interrupted}</p>\n",
        profile = esc(&r.profile),
        host = esc(&r.host),
        ts = esc(&r.timestamp),
        dur = r.duration_s,
        interrupted = match (&r.interrupted, &r.interrupt_reason) {
            (false, _) => String::new(),
            (true, why) => format!(
                " — <b class=\"critical\">interrupted</b>: {}",
                esc(why.as_deref().unwrap_or("no reason given"))
            ),
        },
    );
    verdict_table(&mut h, r);
    h.push_str("<h2>Memory</h2>\n");
    h.push_str(&memory_chart(r)?);
    if let Section::Ran(ai) = &r.ai_pipeline {
        let _ = writeln!(
            h,
            "<h2>AI real-time factor</h2>\n<p>{} of {} turns answered, mean {}x, p95 {}x, \
             {:.1}% faster than real time (mode {}).</p>",
            ai.successful_turns,
            ai.turns,
            fmt_value(ai.rtf.mean),
            fmt_value(ai.rtf.p95),
            ai.realtime_capable_pct,
            esc(&ai.mode)
        );
        let rtfs: Vec<f64> = ai.rtf_series.iter().map(|p| p[1]).collect();
        let (warn, crit) = rtf_lines(r);
        h.push_str(&rtf_histogram(&rtfs, warn, crit)?);
        h.push_str(&rtf_over_time(&ai.rtf_series, warn, crit)?);
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

const CSS: &str = "body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}\
.target{color:#2a7d2a}.warning{color:#b07800}.critical{color:#c62828;font-weight:bold}svg{display:block}";

fn verdict_table(h: &mut String, r: &Results) {
    h.push_str(
        "<h2>Verdicts</h2>\n<table><tr><th>metric</th><th>value</th><th>target</th><th>warning</th>\
                <th>critical</th><th>status</th><th>recommendation</th></tr>\n",
    );
    for v in &r.verdicts {
        let value = match &v.detail {
            Some(d) => format!("{} ({d})", v.value_text()),
            None => v.value_text(),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{s}\">{s}</td><td>{}</td></tr>",
            esc(&v.metric),
            esc(&value),
            esc(&v.target),
            esc(&v.warning),
            esc(&v.critical),
            esc(v.recommendation.as_deref().unwrap_or("")),
            s = v.status,
        );
    }
    h.push_str("</table>\n");
    if r.verdicts.iter().all(|v| v.status == Status::Target) && !r.verdicts.is_empty() {
        h.push_str("<p class=\"target\">Every metric on target.</p>\n");
    }
}

/// The RTF verdict's band, or the default 0.8x / 1.0x.
fn rtf_lines(r: &Results) -> (f64, f64) {
    r.verdicts
        .iter()
        .find(|v| v.section.as_deref() == Some("ai_pipeline") && v.unit == "x" && v.warning_at.is_some())
        .and_then(|v| Some((v.warning_at?, v.critical_at?)))
        .unwrap_or((0.8, 1.0))
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("cannot draw a chart: {e:?}")
}

/// Draws into an SVG string.
fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    Ok(out + "\n")
}

fn memory_chart(r: &Results) -> Result<String> {
    let m = &r.memory.report;
    let series: Vec<(&str, &MemorySeries, RGBColor)> = [
        ("server", &m.server, SERVER),
        ("load generator", &m.load_generator, LOADGEN),
    ]
    .into_iter()
    .filter_map(|(name, s, c)| s.as_ref().map(|s| (name, s, c)))
    .filter(|(_, s, _)| !s.samples.is_empty())
    .collect();
    if series.is_empty() {
        return Ok("<p>No memory samples.</p>\n".to_string());
    }
    let points = series.iter().flat_map(|(_, s, _)| s.samples.iter());
    let (x_max, y_min, y_max) = points.fold((1.0f64, f64::MAX, f64::MIN), |(x, lo, hi), p| {
        (x.max(p[0]), lo.min(p[1]), hi.max(p[1]))
    });
    let pad = ((y_max - y_min) * 0.1).max(1.0);
    let mut text = String::new();
    for (name, s, _) in &series {
        let _ = writeln!(
            text,
            "<p>{name} ({}): initial {:.1} MB, peak {:.1}, final {:.1}, growth {:+.1} MB; slope {:+.2} MB/min \
             (R² {:.2}): {} at this rate.</p>",
            esc(&s.source),
            s.initial_mb,
            s.peak_mb,
            s.final_mb,
            s.growth_mb,
            s.slope_mb_per_min,
            s.r2,
            s.projection()
        );
    }
    let chart = svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Memory over the run (RSS)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..x_max, (y_min - pad).max(0.0)..y_max + pad)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .light_line_style(MESH)
            .x_desc("seconds")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("MB")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(draw_err)?;
        if let Some(ramp) = m.ramp_done_s {
            let ends = [(ramp, (y_min - pad).max(0.0)), (ramp, y_max + pad)];
            chart
                .draw_series(DashedLineSeries::new(ends, 4, 4, BLACK.stroke_width(1)))
                .map_err(draw_err)?
                .label("all users started")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
        }
        for (name, s, color) in &series {
            let line = s.samples.iter().map(|p| (p[0], p[1]));
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(draw_err)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
            let window: Vec<(f64, f64)> = s
                .samples
                .iter()
                .filter(|p| p[0] >= s.window_start_s)
                .map(|p| (p[0], p[1]))
                .collect();
            if let (Some(first), Some(last)) = (window.first(), window.last()) {
                let f = fit(&window);
                let at = |x: f64| (x, f.intercept + f.slope_per_s * x);
                chart
                    .draw_series(DashedLineSeries::new(
                        [at(first.0), at(last.0)],
                        8,
                        5,
                        FIT.stroke_width(2),
                    ))
                    .map_err(draw_err)?
                    .label(format!("{name} fit {:+.2} MB/min", s.slope_mb_per_min))
                    .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], FIT.stroke_width(2)));
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(draw_err)?;
        Ok(())
    })?;
    Ok(text + &chart)
}

/// Bins of 0.05x from 0 to past the slowest turn and the critical line.
fn rtf_histogram(rtfs: &[f64], warn: f64, crit: f64) -> Result<String> {
    if rtfs.is_empty() {
        return Ok("<p>No answered AI turn to plot.</p>\n".to_string());
    }
    const BIN: f64 = 0.05;
    let top = rtfs.iter().copied().fold(crit, f64::max) * 1.1;
    let bins = ((top / BIN).ceil() as usize).clamp(1, 2000);
    let mut counts = vec![0u32; bins];
    for r in rtfs {
        counts[((r / BIN) as usize).min(bins - 1)] += 1;
    }
    let y_max = f64::from(*counts.iter().max().unwrap_or(&1)) * 1.15;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption("RTF distribution (answered turns)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0.0..bins as f64 * BIN, 0.0..y_max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .light_line_style(MESH)
            .x_desc("real-time factor (processing time / audio time)")
            .y_desc("turns")
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| {
                let x = i as f64 * BIN;
                Rectangle::new([(x, 0.0), (x + BIN * 0.9, f64::from(c))], SERVER.filled())
            }))
            .map_err(draw_err)?;
        threshold_lines(&mut chart, warn, crit, (0.0, y_max), true)
    })
}

fn rtf_over_time(series: &[[f64; 2]], warn: f64, crit: f64) -> Result<String> {
    if series.is_empty() {
        return Ok(String::new());
    }
    let x_max = series.iter().map(|p| p[0]).fold(1.0, f64::max);
    let y_max = series.iter().map(|p| p[1]).fold(crit, f64::max) * 1.15;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption("RTF of each turn over the run", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .light_line_style(MESH)
            .x_desc("seconds")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("RTF")
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(
                series
                    .iter()
                    .map(|p| Circle::new((p[0], p[1]), 3, SERVER.filled())),
            )
            .map_err(draw_err)?;
        threshold_lines(&mut chart, warn, crit, (0.0, x_max), false)
    })
}

/// The warning and critical lines: vertical on the histogram, horizontal over time.
fn threshold_lines<'a>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    warn: f64,
    crit: f64,
    span: (f64, f64),
    vertical: bool,
) -> Result<()> {
    for (at, color, label) in [(warn, WARN, "warning"), (crit, CRIT, "critical")] {
        let ends = if vertical {
            [(at, span.0), (at, span.1)]
        } else {
            [(span.0, at), (span.1, at)]
        };
        chart
            .draw_series(LineSeries::new(ends, color.stroke_width(2)))
            .map_err(draw_err)?
            .label(format!("{label} {at:?}x"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
