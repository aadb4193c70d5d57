//! `REPORT.md`: every result under `runs/` beside the paper's, with the protocol and the
//! deviations from the paper's recipe, the figures under `plots/`, and for each run what it ran on.
//! Built from `runs/` and `plots/` alone; what has not been run is listed with its command.

use crate::experiment::{self, format_duration};
use crate::fsutil::subdirs;
use crate::imagenet_experiment::{self, ImageNetSummaryRow};
use crate::metrics::{FinalRecord, read_metrics};
use crate::responses::{FIG7_NETS, ResponseRow, read_responses};
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

fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "-".into())
}

fn pretty_net(name: &str) -> String {
    let (kind, rest) = match (name.strip_prefix("resnet"), name.strip_prefix("plain")) {
        (Some(r), _) => ("ResNet", r),
        (_, Some(r)) => ("plain", r),
        _ => return name.to_string(),
    };
    match rest.split_once('-') {
        Some((d, opt)) => format!("{kind}-{d} {opt}"),
        None => format!("{kind}-{rest}"),
    }
}

fn group_label(group: &str) -> String {
    if group.ends_with("-quick") {
        format!("`{group}`: quick preset, **not a reproduction** (a few iterations to check the pipeline)")
    } else {
        format!("`{group}`: the paper's recipe")
    }
}

fn table1(r: &mut Report) -> Result<()> {
    r.line("\n## Table 1: parameters and multiply-adds\n");
    let path = r.paths.runs.join("table1/table1.csv");
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
            crate::complexity::thousands(row.params),
            row.paper_params.map(|p| format!("{:.2}M", p / 1e6)).unwrap_or_else(|| "-".into()),
            row.mult_adds as f64,
            row.paper_mult_adds.map(|p| format!("{p:.1e}")).unwrap_or_else(|| "-".into()),
            row.mult_adds_diff_pct.map(|d| format!("{d:+.1}%")).unwrap_or_default(),
        ));
    }
    Ok(())
}

fn imagenet_rows(r: &mut Report, rows: &[&ImageNetSummaryRow]) {
    let mut group = "";
    for row in rows {
        if row.group != group {
            group = &row.group;
            r.line(format!("\n{}.\n", group_label(group)));
            r.line("| network | protocol | top-1 | top-5 | paper top-1 | paper top-5 | diff top-1 | images | iterations | BN re-estimated |");
            r.line("|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
        }
        r.line(format!(
            "| {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
            pretty_net(&row.net),
            row.protocol,
            row.top1_error,
            row.top5_error,
            fmt_opt(row.paper_top1, 2),
            fmt_opt(row.paper_top5, 2),
            row.diff_top1.map(|d| format!("{d:+.2}")).unwrap_or_default(),
            row.images,
            row.iterations,
            if row.bn_reestimated { "yes" } else { "no" },
        ));
    }
}

fn groups_of(rows: &[&ImageNetSummaryRow]) -> Vec<String> {
    let mut g: Vec<String> = rows.iter().map(|r| r.group.clone()).collect();
    g.dedup();
    g
}

const IMAGENET_DEVIATIONS: &str = "Deviations from the paper's recipe: the learning rate is divided by 10 at fixed \
     iterations (150k, 300k, 450k) rather than when the error plateaus; BN statistics are over the whole batch of \
     256 on one device (the paper: 32 per GPU); the mean subtracted is per channel (fb.resnet.torch's) rather than \
     per pixel.";

fn imagenet(r: &mut Report) -> Result<()> {
    let t2 = r.paths.runs.join("table2");
    let rows2 = if t2.is_dir() { imagenet_experiment::summarize(&t2)? } else { Vec::new() };
    r.line("\n## Table 2 and Figure 4: plain vs ResNet on ImageNet\n");
    r.line(
        "Top-1 and top-5 error (%) on the ILSVRC-2012 validation set, 10-crop testing (the four corners and the \
         centre of the image resized to shorter side 256, and their mirrors; softmax averaged). The diff is ours \
         minus the paper's top-1, for runs of the paper's recipe only.",
    );
    if rows2.is_empty() {
        r.line("\nNot run yet: `make reproduce-table2 DATA_DIR=/path/to/imagenet` (or `PRESET=quick` on a small folder).");
    } else {
        r.line(format!("\n{IMAGENET_DEVIATIONS}"));
        let sel: Vec<&ImageNetSummaryRow> = rows2.iter().filter(|x| x.protocol == "ten-crop").collect();
        imagenet_rows(r, &sel);
        for g in groups_of(&rows2.iter().collect::<Vec<_>>()) {
            r.figure(&format!("Figure 4 ({g})"), &format!("fig4_{g}.png"));
        }
    }
    let t3 = r.paths.runs.join("table3");
    let rows3 = if t3.is_dir() { imagenet_experiment::summarize(&t3)? } else { Vec::new() };
    let ten: Vec<&ImageNetSummaryRow> = rows3.iter().filter(|x| x.protocol == "ten-crop").collect();
    let multi: Vec<&ImageNetSummaryRow> = rows3.iter().filter(|x| x.protocol == "multi-scale").collect();
    r.line("\n## Table 3: shortcut options and deeper ResNets on ImageNet\n");
    r.line(
        "10-crop top-1 and top-5 error (%); ResNet-34 with shortcut options A, B and C, and ResNet-50/101/152 \
         (option B, bottleneck stride in the first 1x1 conv as in the paper's release).",
    );
    if ten.is_empty() {
        r.line("\nNot run yet: `make reproduce-table3 DATA_DIR=/path/to/imagenet` (or `PRESET=quick`).");
    } else {
        r.line(format!("\n{IMAGENET_DEVIATIONS}"));
        imagenet_rows(r, &ten);
        for g in groups_of(&ten) {
            r.figure(
                &format!("Training curves of Table 3's networks ({g})"),
                &format!("table3_curves_{g}.png"),
            );
        }
    }
    r.line("\n## Table 4: multi-scale testing on ImageNet\n");
    r.line(
        "Fully-convolutional testing: the whole image at shorter sides 224, 256, 384, 480 and 640, and mirrored, \
         softmax averaged; top-1 and top-5 error (%). The paper gives ResNet-34 B/C and 50/101/152.",
    );
    if multi.is_empty() {
        r.line("\nNot run yet: `make reproduce-table3` runs it after Table 3's tests.");
    } else {
        imagenet_rows(r, &multi);
    }
    Ok(())
}

fn table6(r: &mut Report) -> Result<()> {
    let t6 = r.paths.runs.join("table6");
    let rows = experiment::summarize(&t6)?;
    r.line("\n## Table 6 and Figures 1 and 6: CIFAR-10 depth sweep\n");
    r.line(
        "Test error (%) of the last iteration's weights on the 10,000 test images (no model selection on the test \
         set); several seeds as best (mean±std), as the paper reports ResNet-110. The paper gives no plain-net \
         numbers (Figure 6 only). The diff is our best minus the paper's, for CIFAR-10 with the paper's recipe \
         only.\n\nDeviations from the paper's recipe: pixels are scaled to [0, 1] before the per-pixel mean is \
         subtracted; BN statistics are over the whole batch of 128 on one device (the paper: two GPUs of 64); \
         the fc layer's initialisation, which the paper does not give, is PyTorch's default. On Fashion-MNIST \
         (28x28x1) the paper's column is for reference only.",
    );
    if rows.is_empty() {
        r.line("\nNot run yet: `make reproduce-table6` (or `DATASET=fashion-mnist PRESET=quick` for a CPU).");
        return Ok(());
    }
    let mut group = String::new();
    let mut groups = Vec::new();
    for row in &rows {
        if row.group != group {
            group = row.group.clone();
            groups.push(group.clone());
            r.line(format!("\n{}; test error over {} test images.\n", group_label(&group), row.test_images));
            r.line("| network | seeds | ours | paper | diff | iterations | time per run | device |");
            r.line("|---|---:|---:|---:|---:|---:|---:|---|");
        }
        let kind = if row.residual { "ResNet" } else { "plain" };
        r.line(format!(
            "| {kind}-{} | {} | {} | {} | {} | {} | {} | {} |",
            row.depth,
            row.seeds,
            row.ours,
            if row.paper.is_empty() { "-" } else { &row.paper },
            row.diff.map(|d| format!("{d:+.2}")).unwrap_or_default(),
            row.iterations,
            format_duration(row.seconds_per_run),
            row.device
        ));
    }
    for g in groups {
        r.figure(&format!("Figure 1 ({g})"), &format!("fig1_{g}.png"));
        r.figure(&format!("Figure 6 ({g})"), &format!("fig6_{g}.png"));
    }
    Ok(())
}

fn fig7(r: &mut Report) -> Result<()> {
    let rows = read_responses(&r.paths.runs.join("fig7/responses.csv"))?;
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
    let mut groups: Vec<&str> = rows.iter().map(|x| x.group.as_str()).collect();
    groups.sort();
    groups.dedup();
    for g in groups {
        r.line(format!("\n{}.\n", group_label(g)));
        r.line("| network | seed | 3x3 layers | mean std | largest std | test images |");
        r.line("|---|---:|---:|---:|---:|---:|");
        for net in FIG7_NETS {
            let sel: Vec<&ResponseRow> = rows.iter().filter(|x| x.group == g && x.net == net).collect();
            if sel.is_empty() {
                continue;
            }
            let mean = sel.iter().map(|x| x.std).sum::<f64>() / sel.len() as f64;
            let max = sel.iter().map(|x| x.std).fold(0f64, f64::max);
            r.line(format!(
                "| {} | {} | {} | {mean:.3} | {max:.3} | {} |",
                pretty_net(net),
                sel[0].seed,
                sel.len(),
                sel[0].images
            ));
        }
        r.figure(&format!("Figure 7 ({g})"), &format!("fig7_{g}.png"));
    }
    Ok(())
}

/// Every run folder (`<table>/<group>/<net>/seed<k>`) under `runs`.
fn run_dirs(runs: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for table in ["table6", "table2", "table3"] {
        for group in subdirs(&runs.join(table))? {
            let mut nets = subdirs(&group)?;
            nets.sort_by_cached_key(|d| {
                imagenet_experiment::table_order(&d.file_name().unwrap_or_default().to_string_lossy())
            });
            for net in nets {
                for seed in subdirs(&net)? {
                    if seed.join("config.toml").is_file() {
                        out.push((table.to_string(), seed));
                    }
                }
            }
        }
    }
    Ok(out)
}

fn runs_section(r: &mut Report) -> Result<()> {
    r.line("\n## Runs\n");
    let dirs = run_dirs(&r.paths.runs)?;
    if dirs.is_empty() {
        r.line("No training runs yet.");
        return Ok(());
    }
    r.line("| table | run | dataset | seed | iterations | wall time | device | torch | commit | finished |");
    r.line("|---|---|---|---:|---:|---:|---|---|---|---|");
    for (table, dir) in dirs {
        let rel = dir.strip_prefix(&r.paths.runs).unwrap_or(&dir).display().to_string();
        let fin = dir.join("final.json");
        if fin.is_file() {
            let f = FinalRecord::read(&fin)?;
            r.line(format!(
                "| {table} | `{rel}` | {}{} | {} | {} | {} | {} | {} | {} | {} |",
                f.dataset,
                if f.preset == "quick" { " (quick)" } else { "" },
                f.seed,
                f.iterations,
                format_duration(f.seconds),
                f.device,
                f.torch,
                f.commit,
                f.finished
            ));
        } else {
            let metrics = dir.join("metrics.csv");
            let last = if metrics.is_file() { read_metrics(&metrics)?.last().cloned() } else { None };
            let at = last.map(|m| format!("at {} ({})", m.iteration, format_duration(m.seconds)));
            r.line(format!(
                "| {table} | `{rel}` | | | {} | | | | | not finished |",
                at.unwrap_or_else(|| "not started".into())
            ));
        }
    }
    Ok(())
}

/// The report's Markdown.
pub fn build_report(paths: &ReportPaths) -> Result<String> {
    let mut r = Report { paths, md: String::new(), missing_figures: Vec::new() };
    r.line("# resnet-repro: results beside the paper\n");
    r.line(format!(
        "He, Zhang, Ren and Sun, *Deep Residual Learning for Image Recognition* (arXiv 1512.03385), reproduced \
         with resnet-repro. Generated {} from `{}` and `{}` by `make report`; every number below is read from \
         the runs' files, and the per-run details (device, torch, commit) are at the end. Rows marked quick \
         are pipeline checks, not reproductions.",
        crate::bench::utc_now(),
        paths.runs.display(),
        paths.plots.display()
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
