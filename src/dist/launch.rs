//! How this process was started: alone, or as one rank of a data-parallel job launched the way
//! PyTorch's are (torchrun, or anything that sets the same environment: `RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`).

use crate::shim::dist::Rendezvous;
use anyhow::{Context, Result, bail, ensure};
use tch::Device;

/// One rank's place in the job, from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankEnv {
    pub rank: usize,
    pub world: usize,
    /// This rank's index on its node: its GPU.
    pub local_rank: usize,
    /// Ranks on this node (`LOCAL_WORLD_SIZE`; the world size when unset): they share its cores.
    pub local_world: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already hosts the store at MASTER_PORT (`TORCHELASTIC_USE_AGENT_STORE`):
    /// every rank connects as a client.
    pub agent_store: bool,
    /// torchrun's restarts so far (`TORCHELASTIC_RESTART_COUNT`).
    pub restart: u64,
}

/// How this process was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// No `RANK` in the environment: one process, as always.
    Single,
    Rank(RankEnv),
}

/// The variables a launcher sets, for error messages.
const HINT: &str = "launch with `torchrun --no-python --nproc-per-node N <binary> ...` (see docs/running.md, \
                    \"Several GPUs, several nodes\"), or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT";

impl Launch {
    /// From this process's environment.
    pub fn from_env() -> Result<Launch> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From the variables `var` returns.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Launch> {
        let Some(rank) = var("RANK") else {
            if let Some(w) = var("WORLD_SIZE").filter(|w| w != "1") {
                bail!("WORLD_SIZE is {w} but RANK is not set: {HINT}");
            }
            return Ok(Launch::Single);
        };
        let num = |key: &str| -> Result<Option<u64>> {
            var(key)
                .map(|v| v.trim().parse::<u64>().with_context(|| format!("{key}={v:?} is not a number")))
                .transpose()
        };
        let rank = num("RANK")?.with_context(|| format!("RANK={rank:?}"))? as usize;
        let world = num("WORLD_SIZE")?
            .with_context(|| format!("RANK is set ({rank}) but WORLD_SIZE is not: {HINT}"))?
            as usize;
        ensure!(world >= 1 && rank < world, "RANK {rank} must be below WORLD_SIZE {world}");
        let local_rank = num("LOCAL_RANK")?.unwrap_or(rank as u64) as usize;
        let local_world = (num("LOCAL_WORLD_SIZE")?.unwrap_or(world as u64) as usize).max(1);
        let master_addr = var("MASTER_ADDR")
            .with_context(|| format!("rank {rank} of {world}: MASTER_ADDR is not set: {HINT}"))?;
        let port = num("MASTER_PORT")?
            .with_context(|| format!("rank {rank} of {world}: MASTER_PORT is not set: {HINT}"))?;
        let master_port = u16::try_from(port)
            .ok()
            .filter(|&p| p > 0)
            .with_context(|| format!("MASTER_PORT {port} is not a port"))?;
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let restart = num("TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0);
        Ok(Launch::Rank(RankEnv {
            rank,
            world,
            local_rank,
            local_world,
            master_addr,
            master_port,
            agent_store,
            restart,
        }))
    }
}

impl RankEnv {
    /// This rank's share of the node's `cores` (at least one).
    pub fn cores(&self, cores: usize) -> usize {
        (cores / self.local_world).max(1)
    }

    /// Where the ranks meet: torchrun's agent store (each restart under its own prefix, as
    /// PyTorch's env:// rendezvous does), or a store rank 0 hosts.
    pub fn rendezvous(&self) -> Rendezvous {
        Rendezvous {
            host: self.master_addr.clone(),
            port: self.master_port,
            host_it: !self.agent_store && self.rank == 0,
            prefix: format!("/worker/attempt_{}/resnet-repro/", self.restart),
        }
    }

    /// This rank's device: on a GPU machine the GPU `LOCAL_RANK` (NCCL wants one per rank); on a
    /// CPU, the CPU.
    pub fn device(&self, requested: Device) -> Result<Device> {
        match requested {
            Device::Cuda(_) => {
                let gpus = tch::Cuda::device_count() as usize;
                ensure!(
                    self.local_rank < gpus,
                    "rank {} (local rank {}) needs GPU {} but this node has {gpus}: start at most {gpus} \
                     processes per node (--nproc-per-node), or train on the CPU (--device cpu)",
                    self.rank,
                    self.local_rank,
                    self.local_rank
                );
                Ok(Device::Cuda(self.local_rank))
            }
            d => Ok(d),
        }
    }
}
