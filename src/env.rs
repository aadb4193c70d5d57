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
    /// The NVIDIA driver's version, where one answers.
    pub nvidia_driver: Option<String>,
}

/// What the CPU offers bf16 autocast (`--precision bf16`): oneDNN's bf16 convolutions run on
/// AMX tiles where there are some, else on AVX512-BF16 dot products, else (without AVX-512) in
/// fp32 kernels on bf16-rounded operands (`shim::conv2d_bf16_in_fp32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuBf16 {
    /// Intel AMX (`amx_bf16`): bf16 matrix tiles.
    Amx,
    /// `avx512_bf16` without AMX (e.g. AMD EPYC Zen 4 and later).
    Avx512Bf16,
    /// Neither. Without AVX-512 (oneDNN has no bf16 kernels) the suite computes bf16 autocast's
    /// convolutions in fp32 kernels on bf16-rounded operands: about fp32's speed, no gain.
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
            CpuBf16::None => {
                "none (without AVX-512 the suite runs bf16's convolutions in fp32 kernels: the bf16 step 0.89x fp32's, measured on one such CPU)"
            }
        }
    }
}

/// What this CPU offers bf16 autocast.
pub fn cpu_bf16() -> CpuBf16 {
    cpu_features().1
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
            nvidia_driver: nvidia_driver(),
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

impl TorchInfo {
    /// The driver, this torch's CUDA, and whether they fit.
    fn driver_line(&self) -> String {
        let Some(driver) = &self.nvidia_driver else { return "none answers (no NVIDIA GPU here)".into() };
        match DriverFit::of(driver, self.version.as_deref()) {
            DriverFit::Fits { cuda, needs } => {
                format!("{driver}: fits this torch's CUDA {}.{} (needs {needs} or newer)", cuda.0, cuda.1)
            }
            DriverFit::TooOld { cuda, needs } => format!(
                "{driver}: TOO OLD for this torch's CUDA {}.{} (needs {needs} or newer): CUDA will not work",
                cuda.0, cuda.1
            ),
            DriverFit::Unknown => format!("{driver} (this torch's CUDA unknown)"),
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
        writeln!(f, "NVIDIA driver      {}", self.driver_line())?;
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

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`. `auto` is the first GPU if there is one, else the CPU,
/// but an error where an NVIDIA driver answers and libtorch still sees no GPU (a driver older than
/// this torch's CUDA needs, most often): days on the CPU are never chosen silently. Asking for CUDA
/// where libtorch sees none is an error too.
pub fn parse_device(s: &str) -> Result<Device> {
    let device = match s {
        "auto" if tch::Cuda::is_available() => return Ok(Device::Cuda(0)),
        "auto" => return auto_without_cuda(nvidia_driver().as_deref(), torch_version().as_deref()),
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

/// `auto` where libtorch sees no GPU: the CPU if no NVIDIA driver answers either, else an error
/// with the driver, the CUDA this torch was built for, whether they fit, and the ways out.
pub fn auto_without_cuda(driver: Option<&str>, torch: Option<&str>) -> Result<Device> {
    let Some(driver) = driver else { return Ok(Device::Cpu) };
    let torch_name = torch.unwrap_or("of unknown version");
    let why = match DriverFit::of(driver, torch) {
        DriverFit::TooOld { cuda, needs } => format!(
            "this torch ({torch_name}) is built for CUDA {}.{}, which needs driver {needs} or newer",
            cuda.0, cuda.1
        ),
        DriverFit::Fits { cuda, .. } => format!(
            "the driver fits this torch's CUDA {}.{} ({torch_name}); check `nvidia-smi` and \
             CUDA_VISIBLE_DEVICES",
            cuda.0, cuda.1
        ),
        DriverFit::Unknown if torch.is_some_and(|t| t.contains("+cpu")) => {
            format!("this torch ({torch_name}) is a CPU-only build")
        }
        DriverFit::Unknown => format!("the CUDA this torch ({torch_name}) was built for is unknown"),
    };
    bail!(
        "--device auto: an NVIDIA GPU is here (driver {driver}) but libtorch finds no CUDA device: {why}. \
         Ways out: a newer NVIDIA driver; a torch built for an older CUDA (CUDA 12 builds run on drivers \
         525 and newer), through LIBTORCH=<its libtorch folder> or LIBTORCH_USE_PYTORCH=1 with it as \
         python3's torch, then a rebuild; or --device cpu (DEVICE=cpu) to train on the CPU on purpose. \
         `doctor` prints the driver and the torch it found"
    )
}

/// Whether the NVIDIA driver can run the CUDA a torch was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverFit {
    Fits {
        cuda: (u32, u32),
        needs: u32,
    },
    TooOld {
        cuda: (u32, u32),
        needs: u32,
    },
    /// The torch's CUDA (a CPU build, an unknown version) or the driver's version unread.
    Unknown,
}

impl DriverFit {
    /// From the driver's version (`535.154.05`) and torch's (`2.11.0+cu130`).
    pub fn of(driver: &str, torch: Option<&str>) -> Self {
        let major = driver.split('.').next().and_then(|m| m.trim().parse::<u32>().ok());
        let cuda = torch.and_then(wheel_cuda);
        // NVIDIA's minimum drivers (Linux) for a CUDA major, with minor-version compatibility.
        let needs = cuda.and_then(|(m, _)| match m {
            13 => Some(580),
            12 => Some(525),
            11 => Some(450),
            _ => None,
        });
        match (major, cuda, needs) {
            (Some(d), Some(cuda), Some(needs)) if d >= needs => DriverFit::Fits { cuda, needs },
            (Some(_), Some(cuda), Some(needs)) => DriverFit::TooOld { cuda, needs },
            _ => DriverFit::Unknown,
        }
    }
}

/// The CUDA a torch version was built for: `2.11.0+cu130` is 13.0, `2.4.1+cu121` 12.1; none for
/// a CPU build.
pub fn wheel_cuda(torch: &str) -> Option<(u32, u32)> {
    let digits = torch.split_once("+cu")?.1;
    let digits: String = digits.chars().take_while(char::is_ascii_digit).collect();
    let (major, minor) = digits.split_at(digits.len().checked_sub(1)?);
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The NVIDIA driver's version where one answers: `/proc/driver/nvidia/version`, else `nvidia-smi`.
pub fn nvidia_driver() -> Option<String> {
    let proc = std::fs::read_to_string("/proc/driver/nvidia/version").ok();
    if let Some(v) = proc.as_deref().and_then(driver_in_proc_version) {
        return Some(v);
    }
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=driver_version", "--format=csv,noheader"])
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).lines().next()?.trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

/// The driver's version in `/proc/driver/nvidia/version`'s text: "NVRM version: NVIDIA UNIX x86_64
/// Kernel Module  535.154.05  Thu Dec 28 ..." (or "... Open Kernel Module for x86_64  580.65.06 ...").
fn driver_in_proc_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version"))?;
    let version =
        line.split_whitespace().find(|w| w.contains('.') && w.starts_with(|c: char| c.is_ascii_digit()));
    version.map(String::from)
}

/// The version of the libtorch this process loaded (`2.11.0+cu130`), if known.
pub fn torch_version() -> Option<String> {
    loaded_libtorch().as_deref().and_then(|l| l.parent()).and_then(version_near)
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

/// What a result was computed on, recorded beside it (a detection run's final.json holds it
/// flattened, `now` as `finished`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    pub device: String,
    pub torch: String,
    pub commit: String,
    #[serde(rename = "finished")]
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
    fn auto_stops_where_a_driver_answers_and_libtorch_sees_no_gpu_and_says_why() {
        use super::{DriverFit, auto_without_cuda, wheel_cuda};
        assert_eq!(wheel_cuda("2.11.0+cu130"), Some((13, 0)));
        assert_eq!(wheel_cuda("2.4.1+cu121"), Some((12, 1)));
        assert_eq!(wheel_cuda("2.11.0+cpu"), None);
        assert_eq!(wheel_cuda("2.11.0"), None);
        let proc = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.154.05  Thu Dec 28 22:38:18 UTC 2023\nGCC \
                    version:  gcc version 12.2.0";
        assert_eq!(super::driver_in_proc_version(proc).as_deref(), Some("535.154.05"));
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder)";
        assert_eq!(super::driver_in_proc_version(open).as_deref(), Some("580.65.06"));
        assert_eq!(super::driver_in_proc_version("GCC version: 12.2.0"), None);
        let cpu_build = auto_without_cuda(Some("535.154.05"), Some("2.11.0+cpu")).unwrap_err().to_string();
        assert!(cpu_build.contains("this torch (2.11.0+cpu) is a CPU-only build"), "{cpu_build}");
        assert_eq!(
            DriverFit::of("535.154.05", Some("2.11.0+cu130")),
            DriverFit::TooOld { cuda: (13, 0), needs: 580 }
        );
        assert_eq!(
            DriverFit::of("580.65.06", Some("2.11.0+cu130")),
            DriverFit::Fits { cuda: (13, 0), needs: 580 }
        );
        assert_eq!(
            DriverFit::of("535.154.05", Some("2.4.1+cu121")),
            DriverFit::Fits { cuda: (12, 1), needs: 525 }
        );
        assert_eq!(DriverFit::of("535.154.05", None), DriverFit::Unknown);
        // No driver: the CPU, as before.
        assert_eq!(auto_without_cuda(None, Some("2.11.0+cu130")).unwrap(), tch::Device::Cpu);
        let err = auto_without_cuda(Some("535.154.05"), Some("2.11.0+cu130")).unwrap_err().to_string();
        for said in [
            "an NVIDIA GPU is here (driver 535.154.05) but libtorch finds no CUDA device",
            "this torch (2.11.0+cu130) is built for CUDA 13.0, which needs driver 580 or newer",
            "LIBTORCH=",
            "--device cpu (DEVICE=cpu)",
        ] {
            assert!(err.contains(said), "{err}");
        }
        let err = auto_without_cuda(Some("590.1"), Some("2.11.0+cu130")).unwrap_err().to_string();
        assert!(err.contains("the driver fits this torch's CUDA 13.0"), "{err}");
    }

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
