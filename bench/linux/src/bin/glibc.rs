//! The Linux yardstick with glibc's malloc (the default allocator): the
//! allocation workloads, then the thread and message workloads.

fn main() {
    let plan = toro_bench_linux::plan_from_arguments();
    let only = toro_bench_linux::selection_from_arguments();
    toro_bench_linux::allocation(plan, only, "glibc");
    toro_bench_linux::threads(plan, only);
}
