//! `REPORT.md`: every result under `runs/` beside the paper's, with the protocols and the
//! deviations from the paper's recipe (read from the runs' configurations), the figures under
//! `plots/`, and for each run what it ran on. Built from the run store and `plots/` alone; what has
//! not been run is listed with its command. The tables are the summaries' own renderer's.

use crate::eval::responses::{FIG7_NETS, ResponseRow, read_responses};
use crate::experiment::store::{Runs, Table};
use crate::experiment::summary::{self, SummaryRow, format_duration};
use crate::experiment::{Group, Preset};
use crate::paper::Measure;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

/// Where the report reads and writes.
#[derive(Debug, Clone)]
pub struct ReportPaths {
    /// `runs/`
    pub runs: PathBuf,
    /// `plots/`
    pub plots: PathBuf,
    /// `REPORT.md`; image links are relative to its folder.
    pub out: PathBuf,
}

/// A row of `runs/table1/table1.csv`.
#[derive(Debug, Clone, Deserialize)]
struct Table1Row {
    model: String,
    input: String,
    params: i64,
    mult_adds: u64,
    paper_params: Option<f64>,
    paper_mult_adds: Option<f64>,
    mult_adds_diff_pct: Option<f64>,
}

/// `target` relative to the folder `base` (both relative to the working directory, or both
/// absolute), with `/` separators as Markdown wants.
fn relative(target: &Path, base: &Path) -> String {
    let abs = |p: &Path| -> Vec<String> {
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        };
        let mut parts: Vec<String> = Vec::new();
        for c in p.components() {
            match c {
                Component::ParentDir => {
                    parts.pop();
                }
                Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                _ => {}
            }
        }
        parts
    };
    let (t, b) = (abs(target), abs(base));
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out: Vec<String> = vec!["..".to_string(); b.len() - common];
    out.extend(t[common..].iter().cloned());
    out.join("/")
}

struct Report<'a> {
    paths: &'a ReportPaths,
    runs: Runs,
    md: String,
    /// Figures with results but no image yet.
    missing_figures: Vec<String>,
}

impl Report<'_> {
    fn line(&mut self, s: impl AsRef<str>) {
        self.md.push_str(s.as_ref());
        self.md.push('\n');
    }

    /// Embeds `plots/<file>` if it exists; otherwise notes it as not rendered (`make plots` renders
    /// every figure from the runs).
    fn figure(&mut self, title: &str, file: &str) {
        let path = self.paths.plots.join(file);
        if path.is_file() {
            let base =
                self.paths.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let link = relative(&path, base);
            self.line(format!("\n![{title}]({link})\n"));
        } else {
            self.line(format!("\n{title}: not rendered yet (`make plots`).\n"));
            self.missing_figures.push(title.to_string());
        }
    }
}

fn table1(r: &mut Report) -> Result<()> {
    r.line("\n## Table 1: parameters and multiply-adds\n");
    let path = r.runs.table1_csv();
    if !path.is_file() {
        r.line("Not run yet: `make reproduce-table1` (seconds, no training).");
        return Ok(());
    }
    let mut reader = csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
    let rows: Vec<Table1Row> = reader
        .deserialize()
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    r.line(
        "Counted from the built networks (parameters from their variables, multiply-adds of convs and the fc \
         layer from their shapes). The paper prints FLOPs rounded down to one decimal; rows without a paper \
         figure describe architectures the paper gives none for.\n",
    );
    r.line("| model | input | params | paper params | mult-adds | paper mult-adds | diff |");
    r.line("|---|---|---:|---:|---:|---:|---:|");
    for row in &rows {
        r.line(format!(
            "| {} | {} | {} | {} | {:.3e} | {} | {} |",
            row.model,
            row.input,
            crate::experiment::table1::thousands(row.params),
            row.paper_params.map(|p| format!("{:.2}M", p / 1e6)).unwrap_or_else(|| "-".into()),
            row.mult_adds as f64,
            row.paper_mult_adds.map(|p| format!("{p:.1e}")).unwrap_or_else(|| "-".into()),
            row.mult_adds_diff_pct.map(|d| format!("{d:+.1}%")).unwrap_or_default(),
        ));
    }
    Ok(())
}

/// A table's results for some measures: the deviations of its runs' recipes, then the summary
/// tables; `None` if nothing is measured that way yet.
fn results(r: &mut Report, table: Table, measures: &[Measure]) -> Result<Option<Vec<Group>>> {
    let runs = r.runs.table(table).runs()?;
    let rows: Vec<SummaryRow> =
        summary::summarize(&runs)?.into_iter().filter(|x| measures.contains(&x.measure)).collect();
    if rows.is_empty() {
        return Ok(None);
    }
    r.md.push_str(&summary::deviations_markdown(&runs));
    r.md.push_str(&summary::markdown(&rows, "###"));
    let mut groups: Vec<Group> = rows.iter().map(|x| x.group).collect();
    groups.dedup();
    Ok(Some(groups))
}

fn imagenet(r: &mut Report) -> Result<()> {
    r.line("\n## Table 2 and Figure 4: plain vs ResNet on ImageNet\n");
    r.line(
        "Top-1 (and top-5) error (%) on the ILSVRC-2012 validation set, 10-crop testing (the four corners and \
         the centre of the image resized to shorter side 256, and their mirrors; softmax averaged).",
    );
    match results(r, Table::Table2, &[Measure::TenCrop])? {
        None => r.line(
            "\nNot run yet: `make reproduce-table2 DATA_DIR=/path/to/imagenet` (or `PRESET=quick` on a small folder).",
        ),
        Some(groups) => groups.iter().for_each(|g| r.figure(&format!("Figure 4 ({g})"), &format!("fig4_{g}.png"))),
    }
    r.line("\n## Table 3: shortcut options and deeper ResNets on ImageNet\n");
    r.line(
        "10-crop top-1 and top-5 error (%); ResNet-34 with shortcut options A, B and C, and ResNet-50/101/152 \
         (option B, bottleneck stride in the first 1x1 conv as in the paper's release).",
    );
    match results(r, Table::Table3, &[Measure::TenCrop])? {
        None => {
            r.line("\nNot run yet: `make reproduce-table3 DATA_DIR=/path/to/imagenet` (or `PRESET=quick`).")
        }
        Some(groups) => groups.iter().for_each(|g| {
            r.figure(
                &format!("Training curves of Table 3's networks ({g})"),
                &format!("table3_curves_{g}.png"),
            )
        }),
    }
    r.line("\n## Table 4: multi-scale testing on ImageNet\n");
    r.line(
        "Fully-convolutional testing: the whole image at shorter sides 224, 256, 384, 480 and 640, and mirrored, \
         softmax averaged; top-1 and top-5 error (%). The paper gives ResNet-34 B/C and 50/101/152.",
    );
    if results(r, Table::Table3, &[Measure::MultiScale])?.is_none() {
        r.line("\nNot run yet: `make reproduce-table3` runs it after Table 3's tests.");
    }
    Ok(())
}

fn table6(r: &mut Report) -> Result<()> {
    r.line("\n## Table 6 and Figures 1 and 6: CIFAR-10 depth sweep\n");
    r.line(
        "Test error (%) of the last iteration's weights on the test images (no model selection on the test set); \
         several seeds as best (mean±std), as the paper reports ResNet-110. The paper gives no plain-net numbers \
         (Figure 6 only). The diff is our best minus the paper's, for CIFAR-10 with the paper's recipe only.",
    );
    match results(r, Table::Table6, &[Measure::Test])? {
        None => r.line(
            "\nNot run yet: `make reproduce-table6` (or `DATASET=fashion-mnist PRESET=quick` for a CPU).",
        ),
        Some(groups) => {
            for g in groups {
                r.figure(&format!("Figure 1 ({g})"), &format!("fig1_{g}.png"));
                r.figure(&format!("Figure 6 ({g})"), &format!("fig6_{g}.png"));
            }
        }
    }
    Ok(())
}

fn fig7(r: &mut Report) -> Result<()> {
    let rows = read_responses(&r.runs.responses_csv())?;
    r.line("\n## Figure 7: standard deviations of the layer responses\n");
    r.line(
        "The std of each 3x3 layer's response (its BN output, before the ReLU or the addition) over every value it \
         takes on the test set, BN in inference mode, for the first seed of each Table 6 network. The paper's \
         finding: ResNets' responses are generally smaller than the plain nets', and the deeper ResNet's smaller \
         still.",
    );
    if rows.is_empty() {
        r.line("\nNot run yet: `make reproduce-fig7` (after or instead of `make reproduce-table6`; it trains what is missing).");
        return Ok(());
    }
    let mut groups: Vec<Group> = rows.iter().filter_map(|x| x.group.parse().ok()).collect();
    groups.sort();
    groups.dedup();
    for g in groups {
        r.line(format!("\n{}.\n", group_label(g)));
        r.line("| network | seed | 3x3 layers | mean std | largest std | test images |");
        r.line("|---|---:|---:|---:|---:|---:|");
        for (residual, depth) in FIG7_NETS {
            let sel: Vec<&ResponseRow> = rows
                .iter()
                .filter(|x| x.group == g.to_string() && x.residual == residual && x.depth == depth)
                .collect();
            if sel.is_empty() {
                continue;
            }
            let mean = sel.iter().map(|x| x.std).sum::<f64>() / sel.len() as f64;
            let max = sel.iter().map(|x| x.std).fold(0f64, f64::max);
            let kind = if residual { "ResNet" } else { "plain" };
            r.line(format!(
                "| {kind}-{depth} | {} | {} | {mean:.3} | {max:.3} | {} |",
                sel[0].seed,
                sel.len(),
                sel[0].images
            ));
        }
        r.figure(&format!("Figure 7 ({g})"), &format!("fig7_{g}.png"));
    }
    Ok(())
}

fn group_label(g: Group) -> String {
    match g.preset {
        Preset::Quick => {
            format!(
                "`{g}`: quick preset, **not a reproduction** (a shortened schedule to check the pipeline)"
            )
        }
        Preset::Full => format!("`{g}`: the paper's recipe"),
    }
}

fn runs_section(r: &mut Report) -> Result<()> {
    r.line("\n## Runs\n");
    let mut lines = Vec::new();
    for table in [Table::Table6, Table::Table2, Table::Table3] {
        let store = r.runs.table(table);
        for run in store.runs()? {
            let rel = run.dir.path.strip_prefix(&r.runs.root).unwrap_or(&run.dir.path).display().to_string();
            let t = table.dir_name();
            lines.push(match run.dir.final_record()? {
                Some(f) => format!(
                    "| {t} | `{rel}` | {}{} | {} | {} | {} | {} | {} | {} | {} |",
                    f.dataset,
                    if f.preset == Preset::Quick { " (quick)" } else { "" },
                    f.seed,
                    f.iterations,
                    format_duration(f.seconds),
                    match f.precision {
                        crate::train::Precision::Fp32 => f.device.clone(),
                        p => format!("{}, {p}", f.device),
                    },
                    f.torch,
                    f.commit,
                    f.finished
                ),
                None => {
                    let last = run.dir.metrics()?.last().cloned();
                    let at = last.map(|m| format!("at {} ({})", m.iteration, format_duration(m.seconds)));
                    format!(
                        "| {t} | `{rel}` | | | {} | | | | | not finished |",
                        at.unwrap_or_else(|| "not started".into())
                    )
                }
            });
        }
    }
    if lines.is_empty() {
        r.line("No training runs yet.");
        return Ok(());
    }
    r.line("| table | run | dataset | seed | iterations | wall time | device | torch | commit | finished |");
    r.line("|---|---|---|---:|---:|---:|---|---|---|---|");
    lines.into_iter().for_each(|l| r.line(l));
    Ok(())
}

/// The report's Markdown.
pub fn build_report(paths: &ReportPaths) -> Result<String> {
    let runs = Runs::new(&paths.runs);
    let mut r = Report { paths, runs, md: String::new(), missing_figures: Vec::new() };
    r.line("# resnet-repro: results beside the paper\n");
    r.line(format!(
        "He, Zhang, Ren and Sun, *Deep Residual Learning for Image Recognition* (arXiv 1512.03385), reproduced \
         with resnet-repro. Generated {} from `{}` and `{}` by `make report`; every number below is read from \
         the runs' files, and the per-run details (device, torch, commit) are at the end. Rows marked quick \
         are pipeline checks, not reproductions.\n\n{}",
        crate::env::utc_now(),
        paths.runs.display(),
        paths.plots.display(),
        summary::MEASURES
    ));
    table1(&mut r)?;
    imagenet(&mut r)?;
    table6(&mut r)?;
    fig7(&mut r)?;
    runs_section(&mut r)?;
    if !r.missing_figures.is_empty() {
        let _ = write!(
            r.md,
            "\nFigures with results but no image yet ({}): `make plots` renders them.\n",
            r.missing_figures.join(", ")
        );
    }
    Ok(r.md)
}

/// Builds the report and writes it to `paths.out`.
pub fn write_report(paths: &ReportPaths) -> Result<String> {
    let md = build_report(paths)?;
    if let Some(dir) = paths.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::fsutil::write_atomic(&paths.out, md.as_bytes())?;
    Ok(md)
}
