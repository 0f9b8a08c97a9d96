//! The cost–quality plot (SVG): quality against the share of strong calls per benchmark.

use std::path::Path;

use crate::error::{Error, Result};

use super::metrics::{BenchmarkReport, Curve};

/// Draws quality vs share of strong calls per benchmark: router, random and oracle, with the
/// knob settings marked. SVG.
pub fn plot(reports: &[BenchmarkReport], path: &Path, title: &str) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: String| {
        Error::io(
            format!("drawing {}", path.display()),
            std::io::Error::other(e),
        )
    };
    let cols = 3usize;
    let rows = reports.len().div_ceil(cols).max(1);
    let root =
        SVGBackend::new(path, (420 * cols as u32, 340 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (header, body) = root.split_vertically(40);
    header
        .titled(title, ("sans-serif", 20))
        .map_err(|e| err(e.to_string()))?;
    let panels = body.split_evenly((rows, cols));
    for (r, area) in reports.iter().zip(panels.iter()) {
        let n = r.curve.len().max(1);
        let lo = r.weak_quality.min(r.strong_quality).min(
            r.oracle_curve
                .quality
                .iter()
                .cloned()
                .fold(f64::MAX, f64::min),
        );
        let hi = r
            .oracle_curve
            .quality
            .iter()
            .cloned()
            .fold(r.strong_quality.max(r.weak_quality), f64::max);
        let pad = ((hi - lo) * 0.05).max(1e-3);
        let apgr = r
            .router
            .apgr
            .map(|a| format!("{a:.3}"))
            .unwrap_or_else(|| "n/a".into());
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{} (n={}, APGR {apgr})", r.benchmark, r.n),
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(0.0..1.0, (lo - pad)..(hi + pad))
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("share of calls to the strong tier")
            .y_desc("mean quality")
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let step = (n / 400).max(1);
        let series = |c: &Curve| -> Vec<(f64, f64)> {
            (0..=n)
                .step_by(step)
                .chain(std::iter::once(n))
                .map(|i| (i as f64 / n as f64, c.quality[i]))
                .collect()
        };
        chart
            .draw_series(LineSeries::new(
                series(&r.oracle_curve),
                GREEN.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?
            .label("oracle")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], GREEN));
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, r.weak_quality), (1.0, r.strong_quality)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| err(e.to_string()))?
            .label("random")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLACK));
        chart
            .draw_series(LineSeries::new(series(&r.curve), BLUE.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label("router")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE));
        chart
            .draw_series(
                r.knob
                    .iter()
                    .map(|p| Circle::new((p.strong_share, p.quality), 3, RED.filled())),
            )
            .map_err(|e| err(e.to_string()))?
            .label("knob 0, 0.05 … 1")
            .legend(|(x, y)| Circle::new((x + 7, y), 3, RED.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
