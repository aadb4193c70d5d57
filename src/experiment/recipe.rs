//! What makes a binary one of the paper's tables: its experiment files (the paper's recipe and a
//! quick preset), its runs folder and its summary's title.

use super::Table;

/// What makes a binary one table.
#[derive(Debug, Clone, Copy)]
pub struct Recipe {
    pub table: Table,
    /// The experiment file of the paper's recipe.
    pub config: &'static str,
    /// The quick preset's (`--quick`).
    pub quick: &'static str,
    /// The summary's title.
    pub title: &'static str,
}

/// Table 6 and Figures 1 and 6 (`cifar_depth_sweep`; Figure 7 uses its runs).
pub const TABLE6: Recipe = Recipe {
    table: Table::Table6,
    config: "experiments/table6_cifar10.toml",
    quick: "experiments/quick.toml",
    title: "Table 6: test error (%) of the CIFAR networks",
};

/// Table 2 and Figure 4 (`imagenet_plain_vs_resnet`).
pub const TABLE2: Recipe = Recipe {
    table: Table::Table2,
    config: "experiments/table2_imagenet.toml",
    quick: "experiments/table2_imagenet_quick.toml",
    title: "Table 2 and Figure 4: plain vs ResNet on ImageNet",
};

/// Tables 3 and 4 (`imagenet_table3`).
pub const TABLE3: Recipe = Recipe {
    table: Table::Table3,
    config: "experiments/table3_imagenet.toml",
    quick: "experiments/table3_imagenet_quick.toml",
    title: "Tables 3 and 4: shortcut options and deeper ResNets on ImageNet",
};

/// The cross-check against PyTorch (`crosscheck`).
pub const CROSSCHECK: Recipe = Recipe {
    table: Table::Crosscheck,
    config: "experiments/crosscheck.toml",
    quick: "experiments/crosscheck_quick.toml",
    title: "Cross-check against PyTorch",
};

/// The tables with training runs and summaries, as `plot` re-renders them.
pub const TABLES: [Recipe; 3] = [TABLE6, TABLE2, TABLE3];
