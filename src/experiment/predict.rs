//! A trained network used on image files (`predict`): the run's network and weights, each file
//! brought to the network's input as the run's test protocol does (CIFAR-style: the shorter side
//! resized to the input's, centre-cropped, grey or colour as the network takes, the training
//! images' per-pixel mean subtracted; ImageNet-style: the centre crop of the run's geometry and
//! its normalisation), and the top classes with their probabilities. A file that cannot be read
//! is an error for that file alone.

use super::config::RunConfig;
use super::store::RunDir;
use crate::data::Protocol;
use crate::data::folder::decode;
use crate::data::small_folder::{is_grey, shrink, to_chw};
use crate::data::{DataConfig, DataOptions, Dataset, Prepared};
use crate::eval::views::test_views;
use crate::models::{NetSpec, ResNet, load_net};
use anyhow::{Context, Result, bail};
use fast_image_resize::Resizer;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// A network ready to classify files.
pub struct Predictor {
    pub config: RunConfig,
    net: ResNet,
    _vs: tch::nn::VarStore,
    device: Device,
    /// Class names, by label.
    pub classes: Vec<String>,
    /// CIFAR-style: the training images' per-pixel mean, 1 x C x H x W.
    mean: Option<Tensor>,
}

/// One class of a file's top ones.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ranked {
    pub index: usize,
    pub class: String,
    pub probability: f64,
}

/// What became of one file.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub file: PathBuf,
    /// The top classes, most probable first (empty if the file failed).
    pub top: Vec<Ranked>,
    /// How the file was changed to fit the network (converted to grey, resized, ...).
    pub notes: Vec<String>,
    /// Why the file could not be classified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Predictor {
    /// The network of `config` with `weights`; the class names and per-pixel mean from `run`
    /// (its `class_index.csv` and `data_mean.safetensors`), else from the dataset in `data` where
    /// it can be read, else (names) `class <i>`.
    pub fn new(
        config: RunConfig,
        weights: &Path,
        run: &RunDir,
        data: &DataOptions,
        device: Device,
    ) -> Result<Self> {
        let format = config.train.layout.resolve(device);
        let (vs, net) = load_net(&config.net, weights, device, format)?;
        let tensors = config.data.tensors().is_some();
        let mut dataset: Option<Dataset> = None;
        let numbered = || (0..classes_of(&config.net)).map(|i| format!("class {i}")).collect::<Vec<_>>();
        let classes = match run.class_names()? {
            Some(names) => names,
            None if !tensors => numbered(),
            None => match loaded(&mut dataset, &config.data, data) {
                Ok(ds) => ds.classes.clone(),
                Err(_) => numbered(),
            },
        };
        let mean = if !tensors {
            None
        } else if run.data_mean().is_file() {
            let path = run.data_mean();
            let t = Tensor::read_safetensors(&path).with_context(|| format!("reading {}", path.display()))?;
            Some(t.into_iter().next().context("an empty data_mean.safetensors")?.1.to_device(device))
        } else {
            let ds = loaded(&mut dataset, &config.data, data).with_context(|| {
                format!(
                    "{} has no data_mean.safetensors, and the training set it would come from could not be read \
                     (pass --data-dir to the folder with {})",
                    run.path.display(),
                    config.data.dataset().pretty()
                )
            })?;
            let opts = config.data.tensors().expect("tensor data");
            Some(Prepared::new(ds, opts.val_split, device)?.mean)
        };
        Ok(Predictor { config, net, _vs: vs, device, classes, mean })
    }

    /// The network's input for `file`, and how the file was changed to fit it.
    fn input(&self, file: &Path, resizer: &mut Resizer) -> Result<(Tensor, Vec<String>)> {
        let img = decode(file)?;
        let mut notes = Vec::new();
        match (&self.config.net, &self.config.data) {
            (NetSpec::Cifar(net), _) => {
                let (c, side) = (net.in_channels, net.image_size as u32);
                match (c, is_grey(&img)) {
                    (1, false) => notes.push("colour converted to grey".to_string()),
                    (3, true) => notes.push("grey converted to colour".to_string()),
                    _ => {}
                }
                if (img.width(), img.height()) != (side, side) {
                    notes.push(format!(
                        "{}x{} resized and centre-cropped to {side}x{side}",
                        img.width(),
                        img.height()
                    ));
                }
                let pixels = to_chw(&shrink(&img, side, resizer)?, c);
                let x = Tensor::from_slice(&pixels).view([1, c, i64::from(side), i64::from(side)]);
                let mean = self.mean.as_ref().context("no per-pixel mean")?;
                Ok((x.to_device(self.device).to_kind(Kind::Float) / 255.0 - mean, notes))
            }
            (NetSpec::ImageNet(_), DataConfig::ImageNet(o)) => {
                if is_grey(&img) {
                    notes.push("grey converted to colour".to_string());
                }
                let rgb = img.to_rgb8();
                let view = test_views(&rgb, Protocol::Center, &o.geometry, &o.transform.normalize, resizer)?
                    .pop()
                    .context("no centre view")?;
                let (w, h) = (i64::from(view.width), i64::from(view.height));
                notes.push(format!(
                    "{}x{} resized to shorter side {} and centre-cropped to {w}x{h}",
                    img.width(),
                    img.height(),
                    o.geometry.resize
                ));
                let x = Tensor::from_slice(&view.data).view([1, h, w, 3]).permute([0, 3, 1, 2]);
                Ok((x.to_device(self.device), notes))
            }
            (NetSpec::ImageNet(_), d) => bail!("an ImageNet network trained on {}", d.dataset()),
        }
    }

    /// The `top` most probable classes of each file, in the order given.
    pub fn predict(&self, files: &[PathBuf], top: usize) -> Vec<Prediction> {
        let mut resizer = Resizer::new();
        let format = self.config.train.layout.resolve(self.device);
        files
            .iter()
            .map(|file| {
                let ranked = self.input(file, &mut resizer).and_then(|(x, notes)| {
                    let x = crate::shim::contiguous(&x, format)?;
                    let p = tch::no_grad(|| {
                        tch::nn::ModuleT::forward_t(&self.net, &x, false).softmax(1, Kind::Float)
                    });
                    Ok((self.rank(&p.get(0), top)?, notes))
                });
                match ranked {
                    Ok((top, notes)) => Prediction { file: file.clone(), top, notes, error: None },
                    Err(e) => Prediction {
                        file: file.clone(),
                        top: vec![],
                        notes: vec![],
                        error: Some(naming(file, &format!("{e:#}"))),
                    },
                }
            })
            .collect()
    }

    fn rank(&self, probabilities: &Tensor, top: usize) -> Result<Vec<Ranked>> {
        let k = top.min(self.classes.len()).max(1) as i64;
        let (p, i) = probabilities.topk(k, 0, true, true);
        let (p, i) = (Vec::<f64>::try_from(&p.to_kind(Kind::Double))?, Vec::<i64>::try_from(&i)?);
        Ok(i.iter()
            .zip(p)
            .map(|(&i, probability)| {
                let index = i as usize;
                let class = self.classes.get(index).cloned().unwrap_or_else(|| format!("class {index}"));
                Ranked { index, class, probability }
            })
            .collect())
    }
}

/// `message`, led by the file's name unless it already names it.
fn naming(file: &Path, message: &str) -> String {
    let name = file.display().to_string();
    if message.contains(&name) { message.to_string() } else { format!("{name}: {message}") }
}

/// The dataset in `slot`, loaded on first use.
fn loaded<'a>(slot: &'a mut Option<Dataset>, config: &DataConfig, data: &DataOptions) -> Result<&'a Dataset> {
    if slot.is_none() {
        *slot = Some(Dataset::load(config, data)?);
    }
    Ok(slot.as_ref().expect("just loaded"))
}

fn classes_of(net: &NetSpec) -> usize {
    match net {
        NetSpec::Cifar(n) => n.num_classes as usize,
        NetSpec::ImageNet(n) => n.num_classes as usize,
    }
}

/// The image files of `paths`: files as given, folders walked (sorted, recursively) for files with
/// an image's ending.
pub fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            found.sort();
            if found.is_empty() {
                bail!("{}: no image files in it", p.display());
            }
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| crate::data::folder::IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
    Ok(())
}
