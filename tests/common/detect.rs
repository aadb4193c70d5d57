//! A tiny detector on tiny scenes, for the detection tests: CIFAR ResNet-8 in Faster R-CNN on
//! 48x48 scenes of synthetic items.

use resnet_repro::data::ImageSet;
use resnet_repro::detect::FasterRcnn;
use resnet_repro::detect::scenes::{SceneSet, SceneSettings, generate};
use resnet_repro::detect::settings::DetectorConfig;
use resnet_repro::detect::train::DetectionRecipe;
use resnet_repro::models::CifarNet;
use tch::{Device, Kind, Tensor, nn};

/// `n` 28x28 items, item `i` a filled rectangle (values 1..=255) at a position and size of its
/// own, label `i % 10`.
pub fn items(n: i64) -> ImageSet {
    let images = Tensor::zeros([n, 1, 28, 28], (Kind::Uint8, Device::Cpu));
    for i in 0..n {
        let (x, y, w, h) = (i % 7, (i * 3) % 9, 10 + i % 11, 8 + (i * 5) % 13);
        let _ = images.get(i).narrow(1, y, h).narrow(2, x, w).fill_(40 + (i * 37) % 216);
    }
    ImageSet { images, labels: Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(10) }
}

/// `iterations` updates of 2 scenes, the rate divided by 10 at 3, a row each update.
pub fn tiny_recipe(iterations: u64) -> DetectionRecipe {
    DetectionRecipe {
        iterations,
        images_per_step: 2,
        lr: 0.01,
        milestones: vec![3],
        momentum: 0.9,
        weight_decay: 1e-4,
        flip: true,
        frozen_parts: 1,
        log_every: 1,
        checkpoint_every: 2,
    }
}

/// A CIFAR ResNet-8 on 1-channel 48x48 scenes, seeded.
pub fn tiny_detector(seed: i64) -> (nn::VarStore, FasterRcnn) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = CifarNet { in_channels: 1, image_size: 28, ..CifarNet::resnet(8) };
    let backbone = net.build(&(vs.root() / "backbone")).unwrap();
    let cfg = DetectorConfig {
        anchor_sizes: vec![12.0, 24.0],
        rpn_pre_nms: [200, 100],
        rpn_post_nms: [50, 20],
        rpn_batch: 32,
        regions_per_image: 16,
        pooled: 6,
        ..DetectorConfig::default()
    };
    let (rpn, head) = cfg.settings().unwrap();
    let det = FasterRcnn::new(&vs.root(), backbone, 11, rpn, head).unwrap();
    (vs, det)
}

/// 8 scenes of 48x48 with 1-3 items each.
pub fn tiny_scenes() -> SceneSet {
    let s = SceneSettings { size: 48, items: (1, 3), sides: (12, 24), tries: 20 };
    SceneSet { scenes: generate(&items(40), 8, 2, &s).unwrap(), mean: 0.2 }
}
