//! The test views of an image for each protocol of Sec. 3.4 / Tables 2-4: the centre crop, the
//! 10 crops, and the whole image at several scales, each also mirrored where the protocol says.

use crate::data::transform::{Normalize, five_crop_origins, resize_region, resized_size, write_normalized};
use crate::data::{EvalGeometry, Protocol};
use anyhow::Result;
use fast_image_resize::Resizer;
use image::RgbImage;

/// One test view: its pixels (f32 HWC) and size.
#[derive(Debug, Clone)]
pub struct View {
    pub width: u32,
    pub height: u32,
    pub data: Vec<f32>,
}

/// The views a protocol tests on, for one image; all views of a protocol but multi-scale have the
/// same size, so they batch.
pub fn test_views(
    img: &RgbImage,
    protocol: Protocol,
    g: &EvalGeometry,
    n: &Normalize,
    resizer: &mut Resizer,
) -> Result<Vec<View>> {
    let crop = g.crop;
    let mut views = Vec::new();
    let mut push = |pixels: &[u8], w: u32, h: u32, flip: bool| {
        let mut data = vec![0f32; (w * h * 3) as usize];
        write_normalized(pixels, w, h, flip, [0.0; 3], n, &mut data);
        views.push(View { width: w, height: h, data });
    };
    match protocol {
        Protocol::Center | Protocol::TenCrop => {
            let (rw, rh) = resized_size(img.width(), img.height(), g.resize);
            let origins = five_crop_origins(rw, rh, crop);
            let chosen: &[(u32, u32)] = if protocol == Protocol::Center { &origins[4..] } else { &origins };
            for &(x, y) in chosen {
                let px = resize_region(img, (rw, rh), (x, y, crop, crop), resizer)?;
                push(&px, crop, crop, false);
            }
            if protocol == Protocol::TenCrop {
                // torchvision's TenCrop: the five crops of the mirrored image. Its crop at x is the
                // mirror of the original's crop at rw - crop - x (the centre differs from the
                // original's by a pixel when the free room is odd).
                for &(x, y) in &origins {
                    let px = resize_region(img, (rw, rh), (rw - crop - x, y, crop, crop), resizer)?;
                    push(&px, crop, crop, true);
                }
            }
        }
        Protocol::MultiScale => {
            for &side in &g.scales {
                let (rw, rh) = resized_size(img.width(), img.height(), side);
                let px = resize_region(img, (rw, rh), (0, 0, rw, rh), resizer)?;
                push(&px, rw, rh, false);
                push(&px, rw, rh, true);
            }
        }
    }
    Ok(views)
}
