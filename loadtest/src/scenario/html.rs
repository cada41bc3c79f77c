//! The HTML report: one self-contained page (no scripts, no external
//! files) with the summary and SVG charts drawn by plotters: requests/s,
//! latency percentiles, hit ratio, errors, audience, origin requests and
//! stall ratio over time, each with the fault steps marked.

use std::fmt::Write;

use plotters::prelude::*;

use super::report::Report;

type Series = (&'static str, Vec<(f64, f64)>, RGBColor);

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE_: RGBColor = RGBColor(255, 127, 14);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const RED_: RGBColor = RGBColor(214, 39, 40);
const PURPLE_: RGBColor = RGBColor(148, 103, 189);

pub fn render(report: &Report) -> String {
    let tl = &report.timeline;
    let faults: Vec<(f64, String)> = report
        .faults
        .iter()
        .map(|f| (f.at_s, f.name.clone()))
        .collect();
    let points = |f: &dyn Fn(&super::report::Second) -> Option<f64>| -> Vec<(f64, f64)> {
        tl.iter()
            .filter_map(|s| f(s).map(|v| (s.t as f64, v)))
            .collect()
    };
    let charts: Vec<(&str, &str, Vec<Series>)> = vec![
        (
            "Requests per second",
            "req/s",
            vec![("requests", points(&|s| Some(s.requests as f64)), BLUE_)],
        ),
        (
            "Latency (intended send to last byte)",
            "ms",
            vec![
                (
                    "p50",
                    points(&|s| (s.requests > s.errors).then_some(s.p50_ms)),
                    BLUE_,
                ),
                (
                    "p99",
                    points(&|s| (s.requests > s.errors).then_some(s.p99_ms)),
                    ORANGE_,
                ),
            ],
        ),
        (
            "Cache hit ratio",
            "%",
            vec![(
                "hits",
                points(&|s| {
                    (s.with_cache_status > 0)
                        .then(|| 100.0 * s.hits as f64 / s.with_cache_status as f64)
                }),
                GREEN_,
            )],
        ),
        (
            "Errors per second",
            "errors/s",
            vec![("errors", points(&|s| Some(s.errors as f64)), RED_)],
        ),
        (
            "Viewers watching",
            "viewers",
            vec![(
                "active",
                points(&|s| Some(s.active_viewers as f64)),
                PURPLE_,
            )],
        ),
        (
            "Origin requests per second",
            "req/s",
            vec![(
                "origin",
                points(&|s| Some(s.origin_requests as f64)),
                ORANGE_,
            )],
        ),
        (
            "Stall ratio (live viewers)",
            "%",
            vec![(
                "stalled",
                points(&|s| {
                    (s.play_s + s.stall_s > 0.0).then(|| 100.0 * s.stall_s / (s.play_s + s.stall_s))
                }),
                RED_,
            )],
        ),
    ];
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Fanout load test: {name}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}}\
         pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}\
         .charts{{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:1em}}\
         figure{{margin:0}}</style></head><body>\
         <h1>Load test: {name}</h1><p>Started {started}, seed {seed}. Red lines mark fault steps.</p>\
         <pre>{summary}</pre><div class=\"charts\">",
        name = escape(&report.scenario),
        started = escape(&report.started_at),
        seed = report.seed,
        summary = escape(&report.render()),
    );
    for (title, unit, series) in charts {
        let _ = write!(
            html,
            "<figure>{}</figure>",
            chart(title, unit, &series, &faults)
        );
    }
    html.push_str("</div></body></html>\n");
    html
}

fn chart(title: &str, unit: &str, series: &[Series], faults: &[(f64, String)]) -> String {
    let mut svg = String::new();
    let x_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (540, 260)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(unit)
            .light_line_style(WHITE)
            .draw()?;
        for (at, _) in faults {
            chart.draw_series(LineSeries::new(
                vec![(*at, 0.0), (*at, y_max)],
                RED_.stroke_width(1),
            ))?;
        }
        for (name, points, color) in series {
            let color = *color;
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color));
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    })();
    match drawn {
        Ok(()) => svg,
        Err(e) => format!(
            "<p>chart {title:?} could not be drawn: {}</p>",
            escape(&e.to_string())
        ),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
