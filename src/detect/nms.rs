//! Non-maximum suppression: greedy, highest score first (of equal scores, the first box first), a
//! box dropped when its IoU with a kept box exceeds the threshold. The loop runs on the CPU over the boxes' own float type, the same
//! arithmetic in the same order as torchvision's CPU kernel (`torchvision::nms`), so the kept
//! indices are the same (tests/detect.rs); boxes on a GPU are copied over for it (at most a few
//! thousand per image). Written here rather than loaded from torchvision's library, which would
//! tie every binary to a Python installation and a torchvision built for this exact libtorch.

use anyhow::{Result, bail, ensure};
use tch::{Device, Kind, Tensor};

/// Indices (int64, on the boxes' device) of the boxes `[N, 4]` kept, by decreasing score.
pub fn nms(boxes: &Tensor, scores: &Tensor, iou_threshold: f64) -> Result<Tensor> {
    check(boxes, scores)?;
    let device = boxes.device();
    // Stable: of equal scores the first box comes first, as in torchvision's kernel.
    let order = scores.sort_stable(true, 0, true).1.to_device(Device::Cpu);
    let order = Vec::<i64>::try_from(&order)?;
    let cpu = boxes.to_device(Device::Cpu).contiguous();
    let keep = match boxes.kind() {
        Kind::Float => greedy(&Vec::<f32>::try_from(cpu.reshape([-1]))?, &order, iou_threshold),
        Kind::Double => greedy(&Vec::<f64>::try_from(cpu.reshape([-1]))?, &order, iou_threshold),
        k => bail!("nms on boxes of {k:?}: float32 or float64 expected"),
    };
    Ok(Tensor::from_slice(&keep).to_device(device))
}

/// NMS within each class of `classes` (`[N]`, int64), never across two; indices by decreasing
/// score. As torchvision's `batched_nms`: up to 1,000 boxes (25,000 on a GPU) one NMS over boxes
/// moved apart by class, more a loop over the classes. The two keep the same boxes but where
/// scores tie (regions that RoI pooling rounds to the same bins score alike), which the first
/// meets in index order over every box.
pub fn batched_nms(boxes: &Tensor, scores: &Tensor, classes: &Tensor, iou_threshold: f64) -> Result<Tensor> {
    check(boxes, scores)?;
    ensure!(classes.size() == scores.size(), "{:?} classes for {:?} scores", classes.size(), scores.size());
    let limit = if boxes.device() == Device::Cpu { 4_000 } else { 100_000 };
    if boxes.numel() == 0 {
        return Ok(Tensor::zeros([0], (Kind::Int64, boxes.device())));
    }
    if boxes.numel() <= limit {
        let offsets = classes.to_kind(boxes.kind()) * (boxes.max() + 1.0);
        return nms(&(boxes + offsets.unsqueeze(1)), scores, iou_threshold);
    }
    let device = boxes.device();
    let classes_cpu = Vec::<i64>::try_from(classes.to_device(Device::Cpu).to_kind(Kind::Int64))?;
    let mut unique = classes_cpu.clone();
    unique.sort_unstable();
    unique.dedup();
    let mut kept: Vec<i64> = Vec::new();
    for c in unique {
        let members: Vec<i64> =
            (0..classes_cpu.len() as i64).filter(|&i| classes_cpu[i as usize] == c).collect();
        let idx = Tensor::from_slice(&members).to_device(device);
        let keep = nms(&boxes.index_select(0, &idx), &scores.index_select(0, &idx), iou_threshold)?;
        let keep = Vec::<i64>::try_from(keep.to_device(Device::Cpu))?;
        kept.extend(keep.into_iter().map(|k| members[k as usize]));
    }
    kept.sort_unstable();
    let kept = Tensor::from_slice(&kept).to_device(device);
    let order = scores.index_select(0, &kept).sort(0, true).1;
    Ok(kept.index_select(0, &order))
}

fn check(boxes: &Tensor, scores: &Tensor) -> Result<()> {
    let (b, s) = (boxes.size(), scores.size());
    ensure!(b.len() == 2 && b[1] == 4, "boxes of shape {b:?}: [N, 4] expected");
    ensure!(s.len() == 1 && s[0] == b[0], "{s:?} scores for {} boxes", b[0]);
    ensure!(boxes.kind() == scores.kind(), "boxes of {:?} and scores of {:?}", boxes.kind(), scores.kind());
    Ok(())
}

/// The greedy pass over boxes stored as rows of 4 in `b`, visited in `order`.
fn greedy<T>(b: &[T], order: &[i64], iou_threshold: f64) -> Vec<i64>
where
    T: Copy + PartialOrd + Into<f64> + std::ops::Sub<Output = T> + std::ops::Mul<Output = T>,
    T: std::ops::Add<Output = T> + std::ops::Div<Output = T> + Default,
{
    let max = |a: T, b: T| if b > a { b } else { a };
    let min = |a: T, b: T| if b < a { b } else { a };
    let at = |i: usize, k: usize| b[4 * i + k];
    let area = |i: usize| (at(i, 2) - at(i, 0)) * (at(i, 3) - at(i, 1));
    let mut suppressed = vec![false; order.len()];
    let mut keep = Vec::new();
    for (oi, &i) in order.iter().enumerate() {
        let i = i as usize;
        if suppressed[i] {
            continue;
        }
        keep.push(i as i64);
        for &j in &order[oi + 1..] {
            let j = j as usize;
            if suppressed[j] {
                continue;
            }
            let w = max(T::default(), min(at(i, 2), at(j, 2)) - max(at(i, 0), at(j, 0)));
            let h = max(T::default(), min(at(i, 3), at(j, 3)) - max(at(i, 1), at(j, 1)));
            let inter = w * h;
            let iou = inter / (area(i) + area(j) - inter);
            if iou.into() > iou_threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}
