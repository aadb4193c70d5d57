//! Makes the binaries runnable as built, with no LD_LIBRARY_PATH:
//! - records libtorch's lib folder (reported by torch-sys) as an rpath;
//! - keeps `libtorch_cuda` linked even though no symbol of it is referenced. Without
//!   `--no-as-needed` the linker drops it and `tch::Cuda::is_available()` is false on a GPU machine.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Some(lib) = env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        println!(
            "cargo:warning=torch-sys did not report libtorch's folder; binaries will need LD_LIBRARY_PATH"
        );
        println!("cargo:rustc-env=RESNET_REPRO_LIBTORCH_LIB=");
        return;
    };
    println!(
        "cargo:rustc-env=RESNET_REPRO_LIBTORCH_LIB={}",
        lib.display()
    );
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        if lib.join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
