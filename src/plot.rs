//! Figures 1 and 6 as PNGs, rendered from the runs' `metrics.csv` files alone (no training state).
//! The font is embedded (DejaVu Sans), so no system fonts are needed.

use crate::config::{Preset, RunConfig, parse_group};
use crate::fsutil::subdirs;
use crate::imagenet_experiment::ImageNetRunConfig;
use crate::metrics::{MetricsRow, read_metrics};
use crate::models::NetSpec;
use crate::responses::{FIG7_NETS, ResponseRow, read_responses};
use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// One network's curves (its lowest seed).
#[derive(Debug, Clone)]
pub struct Curve {
    pub name: String,
    pub depth: usize,
    pub residual: bool,
    pub seed: u64,
    pub rows: Vec<MetricsRow>,
}

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Both calls can only fail on an invalid font, and these are the crate's own.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

/// The curves of every network of a run group (`runs/table6/<group>`), one seed each (the lowest
/// with a metrics file), plain nets first, by depth.
pub fn load_group(group_dir: &Path) -> Result<Vec<Curve>> {
    let mut curves = Vec::new();
    for net_dir in subdirs(group_dir)? {
        let mut seeds: Vec<(u64, PathBuf)> = subdirs(&net_dir)?
            .into_iter()
            .filter(|d| d.join("metrics.csv").is_file() && d.join("config.toml").is_file())
            .filter_map(|d| {
                let s = d.file_name()?.to_str()?.strip_prefix("seed")?.parse().ok()?;
                Some((s, d))
            })
            .collect();
        seeds.sort();
        let Some((seed, dir)) = seeds.into_iter().next() else { continue };
        let net = run_net(&dir.join("config.toml"))?;
        let rows = read_metrics(&dir.join("metrics.csv"))?;
        if rows.is_empty() {
            continue;
        }
        curves.push(Curve { name: net.name(), depth: net.depth(), residual: net.residual(), seed, rows });
    }
    curves.sort_by(|a, b| (a.residual, a.depth, &a.name).cmp(&(b.residual, b.depth, &b.name)));
    Ok(curves)
}

/// The network of a run folder's `config.toml`, CIFAR's or ImageNet's.
fn run_net(config: &Path) -> Result<NetSpec> {
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    if let Ok(c) = toml::from_str::<RunConfig>(&text) {
        return Ok(NetSpec::Cifar(c.net));
    }
    let c: ImageNetRunConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    Ok(NetSpec::ImageNet(c.net))
}

/// A colour per depth, the same in every panel (Okabe-Ito, readable with colour blindness).
pub fn color(depth: usize) -> RGBColor {
    match depth {
        18 | 20 => RGBColor(230, 159, 0),
        34 => RGBColor(0, 114, 178),
        32 => RGBColor(86, 180, 233),
        44 => RGBColor(0, 158, 115),
        56 => RGBColor(0, 114, 178),
        110 => RGBColor(0, 0, 0),
        1202 => RGBColor(213, 94, 0),
        50 => RGBColor(213, 94, 0),
        101 => RGBColor(204, 121, 167),
        152 => RGBColor(0, 0, 0),
        d => {
            let RGBAColor(r, g, b, _) = Palette99::pick(d).to_rgba();
            RGBColor(r, g, b)
        }
    }
}

/// The shortcut option of an ImageNet run's name (`resnet34-B`), if any.
fn shortcut_of(c: &Curve) -> Option<&str> {
    c.name.rsplit_once('-').map(|(_, o)| o).filter(|o| matches!(*o, "A" | "B" | "C"))
}

/// A curve's colour: by depth, and for ResNet-34 with options B and C (Table 3) their own.
fn curve_color(c: &Curve) -> RGBColor {
    match (c.depth, shortcut_of(c)) {
        (34, Some("B")) => RGBColor(86, 180, 233),
        (34, Some("C")) => RGBColor(0, 158, 115),
        (d, _) => color(d),
    }
}

/// Which error a line shows.
#[derive(Clone, Copy, PartialEq)]
enum Series {
    Train,
    Test,
    Val,
}

/// How a series is drawn in a panel.
#[derive(Clone, Copy)]
struct Line {
    series: Series,
    dashed: bool,
    width: u32,
    /// This line names the curve in the legend.
    legend: bool,
}

const fn line(series: Series, dashed: bool, width: u32, legend: bool) -> Line {
    Line { series, dashed, width, legend }
}

fn points(c: &Curve, s: Series) -> Vec<(f64, f64)> {
    c.rows
        .iter()
        .filter_map(|r| {
            let y = match s {
                Series::Train => Some(r.train_error),
                Series::Test => r.test_error,
                Series::Val => r.val_error,
            }?;
            Some((r.iteration as f64 / 1e4, y))
        })
        .collect()
}

/// The y range of a CIFAR figure: the paper's 0..20 % when every curve's test error ends below
/// 20 %, else up to the data's maximum (rounded up to 10 %), so that short or failing runs stay
/// visible.
fn y_max(curves: &[&Curve]) -> f64 {
    let last_test = |c: &&Curve| c.rows.iter().rev().find_map(|r| r.test_error);
    if curves.iter().all(|c| last_test(c).is_some_and(|e| e < 20.0)) {
        return 20.0;
    }
    data_max(curves)
}

/// The largest error any curve reaches, rounded up to 10 % (20..100).
fn data_max(curves: &[&Curve]) -> f64 {
    let m = curves
        .iter()
        .flat_map(|c| c.rows.iter().flat_map(|r| [Some(r.train_error), r.test_error, r.val_error]))
        .flatten();
    (m.fold(0f64, f64::max) / 10.0).ceil().clamp(2.0, 10.0) * 10.0
}

/// A tick label: at most 4 decimals, trailing zeros dropped (0.5, 1, 0.0025).
fn tick(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A panel: for each curve, its `lines`; x in 1e4 iterations.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    curves: &[&Curve],
    lines: &[Line],
    x_max: f64,
    y_max: f64,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing: {e:?}");
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .margin_right(30) // room for the last x tick's label
        .x_label_area_size(44)
        .y_label_area_size(54)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("iter. (1e4)")
        .y_desc("error (%)")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(RGBColor(235, 235, 235))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    if curves.is_empty() {
        area.draw(&Text::new(
            "not run yet",
            (area.dim_in_pixel().0 as i32 / 2 - 50, area.dim_in_pixel().1 as i32 / 2),
            ("sans-serif", 20),
        ))
        .map_err(err)?;
        return Ok(());
    }
    let clip = |pts: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        pts.into_iter().map(|(x, y)| (x, y.min(y_max))).collect()
    };
    for c in curves {
        let col = curve_color(c);
        // The shortcut option only where it tells two curves of one depth apart.
        let option = shortcut_of(c).filter(|_| curves.iter().filter(|o| o.depth == c.depth).count() > 1);
        for l in lines {
            let pts = clip(points(c, l.series));
            if pts.is_empty() {
                continue;
            }
            let kind = if c.residual { "ResNet" } else { "plain" };
            let label = match option {
                Some(o) => format!("{kind}-{} {o}", c.depth),
                None => format!("{kind}-{}", c.depth),
            };
            if l.dashed {
                chart
                    .draw_series(DashedLineSeries::new(pts, 6, 4, col.stroke_width(l.width)))
                    .map_err(err)?;
            } else {
                let anno = chart.draw_series(LineSeries::new(pts, col.stroke_width(l.width))).map_err(err)?;
                if l.legend {
                    anno.label(label)
                        .legend(move |(x, y)| PathElement::new([(x, y), (x + 22, y)], col.stroke_width(3)));
                }
            }
        }
    }
    chart
        .configure_series_labels()
        // The paper's place, unless the curves (short or failing runs) are high up there.
        .position(if y_max > 20.0 { SeriesLabelPosition::LowerLeft } else { SeriesLabelPosition::UpperRight })
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

fn dataset_label(group: &str) -> String {
    match parse_group(group) {
        Ok((ds, Preset::Full)) => pretty(ds).to_string(),
        Ok((ds, Preset::Quick)) => format!("{}, quick preset: not a reproduction", pretty(ds)),
        Err(_) => group.to_string(),
    }
}

fn pretty(ds: crate::data::DatasetName) -> &'static str {
    match ds {
        crate::data::DatasetName::Cifar10 => "CIFAR-10",
        crate::data::DatasetName::FashionMnist => "Fashion-MNIST",
    }
}

fn x_max(curves: &[&Curve]) -> f64 {
    let last = curves.iter().filter_map(|c| c.rows.last()).map(|r| r.iteration).max().unwrap_or(64_000);
    (last as f64 / 1e4).max(1e-4)
}

/// Figure 1: plain-20 vs plain-56, training error (left) and test error (right).
pub fn figure1(curves: &[Curve], group: &str, path: &Path) -> Result<()> {
    register_fonts();
    let sel: Vec<&Curve> =
        curves.iter().filter(|c| !c.residual && (c.depth == 20 || c.depth == 56)).collect();
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let (top, body) = root.split_vertically(44);
    top.titled(
        &format!("Figure 1 ({}): plain-20 vs plain-56", dataset_label(group)),
        ("sans-serif", 24).into_font().style(FontStyle::Bold),
    )
    .map_err(|e| anyhow!("{e:?}"))?;
    let panels = body.split_evenly((1, 2));
    let (xm, ym) = (x_max(&sel), y_max(&sel));
    panel(&panels[0], "training error", &sel, &[line(Series::Train, false, 2, true)], xm, ym)?;
    panel(&panels[1], "test error", &sel, &[line(Series::Test, false, 2, true)], xm, ym)?;
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Figure 6: plain nets (left), ResNets (middle), ResNet-110 vs 1202 (right); dashed training
/// error, bold test error.
pub fn figure6(curves: &[Curve], group: &str, path: &Path) -> Result<()> {
    register_fonts();
    // As in the paper, plain-110 (above 60% error) is left off the chart.
    let plain: Vec<&Curve> = curves.iter().filter(|c| !c.residual && c.depth <= 56).collect();
    let res: Vec<&Curve> = curves.iter().filter(|c| c.residual && c.depth <= 110).collect();
    let deep: Vec<&Curve> =
        curves.iter().filter(|c| c.residual && (c.depth == 110 || c.depth == 1202)).collect();
    let root = BitMapBackend::new(path, (1800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let (top, body) = root.split_vertically(44);
    top.titled(
        &format!("Figure 6 ({}): dashed training error, bold test error", dataset_label(group)),
        ("sans-serif", 24).into_font().style(FontStyle::Bold),
    )
    .map_err(|e| anyhow!("{e:?}"))?;
    let panels = body.split_evenly((1, 3));
    let all: Vec<&Curve> = curves.iter().collect();
    let xm = x_max(&all);
    let both = [line(Series::Train, true, 2, false), line(Series::Test, false, 3, true)];
    panel(&panels[0], "plain networks", &plain, &both, xm, y_max(&plain))?;
    panel(&panels[1], "ResNets", &res, &both, xm, y_max(&res))?;
    panel(&panels[2], "ResNet-110 vs ResNet-1202", &deep, &both, xm, y_max(&deep))?;
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Renders Figures 1 and 6 for every run group under `runs_dir` (`runs/table6`) into `plots_dir`,
/// as `fig1_<group>.png` and `fig6_<group>.png`. Returns the files written.
pub fn render_table6_figures(runs_dir: &Path, plots_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for group_dir in subdirs(runs_dir)? {
        let group = group_dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if parse_group(&group).is_err() {
            continue;
        }
        let curves = load_group(&group_dir)?;
        if curves.is_empty() {
            continue;
        }
        std::fs::create_dir_all(plots_dir).with_context(|| format!("creating {}", plots_dir.display()))?;
        let f1 = plots_dir.join(format!("fig1_{group}.png"));
        figure1(&curves, &group, &f1)?;
        let f6 = plots_dir.join(format!("fig6_{group}.png"));
        figure6(&curves, &group, &f6)?;
        written.extend([f1, f6]);
    }
    Ok(written)
}

/// Figure 4: ImageNet training (thin) and centre-crop validation (bold) error, plain-18/34 (left)
/// and ResNet-18/34 (right).
pub fn figure4(curves: &[Curve], group: &str, path: &Path) -> Result<()> {
    let pick = |residual: bool| -> Vec<&Curve> {
        curves.iter().filter(|c| c.residual == residual && (c.depth == 18 || c.depth == 34)).collect()
    };
    imagenet_panels("Figure 4", curves, group, [("plain", pick(false)), ("ResNet", pick(true))], path)
}

/// The training curves of Table 3's networks (the paper has no figure for them): ResNet-34 with
/// options A, B and C (left), the bottleneck ResNets 50/101/152 (right).
pub fn table3_curves(curves: &[Curve], group: &str, path: &Path) -> Result<()> {
    let pick = |deep: bool| -> Vec<&Curve> {
        curves.iter().filter(|c| c.residual && (c.depth >= 50) == deep).collect()
    };
    let panels = [("ResNet-34, shortcut options A/B/C", pick(false)), ("ResNet-50/101/152", pick(true))];
    imagenet_panels("Table 3's networks", curves, group, panels, path)
}

/// Two panels of ImageNet curves on common axes: thin training error, bold centre-crop
/// validation error.
fn imagenet_panels(
    what: &str,
    all: &[Curve],
    group: &str,
    panels: [(&str, Vec<&Curve>); 2],
    path: &Path,
) -> Result<()> {
    register_fonts();
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let (top, body) = root.split_vertically(44);
    let data = if group == "imagenet" { "ImageNet" } else { "ImageNet, quick preset: not a reproduction" };
    top.titled(
        &format!("{what} ({data}): thin training error, bold validation error (centre crop)"),
        ("sans-serif", 24).into_font().style(FontStyle::Bold),
    )
    .map_err(|e| anyhow!("{e:?}"))?;
    let areas = body.split_evenly((1, 2));
    let all: Vec<&Curve> = all.iter().collect();
    let (xm, ym) = (x_max(&all), data_max(&all));
    let lines = [line(Series::Train, false, 1, false), line(Series::Val, false, 3, true)];
    for (area, (title, curves)) in areas.iter().zip(panels) {
        panel(area, title, &curves, &lines, xm, ym)?;
    }
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Figure 4's networks: plain-18/34 and ResNet-18/34 with option A.
fn in_figure4(c: &Curve) -> bool {
    (c.depth == 18 || c.depth == 34) && (!c.residual || c.name.ends_with("-A"))
}

/// Renders the ImageNet figures for every run group under `runs_dir` (`runs/table2` or
/// `runs/table3`) into `plots_dir`: Figure 4 (`fig4_<group>.png`) for groups with plain and
/// residual 18/34 nets, and `table3_curves_<group>.png` for groups with Table 3's networks.
/// Returns the files written.
pub fn render_imagenet_figures(runs_dir: &Path, plots_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for group_dir in subdirs(runs_dir)? {
        let group = group_dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if !group.starts_with("imagenet") {
            continue;
        }
        let curves = load_group(&group_dir)?;
        let has_plain = curves.iter().any(|c| !c.residual);
        let table3 = curves.iter().any(|c| !in_figure4(c));
        if !has_plain && !table3 {
            continue;
        }
        std::fs::create_dir_all(plots_dir).with_context(|| format!("creating {}", plots_dir.display()))?;
        if has_plain {
            let f = plots_dir.join(format!("fig4_{group}.png"));
            figure4(&curves, &group, &f)?;
            written.push(f);
        }
        if table3 {
            let f = plots_dir.join(format!("table3_curves_{group}.png"));
            table3_curves(&curves, &group, &f)?;
            written.push(f);
        }
    }
    Ok(written)
}

/// Figure 7: the standard deviation of each 3x3 layer's response, in the networks' order (top) and
/// sorted in descending order (bottom); plain nets dashed, ResNets solid, a colour per depth.
pub fn figure7(rows: &[ResponseRow], group: &str, path: &Path) -> Result<()> {
    register_fonts();
    let mut nets: Vec<(String, usize, bool, Vec<f64>)> = Vec::new();
    for r in rows.iter().filter(|r| r.group == group) {
        match nets.iter_mut().find(|n| n.0 == r.net) {
            Some(n) => n.3.push(r.std),
            None => nets.push((r.net.clone(), r.depth, r.residual, vec![r.std])),
        }
    }
    nets.sort_by_key(|n| FIG7_NETS.iter().position(|x| *x == n.0));
    let root = BitMapBackend::new(path, (1100, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let (top, body) = root.split_vertically(44);
    top.titled(
        &format!("Figure 7 ({}): std of the 3x3 layers' responses", dataset_label(group)),
        ("sans-serif", 24).into_font().style(FontStyle::Bold),
    )
    .map_err(|e| anyhow!("{e:?}"))?;
    let panels = body.split_evenly((2, 1));
    let x_max = nets.iter().map(|n| n.3.len()).max().unwrap_or(1) as f64 + 1.0;
    let y_max = nets.iter().flat_map(|n| n.3.iter().copied()).fold(0f64, f64::max).max(1e-6) * 1.1;
    for (area, sorted) in panels.iter().zip([false, true]) {
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .margin_right(30)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(|e| anyhow!("drawing: {e:?}"))?;
        chart
            .configure_mesh()
            .x_desc(if sorted { "layer index (sorted by magnitude)" } else { "layer index (original)" })
            .y_desc("std")
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 18))
            .light_line_style(RGBColor(235, 235, 235))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()
            .map_err(|e| anyhow!("drawing: {e:?}"))?;
        for (_, depth, residual, stds) in &nets {
            let mut ys = stds.clone();
            if sorted {
                ys.sort_by(|a, b| b.total_cmp(a));
            }
            let pts: Vec<(f64, f64)> = ys.iter().enumerate().map(|(i, &y)| ((i + 1) as f64, y)).collect();
            let col = color(*depth);
            let label = format!("{}-{depth}", if *residual { "ResNet" } else { "plain" });
            let style = col.stroke_width(2);
            let anno = if *residual {
                chart.draw_series(LineSeries::new(pts, style)).map_err(|e| anyhow!("drawing: {e:?}"))?
            } else {
                chart
                    .draw_series(DashedLineSeries::new(pts, 6, 4, style))
                    .map_err(|e| anyhow!("drawing: {e:?}"))?
            };
            // A dashed (plain) or solid (ResNet) key: two segments, with or without a gap.
            let gap = if *residual { 0 } else { 6 };
            anno.label(label).legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new([(0, 0), (11 - gap / 2, 0)], col.stroke_width(3))
                    + PathElement::new([(11 + gap / 2, 0), (22, 0)], col.stroke_width(3))
            });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("drawing: {e:?}"))?;
    }
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Renders Figure 7 for every group of `<fig7_dir>/responses.csv` into `plots_dir`, as
/// `fig7_<group>.png`. Returns the files written.
pub fn render_fig7(fig7_dir: &Path, plots_dir: &Path) -> Result<Vec<PathBuf>> {
    let rows = read_responses(&fig7_dir.join("responses.csv"))?;
    let mut groups: Vec<&str> = rows.iter().map(|r| r.group.as_str()).collect();
    groups.sort();
    groups.dedup();
    let mut written = Vec::new();
    for group in groups {
        std::fs::create_dir_all(plots_dir).with_context(|| format!("creating {}", plots_dir.display()))?;
        let f = plots_dir.join(format!("fig7_{group}.png"));
        figure7(&rows, group, &f)?;
        written.push(f);
    }
    Ok(written)
}
