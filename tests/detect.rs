//! The detection building blocks against torchvision's (tests/python/detect_reference.py writes
//! seeded inputs and torchvision 0.26's outputs): anchors, box coding, IoU, clipping, NMS and RoI
//! max pooling with its gradient, in float64 and float32. The same formulas in the same order give
//! the same floats, so most comparisons are exact; where not, the tolerance says why.

mod common;

use resnet_repro::detect::{
    Anchors, BoxCoder, FasterRcnn, HeadSettings, Matcher, Rpn, RpnSettings, Sampler, Target, batched_nms,
    box_iou, clip_to_image, keep_large, nms, roi_pool,
};
use resnet_repro::detect::{ApMetric, average_precision};
use resnet_repro::models::ImageNetNet;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// The folder the Python reference wrote (once per test process).
fn reference_dir() -> &'static std::path::Path {
    static ONCE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("resnet-repro-detect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        common::run_python_reference("detect_reference.py", &[dir.as_os_str()]);
        dir
    })
}

fn reference() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(reference_dir().join("detect.safetensors")).unwrap().into_iter().collect()
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
        let decoded = coder.decode(codes, refs).unwrap();
        assert_same(&decoded, get(&r, &format!("decoded_{name}")), name);
        // Decoding what was encoded gives the targets back (up to float64 rounding of log/exp).
        let back = coder.decode(&coder.encode(targets, refs).unwrap(), refs).unwrap();
        let err = (back - targets).abs().max().double_value(&[]);
        assert!(err < 1e-9, "{name}: round trip off by {err}");
    }
    assert_same(&box_iou(refs, targets), get(&r, "iou"), "IoU");
    assert_same(&clip_to_image(&(refs * 1.5 - 100.0), (333, 444)), get(&r, "clipped"), "clipped");
    assert_same(&keep_large(refs, 60.0), get(&r, "large"), "boxes of at least 60 pixels");
    // A code past the clip decodes to exp(log(1000 / 16)) = 62.5 times the reference's width.
    let codes_big = Tensor::from_slice(&[0.0, 0.0, 9.0, 9.0]).reshape([1, 4]);
    let one = Tensor::from_slice(&[0.0, 0.0, 2.0, 2.0]).reshape([1, 4]);
    let decoded = BoxCoder::RPN.decode(&codes_big, &one).unwrap();
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
    // Building the RPN draws its init from libtorch's generator: not while another test samples.
    let _lock = common::rng_lock();
    let r = reference();
    let mut vs = tch::nn::VarStore::new(Device::Cpu);
    let anchors = Anchors { sizes: vec![16.0, 32.0, 64.0], ratios: vec![0.5, 1.0, 2.0] };
    // Fewer than the 720 anchors kept before NMS, so that the cut is tested too.
    let settings = RpnSettings { anchors, pre_nms_top_n: (600, 500), ..Default::default() };
    let rpn = Rpn::new(&vs.root(), 8, settings).unwrap();
    vs.double();
    vs.load(reference_dir().join("rpn.safetensors")).unwrap();
    let features = get(&r, "rpn_features");
    let sizes = [(128, 160), (120, 150)];
    let (test, losses) = tch::no_grad(|| rpn.forward(features, (128, 160), &sizes, None, false)).unwrap();
    assert!(losses.is_none());
    for (i, p) in test.iter().enumerate() {
        assert_same(p, get(&r, &format!("rpn_test_{i}")), "test proposals");
    }
    let gt = [get(&r, "rpn_gt_0").shallow_clone(), get(&r, "rpn_gt_1").shallow_clone()];
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

/// Within `tol` of `theirs`, relative to the largest magnitude of `theirs`.
fn assert_close(ours: &Tensor, theirs: &Tensor, tol: f64, what: &str) {
    assert_eq!(ours.size(), theirs.size(), "{what}: shapes");
    let scale = theirs.abs().max().double_value(&[]).max(1e-300);
    let diff = (ours - theirs).abs().max().double_value(&[]) / scale;
    assert!(diff <= tol, "{what}: off by {diff:.3e} of its scale");
}

#[test]
fn faster_rcnn_c4_on_resnet18_equals_torchvisions_stage_by_stage() {
    let _lock = common::rng_lock();
    assert_c4_equals_torchvision(18, &reference(), &reference_dir().join("detector.safetensors"));
}

/// The same on ResNet-101 at the paper's scale (VOC's 21 classes and anchors, images of 600x1000
/// and 600x800): minutes of this CPU in float64, so opt-in:
/// `scripts/with-torch cargo test --release --test detect -- --ignored`.
#[test]
#[ignore = "minutes: run with --ignored"]
fn faster_rcnn_c4_on_resnet101_at_the_papers_scale_equals_torchvisions_stage_by_stage() {
    let _lock = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    common::run_python_reference("detect_resnet101_reference.py", &[dir.path().as_os_str()]);
    let r: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join("detect.safetensors")).unwrap().into_iter().collect();
    assert_c4_equals_torchvision(101, &r, &dir.path().join("detector.safetensors"));
}

/// Our Faster R-CNN C4 on torchvision's ResNet-`depth`, loaded with `weights`, against the stages
/// `r` holds (tests/python/c4_reference.py): its batch, image sizes, anchor sizes and classes.
fn assert_c4_equals_torchvision(depth: usize, r: &HashMap<String, Tensor>, weights: &std::path::Path) {
    let mut vs = tch::nn::VarStore::new(Device::Cpu);
    let backbone = ImageNetNet::torchvision(depth).build(&(vs.root() / "backbone")).unwrap();
    let sizes: Vec<(i64, i64)> = Vec::<i64>::try_from(get(r, "det_sizes").reshape([-1]))
        .unwrap()
        .chunks(2)
        .map(|c| (c[0], c[1]))
        .collect();
    let rpn = RpnSettings {
        anchors: Anchors {
            sizes: Vec::<f64>::try_from(get(r, "det_anchor_sizes")).unwrap(),
            ratios: vec![0.5, 1.0, 2.0],
        },
        ..Default::default()
    };
    let classes = get(r, "det_classes").int64_value(&[0]);
    let det = FasterRcnn::new(&vs.root(), backbone, classes, rpn, HeadSettings::default()).unwrap();
    assert_eq!((det.shared, det.stride), (3, 16));
    vs.double();
    let missing = vs.load_partial(weights).unwrap();
    assert_eq!(missing.len(), 2, "only the classifier's fc is not the detector's: {missing:?}");
    let images = get(r, "det_images");
    // Float64 throughout. Frozen BN is computed as x * scale + shift by torchvision and by
    // libtorch's batch_norm here: the features agree to ~1e-15 and every later stage inherits it.
    let tol = 1e-10;
    let pass = tch::no_grad(|| det.forward(images, &sizes, None)).unwrap();
    assert_close(&pass.features, get(r, "det_test_features"), tol, "shared features");
    for i in 0..sizes.len() {
        assert_close(&pass.proposals[i], get(r, &format!("det_test_proposals_{i}")), tol, "test proposals");
    }
    assert_close(&pass.pooled.narrow(0, 0, 64), get(r, "det_test_pooled"), tol, "pooled regions");
    assert_close(&pass.logits, get(r, "det_test_logits"), tol, "class logits");
    assert_close(&pass.deltas, get(r, "det_test_deltas"), tol, "box deltas");
    // The detections, from ours and from torchvision's own logits, deltas and proposals (the
    // postprocessing alone): RoI max pooling gives regions that round to the same bins equal
    // scores, and NMS meets them in index order, as torchvision's stable sort does.
    let theirs: Vec<Tensor> =
        (0..sizes.len()).map(|i| get(r, &format!("det_test_proposals_{i}")).shallow_clone()).collect();
    let (logits, deltas) = (get(r, "det_test_logits"), get(r, "det_test_deltas"));
    let from_theirs = resnet_repro::detect::head::detect(&det.head, logits, deltas, &theirs, &sizes).unwrap();
    for (i, (ours, d)) in pass.detections.iter().zip(&from_theirs).enumerate() {
        assert!(d.boxes.size()[0] > 10, "image {i}: {} detections, too few to compare", d.boxes.size()[0]);
        assert_same(&d.boxes, get(r, &format!("det_test_boxes_{i}")), "detected boxes");
        assert_same(&d.scores, get(r, &format!("det_test_scores_{i}")), "detection scores");
        assert_same(&d.labels, get(r, &format!("det_test_labels_{i}")), "detection labels");
        assert_close(&ours.boxes, get(r, &format!("det_test_boxes_{i}")), tol, "detected boxes");
        assert_close(&ours.scores, get(r, &format!("det_test_scores_{i}")), tol, "detection scores");
        assert_same(&ours.labels, get(r, &format!("det_test_labels_{i}")), "detection labels");
    }
    let truth: Vec<Target> = (0..sizes.len())
        .map(|i| Target {
            boxes: get(r, &format!("det_gt_boxes_{i}")).shallow_clone(),
            labels: get(r, &format!("det_gt_labels_{i}")).shallow_clone(),
        })
        .collect();
    tch::manual_seed(9);
    let pass = tch::no_grad(|| det.forward(images, &sizes, Some(&truth))).unwrap();
    for i in 0..sizes.len() {
        assert_close(&pass.regions[i], get(r, &format!("det_train_regions_{i}")), tol, "sampled regions");
    }
    assert_close(&pass.pooled.narrow(0, 0, 64), get(r, "det_train_pooled"), tol, "pooled regions (training)");
    assert_close(&pass.logits, get(r, "det_train_logits"), tol, "class logits (training)");
    let losses = pass.losses.unwrap();
    for (ours, name, tol) in [
        (&losses.rpn.objectness, "loss_objectness", 1e-6), // float32 in torchvision (its labels)
        (&losses.rpn.boxes, "loss_rpn_box_reg", tol),
        (&losses.classification, "loss_classifier", tol),
        (&losses.boxes, "loss_box_reg", tol),
    ] {
        let theirs = get(r, &format!("det_train_{name}")).double_value(&[0]);
        let ours = ours.double_value(&[]);
        assert!(
            (ours - theirs).abs() <= tol * theirs.abs() && theirs > 0.0,
            "{name}: {ours} against {theirs}"
        );
    }
}

#[test]
fn the_detector_refuses_bad_ground_truth_and_settings_naming_them() {
    let _lock = common::rng_lock();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let backbone = ImageNetNet::torchvision(18).build(&(vs.root() / "backbone")).unwrap();
    let tiny = RpnSettings { post_nms_top_n: (0, 300), ..Default::default() };
    let e = FasterRcnn::new(&vs.root(), backbone, 3, tiny, HeadSettings::default()).unwrap_err();
    assert!(format!("{e:#}").contains("top-n"), "{e:#}");
    let backbone = ImageNetNet::torchvision(18).build(&(vs.root() / "backbone")).unwrap();
    assert!(
        FasterRcnn::new(&vs.root(), backbone, 1, RpnSettings::default(), HeadSettings::default()).is_err()
    );
    let backbone = ImageNetNet::torchvision(18).build(&(vs.root() / "backbone")).unwrap();
    let det =
        FasterRcnn::new(&vs.root(), backbone, 3, RpnSettings::default(), HeadSettings::default()).unwrap();
    let images = Tensor::zeros([1, 3, 64, 64], (Kind::Float, Device::Cpu));
    let flat = Target {
        boxes: Tensor::from_slice(&[4.0f32, 4.0, 30.0, 30.0, 10.0, 12.0, 10.0, 40.0]).reshape([2, 4]),
        labels: Tensor::from_slice(&[1i64, 2]),
    };
    let e = det.forward(&images, &[(64, 64)], Some(&[flat])).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("image 0") && msg.contains("box 1") && msg.contains("no area"), "{msg}");
    let short = Target {
        boxes: Tensor::from_slice(&[4.0f32, 4.0, 30.0, 30.0]).reshape([1, 4]),
        labels: Tensor::from_slice(&[1i64, 2]),
    };
    assert!(det.forward(&images, &[(64, 64)], Some(&[short])).is_err());
    // No proposal survives (none is that likely): no detections, and no panic on the way.
    let backbone = ImageNetNet::torchvision(18).build(&(vs.root() / "backbone")).unwrap();
    let none = RpnSettings { score_threshold: 2.0, ..Default::default() };
    let det = FasterRcnn::new(&vs.root(), backbone, 3, none, HeadSettings::default()).unwrap();
    let pass = tch::no_grad(|| det.forward(&images, &[(64, 64)], None)).unwrap();
    assert_eq!(pass.proposals[0].size(), [0, 4]);
    assert_eq!(pass.detections[0].boxes.size(), [0, 4]);
}

#[test]
fn voc_average_precision_equals_the_devkits() {
    use resnet_repro::detect::voc_ap::{ImageTruth, Scored};
    let r = reference();
    let rows = |name: &str| Vec::<f64>::try_from(get(&r, name).to_kind(Kind::Double).reshape([-1])).unwrap();
    let (gt_image, gt_boxes, gt_difficult) =
        (rows("voc_gt_image"), rows("voc_gt_boxes"), rows("voc_gt_difficult"));
    let mut truth = vec![ImageTruth::default(); 30];
    for (k, &img) in gt_image.iter().enumerate() {
        let b = &gt_boxes[4 * k..4 * k + 4];
        truth[img as usize].boxes.push([b[0], b[1], b[2], b[3]]);
        truth[img as usize].difficult.push(gt_difficult[k] == 1.0);
    }
    let (det_image, det_score, det_boxes) =
        (rows("voc_det_image"), rows("voc_det_score"), rows("voc_det_boxes"));
    let detections: Vec<Scored> = (0..det_image.len())
        .map(|k| {
            let b = &det_boxes[4 * k..4 * k + 4];
            Scored { image: det_image[k] as usize, score: det_score[k], bbox: [b[0], b[1], b[2], b[3]] }
        })
        .collect();
    for t in [5, 7] {
        for (metric, name) in [(ApMetric::ElevenPoint, "ap07"), (ApMetric::Area, "ap")] {
            let ours = average_precision(&truth, &detections, t as f64 / 10.0, metric).unwrap().unwrap();
            let theirs = get(&r, &format!("voc_{name}_{t}")).double_value(&[0]);
            // The same sums; numpy's np.sum adds pairwise, hence not exactly.
            assert!((ours - theirs).abs() < 1e-12, "{name} at 0.{t}: {ours} against {theirs}");
            assert!(ours > 0.05 && ours < 0.95, "a degenerate AP {ours}");
        }
    }
    // A class without objects (or with difficult ones only) has no AP, rather than NaN.
    let only_difficult = vec![ImageTruth { boxes: vec![[0.0, 0.0, 9.0, 9.0]], difficult: vec![true] }];
    assert_eq!(average_precision(&only_difficult, &detections[..1], 0.5, ApMetric::Area).unwrap(), None);
    assert!(
        average_precision(&truth[..1], &detections, 0.5, ApMetric::Area).is_err(),
        "a detection in image 29 of 1"
    );
}

#[test]
fn coco_average_precision_equals_pycocotools() {
    use resnet_repro::detect::coco_ap::{CocoParams, Detection, GroundTruth, evaluate};
    let dir = std::env::temp_dir().join(format!("resnet-repro-coco-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    common::run_python_reference("coco_eval_reference.py", &[dir.as_os_str()]);
    let text = std::fs::read_to_string(dir.join("coco_eval.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |k: &str| r[k].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect::<Vec<_>>();
    let bbox = |v: &serde_json::Value| -> [f64; 4] {
        let b: Vec<f64> = v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        [b[0], b[1], b[2], b[3]]
    };
    let gts: Vec<GroundTruth> = r["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| GroundTruth {
            image: a["image_id"].as_i64().unwrap(),
            category: a["category_id"].as_i64().unwrap(),
            bbox: bbox(&a["bbox"]),
            area: a["area"].as_f64().unwrap(),
            crowd: a["iscrowd"].as_i64().unwrap() == 1,
        })
        .collect();
    let dets: Vec<Detection> = r["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| Detection {
            image: d["image_id"].as_i64().unwrap(),
            category: d["category_id"].as_i64().unwrap(),
            bbox: bbox(&d["bbox"]),
            score: d["score"].as_f64().unwrap(),
        })
        .collect();
    assert!(gts.iter().any(|g| g.crowd) && dets.len() > 300, "the reference lost its hard cases");
    let (images, categories) = (ids("images"), ids("categories"));
    let stats: Vec<f64> = r["stats"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    // numpy sums pairwise, the evaluator in order: the same matches give means equal to ~1e-16.
    let close = |ours: Option<f64>, theirs: f64, what: &str| {
        let ours = ours.unwrap_or(-1.0);
        assert!((ours - theirs).abs() < 1e-12, "{what}: ours {ours}, pycocotools {theirs}");
    };
    let all = evaluate(&CocoParams::default(), &gts, &dets, &images, &categories);
    close(all.ap, stats[0], "AP@[.5,.95]");
    close(all.ap50, stats[1], "AP@.5");
    close(all.ap75, stats[2], "AP@.75");
    for (i, (c, ap)) in all.per_category.iter().enumerate() {
        let theirs = &r["per_category"][i];
        assert_eq!(*c, theirs[0].as_i64().unwrap());
        match (ap, theirs[1].as_f64()) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "category {c}: ours {a}, pycocotools {b}"),
            (None, None) => {}
            (a, b) => panic!("category {c}: ours {a:?}, pycocotools {b:?}"),
        }
    }
    for (range, stat, what) in [((0.0, 1024.0), stats[3], "small"), ((1024.0, 9216.0), stats[4], "medium")] {
        let p = CocoParams { area_range: range, ..CocoParams::default() };
        close(evaluate(&p, &gts, &dets, &images, &categories).ap, stat, what);
    }
}
