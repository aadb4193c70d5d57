//! The paper's networks. Each builder takes an `nn::Path` and returns a [`ResNet`] whose variables
//! follow torchvision's names, so weights interoperate (see `tests/torchvision.rs`).
//!
//! ```no_run
//! use resnet_repro::models::{CifarNet, count_parameters};
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let net = CifarNet::resnet(20).build(&vs.root()).unwrap();
//! assert_eq!(count_parameters(&vs), 269_722);
//! # let _ = net;
//! ```

pub mod blocks;
pub mod cifar;
pub mod imagenet;
pub mod net;

pub use blocks::{BottleneckStride, HeInit, Shortcut};
pub use cifar::CifarNet;
pub use imagenet::ImageNetNet;
pub use net::{ResNet, count_parameters, running_stats, save_weights};

/// The init choices the paper leaves open, said beside every result table: the convs' He-normal n
/// (the network's `init`), and the fc layer's.
pub fn init_notes(init: HeInit) -> [&'static str; 2] {
    let convs = match init {
        HeInit::FanIn => {
            "convs are He-normal with n = k²·c_in (fan-in: Caffe's msra, as in the authors' release), where \
             fb.resnet.torch and torchvision use n = k²·c_out (fan-out)"
        }
        HeInit::FanOut => {
            "convs are He-normal with n = k²·c_out (fan-out, as fb.resnet.torch and torchvision), where the \
             authors' release (Caffe's msra) uses n = k²·c_in (fan-in)"
        }
    };
    [convs, "the fc layer's initialisation, which the paper does not give, is PyTorch's default"]
}

/// Any network of the project; in a run's `config.toml` as `[net]` with `family = "cifar"` or
/// `"imagenet"`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "family", rename_all = "lowercase")]
pub enum NetSpec {
    Cifar(CifarNet),
    ImageNet(ImageNetNet),
}

impl NetSpec {
    pub fn name(&self) -> String {
        match self {
            NetSpec::Cifar(c) => c.name(),
            NetSpec::ImageNet(c) => c.name(),
        }
    }

    pub fn depth(&self) -> usize {
        match self {
            NetSpec::Cifar(c) => c.depth,
            NetSpec::ImageNet(c) => c.depth,
        }
    }

    pub fn residual(&self) -> bool {
        match self {
            NetSpec::Cifar(c) => c.residual,
            NetSpec::ImageNet(c) => c.residual,
        }
    }

    pub fn shortcut(&self) -> Shortcut {
        match self {
            NetSpec::Cifar(c) => c.shortcut,
            NetSpec::ImageNet(c) => c.shortcut,
        }
    }

    /// The shortcut option where the network's name shows it: every ImageNet ResNet
    /// (`resnet34-A`), CIFAR ResNets with options B and C (`resnet20-B`).
    pub fn named_option(&self) -> Option<Shortcut> {
        match self {
            NetSpec::ImageNet(n) if n.residual => Some(n.shortcut),
            NetSpec::Cifar(n) if n.residual && n.shortcut != Shortcut::A => Some(n.shortcut),
            _ => None,
        }
    }

    /// `plain-20`, `ResNet-20`, `ResNet-34 B`, `ResNet-50 B v1.5`: as the paper's tables name them.
    pub fn label(&self) -> String {
        let kind = if self.residual() { "ResNet" } else { "plain" };
        let mut label = format!("{kind}-{}", self.depth());
        if let Some(option) = self.named_option() {
            label.push_str(&format!(" {option}"));
        }
        if let NetSpec::ImageNet(n) = self
            && n.is_bottleneck()
            && n.bottleneck_stride == BottleneckStride::Conv3x3
        {
            label.push_str(" v1.5");
        }
        label
    }

    pub fn init(&self) -> HeInit {
        match self {
            NetSpec::Cifar(c) => c.init,
            NetSpec::ImageNet(c) => c.init,
        }
    }

    /// The paper's row order: plain before residual, by depth, then by shortcut option.
    pub fn order_key(&self) -> (bool, usize, Shortcut, String) {
        (self.residual(), self.depth(), self.shortcut(), self.name())
    }

    /// An error naming the value if the configuration is impossible (a depth not 6n+2, ...).
    pub fn validate(&self) -> anyhow::Result<()> {
        match self {
            NetSpec::Cifar(c) => c.validate(),
            NetSpec::ImageNet(c) => c.validate(),
        }
    }

    pub fn build(&self, p: &tch::nn::Path) -> anyhow::Result<ResNet> {
        match self {
            NetSpec::Cifar(c) => c.build(p),
            NetSpec::ImageNet(c) => c.build(p),
        }
    }
}

/// Builds `spec` on `device` in the memory layout `format` and loads `weights` (safetensors with
/// torchvision's names: ours, or torchvision's own): the one place a saved network comes back.
pub fn load_net(
    spec: &NetSpec,
    weights: &std::path::Path,
    device: tch::Device,
    format: crate::shim::MemoryFormat,
) -> anyhow::Result<(tch::nn::VarStore, ResNet)> {
    use anyhow::Context;
    let mut vs = tch::nn::VarStore::new(device);
    let net = spec.build(&vs.root())?;
    crate::shim::set_memory_format(&vs, format)?;
    vs.load(weights).with_context(|| format!("loading {} into {}", weights.display(), spec.name()))?;
    Ok((vs, net))
}

/// Loads a classification network's `weights` (safetensors, its own names) into the variables
/// under `prefix.` of `vs` (a detector's `backbone.`): every tensor of the file to a variable of
/// the same shape and type, every variable under the prefix from the file; an error names the
/// first that does not fit.
pub fn load_into(vs: &tch::nn::VarStore, prefix: &str, weights: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::{Context, ensure};
    let file =
        tch::Tensor::read_safetensors(weights).with_context(|| format!("reading {}", weights.display()))?;
    let vars = vs.variables();
    let ours: Vec<&String> = vars.keys().filter(|n| n.starts_with(&format!("{prefix}."))).collect();
    ensure!(
        ours.len() == file.len(),
        "{} has {} tensors, the network under {prefix}. has {} variables",
        weights.display(),
        file.len(),
        ours.len()
    );
    tch::no_grad(|| {
        for (name, t) in &file {
            let full = format!("{prefix}.{name}");
            let mut var = vars
                .get(&full)
                .with_context(|| format!("{}: {name} is not in the network", weights.display()))?
                .shallow_clone();
            ensure!(
                var.size() == t.size() && var.kind() == t.kind(),
                "{}: {name} is {:?} {:?}, the network's {:?} {:?}",
                weights.display(),
                t.kind(),
                t.size(),
                var.kind(),
                var.size()
            );
            var.copy_(t);
        }
        Ok(())
    })
}
