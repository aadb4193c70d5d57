//! `doctor --selftest` on the CPU: every check that applies passes, those for a GPU say so, and
//! the exit status is 0 (1 on any FAIL).

#[test]
fn the_self_test_passes_on_the_cpu_and_skips_the_gpu_checks_naming_why() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doctor"))
        .args(["--selftest", "--device", "cpu"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("PASS") || l.starts_with("SKIP")).collect();
    assert_eq!(lines.len(), 6, "{text}");
    for check in
        ["bf16 autocast", "fused SGD", "captured program, run without a graph", "one-rank process group"]
    {
        let line = lines.iter().find(|l| l.contains(check)).unwrap_or_else(|| panic!("{check}: {text}"));
        let gloo_missing = check.contains("process group") && line.contains("this build has no Gloo");
        assert!(line.starts_with("PASS") || gloo_missing, "{line}");
    }
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("SKIP") && l.ends_with("needs a GPU")).count(),
        2,
        "{text}"
    );
    assert!(text.contains("CPU bf16 "), "doctor names the CPU's bf16 support: {text}");
    assert!(text.contains("self-test: 4 passed, 0 failed, 2 skipped") || text.contains("3 passed"), "{text}");
}
