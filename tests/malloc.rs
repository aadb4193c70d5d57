//! Training keeps the memory it frees (src/shim/malloc.rs): once warm, a step faults in almost no
//! new pages. With glibc's defaults the same steps faulted in thousands a step here (run with
//! RESNET_REPRO_MALLOC=default to see the count; the test then fails). No test harness: the steps
//! run on the main thread, as training's do (glibc's main heap; other threads get other heaps),
//! alone in the process, so that the page faults counted are theirs.

fn main() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::run();
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    println!("test warm_training_steps_fault_in_almost_no_pages ... skipped (glibc only)");
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use resnet_repro::models::{CifarNet, NetSpec};
    use resnet_repro::shim::MemoryFormat;
    use resnet_repro::shim::malloc::{MallocTuning, keep_freed_memory};
    use resnet_repro::train::{SgdSettings, Trainer};
    use tch::{Device, Kind, Tensor};

    /// Minor page faults of the calling thread so far.
    fn thread_page_faults() -> i64 {
        // SAFETY: getrusage writes one rusage struct, which we own.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
        u.ru_minflt
    }

    pub fn run() {
        tch::set_num_threads(1);
        let net = NetSpec::Cifar(CifarNet::resnet(20));
        let mut t =
            Trainer::with_format(&net, SgdSettings::PAPER, 0, Device::Cpu, MemoryFormat::ChannelsLast)
                .unwrap();
        // 128 images: each layer's output is 8 MiB, ~2,000 pages.
        let x = Tensor::randn([128, 3, 32, 32], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(10, [128], (Kind::Int64, Device::Cpu));
        let per_step: Vec<i64> = (0..25)
            .map(|_| {
                let before = thread_page_faults();
                let _ = t.step(&x, &y, 0.1).unwrap();
                thread_page_faults() - before
            })
            .collect();
        println!("page faults of 25 steps: {per_step:?}");
        assert_eq!(keep_freed_memory(), MallocTuning::KeepFreed, "glibc's thresholds not set");
        assert!(per_step[0] > 10_000, "the first step should fault in its activations: {per_step:?}");
        // Warm, the heap still grows by an activation (2,048 pages) at a step now and then as it
        // fragments; with glibc's defaults every step faulted in 5,088-39,202 pages here.
        let mut warm = per_step[5..].to_vec();
        warm.sort_unstable();
        let median = warm[warm.len() / 2];
        assert!(median < 100, "half the warm steps faulted in {median} pages or more: {per_step:?}");
        println!("test warm_training_steps_fault_in_almost_no_pages ... ok");
    }
}
