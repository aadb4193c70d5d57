//! COCO's instances files (`annotations/instances_<split>.json`): `images` (id, file_name, width,
//! height), `categories` (id, name) and `annotations` (id, image_id, category_id, bbox as
//! (x, y, width, height), area, iscrowd). Read strictly: an annotation that names an unknown image
//! or category, a box with a negative side or outside its image (by more than a pixel: COCO's own
//! files pass the edge by rounding errors), a missing field, is an error naming the file, the
//! annotation's id and the field. Boxes without area (COCO's train2017 has a few) and images
//! without objects are kept: scoring counts them as pycocotools does, training leaves them out
//! and says how many (`images::ImageSetFiles::from_coco`). The categories get the detector's
//! labels 1..=K in the order of their ids.

use anyhow::{Context, Result, ensure};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Deserialize)]
struct File {
    images: Vec<ImageEntry>,
    annotations: Vec<AnnotationEntry>,
    categories: Vec<CategoryEntry>,
}

#[derive(Debug, Deserialize)]
struct ImageEntry {
    id: i64,
    file_name: String,
    width: u32,
    height: u32,
}

#[derive(Debug, Deserialize)]
struct AnnotationEntry {
    id: i64,
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
    area: f64,
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Debug, Deserialize)]
struct CategoryEntry {
    id: i64,
    name: String,
}

/// One object: its category's id, label (1..=K), box (x, y, width, height), area, crowd flag.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoObject {
    pub id: i64,
    pub category: i64,
    pub label: i64,
    pub bbox: [f64; 4],
    pub area: f64,
    pub crowd: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CocoImage {
    pub id: i64,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
    pub objects: Vec<CocoObject>,
}

/// A COCO split: its images (in the file's order, each with its objects) and categories (id,
/// name), sorted by id; category `k` of that list has label `k + 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoSplit {
    pub images: Vec<CocoImage>,
    pub categories: Vec<(i64, String)>,
}

/// Reads an instances file.
pub fn read_instances(path: &Path) -> Result<CocoSplit> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: File = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut categories: Vec<(i64, String)> = file.categories.into_iter().map(|c| (c.id, c.name)).collect();
    categories.sort();
    ensure!(!categories.is_empty(), "{}: no categories", path.display());
    ensure!(categories.windows(2).all(|w| w[0].0 < w[1].0), "{}: a category id given twice", path.display());
    let label: HashMap<i64, i64> =
        categories.iter().enumerate().map(|(k, (id, _))| (*id, k as i64 + 1)).collect();
    let mut images: Vec<CocoImage> = file
        .images
        .into_iter()
        .map(|i| CocoImage {
            id: i.id,
            file_name: i.file_name,
            width: i.width,
            height: i.height,
            objects: Vec::new(),
        })
        .collect();
    let at: HashMap<i64, usize> = images.iter().enumerate().map(|(k, i)| (i.id, k)).collect();
    ensure!(at.len() == images.len(), "{}: an image id given twice", path.display());
    for a in file.annotations {
        let what = format!("{}: annotation {}", path.display(), a.id);
        let &k = at
            .get(&a.image_id)
            .with_context(|| format!("{what}: image_id {} is not in images", a.image_id))?;
        let &l = label
            .get(&a.category_id)
            .with_context(|| format!("{what}: category_id {} is not in categories", a.category_id))?;
        let img = &mut images[k];
        let [x, y, w, h] = a.bbox;
        ensure!(w >= 0.0 && h >= 0.0, "{what}: bbox {:?} (x, y, width, height) has a negative side", a.bbox);
        // COCO's own files hold boxes past the image by a rounding error (and a few without area,
        // which training leaves out and counts): a pixel of slack, more is an error.
        let (wi, hi) = (f64::from(img.width), f64::from(img.height));
        ensure!(
            x >= -1.0 && y >= -1.0 && x + w <= wi + 1.0 && y + h <= hi + 1.0,
            "{what}: bbox {:?} (x, y, width, height) is not inside image {} of {}x{}",
            a.bbox,
            img.id,
            img.width,
            img.height
        );
        img.objects.push(CocoObject {
            id: a.id,
            category: a.category_id,
            label: l,
            bbox: a.bbox,
            area: a.area,
            crowd: a.iscrowd == 1,
        });
    }
    Ok(CocoSplit { images, categories })
}
