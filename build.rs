//! 1. Makes the binaries runnable as built, with no LD_LIBRARY_PATH: records libtorch's lib folder
//!    (reported by torch-sys) as an rpath, and keeps `libtorch_cuda` linked even though no symbol of
//!    it is referenced (without `--no-as-needed` the linker drops it and `tch::Cuda::is_available()`
//!    is false on a GPU machine).
//! 2. Compiles src/shim/shim.cpp, the few libtorch calls tch 0.24 does not expose, and
//!    src/shim/dist.cpp, c10d's process groups, and src/shim/graph.cpp, CUDA graphs, against the
//!    same libtorch's headers; dist.cpp gets Gloo where Gloo's headers are found (GLOO_INCLUDE, else
//!    /usr/include or /usr/local/include: Debian's libgloo-dev), and says what to install where they
//!    are not; graph.cpp and NCCL need the CUDA runtime's headers, which the CUDA wheel's NVIDIA
//!    packages carry. Headers installed or removed after a build are noticed by the next one
//!    (see `watch`), so `apt-get install libgloo-dev` after a first build needs no `touch`.
//! 3. Records the commit the crate is built from (`RESNET_REPRO_COMMIT`, e.g. `c3ccb06` or
//!    `c3ccb06-dirty` when src/, build.rs or Cargo.* differ from it), for the provenance every
//!    result carries: the binary knows it wherever it runs, with or without a checkout.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    record_commit();
    for f in ["shim.cpp", "dist.cpp", "graph.cpp", "guard.hpp"] {
        println!("cargo:rerun-if-changed=src/shim/{f}");
    }
    let lib = PathBuf::from(env::var_os("DEP_TCH_LIBTORCH_LIB").expect(
        "torch-sys did not report libtorch's folder (DEP_TCH_LIBTORCH_LIB); build through `make`, which sets it up",
    ));
    println!("cargo:rustc-env=RESNET_REPRO_LIBTORCH_LIB={}", lib.display());
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        if lib.join("libtorch_cuda.so").exists() {
            // c10_cuda too: graph.cpp calls its stream functions.
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-lc10_cuda,--as-needed");
        }
    }

    // A PyTorch wheel keeps its headers in torch/include beside torch/lib; a libtorch archive in
    // libtorch/include beside libtorch/lib. LIBTORCH_INCLUDE overrides, as for torch-sys.
    let include = env::var_os("LIBTORCH_INCLUDE")
        .map(|p| PathBuf::from(p).join("include"))
        .unwrap_or_else(|| lib.parent().expect("libtorch lib folder has a parent").join("include"));
    println!("cargo:rerun-if-env-changed=LIBTORCH_INCLUDE");
    let mut build = cc::Build::new();
    if let Some(gloo) = gloo_include() {
        if gloo != Path::new("/usr/include") {
            build.include(gloo); // never -I/usr/include: it breaks libstdc++'s #include_next
        }
        build.define("USE_C10D_GLOO", None);
    } else {
        println!(
            "cargo:warning=Gloo's headers not found: distributed training on CPUs is disabled until they are (apt-get install libgloo-dev, or GLOO_INCLUDE=<folder holding gloo/>; the next build notices them)"
        );
    }
    if let Some(cuda) = cuda_include(&lib) {
        build.include(&cuda).define("RR_HAVE_CUDA", None);
        if let Some(nccl) = nccl_include(&lib) {
            build.include(nccl).define("USE_C10D_NCCL", None).define("USE_CUDA", None);
        }
    }
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        // Every libtorch 2.x build for Linux (wheels and archives) uses the C++11 ABI.
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .file("src/shim/shim.cpp")
        .file("src/shim/dist.cpp")
        .file("src/shim/graph.cpp");
    compile_shim(build);
}

/// Compiles the shim, unless the library this build script made last time came from the same
/// sources and settings (the script also reruns when the crate's sources change, for the commit
/// it records: that alone must not recompile the C++).
fn compile_shim(build: cc::Build) {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let lib = out.join("libresnet_repro_shim.a");
    let stamp = out.join("shim.inputs");
    let mut inputs = format!("{:?}\n", build.get_compiler().args());
    for f in ["shim.cpp", "dist.cpp", "graph.cpp", "guard.hpp"] {
        inputs.push_str(&std::fs::read_to_string(Path::new("src/shim").join(f)).unwrap_or_default());
    }
    if lib.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == inputs) {
        // What cc's compile() prints for a static C++ library on Linux.
        println!("cargo:rustc-link-search=native={}", out.display());
        println!("cargo:rustc-link-lib=static=resnet_repro_shim");
        println!("cargo:rustc-link-lib=stdc++");
        return;
    }
    build.compile("resnet_repro_shim");
    std::fs::write(&stamp, inputs).expect("writing the shim's inputs stamp");
}

/// `RESNET_REPRO_COMMIT`: `git rev-parse --short HEAD`, `-dirty` when what is compiled differs
/// from it; `unknown` outside a git checkout. Reruns when the commit or those files change.
fn record_commit() {
    let tracked = ["src", "build.rs", "Cargo.toml", "Cargo.lock"];
    for p in tracked {
        println!("cargo:rerun-if-changed={p}");
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = PathBuf::from(dir);
        for f in ["HEAD", "index", "packed-refs"] {
            if dir.join(f).exists() {
                println!("cargo:rerun-if-changed={}", dir.join(f).display());
            }
        }
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]).filter(|r| dir.join(r).exists()) {
            println!("cargo:rerun-if-changed={}", dir.join(r).display());
        }
    }
    let commit = match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c) => {
            let mut args = vec!["status", "--porcelain", "--"];
            args.extend(tracked);
            let dirty = git(&args).is_some_and(|s| !s.is_empty());
            if dirty { format!("{c}-dirty") } else { c }
        }
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=RESNET_REPRO_COMMIT={commit}");
}

/// Has cargo rerun this script when `file` appears, changes or disappears, so that a build never
/// stays without headers installed after it (or keeps headers since removed): the file where it
/// exists, else the nearest folder above it, up to `top`, that exists (cargo scans a folder's
/// whole tree for changes; adding an entry changes a folder's time). Never a missing path: cargo
/// would rerun the script, and recompile the shim, on every build.
fn watch(file: &Path, top: &Path) {
    let mut p = file;
    while !p.exists() {
        match p.parent() {
            Some(up) if p != top => p = up,
            _ => return,
        }
    }
    println!("cargo:rerun-if-changed={}", p.display());
}

/// The CUDA runtime's headers, where the torch wheel's NVIDIA packages beside it
/// (site-packages/nvidia/) have them and libtorch has its CUDA half: scripts/with-torch installs
/// `nvidia-cuda-crt` and `nvidia-cuda-cccl` for the CUDA runtime headers the wheel leaves out.
fn cuda_include(lib: &Path) -> Option<PathBuf> {
    let nvidia = lib.parent()?.parent()?.join("nvidia");
    let dirs = ["cu13", "cuda_runtime"].map(|d| nvidia.join(d).join("include"));
    for d in &dirs {
        watch(&d.join("cuda_runtime.h"), &nvidia);
        watch(&d.join("crt/host_config.h"), &nvidia);
    }
    let cuda = dirs
        .into_iter()
        .find(|d| d.join("cuda_runtime.h").is_file() && d.join("crt/host_config.h").is_file())?;
    (lib.join("libtorch_cuda.so").exists() && lib.join("libc10_cuda.so").exists()).then_some(cuda)
}

/// NCCL's headers, from the same NVIDIA packages.
fn nccl_include(lib: &Path) -> Option<PathBuf> {
    let nvidia = lib.parent()?.parent()?.join("nvidia");
    let nccl = nvidia.join("nccl/include");
    watch(&nccl.join("nccl.h"), &nvidia);
    nccl.join("nccl.h").is_file().then_some(nccl)
}

/// The folder holding `gloo/config.h`: GLOO_INCLUDE, else the system's.
fn gloo_include() -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
    let candidates = match env::var_os("GLOO_INCLUDE") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![PathBuf::from("/usr/include"), PathBuf::from("/usr/local/include")],
    };
    for d in &candidates {
        watch(&d.join("gloo/config.h"), d);
    }
    candidates.into_iter().find(|d| d.join("gloo/config.h").is_file())
}
