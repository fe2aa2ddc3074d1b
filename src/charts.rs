//! Budget-vs-metric charts: one line per strategy with a ±1 std band, as SVG and PNG.
//! Text is laid out with a bundled subset of DejaVu Sans, so no system font is needed.
//! The charts know series of points, not `compare`'s summary, which builds them.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use plotters::prelude::*;

/// One strategy's line: (acquired images, mean, std over seeds) at each evaluated budget.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64, f64)>,
}

const COLORS: [RGBColor; 7] = [
    RGBColor(90, 90, 90),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// The lower edge of a ±1 std band: on a log axis it stops at half the mean instead of
/// crossing zero.
fn band_low(mean: f64, std: f64, log: bool) -> f64 {
    if log {
        (mean - std).max(mean * 0.5)
    } else {
        mean - std
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    label: &str,
    log_y: bool,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let pts: Vec<(f64, f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    if pts.is_empty() {
        bail!("no rounds to chart");
    }
    // A margin on both sides so the end points' markers show; one budget point (the main
    // job evaluates only its final budget) gets a window around it.
    let lo_x = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let hi_x = pts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let margin = ((hi_x - lo_x) * 0.04).max(if hi_x > lo_x { 1.0 } else { 50.0 });
    let (x0, x1) = (lo_x - margin, hi_x + margin);
    let y0 = pts.iter().map(|p| p.1 - p.2).fold(f64::INFINITY, f64::min);
    let y1 = pts
        .iter()
        .map(|p| p.1 + p.2)
        .fold(f64::NEG_INFINITY, f64::max);
    // FID falls by orders of magnitude over the first rounds: a log axis keeps the late
    // rounds, where strategies differ, readable.
    if log_y && y0 > 0.0 {
        let lo = pts
            .iter()
            .map(|p| band_low(p.1, p.2, true))
            .fold(f64::INFINITY, f64::min);
        draw_on(
            root,
            series,
            label,
            true,
            x0..x1,
            // plotters labels a log axis from the first power of ten inside the range, so
            // start the range at one.
            (10f64.powf((lo * 0.9).log10().floor())..y1 * 1.1).log_scale(),
        )
    } else {
        // A flat series (every arm at class coverage 1.0) still gets a readable axis.
        let pad = ((y1 - y0) * 0.08).max(0.05 * y0.abs().max(y1.abs()).max(1e-3));
        draw_on(root, series, label, false, x0..x1, (y0 - pad)..(y1 + pad))
    }
}

fn draw_on<DB: DrawingBackend, Y>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    label: &str,
    log: bool,
    xs: std::ops::Range<f64>,
    ys: Y,
) -> Result<()>
where
    DB::ErrorType: 'static,
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("acquired images vs {label}"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(xs, ys)
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("acquired images")
        .y_desc(label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        // Enough labels that a log axis is labelled inside its lowest decade too, where
        // the strategies part.
        .y_labels(if log { 30 } else { 10 })
        .max_light_lines(2)
        .y_label_formatter(&|y| {
            if y.abs() >= 10.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for (i, line) in series.iter().enumerate() {
        let pts = &line.points;
        let c = if line.name == "random" {
            COLORS[0]
        } else {
            COLORS[1 + i % (COLORS.len() - 1)]
        };
        let low = |m: f64, sd: f64| band_low(m, sd, log);
        let upper = pts.iter().map(|&(x, m, sd)| (x, m + sd));
        let lower = pts.iter().rev().map(|&(x, m, sd)| (x, low(m, sd)));
        let band: Vec<(f64, f64)> = upper.chain(lower).collect();
        chart
            .draw_series(std::iter::once(Polygon::new(band, c.mix(0.15))))
            .map_err(|e| anyhow!("{e:?}"))?;
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|&(x, m, _)| (x, m)),
                c.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(line.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        // Markers and ± std bars at each evaluated budget: visible with a single point too.
        chart
            .draw_series(pts.iter().map(|&(x, m, sd)| {
                PathElement::new(vec![(x, low(m, sd)), (x, m + sd)], c.stroke_width(1))
            }))
            .map_err(|e| anyhow!("{e:?}"))?;
        chart
            .draw_series(
                pts.iter()
                    .map(|&(x, m, _)| Circle::new((x, m), 4, c.filled())),
            )
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// `log_y`: a log axis where every value is positive (FID).
pub fn line_chart_svg(path: &Path, series: &[Series], label: &str, log_y: bool) -> Result<()> {
    // plotters measures text with the registered font even when it writes SVG.
    register_font()?;
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    draw(root, series, label, log_y).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Registers the bundled font as "sans-serif": DejaVu Sans subset to the characters the
/// charts use (15 KB, `assets/DejaVuSans-subset.LICENSE`), so charts need no system font
/// and look the same on every machine. (In the browser plotters measures text with the
/// page's fonts and has nothing to register.)
#[cfg(target_arch = "wasm32")]
fn register_font() -> Result<()> {
    Ok(())
}

#[cfg(not(target_arch = "wasm32"))]
fn register_font() -> Result<()> {
    use std::sync::OnceLock;
    static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if !ok {
        bail!("the bundled chart font could not be loaded");
    }
    Ok(())
}

#[cfg(target_arch = "wasm32")]
pub fn line_chart_png(path: &Path, _: &[Series], _: &str, _: bool) -> Result<()> {
    bail!(
        "{}: PNG charts are written by native builds only",
        path.display()
    )
}

#[cfg(not(target_arch = "wasm32"))]
pub fn line_chart_png(path: &Path, series: &[Series], label: &str, log_y: bool) -> Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, (760, 440)).into_drawing_area();
    draw(root, series, label, log_y).map_err(|e| anyhow!("{}: {e}", path.display()))
}
