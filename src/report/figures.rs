//! Every figure as a PNG, rendered from the run store alone (configurations and `metrics.csv`,
//! no training state): Figures 1 and 6 (CIFAR), 4 and Table 3's curves (ImageNet), 7 (layer
//! responses), and the cross-check's curves against PyTorch. The font is embedded (DejaVu Sans), so no system fonts are needed.

use crate::data::DatasetName;
use crate::eval::responses::{ResponseRow, fig7_position, read_responses};
use crate::experiment::crosscheck::{CurveRow, Measured, Side, mean_curve};
use crate::experiment::{Group, Store, StoredRun};
use crate::models::{HeInit, NetSpec, Shortcut};
use crate::train::metrics::MetricsRow;
use anyhow::{Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// One network's curves (its lowest seed).
#[derive(Debug, Clone)]
pub struct Curve {
    pub net: NetSpec,
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

/// The curves of a group's networks (`runs` sorted as the store walks them), one seed each (the
/// lowest with metrics rows), plain nets first, by depth.
pub fn curves(runs: &[StoredRun]) -> Result<Vec<Curve>> {
    let mut curves: Vec<Curve> = Vec::new();
    for run in runs {
        let net = &run.config.net;
        if curves.iter().any(|c| &c.net == net) {
            continue;
        }
        let rows = run.dir.metrics()?;
        if rows.is_empty() {
            continue;
        }
        let (name, depth, residual) = (net.name(), net.depth(), net.residual());
        curves.push(Curve { net: net.clone(), name, depth, residual, seed: run.config.seed, rows });
    }
    Ok(curves)
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

/// A curve's colour: by depth, and for ResNet-34 with options B and C (Table 3) their own.
fn curve_color(c: &Curve) -> RGBColor {
    match (c.depth, c.net.named_option()) {
        (34, Some(Shortcut::B)) => RGBColor(86, 180, 233),
        (34, Some(Shortcut::C)) => RGBColor(0, 158, 115),
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

impl Line {
    /// Solid, `width` wide, naming its curve in the legend (the paper's bold curves).
    const fn bold(series: Series, width: u32) -> Line {
        Line { series, dashed: false, width, legend: true }
    }

    /// Dashed, 2 wide (the paper's training error beside bold test error).
    const fn dashed(series: Series) -> Line {
        Line { series, dashed: true, width: 2, legend: false }
    }

    /// Solid, 1 wide (the paper's thin training curves).
    const fn thin(series: Series) -> Line {
        Line { series, dashed: false, width: 1, legend: false }
    }
}

/// How an axis's ticks are labelled.
type Ticks = fn(&f64) -> String;

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A chart's frame: its caption, axes and how its labels read. Every figure family draws on one.
struct Axes<'a> {
    /// Over the panel, and its font size.
    caption: Option<(&'a str, u32)>,
    x: (f64, &'a str),
    y: (f64, &'a str),
    y_label_area: u32,
    label_size: u32,
    /// The axis descriptions' font size (plotters' default where none).
    desc_size: Option<u32>,
    /// Tick labels: the x axis's, the y axis's (plotters' defaults where none).
    ticks: Option<(Ticks, Ticks)>,
}

/// A chart on `area` framed as `a` says: ranges from 0, a light grid, the axes described.
fn chart<'a, DB: DrawingBackend + 'a>(
    area: &'a DrawingArea<DB, plotters::coord::Shift>,
    a: &Axes,
) -> Result<Chart<'a, DB>>
where
    DB::ErrorType: 'static,
{
    let mut builder = ChartBuilder::on(area);
    if let Some((caption, size)) = a.caption {
        builder.caption(caption, ("sans-serif", size));
    }
    let mut chart = builder
        .margin(12)
        .margin_right(30) // room for the last x tick's label
        .x_label_area_size(44)
        .y_label_area_size(a.y_label_area)
        .build_cartesian_2d(0f64..a.x.0, 0f64..a.y.0)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(a.x.1)
        .y_desc(a.y.1)
        .label_style(("sans-serif", a.label_size))
        .light_line_style(RGBColor(235, 235, 235));
    if let Some(size) = a.desc_size {
        mesh.axis_desc_style(("sans-serif", size));
    }
    if let Some((x, y)) = &a.ticks {
        mesh.x_label_formatter(x).y_label_formatter(y);
    }
    mesh.draw()?;
    Ok(chart)
}

/// The legend's box at `position`, as every figure has it.
fn legend<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>, position: SeriesLabelPosition) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
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
    let axes = Axes {
        caption: Some((title, 22)),
        x: (x_max, "iter. (1e4)"),
        y: (y_max, "error (%)"),
        y_label_area: 54,
        label_size: 16,
        desc_size: Some(18),
        ticks: Some((|v| tick(*v), |v| format!("{v:.0}"))),
    };
    let mut chart = chart(area, &axes)?;
    if curves.is_empty() {
        area.draw(&Text::new(
            "not run yet",
            (area.dim_in_pixel().0 as i32 / 2 - 50, area.dim_in_pixel().1 as i32 / 2),
            ("sans-serif", 20),
        ))?;
        return Ok(());
    }
    let clip = |pts: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        pts.into_iter().map(|(x, y)| (x, y.min(y_max))).collect()
    };
    for c in curves {
        let col = curve_color(c);
        for l in lines {
            let pts = clip(points(c, l.series));
            if pts.is_empty() {
                continue;
            }
            if l.dashed {
                chart.draw_series(DashedLineSeries::new(pts, 6, 4, col.stroke_width(l.width)))?;
            } else {
                let anno = chart.draw_series(LineSeries::new(pts, col.stroke_width(l.width)))?;
                if l.legend {
                    anno.label(legend_label(c, curves))
                        .legend(move |(x, y)| PathElement::new([(x, y), (x + 22, y)], col.stroke_width(3)));
                }
            }
        }
    }
    // The paper's place, unless the curves (short or failing runs) are high up there.
    legend(
        &mut chart,
        if y_max > 20.0 { SeriesLabelPosition::LowerLeft } else { SeriesLabelPosition::UpperRight },
    )
}

/// `plain-34`, `ResNet-34 B`: the shortcut option only where it tells two curves of one depth apart.
fn legend_label(c: &Curve, curves: &[&Curve]) -> String {
    let kind = if c.residual { "ResNet" } else { "plain" };
    let option = c.net.named_option().filter(|_| curves.iter().filter(|o| o.depth == c.depth).count() > 1);
    match option {
        Some(o) => format!("{kind}-{} {o}", c.depth),
        None => format!("{kind}-{}", c.depth),
    }
}

type Canvas<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// A white PNG canvas of `size` with `title` in bold across the top: (the whole, the area below).
fn canvas<'a>(path: &'a Path, size: (u32, u32), title: &str) -> Result<(Canvas<'a>, Canvas<'a>)> {
    register_fonts();
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(44);
    top.titled(title, ("sans-serif", 24).into_font().style(FontStyle::Bold))?;
    Ok((root, body))
}

fn x_max(curves: &[&Curve]) -> f64 {
    let last = curves.iter().filter_map(|c| c.rows.last()).map(|r| r.iteration).max().unwrap_or(64_000);
    (last as f64 / 1e4).max(1e-4)
}

/// Figure 1: plain-20 vs plain-56, training error (left) and test error (right).
pub fn figure1(curves: &[Curve], group: Group, path: &Path) -> Result<()> {
    let sel: Vec<&Curve> =
        curves.iter().filter(|c| !c.residual && (c.depth == 20 || c.depth == 56)).collect();
    let (root, body) =
        canvas(path, (1400, 560), &format!("Figure 1 ({}): plain-20 vs plain-56", group.describe()))?;
    let panels = body.split_evenly((1, 2));
    let (xm, ym) = (x_max(&sel), y_max(&sel));
    panel(&panels[0], "training error", &sel, &[Line::bold(Series::Train, 2)], xm, ym)?;
    panel(&panels[1], "test error", &sel, &[Line::bold(Series::Test, 2)], xm, ym)?;
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Figure 6: plain nets (left), ResNets (middle), ResNet-110 vs 1202 (right); dashed training
/// error, bold test error.
pub fn figure6(curves: &[Curve], group: Group, path: &Path) -> Result<()> {
    // As in the paper, plain-110 (above 60% error) is left off the chart.
    let plain: Vec<&Curve> = curves.iter().filter(|c| !c.residual && c.depth <= 56).collect();
    let res: Vec<&Curve> = curves.iter().filter(|c| c.residual && c.depth <= 110).collect();
    let deep: Vec<&Curve> =
        curves.iter().filter(|c| c.residual && (c.depth == 110 || c.depth == 1202)).collect();
    let (root, body) = canvas(
        path,
        (1800, 560),
        &format!("Figure 6 ({}): dashed training error, bold test error", group.describe()),
    )?;
    let panels = body.split_evenly((1, 3));
    let all: Vec<&Curve> = curves.iter().collect();
    let xm = x_max(&all);
    let both = [Line::dashed(Series::Train), Line::bold(Series::Test, 3)];
    panel(&panels[0], "plain networks", &plain, &both, xm, y_max(&plain))?;
    panel(&panels[1], "ResNets", &res, &both, xm, y_max(&res))?;
    panel(&panels[2], "ResNet-110 vs ResNet-1202", &deep, &both, xm, y_max(&deep))?;
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Figure 4: ImageNet training (thin) and centre-crop validation (bold) error, plain-18/34 (left)
/// and ResNet-18/34 (right).
pub fn figure4(curves: &[Curve], group: Group, path: &Path) -> Result<()> {
    let pick = |residual: bool| -> Vec<&Curve> {
        curves.iter().filter(|c| c.residual == residual && (c.depth == 18 || c.depth == 34)).collect()
    };
    imagenet_panels("Figure 4", curves, group, [("plain", pick(false)), ("ResNet", pick(true))], path)
}

/// The training curves of Table 3's networks (the paper has no figure for them): ResNet-34 with
/// options A, B and C (left), the bottleneck ResNets 50/101/152 (right).
pub fn table3_curves(curves: &[Curve], group: Group, path: &Path) -> Result<()> {
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
    group: Group,
    panels: [(&str, Vec<&Curve>); 2],
    path: &Path,
) -> Result<()> {
    let (root, body) = canvas(
        path,
        (1400, 560),
        &format!("{what} ({}): thin training error, bold validation error (centre crop)", group.describe()),
    )?;
    let areas = body.split_evenly((1, 2));
    let all: Vec<&Curve> = all.iter().collect();
    let (xm, ym) = (x_max(&all), data_max(&all));
    let lines = [Line::thin(Series::Train), Line::bold(Series::Val, 3)];
    for (area, (title, curves)) in areas.iter().zip(panels) {
        panel(area, title, &curves, &lines, xm, ym)?;
    }
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Figure 4's networks: plain-18/34 and ResNet-18/34 with option A.
fn in_figure4(c: &Curve) -> bool {
    (c.depth == 18 || c.depth == 34) && (!c.residual || c.net.shortcut() == Shortcut::A)
}

/// A figure's outcome, its error naming the file.
fn drawn(r: Result<()>, path: &Path) -> Result<()> {
    r.with_context(|| format!("drawing {}", path.display()))
}

/// Renders the figures of every group of a table's runs into `plots_dir`, as the group's data
/// calls for: Figures 1 and 6 (`fig1_<group>.png`, `fig6_<group>.png`) for CIFAR-style data;
/// Figure 4 (`fig4_<group>.png`, with plain and residual 18/34 nets) and Table 3's curves
/// (`table3_curves_<group>.png`, with Table 3's networks) for ImageNet. Returns the files written.
pub fn render_store(store: &Store, plots_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (group, runs) in store.groups()? {
        let curves = curves(&runs)?;
        if curves.is_empty() {
            continue;
        }
        std::fs::create_dir_all(plots_dir).with_context(|| format!("creating {}", plots_dir.display()))?;
        let file = |fig: &str| plots_dir.join(format!("{fig}_{group}.png"));
        if group.dataset != DatasetName::ImageNet {
            drawn(figure1(&curves, group, &file("fig1")), &file("fig1"))?;
            drawn(figure6(&curves, group, &file("fig6")), &file("fig6"))?;
            written.extend([file("fig1"), file("fig6")]);
            continue;
        }
        if curves.iter().any(|c| !c.residual) {
            drawn(figure4(&curves, group, &file("fig4")), &file("fig4"))?;
            written.push(file("fig4"));
        }
        if curves.iter().any(|c| !in_figure4(c)) {
            drawn(table3_curves(&curves, group, &file("table3_curves")), &file("table3_curves"))?;
            written.push(file("table3_curves"));
        }
    }
    Ok(written)
}

/// One network's layer stds in Figure 7.
struct Responses {
    depth: usize,
    residual: bool,
    stds: Vec<f64>,
}

/// The networks of `group` in `rows`, in Figure 7's order.
fn responses(rows: &[ResponseRow], group: Group) -> Vec<Responses> {
    let mut nets: Vec<(&str, Responses)> = Vec::new();
    for r in rows.iter().filter(|r| r.group == group.to_string()) {
        match nets.iter_mut().find(|(net, _)| *net == r.net) {
            Some((_, n)) => n.stds.push(r.std),
            None => {
                nets.push((&r.net, Responses { depth: r.depth, residual: r.residual, stds: vec![r.std] }))
            }
        }
    }
    let mut nets: Vec<Responses> = nets.into_iter().map(|(_, n)| n).collect();
    nets.sort_by_key(|n| fig7_position(n.residual, n.depth));
    nets
}

/// Figure 7: the standard deviation of each 3x3 layer's response, in the networks' order (top) and
/// sorted in descending order (bottom); plain nets dashed, ResNets solid, a colour per depth.
pub fn figure7(rows: &[ResponseRow], group: Group, path: &Path) -> Result<()> {
    let nets = responses(rows, group);
    let (root, body) = canvas(
        path,
        (1100, 900),
        &format!("Figure 7 ({}): std of the 3x3 layers' responses", group.describe()),
    )?;
    let panels = body.split_evenly((2, 1));
    let x_max = nets.iter().map(|n| n.stds.len()).max().unwrap_or(1) as f64 + 1.0;
    let y_max = nets.iter().flat_map(|n| n.stds.iter().copied()).fold(0f64, f64::max).max(1e-6) * 1.1;
    for (area, sorted) in panels.iter().zip([false, true]) {
        let axes = Axes {
            caption: None,
            x: (x_max, if sorted { "layer index (sorted by magnitude)" } else { "layer index (original)" }),
            y: (y_max, "std"),
            y_label_area: 60,
            label_size: 16,
            desc_size: Some(18),
            ticks: Some((|v| format!("{v:.0}"), |v| format!("{v:.1}"))),
        };
        let mut chart = chart(area, &axes)?;
        for n in &nets {
            let mut ys = n.stds.clone();
            if sorted {
                ys.sort_by(|a, b| b.total_cmp(a));
            }
            let pts: Vec<(f64, f64)> = ys.iter().enumerate().map(|(i, &y)| ((i + 1) as f64, y)).collect();
            let col = color(n.depth);
            let label = format!("{}-{}", if n.residual { "ResNet" } else { "plain" }, n.depth);
            let style = col.stroke_width(2);
            let anno = if n.residual {
                chart.draw_series(LineSeries::new(pts, style))?
            } else {
                chart.draw_series(DashedLineSeries::new(pts, 6, 4, style))?
            };
            // A dashed (plain) or solid (ResNet) key: two segments, with or without a gap.
            let gap = if n.residual { 0 } else { 6 };
            anno.label(label).legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new([(0, 0), (11 - gap / 2, 0)], col.stroke_width(3))
                    + PathElement::new([(11 + gap / 2, 0), (22, 0)], col.stroke_width(3))
            });
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Renders Figure 7 for every group of `<fig7_dir>/responses.csv` into `plots_dir`, as
/// `fig7_<group>.png`. Returns the files written.
pub fn render_fig7(responses_csv: &Path, plots_dir: &Path) -> Result<Vec<PathBuf>> {
    let rows = read_responses(responses_csv)?;
    let mut groups: Vec<Group> = rows.iter().filter_map(|r| r.group.parse().ok()).collect();
    groups.sort();
    groups.dedup();
    let mut written = Vec::new();
    for group in groups {
        std::fs::create_dir_all(plots_dir).with_context(|| format!("creating {}", plots_dir.display()))?;
        let f = plots_dir.join(format!("fig7_{group}.png"));
        drawn(figure7(&rows, group, &f), &f)?;
        written.push(f);
    }
    Ok(written)
}

/// The cross-check's figure for one network: per init, each side's mean training error over seeds
/// (line) with a band of ±1 std, and its mean test error at the checkpoints (dots); ours blue,
/// PyTorch orange.
pub fn crosscheck_figure(rows: &[CurveRow], net: &str, path: &Path) -> Result<()> {
    let mut inits: Vec<HeInit> = rows.iter().filter(|r| r.net == net).map(|r| r.init).collect();
    inits.sort();
    inits.dedup();
    let title = format!("Cross-check, {net}: ours (blue) and PyTorch (orange), mean ± 1 std over seeds");
    // Wide enough for the title with one panel.
    let (root, body) = canvas(path, ((700 * inits.len() as u32).max(1100), 560), &title)?;
    let x_max = rows.iter().map(|r| r.iteration).max().unwrap_or(1) as f64;
    let y_max =
        rows.iter().filter(|r| r.net == net).map(|r| r.train_error).fold(10f64, f64::max).min(100.0) * 1.05;
    for (area, init) in body.split_evenly((1, inits.len().max(1))).iter().zip(&inits) {
        let caption = format!("init = {init}");
        let axes = Axes {
            caption: Some((&caption, 20)),
            x: (x_max, "iteration"),
            y: (y_max, "error (%): training line, test dots"),
            y_label_area: 54,
            label_size: 14,
            desc_size: None,
            ticks: None,
        };
        let mut chart = chart(area, &axes)?;
        for (side, col) in [(Side::Ours, RGBColor(0, 114, 178)), (Side::PyTorch, RGBColor(230, 159, 0))] {
            let curve = |m| mean_curve(rows, (net, *init, side), m);
            let train = curve(Measured::Train);
            let band: Vec<(f64, f64)> = train
                .iter()
                .map(|p| (p.x, p.mean + p.std))
                .chain(train.iter().rev().map(|p| (p.x, p.mean - p.std)))
                .collect();
            chart.draw_series(std::iter::once(Polygon::new(band, col.mix(0.2).filled())))?;
            chart
                .draw_series(LineSeries::new(train.iter().map(|p| (p.x, p.mean)), col.stroke_width(2)))?
                .label(side.label())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 22, y)], col.stroke_width(3)));
            let test = curve(Measured::Test);
            chart.draw_series(test.iter().map(|p| Circle::new((p.x, p.mean), 6, col.filled())))?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `crosscheck_<net><suffix>.png` for every network of the cross-check's curves (the suffix names
/// swapped draws, see [`crate::experiment::Swap::suffix`]).
pub fn render_crosscheck(rows: &[CurveRow], plots_dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut nets: Vec<&str> = rows.iter().map(|r| r.net.as_str()).collect();
    nets.sort();
    nets.dedup();
    std::fs::create_dir_all(plots_dir).with_context(|| format!("creating {}", plots_dir.display()))?;
    let mut written = Vec::new();
    for net in nets {
        let f = plots_dir.join(format!("crosscheck_{net}{suffix}.png"));
        drawn(crosscheck_figure(rows, net, &f), &f)?;
        written.push(f);
    }
    Ok(written)
}
