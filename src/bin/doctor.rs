//! Prints what libtorch this build runs on and what it can use.

use clap::Parser;
use resnet_repro::env::TorchInfo;

/// Prints the torch version, where libtorch was found, CUDA and cuDNN availability, device count
/// and thread counts. Run it first on a new machine.
#[derive(Parser)]
#[command(version)]
struct Args {}

fn main() {
    Args::parse();
    println!("{}", TorchInfo::current());
}
