//! The Linux yardstick with mimalloc as the global allocator: the
//! allocation workloads only.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let plan = toro_bench_linux::plan_from_arguments();
    let only = toro_bench_linux::selection_from_arguments();
    toro_bench_linux::allocation(plan, only, "mimalloc");
}
