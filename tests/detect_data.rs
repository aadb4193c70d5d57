//! Detection data: PASCAL VOC's and COCO's annotation readers on generated folders (every error
//! naming the file and the field), on real annotation files (deepforest's four aerial photographs
//! and their 951 VOC boxes, read as ElementTree reads them and scored against pycocotools), and
//! image files fed as the paper does (shorter side 600, longer at most 1000, flipped, padded).

mod common;

use resnet_repro::data::transform::Normalize;
use resnet_repro::detect::DetectionSet;
use resnet_repro::detect::coco::read_instances;
use resnet_repro::detect::coco_ap::{CocoParams, Detection, GroundTruth, evaluate};
use resnet_repro::detect::images::{ImageSetFiles, LeftOut, Resize};
use resnet_repro::detect::voc::{CLASSES, read_annotation, read_split};
use std::path::Path;
use tch::{Device, Kind};

fn object(name: &str, b: [&str; 4], difficult: Option<&str>) -> String {
    let d = difficult.map(|d| format!("<difficult>{d}</difficult>")).unwrap_or_default();
    format!(
        "<object><name>{name}</name><pose>Left</pose>{d}<bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax>\
         <ymax>{}</ymax></bndbox></object>",
        b[0], b[1], b[2], b[3]
    )
}

fn annotation(w: u32, h: u32, objects: &[String]) -> String {
    format!(
        "<annotation><folder>VOC2007</folder><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{}</annotation>",
        objects.concat()
    )
}

/// A VOC year folder: `ids` with their annotations, a JPEG of the annotated size each.
fn voc_folder(root: &Path, split: &str, files: &[(&str, u32, u32, String)]) {
    for d in ["Annotations", "ImageSets/Main", "JPEGImages"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let ids: Vec<&str> = files.iter().map(|f| f.0).collect();
    std::fs::write(root.join("ImageSets/Main").join(format!("{split}.txt")), ids.join("\n") + "\n").unwrap();
    for (id, w, h, xml) in files {
        std::fs::write(root.join("Annotations").join(format!("{id}.xml")), xml).unwrap();
        let img = image::RgbImage::from_fn(*w, *h, |x, y| image::Rgb([(x * 2) as u8, (y * 3) as u8, 128]));
        img.save(root.join("JPEGImages").join(format!("{id}.jpg"))).unwrap();
    }
}

#[test]
fn voc_annotations_are_read_as_pixel_edges_with_difficult_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("VOC2007");
    voc_folder(
        &root,
        "trainval",
        &[
            (
                "000005",
                120,
                80,
                annotation(
                    120,
                    80,
                    &[
                        object("chair", ["1", "2", "40", "80"], Some("1")),
                        object("dog", ["50", "10", "120", "11"], None),
                    ],
                ),
            ),
            (
                "000007",
                64,
                48,
                annotation(64, 48, &[object("tvmonitor", ["3.0", "4.0", "30.5", "40"], Some("0"))]),
            ),
        ],
    );
    let images = read_split(&root, "trainval", &CLASSES).unwrap();
    assert_eq!(images.len(), 2);
    let a = &images[0];
    assert_eq!((a.id.as_str(), a.width, a.height), ("000005", 120, 80));
    assert_eq!(a.image, root.join("JPEGImages/000005.jpg"));
    assert_eq!(a.objects[0].bbox, [0.0, 1.0, 40.0, 80.0]);
    assert_eq!((a.objects[0].label, a.objects[0].difficult), (9, true)); // chair: the 9th class
    assert_eq!(
        (a.objects[1].label, a.objects[1].difficult, a.objects[1].bbox),
        (12, false, [49.0, 9.0, 120.0, 11.0])
    );
    assert_eq!((images[1].objects[0].label, images[1].objects[0].bbox), (20, [2.0, 3.0, 30.5, 40.0]));
}

#[test]
fn bad_voc_annotations_are_errors_naming_the_file_and_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            annotation(100, 100, &[object("unicorn", ["1", "1", "10", "10"], None)]),
            vec!["object 1", "\"unicorn\"", "aeroplane"],
        ),
        (
            annotation(
                100,
                100,
                &[object("cat", ["1", "1", "10", "10"], None), object("cat", ["0", "5", "10", "10"], None)],
            ),
            vec!["object 2 (cat) <bndbox>", "xmin 0", "100x100"],
        ),
        (annotation(100, 100, &[object("cat", ["5", "1", "101", "10"], None)]), vec!["xmax 101", "1-based"]),
        (annotation(100, 100, &[object("cat", ["50", "1", "10", "10"], None)]), vec!["xmin 50", "xmax 10"]),
        (annotation(100, 100, &[]), vec!["no <object>"]),
        (annotation(100, 100, &[object("cat", ["1", "1", "ten", "10"], None)]), vec!["<xmax> is \"ten\""]),
        ("<annotation><size><width>5</width></size></annotation>".into(), vec!["<size> has no <height>"]),
        ("<annotation><size>".into(), vec!["not XML"]),
    ];
    for (k, (xml, needles)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("case{k}.xml"));
        std::fs::write(&path, xml).unwrap();
        let e = format!("{:#}", read_annotation(&path, "x.jpg".into(), &CLASSES).unwrap_err());
        assert!(e.contains(&format!("case{k}.xml")), "case {k}: {e}");
        for n in needles {
            assert!(e.contains(n), "case {k}: no {n:?} in {e}");
        }
    }
    let missing = format!("{:#}", read_split(tmp.path(), "trainval", &CLASSES).unwrap_err());
    assert!(
        missing.contains("ImageSets/Main/trainval.txt") && missing.contains("VOCdevkit/VOC2007"),
        "{missing}"
    );
}

fn coco_file(dir: &Path, annotations: &str) -> std::path::PathBuf {
    let text = format!(
        r#"{{"images": [{{"id": 7, "file_name": "a.jpg", "width": 100, "height": 50}},
                        {{"id": 9, "file_name": "b.jpg", "width": 40, "height": 40}}],
            "categories": [{{"id": 18, "name": "dog"}}, {{"id": 1, "name": "person"}}],
            "annotations": [{annotations}]}}"#
    );
    let path = dir.join("instances.json");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn coco_instances_are_read_with_contiguous_labels_and_errors_name_the_annotation() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = coco_file(
        tmp.path(),
        r#"{"id": 1, "image_id": 7, "category_id": 18, "bbox": [10, 5, 20.5, 30], "area": 400.0, "iscrowd": 0},
           {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 100, 50], "area": 4000.0, "iscrowd": 1},
           {"id": 3, "image_id": 7, "category_id": 1, "bbox": [60, 20, 40.4, 0], "area": 0.0, "iscrowd": 0},
           {"id": 4, "image_id": 7, "category_id": 1, "bbox": [-0.5, 20, 10, 30.6], "area": 300.0, "iscrowd": 0}"#,
    );
    let split = read_instances(&ok).unwrap();
    assert_eq!(split.categories, vec![(1, "person".to_string()), (18, "dog".to_string())]);
    let a = &split.images[0];
    assert_eq!(
        (a.id, a.objects.len()),
        (7, 4),
        "kept for scoring: a box without area, one a rounding past the edge"
    );
    assert_eq!(
        (a.objects[0].label, a.objects[0].bbox, a.objects[0].crowd),
        (2, [10.0, 5.0, 20.5, 30.0], false)
    );
    assert_eq!((a.objects[1].label, a.objects[1].crowd), (1, true));
    assert!(split.images[1].objects.is_empty());
    // Training leaves out crowd objects, boxes without area (counted) and images without objects
    // (counted); boxes past the edge are clipped. A test set keeps every image.
    let both = (Resize::PAPER, Normalize::TORCHVISION);
    let (set, left) = ImageSetFiles::from_coco(&split, tmp.path(), both, true);
    assert_eq!((set.len(), left), (1, LeftOut { objects: 1, images: 1 }));
    assert_eq!(set.items[0].boxes, vec![[10.0, 5.0, 30.5, 35.0], [0.0, 20.0, 9.5, 50.0]]);
    assert_eq!(set.items[0].labels, vec![2, 1]);
    assert_eq!(ImageSetFiles::from_coco(&split, tmp.path(), both, false).0.len(), 2);
    let bad = [
        (
            r#"{"id": 5, "image_id": 8, "category_id": 18, "bbox": [1, 1, 2, 2], "area": 4}"#,
            "annotation 5: image_id 8",
        ),
        (
            r#"{"id": 6, "image_id": 7, "category_id": 3, "bbox": [1, 1, 2, 2], "area": 4}"#,
            "annotation 6: category_id 3",
        ),
        (
            r#"{"id": 7, "image_id": 9, "category_id": 1, "bbox": [30, 1, 12, 2], "area": 4}"#,
            "annotation 7: bbox [30.0, 1.0, 12.0, 2.0] (x, y, width, height) is not inside image 9 of 40x40",
        ),
        (
            r#"{"id": 8, "image_id": 9, "category_id": 1, "bbox": [3, 1, -2, 2], "area": 0}"#,
            "annotation 8: bbox [3.0, 1.0, -2.0, 2.0] (x, y, width, height) has a negative side",
        ),
        (r#"{"id": 9, "image_id": 9, "category_id": 1, "area": 0}"#, "missing field `bbox`"),
    ];
    for (ann, needle) in bad {
        let e = format!("{:#}", read_instances(&coco_file(tmp.path(), ann)).unwrap_err());
        assert!(e.contains("instances.json") && e.contains(needle), "no {needle:?} in {e}");
    }
}

#[test]
fn images_are_fed_at_the_papers_scale_flipped_and_padded_with_their_boxes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("VOC2012");
    voc_folder(
        &root,
        "train",
        &[
            ("a", 120, 80, annotation(120, 80, &[object("cat", ["11", "21", "40", "80"], None)])),
            ("b", 300, 60, annotation(300, 60, &[object("dog", ["1", "1", "300", "60"], None)])),
        ],
    );
    let set = ImageSetFiles::from_voc(
        &read_split(&root, "train", &CLASSES).unwrap(),
        Resize::PAPER,
        Normalize::TORCHVISION,
    );
    assert_eq!(Resize::PAPER.apply(120, 80), (7.5, (900, 600)));
    assert_eq!(set.scale_of(0), (7.5, 7.5));
    assert_eq!(Resize::PAPER.apply(300, 60).1, (1000, 200)); // the longer side's limit wins
    let b = set.batch(&[0, 1], &[false, true], Device::Cpu).unwrap();
    assert_eq!(b.sizes, vec![(600, 900), (200, 1000)]);
    assert_eq!(b.images.size(), [2, 3, 608, 1024], "padded to multiples of 32");
    let pad = b.images.get(1).narrow(1, 200, 408).abs().sum(Kind::Double).double_value(&[]);
    assert_eq!(pad, 0.0, "padding is zeros");
    let boxes = Vec::<f32>::try_from(b.targets[0].boxes.reshape([-1])).unwrap();
    assert_eq!(boxes, vec![75.0, 150.0, 300.0, 600.0]);
    let flipped = Vec::<f32>::try_from(b.targets[1].boxes.reshape([-1])).unwrap();
    assert_eq!(flipped, vec![0.0, 0.0, 1000.0, 200.0]);
    // Flipping mirrors the pixels: the unflipped image's first column is the flipped one's last.
    let again = set.batch(&[1], &[false], Device::Cpu).unwrap();
    let (f, u) = (
        b.images.get(1).narrow(1, 0, 200).narrow(2, 0, 1000),
        again.images.get(0).narrow(1, 0, 200).narrow(2, 0, 1000),
    );
    assert!(f.equal(&u.flip([2])));
    // An image whose file is not the annotated size is an error naming it.
    image::RgbImage::new(10, 10).save(root.join("JPEGImages/a.jpg")).unwrap();
    let e = format!("{:#}", set.batch(&[0], &[false], Device::Cpu).unwrap_err());
    assert!(e.contains("a.jpg") && e.contains("10x10") && e.contains("120x80"), "{e}");
}

#[test]
fn real_voc_files_read_as_elementtree_reads_them_and_score_as_pycocotools() {
    let dir = tempfile::tempdir().unwrap();
    common::run_python_reference("deepforest_reference.py", &[dir.path().as_os_str()]);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("deepforest.json")).unwrap()).unwrap();
    let data = Path::new(r["data"].as_str().unwrap());
    let (mut gts, mut total) = (Vec::new(), 0);
    for (k, f) in r["files"].as_array().unwrap().iter().enumerate() {
        let classes: Vec<&str> =
            f["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        let xml = data.join(f["xml"].as_str().unwrap());
        let ours = read_annotation(&xml, data.join(f["image"].as_str().unwrap()), &classes).unwrap();
        let boxes: Vec<[f64; 4]> = f["boxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| std::array::from_fn(|i| b[i].as_f64().unwrap()))
            .collect();
        let labels: Vec<i64> = f["labels"].as_array().unwrap().iter().map(|l| l.as_i64().unwrap()).collect();
        assert_eq!(ours.objects.iter().map(|o| o.bbox).collect::<Vec<_>>(), boxes, "{}", xml.display());
        assert_eq!(ours.objects.iter().map(|o| o.label).collect::<Vec<_>>(), labels, "{}", xml.display());
        assert_eq!(
            (ours.width as u64, ours.height as u64),
            (f["width"].as_u64().unwrap(), f["height"].as_u64().unwrap())
        );
        // The photograph is the annotated size.
        let img = resnet_repro::data::folder::decode_rgb(&ours.image).unwrap();
        assert_eq!((img.width(), img.height()), (ours.width, ours.height), "{}", ours.image.display());
        total += ours.objects.len();
        for o in &ours.objects {
            let b = o.bbox;
            let bbox = [b[0], b[1], b[2] - b[0], b[3] - b[1]];
            gts.push(GroundTruth {
                image: k as i64,
                category: o.label,
                bbox,
                area: bbox[2] * bbox[3],
                crowd: false,
            });
        }
    }
    assert_eq!(total, 951, "deepforest's four files hold 951 boxes");
    let dets: Vec<Detection> = r["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| Detection {
            image: d["image_id"].as_i64().unwrap(),
            category: d["category_id"].as_i64().unwrap(),
            bbox: std::array::from_fn(|i| d["bbox"][i].as_f64().unwrap()),
            score: d["score"].as_f64().unwrap(),
        })
        .collect();
    let s = evaluate(&CocoParams::default(), &gts, &dets, &[0, 1, 2, 3], &[1, 2]);
    let stats: Vec<f64> = r["stats"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    for (ours, theirs, what) in
        [(s.ap, stats[0], "AP"), (s.ap50, stats[1], "AP@.5"), (s.ap75, stats[2], "AP@.75")]
    {
        let ours = ours.unwrap();
        assert!((ours - theirs).abs() < 1e-12, "{what}: ours {ours}, pycocotools {theirs}");
    }
    assert!(
        stats[1] > 0.5 && stats[1] < 1.0,
        "the reference's detections are neither perfect nor useless: {stats:?}"
    );
}

/// A test config for `faster_rcnn`: `data` its [data] table, a ResNet-18 at a tiny input size.
fn tiny_paper_config(dir: &Path, data: &str) -> std::path::PathBuf {
    let path = dir.join("paper.toml");
    std::fs::write(
        &path,
        format!(
            "backbone = \"resnet18\"\nseed = 3\n[data]\n{data}\n[input]\nshorter = 64.0\nlonger_max = 96.0\n\
             [detector]\nanchor_sizes = [16.0, 32.0]\nrpn_pre_nms = [100, 50]\nrpn_post_nms = [30, 10]\nrpn_batch = 32\n\
             regions_per_image = 16\npooled = 6\n[train]\niterations = 2\nimages_per_step = 2\nlr = 0.001\n\
             milestones = [1]\nfrozen_parts = 2\nlog_every = 1\ncheckpoint_every = 1\n"
        ),
    )
    .unwrap();
    path
}

fn run_faster_rcnn(config: &Path, data: &Path, weights: &Path, out: &Path) -> serde_json::Value {
    run_faster_rcnn_on(
        std::process::Command::new(env!("CARGO_BIN_EXE_faster_rcnn")),
        (config, data, weights, out),
    )
}

/// The same under `torchrun --nproc-per-node 2` (over Gloo).
fn run_faster_rcnn_on_2_ranks(config: &Path, data: &Path, weights: &Path, out: &Path) -> serde_json::Value {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut torchrun = std::process::Command::new("torchrun");
    torchrun.args(["--no-python", "--nproc-per-node", "2", "--master-port", &port.to_string()]);
    torchrun.arg(env!("CARGO_BIN_EXE_faster_rcnn"));
    run_faster_rcnn_on(torchrun, (config, data, weights, out))
}

fn run_faster_rcnn_on(
    mut command: std::process::Command,
    (config, data, weights, out): (&Path, &Path, &Path, &Path),
) -> serde_json::Value {
    let o = command
        .args(["--config".as_ref(), config.as_os_str(), "--data-dir".as_ref(), data.as_os_str()])
        .args(["--weights".as_ref(), weights.as_os_str(), "--out".as_ref(), out.as_os_str()])
        .args(["--device", "cpu", "--threads", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "faster_rcnn failed:\n{err}");
    let run = out.join("resnet18/seed3");
    for f in ["config.toml", "metrics.csv", "model.safetensors"] {
        assert!(run.join(f).is_file(), "{}: no {f}", run.display());
    }
    serde_json::from_str(&std::fs::read_to_string(run.join("final.json")).unwrap()).unwrap()
}

/// A ResNet-18 in torchvision's names (random weights, seeded), as the exporter writes them.
fn resnet18_weights(dir: &Path) -> std::path::PathBuf {
    tch::manual_seed(1);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    resnet_repro::models::ImageNetNet::torchvision(18).build(&vs.root()).unwrap();
    let path = dir.join("resnet18.safetensors");
    resnet_repro::models::save_weights(&vs, &path).unwrap();
    path
}

#[test]
fn table7s_command_trains_and_scores_on_a_generated_vocdevkit() {
    let tmp = tempfile::tempdir().unwrap();
    let devkit = tmp.path().join("VOCdevkit");
    let img = |name: &str, b: [&str; 4]| {
        annotation(80, 60, &[object(name, b, None), object("dog", ["40", "30", "79", "60"], Some("1"))])
    };
    voc_folder(
        &devkit.join("VOC2007"),
        "trainval",
        &[
            ("a", 80, 60, img("cat", ["1", "1", "30", "40"])),
            ("b", 80, 60, img("person", ["5", "8", "50", "59"])),
        ],
    );
    voc_folder(&devkit.join("VOC2012"), "trainval", &[("c", 80, 60, img("cat", ["2", "3", "60", "30"]))]);
    voc_folder(&devkit.join("VOC2007"), "test", &[("d", 80, 60, img("cat", ["10", "10", "40", "50"]))]);
    let config = tiny_paper_config(
        tmp.path(),
        "dataset = \"voc\"\ntrain = [\"VOC2007/trainval\", \"VOC2012/trainval\"]\ntest = \"VOC2007/test\"",
    );
    let rec = run_faster_rcnn(&config, &devkit, &resnet18_weights(tmp.path()), &tmp.path().join("runs"));
    assert_eq!((rec["iterations"].as_u64(), rec["test_images"].as_u64()), (Some(2), Some(1)), "{rec}");
    let map = rec["voc07"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&map) && rec["coco_ap"].is_null(), "{rec}");
    let md = std::fs::read_to_string(tmp.path().join("runs/summary.md")).unwrap();
    assert!(md.contains("| VOC 2007 test mAP |") && md.contains("| 73.2 | 76.4 |"), "{md}");
    // Data-parallel: each rank one image of an update, the one test image on rank 1 (rank 0 has
    // none to detect), rank 0 writing the run and the summary.
    if !common::prerequisite(
        resnet_repro::shim::dist::Backend::Gloo.compiled_in(),
        "this build has no Gloo: apt-get install libgloo-dev (.ci/run installs it); the next build notices it",
    ) {
        return;
    }
    let out = tmp.path().join("runs-2-ranks");
    let rec = run_faster_rcnn_on_2_ranks(&config, &devkit, &resnet18_weights(tmp.path()), &out);
    assert_eq!((rec["iterations"].as_u64(), rec["test_images"].as_u64()), (Some(2), Some(1)), "{rec}");
    assert!((0.0..=1.0).contains(&rec["voc07"].as_f64().unwrap()), "{rec}");
    let rows = std::fs::read_to_string(out.join("resnet18/seed3/metrics.csv")).unwrap();
    assert_eq!(rows.lines().count(), 3, "a header and rank 0's 2 rows:\n{rows}");
    assert!(std::fs::read_to_string(out.join("summary.md")).unwrap().contains("| VOC 2007 test mAP |"));
}

#[test]
fn table8s_command_trains_and_scores_on_a_generated_coco_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("coco");
    for (split, n) in [("train", 3), ("val", 2)] {
        std::fs::create_dir_all(root.join(split)).unwrap();
        std::fs::create_dir_all(root.join("annotations")).unwrap();
        let mut images = Vec::new();
        let mut anns = Vec::new();
        for i in 0..n {
            let name = format!("{i:012}.jpg");
            image::RgbImage::from_fn(90, 70, |x, y| image::Rgb([(x + i * 20) as u8, y as u8, 60]))
                .save(root.join(split).join(&name))
                .unwrap();
            images.push(format!(r#"{{"id": {}, "file_name": "{name}", "width": 90, "height": 70}}"#, i + 10));
            anns.push(format!(r#"{{"id": {}, "image_id": {}, "category_id": 5, "bbox": [5, 6, 40, 30], "area": 1100, "iscrowd": 0}}"#, 2 * i + 1, i + 10));
            anns.push(format!(r#"{{"id": {}, "image_id": {}, "category_id": 2, "bbox": [50, 20, 30.5, 45], "area": 1300, "iscrowd": 0}}"#, 2 * i + 2, i + 10));
        }
        let json = format!(
            r#"{{"images": [{}], "annotations": [{}], "categories": [{{"id": 2, "name": "bicycle"}}, {{"id": 5, "name": "airplane"}}]}}"#,
            images.join(","),
            anns.join(",")
        );
        std::fs::write(root.join("annotations").join(format!("instances_{split}.json")), json).unwrap();
    }
    let config = tiny_paper_config(tmp.path(), "dataset = \"coco\"\ntrain = \"train\"\ntest = \"val\"");
    let rec = run_faster_rcnn(&config, &root, &resnet18_weights(tmp.path()), &tmp.path().join("runs"));
    assert_eq!((rec["iterations"].as_u64(), rec["test_images"].as_u64()), (Some(2), Some(2)), "{rec}");
    for k in ["coco_ap", "coco_ap50"] {
        let v = rec[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k}: {rec}");
    }
    let md = std::fs::read_to_string(tmp.path().join("runs/summary.md")).unwrap();
    assert!(md.contains("| COCO mAP@[.5, .95] |") && md.contains("| 21.2 | 27.2 |"), "{md}");
}

#[test]
fn the_papers_detection_experiments_parse_and_make_runs_them() {
    use resnet_repro::experiment::detect_paper::PaperDetection;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (target, file) in [("reproduce-table7", "table7_voc"), ("reproduce-table8", "table8_coco")] {
        let alone = PaperDetection::load(&repo.join(format!("experiments/{file}.toml"))).unwrap();
        let ranks = PaperDetection::load(&repo.join(format!("experiments/{file}_16.toml"))).unwrap();
        assert_eq!((alone.backbone.as_str(), ranks.backbone.as_str()), ("resnet101", "resnet101"));
        // The same reference schedule: 26 epochs of 2 images, or of 16 at 8 times the rate,
        // and nothing else different but how often a checkpoint is written.
        let images = |e: &PaperDetection, it: u64| it as f64 * e.train.images_per_step as f64;
        let same_images = |a: u64, b: u64| (images(&alone, a) / images(&ranks, b) - 1.0).abs() < 1e-3;
        assert!(same_images(alone.train.iterations, ranks.train.iterations), "{file}: other lengths");
        for (a, b) in alone.train.milestones.iter().zip(&ranks.train.milestones) {
            assert!(same_images(*a, *b), "{file}: milestones {a} and {b}");
        }
        assert_eq!((ranks.train.images_per_step, ranks.train.lr / alone.train.lr), (16, 8.0), "{file}");
        let mut like = ranks.clone();
        like.train = resnet_repro::detect::train::DetectionRecipe {
            checkpoint_every: alone.train.checkpoint_every,
            ..alone.train.clone()
        };
        assert_eq!(like, alone, "{file}: the two files differ elsewhere");
        // One process: faster_rcnn on the file; NPROC=2: under torchrun, on the file of 16 images.
        let out = common::make_dry_run(&[target, "DATA_DIR=/data"]);
        assert!(
            out.lines().any(|l| l.starts_with("target/release/faster_rcnn --data-dir /data")
                && l.ends_with(&format!("--config experiments/{file}.toml"))),
            "make -n {target}:\n{out}"
        );
        let out = common::make_dry_run(&[target, "NPROC=2", "DATA_DIR=/data"]);
        assert!(
            out.lines().any(|l| l.contains("torchrun --no-python --nproc-per-node 2 ")
                && l.contains("target/release/faster_rcnn --data-dir /data")
                && l.ends_with(&format!("--config experiments/{file}_16.toml"))),
            "make -n {target} NPROC=2:\n{out}"
        );
    }
}
