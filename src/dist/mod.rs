//! Data-parallel training on libtorch's c10d, launched as PyTorch users launch theirs (torchrun):
//! [`Launch`] reads the launcher's environment, [`Replicas`] keeps one network's copies in step
//! (rank 0's variables broadcast, gradients averaged in buckets, running statistics averaged).
//! The process groups themselves are the shim's ([`crate::shim::dist`]).

pub mod launch;
pub mod replicas;

pub use launch::{Launch, RankEnv};
pub use replicas::{
    BUCKET_BYTES, GradSync, Replicas, all_ok, check_batch, rank0_says, share, stop_requested,
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> anyhow::Result<Launch> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Launch::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn without_a_rank_it_runs_alone() {
        assert_eq!(launch(&[]).unwrap(), Launch::Single);
        assert_eq!(launch(&[("WORLD_SIZE", "1")]).unwrap(), Launch::Single);
    }

    #[test]
    fn torchruns_environment_names_the_rank_its_gpu_and_the_store() {
        let env = [
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "4"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ];
        let Launch::Rank(r) = launch(&env).unwrap() else { panic!("a rank") };
        assert_eq!((r.rank, r.world, r.local_rank, r.local_world, r.restart), (3, 8, 1, 4, 2));
        // The node's 16 cores shared by its 4 ranks.
        assert_eq!((r.cores(16), r.cores(2)), (4, 1));
        let rv = r.rendezvous();
        assert_eq!((rv.host.as_str(), rv.port, rv.host_it), ("node0", 29500, false), "the agent hosts it");
        assert_eq!(rv.prefix, "/worker/attempt_2/resnet-repro/");
        assert_eq!(r.device(tch::Device::Cpu).unwrap(), tch::Device::Cpu);
        // Without torchrun's agent, rank 0 hosts the store.
        let plain =
            [("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1234")];
        let Launch::Rank(r) = launch(&plain).unwrap() else { panic!("a rank") };
        assert!(r.rendezvous().host_it && r.local_rank == 0 && !r.agent_store);
        assert_eq!(r.local_world, 2, "all ranks on this node without LOCAL_WORLD_SIZE");
    }

    #[test]
    fn a_bad_or_partial_environment_is_refused_with_what_to_do() {
        for (env, says) in [
            (vec![("RANK", "1")], "WORLD_SIZE is not"),
            (vec![("WORLD_SIZE", "2")], "RANK is not set"),
            (vec![("RANK", "2"), ("WORLD_SIZE", "2")], "below WORLD_SIZE 2"),
            (vec![("RANK", "x"), ("WORLD_SIZE", "2")], "RANK=\"x\" is not a number"),
            (vec![("RANK", "0"), ("WORLD_SIZE", "2")], "MASTER_ADDR is not set"),
            (vec![("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")], "MASTER_PORT is not set"),
            (
                vec![("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "70000")],
                "not a port",
            ),
        ] {
            let err = format!("{:#}", launch(&env).unwrap_err());
            assert!(err.contains(says), "{env:?}: {err}");
        }
        let err = format!("{:#}", launch(&[("RANK", "1")]).unwrap_err());
        assert!(err.contains("torchrun --no-python"), "{err}");
    }
}
