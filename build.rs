//! 1. Makes the binaries runnable as built, with no LD_LIBRARY_PATH: records libtorch's lib folder
//!    (reported by torch-sys) as an rpath, and keeps `libtorch_cuda` linked even though no symbol of
//!    it is referenced (without `--no-as-needed` the linker drops it and `tch::Cuda::is_available()`
//!    is false on a GPU machine).
//! 2. Compiles src/shim/shim.cpp, the few libtorch calls tch 0.24 does not expose, against the same
//!    libtorch's headers.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/shim/shim.cpp");
    let lib = PathBuf::from(env::var_os("DEP_TCH_LIBTORCH_LIB").expect(
        "torch-sys did not report libtorch's folder (DEP_TCH_LIBTORCH_LIB); build through `make`, which sets it up",
    ));
    println!("cargo:rustc-env=RESNET_REPRO_LIBTORCH_LIB={}", lib.display());
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        if lib.join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }

    // A PyTorch wheel keeps its headers in torch/include beside torch/lib; a libtorch archive in
    // libtorch/include beside libtorch/lib. LIBTORCH_INCLUDE overrides, as for torch-sys.
    let include = env::var_os("LIBTORCH_INCLUDE")
        .map(|p| PathBuf::from(p).join("include"))
        .unwrap_or_else(|| lib.parent().expect("libtorch lib folder has a parent").join("include"));
    println!("cargo:rerun-if-env-changed=LIBTORCH_INCLUDE");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        // Every libtorch 2.x build for Linux (wheels and archives) uses the C++11 ABI.
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .file("src/shim/shim.cpp")
        .compile("resnet_repro_shim");
}
