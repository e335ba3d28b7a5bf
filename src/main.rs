/// Charges what a template render allocates to its memory budget
/// (docs/engine.md, "Template budgets").
#[global_allocator]
static ALLOC: runbook::template::budget::Alloc = runbook::template::budget::Alloc;

fn main() {
    std::process::exit(runbook::cli::main());
}
