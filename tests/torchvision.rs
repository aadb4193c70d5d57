//! Cross-check against torchvision: its resnet18 and resnet50 weights load into our option-B nets
//! (v1.5 placement for resnet50) and give the same eval logits, and weights we save load into
//! torchvision (strict) and give ours. The Python side is tests/python/torchvision_reference.py,
//! run with the interpreter `scripts/with-torch` provides (RESNET_REPRO_PYTHON).

use resnet_repro::models::ImageNetNet;
use std::path::Path;
use std::process::Command;
use tch::{Device, Tensor, nn, nn::ModuleT};

fn python(args: &[&str]) {
    let py = std::env::var("RESNET_REPRO_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/torchvision_reference.py");
    let out = Command::new(&py).arg(&script).args(args).output().unwrap_or_else(|e| {
        panic!("running {py}: {e}; run the tests with `make test`, which provides torch and torchvision")
    });
    assert!(
        out.status.success(),
        "{py} {} failed (needs torch 2.11 and torchvision 0.26; `make test` provides them):\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

fn read_one(path: &Path, name: &str) -> Tensor {
    let tensors = Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tensors.into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{}: no {name}", path.display())).1
}

#[test]
fn torchvision_weights_and_logits_agree_both_ways() {
    let _guard = tch::no_grad_guard();
    let dir = std::env::temp_dir().join(format!("resnet-repro-tv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let threads = tch::get_num_threads().to_string();
    python(&["generate", d, &threads]);
    let x = read_one(&dir.join("input.safetensors"), "input");
    for (name, depth) in [("resnet18", 18), ("resnet50", 50)] {
        // torchvision -> ours
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = ImageNetNet::torchvision(depth).build(&vs.root()).unwrap();
        let ours_before = net.forward_t(&x, false);
        vs.load(dir.join(format!("{name}.safetensors"))).unwrap();
        let ours = net.forward_t(&x, false);
        let theirs = read_one(&dir.join(format!("{name}_logits.safetensors")), "logits");
        let diff = (&ours - &theirs).abs().max().double_value(&[]);
        println!("{name}: max |ours - torchvision| = {diff:.3e}");
        // Logits of order 1, the same libtorch and threads on both sides: rounding only (~1e-6);
        // a misnamed or misloaded weight changes them by far more than 1e-2 (checked below).
        assert!(diff < 1e-4, "{name}: logits differ by {diff}");
        assert!((&ours_before - &theirs).abs().max().double_value(&[]) > 1e-2, "the load changed nothing");

        // ours -> torchvision: our own freshly initialised weights, with BN statistics set.
        tch::manual_seed(depth as i64);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = ImageNetNet::torchvision(depth).build(&vs.root()).unwrap();
        for (n, mut t) in vs.variables() {
            if n.ends_with("running_var") {
                t.copy_(&(t.rand_like() + 0.5));
            } else if n.ends_with("running_mean") {
                t.copy_(&(t.randn_like() * 0.1));
            }
        }
        vs.save(dir.join(format!("ours_{name}.safetensors"))).unwrap();
        let logits = net.forward_t(&x, false);
        Tensor::write_safetensors(
            &[("logits", &logits)],
            dir.join(format!("ours_{name}_logits.safetensors")),
        )
        .unwrap();
    }
    python(&["check", d, &threads]);
    std::fs::remove_dir_all(&dir).unwrap();
}
