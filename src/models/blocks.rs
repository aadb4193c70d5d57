//! Building blocks shared by the CIFAR and ImageNet families: convolutions and BN with the paper's
//! initialisation, the three shortcut options, and the basic and bottleneck residual blocks.
//!
//! Nothing here relies on a library default for initialisation (tch's BN draws gamma from U(0,1), its
//! convs are Kaiming-uniform): every variable's init is written where the layer is built.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use tch::{Tensor, nn};

/// Multiply-adds of a layer (or a network) for one image.
pub type MultAdds = u64;

/// Spatial size (height, width) of a feature map.
pub type Hw = (i64, i64);

/// The shortcut options of Sec. 3.3 / 4.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub enum Shortcut {
    /// Identity; where dimensions increase, subsample spatially and zero-pad the new channels.
    /// No parameters.
    #[default]
    A,
    /// Projection (1x1 conv + BN) only where dimensions increase; identity elsewhere.
    B,
    /// Every shortcut is a projection.
    C,
}

impl fmt::Display for Shortcut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shortcut::A => "A",
            Shortcut::B => "B",
            Shortcut::C => "C",
        })
    }
}

impl FromStr for Shortcut {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "A" => Ok(Shortcut::A),
            "B" => Ok(Shortcut::B),
            "C" => Ok(Shortcut::C),
            _ => anyhow::bail!("unknown shortcut option {s:?}: expected A, B or C"),
        }
    }
}

/// Output size of a convolution or pooling window along one dimension.
pub fn out_size(size: i64, k: i64, stride: i64, padding: i64) -> i64 {
    (size + 2 * padding - k) / stride + 1
}

/// The n of the convs' He-normal init N(0, 2/n) ("Delving deep into rectifiers", Eq. 10 and 14).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum HeInit {
    /// n = k²·c_in, the forward case: Caffe's `msra` filler, as in the authors' released models.
    #[default]
    FanIn,
    /// n = k²·c_out, the backward case: fb.resnet.torch and torchvision.
    FanOut,
}

impl fmt::Display for HeInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeInit::FanIn => "fan_in",
            HeInit::FanOut => "fan_out",
        })
    }
}

/// A bias-free 2-d convolution (every conv here is followed by BN), He-normal initialised.
#[derive(Debug)]
pub struct Conv {
    pub weight: Tensor,
    pub in_channels: i64,
    pub out_channels: i64,
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
}

impl Conv {
    /// `k`x`k` conv with "same" padding (`k / 2`), variable `<p>.weight`.
    pub fn new(p: &nn::Path, in_channels: i64, out_channels: i64, kernel: i64, stride: i64) -> Self {
        // He et al. "Delving deep into rectifiers", Eq. 10: N(0, 2/n) with n = k*k*c_in (the forward
        // case); `ResNet::apply_init` rescales to n = k*k*c_out (torchvision's, fb.resnet.torch's)
        // where the net asks for it. The paper cites [13] only.
        let fan_in = (kernel * kernel * in_channels) as f64;
        let weight = p.var(
            "weight",
            &[out_channels, in_channels, kernel, kernel],
            nn::Init::Randn { mean: 0.0, stdev: (2.0 / fan_in).sqrt() },
        );
        Conv { weight, in_channels, out_channels, kernel, stride, padding: kernel / 2 }
    }

    /// The convolution; under bfloat16 autocast on a CPU without bfloat16 kernels, the same
    /// arithmetic in fp32 kernels (`shim::conv2d_bf16_in_fp32`), 10-20x faster there.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        if xs.device() == tch::Device::Cpu && crate::shim::cpu_bf16_in_fp32() {
            return crate::shim::conv2d_bf16_in_fp32(xs, &self.weight, self.stride, self.padding)
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
        xs.conv2d(
            &self.weight,
            None::<Tensor>,
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }

    pub fn out_hw(&self, (h, w): Hw) -> Hw {
        (
            out_size(h, self.kernel, self.stride, self.padding),
            out_size(w, self.kernel, self.stride, self.padding),
        )
    }

    /// Turns the fan-in draw N(0, 2/(k²·c_in)) into `init`'s: times sqrt(c_in / c_out) for fan-out,
    /// the same normal draws at the other scale.
    pub fn apply_init(&self, init: HeInit) {
        if init == HeInit::FanOut {
            let scale = (self.in_channels as f64 / self.out_channels as f64).sqrt();
            tch::no_grad(|| {
                let _ = self.weight.shallow_clone().g_mul_scalar_(scale);
            });
        }
    }

    /// Multiply-adds for one image of size `hw`, and the output size.
    pub fn mult_adds(&self, hw: Hw) -> (MultAdds, Hw) {
        let (oh, ow) = self.out_hw(hw);
        let per_position = self.in_channels * self.kernel * self.kernel * self.out_channels;
        ((per_position * oh * ow) as MultAdds, (oh, ow))
    }
}

/// Batch normalisation with gamma = 1 and beta = 0 (tch's default draws gamma from U(0, 1)).
/// Momentum 0.1 and eps 1e-5 as in PyTorch, so that torchvision weights give the same outputs.
pub fn batch_norm(p: &nn::Path, channels: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        channels,
        nn::BatchNormConfig {
            ws_init: nn::Init::Const(1.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        },
    )
}

/// A convolution followed by its BN; the pair every layer of these networks is made of.
#[derive(Debug)]
pub struct ConvBn {
    pub conv: Conv,
    pub bn: nn::BatchNorm,
}

impl ConvBn {
    /// Conv at `conv_path`, BN at `bn_path`: torchvision names them `conv1`/`bn1` in a block and
    /// `downsample.0`/`downsample.1` in a projection shortcut.
    pub fn new(
        conv_path: &nn::Path,
        bn_path: &nn::Path,
        in_channels: i64,
        out_channels: i64,
        kernel: i64,
        stride: i64,
    ) -> Self {
        ConvBn {
            conv: Conv::new(conv_path, in_channels, out_channels, kernel, stride),
            bn: batch_norm(bn_path, out_channels),
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        nn::ModuleT::forward_t(&self.bn, &self.conv.forward(xs), train)
    }
}

/// What a residual block adds to its residual branch's output.
#[derive(Debug)]
pub enum ShortcutPath {
    Identity,
    /// Option A where dimensions increase: keep every `stride`-th position and append `extra` zero
    /// channels (fb.resnet.torch concatenates zeros after the input's channels, as here).
    ZeroPad {
        stride: i64,
        extra: i64,
    },
    Projection(ConvBn),
}

impl ShortcutPath {
    /// The one place where options A, B and C are decided (fb.resnet.torch's `shortcut()`).
    /// `p` is the block's path; a projection lives at `<p>.downsample.0` (conv) and `.1` (BN).
    pub fn new(p: &nn::Path, option: Shortcut, in_channels: i64, out_channels: i64, stride: i64) -> Self {
        let increases = stride != 1 || in_channels != out_channels;
        let project = match option {
            Shortcut::A => false,
            Shortcut::B => increases,
            Shortcut::C => true,
        };
        if project {
            let d = p / "downsample";
            ShortcutPath::Projection(ConvBn::new(&(&d / 0), &(&d / 1), in_channels, out_channels, 1, stride))
        } else if increases {
            assert!(out_channels >= in_channels, "option A cannot reduce channels");
            ShortcutPath::ZeroPad { stride, extra: out_channels - in_channels }
        } else {
            ShortcutPath::Identity
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            ShortcutPath::Identity => xs.shallow_clone(),
            ShortcutPath::ZeroPad { stride, extra } => {
                let sub = if *stride == 1 {
                    xs.shallow_clone()
                } else {
                    xs.slice(2, 0, None, *stride).slice(3, 0, None, *stride)
                };
                // Pad spec runs from the last dimension backwards: (W, W, H, H, C_before, C_after).
                sub.constant_pad_nd([0, 0, 0, 0, 0, *extra])
            }
            ShortcutPath::Projection(cb) => cb.forward_t(xs, train),
        }
    }

    pub fn mult_adds(&self, hw: Hw) -> MultAdds {
        match self {
            ShortcutPath::Projection(cb) => cb.conv.mult_adds(hw).0,
            _ => 0,
        }
    }
}

/// Where a bottleneck block downsamples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum BottleneckStride {
    /// Stride 2 in the first 1x1 conv: the paper's own release (Caffe prototxts); gives Table 1's FLOPs.
    #[default]
    #[serde(rename = "1x1")]
    FirstConv1x1,
    /// Stride 2 in the 3x3 conv: torchvision, fb.resnet.torch ("ResNet v1.5").
    #[serde(rename = "3x3")]
    Conv3x3,
}

impl fmt::Display for BottleneckStride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BottleneckStride::FirstConv1x1 => "1x1",
            BottleneckStride::Conv3x3 => "3x3",
        })
    }
}

impl FromStr for BottleneckStride {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "1x1" => Ok(BottleneckStride::FirstConv1x1),
            "3x3" | "v1.5" => Ok(BottleneckStride::Conv3x3),
            _ => {
                anyhow::bail!("unknown bottleneck stride placement {s:?}: expected 1x1 (paper) or 3x3 (v1.5)")
            }
        }
    }
}

/// A residual (or, without shortcut, plain) block: the layers of its residual branch, each a conv + BN
/// followed by ReLU except the last, whose output is added to the shortcut before the ReLU.
#[derive(Debug)]
pub struct Block {
    pub layers: Vec<ConvBn>,
    /// `None` for a plain net's block.
    pub shortcut: Option<ShortcutPath>,
}

impl Block {
    /// Basic block [3x3, c; 3x3, c] (ResNet-18/34 and every CIFAR net).
    pub fn basic(p: &nn::Path, in_c: i64, out_c: i64, stride: i64, shortcut: Option<Shortcut>) -> Self {
        let layers = vec![
            ConvBn::new(&(p / "conv1"), &(p / "bn1"), in_c, out_c, 3, stride),
            ConvBn::new(&(p / "conv2"), &(p / "bn2"), out_c, out_c, 3, 1),
        ];
        let shortcut = shortcut.map(|s| ShortcutPath::new(p, s, in_c, out_c, stride));
        Block { layers, shortcut }
    }

    /// Bottleneck block [1x1, w; 3x3, w; 1x1, 4w] (ResNet-50/101/152); `out_c` = 4w.
    pub fn bottleneck(
        p: &nn::Path,
        in_c: i64,
        out_c: i64,
        stride: i64,
        placement: BottleneckStride,
        shortcut: Option<Shortcut>,
    ) -> Self {
        let width = out_c / 4;
        let (s1, s3) = match placement {
            BottleneckStride::FirstConv1x1 => (stride, 1),
            BottleneckStride::Conv3x3 => (1, stride),
        };
        let layers = vec![
            ConvBn::new(&(p / "conv1"), &(p / "bn1"), in_c, width, 1, s1),
            ConvBn::new(&(p / "conv2"), &(p / "bn2"), width, width, 3, s3),
            ConvBn::new(&(p / "conv3"), &(p / "bn3"), width, out_c, 1, 1),
        ];
        let shortcut = shortcut.map(|s| ShortcutPath::new(p, s, in_c, out_c, stride));
        Block { layers, shortcut }
    }

    /// Forward pass; the ReLUs run in place.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let last = self.layers.len() - 1;
        let mut h = xs.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward_t(&h, train);
            if i < last {
                h = h.relu_();
            }
        }
        if let Some(s) = &self.shortcut {
            h += s.forward_t(xs, train);
        }
        h.relu_()
    }

    /// Multiply-adds for one input of size `hw`, and the output size.
    pub fn mult_adds(&self, hw: Hw) -> (MultAdds, Hw) {
        let mut total = self.shortcut.as_ref().map_or(0, |s| s.mult_adds(hw));
        let mut hw_cur = hw;
        for layer in &self.layers {
            let (m, next) = layer.conv.mult_adds(hw_cur);
            total += m;
            hw_cur = next;
        }
        (total, hw_cur)
    }
}
