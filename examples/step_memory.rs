//! Memory of one ImageNet training step, measured on the CPU: the process's peak resident memory
//! (Linux `VmHWM`) after two SGD steps of a network at two batch sizes, and the straight line
//! through them extrapolated to the paper's batch of 256. Autograd keeps the same tensors on any
//! device, so this is what a GPU needs too, before the CUDA context and cuDNN's workspaces.
//!
//! cargo run --release --example step_memory -- resnet50 16 32

use anyhow::{Context, Result, bail};
use resnet_repro::models::{ImageNetNet, NetSpec, Shortcut};
use resnet_repro::train::{Layout, SgdSettings, Trainer};
use std::process::Command;
use tch::{Device, Kind, Tensor};

fn peak_rss_mib() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM in /proc/self/status")?;
    let kib: f64 = line.split_whitespace().nth(1).context("VmHWM without a value")?.parse()?;
    Ok(kib / 1024.0)
}

fn net(name: &str) -> Result<NetSpec> {
    // The paper's shortcuts: option A for the basic-block nets, B for the bottleneck ones.
    let depth_at_least_50 =
        name.trim_start_matches(char::is_alphabetic).parse::<usize>().is_ok_and(|d| d >= 50);
    let shortcut = if depth_at_least_50 { Shortcut::B } else { Shortcut::A };
    Ok(NetSpec::ImageNet(ImageNetNet::from_arch(name, shortcut)?))
}

/// One measurement, in this process: peak MiB after two steps at `batch`.
fn measure(name: &str, batch: i64) -> Result<f64> {
    let mut trainer = Trainer::with_format(
        &net(name)?,
        SgdSettings::PAPER,
        0,
        Device::Cpu,
        Layout::Auto.resolve(Device::Cpu),
    )?;
    let x = Tensor::randn([batch, 3, 224, 224], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(1000, [batch], (Kind::Int64, Device::Cpu));
    for _ in 0..2 {
        let _ = trainer.step(&x, &y, 0.1)?;
    }
    peak_rss_mib()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [name, batch] = args.as_slice() {
        println!("{}", measure(name, batch.parse()?)?);
        return Ok(());
    }
    let [name, small, large] = args.as_slice() else {
        bail!("usage: step_memory <resnet50|plain34|...> <small batch> <large batch>");
    };
    // Each batch in a fresh process, so that one peak does not hide the other.
    let exe = std::env::current_exe()?;
    let run = |batch: &str| -> Result<f64> {
        let out = Command::new(&exe).args([name, batch]).output()?;
        if !out.status.success() {
            bail!("{name} at batch {batch}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().parse()?)
    };
    let (bs, bl): (f64, f64) = (small.parse()?, large.parse()?);
    let (ms, ml) = (run(small)?, run(large)?);
    let per_image = (ml - ms) / (bl - bs);
    let at256 = ms + per_image * (256.0 - bs);
    println!(
        "{name}: peak {ms:.0} MiB at batch {bs}, {ml:.0} MiB at batch {bl}; {per_image:.1} MiB per image; \
         batch 256: {:.1} GiB",
        at256 / 1024.0
    );
    Ok(())
}
