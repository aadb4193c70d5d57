//! Table 1: parameters and multiply-adds of every network, counted from the built networks (parameters
//! from their variables, multiply-adds from their layers' shapes), beside the paper's figures.

use crate::models::{BottleneckStride, CifarNet, ImageNetNet, Shortcut, count_parameters};
use anyhow::{Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use tch::{Device, nn};

pub use crate::models::NetSpec;

impl NetSpec {
    /// (trainable parameters, multiply-adds per image at the configured input size), from a network
    /// built on the CPU.
    pub fn measure(&self) -> Result<(i64, u64)> {
        tch::no_grad(|| {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = self.build(&vs.root())?;
            Ok((count_parameters(&vs), net.mult_adds()))
        })
    }
}

/// One row of Table 1.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub family: &'static str,
    pub model: String,
    /// `-` for plain nets.
    pub shortcut: String,
    /// Bottleneck stride placement (`1x1` paper, `3x3` v1.5); `-` for basic blocks.
    pub bottleneck_stride: String,
    /// Input the multiply-adds are for, e.g. `3x224x224`.
    pub input: String,
    pub params: i64,
    pub mult_adds: u64,
    /// The paper's parameter count (Table 6 prints them for the CIFAR ResNets), where it gives one.
    pub paper_params: Option<f64>,
    /// The paper's FLOPs (Table 1, Fig. 3), where they describe this exact architecture.
    pub paper_mult_adds: Option<f64>,
    /// Relative difference of `mult_adds` from `paper_mult_adds`, in percent.
    pub mult_adds_diff_pct: Option<f64>,
    pub note: String,
}

/// The networks of Table 1, in the order the table lists them.
pub fn table1_specs() -> Vec<NetSpec> {
    let mut specs = Vec::new();
    for depth in [18, 34] {
        specs.push(NetSpec::ImageNet(ImageNetNet::plain(depth)));
        for s in [Shortcut::A, Shortcut::B, Shortcut::C] {
            specs.push(NetSpec::ImageNet(ImageNetNet::resnet(depth, s)));
        }
    }
    for depth in [50, 101, 152] {
        for placement in [BottleneckStride::FirstConv1x1, BottleneckStride::Conv3x3] {
            let net = ImageNetNet { bottleneck_stride: placement, ..ImageNetNet::resnet(depth, Shortcut::B) };
            specs.push(NetSpec::ImageNet(net));
        }
    }
    for depth in [20, 32, 44, 56, 110, 1202] {
        specs.push(NetSpec::Cifar(CifarNet::plain(depth)));
        specs.push(NetSpec::Cifar(CifarNet::resnet(depth)));
    }
    specs
}

/// Builds each network, counts it and sets the paper's figures beside it. `progress` is called with
/// each network's name before it is built (ResNet-152 and ResNet-1202 take a moment).
pub fn table1_rows(specs: &[NetSpec], mut progress: impl FnMut(&str)) -> Result<Vec<Row>> {
    specs
        .iter()
        .map(|spec| {
            progress(&spec.name());
            let (params, mult_adds) = spec.measure().with_context(|| format!("building {}", spec.name()))?;
            let row = match spec {
                NetSpec::ImageNet(n) => Row {
                    family: "imagenet",
                    model: n.name(),
                    shortcut: if n.residual { n.shortcut.to_string() } else { "-".into() },
                    bottleneck_stride: if n.is_bottleneck() {
                        n.bottleneck_stride.to_string()
                    } else {
                        "-".into()
                    },
                    input: format!("3x{0}x{0}", n.image_size),
                    params,
                    mult_adds,
                    paper_params: None,
                    paper_mult_adds: crate::paper::table1_mult_adds(n),
                    mult_adds_diff_pct: None,
                    note: if n.is_bottleneck() && n.bottleneck_stride == BottleneckStride::Conv3x3 {
                        "torchvision's v1.5 placement, not the paper's".into()
                    } else if n.residual && n.shortcut == Shortcut::C {
                        "every shortcut a projection".into()
                    } else {
                        String::new()
                    },
                },
                NetSpec::Cifar(n) => Row {
                    family: "cifar",
                    model: n.name(),
                    shortcut: if n.residual { n.shortcut.to_string() } else { "-".into() },
                    bottleneck_stride: "-".into(),
                    input: format!("{0}x{1}x{1}", n.in_channels, n.image_size),
                    params,
                    mult_adds,
                    paper_params: crate::paper::table6_params(n),
                    paper_mult_adds: None,
                    mult_adds_diff_pct: None,
                    note: String::new(),
                },
            };
            let diff = row.paper_mult_adds.map(|p| 100.0 * (row.mult_adds as f64 - p) / p);
            Ok(Row { mult_adds_diff_pct: diff, ..row })
        })
        .collect()
}

pub fn write_csv(rows: &[Row], path: &Path) -> Result<()> {
    crate::fsutil::write_csv(path, rows)
}

/// `11,689,512`
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `3.664e9`, `40.6M`: multiply-adds the way the paper prints them.
pub fn format_mult_adds(m: f64) -> String {
    if m >= 1e9 { format!("{:.3}e9", m / 1e9) } else { format!("{:.1}M", m / 1e6) }
}

/// Table 1 as Markdown.
pub fn markdown(rows: &[Row]) -> String {
    let mut md = String::from(
        "| model | shortcut | bottleneck stride | input | params | mult-adds | paper params | paper mult-adds | diff | note |\n\
         |---|---|---|---|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let paper_params = r.paper_params.map(|p| format!("{:.2}M", p / 1e6)).unwrap_or_default();
        let paper_ma = r.paper_mult_adds.map(|p| format!("{:.1}e9", p / 1e9)).unwrap_or_default();
        let diff = r.mult_adds_diff_pct.map(|d| format!("{d:+.1}%")).unwrap_or_default();
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.model,
            r.shortcut,
            r.bottleneck_stride,
            r.input,
            thousands(r.params),
            format_mult_adds(r.mult_adds as f64),
            paper_params,
            paper_ma,
            diff,
            r.note
        )
        .unwrap();
    }
    md
}
