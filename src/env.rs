//! What the running libtorch is, where it was found and what it can use; device selection.

use anyhow::{Context, Result, bail};
use std::fmt;
use std::path::{Path, PathBuf};
use tch::Device;

/// libtorch's lib folder as torch-sys reported it at build time (also the binaries' rpath).
pub const LIBTORCH_LIB_AT_BUILD: &str = env!("RESNET_REPRO_LIBTORCH_LIB");

/// A snapshot of the torch runtime, printed by `doctor` and recorded with runs.
#[derive(Debug, Clone)]
pub struct TorchInfo {
    /// e.g. `2.11.0+cu130`, read next to the loaded library; `None` if it could not be found.
    pub version: Option<String>,
    /// The `libtorch_cpu` this process actually loaded.
    pub loaded_library: Option<PathBuf>,
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    pub cudnn_available: bool,
    /// cuDNN version as libtorch reports it (e.g. 91900), when CUDA is available.
    pub cudnn_version: Option<i64>,
    pub threads: i32,
    pub interop_threads: i32,
    pub mkl: bool,
    pub mkldnn: bool,
    pub openmp: bool,
    /// The CPU's model name (`/proc/cpuinfo`), if known.
    pub cpu_model: Option<String>,
    pub cpu_bf16: CpuBf16,
}

/// What the CPU offers bf16 autocast (`--precision bf16`): oneDNN's bf16 convolutions run on
/// AMX tiles where there are some, else on AVX512-BF16 dot products, else are emulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuBf16 {
    /// Intel AMX (`amx_bf16`): bf16 matrix tiles.
    Amx,
    /// `avx512_bf16` without AMX (e.g. AMD EPYC Zen 4 and later).
    Avx512Bf16,
    /// Neither: bf16 is converted in software and can be slower than fp32.
    None,
}

impl CpuBf16 {
    /// From the `flags` line of `/proc/cpuinfo`.
    pub fn from_flags(flags: &str) -> Self {
        let has = |f: &str| flags.split_whitespace().any(|x| x == f);
        if has("amx_bf16") {
            CpuBf16::Amx
        } else if has("avx512_bf16") {
            CpuBf16::Avx512Bf16
        } else {
            CpuBf16::None
        }
    }

    /// What bf16 gains here, as measured (docs/experiments.md, "Precision").
    pub fn describe(self) -> &'static str {
        match self {
            CpuBf16::Amx => {
                "AMX (bf16 matrix tiles; the bf16 step 1.7-1.9x fp32's, measured on one such CPU)"
            }
            CpuBf16::Avx512Bf16 => {
                "AVX512-BF16, no AMX (bf16 dot products; the bf16 step 1.3-1.9x fp32's, measured on two such CPUs)"
            }
            CpuBf16::None => "none (bf16 is emulated: bf16 autocast may be slower than fp32 here)",
        }
    }
}

/// The CPU's model name and bf16 support, from `/proc/cpuinfo` (Linux; none known elsewhere).
fn cpu_features() -> (Option<String>, CpuBf16) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    (field("model name"), CpuBf16::from_flags(&field("flags").unwrap_or_default()))
}

impl TorchInfo {
    pub fn current() -> Self {
        let loaded_library = loaded_libtorch();
        let version = loaded_library.as_deref().and_then(|l| l.parent()).and_then(version_near);
        let cuda_available = tch::Cuda::is_available();
        let cudnn_available = cuda_available && tch::Cuda::cudnn_is_available();
        let (cpu_model, cpu_bf16) = cpu_features();
        TorchInfo {
            version,
            loaded_library,
            cuda_available,
            cuda_device_count: tch::Cuda::device_count(),
            cudnn_available,
            cudnn_version: cudnn_available.then(tch::utils::version_cudnn),
            threads: tch::get_num_threads(),
            interop_threads: tch::get_num_interop_threads(),
            mkl: tch::utils::has_mkl(),
            mkldnn: tch::utils::has_mkldnn(),
            openmp: tch::utils::has_openmp(),
            cpu_model,
            cpu_bf16,
        }
    }
}

impl fmt::Display for TorchInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        writeln!(f, "torch version      {}", self.version.as_deref().unwrap_or("unknown"))?;
        let loaded = self.loaded_library.as_ref().map(|p| p.display().to_string());
        writeln!(f, "libtorch loaded    {}", loaded.as_deref().unwrap_or("unknown (no /proc/self/maps)"))?;
        writeln!(
            f,
            "libtorch at build  {}",
            if LIBTORCH_LIB_AT_BUILD.is_empty() { "unknown" } else { LIBTORCH_LIB_AT_BUILD }
        )?;
        writeln!(f, "CUDA available     {}", yes(self.cuda_available))?;
        writeln!(f, "CUDA devices       {}", self.cuda_device_count)?;
        match self.cudnn_version {
            Some(v) => writeln!(f, "cuDNN              yes ({v})")?,
            None => writeln!(f, "cuDNN              {}", yes(self.cudnn_available))?,
        }
        writeln!(f, "CPU                {}", self.cpu_model.as_deref().unwrap_or("unknown"))?;
        writeln!(f, "CPU bf16           {}", self.cpu_bf16.describe())?;
        writeln!(f, "CPU threads        {} (inter-op {})", self.threads, self.interop_threads)?;
        write!(f, "MKL {} / oneDNN {} / OpenMP {}", yes(self.mkl), yes(self.mkldnn), yes(self.openmp))
    }
}

/// The `libtorch_cpu` shared library mapped into this process (Linux).
fn loaded_libtorch() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| Path::new(p).file_name().is_some_and(|n| n.to_string_lossy().starts_with("libtorch_cpu.")))
        .map(PathBuf::from)
}

/// The version recorded next to a libtorch lib folder: `../version.py` in a PyTorch wheel,
/// `../build-version` in a libtorch archive.
fn version_near(lib_dir: &Path) -> Option<String> {
    let root = lib_dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        let line = text.lines().find(|l| l.starts_with("__version__"))?;
        return Some(line.split(['\'', '"']).nth(1)?.to_string());
    }
    std::fs::read_to_string(root.join("build-version")).ok().map(|s| s.trim().to_string())
}

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`. `auto` is the first GPU if there is one, else the CPU.
/// Asking for CUDA where libtorch sees none is an error, never a silent fall-back to the CPU.
pub fn parse_device(s: &str) -> Result<Device> {
    let device = match s {
        "auto" => return Ok(Device::cuda_if_available()),
        "cpu" => return Ok(Device::Cpu),
        "cuda" => Device::Cuda(0),
        _ => match s.strip_prefix("cuda:") {
            Some(n) => Device::Cuda(n.parse().with_context(|| format!("bad device {s:?}: expected cuda:N"))?),
            None => bail!("unknown device {s:?}: expected auto, cpu, cuda or cuda:N"),
        },
    };
    let Device::Cuda(i) = device else { unreachable!() };
    let count = tch::Cuda::device_count();
    if !tch::Cuda::is_available() || i as i64 >= count {
        bail!(
            "device {s} asked for, but libtorch sees {count} CUDA device(s); run `cargo run --release --bin doctor` to see what it found"
        );
    }
    Ok(device)
}

/// A short, stable name for a device: `cpu`, `cuda:0`.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The commit this binary was built from (`c3ccb06`, `c3ccb06-dirty` if its sources differed from
/// it, `unknown` outside a checkout), recorded by build.rs.
pub const COMMIT: &str = env!("RESNET_REPRO_COMMIT");

/// Now, as UTC `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What a result was computed on, recorded beside it.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub device: String,
    pub torch: String,
    pub commit: String,
    pub now: String,
}

impl Provenance {
    pub fn current(device: Device) -> Self {
        Provenance {
            device: device_name(device),
            torch: TorchInfo::current().version.unwrap_or_default(),
            commit: COMMIT.to_string(),
            now: utc_now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CpuBf16;

    #[test]
    fn bf16_support_is_read_from_the_cpu_flags() {
        // Flags as /proc/cpuinfo lists them on a Sapphire Rapids Xeon, a Zen 4 EPYC, a Skylake.
        let xeon = "fpu avx512f avx512_bf16 amx_bf16 amx_tile amx_int8";
        let epyc = "fpu sse avx2 avx512f avx512_bf16 avx512_vnni";
        assert_eq!(CpuBf16::from_flags(xeon), CpuBf16::Amx);
        assert_eq!(CpuBf16::from_flags(epyc), CpuBf16::Avx512Bf16);
        assert_eq!(CpuBf16::from_flags("fpu avx2 avx512f"), CpuBf16::None);
        assert_eq!(CpuBf16::from_flags("avx512_bf16x"), CpuBf16::None, "whole flags only");
    }
}
