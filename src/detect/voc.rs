//! PASCAL VOC's layout (a `VOCdevkit/VOC2007` or `VOC2012` folder): `ImageSets/Main/<split>.txt`
//! lists the image ids, `Annotations/<id>.xml` holds each image's size and objects (class name,
//! `difficult` flag, `bndbox` with 1-based inclusive pixel coordinates), `JPEGImages/<id>.jpg` the
//! image. Boxes are read as pixel edges, as detectron2 and torchvision read them: (xmin - 1,
//! ymin - 1, xmax, ymax). Anything that does not fit is an error naming the file and the field:
//! a missing field, an unknown class, a box outside its image or without area, an image without
//! objects. Nothing is dropped.

use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};

/// VOC's 20 classes, in the devkit's order (labels 1..=20; 0 is the background).
pub const CLASSES: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// One annotated object.
#[derive(Debug, Clone, PartialEq)]
pub struct VocObject {
    /// 1-based: the class's index in the class list plus one.
    pub label: i64,
    /// Pixel edges (x1, y1, x2, y2).
    pub bbox: [f64; 4],
    pub difficult: bool,
}

/// One image's annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct VocImage {
    pub id: String,
    pub image: PathBuf,
    pub width: u32,
    pub height: u32,
    pub objects: Vec<VocObject>,
}

fn child<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<roxmltree::Node<'a, 'a>> {
    node.children().find(|c| c.has_tag_name(name))
}

/// The text of `node`'s child `name`, parsed; the error names the file and the field.
fn field<T: std::str::FromStr>(node: roxmltree::Node, name: &str, path: &Path, what: &str) -> Result<T> {
    let text = child(node, name).and_then(|c| c.text()).map(str::trim);
    let text = text.with_context(|| format!("{}: {what} has no <{name}>", path.display()))?;
    text.parse()
        .map_err(|_| anyhow::anyhow!("{}: {what}: <{name}> is {text:?}, not a number", path.display()))
}

/// Reads one annotation file; `classes` are the dataset's class names (VOC's [`CLASSES`]).
pub fn read_annotation(path: &Path, image: PathBuf, classes: &[&str]) -> Result<VocImage> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc = roxmltree::Document::parse(&text).with_context(|| format!("{}: not XML", path.display()))?;
    let root = doc.root_element();
    ensure!(
        root.has_tag_name("annotation"),
        "{}: <{}> where <annotation> was expected",
        path.display(),
        root.tag_name().name()
    );
    let size = child(root, "size").with_context(|| format!("{}: no <size>", path.display()))?;
    let width: u32 = field(size, "width", path, "<size>")?;
    let height: u32 = field(size, "height", path, "<size>")?;
    ensure!(width > 0 && height > 0, "{}: <size> is {width}x{height}", path.display());
    let mut objects = Vec::new();
    for (k, obj) in root.children().filter(|c| c.has_tag_name("object")).enumerate() {
        let what = format!("object {}", k + 1);
        let name: String = field(obj, "name", path, &what)?;
        let Some(class) = classes.iter().position(|c| *c == name) else {
            bail!(
                "{}: {what}: class {name:?} is not one of the {} classes ({})",
                path.display(),
                classes.len(),
                classes.join(", ")
            )
        };
        // py-faster-rcnn and detectron2: an object without <difficult> is not difficult.
        let difficult = child(obj, "difficult").and_then(|d| d.text()).is_some_and(|t| t.trim() == "1");
        let what = format!("{what} ({name})");
        let b =
            child(obj, "bndbox").with_context(|| format!("{}: {what} has no <bndbox>", path.display()))?;
        let what_box = format!("{what} <bndbox>");
        let [x0, y0, x1, y1]: [f64; 4] = [
            field(b, "xmin", path, &what_box)?,
            field(b, "ymin", path, &what_box)?,
            field(b, "xmax", path, &what_box)?,
            field(b, "ymax", path, &what_box)?,
        ];
        ensure!(
            1.0 <= x0
                && x0 <= x1
                && x1 <= f64::from(width)
                && 1.0 <= y0
                && y0 <= y1
                && y1 <= f64::from(height),
            "{}: {what_box} (xmin {x0}, ymin {y0}, xmax {x1}, ymax {y1}) is not inside the {width}x{height} image \
             (VOC's boxes are 1-based and inclusive: 1 <= xmin <= xmax <= width)",
            path.display()
        );
        objects.push(VocObject { label: class as i64 + 1, bbox: [x0 - 1.0, y0 - 1.0, x1, y1], difficult });
    }
    ensure!(
        !objects.is_empty(),
        "{}: no <object>: an image without objects cannot be trained on or scored",
        path.display()
    );
    let id = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
    Ok(VocImage { id, image, width, height, objects })
}

/// Every image of `split` (`trainval`, `test`, ...) of a VOC year folder (`VOCdevkit/VOC2007`).
pub fn read_split(root: &Path, split: &str, classes: &[&str]) -> Result<Vec<VocImage>> {
    let list = root.join("ImageSets/Main").join(format!("{split}.txt"));
    let text = std::fs::read_to_string(&list).with_context(|| {
        format!("reading {}: a PASCAL VOC year folder (VOCdevkit/VOC2007) holds it", list.display())
    })?;
    let ids: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    ensure!(!ids.is_empty(), "{}: lists no image", list.display());
    ids.iter()
        .map(|id| {
            let xml = root.join("Annotations").join(format!("{id}.xml"));
            read_annotation(&xml, root.join("JPEGImages").join(format!("{id}.jpg")), classes)
        })
        .collect()
}
