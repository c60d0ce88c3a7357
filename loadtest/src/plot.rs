//! `--plot FILE.svg`: latency percentile curves (HdrHistogram style: the
//! x axis stretches the tail, 90% 99% 99.9% ... at equal distances).

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// One curve: its name and its latency histogram (µs).
pub struct Curve<'a> {
    pub name: String,
    pub hist: &'a Histogram<u64>,
}

/// The percentile label of an x position: "99.9%".
pub fn tail_label(x: f64) -> String {
    let q = 1.0 - 10f64.powf(-x);
    let p = q * 100.0;
    let s = format!("{p:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// Points (x, latency ms) of a histogram's percentile curve up to `x_max`.
pub fn curve_points(h: &Histogram<u64>, x_max: f64) -> Vec<(f64, f64)> {
    let steps = 400;
    (0..=steps)
        .map(|i| {
            let x = x_max * i as f64 / steps as f64;
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q).max(1) as f64 / 1000.0)
        })
        .collect()
}

/// A caption font size that fits the title in the 960 px width.
fn caption_size(title: &str) -> u32 {
    (1600 / title.chars().count().max(1) as u32).clamp(10, 20)
}

pub fn plot(path: &str, title: &str, curves: &[Curve<'_>]) -> Result<(), String> {
    let curves: Vec<&Curve<'_>> = curves.iter().filter(|c| !c.hist.is_empty()).collect();
    if curves.is_empty() {
        return Err("no latencies to plot".into());
    }
    // Going further right than 1/count says nothing: stop at the last
    // percentile the smallest sample can resolve (at most 99.999%).
    let min_count = curves.iter().map(|c| c.hist.len()).min().unwrap_or(1);
    let x_max = (min_count as f64).log10().floor().clamp(1.0, 5.0);
    let series: Vec<Vec<(f64, f64)>> = curves.iter().map(|c| curve_points(c.hist, x_max)).collect();
    let y_min = series
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min);
    let y_max = series.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
    let (y_lo, y_hi) = (y_min / 1.5, y_max * 1.5);

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| format!("plot {path}: {e}");
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", caption_size(title)))
        .margin(15)
        .margin_right(45)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (y_lo..y_hi).log_scale())
        .map_err(e)?;
    let x_fmt = |x: &f64| tail_label(*x);
    let y_fmt = |y: &f64| crate::config::fmt_num(*y);
    chart
        .configure_mesh()
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .x_desc("percentile")
        .y_desc("latency (ms, log scale)")
        .draw()
        .map_err(e)?;
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
    ];
    for (i, (c, pts)) in curves.iter().zip(series).enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(e)?
            .label(c.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x = -log10(1 - q): 0 at 0%, 1 at 90%, 2 at 99% ...
    fn tail_x(q: f64) -> f64 {
        -(1.0 - q).max(1e-12).log10()
    }

    #[test]
    fn tail_axis() {
        assert!((tail_x(0.9) - 1.0).abs() < 1e-9);
        assert!((tail_x(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(tail_label(0.0), "0%");
        assert_eq!(tail_label(1.0), "90%");
        assert_eq!(tail_label(2.0), "99%");
        assert_eq!(tail_label(3.0), "99.9%");
        assert_eq!(tail_label(5.0), "99.999%");
    }

    #[test]
    fn points_follow_the_histogram() {
        let mut h = crate::stats::new_hist();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let pts = curve_points(&h, 4.0);
        assert_eq!(pts.len(), 401);
        assert!(pts.windows(2).all(|w| w[1].1 >= w[0].1));
        // x = 1 is the 90th percentile: 9 ms.
        let p90 = pts.iter().find(|p| (p.0 - 1.0).abs() < 1e-9).unwrap();
        assert!((p90.1 - 9.0).abs() < 0.05, "{p90:?}");
    }
}
