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
            vec![("origin", points(&|s| Some(s.origin_requests)), ORANGE_)],
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
    let x_max = tl.len().saturating_sub(1) as f64;
    for (title, unit, series) in charts {
        let _ = write!(
            html,
            "<figure>{}</figure>",
            chart(title, unit, &series, &faults, x_max)
        );
    }
    html.push_str("</div></body></html>\n");
    html
}

/// One chart over `0..x_max` seconds (the whole run, so charts line up).
fn chart(
    title: &str,
    unit: &str,
    series: &[Series],
    faults: &[(f64, String)],
    x_max: f64,
) -> String {
    let mut svg = String::new();
    let x_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(x_max.max(1.0), f64::max);
    let empty = series.iter().all(|s| s.1.is_empty());
    // An all-zero series still gets a visible scale; an empty one gets no
    // y labels at all rather than a column of "0.0" ticks.
    let y_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (540, 260)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc("seconds")
            .y_desc(unit)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .light_line_style(WHITE);
        if empty {
            mesh.y_labels(0);
        }
        mesh.draw()?;
        if empty {
            chart.draw_series(std::iter::once(Text::new(
                "no data in this run",
                (x_max * 0.38, y_max * 0.5),
                ("sans-serif", 14).into_font().color(&BLACK.mix(0.6)),
            )))?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tick_labels(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                Some(
                    t.split_once('>')?
                        .1
                        .split_once("</text>")?
                        .0
                        .trim()
                        .to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn a_chart_without_data_has_an_empty_axis_and_says_so() {
        let series: Vec<Series> = vec![("stalled", Vec::new(), RED_)];
        let svg = chart("Stall ratio", "%", &series, &[], 30.0);
        let labels = tick_labels(&svg);
        assert!(
            labels.iter().any(|l| l == "no data in this run"),
            "{labels:?}"
        );
        assert!(!labels.iter().any(|l| l == "0.0"), "{labels:?}");
    }

    #[test]
    fn a_chart_of_zeros_still_has_a_scale() {
        let series: Vec<Series> = vec![("errors", vec![(0.0, 0.0), (5.0, 0.0)], RED_)];
        let svg = chart("Errors", "errors/s", &series, &[], 5.0);
        let labels = tick_labels(&svg);
        assert!(labels.iter().any(|l| l == "1.0"), "{labels:?}");
        assert!(!labels.iter().any(|l| l.contains("no data")), "{labels:?}");
    }
}
