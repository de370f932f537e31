//! Which cells each scenario runs on, and the run itself.
//!
//! The selection is data: every scenario names a [`Cells`] policy, the full list runs on the
//! newest buildable cell of each product in [`FULL_LIST_PRODUCTS`], and `HARNESS_CELLS`
//! (comma-separated cell names; all buildable cells when unset) narrows the cells as for the
//! other image suites. The plan is printed before anything starts.
//!
//! A cell's scenarios run one after another in list order, sharing the cell's servers (see
//! [`super::Ctx`]); `HARNESS_PARALLEL` cells (default 2) run at once. Arguments that do not
//! start with `-` keep only the runs whose `scenario@cell` contains one of them; `--skip X`
//! drops those containing `X`; `--list` prints the plan and exits.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::containers::ready_or_skip;
use crate::matrix::{Cell, Matrix};

use super::{CellState, Ctx, EngineUnderTest};

/// A boxed future, for the scenario list.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The products whose newest cell runs every scenario; the other cells run the [`Cells::Every`]
/// scenarios (the smoke subset). MySQL and MariaDB are different products; Redis and Valkey
/// share the engine, and Valkey's newest cell stands for both.
pub const FULL_LIST_PRODUCTS: &[&str] = &["postgres", "mariadb", "mysql", "valkey"];

/// On which cells a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cells {
    /// Every selected cell: the smoke subset.
    Every,
    /// The full-list cells (the newest of each product in [`FULL_LIST_PRODUCTS`]), when
    /// selected.
    Full,
}

/// One entry of the scenario list.
pub struct Scenario<E: EngineUnderTest> {
    pub name: &'static str,
    pub cells: Cells,
    pub run: for<'a> fn(&'a Ctx<E>) -> BoxFuture<'a, anyhow::Result<()>>,
}

/// How one scenario ended on one cell.
#[derive(Debug, Clone)]
enum Outcome {
    Passed,
    Skipped(String),
    Failed(String),
}

#[derive(Debug, Clone)]
struct Report {
    scenario: &'static str,
    cell: String,
    outcome: Outcome,
    took: Duration,
}

/// What one cell's run reports: the cell, its reports, and when it started and ended.
struct CellResult {
    cell: String,
    engine: &'static str,
    reports: Vec<Report>,
    started: Instant,
    ended: Instant,
}

type CellRun = Box<dyn FnOnce() -> BoxFuture<'static, CellResult> + Send>;

/// The planned runs of every engine, then [`Suite::run`].
pub struct Suite {
    matrix: Matrix,
    selected: Vec<Cell>,
    filters: Vec<String>,
    skips: Vec<String>,
    list_only: bool,
    /// (scenario, engine, cells) in list order, for the printed plan.
    plan: Vec<(&'static str, Cells, String, Vec<String>)>,
    runs: Vec<(String, usize, CellRun)>,
    images: Vec<String>,
}

/// The full-list cells of a matrix: the newest buildable cell of each product in
/// [`FULL_LIST_PRODUCTS`].
pub fn full_list_cells(matrix: &Matrix) -> Vec<String> {
    FULL_LIST_PRODUCTS
        .iter()
        .filter_map(|product| {
            matrix
                .cells
                .iter()
                .filter(|c| c.buildable && c.product() == *product)
                .max_by_key(|c| version(&c.version))
                .map(|c| c.name.clone())
        })
        .collect()
}

/// `10.11` → (10, 11).
pub fn version(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// The cells `policy` selects out of `selected`.
pub fn cells_for(policy: Cells, selected: &[Cell], full: &[String]) -> Vec<Cell> {
    selected
        .iter()
        .filter(|c| policy == Cells::Every || full.contains(&c.name))
        .cloned()
        .collect()
}

impl Suite {
    /// The suite for the cells in `HARNESS_CELLS`, with the command line's filters.
    pub fn from_args() -> Suite {
        let matrix = Matrix::load().expect("images/matrix.toml");
        let selected = matrix.cells_from_env(None).expect("HARNESS_CELLS");
        let mut filters = Vec::new();
        let mut skips = Vec::new();
        let mut list_only = false;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--list" => list_only = true,
                "--skip" => skips.extend(args.next()),
                a if a.starts_with('-') => {}
                a => filters.push(a.to_string()),
            }
        }
        let images = vec![matrix.s3_image().to_string()];
        Suite {
            matrix,
            selected,
            filters,
            skips,
            list_only,
            plan: Vec::new(),
            runs: Vec::new(),
            images,
        }
    }

    fn wanted(&self, scenario: &str, cell: &str) -> bool {
        let id = format!("{scenario}@{cell}");
        (self.filters.is_empty() || self.filters.iter().any(|f| id.contains(f.as_str())))
            && !self.skips.iter().any(|s| id.contains(s.as_str()))
    }

    /// Plans `scenarios` on the selected cells of engine `E`.
    pub fn engine<E: EngineUnderTest>(mut self, scenarios: Vec<Scenario<E>>) -> Suite {
        let full = full_list_cells(&self.matrix);
        let cells: Vec<Cell> = self
            .selected
            .iter()
            .filter(|c| c.engine == E::ENGINE)
            .cloned()
            .collect();
        let scenarios: Arc<Vec<Scenario<E>>> = Arc::new(scenarios);
        for s in scenarios.iter() {
            let names = cells_for(s.cells, &cells, &full)
                .into_iter()
                .filter(|c| self.wanted(s.name, &c.name))
                .map(|c| c.name)
                .collect();
            self.plan
                .push((s.name, s.cells, E::ENGINE.to_string(), names));
        }
        for cell in cells {
            let indices: Vec<usize> = scenarios
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    cells_for(s.cells, std::slice::from_ref(&cell), &full).len() == 1
                        && self.wanted(s.name, &cell.name)
                })
                .map(|(i, _)| i)
                .collect();
            if indices.is_empty() {
                continue;
            }
            self.images.extend([cell.image(), cell.server.clone()]);
            let state = CellState::<E>::new(
                cell.clone(),
                self.selected.clone(),
                self.matrix.s3_image().to_string(),
            );
            let scenarios = scenarios.clone();
            let count = indices.len();
            let run: CellRun =
                Box::new(move || Box::pin(run_cell(Arc::new(state), scenarios, indices)));
            self.runs.push((cell.name.clone(), count, run));
        }
        self
    }

    fn print_plan(&self) {
        let full = full_list_cells(&self.matrix);
        let mut out = String::new();
        let runs: usize = self.plan.iter().map(|p| p.3.len()).sum();
        let _ = writeln!(
            out,
            "scenarios: {runs} runs on {} cells (HARNESS_CELLS={}); every scenario on the newest \
             cell of {} ({}), the smoke subset on the others",
            self.runs.len(),
            std::env::var("HARNESS_CELLS").unwrap_or_else(|_| "all buildable".into()),
            FULL_LIST_PRODUCTS.join(", "),
            full.join(", ")
        );
        let width = self.plan.iter().map(|p| p.0.len()).max().unwrap_or(0);
        let mut by_scenario: BTreeMap<&str, (usize, Cells, Vec<String>)> = BTreeMap::new();
        for (i, (name, cells, _, names)) in self.plan.iter().enumerate() {
            let entry = by_scenario.entry(name).or_insert((i, *cells, Vec::new()));
            entry.2.extend(names.iter().cloned());
        }
        let mut rows: Vec<_> = by_scenario.into_iter().collect();
        rows.sort_by_key(|(_, (i, _, _))| *i);
        for (name, (_, cells, names)) in rows {
            let policy = match cells {
                Cells::Every => "every cell",
                Cells::Full => "full list",
            };
            let names = if names.is_empty() {
                "(none selected)".to_string()
            } else {
                names.join(" ")
            };
            let _ = writeln!(out, "  {name:width$}  {policy:10}  {names}");
        }
        print!("{out}");
    }

    /// Prints the plan, runs it, prints the results; fails when a scenario failed.
    pub fn run(self) -> ExitCode {
        self.print_plan();
        if self.list_only || self.runs.is_empty() {
            return ExitCode::SUCCESS;
        }
        let parallel: usize = std::env::var("HARNESS_PARALLEL")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(2);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let Suite { runs, images, .. } = self;
        let started = Instant::now();
        let results = runtime.block_on(async move {
            let mut images = images;
            images.sort();
            images.dedup();
            if !ready_or_skip("scenarios", &images).await {
                return None;
            }
            let limit = Arc::new(tokio::sync::Semaphore::new(parallel));
            let mut handles = Vec::new();
            // The cells with the most scenarios first, so the long ones overlap.
            let mut runs = runs;
            runs.sort_by_key(|(_, count, _)| std::cmp::Reverse(*count));
            for (_, _, run) in runs {
                let permit = limit.clone().acquire_owned().await.expect("open semaphore");
                handles.push(tokio::spawn(async move {
                    let result = run().await;
                    drop(permit);
                    result
                }));
            }
            let mut results = Vec::new();
            for h in handles {
                results.push(h.await.expect("a cell's run does not panic"));
            }
            Some(results)
        });
        let Some(results) = results else {
            return ExitCode::SUCCESS;
        };
        summarize(&results, started.elapsed())
    }
}

async fn run_cell<E: EngineUnderTest>(
    state: Arc<CellState<E>>,
    scenarios: Arc<Vec<Scenario<E>>>,
    indices: Vec<usize>,
) -> CellResult {
    let cell_started = Instant::now();
    let mut reports = Vec::new();
    for i in indices {
        let scenario = &scenarios[i];
        let (name, run) = (scenario.name, scenario.run);
        let ctx = Ctx::new(state.clone(), name);
        println!("[{} {name}] started", state.cell.name);
        let started = Instant::now();
        let result = tokio::spawn(async move {
            let result = run(&ctx).await;
            (result, ctx.skipped())
        })
        .await;
        let took = started.elapsed();
        let outcome = match result {
            Ok((Ok(()), None)) => Outcome::Passed,
            Ok((Ok(()), Some(reason))) => Outcome::Skipped(reason),
            Ok((Err(e), _)) => Outcome::Failed(format!("{e:#}")),
            Err(e) if e.is_panic() => {
                let panic = e.into_panic();
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into());
                Outcome::Failed(message)
            }
            Err(e) => Outcome::Failed(e.to_string()),
        };
        let word = match &outcome {
            Outcome::Passed => "passed".to_string(),
            Outcome::Skipped(r) => format!("skipped ({r})"),
            Outcome::Failed(m) => format!("FAILED: {m}"),
        };
        println!(
            "[{} {name}] {word} in {:.1}s",
            state.cell.name,
            took.as_secs_f64()
        );
        reports.push(Report {
            scenario: name,
            cell: state.cell.name.clone(),
            outcome,
            took,
        });
    }
    let cell = state.cell.name.clone();
    // The cell's containers are removed here, inside the runtime.
    drop(state);
    CellResult {
        cell,
        engine: E::ENGINE,
        reports,
        started: cell_started,
        ended: Instant::now(),
    }
}

fn summarize(results: &[CellResult], total: Duration) -> ExitCode {
    let mut out = String::from("\nscenario results:\n");
    let width = results
        .iter()
        .flat_map(|r| r.reports.iter().map(|r| r.scenario.len()))
        .max()
        .unwrap_or(0);
    let (mut passed, mut skipped, mut failed) = (0, 0, 0);
    for result in results {
        let _ = writeln!(
            out,
            "  {} ({:.0}s):",
            result.cell,
            (result.ended - result.started).as_secs_f64()
        );
        for r in &result.reports {
            let word = match &r.outcome {
                Outcome::Passed => {
                    passed += 1;
                    "ok".to_string()
                }
                Outcome::Skipped(reason) => {
                    skipped += 1;
                    format!("skipped: {reason}")
                }
                Outcome::Failed(m) => {
                    failed += 1;
                    format!("FAILED: {}", m.lines().next().unwrap_or(""))
                }
            };
            let _ = writeln!(
                out,
                "    {:width$}  {:6.1}s  {word}",
                r.scenario,
                r.took.as_secs_f64()
            );
        }
    }
    let mut engines: BTreeMap<&str, (Instant, Instant, Duration)> = BTreeMap::new();
    for r in results {
        let e = engines
            .entry(r.engine)
            .or_insert((r.started, r.ended, Duration::ZERO));
        e.0 = e.0.min(r.started);
        e.1 = e.1.max(r.ended);
        e.2 += r.ended - r.started;
    }
    for (engine, (first, last, busy)) in engines {
        let _ = writeln!(
            out,
            "  {engine}: cells from first start to last end {:.0}s, cell time summed {:.0}s",
            (last - first).as_secs_f64(),
            busy.as_secs_f64()
        );
    }
    let _ = writeln!(
        out,
        "scenarios: {passed} passed, {skipped} skipped, {failed} failed, in {:.0}s",
        total.as_secs_f64()
    );
    print!("{out}");
    if failed > 0 {
        let names: Vec<String> = results
            .iter()
            .flat_map(|r| r.reports.iter())
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .map(|r| format!("{}@{}", r.scenario, r.cell))
            .collect();
        println!("failed: {}", names.join(", "));
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(cells: Vec<Cell>) -> Vec<String> {
        cells.into_iter().map(|c| c.name).collect()
    }

    #[test]
    fn the_full_list_runs_on_the_newest_cell_of_each_product_and_the_smoke_subset_everywhere() {
        let m = Matrix::load().unwrap();
        let full = full_list_cells(&m);
        assert_eq!(
            full,
            ["postgres-18", "mariadb-11.8", "mysql-9.7", "valkey-9.1"]
        );
        let all: Vec<Cell> = m.select(&[]).unwrap().into_iter().cloned().collect();
        assert_eq!(names(cells_for(Cells::Every, &all, &full)).len(), all.len());
        assert_eq!(names(cells_for(Cells::Full, &all, &full)), full);
        // A selection without a full-list cell runs the smoke subset only.
        let older: Vec<Cell> = ["postgres-15", "redis-8.0"]
            .iter()
            .map(|n| m.cell(n).unwrap().clone())
            .collect();
        assert!(cells_for(Cells::Full, &older, &full).is_empty());
        assert_eq!(version("10.11"), (10, 11));
        assert!(version("10.11") > version("9.7"));
    }
}
