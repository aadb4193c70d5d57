//! The network both families share: a stem, stages of blocks, global average pooling and a fc layer.

use super::blocks::{Block, Conv, ConvBn, HeInit, Hw, MultAdds, ShortcutPath, out_size};
use tch::{Tensor, nn};

/// A fully-connected layer, `<p>.weight` [out, in] and `<p>.bias` [out].
#[derive(Debug)]
pub struct Fc {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Fc {
    pub fn new(p: &nn::Path, in_features: i64, out_features: i64) -> Self {
        // NOTE: the paper does not say how the fc layer is initialised; this is PyTorch's nn.Linear
        // default, U(-1/sqrt(in), 1/sqrt(in)) for weight and bias, as torchvision keeps it.
        let bound = 1.0 / (in_features as f64).sqrt();
        let init = nn::Init::Uniform { lo: -bound, up: bound };
        Fc {
            weight: p.var("weight", &[out_features, in_features], init),
            bias: p.var("bias", &[out_features], init),
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        xs.linear(&self.weight, Some(&self.bias))
    }

    pub fn mult_adds(&self) -> MultAdds {
        self.weight.numel() as MultAdds
    }
}

/// The input stem.
#[derive(Debug)]
pub enum Stem {
    /// CIFAR (Sec. 4.2): 3x3 conv, 16 filters, BN, ReLU.
    Cifar(ConvBn),
    /// ImageNet (Table 1): 7x7/2 conv, 64 filters, BN, ReLU, 3x3/2 max pool.
    ImageNet(ConvBn),
}

impl Stem {
    fn conv_bn(&self) -> &ConvBn {
        match self {
            Stem::Cifar(cb) | Stem::ImageNet(cb) => cb,
        }
    }
}

/// What [`ResNet::assemble`] builds: after the stem (whose output has `stem_channels`), stage `s`
/// (`layer<s+1>`) has `stages[s].0` blocks of `stages[s].1` output channels, the first block of every
/// stage but the first downsampling by 2; then global average pooling and a `num_classes` fc.
pub struct NetPlan {
    pub name: String,
    pub stem: Stem,
    pub stem_channels: i64,
    pub stages: Vec<(usize, i64)>,
    pub num_classes: i64,
    pub input: (i64, i64, i64),
}

/// A plain or residual network of either family. Build one with [`super::CifarNet::build`] or
/// [`super::ImageNetNet::build`]; the variables live in the `nn::Path` given there.
#[derive(Debug)]
pub struct ResNet {
    /// Short name, e.g. `resnet20`, `plain34`, `resnet50`.
    pub name: String,
    pub stem: Stem,
    /// Stages of blocks: `layer1`, `layer2`, ... in torchvision's naming.
    pub stages: Vec<Vec<Block>>,
    pub fc: Fc,
    /// The input (channels, height, width) the network was configured for; it accepts any size
    /// (global average pooling), this one is used for [`ResNet::mult_adds`].
    pub input: (i64, i64, i64),
}

impl ResNet {
    /// Assembles a network from its plan; `block(path, in, out, stride)` builds one block.
    pub fn assemble(
        p: &nn::Path,
        plan: NetPlan,
        mut block: impl FnMut(&nn::Path, i64, i64, i64) -> Block,
    ) -> ResNet {
        let mut in_c = plan.stem_channels;
        let stages = plan
            .stages
            .iter()
            .enumerate()
            .map(|(s, &(n, out_c))| {
                let sp = p / format!("layer{}", s + 1);
                (0..n)
                    .map(|b| {
                        // conv3_1, conv4_1, conv5_1 (Table 1) and their CIFAR counterparts downsample.
                        let stride = if s > 0 && b == 0 { 2 } else { 1 };
                        let blk = block(&(&sp / b), in_c, out_c, stride);
                        in_c = out_c;
                        blk
                    })
                    .collect()
            })
            .collect();
        let fc = Fc::new(&(p / "fc"), in_c, plan.num_classes);
        ResNet { name: plan.name, stem: plan.stem, stages, fc, input: plan.input }
    }

    fn forward_impl(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head(&self.stages_t(&self.stem_t(xs, train), 0..self.stages.len(), train))
    }

    /// The stem: conv, BN, ReLU (and, in an ImageNet net, the max pool).
    pub fn stem_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = self.stem.conv_bn().forward_t(xs, train).relu_();
        match self.stem {
            Stem::ImageNet(_) => h.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false),
            Stem::Cifar(_) => h,
        }
    }

    /// The stages `range` (0 is `layer1`) on `h`, the output of the stage before them (or of
    /// the stem). A detector shares the first stages and runs the last on each region.
    pub fn stages_t(&self, h: &Tensor, range: std::ops::Range<usize>, train: bool) -> Tensor {
        let mut h = h.shallow_clone();
        for block in self.stages[range].iter().flatten() {
            h = block.forward_t(&h, train);
        }
        h
    }

    /// How many input pixels apart the positions of the map after the stem and the first
    /// `stages` stages are (16 after conv4_x of an ImageNet net, 2 after stage 2 of a CIFAR net).
    pub fn stride_after(&self, stages: usize) -> i64 {
        let stem = self.stem.conv_bn().conv.stride * if let Stem::ImageNet(_) = self.stem { 2 } else { 1 };
        let blocks: i64 = self.stages[..stages]
            .iter()
            .flatten()
            .flat_map(|b| b.layers.iter().map(|l| l.conv.stride))
            .product();
        stem * blocks
    }

    /// Global average pooling and the fc layer, on the last stage's output.
    pub fn head(&self, h: &Tensor) -> Tensor {
        let pooled = h.mean_dim([2i64, 3].as_slice(), false, h.kind());
        self.fc.forward(&pooled)
    }

    /// Every conv: the stem's, the blocks' and the projection shortcuts'.
    pub fn convs(&self) -> Vec<&Conv> {
        self.conv_bns(0..=self.stages.len()).into_iter().map(|cb| &cb.conv).collect()
    }

    /// Every conv and its BN in `parts`, where part 0 is the stem and part `s` stage `s` (so
    /// `0..=stages.len()` is the whole network): each block's layers, then its projection.
    pub fn conv_bns(&self, parts: std::ops::RangeInclusive<usize>) -> Vec<&ConvBn> {
        let mut out = Vec::new();
        if parts.contains(&0) {
            out.push(self.stem.conv_bn());
        }
        for (s, stage) in self.stages.iter().enumerate() {
            if !parts.contains(&(s + 1)) {
                continue;
            }
            for block in stage {
                out.extend(block.layers.iter());
                if let Some(ShortcutPath::Projection(cb)) = &block.shortcut {
                    out.push(cb);
                }
            }
        }
        out
    }

    /// Gives every conv `init`'s He-normal scale (they are built with fan-in's).
    pub fn apply_init(&self, init: HeInit) {
        self.convs().iter().for_each(|c| c.apply_init(init));
    }

    /// The stem's conv and BN.
    pub fn stem_conv_bn(&self) -> &ConvBn {
        self.stem.conv_bn()
    }

    /// Number of 3x3 layers (the stem's in a CIFAR net, and the blocks'): Figure 7's layers.
    pub fn num_3x3_layers(&self) -> usize {
        let stem = usize::from(matches!(self.stem, Stem::Cifar(_)));
        let blocks: usize = self
            .stages
            .iter()
            .flatten()
            .map(|b| b.layers.iter().filter(|l| l.conv.kernel == 3).count())
            .sum();
        stem + blocks
    }

    /// Weighted layers along the deepest path (convs of the stem and residual branches, plus fc):
    /// the depth in the network's name.
    pub fn depth(&self) -> usize {
        1 + self.stages.iter().flatten().map(|b| b.layers.len()).sum::<usize>() + 1
    }

    /// Multiply-adds of every conv and the fc layer, for one image of the configured input size.
    pub fn mult_adds(&self) -> MultAdds {
        self.mult_adds_for((self.input.1, self.input.2))
    }

    /// Multiply-adds (convs and fc; BN, ReLU, pooling and additions are not counted, as in the paper)
    /// for one image of size `hw`.
    pub fn mult_adds_for(&self, hw: Hw) -> MultAdds {
        let (mut total, mut hw) = self.stem.conv_bn().conv.mult_adds(hw);
        if let Stem::ImageNet(_) = self.stem {
            hw = (out_size(hw.0, 3, 2, 1), out_size(hw.1, 3, 2, 1));
        }
        for block in self.stages.iter().flatten() {
            let (m, next) = block.mult_adds(hw);
            total += m;
            hw = next;
        }
        total + self.fc.mult_adds()
    }
}

impl nn::ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward_impl(xs, train)
    }
}

/// Number of trainable parameters in a var store (BN running statistics are buffers, not counted).
pub fn count_parameters(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

/// Saves every variable of a var store as safetensors under its name, in PyTorch's default layout
/// whatever the training layout (tch's `VarStore::save` refuses channels_last tensors).
pub fn save_weights(vs: &nn::VarStore, path: &std::path::Path) -> anyhow::Result<()> {
    let mut vars: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(n, t)| (n, t.contiguous())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let named: Vec<(&str, &Tensor)> = vars.iter().map(|(n, t)| (n.as_str(), t)).collect();
    crate::fsutil::write_with(path, |tmp| Tensor::write_safetensors(&named, tmp).map_err(anyhow::Error::from))
}

/// The floating-point buffers of `vs` (BN's running means and variances), in name order.
pub fn running_stats(vs: &nn::VarStore) -> Vec<Tensor> {
    let mut named: Vec<(String, Tensor)> =
        vs.variables().into_iter().filter(|(_, t)| !t.requires_grad() && t.is_floating_point()).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, t)| t).collect()
}
