//! The detection building blocks against torchvision's (tests/python/detect_reference.py writes
//! seeded inputs and torchvision 0.26's outputs): anchors, box coding, IoU, clipping, NMS and RoI
//! max pooling with its gradient, in float64 and float32. The same formulas in the same order give
//! the same floats, so most comparisons are exact; where not, the tolerance says why.

mod common;

use resnet_repro::detect::{
    Anchors, BoxCoder, Matcher, Rpn, RpnSettings, Sampler, batched_nms, box_iou, clip_to_image, keep_large,
    nms, roi_pool,
};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

fn reference() -> HashMap<String, Tensor> {
    static ONCE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = ONCE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("resnet-repro-detect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        common::run_python_reference("detect_reference.py", &[dir.as_os_str()]);
        dir
    });
    Tensor::read_safetensors(dir.join("detect.safetensors")).unwrap().into_iter().collect()
}

fn get<'a>(r: &'a HashMap<String, Tensor>, name: &str) -> &'a Tensor {
    r.get(name).unwrap_or_else(|| panic!("the reference has no {name}"))
}

/// Exactly equal: same shape, same kind, same values.
fn assert_same(ours: &Tensor, theirs: &Tensor, what: &str) {
    assert_eq!(ours.size(), theirs.size(), "{what}: shapes");
    assert_eq!(ours.kind(), theirs.kind(), "{what}: kinds");
    let differ = ours.ne_tensor(theirs).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(differ, 0, "{what}: {differ} values differ");
}

#[test]
fn anchors_equal_torchvisions() {
    let r = reference();
    let voc = Anchors::voc().grid((38, 63), (16, 16), Kind::Double, Device::Cpu);
    assert_same(&voc, get(&r, "anchors_voc"), "VOC anchors");
    assert_eq!(voc.size(), [38 * 63 * 9, 4]);
    let odd = Anchors { sizes: vec![24.0, 50.0, 90.0], ratios: vec![0.3, 1.0, 1.7, 3.0] };
    let stride = resnet_repro::detect::anchors::stride_of((40, 56), (5, 7));
    assert_same(&odd.grid((5, 7), stride, Kind::Double, Device::Cpu), get(&r, "anchors_odd"), "odd anchors");
}

#[test]
fn box_coding_iou_and_clipping_equal_torchvisions() {
    let r = reference();
    let (refs, targets, codes) = (get(&r, "refs"), get(&r, "targets"), get(&r, "codes"));
    for (name, coder) in [("rpn", BoxCoder::RPN), ("head", BoxCoder::HEAD)] {
        assert_same(&coder.encode(targets, refs).unwrap(), get(&r, &format!("encoded_{name}")), name);
        let decoded = coder.decode(codes, refs);
        assert_same(&decoded, get(&r, &format!("decoded_{name}")), name);
        // Decoding what was encoded gives the targets back (up to float64 rounding of log/exp).
        let back = coder.decode(&coder.encode(targets, refs).unwrap(), refs);
        let err = (back - targets).abs().max().double_value(&[]);
        assert!(err < 1e-9, "{name}: round trip off by {err}");
    }
    assert_same(&box_iou(refs, targets), get(&r, "iou"), "IoU");
    assert_same(&clip_to_image(&(refs * 1.5 - 100.0), (333, 444)), get(&r, "clipped"), "clipped");
    assert_same(&keep_large(refs, 60.0), get(&r, "large"), "boxes of at least 60 pixels");
    // A code past the clip decodes to exp(log(1000 / 16)) = 62.5 times the reference's width.
    let codes_big = Tensor::from_slice(&[0.0, 0.0, 9.0, 9.0]).reshape([1, 4]);
    let one = resnet_repro::detect::boxes::from_rows(&[[0.0, 0.0, 2.0, 2.0]], Kind::Double);
    let decoded = BoxCoder::RPN.decode(&codes_big, &one);
    let w = decoded.double_value(&[0, 2]) - decoded.double_value(&[0, 0]);
    assert!((w - 125.0).abs() < 1e-9, "clipped width {w}");
    assert!(BoxCoder::RPN.encode(refs, &refs.narrow(0, 0, 3)).is_err());
}

#[test]
fn nms_keeps_what_torchvision_keeps() {
    let r = reference();
    for tag in ["f64", "f32"] {
        let (b, s) = (get(&r, &format!("nms_boxes_{tag}")), get(&r, &format!("nms_scores_{tag}")));
        for t in [3, 7] {
            let keep = nms(b, s, t as f64 / 10.0).unwrap();
            let theirs = get(&r, &format!("nms_keep_{tag}_{t}"));
            assert_same(&keep, theirs, &format!("nms {tag} at 0.{t}"));
            // Something was suppressed and something kept: the comparison means something.
            assert!(keep.size()[0] > 10 && keep.size()[0] < 600, "{tag} 0.{t}: kept {}", keep.size()[0]);
        }
    }
    for n in [400, 1500] {
        let b = get(&r, &format!("bnms_boxes_{n}"));
        let (s, c) = (get(&r, &format!("bnms_scores_{n}")), get(&r, &format!("bnms_classes_{n}")));
        let keep = batched_nms(b, s, c, 0.5).unwrap();
        assert_same(&keep, get(&r, &format!("bnms_keep_{n}")), &format!("batched nms of {n}"));
        // Per class it is plain NMS: more is kept than by NMS across the classes.
        assert!(keep.size()[0] > nms(b, s, 0.5).unwrap().size()[0]);
    }
    assert!(
        nms(
            &Tensor::zeros([3, 4], (Kind::Double, Device::Cpu)),
            &Tensor::zeros([2], (Kind::Double, Device::Cpu)),
            0.5
        )
        .is_err()
    );
}

#[test]
fn roi_pooling_and_its_gradient_equal_torchvisions() {
    let r = reference();
    for tag in ["f64", "f32"] {
        let rois = get(&r, &format!("rois_{tag}"));
        for (size, scale) in [((7, 7), "0.0625"), ((14, 10), "0.0625"), ((5, 6), "0.05")] {
            let key = format!("roi_{tag}_{}x{}_{scale}", size.0, size.1);
            let f = get(&r, &format!("roi_features_{tag}")).detach().set_requires_grad(true);
            let pooled = roi_pool(&f, rois, size, scale.parse().unwrap()).unwrap();
            // Maxima of the same values: exact.
            assert_same(&pooled, get(&r, &format!("{key}_pooled")), &key);
            let w = get(&r, &format!("{key}_weights"));
            let grad = Tensor::run_backward(&[(&pooled * w).sum(pooled.kind())], &[&f], false, false);
            // Each position receives the sum of the weights of the bins it is the maximum of:
            // the same terms, summed in another order where bins overlap (float32: ~1e-6).
            let diff = (&grad[0] - get(&r, &format!("{key}_grad"))).abs().max().double_value(&[]);
            let tol = if tag == "f64" { 1e-12 } else { 1e-5 };
            assert!(diff < tol, "{key}: gradients differ by {diff}");
        }
    }
}

#[test]
fn roi_pooling_refuses_what_it_cannot_pool() {
    let f = Tensor::zeros([1, 2, 8, 8], (Kind::Float, Device::Cpu));
    let bad_image = Tensor::from_slice(&[3.0f32, 0.0, 0.0, 4.0, 4.0]).reshape([1, 5]);
    let e = roi_pool(&f, &bad_image, (2, 2), 1.0).unwrap_err();
    assert!(format!("{e:#}").contains("image 3 in a batch of 1"), "{e:#}");
    assert!(roi_pool(&f, &Tensor::zeros([1, 4], (Kind::Float, Device::Cpu)), (2, 2), 1.0).is_err());
    let none = roi_pool(&f, &Tensor::zeros([0, 5], (Kind::Float, Device::Cpu)), (3, 2), 1.0).unwrap();
    assert_eq!(none.size(), [0, 2, 3, 2]);
}

#[test]
fn matching_and_sampling_equal_torchvisions() {
    let r = reference();
    let quality = get(&r, "quality");
    assert_same(&Matcher::RPN.assign(quality).unwrap(), get(&r, "matches_rpn"), "the RPN's matches");
    assert_same(&Matcher::HEAD.assign(quality).unwrap(), get(&r, "matches_head"), "the head's matches");
    assert!(Matcher::RPN.assign(&quality.narrow(0, 0, 0)).is_err(), "no ground truth");
    // The same draws from libtorch's generator as torchvision's, seeded alike.
    let _lock = common::rng_lock();
    let labels = get(&r, "sample_labels");
    tch::manual_seed(11);
    for (i, l) in [labels.shallow_clone(), labels.narrow(0, 0, 100)].iter().enumerate() {
        let (pos, neg) = Sampler::RPN.sample(l);
        assert_same(&pos.to_kind(Kind::Uint8), get(&r, &format!("sample_pos_{i}")), "positives");
        assert_same(&neg.to_kind(Kind::Uint8), get(&r, &format!("sample_neg_{i}")), "negatives");
        let n = pos.sum(Kind::Int64).int64_value(&[]) + neg.sum(Kind::Int64).int64_value(&[]);
        assert_eq!(
            n,
            256.min(l.ge(0).sum(Kind::Int64).int64_value(&[])),
            "a batch of 256 where there are enough"
        );
    }
}

#[test]
fn the_rpn_proposes_and_loses_as_torchvisions() {
    let r = reference();
    let dir = std::env::temp_dir().join(format!("resnet-repro-detect-{}", std::process::id()));
    let mut vs = tch::nn::VarStore::new(Device::Cpu);
    let anchors = Anchors { sizes: vec![16.0, 32.0, 64.0], ratios: vec![0.5, 1.0, 2.0] };
    // Fewer than the 720 anchors kept before NMS, so that the cut is tested too.
    let settings = RpnSettings { anchors, pre_nms_top_n: (600, 500), ..Default::default() };
    let rpn = Rpn::new(&vs.root(), 8, settings).unwrap();
    vs.load(dir.join("rpn.safetensors")).unwrap();
    vs.double();
    let features = get(&r, "rpn_features");
    let sizes = [(128, 160), (120, 150)];
    let (test, losses) = tch::no_grad(|| rpn.forward(features, (128, 160), &sizes, None, false)).unwrap();
    assert!(losses.is_none());
    for (i, p) in test.iter().enumerate() {
        assert_same(p, get(&r, &format!("rpn_test_{i}")), "test proposals");
    }
    let gt = [get(&r, "rpn_gt_0").shallow_clone(), get(&r, "rpn_gt_1").shallow_clone()];
    let _lock = common::rng_lock();
    tch::manual_seed(7);
    let (train, losses) = rpn.forward(features, (128, 160), &sizes, Some(&gt), true).unwrap();
    for (i, p) in train.iter().enumerate() {
        assert_same(p, get(&r, &format!("rpn_train_{i}")), "training proposals");
    }
    let losses = losses.unwrap();
    let boxes = losses.boxes.double_value(&[]);
    let theirs = get(&r, "rpn_loss_boxes").double_value(&[0]);
    assert!((boxes - theirs).abs() <= 1e-12 * theirs && theirs > 0.0, "box loss {boxes} against {theirs}");
    // torchvision's labels are float32, so its objectness loss is float32 (rounded to ~6e-8).
    let obj = losses.objectness.double_value(&[]);
    let theirs = get(&r, "rpn_loss_objectness").double_value(&[0]);
    assert!((obj - theirs).abs() <= 1e-6 * theirs && theirs > 0.0, "objectness loss {obj} against {theirs}");
    // The losses train the head: both have gradients.
    let grads =
        Tensor::run_backward(&[&losses.objectness + &losses.boxes], &vs.trainable_variables(), false, false);
    assert!(grads.iter().all(|g| g.abs().sum(Kind::Double).double_value(&[]) > 0.0));
}
