//! The image matrix (`images/matrix.toml`): which runner images exist and which server images
//! the harness tests them against. Shared by `cargo xtask` and the tests.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::util::workspace_root;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    #[serde(rename = "cell")]
    pub cells: Vec<Cell>,
    #[serde(rename = "server")]
    pub servers: Vec<ServerImage>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    pub name: String,
    pub engine: String,
    /// The product, for engines covering several (mysql: `mysql` or `mariadb`).
    #[serde(default)]
    pub flavor: Option<String>,
    pub version: String,
    pub base: String,
    pub packages: Vec<String>,
    /// `<apt source line>|<key URL>` for vendor repositories.
    #[serde(default)]
    pub apt_repo: Option<String>,
    pub server: String,
    #[serde(default = "yes")]
    pub buildable: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerImage {
    pub image: String,
    pub recipe: String,
    pub base: String,
    pub packages: Vec<String>,
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

impl Cell {
    /// The product: the flavor, or the engine when it covers one.
    pub fn product(&self) -> &str {
        self.flavor.as_deref().unwrap_or(&self.engine)
    }

    /// The runner image's name, e.g. `backup-runner-postgres:17`, `backup-runner-mariadb:11.8`.
    pub fn image(&self) -> String {
        format!("backup-runner-{}:{}", self.product(), self.version)
    }

    /// The binary's name in the image, e.g. `backup-runner-postgres`.
    pub fn binary(&self) -> String {
        format!("backup-runner-{}", self.engine)
    }
}

impl Matrix {
    pub fn load() -> Result<Matrix> {
        Matrix::from_file(&workspace_root().join("images/matrix.toml"))
    }

    pub fn from_file(path: &Path) -> Result<Matrix> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let m: Matrix =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        m.check()?;
        Ok(m)
    }

    fn check(&self) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        for c in &self.cells {
            if !names.insert(&c.name) {
                bail!("cell {} is listed twice", c.name);
            }
            if c.buildable && self.server(&c.server).is_none() {
                bail!(
                    "cell {} tests against {}, which has no [[server]] entry",
                    c.name,
                    c.server
                );
            }
        }
        Ok(())
    }

    /// The S3-compatible server the harness stores backups in.
    pub fn s3_image(&self) -> &str {
        self.servers
            .iter()
            .find(|s| s.recipe == "moto")
            .map(|s| s.image.as_str())
            .expect("images/matrix.toml lists an S3 server (recipe moto)")
    }

    /// The cells named in `HARNESS_CELLS` (comma-separated; all buildable ones when unset),
    /// of one engine when given.
    pub fn cells_from_env(&self, engine: Option<&str>) -> Result<Vec<Cell>> {
        let names: Vec<String> = std::env::var("HARNESS_CELLS")
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(self
            .select(&names)?
            .into_iter()
            .filter(|c| engine.is_none_or(|e| c.engine == e))
            .cloned()
            .collect())
    }

    pub fn server(&self, image: &str) -> Option<&ServerImage> {
        self.servers.iter().find(|s| s.image == image)
    }

    pub fn cell(&self, name: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.name == name)
    }

    /// The named cells (all buildable ones when `names` is empty); unknown or unbuildable names
    /// are errors that list what exists.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Cell>> {
        if names.is_empty() {
            return Ok(self.cells.iter().filter(|c| c.buildable).collect());
        }
        names
            .iter()
            .map(|n| {
                let cell = self.cell(n).with_context(|| {
                    format!(
                        "no cell {n:?} in images/matrix.toml; cells: {}",
                        self.cells
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
                if !cell.buildable {
                    bail!(
                        "cell {n} is not buildable here (its packages come from {})",
                        cell.apt_repo.as_deref().unwrap_or("a vendor repository")
                    );
                }
                Ok(cell)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_parses_and_every_buildable_cell_has_a_server() {
        let m = Matrix::load().unwrap();
        let buildable: Vec<_> = m
            .select(&[])
            .unwrap()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(
            buildable,
            [
                "postgres-15",
                "postgres-17",
                "postgres-18",
                "mariadb-10.11",
                "mariadb-11.8",
                "mysql-9.7",
                "redis-7.0",
                "redis-8.0",
                "valkey-8.1",
                "valkey-9.1"
            ]
        );
        assert_eq!(
            m.cell("mariadb-11.8").unwrap().image(),
            "backup-runner-mariadb:11.8"
        );
        assert_eq!(
            m.cell("postgres-17").unwrap().image(),
            "backup-runner-postgres:17"
        );
        let valkey = m.cell("valkey-9.1").unwrap();
        assert_eq!(valkey.image(), "backup-runner-valkey:9.1");
        assert_eq!(valkey.binary(), "backup-runner-redis");
        assert!(m.server(&valkey.server).is_some());
        assert!(m.select(&["postgres-16".into()]).is_err());
        assert!(m.select(&["nope".into()]).is_err());
    }
}
