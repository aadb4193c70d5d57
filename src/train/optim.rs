//! SGD with momentum and weight decay whose state this project owns (tch's `nn::Sgd` keeps its
//! momentum buffers inside libtorch, where they cannot be saved). Each step runs the same operations
//! as `torch.optim.SGD` (tested against it in tests/optim.rs).

use crate::shim::{SgdParams, clear_grads, fused_sgd_step_lr_tensor, sgd_step};
use anyhow::Result;
use tch::{Tensor, nn};

/// SGD's hyperparameters besides the learning rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdSettings {
    pub momentum: f64,
    pub weight_decay: f64,
}

impl SgdSettings {
    /// The paper's (Sec. 3.4 and 4.2): momentum 0.9, weight decay 1e-4.
    pub const PAPER: SgdSettings = SgdSettings { momentum: 0.9, weight_decay: 1e-4 };
}

/// SGD over a var store's trainable variables, in their name order.
#[derive(Debug)]
pub struct Sgd {
    /// Variable names, sorted; the order of `params` and `buffers`.
    pub names: Vec<String>,
    pub params: Vec<Tensor>,
    /// Momentum buffers, `None` until the first step.
    pub buffers: Vec<Option<Tensor>>,
    pub momentum: f64,
    pub weight_decay: f64,
    /// One fused kernel per tensor (`torch.optim.SGD(fused=True)`) instead of the multi-tensor
    /// path: the default on CUDA, where it saves kernel launches; on the CPU the multi-tensor path
    /// stays, so CPU runs keep their bytes.
    pub fused: bool,
}

impl Sgd {
    /// `torch.optim.SGD(params, lr, momentum, weight_decay=...)`. NOTE: as in the paper's
    /// implementations (fb.resnet.torch, torchvision), weight decay applies to every parameter, BN
    /// gamma/beta and the fc bias included.
    pub fn new(vs: &nn::VarStore, momentum: f64, weight_decay: f64) -> Self {
        let vars = vs.variables();
        let mut names: Vec<String> =
            vars.iter().filter(|(_, t)| t.requires_grad()).map(|(n, _)| n.clone()).collect();
        names.sort();
        let params: Vec<Tensor> = names.iter().map(|n| vars[n].shallow_clone()).collect();
        let buffers = (0..params.len()).map(|_| None).collect();
        let fused = vs.device().is_cuda();
        Sgd { names, params, buffers, momentum, weight_decay, fused }
    }

    /// Drops every parameter's gradient (PyTorch's `zero_grad()`, set_to_none).
    pub fn zero_grad(&mut self) -> Result<()> {
        clear_grads(&self.params)
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let h = self.hyper(lr);
        sgd_step(&self.params, &mut self.buffers, h)
    }

    /// One update in the fused kernel with the learning rate read from the device scalar `lr`
    /// (see [`fused_sgd_step_lr_tensor`]), the update a captured CUDA graph replays. Needs every
    /// momentum buffer: one step with [`Sgd::step`] first.
    pub fn step_lr_tensor(&mut self, lr: &Tensor) -> Result<()> {
        fused_sgd_step_lr_tensor(&self.params, &self.buffers, lr, self.hyper(f64::NAN))
    }

    /// Whether every parameter has its momentum buffer (or there is no momentum).
    pub fn has_buffers(&self) -> bool {
        self.momentum == 0.0 || self.buffers.iter().all(Option::is_some)
    }

    fn hyper(&self, lr: f64) -> SgdParams {
        SgdParams { lr, momentum: self.momentum, weight_decay: self.weight_decay, fused: self.fused }
    }
}

impl Sgd {
    /// Saves the momentum buffers as safetensors, each under its parameter's name.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        // Contiguous copies: safetensors holds the default layout (buffers may be channels_last).
        let owned: Vec<(&str, Tensor)> = self
            .names
            .iter()
            .zip(&self.buffers)
            .filter_map(|(n, b)| b.as_ref().map(|b| (n.as_str(), b.contiguous())))
            .collect();
        let named: Vec<(&str, &Tensor)> = owned.iter().map(|(n, t)| (*n, t)).collect();
        crate::fsutil::write_with(path, |tmp| {
            Tensor::write_safetensors(&named, tmp).map_err(anyhow::Error::from)
        })
    }

    /// Loads momentum buffers saved by [`Sgd::save`] (parameters absent from the file get none), each
    /// laid out like its parameter.
    pub fn load(&mut self, path: &std::path::Path) -> Result<()> {
        let saved = Tensor::read_safetensors(path)
            .map_err(|e| anyhow::anyhow!("reading optimizer state {}: {e}", path.display()))?;
        let mut by_name: std::collections::HashMap<String, Tensor> = saved.into_iter().collect();
        for (i, name) in self.names.iter().enumerate() {
            self.buffers[i] = match by_name.remove(name) {
                Some(t) => {
                    let p = &self.params[i];
                    anyhow::ensure!(
                        t.size() == p.size() && t.kind() == p.kind(),
                        "{}: momentum buffer {name} is {:?} {:?}, the parameter {:?} {:?}",
                        path.display(),
                        t.kind(),
                        t.size(),
                        p.kind(),
                        p.size()
                    );
                    let mut buf = p.detach().empty_like();
                    tch::no_grad(|| buf.copy_(&t));
                    Some(buf)
                }
                None => None,
            };
        }
        if let Some(extra) = by_name.keys().next() {
            anyhow::bail!("{}: momentum buffer {extra} matches no parameter of this network", path.display());
        }
        Ok(())
    }
}
